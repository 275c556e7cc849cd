//! The worker that runs one task: plans the files, copies them in chunks (with checksums and bandwidth), deletes, and records per-file outcomes.

use super::*;

impl Worker<'_> {
    fn stop(&self) -> Result<(), FatalError> {
        match self.task.stop_reason() {
            Some(stop) => Err(stop),
            None => Ok(()),
        }
    }

    /// Sleeps up to `duration`, waking early (with the reason) on cancel or deadline.
    fn sleep(&self, duration: Duration) -> Result<(), FatalError> {
        let end = Instant::now() + duration;
        loop {
            self.stop()?;
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            std::thread::sleep((end - now).min(Duration::from_millis(10)));
        }
    }

    /// Changes the task's state and wakes whoever watches it.
    fn with_state<R>(&self, f: impl FnOnce(&mut crate::tasks::TaskState) -> R) -> R {
        let result = f(&mut self.task.state());
        self.task.changed.notify_waiters();
        result
    }

    fn path_fault(&self, path: &str, kinds: &[FaultKind]) -> Option<FaultKind> {
        self.sim.faults.path_fault(path, kinds)
    }

    /// How long a fault stays in `nice_status` after the task recovers from it.
    fn linger(&self) -> Duration {
        Duration::from_secs(self.sim.config.nice_status_linger_s)
    }

    /// `items` in the order this task copies them: a seeded random order (Globus
    /// promises none), or request order when the emulator is told to keep it.
    fn in_copy_order<T>(&self, mut items: Vec<T>, what: &str) -> Vec<T> {
        if !self.sim.config.ordered_copies {
            let key = format!("{} {what}", self.task.id);
            self.sim.faults.shuffle(&key, &mut items);
        }
        items
    }

    /// Handles a failing source path: skip it, fail the task, or retry until it heals or
    /// the task stops. `check` is re-run after each retry interval; `Ok` means healed.
    fn retry_path<T>(
        &self,
        code: &str,
        source_path: &str,
        destination_path: &str,
        policy: Policy,
        mut check: impl FnMut() -> Result<T, (String, String)>,
    ) -> Result<Result<T, PathOutcome>, FatalError> {
        let Policy {
            skip_source_errors,
            fail_on_quota,
            defer,
        } = policy;
        let mut code = code.to_owned();
        loop {
            // The skipped error names its path (it is that path's record); an event and
            // nice_status never do, as at Globus (SPEC §3.11).
            let details = format!("{code} on {source_path}");
            let generic = event_details(&code);
            if skip_source_errors && (code == "FILE_NOT_FOUND" || code == "PERMISSION_DENIED") {
                self.with_state(|s| {
                    s.doc.subtasks_skipped_errors += 1;
                    s.skipped.push({
                        let mut built = SkippedError::default();
                        built.data_type = "skipped_error".into();
                        built.source_path = source_path.into();
                        built.destination_path = destination_path.into();
                        built.error_code = code.clone();
                        built.error_details = details.clone();
                        built.error_time = format_time(Utc::now());
                        built.is_directory = false;
                        built.is_symlink = false;
                        built.is_delete_destination_extra = false;
                        built.external_checksum = None;
                        built.checksum_algorithm = None;
                        built
                    });
                    s.event("SKIPPED_ERRORS", "skipped errors", &generic, true);
                });
                return Ok(Err(PathOutcome::Skipped));
            }
            if code == "QUOTA_EXCEEDED" && fail_on_quota {
                return Ok(Err(PathOutcome::Fatal(fatal(&code, details))));
            }
            let retry = Duration::from_millis(self.sim.config.fault_retry_ms);
            self.with_state(|s| {
                s.set_retrying(&code, &generic, retry.as_secs() as i64);
                s.event(
                    &code,
                    &code.to_lowercase().replace('_', " "),
                    &generic,
                    true,
                );
            });
            if defer {
                return Ok(Err(PathOutcome::Deferred));
            }
            self.sleep(retry)?;
            match check() {
                Ok(value) => {
                    let linger = self.linger();
                    self.with_state(|s| s.recovered(linger));
                    return Ok(Ok(value));
                }
                Err((next, _)) => code = next,
            }
        }
    }

    pub(super) fn transfer(&self, req: &TransferRequest) -> Result<(), FatalError> {
        let src = self.sim.collection_by_id(&req.source_endpoint);
        let dst = self.sim.collection_by_id(&req.destination_endpoint);
        let (Some(src), Some(dst)) = (src, dst) else {
            return Err(fatal(
                "ENDPOINT_ERROR",
                "a collection of this task no longer exists",
            ));
        };
        let policy = Policy {
            skip_source_errors: req.skip_source_errors.unwrap_or(false),
            fail_on_quota: req.fail_on_quota_errors.unwrap_or(false),
            defer: true,
        };
        let mut bucket = Bucket::new(self.sim.bandwidth);
        // A first pass copies what it can and puts off what fails; the second retries
        // those until they heal or the task ends, so one bad path does not hold up the
        // others (as at Globus, which copies a task's files in parallel).
        let mut later_items = Vec::new();
        let mut later_files = Vec::new();
        for item in self.in_copy_order(req.data.iter().collect(), "items") {
            self.with_state(|s| s.doc.subtasks_total += 1);
            match self.run_item(req, item, (&src, &dst), &mut bucket, policy)? {
                ItemRun::Done => {}
                ItemRun::Later => later_items.push(item),
                ItemRun::Files(files) => later_files.extend(files),
            }
        }
        let policy = Policy {
            defer: false,
            ..policy
        };
        for item in later_items {
            self.run_item(req, item, (&src, &dst), &mut bucket, policy)?;
        }
        for plan in &later_files {
            self.copy_one(req, plan, &mut bucket, policy)?;
        }
        Ok(())
    }

    /// Runs one item of a transfer: stats its source, plans its files and copies them.
    fn run_item(
        &self,
        req: &TransferRequest,
        item: &TransferItem,
        (src, dst): (&Collection, &Collection),
        bucket: &mut Bucket,
        policy: Policy,
    ) -> Result<ItemRun, FatalError> {
        let defer = policy.defer;
        self.stop()?;
        let resolve =
            |c: &Collection, p: &str| c.resolve(p).map_err(|e| fatal("PERMISSION_DENIED", e.0));
        let source = resolve(src, &item.source_path)?;
        let dest = resolve(dst, &item.destination_path)?;

        // Stat the source, through faults and real errors alike.
        let stat = |source: &Resolved| -> Result<fs::Metadata, (String, String)> {
            if let Some(kind) = self.path_fault(&source.path, SOURCE_FAULTS) {
                return Err((fault_code(kind).into(), "injected".into()));
            }
            fs::metadata(&source.local).map_err(|e| (io_code(&e).into(), e.to_string()))
        };
        let meta = match stat(&source) {
            Ok(meta) => meta,
            Err((code, _)) => {
                match self.retry_path(
                    &code,
                    &source.path,
                    &dest.path,
                    Policy { defer, ..policy },
                    || stat(&source),
                )? {
                    Ok(meta) => meta,
                    Err(PathOutcome::Skipped) => return Ok(ItemRun::Done),
                    Err(PathOutcome::Deferred) => return Ok(ItemRun::Later),
                    Err(PathOutcome::Fatal(e)) => return Err(e),
                }
            }
        };
        if self
            .path_fault(&source.path, &[FaultKind::Inactive])
            .is_some()
        {
            return self.go_inactive(&source.path).map(|()| ItemRun::Done);
        }
        let recursive = item.recursive.unwrap_or(meta.is_dir());
        if recursive && !meta.is_dir() {
            return Err(fatal(
                "NOT_A_DIRECTORY",
                format!("{} is a file; recursive was set", source.path),
            ));
        }
        if !recursive && meta.is_dir() {
            return Err(fatal(
                "IS_A_DIRECTORY",
                format!("{} is a directory; set recursive", source.path),
            ));
        }
        // Both ends compute the checksum; a storage that cannot is retried until the
        // deadline, as a real collection would.
        let algorithm = item.checksum_algorithm.as_deref().unwrap_or("MD5");
        let unsupported = (item.external_checksum.is_some() || req.verify_checksum == Some(true))
            && !(src.supports_checksum(algorithm) && dst.supports_checksum(algorithm));
        let mut plans = Vec::new();
        if recursive {
            let rules = req.filter_rules.as_deref().unwrap_or_default();
            self.expand(&source, &dest, &dst.root, rules, &mut plans)?;
        } else {
            plans.push(FilePlan {
                src: source.local.clone(),
                src_path: source.path.clone(),
                dst: dest.local.clone(),
                dst_path: dest.path.clone(),
                dst_root: dst.root.clone(),
                external: item.external_checksum.clone(),
                algorithm: None,
                unsupported_checksum: false,
            });
        }
        self.with_state(|s| {
            s.doc.subtasks_succeeded += 1;
            s.doc.files += plans.len() as u64;
            s.doc.subtasks_total += plans.len() as u64;
        });
        let mut copied = BTreeSet::new();
        let mut later = Vec::new();
        for mut plan in self.in_copy_order(plans, &source.path) {
            plan.unsupported_checksum = unsupported;
            plan.algorithm.clone_from(&item.checksum_algorithm);
            copied.insert(plan.dst.clone());
            if self.copy_one(req, &plan, bucket, Policy { defer, ..policy })? {
                later.push(plan);
            }
        }
        if recursive && req.delete_destination_extra.unwrap_or(false) {
            self.delete_extra(&dest.local, &source.local, &copied)?;
        }
        Ok(ItemRun::Files(later))
    }

    /// Lists a source directory recursively (applying filter rules), creating the
    /// destination directories and planning every file.
    fn expand(
        &self,
        source: &Resolved,
        dest: &Resolved,
        dst_root: &Path,
        rules: &[FilterRule],
        plans: &mut Vec<FilePlan>,
    ) -> Result<(), FatalError> {
        let mut stack = vec![(
            source.local.clone(),
            source.path.clone(),
            dest.local.clone(),
            dest.path.clone(),
        )];
        while let Some((src_dir, src_path, dst_dir, dst_path)) = stack.pop() {
            self.stop()?;
            paths::refuse_links_below(dst_root, &dst_dir, &dst_path)
                .map_err(|e| fatal("PERMISSION_DENIED", e.0))?;
            fs::create_dir_all(&dst_dir)
                .map_err(|e| fatal(io_code(&e), format!("mkdir {dst_path}: {e}")))?;
            let entries = fs::read_dir(&src_dir)
                .map_err(|e| fatal(io_code(&e), format!("list {src_path}: {e}")))?;
            let mut names: Vec<(String, bool)> = Vec::new();
            for entry in entries {
                let entry =
                    entry.map_err(|e| fatal(io_code(&e), format!("list {src_path}: {e}")))?;
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                // Symlinks are not followed ("recursive_symlinks": "ignore").
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_symlink() {
                    continue;
                }
                names.push((name, kind.is_dir()));
            }
            names.sort();
            for (name, is_dir) in names {
                if !filter_allows(rules, &name, is_dir) {
                    continue;
                }
                let (s, sp) = (src_dir.join(&name), paths::join(&src_path, &name));
                let (d, dp) = (dst_dir.join(&name), paths::join(&dst_path, &name));
                if is_dir {
                    self.with_state(|st| st.doc.directories += 1);
                    stack.push((s, sp, d, dp));
                } else {
                    plans.push(FilePlan {
                        src: s,
                        src_path: sp,
                        dst: d,
                        dst_path: dp,
                        dst_root: dst_root.to_path_buf(),
                        external: None,
                        algorithm: None,
                        unsupported_checksum: false,
                    });
                }
            }
        }
        Ok(())
    }

    fn delete_extra(
        &self,
        dst_root: &Path,
        src_root: &Path,
        keep: &BTreeSet<PathBuf>,
    ) -> Result<(), FatalError> {
        let mut stack = vec![dst_root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let relative = path.strip_prefix(dst_root).unwrap_or(&path);
                let in_source = src_root.join(relative).exists();
                if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    if in_source {
                        stack.push(path);
                    } else {
                        let _ = fs::remove_dir_all(&path);
                    }
                } else if !keep.contains(&path) && !in_source {
                    let _ = fs::remove_file(&path);
                }
            }
        }
        Ok(())
    }

    fn go_inactive(&self, path: &str) -> Result<(), FatalError> {
        self.with_state(|s| {
            let d = &mut s.doc;
            d.status = TaskStatus::Inactive;
            d.is_ok = Some(false);
            d.nice_status = Some("INACTIVE".into());
            d.nice_status_short_description = Some("credentials or consent expired".into());
            d.nice_status_details = Some(format!(
                "the task cannot use its collections' credentials or consent (at {path}); \
                 log in again with the needed consents"
            ));
            s.event("PAUSED", "paused", "credentials or consent expired", true);
        });
        loop {
            self.sleep(Duration::from_millis(50))?;
        }
    }

    /// Copies one file (or skips it by sync level), verifying checksums; retries
    /// failing paths as the task's policy says.
    fn copy_one(
        &self,
        req: &TransferRequest,
        plan: &FilePlan,
        bucket: &mut Bucket,
        policy: Policy,
    ) -> Result<bool, FatalError> {
        let mut mismatches = 0u32;
        // Bytes this file's latest attempt added to the task's count: a retry takes
        // them back first, so `bytes_transferred` counts each byte once.
        let counted = std::cell::Cell::new(0u64);
        loop {
            self.stop()?;
            // Looked up at each attempt, so a fault with a count heals on a retry.
            let mut attempt = || -> Result<Copied, (String, String)> {
                if plan.unsupported_checksum {
                    return Err((UNSUPPORTED_CHECKSUM.into(), "not supported".into()));
                }
                if let Some(kind) = self.path_fault(&plan.src_path, COPY_FAULTS) {
                    return Err((fault_code(kind).into(), "injected".into()));
                }
                self.copy_bytes(req, plan, bucket, &counted)
                    .map_err(|e| (io_code(&e).into(), e.to_string()))
            };
            let copied = match attempt() {
                Ok(copied) => copied,
                Err((code, _)) => {
                    match self.retry_path(&code, &plan.src_path, &plan.dst_path, policy, attempt)? {
                        Ok(copied) => copied,
                        Err(PathOutcome::Skipped) => return Ok(false),
                        Err(PathOutcome::Deferred) => return Ok(true),
                        Err(PathOutcome::Fatal(e)) => return Err(e),
                    }
                }
            };
            let copied = match copied {
                Copied::Skipped => {
                    self.with_state(|s| {
                        s.doc.files_skipped += 1;
                        s.doc.subtasks_succeeded += 1;
                    });
                    return Ok(false);
                }
                Copied::Done(done) => done,
            };
            let fault = self.path_fault(&plan.src_path, &[FaultKind::ChecksumMismatch]);
            let mismatch = self.checksum_problem(req, plan, &copied, fault);
            match mismatch {
                None => {
                    if req.preserve_timestamp.unwrap_or(false)
                        && let Ok(mtime) = fs::metadata(&plan.src).and_then(|m| m.modified())
                    {
                        let _ = fs::File::options()
                            .write(true)
                            .open(&plan.dst)
                            .and_then(|f| f.set_modified(mtime));
                    }
                    self.with_state(|s| {
                        s.doc.files_transferred += 1;
                        s.doc.subtasks_succeeded += 1;
                        s.successful.push({
                            let mut built = SuccessfulTransfer::default();
                            built.data_type = "successful_transfer".into();
                            built.source_path = plan.src_path.clone();
                            built.destination_path = plan.dst_path.clone();
                            built
                        });
                    });
                    return Ok(false);
                }
                Some(details) => {
                    mismatches += 1;
                    let generic = event_details("CHECKSUM_MISMATCH");
                    self.with_state(|s| {
                        s.set_retrying("CHECKSUM_MISMATCH", &generic, 1);
                        s.event("CHECKSUM_MISMATCH", "checksum mismatch", &generic, true);
                    });
                    if mismatches > self.sim.config.checksum_retries {
                        return Err(fatal("CHECKSUM_MISMATCH", details));
                    }
                }
            }
        }
    }

    /// Why the copy's checksum is not acceptable, if it is not.
    fn checksum_problem(
        &self,
        req: &TransferRequest,
        plan: &FilePlan,
        copied: &Done,
        fault: Option<FaultKind>,
    ) -> Option<String> {
        if fault == Some(FaultKind::ChecksumMismatch) {
            return Some(format!(
                "checksum of {} at the destination does not match the source (injected)",
                plan.dst_path
            ));
        }
        let source = copied.checksum.as_deref().unwrap_or_default();
        if let Some(expected) = &plan.external
            && !expected.eq_ignore_ascii_case(source)
        {
            return Some(format!(
                "{} checksum of {} is {source}, but the external checksum is {expected}",
                plan.algorithm.as_deref().unwrap_or("MD5"),
                plan.src_path
            ));
        }
        if req.verify_checksum.unwrap_or(false) {
            let dest = plan
                .algorithm()
                .and_then(|a| self.checksum_of(&plan.dst, a))
                .unwrap_or_default();
            self.with_state(|s| s.doc.bytes_checksummed += copied.bytes);
            if dest != source {
                return Some(format!(
                    "checksum of {} differs after the copy",
                    plan.dst_path
                ));
            }
        }
        None
    }

    /// The checksum of a file, counted in the emulator's statistics.
    fn checksum_of(&self, path: &Path, algorithm: Algorithm) -> io::Result<String> {
        let (sum, bytes) = checksum::of_file(path, algorithm)?;
        self.sim.stats.checksummed(algorithm.name(), bytes);
        Ok(sum)
    }

    /// Streams `plan.src` into `plan.dst` in place, honouring the sync level and the
    /// bandwidth; returns the checksums computed on the way.
    fn copy_bytes(
        &self,
        req: &TransferRequest,
        plan: &FilePlan,
        bucket: &mut Bucket,
        counted: &std::cell::Cell<u64>,
    ) -> io::Result<Copied> {
        let retried = counted.replace(0);
        if retried > 0 {
            self.with_state(|s| s.doc.bytes_transferred -= retried);
        }
        let src_meta = fs::metadata(&plan.src)?;
        if let Some(level) = req.sync_level
            && let Ok(dst_meta) = fs::metadata(&plan.dst)
        {
            let same = match level {
                0 => true,
                1 => dst_meta.len() == src_meta.len(),
                2 => {
                    dst_meta.len() == src_meta.len()
                        && dst_meta.modified()? >= src_meta.modified()?
                }
                _ => {
                    let algorithm = plan.algorithm()?;
                    dst_meta.len() == src_meta.len()
                        && self.checksum_of(&plan.src, algorithm)?
                            == self.checksum_of(&plan.dst, algorithm)?
                }
            };
            if same {
                return Ok(Copied::Skipped);
            }
        }
        // One hash of the source serves both the external checksum and the comparison
        // with the destination that `verify_checksum` asks for.
        let mut hasher = if plan.external.is_some() || req.verify_checksum.unwrap_or(false) {
            let algorithm = plan.algorithm()?;
            Some((algorithm, Hasher::new(algorithm)))
        } else {
            None
        };
        let mut input = fs::File::open(&plan.src)?;
        // The destination may be the source under another name (a hard link made since
        // submission): writing would truncate what is being read.
        if let (Ok(read), Ok(written)) = (input.metadata(), fs::symlink_metadata(&plan.dst)) {
            use std::os::unix::fs::MetadataExt;
            if (read.dev(), read.ino()) == (written.dev(), written.ino()) {
                return Err(io::Error::other(format!(
                    "{} is the source {} itself under another name; not overwritten",
                    plan.dst_path, plan.src_path
                )));
            }
        }
        // Nothing is created or written through a link below the destination.
        paths::refuse_links_below(&plan.dst_root, &plan.dst, &plan.dst_path)
            .map_err(|e| io::Error::new(ErrorKind::PermissionDenied, e.0))?;
        if let Some(parent) = plan.dst.parent() {
            fs::create_dir_all(parent)?;
        }
        // O_NOFOLLOW: a link swapped in at the last moment is refused, not followed.
        let mut output = fs::File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&plan.dst)?;
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        loop {
            if self.task.stop_reason().is_some() {
                return Err(io::Error::new(ErrorKind::Interrupted, "task stopped"));
            }
            let n = input.read(&mut buf)?;
            if n == 0 {
                break;
            }
            // The task's own rate, then its turn on the shared link (taken after the
            // task's wait, so that a task held by its own rate does not hold link
            // tokens meanwhile).
            let own = bucket.take(n as u64);
            if let Some(wait) = own {
                self.sleep(wait)
                    .map_err(|_| io::Error::new(ErrorKind::Interrupted, "task stopped"))?;
            }
            let link = self.sim.link.lock().expect("link poisoned").take(n as u64);
            if let Some(wait) = link {
                self.sleep(wait)
                    .map_err(|_| io::Error::new(ErrorKind::Interrupted, "task stopped"))?;
            }
            output.write_all(&buf[..n])?;
            if let Some((_, h)) = hasher.as_mut() {
                h.update(&buf[..n]);
            }
            total += n as u64;
            counted.set(total);
            self.with_state(|s| s.doc.bytes_transferred += n as u64);
            self.sim.stats.bytes_copied(n as u64);
        }
        output.flush()?;
        let checksum = hasher.map(|(algorithm, h)| {
            self.sim.stats.checksummed(algorithm.name(), total);
            h.finish()
        });
        Ok(Copied::Done(Done {
            bytes: total,
            checksum,
        }))
    }

    pub(super) fn delete(&self, req: &DeleteRequest) -> Result<(), FatalError> {
        let Some(collection) = self.sim.collection_by_id(&req.endpoint) else {
            return Err(fatal(
                "ENDPOINT_ERROR",
                "the task's collection no longer exists",
            ));
        };
        let recursive = req.recursive.unwrap_or(false);
        let ignore_missing = req.ignore_missing.unwrap_or(false);
        for item in &req.data {
            self.stop()?;
            self.with_state(|s| s.doc.subtasks_total += 1);
            let targets = if req.interpret_globs.unwrap_or(false) {
                expand_glob(&collection, &item.path)?
            } else {
                vec![
                    collection
                        .resolve(&item.path)
                        .map_err(|e| fatal("PERMISSION_DENIED", e.0))?,
                ]
            };
            let mut missing = targets.is_empty();
            for target in &targets {
                if target.path == "/" {
                    return Err(fatal(
                        "PERMISSION_DENIED",
                        "refusing to delete the collection root",
                    ));
                }
                match fs::symlink_metadata(&target.local) {
                    Err(e) if e.kind() == ErrorKind::NotFound => missing = true,
                    Err(e) => return Err(fatal(io_code(&e), format!("{}: {e}", target.path))),
                    Ok(meta) if meta.is_dir() => {
                        if !recursive {
                            return Err(fatal(
                                "IS_A_DIRECTORY",
                                format!("{} is a directory; set recursive", target.path),
                            ));
                        }
                        fs::remove_dir_all(&target.local)
                            .map_err(|e| fatal(io_code(&e), e.to_string()))?;
                        self.with_state(|s| s.doc.directories += 1);
                    }
                    Ok(_) => {
                        fs::remove_file(&target.local)
                            .map_err(|e| fatal(io_code(&e), e.to_string()))?;
                        self.with_state(|s| s.doc.files += 1);
                    }
                }
            }
            if missing && !ignore_missing {
                self.with_state(|s| {
                    s.doc.faults += 1;
                    s.doc.subtasks_failed += 1;
                });
                return Err(fatal("FILE_NOT_FOUND", "file not found"));
            }
            self.with_state(|s| s.doc.subtasks_succeeded += 1);
        }
        Ok(())
    }
}

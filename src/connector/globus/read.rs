//! The reader's side: wait until the object is at this site (a destination, or pulled
//! on demand), following its Globus task where this process can see it, then verify.
//!
//! The completion signal is the file itself, present with the key's size and sha256: that
//! needs no credentials and cannot be fooled by a partial file (Globus writes in place).
//! The task adds early, precise failure: a FAILED task, or this object among a succeeded
//! task's skipped errors, is an [`Error::TransferFailed`] at once, not a timeout; and the
//! wait ends at the task's deadline. The tasks followed are the family of the key's
//! label: re-splits and parts (`follow.rs`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::GlobusConnector;
use super::config::{DEFAULT_WAIT, ObjectMeta};
use super::follow::{Family, Paths, Step};
use super::verify::{Verdict, integrity, verify_file};
use crate::connector::Key;
use crate::error::{Error, Result, TransferFailure};
use crate::transfer::{ItemSpec, Priority};

impl GlobusConnector {
    /// [`Connector::resolve_path`](crate::connector::Connector::resolve_path): the
    /// verified local path at this site, waiting for the transfer if it is on the way; a
    /// 40 GB array never passes through memory.
    pub(super) async fn verified_path(&self, key: &Key) -> Result<PathBuf> {
        let meta = self.meta(key)?.ok_or_else(|| {
            Error::invalid_config(
                "globus key",
                format!("key {} carries no object metadata", key.id()),
            )
        })?;
        // The waits and the final check look for links themselves, right before each look.
        let (root, local) = self.object_at_site(&meta.path)?;
        if meta.source != self.inner.site {
            self.wait_for(&meta, &root, &local, false).await?;
        }
        match verify_file(&root, &local, &meta, false).await? {
            Verdict::Match(_) => Ok(local),
            Verdict::Absent => Err(Error::not_found(&self.inner.config.store_dir, key, "")),
            Verdict::WrongSize(size) => Err(integrity(&local, &meta, format!("{size} bytes"))),
            Verdict::Mismatch(found) => Err(integrity(&local, &meta, found)),
        }
    }

    /// Waits until the object is at this site (a destination, or pulled on demand).
    /// `keep`: the caller wants the bytes; the look that finds them verified returns
    /// them, so that they are read and hashed once, not once to wait and once to get.
    pub(super) async fn wait_for(
        &self,
        meta: &ObjectMeta,
        root: &Path,
        local: &Path,
        keep: bool,
    ) -> Result<Option<Bytes>> {
        let label = match self.label_to_follow(meta, root, local, keep).await? {
            Arrival::Here(bytes) => return Ok(bytes),
            Arrival::Follow(label) => label,
        };
        let site = &self.inner.site;
        let (_, source) = self.paths(&meta.source, &meta.path)?;
        let (_, destination) = self.paths(site, &meta.path)?;
        let paths = Paths {
            source,
            destination,
        };
        let watcher = self.watcher().await?.clone();
        let mut family = Family::new(watcher.clone(), &label, paths.clone());
        let explicit = self.inner.config.wait_timeout_s.map(Duration::from_secs);
        let mut until = crate::runtime::deadline_after(explicit.unwrap_or(DEFAULT_WAIT));
        let mut waiting = Waiting::begin(
            &self.inner.config.store_dir,
            &meta.path,
            site,
            &label,
            explicit,
        );
        let mut delay = Duration::from_millis(10);
        let began = Instant::now();
        loop {
            let changed = watcher.changed();
            let verdict = verify_file(root, local, meta, keep).await?;
            if let Verdict::Match(bytes) = verdict {
                return Ok(bytes);
            }
            let root_task = family.root_task();
            waiting.saw(root_task.as_ref());
            // Without a timeout of the store's own, the wait ends at the task's deadline.
            if explicit.is_none()
                && let Some(left) = root_task.as_ref().and_then(time_to_deadline)
            {
                until = crate::runtime::deadline_after(left.saturating_add(Duration::from_secs(5)));
            }
            if let Verdict::Mismatch(found) = &verdict
                && !family.any_seen()
            {
                // Right size, wrong bytes, and no task of ours in flight to explain it.
                return Err(integrity(local, meta, found.clone()));
            }
            match family.step(self.client().await?).await? {
                Step::Wait => {}
                Step::LookAgain => continue,
                Step::Ended(Some(error)) => return Err(error),
                // Every task succeeded and none skipped it: what is there is final.
                Step::Ended(None) => {
                    return Err(not_delivered(verdict, local, meta, root_task, paths));
                }
            }
            let now = Instant::now();
            if now >= until {
                return Err(Error::timeout(
                    format!("{} to arrive at site {site}", meta.path),
                    explicit.unwrap_or(DEFAULT_WAIT),
                ));
            }
            let _ = crate::runtime::timeout(delay.min(until - now), changed).await;
            // A stat is cheap; the file is the completion signal, so look often: every
            // 25 ms while an HTTPS PUT may land (its arrival wakes nothing), then 100 ms.
            let cap = if now < began + LANE_WINDOW {
                Duration::from_millis(25)
            } else {
                Duration::from_millis(100)
            };
            delay = (delay * 2).min(cap);
        }
    }

    /// The object's bytes if they are here already (or for a site that is no destination
    /// and pulls nothing, an error); else the label of the batch that brings them.
    async fn label_to_follow(
        &self,
        meta: &ObjectMeta,
        root: &Path,
        local: &Path,
        keep: bool,
    ) -> Result<Arrival> {
        let site = &self.inner.site;
        let label = match meta.destinations.get(site) {
            Some(label) => label.clone(),
            None => match verify_file(root, local, meta, keep).await? {
                Verdict::Match(bytes) => return Ok(Arrival::Here(bytes)),
                _ if self.inner.config.pull_on_demand => {
                    if let Some(bytes) = self.pull_by_https(meta, keep).await? {
                        return Ok(Arrival::Here(bytes));
                    }
                    self.pull(meta).await?
                }
                _ => {
                    let sent_to: Vec<String> = meta.destinations.keys().cloned().collect();
                    return Err(Error::not_staged(&meta.path, site, &sent_to));
                }
            },
        };
        // Already here: no need to follow the transfer (nor to ask Globus anything).
        Ok(match verify_file(root, local, meta, keep).await? {
            Verdict::Match(bytes) => Arrival::Here(bytes),
            _ => Arrival::Follow(label),
        })
    }

    /// Fetches a small object from its source collection by HTTPS (absolute ranges, a
    /// whole file for an empty one), verifies size and sha256, and writes it here:
    /// `Some` (its bytes if `keep`). `None` when the lane does not apply (too large, no
    /// HTTPS there, a source collection that a store rebuilt from data may not read from,
    /// a nested path) or the fetch failed: the pull goes by Transfer then. Credentials
    /// missing for the source's HTTPS are the typed error, not a silent fallback.
    async fn pull_by_https(&self, meta: &ObjectMeta, keep: bool) -> Result<Option<Option<Bytes>>> {
        let max = self.inner.config.https_max_size_for(&self.inner.site)?;
        let trusted = self
            .inner
            .provenance
            .trust()
            .is_none_or(|trust| trust.collections.contains(&meta.collection));
        if max == 0 || meta.size > max || meta.path.contains('/') || !trusted {
            return Ok(None);
        }
        let Some(https) = self.lane().await?.route(&meta.collection).await? else {
            return Ok(None);
        };
        let (_, source_path) = self.paths(&meta.source, &meta.path)?;
        let bytes = match https.get_sized(&source_path, meta.size).await {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::info!("HTTPS pull of {source_path} failed, it goes by Transfer: {e}");
                return Ok(None);
            }
        };
        let found = super::verify::sha256_hex(&bytes);
        if bytes.len() as u64 != meta.size || found != meta.sha256 {
            let (_, local) = self.object_at_site(&meta.path)?;
            return Err(integrity(
                &local,
                meta,
                format!("{} bytes, sha256 {found}", bytes.len()),
            ));
        }
        self.inner.objects.write_atomic(&meta.path, &bytes)?;
        Ok(Some(keep.then_some(bytes)))
    }

    /// Transfers an object from its source to this site; returns the batch label.
    async fn pull(&self, meta: &ObjectMeta) -> Result<String> {
        let (_, source_path) = self.paths(&meta.source, &meta.path)?;
        let (_, dest_path) = self.paths(&self.inner.site, &meta.path)?;
        let spec = ItemSpec::new(
            meta.collection.to_string(),
            source_path,
            self.inner
                .config
                .site(&self.inner.site)?
                .collection
                .to_string(),
            dest_path,
        )
        .priority(Priority::Latency)
        .options(super::labelled_batches())
        .checksum(meta.sha256.clone(), "SHA256")
        .size(meta.size);
        Ok(self.manager().await?.enqueue(spec).await?.label)
    }
}

/// How long after a reader starts its object may still come by an HTTPS PUT, which no
/// task reports: it looks for the file more often meanwhile.
const LANE_WINDOW: Duration = Duration::from_secs(2);

/// Where an object is when a reader starts to wait for it.
enum Arrival {
    /// Here and verified (its bytes, if they were asked for).
    Here(Option<Bytes>),
    /// On its way in the batch with this label.
    Follow(String),
}

/// A reader's wait as the long-wait report shows it, and the cause it last gave.
struct Waiting {
    wait: crate::waits::Waiting,
    label: String,
    /// What the cause was last said from (task, status, nice_status): said again only
    /// when that changes, not on every look.
    said: Option<(String, crate::transfer::TaskStatus, Option<String>)>,
}

impl Waiting {
    fn begin(
        store_dir: &str,
        path: &str,
        site: &str,
        label: &str,
        limit: Option<Duration>,
    ) -> Self {
        let wait = crate::waits::begin(
            format!("object {store_dir}/{path} to arrive at site {site}"),
            limit.unwrap_or(DEFAULT_WAIT),
            likely_cause(None, label),
        );
        Waiting {
            wait,
            label: label.to_owned(),
            said: None,
        }
    }

    /// One look, which saw the key's own task as `task`.
    fn saw(&mut self, task: Option<&crate::transfer::types::Task>) {
        let state = task.map(|t| (t.task_id.clone(), t.status.clone(), t.nice_status.clone()));
        if state != self.said {
            self.wait.cause(likely_cause(task, &self.label));
            self.said = state;
        }
        self.wait.tick();
    }
}

/// How long until `task`'s deadline, if it has one.
fn time_to_deadline(task: &crate::transfer::types::Task) -> Option<Duration> {
    let deadline = crate::transfer::types::parse_time(task.deadline.as_deref()?)?;
    Some((deadline - chrono::Utc::now()).to_std().unwrap_or_default())
}

/// The error for an object every task of its family delivered without a word, yet
/// whose file (`verdict`) is not right: wrong bytes, or none.
fn not_delivered(
    verdict: Verdict,
    local: &Path,
    meta: &ObjectMeta,
    root_task: Option<crate::transfer::types::Task>,
    paths: Paths,
) -> Error {
    match verdict {
        Verdict::Mismatch(found) => integrity(local, meta, found),
        Verdict::WrongSize(size) => integrity(local, meta, format!("{size} bytes")),
        _ => Error::from(TransferFailure::new(
            root_task.map(|t| t.task_id),
            "MISSING",
            format!(
                "the task succeeded but {} is not there (deleted since?)",
                local.display()
            ),
            (paths.source, paths.destination),
        )),
    }
}

/// Why an object whose batch is labelled `label` is still on its way, as its task says,
/// with the command that shows more.
fn likely_cause(task: Option<&crate::transfer::types::Task>, label: &str) -> String {
    match task {
        None => format!(
            "no Globus task labelled {label} is visible yet: its producer may not have \
             submitted it (a refused login, a process that died before its exit hook): run \
             `ps-globus status` where it was put"
        ),
        Some(task) => {
            let nice = task
                .nice_status
                .as_deref()
                .filter(|n| *n != "OK" && *n != "Queued")
                .map(|n| format!(", nice_status {n}"))
                .unwrap_or_default();
            format!(
                "its Globus task {} is {}{nice}: `ps-globus task show {}`",
                task.task_id, task.status, task.task_id
            )
        }
    }
}

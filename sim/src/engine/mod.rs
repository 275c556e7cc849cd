//! Running tasks: wait for a slot, spend the latency, then really copy or delete files.
//!
//! The copy is streamed in fixed-size chunks (constant memory) and written in place, as
//! the real service does, so a reader that does not wait for the task can see a partial
//! file. Bandwidth is a token bucket per running task, and another that every running
//! task shares (the link). Path faults make a task retry
//! while it stays ACTIVE with the failing code as `nice_status`, until its deadline.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::checksum::{self, Algorithm, Hasher};
use super::config::FaultKind;
use super::paths::{self, Resolved};
use super::tasks::{Request, TaskHandle};
use super::{Collection, SimState};
use ps_globus::transfer::types::{
    DeleteRequest, FatalError, FilterRule, SkippedError, SuccessfulTransfer, TaskStatus,
    TransferItem, TransferRequest, format_time,
};

mod worker;

#[allow(unused_imports)]
pub(crate) use worker::*;

const CHUNK: usize = 256 * 1024;

/// Drives one task from queued to final. Runs on the emulator's runtime.
pub(crate) async fn run(sim: Arc<SimState>, task: Arc<TaskHandle>) {
    // Wait for a running slot (in submission order), or for cancel or the deadline.
    loop {
        let slot_freed = sim.tasks.slots_changed.notified();
        let changed = task.changed.notified();
        if sim.tasks.try_start(&task) {
            break;
        }
        if let Some(stop) = task.stop_reason() {
            sim.tasks.leave_queue(&task);
            finish(&sim, &task, Some(stop));
            return;
        }
        let deadline = task.state().deadline;
        tokio::select! {
            _ = slot_freed => {}
            _ = changed => {}
            _ = sleep_until(deadline) => {}
        }
    }
    {
        let mut state = task.state();
        state.started = Some(Instant::now());
        state.set_ok();
        state.event(
            "STARTED",
            "started",
            "{\"type\": \"ps-globus emulator\"}",
            false,
        );
    }
    task.changed.notify_waiters();
    let outcome = async {
        // The per-task overhead, spent holding the slot, before any copying.
        let latency = sim.config.task_latency();
        let until = tokio::time::Instant::now() + latency;
        loop {
            if let Some(stop) = task.stop_reason() {
                return Some(stop);
            }
            let changed = task.changed.notified();
            let deadline = task.state().deadline;
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                _ = changed => {}
                _ = sleep_until(deadline) => {}
            }
        }
        let (sim2, task2) = (Arc::clone(&sim), Arc::clone(&task));
        tokio::task::spawn_blocking(move || execute(&sim2, &task2))
            .await
            .unwrap_or_else(|e| {
                Some({
                    let mut built = FatalError::default();
                    built.code = "ENDPOINT_ERROR".into();
                    built.description = format!("emulator worker failed: {e}");
                    built
                })
            })
    }
    .await;
    sim.tasks.release(&task);
    finish(&sim, &task, outcome);
}

async fn sleep_until(deadline: chrono::DateTime<Utc>) {
    let left = (deadline - Utc::now()).to_std().unwrap_or(Duration::ZERO);
    tokio::time::sleep(left).await;
}

fn finish(sim: &SimState, task: &TaskHandle, fatal: Option<FatalError>) {
    let (kind, status) = {
        let mut state = task.state();
        state.finish(fatal);
        (task.kind.as_str(), state.doc.status.clone())
    };
    sim.stats.task_finished(kind, status.as_str());
    sim.record(task);
    task.changed.notify_waiters();
}

/// What a failing path does to the task.
enum PathOutcome {
    /// Skipped (skip_source_errors): go on with the next item.
    Skipped,
    /// The task must end with this error.
    Fatal(FatalError),
    /// Put off until the task's other paths are done, as Globus retries a failing file
    /// while it copies the rest (the task shows the fault meanwhile).
    Deferred,
}

/// Runs a task's work on a blocking thread; `Some` is the fatal error, `None` success.
fn execute(sim: &SimState, task: &TaskHandle) -> Option<FatalError> {
    let worker = Worker { sim, task };
    let result = match &task.request {
        Request::Transfer(req) => worker.transfer(req),
        Request::Delete(req) => worker.delete(req),
    };
    result.err()
}

struct Worker<'a> {
    sim: &'a SimState,
    task: &'a TaskHandle,
}

/// How a task treats a failing path.
#[derive(Clone, Copy)]
struct Policy {
    /// `skip_source_errors`: a missing or unreadable source is skipped, not retried.
    skip_source_errors: bool,
    /// `fail_on_quota_errors`: a full destination fails the task.
    fail_on_quota: bool,
    /// Put a failing path off until the rest of the task is done (the first pass).
    defer: bool,
}

/// What one item of a transfer left for the second pass.
enum ItemRun {
    /// Nothing: copied, skipped or up to date.
    Done,
    /// The whole item: its source failed to stat.
    Later,
    /// These of its files.
    Files(Vec<FilePlan>),
}

/// One file to copy.
#[derive(Clone)]
struct FilePlan {
    src: PathBuf,
    src_path: String,
    dst: PathBuf,
    dst_path: String,
    /// The destination collection's root, which `dst` may not leave.
    dst_root: PathBuf,
    /// The checksum the item says the source has, in `algorithm`.
    external: Option<String>,
    /// The item's `checksum_algorithm` as sent (MD5 when absent). Globus uses it for
    /// everything the item asks of checksums: `external_checksum`, `verify_checksum` and
    /// `sync_level` 3 (globus-sdk documents the field so), so one hash serves them all.
    algorithm: Option<String>,
    /// A checksum was asked for in an algorithm one end cannot compute.
    unsupported_checksum: bool,
}

impl FilePlan {
    /// The algorithm of every checksum this item's copy computes.
    fn algorithm(&self) -> io::Result<Algorithm> {
        let name = self.algorithm.as_deref().unwrap_or("MD5");
        Algorithm::parse(name).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unknown checksum algorithm {name:?}"),
            )
        })
    }
}

fn fatal(code: &str, description: impl Into<String>) -> FatalError {
    {
        let mut built = FatalError::default();
        built.code = code.into();
        built.description = description.into();
        built
    }
}

fn io_code(e: &io::Error) -> &'static str {
    match e.kind() {
        ErrorKind::NotFound => "FILE_NOT_FOUND",
        ErrorKind::PermissionDenied => "PERMISSION_DENIED",
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => "QUOTA_EXCEEDED",
        ErrorKind::NotADirectory => "NOT_A_DIRECTORY",
        _ => "ENDPOINT_ERROR",
    }
}

/// Expands `*`, `?` and `[...]` in the last component of a delete path.
fn expand_glob(collection: &Collection, path: &str) -> Result<Vec<Resolved>, FatalError> {
    let resolve = |p: &str| {
        collection
            .resolve(p)
            .map_err(|e| fatal("PERMISSION_DENIED", e.0))
    };
    let (dir, pattern) = path.rsplit_once('/').unwrap_or(("", path));
    let dir = resolve(if dir.is_empty() { "/" } else { dir })?;
    if !pattern.contains(['*', '?', '[']) {
        return Ok(vec![resolve(path)?]);
    }
    let glob = glob::Pattern::new(pattern)
        .map_err(|e| fatal("ENDPOINT_ERROR", format!("bad glob {pattern:?}: {e}")))?;
    let mut found = Vec::new();
    if let Ok(entries) = fs::read_dir(&dir.local) {
        for entry in entries.flatten() {
            if let Ok(name) = entry.file_name().into_string()
                && glob.matches(&name)
            {
                let p = paths::join(&dir.path, &name);
                found.push(resolve(&p)?);
            }
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

/// First matching rule wins; no match includes.
fn filter_allows(rules: &[FilterRule], name: &str, is_dir: bool) -> bool {
    for rule in rules {
        let applies = match rule.kind.as_deref() {
            Some("file") => !is_dir,
            Some("dir") => is_dir,
            _ => true,
        };
        if applies
            && glob::Pattern::new(&rule.name)
                .map(|p| p.matches(name))
                .unwrap_or(false)
        {
            return rule.method != "exclude";
        }
    }
    true
}

/// The faults that act when a source is looked at.
const SOURCE_FAULTS: &[FaultKind] = &[FaultKind::FileNotFound, FaultKind::PermissionDenied];

/// The faults that act when a file is copied (each attempt looks once).
const COPY_FAULTS: &[FaultKind] = &[
    FaultKind::FileNotFound,
    FaultKind::PermissionDenied,
    FaultKind::QuotaExceeded,
    FaultKind::ConnectFailed,
    FaultKind::EndpointError,
];

/// The fault code a task shows for an injected fault.
fn fault_code(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::FileNotFound => "FILE_NOT_FOUND",
        FaultKind::PermissionDenied => "PERMISSION_DENIED",
        FaultKind::QuotaExceeded => "QUOTA_EXCEEDED",
        FaultKind::ConnectFailed => "CONNECT_FAILED",
        FaultKind::ChecksumMismatch => "CHECKSUM_MISMATCH",
        _ => "ENDPOINT_ERROR",
    }
}

/// The code of a transfer that asks for a checksum algorithm one end cannot compute.
const UNSUPPORTED_CHECKSUM: &str = "UNSUPPORTED_CHECKSUM_ALGORITHM";

/// What an event's `details` say about a fault: the kind of GridFTP-style message
/// Globus gives, which never names the path (SPEC §3.11), so no client can learn which
/// file failed from it.
pub(crate) fn event_details(code: &str) -> String {
    let message = match code {
        "FILE_NOT_FOUND" => "No such file or directory",
        "PERMISSION_DENIED" => "Permission denied",
        "QUOTA_EXCEEDED" => "Disk quota exceeded",
        "CONNECT_FAILED" => "Connection to the storage failed",
        "CHECKSUM_MISMATCH" => "Checksum of the copy differs from the source",
        UNSUPPORTED_CHECKSUM => "The storage cannot compute the requested checksum algorithm",
        "CANCELED" => "Canceled by the task owner",
        "EXPIRED" => "The task deadline passed",
        _ => "The storage reported an error",
    };
    format!("Error (transfer)\nServer: ps-globus emulator\nCode: {code}\nMessage: {message}")
}

enum Copied {
    Skipped,
    Done(Done),
}

struct Done {
    bytes: u64,
    /// The source's checksum in the item's algorithm, computed while copying, when
    /// the task verifies or the item carries an external checksum.
    checksum: Option<String>,
}

/// A token bucket of bytes per second, with a tenth of a second of burst.
pub(crate) struct Bucket {
    rate: Option<f64>,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub(crate) fn new(rate: Option<u64>) -> Self {
        Bucket {
            rate: rate.map(|r| r as f64),
            tokens: rate.map_or(0.0, |r| r as f64 / 10.0),
            last: Instant::now(),
        }
    }

    /// Takes `n` bytes' worth of tokens; returns how long to wait before sending them.
    fn take(&mut self, n: u64) -> Option<Duration> {
        let rate = self.rate?;
        let now = Instant::now();
        let burst = rate / 10.0;
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * rate)
            .min(burst.max(n as f64));
        self.last = now;
        self.tokens -= n as f64;
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(method: &str, name: &str, kind: Option<&str>) -> FilterRule {
        {
            let mut built = FilterRule::default();
            built.data_type = "filter_rule".into();
            built.method = method.into();
            built.name = name.into();
            built.kind = kind.map(Into::into);
            built
        }
    }

    #[test]
    fn filter_rules_first_match_wins() {
        let rules = [
            rule("include", "keep.tmp", None),
            rule("exclude", "*.tmp", Some("file")),
            rule("exclude", "cache", Some("dir")),
        ];
        assert!(filter_allows(&rules, "keep.tmp", false));
        assert!(!filter_allows(&rules, "x.tmp", false));
        assert!(
            filter_allows(&rules, "x.tmp", true),
            "the exclude applies to files only"
        );
        assert!(!filter_allows(&rules, "cache", true));
        assert!(filter_allows(&rules, "data.bin", false));
    }

    #[test]
    fn bucket_accounts_bytes_over_time() {
        let mut bucket = Bucket::new(Some(1_000_000));
        // The first tenth of a second is burst; then 1 MB costs ~1 s.
        assert!(bucket.take(100_000).is_none());
        let wait = bucket.take(1_000_000).unwrap();
        assert!(wait >= Duration::from_millis(900), "{wait:?}");
        assert!(Bucket::new(None).take(u64::MAX).is_none());
    }
}

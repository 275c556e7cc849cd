//! The emulator's task state on disk (`sim serve --state FILE`), so that a restart is a
//! service blip, not amnesia: every task, its submission id, events and file lists
//! survive, as they do at Globus.
//!
//! The file is a journal: one JSON line per saved task state, appended and synced, the
//! last line of a task winning. A task is saved before its submission is answered and
//! again when it ends; a running task's progress, if it changed, within [`SAVE_EVERY`].
//! Each save costs one line, however many tasks the file holds; a start reads the journal
//! and rewrites it with one line per task (atomically: written beside it, synced, renamed
//! over it). A half-written last line (a kill mid-write) is ignored. A task caught unfinished by a
//! restart runs again from its start (copies are idempotent), with its counters reset and
//! an event saying so. Auth state (minted tokens, registered clients) is not kept:
//! clients log in again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::SimState;
use super::tasks::{Kind, Request, TaskHandle, TaskState};
use ps_globus::transfer::types::{
    DeleteRequest, Event, SkippedError, SuccessfulTransfer, Task, TaskStatus, TransferRequest,
};
use ps_globus::{Error, Result};

/// How often changed progress is written.
pub(crate) const SAVE_EVERY: Duration = Duration::from_millis(250);

/// The format of the state file; a newer one is refused, not misread.
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Line {
    #[serde(rename = "v")]
    version: u32,
    task: SavedTask,
}

#[derive(Serialize, Deserialize)]
struct SavedTask {
    id: Uuid,
    owner: Uuid,
    submission_id: String,
    request: SavedRequest,
    doc: Task,
    events: Vec<Event>,
    successful: Vec<SuccessfulTransfer>,
    skipped: Vec<SkippedError>,
    deadline: DateTime<Utc>,
    cancel_requested: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", content = "document")]
enum SavedRequest {
    Transfer(TransferRequest),
    Delete(DeleteRequest),
}

/// The journal a running emulator appends to.
pub(crate) struct Journal {
    path: PathBuf,
    /// The file, and a hash of the line last written for each task: an unchanged task
    /// (one waiting a long time, say) adds nothing to the file.
    file: Mutex<(std::fs::File, HashMap<Uuid, u64>)>,
}

impl Journal {
    /// Rewrites `path` with one line per task of `tasks` and opens it for appending.
    pub(crate) fn create(path: &Path, tasks: &[(Arc<TaskHandle>, String)]) -> Result<Journal> {
        let mut text = Vec::new();
        for (task, submission_id) in tasks {
            text.extend(line(task, submission_id)?);
        }
        write_atomically(path, &text)?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| Error::io("open the emulator state", path, e))?;
        Ok(Journal {
            path: path.to_path_buf(),
            file: Mutex::new((file, HashMap::new())),
        })
    }

    /// Appends `task`'s state and syncs it: once this returns, a restart keeps it.
    pub(crate) fn record(&self, task: &TaskHandle) -> Result<()> {
        use std::io::Write;
        let line = line(task, &task.submission_id)?;
        let hash = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            line.hash(&mut h);
            h.finish()
        };
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let (file, written) = &mut *guard;
        if written.get(&task.id) == Some(&hash) {
            return Ok(());
        }
        file.write_all(&line)
            .and_then(|()| file.sync_data())
            .map_err(|e| Error::io("write the emulator state", &self.path, e))?;
        written.insert(task.id, hash);
        Ok(())
    }
}

/// One journal line: `task` as it stands, newline-terminated.
fn line(task: &TaskHandle, submission_id: &str) -> Result<Vec<u8>> {
    let saved = {
        let state = task.state();
        SavedTask {
            id: task.id,
            owner: task.owner,
            submission_id: submission_id.to_owned(),
            request: match &task.request {
                Request::Transfer(r) => SavedRequest::Transfer(r.clone()),
                Request::Delete(r) => SavedRequest::Delete(r.clone()),
            },
            doc: state.doc.clone(),
            events: state.events.clone(),
            successful: state.successful.clone(),
            skipped: state.skipped.clone(),
            deadline: state.deadline,
            cancel_requested: task.is_cancel_requested(),
        }
    };
    let mut bytes = serde_json::to_vec(&Line {
        version: VERSION,
        task: saved,
    })
    .map_err(|e| Error::encode("json", e))?;
    bytes.push(b'\n');
    Ok(bytes)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut beside = path.as_os_str().to_owned();
    beside.push(".tmp");
    let beside = PathBuf::from(beside);
    let io = |what: &'static str| move |e| Error::io(what, path, e);
    let mut file = std::fs::File::create(&beside).map_err(io("write the emulator state"))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io("write the emulator state"))?;
    std::fs::rename(&beside, path).map_err(io("replace the emulator state"))
}

/// A task read back from the state file, and whether it still has to run.
pub(crate) struct Restored {
    pub task: Arc<TaskHandle>,
    pub unfinished: bool,
}

/// Reads the tasks of the journal at `path` (none if it does not exist yet), in the
/// order they were first saved.
pub(crate) fn load(path: &Path) -> Result<Vec<Restored>> {
    let text = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read the emulator state", path, e)),
    };
    let invalid = |message: String| {
        Error::invalid_config(
            "emulator state",
            format!(
                "{}: {message}; move it away to start afresh",
                path.display()
            ),
        )
    };
    let mut order = Vec::new();
    let mut latest: HashMap<Uuid, SavedTask> = HashMap::new();
    let lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
    for (n, bytes) in lines.iter().enumerate() {
        if bytes.is_empty() {
            continue;
        }
        let line: Line = match serde_json::from_slice(bytes) {
            Ok(line) => line,
            // A kill in the middle of an append leaves half a last line, without its
            // newline: ignored (if it is ours: after a saved line, or starting as one).
            Err(_) if n + 1 == lines.len() && (n > 0 || bytes.starts_with(b"{\"v\":")) => {
                break;
            }
            Err(e) => return Err(invalid(format!("line {}: not a saved task: {e}", n + 1))),
        };
        if line.version != VERSION {
            return Err(invalid(format!(
                "line {}: format {} (this emulator reads {VERSION})",
                n + 1,
                line.version
            )));
        }
        if !latest.contains_key(&line.task.id) {
            order.push(line.task.id);
        }
        latest.insert(line.task.id, line.task);
    }
    Ok(order
        .into_iter()
        .filter_map(|id| latest.remove(&id))
        .map(restore)
        .collect())
}

fn restore(saved: SavedTask) -> Restored {
    let (kind, request) = match saved.request {
        SavedRequest::Transfer(r) => (Kind::Transfer, Request::Transfer(r)),
        SavedRequest::Delete(r) => (Kind::Delete, Request::Delete(r)),
    };
    let unfinished = !matches!(saved.doc.status, TaskStatus::Succeeded | TaskStatus::Failed);
    let mut state = TaskState {
        events: saved.events,
        successful: saved.successful,
        skipped: saved.skipped,
        ..TaskState::new(saved.doc, saved.deadline)
    };
    if unfinished {
        restart(&mut state);
    }
    let task = TaskHandle::new(
        saved.id,
        saved.owner,
        kind,
        (saved.submission_id, request),
        state,
    );
    if saved.cancel_requested {
        task.request_cancel();
    }
    Restored {
        task: Arc::new(task),
        unfinished,
    }
}

/// Resets an unfinished task's progress: it runs again from its start.
fn restart(state: &mut TaskState) {
    let d = &mut state.doc;
    d.status = TaskStatus::Active;
    for counter in [
        &mut d.files,
        &mut d.directories,
        &mut d.symlinks,
        &mut d.files_transferred,
        &mut d.files_skipped,
        &mut d.bytes_transferred,
        &mut d.bytes_checksummed,
        &mut d.effective_bytes_per_second,
        &mut d.subtasks_total,
        &mut d.subtasks_pending,
        &mut d.subtasks_retrying,
        &mut d.subtasks_succeeded,
        &mut d.subtasks_failed,
        &mut d.subtasks_canceled,
        &mut d.subtasks_expired,
        &mut d.subtasks_skipped_errors,
    ] {
        *counter = 0;
    }
    d.is_ok = Some(true);
    d.nice_status = Some("Queued".into());
    d.nice_status_short_description = Some("Queued".into());
    d.nice_status_details = None;
    state.successful.clear();
    state.skipped.clear();
    state.event(
        "RESTARTED",
        "restarted",
        "the service restarted; the task runs again from its start",
        false,
    );
}

/// Saves the progress of running tasks every [`SAVE_EVERY`] (a task that did not change
/// is not written again), until the emulator stops.
pub(crate) async fn keep_saved(sim: Arc<SimState>) {
    loop {
        tokio::time::sleep(SAVE_EVERY).await;
        for task in sim.tasks.unfinished() {
            sim.record(&task);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> TaskHandle {
        let state = TaskState::new(Task::default(), Utc::now());
        let request = Request::Transfer(TransferRequest::default());
        TaskHandle::new(
            Uuid::new_v4(),
            Uuid::new_v4(),
            Kind::Transfer,
            ("s".into(), request),
            state,
        )
    }

    /// A task that waits a long time unchanged was written again every 250 ms, growing
    /// the file without end; an unchanged task now adds nothing, a change adds one line.
    #[test]
    fn an_unchanged_task_is_not_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let journal = Journal::create(&path, &[]).unwrap();
        let task = task();
        for _ in 0..5 {
            journal.record(&task).unwrap();
        }
        task.state().doc.bytes_transferred = 10;
        journal.record(&task).unwrap();
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert_eq!(lines, 2);
        let restored = load(&path).unwrap();
        assert_eq!(restored.len(), 1);
        assert_eq!(
            restored[0].task.state().doc.bytes_transferred,
            0,
            "unfinished: restarted"
        );
    }
}

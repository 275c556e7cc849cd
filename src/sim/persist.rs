//! The emulator's task state on disk (`sim serve --state FILE`), so that a restart is a
//! service blip, not amnesia: every task, its submission id, events and file lists
//! survive, as they do at Globus.
//!
//! The file is one JSON document, replaced atomically (written beside it, synced, then
//! renamed over it): a kill at any moment leaves the old state or the new one. A task is
//! saved before its submission is answered, and again when it ends; progress in between
//! is saved within [`SAVE_EVERY`]. A task caught unfinished by a restart runs again from
//! its start (copies are idempotent), with its counters reset and an event saying so.
//! Auth state (minted tokens, registered clients) is not kept: clients log in again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::SimState;
use super::tasks::{Kind, Request, TaskHandle, TaskState};
use crate::error::{Error, Result};
use crate::transfer::types::{
    DeleteRequest, Event, SkippedError, SuccessfulTransfer, Task, TaskStatus, TransferRequest,
};

/// How often changed progress is written.
pub(crate) const SAVE_EVERY: Duration = Duration::from_millis(250);

/// The format of the state file; a newer one is refused, not misread.
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    tasks: Vec<SavedTask>,
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

/// Writes every task of `sim` to its state file, if it has one.
pub(crate) fn save(sim: &SimState) -> Result<()> {
    let Some(path) = &sim.config.state_file else {
        return Ok(());
    };
    // One writer at a time: they share the file written beside the state.
    let _writing = sim.state_lock.lock().unwrap_or_else(|e| e.into_inner());
    // Clear first: a change made while writing marks the state dirty again.
    sim.state_dirty.store(false, Ordering::SeqCst);
    let tasks = sim
        .tasks
        .all()
        .into_iter()
        .map(|(task, submission_id)| {
            let state = task.state();
            SavedTask {
                id: task.id,
                owner: task.owner,
                submission_id,
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
        })
        .collect();
    let json = serde_json::to_vec(&Snapshot {
        version: VERSION,
        tasks,
    })
    .map_err(|e| Error::encode("json", e))?;
    write_atomically(path, &json)
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
    pub submission_id: String,
    pub unfinished: bool,
}

/// Reads the tasks of `path` (none if it does not exist yet).
pub(crate) fn load(path: &Path) -> Result<Vec<Restored>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read the emulator state", path, e)),
    };
    let invalid = |message: String| Error::InvalidConfig {
        what: "emulator state".into(),
        message: format!(
            "{}: {message}; move it away to start afresh",
            path.display()
        ),
    };
    let snapshot: Snapshot =
        serde_json::from_slice(&bytes).map_err(|e| invalid(format!("not a state file: {e}")))?;
    if snapshot.version != VERSION {
        return Err(invalid(format!(
            "format {} (this emulator reads {VERSION})",
            snapshot.version
        )));
    }
    Ok(snapshot.tasks.into_iter().map(restore).collect())
}

fn restore(saved: SavedTask) -> Restored {
    let (kind, request) = match saved.request {
        SavedRequest::Transfer(r) => (Kind::Transfer, Request::Transfer(r)),
        SavedRequest::Delete(r) => (Kind::Delete, Request::Delete(r)),
    };
    let unfinished = !matches!(saved.doc.status, TaskStatus::Succeeded | TaskStatus::Failed);
    let mut state = TaskState {
        doc: saved.doc,
        events: saved.events,
        successful: saved.successful,
        skipped: saved.skipped,
        deadline: saved.deadline,
        started: None,
    };
    if unfinished {
        restart(&mut state);
    }
    let task = TaskHandle::new(saved.id, saved.owner, kind, request, state);
    if saved.cancel_requested {
        task.request_cancel();
    }
    Restored {
        task: Arc::new(task),
        submission_id: saved.submission_id,
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

/// Writes the state whenever it changed, every [`SAVE_EVERY`], until the emulator stops.
pub(crate) async fn keep_saved(sim: Arc<SimState>) {
    loop {
        tokio::time::sleep(SAVE_EVERY).await;
        if (sim.state_dirty.load(Ordering::SeqCst) || sim.tasks.any_unfinished())
            && let Err(e) = save(&sim)
        {
            eprintln!("ps-globus sim: saving the state failed, will retry: {e}");
        }
    }
}

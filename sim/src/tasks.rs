//! Task records and the per-identity scheduler: 3 transfer + 3 delete tasks run at once
//! per identity, the rest wait in submission order; queued + running are capped.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use uuid::Uuid;

use ps_globus::transfer::types::{
    DeleteRequest, Event, FatalError, SkippedError, SuccessfulTransfer, Task, TaskStatus,
    TransferRequest, format_time,
};

/// Tasks of one kind that may run at once per identity.
pub(crate) const RUNNING_SLOTS: usize = 3;

/// `TRANSFER` or `DELETE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Transfer,
    Delete,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Transfer => "TRANSFER",
            Kind::Delete => "DELETE",
        }
    }
}

/// What was submitted.
#[derive(Clone, Debug)]
pub(crate) enum Request {
    Transfer(TransferRequest),
    Delete(DeleteRequest),
}

/// The mutable part of a task: its wire document plus what hangs off it.
pub(crate) struct TaskState {
    pub doc: Task,
    /// Oldest first (served newest first).
    pub events: Vec<Event>,
    pub successful: Vec<SuccessfulTransfer>,
    pub skipped: Vec<SkippedError>,
    pub deadline: DateTime<Utc>,
    pub started: Option<Instant>,
    /// Until when a recovered fault still shows in `nice_status`.
    pub lingering_until: Option<Instant>,
}

impl TaskState {
    /// A task that has not started: its document and deadline, nothing else yet.
    pub(crate) fn new(doc: Task, deadline: DateTime<Utc>) -> TaskState {
        TaskState {
            doc,
            events: Vec::new(),
            successful: Vec::new(),
            skipped: Vec::new(),
            deadline,
            started: None,
            lingering_until: None,
        }
    }

    pub(crate) fn event(&mut self, code: &str, description: &str, details: &str, is_error: bool) {
        self.events.push({
            let mut built = Event::default();
            built.data_type = "event".into();
            built.code = code.into();
            built.description = description.into();
            built.details = details.into();
            built.is_error = is_error;
            built.time = format_time(Utc::now());
            built
        });
    }

    /// Recomputes `subtasks_pending` from the other counters.
    pub(crate) fn settle_pending(&mut self) {
        let d = &mut self.doc;
        let done = d.subtasks_succeeded
            + d.subtasks_failed
            + d.subtasks_canceled
            + d.subtasks_expired
            + d.subtasks_skipped_errors;
        d.subtasks_pending = d.subtasks_total.saturating_sub(done);
    }

    pub(crate) fn is_final(&self) -> bool {
        self.doc.is_final()
    }

    /// Ends the task: SUCCEEDED when `fatal` is `None`, else FAILED with it.
    pub(crate) fn finish(&mut self, fatal: Option<FatalError>) {
        if self.is_final() {
            return;
        }
        self.settle_pending();
        let pending = self.doc.subtasks_pending;
        match &fatal {
            None => {
                self.doc.status = TaskStatus::Succeeded;
                self.event("SUCCEEDED", "succeeded", "", false);
            }
            Some(error) => {
                self.doc.status = TaskStatus::Failed;
                match error.code.as_str() {
                    "CANCELED" => self.doc.subtasks_canceled += pending,
                    "EXPIRED" => self.doc.subtasks_expired += pending,
                    _ => self.doc.subtasks_failed += pending,
                }
                // The description (on the task) may name a path; the event does not.
                let details = crate::engine::event_details(&error.code);
                self.event(&error.code, &error.code.to_lowercase(), &details, true);
            }
        }
        let d = &mut self.doc;
        d.fatal_error = fatal;
        d.subtasks_pending = 0;
        d.subtasks_retrying = 0;
        d.completion_time = Some(format_time(Utc::now()));
        d.is_ok = None;
        d.nice_status = None;
        d.nice_status_short_description = None;
        d.nice_status_details = None;
        d.nice_status_expires_in = None;
        if let Some(started) = self.started {
            let secs = started.elapsed().as_secs_f64().max(1e-3);
            d.effective_bytes_per_second = (d.bytes_transferred as f64 / secs) as u64;
        }
    }

    /// Marks the task moving again after a fault: `nice_status` keeps the fault for
    /// `linger` (with `nice_status_expires_in` counting down), as Globus shows "an error
    /// within the past 15 minutes" on a task that has recovered.
    pub(crate) fn recovered(&mut self, linger: Duration) {
        self.doc.subtasks_retrying = 0;
        if linger.is_zero() || self.doc.is_ok != Some(false) {
            self.set_ok();
        } else {
            self.lingering_until = Some(Instant::now() + linger);
            self.doc.nice_status_expires_in = Some(linger.as_secs() as i64);
        }
    }

    /// The task document as it reads now: a lingering fault that has expired is cleared
    /// and the seconds left of one that has not are counted down.
    pub(crate) fn current(&mut self) -> Task {
        if let Some(until) = self.lingering_until {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.set_ok();
            } else if !self.is_final() {
                self.doc.nice_status_expires_in = Some(left.as_secs().max(1) as i64);
            }
        }
        self.doc.clone()
    }

    /// Marks the task healthy and running.
    pub(crate) fn set_ok(&mut self) {
        self.lingering_until = None;
        let d = &mut self.doc;
        d.status = TaskStatus::Active;
        d.is_ok = Some(true);
        d.nice_status = Some("OK".into());
        d.nice_status_short_description = Some("OK".into());
        d.nice_status_details = None;
        d.nice_status_expires_in = Some(-1);
        d.subtasks_retrying = 0;
    }

    /// Marks the task ACTIVE but failing with `code` (retrying).
    pub(crate) fn set_retrying(&mut self, code: &str, details: &str, retry_in_s: i64) {
        self.lingering_until = None;
        let d = &mut self.doc;
        d.faults += 1;
        d.is_ok = Some(false);
        d.nice_status = Some(code.into());
        d.nice_status_short_description = Some(code.to_lowercase().replace('_', " "));
        d.nice_status_details = Some(details.into());
        d.nice_status_expires_in = Some(retry_in_s.max(1));
        d.subtasks_retrying = 1;
    }
}

/// One task: immutable identity, mutable state, and its wake-up channel.
pub(crate) struct TaskHandle {
    pub id: Uuid,
    pub owner: Uuid,
    pub kind: Kind,
    /// The submission id it was accepted under.
    pub submission_id: String,
    pub request: Request,
    state: Mutex<TaskState>,
    cancel: AtomicBool,
    /// Notified on cancel, deadline changes and when the task finishes.
    pub changed: Notify,
}

impl TaskHandle {
    pub(crate) fn new(
        id: Uuid,
        owner: Uuid,
        kind: Kind,
        (submission_id, request): (String, Request),
        state: TaskState,
    ) -> Self {
        TaskHandle {
            id,
            owner,
            kind,
            submission_id,
            request,
            state: Mutex::new(state),
            cancel: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, TaskState> {
        self.state.lock().expect("task state poisoned")
    }

    pub(crate) fn request_cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    pub(crate) fn is_cancel_requested(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    /// Why the task must stop now, if it must.
    pub(crate) fn stop_reason(&self) -> Option<FatalError> {
        if self.is_cancel_requested() {
            return Some({
                let mut built = FatalError::default();
                built.code = "CANCELED".into();
                built.description = "canceled by the task owner".into();
                built
            });
        }
        if Utc::now() >= self.state().deadline {
            return Some({
                let mut built = FatalError::default();
                built.code = "EXPIRED".into();
                built.description = "the task's deadline passed before it completed".into();
                built
            });
        }
        None
    }
}

#[derive(Default)]
struct Slots {
    running: usize,
    queue: VecDeque<Uuid>,
}

/// Every task of the emulator, the submission ids seen, and the running slots.
#[derive(Default)]
pub(crate) struct TaskTable {
    inner: Mutex<TableInner>,
    /// Notified whenever a slot frees up.
    pub slots_changed: Notify,
}

#[derive(Default)]
struct TableInner {
    tasks: HashMap<Uuid, Arc<TaskHandle>>,
    /// Submission order.
    order: Vec<Uuid>,
    submissions: HashMap<(Uuid, String), Uuid>,
    slots: HashMap<(Uuid, Kind), Slots>,
}

/// Why a submission was not accepted as a new task.
pub(crate) enum Admission {
    Accepted(Arc<TaskHandle>),
    Duplicate(Uuid),
    /// An unfinished task of the identity writes to the same paths.
    Conflict,
    OverCap(usize),
}

impl TaskTable {
    fn lock(&self) -> MutexGuard<'_, TableInner> {
        self.inner.lock().expect("task table poisoned")
    }

    /// Admits a new task unless its submission id was used by this identity before, an
    /// unfinished task of the identity `conflicts` with it, or the identity has too many
    /// pending tasks. A refused submission id stays unused.
    pub(crate) fn admit(
        &self,
        submission_id: &str,
        cap: usize,
        conflicts: impl Fn(&TaskHandle) -> bool,
        make: impl FnOnce() -> TaskHandle,
    ) -> Admission {
        let mut t = self.lock();
        let task = make();
        let submission = (task.owner, submission_id.to_owned());
        if let Some(existing) = t.submissions.get(&submission) {
            return Admission::Duplicate(*existing);
        }
        if let Some(other) = t
            .order
            .iter()
            .filter_map(|id| t.tasks.get(id))
            .filter(|other| other.owner == task.owner && other.kind == task.kind)
            .find(|other| !other.state().is_final() && conflicts(other))
        {
            tracing::debug!("submission conflicts with task {}", other.id);
            return Admission::Conflict;
        }
        let pending: usize = [Kind::Transfer, Kind::Delete]
            .iter()
            .filter_map(|k| t.slots.get(&(task.owner, *k)))
            .map(|s| s.running + s.queue.len())
            .sum();
        if pending >= cap {
            return Admission::OverCap(pending);
        }
        let task = Arc::new(task);
        t.submissions.insert(submission, task.id);
        t.order.push(task.id);
        t.tasks.insert(task.id, Arc::clone(&task));
        t.slots
            .entry((task.owner, task.kind))
            .or_default()
            .queue
            .push_back(task.id);
        Admission::Accepted(task)
    }

    /// Takes a running slot if `task` is first in its queue and a slot is free.
    pub(crate) fn try_start(&self, task: &TaskHandle) -> bool {
        let mut t = self.lock();
        let slots = t.slots.entry((task.owner, task.kind)).or_default();
        if slots.running < RUNNING_SLOTS && slots.queue.front() == Some(&task.id) {
            slots.queue.pop_front();
            slots.running += 1;
            return true;
        }
        false
    }

    /// Removes a task that never ran from its queue.
    pub(crate) fn leave_queue(&self, task: &TaskHandle) {
        let mut t = self.lock();
        if let Some(slots) = t.slots.get_mut(&(task.owner, task.kind)) {
            slots.queue.retain(|id| *id != task.id);
        }
        drop(t);
        self.slots_changed.notify_waiters();
    }

    /// Gives back a running slot.
    pub(crate) fn release(&self, task: &TaskHandle) {
        let mut t = self.lock();
        if let Some(slots) = t.slots.get_mut(&(task.owner, task.kind)) {
            slots.running = slots.running.saturating_sub(1);
        }
        drop(t);
        self.slots_changed.notify_waiters();
    }

    /// Forgets a task, its submission id included, as a service restarted without its
    /// state (or a task deleted from history) has; true if it was known.
    pub(crate) fn forget(&self, id: &Uuid) -> bool {
        let mut t = self.lock();
        let Some(task) = t.tasks.remove(id) else {
            return false;
        };
        t.order.retain(|known| known != id);
        t.submissions.retain(|_, known| known != id);
        if let Some(slots) = t.slots.get_mut(&(task.owner, task.kind)) {
            slots.queue.retain(|queued| queued != id);
        }
        true
    }

    /// Puts back a task read from the state file; an unfinished one queues to run again.
    pub(crate) fn restore(&self, task: Arc<TaskHandle>, unfinished: bool) {
        let mut t = self.lock();
        t.submissions
            .insert((task.owner, task.submission_id.clone()), task.id);
        t.order.push(task.id);
        if unfinished {
            t.slots
                .entry((task.owner, task.kind))
                .or_default()
                .queue
                .push_back(task.id);
        }
        t.tasks.insert(task.id, task);
    }

    /// Every task in submission order, with its submission id (for the state file).
    pub(crate) fn all(&self) -> Vec<(Arc<TaskHandle>, String)> {
        let t = self.lock();
        t.order
            .iter()
            .filter_map(|id| t.tasks.get(id))
            .map(|task| (Arc::clone(task), task.submission_id.clone()))
            .collect()
    }

    /// The tasks still queued or running.
    pub(crate) fn unfinished(&self) -> Vec<Arc<TaskHandle>> {
        let tasks: Vec<Arc<TaskHandle>> = self.lock().tasks.values().cloned().collect();
        tasks
            .into_iter()
            .filter(|task| !task.state().is_final())
            .collect()
    }

    pub(crate) fn get(&self, id: &Uuid) -> Option<Arc<TaskHandle>> {
        self.lock().tasks.get(id).cloned()
    }

    /// Every task of `owner`, in submission order.
    pub(crate) fn owned_by(&self, owner: Uuid) -> Vec<Arc<TaskHandle>> {
        let t = self.lock();
        t.order
            .iter()
            .filter_map(|id| t.tasks.get(id))
            .filter(|task| task.owner == owner)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> TaskState {
        TaskState::new(Task::default(), Utc::now())
    }

    /// SPEC §3.11: a fault stays in `nice_status` for its expiry window after the task
    /// recovered, counting down, then clears.
    #[test]
    fn a_recovered_fault_lingers_in_nice_status_until_it_expires() {
        let mut s = state();
        s.set_retrying("CONNECT_FAILED", "details", 1);
        s.recovered(Duration::from_secs(900));
        let doc = s.current();
        assert_eq!(doc.nice_status.as_deref(), Some("CONNECT_FAILED"));
        assert_eq!(doc.is_ok, Some(false));
        assert_eq!(doc.subtasks_retrying, 0, "no longer retrying");
        assert!((890..=900).contains(&doc.nice_status_expires_in.unwrap()));
        // Expired: cleared on the next read.
        s.lingering_until = Some(Instant::now());
        let doc = s.current();
        assert_eq!(doc.nice_status.as_deref(), Some("OK"));
        assert_eq!(doc.is_ok, Some(true));
        // Without a linger window, a recovery clears at once.
        let mut s = state();
        s.set_retrying("CONNECT_FAILED", "details", 1);
        s.recovered(Duration::ZERO);
        assert_eq!(s.current().nice_status.as_deref(), Some("OK"));
    }
}

//! What the manager reports: where an item stands, what a batch is.

use serde::{Deserialize, Serialize};

use crate::error::{Error, NeedsAttention, TransferFailure};
use crate::transfer::states::{BatchState, ItemState, TaskStatus};

/// Where an item stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ItemStatus {
    /// The item id.
    pub item: i64,
    /// `PENDING`, `SUCCEEDED`, `FAILED` or `CANCELED`.
    pub state: ItemState,
    /// The Globus code of a failure.
    pub code: Option<String>,
    /// The Globus description of a failure.
    pub description: Option<String>,
    /// Source path.
    pub source_path: String,
    /// Destination path.
    pub destination_path: String,
    /// The batch label.
    pub label: String,
    /// The batch state (`OPEN`, `READY`, `SUBMITTING`, `SUBMITTED`, `DONE`).
    pub batch_state: BatchState,
    /// The Globus task, once known.
    pub task_id: Option<String>,
    /// The task's last Globus status (`ACTIVE`, `INACTIVE`, ...).
    pub task_status: Option<TaskStatus>,
    /// The task's last `nice_status`.
    pub nice_status: Option<String>,
    /// Bytes the task has moved so far.
    pub bytes_transferred: i64,
    /// Why the task waits for a human (a permission error that persists), while it does.
    #[serde(default)]
    pub attention: Option<String>,
}

impl ItemStatus {
    /// Whether the item has reached a final state.
    pub fn is_final(&self) -> bool {
        self.state.is_final()
    }

    /// Why the item did not arrive, as the error a wait returns: [`Error::TransferFailed`]
    /// with the Globus code and description, or [`NeedsAttention`] while its task
    /// is paused (INACTIVE); `None` if it succeeded or is still on its way.
    pub fn error(&self) -> Option<Error> {
        match self.state {
            ItemState::Succeeded => None,
            ItemState::Failed | ItemState::Canceled | ItemState::Other(_) if self.is_final() => {
                Some(Error::from(TransferFailure::new(
                    self.task_id.clone(),
                    self.code.clone().unwrap_or_else(|| self.state.to_string()),
                    self.description.clone().unwrap_or_default(),
                    (self.source_path.clone(), self.destination_path.clone()),
                )))
            }
            _ if self.task_status == Some(TaskStatus::Inactive) => {
                let reason = format!(
                    "Globus paused it ({}): the credentials or a data_access consent expired",
                    self.nice_status.as_deref().unwrap_or("INACTIVE")
                );
                let task = self.task_id.clone().unwrap_or_default();
                Some(NeedsAttention::login(task, reason).into())
            }
            _ => self.attention.as_ref().map(|reason| {
                let reason = format!("Globus keeps retrying it on {reason}, and nothing moves");
                let task = self.task_id.clone().unwrap_or_default();
                NeedsAttention::access(task, reason).into()
            }),
        }
    }
}

/// A batch, as the state database records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)] // the column names say it
#[non_exhaustive]
pub struct BatchStatus {
    pub label: String,
    /// The identity (and service) it belongs to: `IDENTITY@TRANSFER_URL`.
    #[serde(default)]
    pub identity: String,
    /// The process that made it, `host:pid:start`.
    #[serde(default)]
    pub owner: String,
    pub state: BatchState,
    pub source: String,
    pub destination: String,
    pub priority: String,
    pub items: i64,
    pub submission_id: Option<String>,
    pub task_id: Option<String>,
    pub status: Option<TaskStatus>,
    pub nice_status: Option<String>,
    pub bytes_transferred: i64,
    pub files: i64,
    pub files_transferred: i64,
    pub fatal_code: Option<String>,
    pub fatal_description: Option<String>,
    pub resplit_of: Option<i64>,
    /// The last submission error, or why Globus asked the batch to wait.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Not posted again before this (Globus asked it to wait).
    #[serde(default)]
    pub held_until: Option<chrono::DateTime<chrono::Utc>>,
    /// Why its task waits for a human, while it does.
    #[serde(default)]
    pub attention: Option<String>,
    /// Files its task skipped as already up to date (`sync_level`): not failures.
    #[serde(default)]
    pub files_skipped: i64,
    /// Files its task skipped on errors (`skip_source_errors`): each a failed item.
    #[serde(default)]
    pub skipped_errors: i64,
    /// Its items that arrived.
    #[serde(default)]
    pub items_succeeded: i64,
    /// Its items still on their way.
    #[serde(default)]
    pub items_pending: i64,
    /// The bytes of all its items, where every item's size is known.
    #[serde(default)]
    pub bytes_total: Option<i64>,
}

impl BatchStatus {
    /// Its items that ended without arriving (failed, skipped on an error, canceled).
    pub fn items_failed(&self) -> i64 {
        self.items - self.items_succeeded - self.items_pending
    }

    /// The batch's result in one word, judged by its items and not only by its task:
    /// `SUCCEEDED` only if every item arrived, so a task Globus calls SUCCEEDED after
    /// skipping a file on an error is `FAILED` here; `CANCELED` if it was canceled. In
    /// flight: the task's status (`ACTIVE`, `INACTIVE`), or the batch's state before it
    /// has a task (`OPEN`, `READY`, `SUBMITTING`).
    pub fn outcome(&self) -> String {
        if self.state != BatchState::Done {
            return self
                .status
                .as_ref()
                .map_or_else(|| self.state.to_string(), ToString::to_string);
        }
        match self.fatal_code.as_deref() {
            _ if self.items_failed() == 0 => "SUCCEEDED".into(),
            Some("CANCELED") => "CANCELED".into(),
            _ => "FAILED".into(),
        }
    }
}

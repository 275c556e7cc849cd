//! The typed rows that `sql.rs` reads and writes: what the rest of the manager sees of
//! the state database.

use crate::transfer::types::Task;

/// The batch an item joins: (source, destination, options as JSON, priority code).
pub(super) type BatchKey = (String, String, String, i64);

/// A process as the `processes` table records it.
pub(crate) struct ProcessRow {
    pub owner: String,
    pub host: String,
    pub pid: u32,
    pub started: String,
    pub heartbeat_at: i64,
}

/// A batch at Globus that the poller follows.
pub(super) struct InFlight {
    pub id: i64,
    pub task_id: String,
    pub submitted_at: i64,
    pub bytes_transferred: i64,
    /// Files and subtasks finished, as last polled ([`progress`]).
    pub progress: i64,
    pub status: Option<String>,
    pub nice_status: Option<String>,
    pub nice_status_since: Option<i64>,
    pub resplit_of: Option<i64>,
}

/// What a task has finished so far besides bytes: files copied or skipped, subtasks
/// ended. These counters only grow, so any change means the task moves.
pub(super) fn progress(task: &Task) -> i64 {
    (task.files_transferred
        + task.files_skipped
        + task.subtasks_succeeded
        + task.subtasks_failed
        + task.subtasks_skipped_errors) as i64
}

/// An item of a batch that is not final yet.
pub(super) struct PendingItem {
    pub id: i64,
    pub source_path: String,
    pub destination_path: String,
    /// Whether the item is a directory copied recursively.
    pub recursive: bool,
}

/// What one poll learnt about one batch's task.
pub(super) struct Observed<'a> {
    pub batch: i64,
    pub task: &'a Task,
    /// Since when the task has been stuck on a fatal `nice_status` (`None`: it is not).
    pub fatal_since: Option<i64>,
    /// Why the task waits for a human, if it does (recorded for its readers).
    pub attention: Option<String>,
}

/// What a batch becomes at Globus: its request's fields.
pub(super) struct BatchToPost {
    pub label: String,
    pub source: String,
    pub destination: String,
    pub options: String,
    pub items: Vec<ItemToPost>,
}

/// One item of a [`BatchToPost`].
pub(super) struct ItemToPost {
    pub id: i64,
    pub source_path: String,
    pub destination_path: String,
    pub recursive: Option<bool>,
    pub external_checksum: Option<String>,
    pub checksum_algorithm: Option<String>,
}

/// How one pending item of an ending batch ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum ItemEnd {
    /// Copied: Globus gave positive evidence.
    Succeeded,
    /// Failed with its own code and description (`CANCELED` ends it CANCELED).
    Failed { code: String, description: String },
    /// Moved to the batch's re-split, to be submitted again.
    Resplit,
    /// Moved to the re-split without its external checksum: a collection could not
    /// compute the algorithm (the reader still verifies the bytes by their sha256).
    ResplitWithoutChecksum,
}

/// How a batch ends: at Globus, refused at submission (then there is no task), or
/// forgotten by the service.
pub(super) struct BatchEnd<'a> {
    pub batch: i64,
    pub task: Option<&'a Task>,
    /// The batch's own code and description; `None`: it ended well.
    pub fatal: Option<(&'a str, &'a str)>,
    /// The fate of pending items. Pending items not listed end with the batch's code
    /// and description (`CANCELED` ends them CANCELED, anything else FAILED).
    pub items: Vec<(i64, ItemEnd)>,
    /// The process ending the batch, which owns its re-split if there is one.
    pub owner: &'a str,
}

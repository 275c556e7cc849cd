//! The typed rows that `sql.rs` reads and writes: what the rest of the manager sees of
//! the state database.

use crate::transfer::types::Task;

/// The batch an item joins: (source, destination, options as JSON, priority code).
pub(super) type BatchKey = (String, String, String, i64);

/// A process as the `processes` table records it.
pub(super) struct ProcessRow {
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
    pub status: Option<String>,
    pub nice_status: Option<String>,
    pub nice_status_since: Option<i64>,
    pub resplit_of: Option<i64>,
}

/// An item of a batch that is not final yet: (id, source path, destination path).
pub(super) type PendingItem = (i64, String, String);

/// What one poll learnt about one batch's task.
pub(super) struct Observed<'a> {
    pub batch: i64,
    pub task: &'a Task,
    /// Since when the task has been stuck on a fatal `nice_status` (`None`: it is not).
    pub fatal_since: Option<i64>,
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
    pub source_path: String,
    pub destination_path: String,
    pub recursive: Option<bool>,
    pub external_checksum: Option<String>,
    pub checksum_algorithm: Option<String>,
}

/// How a batch ended without a succeeded task: failed at Globus, or refused at
/// submission (then there is no task).
pub(super) struct BatchEnd<'a> {
    pub batch: i64,
    pub task: Option<&'a Task>,
    /// The Globus code; `CANCELED` ends the pending items CANCELED, anything else FAILED.
    pub code: &'a str,
    pub description: &'a str,
    /// Items Globus reports as copied all the same.
    pub succeeded: &'a [i64],
}

/// What fail-fast decided for a stuck batch.
pub(super) struct FailFast<'a> {
    pub batch: i64,
    pub task: &'a Task,
    pub succeeded: &'a [i64],
    /// The failing items, with their description; they fail with `code`.
    pub failing: &'a [(i64, String)],
    /// The rest: re-split into a new batch (`Some(new label)`), or failed with `reason`.
    pub rest: &'a [i64],
    pub resplit_label: Option<String>,
    pub code: &'a str,
    pub reason: &'a str,
    pub identity: &'a str,
    pub owner: &'a str,
}

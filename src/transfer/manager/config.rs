//! What a caller hands the manager: its configuration, per-task options, and items.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Transfer requests per second per state database and identity, by default.
pub(crate) const DEFAULT_REQUEST_BUDGET: f64 = 8.0;

/// The largest `POST /transfer` document the manager makes by default: 1 MiB (about
/// 5 000 items with 60-byte paths). Globus documents no limit; see
/// [`ManagerConfig::max_document_bytes`].
pub const DEFAULT_MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// How the manager batches, admits and polls.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ManagerConfig {
    /// Close a batch after this long without a new item.
    pub quiet: Duration,
    /// Close a batch this long after its first item, however busy.
    pub max_delay: Duration,
    /// Close a batch at this many items.
    pub max_items: usize,
    /// Close a batch before its `POST /transfer` document would pass this many bytes
    /// (estimated from its paths; the document is measured again before it is posted,
    /// and a batch over it is split in two). Globus documents no limit on a
    /// submission's size; the default, [`DEFAULT_MAX_DOCUMENT_BYTES`], is a guess kept
    /// well under common proxy limits. A service that still answers 413 has the batch
    /// split and posted in halves, never failed.
    pub max_document_bytes: usize,
    /// Tasks of this identity pending at Globus at once (Globus allows 100).
    pub max_pending_tasks: usize,
    /// Every this-many admissions, waiting bulk work goes before latency work.
    pub bulk_every: usize,
    /// The poll interval while tasks are young or progressing.
    pub poll_min: Duration,
    /// The poll interval for young tasks that nobody in this process waits for (the
    /// state database still learns their fate; a `wait` brings `poll_min` back).
    pub poll_idle: Duration,
    /// The longest poll interval, for long quiet tasks.
    pub poll_max: Duration,
    /// Tasks younger than this are polled at `poll_min`.
    pub young: Duration,
    /// A task ACTIVE with a fatal `nice_status` this long is cancelled and re-split.
    pub fail_fast_after: Duration,
    /// How long a poller lease lasts without renewal.
    pub lease_ttl: Duration,
    /// Transfer requests per second that every process of this state database sends
    /// for the identity together: manager, poller and watcher share it (0: no limit).
    /// Globus allows about 20 per user; the default 8 keeps a producer's and a
    /// consumer's databases on one host under it together.
    pub request_budget: f64,
    /// Tasks of an identity that Globus runs at once (3; the rest queue). While this
    /// many of the identity's tasks are at Globus, open batches stay open (up to
    /// `max_items`, or 10 s) so that later items join them: one task when a slot frees,
    /// not many queued. 0: submit as soon as a batch closes, however busy Globus is.
    pub running_slots: usize,
    /// Running slots kept for latency work (the express lane, `express.rs`): while the
    /// identity has latency batches to do, or made one within `express_window`, bulk
    /// tasks at Globus stay below `running_slots - express_slots` (at least 1), so a
    /// latency batch never queues behind bulk ones. 0: bulk and latency share every slot.
    pub express_slots: usize,
    /// How long after the last latency batch was made the slots stay kept.
    pub express_window: Duration,
    /// Whether this manager submits the never-submitted batches that processes which
    /// have since died left behind (crash recovery: on by default). A program that only
    /// looks at the state, or prunes it, turns it off.
    pub adopt_orphans: bool,
    /// Aborts the process at this named point of submission (`after-commit`,
    /// `after-post`), to test crash recovery. Only in builds with the `failpoints`
    /// feature, never in a release binary.
    #[cfg(feature = "failpoints")]
    pub failpoint: Option<String>,
}

impl ManagerConfig {
    /// The defaults, with what `settings` say about the manager: the request budget
    /// (and, in builds with the `failpoints` feature, `PS_GLOBUS_FAILPOINT`).
    pub fn from_settings(settings: &crate::settings::Settings) -> Self {
        ManagerConfig {
            request_budget: settings
                .request_budget
                .map_or(DEFAULT_REQUEST_BUDGET, f64::from),
            #[cfg(feature = "failpoints")]
            failpoint: settings.failpoint.clone(),
            ..ManagerConfig::default()
        }
    }
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            quiet: Duration::from_millis(20),
            max_delay: Duration::from_millis(500),
            max_items: 10_000,
            max_document_bytes: DEFAULT_MAX_DOCUMENT_BYTES,
            max_pending_tasks: 20,
            bulk_every: 3,
            poll_min: Duration::from_millis(250),
            poll_idle: Duration::from_secs(1),
            poll_max: Duration::from_secs(15),
            young: Duration::from_secs(10),
            fail_fast_after: Duration::from_secs(60),
            lease_ttl: Duration::from_secs(10),
            request_budget: DEFAULT_REQUEST_BUDGET,
            adopt_orphans: true,
            running_slots: 3,
            express_slots: 1,
            express_window: Duration::from_secs(60),
            #[cfg(feature = "failpoints")]
            failpoint: None,
        }
    }
}

/// Per-task options; items with different options go to different tasks.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BatchOptions {
    /// 0 exists, 1 size, 2 mtime, 3 checksum; `None`: always copy.
    pub sync_level: Option<u8>,
    /// Verify checksums after copying (default true).
    pub verify_checksum: bool,
    /// Skip missing or unreadable sources, failing only their items (default true).
    pub skip_source_errors: bool,
    /// Copy modification times.
    pub preserve_timestamp: bool,
    /// Fail on quota errors instead of retrying.
    pub fail_on_quota_errors: bool,
    /// The task's deadline (RFC 3339 or `YYYY-MM-DD HH:MM:SS`).
    pub deadline: Option<String>,
    /// The Globus task's label (default: the batch label, `psg-...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The batch's label is handed out: readers at other sites find the Globus task by
    /// it (a Globus store's keys carry it), so the batch never joins another process's
    /// batch at submission (whose task has another label), nor waits for such mates.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_label: bool,
    /// The batch's items go by HTTPS first ([`ItemSpec::via_https`]): set by the
    /// manager from its items, so that they never share a batch with Transfer-only ones.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) https_lane: bool,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            sync_level: None,
            verify_checksum: true,
            skip_source_errors: true,
            preserve_timestamp: false,
            fail_on_quota_errors: false,
            deadline: None,
            label: None,
            keep_label: false,
            https_lane: false,
        }
    }
}

/// Who waits for an item: latency-sensitive proxy traffic, or bulk staging.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Priority {
    /// Proxies being resolved: goes first.
    Latency,
    /// Staging: goes after latency work, but is never starved.
    Bulk,
}

/// One path to transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ItemSpec {
    /// Source collection id.
    pub source: String,
    /// Destination collection id.
    pub destination: String,
    /// Path on the source collection.
    pub source_path: String,
    /// Path on the destination collection.
    pub destination_path: String,
    /// Directory or file; `None` lets Globus detect it.
    pub recursive: Option<bool>,
    /// A checksum the copy must match, with its algorithm (e.g. `SHA256`).
    pub external_checksum: Option<(String, String)>,
    /// The size in bytes, where known: progress then counts toward a total.
    pub size: Option<u64>,
    /// Task options.
    pub options: BatchOptions,
    /// Scheduling class.
    pub priority: Priority,
    /// Sent by HTTPS first ([`ItemSpec::via_https`]).
    pub(crate) https: bool,
}

impl ItemSpec {
    /// A file or directory from `source:source_path` to `destination:destination_path`,
    /// default options, bulk priority.
    pub fn new(
        source: impl Into<String>,
        source_path: impl Into<String>,
        destination: impl Into<String>,
        destination_path: impl Into<String>,
    ) -> Self {
        ItemSpec {
            source: source.into(),
            destination: destination.into(),
            source_path: source_path.into(),
            destination_path: destination_path.into(),
            recursive: None,
            external_checksum: None,
            size: None,
            options: BatchOptions::default(),
            priority: Priority::Bulk,
            https: false,
        }
    }

    /// Sent by HTTPS first, by the caller, straight to the destination collection (the
    /// lane for small objects, `transfer/lane.rs`). The item is committed in
    /// the `HTTPS` state, which is never submitted; the caller reports the request's fate
    /// ([`TransferManager::https_delivered`](super::TransferManager::https_delivered),
    /// [`https_failed`](super::TransferManager::https_failed)). One that failed, or whose
    /// sender died, goes by Transfer, once, in a task labelled as its batch.
    pub(crate) fn via_https(mut self) -> Self {
        self.https = true;
        self
    }

    /// With `priority`.
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// With `options`.
    pub fn options(mut self, options: BatchOptions) -> Self {
        self.options = options;
        self
    }

    /// With its size in bytes (for progress toward a total).
    pub fn size(mut self, bytes: u64) -> Self {
        self.size = Some(bytes);
        self
    }

    /// With an external checksum (`algorithm` e.g. `SHA256`).
    pub fn checksum(mut self, checksum: impl Into<String>, algorithm: impl Into<String>) -> Self {
        self.external_checksum = Some((checksum.into(), algorithm.into()));
        self
    }

    /// What this item adds to its batch's `POST /transfer` document, estimated as
    /// [`super::split::ITEM_BYTES_SQL`] estimates it for stored items.
    pub(super) fn document_bytes(&self) -> usize {
        let checksum = self
            .external_checksum
            .as_ref()
            .map_or(0, |(sum, algorithm)| sum.len() + algorithm.len());
        self.source_path.len()
            + self.destination_path.len()
            + checksum
            + super::split::ITEM_OVERHEAD
    }
}

/// What [`TransferManager::enqueue`](super::TransferManager::enqueue) hands back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Enqueued {
    /// The item's id in the state database.
    pub item: i64,
    /// The label of its batch (and of the Globus task it becomes).
    pub label: String,
    /// An earlier command queued this very copy, and this is its item
    /// ([`TransferManager::enqueue_once`](super::TransferManager::enqueue_once)).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub earlier: bool,
}

impl Priority {
    /// The stored form: latency work sorts first.
    pub(super) fn code(self) -> i64 {
        match self {
            Priority::Latency => 0,
            Priority::Bulk => 1,
        }
    }

    /// The name `status` shows for a stored priority code.
    pub(super) fn name_of(code: i64) -> &'static str {
        if code == Priority::Latency.code() {
            "latency"
        } else {
            "bulk"
        }
    }
}

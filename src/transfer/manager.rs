//! The `TransferManager`: every transfer item tracked in the state database, coalesced
//! into few Globus tasks, submitted exactly once, polled by one poller, resumed after a
//! crash.
//!
//! ## The life of an item
//!
//! 1. [`enqueue`](TransferManager::enqueue) puts the item in the *open batch* for its
//!    (source, destination, options, priority) and returns once the item row is committed
//!    (group commit: one transaction per wake-up of the writer, however many items
//!    arrived meanwhile). The batch's label, `psg-<32 hex>`, is fixed when it opens.
//! 2. A batch *closes* after [`quiet`](ManagerConfig::quiet) without new items, or at
//!    [`max_delay`](ManagerConfig::max_delay), or at [`max_items`](ManagerConfig::max_items).
//!    Its items are fixed from then on (`READY`).
//! 3. Admission: at most [`max_pending_tasks`](ManagerConfig::max_pending_tasks) tasks of
//!    this identity are pending at Globus; latency-priority batches go first, but every
//!    [`bulk_every`](ManagerConfig::bulk_every)-th admission goes to waiting bulk work.
//! 4. Submission: a fresh id from `GET /submission_id` is committed with the batch
//!    (`SUBMITTING`) *before* `POST /transfer`. A retry or a restarted process re-posts
//!    the same id and items; Globus answers `Duplicate` with the original task id, so a
//!    batch never becomes two tasks, whenever the process dies.
//! 5. One poller per identity and database (a lease, renewed each cycle, taken over when
//!    its holder dies) lists every task in flight with `task_list?filter=task_id:...`
//!    (at most 100 ids per request), adapting its interval: fast while tasks are young or
//!    progressing, backing off for long ones. Other processes read the results from the
//!    database. Waiters are woken by the poller; they never poll Globus.
//! 6. Outcomes per item: skipped source errors fail only their own item; a task stuck
//!    ACTIVE on a fatal `nice_status` for [`fail_fast_after`](ManagerConfig::fail_fast_after)
//!    is cancelled, its failing item failed with the Globus reason, and the rest re-split
//!    into a new batch (once); INACTIVE tasks report [`Error::NeedsAttention`].

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sqlx::Row;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use super::TransferClient;
use super::types::{Task, TransferItem, TransferRequest, status};
use crate::error::{Error, Result};
use crate::runtime;
use crate::state::StateDb;

/// How the manager batches, admits and polls.
#[derive(Clone, Debug, PartialEq)]
pub struct ManagerConfig {
    /// Close a batch after this long without a new item.
    pub quiet: Duration,
    /// Close a batch this long after its first item, however busy.
    pub max_delay: Duration,
    /// Close a batch at this many items.
    pub max_items: usize,
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
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            quiet: Duration::from_millis(20),
            max_delay: Duration::from_millis(500),
            max_items: 10_000,
            max_pending_tasks: 20,
            bulk_every: 3,
            poll_min: Duration::from_millis(250),
            poll_idle: Duration::from_secs(1),
            poll_max: Duration::from_secs(15),
            young: Duration::from_secs(10),
            fail_fast_after: Duration::from_secs(60),
            lease_ttl: Duration::from_secs(10),
        }
    }
}

/// Per-task options; items with different options go to different tasks.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    /// Task options.
    pub options: BatchOptions,
    /// Scheduling class.
    pub priority: Priority,
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
            options: BatchOptions::default(),
            priority: Priority::Bulk,
        }
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

    /// With an external checksum (`algorithm` e.g. `SHA256`).
    pub fn checksum(mut self, checksum: impl Into<String>, algorithm: impl Into<String>) -> Self {
        self.external_checksum = Some((checksum.into(), algorithm.into()));
        self
    }
}

/// What [`TransferManager::enqueue`] hands back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enqueued {
    /// The item's id in the state database.
    pub item: i64,
    /// The label of its batch (and of the Globus task it becomes).
    pub label: String,
}

/// Where an item stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemStatus {
    /// The item id.
    pub item: i64,
    /// `PENDING`, `SUCCEEDED`, `FAILED` or `CANCELED`.
    pub state: String,
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
    pub batch_state: String,
    /// The Globus task, once known.
    pub task_id: Option<String>,
    /// The task's last Globus status (`ACTIVE`, `INACTIVE`, ...).
    pub task_status: Option<String>,
    /// The task's last `nice_status`.
    pub nice_status: Option<String>,
    /// Bytes the task has moved so far.
    pub bytes_transferred: i64,
}

impl ItemStatus {
    /// Whether the item has reached a final state.
    pub fn is_final(&self) -> bool {
        self.state != "PENDING"
    }
}

/// A batch, as the state database records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)] // the column names say it
pub struct BatchStatus {
    pub label: String,
    pub state: String,
    pub source: String,
    pub destination: String,
    pub priority: String,
    pub items: i64,
    pub submission_id: Option<String>,
    pub task_id: Option<String>,
    pub status: Option<String>,
    pub nice_status: Option<String>,
    pub bytes_transferred: i64,
    pub files: i64,
    pub files_transferred: i64,
    pub fatal_code: Option<String>,
    pub fatal_description: Option<String>,
    pub resplit_of: Option<i64>,
}

type BatchKey = (String, String, String, u8);

struct OpenBatch {
    label: String,
    first: Instant,
    last: Instant,
    items: usize,
}

enum WriteReq {
    Item {
        key: BatchKey,
        label: String,
        spec: Box<ItemSpec>,
        ack: oneshot::Sender<Result<i64>>,
    },
    Close {
        label: String,
        ack: oneshot::Sender<Result<()>>,
    },
}

/// Coalesces, submits and tracks Globus transfers for one identity. Cheap to clone.
///
/// ```no_run
/// use std::sync::Arc;
/// use ps_globus::auth::StaticTokenAuthorizer;
/// use ps_globus::state::StateDb;
/// use ps_globus::transfer::{ItemSpec, ManagerConfig, TransferClient, TransferManager};
/// # ps_globus::block_on(async {
/// let client = TransferClient::new(Arc::new(StaticTokenAuthorizer::new("token")))?;
/// let manager = TransferManager::start(StateDb::open_default().await?, client, ManagerConfig::default()).await?;
/// let item = manager.enqueue(ItemSpec::new("SRC-UUID", "/data/a.h5", "DST-UUID", "/scratch/a.h5")).await?;
/// let done = manager.wait(item.item, std::time::Duration::from_secs(3600)).await?;
/// println!("copied by task {:?}", done.task_id);
/// # Ok::<(), ps_globus::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct TransferManager {
    inner: Arc<Inner>,
}

struct Inner {
    db: StateDb,
    client: TransferClient,
    identity: String,
    config: ManagerConfig,
    owner: String,
    host: String,
    writer: mpsc::UnboundedSender<WriteReq>,
    open: Mutex<HashMap<BatchKey, OpenBatch>>,
    signals: Arc<Signals>,
    failpoint: Option<String>,
    poll_cycles: std::sync::atomic::AtomicU64,
    /// Callers of `wait` in this process right now: with none, young tasks are polled
    /// at `poll_idle` rather than `poll_min` (nobody here is waiting to be told).
    waiters: std::sync::atomic::AtomicUsize,
}

/// Wake-ups shared with the background loops, which wait on them without keeping the
/// manager alive.
struct Signals {
    batcher_kick: Notify,
    submit_kick: Notify,
    poll_kick: Notify,
    /// Notified whenever item or batch states change (here or, seen through the
    /// database generation, in another process).
    changed: Notify,
    stop: watch::Sender<bool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.signals.stop.send(true);
    }
}

/// The running managers of this process, by (database, identity).
type Registry = Mutex<HashMap<(std::path::PathBuf, String), Weak<Inner>>>;

static SHARED: LazyLock<Registry> = LazyLock::new(Default::default);

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// This process's start time, to tell a live pid from a reused one.
fn process_start(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22, counted after the parenthesised command name (which may hold spaces).
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19).map(str::to_owned)
}

fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// A fresh batch label: `psg-` and 32 hex digits (no `,` `/` `:`, which the filter
/// grammar uses).
pub fn new_label() -> String {
    format!("psg-{}", uuid::Uuid::new_v4().simple())
}

impl TransferManager {
    /// Starts a manager for the client's identity on `db`, resuming whatever the
    /// database holds: open and ready batches are submitted, batches caught between
    /// commit and answer are re-posted with their submission id, tasks in flight are
    /// polled.
    ///
    /// In one process, one manager serves each (database, identity): a second `start`
    /// returns the running one.
    pub async fn start(
        db: StateDb,
        client: TransferClient,
        config: ManagerConfig,
    ) -> Result<TransferManager> {
        // Batches and the poller lease belong to an identity *at one service*: a task id
        // from one Transfer service means nothing to another (an emulator and Globus,
        // or two emulators, with one state database).
        let identity = format!("{}@{}", client.identity(), client.base_url());
        let key = (db.path().to_path_buf(), identity.clone());
        if let Some(inner) = SHARED
            .lock()
            .expect("manager registry poisoned")
            .get(&key)
            .and_then(Weak::upgrade)
        {
            return Ok(TransferManager { inner });
        }
        let pid = std::process::id();
        let host = hostname();
        let started = process_start(pid).unwrap_or_else(|| now_ms().to_string());
        let owner = format!("{host}:{pid}:{started}");
        sqlx::query("INSERT INTO processes (owner, host, pid, started, heartbeat_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT(owner) DO UPDATE SET heartbeat_at = excluded.heartbeat_at")
            .bind(&owner).bind(&host).bind(pid as i64).bind(&started).bind(now_ms())
            .execute(db.pool()).await.map_err(|e| db.error(e))?;
        let (writer, requests) = mpsc::unbounded_channel();
        let (stop, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            db,
            client,
            identity,
            config,
            owner,
            host,
            writer,
            open: Mutex::new(HashMap::new()),
            signals: Arc::new(Signals {
                batcher_kick: Notify::new(),
                submit_kick: Notify::new(),
                poll_kick: Notify::new(),
                changed: Notify::new(),
                stop,
            }),
            failpoint: std::env::var("PS_GLOBUS_FAILPOINT")
                .ok()
                .filter(|f| !f.is_empty()),
            poll_cycles: std::sync::atomic::AtomicU64::new(0),
            waiters: std::sync::atomic::AtomicUsize::new(0),
        });
        inner.close_orphaned_open_batches().await?;
        let rt = runtime::handle();
        let weak = Arc::downgrade(&inner);
        let signals = &inner.signals;
        rt.spawn(writer_loop(weak.clone(), requests));
        rt.spawn(batcher_loop(weak.clone(), Arc::clone(signals)));
        rt.spawn(submitter_loop(weak.clone(), Arc::clone(signals)));
        rt.spawn(poller_loop(weak, Arc::clone(signals)));
        SHARED
            .lock()
            .expect("manager registry poisoned")
            .insert(key, Arc::downgrade(&inner));
        Ok(TransferManager { inner })
    }

    /// The identity this manager acts as, with the service: `IDENTITY@TRANSFER_URL`.
    pub fn identity(&self) -> &str {
        &self.inner.identity
    }

    /// The state database.
    pub fn db(&self) -> &StateDb {
        &self.inner.db
    }

    /// The Transfer client.
    pub fn client(&self) -> &TransferClient {
        &self.inner.client
    }

    /// Adds an item to the open batch for its source, destination, options and priority;
    /// returns once the item is committed to the state database.
    pub async fn enqueue(&self, spec: ItemSpec) -> Result<Enqueued> {
        let options = serde_json::to_string(&spec.options).map_err(|e| Error::Encode {
            codec: "json",
            message: e.to_string(),
        })?;
        let key: BatchKey = (
            spec.source.clone(),
            spec.destination.clone(),
            options,
            priority_code(spec.priority),
        );
        let (ack, done) = oneshot::channel();
        let label = {
            let mut open = self.inner.open.lock().expect("open batches poisoned");
            let now = Instant::now();
            if open
                .get(&key)
                .is_some_and(|b| b.items >= self.inner.config.max_items)
            {
                // Full: close it here, behind its own items in the writer's queue.
                let full = open.remove(&key).expect("checked above");
                let (ack, _) = oneshot::channel();
                let _ = self.inner.writer.send(WriteReq::Close {
                    label: full.label,
                    ack,
                });
                self.inner.signals.submit_kick.notify_one();
            }
            let batch = open.entry(key.clone()).or_insert_with(|| OpenBatch {
                label: new_label(),
                first: now,
                last: now,
                items: 0,
            });
            batch.last = now;
            batch.items += 1;
            let label = batch.label.clone();
            // Sent under the lock, so the batcher's Close for this label comes after it.
            self.inner
                .writer
                .send(WriteReq::Item {
                    key,
                    label: label.clone(),
                    spec: Box::new(spec),
                    ack,
                })
                .map_err(|_| Error::Background("the transfer manager has stopped".into()))?;
            label
        };
        self.inner.signals.batcher_kick.notify_one();
        let item = done
            .await
            .map_err(|_| Error::Background("the transfer manager has stopped".into()))??;
        Ok(Enqueued { item, label })
    }

    /// Where item `item` stands.
    pub async fn item(&self, item: i64) -> Result<ItemStatus> {
        self.inner
            .item_status(item)
            .await?
            .ok_or_else(|| Error::InvalidConfig {
                what: "transfer item".into(),
                message: format!("no item {item} in {}", self.inner.db.path().display()),
            })
    }

    /// Waits until `item` is final. Success is `Ok`; a failure is
    /// [`Error::TransferFailed`] with the Globus code, description and paths; a paused
    /// task is [`Error::NeedsAttention`]; past `timeout`, [`Error::WaitTimeout`].
    pub async fn wait(&self, item: i64, timeout: Duration) -> Result<ItemStatus> {
        let inner = &self.inner;
        struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        inner
            .waiters
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _waiting = Waiting(&inner.waiters);
        let waited = runtime::timeout(timeout, async {
            loop {
                let changed = inner.signals.changed.notified();
                let status = self.item(item).await?;
                if let Some(result) = outcome(&status) {
                    return result;
                }
                changed.await;
            }
        });
        waited.await.unwrap_or_else(|| {
            Err(Error::WaitTimeout {
                what: format!("transfer item {item}"),
                after: timeout,
            })
        })
    }

    /// Waits for every item of the batch labelled `label`; the first failure is returned.
    pub async fn wait_label(&self, label: &str, timeout: Duration) -> Result<Vec<ItemStatus>> {
        let ids: Vec<i64> = sqlx::query_scalar("SELECT items.id FROM items JOIN batches ON batches.id = items.batch_id WHERE batches.label = ? ORDER BY items.id")
            .bind(label).fetch_all(self.inner.db.pool()).await.map_err(|e| self.inner.db.error(e))?;
        let deadline = Instant::now() + timeout;
        let mut done = Vec::with_capacity(ids.len());
        for id in ids {
            done.push(
                self.wait(id, deadline.saturating_duration_since(Instant::now()))
                    .await?,
            );
        }
        Ok(done)
    }

    /// The batch labelled `label`.
    pub async fn batch(&self, label: &str) -> Result<Option<BatchStatus>> {
        let rows = self
            .inner
            .batches_where("label = ?", Some(label), 1)
            .await?;
        Ok(rows.into_iter().next())
    }

    /// The most recent batches of this identity, newest first.
    pub async fn batches(&self, limit: i64) -> Result<Vec<BatchStatus>> {
        self.inner.batches_where("1 = 1", None, limit).await
    }

    /// Every item of the batch labelled `label`.
    pub async fn items(&self, label: &str) -> Result<Vec<ItemStatus>> {
        let ids: Vec<i64> = sqlx::query_scalar("SELECT items.id FROM items JOIN batches ON batches.id = items.batch_id WHERE batches.label = ? ORDER BY items.id")
            .bind(label).fetch_all(self.inner.db.pool()).await.map_err(|e| self.inner.db.error(e))?;
        let mut all = Vec::with_capacity(ids.len());
        for id in ids {
            all.extend(self.inner.item_status(id).await?);
        }
        Ok(all)
    }

    /// Cancels the Globus task `task_id`; its items end CANCELED at the next poll.
    pub async fn cancel_task(&self, task_id: &str) -> Result<()> {
        self.inner.client.cancel(task_id).await?;
        self.inner.signals.poll_kick.notify_one();
        Ok(())
    }

    /// Cancels the batch labelled `label`: its task at Globus if it has one, else locally.
    pub async fn cancel_label(&self, label: &str) -> Result<()> {
        let Some(batch) = self.batch(label).await? else {
            return Err(Error::InvalidConfig {
                what: "transfer batch".into(),
                message: format!("no batch labelled {label}"),
            });
        };
        if let Some(task) = batch.task_id {
            return self.cancel_task(&task).await;
        }
        {
            let mut open = self.inner.open.lock().expect("open batches poisoned");
            open.retain(|_, b| b.label != label);
        }
        let db = &self.inner.db;
        let mut tx = db.begin_immediate().await?;
        sqlx::query("UPDATE batches SET state = 'DONE', fatal_code = 'CANCELED', fatal_description = 'canceled before submission', completed_at = ? WHERE label = ? AND state IN ('OPEN', 'READY')")
            .bind(now_ms()).bind(label).execute(&mut *tx).await.map_err(|e| db.error(e))?;
        sqlx::query("UPDATE items SET state = 'CANCELED', code = 'CANCELED', description = 'canceled before submission', completed_at = ? WHERE state = 'PENDING' AND batch_id = (SELECT id FROM batches WHERE label = ? AND state = 'DONE')")
            .bind(now_ms()).bind(label).execute(&mut *tx).await.map_err(|e| db.error(e))?;
        tx.commit().await.map_err(|e| db.error(e))?;
        self.inner.signals.changed.notify_waiters();
        Ok(())
    }

    /// Closes every open batch now and returns once each batch of this process is at
    /// Globus or waits only for admission (before a short-lived process exits, say).
    pub async fn flush(&self) -> Result<()> {
        {
            let mut open = self.inner.open.lock().expect("open batches poisoned");
            for batch in open.values_mut() {
                batch.items = batch.items.max(self.inner.config.max_items);
            }
        }
        self.inner.signals.batcher_kick.notify_one();
        loop {
            let changed = self.inner.signals.changed.notified();
            let open_here = !self
                .inner
                .open
                .lock()
                .expect("open batches poisoned")
                .is_empty();
            let (unsettled, ready, pending): (i64, i64, i64) = sqlx::query_as(
                "SELECT COALESCE(SUM(state IN ('OPEN', 'SUBMITTING')), 0), COALESCE(SUM(state = 'READY'), 0), \
                 COALESCE(SUM(state IN ('SUBMITTING', 'SUBMITTED')), 0) FROM batches WHERE identity = ? AND owner = ?",
            )
            .bind(&self.inner.identity)
            .bind(&self.inner.owner)
            .fetch_one(self.inner.db.pool())
            .await
            .map_err(|e| self.inner.db.error(e))?;
            let admitted_all =
                ready == 0 || pending as usize >= self.inner.config.max_pending_tasks;
            if !open_here && unsettled == 0 && admitted_all {
                return Ok(());
            }
            self.inner.signals.submit_kick.notify_one();
            changed.await;
        }
    }

    /// Polls Globus now, if this process holds the poller lease.
    pub async fn poll_now(&self) -> Result<()> {
        if self.inner.lease().await? {
            self.inner.poll_once().await?;
        }
        Ok(())
    }

    /// How many poll cycles this process has made (0 where another process polls).
    pub fn poll_cycles(&self) -> u64 {
        self.inner
            .poll_cycles
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops the manager's background work (pending work resumes at the next start).
    pub fn shutdown(&self) {
        let _ = self.inner.signals.stop.send(true);
        SHARED
            .lock()
            .expect("manager registry poisoned")
            .retain(|_, w| w.strong_count() > 0 && !w.ptr_eq(&Arc::downgrade(&self.inner)));
    }
}

/// The result of a wait, if the item is done (or its task needs attention).
fn outcome(status: &ItemStatus) -> Option<Result<ItemStatus>> {
    match status.state.as_str() {
        "SUCCEEDED" => Some(Ok(status.clone())),
        "FAILED" | "CANCELED" => Some(Err(Error::TransferFailed {
            task_id: status.task_id.clone(),
            code: status.code.clone().unwrap_or_else(|| status.state.clone()),
            description: status.description.clone().unwrap_or_default(),
            source_path: status.source_path.clone(),
            destination_path: status.destination_path.clone(),
        })),
        _ if status.task_status.as_deref() == Some(status::INACTIVE) => Some(Err(Error::NeedsAttention {
            task_id: status.task_id.clone().unwrap_or_default(),
            reason: format!(
                "Globus paused it ({}): the credentials or a data_access consent expired",
                status.nice_status.as_deref().unwrap_or("INACTIVE")
            ),
            fix: "run `ps-globus login` (with `--collection <id>` for each collection involved); the task resumes by itself".into(),
        })),
        _ => None,
    }
}

fn priority_code(priority: Priority) -> u8 {
    match priority {
        Priority::Latency => 0,
        Priority::Bulk => 1,
    }
}

/// Paths as Globus reports them: `/~/` and `/` are the same root, no doubled slashes.
fn normalise(path: &str) -> String {
    let trimmed = path
        .strip_prefix("/~")
        .or_else(|| path.strip_prefix('~'))
        .unwrap_or(path);
    let parts: Vec<&str> = trimmed
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

const FATAL_NICE_STATUSES: &[&str] = &[
    "FILE_NOT_FOUND",
    "PERMISSION_DENIED",
    "QUOTA_EXCEEDED",
    "NOT_A_DIRECTORY",
    "IS_A_DIRECTORY",
    "CHECKSUM_MISMATCH",
    "AMBIGUOUS_PATH",
    "FILE_SIZE_CHANGED",
];

impl Inner {
    fn stopped(&self) -> bool {
        *self.signals.stop.borrow()
    }

    fn fail_point(&self, name: &str) {
        if self.failpoint.as_deref() == Some(name) {
            eprintln!("ps-globus: failpoint {name} reached, aborting the process");
            std::process::abort();
        }
    }

    async fn item_status(&self, item: i64) -> Result<Option<ItemStatus>> {
        let row = sqlx::query(
            "SELECT items.id, items.state, items.code, items.description, items.source_path, items.destination_path, \
             batches.label, batches.state AS batch_state, batches.task_id, batches.status, batches.nice_status, batches.bytes_transferred \
             FROM items JOIN batches ON batches.id = items.batch_id WHERE items.id = ?",
        )
        .bind(item)
        .fetch_optional(self.db.pool())
        .await
        .map_err(|e| self.db.error(e))?;
        Ok(row.map(|r| ItemStatus {
            item: r.get("id"),
            state: r.get("state"),
            code: r.get("code"),
            description: r.get("description"),
            source_path: r.get("source_path"),
            destination_path: r.get("destination_path"),
            label: r.get("label"),
            batch_state: r.get("batch_state"),
            task_id: r.get("task_id"),
            task_status: r.get("status"),
            nice_status: r.get("nice_status"),
            bytes_transferred: r.get("bytes_transferred"),
        }))
    }

    async fn batches_where(
        &self,
        condition: &str,
        bind: Option<&str>,
        limit: i64,
    ) -> Result<Vec<BatchStatus>> {
        let sql = format!(
            "SELECT label, state, source, destination, priority, submission_id, task_id, status, nice_status, bytes_transferred, \
             files, files_transferred, fatal_code, fatal_description, resplit_of, \
             (SELECT COUNT(*) FROM items WHERE items.batch_id = batches.id) AS items \
             FROM batches WHERE identity = ? AND {condition} ORDER BY id DESC LIMIT ?"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&self.identity);
        if let Some(value) = bind {
            query = query.bind(value);
        }
        let rows = query
            .bind(limit)
            .fetch_all(self.db.pool())
            .await
            .map_err(|e| self.db.error(e))?;
        Ok(rows
            .into_iter()
            .map(|r| BatchStatus {
                label: r.get("label"),
                state: r.get("state"),
                source: r.get("source"),
                destination: r.get("destination"),
                priority: if r.get::<i64, _>("priority") == 0 {
                    "latency".into()
                } else {
                    "bulk".into()
                },
                items: r.get("items"),
                submission_id: r.get("submission_id"),
                task_id: r.get("task_id"),
                status: r.get("status"),
                nice_status: r.get("nice_status"),
                bytes_transferred: r.get("bytes_transferred"),
                files: r.get("files"),
                files_transferred: r.get("files_transferred"),
                fatal_code: r.get("fatal_code"),
                fatal_description: r.get("fatal_description"),
                resplit_of: r.get("resplit_of"),
            })
            .collect())
    }

    /// Owners that are alive: this process, processes on this host whose pid still runs
    /// with the same start time, and other hosts' processes with a fresh heartbeat.
    async fn live_owners(&self) -> Result<BTreeSet<String>> {
        let rows = sqlx::query("SELECT owner, host, pid, started, heartbeat_at FROM processes")
            .fetch_all(self.db.pool())
            .await
            .map_err(|e| self.db.error(e))?;
        let fresh = now_ms() - 3 * self.config.lease_ttl.as_millis() as i64;
        let mut live = BTreeSet::new();
        for r in rows {
            let owner: String = r.get("owner");
            let alive = if owner == self.owner {
                true
            } else if r.get::<String, _>("host") == self.host {
                process_start(r.get::<i64, _>("pid") as u32).as_deref()
                    == Some(r.get::<String, _>("started").as_str())
            } else {
                r.get::<i64, _>("heartbeat_at") > fresh
            };
            if alive {
                live.insert(owner);
            }
        }
        Ok(live)
    }

    /// Open batches whose process died are closed, so they get submitted.
    async fn close_orphaned_open_batches(&self) -> Result<()> {
        let live = self.live_owners().await?;
        let open: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, owner FROM batches WHERE identity = ? AND state = 'OPEN'")
                .bind(&self.identity)
                .fetch_all(self.db.pool())
                .await
                .map_err(|e| self.db.error(e))?;
        for (id, owner) in open {
            if !live.contains(&owner) {
                sqlx::query("UPDATE batches SET state = 'READY', closed_at = ?, owner = ? WHERE id = ? AND state = 'OPEN'")
                    .bind(now_ms()).bind(&self.owner).bind(id)
                    .execute(self.db.pool()).await.map_err(|e| self.db.error(e))?;
            }
        }
        Ok(())
    }

    async fn heartbeat(&self) -> Result<()> {
        sqlx::query("UPDATE processes SET heartbeat_at = ? WHERE owner = ?")
            .bind(now_ms())
            .bind(&self.owner)
            .execute(self.db.pool())
            .await
            .map_err(|e| self.db.error(e))?;
        Ok(())
    }

    /// Commits a group of enqueues and closes in one transaction.
    async fn commit(
        &self,
        requests: &[WriteReq],
        ids: &mut HashMap<String, i64>,
    ) -> Result<Vec<i64>> {
        let db = &self.db;
        let mut tx = db.begin_immediate().await?;
        let mut item_ids = Vec::new();
        let now = now_ms();
        for request in requests {
            match request {
                WriteReq::Item {
                    key, label, spec, ..
                } => {
                    let batch_id = match ids.get(label) {
                        Some(id) => *id,
                        None => {
                            let id: i64 = sqlx::query_scalar(
                                "INSERT INTO batches (label, identity, source, destination, options, priority, state, owner, created_at) \
                                 VALUES (?, ?, ?, ?, ?, ?, 'OPEN', ?, ?) RETURNING id",
                            )
                            .bind(label).bind(&self.identity).bind(&key.0).bind(&key.1).bind(&key.2).bind(key.3 as i64)
                            .bind(&self.owner).bind(now)
                            .fetch_one(&mut *tx).await.map_err(|e| db.error(e))?;
                            ids.insert(label.clone(), id);
                            id
                        }
                    };
                    let (checksum, algorithm) = spec.external_checksum.clone().unzip();
                    let id: i64 = sqlx::query_scalar(
                        "INSERT INTO items (batch_id, source_path, destination_path, recursive, external_checksum, checksum_algorithm, state, created_at) \
                         VALUES (?, ?, ?, ?, ?, ?, 'PENDING', ?) RETURNING id",
                    )
                    .bind(batch_id).bind(&spec.source_path).bind(&spec.destination_path).bind(spec.recursive)
                    .bind(checksum).bind(algorithm).bind(now)
                    .fetch_one(&mut *tx).await.map_err(|e| db.error(e))?;
                    item_ids.push(id);
                }
                WriteReq::Close { label, .. } => {
                    sqlx::query("UPDATE batches SET state = 'READY', closed_at = ? WHERE label = ? AND state = 'OPEN'")
                        .bind(now).bind(label).execute(&mut *tx).await.map_err(|e| db.error(e))?;
                }
            }
        }
        tx.commit().await.map_err(|e| db.error(e))?;
        Ok(item_ids)
    }

    // ---- submission ------------------------------------------------------------------

    /// The next batch to submit, if admission allows one.
    async fn next_to_submit(&self, admissions: usize) -> Result<Option<(i64, Option<String>)>> {
        let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM batches WHERE identity = ? AND state IN ('SUBMITTING', 'SUBMITTED')")
            .bind(&self.identity).fetch_one(self.db.pool()).await.map_err(|e| self.db.error(e))?;
        // Re-posts of batches already at Globus (or about to be) never wait for admission.
        let live = self.live_owners().await?;
        let stuck: Vec<(i64, String, Option<String>)> = sqlx::query_as(
            "SELECT id, owner, submission_id FROM batches WHERE identity = ? AND state = 'SUBMITTING' ORDER BY id",
        )
        .bind(&self.identity).fetch_all(self.db.pool()).await.map_err(|e| self.db.error(e))?;
        if let Some((id, _, sid)) = stuck
            .into_iter()
            .find(|(_, owner, _)| owner == &self.owner || !live.contains(owner))
        {
            return Ok(Some((id, sid)));
        }
        if pending as usize >= self.config.max_pending_tasks {
            return Ok(None);
        }
        let ready: Vec<(i64, i64, String)> = sqlx::query_as("SELECT id, priority, owner FROM batches WHERE identity = ? AND state = 'READY' ORDER BY priority, id")
            .bind(&self.identity).fetch_all(self.db.pool()).await.map_err(|e| self.db.error(e))?;
        let mine: Vec<(i64, i64)> = ready
            .into_iter()
            .filter(|(_, _, owner)| owner == &self.owner || !live.contains(owner))
            .map(|(id, p, _)| (id, p))
            .collect();
        let bulk_turn = self.config.bulk_every > 0
            && admissions % self.config.bulk_every == self.config.bulk_every - 1;
        let pick = if bulk_turn {
            mine.iter().find(|(_, p)| *p == 1).or(mine.first())
        } else {
            mine.first()
        };
        Ok(pick.map(|(id, _)| (*id, None)))
    }

    /// Fixes a submission id for the batch (if it has none), then posts it.
    async fn submit(&self, batch: i64, submission_id: Option<String>) -> Result<()> {
        let db = &self.db;
        let submission_id = match submission_id {
            Some(sid) => sid,
            None => {
                let sid = self.client.submission_id().await?;
                let mut tx = db.begin_immediate().await?;
                let fixed = sqlx::query("UPDATE batches SET state = 'SUBMITTING', submission_id = ?, owner = ? WHERE id = ? AND state = 'READY'")
                    .bind(&sid).bind(&self.owner).bind(batch).execute(&mut *tx).await.map_err(|e| db.error(e))?;
                tx.commit().await.map_err(|e| db.error(e))?;
                if fixed.rows_affected() == 0 {
                    return Ok(()); // another process took it
                }
                self.fail_point("after-commit");
                sid
            }
        };
        let row =
            sqlx::query("SELECT label, source, destination, options FROM batches WHERE id = ?")
                .bind(batch)
                .fetch_one(db.pool())
                .await
                .map_err(|e| db.error(e))?;
        let options: BatchOptions =
            serde_json::from_str(row.get::<&str, _>("options")).unwrap_or_default();
        let items = sqlx::query("SELECT source_path, destination_path, recursive, external_checksum, checksum_algorithm FROM items WHERE batch_id = ? ORDER BY id")
            .bind(batch).fetch_all(db.pool()).await.map_err(|e| db.error(e))?;
        let request = TransferRequest {
            data_type: "transfer".into(),
            submission_id,
            source_endpoint: row.get("source"),
            destination_endpoint: row.get("destination"),
            data: items
                .iter()
                .map(|i| TransferItem {
                    data_type: "transfer_item".into(),
                    source_path: i.get("source_path"),
                    destination_path: i.get("destination_path"),
                    recursive: i.get("recursive"),
                    external_checksum: i.get("external_checksum"),
                    checksum_algorithm: i.get("checksum_algorithm"),
                })
                .collect(),
            // The user's label when staging asked for one; the batch keeps its own.
            label: Some(options.label.clone().unwrap_or_else(|| row.get("label"))),
            sync_level: options.sync_level,
            verify_checksum: Some(options.verify_checksum),
            preserve_timestamp: Some(options.preserve_timestamp),
            skip_source_errors: Some(options.skip_source_errors),
            fail_on_quota_errors: Some(options.fail_on_quota_errors),
            deadline: options.deadline.clone(),
            notify_on_succeeded: Some(false),
            notify_on_failed: Some(false),
            notify_on_inactive: Some(false),
            ..TransferRequest::default()
        };
        match self.client.submit_transfer(&request).await {
            Ok(result) => {
                self.fail_point("after-post");
                sqlx::query("UPDATE batches SET state = 'SUBMITTED', task_id = ?, submitted_at = ?, last_error = NULL WHERE id = ?")
                    .bind(&result.task_id).bind(now_ms()).bind(batch)
                    .execute(db.pool()).await.map_err(|e| db.error(e))?;
                self.signals.poll_kick.notify_one();
                self.signals.changed.notify_waiters();
                Ok(())
            }
            Err(e) if e.is_transient() => {
                sqlx::query("UPDATE batches SET last_error = ? WHERE id = ?")
                    .bind(e.to_string())
                    .bind(batch)
                    .execute(db.pool())
                    .await
                    .map_err(|e| db.error(e))?;
                Err(e)
            }
            Err(e) => {
                // Globus refused the batch for good (bad path, unknown collection, consent).
                let code = match &e {
                    Error::Api { code, .. } => code.clone(),
                    Error::ConsentRequired { .. } => "ConsentRequired".into(),
                    Error::Unauthorized { .. } => "AuthenticationFailed".into(),
                    _ => "SubmitFailed".into(),
                };
                self.finish_batch(batch, None, &code, &e.to_string(), &[])
                    .await?;
                Ok(())
            }
        }
    }

    /// Ends a batch: items not listed as succeeded fail with `code`.
    async fn finish_batch(
        &self,
        batch: i64,
        status: Option<&Task>,
        code: &str,
        description: &str,
        succeeded: &[i64],
    ) -> Result<()> {
        let db = &self.db;
        let now = now_ms();
        let mut tx = db.begin_immediate().await?;
        if let Some(task) = status {
            update_counters(&mut tx, db, batch, task).await?;
        }
        sqlx::query("UPDATE batches SET state = 'DONE', completed_at = ?, fatal_code = ?, fatal_description = ? WHERE id = ?")
            .bind(now).bind(code).bind(description).bind(batch).execute(&mut *tx).await.map_err(|e| db.error(e))?;
        for id in succeeded {
            sqlx::query("UPDATE items SET state = 'SUCCEEDED', completed_at = ? WHERE id = ? AND state = 'PENDING'")
                .bind(now).bind(id).execute(&mut *tx).await.map_err(|e| db.error(e))?;
        }
        let state = if code == "CANCELED" {
            "CANCELED"
        } else {
            "FAILED"
        };
        sqlx::query("UPDATE items SET state = ?, code = ?, description = ?, completed_at = ? WHERE batch_id = ? AND state = 'PENDING'")
            .bind(state).bind(code).bind(description).bind(now).bind(batch)
            .execute(&mut *tx).await.map_err(|e| db.error(e))?;
        bump_generation(&mut tx, db).await?;
        tx.commit().await.map_err(|e| db.error(e))?;
        self.signals.changed.notify_waiters();
        Ok(())
    }

    // ---- polling -----------------------------------------------------------------------

    /// Takes or renews the poller lease for this identity; true if this process polls.
    async fn lease(&self) -> Result<bool> {
        let db = &self.db;
        let name = format!("poller:{}", self.identity);
        let live = self.live_owners().await?;
        let mut tx = db.begin_immediate().await?;
        let held: Option<(String, i64)> =
            sqlx::query_as("SELECT owner, expires_at FROM leases WHERE name = ?")
                .bind(&name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| db.error(e))?;
        let now = now_ms();
        let ours = match &held {
            None => true,
            Some((owner, expires)) => {
                owner == &self.owner || *expires < now || !live.contains(owner)
            }
        };
        if ours {
            sqlx::query("INSERT INTO leases (name, owner, expires_at) VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at")
                .bind(&name).bind(&self.owner).bind(now + self.config.lease_ttl.as_millis() as i64)
                .execute(&mut *tx).await.map_err(|e| db.error(e))?;
        }
        tx.commit().await.map_err(|e| db.error(e))?;
        Ok(ours)
    }

    /// One poll of every task in flight; returns whether anything is young or moved.
    async fn poll_once(&self) -> Result<bool> {
        let db = &self.db;
        let rows = sqlx::query("SELECT id, task_id, submitted_at, bytes_transferred, nice_status, nice_status_since, status, resplit_of FROM batches WHERE identity = ? AND state = 'SUBMITTED'")
            .bind(&self.identity).fetch_all(db.pool()).await.map_err(|e| db.error(e))?;
        if rows.is_empty() {
            return Ok(false);
        }
        self.poll_cycles
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ids: Vec<String> = rows.iter().map(|r| r.get::<String, _>("task_id")).collect();
        let tasks = self.client.tasks_by_id(&ids, None).await?;
        let by_id: HashMap<&str, &Task> = tasks.iter().map(|t| (t.task_id.as_str(), t)).collect();
        let now = now_ms();
        let mut lively = false;
        let mut finals = Vec::new();
        let mut stuck = Vec::new();
        let mut tx = db.begin_immediate().await?;
        for row in &rows {
            let batch: i64 = row.get("id");
            let task_id: String = row.get("task_id");
            let Some(task) = by_id.get(task_id.as_str()) else {
                continue;
            };
            if now - row.get::<i64, _>("submitted_at") < self.config.young.as_millis() as i64
                || task.bytes_transferred as i64 != row.get::<i64, _>("bytes_transferred")
                || task.status != row.get::<Option<String>, _>("status").unwrap_or_default()
            {
                lively = true;
            }
            update_counters(&mut tx, db, batch, task).await?;
            if task.is_final() {
                finals.push((batch, (*task).clone()));
                continue;
            }
            let fatal = task.status == status::ACTIVE
                && task
                    .nice_status
                    .as_deref()
                    .is_some_and(|n| FATAL_NICE_STATUSES.contains(&n));
            let previous: Option<String> = row.get("nice_status");
            let since = match (fatal, row.get::<Option<i64>, _>("nice_status_since")) {
                (false, _) => None,
                (true, Some(since)) if previous == task.nice_status => Some(since),
                (true, _) => Some(now),
            };
            sqlx::query("UPDATE batches SET nice_status_since = ? WHERE id = ?")
                .bind(since)
                .bind(batch)
                .execute(&mut *tx)
                .await
                .map_err(|e| db.error(e))?;
            if since.is_some_and(|s| now - s >= self.config.fail_fast_after.as_millis() as i64) {
                stuck.push((
                    batch,
                    (*task).clone(),
                    row.get::<Option<i64>, _>("resplit_of"),
                ));
            }
        }
        bump_generation(&mut tx, db).await?;
        tx.commit().await.map_err(|e| db.error(e))?;
        self.signals.changed.notify_waiters();
        for (batch, task) in finals {
            self.finalize(batch, &task).await?;
        }
        for (batch, task, resplit_of) in stuck {
            self.fail_fast(batch, &task, resplit_of.is_some()).await?;
            lively = true;
        }
        Ok(lively)
    }

    /// Records a finished task's outcome per item.
    async fn finalize(&self, batch: i64, task: &Task) -> Result<()> {
        let items = self.batch_items(batch).await?;
        if task.status == status::SUCCEEDED {
            // Only the skipped sources fail; everything else was copied.
            let skipped = if task.subtasks_skipped_errors > 0 {
                self.client.skipped_errors(&task.task_id).await?
            } else {
                Vec::new()
            };
            let db = &self.db;
            let now = now_ms();
            let mut tx = db.begin_immediate().await?;
            for (id, source, _dest) in &items {
                let miss = skipped
                    .iter()
                    .find(|s| normalise(&s.source_path) == normalise(source));
                match miss {
                    Some(s) => sqlx::query("UPDATE items SET state = 'FAILED', code = ?, description = ?, completed_at = ? WHERE id = ? AND state = 'PENDING'")
                        .bind(&s.error_code).bind(&s.error_details).bind(now).bind(id),
                    None => sqlx::query("UPDATE items SET state = 'SUCCEEDED', completed_at = ? WHERE id = ? AND state = 'PENDING'").bind(now).bind(id),
                }
                .execute(&mut *tx)
                .await
                .map_err(|e| db.error(e))?;
            }
            sqlx::query("UPDATE batches SET state = 'DONE', completed_at = ? WHERE id = ?")
                .bind(now)
                .bind(batch)
                .execute(&mut *tx)
                .await
                .map_err(|e| db.error(e))?;
            bump_generation(&mut tx, db).await?;
            tx.commit().await.map_err(|e| db.error(e))?;
            self.signals.changed.notify_waiters();
            return Ok(());
        }
        let fatal = task.fatal_error.clone();
        let code = fatal
            .as_ref()
            .map_or("FAILED".to_owned(), |f| f.code.clone());
        let mut description = fatal.map_or_else(String::new, |f| f.description);
        if let Ok(events) = self.client.events(&task.task_id, 1, true).await
            && let Some(event) = events
                .data
                .into_iter()
                .next()
                .filter(|e| !e.details.is_empty())
        {
            description = format!("{description}: {}", event.details);
        }
        let succeeded = self.succeeded_items(task, &items).await?;
        self.finish_batch(batch, Some(task), &code, &description, &succeeded)
            .await
    }

    async fn batch_items(&self, batch: i64) -> Result<Vec<(i64, String, String)>> {
        sqlx::query_as("SELECT id, source_path, destination_path FROM items WHERE batch_id = ? AND state = 'PENDING' ORDER BY id")
            .bind(batch).fetch_all(self.db.pool()).await.map_err(|e| self.db.error(e))
    }

    /// The pending items Globus reports as copied.
    async fn succeeded_items(
        &self,
        task: &Task,
        items: &[(i64, String, String)],
    ) -> Result<Vec<i64>> {
        if task.files_transferred == 0 {
            return Ok(Vec::new());
        }
        let done: BTreeSet<String> = self
            .client
            .successful_transfers(&task.task_id)
            .await?
            .into_iter()
            .map(|t| normalise(&t.destination_path))
            .collect();
        Ok(items
            .iter()
            .filter(|(_, _, d)| done.contains(&normalise(d)))
            .map(|(id, _, _)| *id)
            .collect())
    }

    /// Cancels a task stuck on a fatal error, fails the failing items with the Globus
    /// reason and re-splits the rest into a new batch (once: a re-split that sticks too
    /// fails all its items).
    async fn fail_fast(&self, batch: i64, task: &Task, already_resplit: bool) -> Result<()> {
        let code = task.nice_status.clone().unwrap_or_else(|| "FAILED".into());
        let _ = self.client.cancel(&task.task_id).await;
        let final_task = self
            .client
            .task(&task.task_id)
            .await
            .unwrap_or_else(|_| task.clone());
        let items = self.batch_items(batch).await?;
        let succeeded = self.succeeded_items(&final_task, &items).await?;
        let events = self
            .client
            .events(&task.task_id, 100, true)
            .await
            .map(|p| p.data)
            .unwrap_or_default();
        let failing: Vec<(i64, String)> = items
            .iter()
            .filter(|(id, _, _)| !succeeded.contains(id))
            .filter_map(|(id, source, _)| {
                let source = normalise(source);
                events
                    .iter()
                    .find(|e| e.code == code && e.details.contains(&source))
                    .map(|e| (*id, format!("{} ({})", e.description, e.details)))
            })
            .collect();
        let db = &self.db;
        let now = now_ms();
        let mut tx = db.begin_immediate().await?;
        update_counters(&mut tx, db, batch, &final_task).await?;
        for id in &succeeded {
            sqlx::query("UPDATE items SET state = 'SUCCEEDED', completed_at = ? WHERE id = ?")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(|e| db.error(e))?;
        }
        for (id, description) in &failing {
            sqlx::query("UPDATE items SET state = 'FAILED', code = ?, description = ?, completed_at = ? WHERE id = ?")
                .bind(&code).bind(description).bind(now).bind(id).execute(&mut *tx).await.map_err(|e| db.error(e))?;
        }
        let reason = format!(
            "task {} stayed ACTIVE with {code} and was cancelled",
            task.task_id
        );
        let rest: Vec<i64> = items
            .iter()
            .map(|(id, _, _)| *id)
            .filter(|id| !succeeded.contains(id) && !failing.iter().any(|(f, _)| f == id))
            .collect();
        if !rest.is_empty() && !already_resplit && !failing.is_empty() {
            let row = sqlx::query(
                "SELECT source, destination, options, priority FROM batches WHERE id = ?",
            )
            .bind(batch)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| db.error(e))?;
            let new_batch: i64 = sqlx::query_scalar(
                "INSERT INTO batches (label, identity, source, destination, options, priority, state, owner, created_at, closed_at, resplit_of) \
                 VALUES (?, ?, ?, ?, ?, ?, 'READY', ?, ?, ?, ?) RETURNING id",
            )
            .bind(new_label()).bind(&self.identity).bind(row.get::<String, _>("source")).bind(row.get::<String, _>("destination"))
            .bind(row.get::<String, _>("options")).bind(row.get::<i64, _>("priority")).bind(&self.owner).bind(now).bind(now).bind(batch)
            .fetch_one(&mut *tx).await.map_err(|e| db.error(e))?;
            for id in &rest {
                sqlx::query("UPDATE items SET batch_id = ? WHERE id = ?")
                    .bind(new_batch)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db.error(e))?;
            }
        } else {
            for id in &rest {
                sqlx::query("UPDATE items SET state = 'FAILED', code = ?, description = ?, completed_at = ? WHERE id = ?")
                    .bind(&code).bind(&reason).bind(now).bind(id).execute(&mut *tx).await.map_err(|e| db.error(e))?;
            }
        }
        sqlx::query("UPDATE batches SET state = 'DONE', completed_at = ?, fatal_code = ?, fatal_description = ? WHERE id = ?")
            .bind(now).bind(&code).bind(&reason).bind(batch).execute(&mut *tx).await.map_err(|e| db.error(e))?;
        bump_generation(&mut tx, db).await?;
        tx.commit().await.map_err(|e| db.error(e))?;
        self.signals.changed.notify_waiters();
        self.signals.submit_kick.notify_one();
        Ok(())
    }

    async fn generation(&self) -> Result<i64> {
        sqlx::query_scalar("SELECT value FROM generation WHERE id = 1")
            .fetch_one(self.db.pool())
            .await
            .map_err(|e| self.db.error(e))
    }
}

async fn update_counters(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    db: &StateDb,
    batch: i64,
    task: &Task,
) -> Result<()> {
    sqlx::query("UPDATE batches SET status = ?, nice_status = ?, bytes_transferred = ?, files = ?, files_transferred = ? WHERE id = ?")
        .bind(&task.status).bind(&task.nice_status).bind(task.bytes_transferred as i64).bind(task.files as i64)
        .bind(task.files_transferred as i64).bind(batch)
        .execute(&mut **tx).await.map_err(|e| db.error(e))?;
    Ok(())
}

async fn bump_generation(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    db: &StateDb,
) -> Result<()> {
    sqlx::query("UPDATE generation SET value = value + 1 WHERE id = 1")
        .execute(&mut **tx)
        .await
        .map_err(|e| db.error(e))?;
    Ok(())
}

// ---- background loops: each holds only a weak reference, and ends with the manager ----

async fn writer_loop(manager: Weak<Inner>, mut requests: mpsc::UnboundedReceiver<WriteReq>) {
    let mut ids: HashMap<String, i64> = HashMap::new();
    while let Some(first) = requests.recv().await {
        let mut batch = vec![first];
        while batch.len() < 10_000 {
            match requests.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let Some(inner) = manager.upgrade() else {
            return;
        };
        let result = inner.commit(&batch, &mut ids).await;
        let mut item_ids = match &result {
            Ok(ids) => ids.clone().into_iter(),
            Err(_) => Vec::new().into_iter(),
        };
        for request in batch {
            let failed = || Error::State {
                path: inner.db.path().to_path_buf(),
                message: result
                    .as_ref()
                    .err()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            };
            match request {
                WriteReq::Item { ack, .. } => {
                    let _ = ack.send(if result.is_ok() {
                        item_ids.next().ok_or_else(failed)
                    } else {
                        Err(failed())
                    });
                }
                WriteReq::Close { label, ack } => {
                    ids.remove(&label);
                    let _ = ack.send(if result.is_ok() {
                        Ok(())
                    } else {
                        Err(failed())
                    });
                }
            }
        }
    }
}

async fn batcher_loop(manager: Weak<Inner>, signals: Arc<Signals>) {
    loop {
        let Some(inner) = manager.upgrade() else {
            return;
        };
        if inner.stopped() {
            return;
        }
        let config = &inner.config;
        let now = Instant::now();
        let (due, next) = {
            let mut open = inner.open.lock().expect("open batches poisoned");
            let due: Vec<String> = open
                .values()
                .filter(|b| {
                    now >= b.last + config.quiet
                        || now >= b.first + config.max_delay
                        || b.items >= config.max_items
                })
                .map(|b| b.label.clone())
                .collect();
            open.retain(|_, b| !due.contains(&b.label));
            let next = open
                .values()
                .map(|b| (b.last + config.quiet).min(b.first + config.max_delay))
                .min();
            (due, next)
        };
        for label in &due {
            let (ack, done) = oneshot::channel();
            if inner
                .writer
                .send(WriteReq::Close {
                    label: label.clone(),
                    ack,
                })
                .is_ok()
            {
                let _ = done.await;
            }
        }
        if !due.is_empty() {
            inner.signals.submit_kick.notify_one();
        }
        drop(inner);
        let kick = signals.batcher_kick.notified();
        let mut stop = signals.stop.subscribe();
        let wait = next.map_or(Duration::from_secs(3600), |t| {
            t.saturating_duration_since(Instant::now())
        });
        tokio::select! {
            _ = kick => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn submitter_loop(manager: Weak<Inner>, signals: Arc<Signals>) {
    let mut admissions = 0usize;
    let mut backoff = Duration::from_millis(200);
    loop {
        let Some(inner) = manager.upgrade() else {
            return;
        };
        if inner.stopped() {
            return;
        }
        let mut failed = false;
        loop {
            match inner.next_to_submit(admissions).await {
                Ok(Some((batch, sid))) => {
                    let fresh = sid.is_none();
                    if let Err(e) = inner.submit(batch, sid).await {
                        tracing::warn!("submitting a transfer batch failed, will retry: {e}");
                        failed = true;
                        break;
                    }
                    if fresh {
                        admissions += 1;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::error!("transfer manager: {e}");
                    failed = true;
                    break;
                }
            }
        }
        backoff = if failed {
            (backoff * 2).min(Duration::from_secs(30))
        } else {
            Duration::from_millis(200)
        };
        drop(inner);
        let kick = signals.submit_kick.notified();
        let changed = signals.changed.notified();
        let mut stop = signals.stop.subscribe();
        // Woken by new batches, by tasks finishing (admission frees up), or to retry.
        let wait = if failed {
            backoff
        } else {
            Duration::from_secs(2)
        };
        tokio::select! {
            _ = kick, if !failed => {}
            _ = changed, if !failed => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn poller_loop(manager: Weak<Inner>, signals: Arc<Signals>) {
    let mut interval;
    let mut seen_generation = -1;
    let mut last_interval = Duration::ZERO;
    loop {
        let Some(inner) = manager.upgrade() else {
            return;
        };
        if inner.stopped() {
            return;
        }
        let config = inner.config.clone();
        let _ = inner.heartbeat().await;
        let leader = inner.lease().await.unwrap_or(false);
        if leader {
            let waited_on = inner.waiters.load(std::sync::atomic::Ordering::Relaxed) > 0;
            interval = match inner.poll_once().await {
                Ok(true) if waited_on => config.poll_min,
                Ok(true) => config.poll_idle.max(config.poll_min),
                Ok(false) => (last_interval.max(config.poll_min).mul_f64(1.5)).min(config.poll_max),
                Err(e) => {
                    tracing::warn!("polling Globus failed, will retry: {e}");
                    (last_interval.max(config.poll_min) * 2).min(config.poll_max)
                }
            };
        } else {
            // Another process polls; notice its updates through the database.
            if let Ok(generation) = inner.generation().await
                && generation != seen_generation
            {
                seen_generation = generation;
                inner.signals.changed.notify_waiters();
                inner.signals.submit_kick.notify_one();
            }
            interval = config.poll_min;
        }
        last_interval = interval;
        drop(inner);
        let kick = signals.poll_kick.notified();
        let mut stop = signals.stop.subscribe();
        // The lease must be renewed before it expires, whatever the interval.
        let wait = interval.min(config.lease_ttl / 2);
        tokio::select! {
            _ = kick => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_suit_the_filter_grammar() {
        let label = new_label();
        assert!(label.starts_with("psg-") && label.len() == 36);
        assert!(!label.contains([',', '/', ':']));
    }

    #[test]
    fn paths_normalise_like_globus_reports_them() {
        assert_eq!(normalise("/~/a//b/./c"), "/a/b/c");
        assert_eq!(normalise("/a/b"), "/a/b");
        assert_eq!(normalise("~/x"), "/x");
    }

    #[test]
    fn this_process_has_a_start_time() {
        assert!(process_start(std::process::id()).is_some());
        assert_eq!(
            process_start(std::process::id()),
            process_start(std::process::id())
        );
    }
}

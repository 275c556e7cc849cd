//! The `TransferManager`: every transfer item tracked in the state database, coalesced
//! into few Globus tasks, submitted exactly once, polled by one poller, resumed after a
//! crash.
//!
//! ## The life of an item
//!
//! 1. [`enqueue`](TransferManager::enqueue) puts the item in the *open batch* for its
//!    (source, destination, options, priority) and returns once the item row is committed
//!    (group commit: the caller leads it, and one transaction takes every item queued
//!    meanwhile). The batch's label, `psg-<32 hex>`, is fixed when it opens. A batch
//!    whose options keep its label (a Globus store's) may be another process's open
//!    batch of the same route, joined at commit (`share.rs`); the answer names it.
//! 2. A batch *closes* after [`quiet`](ManagerConfig::quiet) without new items, or at
//!    [`max_delay`](ManagerConfig::max_delay), or at [`max_items`](ManagerConfig::max_items)
//!    or [`max_document_bytes`](ManagerConfig::max_document_bytes) (a batch too large to
//!    post all the same is split in two: `split.rs`).
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
//!    into a new batch (once); INACTIVE tasks report [`NeedsAttention`](crate::error::NeedsAttention).
//!
//! ## Files
//!
//! `config.rs` (what callers hand in), `commit.rs` (the writer's group commit, one
//! round trip), `status.rs` (what they get back), `sql.rs` (every
//! statement against the state database) with `rows.rs` (the typed rows it reads and
//! writes), `claim.rs` (a batch claimed for submission: admission across hosts, and
//! the merging of other processes' waiting batches into it), `split.rs` (batches that
//! fit in one `POST`, and the split of one that does not), `liveness.rs` (which processes are alive, the
//! poller lease), `submit.rs` (admission, exactly-once submission), `poll.rs` (polling
//! and outcomes), `loops.rs` (the background loops), `trouble.rs` (what the loops cannot
//! do right now, for callers who will not wait for it), `unsubmitted.rs` (work that
//! never reached Globus: finding and pruning it), `exit.rs` (what a process sends, or
//! says it could not send, as it exits), `twins.rs` (an item asked for again while an
//! earlier copy is queued), `share.rs` (open batches shared across processes), `tests.rs` (unit tests that need the
//! manager's private parts).

mod background;
mod claim;
mod commit;
mod config;
mod exit;
mod express;
mod lane;
mod liveness;
mod loops;
mod poll;
mod rows;
mod share;
mod split;
mod sql;
mod status;
mod submit;
mod trouble;
mod twins;
mod unsubmitted;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, oneshot, watch};

use crate::transfer::budget::RequestBudget;

pub use config::{
    BatchOptions, DEFAULT_MAX_DOCUMENT_BYTES, Enqueued, ItemSpec, ManagerConfig, Priority,
};
pub(crate) use liveness::{owner_alive, this_process};
pub(crate) use split::PART_SUFFIX;
pub(crate) use sql::take_lease;
pub use status::{BatchStatus, ItemStatus};
pub use trouble::{Activity, Trouble};
pub use unsubmitted::Unsubmitted;

use loops::{OpenBatch, WriteReq};
use sql::BatchKey;

use super::TransferClient;
use crate::error::{Error, Result};
use crate::runtime;
use crate::state::StateDb;
use crate::transfer::states::BatchState;

/// Coalesces, submits and tracks Globus transfers for one identity. Cheap to clone.
///
/// ```no_run
/// use std::sync::Arc;
/// use ps_globus::auth::StaticTokenAuthorizer;
/// use ps_globus::state::StateDb;
/// use ps_globus::transfer::{ItemSpec, ManagerConfig, TransferClient, TransferManager};
/// # ps_globus::block_on(async {
/// let settings = ps_globus::Settings::from_env();
/// let client = TransferClient::new(&settings, Arc::new(StaticTokenAuthorizer::new("token")))?;
/// let db = StateDb::open_default(&settings).await?;
/// let manager = TransferManager::start(db, client, ManagerConfig::from_settings(&settings)).await?;
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

impl std::fmt::Debug for TransferManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransferManager").finish_non_exhaustive()
    }
}

struct Inner {
    db: StateDb,
    client: TransferClient,
    identity: String,
    config: ManagerConfig,
    /// This process, as the database names it: `host:pid:start-time`.
    owner: String,
    host: String,
    /// Writes waiting to be committed, and the lane their leader commits them in.
    lane: commit::CommitLane,
    open: Mutex<HashMap<BatchKey, OpenBatch>>,
    /// Other processes' batches this process's items joined and has not seen posted:
    /// `flush` waits for them too.
    joined: Mutex<HashSet<String>>,
    signals: Arc<Signals>,
    poll_cycles: AtomicU64,
    /// Callers of `wait` in this process right now: with none, young tasks are polled
    /// at `poll_idle` rather than `poll_min` (nobody here is waiting to be told).
    waiters: AtomicUsize,
    /// The submitter's next batch waits for other processes' open batches to close and
    /// join it (`submit.rs`): look again after `quiet`, not the idle interval.
    waiting_for_mates: std::sync::atomic::AtomicBool,
    /// Collections seen unable to compute a requested checksum algorithm: their items go
    /// without an external checksum (the reader verifies the sha256 itself).
    unverifiable: Mutex<std::collections::HashSet<String>>,
    /// The background loops' last failure, until they succeed again.
    trouble: trouble::TroubleCell,
    /// What this manager could not send was reported at exit (by a host language's
    /// hook, or the library's): said once, not by each hook.
    exit_reported: std::sync::atomic::AtomicBool,
    /// Work callers left running (evicted copies being deleted); `flush` waits for it.
    background: background::Background,
    /// Flushes in progress: bulk work meanwhile goes past the express lane's cap.
    flushing: AtomicUsize,
    /// The next open batch entry's serial (`OpenBatch::serial`).
    serials: AtomicU64,
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

/// This process's registry (a forked child starts an empty one: the parent's managers'
/// pollers and connections are not the child's).
fn shared() -> &'static Registry {
    crate::process::own(Registry::default)
}

/// A fresh batch label: `psg-` and 32 hex digits (no `,` `/` `:`, which the filter
/// grammar uses).
pub(crate) fn new_label() -> String {
    format!("psg-{}", uuid::Uuid::new_v4().simple())
}

/// The label of the batch that takes over the unfinished items of batch `label` after
/// its task was cancelled (fail-fast): derived, so that a reader at another site, who
/// knows only the old label, can follow its object there.
pub(crate) fn resplit_label(label: &str) -> String {
    format!("{label}{RESPLIT_SUFFIX}")
}

/// What `resplit_label` appends; a batch whose label ends so is never re-split again.
#[doc(hidden)]
pub const RESPLIT_SUFFIX: &str = "-resplit";

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
        let identity = client.service_identity();
        let key = (db.path().to_path_buf(), identity.clone());
        if let Some(inner) = shared()
            .lock()
            .expect("manager registry poisoned")
            .get(&key)
            .and_then(Weak::upgrade)
        {
            return Ok(TransferManager { inner });
        }
        // Every request of this manager (submitter and poller) and of the readers'
        // watcher draws on one budget per database and identity.
        let client = RequestBudget::gate(client, &db, config.request_budget);
        let me = liveness::this_process();
        sql::register_process(&db, &me).await?;
        let (stop, _) = watch::channel(false);
        let max_items = config.max_items;
        let inner = Arc::new(Inner {
            db,
            client,
            identity,
            config,
            owner: me.owner,
            host: me.host,
            lane: commit::CommitLane::new(max_items),
            open: Mutex::new(HashMap::new()),
            joined: Mutex::default(),
            signals: Arc::new(Signals {
                batcher_kick: Notify::new(),
                submit_kick: Notify::new(),
                poll_kick: Notify::new(),
                changed: Notify::new(),
                stop,
            }),
            poll_cycles: AtomicU64::new(0),
            waiters: AtomicUsize::new(0),
            waiting_for_mates: std::sync::atomic::AtomicBool::new(false),
            unverifiable: Mutex::default(),
            trouble: trouble::TroubleCell::new(),
            exit_reported: std::sync::atomic::AtomicBool::new(false),
            background: Default::default(),
            flushing: AtomicUsize::new(0),
            serials: AtomicU64::new(0),
        });
        inner.close_orphaned_open_batches().await?;
        loops::spawn(&inner);
        exit::install_exit_hook();
        shared()
            .lock()
            .expect("manager registry poisoned")
            .insert(key, Arc::downgrade(&inner));
        Ok(TransferManager { inner })
    }

    /// The managers running in this process (one per state database and identity): what
    /// the exit hook flushes, and what a host language's own exit hook (Python's
    /// `atexit`) flushes before the interpreter's threads are gone.
    pub fn running() -> Vec<TransferManager> {
        shared()
            .lock()
            .map(|shared| {
                shared
                    .values()
                    .filter_map(Weak::upgrade)
                    .map(|inner| TransferManager { inner })
                    .collect()
            })
            .unwrap_or_default()
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
        let options = BatchOptions {
            https_lane: spec.https,
            ..spec.options.clone()
        };
        let options = serde_json::to_string(&options).map_err(|e| Error::encode("json", e))?;
        let key: BatchKey = (
            spec.source.clone(),
            spec.destination.clone(),
            options,
            spec.priority.code(),
        );
        let (ack, done) = oneshot::channel();
        let item_bytes = spec.document_bytes();
        let key_of_item = key.clone();
        let (kick_batcher, serial);
        let label = {
            let mut open = self.inner.open.lock().expect("open batches poisoned");
            let now = Instant::now();
            if open
                .get(&key)
                .is_some_and(|b| !b.fits(item_bytes, &self.inner.config))
            {
                // Full: close it here, behind its own items in the commit queue (another
                // process's batch is its owner's to close: this one only stops joining).
                let full = open.remove(&key).expect("checked above");
                self.inner.lane.push(if full.foreign {
                    WriteReq::Forget { label: full.label }
                } else {
                    let (ack, _) = oneshot::channel();
                    WriteReq::Close {
                        label: full.label,
                        ack,
                    }
                });
                self.inner.signals.submit_kick.notify_one();
            }
            let batch = open.entry(key.clone()).or_insert_with(|| {
                OpenBatch::fresh(
                    new_label(),
                    spec.https,
                    share::shareable(&key.2, spec.https),
                    // A flush under way closes it in its turn.
                    self.inner.flushing.load(Ordering::SeqCst) > 0,
                    self.inner.serials.fetch_add(1, Ordering::Relaxed),
                )
            });
            batch.last = now;
            batch.committing += 1;
            batch.items += 1;
            batch.bytes += item_bytes;
            // The batcher sleeps until the earliest batch is due; only a new batch (or a
            // full one) changes that. Waking it for every item cost each put a hop.
            kick_batcher = batch.items == 1 || batch.is_full(&self.inner.config);
            let label = batch.label.clone();
            serial = batch.serial;
            // Queued under the lock, so the batcher's Close for this label comes after it.
            self.inner.lane.push(WriteReq::Item {
                key: key.clone(),
                label: label.clone(),
                spec: Box::new(spec),
                ack,
            });
            label
        };
        if kick_batcher {
            self.inner.signals.batcher_kick.notify_one();
        }
        // Lead the commit of what is queued (this item among it), or follow the leader.
        self.inner.commit_queued().await;
        let answer = done.await;
        self.inner.answered(&key_of_item, serial);
        let committed = answer.map_err(|_| {
            Error::background(
                "committing a transfer item",
                Some("the manager stopped, or the commit that took it was interrupted".into()),
            )
        })??;
        self.inner
            .follow(&label, &committed, key_of_item, item_bytes)
            .await;
        Ok(Enqueued {
            item: committed.item,
            label: committed.label,
            earlier: false,
        })
    }

    /// Where item `item` stands.
    pub async fn item(&self, item: i64) -> Result<ItemStatus> {
        sql::item_status(&self.inner.db, item)
            .await?
            .ok_or_else(|| {
                Error::invalid_config(
                    "transfer item",
                    format!("no item {item} in {}", self.inner.db.path().display()),
                )
            })
    }

    /// Waits until `item` is final. Success is `Ok`; a failure is
    /// [`Error::TransferFailed`] with the Globus code, description and paths; a paused
    /// task is [`NeedsAttention`](crate::error::NeedsAttention); a login or consent that Globus refuses and the
    /// manager cannot renew is that error ([`Error::needs_login`]) at once, though the
    /// item stays queued; past `timeout`, [`Error::Timeout`].
    pub async fn wait(&self, item: i64, timeout: Duration) -> Result<ItemStatus> {
        let inner = &self.inner;
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        inner.waiters.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&inner.waiters);
        let waited = runtime::timeout(timeout, async {
            loop {
                let changed = inner.signals.changed.notified();
                let status = self.item(item).await?;
                if let Some(result) = poll::outcome(&status) {
                    return result;
                }
                self.until_changed(changed).await?;
            }
        });
        waited.await.unwrap_or_else(|| {
            // Say why nothing arrived, where the background work knows.
            let meanwhile = self
                .trouble()
                .map(|t| format!(" (meanwhile {t})"))
                .unwrap_or_default();
            Err(Error::timeout(
                format!("transfer item {item}{meanwhile}"),
                timeout,
            ))
        })
    }

    /// What the background work cannot do right now (submit, or poll), if anything: the
    /// last attempt's error, until an attempt succeeds. The manager keeps retrying.
    pub fn trouble(&self) -> Option<Trouble> {
        self.inner.trouble.current()
    }

    /// Waits until the background work fails (after the Transfer client's own retries)
    /// and returns the failure: a caller who will not wait out an outage or an expired
    /// login races its wait against this.
    pub async fn troubled(&self) -> Trouble {
        self.inner.trouble.next().await
    }

    /// Waits for every item of the batch labelled `label`; the first failure is returned.
    pub async fn wait_label(&self, label: &str, timeout: Duration) -> Result<Vec<ItemStatus>> {
        let ids = sql::item_ids_of(&self.inner.db, label).await?;
        let deadline = crate::runtime::deadline_after(timeout);
        let mut done = Vec::with_capacity(ids.len());
        for id in ids {
            done.push(
                self.wait(id, deadline.saturating_duration_since(Instant::now()))
                    .await?,
            );
        }
        Ok(done)
    }

    /// The batch labelled `label` (of any identity: labels are unique).
    pub async fn batch(&self, label: &str) -> Result<Option<BatchStatus>> {
        let query = sql::BatchQuery {
            label: Some(label),
            limit: 1,
            ..Default::default()
        };
        let rows = sql::batches(&self.inner.db, query).await?;
        Ok(rows.into_iter().next())
    }

    /// The most recent batches of this identity, newest first.
    pub async fn batches(&self, limit: i64) -> Result<Vec<BatchStatus>> {
        let query = sql::BatchQuery {
            identity: Some(&self.inner.identity),
            limit,
            ..Default::default()
        };
        sql::batches(&self.inner.db, query).await
    }

    /// Every item of the batch labelled `label`.
    pub async fn items(&self, label: &str) -> Result<Vec<ItemStatus>> {
        let ids = sql::item_ids_of(&self.inner.db, label).await?;
        let mut all = Vec::with_capacity(ids.len());
        for id in ids {
            all.extend(sql::item_status(&self.inner.db, id).await?);
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
            return Err(Error::invalid_config(
                "transfer batch",
                format!("no batch labelled {label}"),
            ));
        };
        if let Some(task) = batch.task_id {
            return self.cancel_task(&task).await;
        }
        {
            let mut open = self.inner.open.lock().expect("open batches poisoned");
            open.retain(|_, b| b.label != label);
        }
        if !sql::cancel_unsubmitted(&self.inner.db, label).await? {
            // Posted meanwhile (by this process or another): cancel its task instead.
            match self.batch(label).await? {
                Some(BatchStatus {
                    task_id: Some(task),
                    ..
                }) => return self.cancel_task(&task).await,
                Some(b) if b.state == BatchState::Merged => {
                    return Err(Error::invalid_config(
                        "transfer batch",
                        format!(
                            "the items of batch {label} joined another batch when it was \
                             submitted (from this or another host): cancel that batch's task \
                             once `ps-globus status` shows it"
                        ),
                    ));
                }
                Some(b) if b.state != BatchState::Done => {
                    return Err(Error::invalid_config(
                        "transfer batch",
                        format!(
                            "batch {label} is being submitted (its submission id is fixed, \
                             and it may already be a task at Globus): cancel its task once \
                             `ps-globus status` shows it"
                        ),
                    ));
                }
                _ => {}
            }
        }
        self.inner.signals.changed.notify_waiters();
        Ok(())
    }

    /// Runs `work` (of `what`) in the background; [`flush`](Self::flush) waits for it.
    pub(crate) fn spawn_background(
        &self,
        what: &'static str,
        work: impl std::future::Future<Output = Result<()>> + Send + 'static,
    ) {
        self.inner.background.spawn(what, work);
    }

    /// Closes every open batch now (one that other processes' puts are joining, when
    /// they stop or at `max_delay`) and returns once each batch of this process, and
    /// each other process's batch its items joined, is at Globus, waits only for
    /// admission, or is held by Globus (a 409: identical paths in flight, or the
    /// pending-task limit; it goes when Globus lets it, which no flush can hasten).
    /// Before a short-lived process exits, say. A login or consent that
    /// Globus refuses and the manager cannot renew is that error at once
    /// ([`Error::needs_login`]); the batches stay committed.
    pub async fn flush(&self) -> Result<()> {
        let _bulk_goes = express::Flushing::begin(&self.inner);
        {
            let mut open = self.inner.open.lock().expect("open batches poisoned");
            for batch in open.values_mut() {
                batch.closing = true;
            }
        }
        self.inner.signals.batcher_kick.notify_one();
        self.inner.background.finish().await?;
        loop {
            let changed = self.inner.signals.changed.notified();
            let open_here = !self
                .inner
                .open
                .lock()
                .expect("open batches poisoned")
                .is_empty();
            let (unsettled, ready, pending) =
                sql::flush_counts(&self.inner.db, &self.inner.identity, &self.inner.owner).await?;
            let admitted_all =
                ready == 0 || pending as usize >= self.inner.config.max_pending_tasks;
            let joined_posted = self.joined_posted().await?;
            if !open_here && unsettled == 0 && admitted_all && joined_posted {
                return Ok(());
            }
            self.inner.signals.submit_kick.notify_one();
            // Not every step is told: another process posting a batch this one joined
            // moves nothing the database's generation counts (task states come later),
            // and the batcher forgetting such a batch commits nothing. So look again
            // at least every `poll_min`.
            let _ = runtime::timeout(self.inner.config.poll_min, self.until_changed(changed))
                .await
                .transpose()?;
        }
    }

    /// Whether every other process's batch this process's items joined was posted (or
    /// ended otherwise): forgets those that were. Their owner closes and posts them; one
    /// whose owner died is adopted by a manager that adopts orphans (this one, by
    /// default).
    async fn joined_posted(&self) -> Result<bool> {
        let labels: Vec<String> = (self.inner.joined.lock().expect("joined batches poisoned"))
            .iter()
            .cloned()
            .collect();
        if labels.is_empty() {
            return Ok(true);
        }
        let waiting = sql::unposted_of(&self.inner.db, &labels).await?;
        self.inner
            .joined
            .lock()
            .expect("joined batches poisoned")
            .retain(|label| waiting.contains(label));
        Ok(waiting.is_empty())
    }

    /// Waits for `changed` (a state change), or for the background work to fail. A login
    /// or consent that Globus refuses and the manager cannot renew is that error at once:
    /// nothing moves until a person acts, so `wait` and `flush` say so rather than wait
    /// forever (what is enqueued stays committed, and goes once the login is renewed).
    /// Outages are waited out.
    async fn until_changed(&self, changed: tokio::sync::futures::Notified<'_>) -> Result<()> {
        if let Some(login) = self.trouble().and_then(|t| t.needs_login()) {
            return Err(login);
        }
        tokio::select! {
            _ = changed => {}
            _ = self.troubled() => {}
        }
        Ok(())
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
        self.inner.poll_cycles.load(Ordering::Relaxed)
    }

    /// Stops the manager's background work (pending work resumes at the next start).
    pub fn shutdown(&self) {
        let _ = self.inner.signals.stop.send(true);
        shared()
            .lock()
            .expect("manager registry poisoned")
            .retain(|_, w| w.strong_count() > 0 && !w.ptr_eq(&Arc::downgrade(&self.inner)));
    }
}

impl Inner {
    fn stopped(&self) -> bool {
        *self.signals.stop.borrow()
    }

    /// Commits every queued write (see `commit.rs`).
    async fn commit_queued(&self) {
        self.lane
            .commit_queued(&self.db, &self.identity, &self.owner)
            .await;
    }
}

#[cfg(test)]
mod tests;

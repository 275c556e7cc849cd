//! The manager's background work: the batcher that closes
//! batches, the submitter and the poller. Each loop holds only a weak reference to the
//! manager and ends with it (or at `shutdown`).

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::config::{ItemSpec, Priority};
use super::express::Slots;
use super::sql::{self, BatchKey};
use super::trouble::Activity;
use super::{Inner, Signals};
use crate::error::Result;

/// A batch that takes items, as this process sees it.
pub(super) struct OpenBatch {
    pub label: String,
    /// A batch of the HTTPS lane: once closed, it settles as its items' requests end.
    pub https: bool,
    pub first: Instant,
    pub last: Instant,
    pub items: usize,
    /// Its items' share of its transfer document, estimated.
    pub bytes: usize,
    /// Another process's batch this one's puts joined (`share.rs`): its owner closes it;
    /// this process only stops putting into it.
    pub foreign: bool,
    /// Other processes may join it (`share.rs`): it stays open while they do.
    pub shared: bool,
    /// `flush` wants it closed now (a shared one after its quiet, and not while other
    /// processes' puts are still joining it).
    pub closing: bool,
    /// Other processes' items in it at the last look (a shared one of this process).
    pub others: usize,
    /// Its items whose commit has not answered yet. Its quiet runs from the last
    /// answer: a commit waiting for a lock (another process's, say) is no pause in
    /// the puts, and a batch closed then loses the entry its answer follows.
    pub committing: usize,
    /// Tells this entry from a later one of the same route.
    pub serial: u64,
}

impl OpenBatch {
    /// A batch with no items yet, opened now.
    pub(super) fn fresh(
        label: String,
        https: bool,
        shared: bool,
        closing: bool,
        serial: u64,
    ) -> Self {
        let now = Instant::now();
        OpenBatch {
            label,
            https,
            first: now,
            last: now,
            items: 0,
            bytes: 0,
            foreign: false,
            shared,
            closing,
            others: 0,
            committing: 0,
            serial,
        }
    }

    /// Whether an item of `bytes` (in its document) may join it.
    pub(super) fn fits(&self, bytes: usize, config: &super::ManagerConfig) -> bool {
        self.items == 0
            || (self.items < config.max_items
                && self.bytes + bytes <= super::split::item_budget(config.max_document_bytes))
    }

    /// Whether it is full: it closes now.
    pub(super) fn is_full(&self, config: &super::ManagerConfig) -> bool {
        self.items >= config.max_items
            || self.bytes >= super::split::item_budget(config.max_document_bytes)
    }
}

/// A write to commit (see `commit.rs`): an item, the close of a batch, or the end of
/// this process's puts into another's batch.
pub(super) enum WriteReq {
    Item {
        key: BatchKey,
        /// The batch proposed for it: the one it joins is decided at commit.
        label: String,
        spec: Box<ItemSpec>,
        ack: oneshot::Sender<Result<Committed>>,
    },
    Close {
        label: String,
        ack: oneshot::Sender<Result<()>>,
    },
    Forget {
        label: String,
    },
}

/// A committed item: its id, and the batch it went into.
#[derive(Debug)]
pub(super) struct Committed {
    pub item: i64,
    pub label: String,
    /// Another process's open batch (`share.rs`).
    pub joined: bool,
    /// A batch of this process that its commit inserted.
    pub inserted: bool,
}

/// Starts the three loops on the library runtime.
pub(super) fn spawn(inner: &Arc<Inner>) {
    let rt = crate::runtime::handle();
    let weak = Arc::downgrade(inner);
    let signals = &inner.signals;
    rt.spawn(batcher_loop(weak.clone(), Arc::clone(signals)));
    rt.spawn(submitter_loop(weak.clone(), Arc::clone(signals)));
    rt.spawn(poller_loop(weak, Arc::clone(signals)));
}

/// How long past its first item an open batch may stay open while closed batches queue.
const MAX_HOLD_OPEN: Duration = Duration::from_secs(10);

/// How often the batcher looks again while closed batches queue for posting.
const BACKLOG_RECHECK: Duration = Duration::from_millis(100);

/// How often the batcher looks again while every running slot at Globus is taken (a
/// task's end wakes it sooner).
const SLOTS_RECHECK: Duration = Duration::from_secs(1);

/// Closes batches that have been quiet for `quiet`, are `max_delay` old, or are full.
/// While a new task could only queue — closed batches wait to be posted, or the running
/// slots the identity has at Globus for its priority are taken (`express.rs`) — only
/// full (or very old) ones: Nagle's rule for Globus tasks. Later items join the open
/// batch, and it goes as one task when a slot frees, instead of many small tasks queued
/// behind the running ones.
async fn batcher_loop(manager: Weak<Inner>, signals: Arc<Signals>) {
    loop {
        let Some(inner) = manager.upgrade() else {
            return;
        };
        if inner.stopped() {
            return;
        }
        let pressure = Pressure::of(&inner).await;
        let (mut due, mut next) = due_batches(&inner, pressure, Instant::now());
        if let Some(again) = keep_joined_open(&inner, pressure, &mut due).await {
            next = Some(next.map_or(again, |n| n.min(again)));
        }
        for (_, batch) in &due {
            // The items of a due batch were queued before it left `open`: its close
            // comes after them. Another process's batch is its owner's to close.
            if batch.foreign {
                inner.lane.push(WriteReq::Forget {
                    label: batch.label.clone(),
                });
                continue;
            }
            let (ack, _) = oneshot::channel();
            inner.lane.push(WriteReq::Close {
                label: batch.label.clone(),
                ack,
            });
        }
        if !due.is_empty() {
            inner.commit_queued().await;
            // A lane batch closed after its last request ended settles now; one with
            // requests in flight settles when the last of them ends.
            for (_, batch) in due.iter().filter(|(_, b)| b.https) {
                if let Err(e) = inner.settle_lane(&batch.label).await {
                    tracing::warn!("settling HTTPS batch {}: {e}", batch.label);
                }
            }
            inner.signals.submit_kick.notify_one();
        }
        drop(inner);
        let kick = signals.batcher_kick.notified();
        // While slots are busy, a task's end (seen here or, through the database, in
        // another process) may free one: look again then.
        let changed = signals.changed.notified();
        let mut stop = signals.stop.subscribe();
        let wait = next.map_or(Duration::from_secs(3600), |t| {
            t.saturating_duration_since(Instant::now())
        });
        tokio::select! {
            _ = kick => {}
            _ = changed, if pressure.any_slots_busy() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Why open batches stay open longer than their quiet time (see [`batcher_loop`]).
#[derive(Clone, Copy, Default)]
pub(super) struct Pressure {
    /// Closed batches of this process queue for posting.
    backlogged: bool,
    /// A task of latency work could only queue at Globus: the running slots are taken,
    /// those kept for latency work by latency work (`express.rs`).
    latency_busy: bool,
    /// A task of bulk work could only queue at Globus: the slots bulk may take are.
    bulk_busy: bool,
}

impl Pressure {
    /// The pressure on `inner`'s open batches now (none when none is open).
    async fn of(inner: &Inner) -> Pressure {
        let any_open = !inner.open.lock().expect("open batches poisoned").is_empty();
        // While closed batches queue for posting, an open one keeps taking items (up to
        // `max_items`, or for `MAX_HOLD_OPEN`): one task instead of many that would only
        // wait in the same queue.
        let backlogged = any_open
            && sql::unposted_backlog(&inner.db, &inner.identity, &inner.owner)
                .await
                .is_ok_and(|n| n > 0);
        let express = inner.express();
        if !any_open || backlogged || express.running_slots == 0 {
            return Pressure {
                backlogged,
                ..Pressure::default()
            };
        }
        let slots = Slots::of(&inner.db, &inner.identity, express.window, sql::now_ms())
            .await
            .unwrap_or_default();
        Pressure {
            backlogged,
            latency_busy: express.slots_busy(&slots, Priority::Latency),
            bulk_busy: express.slots_busy(&slots, Priority::Bulk),
        }
    }

    /// Whether batches of priority `code` wait for a running slot.
    fn slots_busy(&self, code: i64) -> bool {
        if code == Priority::Latency.code() {
            self.latency_busy
        } else {
            self.bulk_busy
        }
    }

    fn any_slots_busy(&self) -> bool {
        self.latency_busy || self.bulk_busy
    }
}

/// Takes the open batches due to close at `now` out of `inner.open`; their labels, and
/// when the next of those left is due.
pub(super) fn due_batches(
    inner: &Inner,
    pressure: Pressure,
    now: Instant,
) -> (Vec<(BatchKey, OpenBatch)>, Option<Instant>) {
    let config = &inner.config;
    let mut open = inner.open.lock().expect("open batches poisoned");
    let is_due = |(_, _, _, priority): &BatchKey, b: &OpenBatch| {
        let hold_open = pressure.backlogged || pressure.slots_busy(*priority);
        let quiet = b.committing == 0 && now >= b.last + config.quiet;
        let timely = quiet || now >= b.first + config.max_delay;
        // A flush closes a batch at once, but for one other processes may join: that
        // one after its quiet, so that workers finishing together share it.
        let flushed = b.closing && (!b.shared || quiet);
        if b.foreign {
            // Another process's batch: its owner closes it, and this process's puts go
            // on joining it until they find it closed, or until a flush (or long idle).
            return b.is_full(config) || b.closing || now >= b.last + MAX_HOLD_OPEN;
        }
        b.is_full(config)
            || flushed
            || (timely && !hold_open)
            || now >= b.first + config.max_delay.max(MAX_HOLD_OPEN)
    };
    let keys: Vec<BatchKey> = open
        .iter()
        .filter(|(k, b)| is_due(k, b))
        .map(|(k, _)| k.clone())
        .collect();
    let due: Vec<(BatchKey, OpenBatch)> = keys
        .into_iter()
        .filter_map(|k| open.remove_entry(&k))
        .collect();
    let next = open
        .iter()
        .map(|((_, _, _, priority), b)| {
            // While a commit is out, its answer restarts the quiet: look again then.
            let quiet_from = if b.committing > 0 {
                now.max(b.last)
            } else {
                b.last
            };
            let at = (quiet_from + config.quiet).min(b.first + config.max_delay);
            if b.foreign {
                b.last + MAX_HOLD_OPEN
            } else if pressure.backlogged {
                // Look again soon: the backlog drains as the submitter posts.
                at.max(now + BACKLOG_RECHECK)
            } else if pressure.slots_busy(*priority) {
                // A task's end wakes the batcher; this is the fallback.
                at.max(now + SLOTS_RECHECK)
            } else {
                at
            }
        })
        .min();
    (due, next)
}

/// Puts back into `open` the due batches of this process that other processes' puts
/// joined since the last look (`share.rs`), for another
/// [`joining_window`](super::share::joining_window), unless full or `max_delay` old:
/// their workers are still putting. While a
/// task of the batch could only queue at Globus (Nagle's rule, [`batcher_loop`]), the
/// limit is `MAX_HOLD_OPEN`: this process's flush closed it, but the others' puts go on
/// and would otherwise make a task of their own each `max_delay`. Returns when to look at
/// them again.
async fn keep_joined_open(
    inner: &Inner,
    pressure: Pressure,
    due: &mut Vec<(BatchKey, OpenBatch)>,
) -> Option<Instant> {
    let config = &inner.config;
    let now = Instant::now();
    let window = super::share::joining_window(config.quiet);
    let mut again = None;
    let mut closing = Vec::with_capacity(due.len());
    for (key, mut batch) in due.drain(..) {
        let limit = if pressure.backlogged || pressure.slots_busy(key.3) {
            config.max_delay.max(MAX_HOLD_OPEN)
        } else {
            config.max_delay
        };
        let may_wait =
            batch.shared && !batch.foreign && !batch.is_full(config) && now < batch.first + limit;
        // Other processes' items arrived since the last look.
        let mut joined = false;
        if may_wait
            && let Ok(others) = sql::others_items(&inner.db, &batch.label, batch.items).await
        {
            joined = others > batch.others;
            batch.others = others;
        }
        if joined {
            let mut open = inner.open.lock().expect("open batches poisoned");
            // Unless a new batch of the route opened meanwhile: then this one closes.
            if let std::collections::hash_map::Entry::Vacant(slot) = open.entry(key.clone()) {
                // Due again `window` after this look, the quiet that closes it then.
                batch.last = now + window.saturating_sub(config.quiet);
                again = Some(now + window);
                slot.insert(batch);
                continue;
            }
        }
        closing.push((key, batch));
    }
    *due = closing;
    again
}

/// Submits admitted batches; retries failed submissions with a growing back-off.
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
                        inner.trouble.failed(Activity::Submitting, e);
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
                    inner.trouble.failed(Activity::Submitting, e);
                    failed = true;
                    break;
                }
            }
        }
        if !failed {
            inner.trouble.succeeded(Activity::Submitting);
        }
        backoff = if failed {
            (backoff * 2).min(Duration::from_secs(30))
        } else {
            Duration::from_millis(200)
        };
        let inner_waits_for_mates = inner
            .waiting_for_mates
            .load(std::sync::atomic::Ordering::Relaxed);
        let config_quiet = inner.config.quiet.max(Duration::from_millis(5));
        drop(inner);
        let kick = signals.submit_kick.notified();
        let changed = signals.changed.notified();
        let mut stop = signals.stop.subscribe();
        // Woken by new batches, by tasks finishing (admission frees up), or to retry.
        let wait = if failed {
            backoff
        } else if inner_waits_for_mates {
            config_quiet
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

/// Polls Globus while this process holds the poller lease; otherwise watches the
/// database's generation for the holder's updates.
async fn poller_loop(manager: Weak<Inner>, signals: Arc<Signals>) {
    let mut interval;
    let mut seen_generation = -1;
    let mut last_interval = Duration::ZERO;
    let mut orphans_checked = Instant::now();
    loop {
        let Some(inner) = manager.upgrade() else {
            return;
        };
        if inner.stopped() {
            return;
        }
        let config = inner.config.clone();
        let _ = inner.heartbeat().await;
        // A process that dies while others run leaves its open batches open: the items
        // of processes that joined them (`share.rs`), and keys already handed out, would
        // wait for the next process to start. Looked for at the heartbeat's pace.
        if config.adopt_orphans && orphans_checked.elapsed() >= config.lease_ttl / 2 {
            orphans_checked = Instant::now();
            match inner.close_orphaned_open_batches().await {
                Ok(0) => {}
                Ok(_) => {
                    inner.signals.changed.notify_waiters();
                    inner.signals.submit_kick.notify_one();
                }
                Err(e) => tracing::warn!("closing dead processes' open batches: {e}"),
            }
        }
        // Other processes record outcomes too (the previous poller, a refused submission,
        // a cancel): whoever polls now, notice their changes through the database's
        // generation. Checking it only while another process held the lease left a
        // waiter hanging when its item was finished by a poller that then exited.
        if let Ok(generation) = sql::generation(&inner.db).await
            && generation != seen_generation
        {
            seen_generation = generation;
            inner.signals.changed.notify_waiters();
            inner.signals.submit_kick.notify_one();
        }
        let leader = inner.lease().await.unwrap_or(false);
        interval = if leader {
            let waited_on = inner.waiters.load(std::sync::atomic::Ordering::Relaxed) > 0;
            let polled = inner.poll_once().await;
            if polled.is_ok() {
                inner.trouble.succeeded(Activity::Polling);
            }
            match polled {
                Ok(true) if waited_on => config.poll_min,
                Ok(true) => config.poll_idle.max(config.poll_min),
                Ok(false) => (last_interval.max(config.poll_min).mul_f64(1.5)).min(config.poll_max),
                Err(e) => {
                    tracing::warn!("polling Globus failed, will retry: {e}");
                    inner.trouble.failed(Activity::Polling, e);
                    (last_interval.max(config.poll_min) * 2).min(config.poll_max)
                }
            }
        } else {
            // Another process polls Globus; its updates arrive through the generation.
            config.poll_min
        };
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

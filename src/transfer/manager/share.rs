//! Open batches shared across processes: a put of a Globus store joins another process's
//! open batch of the same route rather than opening its own.
//!
//! A Globus store's batches keep their label (readers at other sites find the task by
//! it), so they never merge at submission (`claim.rs`): 16 workers putting at once made
//! 16 tasks, queued behind Globus's 3 running slots. Instead the *open* batch is shared,
//! and every key names the label its object really travels under:
//!
//! - The writer decides where a group's items go inside the group's transaction. A batch
//!   it inserted stays its own (only its owner closes it, or an adopter once the owner
//!   died). A route with no batch of its own yet first looks for another live-or-adoptable
//!   process's `OPEN` batch of the same route, identity, options and priority, with fewer
//!   than `max_items` items, and joins it; else it inserts its own.
//! - A batch it joined earlier is checked again at each commit: still `OPEN` and not
//!   full, or the items go to a batch of their own (looked for and joined, or inserted,
//!   as above) under a fresh label.
//! - Ordering against the owner's close: on SQLite every group holds the write lock, so
//!   a join and a close never interleave. On PostgreSQL a put into another process's
//!   batch holds its row with a share lock ([`REJOIN`], or in the put's one statement)
//!   and checks it is open: the owner's closing `UPDATE` waits for it, and a put after
//!   the close finds the batch closed. Such a put holds one row and waits on nothing
//!   else, so joiners go side by side, first puts included (a batch found open by
//!   [`FIND_OPEN`] and held). Only a process that may insert a batch (it found none to
//!   join) takes the identity's advisory lock first ([`SHARE_LOCK`]) and looks again
//!   under it: two such processes do not both insert one, and no two of them wait for
//!   each other's rows.
//! - A process keeps putting into the batch it joined until it finds it closed (or
//!   flushes). Its open entry's quiet runs from each commit's answer, not from the put
//!   (`loops.rs`): a commit slower than the quiet is no pause in its puts.
//! - Its owner keeps it open while other processes' puts keep joining it (their items
//!   in it grow between two looks, [`OTHERS_ITEMS`]): workers released together start
//!   their first puts over a spread of tens of milliseconds (process start, opening the
//!   state database), longer than the 20 ms of quiet that closes a batch. A lone
//!   producer's batch, which nobody joins, closes as before; a shared one at
//!   `max_delay` (while slots are free; `loops.rs`).
//! - Only batches whose options keep their label and that are not of the HTTPS lane are
//!   shared (a lane batch settles by its own requests, `lane.rs`).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::time::Instant;

use tokio::sync::oneshot;

use super::Inner;
use super::config::BatchOptions;
use super::loops::{Committed, OpenBatch, WriteReq};
use super::rows::BatchKey;

/// Another process's open batch of a route, not full: `$1..$5` the route, `$6` this
/// writer (its own batches it knows), `$7` the item limit.
pub(super) const FIND_OPEN: &str = "SELECT label FROM batches WHERE identity = $1 \
     AND source = $2 AND destination = $3 AND options = $4 AND priority = $5 \
     AND state = 'OPEN' AND owner <> $6 \
     AND (SELECT COUNT(*) FROM items WHERE items.batch_id = batches.id) < $7 \
     ORDER BY id LIMIT 1";

/// SQLite: joins the batch `$2` if it still takes items (open, fewer than `$3`),
/// stamping when (`$1`): its label back, or no row. (PostgreSQL holds the row with
/// [`REJOIN`] instead: an update there waited behind every joiner's share lock, and
/// `joined_at`, which nothing reads since joins are counted, is no longer written.)
pub(super) const JOIN: &str = "UPDATE batches SET joined_at = $1 WHERE label = $2 \
     AND state = 'OPEN' AND (SELECT COUNT(*) FROM items WHERE items.batch_id = batches.id) < $3 \
     RETURNING label";

/// PostgreSQL: the identity's share lock, held to commit by every transaction that joins
/// a batch or looks for one to join, taken before any row: so two processes that find
/// no batch to join do not both insert one, and no two such transactions wait for each
/// other's rows (a joiner holding a batch row while waiting to look, and an owner
/// holding the look while waiting to close that row, deadlocked).
pub(super) const SHARE_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext($1))";

/// The text the share lock of `identity` is taken on.
pub(super) fn share_lock_key(identity: &str) -> String {
    format!("ps-globus shared batches of {identity}")
}

/// Whether batches with these stored options may be shared (see the module docs).
pub(super) fn shareable(options: &str, https: bool) -> bool {
    !https
        && serde_json::from_str::<BatchOptions>(options)
            .is_ok_and(|o| o.keep_label && !o.https_lane)
}

/// The batches a writer knows in the database: those it inserted and has not closed
/// since, and other processes' open batches it joined.
#[derive(Default)]
pub(super) struct Known {
    pub(super) inserted: HashSet<String>,
    pub(super) joined: HashSet<String>,
}

/// How long a shared batch that others joined since the owner's last look stays open
/// before the next look (within `max_delay`): four times the quiet that closes a batch. Sixteen workers released together on a 2-core
/// machine made their first puts over 80-105 ms, up to ~30 ms apart at the tail, so a
/// 20 ms window let the batch close between two of them (3-4 tasks instead of 1).
pub(super) fn joining_window(quiet: std::time::Duration) -> std::time::Duration {
    quiet.saturating_mul(4)
}

/// PostgreSQL: holds another process's batch `$1` against its owner's close until this
/// transaction ends, if it still takes items (open, fewer than `$2`): its label back, or
/// no row. A share lock: the puts of every process that joined it go side by side, and
/// only the close (an update) waits for them. An owner's close that came first makes it
/// find the batch closed (PostgreSQL re-reads a row it waited for). Over the item limit
/// by a few items at most, when joiners race for the last places: a batch too large to
/// post is posted in parts (`split.rs`). PostgreSQL lets a share lock pass an update
/// that waits for others, so under a steady stream of joins a close could wait on; each
/// hold is one statement or a short transaction, and in the 8 × 8 bench the close came
/// at `max_delay`.
pub(super) const REJOIN: &str = "SELECT label FROM batches WHERE label = $1 AND state = 'OPEN' \
     AND (SELECT COUNT(*) FROM items WHERE items.batch_id = batches.id) < $2 FOR SHARE";

/// Other processes' items in the batch `$1` (of `$2` items this process put in it).
pub(super) const OTHERS_ITEMS: &str = "SELECT COUNT(*) - $2 FROM items \
     WHERE batch_id = (SELECT id FROM batches WHERE label = $1)";

/// Where the items of one label (as the caller proposed it) went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Placed {
    pub(super) label: String,
    /// Another process's batch.
    pub(super) joined: bool,
    /// A batch this group inserted.
    pub(super) inserted: bool,
}

impl Placed {
    pub(super) fn own(label: &str, inserted: bool) -> Self {
        Placed {
            label: label.to_owned(),
            joined: false,
            inserted,
        }
    }

    pub(super) fn joined(label: String) -> Self {
        Placed {
            label,
            joined: true,
            inserted: false,
        }
    }
}

/// The placements of one group, by proposed label.
pub(super) type Placements = HashMap<String, Placed>;

/// What a commit of `placements` (and of `closed` and `forgotten` labels) teaches the
/// writer. `proposed` labels that were joined batches but no longer take items are
/// forgotten.
pub(super) fn learn(
    known: &mut Known,
    placements: &Placements,
    closed: &[&String],
    forgotten: &[&String],
) {
    for (proposed, placed) in placements {
        if placed.label != *proposed {
            known.joined.remove(proposed);
        }
        if placed.joined {
            known.joined.insert(placed.label.clone());
        } else if placed.inserted {
            known.inserted.insert(placed.label.clone());
        }
    }
    for label in closed {
        known.inserted.remove(*label);
    }
    for label in forgotten {
        known.joined.remove(*label);
    }
}

impl Inner {
    /// The commit of an item put into the open entry `serial` of route `key` answered
    /// (either way): one fewer out, and the entry's quiet starts again. The quiet runs
    /// from the answer: a caller that enqueues one item after another waits for each
    /// commit (a round trip to a PostgreSQL server, a lock), and that wait is not a
    /// pause in its stream.
    pub(super) fn answered(&self, key: &BatchKey, serial: u64) {
        let mut open = self.open.lock().expect("open batches poisoned");
        if let Some(batch) = open.get_mut(key).filter(|b| b.serial == serial) {
            batch.committing = batch.committing.saturating_sub(1);
            batch.last = Instant::now();
        }
    }

    /// After an item's commit: the route's later puts go where it went. Its open entry
    /// (proposed `label`) follows the batch it joined, or left; a fresh batch of this
    /// process that no entry names is taken back or closed. `key` and `bytes` are the
    /// item's route and document share.
    pub(super) async fn follow(
        &self,
        label: &str,
        committed: &Committed,
        key: BatchKey,
        bytes: usize,
    ) {
        let mut close_now = false;
        {
            let mut open = self.open.lock().expect("open batches poisoned");
            if let Some(batch) = open.values_mut().find(|b| b.label == label) {
                if batch.label != committed.label {
                    // Another batch than proposed (the one it joined had closed): that
                    // batch's clock and counts, not the old one's. A clock from the
                    // first put into a long-gone batch would close a new one at once.
                    let now = Instant::now();
                    batch.label.clone_from(&committed.label);
                    batch.first = now;
                    batch.items = 1;
                    batch.bytes = bytes;
                    batch.others = 0;
                }
                batch.foreign = committed.joined;
            } else if committed.inserted
                && committed.label != label
                && !open.values().any(|b| b.label == committed.label)
            {
                // A batch of this process under a fresh label that no entry names: the
                // other process's batch this item was proposed for had closed, and its
                // entry left `open` (forgotten) before the answer came. The new batch
                // takes the route's next puts if none has opened since, else it closes
                // now; left alone, it would stay open for ever. (An item placed in the
                // batch it was proposed for needs nothing: if that entry left `open`,
                // its close is queued behind the item.)
                match open.entry(key) {
                    Entry::Vacant(slot) => {
                        let mut fresh = OpenBatch::fresh(
                            committed.label.clone(),
                            false,
                            true,
                            // A flush under way closes it in its turn.
                            self.flushing.load(std::sync::atomic::Ordering::SeqCst) > 0,
                            self.serials
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                        );
                        (fresh.items, fresh.bytes) = (1, bytes);
                        slot.insert(fresh);
                        self.signals.batcher_kick.notify_one();
                    }
                    Entry::Occupied(_) => {
                        let (ack, _) = oneshot::channel();
                        self.lane.push(WriteReq::Close {
                            label: committed.label.clone(),
                            ack,
                        });
                        close_now = true;
                    }
                }
            }
        }
        if close_now {
            self.commit_queued().await;
            self.signals.submit_kick.notify_one();
        }
        if committed.joined {
            self.joined
                .lock()
                .expect("joined batches poisoned")
                .insert(committed.label.clone());
        }
    }
}

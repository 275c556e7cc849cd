//! The express lane: running slots at Globus kept for latency work.
//!
//! Globus runs 3 of an identity's tasks at once and queues the rest in submission order.
//! Bulk tasks (large objects, staging) may run for minutes; a latency batch (small
//! objects a reader waits on) submitted behind them waits for one to end. So while the
//! identity has latency work — a latency batch not yet done, or one created within
//! `express_window` — bulk tasks at Globus are capped at `running_slots -
//! express_slots` (never below 1: bulk is never starved), and the slots left stay free
//! for latency batches, which then start at once. Without latency work for a window,
//! bulk takes every slot again.
//!
//! Counted facility-wide, in the state database: every process and host sharing it
//! keeps to one cap, and the claim checks it in its write transaction (`claim.rs`), so
//! two hosts claiming bulk batches at once count one after the other.
//!
//! A flush (at exit, say) sends bulk work past the cap: left waiting for a slot, it
//! would wait in the database for the next process once this one exits.
//!
//! Nagle's rule (`loops.rs`) follows the same split: a bulk batch stays open while bulk
//! has its slots, and a latency batch is not held behind bulk work — only while latency
//! work already fills the slots kept for it, as that is what it would queue behind.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::ManagerConfig;
use super::config::Priority;
use crate::error::Result;
use crate::state::query::{On, query};
use crate::transfer::states::BatchState;

/// The identity's tasks at Globus (submitting or submitted), by priority, and whether it
/// has latency work now or had some within the window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Slots {
    pub latency: usize,
    pub bulk: usize,
    pub latency_recent: bool,
}

impl Slots {
    /// Reads them for `identity`; `now_ms` on the clock batches' `created_at` use.
    pub(super) async fn of(
        on: impl Into<On<'_>>,
        identity: &str,
        window: Duration,
        now_ms: i64,
    ) -> Result<Slots> {
        let mut on = on.into();
        let rows: Vec<(i64, i64)> = query(
            "SELECT priority, COUNT(*) FROM batches WHERE identity = $1 AND state IN ($2, $3) \
             GROUP BY priority",
        )
        .bind(identity)
        .bind(BatchState::Submitting.as_str())
        .bind(BatchState::Submitted.as_str())
        .fetch_all_as(on.reborrow())
        .await?;
        let count = |p: Priority| {
            rows.iter()
                .find(|(priority, _)| *priority == p.code())
                .map_or(0, |(_, n)| *n as usize)
        };
        let latency = count(Priority::Latency);
        // Latency work still to do, or begun within the window. Lane batches (`HTTPS`)
        // are left out: they take no slot unless they fall back, and then they are READY.
        let recent: i64 = query(
            "SELECT COUNT(*) FROM batches WHERE identity = $1 AND priority = $2 \
             AND (state IN ($3, $4, $5, $6) OR created_at >= $7)",
        )
        .bind(identity)
        .bind(Priority::Latency.code())
        .bind(BatchState::Open.as_str())
        .bind(BatchState::Ready.as_str())
        .bind(BatchState::Submitting.as_str())
        .bind(BatchState::Submitted.as_str())
        .bind(now_ms - window.as_millis() as i64)
        .fetch_scalar(on)
        .await?;
        Ok(Slots {
            latency,
            bulk: count(Priority::Bulk),
            latency_recent: latency > 0 || recent > 0,
        })
    }

    /// All tasks at Globus.
    pub(super) fn total(&self) -> usize {
        self.latency + self.bulk
    }
}

/// The manager's settings of the express lane ([`ManagerConfig::running_slots`],
/// [`express_slots`](ManagerConfig::express_slots),
/// [`express_window`](ManagerConfig::express_window)).
#[derive(Clone, Copy, Debug)]
pub(super) struct Express {
    pub running_slots: usize,
    pub express_slots: usize,
    pub window: Duration,
}

impl Express {
    pub(super) fn of(config: &ManagerConfig) -> Self {
        Express {
            running_slots: config.running_slots,
            express_slots: config.express_slots,
            window: config.express_window,
        }
    }

    /// The running slots bulk may take now, if fewer than all: `running_slots -
    /// express_slots` (at least 1) while latency work is about; `None` without a cap.
    pub(super) fn bulk_cap(&self, slots: &Slots) -> Option<usize> {
        let running = self.running_slots;
        (running > 0 && self.express_slots > 0 && slots.latency_recent)
            .then(|| running.saturating_sub(self.express_slots).max(1))
    }

    /// Whether a bulk batch may be submitted now.
    pub(super) fn bulk_may_start(&self, slots: &Slots) -> bool {
        self.bulk_cap(slots).is_none_or(|cap| slots.bulk < cap)
    }

    /// Whether an open batch of `priority` should stay open (Nagle's rule, `loops.rs`):
    /// a task of it could only queue at Globus now.
    pub(super) fn slots_busy(&self, slots: &Slots, priority: Priority) -> bool {
        let running = self.running_slots;
        if running == 0 {
            return false;
        }
        let all_taken = slots.total() >= running;
        match priority {
            // Behind bulk work alone it does not wait: submitted now, it is next in line.
            Priority::Latency => {
                all_taken && (self.express_slots == 0 || slots.latency >= self.express_slots)
            }
            Priority::Bulk => all_taken || !self.bulk_may_start(slots),
        }
    }
}

impl super::Inner {
    /// The express lane as this manager keeps it now: off while a flush runs, which
    /// sends bulk work too (left waiting for a slot, it would wait in the database for
    /// the next process once this one exits).
    pub(super) fn express(&self) -> Express {
        let mut express = Express::of(&self.config);
        if self.flushing.load(Ordering::SeqCst) > 0 {
            express.express_slots = 0;
        }
        express
    }
}

/// A flush in progress (see [`Inner::express`](super::Inner::express)), until dropped.
pub(super) struct Flushing<'a>(&'a AtomicUsize);

impl<'a> Flushing<'a> {
    pub(super) fn begin(inner: &'a super::Inner) -> Self {
        inner.flushing.fetch_add(1, Ordering::SeqCst);
        inner.signals.submit_kick.notify_one();
        Flushing(&inner.flushing)
    }
}

impl Drop for Flushing<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(latency: usize, bulk: usize, latency_recent: bool) -> Slots {
        Slots {
            latency,
            bulk,
            latency_recent,
        }
    }

    #[test]
    fn bulk_keeps_a_slot_free_only_while_latency_work_is_about() {
        let config = Express::of(&ManagerConfig::default());
        assert_eq!((config.running_slots, config.express_slots), (3, 1));
        assert!(config.bulk_may_start(&slots(0, 1, true)));
        assert!(
            !config.bulk_may_start(&slots(0, 2, true)),
            "one slot is kept"
        );
        assert!(
            config.bulk_may_start(&slots(0, 2, false)),
            "no latency work: all three"
        );
        assert!(
            config.bulk_may_start(&slots(0, 5, false)),
            "queueing is Globus's"
        );
        let off = Express {
            express_slots: 0,
            ..config
        };
        assert!(off.bulk_may_start(&slots(0, 2, true)));
    }

    #[test]
    fn bulk_is_never_starved_even_when_every_slot_is_kept() {
        let config = Express {
            running_slots: 1,
            express_slots: 1,
            window: Duration::from_secs(60),
        };
        assert_eq!(config.bulk_cap(&slots(0, 0, true)), Some(1));
        assert!(config.bulk_may_start(&slots(3, 0, true)));
        let greedy = Express {
            running_slots: 3,
            express_slots: usize::MAX,
            ..config
        };
        assert_eq!(greedy.bulk_cap(&slots(0, 0, true)), Some(1));
    }

    #[test]
    fn a_latency_batch_waits_only_behind_latency_work() {
        let config = Express::of(&ManagerConfig::default());
        use Priority::{Bulk, Latency};
        // Three bulk tasks run (the latency work arrived after them): latency goes now,
        // to be first in line; bulk waits.
        assert!(!config.slots_busy(&slots(0, 3, true), Latency));
        assert!(config.slots_busy(&slots(0, 3, true), Bulk));
        // The kept slot runs a latency task and the others bulk: both wait.
        assert!(config.slots_busy(&slots(1, 2, true), Latency));
        assert!(config.slots_busy(&slots(1, 2, true), Bulk));
        // Bulk at its cap, a slot free: latency goes, bulk waits.
        assert!(!config.slots_busy(&slots(0, 2, true), Latency));
        assert!(config.slots_busy(&slots(0, 2, true), Bulk));
        // Nothing running: nobody waits.
        assert!(!config.slots_busy(&slots(0, 0, true), Bulk));
        let unlimited = Express {
            running_slots: 0,
            ..config
        };
        assert!(!unlimited.slots_busy(&slots(9, 9, true), Latency));
    }
}

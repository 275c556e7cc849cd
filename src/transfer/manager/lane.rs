//! The manager's side of the HTTPS lane ([`crate::transfer::HttpsLane`]): items committed
//! in the `HTTPS` state, which no claim or submission ever takes, and what becomes of
//! them.
//!
//! - A 2xx makes the item `SUCCEEDED` ([`TransferManager::https_delivered`]).
//! - A failed request makes it `PENDING` ([`TransferManager::https_failed`]), and so does
//!   the death of the process that was sending it (found at the next manager start on
//!   the database, or by the process itself as it exits): once, by compare-and-set on
//!   the `HTTPS` state, so a late answer never undoes a fallback nor a fallback a
//!   delivery.
//! - A lane batch *settles* once it is closed (no item joins any more) and none of its
//!   items is `HTTPS`: with items `PENDING` it becomes `READY` and goes to Globus as any
//!   batch, under its own label (the one the keys carry, which readers follow only if
//!   it appears) and with only those items; with none, `DONE` without a task. One
//!   conditional `UPDATE`, so it settles once whoever asks.

use super::sql::{bump_generation, now_ms};
use super::{Inner, TransferManager};
use crate::error::Result;
use crate::state::query::{Tx, query};
use crate::transfer::states::{BatchState, ItemState};

/// `HTTPS` → `state` for one item; its batch's id when it changed.
const RESOLVE_ITEM: &str = "UPDATE items SET state = $1, completed_at = $2, description = $3 \
     WHERE id = $4 AND state = $5 RETURNING batch_id";

/// A closed lane batch with no item left in `HTTPS`: `READY` if any fell back, else
/// `DONE`. (Parameters first appear in order: SQLite numbers `$N` names as they appear.)
const SETTLE: &str = "UPDATE batches SET \
     state = CASE WHEN EXISTS (SELECT 1 FROM items WHERE items.batch_id = batches.id AND items.state = $1) THEN $2 ELSE $3 END, \
     completed_at = CASE WHEN EXISTS (SELECT 1 FROM items WHERE items.batch_id = batches.id AND items.state = $1) THEN NULL ELSE $4 END \
     WHERE id = $5 AND state = $6 AND closed_at IS NOT NULL \
     AND NOT EXISTS (SELECT 1 FROM items WHERE items.batch_id = batches.id AND items.state = $6)";

impl TransferManager {
    /// Item `item` of the HTTPS lane arrived (its request answered 2xx): `SUCCEEDED`.
    /// Nothing changes if it already fell back.
    pub(crate) async fn https_delivered(&self, item: i64) -> Result<()> {
        self.inner
            .resolve_lane_item(item, ItemState::Succeeded, None)
            .await
    }

    /// Item `item`'s HTTPS request failed (`reason`): it goes by Transfer, once, in its
    /// batch. Nothing changes if it was already delivered or fell back.
    pub(crate) async fn https_failed(&self, item: i64, reason: &str) -> Result<()> {
        let why = format!("fell back to Transfer: {reason}");
        self.inner
            .resolve_lane_item(item, ItemState::Pending, Some(&why))
            .await
    }
}

impl Inner {
    async fn resolve_lane_item(
        &self,
        item: i64,
        state: ItemState,
        why: Option<&str>,
    ) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        let batch: Option<i64> = query(RESOLVE_ITEM)
            .bind(state.as_str())
            .bind(now_ms())
            .bind(why)
            .bind(item)
            .bind(ItemState::Https.as_str())
            .fetch_scalars(&mut tx)
            .await?
            .into_iter()
            .next();
        if let Some(batch) = batch {
            settle(&mut tx, batch).await?;
            bump_generation(&mut tx).await?;
        }
        tx.commit().await?;
        self.lane_changed();
        Ok(())
    }

    /// Settles the lane batch labelled `label` if it is closed and none of its items is
    /// on its way by HTTPS any more (see the module docs).
    pub(super) async fn settle_lane(&self, label: &str) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        let batch: Option<i64> = query("SELECT id FROM batches WHERE label = $1")
            .bind(label)
            .fetch_scalars(&mut tx)
            .await?
            .into_iter()
            .next();
        if let Some(batch) = batch
            && settle(&mut tx, batch).await?
        {
            bump_generation(&mut tx).await?;
        }
        tx.commit().await?;
        self.lane_changed();
        Ok(())
    }

    /// Moves every item still `HTTPS` in the lane batches of `owner` (this identity)
    /// into Transfer, closes those batches for this process and settles them: for a
    /// sender that died, or that exits now. How many items fell back.
    pub(super) async fn fall_back_lanes_of(&self, owner: &str, why: &str) -> Result<u64> {
        let batches: Vec<i64> =
            query("SELECT id FROM batches WHERE identity = $1 AND owner = $2 AND state = $3")
                .bind(&self.identity)
                .bind(owner)
                .bind(BatchState::Https.as_str())
                .fetch_scalars(&self.db)
                .await?;
        let why = format!("fell back to Transfer: {why}");
        let mut moved = 0;
        for batch in batches {
            let now = now_ms();
            let mut tx = self.db.begin_write().await?;
            moved += query(
                "UPDATE items SET state = $1, description = $2 WHERE batch_id = $3 AND state = $4",
            )
            .bind(ItemState::Pending.as_str())
            .bind(why.as_str())
            .bind(batch)
            .bind(ItemState::Https.as_str())
            .execute(&mut tx)
            .await?;
            query(
                "UPDATE batches SET owner = $1, closed_at = COALESCE(closed_at, $2) \
                 WHERE id = $3 AND state = $4",
            )
            .bind(&self.owner)
            .bind(now)
            .bind(batch)
            .bind(BatchState::Https.as_str())
            .execute(&mut tx)
            .await?;
            settle(&mut tx, batch).await?;
            bump_generation(&mut tx).await?;
            tx.commit().await?;
        }
        {
            // Closed here: none of them takes items any more.
            let mut open = self.open.lock().expect("open batches poisoned");
            if owner == self.owner {
                open.retain(|_, b| !b.https);
            }
        }
        self.lane_changed();
        Ok(moved)
    }

    /// Lane batches of processes that died: their items go by Transfer (at start, as
    /// open batches of the dead are closed).
    pub(super) async fn fall_back_orphaned_lanes(
        &self,
        live: &std::collections::BTreeSet<String>,
    ) -> Result<()> {
        let owners: Vec<String> =
            query("SELECT DISTINCT owner FROM batches WHERE identity = $1 AND state = $2")
                .bind(&self.identity)
                .bind(BatchState::Https.as_str())
                .fetch_scalars(&self.db)
                .await?;
        for owner in owners.iter().filter(|o| !live.contains(*o)) {
            let why = format!("its HTTPS sender ({owner}) died before the request ended");
            self.fall_back_lanes_of(owner, &why).await?;
        }
        Ok(())
    }

    /// Wakes whoever waits on items (and the submitter, for a batch that fell back).
    fn lane_changed(&self) {
        self.signals.changed.notify_waiters();
        self.signals.submit_kick.notify_one();
    }
}

/// Settles lane batch `batch` if it is due (see [`SETTLE`]); whether it did.
async fn settle(tx: &mut Tx, batch: i64) -> Result<bool> {
    let settled = query(SETTLE)
        .bind(ItemState::Pending.as_str())
        .bind(BatchState::Ready.as_str())
        .bind(BatchState::Done.as_str())
        .bind(now_ms())
        .bind(batch)
        .bind(BatchState::Https.as_str())
        .execute(&mut *tx)
        .await?;
    Ok(settled == 1)
}

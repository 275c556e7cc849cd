//! The claim of a batch for submission, in one write transaction: admission for the
//! identity as a whole, and the merging of every waiting batch that can travel with it.
//!
//! Every process (on every host sharing the database) closes batches of its own, so a
//! burst enqueued by many processes at once makes one batch per process. The process
//! that claims one for submission takes the others' too: `READY` batches of the same
//! collections, options and priority, not held, oldest first, while the items stay
//! within `max_items`. Their items move into the claimed batch (keeping the label they
//! were enqueued under, `merged_from`), and each taken batch becomes `MERGED`. A process
//! about to submit a taken batch finds it no longer `READY` and leaves it: the claim and
//! the submission id are one commit, so every item is posted in exactly one task.
//!
//! Admission is checked in the same transaction: the claim is refused while the
//! identity has `max_pending` batches submitting or at Globus, counted across every
//! process and host, and the write lock makes two claims count one after the other.

use crate::error::Result;
use crate::state::StateDb;
use crate::state::query::query;
use crate::transfer::states::BatchState;

/// What a claim came to.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Claim {
    /// The batch is `SUBMITTING` with the submission id, and holds `merged` more
    /// batches' items.
    Claimed { merged: usize },
    /// Another process claimed (or merged) it first.
    Taken,
    /// The identity has its pending-task limit of batches in flight: try later.
    Full,
}

/// The limits a claim keeps to.
pub(super) struct Limits {
    /// Batches of the identity submitting or at Globus, at most.
    pub max_pending: usize,
    /// Items in one batch, at most.
    pub max_items: usize,
}

/// Claims `batch` (`READY`) for submission with `submission_id` on behalf of `owner`,
/// merging waiting batches into it (see the module).
pub(super) async fn claim(
    db: &StateDb,
    batch: i64,
    submission_id: &str,
    owner: &str,
    limits: Limits,
) -> Result<Claim> {
    let mut tx = db.begin_write().await?;
    let pending: i64 = query(
        "SELECT COUNT(*) FROM batches WHERE state IN ($1, $2) \
         AND identity = (SELECT identity FROM batches WHERE id = $3)",
    )
    .bind(BatchState::Submitting.as_str())
    .bind(BatchState::Submitted.as_str())
    .bind(batch)
    .fetch_scalar(&mut tx)
    .await?;
    if pending as usize >= limits.max_pending {
        return Ok(Claim::Full);
    }
    let claimed = query(
        "UPDATE batches SET state = $1, submission_id = $2, owner = $3 WHERE id = $4 AND state = $5",
    )
    .bind(BatchState::Submitting.as_str())
    .bind(submission_id)
    .bind(owner)
    .bind(batch)
    .bind(BatchState::Ready.as_str())
    .execute(&mut tx)
    .await?;
    if claimed == 0 {
        return Ok(Claim::Taken);
    }
    let mut items: i64 = query("SELECT COUNT(*) FROM items WHERE batch_id = $1")
        .bind(batch)
        .fetch_scalar(&mut tx)
        .await?;
    let now = tx.clock_ms().await?;
    let mates: Vec<(i64, i64)> = query(
        "SELECT other.id, (SELECT COUNT(*) FROM items WHERE items.batch_id = other.id) \
         FROM batches other JOIN batches me ON me.id = $1 \
         WHERE other.state = $2 AND other.id <> me.id AND other.identity = me.identity \
         AND other.source = me.source AND other.destination = me.destination \
         AND other.options = me.options AND other.priority = me.priority \
         AND (other.hold_until IS NULL OR other.hold_until <= $3) ORDER BY other.id",
    )
    .bind(batch)
    .bind(BatchState::Ready.as_str())
    .bind(now)
    .fetch_all_as(&mut tx)
    .await?;
    let mut merged = 0;
    for (mate, count) in mates {
        if (items + count) as usize > limits.max_items {
            continue;
        }
        query(
            "UPDATE items SET merged_from = COALESCE(merged_from, batch_id), batch_id = $1 \
             WHERE batch_id = $2",
        )
        .bind(batch)
        .bind(mate)
        .execute(&mut tx)
        .await?;
        query("UPDATE batches SET state = $1, merged_into = $2 WHERE id = $3")
            .bind(BatchState::Merged.as_str())
            .bind(batch)
            .bind(mate)
            .execute(&mut tx)
            .await?;
        items += count;
        merged += 1;
    }
    tx.commit().await?;
    Ok(Claim::Claimed { merged })
}

/// The owners of other processes' `OPEN` batches that `batch` could take once they close
/// (same identity, collections, options and priority), and when `batch` closed: a
/// submitter that waits a moment for them makes one task where a single process would
/// have made one.
pub(super) async fn open_mates(
    db: &StateDb,
    batch: i64,
    owner: &str,
) -> Result<(Vec<String>, Option<i64>)> {
    let rows: Vec<(String, Option<i64>)> = query(
        "SELECT other.owner, me.closed_at FROM batches other JOIN batches me ON me.id = $1 \
         WHERE other.state = $2 AND other.owner <> $3 AND other.identity = me.identity \
         AND other.source = me.source AND other.destination = me.destination \
         AND other.options = me.options AND other.priority = me.priority",
    )
    .bind(batch)
    .bind(BatchState::Open.as_str())
    .bind(owner)
    .fetch_all_as(db)
    .await?;
    let closed_at = rows.first().and_then(|(_, at)| *at);
    Ok((
        rows.into_iter().map(|(owner, _)| owner).collect(),
        closed_at,
    ))
}

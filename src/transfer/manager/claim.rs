//! The claim of a batch for submission, in one write transaction: admission for the
//! identity as a whole, and the merging of every waiting batch that can travel with it.
//!
//! Every process (on every host sharing the database) closes batches of its own, so a
//! burst enqueued by many processes at once makes one batch per process. The process
//! that claims one for submission takes the others' too: `READY` batches of the same
//! collections, options and priority, not held, oldest first, while the items stay
//! within `max_items` and `max_document_bytes`. Their items move into the claimed batch (keeping the label they
//! were enqueued under, `merged_from`), and each taken batch becomes `MERGED`. A process
//! about to submit a taken batch finds it no longer `READY` and leaves it: the claim and
//! the submission id are one commit, so every item is posted in exactly one task.
//!
//! Admission is checked in the same transaction: the claim is refused while the
//! identity has `max_pending` batches submitting or at Globus, or (a bulk batch) while
//! bulk has the slots the express lane leaves it (`express.rs`), counted across every
//! process and host, and the write lock makes two claims count one after the other.

use super::config::Priority;
use super::express::{Express, Slots};
use super::split::{ITEM_BYTES_SQL, item_budget};
use crate::error::Result;
use crate::state::StateDb;
use crate::state::query::{On, Tx, query};
use crate::transfer::BatchOptions;
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
    /// Bulk batches at Globus, at most, while latency work is about (`express.rs`).
    pub express: Express,
    /// Items in one batch, at most.
    pub max_items: usize,
    /// A batch's transfer document, at most (estimated: `split.rs`).
    pub max_document_bytes: usize,
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
    if pending as usize >= limits.max_pending || !express_admits(&mut tx, batch, &limits).await? {
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
    if keeps_label(&mut tx, batch).await? {
        tx.commit().await?;
        return Ok(Claim::Claimed { merged: 0 });
    }
    let merged = merge_mates(&mut tx, batch, limits).await?;
    tx.commit().await?;
    Ok(Claim::Claimed { merged })
}

/// Whether the express lane (`express.rs`) lets `batch` go now: a latency batch always;
/// a bulk one while bulk is below its cap, counted in this transaction.
async fn express_admits(tx: &mut Tx, batch: i64, limits: &Limits) -> Result<bool> {
    let (identity, priority): (String, i64) =
        query("SELECT identity, priority FROM batches WHERE id = $1")
            .bind(batch)
            .fetch_one_as(&mut *tx)
            .await?;
    if priority != Priority::Bulk.code() {
        return Ok(true);
    }
    let now = super::sql::now_ms();
    let slots = Slots::of(&mut *tx, &identity, limits.express.window, now).await?;
    Ok(limits.express.bulk_may_start(&slots))
}

/// Moves into `batch` the items of the waiting batches it may take (same route,
/// options and priority, not held), as many as fit its limits; how many it took.
async fn merge_mates(tx: &mut Tx, batch: i64, limits: Limits) -> Result<usize> {
    let count_and_bytes = format!("COUNT(*), COALESCE(SUM({ITEM_BYTES_SQL}), 0)");
    let (mut items, mut bytes): (i64, i64) = query(&format!(
        "SELECT {count_and_bytes} FROM items WHERE batch_id = $1"
    ))
    .bind(batch)
    .fetch_one_as(&mut *tx)
    .await?;
    let now = tx.clock_ms().await?;
    let mates: Vec<(i64, i64, i64)> = query(&format!(
        "SELECT other.id, (SELECT COUNT(*) FROM items WHERE items.batch_id = other.id), \
         (SELECT COALESCE(SUM({ITEM_BYTES_SQL}), 0) FROM items WHERE items.batch_id = other.id) \
         FROM batches other JOIN batches me ON me.id = $1 \
         WHERE other.state = $2 AND other.id <> me.id AND other.identity = me.identity \
         AND other.source = me.source AND other.destination = me.destination \
         AND other.options = me.options AND other.priority = me.priority \
         AND (other.hold_until IS NULL OR other.hold_until <= $3) ORDER BY other.id"
    ))
    .bind(batch)
    .bind(BatchState::Ready.as_str())
    .bind(now)
    .fetch_all_as(&mut *tx)
    .await?;
    let mut merged = 0;
    let byte_budget = item_budget(limits.max_document_bytes) as i64;
    for (mate, count, mate_bytes) in mates {
        if (items + count) as usize > limits.max_items || bytes + mate_bytes > byte_budget {
            continue;
        }
        query(
            "UPDATE items SET merged_from = COALESCE(merged_from, batch_id), batch_id = $1 \
             WHERE batch_id = $2",
        )
        .bind(batch)
        .bind(mate)
        .execute(&mut *tx)
        .await?;
        query("UPDATE batches SET state = $1, merged_into = $2 WHERE id = $3")
            .bind(BatchState::Merged.as_str())
            .bind(batch)
            .bind(mate)
            .execute(&mut *tx)
            .await?;
        items += count;
        bytes += mate_bytes;
        merged += 1;
    }
    Ok(merged)
}

/// Whether `batch`'s options keep its label ([`BatchOptions::keep_label`]): then it
/// takes no other batch, and waits for none. Options an older build wrote and this one
/// cannot read keep it, to be safe.
async fn keeps_label(on: impl Into<On<'_>>, batch: i64) -> Result<bool> {
    let options: String = query("SELECT options FROM batches WHERE id = $1")
        .bind(batch)
        .fetch_scalar(on)
        .await?;
    Ok(serde_json::from_str::<BatchOptions>(&options).map_or(true, |o| o.keep_label))
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
    if keeps_label(db, batch).await? {
        return Ok((Vec::new(), None));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::manager::sql;

    /// A READY batch of `owner` with `items` items, with `options`; its id.
    async fn ready(db: &StateDb, label: &str, owner: &str, options: &str, items: usize) -> i64 {
        let batch: i64 = query(
            "INSERT INTO batches (label, identity, source, destination, options, priority, \
             state, owner, created_at, closed_at) \
             VALUES ($1, 'me', 's', 'd', $2, 1, 'READY', $3, 0, 0) RETURNING id",
        )
        .bind(label)
        .bind(options)
        .bind(owner)
        .fetch_scalar(db)
        .await
        .unwrap();
        for n in 0..items {
            query(
                "INSERT INTO items (batch_id, source_path, destination_path, state, created_at) \
                 VALUES ($1, $2, '/b', 'PENDING', 0)",
            )
            .bind(batch)
            .bind(&format!("/{label}/{n}"))
            .execute(db)
            .await
            .unwrap();
        }
        batch
    }

    /// Options as the manager writes them; `deadline` makes a different kind of batch.
    fn options(deadline: Option<&str>, keep_label: bool) -> String {
        serde_json::to_string(&BatchOptions {
            deadline: deadline.map(Into::into),
            keep_label,
            ..BatchOptions::default()
        })
        .unwrap()
    }

    /// Limits no test batch reaches but `max_items` (10).
    fn roomy() -> Limits {
        Limits {
            max_pending: 10,
            express: Express::of(&crate::transfer::ManagerConfig::default()),
            max_items: 10,
            max_document_bytes: crate::transfer::DEFAULT_MAX_DOCUMENT_BYTES,
        }
    }

    async fn state_of(db: &StateDb, batch: i64) -> String {
        query("SELECT state FROM batches WHERE id = $1")
            .bind(batch)
            .fetch_scalar(db)
            .await
            .unwrap()
    }

    /// The claimed batch takes the other processes' waiting batches of the same kind (up
    /// to `max_items`), not others; a taken batch's items are still found by its label,
    /// and it cannot be claimed itself any more. On both engines.
    #[tokio::test]
    async fn a_claim_takes_waiting_batches_of_the_same_kind_within_max_items() {
        for engine in crate::state::tests::engines().await {
            let db = &engine.db;
            let plain = options(None, false);
            let mine = ready(db, "psg-mine", "host-a:1:1", &plain, 3).await;
            let theirs = ready(db, "psg-theirs", "host-b:2:2", &plain, 4).await;
            let too_big = ready(db, "psg-big", "host-c:3:3", &plain, 5).await;
            let other = options(Some("2030-01-01 00:00:00"), false);
            let other_kind = ready(db, "psg-other", "host-b:2:2", &other, 1).await;
            let claimed = claim(db, mine, "sid-1", "host-a:1:1", roomy())
                .await
                .unwrap();
            assert_eq!(claimed, Claim::Claimed { merged: 1 });
            assert_eq!(state_of(db, mine).await, "SUBMITTING");
            assert_eq!(state_of(db, theirs).await, "MERGED");
            assert_eq!(state_of(db, too_big).await, "READY", "3 + 4 + 5 > 10 items");
            assert_eq!(state_of(db, other_kind).await, "READY", "other options");
            let posted = sql::batch_to_post(db, mine).await.unwrap();
            assert_eq!(posted.items.len(), 7);
            // Found by the label it was enqueued under, and travelling with the claim.
            let ids = sql::item_ids_of(db, "psg-theirs").await.unwrap();
            assert_eq!(ids.len(), 4);
            let status = sql::item_status(db, ids[0]).await.unwrap().unwrap();
            assert_eq!(status.label, "psg-mine");
            // Listed only by its own label.
            let all = sql::batches(
                db,
                sql::BatchQuery {
                    limit: 100,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            assert!(all.iter().all(|b| b.label != "psg-theirs"));
            assert_eq!(all.iter().find(|b| b.label == "psg-mine").unwrap().items, 7);
            let taken = claim(db, theirs, "sid-2", "host-b:2:2", roomy())
                .await
                .unwrap();
            assert_eq!(taken, Claim::Taken, "a merged batch is never posted itself");
        }
    }

    /// Admission is counted for the identity as a whole, in the claim's transaction.
    #[tokio::test]
    async fn a_claim_over_the_pending_limit_is_refused_and_changes_nothing() {
        for engine in crate::state::tests::engines().await {
            let db = &engine.db;
            let first = ready(db, "psg-1", "host-a:1:1", &options(Some("1"), false), 1).await;
            let second = ready(db, "psg-2", "host-b:2:2", &options(Some("2"), false), 1).await;
            let one = || Limits {
                max_pending: 1,
                express: Express::of(&crate::transfer::ManagerConfig::default()),
                max_items: 10,
                max_document_bytes: crate::transfer::DEFAULT_MAX_DOCUMENT_BYTES,
            };
            let claimed = claim(db, first, "sid-1", "host-a:1:1", one())
                .await
                .unwrap();
            assert_eq!(claimed, Claim::Claimed { merged: 0 });
            let full = claim(db, second, "sid-2", "host-b:2:2", one())
                .await
                .unwrap();
            assert_eq!(full, Claim::Full);
            assert_eq!(state_of(db, second).await, "READY");
        }
    }

    /// The express lane (`express.rs`), facility-wide: with two bulk tasks at Globus
    /// (any process's), a third bulk batch waits while latency work is about, a latency
    /// batch goes; once no latency work was made within the window, bulk takes the slot.
    #[tokio::test]
    async fn a_bulk_claim_leaves_a_slot_for_latency_work_while_it_is_about() {
        for engine in crate::state::tests::engines().await {
            let db = &engine.db;
            let plain = options(None, false);
            for (label, owner) in [("psg-run-1", "host-a:1:1"), ("psg-run-2", "host-b:2:2")] {
                let running = ready(db, label, owner, &plain, 1).await;
                query("UPDATE batches SET state = 'SUBMITTED' WHERE id = $1")
                    .bind(running)
                    .execute(db)
                    .await
                    .unwrap();
            }
            let bulk = ready(db, "psg-bulk", "host-c:3:3", &options(Some("1"), false), 1).await;
            let latency = ready(
                db,
                "psg-latency",
                "host-a:1:1",
                &options(Some("2"), false),
                1,
            )
            .await;
            query("UPDATE batches SET priority = 0, created_at = $2 WHERE id = $1")
                .bind(latency)
                .bind(sql::now_ms())
                .execute(db)
                .await
                .unwrap();
            let refused = claim(db, bulk, "sid-1", "host-c:3:3", roomy())
                .await
                .unwrap();
            assert_eq!(
                refused,
                Claim::Full,
                "the third slot is kept for latency work"
            );
            assert_eq!(state_of(db, bulk).await, "READY");
            let claimed = claim(db, latency, "sid-2", "host-a:1:1", roomy())
                .await
                .unwrap();
            assert_eq!(claimed, Claim::Claimed { merged: 0 });
            // The latency task ends, and was made longer ago than the window.
            query("UPDATE batches SET state = 'DONE', created_at = 0 WHERE id = $1")
                .bind(latency)
                .execute(db)
                .await
                .unwrap();
            let claimed = claim(db, bulk, "sid-3", "host-c:3:3", roomy())
                .await
                .unwrap();
            assert_eq!(
                claimed,
                Claim::Claimed { merged: 0 },
                "no latency work: bulk goes"
            );
        }
    }

    /// Regression (the soak's readers at site B waited until their timeout for objects
    /// whose transfer had failed): a Globus store's keys name their batch's label, and
    /// readers find the task by it; a batch merged into another's task was never found,
    /// so its failures were never seen. A batch that keeps its label takes no other and
    /// is taken by none.
    #[tokio::test]
    async fn a_batch_that_keeps_its_label_is_never_merged() {
        for engine in crate::state::tests::engines().await {
            let db = &engine.db;
            let kept = options(None, true);
            let mine = ready(db, "psg-mine", "host-a:1:1", &kept, 1).await;
            let theirs = ready(db, "psg-theirs", "host-b:2:2", &kept, 1).await;
            let claimed = claim(db, mine, "sid-1", "host-a:1:1", roomy())
                .await
                .unwrap();
            assert_eq!(claimed, Claim::Claimed { merged: 0 });
            assert_eq!(state_of(db, theirs).await, "READY");
            let (mates, _) = open_mates(db, theirs, "host-b:2:2").await.unwrap();
            assert!(mates.is_empty(), "nothing to wait for");
        }
    }
}

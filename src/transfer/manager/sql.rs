//! Every statement the manager runs against the state database, one function per state
//! change.
//!
//! This file (with `claim.rs`, the claim of a batch for submission) is the manager's
//! whole view of storage: the rest of the manager calls these functions with typed
//! values and gets typed rows back, and never sees SQL or a connection. The SQL is in
//! the dialect both engines share ([`crate::state::query`]). Writes that read first run
//! in one write transaction ([`StateDb::begin_write`]), so concurrent processes and
//! hosts queue instead of failing or losing an update. Times are Unix milliseconds.

use std::collections::HashSet;
use std::time::Duration;

use super::resplit_label;
pub(super) use super::rows::*;
use super::status::{BatchStatus, ItemStatus};
use crate::error::Result;
use crate::state::StateDb;
use crate::state::query::{Tx, placeholders, query};
use crate::transfer::states::{BatchState, ItemState};
use crate::transfer::types::Task;

/// Now, as stored.
pub(super) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Records this process (or refreshes its heartbeat), by the database's clock.
pub(super) async fn register_process(db: &StateDb, me: &ProcessRow) -> Result<()> {
    let now = db.clock_ms().await?;
    query("INSERT INTO processes (owner, host, pid, started, heartbeat_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT(owner) DO UPDATE SET heartbeat_at = excluded.heartbeat_at")
        .bind(&me.owner).bind(&me.host).bind(me.pid as i64).bind(&me.started).bind(now)
        .execute(db).await?;
    Ok(())
}

/// Every process that ever used the database.
pub(super) async fn processes(db: &StateDb) -> Result<Vec<ProcessRow>> {
    let rows = query("SELECT owner, host, pid, started, heartbeat_at FROM processes")
        .fetch_all(db)
        .await?;
    rows.into_iter()
        .map(|r| {
            Ok(ProcessRow {
                owner: r.try_get("owner")?,
                host: r.try_get("host")?,
                pid: r.try_get::<i64, _>("pid")? as u32,
                started: r.try_get("started")?,
                heartbeat_at: r.try_get("heartbeat_at")?,
            })
        })
        .collect()
}

/// Renews this process's heartbeat, by the database's clock (the one every host
/// shares).
pub(super) async fn heartbeat(db: &StateDb, owner: &str) -> Result<()> {
    query("UPDATE processes SET heartbeat_at = $1 WHERE owner = $2")
        .bind(db.clock_ms().await?)
        .bind(owner)
        .execute(db)
        .await?;
    Ok(())
}

/// Takes or renews the lease `name` for `owner` for `ttl`, if it is free, ours,
/// expired, or held by a process `is_live` says is dead; true if `owner` holds it now.
/// Expiry is by the database's clock: on PostgreSQL, hosts whose clocks disagree still
/// agree on when a lease ends.
pub(crate) async fn take_lease(
    db: &StateDb,
    name: &str,
    owner: &str,
    ttl: Duration,
    is_live: impl Fn(&str) -> bool,
) -> Result<bool> {
    let mut tx = db.begin_write().await?;
    let now = tx.clock_ms().await?;
    let held: Option<(String, i64)> = query("SELECT owner, expires_at FROM leases WHERE name = $1")
        .bind(name)
        .fetch_optional_as(&mut tx)
        .await?;
    let ours = match &held {
        None => true,
        Some((holder, expires)) => holder == owner || *expires < now || !is_live(holder),
    };
    if ours {
        query("INSERT INTO leases (name, owner, expires_at) VALUES ($1, $2, $3) ON CONFLICT(name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at")
            .bind(name).bind(owner).bind(now + ttl.as_millis() as i64)
            .execute(&mut tx).await?;
    }
    tx.commit().await?;
    Ok(ours)
}

/// The open batches of `identity`, with their owners.
pub(super) async fn open_batches(db: &StateDb, identity: &str) -> Result<Vec<(i64, String)>> {
    query("SELECT id, owner FROM batches WHERE identity = $1 AND state = $2")
        .bind(identity)
        .bind(BatchState::Open.as_str())
        .fetch_all_as(db)
        .await
}

/// Other processes' items in the batch `label`, where this process put `own`.
pub(super) async fn others_items(db: &StateDb, label: &str, own: usize) -> Result<usize> {
    let count: i64 = query(super::share::OTHERS_ITEMS)
        .bind(label)
        .bind(own as i64)
        .fetch_scalar(db)
        .await?;
    Ok(count.max(0) as usize)
}

/// Those of the batches `labels` that are still open or wait to be posted.
pub(super) async fn unposted_of(db: &StateDb, labels: &[String]) -> Result<HashSet<String>> {
    let mut waiting = HashSet::new();
    for chunk in labels.chunks(500) {
        let sql = format!(
            "SELECT label FROM batches WHERE state IN ('OPEN', 'READY') AND label IN ({})",
            placeholders(1, chunk.len())
        );
        let found: Vec<String> = chunk
            .iter()
            .fold(query(&sql), |q, label| q.bind(label.as_str()))
            .fetch_scalars(db)
            .await?;
        waiting.extend(found);
    }
    Ok(waiting)
}

/// Closes an open batch on behalf of `owner` (its own died).
pub(super) async fn adopt_open_batch(db: &StateDb, batch: i64, owner: &str) -> Result<()> {
    query("UPDATE batches SET state = $1, closed_at = $2, owner = $3 WHERE id = $4 AND state = $5")
        .bind(BatchState::Ready.as_str())
        .bind(now_ms())
        .bind(owner)
        .bind(batch)
        .bind(BatchState::Open.as_str())
        .execute(db)
        .await?;
    Ok(())
}

/// Where item `item` stands, with its batch's state.
pub(super) async fn item_status(db: &StateDb, item: i64) -> Result<Option<ItemStatus>> {
    let row = query(
        "SELECT items.id, items.state, items.code, items.description, items.source_path, items.destination_path, \
         batches.label, batches.state AS batch_state, batches.task_id, batches.status, batches.nice_status, batches.bytes_transferred, \
         batches.attention \
         FROM items JOIN batches ON batches.id = items.batch_id WHERE items.id = $1",
    )
    .bind(item)
    .fetch_optional(db).await?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some(ItemStatus {
        item: r.try_get("id")?,
        state: r.try_get::<String, _>("state")?.into(),
        code: r.try_get("code")?,
        description: r.try_get("description")?,
        source_path: r.try_get("source_path")?,
        destination_path: r.try_get("destination_path")?,
        label: r.try_get("label")?,
        batch_state: r.try_get::<String, _>("batch_state")?.into(),
        task_id: r.try_get("task_id")?,
        task_status: r.try_get::<Option<String>, _>("status")?.map(Into::into),
        nice_status: r.try_get("nice_status")?,
        bytes_transferred: r.try_get("bytes_transferred")?,
        attention: r.try_get("attention")?,
    }))
}

/// The ids of every item enqueued in the batch labelled `label`, in enqueue order (also
/// those that travel in another batch since a merge).
pub(super) async fn item_ids_of(db: &StateDb, label: &str) -> Result<Vec<i64>> {
    query("SELECT items.id FROM items JOIN batches ON batches.id = COALESCE(items.merged_from, items.batch_id) WHERE batches.label = $1 ORDER BY items.id")
        .bind(label).fetch_scalars(db).await
}

/// Which batches [`batches`] reads.
#[derive(Default)]
pub(super) struct BatchQuery<'a> {
    /// Only this identity's (else every identity's).
    pub identity: Option<&'a str>,
    /// Only the one labelled so.
    pub label: Option<&'a str>,
    /// Only those without a task yet (`OPEN`, `READY`, `SUBMITTING`).
    pub unsubmitted: bool,
    /// At most this many, newest first.
    pub limit: i64,
}

/// The batches `filter` selects, newest first. A batch whose items joined another
/// (`MERGED`) is listed only when asked for by its label: its items are counted with the
/// batch they travel in.
pub(super) async fn batches(db: &StateDb, filter: BatchQuery<'_>) -> Result<Vec<BatchStatus>> {
    let rows = query(
        "SELECT label, identity, owner, state, source, destination, priority, submission_id, task_id, status, nice_status, bytes_transferred, \
         files, files_transferred, fatal_code, fatal_description, resplit_of, last_error, hold_until, attention, \
         files_skipped, skipped_errors, \
         (SELECT COUNT(*) FROM items WHERE items.batch_id = batches.id) AS items, \
         (SELECT COUNT(*) FROM items WHERE items.batch_id = batches.id AND items.state = 'SUCCEEDED') AS items_succeeded, \
         (SELECT COUNT(*) FROM items WHERE items.batch_id = batches.id AND items.state = 'PENDING') AS items_pending, \
         (SELECT CASE WHEN COUNT(size) = COUNT(*) THEN CAST(SUM(size) AS BIGINT) END FROM items WHERE items.batch_id = batches.id) AS bytes_total \
         FROM batches WHERE (state <> 'MERGED' OR $2 IS NOT NULL) AND ($1 IS NULL OR identity = $1) AND ($2 IS NULL OR label = $2) \
         AND (NOT $3 OR (task_id IS NULL AND state IN ('OPEN', 'READY', 'SUBMITTING'))) ORDER BY id DESC LIMIT $4",
    )
    .bind(filter.identity)
    .bind(filter.label)
    .bind(filter.unsubmitted)
    .bind(filter.limit)
    .fetch_all(db).await?;
    rows.into_iter()
        .map(|r| {
            Ok(BatchStatus {
                label: r.try_get("label")?,
                identity: r.try_get("identity")?,
                owner: r.try_get("owner")?,
                state: r.try_get::<String, _>("state")?.into(),
                source: r.try_get("source")?,
                destination: r.try_get("destination")?,
                priority: super::config::Priority::name_of(r.try_get("priority")?).into(),
                items: r.try_get("items")?,
                submission_id: r.try_get("submission_id")?,
                task_id: r.try_get("task_id")?,
                status: r.try_get::<Option<String>, _>("status")?.map(Into::into),
                nice_status: r.try_get("nice_status")?,
                bytes_transferred: r.try_get("bytes_transferred")?,
                files: r.try_get("files")?,
                files_transferred: r.try_get("files_transferred")?,
                fatal_code: r.try_get("fatal_code")?,
                fatal_description: r.try_get("fatal_description")?,
                resplit_of: r.try_get("resplit_of")?,
                last_error: r.try_get("last_error")?,
                held_until: r
                    .try_get::<Option<i64>, _>("hold_until")?
                    .and_then(chrono::DateTime::from_timestamp_millis),
                attention: r.try_get("attention")?,
                files_skipped: r.try_get("files_skipped")?,
                skipped_errors: r.try_get("skipped_errors")?,
                items_succeeded: r.try_get("items_succeeded")?,
                items_pending: r.try_get("items_pending")?,
                bytes_total: r.try_get("bytes_total")?,
            })
        })
        .collect()
}

/// Cancels the batch labelled `label` if it was never submitted (`OPEN` or `READY`):
/// the batch ends `DONE` and its pending items `CANCELED`. Whether it was.
pub(super) async fn cancel_unsubmitted(db: &StateDb, label: &str) -> Result<bool> {
    const WHY: &str = "canceled before submission";
    let now = now_ms();
    let mut tx = db.begin_write().await?;
    let canceled = query("UPDATE batches SET state = $1, fatal_code = 'CANCELED', fatal_description = $2, completed_at = $3 WHERE label = $4 AND state IN ($5, $6)")
        .bind(BatchState::Done.as_str()).bind(WHY).bind(now).bind(label)
        .bind(BatchState::Open.as_str()).bind(BatchState::Ready.as_str())
        .execute(&mut tx).await? == 1;
    if !canceled {
        return Ok(false);
    }
    query("UPDATE items SET state = $1, code = 'CANCELED', description = $2, completed_at = $3 WHERE state = $4 AND batch_id = (SELECT id FROM batches WHERE label = $5)")
        .bind(ItemState::Canceled.as_str()).bind(WHY).bind(now).bind(ItemState::Pending.as_str())
        .bind(label)
        .execute(&mut tx).await?;
    // Waiters in other processes learn of it through the generation.
    bump_generation(&mut tx).await?;
    tx.commit().await?;
    Ok(true)
}

/// Counts of `owner`'s batches, for `flush`: (open, of the HTTPS lane and unsettled, or being submitted and not held,
/// ready, at Globus or being submitted).
pub(super) async fn flush_counts(
    db: &StateDb,
    identity: &str,
    owner: &str,
) -> Result<(i64, i64, i64)> {
    // A batch Globus holds (409, identical paths or the pending-task limit) is settled
    // for now: it goes when Globus lets it, which no flush can hasten.
    query(
        "SELECT COUNT(CASE WHEN state IN ('OPEN', 'HTTPS') OR (state = 'SUBMITTING' AND (hold_until IS NULL OR hold_until <= $1)) THEN 1 END), \
         COUNT(CASE WHEN state = 'READY' THEN 1 END), \
         COUNT(CASE WHEN state IN ('SUBMITTING', 'SUBMITTED') THEN 1 END) FROM batches WHERE identity = $2 AND owner = $3",
    )
    .bind(now_ms())
    .bind(identity)
    .bind(owner)
    .fetch_one_as(db)
    .await
}

/// How many of `identity`'s closed batches wait to be posted and are not held: while
/// there are any, posting is the bottleneck (the request budget, admission), and an open
/// batch gains by taking more items rather than queueing behind them. Other processes'
/// batches that may still merge (`claim.rs`) do not count: those wait for this process's
/// open batches to close and join them, and holding these open for them would make each
/// wait for the other. Batches that keep their label (a Globus store's) never merge, and
/// count whoever made them.
pub(super) async fn unposted_backlog(db: &StateDb, identity: &str, owner: &str) -> Result<i64> {
    query(
        "SELECT COUNT(*) FROM batches WHERE identity = $1 AND state = $2 \
         AND (hold_until IS NULL OR hold_until <= $3) \
         AND (owner = $4 OR options LIKE '%\"keep_label\":true%')",
    )
    .bind(identity)
    .bind(BatchState::Ready.as_str())
    .bind(now_ms())
    .bind(owner)
    .fetch_scalar(db)
    .await
}

/// How many of `identity`'s batches are pending at Globus (or about to be).
pub(super) async fn pending_at_globus(db: &StateDb, identity: &str) -> Result<i64> {
    query("SELECT COUNT(*) FROM batches WHERE identity = $1 AND state IN ($2, $3)")
        .bind(identity)
        .bind(BatchState::Submitting.as_str())
        .bind(BatchState::Submitted.as_str())
        .fetch_scalar(db)
        .await
}

/// `identity`'s batches caught between their commit and Globus's answer and not held,
/// oldest first: (id, owner, submission id).
pub(super) async fn submitting(
    db: &StateDb,
    identity: &str,
) -> Result<Vec<(i64, String, Option<String>)>> {
    query(
        "SELECT id, owner, submission_id FROM batches WHERE identity = $1 AND state = $2 \
         AND (hold_until IS NULL OR hold_until <= $3) ORDER BY id",
    )
    .bind(identity)
    .bind(BatchState::Submitting.as_str())
    .bind(now_ms())
    .fetch_all_as(db)
    .await
}

/// `identity`'s batches waiting for admission, latency work first: (id, priority, owner).
///
/// A batch with parts not yet at Globus waits for them (`split.rs`): its label is the one
/// readers follow, and once its task is listed, every part's must be too.
pub(super) async fn ready(db: &StateDb, identity: &str) -> Result<Vec<(i64, i64, String)>> {
    query(
        "SELECT id, priority, owner FROM batches b WHERE identity = $1 AND state = $2 \
         AND NOT EXISTS (SELECT 1 FROM batches part WHERE part.identity = b.identity \
         AND part.state IN ($2, $4) AND part.task_id IS NULL AND part.label LIKE b.label || $3) \
         ORDER BY priority, id",
    )
    .bind(identity)
    .bind(BatchState::Ready.as_str())
    .bind(&format!("{}%", super::PART_SUFFIX))
    .bind(BatchState::Submitting.as_str())
    .fetch_all_as(db)
    .await
}

/// A batch with its items, as its transfer request needs them.
pub(super) async fn batch_to_post(db: &StateDb, batch: i64) -> Result<BatchToPost> {
    let row = query("SELECT label, source, destination, options FROM batches WHERE id = $1")
        .bind(batch)
        .fetch_one(db)
        .await?;
    // Only what is still to go: a lane batch that fell back holds delivered items too.
    let items = query("SELECT id, source_path, destination_path, recursive, external_checksum, checksum_algorithm FROM items WHERE batch_id = $1 AND state = $2 ORDER BY id")
        .bind(batch).bind(ItemState::Pending.as_str()).fetch_all(db).await?;
    Ok(BatchToPost {
        label: row.try_get("label")?,
        source: row.try_get("source")?,
        destination: row.try_get("destination")?,
        options: row.try_get("options")?,
        items: items
            .iter()
            .map(|i| {
                Ok(ItemToPost {
                    id: i.try_get("id")?,
                    source_path: i.try_get("source_path")?,
                    destination_path: i.try_get("destination_path")?,
                    recursive: i.try_get("recursive")?,
                    external_checksum: i.try_get("external_checksum")?,
                    checksum_algorithm: i.try_get("checksum_algorithm")?,
                })
            })
            .collect::<Result<_>>()?,
    })
}

/// Records the paths of a batch's items as they will be posted.
pub(super) async fn rewrite_item_paths(
    db: &StateDb,
    batch: i64,
    items: &[super::rows::ItemToPost],
) -> Result<()> {
    let mut tx = db.begin_write().await?;
    for item in items {
        query(
            "UPDATE items SET source_path = $1, destination_path = $2 WHERE id = $3 AND batch_id = $4",
        )
        .bind(&item.source_path)
        .bind(&item.destination_path)
        .bind(item.id)
        .bind(batch)
        .execute(&mut tx).await?;
    }
    tx.commit().await
}

/// The batch is at Globus as task `task_id`.
pub(super) async fn mark_submitted(db: &StateDb, batch: i64, task_id: &str) -> Result<()> {
    query("UPDATE batches SET state = $1, task_id = $2, submitted_at = $3, last_error = NULL WHERE id = $4")
        .bind(BatchState::Submitted.as_str()).bind(task_id).bind(now_ms()).bind(batch)
        .execute(db).await?;
    Ok(())
}

/// Records why the last submission attempt of a batch failed (it will be retried).
/// Holds a batch Globus asked to wait (409): not posted again for a back-off that
/// doubles with each hold, from one second up to `max`, or until a task of the identity
/// ends ([`lift_holds`]). Its submission id stays, so the next post is the same one.
pub(super) async fn hold(db: &StateDb, batch: i64, reason: &str, max: Duration) -> Result<()> {
    let holds: i64 = query("SELECT holds FROM batches WHERE id = $1")
        .bind(batch)
        .fetch_scalar(db)
        .await?;
    let wait = (1000i64 << holds.clamp(0, 16)).min(max.as_millis() as i64);
    query("UPDATE batches SET hold_until = $1, holds = holds + 1, last_error = $2 WHERE id = $3")
        .bind(now_ms() + wait)
        .bind(reason)
        .bind(batch)
        .execute(db)
        .await?;
    Ok(())
}

/// Lifts the holds of `identity`'s batches: a task of it ended, so the conflict or the
/// pending-task limit that held them may be gone.
pub(super) async fn lift_holds(db: &StateDb, identity: &str) -> Result<()> {
    query("UPDATE batches SET hold_until = NULL WHERE identity = $1 AND hold_until IS NOT NULL")
        .bind(identity)
        .execute(db)
        .await?;
    Ok(())
}

pub(super) async fn record_submit_error(db: &StateDb, batch: i64, error: &str) -> Result<()> {
    query("UPDATE batches SET last_error = $1 WHERE id = $2")
        .bind(error)
        .bind(batch)
        .execute(db)
        .await?;
    Ok(())
}

/// `identity`'s batches at Globus, for the poller.
pub(super) async fn in_flight(db: &StateDb, identity: &str) -> Result<Vec<InFlight>> {
    let rows = query("SELECT id, task_id, submitted_at, bytes_transferred, progress, nice_status, nice_status_since, status, resplit_of FROM batches WHERE identity = $1 AND state = $2")
        .bind(identity).bind(BatchState::Submitted.as_str()).fetch_all(db).await?;
    rows.into_iter()
        .map(|r| {
            Ok(InFlight {
                id: r.try_get("id")?,
                task_id: r.try_get("task_id")?,
                submitted_at: r.try_get("submitted_at")?,
                bytes_transferred: r.try_get("bytes_transferred")?,
                progress: r.try_get("progress")?,
                status: r.try_get("status")?,
                nice_status: r.try_get("nice_status")?,
                nice_status_since: r.try_get("nice_status_since")?,
                resplit_of: r.try_get("resplit_of")?,
            })
        })
        .collect()
}

/// Records one poll: each task's counters and since when it is stuck, in one
/// transaction that other processes notice through the generation.
pub(super) async fn record_poll(db: &StateDb, observed: &[Observed<'_>]) -> Result<()> {
    let mut tx = db.begin_write().await?;
    for seen in observed {
        update_counters(&mut tx, seen.batch, seen.task).await?;
        if !seen.task.is_final() {
            query("UPDATE batches SET nice_status_since = $1, attention = $2 WHERE id = $3")
                .bind(seen.fatal_since)
                .bind(&seen.attention)
                .bind(seen.batch)
                .execute(&mut tx)
                .await?;
        }
    }
    bump_generation(&mut tx).await?;
    tx.commit().await
}

/// The items of a batch that are not final yet.
pub(super) async fn pending_items(db: &StateDb, batch: i64) -> Result<Vec<PendingItem>> {
    let rows = query("SELECT id, source_path, destination_path, recursive FROM items WHERE batch_id = $1 AND state = $2 ORDER BY id")
        .bind(batch).bind(ItemState::Pending.as_str()).fetch_all(db).await?;
    rows.into_iter()
        .map(|r| {
            Ok(PendingItem {
                id: r.try_get("id")?,
                source_path: r.try_get("source_path")?,
                destination_path: r.try_get("destination_path")?,
                recursive: r.try_get::<Option<bool>, _>("recursive")?.unwrap_or(false),
            })
        })
        .collect()
}

/// Ends a batch in one transaction: its counters, each pending item's fate, the
/// re-split its [`ItemEnd::Resplit`] items move to, and the batch itself.
pub(super) async fn finish_batch(db: &StateDb, end: &BatchEnd<'_>) -> Result<()> {
    let now = now_ms();
    let mut tx = db.begin_write().await?;
    if let Some(task) = end.task {
        update_counters(&mut tx, end.batch, task).await?;
    }
    let mut resplit_batch = None;
    for (id, item_end) in &end.items {
        match item_end {
            ItemEnd::Succeeded => set_item(&mut tx, *id, None, now).await?,
            ItemEnd::Failed { code, description } => {
                set_item(&mut tx, *id, Some((code, description)), now).await?
            }
            ItemEnd::Resplit | ItemEnd::ResplitWithoutChecksum => {
                if matches!(item_end, ItemEnd::ResplitWithoutChecksum) {
                    query("UPDATE items SET external_checksum = NULL, checksum_algorithm = NULL WHERE id = $1")
                        .bind(*id).execute(&mut tx).await?;
                }
                let new_batch = match resplit_batch {
                    Some(b) => b,
                    None => {
                        let b = insert_resplit(&mut tx, end).await?;
                        *resplit_batch.insert(b)
                    }
                };
                query("UPDATE items SET batch_id = $1 WHERE id = $2 AND state = $3")
                    .bind(new_batch)
                    .bind(*id)
                    .bind(ItemState::Pending.as_str())
                    .execute(&mut tx)
                    .await?;
            }
        }
    }
    let (code, description) = end.fatal.unzip();
    // Whatever is still pending shares the batch's fate.
    query("UPDATE items SET state = $1, code = $2, description = $3, completed_at = $4 WHERE batch_id = $5 AND state = $6")
        .bind(item_state(code).as_str()).bind(code.unwrap_or("FAILED"))
        .bind(description.unwrap_or("the batch ended without news of this item"))
        .bind(now).bind(end.batch).bind(ItemState::Pending.as_str())
        .execute(&mut tx).await?;
    query("UPDATE batches SET state = $1, completed_at = $2, fatal_code = $3, fatal_description = $4 WHERE id = $5")
        .bind(BatchState::Done.as_str()).bind(now).bind(code).bind(description).bind(end.batch)
        .execute(&mut tx).await?;
    bump_generation(&mut tx).await?;
    tx.commit().await
}

/// Creates `end`'s re-split: a READY batch with the same collections and options, and
/// the label readers derive from the old one ([`resplit_label`]).
async fn insert_resplit(tx: &mut Tx, end: &BatchEnd<'_>) -> Result<i64> {
    let row = query(
        "SELECT label, identity, source, destination, options, priority FROM batches WHERE id = $1",
    )
    .bind(end.batch)
    .fetch_one(&mut *tx)
    .await?;
    let now = now_ms();
    let label = resplit_label(&row.try_get::<String, _>("label")?);
    let [identity, source, destination, options] =
        ["identity", "source", "destination", "options"].map(|c| row.try_get::<String, _>(c));
    let (identity, source, destination, options) = (identity?, source?, destination?, options?);
    query(
        "INSERT INTO batches (label, identity, source, destination, options, priority, state, owner, created_at, closed_at, resplit_of) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
    )
    .bind(&label).bind(&identity).bind(&source).bind(&destination).bind(&options)
    .bind(row.try_get::<i64, _>("priority")?).bind(BatchState::Ready.as_str())
    .bind(end.owner).bind(now).bind(now).bind(end.batch)
    .fetch_scalar(&mut *tx).await
}

/// The state an item ends in for a batch's code: `CANCELED` is a cancel, not a failure.
fn item_state(code: Option<&str>) -> ItemState {
    match code {
        Some("CANCELED") => ItemState::Canceled,
        _ => ItemState::Failed,
    }
}

/// The database's generation: it changes whenever a poll or an outcome is recorded.
pub(super) async fn generation(db: &StateDb) -> Result<i64> {
    query("SELECT value FROM generation WHERE id = 1")
        .fetch_scalar(db)
        .await
}

/// Makes a pending item final: `Succeeded`, or with (code, description) `Failed` (or
/// `Canceled` for `CANCELED`).
async fn set_item(tx: &mut Tx, item: i64, failure: Option<(&str, &str)>, now: i64) -> Result<()> {
    let state = match failure {
        None => ItemState::Succeeded,
        Some((code, _)) => item_state(Some(code)),
    };
    let (code, description) = failure.unzip();
    query("UPDATE items SET state = $1, code = $2, description = $3, completed_at = $4 WHERE id = $5 AND state = $6")
        .bind(state.as_str()).bind(code).bind(description).bind(now).bind(item)
        .bind(ItemState::Pending.as_str())
        .execute(&mut *tx).await?;
    Ok(())
}

async fn update_counters(tx: &mut Tx, batch: i64, task: &Task) -> Result<()> {
    query("UPDATE batches SET status = $1, nice_status = $2, bytes_transferred = $3, files = $4, files_transferred = $5, progress = $6, \
                 files_skipped = $7, skipped_errors = $8 WHERE id = $9")
        .bind(task.status.as_str()).bind(&task.nice_status).bind(task.bytes_transferred as i64).bind(task.files as i64)
        .bind(task.files_transferred as i64).bind(super::rows::progress(task))
        .bind(task.files_skipped as i64).bind(task.subtasks_skipped_errors as i64).bind(batch)
        .execute(&mut *tx).await?;
    Ok(())
}

pub(super) async fn bump_generation(tx: &mut Tx) -> Result<()> {
    query("UPDATE generation SET value = value + 1 WHERE id = 1")
        .execute(&mut *tx)
        .await?;
    Ok(())
}

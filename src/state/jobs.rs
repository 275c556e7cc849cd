//! Every statement on the `jobs` table: the batch-scheduler jobs tied to their data, from
//! submission until a watcher has done what their end calls for. The job layer
//! (`staging/job/`) turns rows into releases, stage-outs and cancels; this file is all it
//! knows of storage.
//!
//! Each action a watcher takes on a job outside the database (`scontrol release`,
//! queueing the stage-out) is *claimed* first, by one conditional `UPDATE` that only
//! one process can win: the claim is a time (the database's clock, so that every host
//! agrees) until which no other watcher may take it. The action is then recorded as
//! done. A watcher that dies between the two leaves a claim that lapses after
//! [`CLAIM_MS`] (by default); the next watcher to look takes it over and first checks whether the
//! action happened (a job no longer held was released), so that it is not done twice.

use crate::error::Result;
use crate::state::StateDb;
use crate::state::query::{Row, query};

/// How long a watcher that claimed an action has before another may take it over, by
/// default.
pub(crate) const CLAIM_MS: i64 = 120_000;

/// Which job: its scheduler, cluster (`""` when the scheduler named none) and id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct JobKey {
    pub scheduler: String,
    pub cluster: String,
    pub job_id: String,
}

/// A job to record at its submission (the rest of its row starts empty).
#[derive(Clone, Debug)]
pub(crate) struct NewJob {
    pub key: JobKey,
    pub identity: String,
    /// JSON.
    pub stage_in: String,
    /// JSON.
    pub stage_out: String,
    pub stage_out_always: bool,
    pub held: bool,
    pub on_failure: String,
}

/// A tracked job as stored.
#[derive(Clone, Debug)]
pub(crate) struct JobRow {
    pub key: JobKey,
    /// JSON.
    pub stage_in: String,
    /// JSON.
    pub stage_out: String,
    pub stage_out_always: bool,
    pub held: bool,
    pub on_failure: String,
    pub released_at: Option<i64>,
    pub releases: i64,
    /// JSON.
    pub stage_out_items: Option<String>,
    pub stage_in_cancelled: bool,
    pub ended: Option<String>,
    pub ended_at: Option<i64>,
    pub reason: Option<String>,
    pub created_at: i64,
}

const COLUMNS: &str = "scheduler, cluster, job_id, stage_in, stage_out, stage_out_always, \
    held, on_failure, released_at, releases, stage_out_items, stage_in_cancelled, ended, \
    ended_at, reason, created_at";

/// The `WHERE` of one job: `$1`-`$3`.
const THIS_JOB: &str = "scheduler = $1 AND cluster = $2 AND job_id = $3";

impl JobRow {
    fn read(row: &Row) -> Result<JobRow> {
        Ok(JobRow {
            key: JobKey {
                scheduler: row.try_get("scheduler")?,
                cluster: row.try_get("cluster")?,
                job_id: row.try_get("job_id")?,
            },
            stage_in: row.try_get("stage_in")?,
            stage_out: row.try_get("stage_out")?,
            stage_out_always: row.try_get::<i64, _>("stage_out_always")? != 0,
            held: row.try_get::<i64, _>("held")? != 0,
            on_failure: row.try_get("on_failure")?,
            released_at: row.try_get("released_at")?,
            releases: row.try_get("releases")?,
            stage_out_items: row.try_get("stage_out_items")?,
            stage_in_cancelled: row.try_get::<i64, _>("stage_in_cancelled")? != 0,
            ended: row.try_get("ended")?,
            ended_at: row.try_get("ended_at")?,
            reason: row.try_get("reason")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// Records a newly submitted job (claims and ends empty). A job id the table already
/// holds for this cluster (a cluster whose ids restarted) replaces the old, ended row; a
/// live one is an error.
pub(crate) async fn insert(db: &StateDb, job: &NewJob) -> Result<()> {
    let now = db.clock_ms().await?;
    let mut tx = db.begin_write().await?;
    query(&format!(
        "DELETE FROM jobs WHERE {THIS_JOB} AND ended IS NOT NULL"
    ))
    .bind(&job.key.scheduler)
    .bind(&job.key.cluster)
    .bind(&job.key.job_id)
    .execute(&mut tx)
    .await?;
    query(
        "INSERT INTO jobs (scheduler, cluster, job_id, identity, stage_in, stage_out, \
         stage_out_always, held, on_failure, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&job.key.scheduler)
    .bind(&job.key.cluster)
    .bind(&job.key.job_id)
    .bind(&job.identity)
    .bind(&job.stage_in)
    .bind(&job.stage_out)
    .bind(i64::from(job.stage_out_always))
    .bind(i64::from(job.held))
    .bind(&job.on_failure)
    .bind(now)
    .execute(&mut tx)
    .await?;
    tx.commit().await
}

/// One job, if tracked.
pub(crate) async fn get(db: &StateDb, key: &JobKey) -> Result<Option<JobRow>> {
    let row = query(&format!("SELECT {COLUMNS} FROM jobs WHERE {THIS_JOB}"))
        .bind(&key.scheduler)
        .bind(&key.cluster)
        .bind(&key.job_id)
        .fetch_optional(db)
        .await?;
    row.as_ref().map(JobRow::read).transpose()
}

/// `identity`'s jobs, newest first: only those still tracked (not ended) if `open`.
pub(crate) async fn list(
    db: &StateDb,
    identity: &str,
    open: bool,
    limit: i64,
) -> Result<Vec<JobRow>> {
    let only_open = if open { " AND ended IS NULL" } else { "" };
    query(&format!(
        "SELECT {COLUMNS} FROM jobs WHERE identity = $1{only_open} \
         ORDER BY created_at DESC, job_id DESC LIMIT $2"
    ))
    .bind(identity)
    .bind(limit)
    .fetch_all(db)
    .await?
    .iter()
    .map(JobRow::read)
    .collect()
}

/// Claims the job's release for `claim_ms`: `true` for the one watcher that wins (no
/// release recorded, and no other claim, or a lapsed one).
pub(crate) async fn claim_release(db: &StateDb, key: &JobKey, claim_ms: i64) -> Result<bool> {
    claim(db, key, "release_claim", "released_at IS NULL", claim_ms).await
}

/// Records the release: `ran` when this watcher ran the release command (counted), not
/// when it found the job released already (by a claimer that died before recording).
pub(crate) async fn released(db: &StateDb, key: &JobKey, ran: bool) -> Result<()> {
    let now = db.clock_ms().await?;
    query(&format!(
        "UPDATE jobs SET released_at = COALESCE(released_at, $4), releases = releases + $5, \
         reason = NULL WHERE {THIS_JOB}"
    ))
    .bind(&key.scheduler)
    .bind(&key.cluster)
    .bind(&key.job_id)
    .bind(now)
    .bind(i64::from(ran))
    .execute(db)
    .await?;
    Ok(())
}

/// Claims the job's stage-out for `claim_ms`: `true` for the one watcher that wins
/// (none queued yet, and no other claim, or a lapsed one).
pub(crate) async fn claim_stage_out(db: &StateDb, key: &JobKey, claim_ms: i64) -> Result<bool> {
    claim(
        db,
        key,
        "stage_out_claim",
        "stage_out_items IS NULL",
        claim_ms,
    )
    .await
}

/// Records the stage-out's transfer items (JSON), queued.
pub(crate) async fn stage_out_queued(db: &StateDb, key: &JobKey, items: &str) -> Result<()> {
    set(db, key, "stage_out_items = $4", items).await
}

/// Records that the job's unfinished stage-in was cancelled.
pub(crate) async fn stage_in_cancelled(db: &StateDb, key: &JobKey) -> Result<()> {
    query(&format!(
        "UPDATE jobs SET stage_in_cancelled = 1 WHERE {THIS_JOB}"
    ))
    .bind(&key.scheduler)
    .bind(&key.cluster)
    .bind(&key.job_id)
    .execute(db)
    .await?;
    Ok(())
}

/// Sets why the job waits or what went wrong.
pub(crate) async fn set_reason(db: &StateDb, key: &JobKey, reason: &str) -> Result<()> {
    set(db, key, "reason = $4", reason).await
}

/// Records the job's end (`state`: the scheduler's final state, or `UNKNOWN`), once:
/// `false` if another watcher recorded it first.
pub(crate) async fn end(
    db: &StateDb,
    key: &JobKey,
    state: &str,
    reason: Option<&str>,
) -> Result<bool> {
    let now = db.clock_ms().await?;
    let ended = query(&format!(
        "UPDATE jobs SET ended = $4, ended_at = $5, reason = COALESCE($6, reason) \
         WHERE {THIS_JOB} AND ended IS NULL"
    ))
    .bind(&key.scheduler)
    .bind(&key.cluster)
    .bind(&key.job_id)
    .bind(state)
    .bind(now)
    .bind(reason)
    .execute(db)
    .await?;
    Ok(ended == 1)
}

/// Sets `column` to a claim `claim_ms` ahead where `not_done` holds and no live claim is
/// held, in one statement: `true` if this call took it.
async fn claim(
    db: &StateDb,
    key: &JobKey,
    column: &str,
    not_done: &str,
    claim_ms: i64,
) -> Result<bool> {
    let now = db.clock_ms().await?;
    let taken = query(&format!(
        "UPDATE jobs SET {column} = $4 WHERE {THIS_JOB} AND {not_done} \
         AND ({column} IS NULL OR {column} < $5)"
    ))
    .bind(&key.scheduler)
    .bind(&key.cluster)
    .bind(&key.job_id)
    .bind(now.saturating_add(claim_ms))
    .bind(now)
    .execute(db)
    .await?;
    Ok(taken == 1)
}

/// `UPDATE jobs SET {assignment}` (which may use `$4`, bound to `value`) for one job.
async fn set(db: &StateDb, key: &JobKey, assignment: &str, value: &str) -> Result<()> {
    query(&format!("UPDATE jobs SET {assignment} WHERE {THIS_JOB}"))
        .bind(&key.scheduler)
        .bind(&key.cluster)
        .bind(&key.job_id)
        .bind(value)
        .execute(db)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> NewJob {
        NewJob {
            key: JobKey {
                scheduler: "slurm".into(),
                cluster: String::new(),
                job_id: id.into(),
            },
            identity: "me@test".into(),
            stage_in: "[]".into(),
            stage_out: "{\"items\":[]}".into(),
            stage_out_always: false,
            held: true,
            on_failure: "fail".into(),
        }
    }

    /// Of concurrent claims on one job's release, one wins; a live claim keeps others
    /// off, a lapsed one is taken over, and a recorded release ends claims; the end is
    /// recorded once. On both engines.
    #[tokio::test]
    async fn a_claim_is_won_once_taken_over_only_when_lapsed_and_an_end_recorded_once() {
        for engine in crate::state::tests::engines().await {
            let db = &engine.db;
            let row = job("7");
            insert(db, &row).await.unwrap();
            let key = &row.key;
            let racing =
                futures_util::future::join_all((0..8).map(|_| claim_release(db, key, 60_000)))
                    .await;
            let won = racing.into_iter().filter(|r| *r.as_ref().unwrap()).count();
            assert_eq!(won, 1, "one of eight claims wins");
            assert!(
                !claim_release(db, key, 60_000).await.unwrap(),
                "a live claim holds"
            );
            // A claim that lapsed at once (its watcher died) is taken over.
            assert!(claim_stage_out(db, key, -1).await.unwrap());
            assert!(
                claim_stage_out(db, key, 60_000).await.unwrap(),
                "lapsed: taken over"
            );
            released(db, key, true).await.unwrap();
            stage_out_queued(db, key, "[1]").await.unwrap();
            assert!(
                !claim_release(db, key, -1).await.unwrap(),
                "released: no more claims"
            );
            assert!(
                !claim_stage_out(db, key, -1).await.unwrap(),
                "queued: no more claims"
            );
            assert!(end(db, key, "COMPLETED", None).await.unwrap());
            assert!(!end(db, key, "FAILED", None).await.unwrap(), "ended once");
            let stored = get(db, key).await.unwrap().unwrap();
            assert_eq!(
                (
                    stored.ended.as_deref(),
                    stored.releases,
                    stored.stage_out_items.as_deref()
                ),
                (Some("COMPLETED"), 1, Some("[1]"))
            );
            assert!(list(db, "me@test", true, 10).await.unwrap().is_empty());
            // A cluster whose ids restarted: a new job 7 replaces the ended one.
            insert(db, &job("7")).await.unwrap();
            let again = get(db, key).await.unwrap().unwrap();
            assert_eq!((again.ended, again.releases), (None, 0));
            assert!(
                insert(db, &job("7")).await.is_err(),
                "a live job is not replaced"
            );
        }
    }
}

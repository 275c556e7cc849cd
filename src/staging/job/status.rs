//! A tracked job as `job status` shows it: Slurm's state beside its stage-in and
//! stage-out progress by bytes, and why it waits or what went wrong.

use std::collections::HashSet;

use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::state::jobs::{self, JobRow};
use crate::transfer::{ItemState, ItemStatus, TransferManager};

use super::{job_of, key_from_text, stage_out_of, staged_files};
use crate::scheduler::Slurm;

/// A tracked job and its data.
#[derive(Clone, Debug, Serialize)]
pub struct JobReport {
    /// The job's id (`ID` or `ID;CLUSTER`).
    pub job_id: String,
    /// Slurm's state while it knows the job; after that, the end a watcher recorded;
    /// `UNKNOWN` for a job Slurm forgot before any watcher saw it end.
    pub state: String,
    /// Slurm's reason for a pending job (`JobHeldUser`, `Resources`, …).
    pub slurm_reason: Option<String>,
    /// Held in the queue now.
    pub held: bool,
    /// Submitted with `--hold-until-staged`.
    pub hold_until_staged: bool,
    /// Released by a watcher.
    pub released: bool,
    /// Release commands a watcher ran (at most 1).
    pub releases: i64,
    /// When it was submitted (RFC 3339, the state database's clock).
    pub submitted_at: String,
    /// When a watcher recorded its end.
    pub ended_at: Option<String>,
    /// Still watched: its end is not yet recorded.
    pub tracked: bool,
    /// Why it waits, or what went wrong (ours: a failed stage-in, a vanished job, …).
    pub reason: Option<String>,
    /// Why Slurm could not be asked now, if it could not.
    pub slurm_error: Option<String>,
    /// Its stage-in.
    pub stage_in: Progress,
    /// Its stage-out (nothing queued until the job ends).
    pub stage_out: Progress,
}

/// The progress of one side of a job's data, by files and bytes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Progress {
    /// Files in it.
    pub files: usize,
    /// Files arrived.
    pub arrived: usize,
    /// Files failed for good (or cancelled).
    pub failed: usize,
    /// Bytes moved so far: the sizes of the files arrived, and what their tasks moved of
    /// the rest.
    pub bytes_done: u64,
    /// Bytes in all, when every size is known.
    pub bytes_total: Option<u64>,
    /// Queued with Globus (a stage-out is queued when its job ends).
    pub queued: bool,
    /// The first failure, Globus's words.
    pub failure: Option<String>,
}

/// The report of job `job` (`ID` or `ID;CLUSTER`), or of `manager`'s identity's most
/// recent `limit` jobs, newest first.
pub async fn status(
    manager: &TransferManager,
    slurm: &Slurm,
    job: Option<&str>,
    limit: i64,
) -> Result<Vec<JobReport>> {
    let rows = match job {
        Some(text) => {
            let key = key_from_text(text)?;
            let row = jobs::get(manager.db(), &key).await?.ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "job {text} is not tracked in this state database (submitted by \
                         `ps-globus job submit` with another PS_GLOBUS_HOME or state_url?)"
                    ),
                )
            })?;
            vec![row]
        }
        None => jobs::list(manager.db(), manager.identity(), false, limit).await?,
    };
    // Fresh progress where this process polls for the identity (a failure shows as the
    // last known progress).
    let _ = manager.poll_now().await;
    let mut reports = Vec::with_capacity(rows.len());
    for row in &rows {
        reports.push(report(manager, slurm, row).await?);
    }
    Ok(reports)
}

async fn report(manager: &TransferManager, slurm: &Slurm, row: &JobRow) -> Result<JobReport> {
    let job = job_of(&row.key);
    let (shown, slurm_error) = if row.ended.is_some() {
        (None, None)
    } else {
        match slurm.show(&job).await {
            Ok(shown) => (shown, None),
            Err(e) => (None, Some(e.to_string())),
        }
    };
    let state = match (&shown, &row.ended) {
        (Some(info), _) => info.state.as_str().to_owned(),
        (None, Some(end)) => end.clone(),
        // Forgotten by Slurm, no watcher has looked yet.
        (None, None) if slurm_error.is_none() => "ENDED (not yet seen by `job watch`)".into(),
        (None, None) => "?".into(),
    };
    let files = staged_files(row)?;
    let sizes: Vec<Option<u64>> = files.iter().map(|f| f.size).collect();
    let mut stage_in = progress(manager, files.iter().map(|f| f.item), &sizes).await?;
    stage_in.queued = true;
    let stage_out = match &row.stage_out_items {
        Some(stored) => {
            let items: Vec<i64> = serde_json::from_str(stored).map_err(|e| {
                Error::with_source(ErrorKind::Storage, "a job's stored stage-out items", e)
            })?;
            let mut done = progress(manager, items.iter().copied(), &[]).await?;
            done.queued = true;
            done
        }
        None => Progress {
            files: stage_out_of(row)?.len(),
            ..Progress::default()
        },
    };
    Ok(JobReport {
        job_id: job.text(),
        state,
        slurm_reason: shown
            .as_ref()
            .filter(|info| info.reason != "None")
            .map(|info| info.reason.clone()),
        held: shown.as_ref().is_some_and(|info| info.held),
        hold_until_staged: row.held,
        released: row.released_at.is_some(),
        releases: row.releases,
        submitted_at: rfc3339(row.created_at),
        ended_at: row.ended_at.map(rfc3339),
        tracked: row.ended.is_none(),
        reason: row.reason.clone(),
        slurm_error,
        stage_in,
        stage_out,
    })
}

/// The progress of `items`, whose sizes are `sizes` where known (by position).
async fn progress(
    manager: &TransferManager,
    items: impl Iterator<Item = i64>,
    sizes: &[Option<u64>],
) -> Result<Progress> {
    let mut done = Progress::default();
    let mut total = Some(0u64);
    let mut tasks_counted = HashSet::new();
    for (n, item) in items.enumerate() {
        let status: ItemStatus = manager.item(item).await?;
        let size = sizes.get(n).copied().flatten();
        done.files += 1;
        total = total.zip(size).map(|(t, s)| t.saturating_add(s));
        match status.state {
            ItemState::Succeeded => {
                done.arrived += 1;
                done.bytes_done = done.bytes_done.saturating_add(size.unwrap_or(0));
            }
            ItemState::Pending => {
                // A task's bytes, once however many of its files are here.
                if let Some(task) = &status.task_id
                    && tasks_counted.insert(task.clone())
                {
                    let moved = u64::try_from(status.bytes_transferred).unwrap_or(0);
                    done.bytes_done = done.bytes_done.saturating_add(moved);
                }
            }
            _ => {
                done.failed += 1;
                if done.failure.is_none() {
                    done.failure = status.error().map(|e| e.to_string()).or(Some(format!(
                        "{} ended {}",
                        status.destination_path, status.state
                    )));
                }
            }
        }
    }
    done.bytes_total = total.filter(|_| done.files > 0);
    Ok(done)
}

/// Unix milliseconds as RFC 3339 (UTC).
fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(|| ms.to_string(), |t| t.to_rfc3339())
}

//! The long-running side of tracked jobs: one pass over an identity's jobs that releases
//! a held job once its stage-in arrived and verified, and, when a job ends, cancels the
//! unfinished stage-in of a cancelled one and stages out after `COMPLETED` (or any end,
//! if asked). Every action is claimed in the state database first (`state/jobs.rs`), so
//! two watchers, or a watcher restarted after a crash, do each one once.
//!
//! A job's end is `sacct`'s state where the cluster keeps accounting, else `scontrol
//! show job`'s while Slurm still remembers the job (`MinJobAge`, 300 s by default). A job
//! Slurm forgot before any watcher saw its end is `UNKNOWN`: nothing is staged out.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::scheduler::{JobInfo, JobState, OnFailure, Slurm, StagedFile};
use crate::state::jobs::{self, JobRow};
use crate::transfer::{ItemState, TransferManager};

use super::{enqueue, job_of, local_path, stage_out_of, staged_files, verified};
use crate::config::Config;
use crate::staging::item_spec;

/// How far the clocks of a facility's hosts may disagree with the state database's.
const CLOCK_SKEW_MS: i64 = 600_000;

/// How a watcher goes about it.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// How long a watcher's claim on an action (a release, a stage-out) keeps other
    /// watchers off it: one that dies holding a claim delays the action this long.
    pub claim: Duration,
    /// The named point at which a test build aborts the process (`PS_GLOBUS_FAILPOINT`).
    #[doc(hidden)]
    pub failpoint: Option<String>,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            claim: Duration::from_millis(jobs::CLAIM_MS as u64),
            failpoint: None,
        }
    }
}

/// What one pass did, job by job.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WatchReport {
    /// Jobs looked at.
    pub jobs: usize,
    /// Jobs released (this pass ran `scontrol release`).
    pub released: Vec<String>,
    /// Jobs whose stage-out this pass queued.
    pub staged_out: Vec<String>,
    /// Jobs whose unfinished stage-in this pass cancelled.
    pub cancelled_stage_in: Vec<String>,
    /// Jobs cancelled because their stage-in failed (`--on-stage-in-failure cancel`).
    pub cancelled: Vec<String>,
    /// Jobs whose end this pass recorded, with the end.
    pub ended: Vec<(String, String)>,
    /// What could not be done now, job by job (tried again on the next pass).
    pub errors: Vec<(String, String)>,
}

/// One pass over the open jobs of `manager`'s identity. An error on one job is reported
/// and the pass goes on to the next; the database and Slurm failing altogether are
/// errors.
pub async fn watch(
    manager: &TransferManager,
    slurm: &Slurm,
    config: &Config,
    current: Option<&str>,
    options: &WatchOptions,
) -> Result<WatchReport> {
    let db = manager.db();
    let open = jobs::list(db, manager.identity(), true, i64::MAX).await?;
    let mut report = WatchReport {
        jobs: open.len(),
        ..WatchReport::default()
    };
    if open.is_empty() {
        return Ok(report);
    }
    // What the stage-ins' tasks did since the last look (where this process polls for
    // the identity; else whoever does has written it). Without Globus, the pass goes
    // on: ends are still recorded.
    if let Err(e) = manager.poll_now().await {
        report
            .errors
            .push(("-".into(), format!("asking Globus: {e}")));
    }
    let watcher = Watcher {
        manager,
        slurm,
        config,
        current,
        options,
        shared: stage_in_items(&open),
    };
    for row in &open {
        if let Err(e) = watcher.step(row, &mut report).await {
            if e.kind() == ErrorKind::Unreachable {
                return Err(e);
            }
            report.errors.push((row.key.job_id.clone(), e.to_string()));
        }
    }
    Ok(report)
}

/// Every open job's stage-in items, by job: an item two jobs wait for is cancelled
/// only when neither needs it.
fn stage_in_items(open: &[JobRow]) -> Vec<(String, HashSet<i64>)> {
    open.iter()
        .map(|row| {
            let items = staged_files(row)
                .map(|f| f.iter().map(|f| f.item).collect())
                .unwrap_or_default();
            (row.key.job_id.clone(), items)
        })
        .collect()
}

struct Watcher<'a> {
    manager: &'a TransferManager,
    slurm: &'a Slurm,
    config: &'a Config,
    current: Option<&'a str>,
    options: &'a WatchOptions,
    shared: Vec<(String, HashSet<i64>)>,
}

/// Where a job's stage-in stands.
enum Arrival {
    /// Every file arrived and verified.
    Arrived,
    /// Still on its way: how many of how many arrived.
    Waiting(usize, usize),
    /// Failed for good (or did not verify): why.
    Failed(Error),
}

impl Watcher<'_> {
    async fn step(&self, row: &JobRow, report: &mut WatchReport) -> Result<()> {
        let job = job_of(&row.key);
        let shown = self.slurm.show(&job).await?;
        match &shown {
            Some(info) if !info.state.is_final() => {
                if row.held && row.released_at.is_none() {
                    self.held(row, info, report).await?;
                }
                Ok(())
            }
            _ => self.ended(row, shown.as_ref(), report).await,
        }
    }

    /// A job submitted held, not yet released.
    async fn held(&self, row: &JobRow, info: &JobInfo, report: &mut WatchReport) -> Result<()> {
        let db = self.manager.db();
        if !info.held {
            // Released already: by a watcher that died before recording it, or by hand.
            return jobs::released(db, &row.key, false).await;
        }
        let files = staged_files(row)?;
        let run_anyway = match self.arrival(&files).await? {
            Arrival::Arrived => false,
            Arrival::Waiting(arrived, all) => {
                let why = format!("held until its stage-in arrives: {arrived} of {all} file(s)");
                return self.say(row, &why).await;
            }
            Arrival::Failed(e) => match OnFailure::parse(&row.on_failure)? {
                OnFailure::Run => true,
                OnFailure::Cancel => {
                    let why = format!("cancelled: its stage-in failed: {e}");
                    self.say(row, &why).await?;
                    self.slurm.cancel(&job_of(&row.key)).await?;
                    report.cancelled.push(row.key.job_id.clone());
                    return Ok(());
                }
                OnFailure::Fail | OnFailure::Hold => {
                    let why = format!(
                        "stays held: its stage-in failed: {e} (`scontrol release {}` runs it \
                         anyway; its first step fails unless it was submitted with \
                         --on-stage-in-failure run)",
                        row.key.job_id
                    );
                    return self.say(row, &why).await;
                }
            },
        };
        if !jobs::claim_release(db, &row.key, self.claim_ms()).await? {
            return Ok(()); // another watcher is releasing it
        }
        self.fail_point("job-release-claimed");
        self.slurm.release(&job_of(&row.key)).await?;
        self.fail_point("job-released");
        jobs::released(db, &row.key, true).await?;
        if run_anyway {
            let why = "released though its stage-in failed (--on-stage-in-failure run)";
            self.say(row, why).await?;
        }
        report.released.push(row.key.job_id.clone());
        Ok(())
    }

    /// Where the stage-in of `files` stands.
    async fn arrival(&self, files: &[StagedFile]) -> Result<Arrival> {
        let mut arrived = 0;
        for file in files {
            let status = self.manager.item(file.item).await?;
            match status.state {
                ItemState::Succeeded => arrived += 1,
                ItemState::Pending => {}
                _ => {
                    let e = status.error().unwrap_or_else(|| {
                        Error::new(
                            ErrorKind::TransferFailed,
                            format!(
                                "the stage-in of {} ended {}",
                                file.path.display(),
                                status.state
                            ),
                        )
                    });
                    return Ok(Arrival::Failed(e));
                }
            }
        }
        if arrived < files.len() {
            return Ok(Arrival::Waiting(arrived, files.len()));
        }
        let files = files.to_vec();
        let verified =
            tokio::task::spawn_blocking(move || files.iter().try_for_each(StagedFile::verify))
                .await
                .map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))?;
        Ok(match verified {
            Ok(()) => Arrival::Arrived,
            Err(e) => Arrival::Failed(e),
        })
    }

    /// A job Slurm says ended (`shown` final), or no longer knows (`None`).
    async fn ended(
        &self,
        row: &JobRow,
        shown: Option<&JobInfo>,
        report: &mut WatchReport,
    ) -> Result<()> {
        let job = job_of(&row.key);
        let accounted = self.slurm.accounted(&job).await?.filter(JobState::is_final);
        let end = accounted.or_else(|| shown.map(|info| info.state.clone()));
        let db = self.manager.db();
        let Some(end) = end else {
            let why = "Slurm no longer knows the job and keeps no accounting: it ended more \
                       than MinJobAge ago while no watcher looked, so how is unknown; nothing \
                       was staged out";
            if jobs::end(db, &row.key, "UNKNOWN", Some(why)).await? {
                report
                    .ended
                    .push((row.key.job_id.clone(), "UNKNOWN".into()));
            }
            return Ok(());
        };
        if end == JobState::Cancelled && !row.stage_in_cancelled {
            self.cancel_stage_in(row, report).await?;
        }
        let stage_out = stage_out_of(row)?;
        let wanted = end == JobState::Completed || row.stage_out_always;
        if wanted && !stage_out.is_empty() && row.stage_out_items.is_none() {
            if !jobs::claim_stage_out(db, &row.key, self.claim_ms()).await? {
                return Ok(()); // another watcher is staging it out: it records the end
            }
            self.fail_point("job-stage-out-claimed");
            self.stage_out(row, &stage_out).await?;
            report.staged_out.push(row.key.job_id.clone());
        }
        if jobs::end(db, &row.key, end.as_str(), None).await? {
            report
                .ended
                .push((row.key.job_id.clone(), end.as_str().to_owned()));
        }
        Ok(())
    }

    /// Queues the job's stage-out (the sources it left; one it did not write is named
    /// in the job's reason), records its items, and submits it to Globus.
    async fn stage_out(&self, row: &JobRow, planned: &[super::PlannedItem]) -> Result<()> {
        let mut items = Vec::with_capacity(planned.len());
        let mut missing = Vec::new();
        for item in planned {
            let mut item = item.clone();
            match local_path(&item.source, self.config, self.current) {
                Some(path) => match std::fs::symlink_metadata(&path) {
                    Ok(meta) => {
                        item.size = meta.is_file().then_some(meta.len());
                        items.push(item);
                    }
                    Err(_) => missing.push(path.display().to_string()),
                },
                // Not a path here (a watcher at another site): Globus finds it or not.
                None => items.push(item),
            }
        }
        let options = verified();
        // A watcher that died between queueing the stage-out and recording it left its
        // copies in the database, perhaps done by now: found, not queued again. (Queued
        // after the job's submission, give or take the hosts' clocks.)
        let specs: Vec<_> = items.iter().map(|i| item_spec(i, &options)).collect();
        let since = row.created_at.saturating_sub(CLOCK_SKEW_MS);
        let earlier = self.manager.copies_since(&specs, since).await?;
        let fresh: Vec<_> = items
            .iter()
            .zip(&earlier)
            .filter(|(_, e)| e.is_none())
            .map(|(i, _)| i.clone())
            .collect();
        let mut queued = enqueue(self.manager, &fresh, &options).await?.into_iter();
        self.fail_point("job-stage-out-queued");
        let ids: Vec<i64> = earlier
            .into_iter()
            .map(|e| e.or_else(|| queued.next()).map(|h| h.item))
            .collect::<Option<_>>()
            .ok_or_else(|| Error::new(ErrorKind::Internal, "fewer items queued than asked"))?;
        let stored = serde_json::to_string(&ids).map_err(|e| Error::encode("json", e))?;
        jobs::stage_out_queued(self.manager.db(), &row.key, &stored).await?;
        if !missing.is_empty() {
            let why = format!("stage-out: the job left no {}", missing.join(", "));
            self.say(row, &why).await?;
        }
        self.manager.flush().await
    }

    /// Cancels the unfinished stage-in of a cancelled job: each batch of it that holds
    /// nothing another open job waits for (a batch shared with other work is left to
    /// finish, and the job's reason says so).
    async fn cancel_stage_in(&self, row: &JobRow, report: &mut WatchReport) -> Result<()> {
        let files = staged_files(row)?;
        let others: HashSet<i64> = self
            .shared
            .iter()
            .filter(|(job, _)| *job != row.key.job_id)
            .flat_map(|(_, items)| items.iter().copied())
            .collect();
        let mine: HashSet<i64> = files.iter().map(|f| f.item).collect();
        let mut labels = BTreeSet::new();
        for file in &files {
            let status = self.manager.item(file.item).await?;
            if !status.is_final() {
                labels.insert(status.label);
            }
        }
        let mut left = Vec::new();
        for label in labels {
            let batch = self.manager.items(&label).await?;
            let shared = batch
                .iter()
                .any(|i| !i.is_final() && (!mine.contains(&i.item) || others.contains(&i.item)));
            if shared {
                left.push(label);
                continue;
            }
            self.manager.cancel_label(&label).await?;
        }
        jobs::stage_in_cancelled(self.manager.db(), &row.key).await?;
        if !left.is_empty() {
            let why = format!(
                "cancelled; its stage-in batch(es) {} also carry other work and go on",
                left.join(", ")
            );
            self.say(row, &why).await?;
        }
        report.cancelled_stage_in.push(row.key.job_id.clone());
        Ok(())
    }

    /// Sets the job's reason to `why`, unless it already says so: a job waiting for its
    /// stage-in is looked at every pass, and its row is not rewritten each time.
    async fn say(&self, row: &JobRow, why: &str) -> Result<()> {
        if row.reason.as_deref() == Some(why) {
            return Ok(());
        }
        jobs::set_reason(self.manager.db(), &row.key, why).await
    }

    fn claim_ms(&self) -> i64 {
        i64::try_from(self.options.claim.as_millis()).unwrap_or(i64::MAX)
    }

    /// Aborts the process at the named point when this build and the options ask for it,
    /// to test that a watcher killed there does nothing twice.
    fn fail_point(&self, name: &str) {
        if cfg!(feature = "failpoints") && self.options.failpoint.as_deref() == Some(name) {
            eprintln!("ps-globus: failpoint {name} reached, aborting the process");
            std::process::abort();
        }
    }
}

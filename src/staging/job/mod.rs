//! Batch-scheduler jobs tied to their data, as library calls (issue 38): [`submit`] a
//! Slurm job whose stage-in starts now, while it queues; [`watch`] the tracked jobs
//! (release a held job once its stage-in arrived, stage out after the end, cancel the
//! stage-in of a cancelled job); [`status`] of a job beside its data's progress.
//!
//! Slurm's commands, the wrapper and the job's first step are re-exported here from the
//! scheduler's side ([`slurm`], [`wrap`], [`stage`]); what is
//! tracked is in the state database (`state/jobs.rs`), so that any watcher of the same
//! identity on the same database (a facility's PostgreSQL) carries on where another
//! stopped, and each action happens once.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::state::jobs::{self, JobKey, JobRow, NewJob};
use crate::transfer::{BatchOptions, TransferManager};

use super::{BatchLine, Direction, PlannedItem, enqueue, local_path, plan_with};

mod estimate;
mod status;
mod watch;

pub use crate::scheduler::{
    JobId, JobInfo, JobState, OnFailure, Slurm, StagedFile, SubmitLine, expected_of, shell_quoted,
    wait_stage_in, wrapper_script,
};
pub use status::{JobReport, Progress, status};
pub use watch::{WatchOptions, WatchReport, watch};

/// Slurm's side, by module, as before this module grew the tracking.
pub use crate::scheduler::{slurm, stage, wrap};

/// The scheduler a tracked job belongs to (the only one so far).
const SLURM: &str = "slurm";

/// What to submit: the batch script, its stage-in and stage-out, and how to go about it.
#[derive(Clone, Debug)]
pub struct JobRequest {
    /// The batch script.
    pub script: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Options for `sbatch` (see `crate::scheduler::SubmitLine` for those refused).
    pub sbatch: Vec<OsString>,
    /// `SRC DST` pairs copied here before the script runs (DST a path at this site).
    pub stage_in: Vec<BatchLine>,
    /// Named references (`ps-globus ref`) whose objects the job reads: its first step
    /// waits until each is at this site, verified against its reference, and the script
    /// finds its local path in `PS_GLOBUS_REF_<NAME>` ([`ref_variable`]).
    pub stage_in_refs: Vec<String>,
    /// `SRC DST` pairs copied from here after the job ends (SRC a path at this site).
    pub stage_out: Vec<BatchLine>,
    /// Stage out whatever the job's end, not only after `COMPLETED`.
    pub stage_out_always: bool,
    /// Submit the job held, and have a watcher release it once its stage-in arrived
    /// (the job's queue age then counts from the release, unless the site's
    /// `PriorityFlags` has `ACCRUE_ALWAYS`).
    pub hold_until_staged: bool,
    /// What the job does when its stage-in fails for good.
    pub on_failure: OnFailure,
    /// How long the job's first step waits for its stage-in.
    pub stage_in_timeout: Duration,
    /// The `ps-globus` program the first step runs, at a path the job's nodes see.
    pub program: PathBuf,
}

impl JobRequest {
    /// Submits `script` (no stage-in yet), its first step run by `program`: unheld,
    /// failing its first step when the stage-in fails, waiting up to an hour.
    pub fn new(script: impl Into<PathBuf>, program: impl Into<PathBuf>) -> JobRequest {
        JobRequest {
            script: script.into(),
            args: Vec::new(),
            sbatch: Vec::new(),
            stage_in: Vec::new(),
            stage_in_refs: Vec::new(),
            stage_out: Vec::new(),
            stage_out_always: false,
            hold_until_staged: false,
            on_failure: OnFailure::default(),
            stage_in_timeout: Duration::from_secs(3600),
            program: program.into(),
        }
    }
}

/// A submitted job.
#[derive(Clone, Debug, Serialize)]
pub struct SubmittedJob {
    /// Its id (and cluster, where sbatch named one).
    pub job_id: String,
    /// The files its first step waits for.
    pub stage_in: Vec<StagedFile>,
    /// The batches (labels) its stage-in went into.
    pub labels: Vec<String>,
    /// Submitted held, for a watcher to release.
    pub held: bool,
    /// Said at submission: the stage-in is likely to arrive after the job starts, or
    /// the job is held with nobody yet to release it.
    pub warnings: Vec<String>,
}

/// A job's stored stage-out: the copies to make when it ends.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct StageOut {
    items: Vec<PlannedItem>,
}

/// Submits `request` to `slurm`: [`prepare`], then [`PreparedJob::submit`].
///
/// `config` and `current` (the current site's name) place the local paths. An sbatch that
/// fails after the stage-in started says so (the stage-in goes on).
pub async fn submit(
    manager: &TransferManager,
    slurm: &Slurm,
    config: &Config,
    current: &Result<String>,
    request: &JobRequest,
) -> Result<SubmittedJob> {
    prepare(manager, config, current, request)
        .await?
        .submit(manager, slurm)
        .await
}

/// A job checked and planned, nothing started: [`PreparedJob::submit`] starts it.
#[derive(Debug)]
pub struct PreparedJob {
    request: JobRequest,
    script: Vec<u8>,
    stage_in: Vec<PlannedItem>,
    files: Vec<StagedFile>,
    stored_out: String,
}

/// Checks everything a submission needs and reads what it will verify, starting nothing:
/// the script (as sbatch would), the references, both plans; the size and sha256 of
/// each stage-in source here, and the sizes of the others (asked of Globus). A caller
/// may drop the result (a Ctrl-C while a large source is hashed) and nothing was done.
pub async fn prepare(
    manager: &TransferManager,
    config: &Config,
    current: &Result<String>,
    request: &JobRequest,
) -> Result<PreparedJob> {
    let script = std::fs::read(&request.script).map_err(|e| {
        Error::with_source(
            ErrorKind::InvalidInput,
            format!("cannot read the batch script {}", request.script.display()),
            e,
        )
    })?;
    // A script sbatch would refuse is refused now, before anything is staged.
    wrapper_script(&script, &[])?;
    check_refs(manager, &request.stage_in_refs).await?;
    let stage_in = plan_with(&request.stage_in, Direction::In, config, current, true)?;
    let stage_out = StageOut {
        items: plan_with(&request.stage_out, Direction::Out, config, current, false)?,
    };
    let here = current.as_deref().ok();
    let mut files = Vec::with_capacity(stage_in.len());
    for item in &stage_in {
        let path = local_path(&item.destination_location(), config, here).ok_or_else(|| {
            Error::invalid_config(
                "stage-in",
                format!("{}: not a path at this site", item.destination.path),
            )
        })?;
        // What the file must be when it arrives, where its source is here to read now.
        let (size, sha256) = match local_path(&item.source, config, here) {
            Some(source) if source.is_file() => {
                let (size, sha) = expected_of(&source)?;
                (Some(size), Some(sha))
            }
            _ => (None, None),
        };
        files.push(StagedFile {
            item: 0,
            path,
            size,
            sha256,
        });
    }
    // Sizes of remote sources, from Globus: checked on arrival, and the estimate's.
    estimate::remote_sizes(manager, &stage_in, &mut files).await;
    let stored_out = serde_json::to_string(&stage_out).map_err(|e| Error::encode("json", e))?;
    Ok(PreparedJob {
        request: request.clone(),
        script,
        stage_in,
        files,
        stored_out,
    })
}

impl PreparedJob {
    /// Starts the job: the stage-in enqueued through `manager` (exactly once) and
    /// submitted to Globus; the script wrapped so that its first step waits for the
    /// stage-in, verified; sbatch (held if asked); the job recorded for the watcher. A
    /// held job that cannot be recorded is cancelled (nobody would release it).
    pub async fn submit(self, manager: &TransferManager, slurm: &Slurm) -> Result<SubmittedJob> {
        let PreparedJob {
            request,
            script,
            stage_in,
            mut files,
            stored_out,
        } = self;
        let handles = enqueue(manager, &stage_in, &verified()).await?;
        manager.flush().await?;
        for (file, handle) in files.iter_mut().zip(&handles) {
            file.item = handle.item;
        }
        let stored_in = serde_json::to_string(&files).map_err(|e| Error::encode("json", e))?;
        let mut first_step: Vec<OsString> = vec![
            request.program.clone().into(),
            "job".into(),
            "wait-stage-in".into(),
            "--timeout".into(),
            request.stage_in_timeout.as_secs().to_string().into(),
            "--on-failure".into(),
            request.on_failure.as_str().into(),
        ];
        for name in &request.stage_in_refs {
            first_step.extend(["--ref".into(), name.into()]);
        }
        if !request.stage_in_refs.is_empty() {
            // The descriptor the wrapper reads the references' `export` lines from.
            first_step.extend(["--exports-fd".into(), "3".into()]);
        }
        first_step.push("--".into());
        first_step.extend(files.iter().map(StagedFile::to_word));
        let wrapper = wrapper_script(&script, &first_step)?;
        let wrapped = tempfile::Builder::new()
            .prefix("ps-globus-job.")
            .suffix(".sh")
            .tempfile()
            .map_err(|e| Error::io("create", std::env::temp_dir(), e))?;
        std::fs::write(wrapped.path(), wrapper)
            .map_err(|e| Error::io("write", wrapped.path(), e))?;
        let held = request.hold_until_staged;
        let job = slurm
            .submit(&request.sbatch, wrapped.path(), &request.args, held)
            .await
            .map_err(|e| {
                if files.is_empty() {
                    return e;
                }
                let kind = e.kind();
                Error::with_source(
                    kind,
                    "sbatch failed after the stage-in was submitted to Globus; the stage-in goes \
                     on (`ps-globus status` follows it, and a second `job submit` of the same \
                     files while it is on its way follows it rather than copying them again)",
                    e,
                )
            })?;
        let key = key_of(&job);
        let row = NewJob {
            key: key.clone(),
            identity: manager.identity().to_owned(),
            stage_in: stored_in,
            stage_out: stored_out,
            stage_out_always: request.stage_out_always,
            held,
            on_failure: request.on_failure.as_str().to_owned(),
        };
        if let Err(e) = jobs::insert(manager.db(), &row).await {
            // A held job nobody tracks would never be released: it goes.
            let fate = if held {
                match slurm.cancel(&job).await {
                    Ok(()) => "it was cancelled (held, nobody would release it)".to_owned(),
                    Err(c) => format!("cancelling it failed too ({c}): `scancel {}`", job.text()),
                }
            } else {
                "it runs, but no watcher will stage out or cancel for it".to_owned()
            };
            return Err(Error::with_source(
                e.kind(),
                format!(
                    "job {} was submitted but could not be recorded in the state database: {fate}",
                    job.text()
                ),
                e,
            ));
        }
        let mut warnings = Vec::new();
        if held {
            warnings.push(format!(
                "job {} is held until its stage-in arrives: `ps-globus job watch` releases it \
                 (run one, on a login node or from cron, if none runs)",
                job.text()
            ));
        } else if let Some(late) =
            estimate::late_arrival(manager, slurm, &job, &stage_in, &files).await
        {
            warnings.push(late);
        }
        let mut labels: Vec<String> = handles.iter().map(|h| h.label.clone()).collect();
        labels.sort();
        labels.dedup();
        Ok(SubmittedJob {
            job_id: job.text(),
            stage_in: files,
            labels,
            held,
            warnings,
        })
    }
}

/// The variable a job's script finds the local path of reference `name` in:
/// `PS_GLOBUS_REF_` and the name in upper case, every character but letters and digits
/// as `_` (`staged/input.h5` is `PS_GLOBUS_REF_STAGED_INPUT_H5`).
pub fn ref_variable(name: &str) -> String {
    let mut variable = "PS_GLOBUS_REF_".to_owned();
    variable.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    variable
}

/// Checks the references a job reads before anything starts: each is saved here, its
/// store can be built, and no two share a variable.
async fn check_refs(manager: &TransferManager, names: &[String]) -> Result<()> {
    let mut seen = std::collections::HashMap::new();
    for name in names {
        if let Some(other) = seen.insert(ref_variable(name), name) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "--stage-in-ref {name} and {other} would both be {}: rename one \
                     (`ps-globus ref import` with --name)",
                    ref_variable(name)
                ),
            ));
        }
        let found = crate::proxy::load_ref(manager.db(), name).await?;
        let reference = found.ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "--stage-in-ref {name}: no reference of that name (see `ps-globus ref list`)"
                ),
            )
        })?;
        reference.store()?;
    }
    Ok(())
}

/// The stored key of a Slurm job.
fn key_of(job: &JobId) -> JobKey {
    JobKey {
        scheduler: SLURM.to_owned(),
        cluster: job.cluster.clone().unwrap_or_default(),
        job_id: job.id.to_string(),
    }
}

/// The Slurm job a stored key names.
fn job_of(key: &JobKey) -> JobId {
    JobId {
        id: key.job_id.parse().unwrap_or_default(),
        cluster: (!key.cluster.is_empty()).then(|| key.cluster.clone()),
    }
}

/// The files a stored job waits for.
fn staged_files(row: &JobRow) -> Result<Vec<StagedFile>> {
    serde_json::from_str(&row.stage_in).map_err(|e| unreadable(row, "stage-in", e))
}

/// The copies a stored job makes when it ends.
fn stage_out_of(row: &JobRow) -> Result<Vec<PlannedItem>> {
    Ok(serde_json::from_str::<StageOut>(&row.stage_out)
        .map_err(|e| unreadable(row, "stage-out", e))?
        .items)
}

/// A stored job's `what` that does not read back (another version wrote it).
fn unreadable(row: &JobRow, what: &str, e: serde_json::Error) -> Error {
    Error::with_source(
        ErrorKind::Storage,
        format!(
            "job {}'s stored {what} is unreadable (written by another version of ps-globus?)",
            row.key.job_id
        ),
        e,
    )
}

/// Reads `JOB` or `JOB;CLUSTER` as a tracked job's key.
fn key_from_text(text: &str) -> Result<JobKey> {
    JobId::parse_parsable(text).map(|job| key_of(&job))
}

/// The options of a job's transfers: checksums verified, as `ps-globus transfer`'s.
fn verified() -> BatchOptions {
    BatchOptions {
        verify_checksum: true,
        ..BatchOptions::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_names_become_variables_of_capitals_digits_and_underscores() {
        assert_eq!(
            ref_variable("staged/input.h5"),
            "PS_GLOBUS_REF_STAGED_INPUT_H5"
        );
        assert_eq!(ref_variable("run-7"), "PS_GLOBUS_REF_RUN_7");
        // Two names, one variable: `check_refs` refuses the pair.
        assert_eq!(ref_variable("a.b"), ref_variable("a_b"));
    }
}

//! `job submit`: a Slurm job whose stage-in starts at submission, while it queues, and
//! whose first step waits for it, verified (`ps_globus::job`). `job wait-stage-in` is
//! that first step.

use std::ffi::OsString;
use std::time::Duration;

use clap::Subcommand;
use ps_globus::config::Config;
use ps_globus::internal::staging::{BatchLine, Direction, enqueue, local_path, plan};
use ps_globus::job::{
    JobId, OnFailure, Slurm, StagedFile, SubmitLine, expected_of, wait_stage_in, wrapper_script,
};
use ps_globus::transfer::BatchOptions;
use serde_json::json;

use super::{manager, observer, settings};
use crate::{CliResult, Usage};

/// How long the first step waits for the stage-in by default (seconds).
const DEFAULT_STAGE_IN_TIMEOUT: u64 = 3600;

#[derive(Subcommand)]
pub enum JobCommand {
    /// Submit a batch script to Slurm; its stage-in starts now, while the job queues,
    /// and the job's first step waits for it (verified) before the script runs.
    ///
    /// Usage: job submit [--stage-in SRC:DST]... [--stage-in-timeout SECONDS]
    /// [--on-stage-in-failure fail|cancel|hold|run] [--format text|json]
    /// [SBATCH OPTIONS] SCRIPT [ARGS]. SRC is SITE:PATH or
    /// COLLECTION_UUID:PATH, DST a path on this site, after the last `:`. sbatch's
    /// options pass through, except --hold, --parsable, --wrap, --array, --wait and
    /// --test-only.
    #[command(disable_help_flag = true)]
    Submit {
        /// Our options, sbatch's, the script and its arguments, in that order.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 1..)]
        words: Vec<OsString>,
    },
    /// The first step of a submitted job: waits for its stage-in and verifies it.
    #[command(hide = true)]
    WaitStageIn {
        /// Give up after this many seconds.
        #[arg(long, default_value_t = DEFAULT_STAGE_IN_TIMEOUT)]
        timeout: u64,
        /// What the job does when the stage-in fails: fail, cancel, hold or run.
        #[arg(long, default_value = "fail")]
        on_failure: String,
        /// The files, as `job submit` wrote them (ITEM:SIZE:SHA256:PATH).
        files: Vec<OsString>,
    },
}

pub async fn run(command: JobCommand) -> CliResult {
    match command {
        JobCommand::Submit { words } => submit(words).await,
        JobCommand::WaitStageIn {
            timeout,
            on_failure,
            files,
        } => wait(timeout, &on_failure, files).await,
    }
}

/// Our options of `job submit`, with a value.
const OURS: &[&str] = &[
    "stage-in",
    "stage-in-timeout",
    "on-stage-in-failure",
    "format",
];

async fn submit(words: Vec<OsString>) -> CliResult {
    let usage = |e: ps_globus::Error| Usage(Box::new(e));
    let line = SubmitLine::parse(&words, OURS, &[]).map_err(usage)?;
    let (mut lines, mut timeout, mut json_out) = (Vec::new(), DEFAULT_STAGE_IN_TIMEOUT, false);
    let mut on_failure = OnFailure::default();
    for (name, value) in &line.ours {
        let value = value.as_deref().unwrap_or_default().to_string_lossy();
        match name.as_str() {
            "stage-in" => lines.push(stage_in_line(&value)?),
            "stage-in-timeout" => {
                timeout = value.parse().map_err(|_| {
                    Usage(format!("--stage-in-timeout {value:?}: give whole seconds").into())
                })?;
            }
            "on-stage-in-failure" => on_failure = OnFailure::parse(&value).map_err(usage)?,
            _ => json_out = parse_format(&value)?,
        }
    }
    let script = std::fs::read(&line.script).map_err(|e| {
        Usage(
            format!(
                "cannot read the batch script {}: {e}",
                line.script.display()
            )
            .into(),
        )
    })?;
    // A script sbatch would refuse is refused now, before anything is staged.
    wrapper_script(&script, &[]).map_err(usage)?;
    let config = Config::load(settings())?;
    let current = ps_globus::config::current_site(&config.sites, settings().site.as_deref());
    let items = plan(&lines, Direction::In, &config, &current).map_err(usage)?;
    let here = current.as_deref().ok();
    // What each file must be when it arrives, where its source is here to read now.
    let mut expected = Vec::with_capacity(items.len());
    for item in &items {
        expected.push(match local_path(&item.source, &config, here) {
            Some(path) if path.is_file() => Some(expected_of(&path)?),
            _ => None,
        });
    }
    let manager = manager().await?;
    let mut options = BatchOptions::default();
    options.verify_checksum = true;
    let handles = enqueue(&manager, &items, &options).await?;
    manager.flush().await?;
    let mut files = Vec::with_capacity(items.len());
    for ((item, handle), expected) in items.iter().zip(&handles).zip(expected) {
        let path = local_path(&item.destination, &config, here).ok_or_else(|| {
            Usage(format!("{}: not a path at this site", item.destination.path).into())
        })?;
        let (size, sha256) = expected.unzip();
        files.push(StagedFile {
            item: handle.item,
            path,
            size,
            sha256,
        });
    }
    let mut first_step: Vec<OsString> = vec![
        std::env::current_exe()?.into(),
        "job".into(),
        "wait-stage-in".into(),
        "--timeout".into(),
        timeout.to_string().into(),
        "--on-failure".into(),
        on_failure.as_str().into(),
        "--".into(),
    ];
    first_step.extend(files.iter().map(StagedFile::to_word));
    let wrapper = wrapper_script(&script, &first_step).map_err(usage)?;
    let wrapped = tempfile::Builder::new()
        .prefix("ps-globus-job.")
        .suffix(".sh")
        .tempfile()?;
    std::fs::write(wrapped.path(), wrapper)?;
    let job = Slurm::from_path()
        .submit(&line.sbatch, wrapped.path(), &line.args, false)
        .await
        .map_err(|e| {
            let staged = if files.is_empty() {
                String::new()
            } else {
                " (the stage-in was submitted to Globus and goes on: `ps-globus status` \
                 follows it; a second `job submit` of the same files while it is on its \
                 way follows it rather than copying them again)"
                    .to_owned()
            };
            format!("{e}{staged}")
        })?;
    if json_out {
        let staged: Vec<_> = files
            .iter()
            .zip(&handles)
            .map(|(f, h)| json!({"item": f.item, "path": f.path, "label": h.label, "size": f.size, "sha256": f.sha256}))
            .collect();
        println!(
            "{}",
            json!({"job_id": job.to_string(), "stage_in": staged, "stage_in_timeout_s": timeout})
        );
    } else {
        println!("Submitted batch job {job}");
        if !files.is_empty() {
            println!(
                "Stage-in: {} file(s) on their way; the job's first step waits for them (up to {timeout} s).",
                files.len()
            );
        }
    }
    Ok(())
}

/// `SRC:DST` of `--stage-in`: DST after the last `:`.
fn stage_in_line(text: &str) -> Result<BatchLine, Usage> {
    match text.rsplit_once(':') {
        Some((source, destination)) if source.contains(':') && !destination.is_empty() => {
            Ok(BatchLine {
                source: source.into(),
                destination: destination.into(),
                recursive: false,
            })
        }
        _ => Err(Usage(
            format!(
                "--stage-in {text:?}: give SRC:DST, SRC a SITE:PATH or COLLECTION_UUID:PATH and \
                 DST a path on this site (no `:` in it)"
            )
            .into(),
        )),
    }
}

fn parse_format(text: &str) -> Result<bool, Usage> {
    match text {
        "json" => Ok(true),
        "text" => Ok(false),
        other => Err(Usage(format!("--format {other:?}: text or json").into())),
    }
}

/// The first step: waits for every file, then verifies it. A failure is said, then the
/// job does as `--on-stage-in-failure` says: this step fails (exit 1, the script unrun),
/// the job is cancelled or requeued held, or the script runs anyway.
async fn wait(timeout: u64, on_failure: &str, words: Vec<OsString>) -> CliResult {
    let usage = |e: ps_globus::Error| Usage(Box::new(e));
    let on_failure = OnFailure::parse(on_failure).map_err(usage)?;
    let files = words
        .iter()
        .map(|w| StagedFile::parse_word(w))
        .collect::<ps_globus::Result<Vec<_>>>()
        .map_err(usage)?;
    let manager = observer().await?;
    let arrival = |item, left| {
        let manager = &manager;
        async move { manager.wait(item, left).await.map(drop) }
    };
    let failed = match wait_stage_in(&files, Duration::from_secs(timeout), arrival).await {
        Ok(()) => {
            eprintln!(
                "ps-globus: stage-in arrived and verified ({} file(s)); the batch script runs now",
                files.len()
            );
            return Ok(());
        }
        Err(e) => e,
    };
    eprintln!("ps-globus: the stage-in failed: {failed}");
    // Slurm names the job to its steps.
    let this_job = std::env::var("SLURM_JOB_ID")
        .ok()
        .and_then(|id| JobId::parse_parsable(&id).ok());
    match (on_failure, this_job) {
        (OnFailure::Run, _) => {
            eprintln!("ps-globus: running the batch script anyway (--on-stage-in-failure run)");
            return Ok(());
        }
        (OnFailure::Cancel, Some(job)) => {
            eprintln!("ps-globus: cancelling job {job} (--on-stage-in-failure cancel)");
            Slurm::from_path().cancel(&job).await?;
        }
        (OnFailure::Hold, Some(job)) => {
            eprintln!(
                "ps-globus: job {job} goes back to the queue, held (--on-stage-in-failure \
                 hold): `scontrol release {job}` runs it again, this step first"
            );
            Slurm::from_path().requeue_held(&job).await?;
        }
        _ => {}
    }
    Err(failed.into())
}

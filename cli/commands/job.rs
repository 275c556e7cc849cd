//! `job submit`: a Slurm job whose stage-in starts at submission, while it queues, and
//! whose first step waits for it, verified; `job watch`, the long-running side that
//! releases held jobs, stages out and cancels; `job status`. The work is the library's
//! (`ps_globus::job`). `job wait-stage-in` is the wrapped job's first step.

use std::ffi::OsString;
use std::time::Duration;

use clap::Subcommand;
use ps_globus::config::Config;
use ps_globus::internal::staging::{BatchLine, parse_batch};
use ps_globus::job::{
    JobId, JobReport, JobRequest, OnFailure, Slurm, StagedFile, SubmitLine, WatchOptions, prepare,
    shell_quoted, wait_stage_in,
};
use serde_json::json;

use super::stop::Interrupt;
use super::{CommandError, manager, observer, settings};
use crate::output::{Output, print_table};
use crate::{CliResult, Usage};

/// How long the first step waits for the stage-in by default (seconds).
const DEFAULT_STAGE_IN_TIMEOUT: u64 = 3600;

#[derive(Subcommand)]
pub enum JobCommand {
    /// Submit a batch script to Slurm; its stage-in starts now, while the job queues,
    /// and the job's first step waits for it (verified) before the script runs.
    ///
    /// Usage: job submit [--stage-in SRC:DST]... [--batch FILE] [--stage-in-ref NAME]...
    /// [--stage-out SRC:DST]...
    /// [--stage-out-always] [--hold-until-staged] [--stage-in-timeout SECONDS]
    /// [--on-stage-in-failure fail|cancel|hold|run] [--format text|json]
    /// [SBATCH OPTIONS] SCRIPT [ARGS]. A stage-in's SRC is SITE:PATH or
    /// COLLECTION_UUID:PATH, its DST a path here (after the last `:`); a stage-out's SRC
    /// is a path here (before the first `:`), its DST SITE:PATH or COLLECTION_UUID:PATH.
    /// --batch FILE: stage-in lines `SRC DST` as `globus transfer --batch` reads them.
    /// --stage-in-ref NAME: a named reference (`ps-globus ref`), waited for at this site
    /// and verified; the script finds its path in PS_GLOBUS_REF_<NAME>.
    /// sbatch's options pass through, except --hold, --parsable, --wrap, --array,
    /// --wait and --test-only.
    #[command(disable_help_flag = true)]
    Submit {
        /// Our options, sbatch's, the script and its arguments, in that order.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 1..)]
        words: Vec<OsString>,
    },
    /// Release held jobs whose stage-in arrived, stage out the jobs that ended, and
    /// cancel the stage-in of cancelled jobs: for every job this identity submitted
    /// with `job submit` (run it on a login node, or `--once` from cron).
    Watch {
        /// One pass, then exit (non-zero if an action failed).
        #[arg(long)]
        once: bool,
        /// Seconds between passes.
        #[arg(long, default_value_t = 30)]
        interval: u64,
        /// Seconds a watcher's claim on a release or stage-out keeps other watchers off
        /// it (one that dies holding a claim delays the action this long).
        #[arg(long, default_value_t = 120, hide = true)]
        claim_seconds: u64,
        #[command(flatten)]
        output: Output,
    },
    /// A job's Slurm state beside its stage-in and stage-out progress; without JOB, this
    /// identity's recent jobs.
    Status {
        /// The job id (as sbatch printed it).
        job: Option<String>,
        /// How many recent jobs, without JOB.
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[command(flatten)]
        output: Output,
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
        /// A named reference the script reads: its local path is printed as
        /// `export PS_GLOBUS_REF_<NAME>='PATH'` for the wrapper.
        #[arg(long = "ref")]
        refs: Vec<String>,
        /// The descriptor the wrapper reads the `export` lines from (standard output
        /// without).
        #[arg(long)]
        exports_fd: Option<u32>,
        /// The files, as `job submit` wrote them (ITEM:SIZE:SHA256:PATH).
        files: Vec<OsString>,
    },
}

pub async fn run(command: JobCommand) -> CliResult {
    match command {
        JobCommand::Submit { words } => submit(words).await,
        JobCommand::Watch {
            once,
            interval,
            claim_seconds,
            output,
        } => watch(once, interval, claim_seconds, &output).await,
        JobCommand::Status { job, limit, output } => status(job.as_deref(), limit, &output).await,
        JobCommand::WaitStageIn {
            timeout,
            on_failure,
            refs,
            exports_fd,
            files,
        } => wait(timeout, &on_failure, (&refs, exports_fd), files).await,
    }
}

/// Our options of `job submit`, with a value.
const OURS: &[&str] = &[
    "stage-in",
    "stage-in-ref",
    "stage-out",
    "batch",
    "stage-in-timeout",
    "on-stage-in-failure",
    "format",
];

/// Our flags of `job submit`.
const OUR_FLAGS: &[&str] = &["hold-until-staged", "stage-out-always"];

async fn submit(words: Vec<OsString>) -> CliResult {
    let usage = |e: ps_globus::Error| Usage(Box::new(e));
    let line = SubmitLine::parse(&words, OURS, OUR_FLAGS).map_err(usage)?;
    let mut request = JobRequest::new(&line.script, std::env::current_exe()?);
    request.sbatch = line.sbatch.clone();
    request.args = line.args.clone();
    let mut json_out = false;
    for (name, value) in &line.ours {
        // Not lossily: a path with other bytes would name another file.
        let value = value.as_deref().unwrap_or_default();
        let value = value.to_str().ok_or_else(|| {
            Usage(format!("--{name} {}: not UTF-8", value.to_string_lossy()).into())
        })?;
        match name.as_str() {
            "stage-in" => request.stage_in.push(stage_in_line(value)?),
            "stage-in-ref" => request.stage_in_refs.push(value.to_owned()),
            "stage-out" => request.stage_out.push(stage_out_line(value)?),
            "batch" => {
                let text = std::fs::read_to_string(value)
                    .map_err(|e| Usage(format!("--batch {value}: cannot read it: {e}").into()))?;
                request.stage_in.extend(parse_batch(&text).map_err(usage)?);
            }
            "stage-in-timeout" => {
                let seconds = value.parse().map_err(|_| {
                    Usage(format!("--stage-in-timeout {value:?}: give whole seconds").into())
                })?;
                request.stage_in_timeout = Duration::from_secs(seconds);
            }
            "on-stage-in-failure" => request.on_failure = OnFailure::parse(value).map_err(usage)?,
            "hold-until-staged" => request.hold_until_staged = true,
            "stage-out-always" => request.stage_out_always = true,
            _ => json_out = parse_format(value)?,
        }
    }
    let config = Config::load(settings())?;
    let current = ps_globus::config::current_site(&config.sites, settings().site.as_deref());
    let mut interrupt = Interrupt::catch()?;
    let manager = manager().await?;
    // Until the preparation ends (hashing a large source may take minutes), Ctrl-C
    // stops with nothing started.
    let prepared = tokio::select! {
        prepared = prepare(&manager, &config, &current, &request) => prepared.map_err(
            |e| -> CommandError {
                // What was typed is wrong: nothing was started.
                if e.kind() == ps_globus::ErrorKind::InvalidInput {
                    Box::new(Usage(Box::new(e)))
                } else {
                    Box::new(e)
                }
            },
        )?,
        _ = interrupt.recv() => {
            return Err(crate::Exit(130, "interrupted: nothing was submitted".into()).into());
        }
    };
    // Then it finishes what it began: the stage-in, sbatch and the job's record (a job
    // sbatch queued that nobody recorded would never be released or staged out).
    let mut interrupted = false;
    let slurm = Slurm::from_path();
    let finishing = prepared.submit(&manager, &slurm);
    tokio::pin!(finishing);
    let submitted = loop {
        tokio::select! {
            submitted = &mut finishing => break submitted?,
            _ = interrupt.recv() => {
                interrupted = true;
                eprintln!("ps-globus: finishing the submission already begun (the stage-in, sbatch, the job's record)");
            }
        }
    };
    for warning in &submitted.warnings {
        eprintln!("warning: {warning}");
    }
    if json_out {
        println!(
            "{}",
            json!({
                "job_id": submitted.job_id,
                "held": submitted.held,
                "stage_in": submitted.stage_in,
                "labels": submitted.labels,
                "stage_in_timeout_s": request.stage_in_timeout.as_secs(),
                "warnings": submitted.warnings,
            })
        );
    } else {
        println!("Submitted batch job {}", submitted.job_id);
        if !submitted.stage_in.is_empty() {
            let waits = if submitted.held {
                "the job is held until they arrive".to_owned()
            } else {
                format!(
                    "the job's first step waits for them (up to {} s)",
                    request.stage_in_timeout.as_secs()
                )
            };
            println!(
                "Stage-in: {} file(s) on their way; {waits}.",
                submitted.stage_in.len()
            );
        }
    }
    if interrupted {
        let job = &submitted.job_id;
        return Err(crate::Exit(
            130,
            format!("interrupted after job {job} was submitted and recorded (`scancel {job}` cancels it)"),
        )
        .into());
    }
    Ok(())
}

/// `job watch`: a pass every `interval` seconds (one with `--once`).
async fn watch(once: bool, interval: u64, claim_seconds: u64, output: &Output) -> CliResult {
    let config = Config::load(settings())?;
    let current = ps_globus::config::current_site(&config.sites, settings().site.as_deref());
    let manager = manager().await?;
    let slurm = Slurm::from_path();
    let options = WatchOptions {
        claim: Duration::from_secs(claim_seconds),
        failpoint: settings().failpoint_name().map(str::to_owned),
    };
    loop {
        let pass =
            ps_globus::job::watch(&manager, &slurm, &config, current.as_deref().ok(), &options)
                .await;
        let report = match pass {
            Ok(report) => report,
            Err(e) if once => return Err(e.into()),
            // Slurm or the database down: a long-running watcher says so and tries again.
            Err(e) => {
                eprintln!("ps-globus job watch: {e} (trying again in {interval} s)");
                tokio::time::sleep(Duration::from_secs(interval)).await;
                continue;
            }
        };
        if output.machine() {
            output.emit(&report)?;
        } else {
            for job in &report.released {
                println!("job {job}: released (its stage-in arrived and verified)");
            }
            for job in &report.cancelled {
                println!("job {job}: cancelled (its stage-in failed)");
            }
            for job in &report.cancelled_stage_in {
                println!("job {job}: its unfinished stage-in cancelled");
            }
            for job in &report.staged_out {
                println!("job {job}: stage-out queued");
            }
            for (job, end) in &report.ended {
                println!("job {job}: ended {end}");
            }
            for (job, error) in &report.errors {
                eprintln!("job {job}: {error} (tried again on the next pass)");
            }
        }
        if once {
            if report.errors.is_empty() {
                return Ok(());
            }
            return Err(crate::Exit(1, String::new()).into());
        }
        tokio::time::sleep(Duration::from_secs(interval)).await;
    }
}

/// `job status [JOB]`.
async fn status(job: Option<&str>, limit: i64, output: &Output) -> CliResult {
    let manager = observer().await?;
    let reports = ps_globus::job::status(&manager, &Slurm::from_path(), job, limit).await?;
    if output.machine() {
        return output.emit(&reports);
    }
    if reports.is_empty() {
        println!("No jobs submitted with `ps-globus job submit` by this identity.");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = reports.iter().map(status_row).collect();
    print_table(&["JOB", "STATE", "STAGE-IN", "STAGE-OUT", "WHY"], &rows);
    Ok(())
}

fn status_row(report: &JobReport) -> Vec<String> {
    let side = |p: &ps_globus::job::Progress| {
        if p.files == 0 {
            return "-".to_owned();
        }
        let done = indicatif::HumanBytes(p.bytes_done);
        let bytes = match p.bytes_total {
            Some(total) => format!(" {done}/{}", indicatif::HumanBytes(total)),
            None => format!(" {done}"),
        };
        let failed = if p.failed > 0 {
            format!(", {} failed", p.failed)
        } else {
            String::new()
        };
        let queued = if p.queued { "" } else { " (not yet queued)" };
        format!("{}/{} files{bytes}{failed}{queued}", p.arrived, p.files)
    };
    let mut state = report.state.clone();
    if report.held {
        state.push_str(" (held)");
    }
    let why = report
        .reason
        .clone()
        .or_else(|| report.slurm_reason.clone())
        .or_else(|| report.slurm_error.clone())
        .unwrap_or_default();
    vec![
        report.job_id.clone(),
        state,
        side(&report.stage_in),
        side(&report.stage_out),
        why,
    ]
}

/// `SRC:DST` of `--stage-in`: DST (a path here) after the last `:`.
fn stage_in_line(text: &str) -> Result<BatchLine, Usage> {
    let split = text
        .rsplit_once(':')
        .filter(|(source, destination)| source.contains(':') && !destination.is_empty());
    pair(split, || {
        format!(
            "--stage-in {text:?}: give SRC:DST, SRC a SITE:PATH or COLLECTION_UUID:PATH and \
             DST a path on this site (no `:` in it)"
        )
    })
}

/// `SRC:DST` of `--stage-out`: SRC (a path here) before the first `:`.
fn stage_out_line(text: &str) -> Result<BatchLine, Usage> {
    let split = text
        .split_once(':')
        .filter(|(source, destination)| !source.is_empty() && destination.contains(':'));
    pair(split, || {
        format!(
            "--stage-out {text:?}: give SRC:DST, SRC a path here (no `:` in it) and DST a \
             SITE:PATH or COLLECTION_UUID:PATH"
        )
    })
}

/// The line of a split `SRC:DST`, or the usage error `why` says.
fn pair(split: Option<(&str, &str)>, why: impl FnOnce() -> String) -> Result<BatchLine, Usage> {
    let (source, destination) = split.ok_or_else(|| Usage(why().into()))?;
    Ok(BatchLine {
        source: source.into(),
        destination: destination.into(),
        recursive: false,
    })
}

/// The verified local path of reference `name`'s object at this site, waiting up to
/// `left` for it to arrive.
async fn resolve_ref(name: &str, left: Duration) -> Result<std::path::PathBuf, CommandError> {
    let db = ps_globus::state::StateDb::open_default(settings()).await?;
    let reference = ps_globus::proxy::load_ref(&db, name)
        .await?
        .ok_or_else(|| format!("no reference named {name:?} in this state database"))?;
    let store = reference.store()?;
    match tokio::time::timeout(left, store.resolve_path_async(&reference.key)).await {
        Ok(path) => Ok(path?),
        Err(_) => Err(ps_globus::Error::new(
            ps_globus::ErrorKind::Timeout,
            format!(
                "reference {name}: its object did not arrive at this site within {} s",
                left.as_secs()
            ),
        )
        .into()),
    }
}

/// `export NAME='PATH'` for each resolved reference, on descriptor `fd`, where the
/// wrapper reads the lines it runs before the script (nothing else the step says goes
/// there); on standard output without one (by hand).
fn print_exports(
    exports: &[(&String, std::path::PathBuf)],
    fd: Option<u32>,
) -> std::io::Result<()> {
    use std::io::Write;
    if exports.is_empty() {
        return Ok(());
    }
    let mut out: Box<dyn Write> = match fd {
        Some(fd) => Box::new(
            std::fs::OpenOptions::new()
                .append(true)
                .open(format!("/dev/fd/{fd}"))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    for (name, path) in exports {
        out.write_all(format!("export {}=", ps_globus::job::ref_variable(name)).as_bytes())?;
        out.write_all(&shell_quoted(path.as_os_str()))?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

fn parse_format(text: &str) -> Result<bool, Usage> {
    match text {
        "json" => Ok(true),
        "text" => Ok(false),
        other => Err(Usage(format!("--format {other:?}: text or json").into())),
    }
}

/// The first step: waits for every file, then verifies it, then for every reference
/// (its local path printed for the wrapper as `export PS_GLOBUS_REF_<NAME>='PATH'`),
/// within `timeout` in all. A failure is said, then the job does as
/// `--on-stage-in-failure` says: this step fails (exit 1, the script unrun), the job is
/// cancelled or requeued held, or the script runs anyway.
async fn wait(
    timeout: u64,
    on_failure: &str,
    (refs, exports_fd): (&[String], Option<u32>),
    words: Vec<OsString>,
) -> CliResult {
    let usage = |e: ps_globus::Error| Usage(Box::new(e));
    let on_failure = OnFailure::parse(on_failure).map_err(usage)?;
    let files = words
        .iter()
        .map(|w| StagedFile::parse_word(w))
        .collect::<ps_globus::Result<Vec<_>>>()
        .map_err(usage)?;
    let limit = Duration::from_secs(timeout);
    let deadline = tokio::time::Instant::now() + limit;
    let staged = async {
        if !files.is_empty() {
            let manager = observer().await?;
            let arrival = |item, left| {
                let manager = &manager;
                async move { manager.wait(item, left).await.map(drop) }
            };
            wait_stage_in(&files, limit, arrival).await?;
        }
        let mut exports = Vec::with_capacity(refs.len());
        for name in refs {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            exports.push((name, resolve_ref(name, left).await?));
        }
        Ok::<_, CommandError>(exports)
    };
    let failed = match staged.await {
        Ok(exports) => {
            print_exports(&exports, exports_fd)?;
            let referenced = match refs.len() {
                0 => String::new(),
                n => format!(", {n} reference(s)"),
            };
            eprintln!(
                "ps-globus: stage-in arrived and verified ({} file(s){referenced}); the batch \
                 script runs now",
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
    Err(failed)
}

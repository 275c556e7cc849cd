//! `ps_globus.job` from Python: submit a Slurm job whose stage-in starts now, watch the
//! tracked jobs (one pass), and their status; the library's calls (`ps_globus::job`),
//! with the same transfer manager and state database as the CLI's `job` commands.

use std::time::Duration;

use ps_globus::Settings;
use ps_globus::config::{Config, current_site};
use ps_globus::internal::staging::BatchLine;
use ps_globus::job::{JobRequest, OnFailure, Slurm, WatchOptions};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use serde::Deserialize;

use crate::staging::manager;
use crate::wait::wait;

/// A submission, as `ps_globus.job.submit` sends it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    script: String,
    args: Vec<String>,
    sbatch: Vec<String>,
    stage_in: Vec<(String, String)>,
    stage_in_refs: Vec<String>,
    stage_out: Vec<(String, String)>,
    stage_out_always: bool,
    hold_until_staged: bool,
    on_stage_in_failure: String,
    stage_in_timeout_s: f64,
    program: String,
}

fn lines(pairs: Vec<(String, String)>) -> Vec<BatchLine> {
    pairs
        .into_iter()
        .map(|(source, destination)| BatchLine {
            source,
            destination,
            recursive: false,
        })
        .collect()
}

/// Submits the job `request_json` describes; the submitted job, as JSON.
#[pyfunction]
pub fn job_submit(py: Python<'_>, request_json: &str) -> PyResult<String> {
    let request: Request = serde_json::from_str(request_json)
        .map_err(|e| PyValueError::new_err(format!("job request: {e}")))?;
    let on_failure = OnFailure::parse(&request.on_stage_in_failure)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let timeout = Duration::try_from_secs_f64(request.stage_in_timeout_s).map_err(|_| {
        PyValueError::new_err(format!(
            "stage_in_timeout {} is not a number of seconds >= 0",
            request.stage_in_timeout_s
        ))
    })?;
    let mut job = JobRequest::new(&request.script, &request.program);
    job.args = request.args.into_iter().map(Into::into).collect();
    job.sbatch = request.sbatch.into_iter().map(Into::into).collect();
    job.stage_in = lines(request.stage_in);
    job.stage_in_refs = request.stage_in_refs;
    job.stage_out = lines(request.stage_out);
    job.stage_out_always = request.stage_out_always;
    job.hold_until_staged = request.hold_until_staged;
    job.on_failure = on_failure;
    job.stage_in_timeout = timeout;
    wait(py, async move {
        let settings = Settings::from_env();
        let config = Config::load(&settings)?;
        let current = current_site(&config.sites, settings.site.as_deref());
        let manager = manager(&settings).await?;
        let submitted =
            ps_globus::job::submit(&manager, &Slurm::from_path(), &config, &current, &job).await?;
        serde_json::to_string(&submitted).map_err(|e| ps_globus::Error::encode("json", e))
    })
}

/// One watcher pass over this identity's tracked jobs; its report, as JSON.
#[pyfunction]
pub fn job_watch(py: Python<'_>) -> PyResult<String> {
    wait(py, async move {
        let settings = Settings::from_env();
        let config = Config::load(&settings)?;
        let current = current_site(&config.sites, settings.site.as_deref());
        let manager = manager(&settings).await?;
        let report = ps_globus::job::watch(
            &manager,
            &Slurm::from_path(),
            &config,
            current.as_deref().ok(),
            &WatchOptions::default(),
        )
        .await?;
        serde_json::to_string(&report).map_err(|e| ps_globus::Error::encode("json", e))
    })
}

/// The status of job `job` (or of this identity's `limit` most recent jobs), as JSON.
#[pyfunction]
#[pyo3(signature = (job=None, limit=20))]
pub fn job_status(py: Python<'_>, job: Option<String>, limit: i64) -> PyResult<String> {
    wait(py, async move {
        let settings = Settings::from_env();
        let manager = manager(&settings).await?;
        let reports =
            ps_globus::job::status(&manager, &Slurm::from_path(), job.as_deref(), limit).await?;
        serde_json::to_string(&reports).map_err(|e| ps_globus::Error::encode("json", e))
    })
}

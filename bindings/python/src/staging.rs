//! `transfer`, `stage_in`, `stage_out` from Python: the CLI's plans and options, the same
//! transfer manager, one report.

use std::time::Duration;

use ps_globus::Settings;
use ps_globus::config::{Config, current_site};
use ps_globus::internal::staging::{
    BatchLine, Direction, NO_TIMEOUT, deadline, enqueue, labels_and_tasks, plan, sync_level,
    wait_all,
};
use ps_globus::state::StateDb;
use ps_globus::transfer::{BatchOptions, ManagerConfig, TransferClient, TransferManager};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use serde::Deserialize;

use crate::wait::wait;

/// The options of `ps-globus transfer` that shape the Globus task.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    sync_level: Option<String>,
    verify_checksum: bool,
    deadline: Option<String>,
    label: Option<String>,
    timeout_s: Option<f64>,
    wait: bool,
}

/// This process's manager, on the shared state database (the CLI's, and `ps_globus.job`'s).
pub(crate) async fn manager(settings: &Settings) -> ps_globus::Result<TransferManager> {
    let client = TransferClient::new(settings, ps_globus::auth::default_authorizer(settings)?)?;
    let db = StateDb::shared_default(settings).await?;
    TransferManager::start(db, client, ManagerConfig::from_settings(settings)).await
}

/// Plans, submits and (unless `wait` is false) waits for the items `lines` name, as
/// (source, destination, recursive); `direction` is `any`, `in` or `out`. Returns the
/// report as JSON: `{"task_ids": [...], "labels": [...], "items": [ItemStatus...]}`.
#[pyfunction]
pub fn transfer(
    py: Python<'_>,
    lines: Vec<(String, String, bool)>,
    direction: &str,
    options_json: &str,
) -> PyResult<String> {
    let options: Options = serde_json::from_str(options_json)
        .map_err(|e| PyValueError::new_err(format!("transfer options: {e}")))?;
    let direction = match direction {
        "any" => Direction::Any,
        "in" => Direction::In,
        "out" => Direction::Out,
        other => return Err(PyValueError::new_err(format!("direction {other:?}"))),
    };
    let lines: Vec<BatchLine> = lines
        .into_iter()
        .map(|(source, destination, recursive)| BatchLine {
            source,
            destination,
            recursive,
        })
        .collect();
    let limit = match options.timeout_s {
        None => NO_TIMEOUT,
        Some(seconds) => Duration::try_from_secs_f64(seconds).map_err(|_| {
            PyValueError::new_err(format!("timeout {seconds} is not a number of seconds >= 0"))
        })?,
    };
    wait(py, async move {
        let batch = {
            let mut built = BatchOptions::default();
            built.sync_level = options.sync_level.as_deref().map(sync_level).transpose()?;
            built.verify_checksum = options.verify_checksum;
            built.deadline = options.deadline.as_deref().map(deadline).transpose()?;
            built.label = options.label.clone();
            built
        };
        let settings = Settings::from_env();
        let config = Config::load(&settings)?;
        let current = current_site(&config.sites, settings.site.as_deref());
        let items = plan(&lines, direction, &config, &current)?;
        let manager = manager(&settings).await?;
        let handles = enqueue(&manager, &items, &batch).await?;
        manager.flush().await?;
        let statuses = if options.wait {
            // A wait past `limit` is a Timeout error naming the item.
            wait_all(&manager, &handles, limit, |_| {}).await?
        } else {
            let mut now = Vec::with_capacity(handles.len());
            for handle in &handles {
                now.push(manager.item(handle.item).await?);
            }
            now
        };
        let (labels, task_ids) = labels_and_tasks(&manager, &handles).await?;
        Ok(
            serde_json::json!({"task_ids": task_ids, "labels": labels, "items": statuses})
                .to_string(),
        )
    })
}

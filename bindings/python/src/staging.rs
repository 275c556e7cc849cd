//! `transfer`, `stage_in`, `stage_out` from Python: the CLI's plans and options, the same
//! transfer manager, one report.

use std::time::Duration;

use ps_globus::Settings;
use ps_globus::config::{Config, current_site};
use ps_globus::staging::{BatchLine, Direction, enqueue, plan, wait_all};
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

fn sync_code(level: &str) -> PyResult<u8> {
    match level {
        "exists" => Ok(0),
        "size" => Ok(1),
        "mtime" => Ok(2),
        "checksum" => Ok(3),
        other => Err(PyValueError::new_err(format!(
            "sync_level {other:?} is not one of exists, size, mtime, checksum"
        ))),
    }
}

fn deadline(text: &str) -> PyResult<String> {
    use ps_globus::transfer::types::{format_time, parse_time};
    parse_time(text).map(format_time).ok_or_else(|| {
        PyValueError::new_err(format!(
            "deadline {text:?} is not a time: give RFC 3339 (2030-01-01T12:00:00Z) or \
             YYYY-MM-DD HH:MM:SS, in UTC"
        ))
    })
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
    let batch = BatchOptions {
        sync_level: options.sync_level.as_deref().map(sync_code).transpose()?,
        verify_checksum: options.verify_checksum,
        deadline: options.deadline.as_deref().map(deadline).transpose()?,
        label: options.label.clone(),
        ..BatchOptions::default()
    };
    let lines: Vec<BatchLine> = lines
        .into_iter()
        .map(|(source, destination, recursive)| BatchLine {
            source,
            destination,
            recursive,
        })
        .collect();
    let limit = options
        .timeout_s
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(100 * 365 * 24 * 3600));
    let wait_for_items = options.wait;
    wait(py, async move {
        let settings = Settings::from_env();
        let config = Config::load(&settings)?;
        let current = current_site(&config.sites, settings.site.as_deref());
        let items = plan(&lines, direction, &config, &current)?;
        let client =
            TransferClient::new(&settings, ps_globus::auth::default_authorizer(&settings)?)?;
        let db = StateDb::open_default(&settings).await?;
        let manager =
            TransferManager::start(db, client, ManagerConfig::from_settings(&settings)).await?;
        let handles = enqueue(&manager, &items, &batch).await?;
        manager.flush().await?;
        let mut labels: Vec<String> = handles.iter().map(|h| h.label.clone()).collect();
        labels.sort();
        labels.dedup();
        let statuses = if wait_for_items {
            // A wait past `limit` is a Timeout error naming the item.
            wait_all(&manager, &handles, limit, |_| {}).await?
        } else {
            let mut now = Vec::with_capacity(handles.len());
            for handle in &handles {
                now.push(manager.item(handle.item).await?);
            }
            now
        };
        let mut task_ids = Vec::new();
        for label in &labels {
            if let Some(task) = manager.batch(label).await?.and_then(|b| b.task_id) {
                task_ids.push(task);
            }
        }
        Ok(
            serde_json::json!({"task_ids": task_ids, "labels": labels, "items": statuses})
                .to_string(),
        )
    })
}

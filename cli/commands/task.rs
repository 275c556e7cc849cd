//! `task list|show|wait|cancel|event-list`: Globus tasks through the Transfer client, one
//! function per subcommand. `cancel` also takes batch labels (`psg-…`), so work that was
//! never submitted can be dropped too.

use std::time::{Duration, Instant};

use clap::Subcommand;
use ps_globus::internal::label_filter;
use ps_globus::transfer::types::Task;
use ps_globus::transfer::{TaskQuery, TaskStatus, TransferClient};
use serde_json::json;

use super::{client, observer, site_names};
use crate::output::{Output, print_table};
use crate::{CliResult, Exit};

/// The `task` subcommands.
#[derive(Subcommand)]
pub enum TaskCommand {
    /// Recent tasks of this identity at Globus, newest first (globus-cli's filters).
    List {
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Only tasks with exactly this label.
        #[arg(long)]
        label: Option<String>,
        #[command(flatten)]
        filters: Box<TaskFilters>,
        #[command(flatten)]
        out: Output,
    },
    /// One task's document.
    Show {
        #[arg(value_parser = task_id)]
        task_id: String,
        #[command(flatten)]
        out: Output,
    },
    /// Wait for tasks: exit 0 if all succeeded, 1 if any failed or skipped a file on
    /// an error (Globus calls such a task SUCCEEDED; ps-globus does not). One request
    /// per poll for all of them.
    Wait {
        #[arg(required = true, value_parser = task_id)]
        task_ids: Vec<String>,
        /// Stop waiting after this many seconds.
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
        /// Exit code when --timeout expires.
        #[arg(long, default_value_t = 1)]
        timeout_exit_code: u8,
        /// Seconds between polls.
        #[arg(long, default_value_t = 1.0)]
        polling_interval: f64,
        #[command(flatten)]
        out: Output,
    },
    /// Cancel tasks by id, by label, or all active ones. A batch label (`psg-…`, as
    /// `status` shows it) cancels that batch: its task if it was submitted, else its
    /// items before they ever reach Globus.
    Cancel {
        #[arg(value_name = "TASK_ID_OR_BATCH", value_parser = task_or_batch)]
        task_ids: Vec<String>,
        #[arg(long, conflicts_with = "all")]
        label: Option<String>,
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        out: Output,
    },
    /// A task's events, newest first (globus-cli's name; `events` also works).
    #[command(name = "event-list", alias = "events")]
    Events {
        #[arg(value_parser = task_id)]
        task_id: String,
        #[command(flatten)]
        out: Output,
    },
}

/// `task list`'s filters, as globus-cli spells them and sends them.
#[derive(clap::Args)]
pub struct TaskFilters {
    /// Only this task (repeatable).
    #[arg(long, value_parser = task_id)]
    filter_task_id: Vec<String>,
    /// Only TRANSFER or DELETE tasks.
    #[arg(long, value_parser = ["TRANSFER", "DELETE"], ignore_case = true)]
    filter_type: Option<String>,
    /// Only tasks with this status (repeatable).
    #[arg(long, value_parser = ["ACTIVE", "INACTIVE", "FAILED", "SUCCEEDED"], ignore_case = true)]
    filter_status: Vec<String>,
    /// Only tasks whose label matches (repeatable; see --exact).
    #[arg(long)]
    filter_label: Vec<String>,
    /// Not tasks whose label matches (repeatable; see --exact).
    #[arg(long)]
    filter_not_label: Vec<String>,
    /// Label filters match exactly (default: inexact, `*` a wild-card, any case).
    #[arg(long, overrides_with = "inexact")]
    exact: bool,
    /// Label filters match inexactly (the default).
    #[arg(long, overrides_with = "exact")]
    inexact: bool,
    /// Requested after this time (`YYYY-MM-DD[ HH:MM:SS]`, UTC).
    #[arg(long, value_parser = filter_time)]
    filter_requested_after: Option<String>,
    /// Requested before this time.
    #[arg(long, value_parser = filter_time)]
    filter_requested_before: Option<String>,
    /// Completed after this time.
    #[arg(long, value_parser = filter_time)]
    filter_completed_after: Option<String>,
    /// Completed before this time.
    #[arg(long, value_parser = filter_time)]
    filter_completed_before: Option<String>,
}

impl TaskFilters {
    /// The Transfer filter these make, with `label` (exact) among the label values, as
    /// globus-cli builds it: clauses joined by `/`, the type defaulting to both kinds.
    fn filter(&self, label: Option<String>) -> String {
        let clause = |field: &str, values: &[String]| {
            (!values.is_empty()).then(|| format!("{field}:{}", values.join(",")))
        };
        let upper = |v: &Vec<String>| v.iter().map(|s| s.to_uppercase()).collect::<Vec<_>>();
        let (like, not) = if self.exact { ("=", "!") } else { ("~", "!~") };
        let mut labels: Vec<String> = self
            .filter_label
            .iter()
            .map(|l| format!("{like}{l}"))
            .collect();
        labels.extend(self.filter_not_label.iter().map(|l| format!("{not}{l}")));
        labels.extend(label.map(|l| format!("={l}")));
        let time = |after: &Option<String>, before: &Option<String>| {
            (after.is_some() || before.is_some()).then(|| {
                [after, before]
                    .map(|t| t.clone().unwrap_or_default())
                    .join(",")
            })
        };
        let parts = [
            clause("task_id", &self.filter_task_id),
            clause("status", &upper(&self.filter_status)),
            Some(format!(
                "type:{}",
                self.filter_type
                    .as_deref()
                    .map_or("TRANSFER,DELETE".into(), str::to_uppercase)
            )),
            clause("label", &labels),
            time(&self.filter_requested_after, &self.filter_requested_before)
                .map(|t| format!("request_time:{t}")),
            time(&self.filter_completed_after, &self.filter_completed_before)
                .map(|t| format!("completion_time:{t}")),
        ];
        parts.into_iter().flatten().collect::<Vec<_>>().join("/")
    }
}

/// A time as `--filter-*-before/after` take it (globus-cli's formats), as the filter
/// sends it: `YYYY-MM-DD HH:MM:SS`.
fn filter_time(text: &str) -> Result<String, String> {
    let text = text.trim();
    for format in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return Ok(t.format("%Y-%m-%d %H:%M:%S").to_string());
        }
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(|d| format!("{d} 00:00:00"))
        .map_err(|_| {
            format!(
                "{text:?} is not a time: YYYY-MM-DD, YYYY-MM-DD HH:MM:SS or YYYY-MM-DDTHH:MM:SS"
            )
        })
}

/// A task id as typed: a UUID, or a usage error (exit 2) before anything is sent.
fn task_id(text: &str) -> Result<String, String> {
    uuid::Uuid::parse_str(text.trim())
        .map(|id| id.to_string())
        .map_err(|_| format!("{text:?} is not a task id (a UUID, as `task list` shows)"))
}

/// A task id, or the label of a batch in the state database (`psg-` and 32 hex digits).
fn task_or_batch(text: &str) -> Result<String, String> {
    let text = text.trim();
    let is_label = text
        .strip_prefix("psg-")
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    if is_label {
        return Ok(text.to_owned());
    }
    task_id(text).map_err(|_| {
        format!(
            "{text:?} is neither a task id (a UUID) nor a batch label (psg-…, as `status` shows)"
        )
    })
}

/// `task ...`
pub async fn run(command: TaskCommand) -> CliResult {
    let client = client()?;
    match command {
        TaskCommand::List {
            limit,
            label,
            filters,
            out,
        } => list(&client, limit, filters.filter(label), &out).await,
        TaskCommand::Show { task_id, out } => show(&client, &task_id, &out).await,
        TaskCommand::Wait {
            task_ids,
            timeout,
            timeout_exit_code,
            polling_interval,
            out,
        } => {
            let limit = timeout.map(|s| (s, timeout_exit_code));
            wait(&client, &task_ids, limit, polling_interval, &out).await
        }
        TaskCommand::Cancel {
            task_ids,
            label,
            all,
            out,
        } => cancel(&client, task_ids, label, all, &out).await,
        TaskCommand::Events { task_id, out } => events(&client, &task_id, &out).await,
    }
}

async fn list(client: &TransferClient, limit: u32, filter: String, out: &Output) -> CliResult {
    let query = {
        let mut built = TaskQuery::default();
        built.filter = Some(filter);
        built.orderby = Some("request_time DESC".into());
        built.limit = Some(limit);
        built
    };
    let page = client.task_list(&query).await?;
    if out.machine() {
        // globus-cli's document: the tasks alone, under DATA.
        return out.emit(&json!({ "DATA": page.data }));
    }
    let names = site_names();
    let place = |name: &Option<String>, id: &Option<String>| {
        let id = id.as_deref().unwrap_or("");
        names
            .get(id)
            .cloned()
            .or_else(|| name.clone())
            .unwrap_or_else(|| id.to_owned())
    };
    let rows: Vec<Vec<String>> = page
        .data
        .iter()
        .map(|t| {
            vec![
                t.task_id.clone(),
                t.status.to_string(),
                t.kind.clone(),
                place(&t.source_endpoint_display_name, &t.source_endpoint_id),
                place(
                    &t.destination_endpoint_display_name,
                    &t.destination_endpoint_id,
                ),
                t.label.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print_table(
        &[
            "Task ID",
            "Status",
            "Type",
            "Source",
            "Destination",
            "Label",
        ],
        &rows,
    );
    Ok(())
}

async fn show(client: &TransferClient, task_id: &str, out: &Output) -> CliResult {
    let t = client.task(task_id).await?;
    if out.machine() {
        return out.emit(&t);
    }
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let mut fields: Vec<(&str, String)> = vec![
        ("Label:", text(&t.label)),
        ("Task ID:", t.task_id.clone()),
        ("Type:", t.kind.clone()),
        ("Status:", judged_status(&t)),
        ("Details:", text(&t.nice_status)),
        ("Source Endpoint ID:", text(&t.source_endpoint_id)),
        ("Destination Endpoint ID:", text(&t.destination_endpoint_id)),
        ("Request Time:", text(&t.request_time)),
        ("Completion Time:", text(&t.completion_time)),
        ("Deadline:", text(&t.deadline)),
        ("Files:", t.files.to_string()),
        ("Files Transferred:", t.files_transferred.to_string()),
        ("Files Skipped (up to date):", t.files_skipped.to_string()),
        (
            "Subtasks with Skipped Errors:",
            t.subtasks_skipped_errors.to_string(),
        ),
        ("Faults:", t.faults.to_string()),
        ("Bytes Transferred:", t.bytes_transferred.to_string()),
    ];
    if let Some(f) = &t.fatal_error {
        fields.push((
            "Fatal Error:",
            crate::output::code_and_reason(&f.code, &f.description),
        ));
    }
    // Values in one column, one space past the longest name (as globus-cli's records).
    let width = fields.iter().map(|(name, _)| name.len()).max().unwrap_or(0) + 1;
    for (name, value) in fields {
        println!("{name:<width$}{value}");
    }
    for failure in failures(client, std::slice::from_ref(&t)).await? {
        eprintln!("{failure}");
    }
    Ok(())
}

/// A task's status as a user should read it: Globus says SUCCEEDED for a task that
/// skipped files on errors, but those files did not arrive.
fn judged_status(t: &Task) -> String {
    match t.subtasks_skipped_errors {
        0 => t.status.to_string(),
        n => format!(
            "{} with {n} file(s) skipped on errors: not all arrived",
            t.status
        ),
    }
}

/// Why each of `tasks` did not fully succeed, one line each: its fatal error, and every
/// path it skipped on an error (files skipped as up to date are not failures).
async fn failures(
    client: &TransferClient,
    tasks: &[Task],
) -> Result<Vec<String>, ps_globus::Error> {
    let mut lines = Vec::new();
    for t in tasks {
        if t.status == TaskStatus::Failed {
            let (code, description) = t
                .fatal_error
                .as_ref()
                .map(|f| (f.code.as_str(), f.description.as_str()))
                .unwrap_or(("FAILED", ""));
            lines.push(format!(
                "task {} FAILED: {}",
                t.task_id,
                crate::output::code_and_reason(code, description)
            ));
        }
        if t.subtasks_skipped_errors > 0 {
            for s in client.skipped_errors(&t.task_id).await? {
                lines.push(format!(
                    "task {} SKIPPED {} -> {}: {}",
                    t.task_id,
                    s.source_path,
                    s.destination_path,
                    crate::output::code_and_reason(&s.error_code, &s.error_details)
                ));
            }
        }
    }
    Ok(lines)
}

/// Polls every task in one request a cycle until all are final; `limit` is (seconds,
/// exit code) for `--timeout`.
async fn wait(
    client: &TransferClient,
    task_ids: &[String],
    limit: Option<(u64, u8)>,
    polling_interval: f64,
    out: &Output,
) -> CliResult {
    let started = Instant::now();
    let interval = Duration::try_from_secs_f64(polling_interval.max(0.05)).unwrap_or(Duration::MAX);
    loop {
        let tasks = client.tasks_by_id(task_ids, None).await?;
        if let Some(missing) = task_ids
            .iter()
            .find(|id| !tasks.iter().any(|t| &t.task_id == *id))
        {
            return Err(format!("no such task: {missing}").into());
        }
        if tasks.iter().all(Task::is_final) {
            return report_finished(client, tasks, out).await;
        }
        if let Some((seconds, code)) = limit
            && started.elapsed() >= Duration::from_secs(seconds)
        {
            eprintln!("Task has yet to complete after {seconds} seconds");
            return Err(Box::new(Exit(code, String::new())));
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => {
                let ids = task_ids.join(" ");
                eprintln!(
                    "\nStopped waiting; the tasks go on. Resume with `ps-globus task wait {ids}`, \
                     or cancel with `ps-globus task cancel {ids}`."
                );
                return Err(Box::new(Exit(130, String::new())));
            }
        }
    }
}

/// Exit 0 if every task succeeded with every file, else 1 with each failure on stderr
/// (a fatal error, or a file skipped on an error).
async fn report_finished(client: &TransferClient, tasks: Vec<Task>, out: &Output) -> CliResult {
    let failures = failures(client, &tasks).await?;
    if out.machine() {
        out.emit(&json!({"DATA": tasks, "failures": failures}))?;
    }
    for line in &failures {
        eprintln!("{line}");
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Box::new(Exit(1, String::new())))
    }
}

async fn cancel(
    client: &TransferClient,
    mut ids: Vec<String>,
    label: Option<String>,
    all: bool,
    out: &Output,
) -> CliResult {
    if label.is_some() || all {
        let mut filter = "status:ACTIVE,INACTIVE".to_string();
        if let Some(label) = &label {
            filter.push_str(&format!("/{}", label_filter(std::slice::from_ref(label))));
        }
        let query = {
            let mut built = TaskQuery::default();
            built.filter = Some(filter);
            built.limit = Some(1000);
            built
        };
        let page = client.task_list(&query).await?;
        ids.extend(page.data.into_iter().map(|t| t.task_id));
    }
    if ids.is_empty() {
        eprintln!("no task to cancel");
    }
    let mut results = Vec::new();
    for id in ids {
        let (code, message) = if id.starts_with("psg-") {
            // A batch of the state database: its task if it has one, else its items.
            let manager = observer().await?;
            let task = manager.batch(&id).await?.and_then(|b| b.task_id);
            manager.cancel_label(&id).await?;
            match task {
                Some(task) => ("Canceled".to_owned(), format!("canceled its task {task}")),
                None => (
                    "Canceled".to_owned(),
                    "canceled before submission: its items will never be sent".to_owned(),
                ),
            }
        } else {
            let result = client.cancel(&id).await?;
            (result.code, result.message)
        };
        if !out.machine() {
            println!("{id}: {message}");
        }
        results.push(json!({"task_id": id, "code": code, "message": message}));
    }
    if out.machine() {
        out.emit(&json!({ "DATA": results }))?;
    }
    Ok(())
}

async fn events(client: &TransferClient, task_id: &str, out: &Output) -> CliResult {
    let page = client.events(task_id, 1000, false).await?;
    if out.machine() {
        return out.emit(&page);
    }
    let rows: Vec<Vec<String>> = page
        .data
        .iter()
        .map(|e| {
            vec![
                e.time.clone(),
                e.code.clone(),
                if e.is_error { "True" } else { "False" }.to_owned(),
                e.details.clone(),
            ]
        })
        .collect();
    print_table(&["Time", "Code", "Is Error", "Details"], &rows);
    Ok(())
}

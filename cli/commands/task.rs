//! `task list|show|wait|cancel|event-list`: Globus tasks through the Transfer client, one
//! function per subcommand.

use std::time::{Duration, Instant};

use clap::Subcommand;
use ps_globus::transfer::types::Task;
use ps_globus::transfer::watch::label_filter;
use ps_globus::transfer::{TaskQuery, TaskStatus, TransferClient};
use serde_json::json;

use super::client;
use crate::output::print_json;
use crate::{CliResult, Exit};

/// The `task` subcommands.
#[derive(Subcommand)]
pub enum TaskCommand {
    /// Recent tasks of this identity at Globus.
    List {
        #[arg(long, default_value_t = 10)]
        limit: u32,
        /// Only tasks with this label.
        #[arg(long)]
        label: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// One task's document.
    Show {
        #[arg(value_parser = task_id)]
        task_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Wait for tasks: exit 0 if all succeeded, 1 if any failed. One request per poll
    /// for all of them.
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
        #[arg(long)]
        json: bool,
    },
    /// Cancel tasks by id, by label, or all active ones.
    Cancel {
        #[arg(value_parser = task_id)]
        task_ids: Vec<String>,
        #[arg(long, conflicts_with = "all")]
        label: Option<String>,
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// A task's events, newest first (globus-cli's name; `events` also works).
    #[command(name = "event-list", alias = "events")]
    Events {
        #[arg(value_parser = task_id)]
        task_id: String,
        #[arg(long)]
        json: bool,
    },
}

/// A task id as typed: a UUID, or a usage error (exit 2) before anything is sent.
fn task_id(text: &str) -> Result<String, String> {
    uuid::Uuid::parse_str(text.trim())
        .map(|id| id.to_string())
        .map_err(|_| format!("{text:?} is not a task id (a UUID, as `task list` shows)"))
}

/// `task ...`
pub async fn run(command: TaskCommand) -> CliResult {
    let client = client()?;
    match command {
        TaskCommand::List { limit, label, json } => list(&client, limit, label, json).await,
        TaskCommand::Show { task_id, json } => show(&client, &task_id, json).await,
        TaskCommand::Wait {
            task_ids,
            timeout,
            timeout_exit_code,
            polling_interval,
            json,
        } => {
            let limit = timeout.map(|s| (s, timeout_exit_code));
            wait(&client, &task_ids, limit, polling_interval, json).await
        }
        TaskCommand::Cancel {
            task_ids,
            label,
            all,
            json,
        } => cancel(&client, task_ids, label, all, json).await,
        TaskCommand::Events { task_id, json } => events(&client, &task_id, json).await,
    }
}

async fn list(client: &TransferClient, limit: u32, label: Option<String>, json: bool) -> CliResult {
    let query = TaskQuery {
        filter: label.map(|l| label_filter(&[l])),
        orderby: Some("request_time DESC".into()),
        limit: Some(limit),
        ..Default::default()
    };
    let page = client.task_list(&query).await?;
    if json {
        return Ok(print_json(&page.data)?);
    }
    for t in &page.data {
        println!(
            "{}  {:<9} {:<8} {}",
            t.task_id,
            t.status,
            t.kind,
            t.label.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

async fn show(client: &TransferClient, task_id: &str, json: bool) -> CliResult {
    let t = client.task(task_id).await?;
    if json {
        return Ok(print_json(&t)?);
    }
    println!("Task ID:           {}", t.task_id);
    println!("Type:              {}", t.kind);
    println!("Status:            {}", t.status);
    println!("Label:             {}", t.label.as_deref().unwrap_or(""));
    println!(
        "Details:           {}",
        t.nice_status.as_deref().unwrap_or("")
    );
    println!("Files:             {}", t.files);
    println!("Bytes Transferred: {}", t.bytes_transferred);
    println!("Deadline:          {}", t.deadline.as_deref().unwrap_or(""));
    if let Some(f) = &t.fatal_error {
        println!("Fatal Error:       {} {}", f.code, f.description);
    }
    Ok(())
}

/// Polls every task in one request a cycle until all are final; `limit` is (seconds,
/// exit code) for `--timeout`.
async fn wait(
    client: &TransferClient,
    task_ids: &[String],
    limit: Option<(u64, u8)>,
    polling_interval: f64,
    json: bool,
) -> CliResult {
    let started = Instant::now();
    let interval = Duration::from_secs_f64(polling_interval.max(0.05));
    loop {
        let tasks = client.tasks_by_id(task_ids, None).await?;
        if let Some(missing) = task_ids
            .iter()
            .find(|id| !tasks.iter().any(|t| &t.task_id == *id))
        {
            return Err(format!("no such task: {missing}").into());
        }
        if tasks.iter().all(Task::is_final) {
            return report_finished(&tasks, json);
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
                eprintln!("\nStopped waiting; the tasks go on.");
                return Err(Box::new(Exit(130, String::new())));
            }
        }
    }
}

/// Exit 0 if every task succeeded, else 1 with each failure on stderr.
fn report_finished(tasks: &[Task], json: bool) -> CliResult {
    if json {
        print_json(&tasks)?;
    }
    let failed: Vec<&Task> = tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Failed)
        .collect();
    for t in &failed {
        let (code, description) = t
            .fatal_error
            .as_ref()
            .map(|f| (f.code.as_str(), f.description.as_str()))
            .unwrap_or(("FAILED", ""));
        eprintln!("task {} FAILED: {code} {description}", t.task_id);
    }
    if failed.is_empty() {
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
    json: bool,
) -> CliResult {
    if label.is_some() || all {
        let mut filter = "status:ACTIVE,INACTIVE".to_string();
        if let Some(label) = &label {
            filter.push_str(&format!("/{}", label_filter(std::slice::from_ref(label))));
        }
        let query = TaskQuery {
            filter: Some(filter),
            limit: Some(1000),
            ..Default::default()
        };
        let page = client.task_list(&query).await?;
        ids.extend(page.data.into_iter().map(|t| t.task_id));
    }
    if ids.is_empty() {
        eprintln!("no task to cancel");
    }
    let mut results = Vec::new();
    for id in ids {
        let result = client.cancel(&id).await?;
        if !json {
            println!("{id}: {}", result.message);
        }
        results.push(json!({"task_id": id, "code": result.code, "message": result.message}));
    }
    if json {
        print_json(&results)?;
    }
    Ok(())
}

async fn events(client: &TransferClient, task_id: &str, json: bool) -> CliResult {
    let events = client.events(task_id, 1000, false).await?.data;
    if json {
        return Ok(print_json(&events)?);
    }
    for e in &events {
        println!("{}  {:<20} {}", e.time, e.code, e.description);
    }
    Ok(())
}

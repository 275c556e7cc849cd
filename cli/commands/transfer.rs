//! `transfer`, `stage-in`, `stage-out`: addresses resolved by `ps_globus::staging`,
//! items submitted through this process's manager, waited for with a progress bar.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::Args;
use indicatif::ProgressBar;
use ps_globus::config::Config;
use ps_globus::internal::HttpsLane;
pub use ps_globus::internal::staging::Direction;
use ps_globus::internal::staging::{
    BatchLine, NO_TIMEOUT, PlannedItem, enqueue, enqueue_with_lane, join_endpoint,
    labels_and_tasks, parse_batch, sync_level, wait_all,
};
use ps_globus::transfer::{BatchOptions, ItemState, ItemStatus, TransferManager};
use serde_json::json;

use super::stop::{self, Interrupt, Stop};
use super::{CommandError, manager, settings};
use crate::output::{BarKind, Output, set_bytes, transfer_bar};
use crate::{CliResult, Exit};

/// Options shared by `transfer`, `stage-in` and `stage-out`.
#[derive(Args)]
pub struct TransferArgs {
    /// Source: SITE:PATH, COLLECTION_UUID:PATH, or a local path (the current site).
    /// With --batch: the source endpoint (SITE, COLLECTION_UUID, or either with
    /// `:BASE_PATH`) that the file's source paths are under.
    #[arg(required_unless_present = "batch", requires = "destination")]
    source: Option<String>,
    /// Destination, in the same forms (with --batch: the destination endpoint).
    #[arg(required_unless_present = "batch")]
    destination: Option<String>,
    /// One `[--recursive] SRC DST` a line, words split as a shell would; `-` reads
    /// standard input. With SRC_EP DST_EP given, SRC and DST are paths under them (as in
    /// globus-cli); without, each is a full address (SITE:PATH, UUID:PATH, local path).
    #[arg(long, value_name = "FILE")]
    batch: Option<String>,
    /// Transfer directories recursively (default: Globus detects files and directories).
    #[arg(short, long)]
    recursive: bool,
    /// Skip files whose destination already matches: exists, size, mtime or checksum.
    #[arg(long, value_parser = ["exists", "size", "mtime", "checksum"])]
    sync_level: Option<String>,
    /// Do not verify checksums after copying (verification is on by default).
    #[arg(long)]
    no_verify_checksum: bool,
    /// Give up at this time (RFC 3339 or `YYYY-MM-DD HH:MM:SS`, UTC).
    #[arg(long, value_parser = deadline)]
    deadline: Option<String>,
    /// The Globus task label (find the tasks again with `task list --label`).
    #[arg(long)]
    label: Option<String>,
    /// Show what would be transferred, submit nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the task ids and return instead of waiting.
    #[arg(long)]
    no_wait: bool,
    /// Give up after this many seconds, counted from the start: submission and waiting
    /// (what was submitted goes on; what was not stays queued, as the report says).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// Exit code when --timeout expires.
    #[arg(long, default_value_t = 1)]
    timeout_exit_code: u8,
    /// Send files of at most this many bytes over the collections' HTTPS instead of a
    /// Globus task (a file here PUT to a destination that serves HTTPS, a stage-in's
    /// file fetched by ranged GET from such a source); a failed request goes by
    /// Transfer. Off by default.
    #[arg(long, value_name = "BYTES")]
    https_max_size: Option<u64>,
    #[command(flatten)]
    out: Output,
}

/// A deadline as typed: a time Globus reads, or a usage error (exit 2) before anything
/// is sent.
fn deadline(text: &str) -> Result<String, String> {
    ps_globus::internal::deadline(text).map_err(|e| e.to_string())
}

/// `transfer`, `stage-in`, `stage-out`. Every step after planning — submission as well
/// as waiting — ends at `--timeout`, at Ctrl-C, or when the manager cannot submit or
/// poll (a refused login exits 4, an unreachable service 1), with a report of what it
/// leaves behind.
pub async fn transfer(args: TransferArgs, direction: Direction) -> CliResult {
    // Refused before anything is sent: a usage error (exit 2).
    let items = plan(&args, direction).map_err(crate::Usage)?;
    if args.dry_run {
        return show_dry_run(&items, &args.out);
    }
    let options = {
        let mut built = BatchOptions::default();
        built.sync_level = args.sync_level.as_deref().map(sync_level).transpose()?;
        built.verify_checksum = !args.no_verify_checksum;
        built.deadline = args.deadline.clone();
        built.label = args.label.clone();
        built
    };
    let deadline = stop::deadline(args.timeout);
    let mut interrupt = Interrupt::catch()?;
    let manager = manager().await?;
    let enqueued = async {
        match args.https_max_size.filter(|n| *n > 0) {
            None => enqueue(&manager, &items, &options).await,
            Some(max) => {
                let config = Config::load(settings())?;
                let current =
                    ps_globus::config::current_site(&config.sites, settings().site.as_deref()).ok();
                let lane = HttpsLane::new(
                    manager.clone(),
                    Arc::new(|collection, scopes| {
                        ps_globus::auth::https_authorizer(settings(), collection, scopes)
                    }),
                );
                enqueue_with_lane(
                    &manager,
                    &items,
                    &options,
                    &lane,
                    max,
                    (&config, current.as_deref()),
                )
                .await
            }
        }
    };
    let handles = tokio::select! {
        handles = enqueued => handles?,
        _ = interrupt.recv() => return Err(stop::end(Stop::Interrupted, &manager, &[], &args.out).await),
    };
    for (item, handle) in items.iter().zip(&handles).filter(|(_, h)| h.earlier) {
        eprintln!(
            "Already queued by an earlier command: {}:{} -> {}:{} (batch {}); following it \
             instead of copying it twice.",
            item.source.collection,
            item.source.path,
            item.destination.collection,
            item.destination_path(),
            handle.label
        );
    }
    let bar = transfer_bar(args.out.machine());
    let total_bytes: Option<i64> = items.iter().map(|i| i.size.map(|s| s as i64)).sum();
    let work = async {
        manager.flush().await?;
        let (labels, task_ids) = labels_and_tasks(&manager, &handles).await?;
        if !args.out.machine() {
            // As globus-cli does, once the tasks exist: whatever happens next, the user
            // has their ids.
            for id in &task_ids {
                println!("Task ID: {id}");
            }
        }
        if args.no_wait {
            return Ok::<_, ps_globus::Error>((labels, task_ids, None));
        }
        let done = AtomicUsize::new(0);
        let waited = wait_all(&manager, &handles, NO_TIMEOUT, |_| {
            done.fetch_add(1, Ordering::Relaxed);
        });
        let progress = show_progress(
            &manager,
            &labels,
            &task_ids,
            &bar,
            total_bytes,
            &done,
            handles.len(),
        );
        let statuses = tokio::select! {
            statuses = waited => statuses?,
            never = progress => match never {},
        };
        Ok((labels, task_ids, Some(statuses)))
    };
    let stopped = tokio::select! {
        done = work => match (done, manager.trouble()) {
            // A refused login ends `flush` and `wait` as soon as the background work
            // meets it, which may be before `troubled` is polled: the same stop, the
            // same report of what is left behind.
            (Err(e), Some(trouble)) if e.needs_login() => Stop::Trouble(trouble),
            (done, _) => {
                bar.finish_and_clear();
                let (labels, task_ids, statuses) = done?;
                return match statuses {
                    None => {
                        // What Globus holds (409) is not submitted yet: say so, and how it goes on.
                        let left = stop::LeftBehind::of(&manager, &handles).await;
                        left.explain_unsubmitted(manager.db().path());
                        let result = transfer_result(&manager, &labels, &task_ids).await;
                        show_submitted(items.len(), &labels, &task_ids, result, &args.out)
                    }
                    Some(statuses) => {
                        let result = transfer_result(&manager, &labels, &task_ids).await;
                        report(&statuses, &task_ids, result, &args.out)
                    }
                };
            }
        },
        trouble = manager.troubled() => Stop::Trouble(trouble),
        _ = interrupt.recv() => Stop::Interrupted,
        _ = stop::until(deadline) => Stop::TimedOut(args.timeout.unwrap_or_default(), args.timeout_exit_code),
    };
    bar.abandon();
    Err(stop::end(stopped, &manager, &handles, &args.out).await)
}

/// Redraws the transfer's bar twice a second, forever: the bytes its batches moved (as
/// last polled) toward the total of the sizes known, the items done, the task ids.
async fn show_progress(
    manager: &TransferManager,
    labels: &[String],
    task_ids: &[String],
    bar: &ProgressBar,
    total_bytes: Option<i64>,
    done: &AtomicUsize,
    items: usize,
) -> std::convert::Infallible {
    loop {
        let mut bytes = 0;
        for label in labels {
            if let Ok(Some(batch)) = manager.batch(label).await {
                bytes += batch.bytes_transferred;
            }
        }
        set_bytes(bar, bytes, total_bytes, BarKind::Total);
        bar.set_message(format!(
            "{}/{items} items, task(s) {}",
            done.load(Ordering::Relaxed),
            task_ids.join(" ")
        ));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The items the arguments name, checked against the direction.
fn plan(args: &TransferArgs, direction: Direction) -> Result<Vec<PlannedItem>, CommandError> {
    let config = Config::load(settings())?;
    let current = ps_globus::config::current_site(&config.sites, settings().site.as_deref());
    // A PS_GLOBUS_SITE that names no site is a mistake even where no local path needs it.
    let current = match current {
        Err(e) if settings().site.is_some() => return Err(e.into()),
        current => current,
    };
    let mut lines = match &args.batch {
        Some(file) => {
            let text =
                crate::read_input(file).map_err(|e| crate::Exit(2, format!("--batch: {e}")))?;
            let mut lines = parse_batch(&text)?;
            if let (Some(src_ep), Some(dst_ep)) = (&args.source, &args.destination) {
                for line in &mut lines {
                    line.source = join_endpoint(src_ep, &line.source);
                    line.destination = join_endpoint(dst_ep, &line.destination);
                }
            }
            lines
        }
        None => vec![BatchLine {
            source: args.source.clone().expect("clap requires it"),
            destination: args.destination.clone().expect("clap requires it"),
            recursive: false,
        }],
    };
    for line in &mut lines {
        line.recursive |= args.recursive;
    }
    // Refused before anything is shown or submitted, dry runs included.
    Ok(ps_globus::internal::staging::plan(
        &lines, direction, &config, &current,
    )?)
}

fn show_dry_run(items: &[PlannedItem], out: &Output) -> CliResult {
    if out.machine() {
        out.emit(&json!({"dry_run": true, "items": items}))?;
    } else {
        for i in items {
            println!(
                "{}:{} -> {}:{}",
                i.source.collection, i.source.path, i.destination.collection, i.destination.path
            );
        }
        eprintln!("dry run: {} item(s), nothing submitted", items.len());
    }
    Ok(())
}

/// globus-cli's `transfer_result` fields, where the transfer made one task (what a
/// script reads with `--jmespath task_id`): the task and submission ids, and the code and
/// message Globus gives an accepted transfer. (`request_id` is not kept.)
async fn transfer_result(
    manager: &ps_globus::transfer::TransferManager,
    labels: &[String],
    task_ids: &[String],
) -> serde_json::Map<String, serde_json::Value> {
    let [task_id] = task_ids else {
        return serde_json::Map::new();
    };
    let mut submission_id = None;
    for label in labels {
        if let Ok(Some(batch)) = manager.batch(label).await
            && batch.task_id.as_deref() == Some(task_id)
        {
            submission_id = batch.submission_id;
        }
    }
    let doc = json!({
        "DATA_TYPE": "transfer_result",
        "code": "Accepted",
        "message": "The transfer has been accepted and a task has been created and queued for execution",
        "resource": "/transfer",
        "submission_id": submission_id,
        "task_id": task_id,
        "task_link": {"DATA_TYPE": "link", "href": format!("task/{task_id}?format=json"),
                      "rel": "related", "resource": "task", "title": "related task"},
    });
    doc.as_object().cloned().unwrap_or_default()
}

/// Prints a transfer's machine-readable document: globus-cli's fields and ours. A
/// `--jmespath` that selects nothing in it is exit 1: a script would otherwise take
/// `None` for a task id.
fn emit_result(
    mut result: serde_json::Map<String, serde_json::Value>,
    ours: serde_json::Value,
    out: &Output,
) -> CliResult {
    result.extend(ours.as_object().cloned().unwrap_or_default());
    out.emit(&result)?;
    if out.selects_nothing(&result) {
        let mut fields: Vec<&String> = result.keys().collect();
        fields.sort();
        let fields: Vec<&str> = fields.iter().map(|f| f.as_str()).collect();
        return Err(Exit(
            1,
            format!(
                "--jmespath selected nothing from the transfer's document; its fields are {} \
                 (task_id only where the transfer made one task: else use task_ids)",
                fields.join(", ")
            ),
        )
        .into());
    }
    Ok(())
}

fn show_submitted(
    items: usize,
    labels: &[String],
    task_ids: &[String],
    result: serde_json::Map<String, serde_json::Value>,
    out: &Output,
) -> CliResult {
    if out.machine() {
        let ours = json!({"items": items, "task_ids": task_ids, "labels": labels});
        emit_result(result, ours, out)?;
    } else {
        eprintln!(
            "{items} item(s) submitted in {} task(s); wait with `ps-globus task wait {}`",
            task_ids.len(),
            task_ids.join(" ")
        );
    }
    Ok(())
}

fn report(
    statuses: &[ItemStatus],
    first_ids: &[String],
    result: serde_json::Map<String, serde_json::Value>,
    out: &Output,
) -> CliResult {
    // Batches Globus held at first became tasks later: those ids are new here.
    let mut task_ids = first_ids.to_vec();
    for id in statuses.iter().filter_map(|s| s.task_id.as_ref()) {
        if !task_ids.contains(id) {
            if !out.machine() {
                println!("Task ID: {id}");
            }
            task_ids.push(id.clone());
        }
    }
    let failed: Vec<&ItemStatus> = statuses
        .iter()
        .filter(|s| s.state != ItemState::Succeeded)
        .collect();
    if out.machine() {
        let ours = json!({
            "task_ids": task_ids,
            "items": statuses.len(),
            "succeeded": statuses.len() - failed.len(),
            "failed": failed,
        });
        emit_result(result, ours, out)?;
    } else {
        eprintln!(
            "{} of {} item(s) succeeded in {} task(s)",
            statuses.len() - failed.len(),
            statuses.len(),
            task_ids.len()
        );
    }
    let mut paused = None;
    for f in &failed {
        match f.error() {
            Some(e) if e.is::<ps_globus::error::NeedsAttention>() => {
                eprintln!("PAUSED {} -> {}: {e}", f.source_path, f.destination_path);
                paused = Some(e);
            }
            _ => eprintln!(
                "FAILED {} -> {}: {}",
                f.source_path,
                f.destination_path,
                crate::output::code_and_reason(
                    f.code.as_deref().unwrap_or(f.state.as_str()),
                    f.description.as_deref().unwrap_or("")
                )
            ),
        }
    }
    if let Some(e) = paused {
        // Exit 4 with the remedy: the paused task resumes once the login is renewed.
        return Err(Box::new(e));
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Box::new(Exit(
            1,
            format!("{} item(s) failed", failed.len()),
        )))
    }
}

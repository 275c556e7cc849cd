//! `status [--watch] [--prune]`: what the local state database tracks — every batch with
//! its outcome judged by its items (a task that skipped a file on an error is FAILED
//! here), work that never reached Globus, and live totals. In a terminal, `--watch`
//! shows a bar per task in flight and an aggregate bar (bytes toward the known total,
//! rate, ETA); elsewhere it prints the table again each second.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use clap::Args;
use indicatif::{HumanBytes, MultiProgress, ProgressBar};
use ps_globus::transfer::{BatchState, BatchStatus, TransferManager, Unsubmitted};
use serde_json::json;

use super::{observer, site_names};
use crate::CliResult;
use crate::output::{BarKind, Output, aggregate_bar, print_table, set_bytes, task_bar};

/// `status` options.
#[derive(Args)]
pub struct StatusArgs {
    /// Refresh every second until nothing is in flight (Ctrl-C to stop).
    #[arg(long)]
    watch: bool,
    /// Drop never-submitted work that stopped commands left behind (their process is
    /// gone): its items end CANCELED and are never sent. Work a running process holds,
    /// or that is being submitted, is kept.
    #[arg(long, conflicts_with = "watch")]
    prune: bool,
    /// How many recent batches to show.
    #[arg(long, default_value_t = 100)]
    limit: i64,
    #[command(flatten)]
    out: Output,
}

/// Totals over the batches still in flight.
struct Totals {
    active: usize,
    bytes: i64,
    /// The bytes of every batch in flight, where all their sizes are known.
    bytes_total: Option<i64>,
    files: i64,
    total_files: i64,
    items_failed: i64,
}

impl Totals {
    fn of(batches: &[BatchStatus]) -> Totals {
        let active: Vec<&BatchStatus> = in_flight(batches).collect();
        Totals {
            active: active.len(),
            bytes: active.iter().map(|b| b.bytes_transferred).sum(),
            bytes_total: active.iter().map(|b| b.bytes_total).sum(),
            files: active.iter().map(|b| b.files_transferred).sum(),
            total_files: active.iter().map(|b| b.files).sum(),
            items_failed: batches.iter().map(BatchStatus::items_failed).sum(),
        }
    }

    /// The files in flight, where Globus has counted them: `3/10 files, ` or nothing.
    fn files(&self) -> String {
        // Globus counts a task's files once it has looked at them: until then, no count.
        match self.total_files {
            0 => String::new(),
            n => format!("{}/{n} files, ", self.files),
        }
    }

    fn summary(&self) -> String {
        let of_total = self
            .bytes_total
            .filter(|t| *t > 0)
            .map(|t| format!(" of {}", HumanBytes(t as u64)))
            .unwrap_or_default();
        format!(
            "in flight: {} task(s), {}{}{of_total} transferred",
            self.active,
            self.files(),
            HumanBytes(self.bytes.max(0) as u64),
        )
    }
}

fn in_flight(batches: &[BatchStatus]) -> impl Iterator<Item = &BatchStatus> {
    batches.iter().filter(|b| b.state != BatchState::Done)
}

/// A task's name on screen: its Globus id, else its batch label.
fn task_name(b: &BatchStatus) -> String {
    b.task_id.clone().unwrap_or_else(|| b.label.clone())
}

/// The bars of `status --watch` in a terminal.
struct LiveView {
    bars: MultiProgress,
    total: ProgressBar,
    per_task: HashMap<String, ProgressBar>,
}

impl LiveView {
    fn new() -> LiveView {
        let bars = MultiProgress::new();
        let total = aggregate_bar(&bars);
        LiveView {
            bars,
            total,
            per_task: HashMap::new(),
        }
    }

    fn show(&mut self, batches: &[BatchStatus], totals: &Totals) {
        set_bytes(
            &self.total,
            totals.bytes,
            totals.bytes_total,
            BarKind::Total,
        );
        self.total
            .set_message(format!("{}{} task(s)", totals.files(), totals.active));
        for b in batches.iter().filter(|b| b.state == BatchState::Done) {
            if let Some(bar) = self
                .per_task
                .get(&task_name(b))
                .filter(|bar| !bar.is_finished())
            {
                set_bytes(bar, b.bytes_transferred, b.bytes_total, BarKind::Task);
                bar.finish_with_message(b.outcome());
            }
        }
        for b in in_flight(batches) {
            let bars = &self.bars;
            let bar = self
                .per_task
                .entry(task_name(b))
                .or_insert_with_key(|id| task_bar(bars, id.clone()));
            set_bytes(bar, b.bytes_transferred, b.bytes_total, BarKind::Task);
            bar.set_message(b.outcome());
        }
    }

    fn finish(self, summary: &str) {
        for bar in self.per_task.values() {
            bar.finish();
        }
        self.total.finish_and_clear();
        println!("{summary}");
    }
}

/// The table of batches, then why any is held up, then the summary.
fn show_table(batches: &[BatchStatus], unsubmitted: &[Unsubmitted], summary: &str) {
    let names = site_names();
    let place = |id: &String| names.get(id).cloned().unwrap_or_else(|| id.clone());
    let rows: Vec<Vec<String>> = batches
        .iter()
        .map(|b| {
            // Always `moved / total`, the total `?` where some item's size is unknown
            // (its source is at another site): one layout for every row.
            let total = b
                .bytes_total
                .map_or_else(|| "?".into(), |t| HumanBytes(t.max(0) as u64).to_string());
            vec![
                task_name(b),
                b.outcome(),
                format!(
                    "{} ok, {} failed, {} pending",
                    b.items_succeeded,
                    b.items_failed(),
                    b.items_pending
                ),
                format!(
                    "{} / {total}",
                    HumanBytes(b.bytes_transferred.max(0) as u64)
                ),
                place(&b.source),
                place(&b.destination),
            ]
        })
        .collect();
    print_table(
        &[
            "Task ID / Batch",
            "Status",
            "Items",
            "Bytes",
            "Source",
            "Destination",
        ],
        &rows,
    );
    for b in in_flight(batches) {
        // Why a batch is not moving, where Globus or a person holds it up.
        if let (Some(until), Some(why)) = (b.held_until, &b.last_error) {
            println!(
                "{}: waiting until {}: {why}",
                task_name(b),
                until.format("%H:%M:%S")
            );
        }
        if let Some(why) = &b.attention {
            println!("{}: needs attention: {why}", task_name(b));
        }
    }
    for u in unsubmitted {
        let b = &u.batch;
        let whose = if u.owner_alive {
            "its process is still running and submits it"
        } else {
            "left behind by a stopped command: the next `ps-globus transfer` submits it; \
             drop it with `ps-globus status --prune`"
        };
        let why = b
            .last_error
            .as_deref()
            .map(|e| format!(" Last error: {e}."))
            .unwrap_or_default();
        println!(
            "Not submitted: batch {} ({} item(s), {}, as {}): {whose}.{why}",
            b.label, b.items, b.state, b.identity
        );
    }
    println!("{summary}");
}

/// `status [--watch] [--prune] [-F json|unix]`.
pub async fn status(args: StatusArgs) -> CliResult {
    let manager = observer().await?;
    if args.prune {
        return prune(&manager, &args.out).await;
    }
    let out = &args.out;
    let mut live =
        (args.watch && !out.machine() && std::io::stdout().is_terminal()).then(LiveView::new);
    loop {
        manager.poll_now().await?;
        let batches = manager.batches(args.limit).await?;
        let unsubmitted = manager.unsubmitted(args.limit).await?;
        let totals = Totals::of(&batches);
        if out.machine() {
            return out.emit(&json!({
                "active": totals.active,
                "bytes_transferred": totals.bytes,
                "bytes_total": totals.bytes_total,
                "files_transferred": totals.files,
                "files": totals.total_files,
                "items_failed": totals.items_failed,
                "DATA": batches.iter().map(judged).collect::<Vec<_>>(),
                "unsubmitted": unsubmitted,
            }));
        }
        let summary = totals.summary();
        match &mut live {
            Some(view) => view.show(&batches, &totals),
            None => show_table(&batches, &unsubmitted, &summary),
        }
        if !args.watch || totals.active == 0 {
            if let Some(view) = live {
                view.finish(&summary);
            }
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// A batch's document with its outcome judged by its items (`outcome`, `items_failed`).
fn judged(b: &BatchStatus) -> serde_json::Value {
    let mut doc = json!(b);
    doc["outcome"] = json!(b.outcome());
    doc["items_failed"] = json!(b.items_failed());
    doc
}

/// `status --prune`: drops what stopped commands left unsubmitted, and says so.
async fn prune(manager: &TransferManager, out: &Output) -> CliResult {
    let dropped = manager.prune_unsubmitted().await?;
    if out.machine() {
        return out.emit(&json!({ "DATA": dropped }));
    }
    for u in &dropped {
        println!(
            "Dropped batch {} ({} item(s), never submitted)",
            u.batch.label, u.batch.items
        );
    }
    println!("{} batch(es) dropped", dropped.len());
    Ok(())
}

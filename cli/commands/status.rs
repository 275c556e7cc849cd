//! `status [--watch]`: what the local state database tracks, with live totals. In a
//! terminal, `--watch` shows a bar per task in flight and an aggregate bar (files,
//! bytes, rate, ETA); elsewhere it prints plain lines.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, MultiProgress, ProgressBar};
use ps_globus::transfer::{BatchState, BatchStatus};
use serde_json::json;

use super::manager;
use crate::CliResult;
use crate::output::{aggregate_bar, print_json, task_bar};

/// Totals over the batches still in flight.
struct Totals {
    active: usize,
    bytes: i64,
    files: i64,
    total_files: i64,
}

impl Totals {
    fn of(batches: &[BatchStatus]) -> Totals {
        let active: Vec<&BatchStatus> = in_flight(batches).collect();
        Totals {
            active: active.len(),
            bytes: active.iter().map(|b| b.bytes_transferred).sum(),
            files: active.iter().map(|b| b.files_transferred).sum(),
            total_files: active.iter().map(|b| b.files).sum(),
        }
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

    fn show(&mut self, batches: &[BatchStatus], totals: &Totals, summary: &str) {
        self.total.set_length(totals.total_files.max(0) as u64);
        self.total.set_position(totals.files.max(0) as u64);
        self.total.set_message(summary.to_owned());
        for b in batches.iter().filter(|b| b.state == BatchState::Done) {
            if let Some(bar) = self
                .per_task
                .get(&task_name(b))
                .filter(|bar| !bar.is_finished())
            {
                bar.set_position(b.files_transferred.max(0) as u64);
                bar.finish_with_message(format!(
                    "{} {}",
                    b.status.as_ref().map_or("DONE", |s| s.as_str()),
                    HumanBytes(b.bytes_transferred.max(0) as u64)
                ));
            }
        }
        for b in in_flight(batches) {
            let bars = &self.bars;
            let bar = self
                .per_task
                .entry(task_name(b))
                .or_insert_with_key(|id| task_bar(bars, id.clone()));
            bar.set_length(b.files.max(0) as u64);
            bar.set_position(b.files_transferred.max(0) as u64);
            bar.set_message(format!(
                "{} {}",
                b.status.as_ref().map_or(b.state.as_str(), |s| s.as_str()),
                HumanBytes(b.bytes_transferred.max(0) as u64)
            ));
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

fn show_plain(batches: &[BatchStatus], summary: &str) {
    for b in batches {
        println!(
            "{:<38} {:<10} {:<9} {:>6}/{:<6} files {:>12} bytes",
            b.task_id.as_deref().unwrap_or(&b.label),
            b.state,
            b.status.as_ref().map_or("-", |s| s.as_str()),
            b.files_transferred,
            b.files,
            b.bytes_transferred
        );
        // Why a batch is not moving, where Globus or a person holds it up.
        if b.state != BatchState::Done {
            if let (Some(until), Some(why)) = (b.held_until, &b.last_error) {
                println!("    waiting until {}: {why}", until.format("%H:%M:%S"));
            }
            if let Some(why) = &b.attention {
                println!("    needs attention: {why}");
            }
        }
    }
    println!("{summary}");
}

/// `status [--watch] [--json]`.
pub async fn status(watch: bool, json_out: bool) -> CliResult {
    let manager = manager().await?;
    let mut live = (watch && !json_out && std::io::stdout().is_terminal()).then(LiveView::new);
    let (mut last_bytes, mut last_time) = (None::<i64>, Instant::now());
    loop {
        manager.poll_now().await?;
        let batches = manager.batches(100).await?;
        let totals = Totals::of(&batches);
        if json_out {
            return Ok(print_json(&json!({
                "active": totals.active,
                "bytes_transferred": totals.bytes,
                "files_transferred": totals.files,
                "files": totals.total_files,
                "batches": batches,
            }))?);
        }
        let elapsed = last_time.elapsed().as_secs_f64().max(1e-3);
        let rate = last_bytes.map_or(0.0, |b| (totals.bytes - b).max(0) as f64 / elapsed);
        (last_bytes, last_time) = (Some(totals.bytes), Instant::now());
        let summary = format!(
            "in flight: {} task(s), {}/{} files, {} transferred, {}/s",
            totals.active,
            totals.files,
            totals.total_files,
            HumanBytes(totals.bytes as u64),
            HumanBytes(rate as u64)
        );
        match &mut live {
            Some(view) => view.show(&batches, &totals, &summary),
            None => show_plain(&batches, &summary),
        }
        if !watch || totals.active == 0 {
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

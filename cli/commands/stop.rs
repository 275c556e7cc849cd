//! How a waiting command ends early — Ctrl-C, `--timeout`, or trouble the transfer
//! manager cannot fix by itself (a refused login, an unreachable service) — and the
//! report of what it leaves behind: tasks that go on at Globus, and items never
//! submitted, each with the command that resumes or cancels it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ps_globus::transfer::{BatchState, Enqueued, TransferManager, Trouble};
use serde::Serialize;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::Exit;
use crate::output::Output;

/// Why a command stopped before its work was done.
pub enum Stop {
    /// Ctrl-C (SIGINT).
    Interrupted,
    /// `--timeout` expired after this many seconds.
    TimedOut(u64, u8),
    /// The manager cannot submit or poll (after the client's bounded retries).
    Trouble(Trouble),
}

/// SIGINT, caught from the moment this exists (not from the first wait on it), so that
/// Ctrl-C at any step of a command ends with the report rather than a silent kill.
pub struct Interrupt(Signal);

impl Interrupt {
    pub fn catch() -> std::io::Result<Interrupt> {
        Ok(Interrupt(signal(SignalKind::interrupt())?))
    }

    pub async fn recv(&mut self) {
        self.0.recv().await;
    }
}

/// Sleeps until `deadline`, or forever without one.
pub async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The deadline of `--timeout SECONDS`, counted from now.
pub fn deadline(timeout: Option<u64>) -> Option<Instant> {
    timeout.map(|s| ps_globus::internal::deadline_after(Duration::from_secs(s)))
}

/// What a stopped command leaves behind.
#[derive(Serialize, Default)]
pub struct LeftBehind {
    /// Globus tasks of the command's items that are still running.
    pub running_tasks: Vec<String>,
    /// Batches of the command's items not (yet known to be) at Globus, by label.
    pub unsubmitted: BTreeMap<String, Unsubmitted>,
}

/// A batch of a command's items without a task.
#[derive(Serialize, Default)]
pub struct Unsubmitted {
    /// Its items of this command.
    pub items: usize,
    /// Whether its submission id is fixed (`SUBMITTING`): it may already be a task,
    /// so it is re-posted, never dropped.
    pub submitting: bool,
}

impl LeftBehind {
    /// Reads where each of `handles` stands.
    pub async fn of(manager: &TransferManager, handles: &[Enqueued]) -> LeftBehind {
        let mut left = LeftBehind::default();
        for handle in handles {
            let Ok(item) = manager.item(handle.item).await else {
                continue;
            };
            if item.is_final() {
                continue;
            }
            match (&item.task_id, &item.batch_state) {
                (Some(task), _) => {
                    if !left.running_tasks.contains(task) {
                        left.running_tasks.push(task.clone());
                    }
                }
                (None, BatchState::Done) => {}
                (None, state) => {
                    let batch = left.unsubmitted.entry(item.label.clone()).or_default();
                    batch.items += 1;
                    batch.submitting = *state == BatchState::Submitting;
                }
            }
        }
        left
    }

    /// The report on stderr: each thing left behind with how to resume or cancel it.
    pub fn explain(&self, db: &std::path::Path) {
        if !self.running_tasks.is_empty() {
            let ids = self.running_tasks.join(" ");
            eprintln!(
                "Left running at Globus: {} task(s). Wait with `ps-globus task wait {ids}`, \
                 or cancel with `ps-globus task cancel {ids}`.",
                self.running_tasks.len()
            );
        }
        self.explain_unsubmitted(db);
        if self.running_tasks.is_empty() && self.unsubmitted.is_empty() {
            eprintln!("Nothing was left behind.");
        }
    }
}

impl LeftBehind {
    /// The items not (yet) submitted, each batch with how to resume or drop it.
    pub fn explain_unsubmitted(&self, db: &std::path::Path) {
        for (label, batch) in &self.unsubmitted {
            let items = batch.items;
            if batch.submitting {
                eprintln!(
                    "Not submitted yet: {items} item(s) in batch {label}, kept in {}. Globus \
                     asked it to wait (`ps-globus status` says why); the next `ps-globus \
                     transfer` on this state database posts it again, exactly once.",
                    db.display()
                );
            } else {
                eprintln!(
                    "Not submitted: {items} item(s) in batch {label}, kept in {}. Running \
                     this command again submits them once (not twice), whatever the \
                     credentials; so does the next `ps-globus transfer` on this state \
                     database as the same identity. `ps-globus status` shows them (and why \
                     they wait); drop them with `ps-globus task cancel {label}` or \
                     `ps-globus status --prune`.",
                    db.display()
                );
            }
        }
    }
}

/// Ends a command that stopped early: prints why, what it leaves behind and how to
/// resume or cancel it (stderr, and a document on stdout for `-F json|unix`), stops
/// the manager (so the exit does not try to submit again), and returns the exit code
/// globus-cli would use.
pub async fn end(
    stop: Stop,
    manager: &TransferManager,
    handles: &[Enqueued],
    out: &Output,
) -> Box<dyn std::error::Error> {
    let left = LeftBehind::of(manager, handles).await;
    manager.shutdown();
    let (code, reason) = match &stop {
        Stop::Interrupted => (130, "interrupted".to_owned()),
        Stop::TimedOut(seconds, code) => (*code, format!("not done after {seconds} seconds")),
        Stop::Trouble(t) => (if t.error.needs_login() { 4 } else { 1 }, t.to_string()),
    };
    if out.machine() {
        let _ = out.emit(&serde_json::json!({"stopped": reason, "left_behind": left}));
    }
    eprintln!();
    match &stop {
        Stop::Interrupted => eprintln!("Stopped waiting (Ctrl-C); the transfer goes on."),
        Stop::TimedOut(seconds, _) => {
            eprintln!("Transfer has yet to complete after {seconds} seconds.")
        }
        Stop::Trouble(t) => {
            eprintln!("error: {t}");
            if let Some(hint) = crate::hint::hint(&t.error) {
                eprintln!("hint: {hint}");
            }
        }
    }
    left.explain(manager.db().path());
    Box::new(Exit(code, String::new()))
}

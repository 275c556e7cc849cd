//! Polling Globus and turning what it says into per-item outcomes.
//!
//! One poller per identity and database (the process holding the lease) lists every task
//! in flight with `task_list?filter=task_id:...`, adapting its interval: fast while tasks
//! are young or progressing, backing off for long ones. Other processes read the results
//! from the database. Outcomes per item: skipped source errors fail only their own item;
//! a task stuck ACTIVE on a fatal `nice_status` for `fail_fast_after` is cancelled, its
//! failing items failed with the Globus reason and the rest re-split into a new batch
//! (once); an INACTIVE task is [`Error::NeedsAttention`].

use std::collections::{BTreeSet, HashMap};

use super::sql::{self, BatchEnd, FailFast, InFlight, Observed, PendingItem, now_ms};
use super::status::ItemStatus;
use super::{Inner, new_label};
use crate::error::{Error, Result};
use crate::transfer::states::{ItemState, TaskStatus};
use crate::transfer::types::{Task, normalise_path as normalise};

/// The `nice_status` values that never clear up by themselves while a task stays ACTIVE.
const FATAL_NICE_STATUSES: &[&str] = &[
    "FILE_NOT_FOUND",
    "PERMISSION_DENIED",
    "QUOTA_EXCEEDED",
    "NOT_A_DIRECTORY",
    "IS_A_DIRECTORY",
    "CHECKSUM_MISMATCH",
    "AMBIGUOUS_PATH",
    "FILE_SIZE_CHANGED",
];

impl Inner {
    /// One poll of every task in flight; returns whether anything is young or moved.
    pub(super) async fn poll_once(&self) -> Result<bool> {
        let rows = sql::in_flight(&self.db, &self.identity).await?;
        if rows.is_empty() {
            return Ok(false);
        }
        self.poll_cycles
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ids: Vec<String> = rows.iter().map(|r| r.task_id.clone()).collect();
        let tasks = self.client.tasks_by_id(&ids, None).await?;
        let by_id: HashMap<&str, &Task> = tasks.iter().map(|t| (t.task_id.as_str(), t)).collect();
        let now = now_ms();
        let mut lively = false;
        let mut observed = Vec::new();
        let mut finals = Vec::new();
        let mut stuck = Vec::new();
        let mut missing = Vec::new();
        for row in &rows {
            let Some(task) = by_id.get(row.task_id.as_str()).copied() else {
                // Past its first moments, a task the list lacks may be one the service
                // lost: asked for directly below.
                if now - row.submitted_at >= self.config.young.as_millis() as i64 {
                    missing.push(row);
                }
                continue;
            };
            lively |= now - row.submitted_at < self.config.young.as_millis() as i64
                || task.bytes_transferred as i64 != row.bytes_transferred
                || row.status.as_deref() != Some(task.status.as_str());
            let fatal_since = fatal_since(row, task, now);
            observed.push(Observed {
                batch: row.id,
                task,
                fatal_since,
            });
            if task.is_final() {
                finals.push((row.id, task));
            } else if fatal_since
                .is_some_and(|s| now - s >= self.config.fail_fast_after.as_millis() as i64)
            {
                stuck.push((row.id, task, row.resplit_of.is_some()));
            }
        }
        sql::record_poll(&self.db, &observed).await?;
        self.signals.changed.notify_waiters();
        for (batch, task) in finals {
            self.finalize(batch, task).await?;
        }
        for (batch, task, already_resplit) in stuck {
            self.fail_fast(batch, task, already_resplit).await?;
            lively = true;
        }
        for row in missing {
            self.fail_if_unknown(row).await?;
        }
        Ok(lively)
    }

    /// Ends a batch whose task the service no longer knows (it lost it in a restart, or
    /// the task was deleted from history): nothing more will happen to it, so waiting
    /// would never end. A task the direct lookup still finds is left alone.
    async fn fail_if_unknown(&self, row: &InFlight) -> Result<()> {
        match self.client.task(&row.task_id).await {
            Err(Error::Api { status: 404, .. }) => {
                let description = format!(
                    "Globus no longer knows task {} (the service lost it, or it was deleted \
                     from history); nothing more will happen to it: transfer the items again",
                    row.task_id
                );
                self.finish_batch(BatchEnd {
                    batch: row.id,
                    task: None,
                    code: "TASK_NOT_FOUND",
                    description: &description,
                    succeeded: &[],
                })
                .await
            }
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!("looking up task {} failed, will retry: {e}", row.task_id);
                Ok(())
            }
        }
    }

    /// Records a finished task's outcome per item.
    async fn finalize(&self, batch: i64, task: &Task) -> Result<()> {
        let items = sql::pending_items(&self.db, batch).await?;
        if task.status == TaskStatus::Succeeded {
            // Only the skipped sources fail; everything else was copied.
            let skipped = if task.subtasks_skipped_errors > 0 {
                self.client.skipped_errors(&task.task_id).await?
            } else {
                Vec::new()
            };
            let failed: HashMap<i64, (String, String)> = items
                .iter()
                .filter_map(|(id, source, _)| {
                    skipped
                        .iter()
                        .find(|s| normalise(&s.source_path) == normalise(source))
                        .map(|s| (*id, (s.error_code.clone(), s.error_details.clone())))
                })
                .collect();
            sql::finish_succeeded(&self.db, batch, &items, &failed).await?;
            self.signals.changed.notify_waiters();
            return Ok(());
        }
        let fatal = task.fatal_error.clone();
        let code = fatal
            .as_ref()
            .map_or("FAILED".to_owned(), |f| f.code.clone());
        let mut description = fatal.map_or_else(String::new, |f| f.description);
        if let Ok(events) = self.client.events(&task.task_id, 1, true).await
            && let Some(event) = events
                .data
                .into_iter()
                .next()
                .filter(|e| !e.details.is_empty())
        {
            description = format!("{description}: {}", event.details);
        }
        let succeeded = self.succeeded_items(task, &items).await?;
        self.finish_batch(BatchEnd {
            batch,
            task: Some(task),
            code: &code,
            description: &description,
            succeeded: &succeeded,
        })
        .await
    }

    /// The pending items Globus reports as copied.
    async fn succeeded_items(&self, task: &Task, items: &[PendingItem]) -> Result<Vec<i64>> {
        if task.files_transferred == 0 {
            return Ok(Vec::new());
        }
        let done: BTreeSet<String> = self
            .client
            .successful_transfers(&task.task_id)
            .await?
            .into_iter()
            .map(|t| normalise(&t.destination_path))
            .collect();
        Ok(items
            .iter()
            .filter(|(_, _, d)| done.contains(&normalise(d)))
            .map(|(id, _, _)| *id)
            .collect())
    }

    /// Cancels a task stuck on a fatal error, fails the failing items with the Globus
    /// reason and re-splits the rest into a new batch (once: a re-split that sticks too
    /// fails all its items).
    async fn fail_fast(&self, batch: i64, task: &Task, already_resplit: bool) -> Result<()> {
        let code = task.nice_status.clone().unwrap_or_else(|| "FAILED".into());
        let _ = self.client.cancel(&task.task_id).await;
        let final_task = self
            .client
            .task(&task.task_id)
            .await
            .unwrap_or_else(|_| task.clone());
        let items = sql::pending_items(&self.db, batch).await?;
        let succeeded = self.succeeded_items(&final_task, &items).await?;
        let events = self
            .client
            .events(&task.task_id, 100, true)
            .await
            .map(|p| p.data)
            .unwrap_or_default();
        let failing: Vec<(i64, String)> = items
            .iter()
            .filter(|(id, _, _)| !succeeded.contains(id))
            .filter_map(|(id, source, _)| {
                let source = normalise(source);
                events
                    .iter()
                    .find(|e| e.code == code && e.details.contains(&source))
                    .map(|e| (*id, format!("{} ({})", e.description, e.details)))
            })
            .collect();
        let reason = format!(
            "task {} stayed ACTIVE with {code} and was cancelled",
            task.task_id
        );
        let rest: Vec<i64> = items
            .iter()
            .map(|(id, _, _)| *id)
            .filter(|id| !succeeded.contains(id) && !failing.iter().any(|(f, _)| f == id))
            .collect();
        let resplit = !rest.is_empty() && !already_resplit && !failing.is_empty();
        sql::record_fail_fast(
            &self.db,
            &FailFast {
                batch,
                task: &final_task,
                succeeded: &succeeded,
                failing: &failing,
                rest: &rest,
                resplit_label: resplit.then(new_label),
                code: &code,
                reason: &reason,
                identity: &self.identity,
                owner: &self.owner,
            },
        )
        .await?;
        self.signals.changed.notify_waiters();
        self.signals.submit_kick.notify_one();
        Ok(())
    }
}

/// Since when `task` has been ACTIVE on a fatal `nice_status` (`None`: it is not).
fn fatal_since(row: &InFlight, task: &Task, now: i64) -> Option<i64> {
    let fatal = task.status == TaskStatus::Active
        && task
            .nice_status
            .as_deref()
            .is_some_and(|n| FATAL_NICE_STATUSES.contains(&n));
    match (fatal, row.nice_status_since) {
        (false, _) => None,
        (true, Some(since)) if row.nice_status == task.nice_status => Some(since),
        (true, _) => Some(now),
    }
}

/// The result of a wait, if the item is done (or its task needs attention).
pub(super) fn outcome(status: &ItemStatus) -> Option<Result<ItemStatus>> {
    match status.error() {
        Some(error) => Some(Err(error)),
        None if status.state == ItemState::Succeeded => Some(Ok(status.clone())),
        None => None,
    }
}

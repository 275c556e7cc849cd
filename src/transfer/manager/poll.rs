//! Polling Globus and turning what it says into per-item outcomes.
//!
//! One poller per identity and database (the process holding the lease) lists every task
//! in flight with `task_list?filter=task_id:...`, adapting its interval: fast while tasks
//! are young or progressing, backing off for long ones. Other processes read the results
//! from the database. Each item's outcome rests on positive evidence: it succeeded if
//! `successful_transfers` lists it, or if its task succeeded without skipping anything;
//! a skipped source fails only its own item, with its own reason. A task stuck ACTIVE on
//! a fatal `nice_status`, without progress, for `fail_fast_after` is cancelled and what
//! it did not copy is re-split into a new batch (once); an INACTIVE task is
//! [`NeedsAttention`](crate::error::NeedsAttention).

use std::collections::{BTreeSet, HashMap};

use super::Inner;
use super::sql::{self, BatchEnd, InFlight, ItemEnd, Observed, PendingItem, now_ms};
use super::status::ItemStatus;
use crate::error::Result;
use crate::transfer::client::TransferClient;
use crate::transfer::path::normalise_path as normalise;
use crate::transfer::states::{ItemState, TaskStatus};
use crate::transfer::types::{SkippedError, Task};

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
                || moved(row, task)
                || row.status.as_deref() != Some(task.status.as_str());
            let fatal_since = fatal_since(row, task, now);
            let persists = fatal_since
                .is_some_and(|s| now - s >= self.config.fail_fast_after.as_millis() as i64);
            // A permission error that persists needs someone to grant access: cancelling
            // and re-submitting would meet it again. Its readers are told, and it is left
            // to resume once access is granted.
            let needs_human = persists && task.nice_status.as_deref() == Some("PERMISSION_DENIED");
            observed.push(Observed {
                batch: row.id,
                task,
                fatal_since,
                attention: needs_human.then(|| attention(task)),
            });
            if task.is_final() {
                finals.push((row.id, task));
            } else if (persists && !needs_human) || cannot_checksum(task) {
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
        match self.client.lost_task(&row.task_id).await {
            Ok(Some(lost)) => {
                let description = format!("{}: transfer the items again", lost.description);
                self.finish_batch(BatchEnd {
                    batch: row.id,
                    task: None,
                    fatal: Some((&lost.code, &description)),
                    items: Vec::new(),
                    owner: &self.owner,
                })
                .await
            }
            Ok(None) => Ok(()),
            Err(e) => {
                tracing::warn!("looking up task {} failed, will retry: {e}", row.task_id);
                Ok(())
            }
        }
    }

    /// Records a finished task's outcome per item, each on its own evidence.
    async fn finalize(&self, batch: i64, task: &Task) -> Result<()> {
        let items = sql::pending_items(&self.db, batch).await?;
        // A task that succeeded without a skip vouches for every item: nothing to fetch.
        let clean = task.status == TaskStatus::Succeeded && task.subtasks_skipped_errors == 0;
        let evidence = if clean {
            Evidence::default()
        } else {
            Evidence::of(&self.client, task).await?
        };
        if task.status == TaskStatus::Succeeded {
            let items = items
                .iter()
                .map(|item| (item.id, evidence.end_after_success(task, item)))
                .collect();
            return self
                .finish_batch(BatchEnd {
                    batch,
                    task: Some(task),
                    fatal: None,
                    items,
                    owner: &self.owner,
                })
                .await;
        }
        let code = task
            .fatal_error
            .as_ref()
            .map_or("FAILED".to_owned(), |f| f.code.clone());
        let mut description = task
            .fatal_error
            .as_ref()
            .map_or_else(String::new, |f| f.description.clone());
        if let Ok(events) = self.client.events(&task.task_id, 1, true).await
            && let Some(event) = events.data.into_iter().next()
        {
            description = join_reasons(&description, &event.details);
        }
        let unconfirmed = ItemEnd::Failed {
            code: code.clone(),
            description: format!(
                "task {} ended {code} before this item was copied: {description}",
                task.task_id
            ),
        };
        let items = items
            .iter()
            .map(|item| (item.id, evidence.end(item, || unconfirmed.clone())))
            .collect();
        self.finish_batch(BatchEnd {
            batch,
            task: Some(task),
            fatal: Some((&code, &description)),
            items,
            owner: &self.owner,
        })
        .await
    }

    /// Cancels a task stuck on a fatal error. Its copied items succeed and its skipped
    /// ones fail with their own reasons; the rest, which Globus kept failing on or never
    /// reached, are re-split into a new batch (labelled by [`resplit_label`](super::resplit_label)) once: what
    /// a re-split still cannot copy fails with the code it was stuck on.
    async fn fail_fast(&self, batch: i64, task: &Task, already_resplit: bool) -> Result<()> {
        let code = task.nice_status.clone().unwrap_or_else(|| "FAILED".into());
        let _ = self.client.cancel(&task.task_id).await;
        let final_task = self
            .client
            .task(&task.task_id)
            .await
            .unwrap_or_else(|_| task.clone());
        let items = sql::pending_items(&self.db, batch).await?;
        let evidence = Evidence::of(&self.client, &final_task).await?;
        let details = task
            .nice_status_details
            .as_deref()
            .filter(|d| !d.is_empty())
            .unwrap_or("no details given");
        let reason = format!(
            "task {} stayed ACTIVE with {code} ({details}) and was cancelled",
            task.task_id
        );
        let rest = if cannot_checksum(task) {
            // It would never heal: send the items again without the external checksum,
            // and remember the collections so later batches go without one at once.
            tracing::warn!(
                "a collection of task {} cannot compute the requested checksum algorithm; \
                 its items go again without an external checksum (readers still verify \
                 each object's sha256)",
                task.task_id
            );
            let mut unverifiable = self.unverifiable.lock().expect("unverifiable lock");
            for c in [&task.source_endpoint_id, &task.destination_endpoint_id] {
                unverifiable.extend(c.clone());
            }
            ItemEnd::ResplitWithoutChecksum
        } else if already_resplit {
            ItemEnd::Failed {
                code: code.clone(),
                description: format!("not copied twice: {reason}"),
            }
        } else {
            ItemEnd::Resplit
        };
        let items = items
            .iter()
            .map(|item| (item.id, evidence.end(item, || rest.clone())))
            .collect();
        self.finish_batch(BatchEnd {
            batch,
            task: Some(&final_task),
            fatal: Some((&code, &reason)),
            items,
            owner: &self.owner,
        })
        .await?;
        self.signals.submit_kick.notify_one();
        Ok(())
    }
}

/// What Globus reported about a task's paths: the positive evidence each item is judged
/// on. Paths are compared as [`normalise`] reads them, on both sides.
#[derive(Default)]
struct Evidence {
    /// Destination paths of the files copied.
    copied: BTreeSet<String>,
    /// Skipped sources, each with its own reason.
    skipped: Vec<SkippedError>,
}

impl Evidence {
    /// Fetches what the task's documents say (only the lists that can hold anything).
    async fn of(client: &TransferClient, task: &Task) -> Result<Evidence> {
        let copied = if task.files_transferred > 0 {
            client
                .successful_transfers(&task.task_id)
                .await?
                .into_iter()
                .map(|t| normalise(&t.destination_path))
                .collect()
        } else {
            BTreeSet::new()
        };
        let skipped = if task.subtasks_skipped_errors > 0 {
            client.skipped_errors(&task.task_id).await?
        } else {
            Vec::new()
        };
        Ok(Evidence { copied, skipped })
    }

    /// `item`'s end on this evidence: its own skipped error, copied, or `otherwise`.
    fn end(&self, item: &PendingItem, otherwise: impl FnOnce() -> ItemEnd) -> ItemEnd {
        if let Some(s) = self.skipped_error(item) {
            ItemEnd::Failed {
                code: s.error_code.clone(),
                description: s.error_details.clone(),
            }
        } else if self.was_copied(item) {
            ItemEnd::Succeeded
        } else {
            otherwise()
        }
    }

    /// `item`'s end in a task that SUCCEEDED: without a word of it in either list, it
    /// succeeded only if the task skipped nothing (it may have been up to date, or an
    /// empty directory); otherwise nothing proves it was copied.
    fn end_after_success(&self, task: &Task, item: &PendingItem) -> ItemEnd {
        self.end(item, || {
            if task.subtasks_skipped_errors == 0 {
                ItemEnd::Succeeded
            } else {
                ItemEnd::Failed {
                    code: "NOT_CONFIRMED".into(),
                    description: format!(
                        "task {} skipped {} path(s), and Globus lists this item neither as \
                         copied nor as skipped; check {} and transfer it again",
                        task.task_id, task.subtasks_skipped_errors, item.destination_path
                    ),
                }
            }
        })
    }

    /// Whether Globus lists `item` (or, for a directory, a file below it) as copied.
    fn was_copied(&self, item: &PendingItem) -> bool {
        let destination = normalise(&item.destination_path);
        if !item.recursive {
            return self.copied.contains(&destination);
        }
        // The set is ordered: the paths below a directory follow `below` directly.
        let below = under(&destination);
        self.copied.contains(&destination)
            || self
                .copied
                .range(below.clone()..)
                .next()
                .is_some_and(|d| d.starts_with(&below))
    }

    /// The skipped error of `item`'s source (or, for a directory, of a path below it).
    fn skipped_error(&self, item: &PendingItem) -> Option<&SkippedError> {
        let source = normalise(&item.source_path);
        let below = under(&source);
        self.skipped.iter().find(|s| {
            let skipped = normalise(&s.source_path);
            skipped == source || (item.recursive && skipped.starts_with(&below))
        })
    }
}

/// The prefix every path below directory `path` starts with.
fn under(path: &str) -> String {
    format!("{}/", path.trim_end_matches('/'))
}

/// A fatal description and an event's details, without saying the same thing twice.
fn join_reasons(description: &str, details: &str) -> String {
    match (description.trim(), details.trim()) {
        (d, "") => d.to_owned(),
        ("", e) => e.to_owned(),
        (d, e) if d.contains(e) => d.to_owned(),
        (d, e) if e.contains(d) => e.to_owned(),
        (d, e) => format!("{d}: {e}"),
    }
}

/// Whether `task` retries because a collection cannot compute the checksum algorithm
/// asked for: that never heals, so it is acted on at first sight.
fn cannot_checksum(task: &Task) -> bool {
    task.status == TaskStatus::Active
        && task
            .nice_status
            .as_deref()
            .is_some_and(|n| n.contains("CHECKSUM_ALGORITHM"))
}

/// Whether `task` moved since `row` was recorded: bytes, files or subtasks. (Globus
/// keeps a fault in `nice_status` for a while after the task recovered, so the status
/// alone says nothing about liveness.)
fn moved(row: &InFlight, task: &Task) -> bool {
    task.bytes_transferred as i64 != row.bytes_transferred
        || super::rows::progress(task) != row.progress
}

/// What a task that waits for a human waits on, for its readers.
fn attention(task: &Task) -> String {
    let code = task.nice_status.as_deref().unwrap_or("an error");
    match task.nice_status_details.as_deref().map(str::trim) {
        Some(details) if !details.is_empty() => format!("{code} ({details})"),
        _ => code.to_owned(),
    }
}

/// Since when `task` has been ACTIVE on a fatal `nice_status` without moving (`None`:
/// it is not).
fn fatal_since(row: &InFlight, task: &Task, now: i64) -> Option<i64> {
    let fatal = task.status == TaskStatus::Active
        && task
            .nice_status
            .as_deref()
            .is_some_and(|n| FATAL_NICE_STATUSES.contains(&n));
    match (fatal, row.nice_status_since) {
        (false, _) => None,
        // A task that still moves is not stuck: Globus copies the other files while it
        // retries the failing one, so the clock starts when progress stops.
        (true, Some(since)) if row.nice_status == task.nice_status && !moved(row, task) => {
            Some(since)
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn item(source: &str, destination: &str, recursive: bool) -> PendingItem {
        PendingItem {
            id: 1,
            source_path: source.into(),
            destination_path: destination.into(),
            recursive,
        }
    }

    fn skipped(source: &str, code: &str) -> SkippedError {
        SkippedError {
            data_type: "skipped_error".into(),
            source_path: source.into(),
            destination_path: String::new(),
            error_code: code.into(),
            error_details: format!("{code} on {source}"),
            error_time: String::new(),
            is_directory: false,
            is_symlink: false,
            is_delete_destination_extra: false,
            external_checksum: None,
            checksum_algorithm: None,
        }
    }

    fn succeeded_task(skipped_errors: u64) -> Task {
        Task {
            task_id: "t".into(),
            status: TaskStatus::Succeeded,
            subtasks_skipped_errors: skipped_errors,
            ..Task::default()
        }
    }

    /// Defect 5: an item is copied only on positive evidence. Where the task skipped
    /// something and neither list names the item (the paths were read differently, say),
    /// nothing proves it was copied.
    #[test]
    fn an_item_is_reported_copied_only_on_globus_evidence() {
        let evidence = Evidence {
            copied: ["/out/a", "/out/dir/x/y"].map(String::from).into(),
            skipped: vec![
                skipped("/in/gone", "FILE_NOT_FOUND"),
                skipped("/in/tree/bad", "PERMISSION_DENIED"),
            ],
        };
        let with_skips = succeeded_task(2);
        let end = |i: &PendingItem| evidence.end_after_success(&with_skips, i);
        assert_eq!(end(&item("/in/a", "/~/out//a", false)), ItemEnd::Succeeded);
        assert!(matches!(end(&item("/in/gone", "/out/gone", false)),
            ItemEnd::Failed { code, .. } if code == "FILE_NOT_FOUND"));
        assert!(matches!(end(&item("/in/gone ", "/out/gone ", false)),
            ItemEnd::Failed { code, .. } if code == "NOT_CONFIRMED"));
        // A directory: copied if a file below it was, failed by a skip below it.
        assert_eq!(end(&item("/in/dir", "/out/dir", true)), ItemEnd::Succeeded);
        assert!(matches!(end(&item("/in/di", "/out/di", true)),
            ItemEnd::Failed { code, .. } if code == "NOT_CONFIRMED"));
        assert!(matches!(end(&item("/in/tree", "/out/tree", true)),
            ItemEnd::Failed { code, .. } if code == "PERMISSION_DENIED"));
        // Without skips, a succeeded task vouches for every item it held.
        let clean = succeeded_task(0);
        let nothing = Evidence {
            copied: BTreeSet::new(),
            skipped: Vec::new(),
        };
        assert_eq!(
            nothing.end_after_success(&clean, &item("/in/empty", "/out/empty", true)),
            ItemEnd::Succeeded
        );
    }

    #[test]
    fn reasons_are_not_said_twice() {
        assert_eq!(join_reasons("X", "X"), "X");
        assert_eq!(
            join_reasons("quota", "quota exceeded on disk"),
            "quota exceeded on disk"
        );
        assert_eq!(join_reasons("failed", "disk full"), "failed: disk full");
        assert_eq!(join_reasons("", "disk full"), "disk full");
    }

    fn in_flight(task: &Task, since: Option<i64>) -> InFlight {
        InFlight {
            id: 1,
            task_id: "t".into(),
            submitted_at: 0,
            bytes_transferred: task.bytes_transferred as i64,
            progress: super::super::rows::progress(task),
            status: Some("ACTIVE".into()),
            nice_status: task.nice_status.clone(),
            nice_status_since: since,
            resplit_of: None,
        }
    }

    /// A task is stuck only while nothing moves: bytes, files or subtasks. Globus keeps
    /// a fault in `nice_status` after the task recovered, so a task that copies files
    /// (even empty ones, which move no bytes) on a lingering fault is not stuck.
    #[test]
    fn a_task_that_moves_files_on_a_lingering_fault_is_not_stuck() {
        let before = Task {
            task_id: "t".into(),
            status: TaskStatus::Active,
            nice_status: Some("FILE_NOT_FOUND".into()),
            bytes_transferred: 10,
            files_transferred: 1,
            ..Task::default()
        };
        let row = in_flight(&before, Some(1_000));
        assert_eq!(
            fatal_since(&row, &before, 9_000),
            Some(1_000),
            "nothing moved"
        );
        let more_files = Task {
            files_transferred: 2,
            ..before.clone()
        };
        assert_eq!(fatal_since(&row, &more_files, 9_000), Some(9_000));
        let more_subtasks = Task {
            subtasks_skipped_errors: 1,
            ..before.clone()
        };
        assert_eq!(fatal_since(&row, &more_subtasks, 9_000), Some(9_000));
        let more_bytes = Task {
            bytes_transferred: 11,
            ..before.clone()
        };
        assert_eq!(fatal_since(&row, &more_bytes, 9_000), Some(9_000));
        let recovered = Task {
            nice_status: Some("OK".into()),
            ..before
        };
        assert_eq!(fatal_since(&row, &recovered, 9_000), None);
    }

    #[test]
    fn a_collection_that_cannot_compute_the_checksum_is_seen_at_once() {
        let task = Task {
            status: TaskStatus::Active,
            nice_status: Some("UNSUPPORTED_CHECKSUM_ALGORITHM".into()),
            ..Task::default()
        };
        assert!(cannot_checksum(&task));
        let done = Task {
            status: TaskStatus::Failed,
            ..task
        };
        assert!(!cannot_checksum(&done));
    }
}

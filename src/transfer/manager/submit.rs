//! Admission and exactly-once submission.
//!
//! Admission: at most `max_pending_tasks` of the identity's tasks are pending at Globus
//! (counted over every process and host, when the batch is claimed: `claim.rs`);
//! latency work goes first, but every `bulk_every`-th admission goes to waiting bulk
//! work, and bulk leaves a running slot to latency work while there is some (the
//! express lane, `express.rs`). Submission: a fresh id from `GET /submission_id` is
//! committed with the batch (`SUBMITTING`) *before* `POST /transfer`, so a retry or a
//! restarted process re-posts
//! the same id and items, and Globus answers `Duplicate` with the original task id: a
//! batch never becomes two tasks, whenever the process dies.

use super::Inner;
use super::claim::{Claim, Limits, claim, open_mates};
use super::config::{BatchOptions, Priority};
use super::express::Slots;
use super::rows::ItemToPost;
use super::split::refused_as_too_large;
use super::sql::{self, BatchEnd, BatchToPost};
use crate::error::{Error, GlobusApiError, GlobusCode, Result};
use crate::transfer::types::{TransferItem, TransferRequest};

impl Inner {
    /// The next batch to submit, with its submission id if it already has one, if
    /// admission allows one now.
    pub(super) async fn next_to_submit(
        &self,
        admissions: usize,
    ) -> Result<Option<(i64, Option<String>)>> {
        // Set again below if the batch picked waits for mates; a stale "waiting" would
        // wake the idle submitter every `quiet`.
        self.waiting_for_mates
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let pending = sql::pending_at_globus(&self.db, &self.identity).await?;
        let live = self.live_owners().await?;
        let ours = |owner: &String| {
            owner == &self.owner || (self.config.adopt_orphans && !live.contains(owner))
        };
        // Re-posts of batches already at Globus (or about to be) never wait for admission.
        let stuck = sql::submitting(&self.db, &self.identity).await?;
        if let Some((id, _, sid)) = stuck.into_iter().find(|(_, owner, _)| ours(owner)) {
            return Ok(Some((id, sid)));
        }
        if pending as usize >= self.config.max_pending_tasks {
            return Ok(None);
        }
        let mut mine: Vec<(i64, i64)> = sql::ready(&self.db, &self.identity)
            .await?
            .into_iter()
            .filter(|(_, _, owner)| ours(owner))
            .map(|(id, priority, _)| (id, priority))
            .collect();
        // Bulk waiting for its slots (`express.rs`) leaves latency work to go. The claim
        // checks again, in its transaction; this saves it a submission id.
        let bulk = Priority::Bulk.code();
        if mine.iter().any(|(_, p)| *p == bulk) {
            let express = self.express();
            let slots = Slots::of(&self.db, &self.identity, express.window, sql::now_ms()).await?;
            if !express.bulk_may_start(&slots) {
                mine.retain(|(_, p)| *p != bulk);
            }
        }
        let bulk_turn = self.config.bulk_every > 0
            && admissions % self.config.bulk_every == self.config.bulk_every - 1;
        let pick = if bulk_turn {
            mine.iter().find(|(_, p)| *p == bulk).or(mine.first())
        } else {
            mine.first()
        };
        let Some(&(id, _)) = pick else {
            return Ok(None);
        };
        if self.waits_for_mates(id, &live).await? {
            return Ok(None);
        }
        Ok(Some((id, None)))
    }

    /// Whether `batch` should wait a moment before it is claimed: live processes (here or
    /// on other hosts) have open batches that could travel with it, and will close them
    /// within `max_delay` of its own close. The last of them to close claims them all
    /// (`claim.rs`): a burst from many processes becomes the tasks one process would
    /// make. Checked again when the submitter wakes (every `quiet`, while it waits).
    async fn waits_for_mates(
        &self,
        batch: i64,
        live: &std::collections::BTreeSet<String>,
    ) -> Result<bool> {
        let (owners, closed_at) = open_mates(&self.db, batch, &self.owner).await?;
        let waiting = owners.iter().any(|owner| live.contains(owner))
            && closed_at
                .is_some_and(|at| sql::now_ms() - at < self.config.max_delay.as_millis() as i64);
        self.waiting_for_mates
            .store(waiting, std::sync::atomic::Ordering::Relaxed);
        Ok(waiting)
    }

    /// Fixes a submission id for the batch (if it has none), then posts it.
    pub(super) async fn submit(&self, batch: i64, submission_id: Option<String>) -> Result<()> {
        let submission_id = match submission_id {
            Some(sid) => sid,
            None => match self.claim_with_new_id(batch).await? {
                Some(sid) => sid,
                None => return Ok(()),
            },
        };
        let request = self.request_for(batch, submission_id).await?;
        let items = request.data.len();
        let document = serde_json::to_vec(&request).map_or(0, |d| d.len());
        if items > 1 && document > self.config.max_document_bytes {
            let why = format!(
                "{items} items make a {document}-byte document, over max_document_bytes {}",
                self.config.max_document_bytes
            );
            self.split(batch, &why).await?;
            return Ok(());
        }
        self.post(batch, &request).await
    }

    /// Takes a submission id from Globus and claims the batch with it (merging waiting
    /// batches); `None` if another process took it or admission filled meanwhile
    /// (another host's claim): the next round looks again.
    async fn claim_with_new_id(&self, batch: i64) -> Result<Option<String>> {
        let sid = match self.client.submission_id().await {
            Ok(sid) => sid,
            Err(e) => {
                // Said where the batch is shown (`status`), not only in a log.
                sql::record_submit_error(&self.db, batch, &e.to_string()).await?;
                return Err(e);
            }
        };
        let limits = Limits {
            max_pending: self.config.max_pending_tasks,
            express: self.express(),
            max_items: self.config.max_items,
            max_document_bytes: self.config.max_document_bytes,
        };
        match claim(&self.db, batch, &sid, &self.owner, limits).await? {
            Claim::Claimed { merged } if merged > 0 => {
                tracing::debug!("transfer batch {batch} took {merged} waiting batches");
            }
            Claim::Claimed { .. } => {}
            Claim::Taken | Claim::Full => return Ok(None),
        }
        self.fail_point("after-commit");
        Ok(Some(sid))
    }

    /// The batch's transfer request under `submission_id`: `~` paths read as the
    /// collections place them, checksums left out where a collection cannot verify.
    async fn request_for(&self, batch: i64, submission_id: String) -> Result<TransferRequest> {
        let mut to_post = sql::batch_to_post(&self.db, batch).await?;
        self.expand_homes(batch, &mut to_post).await?;
        let unverifiable = {
            let set = self.unverifiable.lock().expect("unverifiable lock");
            set.contains(&to_post.source) || set.contains(&to_post.destination)
        };
        if unverifiable {
            for item in &mut to_post.items {
                item.external_checksum = None;
                item.checksum_algorithm = None;
            }
        }
        Ok(transfer_request(to_post, submission_id))
    }

    /// Posts the batch's `request`, and records what Globus answered.
    async fn post(&self, batch: i64, request: &TransferRequest) -> Result<()> {
        match self.client.submit_transfer(request).await {
            Ok(result) => {
                self.fail_point("after-post");
                sql::mark_submitted(&self.db, batch, &result.task_id).await?;
                self.signals.poll_kick.notify_one();
                self.signals.changed.notify_waiters();
                Ok(())
            }
            // A login or consent that a person must renew: the batch waits for it (same
            // submission id, so still exactly once), as Globus itself pauses a task whose
            // credentials expired. Failing it would lose work a `login` could save.
            Err(e) if e.is_transient() || e.needs_login() => {
                sql::record_submit_error(&self.db, batch, &e.to_string()).await?;
                Err(e)
            }
            // The service's limit is lower than ours: post it in halves (a 413 comes
            // before the document is read, so the submission id stays unused).
            Err(e) if refused_as_too_large(&e) && request.data.len() > 1 => {
                self.split(batch, &e.to_string()).await?;
                Ok(())
            }
            Err(e) if asks_to_wait(&e) => {
                // Identical paths still in flight, or the pending-task limit: the batch
                // waits (same submission id, so still exactly once) while others go on.
                tracing::info!("Globus asked transfer batch {batch} to wait: {e}");
                sql::hold(&self.db, batch, &e.to_string(), MAX_HOLD).await
            }
            Err(e) => {
                // Globus refused the batch for good (bad path, unknown collection, consent,
                // or one item whose document alone is over the service's limit).
                let code = match e.downcast_ref::<GlobusApiError>() {
                    Some(answer) if answer.status == 413 => "RequestTooLarge".into(),
                    Some(answer) => answer.code.to_string(),
                    None => "SubmitFailed".into(),
                };
                self.finish_batch(BatchEnd {
                    batch,
                    task: None,
                    fatal: Some((&code, &e.to_string())),
                    items: Vec::new(),
                    owner: &self.owner,
                })
                .await
            }
        }
    }

    /// Reads paths that lead from `~` as the collection's endpoint document places it
    /// (`default_directory`), and records them so, before the batch is posted: Globus
    /// reports the paths it copied that way, and each item is judged on that report. A
    /// collection that does not say where `~` is keeps the path as given.
    async fn expand_homes(&self, batch: i64, to_post: &mut BatchToPost) -> Result<()> {
        use crate::transfer::path::{collection_path_from, starts_at_home};
        let at_home =
            |i: &ItemToPost| starts_at_home(&i.source_path) || starts_at_home(&i.destination_path);
        if !to_post.items.iter().any(at_home) {
            return Ok(());
        }
        let source_home = self.client.home_directory(&to_post.source).await?;
        let destination_home = self.client.home_directory(&to_post.destination).await?;
        let expand = |path: &mut String, home: &Option<String>| {
            if let Some(home) = home
                && starts_at_home(path)
                && let Ok(full) = collection_path_from(path, home)
            {
                *path = full;
            }
        };
        for item in &mut to_post.items {
            expand(&mut item.source_path, &source_home);
            expand(&mut item.destination_path, &destination_home);
        }
        sql::rewrite_item_paths(&self.db, batch, &to_post.items).await
    }

    /// Ends a batch (see [`BatchEnd`]) and tells the waiters. A task that ended frees
    /// its paths and a pending slot at Globus, so held batches may go now.
    pub(super) async fn finish_batch(&self, end: BatchEnd<'_>) -> Result<()> {
        sql::finish_batch(&self.db, &end).await?;
        if end.task.is_some() {
            sql::lift_holds(&self.db, &self.identity).await?;
            self.signals.submit_kick.notify_one();
        }
        self.signals.changed.notify_waiters();
        Ok(())
    }

    /// Aborts the process at the named point when this build and configuration ask for
    /// it, to test that a crash there loses nothing and duplicates nothing.
    #[cfg(feature = "failpoints")]
    fn fail_point(&self, name: &str) {
        if self.config.failpoint.as_deref() == Some(name) {
            eprintln!("ps-globus: failpoint {name} reached, aborting the process");
            std::process::abort();
        }
    }

    #[cfg(not(feature = "failpoints"))]
    fn fail_point(&self, _name: &str) {}
}

/// The longest a held batch waits before it is posted again (a task's end lifts the
/// hold sooner).
const MAX_HOLD: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether Globus refused a submission only for now: 409 for identical paths still in
/// flight (`Conflict`) or the pending-task limit (`…PendingTaskLimit`), both lifted
/// when earlier tasks end. Neither is a failed batch.
fn asks_to_wait(e: &Error) -> bool {
    e.downcast_ref::<GlobusApiError>().is_some_and(|answer| {
        answer.status == 409
            && matches!(
                answer.code,
                GlobusCode::Conflict | GlobusCode::PendingTaskLimit(_)
            )
    })
}

/// The `POST /transfer` document for a batch. Tasks the manager creates never e-mail.
fn transfer_request(batch: BatchToPost, submission_id: String) -> TransferRequest {
    // Options written by an older build that this one cannot read fall back to defaults.
    let options: BatchOptions = serde_json::from_str(&batch.options).unwrap_or_default();
    TransferRequest {
        data_type: "transfer".into(),
        submission_id,
        source_endpoint: batch.source,
        destination_endpoint: batch.destination,
        data: batch
            .items
            .into_iter()
            .map(|i| TransferItem {
                data_type: "transfer_item".into(),
                source_path: i.source_path,
                destination_path: i.destination_path,
                recursive: i.recursive,
                external_checksum: i.external_checksum,
                checksum_algorithm: i.checksum_algorithm,
            })
            .collect(),
        // The user's label when staging asked for one; the batch keeps its own.
        label: Some(options.label.clone().unwrap_or(batch.label)),
        sync_level: options.sync_level,
        verify_checksum: Some(options.verify_checksum),
        preserve_timestamp: Some(options.preserve_timestamp),
        skip_source_errors: Some(options.skip_source_errors),
        fail_on_quota_errors: Some(options.fail_on_quota_errors),
        deadline: options.deadline.clone(),
        notify_on_succeeded: Some(false),
        notify_on_failed: Some(false),
        notify_on_inactive: Some(false),
        ..TransferRequest::default()
    }
}

//! What a process sends as it exits, and what it says when it could not.
//!
//! A `put` returns once its transfer is committed, while the batch waits a few
//! milliseconds for company; a program that exits right then (an error in its own code, a
//! forgotten `close`) would otherwise leave proxies it already handed out pointing at
//! objects that never travel. So every running manager is flushed at exit. A flush that
//! fails (a login Globus refuses, a service that does not answer) is said on stderr:
//! what was not sent, which state database keeps it, and what to do. The library never
//! changes the exit status of its host program; a host language's own hook may
//! ([`TransferManager::flush_before_exit`] is what it calls). `abort` and `kill -9` skip
//! the hooks: the next process on the same state database submits those batches.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::TransferManager;
use crate::error::{Error, Result};
use crate::runtime;
use crate::state::query::query;
use crate::transfer::states::BatchState;

/// How long the library's exit hook waits for each manager's held-back batches.
const EXIT_FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// Registers, once per process, the exit hook that flushes every running manager and
/// reports what it could not send.
pub(super) fn install_exit_hook() {
    /// The slot's own type: the hook is registered.
    struct ExitHook;
    fn submit_held_back() {
        for manager in TransferManager::running() {
            let report = runtime::block_on(manager.flush_before_exit(EXIT_FLUSH_LIMIT));
            if let Some(report) = report {
                eprintln!("{report}");
            }
        }
    }
    crate::process::inherited(|| {
        runtime::at_exit(submit_held_back);
        ExitHook
    });
}

impl TransferManager {
    /// Flushes this manager within `limit` before the process exits. `None` when
    /// everything it holds reached Globus (or was reported before); otherwise the report
    /// to print: how many items were not sent and why, the state database that keeps
    /// them, and what to do. Each manager's loss is reported once, whichever hook
    /// (Python's `atexit`, the library's) asks first.
    pub async fn flush_before_exit(&self, limit: Duration) -> Option<String> {
        // Requests of the HTTPS lane get half the time to end; what is still on its way
        // then goes by Transfer (a late answer changes nothing), and is submitted.
        let half = limit / 2;
        let flushed = match runtime::timeout(half, self.flush()).await {
            Some(done) => Some(done),
            None => {
                let owner = self.inner.owner.clone();
                if let Err(e) = self
                    .inner
                    .fall_back_lanes_of(&owner, "the process exited first")
                    .await
                {
                    tracing::warn!("moving unfinished HTTPS requests to Transfer at exit: {e}");
                }
                runtime::timeout(limit - half, self.flush()).await
            }
        };
        let error = match flushed {
            Some(Ok(())) => return None,
            Some(Err(e)) => Some(e),
            None => None,
        };
        if self.inner.exit_reported.swap(true, Ordering::SeqCst) {
            return None;
        }
        let (batches, items) = self.unsent_here().await.unwrap_or((-1, -1));
        if batches == 0 {
            return None;
        }
        Some(exit_report(
            items,
            &self.db().path().display().to_string(),
            error.as_ref(),
            limit,
        ))
    }

    /// This process's batches of this identity that have no task yet, and their items.
    async fn unsent_here(&self) -> Result<(i64, i64)> {
        query(
            "SELECT COUNT(DISTINCT batches.id), COUNT(items.id) FROM batches \
             JOIN items ON items.batch_id = batches.id \
             WHERE batches.identity = $1 AND batches.owner = $2 AND batches.task_id IS NULL \
             AND batches.state IN ($3, $4, $5, $6) AND items.state IN ('PENDING', 'HTTPS')",
        )
        .bind(&self.inner.identity)
        .bind(&self.inner.owner)
        .bind(BatchState::Open.as_str())
        .bind(BatchState::Ready.as_str())
        .bind(BatchState::Submitting.as_str())
        .bind(BatchState::Https.as_str())
        .fetch_one_as(&self.inner.db)
        .await
    }
}

/// The words for `items` not sent (negative: unknown), kept in `db`, because of `error`
/// (none: the service did not take them within `limit`).
fn exit_report(items: i64, db: &str, error: Option<&Error>, limit: Duration) -> String {
    let what = if items < 0 {
        "Transfers".to_owned()
    } else {
        format!("{items} transfer item(s)")
    };
    let why = match error {
        Some(e) => e.to_string(),
        None => format!("Globus did not take them within {}s", limit.as_secs()),
    };
    let fix = match error {
        Some(e) if e.needs_login() => {
            "Run `ps-globus login`; the next ps-globus process on this state database \
             (a store, `ps-globus transfer`) submits them"
        }
        _ => {
            "The next ps-globus process on this state database (a store, `ps-globus \
             transfer`) submits them"
        }
    };
    format!(
        "ps-globus: {what} held for Globus were NOT sent before this process exited: {why}.\n\
         ps-globus: they are kept in the state database {db}. {fix}; `ps-globus status` \
         shows them, `ps-globus status --prune` drops them. Readers waiting for these \
         objects wait until then."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_login_at_exit_says_what_was_not_sent_where_it_is_and_to_log_in() {
        let refused = Error::login_required("Globus refused the credentials");
        let report = exit_report(3, "/tmp/x/state.db", Some(&refused), EXIT_FLUSH_LIMIT);
        assert!(report.contains("3 transfer item(s)"), "{report}");
        assert!(report.contains("NOT sent"), "{report}");
        assert!(report.contains("/tmp/x/state.db"), "{report}");
        assert!(report.contains("Run `ps-globus login`"), "{report}");
        let slow = exit_report(-1, "db", None, EXIT_FLUSH_LIMIT);
        assert!(slow.contains("did not take them within 5s"), "{slow}");
        assert!(!slow.contains("login"), "{slow}");
    }
}

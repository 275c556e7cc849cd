//! Work that callers of the manager left running when they returned (the deletion of an
//! evicted object's copies, which waits for the copy's transfer and then for company in
//! a delete task): [`TransferManager::flush`](super::TransferManager::flush) — and so
//! `close` and the exit hook — waits for it and reports its failures.

use std::future::Future;
use std::sync::Mutex;

use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// The manager's background work, each task until it is waited for.
#[derive(Default)]
pub(super) struct Background {
    tasks: Mutex<Vec<JoinHandle<Result<()>>>>,
}

impl Background {
    /// Runs `work` on the library runtime; a failure is logged when it happens and
    /// returned by the next [`finish`](Self::finish) that finds it unfinished.
    pub(super) fn spawn(
        &self,
        what: &'static str,
        work: impl Future<Output = Result<()>> + Send + 'static,
    ) {
        let handle = crate::runtime::handle().spawn(async move {
            let done = work.await;
            if let Err(e) = &done {
                tracing::warn!("{what}: {e}");
            }
            done
        });
        let mut tasks = self.tasks.lock().expect("background tasks poisoned");
        // Finished work was logged if it failed: only what still runs is kept.
        tasks.retain(|task| !task.is_finished());
        tasks.push(handle);
    }

    /// Waits for every task spawned so far (and those they spawn); the first failure.
    pub(super) async fn finish(&self) -> Result<()> {
        let mut first = Ok(());
        loop {
            let tasks = std::mem::take(&mut *self.tasks.lock().expect("background tasks poisoned"));
            if tasks.is_empty() {
                return first;
            }
            for task in tasks {
                let done = task.await.unwrap_or_else(|e| {
                    Err(Error::background(
                        "background work",
                        Some(e.to_string().into()),
                    ))
                });
                if let (Err(e), true) = (done, first.is_ok()) {
                    first = Err(e);
                }
            }
        }
    }
}

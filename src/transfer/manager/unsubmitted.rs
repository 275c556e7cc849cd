//! Work that never reached Globus: batches a command left behind when it was stopped
//! (Ctrl-C, a refused login, a crash) before it could submit them. Each is submitted by
//! the next manager on the state database that adopts orphans, unless someone prunes it.

use serde::Serialize;

use super::sql::{self, BatchQuery};
use super::{BatchStatus, TransferManager};
use crate::error::Result;
use crate::transfer::BatchState;

/// A batch without a task, and whether the process that made it still runs.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Unsubmitted {
    /// The batch (its identity, items, last error).
    #[serde(flatten)]
    pub batch: BatchStatus,
    /// Whether its process is alive (it will submit the batch itself).
    pub owner_alive: bool,
}

impl Unsubmitted {
    /// Whether a prune may drop it: its process is gone, and it was never posted (a
    /// `SUBMITTING` batch, held by Globus or not, may already be a task at Globus: it is
    /// re-posted with its submission id instead, never dropped).
    pub fn prunable(&self) -> bool {
        !self.owner_alive && matches!(self.batch.state, BatchState::Open | BatchState::Ready)
    }
}

impl TransferManager {
    /// Every batch of this state database without a task yet, of every identity, newest
    /// first (at most `limit`).
    pub async fn unsubmitted(&self, limit: i64) -> Result<Vec<Unsubmitted>> {
        let query = BatchQuery {
            unsubmitted: true,
            limit,
            ..Default::default()
        };
        let live = self.inner.live_owners().await?;
        Ok(sql::batches(&self.inner.db, query)
            .await?
            .into_iter()
            .map(|batch| Unsubmitted {
                owner_alive: live.contains(&batch.owner),
                batch,
            })
            .collect())
    }

    /// Cancels every [prunable](Unsubmitted::prunable) batch: its items end `CANCELED`
    /// and are never sent. Returns what it dropped. A batch that another process
    /// adopts and posts meanwhile is not dropped (the cancel checks its state again).
    pub async fn prune_unsubmitted(&self) -> Result<Vec<Unsubmitted>> {
        let mut dropped = Vec::new();
        for leftover in self.unsubmitted(i64::MAX).await? {
            if leftover.prunable()
                && sql::cancel_unsubmitted(&self.inner.db, &leftover.batch.label).await?
            {
                dropped.push(leftover);
            }
        }
        if !dropped.is_empty() {
            self.inner.signals.changed.notify_waiters();
        }
        Ok(dropped)
    }
}

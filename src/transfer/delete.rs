//! Coalesces deletions: the paths deleted close together on one collection become one
//! Globus delete task (an eviction of many objects is one task, not one per object).
//!
//! A deletion that must first wait (an eviction lets the object's transfer finish, or
//! the delete could land before the copy) takes a [`DeleteHold`] before it waits. A
//! batch is submitted [`QUIET`] after its first path when no hold is outstanding, and
//! at the latest [`MAX_HOLD`] after it: so concurrent evictions share one task even when
//! one of them waits a poll cycle for its transfer, and a long wait delays nobody else
//! for more than [`MAX_HOLD`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, oneshot};

use super::client::TransferClient;
use super::types::{DeleteItem, DeleteRequest};
use crate::error::{Error, Result};

/// How long a batch waits for more paths when nobody holds a place in it.
pub(crate) const QUIET: Duration = Duration::from_millis(20);

/// How long a batch waits at most for deletions that hold a place in it.
pub(crate) const MAX_HOLD: Duration = Duration::from_secs(2);

/// The delete batcher of one identity. Share it with an `Arc`.
pub(crate) struct Deleter {
    client: TransferClient,
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Default)]
struct State {
    /// Paths per collection, waiting for the next submission.
    paths: HashMap<String, Vec<PendingDelete>>,
    /// When the oldest waiting path arrived.
    oldest: Option<Instant>,
    /// Deletions that will add a path soon.
    holds: usize,
    /// Whether the flusher task runs.
    flusher: bool,
}

/// A path waiting for the next delete task, and who to tell when it is submitted.
type PendingDelete = (String, oneshot::Sender<Result<(), String>>);

/// A place in the next delete task, for a deletion that must wait before it knows its
/// path is ready to go. Dropping it unused gives the place up.
pub(crate) struct DeleteHold {
    deleter: Arc<Deleter>,
    used: bool,
}

impl Deleter {
    /// A batcher that submits with `client`.
    pub(crate) fn new(client: TransferClient) -> Deleter {
        Deleter {
            client,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
        }
    }

    /// Holds a place in the next delete task (see the module docs).
    pub(crate) fn hold(self: &Arc<Self>) -> DeleteHold {
        self.update(|state| state.holds += 1);
        DeleteHold {
            deleter: Arc::clone(self),
            used: false,
        }
    }

    /// Changes the state, then makes sure a flusher runs and sees the change.
    fn update(self: &Arc<Self>, change: impl FnOnce(&mut State)) {
        let start = {
            let mut state = self.state.lock().expect("deleter lock");
            change(&mut state);
            !std::mem::replace(&mut state.flusher, true)
        };
        if start {
            crate::runtime::handle().spawn(Arc::clone(self).flusher());
        }
        self.changed.notify_one();
    }

    /// Submits batches as they become due; ends when nothing waits or holds a place.
    async fn flusher(self: Arc<Self>) {
        loop {
            let changed = self.changed.notified();
            let (due, wait) = {
                let mut state = self.state.lock().expect("deleter lock");
                match state.oldest {
                    None if state.holds == 0 => {
                        state.flusher = false;
                        return;
                    }
                    None => (None, None),
                    Some(oldest) => {
                        let limit = if state.holds == 0 { QUIET } else { MAX_HOLD };
                        let age = oldest.elapsed();
                        if age >= limit {
                            state.oldest = None;
                            (Some(std::mem::take(&mut state.paths)), None)
                        } else {
                            (None, Some(limit - age))
                        }
                    }
                }
            };
            match (due, wait) {
                (Some(batches), _) => self.submit_all(batches).await,
                (None, Some(wait)) => {
                    let _ = crate::runtime::timeout(wait, changed).await;
                }
                (None, None) => changed.await,
            }
        }
    }

    async fn submit_all(&self, batches: HashMap<String, Vec<PendingDelete>>) {
        for (collection, items) in batches {
            let result = self
                .submit(&collection, &items)
                .await
                .map_err(|e| e.to_string());
            for (_, done) in items {
                let _ = done.send(result.clone());
            }
        }
    }

    async fn submit(&self, collection: &str, items: &[PendingDelete]) -> Result<()> {
        let request = DeleteRequest {
            data_type: "delete".into(),
            submission_id: self.client.submission_id().await?,
            endpoint: collection.to_owned(),
            data: items
                .iter()
                .map(|(path, _)| DeleteItem {
                    data_type: "delete_item".into(),
                    path: path.clone(),
                })
                .collect(),
            label: Some(format!("{}-evict", super::new_label())),
            deadline: None,
            recursive: None,
            ignore_missing: Some(true),
            interpret_globs: None,
            local_user: None,
            notify_on_succeeded: Some(false),
            notify_on_failed: Some(false),
            notify_on_inactive: Some(false),
        };
        self.client.submit_delete(&request).await.map(|_| ())
    }
}

impl DeleteHold {
    /// Puts `path` on `collection` in the delete task this hold has a place in.
    pub(crate) fn add(mut self, collection: String, path: String) -> DeleteReceipt {
        let (done, submitted) = oneshot::channel();
        self.used = true;
        self.deleter.update(|state| {
            state.holds -= 1;
            state.oldest.get_or_insert_with(Instant::now);
            state
                .paths
                .entry(collection)
                .or_default()
                .push((path, done));
        });
        DeleteReceipt { submitted }
    }
}

/// Tells when a path's delete task was submitted.
pub(crate) struct DeleteReceipt {
    submitted: oneshot::Receiver<Result<(), String>>,
}

impl DeleteReceipt {
    /// Waits until the delete task is submitted (not until it has run).
    pub(crate) async fn submitted(self) -> Result<()> {
        match self.submitted.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::background("deleting evicted copies", Some(e.into()))),
            Err(_) => Err(Error::background(
                "the delete batcher",
                Some("it stopped".into()),
            )),
        }
    }
}

impl Drop for DeleteHold {
    fn drop(&mut self) {
        if !self.used {
            self.deleter.update(|state| state.holds -= 1);
        }
    }
}

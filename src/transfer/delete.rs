//! Coalesces deletions: the paths deleted within a few milliseconds of each other on one
//! collection become one Globus delete task (an eviction of many objects is one task,
//! not one per object).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::client::TransferClient;
use super::types::{DeleteItem, DeleteRequest};
use crate::error::{Error, Result};

/// The delete batcher of one identity. Share it with an `Arc`.
pub struct Deleter {
    client: TransferClient,
    pending: Mutex<HashMap<String, Vec<PendingDelete>>>,
}

/// A path waiting for the next delete task, and who to tell when it is submitted.
type PendingDelete = (String, oneshot::Sender<Result<(), String>>);

impl Deleter {
    /// A batcher that submits with `client`.
    pub fn new(client: TransferClient) -> Deleter {
        Deleter {
            client,
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Deletes `path` on `collection` in the next delete task; returns once submitted.
    pub async fn delete(self: &Arc<Self>, collection: String, path: String) -> Result<()> {
        let (done, submitted) = oneshot::channel();
        let first = {
            let mut pending = self.pending.lock().expect("deleter lock");
            let first = pending.is_empty();
            pending.entry(collection).or_default().push((path, done));
            first
        };
        if first {
            let me = self.clone();
            crate::runtime::handle().spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                me.flush().await;
            });
        }
        match submitted.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::background("deleting evicted copies", Some(e.into()))),
            Err(_) => Err(Error::background(
                "the delete batcher",
                Some("it stopped".into()),
            )),
        }
    }

    async fn flush(&self) {
        let batches = std::mem::take(&mut *self.pending.lock().expect("deleter lock"));
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

//! Follows the Globus tasks of batches that readers wait on.
//!
//! A reader at a destination site waits for its object's file; where this process can
//! see the task (same identity), it also wants the task's fate, to fail fast with the
//! Globus reason instead of timing out. Every awaited batch label goes into one
//! [`Watcher`], which asks Globus about all of them with one `task_list` request per
//! cycle (50 labels a request), however many readers wait. The cycle is 250 ms while
//! tasks move, backing off to 5 s while nothing changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::client::{TaskQuery, TransferClient};
use super::types::Task;

/// Follows the Globus tasks of awaited batches: one `task_list` request per cycle for
/// all of them, whatever the number of readers.
pub struct Watcher {
    client: TransferClient,
    /// Per label: how many readers watch it, and its task as last seen.
    labels: Mutex<HashMap<String, (usize, Option<Task>)>>,
    changed: Notify,
    wake: Notify,
}

impl Watcher {
    /// Starts a watcher (and its polling loop, which ends when the watcher is dropped).
    pub fn start(client: TransferClient) -> Arc<Watcher> {
        let watcher = Arc::new(Watcher {
            client,
            labels: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            wake: Notify::new(),
        });
        crate::runtime::handle().spawn(poll_loop(Arc::downgrade(&watcher)));
        watcher
    }

    /// Follows the batch labelled `label` until the guard is dropped.
    pub fn watch(self: &Arc<Self>, label: &str) -> WatchGuard {
        let new_label = {
            let mut labels = self.labels.lock().expect("watcher lock");
            let entry = labels.entry(label.to_owned()).or_insert((0, None));
            entry.0 += 1;
            entry.0 == 1
        };
        // Only a label nobody watched yet needs a poll now; more readers of the same
        // batch share its next one.
        if new_label {
            self.wake.notify_one();
        }
        WatchGuard {
            watcher: self.clone(),
            label: label.to_owned(),
        }
    }

    /// The task of the batch labelled `label`, as last seen.
    pub fn task(&self, label: &str) -> Option<Task> {
        self.labels
            .lock()
            .expect("watcher lock")
            .get(label)
            .and_then(|(_, t)| t.clone())
    }

    /// Resolves at the end of the next polling cycle (create it before looking, so a
    /// cycle that ends in between is not missed).
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }
}

/// Keeps a label watched while it lives.
pub struct WatchGuard {
    watcher: Arc<Watcher>,
    label: String,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let mut labels = self.watcher.labels.lock().expect("watcher lock");
        if let Some(entry) = labels.get_mut(&self.label) {
            entry.0 -= 1;
            if entry.0 == 0 {
                labels.remove(&self.label);
            }
        }
    }
}

async fn poll_loop(watcher: Weak<Watcher>) {
    let mut interval = Duration::from_millis(250);
    loop {
        let Some(w) = watcher.upgrade() else { return };
        let labels: Vec<String> = w
            .labels
            .lock()
            .expect("watcher lock")
            .iter()
            .filter(|(_, (_, task))| task.as_ref().is_none_or(|t| !t.is_final()))
            .map(|(label, _)| label.clone())
            .collect();
        if labels.is_empty() {
            // Re-check now and then, so a dropped connector ends this loop.
            let _ = crate::runtime::timeout(Duration::from_secs(5), w.wake.notified()).await;
            continue;
        }
        let mut progressed = false;
        for chunk in labels.chunks(50) {
            let query = TaskQuery {
                filter: Some(format!("label:{}", chunk.join(","))),
                limit: Some(1000),
                ..Default::default()
            };
            match w.client.task_list(&query).await {
                Ok(page) => {
                    let mut map = w.labels.lock().expect("watcher lock");
                    for task in page.data {
                        if let Some(entry) = task.label.clone().and_then(|l| map.get_mut(&l)) {
                            progressed |= entry.1.as_ref().is_none_or(|old| {
                                old.status != task.status
                                    || old.bytes_transferred != task.bytes_transferred
                            });
                            entry.1 = Some(task);
                        }
                    }
                }
                Err(e) => tracing::warn!("following Globus tasks failed, will retry: {e}"),
            }
        }
        w.changed.notify_waiters();
        interval = if progressed {
            Duration::from_millis(250)
        } else {
            (interval * 3 / 2).min(Duration::from_secs(5))
        };
        let _ = crate::runtime::timeout(interval, w.wake.notified()).await;
    }
}

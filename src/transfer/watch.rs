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

/// How long a task seen before may be missing from the list before the watcher asks for
/// it directly (a task the service lost, or deleted from history, is then `FAILED` with
/// `TASK_NOT_FOUND` for its readers instead of waited on until its deadline).
pub const MISSING_GRACE: Duration = Duration::from_secs(10);

/// One watched label.
#[derive(Default)]
struct Watched {
    /// How many readers watch it.
    readers: usize,
    /// Its task as last seen.
    task: Option<Task>,
    /// Since when the list no longer shows a task it showed before.
    missing_since: Option<std::time::Instant>,
}

/// Follows the Globus tasks of awaited batches: one `task_list` request per cycle for
/// all of them, whatever the number of readers.
pub struct Watcher {
    client: TransferClient,
    labels: Mutex<HashMap<String, Watched>>,
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
            let entry = labels.entry(label.to_owned()).or_default();
            entry.readers += 1;
            entry.readers == 1
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
            .and_then(|w| w.task.clone())
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
            entry.readers -= 1;
            if entry.readers == 0 {
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
            .filter(|(_, w)| w.task.as_ref().is_none_or(|t| !t.is_final()))
            .map(|(label, _)| label.clone())
            .collect();
        if labels.is_empty() {
            // Re-check now and then, so a dropped connector ends this loop.
            let _ = crate::runtime::timeout(Duration::from_secs(5), w.wake.notified()).await;
            continue;
        }
        let mut progressed = false;
        let mut missing = Vec::new();
        for chunk in labels.chunks(50) {
            let query = TaskQuery {
                filter: Some(format!("label:{}", chunk.join(","))),
                limit: Some(1000),
                ..Default::default()
            };
            match w.client.task_list(&query).await {
                Ok(page) => {
                    let mut map = w.labels.lock().expect("watcher lock");
                    let mut listed = std::collections::HashSet::new();
                    for task in page.data {
                        if let Some(entry) = task.label.clone().and_then(|l| map.get_mut(&l)) {
                            listed.extend(task.label.clone());
                            progressed |= entry.task.as_ref().is_none_or(|old| {
                                old.status != task.status
                                    || old.bytes_transferred != task.bytes_transferred
                            });
                            entry.task = Some(task);
                            entry.missing_since = None;
                        }
                    }
                    let now = std::time::Instant::now();
                    for label in chunk.iter().filter(|l| !listed.contains(*l)) {
                        if let Some(entry) = map.get_mut(label)
                            && entry.task.is_some()
                        {
                            let since = *entry.missing_since.get_or_insert(now);
                            if now - since >= MISSING_GRACE {
                                missing.extend(entry.task.clone());
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!("following Globus tasks failed, will retry: {e}"),
            }
        }
        for task in missing {
            if let Some(lost) = lost(&w.client, task).await {
                let mut map = w.labels.lock().expect("watcher lock");
                if let Some(entry) = lost.label.as_ref().and_then(|l| map.get_mut(l)) {
                    entry.task = Some(lost);
                    progressed = true;
                }
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

/// `task`, ended `FAILED` with `TASK_NOT_FOUND`, if the service no longer knows it;
/// `None` while it does, or cannot say.
async fn lost(client: &TransferClient, mut task: Task) -> Option<Task> {
    let fatal = client.lost_task(&task.task_id).await.ok()??;
    task.status = super::states::TaskStatus::Failed;
    task.fatal_error = Some(fatal);
    Some(task)
}

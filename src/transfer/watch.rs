//! Follows the Globus tasks of batches that readers wait on.
//!
//! A reader at a destination site waits for its object's file; where this process can
//! see the task (same identity), it also wants the task's fate, to fail fast with the
//! Globus reason instead of timing out. Every awaited batch label goes into one
//! [`Watcher`], which asks Globus about all of them with one `task_list` request per
//! cycle (50 labels a request), however many readers wait. The cycle is 250 ms while
//! tasks move, backing off to 5 s while nothing changes.
//!
//! A shared watcher ([`Watcher::start_shared`]) goes further: the processes that share
//! a state database share one watcher per identity. Each process records the labels its
//! readers wait on (`watches`); the one holding the `watcher:` lease asks Globus about
//! every process's labels and records what it saw (`watched_tasks`); the others read
//! that. Its requests draw on the database's request budget, with the manager's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::budget::RequestBudget;
use super::client::{TaskQuery, TransferClient};
use super::types::Task;
use crate::error::Result;
use crate::state::StateDb;
use crate::state::query::query;

/// How long a task seen before may be missing from the list before the watcher asks for
/// it directly (a task the service lost, or deleted from history, is then `FAILED` with
/// `TASK_NOT_FOUND` for its readers instead of waited on until its deadline).
pub(crate) const MISSING_GRACE: Duration = Duration::from_secs(10);

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
    shared: Option<Shared>,
    labels: Mutex<HashMap<String, Watched>>,
    changed: Notify,
    wake: Notify,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").finish_non_exhaustive()
    }
}

/// How long a `watches` row or the `watcher:` lease lasts without renewal.
const SHARED_TTL: Duration = Duration::from_secs(6);

/// What a watcher shared through a state database knows of it.
struct Shared {
    db: StateDb,
    /// The lease's name: `watcher:<identity>@<service>`.
    lease: String,
    /// This process (`host:pid:start`).
    owner: String,
    /// The labels last recorded for this process, and when.
    recorded: Mutex<(Vec<String>, Option<std::time::Instant>)>,
    /// While leader: since when a listed-before label has been missing from the list.
    missing_since: Mutex<HashMap<String, std::time::Instant>>,
    /// While leader: when to ask Globus next, and about which labels it asked last.
    pace: Mutex<Pace>,
    /// Whether this process held the lease at its last look.
    led: std::sync::atomic::AtomicBool,
}

/// The leader's pace of asking Globus.
#[derive(Default)]
struct Pace {
    next: Option<std::time::Instant>,
    interval: Duration,
    labels: Vec<String>,
}

impl Watcher {
    /// Starts a watcher of this process alone (and its polling loop, which ends when the
    /// watcher is dropped).
    pub fn start(client: TransferClient) -> Arc<Watcher> {
        Self::spawn(client, None)
    }

    /// Starts a watcher shared with every process of `db` that watches for the same
    /// identity: one of them asks Globus, within the database's request budget of
    /// `budget` requests per second (shared with the manager; 0: none), and the others
    /// read what it saw.
    pub fn start_shared(client: TransferClient, db: StateDb, budget: f64) -> Arc<Watcher> {
        let owner = crate::transfer::manager::this_process().owner;
        Self::start_shared_as(client, db, budget, &owner)
    }

    /// [`start_shared`](Self::start_shared) as the process named `owner`
    /// (`host:pid:start`): for tests that play several processes in one.
    #[doc(hidden)]
    pub fn start_shared_as(
        client: TransferClient,
        db: StateDb,
        budget: f64,
        owner: &str,
    ) -> Arc<Watcher> {
        let identity = client.service_identity();
        let client = RequestBudget::gate(client, &db, budget);
        let shared = Shared {
            db,
            lease: format!("watcher:{identity}"),
            owner: owner.to_owned(),
            recorded: Mutex::new((Vec::new(), None)),
            missing_since: Mutex::default(),
            pace: Mutex::default(),
            led: std::sync::atomic::AtomicBool::new(false),
        };
        Self::spawn(client, Some(shared))
    }

    fn spawn(client: TransferClient, shared: Option<Shared>) -> Arc<Watcher> {
        let watcher = Arc::new(Watcher {
            client,
            shared,
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

impl std::fmt::Debug for WatchGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchGuard")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
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
            if let Some(shared) = &w.shared {
                // Nothing to watch here: hand the lease on at once, so a process whose
                // readers still wait does not wait for it to expire.
                if let Err(e) = shared.release().await {
                    tracing::debug!("releasing the watcher lease failed: {e}");
                }
            }
            // Re-check now and then, so a dropped connector ends this loop.
            let _ = crate::runtime::timeout(Duration::from_secs(5), w.wake.notified()).await;
            continue;
        }
        let progressed = match &w.shared {
            None => w.poll_alone(&labels).await,
            Some(shared) => match w.poll_shared(shared, &labels).await {
                Ok(progressed) => progressed,
                Err(e) => {
                    tracing::warn!("the shared watcher's state database failed, will retry: {e}");
                    false
                }
            },
        };
        w.changed.notify_waiters();
        interval = if progressed || w.shared.is_some() {
            // A follower's look is a local read: it keeps the leader's pace.
            Duration::from_millis(250)
        } else {
            (interval * 3 / 2).min(Duration::from_secs(5))
        };
        let _ = crate::runtime::timeout(interval, w.wake.notified()).await;
    }
}

impl Watcher {
    /// Asks Globus about `labels` (50 a request); returns the tasks listed and the
    /// labels that were not (a request that failed lists nothing: the next cycle asks
    /// again).
    async fn list(&self, labels: &[String]) -> (Vec<Task>, Vec<String>) {
        let mut tasks = Vec::new();
        let mut unlisted = Vec::new();
        for chunk in labels.chunks(50) {
            let query = TaskQuery {
                filter: Some(label_filter(chunk)),
                limit: Some(1000),
                ..Default::default()
            };
            match self.client.task_list(&query).await {
                Ok(page) => {
                    let listed: std::collections::HashSet<String> =
                        page.data.iter().filter_map(|t| t.label.clone()).collect();
                    unlisted.extend(chunk.iter().filter(|l| !listed.contains(*l)).cloned());
                    tasks.extend(page.data);
                }
                Err(e) => tracing::warn!("following Globus tasks failed, will retry: {e}"),
            }
        }
        (tasks, unlisted)
    }

    /// Records `task` for its label; true if it changed what readers see.
    fn record(&self, task: Task) -> bool {
        let mut map = self.labels.lock().expect("watcher lock");
        let Some(entry) = task.label.as_ref().and_then(|l| map.get_mut(l)) else {
            return false;
        };
        let changed = entry.task.as_ref().is_none_or(|old| {
            old.status != task.status || old.bytes_transferred != task.bytes_transferred
        });
        entry.task = Some(task);
        entry.missing_since = None;
        changed
    }

    /// One cycle of a watcher of this process alone.
    async fn poll_alone(&self, labels: &[String]) -> bool {
        let (tasks, unlisted) = self.list(labels).await;
        let mut progressed = false;
        for task in tasks {
            progressed |= self.record(task);
        }
        let now = std::time::Instant::now();
        let mut missing = Vec::new();
        {
            let mut map = self.labels.lock().expect("watcher lock");
            for label in &unlisted {
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
        for task in missing {
            if let Some(lost) = lost(&self.client, task).await {
                progressed |= self.record(lost);
            }
        }
        progressed
    }

    /// One cycle of a shared watcher: record this process's labels, ask Globus if this
    /// process holds the lease, then read what the leader saw.
    async fn poll_shared(&self, shared: &Shared, labels: &[String]) -> Result<bool> {
        shared.record_labels(labels).await?;
        let leader = crate::transfer::manager::take_lease(
            &shared.db,
            &shared.lease,
            &shared.owner,
            SHARED_TTL,
            crate::transfer::manager::owner_alive,
        )
        .await?;
        shared
            .led
            .store(leader, std::sync::atomic::Ordering::Relaxed);
        if leader {
            self.lead(shared).await?;
        }
        let seen = shared.read(labels).await?;
        let mut progressed = false;
        for task in seen {
            progressed |= self.record(task);
        }
        Ok(progressed)
    }

    /// The leader's part: ask Globus about every label any live process waits on, at
    /// its own pace: every 250 ms while tasks move or the labels change, backing off to
    /// 5 s while nothing does (the followers' looks are local reads).
    async fn lead(&self, shared: &Shared) -> Result<()> {
        let labels = shared.all_labels().await?;
        if labels.is_empty() {
            return Ok(());
        }
        {
            let pace = shared.pace.lock().expect("watcher lock");
            if pace.labels == labels && pace.next.is_some_and(|t| std::time::Instant::now() < t) {
                return Ok(());
            }
        }
        let before = shared.read(&labels).await?;
        let (mut found, unlisted) = self.list(&labels).await;
        let now = std::time::Instant::now();
        let mut lost_ones = Vec::new();
        {
            let mut missing = shared.missing_since.lock().expect("watcher lock");
            for task in &found {
                missing.remove(task.label.as_deref().unwrap_or_default());
            }
            let known = before
                .iter()
                .filter(|t| t.label.as_ref().is_some_and(|l| unlisted.contains(l)));
            for task in known {
                let label = task.label.clone().unwrap_or_default();
                let since = *missing.entry(label).or_insert(now);
                if now - since >= MISSING_GRACE {
                    lost_ones.push(task.clone());
                }
            }
        }
        for task in lost_ones {
            found.extend(lost(&self.client, task).await);
        }
        let moved = found.iter().any(|task| {
            !before.iter().any(|old| {
                old.label == task.label
                    && old.status == task.status
                    && old.bytes_transferred == task.bytes_transferred
            })
        });
        shared.write(&found).await?;
        let mut pace = shared.pace.lock().expect("watcher lock");
        pace.interval = if moved || pace.labels != labels {
            Duration::from_millis(250)
        } else {
            (pace.interval * 3 / 2).min(Duration::from_secs(5))
        };
        pace.next = Some(now + pace.interval);
        pace.labels = labels;
        Ok(())
    }
}

impl Shared {
    /// Records the labels this process's readers wait on (when they change, and before
    /// the rows expire).
    async fn record_labels(&self, labels: &[String]) -> Result<()> {
        let mut sorted = labels.to_vec();
        sorted.sort();
        {
            let recorded = self.recorded.lock().expect("watcher lock");
            let fresh = recorded.1.is_some_and(|at| at.elapsed() < SHARED_TTL / 3);
            if fresh && recorded.0 == sorted {
                return Ok(());
            }
        }
        let db = &self.db;
        let now = chrono::Utc::now().timestamp_millis();
        let expires = now + SHARED_TTL.as_millis() as i64;
        let mut tx = db.begin_write().await?;
        // This process's rows are exactly `sorted` afterwards.
        query("DELETE FROM watches WHERE owner = $1")
            .bind(&self.owner)
            .execute(&mut tx)
            .await?;
        for label in &sorted {
            query("INSERT INTO watches (label, owner, expires_at) VALUES ($1, $2, $3)")
                .bind(label)
                .bind(&self.owner)
                .bind(expires)
                .execute(&mut tx)
                .await?;
        }
        // Rows of processes gone for a while, and what was seen for labels nobody
        // watches any more.
        query("DELETE FROM watches WHERE expires_at < $1")
            .bind(now - 60_000)
            .execute(&mut tx)
            .await?;
        query("DELETE FROM watched_tasks WHERE seen_at < $1 AND label NOT IN (SELECT label FROM watches)")
            .bind(now - 60_000).execute(&mut tx).await?;
        tx.commit().await?;
        *self.recorded.lock().expect("watcher lock") = (sorted, Some(std::time::Instant::now()));
        Ok(())
    }

    /// Gives up the lease and this process's `watches` rows (if it has any of them).
    async fn release(&self) -> Result<()> {
        let recorded = self.recorded.lock().expect("watcher lock").1.is_some();
        if !recorded && !self.led.swap(false, std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let db = &self.db;
        let mut tx = db.begin_write().await?;
        query("DELETE FROM leases WHERE name = $1 AND owner = $2")
            .bind(&self.lease)
            .bind(&self.owner)
            .execute(&mut tx)
            .await?;
        query("DELETE FROM watches WHERE owner = $1")
            .bind(&self.owner)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        *self.recorded.lock().expect("watcher lock") = (Vec::new(), None);
        Ok(())
    }

    /// Every label a live process waits on whose task is not known to be final.
    async fn all_labels(&self) -> Result<Vec<String>> {
        let now = chrono::Utc::now().timestamp_millis();
        let rows: Vec<(String, Option<String>)> = query(
            "SELECT DISTINCT watches.label, watched_tasks.task FROM watches \
             LEFT JOIN watched_tasks ON watched_tasks.label = watches.label \
             WHERE watches.expires_at > $1 ORDER BY watches.label",
        )
        .bind(now)
        .fetch_all_as(&self.db)
        .await?;
        Ok(rows
            .into_iter()
            .filter(|(_, task)| {
                task.as_deref()
                    .and_then(|t| serde_json::from_str::<Task>(t).ok())
                    .is_none_or(|t| !t.is_final())
            })
            .map(|(label, _)| label)
            .collect())
    }

    /// The tasks recorded for `labels` (those seen at least once).
    async fn read(&self, labels: &[String]) -> Result<Vec<Task>> {
        if labels.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT task FROM watched_tasks WHERE label IN ({})",
            crate::state::query::placeholders(1, labels.len())
        );
        let rows: Vec<String> = labels
            .iter()
            .fold(query(&sql), |q, label| q.bind(label))
            .fetch_scalars(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|t| serde_json::from_str(&t).ok())
            .collect())
    }

    /// Records what the leader saw.
    async fn write(&self, tasks: &[Task]) -> Result<()> {
        if tasks.is_empty() {
            return Ok(());
        }
        let db = &self.db;
        let now = chrono::Utc::now().timestamp_millis();
        let mut tx = db.begin_write().await?;
        for task in tasks {
            let Some(label) = &task.label else { continue };
            query(
                "INSERT INTO watched_tasks (label, task, seen_at) VALUES ($1, $2, $3) \
                 ON CONFLICT(label) DO UPDATE SET task = excluded.task, seen_at = excluded.seen_at",
            )
            .bind(label)
            .bind(&serde_json::to_string(task).expect("task serializes"))
            .bind(now)
            .execute(&mut tx)
            .await?;
        }
        tx.commit().await
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

/// The documented exact-label filter for `labels`: `label:=a,=b` (a bare `label:a` is
/// undocumented, and refused by a strict service).
#[doc(hidden)]
pub fn label_filter(labels: &[String]) -> String {
    let exact: Vec<String> = labels.iter().map(|l| format!("={l}")).collect();
    format!("label:{}", exact.join(","))
}

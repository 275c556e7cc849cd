//! Group commit of enqueues and closes, led by the callers themselves, in one round
//! trip to the database.
//!
//! A put waits for its item to be committed (that is the durability promise: a
//! `kill -9` right after `put` returns loses nothing). On this kind of machine every
//! wake-up of another thread costs tens of microseconds, so the commit path has as few
//! as it can:
//!
//! - **No writer task.** A caller queues its request and then leads: it takes the lane
//!   (one leader at a time), commits everything queued — its own request and whatever
//!   others queued meanwhile — and answers each. A caller that finds a leader at work
//!   waits for the lane; by then its request was usually committed by that leader.
//!   Concurrent callers still share one transaction; a sequential caller pays no hop to
//!   a writer and back.
//! - **One round trip.** Every statement sent through sqlx is a round trip to the
//!   connection's own thread: the whole group — new batches, items (many to a
//!   statement), closes — is one script, `BEGIN IMMEDIATE; …; COMMIT`.
//! - **Its own connection**, outside the pool, which pings a connection every time it
//!   goes back.

use std::collections::HashSet;
use std::sync::Mutex;

use sqlx::{Row, SqliteConnection};

use super::loops::WriteReq;
use super::sql::now_ms;
use crate::error::Result;
use crate::state::StateDb;
use crate::transfer::states::{BatchState, ItemState};

/// Items per `INSERT` statement: 10 parameters each, well under SQLite's 32766.
const ITEMS_PER_INSERT: usize = 500;

/// Groups larger than this are not kept as prepared statements (each size of group is
/// its own script; a few small shapes repeat, large ones rarely do).
const CACHED_UP_TO: usize = 16;

/// The queue of writes not yet committed, and the lane a leader holds while it commits.
pub(super) struct CommitLane {
    queue: Mutex<Vec<WriteReq>>,
    lane: tokio::sync::Mutex<Lane>,
}

/// What the leader holds: the connection, and the batches it has inserted.
#[derive(Default)]
struct Lane {
    connection: Option<SqliteConnection>,
    inserted: HashSet<String>,
}

impl CommitLane {
    pub fn new() -> Self {
        CommitLane {
            queue: Mutex::new(Vec::new()),
            lane: tokio::sync::Mutex::new(Lane::default()),
        }
    }

    /// Queues a write. Callers queue under the manager's open-batches lock, so that a
    /// batch's close always comes after its items.
    pub fn push(&self, request: WriteReq) {
        self.queue
            .lock()
            .expect("commit queue poisoned")
            .push(request);
    }

    /// Commits everything queued (leading, or after the leader before it), then returns.
    /// Each request's answer goes to its own `ack`.
    pub async fn commit_queued(&self, db: &StateDb, identity: &str, owner: &str) {
        let mut lane = self.lane.lock().await;
        // If this future is dropped mid-commit, the connection may be inside the script:
        // drop it (closing it rolls back what was not committed) rather than reuse it.
        let mut guard = DropConnectionUnlessDone(&mut lane, false);
        loop {
            let group = std::mem::take(&mut *self.queue.lock().expect("commit queue poisoned"));
            if group.is_empty() {
                break;
            }
            let lane = &mut *guard.0;
            let result = match &mut lane.connection {
                Some(conn) => Ok(conn),
                None => db
                    .pool()
                    .acquire()
                    .await
                    .map(|c| lane.connection.insert(c.detach()))
                    .map_err(|e| db.error(e)),
            };
            let result = match result {
                Ok(conn) => {
                    commit_writes(conn, (db, identity, owner), &group, &mut lane.inserted).await
                }
                Err(e) => Err(e),
            };
            if result.is_err() {
                lane.connection = None;
            }
            answer(db, group, result);
        }
        guard.1 = true;
    }
}

/// Drops the lane's connection unless the commit ran to its end.
struct DropConnectionUnlessDone<'a>(&'a mut Lane, bool);

impl Drop for DropConnectionUnlessDone<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.connection = None;
        }
    }
}

/// Answers every request of a committed (or failed) group: items their ids in order,
/// closes `Ok`; on failure each its own error, sharing the cause's text.
fn answer(db: &StateDb, group: Vec<WriteReq>, result: Result<Vec<i64>>) {
    let mut item_ids = match &result {
        Ok(ids) => ids.clone().into_iter(),
        Err(_) => Vec::new().into_iter(),
    };
    let failed = || {
        let cause = result.as_ref().err().map(ToString::to_string);
        crate::Error::state(
            db.path(),
            "committing enqueued transfers to the state database failed",
            cause.unwrap_or_else(|| "fewer item ids than items".into()),
        )
    };
    for request in group {
        match request {
            WriteReq::Item { ack, .. } => {
                let _ = ack.send(if result.is_ok() {
                    item_ids.next().ok_or_else(failed)
                } else {
                    Err(failed())
                });
            }
            WriteReq::Close { ack, .. } => {
                let _ = ack.send(if result.is_ok() {
                    Ok(())
                } else {
                    Err(failed())
                });
            }
        }
    }
}

/// Commits a group of enqueues and closes on `conn` in one transaction and one round
/// trip; returns the new item ids in the order of the group's items. `inserted` holds
/// the labels of batches already in the database (inserted by an earlier group of this
/// writer and not closed since). Batches belong to `identity`, made by `owner`.
pub(super) async fn commit_writes(
    conn: &mut SqliteConnection,
    (db, identity, owner): (&StateDb, &str, &str),
    requests: &[WriteReq],
    inserted: &mut HashSet<String>,
) -> Result<Vec<i64>> {
    let now = now_ms();
    let mut script = String::from("BEGIN IMMEDIATE;");
    let mut new_batches = Vec::new();
    let mut items = Vec::new();
    let mut closes = Vec::new();
    for request in requests {
        match request {
            WriteReq::Item {
                key, label, spec, ..
            } => {
                if !inserted.contains(label) && !new_batches.iter().any(|(l, _)| *l == label) {
                    new_batches.push((label, key));
                }
                items.push((label, spec));
            }
            WriteReq::Close { label, .. } => closes.push(label),
        }
    }
    for _ in &new_batches {
        // Idempotent: a leader dropped mid-commit may have committed a batch it could not
        // record in `inserted`; the next group inserts it again, harmlessly.
        script.push_str(
            "INSERT INTO batches (label, identity, source, destination, options, priority, state, owner, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (label) DO NOTHING;",
        );
    }
    for chunk in items.chunks(ITEMS_PER_INSERT) {
        script.push_str(
            "INSERT INTO items (batch_id, source_path, destination_path, recursive, external_checksum, \
             checksum_algorithm, state, created_at, size) VALUES ",
        );
        for n in 0..chunk.len() {
            if n > 0 {
                script.push(',');
            }
            script.push_str("((SELECT id FROM batches WHERE label = ?), ?, ?, ?, ?, ?, ?, ?, ?)");
        }
        script.push_str(" RETURNING id;");
    }
    for _ in &closes {
        script
            .push_str("UPDATE batches SET state = ?, closed_at = ? WHERE label = ? AND state = ?;");
    }
    script.push_str("COMMIT;");

    // Only fixed text and `?` placeholders: every value is a bound parameter.
    let mut query =
        sqlx::query(sqlx::AssertSqlSafe(script)).persistent(requests.len() <= CACHED_UP_TO);
    for (label, key) in &new_batches {
        query = query
            .bind(*label)
            .bind(identity)
            .bind(&key.0)
            .bind(&key.1)
            .bind(&key.2)
            .bind(key.3)
            .bind(BatchState::Open.as_str())
            .bind(owner)
            .bind(now);
    }
    for (label, spec) in &items {
        let (checksum, algorithm) = spec.external_checksum.clone().unzip();
        query = query
            .bind(*label)
            .bind(&spec.source_path)
            .bind(&spec.destination_path)
            .bind(spec.recursive)
            .bind(checksum)
            .bind(algorithm)
            .bind(ItemState::Pending.as_str())
            .bind(now)
            .bind(spec.size.map(|s| s as i64));
    }
    for label in &closes {
        query = query
            .bind(BatchState::Ready.as_str())
            .bind(now)
            .bind(*label)
            .bind(BatchState::Open.as_str());
    }

    let rows = match query.fetch_all(&mut *conn).await {
        Ok(rows) => rows,
        Err(e) => {
            // A statement failed inside the script: its transaction is still open on
            // this connection. End it here, or the next user of the connection would
            // find itself inside it.
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            return Err(db.error(e));
        }
    };
    // Rowids are handed out in increasing order within the transaction, which holds
    // the write lock: sorted, they are in the order of the VALUES rows.
    let mut ids: Vec<i64> = rows.iter().map(|r| r.get::<i64, _>(0)).collect();
    ids.sort_unstable();
    for (label, _) in new_batches {
        inserted.insert(label.clone());
    }
    for label in closes {
        inserted.remove(label.as_str());
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::ItemSpec;
    use tokio::sync::oneshot;

    fn item(label: &str, n: usize) -> WriteReq {
        WriteReq::Item {
            key: ("src".into(), "dst".into(), "{}".into(), 1),
            label: label.into(),
            spec: Box::new(ItemSpec::new(
                "src",
                format!("/in/{n}"),
                "dst",
                format!("/out/{n}"),
            )),
            ack: oneshot::channel().0,
        }
    }

    async fn connection(db: &StateDb) -> SqliteConnection {
        db.pool().acquire().await.unwrap().detach()
    }

    /// Ids come back in the order of the group's items, also across statements.
    #[tokio::test]
    async fn ids_follow_the_items_order_across_insert_statements() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path().join("state.db")).await.unwrap();
        let mut conn = connection(&db).await;
        let mut inserted = HashSet::new();
        let count = ITEMS_PER_INSERT * 2 + 7;
        let group: Vec<WriteReq> = (0..count).map(|n| item("psg-a", n)).collect();
        let ids = commit_writes(&mut conn, (&db, "me", "host:1:1"), &group, &mut inserted)
            .await
            .unwrap();
        assert_eq!(ids.len(), count);
        for (n, id) in ids.iter().enumerate() {
            let path: String = sqlx::query_scalar("SELECT source_path FROM items WHERE id = ?")
                .bind(id)
                .fetch_one(db.pool())
                .await
                .unwrap();
            assert_eq!(path, format!("/in/{n}"));
        }
        assert!(inserted.contains("psg-a"));
    }

    /// Regression (a leader dropped after its COMMIT ran but before it recorded the
    /// batches it inserted): the next group inserts the same batch again, and that must
    /// not fail every later group of the batch.
    #[tokio::test]
    async fn a_batch_inserted_again_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path().join("state.db")).await.unwrap();
        let mut conn = connection(&db).await;
        let to = (&db, "me", "host:1:1");
        let mut inserted = HashSet::new();
        commit_writes(&mut conn, to, &[item("psg-a", 0)], &mut inserted)
            .await
            .unwrap();
        inserted.clear(); // the record lost
        commit_writes(&mut conn, to, &[item("psg-a", 1)], &mut inserted)
            .await
            .expect("the batch is already there: nothing to insert");
        let (batches, items): (i64, i64) =
            sqlx::query_as("SELECT (SELECT COUNT(*) FROM batches), (SELECT COUNT(*) FROM items)")
                .fetch_one(db.pool())
                .await
                .unwrap();
        assert_eq!((batches, items), (1, 2));
    }

    /// A statement that fails inside the script leaves no transaction open on the
    /// connection: the next group commits on it, and the failed one left nothing.
    #[tokio::test]
    async fn a_failed_group_is_rolled_back_and_the_connection_stays_usable() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path().join("state.db")).await.unwrap();
        let mut conn = connection(&db).await;
        // The writer believes a batch exists that does not: its item cannot be inserted.
        let mut inserted: HashSet<String> = ["psg-gone".to_string()].into();
        let to = (&db, "me", "host:1:1");
        let group = [item("psg-new", 0), item("psg-gone", 1)];
        assert!(
            commit_writes(&mut conn, to, &group, &mut inserted)
                .await
                .is_err()
        );
        let (batches, items): (i64, i64) =
            sqlx::query_as("SELECT (SELECT COUNT(*) FROM batches), (SELECT COUNT(*) FROM items)")
                .fetch_one(db.pool())
                .await
                .unwrap();
        assert_eq!((batches, items), (0, 0), "all or nothing");
        assert!(!inserted.contains("psg-new"));
        let ids = commit_writes(&mut conn, to, &[item("psg-new", 2)], &mut inserted)
            .await
            .expect("the connection is not left inside the failed transaction");
        assert_eq!(ids.len(), 1);
    }
}

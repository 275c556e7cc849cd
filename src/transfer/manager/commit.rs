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
//! - **No hop at all when it can**: in WAL mode the leader commits on a SQLite connection
//!   of its own, on its own thread ([`crate::state::direct`]); sqlx's connection thread
//!   serves only when another writer holds the lock (sqlx then waits for it there).
//!
//! On PostgreSQL a group is its statements sent one by one, in one transaction when
//! there are several (a put into a batch already there is one `INSERT`, one round
//! trip), and without the write lock: the lane only appends its own batches and items.

use std::collections::HashSet;
use std::sync::Mutex;

use sqlx::{Row, SqliteConnection};

use super::loops::WriteReq;
use super::rows::BatchKey;
use super::sql::now_ms;
use crate::error::Result;
use crate::state::StateDb;
use crate::state::direct::{DirectConnection, DirectError};
use crate::state::query::{Arg, On, Statement, query};
use crate::transfer::ItemSpec;
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

/// What the leader holds: the connections, and the batches it has inserted.
#[derive(Default)]
struct Lane {
    connection: Option<SqliteConnection>,
    direct: Option<DirectConnection>,
    /// The database is not in WAL mode, or a direct connection could not be opened:
    /// every group goes through sqlx.
    direct_unavailable: bool,
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
            let to = (identity, owner);
            let result = match lane.try_direct(db, to, &group) {
                Some(result) => result,
                None if db.sqlite_pool().is_some() => {
                    lane.commit_through_sqlx(db, to, &group).await
                }
                None => lane.commit_in_transaction(db, to, &group).await,
            };
            answer(db, group, result);
        }
        guard.1 = true;
    }
}

impl Lane {
    /// Commits `group` on the lane's sqlx connection (acquired on first use, dropped
    /// after a failure).
    async fn commit_through_sqlx(
        &mut self,
        db: &StateDb,
        (identity, owner): (&str, &str),
        group: &[WriteReq],
    ) -> Result<Vec<i64>> {
        let conn = match &mut self.connection {
            Some(conn) => conn,
            None => {
                let pool = db.sqlite_pool().expect("called on SQLite only");
                let conn = pool.acquire().await.map_err(|e| db.error(e))?;
                self.connection.insert(conn.detach())
            }
        };
        let result = commit_writes(conn, (db, identity, owner), group, &mut self.inserted).await;
        if result.is_err() {
            self.connection = None;
        }
        result
    }

    /// Commits `group` one statement at a time (PostgreSQL: a server round trip each),
    /// in one transaction when it has more than one statement. No write lock: the group
    /// only inserts this process's batches and items and closes its own batches, which
    /// no other writer reads and then changes (a claim takes only closed batches), so
    /// every host's groups commit side by side. Item ids come from one sequence, drawn
    /// in `VALUES` order: sorted, they are in the order of the group's items.
    async fn commit_in_transaction(
        &mut self,
        db: &StateDb,
        to: (&str, &str),
        requests: &[WriteReq],
    ) -> Result<Vec<i64>> {
        let now = now_ms();
        let group = Group::of(requests, &self.inserted);
        let chunks = group.items.len().div_ceil(ITEMS_PER_INSERT);
        let statements = group.new_batches.len() + chunks + group.closes.len();
        // One statement (a put into a batch already there, most often) is atomic alone.
        let mut tx = match statements {
            1 => None,
            _ => Some(db.begin_append().await?),
        };
        macro_rules! on {
            () => {
                match &mut tx {
                    Some(tx) => On::from(tx),
                    None => On::from(db),
                }
            };
        }
        let batch_insert = numbered(BATCH_INSERT);
        for &batch in &group.new_batches {
            bound(query(&batch_insert), Group::batch_values(batch, to, now))
                .execute(on!())
                .await?;
        }
        let mut ids = Vec::with_capacity(group.items.len());
        for chunk in group.items.chunks(ITEMS_PER_INSERT) {
            let sql = numbered(&items_insert(chunk.len()));
            let values = chunk.iter().flat_map(|&item| Group::item_values(item, now));
            ids.extend(
                bound(query(&sql), values)
                    .fetch_scalars::<i64>(on!())
                    .await?,
            );
        }
        let close = numbered(BATCH_CLOSE);
        for label in &group.closes {
            bound(query(&close), Group::close_values(label, now))
                .execute(on!())
                .await?;
        }
        if let Some(tx) = tx {
            tx.commit().await?;
        }
        ids.sort_unstable();
        group.committed(&mut self.inserted);
        Ok(ids)
    }

    /// Commits `group` on the direct connection (opened on first use), unless another
    /// writer holds the write lock: then `None`, and the group goes through sqlx.
    fn try_direct(
        &mut self,
        db: &StateDb,
        to: (&str, &str),
        group: &[WriteReq],
    ) -> Option<Result<Vec<i64>>> {
        if self.direct.is_none() && !self.direct_unavailable {
            match db.direct() {
                Some(Ok(connection)) => self.direct = Some(connection),
                Some(Err(e)) => {
                    tracing::debug!("commits go through sqlx: {e}");
                    self.direct_unavailable = true;
                }
                None => self.direct_unavailable = true,
            }
        }
        let connection = self.direct.as_mut()?;
        match commit_direct(connection, to, group, &mut self.inserted) {
            Ok(ids) => Some(Ok(ids)),
            Err(e) if e.is_busy() => None,
            Err(e) => {
                // Opened again for the next group: nothing of this one was committed.
                self.direct = None;
                let context = "committing enqueued transfers to the state database failed";
                Some(Err(db.direct_error(context, e)))
            }
        }
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

macro_rules! item_insert {
    () => {
        "INSERT INTO items (batch_id, source_path, destination_path, recursive, external_checksum, \
         checksum_algorithm, state, created_at, size) VALUES "
    };
}
macro_rules! item_row {
    () => {
        "((SELECT id FROM batches WHERE label = ?), ?, ?, ?, ?, ?, ?, ?, ?)"
    };
}

/// An insert of `rows` items that returns their ids.
fn items_insert(rows: usize) -> String {
    let mut sql = String::from(item_insert!());
    for n in 0..rows {
        if n > 0 {
            sql.push(',');
        }
        sql.push_str(item_row!());
    }
    sql.push_str(" RETURNING id");
    sql
}

/// `sql` with its `?` placeholders numbered `$1`, `$2`, … (the shared dialect; the
/// statements here are written with `?` for SQLite's direct connection and script).
fn numbered(sql: &str) -> String {
    let mut n = 0;
    sql.chars()
        .map(|c| match c {
            '?' => {
                n += 1;
                format!("${n}")
            }
            c => c.to_string(),
        })
        .collect()
}

/// `statement` with `values` bound in order.
fn bound<'q>(statement: Statement<'q>, values: impl IntoIterator<Item = Arg<'q>>) -> Statement<'q> {
    values.into_iter().fold(statement, Statement::bind)
}

/// Idempotent: a leader dropped mid-commit may have committed a batch it could not record
/// in `inserted`; the next group inserts it again, harmlessly.
const BATCH_INSERT: &str = "INSERT INTO batches (label, identity, source, destination, options, \
     priority, state, owner, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
     ON CONFLICT (label) DO NOTHING";
/// One item, and its id back.
const ITEM_INSERT: &str = concat!(item_insert!(), item_row!(), " RETURNING id");
const BATCH_CLOSE: &str =
    "UPDATE batches SET state = ?, closed_at = ? WHERE label = ? AND state = ?";

/// A group of requests sorted by what they write.
struct Group<'a> {
    /// Batches not yet in the database (their first items are in this group).
    new_batches: Vec<(&'a String, &'a BatchKey)>,
    items: Vec<(&'a String, &'a ItemSpec)>,
    closes: Vec<&'a String>,
}

impl<'a> Group<'a> {
    /// Sorts `requests`; `inserted` holds the labels of batches already in the database
    /// (inserted by an earlier group of this writer and not closed since).
    fn of(requests: &'a [WriteReq], inserted: &HashSet<String>) -> Self {
        let mut group = Group {
            new_batches: Vec::new(),
            items: Vec::new(),
            closes: Vec::new(),
        };
        for request in requests {
            match request {
                WriteReq::Item {
                    key, label, spec, ..
                } => {
                    if !inserted.contains(label)
                        && !group.new_batches.iter().any(|(l, _)| *l == label)
                    {
                        group.new_batches.push((label, key));
                    }
                    group.items.push((label, spec));
                }
                WriteReq::Close { label, .. } => group.closes.push(label),
            }
        }
        group
    }

    /// The values of one new batch's insert, in [`BATCH_INSERT`]'s order.
    fn batch_values(
        (label, key): (&'a String, &'a BatchKey),
        (identity, owner): (&'a str, &'a str),
        now: i64,
    ) -> [Arg<'a>; 9] {
        [
            Arg::Text(Some(label)),
            Arg::Text(Some(identity)),
            Arg::Text(Some(&key.0)),
            Arg::Text(Some(&key.1)),
            Arg::Text(Some(&key.2)),
            Arg::Int(Some(key.3)),
            Arg::Text(Some(BatchState::Open.as_str())),
            Arg::Text(Some(owner)),
            Arg::Int(Some(now)),
        ]
    }

    /// The values of one item's row, in [`item_row`]'s order.
    fn item_values((label, spec): (&'a String, &'a ItemSpec), now: i64) -> [Arg<'a>; 9] {
        let (checksum, algorithm) = spec
            .external_checksum
            .as_ref()
            .map(|(c, a)| (c.as_str(), a.as_str()))
            .unzip();
        [
            Arg::Text(Some(label)),
            Arg::Text(Some(&spec.source_path)),
            Arg::Text(Some(&spec.destination_path)),
            Arg::Bool(spec.recursive),
            Arg::Text(checksum),
            Arg::Text(algorithm),
            Arg::Text(Some(ItemState::Pending.as_str())),
            Arg::Int(Some(now)),
            Arg::Int(spec.size.map(|s| s as i64)),
        ]
    }

    /// The values of one close, in [`BATCH_CLOSE`]'s order.
    fn close_values(label: &'a str, now: i64) -> [Arg<'a>; 4] {
        [
            Arg::Text(Some(BatchState::Ready.as_str())),
            Arg::Int(Some(now)),
            Arg::Text(Some(label)),
            Arg::Text(Some(BatchState::Open.as_str())),
        ]
    }

    /// Records what the committed group changed in `inserted`.
    fn committed(self, inserted: &mut HashSet<String>) {
        for (label, _) in self.new_batches {
            inserted.insert(label.clone());
        }
        for label in self.closes {
            inserted.remove(label.as_str());
        }
    }
}

/// Commits a group on a direct connection in one transaction: each statement prepared
/// once, no round trip to another thread. Returns the new item ids in the group's
/// order. A busy database (another writer holds the lock) fails at `BEGIN`, before
/// anything is written; any failure later rolls the whole group back.
fn commit_direct(
    conn: &mut DirectConnection,
    to: (&str, &str),
    requests: &[WriteReq],
    inserted: &mut HashSet<String>,
) -> std::result::Result<Vec<i64>, DirectError> {
    let now = now_ms();
    let group = Group::of(requests, inserted);
    conn.begin_immediate()?;
    let mut ids = Vec::with_capacity(group.items.len());
    let mut write = || {
        for &batch in &group.new_batches {
            conn.run(BATCH_INSERT, &Group::batch_values(batch, to, now), |_| {})?;
        }
        for &item in &group.items {
            conn.run(ITEM_INSERT, &Group::item_values(item, now), |id| {
                ids.push(id)
            })?;
        }
        for label in &group.closes {
            conn.run(BATCH_CLOSE, &Group::close_values(label, now), |_| {})?;
        }
        conn.commit()
    };
    if let Err(e) = write() {
        conn.rollback();
        return Err(e);
    }
    group.committed(inserted);
    Ok(ids)
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
    let group = Group::of(requests, inserted);
    let mut script = String::from("BEGIN IMMEDIATE;");
    for _ in &group.new_batches {
        script.push_str(BATCH_INSERT);
        script.push(';');
    }
    for chunk in group.items.chunks(ITEMS_PER_INSERT) {
        script.push_str(&items_insert(chunk.len()));
        script.push(';');
    }
    for _ in &group.closes {
        script.push_str(BATCH_CLOSE);
        script.push(';');
    }
    script.push_str("COMMIT;");

    // Only fixed text and `?` placeholders: every value is a bound parameter.
    let mut query =
        sqlx::query(sqlx::AssertSqlSafe(script)).persistent(requests.len() <= CACHED_UP_TO);
    let values = group
        .new_batches
        .iter()
        .flat_map(|&batch| Group::batch_values(batch, (identity, owner), now))
        .chain(
            group
                .items
                .iter()
                .flat_map(|&item| Group::item_values(item, now)),
        )
        .chain(
            group
                .closes
                .iter()
                .flat_map(|label| Group::close_values(label, now)),
        );
    for value in values {
        query = crate::state::query::bind_sqlite(query, value);
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
    group.committed(inserted);
    Ok(ids)
}

#[cfg(test)]
#[path = "commit_tests.rs"]
mod tests;

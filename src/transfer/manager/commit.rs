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
//! - **No hop at all when it can**: on SQLite the leader commits on a connection of its
//!   own, outside the pool ([`crate::state::direct`]), on its own thread, every statement
//!   prepared once. Only when another writer holds the lock (or, outside WAL mode,
//!   readers may make the commit wait) does the group go to a blocking thread, which
//!   waits there for the lock and answers every request itself. That thread holds the
//!   lane until it is done, even if the leader that sent it there is dropped: the next
//!   group (a batch's close, perhaps) never commits before the group before it.
//!
//! On PostgreSQL a group is its statements sent one by one, in one transaction when
//! there are several (a put into a batch already there is one `INSERT`, one round
//! trip), and without the write lock: the lane only appends its own batches and items.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;

use group::{BATCH_CLOSE, BATCH_INSERT, Group, ITEM_INSERT, JOIN_ONE, items_insert};

use super::loops::{Committed, WriteReq};
use super::share::{self, Known, Placed, Placements};
use super::sql::now_ms;
use crate::error::Result;
use crate::state::StateDb;
use crate::state::direct::{self, DirectConnection, DirectError};
use crate::state::query::{Arg, On, Statement, query};

/// Items per `INSERT` statement: 10 parameters each, well under SQLite's 32766.
const ITEMS_PER_INSERT: usize = 500;

/// How long a group waits on its blocking thread for another writer's lock: as long as
/// the pool's connections wait.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Commits on the lane's own connection between two checkpoints of the write-ahead log,
/// which the pool's connections run (about 4 MiB of log at a put's few pages each).
const CHECKPOINT_EVERY: u64 = 256;

/// What a failed commit's error says it was doing.
const COMMITTING: &str = "committing enqueued transfers to the state database failed";

/// The queue of writes not yet committed, and the lane a leader holds while it commits.
pub(super) struct CommitLane {
    queue: Mutex<Vec<WriteReq>>,
    lane: Arc<tokio::sync::Mutex<Lane>>,
}

/// The lane, held by the leader, or by the blocking thread its group went to.
type HeldLane = OwnedMutexGuard<Lane>;

/// What the leader holds: SQLite's connection, the batches it knows in the database,
/// and how many items a batch it joins may hold.
#[derive(Default)]
struct Lane {
    direct: Option<DirectConnection>,
    known: Known,
    max_items: usize,
}

impl CommitLane {
    pub(super) fn new(max_items: usize) -> Self {
        CommitLane {
            queue: Mutex::new(Vec::new()),
            lane: Arc::new(tokio::sync::Mutex::new(Lane {
                max_items,
                ..Lane::default()
            })),
        }
    }

    /// Queues a write. Callers queue under the manager's open-batches lock, so that a
    /// batch's close always comes after its items.
    pub(super) fn push(&self, request: WriteReq) {
        self.queue
            .lock()
            .expect("commit queue poisoned")
            .push(request);
    }

    /// Commits everything queued (leading, or after the leader before it), then returns.
    /// Each request's answer goes to its own `ack`.
    pub(super) async fn commit_queued(&self, db: &StateDb, identity: &str, owner: &str) {
        let mut lane = Arc::clone(&self.lane).lock_owned().await;
        loop {
            let group = std::mem::take(&mut *self.queue.lock().expect("commit queue poisoned"));
            if group.is_empty() {
                break;
            }
            let to = (identity, owner);
            if db.sqlite_pool().is_some() {
                match Lane::commit_sqlite(lane, db, to, group).await {
                    Some(back) => lane = back,
                    // The blocking commit panicked, and its hold on the lane went with
                    // it: the next leader takes the lane afresh.
                    None => return,
                }
            } else {
                let result = lane.commit_in_transaction(db, to, &group).await;
                answer(db, group, result);
            }
        }
    }
}

impl Lane {
    /// Commits `group` on SQLite and answers it: on this thread when nothing can make
    /// the commit wait, else on a blocking thread that waits for the lock. The answers
    /// are sent there too, and the lane goes there with the group and comes back with
    /// it (`None` if that thread panicked), so that a leader dropped meanwhile neither
    /// leaves its callers unanswered nor lets the next group commit first.
    async fn commit_sqlite(
        mut lane: HeldLane,
        db: &StateDb,
        to: (&str, &str),
        group: Vec<WriteReq>,
    ) -> Option<HeldLane> {
        let mut connection = match lane.direct.take().map(Ok).or_else(|| db.direct()) {
            Some(Ok(connection)) => connection,
            Some(Err(e)) => {
                answer(db, group, Err(e));
                return Some(lane);
            }
            None => unreachable!("called on SQLite only"),
        };
        let max_items = lane.max_items;
        if db.commits_without_readers() {
            match commit_direct(&mut connection, to, &group, &mut lane.known, max_items) {
                Ok(done) => {
                    lane.keep(db, connection);
                    answer(db, group, Ok(done));
                    return Some(lane);
                }
                // Another writer holds the lock: wait for it below, off this thread.
                Err(e) if direct::is_busy(&e) => {}
                // Opened again for the next group: nothing of this one was committed.
                Err(e) => {
                    answer(db, group, Err(db.direct_error(COMMITTING, e)));
                    return Some(lane);
                }
            }
        }
        let (db, identity, owner) = (db.clone(), to.0.to_owned(), to.1.to_owned());
        tokio::task::spawn_blocking(move || {
            let lane_ref = &mut *lane;
            let result = connection.wait_for_locks(LOCK_WAIT).and_then(|()| {
                commit_direct(
                    &mut connection,
                    (&identity, &owner),
                    &group,
                    &mut lane_ref.known,
                    max_items,
                )
            });
            let keep = match &result {
                Ok(_) => connection.wait_for_locks(Duration::ZERO).is_ok(),
                Err(e) => direct::is_busy(e) && connection.wait_for_locks(Duration::ZERO).is_ok(),
            };
            answer(
                &db,
                group,
                result.map_err(|e| db.direct_error(COMMITTING, e)),
            );
            if keep {
                lane_ref.keep(&db, connection);
            }
            lane
        })
        .await
        .ok()
    }

    /// Keeps `connection` for the next group and, every [`CHECKPOINT_EVERY`] commits,
    /// has a pool connection checkpoint the write-ahead log (on sqlx's own thread: the
    /// lane's connection never does, see [`crate::state::direct`]).
    fn keep(&mut self, db: &StateDb, mut connection: DirectConnection) {
        if connection.commits(CHECKPOINT_EVERY) {
            let db = db.clone();
            tokio::spawn(async move {
                if let Err(e) = query("PRAGMA wal_checkpoint(PASSIVE)").execute(&db).await {
                    tracing::debug!("checkpointing the state database's log failed: {e}");
                }
            });
        }
        self.direct = Some(connection);
    }

    /// Commits `group` one statement at a time (PostgreSQL: a server round trip each),
    /// in one transaction when it has more than one statement. No write lock: the group
    /// inserts this process's batches and items, closes its own batches, and joins other
    /// processes' open batches holding each row against its close (`share.rs`), so every
    /// host's groups commit side by side. Item ids come from one sequence, drawn in
    /// `VALUES` order: sorted, they are in the order of the group's items.
    async fn commit_in_transaction(
        &mut self,
        db: &StateDb,
        to: (&str, &str),
        requests: &[WriteReq],
    ) -> Result<Done> {
        let now = now_ms();
        let group = Group::of(requests);
        if let Some(done) = self.rejoin(db, to, &group, now).await? {
            return Ok(done);
        }
        let unknown = group
            .batches
            .iter()
            .filter(|(label, _, _)| !self.known.inserted.contains(*label))
            .count();
        let chunks = group.items.len().div_ceil(ITEMS_PER_INSERT);
        let statements = unknown + chunks + group.closes.len();
        // Joins and looks for a batch to join hold the identity's share lock first.
        let shares = group.batches.iter().any(|(label, key, https)| {
            !self.known.inserted.contains(*label)
                && (self.known.joined.contains(*label) || share::shareable(&key.2, *https))
        });
        // One statement (a put into a batch already there, most often) is atomic alone.
        let mut tx = match statements {
            1 if !shares => None,
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
        if shares {
            query(share::SHARE_LOCK)
                .bind(share::share_lock_key(to.0).as_str())
                .execute(on!())
                .await?;
        }
        let mut placements = Placements::new();
        for &(label, key, https) in &group.batches {
            let placed = if self.known.inserted.contains(label) {
                Placed::own(label, false)
            } else {
                let joined = self.known.joined.contains(label);
                let limit = self.max_items;
                let still = joined && hold(label, limit).fetch_optional(on!()).await?.is_some();
                if still {
                    Placed::joined(label.clone())
                } else {
                    let fresh = joined.then(super::new_label);
                    let own = fresh.as_ref().unwrap_or(label);
                    let mut taken = None;
                    if share::shareable(&key.2, https) {
                        let found = bound(
                            query(share::FIND_OPEN),
                            Group::route_values(key, to, self.max_items),
                        )
                        .fetch_optional(on!())
                        .await?
                        .map(|row| row.try_get::<String, _>(0))
                        .transpose()?;
                        if let Some(theirs) = found
                            && hold(&theirs, limit).fetch_optional(on!()).await?.is_some()
                        {
                            taken = Some(theirs);
                        }
                    }
                    match taken {
                        Some(theirs) => Placed::joined(theirs),
                        None => {
                            bound(
                                query(BATCH_INSERT),
                                Group::batch_values((own, key, https), to, now),
                            )
                            .execute(on!())
                            .await?;
                            Placed::own(own, true)
                        }
                    }
                }
            };
            placements.insert(label.clone(), placed);
        }
        let ids = insert_items(on!(), &group, &placements, now).await?;
        for label in &group.closes {
            bound(query(BATCH_CLOSE), Group::close_values(label, now))
                .execute(on!())
                .await?;
        }
        if let Some(tx) = tx {
            tx.commit().await?;
        }
        share::learn(&mut self.known, &placements, &group.closes, &group.forgets);
        Ok(Done { ids, placements })
    }

    /// PostgreSQL: commits a group that only puts items into one other process's open
    /// batch, holding it with a share lock ([`share::REJOIN`]) and without the
    /// identity's lock: the batch this process joined before, or, for a route it has no
    /// batch of, the one [`share::FIND_OPEN`] finds. Joiners' puts, first ones included,
    /// then go side by side instead of one after another behind that lock (64 processes
    /// on 2 cores took 2 s to make their first puts so). The transaction holds one row
    /// with a share lock and waits on nothing else, so it is in no deadlock cycle.
    /// `None` (nothing done) for any other group, or when the batch no longer takes
    /// items: the general path then finds the items a batch, under the lock.
    async fn rejoin(
        &mut self,
        db: &StateDb,
        to: (&str, &str),
        group: &Group<'_>,
        now: i64,
    ) -> Result<Option<Done>> {
        let [(label, key, https)] = group.batches[..] else {
            return Ok(None);
        };
        if !group.closes.is_empty() || self.known.inserted.contains(label) {
            return Ok(None);
        }
        // The batch it joined before; once that no longer takes items, one found open.
        let mut joined = self.known.joined.contains(label).then(|| label.clone());
        let mut looked = false;
        let (ids, batch) = loop {
            let candidate = match joined.take() {
                Some(before) => before,
                None if !looked && share::shareable(&key.2, https) => {
                    looked = true;
                    let found = bound(
                        query(share::FIND_OPEN),
                        Group::route_values(key, to, self.max_items),
                    )
                    .fetch_optional(db)
                    .await?;
                    match found {
                        Some(row) => row.try_get::<String, _>(0)?,
                        None => return Ok(None),
                    }
                }
                None => return Ok(None),
            };
            if let Some(ids) = put_into(db, &candidate, self.max_items, group, now).await? {
                break (ids, candidate);
            }
        };
        let placements = Placements::from([(label.clone(), Placed::joined(batch))]);
        share::learn(&mut self.known, &placements, &[], &group.forgets);
        Ok(Some(Done { ids, placements }))
    }
}

/// PostgreSQL: inserts `group`'s items into another process's batch `batch` if it
/// still takes items, holding it against its owner's close while it does; their
/// ids, or `None` (nothing done). One item (each put of a worker) is one statement
/// ([`JOIN_ONE`]), not a transaction of four round trips.
async fn put_into(
    db: &StateDb,
    batch: &str,
    max_items: usize,
    group: &Group<'_>,
    now: i64,
) -> Result<Option<Vec<i64>>> {
    if let [(_, spec)] = group.items[..] {
        let values = Group::item_values((batch, spec), now)
            .into_iter()
            .chain([Arg::Int(Some(max_items as i64))]);
        let ids = bound(query(JOIN_ONE), values)
            .fetch_scalars::<i64>(db)
            .await?;
        return Ok((!ids.is_empty()).then_some(ids));
    }
    let mut tx = db.begin_append().await?;
    if hold(batch, max_items)
        .fetch_optional(&mut tx)
        .await?
        .is_none()
    {
        // Dropped, the transaction rolls back: it holds nothing.
        return Ok(None);
    }
    // The group's one proposed label (`rejoin` checked), now placed in `batch`.
    let placements: Placements = group
        .batches
        .iter()
        .map(|(proposed, _, _)| ((*proposed).clone(), Placed::joined(batch.to_owned())))
        .collect();
    let ids = insert_items(On::from(&mut tx), group, &placements, now).await?;
    tx.commit().await?;
    Ok(Some(ids))
}

/// Inserts `group`'s items into the batches `placements` put them in; their ids, in
/// the items' order.
async fn insert_items(
    mut on: On<'_>,
    group: &Group<'_>,
    placements: &Placements,
    now: i64,
) -> Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(group.items.len());
    for chunk in group.items.chunks(ITEMS_PER_INSERT) {
        let sql = items_insert(chunk.len());
        let values = chunk
            .iter()
            .flat_map(|&(label, spec)| Group::item_values((&placements[label].label, spec), now));
        ids.extend(
            bound(query(&sql), values)
                .fetch_scalars::<i64>(on.reborrow())
                .await?,
        );
    }
    ids.sort_unstable();
    Ok(ids)
}

/// PostgreSQL: holds the batch `label` against its owner's close ([`share::REJOIN`]) if
/// it still takes items (open, fewer than `limit`): its label back, or no row.
fn hold(label: &str, limit: usize) -> Statement<'_> {
    bound(
        query(share::REJOIN),
        [Arg::Text(Some(label)), Arg::Int(Some(limit as i64))],
    )
}

/// A committed group: its items' ids in order, and where each proposed label's items
/// went.
#[derive(Debug)]
pub(super) struct Done {
    ids: Vec<i64>,
    placements: Placements,
}

/// Answers every request of a committed (or failed) group: items their ids (in order)
/// and batches, closes `Ok`; on failure each its own error, sharing the cause's text.
fn answer(db: &StateDb, group: Vec<WriteReq>, result: Result<Done>) {
    let (mut item_ids, placements) = match &result {
        Ok(done) => (done.ids.clone().into_iter(), Some(&done.placements)),
        Err(_) => (Vec::new().into_iter(), None),
    };
    let failed = || {
        let cause = result.as_ref().err().map(ToString::to_string);
        crate::Error::state(
            db.path(),
            COMMITTING,
            cause.unwrap_or_else(|| "fewer item ids than items".into()),
        )
    };
    for request in group {
        match request {
            WriteReq::Item { ack, label, .. } => {
                let placed = placements.and_then(|p| p.get(&label));
                let _ = ack.send(match (item_ids.next(), placed) {
                    (Some(item), Some(placed)) => Ok(Committed {
                        item,
                        label: placed.label.clone(),
                        joined: placed.joined,
                        inserted: placed.inserted,
                    }),
                    _ => Err(failed()),
                });
            }
            WriteReq::Close { ack, .. } => {
                let _ = ack.send(if result.is_ok() {
                    Ok(())
                } else {
                    Err(failed())
                });
            }
            WriteReq::Forget { .. } => {}
        }
    }
}

/// `statement` with `values` bound in order.
fn bound<'q>(statement: Statement<'q>, values: impl IntoIterator<Item = Arg<'q>>) -> Statement<'q> {
    values.into_iter().fold(statement, Statement::bind)
}

/// Commits a group on a direct connection in one transaction: each statement prepared
/// once, no round trip to another thread. Returns the new item ids in the group's
/// order, and where their batches went (`share.rs`). A busy database (another writer
/// holds the lock) fails at `BEGIN`, before anything is written; any failure later rolls
/// the whole group back.
fn commit_direct(
    conn: &mut DirectConnection,
    to: (&str, &str),
    requests: &[WriteReq],
    known: &mut Known,
    max_items: usize,
) -> std::result::Result<Done, DirectError> {
    let now = now_ms();
    let group = Group::of(requests);
    conn.begin_immediate()?;
    let mut ids = Vec::with_capacity(group.items.len());
    let mut placements = Placements::new();
    let mut write = || {
        let limit = Arg::Int(Some(max_items as i64));
        for &(label, key, https) in &group.batches {
            let placed = if known.inserted.contains(label) {
                Placed::own(label, false)
            } else {
                let joined = known.joined.contains(label);
                let join = |conn: &mut DirectConnection, label: &str| {
                    conn.first_text(
                        share::JOIN,
                        &[Arg::Int(Some(now)), Arg::Text(Some(label)), limit],
                    )
                };
                if joined && join(conn, label)?.is_some() {
                    Placed::joined(label.clone())
                } else {
                    let fresh = joined.then(super::new_label);
                    let own = fresh.as_ref().unwrap_or(label);
                    let found = match share::shareable(&key.2, https) {
                        true => conn.first_text(
                            share::FIND_OPEN,
                            &Group::route_values(key, to, max_items),
                        )?,
                        false => None,
                    };
                    // Under the write lock: found open, it is still open.
                    match found {
                        Some(theirs) if join(conn, &theirs)?.is_some() => Placed::joined(theirs),
                        _ => {
                            conn.run(
                                BATCH_INSERT,
                                &Group::batch_values((own, key, https), to, now),
                                |_| {},
                            )?;
                            Placed::own(own, true)
                        }
                    }
                }
            };
            placements.insert(label.clone(), placed);
        }
        for &(label, spec) in &group.items {
            let values = Group::item_values((&placements[label].label, spec), now);
            conn.run(ITEM_INSERT, &values, |id| ids.push(id))?;
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
    share::learn(known, &placements, &group.closes, &group.forgets);
    Ok(Done { ids, placements })
}

#[path = "group.rs"]
mod group;

#[cfg(test)]
#[path = "commit_tests.rs"]
mod tests;

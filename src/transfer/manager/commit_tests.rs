//! The commit lane's tests: both paths (SQLite's own connection, PostgreSQL's
//! transaction) on a fresh database of their own.
use super::super::config::BatchOptions;
use super::*;
use crate::transfer::ItemSpec;
use crate::transfer::states::ItemState;
use tokio::sync::oneshot;

fn item(label: &str, n: usize) -> WriteReq {
    WriteReq::Item {
        key: ("src".into(), "dst".into(), "{}".into(), 1),
        label: label.into(),
        spec: Box::new(
            ItemSpec::new("src", format!("/in/{n}"), "dst", format!("/out/{n}"))
                .checksum(format!("sum{n}"), "SHA256")
                .size(n as u64),
        ),
        ack: oneshot::channel().0,
    }
}

/// An item request, and where its answer arrives.
fn acked(label: &str, n: usize) -> (WriteReq, oneshot::Receiver<Result<Committed>>) {
    let (ack, answer) = oneshot::channel();
    let WriteReq::Item {
        key, label, spec, ..
    } = item(label, n)
    else {
        unreachable!("item makes items")
    };
    (
        WriteReq::Item {
            key,
            label,
            spec,
            ack,
        },
        answer,
    )
}

/// The two ways a group is committed (SQLite's own connection, PostgreSQL's
/// transaction), each on a connection kept across groups.
enum Via {
    Direct(DirectConnection),
    Transaction(Lane),
}

impl Via {
    /// Each way with a fresh database of its own.
    async fn each() -> Vec<(crate::state::tests::TestDb, Via)> {
        let [direct_db, postgres] = crate::state::tests::engines().await;
        let direct = direct_db.db.direct().expect("SQLite").unwrap();
        vec![
            (direct_db, Via::Direct(direct)),
            (postgres, Via::Transaction(Lane::default())),
        ]
    }

    fn name(&self) -> &'static str {
        match self {
            Via::Direct(_) => "direct",
            Via::Transaction(_) => "postgres",
        }
    }

    async fn commit(
        &mut self,
        db: &StateDb,
        group: &[WriteReq],
        known: &mut Known,
    ) -> Result<Vec<i64>> {
        Ok(self.commit_as(db, "host:1:1", group, known, 0).await?.ids)
    }

    /// A commit by the process `owner`, which joins other processes' batches of fewer
    /// than `max_items` items.
    async fn commit_as(
        &mut self,
        db: &StateDb,
        owner: &str,
        group: &[WriteReq],
        known: &mut Known,
        max_items: usize,
    ) -> Result<Done> {
        let to = ("me", owner);
        match self {
            Via::Direct(conn) => commit_direct(conn, to, group, known, max_items)
                .map_err(|e| db.direct_error("commit", e)),
            Via::Transaction(lane) => {
                lane.known = std::mem::take(known);
                lane.max_items = max_items;
                let result = lane.commit_in_transaction(db, to, group).await;
                *known = std::mem::take(&mut lane.known);
                result
            }
        }
    }
}

async fn counts(db: &StateDb) -> (i64, i64) {
    query("SELECT (SELECT COUNT(*) FROM batches), (SELECT COUNT(*) FROM items)")
        .fetch_one_as(db)
        .await
        .unwrap()
}

/// Ids come back in the order of the group's items (also across the sqlx path's
/// statements), and each row holds what its item said.
#[tokio::test]
async fn ids_follow_the_items_order_and_rows_hold_every_field() {
    for (engine, mut via) in Via::each().await {
        let db = &engine.db;
        let label = format!("psg-{}", via.name());
        let mut inserted = Known::default();
        let count = ITEMS_PER_INSERT * 2 + 7;
        let group: Vec<WriteReq> = (0..count).map(|n| item(&label, n)).collect();
        let ids = via.commit(db, &group, &mut inserted).await.unwrap();
        assert_eq!(ids.len(), count, "{}", via.name());
        for (n, id) in ids.iter().enumerate().step_by(97) {
            let row: (String, String, String, String, String, i64, String) = query(
                "SELECT b.label, i.source_path, i.destination_path, i.external_checksum, \
                     i.checksum_algorithm, i.size, i.state \
                     FROM items i JOIN batches b ON b.id = i.batch_id WHERE i.id = $1",
            )
            .bind(*id)
            .fetch_one_as(db)
            .await
            .unwrap();
            let want = (
                label.clone(),
                format!("/in/{n}"),
                format!("/out/{n}"),
                format!("sum{n}"),
                "SHA256".to_string(),
                n as i64,
                ItemState::Pending.as_str().to_string(),
            );
            assert_eq!(row, want, "{}", via.name());
        }
        assert!(inserted.inserted.contains(&label));
    }
}

/// Regression (a leader dropped after its COMMIT ran but before it recorded the
/// batches it inserted): the next group inserts the same batch again, and that must
/// not fail every later group of the batch.
#[tokio::test]
async fn a_batch_inserted_again_is_not_an_error() {
    for (engine, mut via) in Via::each().await {
        let db = &engine.db;
        let mut inserted = Known::default();
        via.commit(db, &[item("psg-a", 0)], &mut inserted)
            .await
            .unwrap();
        inserted.inserted.clear(); // the record lost
        via.commit(db, &[item("psg-a", 1)], &mut inserted)
            .await
            .expect("the batch is already there: nothing to insert");
        assert_eq!(counts(db).await, (1, 2), "{}", via.name());
    }
}

/// A statement that fails inside the group leaves no transaction open on the
/// connection: the next group commits on it, and the failed one left nothing.
#[tokio::test]
async fn a_failed_group_is_rolled_back_and_the_connection_stays_usable() {
    for (engine, mut via) in Via::each().await {
        let db = &engine.db;
        // The writer believes a batch exists that does not: its item cannot be inserted.
        let mut inserted = Known::default();
        inserted.inserted.insert("psg-gone".to_string());
        let new = format!("psg-new-{}", via.name());
        let group = [item(&new, 0), item("psg-gone", 1)];
        assert!(via.commit(db, &group, &mut inserted).await.is_err());
        assert_eq!(counts(db).await, (0, 0), "all or nothing: {}", via.name());
        assert!(!inserted.inserted.contains(&new));
        let ids = via
            .commit(db, &[item(&new, 2)], &mut inserted)
            .await
            .expect("the connection is not left inside the failed transaction");
        assert_eq!(ids.len(), 1, "{}", via.name());
    }
}

/// Outside WAL mode (a state database on a network file system) a commit may have to
/// wait for readers: the group goes to a blocking thread that waits, and commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_wal_mode_a_group_waits_for_readers_off_the_callers_thread() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = crate::settings::Settings::isolated(dir.path());
    settings.assume_network_fs = true;
    let db = StateDb::open_with(dir.path().join("state.db"), &settings)
        .await
        .unwrap();
    assert!(!db.commits_without_readers());
    // A reader in the rollback journal's mode holds its shared lock to its end: a
    // commit cannot finish before it ends.
    let mut reader = db.sqlite_pool().unwrap().begin().await.unwrap();
    let _: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM items")
        .fetch_one(&mut *reader)
        .await
        .unwrap();

    let commits = std::sync::Arc::new(CommitLane::new(0));
    let (request, id) = acked("psg-a", 0);
    commits.push(request);
    let committing = {
        let (db, commits) = (db.clone(), commits.clone());
        tokio::spawn(async move { commits.commit_queued(&db, "me", "o").await })
    };
    reader.commit().await.unwrap();
    committing.await.unwrap();
    assert!(id.await.unwrap().is_ok());
    assert_eq!(counts(&db).await, (1, 1));
    assert!(commits.lane.lock().await.direct.is_some(), "kept");
}

/// While another connection holds the write lock, the lane's own connection writes
/// nothing on the caller's thread; the group waits for the lock on a blocking thread
/// and commits there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_database_makes_the_group_wait_for_the_lock_off_the_callers_thread() {
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(dir.path().join("state.db")).await.unwrap();
    let mut holder = db.begin_write().await.unwrap();
    let mut direct = db.direct().unwrap().unwrap();
    let group = [item("psg-a", 0)];
    let err =
        commit_direct(&mut direct, ("me", "o"), &group, &mut Known::default(), 0).unwrap_err();
    assert!(direct::is_busy(&err), "{err}");
    let written: i64 = query("SELECT COUNT(*) FROM items")
        .fetch_scalar(&mut holder)
        .await
        .unwrap();
    assert_eq!(written, 0);

    let commits = std::sync::Arc::new(CommitLane::new(0));
    let (request, id) = acked("psg-a", 0);
    commits.push(request);
    let committing = {
        let (db, commits) = (db.clone(), commits.clone());
        tokio::spawn(async move { commits.commit_queued(&db, "me", "o").await })
    };
    holder.commit().await.unwrap();
    committing.await.unwrap();
    assert!(id.await.unwrap().is_ok());
    assert_eq!(counts(&db).await, (1, 1));
    assert!(
        commits.lane.lock().await.direct.is_some(),
        "kept for the next group"
    );
}

/// The one-item statement the direct path keeps prepared is the multi-row insert's
/// one-row case.
#[test]
fn the_one_item_insert_is_the_multi_row_insert_of_one() {
    let squeeze = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(squeeze(ITEM_INSERT), squeeze(&items_insert(1)));
    assert!(
        items_insert(2).contains("label = $10), $11, $12"),
        "{}",
        items_insert(2)
    );
}

/// Regression: a leader dropped while its group waited for the lock on the blocking
/// thread let go of the lane, so the next leader could commit the next group (a close
/// of the same batch, perhaps) before the first: a batch closed, claimed and posted
/// without the items still on their way into it. The blocking thread now holds the lane
/// until its group is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_leader_keeps_the_lane_until_its_waiting_group_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(dir.path().join("state.db")).await.unwrap();
    let holder = db.begin_write().await.unwrap();
    let commits = std::sync::Arc::new(CommitLane::new(0));
    let (request, id) = acked("psg-a", 0);
    commits.push(request);
    let leader = {
        let (db, commits) = (db.clone(), commits.clone());
        tokio::spawn(async move { commits.commit_queued(&db, "me", "o").await })
    };
    // The leader takes the lane, then the group (the queue empties), finds the
    // database busy and sends the group to a blocking thread, where it waits: its only
    // await point after taking the group. (Probing the lane itself would race: a lock
    // handed to a leader not yet polled is given back when that leader is dropped.)
    while !commits.queue.lock().unwrap().is_empty() {
        tokio::task::yield_now().await;
    }
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    assert!(
        commits.lane.try_lock().is_err(),
        "the waiting group still holds the lane"
    );
    holder.commit().await.unwrap();
    assert!(id.await.unwrap().is_ok(), "answered by the blocking thread");
    let _free = commits.lane.lock().await;
    assert_eq!(counts(&db).await, (1, 1));
}

/// An item of a route whose batches keep their label (a Globus store's).
fn shared_item(label: &str, n: usize) -> WriteReq {
    let WriteReq::Item {
        label, spec, ack, ..
    } = item(label, n)
    else {
        unreachable!("item makes items")
    };
    let options = serde_json::to_string(&BatchOptions {
        keep_label: true,
        ..BatchOptions::default()
    })
    .unwrap();
    WriteReq::Item {
        key: ("src".into(), "dst".into(), options, 0),
        label,
        spec,
        ack,
    }
}

fn close(label: &str) -> WriteReq {
    WriteReq::Close {
        label: label.into(),
        ack: oneshot::channel().0,
    }
}

async fn items_of(db: &StateDb, label: &str) -> i64 {
    query("SELECT COUNT(*) FROM items JOIN batches ON batches.id = items.batch_id WHERE batches.label = $1")
        .bind(label)
        .fetch_scalar(db)
        .await
        .unwrap()
}

/// A Globus store's put joins another process's open batch of its route, and its answer
/// names that batch; once the batch's owner closes it, the next put goes into a batch of
/// its own under a fresh label (never into the closed one). A full batch is not joined,
/// and batches that do not keep their label are never shared (they merge at claim).
#[tokio::test]
async fn a_put_joins_another_process_open_batch_until_its_owner_closes_it() {
    for (engine, mut via) in Via::each().await {
        let db = &engine.db;
        let name = via.name();
        let (mut theirs, mut mine) = (Known::default(), Known::default());
        let (them, me) = ("them:1:1", "me:2:2");
        via.commit_as(db, them, &[shared_item("psg-theirs", 0)], &mut theirs, 3)
            .await
            .unwrap();
        let done = via
            .commit_as(db, me, &[shared_item("psg-mine", 1)], &mut mine, 3)
            .await
            .unwrap();
        assert_eq!(
            done.placements["psg-mine"],
            Placed::joined("psg-theirs".into()),
            "{name}"
        );
        assert!(mine.joined.contains("psg-theirs") && mine.inserted.is_empty());
        // Later puts propose the batch joined: checked again, still open.
        let done = via
            .commit_as(db, me, &[shared_item("psg-theirs", 2)], &mut mine, 3)
            .await
            .unwrap();
        assert_eq!(
            done.placements["psg-theirs"],
            Placed::joined("psg-theirs".into())
        );
        assert_eq!(items_of(db, "psg-theirs").await, 3, "{name}");

        // Full (3 items of at most 3): a newcomer opens its own.
        let mut third = Known::default();
        let done = via
            .commit_as(
                db,
                "third:3:3",
                &[shared_item("psg-third", 9)],
                &mut third,
                3,
            )
            .await
            .unwrap();
        assert_eq!(
            done.placements["psg-third"],
            Placed::own("psg-third", true),
            "{name}"
        );

        via.commit_as(db, them, &[close("psg-theirs")], &mut theirs, 3)
            .await
            .unwrap();
        let done = via
            .commit_as(db, me, &[shared_item("psg-theirs", 3)], &mut mine, 10)
            .await
            .unwrap();
        let placed = &done.placements["psg-theirs"];
        // The third process's open batch takes it: it has room at 10.
        assert_eq!(placed, &Placed::joined("psg-third".into()), "{name}");
        assert_eq!(items_of(db, "psg-theirs").await, 3, "closed: {name}");
        via.commit_as(db, "third:3:3", &[close("psg-third")], &mut third, 3)
            .await
            .unwrap();
        let done = via
            .commit_as(db, me, &[shared_item("psg-third", 4)], &mut mine, 10)
            .await
            .unwrap();
        let placed = &done.placements["psg-third"];
        assert!(placed.inserted && !placed.joined, "{name}: {placed:?}");
        assert!(placed.label.starts_with("psg-") && placed.label != "psg-third");
        assert!(mine.inserted.contains(&placed.label) && mine.joined.is_empty());
        let state: String = query("SELECT state FROM batches WHERE label = $1")
            .bind(placed.label.as_str())
            .fetch_scalar(db)
            .await
            .unwrap();
        assert_eq!(state, "OPEN");

        // Batches that do not keep their label: one each.
        let done = via
            .commit_as(db, me, &[item("psg-plain-mine", 5)], &mut mine, 10)
            .await
            .unwrap();
        via.commit_as(db, them, &[item("psg-plain-theirs", 6)], &mut theirs, 10)
            .await
            .unwrap();
        assert_eq!(
            done.placements["psg-plain-mine"],
            Placed::own("psg-plain-mine", true)
        );
        assert_eq!(items_of(db, "psg-plain-theirs").await, 1, "{name}");
    }
}

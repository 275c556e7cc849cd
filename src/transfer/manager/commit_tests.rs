//! The commit lane's tests: both paths (SQLite's own connection, PostgreSQL's
//! transaction) on a fresh database of their own.
use super::*;
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
fn acked(label: &str, n: usize) -> (WriteReq, oneshot::Receiver<Result<i64>>) {
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
        inserted: &mut HashSet<String>,
    ) -> Result<Vec<i64>> {
        let to = ("me", "host:1:1");
        match self {
            Via::Direct(conn) => {
                commit_direct(conn, to, group, inserted).map_err(|e| db.direct_error("commit", e))
            }
            Via::Transaction(lane) => {
                lane.inserted = std::mem::take(inserted);
                let result = lane.commit_in_transaction(db, to, group).await;
                *inserted = std::mem::take(&mut lane.inserted);
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
        let mut inserted = HashSet::new();
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
        assert!(inserted.contains(&label));
    }
}

/// Regression (a leader dropped after its COMMIT ran but before it recorded the
/// batches it inserted): the next group inserts the same batch again, and that must
/// not fail every later group of the batch.
#[tokio::test]
async fn a_batch_inserted_again_is_not_an_error() {
    for (engine, mut via) in Via::each().await {
        let db = &engine.db;
        let mut inserted = HashSet::new();
        via.commit(db, &[item("psg-a", 0)], &mut inserted)
            .await
            .unwrap();
        inserted.clear(); // the record lost
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
        let mut inserted: HashSet<String> = ["psg-gone".to_string()].into();
        let new = format!("psg-new-{}", via.name());
        let group = [item(&new, 0), item("psg-gone", 1)];
        assert!(via.commit(db, &group, &mut inserted).await.is_err());
        assert_eq!(counts(db).await, (0, 0), "all or nothing: {}", via.name());
        assert!(!inserted.contains(&new));
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

    let commits = std::sync::Arc::new(CommitLane::new());
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
    let err = commit_direct(&mut direct, ("me", "o"), &group, &mut HashSet::new()).unwrap_err();
    assert!(direct::is_busy(&err), "{err}");
    let written: i64 = query("SELECT COUNT(*) FROM items")
        .fetch_scalar(&mut holder)
        .await
        .unwrap();
    assert_eq!(written, 0);

    let commits = std::sync::Arc::new(CommitLane::new());
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
    let commits = std::sync::Arc::new(CommitLane::new());
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

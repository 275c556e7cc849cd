//! The manager's own unit tests: what needs its private parts (rows written by hand,
//! `next_to_submit`).

use super::*;
use crate::auth::StaticTokenAuthorizer;
use crate::state::query::{Tx, query};
use crate::state::tests::engines;
use crate::transfer::states::ItemState;
use loops::Committed;

/// Regression (eight `transfer` processes, one hung although its item SUCCEEDED):
/// the poller noticed other processes' outcomes only while *another* process held
/// the lease. A waiter whose item was finished elsewhere, in a process that holds the
/// lease and has nothing in flight, must still be told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_in_the_lease_holder_learns_of_outcomes_recorded_elsewhere() {
    for engine in engines().await {
        waiter_learns_of_outcomes_recorded_elsewhere(&engine.db).await;
    }
}

async fn waiter_learns_of_outcomes_recorded_elsewhere(db: &StateDb) {
    let auth = Arc::new(StaticTokenAuthorizer::new("unused"));
    // Nothing is in flight, so this client never sends a request.
    let client = TransferClient::with_base_url("http://127.0.0.1:9/", auth).unwrap();
    let config = ManagerConfig {
        poll_min: Duration::from_millis(20),
        poll_idle: Duration::from_millis(20),
        poll_max: Duration::from_millis(50),
        ..ManagerConfig::default()
    };
    let m = TransferManager::start(db.clone(), client, config)
        .await
        .unwrap();
    // Another live process (on another host, fresh heartbeat) owns an open batch.
    let other = "elsewhere:1:1";
    query("INSERT INTO processes (owner, host, pid, started, heartbeat_at) VALUES ($1, 'elsewhere', 1, '1', $2)")
        .bind(other).bind(db.clock_ms().await.unwrap()).execute(db).await.unwrap();
    let batch: i64 = query("INSERT INTO batches (label, identity, source, destination, options, priority, state, owner, created_at) VALUES ('psg-other', $1, 's', 'd', '{}', 1, 'OPEN', $2, 0) RETURNING id")
        .bind(m.identity()).bind(other).fetch_scalar(db).await.unwrap();
    let item: i64 = query("INSERT INTO items (batch_id, source_path, destination_path, state, created_at) VALUES ($1, '/a', '/b', 'PENDING', 0) RETURNING id")
        .bind(batch).fetch_scalar(db).await.unwrap();
    m.poll_now().await.unwrap();
    assert!(
        m.poll_cycles() == 0,
        "nothing in flight: no request to Globus"
    );
    let waiting = {
        let m = m.clone();
        tokio::spawn(async move { m.wait(item, Duration::from_secs(30)).await })
    };
    // The other process's poller records the outcome, then exits.
    let mut tx = db.begin_write().await.unwrap();
    for statement in [
        "UPDATE items SET state = 'SUCCEEDED' WHERE batch_id = $1",
        "UPDATE batches SET state = 'DONE' WHERE id = $1",
    ] {
        query(statement).bind(batch).execute(&mut tx).await.unwrap();
    }
    bump_generation_for_test(&mut tx).await;
    tx.commit().await.unwrap();
    let done = waiting
        .await
        .unwrap()
        .expect("the waiter is told, not left to time out");
    assert_eq!(done.state, ItemState::Succeeded);
    m.shutdown();
}

/// Regression (`status` submitted what a stopped command left behind, merely by
/// looking): a manager that does not adopt orphans leaves a dead process's batch
/// alone, and one that does takes it; a live process's batch neither takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_manager_that_adopts_orphans_submits_a_dead_process_batch() {
    for (adopt_orphans, engine) in [false, true]
        .into_iter()
        .flat_map(|adopt| std::iter::repeat_n(adopt, 2))
        .zip(engines().await.into_iter().chain(engines().await))
    {
        let db = &engine.db;
        let auth = Arc::new(StaticTokenAuthorizer::new("unused"));
        // Submissions fail at once (nothing listens): a taken batch stays READY.
        let client = TransferClient::with_base_url("http://127.0.0.1:9/", auth)
            .unwrap()
            .with_retry(crate::transfer::RetryConfig {
                max_retries: 0,
                ..Default::default()
            })
            .unwrap();
        let config = ManagerConfig {
            adopt_orphans,
            ..ManagerConfig::default()
        };
        let m = TransferManager::start(db.clone(), client, config)
            .await
            .unwrap();
        // A process on another host whose heartbeat stopped long ago, and a live one.
        let now = db.clock_ms().await.unwrap();
        for (owner, heartbeat) in [("gone:1:1", 0), ("alive:2:2", now)] {
            let host = owner.split(':').next().unwrap();
            query("INSERT INTO processes (owner, host, pid, started, heartbeat_at) VALUES ($1, $2, 1, '1', $3)")
                .bind(owner).bind(host).bind(heartbeat).execute(db).await.unwrap();
            query("INSERT INTO batches (label, identity, source, destination, options, priority, state, owner, created_at) VALUES ($1, $2, 's', 'd', '{}', 1, 'READY', $3, 0)")
                .bind(&format!("psg-{host}")).bind(m.identity()).bind(owner)
                .execute(db).await.unwrap();
        }
        let gone: i64 = query("SELECT id FROM batches WHERE label = 'psg-gone'")
            .fetch_scalar(db)
            .await
            .unwrap();
        let next = m.inner.next_to_submit(0).await.unwrap();
        if adopt_orphans {
            assert_eq!(
                next,
                Some((gone, None)),
                "the dead process's batch is taken"
            );
        } else {
            assert_eq!(next, None, "neither batch is this manager's to submit");
        }
        m.shutdown();
    }
}

/// Regression (an 8 × 8 facility run hung with 316 items in a batch that never closed):
/// a put proposed for another process's open batch found it closed at commit and went
/// into a fresh batch of this process; the batcher had meanwhile forgotten the foreign
/// entry, so nothing in memory named the fresh batch. The answer must take it back
/// (the route's entry), or close it when a newer batch of the route opened meanwhile.
/// The interleaving is forced here: the answer arrives with no entry of its label.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_batch_whose_proposed_entry_was_forgotten_is_taken_back_or_closed() {
    for engine in engines().await {
        let db = &engine.db;
        let auth = Arc::new(StaticTokenAuthorizer::new("unused"));
        let client = TransferClient::with_base_url("http://127.0.0.1:9/", auth).unwrap();
        let config = ManagerConfig {
            // The batcher must not close what the test looks at.
            quiet: Duration::from_secs(3600),
            max_delay: Duration::from_secs(3600),
            ..ManagerConfig::default()
        };
        let m = TransferManager::start(db.clone(), client, config)
            .await
            .unwrap();
        let inner = &m.inner;
        let key: BatchKey = ("s".into(), "d".into(), "{}".into(), 0);
        let fresh_batch = |label: &'static str| {
            let (db, identity, owner) = (db.clone(), inner.identity.clone(), inner.owner.clone());
            async move {
                query("INSERT INTO batches (label, identity, source, destination, options, priority, state, owner, created_at) VALUES ($1, $2, 's', 'd', '{}', 0, 'OPEN', $3, 0)")
                    .bind(label).bind(&identity).bind(&owner).execute(&db).await.unwrap();
                Committed {
                    item: 1,
                    label: label.into(),
                    joined: false,
                    inserted: true,
                }
            }
        };
        let state_of = |label: &'static str| {
            let db = db.clone();
            async move {
                query("SELECT state FROM batches WHERE label = $1")
                    .bind(label)
                    .fetch_scalar::<String>(&db)
                    .await
                    .unwrap()
            }
        };

        // The route has no entry (the foreign one was forgotten): the fresh batch
        // becomes the route's open batch, its own, and so closes in time.
        let committed = fresh_batch("psg-fresh-1").await;
        inner
            .follow("psg-foreign", &committed, key.clone(), 100)
            .await;
        {
            let open = inner.open.lock().unwrap();
            let entry = open.get(&key).expect("the fresh batch is taken back");
            assert_eq!(entry.label, "psg-fresh-1");
            assert!(!entry.foreign && entry.shared && entry.items == 1);
        }
        assert_eq!(state_of("psg-fresh-1").await, "OPEN");

        // The route's entry now names a newer batch: the second fresh one closes at once.
        let committed = fresh_batch("psg-fresh-2").await;
        inner
            .follow("psg-foreign", &committed, key.clone(), 100)
            .await;
        assert_eq!(
            inner
                .open
                .lock()
                .unwrap()
                .get(&key)
                .map(|b| b.label.clone()),
            Some("psg-fresh-1".to_owned()),
            "the route keeps its entry"
        );
        assert_eq!(
            state_of("psg-fresh-2").await,
            "READY",
            "closed, not left open"
        );

        // The first item of a batch placed where it was proposed leaves `open` as it is
        // (its close, if the entry is gone, is queued behind it): taking the batch back
        // would put later items into a closed batch.
        let committed = Committed {
            item: 2,
            label: "psg-fresh-1".into(),
            joined: false,
            inserted: true,
        };
        inner.open.lock().unwrap().clear();
        inner
            .follow("psg-fresh-1", &committed, key.clone(), 100)
            .await;
        assert!(inner.open.lock().unwrap().is_empty());
        m.shutdown();
    }
}

/// Regression (an 8 × 8 facility run took 10 s longer than its work): a process whose
/// puts joined another process's batch waited in `flush` for a state change to look
/// again, but that process posting the batch changes nothing the database's generation
/// counts; only the next poller's first poll did, once the exiting poller's lease ran
/// out. The flush must see the batch posted without any such change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_sees_a_joined_batch_posted_by_its_owner_without_a_state_change() {
    for engine in engines().await {
        let db = &engine.db;
        let config = ManagerConfig {
            poll_min: Duration::from_millis(20),
            ..ManagerConfig::default()
        };
        let m = beside_an_open_batch(db, config).await;
        let spec = ItemSpec::new("s", "/a", "d", "/b").options(shared_options());
        let joined = m.enqueue(spec).await.unwrap();
        assert_eq!(joined.label, "psg-theirs", "the put joined the open batch");
        let flushing = {
            let m = m.clone();
            tokio::spawn(async move { m.flush().await })
        };
        // Its owner closes and posts it (as a task that is done): no generation bump.
        query("UPDATE batches SET state = 'DONE' WHERE label = 'psg-theirs'")
            .execute(db)
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), flushing)
            .await
            .expect("the flush saw the joined batch posted")
            .unwrap()
            .unwrap();
        m.shutdown();
    }
}

/// Regression (found reading the code for issue 37): a process whose own items filled
/// its share of another process's open batch pushed the *close* of that batch, as for a
/// full batch of its own: a joiner closed its owner's batch, whose later items would go
/// into a closed one. A joiner only stops joining it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_whose_share_is_full_never_closes_the_owners_batch() {
    for engine in engines().await {
        let db = &engine.db;
        let config = ManagerConfig {
            max_items: 2,
            quiet: Duration::from_secs(3600),
            max_delay: Duration::from_secs(3600),
            ..ManagerConfig::default()
        };
        let m = beside_an_open_batch(db, config).await;
        let mut labels = Vec::new();
        for i in 0..3 {
            let spec = ItemSpec::new("s", format!("/a{i}"), "d", format!("/b{i}"))
                .options(shared_options());
            labels.push(m.enqueue(spec).await.unwrap().label);
        }
        assert_eq!(labels[..2], ["psg-theirs", "psg-theirs"], "two joined");
        assert_ne!(
            labels[2], "psg-theirs",
            "the third went elsewhere: the batch is full"
        );
        let (state, owner): (String, String) =
            query("SELECT state, owner FROM batches WHERE label = 'psg-theirs'")
                .fetch_one_as(db)
                .await
                .unwrap();
        assert_eq!(
            (state.as_str(), owner.as_str()),
            ("OPEN", OTHER),
            "its owner's to close"
        );
        m.shutdown();
    }
}

/// Regression (the 19-task runs of the 8 × 8 facility bench): when the batch a process
/// had joined closed, its next put opened a batch of its own, but the open entry that
/// followed it kept the joined batch's clock (and item count). A first item long before
/// made the new batch `max_delay` old at birth: it closed at once, and every joiner
/// whose put was in flight at the close made a task of its own. The new batch's clock
/// starts at its first item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_opened_when_the_joined_one_closed_starts_its_own_clock() {
    for engine in engines().await {
        let db = &engine.db;
        let config = ManagerConfig {
            quiet: Duration::from_secs(3600),
            max_delay: Duration::from_secs(60),
            ..ManagerConfig::default()
        };
        let m = beside_an_open_batch(db, config).await;
        let spec = |i: usize| {
            ItemSpec::new("s", format!("/a{i}"), "d", format!("/b{i}")).options(shared_options())
        };
        assert_eq!(m.enqueue(spec(0)).await.unwrap().label, "psg-theirs");
        // Joined long ago (as a worker that joined early in a long burst).
        let long_ago = Instant::now()
            .checked_sub(Duration::from_secs(3600))
            .expect("the clock runs an hour");
        {
            let mut open = m.inner.open.lock().unwrap();
            let entry = open.values_mut().next().expect("the joined batch's entry");
            entry.first = long_ago;
        }
        // Its owner closes it.
        query("UPDATE batches SET state = 'READY' WHERE label = 'psg-theirs'")
            .execute(db)
            .await
            .unwrap();
        let before = Instant::now();
        let own = m.enqueue(spec(1)).await.unwrap().label;
        assert_ne!(own, "psg-theirs", "the put went to a batch of its own");
        {
            let open = m.inner.open.lock().unwrap();
            let entry = open
                .values()
                .find(|b| b.label == own)
                .expect("the new batch is still open: its clock did not start an hour ago");
            assert!(entry.first >= before, "its clock starts at its first item");
            assert!(!entry.foreign, "its own");
            assert_eq!(
                (entry.items, entry.others),
                (1, 0),
                "its counts start afresh"
            );
        }
        let (state,): (String,) = query("SELECT state FROM batches WHERE label = $1")
            .bind(&own)
            .fetch_one_as(db)
            .await
            .unwrap();
        assert_eq!(state, "OPEN");
        m.shutdown();
    }
}

/// Regression (the 8 × 8 facility bench: every put of a worker looked for a batch to
/// join under the identity's lock): the batcher counted an open batch's quiet from the
/// put, not from its commit's answer. A commit slower than the quiet (waiting for a
/// lock) got its batch closed under it, and the answer found no entry to follow: the
/// worker's next put started over, under the lock again, which kept commits slow. An
/// entry is not quiet while a commit of it is out; its answer starts the quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_batch_is_not_quiet_while_a_commit_of_it_is_out() {
    let engine = engines().await.into_iter().next().expect("an engine");
    let hour = Duration::from_secs(3600);
    let config = ManagerConfig {
        quiet: hour,
        max_delay: hour * 10,
        ..ManagerConfig::default()
    };
    let m = beside_an_open_batch(&engine.db, config).await;
    let key: BatchKey = ("s".into(), "d".into(), "{}".into(), 1);
    let long_ago = Instant::now()
        .checked_sub(hour * 2)
        .expect("the clock runs 2 h");
    let mut entry = OpenBatch::fresh("psg-mine".into(), false, true, false, 77);
    (entry.last, entry.committing, entry.items) = (long_ago, 1, 1);
    m.inner.open.lock().unwrap().insert(key.clone(), entry);
    let (due, _) = loops::due_batches(&m.inner, Default::default(), Instant::now());
    assert!(due.is_empty(), "its commit is out: no quiet yet");
    m.inner.answered(&key, 76);
    assert_eq!(
        m.inner.open.lock().unwrap()[&key].committing,
        1,
        "an answer for an earlier entry of the route changes nothing"
    );
    m.inner.answered(&key, 77);
    let later = Instant::now() + hour / 2;
    let (due, _) = loops::due_batches(&m.inner, Default::default(), later);
    assert!(due.is_empty(), "the answer started the quiet");
    let (due, _) = loops::due_batches(&m.inner, Default::default(), later + hour);
    assert_eq!(due.len(), 1, "quiet for its quiet after the answer");
    m.shutdown();
}

/// PostgreSQL: a worker's put joins another process's open batch without the
/// identity's share lock (which only a process that may insert a batch needs): 64
/// workers' first puts went one after another behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_joins_an_open_batch_while_the_identitys_share_lock_is_held() {
    for engine in engines().await {
        let db = &engine.db;
        if db.sqlite_pool().is_some() {
            continue;
        }
        let m = beside_an_open_batch(db, ManagerConfig::default()).await;
        let mut holder = db.begin_append().await.unwrap();
        query(share::SHARE_LOCK)
            .bind(share::share_lock_key(m.identity()).as_str())
            .execute(&mut holder)
            .await
            .unwrap();
        for i in 0..2 {
            let spec = ItemSpec::new("s", format!("/a{i}"), "d", format!("/b{i}"))
                .options(shared_options());
            let put = tokio::time::timeout(Duration::from_secs(30), m.enqueue(spec))
                .await
                .expect("the put did not wait for the identity's lock")
                .unwrap();
            assert_eq!(put.label, "psg-theirs", "put {i} joined the open batch");
        }
        holder.commit().await.unwrap();
        m.shutdown();
    }
}

/// Another live process (another host, fresh heartbeat) of the shared-batch tests.
const OTHER: &str = "elsewhere:1:1";

/// Options of a Globus store's batches, which other processes' puts join (`share.rs`).
fn shared_options() -> BatchOptions {
    BatchOptions {
        keep_label: true,
        ..BatchOptions::default()
    }
}

/// A manager (whose client reaches nothing) on `db`, where [`OTHER`] has the open batch
/// `psg-theirs` of the route `s` → `d`, with [`shared_options`].
async fn beside_an_open_batch(db: &StateDb, config: ManagerConfig) -> TransferManager {
    let auth = Arc::new(StaticTokenAuthorizer::new("unused"));
    let client = TransferClient::with_base_url("http://127.0.0.1:9/", auth).unwrap();
    let m = TransferManager::start(db.clone(), client, config)
        .await
        .unwrap();
    query("INSERT INTO processes (owner, host, pid, started, heartbeat_at) VALUES ($1, 'elsewhere', 1, '1', $2)")
        .bind(OTHER).bind(db.clock_ms().await.unwrap()).execute(db).await.unwrap();
    let options = serde_json::to_string(&shared_options()).unwrap();
    query("INSERT INTO batches (label, identity, source, destination, options, priority, state, owner, created_at) VALUES ('psg-theirs', $1, 's', 'd', $2, 1, 'OPEN', $3, 0)")
        .bind(m.identity()).bind(&options).bind(OTHER).execute(db).await.unwrap();
    m
}

async fn bump_generation_for_test(tx: &mut Tx) {
    query("UPDATE generation SET value = value + 1 WHERE id = 1")
        .execute(tx)
        .await
        .unwrap();
}

#[test]
fn labels_suit_the_filter_grammar() {
    let label = new_label();
    assert!(label.starts_with("psg-") && label.len() == 36);
    assert!(!label.contains([',', '/', ':']));
}

//! The client against the strict emulator (SPEC §3.11): a submission refused for
//! identical paths or the pending-task limit waits and goes exactly once; a permission
//! error that persists needs a human; `~` is read from the endpoint document; a checksum
//! a collection cannot compute is dropped, not retried forever; a service identity gets
//! its `data_access` without a person; readers of many processes share one watcher.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::emulator::{Emu, fault, write};
use crate::support::managers::{client, config, manager, spec, sqlite};
use ps_globus::Error;
use ps_globus::auth::ClientCredentialsAuthorizer;
use ps_globus::error::{NeedsAttention, TransferFailure};
use ps_globus::state::StateDb;
use ps_globus::transfer::watch::Watcher;
use ps_globus::transfer::{
    BatchOptions, BatchState, ItemState, RequestGate, TaskStatus, TransferClient,
};
use ps_globus_sim::{CollectionConfig, FaultKind};

const LONG: Duration = Duration::from_secs(120);

fn refused_409(emu: &Emu) -> u64 {
    emu.sim
        .stats()
        .by_status
        .get(&409)
        .copied()
        .unwrap_or_default()
}

/// The hidden scenario's "duplicate stage-in of the same paths while the first is
/// running": the second batch waits for the first task to end, then goes as its own
/// task; both succeed, one task each, no batch failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_refused_for_identical_paths_waits_for_the_earlier_task_then_goes_once() {
    let emu = Emu::with(|c| c.task_latency_ms = 800);
    write(emu.root_a(), "in/f", b"first");
    let dir = tempfile::tempdir().unwrap();
    let m = manager(&emu, &sqlite(&dir.path().join("state.db")), config()).await;
    let first = m.enqueue(spec(&emu, "/in/f", "/out/f")).await.unwrap();
    m.flush().await.unwrap();
    let second = m.enqueue(spec(&emu, "/in/f", "/out/f")).await.unwrap();
    assert_ne!(
        first.label, second.label,
        "a new batch: the first is at Globus"
    );
    for item in [first.item, second.item] {
        assert_eq!(
            m.wait(item, LONG).await.unwrap().state,
            ItemState::Succeeded
        );
    }
    assert_eq!(emu.sim.stats().tasks(), 2, "one task each, exactly once");
    assert!(
        refused_409(&emu) >= 1,
        "Globus (emulated) refused the second at first"
    );
    let batch = m.batch(&second.label).await.unwrap().unwrap();
    assert_eq!(batch.state, BatchState::Done);
    assert_eq!(batch.status, Some(TaskStatus::Succeeded));
}

/// A held batch keeps its submission id: a process that starts on the database after
/// the holder went away posts it once the conflict is over, still as one task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_batch_is_posted_once_by_the_next_process() {
    let emu = Emu::with(|c| c.task_latency_ms = 1_500);
    write(emu.root_a(), "in/f", b"data");
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Another process (another database) is transferring to the same path.
    let other = manager(&emu, &sqlite(&one.path().join("state.db")), config()).await;
    let theirs = other.enqueue(spec(&emu, "/in/f", "/out/f")).await.unwrap();
    other.flush().await.unwrap();
    let db = two.path().join("state.db");
    let m = manager(&emu, &sqlite(&db), config()).await;
    let ours = m.enqueue(spec(&emu, "/in/f", "/out/f")).await.unwrap();
    // Wait until Globus has refused it once: it is held with its submission id.
    let held = tokio::time::timeout(LONG, async {
        loop {
            let batch = m.batch(&ours.label).await.unwrap().unwrap();
            if batch.held_until.is_some() || batch.state == BatchState::Done {
                return batch;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the batch was never held");
    assert_eq!(held.state, BatchState::Submitting);
    assert!(held.submission_id.is_some());
    assert!(
        held.last_error
            .as_deref()
            .unwrap()
            .contains("identical paths"),
        "{held:?}"
    );
    m.shutdown();
    drop(m);
    let next = manager(&emu, &sqlite(&db), config()).await;
    assert_eq!(
        next.wait(ours.item, LONG).await.unwrap().state,
        ItemState::Succeeded
    );
    assert_eq!(
        other.wait(theirs.item, LONG).await.unwrap().state,
        ItemState::Succeeded
    );
    assert_eq!(emu.sim.stats().tasks(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pending_task_limit_holds_a_batch_and_never_fails_it() {
    let emu = Emu::with(|c| {
        c.task_latency_ms = 500;
        c.pending_cap = 1;
    });
    write(emu.root_a(), "in/a", b"a");
    write(emu.root_a(), "in/b", b"b");
    let dir = tempfile::tempdir().unwrap();
    let one_per_task = {
        let mut built = config();
        built.max_items = 1;
        built
    };
    let m = manager(&emu, &sqlite(&dir.path().join("state.db")), one_per_task).await;
    let a = m.enqueue(spec(&emu, "/in/a", "/out/a")).await.unwrap();
    let b = m.enqueue(spec(&emu, "/in/b", "/out/b")).await.unwrap();
    for item in [a.item, b.item] {
        assert_eq!(
            m.wait(item, LONG).await.unwrap().state,
            ItemState::Succeeded
        );
    }
    assert_eq!(emu.sim.stats().tasks(), 2);
    assert!(refused_409(&emu) >= 1, "the limit was met");
}

/// A permission error that persists is not cancelled and re-submitted (it would meet
/// the same error): the reader is told a human must act, and the task waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_permission_error_needs_a_human_and_the_task_is_left_running() {
    let emu = Emu::with(|c| {
        c.faults = vec![fault(
            FaultKind::PermissionDenied,
            Some("/in/locked"),
            None,
            None,
        )]
    });
    write(emu.root_a(), "in/locked", b"x");
    let dir = tempfile::tempdir().unwrap();
    let quick = {
        let mut built = config();
        built.fail_fast_after = Duration::from_millis(300);
        built
    };
    let m = manager(&emu, &sqlite(&dir.path().join("state.db")), quick).await;
    let options = {
        let mut built = BatchOptions::default();
        built.skip_source_errors = false;
        built
    };
    let item = m
        .enqueue(spec(&emu, "/in/locked", "/out/locked").options(options))
        .await
        .unwrap();
    let waited = m.wait(item.item, LONG).await;
    match waited
        .as_ref()
        .map_err(|e| e.downcast_ref::<NeedsAttention>())
    {
        Err(Some(NeedsAttention {
            task_id, reason, ..
        })) => {
            assert!(reason.contains("PERMISSION_DENIED"), "{reason}");
            let task = emu.task(task_id).await;
            assert_eq!(task["status"], "ACTIVE", "not cancelled");
        }
        _ => panic!("expected NeedsAttention, got {waited:?}"),
    }
    assert_eq!(emu.sim.stats().tasks(), 1, "not re-submitted");
}

/// `~/x` is the collection's default directory joined with `x`, as its endpoint
/// document says: the item is recorded so, and confirmed by Globus's list of copied
/// paths even in a task that skipped something (so the list is what decides).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tilde_path_is_read_from_the_collections_default_directory() {
    let emu = Emu::with(|c| {
        c.collections.get_mut("b").unwrap().default_directory = Some("/home/u".into());
    });
    write(emu.root_a(), "in/f", b"home");
    let dir = tempfile::tempdir().unwrap();
    let m = manager(&emu, &sqlite(&dir.path().join("state.db")), config()).await;
    let home = m.enqueue(spec(&emu, "/in/f", "~/out/f")).await.unwrap();
    let missing = m
        .enqueue(spec(&emu, "/in/gone", "/out/gone"))
        .await
        .unwrap();
    let arrived = m.wait(home.item, LONG).await.unwrap();
    assert_eq!(arrived.state, ItemState::Succeeded, "{arrived:?}");
    assert_eq!(arrived.destination_path, "/home/u/out/f");
    assert_eq!(
        std::fs::read(emu.root_b().join("home/u/out/f")).unwrap(),
        b"home"
    );
    let err = m.wait(missing.item, LONG).await.unwrap_err();
    assert!(
        err.downcast_ref::<TransferFailure>()
            .is_some_and(|f| f.code == "FILE_NOT_FOUND"),
        "{err}"
    );
    assert_eq!(emu.sim.stats().tasks(), 1);
}

/// A collection that cannot compute SHA256: the task that asked for it is cancelled at
/// first sight and its items go again without the external checksum; later batches to
/// that collection go without one at once. Nothing retries forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checksum_the_collection_cannot_compute_is_dropped_not_retried_forever() {
    let emu = Emu::with(|c| {
        c.collections.get_mut("b").unwrap().checksum_algorithms =
            Some(vec!["MD5".into(), "ADLER32".into()]);
    });
    write(emu.root_a(), "in/f", b"data");
    write(emu.root_a(), "in/g", b"data");
    let sha = "3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7";
    let dir = tempfile::tempdir().unwrap();
    let m = manager(&emu, &sqlite(&dir.path().join("state.db")), config()).await;
    let first = m
        .enqueue(spec(&emu, "/in/f", "/out/f").checksum(sha, "SHA256"))
        .await
        .unwrap();
    assert_eq!(
        m.wait(first.item, LONG).await.unwrap().state,
        ItemState::Succeeded
    );
    assert_eq!(
        emu.sim.stats().tasks(),
        2,
        "the stuck task and its re-split"
    );
    let later = m
        .enqueue(spec(&emu, "/in/g", "/out/g").checksum(sha, "SHA256"))
        .await
        .unwrap();
    assert_eq!(
        m.wait(later.item, LONG).await.unwrap().state,
        ItemState::Succeeded
    );
    assert_eq!(
        emu.sim.stats().tasks(),
        3,
        "the later batch went without it at once"
    );
    assert_eq!(std::fs::read(emu.root_b().join("out/g")).unwrap(), b"data");
}

/// A service identity has no consent screen: it asks for a mapped collection's
/// `data_access` in its token request and the transfer goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_identity_gets_the_data_access_of_a_mapped_collection_by_itself() {
    let emu = Emu::with(|c| {
        c.clients.insert("svc-id".into(), "svc-secret".into());
        c.collections.insert(
            "mapped".into(),
            CollectionConfig {
                root: c.collections["b"].root.clone(),
                requires_data_access: true,
                ..Default::default()
            },
        );
    });
    write(emu.root_a(), "in/f", b"x");
    let auth = ClientCredentialsAuthorizer::new(
        emu.sim.auth_url(),
        "svc-id",
        "svc-secret",
        ps_globus::auth::TRANSFER_SCOPE,
    )
    .unwrap();
    let c = TransferClient::with_base_url(emu.sim.transfer_url(), Arc::new(auth)).unwrap();
    let mapped = emu.sim.collections()["mapped"].id.to_string();
    let doc = {
        let mut built = ps_globus::transfer::types::TransferRequest::default();
        built.data_type = "transfer".into();
        built.submission_id = c.submission_id().await.unwrap();
        built.source_endpoint = emu.a.clone();
        built.destination_endpoint = mapped;
        built.data = vec![{
            let mut built = ps_globus::transfer::types::TransferItem::default();
            built.data_type = "transfer_item".into();
            built.source_path = "/in/f".into();
            built.destination_path = "/svc/f".into();
            built
        }];
        built
    };
    let submitted = c.submit_transfer(&doc).await.unwrap();
    assert_eq!(submitted.code, "Accepted");
    assert_eq!(emu.sim.stats().tasks(), 1);
}

/// Counts the requests a client sends.
#[derive(Debug, Default)]
struct Counter(AtomicUsize);

#[async_trait::async_trait]
impl RequestGate for Counter {
    async fn admit(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Readers of two processes on one database share one watcher: only the lease holder
/// asks Globus; the other reads what it saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_of_two_processes_share_one_watcher() {
    let emu = Emu::with(|c| c.task_latency_ms = 600);
    write(emu.root_a(), "in/f", b"x");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let m = manager(&emu, &sqlite(&path), config()).await;
    let item = m.enqueue(spec(&emu, "/in/f", "/out/f")).await.unwrap();
    let db = StateDb::open(&path).await.unwrap();
    let (count_a, count_b) = (Arc::new(Counter::default()), Arc::new(Counter::default()));
    let a = Watcher::start_shared_as(
        client(&emu).with_gate(count_a.clone()),
        db.clone(),
        0.0,
        "host-a:1:1",
    );
    let b = Watcher::start_shared_as(
        client(&emu).with_gate(count_b.clone()),
        db,
        0.0,
        "host-b:2:2",
    );
    let _watch_a = a.watch(&item.label);
    // Once A has seen the task, it holds the lease; then B starts to watch.
    while a.task(&item.label).is_none() {
        a.changed().await;
    }
    let _watch_b = b.watch(&item.label);
    for w in [&a, &b] {
        loop {
            let changed = w.changed();
            if w.task(&item.label).is_some_and(|t| t.is_final()) {
                break;
            }
            changed.await;
        }
    }
    assert!(count_a.0.load(Ordering::SeqCst) > 0);
    assert_eq!(count_b.0.load(Ordering::SeqCst), 0, "B never asked Globus");
}

/// Regression (found by a four-minute soak): under the request budget, producers closed
/// a tiny batch every 20 ms while the submitter could post only a few a second; the
/// queue of closed batches outgrew the run and readers timed out. While closed batches
/// queue for posting, an open batch keeps taking items instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_batches_queue_for_posting_an_open_batch_keeps_taking_items() {
    let emu = Emu::with(|c| c.task_latency_ms = 3_600_000);
    write(emu.root_a(), "f", b"x");
    let dir = tempfile::tempdir().unwrap();
    let one_at_a_time = {
        let mut built = config();
        built.max_pending_tasks = 1;
        built.quiet = Duration::ZERO;
        built.max_delay = Duration::ZERO;
        built
    };
    let m = manager(&emu, &sqlite(&dir.path().join("state.db")), one_at_a_time).await;
    m.enqueue(spec(&emu, "/f", "/out/a")).await.unwrap();
    m.flush().await.unwrap(); // at Globus: admission is now full
    let queued = m.enqueue(spec(&emu, "/f", "/out/b")).await.unwrap();
    m.flush().await.unwrap(); // closed, waiting for admission
    assert_eq!(
        m.batch(&queued.label).await.unwrap().unwrap().state,
        BatchState::Ready
    );
    let c = m.enqueue(spec(&emu, "/f", "/out/c")).await.unwrap();
    let d = m.enqueue(spec(&emu, "/f", "/out/d")).await.unwrap();
    assert_eq!(c.label, d.label, "one batch, not two more in the queue");
    let batch = m.batch(&c.label).await.unwrap().unwrap();
    assert_eq!((batch.state, batch.items), (BatchState::Open, 2));
}

/// A refused login ends a wait at once with the login error, not at its timeout; the
/// item stays queued (never failed), and the manager's trouble says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_ends_a_wait_at_once_and_keeps_the_item() {
    let emu = Emu::start();
    write(emu.root_a(), "in/f", b"data");
    let dir = tempfile::tempdir().unwrap();
    let refused = TransferClient::with_base_url(
        emu.sim.transfer_url(),
        Arc::new(ps_globus::auth::StaticTokenAuthorizer::new("not-a-token")),
    )
    .unwrap()
    .with_retry(crate::support::managers::fast_retry())
    .unwrap();
    let db = StateDb::open(dir.path().join("state.db")).await.unwrap();
    let m = ps_globus::transfer::TransferManager::start(db, refused, config())
        .await
        .unwrap();
    let item = m.enqueue(spec(&emu, "/in/f", "/out/f")).await.unwrap();
    let err = m.wait(item.item, LONG).await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied(_)), "{err}");
    assert!(err.needs_login());
    let trouble = m.trouble().expect("the manager knows why");
    assert_eq!(trouble.activity, ps_globus::transfer::Activity::Submitting);
    let status = m.item(item.item).await.unwrap();
    assert_eq!(status.state, ItemState::Pending, "kept, not failed");
    assert!(status.task_id.is_none());
    assert_eq!(emu.sim.stats().route("POST /v0.10/transfer"), 0);
}

/// Nagle for Globus tasks: while the identity's running slots are all taken, items
/// that come one by one join one open batch, which goes as one task when a slot frees,
/// instead of a queue of one-item tasks. With the rule off, each makes its own task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_every_running_slot_is_busy_later_items_share_one_task() {
    for (slots, expect_shared) in [(3, true), (0, false)] {
        let emu = Emu::with(|c| c.task_latency_ms = 1_500);
        let dir = tempfile::tempdir().unwrap();
        let quick = {
            let mut built = config();
            built.quiet = Duration::from_millis(1);
            built.max_delay = Duration::from_millis(2);
            built.running_slots = slots;
            built
        };
        let m = manager(&emu, &sqlite(&dir.path().join("state.db")), quick).await;
        // Three tasks take the three running slots.
        for n in 0..3 {
            write(emu.root_a(), &format!("busy/{n}"), b"x");
            m.enqueue(spec(&emu, &format!("/busy/{n}"), &format!("/busy/{n}")))
                .await
                .unwrap();
            m.flush().await.unwrap();
        }
        assert_eq!(emu.sim.stats().tasks(), 3);
        // Then items one by one, each long after the previous batch would have closed.
        let mut labels = Vec::new();
        let mut items = Vec::new();
        for n in 0..6 {
            write(emu.root_a(), &format!("late/{n}"), b"y");
            let item = m
                .enqueue(spec(&emu, &format!("/late/{n}"), &format!("/late/{n}")))
                .await
                .unwrap();
            labels.push(item.label.clone());
            items.push(item.item);
            tokio::time::sleep(Duration::from_millis(20)).await; // 20 × the quiet time
        }
        for item in items {
            assert_eq!(
                m.wait(item, LONG).await.unwrap().state,
                ItemState::Succeeded
            );
        }
        labels.dedup();
        if expect_shared {
            assert_eq!(labels.len(), 1, "one batch while the slots were busy");
            assert_eq!(emu.sim.stats().tasks(), 4);
        } else {
            assert!(labels.len() > 1, "without the rule: {labels:?}");
            assert!(emu.sim.stats().tasks() > 4);
        }
        m.shutdown();
    }
}

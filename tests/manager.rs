//! The Transfer client and the TransferManager against the emulator: coalescing,
//! admission, polling cost, retries under fault storms, crash resume at the failpoints,
//! failing only what failed, deadlines, cancel, and two processes sharing one database.

use ps_globus::error::{GlobusApiError, GlobusCode, NeedsAttention, Remedy, TransferFailure};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::on_both_engines;
use crate::support::emulator::{Emu, TOKEN, fault, write};
use crate::support::managers::{Engine, client, config, fast_retry, manager, spec};
use crate::support::until;
use ps_globus::Error;
use ps_globus::auth::StaticTokenAuthorizer;
use ps_globus::state::StateDb;
use ps_globus::transfer::{
    BatchOptions, BatchState, ItemSpec, ItemState, ManagerConfig, Priority, RetryConfig,
    TaskStatus, TransferClient, TransferManager,
};
use ps_globus_sim::FaultKind;

const LONG: Duration = Duration::from_secs(120);

/// Every `in/N` file (holding `N`) arrived intact as `out/N`, for N below `count`.
fn assert_delivered(emu: &Emu, count: usize) {
    for i in 0..count {
        let arrived = std::fs::read(emu.root_b().join(format!("out/{i}"))).unwrap();
        assert_eq!(arrived, format!("{i}").as_bytes(), "out/{i}");
    }
}

on_both_engines! {
    async fn a_burst_of_concurrent_enqueues_becomes_a_handful_of_tasks(engine: Engine) {
    let emu = Emu::start();
    let state = engine.fresh().await;
    for i in 0..1000 {
        write(
            emu.root_a(),
            &format!("in/{i}"),
            format!("item {i}").as_bytes(),
        );
    }
    let m = manager(&emu, &state.url, config()).await;
    let handles: Vec<_> = (0..1000)
        .map(|i| {
            let (m, spec) = (
                m.clone(),
                spec(&emu, &format!("/in/{i}"), &format!("/out/{i}")),
            );
            tokio::spawn(async move { m.enqueue(spec).await.unwrap() })
        })
        .collect();
    let mut items = Vec::new();
    for h in handles {
        items.push(h.await.unwrap());
    }
    for item in &items {
        let done = m.wait(item.item, LONG).await.unwrap();
        assert_eq!(done.state, ItemState::Succeeded);
        assert!(done.task_id.is_some());
    }
    let stats = emu.sim.stats();
    assert!(
        stats.tasks() <= 3,
        "1000 items became {} tasks",
        stats.tasks()
    );
    assert_eq!(
        std::fs::read(emu.root_b().join("out/999")).unwrap(),
        b"item 999"
    );
    let labels: std::collections::BTreeSet<_> = items.iter().map(|i| i.label.clone()).collect();
    assert_eq!(labels.len() as u64, stats.tasks());
    for label in &labels {
        assert!(label.starts_with("psg-") && !label.contains([',', '/', ':']));
        let batch = m.batch(label).await.unwrap().unwrap();
        assert_eq!(
            (batch.state, batch.status),
            (BatchState::Done, Some(TaskStatus::Succeeded))
        );
    }
}
}

on_both_engines! {
    async fn enqueues_from_one_loop_also_coalesce(engine: Engine) {
    let emu = Emu::start();
    let state = engine.fresh().await;
    for i in 0..200 {
        write(emu.root_a(), &format!("in/{i}"), b"x");
    }
    let m = manager(&emu, &state.url, config()).await;
    let mut items = Vec::new();
    for i in 0..200 {
        items.push(
            m.enqueue(spec(&emu, &format!("/in/{i}"), &format!("/out/{i}")))
                .await
                .unwrap(),
        );
    }
    for item in &items {
        m.wait(item.item, LONG).await.unwrap();
    }
    assert!(
        emu.sim.stats().tasks() <= 5,
        "{} tasks",
        emu.sim.stats().tasks()
    );
}
}

on_both_engines! {
    async fn one_poll_cycle_lists_every_task_in_flight_with_at_most_50_ids_per_request(engine: Engine) {
    let emu = Emu::with(|c| {
        c.task_latency_ms = 3_600_000;
        c.pending_cap = 500;
        c.rate_limit = None; // 300 submission requests, not what this test is about
    });
    write(emu.root_a(), "f", b"x");
    let state = engine.fresh().await;
    let mut quiet = ManagerConfig::default();
    quiet.max_items = 1; // every item its own task
    quiet.max_pending_tasks = 250;
    quiet.poll_min = Duration::from_secs(3600);
    quiet.poll_max = Duration::from_secs(3600);
    quiet.request_budget = 0.0;
    let m = manager(&emu, &state.url, quiet).await;
    for i in 0..150 {
        m.enqueue(spec(&emu, "/f", &format!("/out/{i}")))
            .await
            .unwrap();
    }
    tokio::time::timeout(LONG, m.flush())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(emu.sim.stats().tasks(), 150);
    // One cycle updates every task; no cycle ever makes more than three requests for
    // 150 tasks (true at any instant: a cycle is counted before it sends anything).
    m.poll_now().await.unwrap();
    let polled = emu.sim.stats().route("GET /v0.10/task_list");
    assert!(
        polled >= 3 && polled <= 3 * m.poll_cycles(),
        "{polled} requests in {} cycles",
        m.poll_cycles()
    );
    for batch in m.batches(200).await.unwrap() {
        assert_eq!(batch.status, Some(TaskStatus::Active));
    }
}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_lists_many_tasks_with_at_most_50_ids_per_request() {
    let emu = Emu::with(|c| {
        c.task_latency_ms = 3_600_000;
        c.pending_cap = 500;
        c.rate_limit = None; // 300 submission requests, not what this test is about
    });
    write(emu.root_a(), "f", b"x");
    let c = client(&emu);
    let mut ids = Vec::new();
    for i in 0..150 {
        let doc = {
            let mut built = ps_globus::transfer::types::TransferRequest::default();
            built.data_type = "transfer".into();
            built.submission_id = c.submission_id().await.unwrap();
            built.source_endpoint = emu.a.clone();
            built.destination_endpoint = emu.b.clone();
            built.data = vec![{
                let mut built = ps_globus::transfer::types::TransferItem::default();
                built.data_type = "transfer_item".into();
                built.source_path = "/f".into();
                built.destination_path = format!("/{i}");
                built
            }];
            built
        };
        ids.push(c.submit_transfer(&doc).await.unwrap().task_id);
    }
    let tasks = c.tasks_by_id(&ids, Some("task_id,status")).await.unwrap();
    assert_eq!(tasks.len(), 150);
    assert!(tasks.iter().all(|t| t.status == TaskStatus::Active));
    // Globus refuses a task_id filter of more than 50 ids (and so does the emulator).
    assert_eq!(emu.sim.stats().route("GET /v0.10/task_list"), 3);
}

on_both_engines! {
    async fn admission_caps_pending_tasks_and_latency_goes_first_without_starving_bulk(engine: Engine) {
    let emu = Emu::with(|c| c.task_latency_ms = 3_600_000);
    write(emu.root_a(), "f", b"x");
    let state = engine.fresh().await;
    let capped = { let mut built = config(); built.max_items = 1; built.max_pending_tasks = 2; built.bulk_every = 3; built };
    let m = manager(&emu, &state.url, capped).await;
    for i in 0..4 {
        m.enqueue(spec(&emu, "/f", &format!("/bulk{i}")))
            .await
            .unwrap();
    }
    tokio::time::timeout(LONG, m.flush())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        emu.sim.stats().tasks(),
        2,
        "only two pending at Globus; the rest wait locally"
    );
    for i in 0..3 {
        m.enqueue(spec(&emu, "/f", &format!("/lat{i}")).priority(Priority::Latency))
            .await
            .unwrap();
    }
    tokio::time::timeout(LONG, m.flush())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(emu.sim.stats().tasks(), 2);

    // Each freed slot admits one more batch.
    let submitted = |batches: &[ps_globus::transfer::BatchStatus]| -> Vec<(String, String)> {
        batches
            .iter()
            .filter(|b| b.task_id.is_some())
            .map(|b| (b.label.clone(), b.priority.clone()))
            .collect()
    };
    let mut order = Vec::new();
    for _ in 0..5 {
        let before = submitted(&m.batches(100).await.unwrap());
        let oldest = m
            .batches(100)
            .await
            .unwrap()
            .into_iter()
            .rfind(|b| b.state == BatchState::Submitted)
            .unwrap();
        m.cancel_task(oldest.task_id.as_deref().unwrap())
            .await
            .unwrap();
        m.poll_now().await.unwrap();
        tokio::time::timeout(LONG, m.flush())
            .await
            .unwrap()
            .unwrap();
        let after = submitted(&m.batches(100).await.unwrap());
        let new: Vec<_> = after.into_iter().filter(|b| !before.contains(b)).collect();
        assert_eq!(new.len(), 1, "one admission per freed slot");
        order.push(new[0].1.clone());
    }
    assert_eq!(
        order,
        ["bulk", "latency", "latency", "bulk", "latency"],
        "every third admission is bulk's"
    );
    assert_eq!(emu.sim.stats().tasks(), 7);
}
}

on_both_engines! {
    /// The express lane (issue 37): while latency work is about, bulk tasks leave one of
    /// Globus's three running slots free, so a latency batch made after them starts at
    /// once instead of queueing behind bulk tasks that may run for hours; bulk takes the
    /// slot back as its own tasks end, and a flush sends bulk work past the cap.
    async fn a_latency_task_starts_at_once_while_bulk_tasks_fill_the_slots_they_may(engine: Engine) {
    let emu = Emu::with(|c| c.task_latency_ms = 3_600_000);
    write(emu.root_a(), "f", b"x");
    let state = engine.fresh().await;
    let config = { let mut built = config(); built.max_items = 1; built };
    let m = manager(&emu, &state.url, config).await;
    let globus = client(&emu);
    let task_of = async |label: &str| -> Option<String> {
        m.batches(100).await.unwrap().into_iter().find(|b| b.label == label)?.task_id
    };
    // The batch's task as the manager recorded it (the emulator counts a task before
    // the manager has its id).
    let submitted = async |label: &str| -> String {
        until(&format!("{label} to be submitted"), async || task_of(label).await.is_some()).await;
        task_of(label).await.unwrap()
    };
    let enqueue = async |to: &str, priority: Priority| {
        m.enqueue(spec(&emu, "/f", to).priority(priority)).await.unwrap().label
    };

    // Latency work was made a moment ago (its task ended, cancelled).
    let l0 = enqueue("/l0", Priority::Latency).await;
    m.cancel_task(&submitted(&l0).await).await.unwrap();
    until("the latency task to end", async || {
        m.poll_now().await.unwrap();
        m.batches(100).await.unwrap().iter().any(|b| b.label == l0 && b.state == BatchState::Done)
    })
    .await;

    // Four bulk batches: two go, two wait for a slot (were they not capped, they would
    // have gone with the first two, long before the latency batch below).
    let mut bulk = Vec::new();
    for i in 0..4 {
        bulk.push(enqueue(&format!("/bulk{i}"), Priority::Bulk).await);
    }
    let bulk_0 = submitted(&bulk[0]).await;
    submitted(&bulk[1]).await;
    // A latency batch goes to the slot kept free, and runs at once.
    let l1 = enqueue("/l1", Priority::Latency).await;
    let l1_task = submitted(&l1).await;
    until("the latency task to start", async || {
        let events = globus.events(&l1_task, 100, false).await.unwrap();
        events.data.iter().any(|e| e.code == "STARTED")
    })
    .await;
    assert_eq!(task_of(&bulk[2]).await, None, "bulk waits for a slot");
    assert_eq!(task_of(&bulk[3]).await, None, "bulk waits for a slot");
    assert_eq!(emu.sim.stats().tasks(), 4);

    // A bulk task ends: the next bulk batch takes its slot, and only that one.
    m.cancel_task(&bulk_0).await.unwrap();
    submitted(&bulk[2]).await;
    assert_eq!(task_of(&bulk[3]).await, None, "bulk is at its cap again");
    // A flush sends the rest (left waiting, it would outlive this process).
    tokio::time::timeout(LONG, m.flush()).await.unwrap().unwrap();
    assert!(task_of(&bulk[3]).await.is_some());
    assert_eq!(emu.sim.stats().tasks(), 6);
}
}

on_both_engines! {
    async fn storms_of_429_and_bursts_of_503_deliver_every_item_exactly_once(engine: Engine) {
    let emu = Emu::with(|c| {
        c.fail_rate = 0.2;
        c.seed = 42;
        c.faults = vec![
            fault(
                FaultKind::Http429,
                None,
                Some("POST /v0.10/transfer"),
                Some(3),
            ),
            fault(
                FaultKind::Http503,
                None,
                Some("GET /v0.10/submission_id"),
                Some(2),
            ),
            fault(
                FaultKind::ConnectionReset,
                None,
                Some("POST /v0.10/transfer"),
                Some(4),
            ),
        ];
    });
    for i in 0..60 {
        write(emu.root_a(), &format!("in/{i}"), format!("{i}").as_bytes());
    }
    let state = engine.fresh().await;
    let m = manager(
        &emu,
        &state.url,
        { let mut built = config(); built.max_items = 20; built },
    )
    .await;
    let mut items = Vec::new();
    for i in 0..60 {
        items.push(
            m.enqueue(spec(&emu, &format!("/in/{i}"), &format!("/out/{i}")))
                .await
                .unwrap(),
        );
    }
    for item in &items {
        assert_eq!(
            m.wait(item.item, LONG).await.unwrap().state,
            ItemState::Succeeded
        );
    }
    let stats = emu.sim.stats();
    let batches = m.batches(100).await.unwrap();
    assert_eq!(
        stats.tasks(),
        batches.len() as u64,
        "one Globus task per batch, never two"
    );
    assert!(
        stats.responses_429 >= 3 && stats.responses_503 >= 2,
        "{stats:?}"
    );
    assert_delivered(&emu, 60);
}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_retries_with_a_limit_and_never_retries_external_errors() {
    let emu = Emu::with(|c| {
        c.faults = vec![
            fault(
                FaultKind::Http429,
                None,
                Some("GET /v0.10/task_list"),
                Some(100),
            ),
            fault(
                FaultKind::Http502,
                None,
                Some("GET /v0.10/endpoint/{id}"),
                None,
            ),
            fault(
                FaultKind::Http503,
                None,
                Some("GET /v0.10/submission_id"),
                Some(3),
            ),
        ];
    });
    let c = client(&emu);
    assert_eq!(
        c.submission_id().await.unwrap().len(),
        36,
        "three 503s, then success"
    );
    let err = c.task_list(&Default::default()).await.unwrap_err();
    match err.downcast_ref::<GlobusApiError>() {
        Some(answer) if answer.status == 429 && answer.retries == 5 => {}
        _ => panic!("expected 429 after 5 retries, got {err:?}"),
    }
    assert_eq!(emu.sim.stats().route("GET /v0.10/task_list"), 6);
    let err = c.endpoint(&emu.a).await.unwrap_err();
    match err.downcast_ref::<GlobusApiError>() {
        Some(answer) if answer.status == 502 && answer.retries == 0 => assert_eq!(
            answer.code,
            GlobusCode::External("ExternalError.Backend".into())
        ),
        _ => panic!("{err:?}"),
    }
    let bad = TransferClient::with_base_url(
        emu.sim.transfer_url(),
        Arc::new(StaticTokenAuthorizer::new("wrong")),
    )
    .unwrap();
    let err = bad.submission_id().await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied(_)), "{err:?}");
    assert_eq!(err.remedy(), Some(&Remedy::LoginAgain), "{err}");
    assert!(!format!("{err:?}").contains("wrong"), "no token in errors");
}

on_both_engines! {
    async fn a_missing_source_fails_only_its_item_with_the_globus_reason(engine: Engine) {
    let emu = Emu::start();
    for i in 0..10 {
        if i != 4 {
            write(emu.root_a(), &format!("in/{i}"), b"ok");
        }
    }
    let state = engine.fresh().await;
    let m = manager(&emu, &state.url, config()).await;
    let mut items = Vec::new();
    for i in 0..10 {
        items.push(
            m.enqueue(spec(&emu, &format!("/in/{i}"), &format!("/out/{i}")))
                .await
                .unwrap(),
        );
    }
    for (i, item) in items.iter().enumerate() {
        let result = m.wait(item.item, LONG).await;
        if i == 4 {
            let err = result.unwrap_err();
            match err.downcast_ref::<TransferFailure>() {
                Some(TransferFailure {
                    code,
                    source_path,
                    destination_path,
                    task_id,
                    ..
                }) => {
                    assert_eq!(code, "FILE_NOT_FOUND");
                    assert_eq!(
                        (source_path.as_str(), destination_path.as_str()),
                        ("/in/4", "/out/4")
                    );
                    assert!(task_id.is_some());
                }
                None => panic!("{err:?}"),
            }
        } else {
            assert_eq!(result.unwrap().state, ItemState::Succeeded);
        }
    }
    assert_eq!(emu.sim.stats().tasks(), 1);
}
}

/// The code and description an item failed with.
async fn failure(m: &TransferManager, item: i64) -> (String, String) {
    let err = m.wait(item, LONG).await.expect_err("expected a failure");
    match err.downcast_ref::<TransferFailure>() {
        Some(failure) => (failure.code.clone(), failure.description.clone()),
        None => panic!("expected a failure, got {err:?}"),
    }
}

on_both_engines! {
    /// Defect 5: the client and the emulator once read `/in/x ` differently (the emulator
    /// trimmed it), so a source that does not exist was copied from its trimmed namesake and
    /// reported as copied. Names are taken literally on both sides.
    async fn a_source_named_with_a_trailing_space_is_that_file_not_its_trimmed_namesake(engine: Engine) {
    let emu = Emu::start();
    write(emu.root_a(), "in/x", b"the namesake");
    write(emu.root_a(), "in/y ", b"spaced");
    let state = engine.fresh().await;
    let m = manager(&emu, &state.url, config()).await;
    let missing = m.enqueue(spec(&emu, "/in/x ", "/out/x ")).await.unwrap();
    let spaced = m.enqueue(spec(&emu, "/in/y ", "/out/y ")).await.unwrap();
    assert_eq!(failure(&m, missing.item).await.0, "FILE_NOT_FOUND");
    assert_eq!(
        m.wait(spaced.item, LONG).await.unwrap().state,
        ItemState::Succeeded
    );
    assert_eq!(
        std::fs::read(emu.root_b().join("out/y ")).unwrap(),
        b"spaced"
    );
    assert!(!emu.root_b().join("out/x ").exists());
    assert!(!emu.root_b().join("out/x").exists());
}
}

on_both_engines! {
    /// Defect 13: a task that fails gives each item its own reason: the copied one
    /// succeeds, the skipped one keeps its skip reason, the one that failed the task gets the
    /// task's code, and the one never reached says it was not copied.
    async fn each_item_of_a_failed_task_keeps_its_own_reason(engine: Engine) {
    let emu = Emu::with(|c| {
        // Globus promises no order; this test needs one (`c` after the file that fails).
        c.ordered_copies = true;
        c.faults = vec![fault(
            FaultKind::QuotaExceeded,
            Some("/in/full"),
            None,
            None,
        )]
    });
    for name in ["a", "full", "c"] {
        write(emu.root_a(), &format!("in/{name}"), name.as_bytes());
    }
    let state = engine.fresh().await;
    let m = manager(&emu, &state.url, config()).await;
    let options = { let mut built = BatchOptions::default(); built.fail_on_quota_errors = true; built };
    let mut items = Vec::new();
    // Copied in request order: `c` comes after the file that fails the task.
    for name in ["a", "missing", "full", "c"] {
        let item = spec(&emu, &format!("/in/{name}"), &format!("/out/{name}"));
        items.push(m.enqueue(item.options(options.clone())).await.unwrap().item);
    }
    assert_eq!(
        m.wait(items[0], LONG).await.unwrap().state,
        ItemState::Succeeded
    );
    let (code, description) = failure(&m, items[1]).await;
    assert_eq!(code, "FILE_NOT_FOUND", "{description}");
    assert_eq!(failure(&m, items[2]).await.0, "QUOTA_EXCEEDED");
    let (code, description) = failure(&m, items[3]).await;
    assert_eq!(code, "QUOTA_EXCEEDED");
    assert!(
        description.contains("before this item was copied"),
        "{description}"
    );
    assert_eq!(emu.sim.stats().tasks(), 1);
}
}

on_both_engines! {
    async fn a_task_stuck_on_a_fatal_error_is_cancelled_and_the_rest_resubmitted_once(engine: Engine) {
    let emu = Emu::with(|c| {
        c.faults = vec![fault(
            FaultKind::QuotaExceeded,
            Some("/in/full*"),
            None,
            None,
        )]
    });
    for name in ["a", "b", "full", "c", "d"] {
        write(emu.root_a(), &format!("in/{name}"), name.as_bytes());
    }
    let state = engine.fresh().await;
    let fast_fail = { let mut built = config(); built.fail_fast_after = Duration::from_millis(300); built };
    let m = manager(&emu, &state.url, fast_fail).await;
    let mut items = Vec::new();
    for name in ["a", "b", "full", "c", "d"] {
        items.push((
            name,
            m.enqueue(spec(&emu, &format!("/in/{name}"), &format!("/out/{name}")))
                .await
                .unwrap(),
        ));
    }
    for (name, item) in &items {
        let result = m.wait(item.item, LONG).await;
        if *name == "full" {
            let err = result.unwrap_err();
            assert!(
                err.downcast_ref::<TransferFailure>().is_some_and(|f| f.code == "QUOTA_EXCEEDED"),
                "{err:?}"
            );
        } else {
            assert_eq!(result.unwrap().state, ItemState::Succeeded, "{name}");
            assert_eq!(
                std::fs::read(emu.root_b().join(format!("out/{name}"))).unwrap(),
                name.as_bytes()
            );
        }
    }
    let batches = m.batches(10).await.unwrap();
    assert_eq!(batches.len(), 2, "the original and one re-split");
    assert!(batches.iter().any(|b| b.resplit_of.is_some()));
    assert_eq!(emu.sim.stats().tasks(), 2);
}
}

on_both_engines! {
    async fn deadlines_expire_and_cancel_by_label(engine: Engine) {
    let emu = Emu::with(|c| c.task_latency_ms = 3_600_000);
    write(emu.root_a(), "f", b"x");
    let state = engine.fresh().await;
    let m = manager(&emu, &state.url, config()).await;
    let soon = (chrono::Utc::now() + chrono::Duration::milliseconds(500)).to_rfc3339();
    let options = { let mut built = BatchOptions::default(); built.deadline = Some(soon); built };
    let expiring = m
        .enqueue(spec(&emu, "/f", "/late").options(options))
        .await
        .unwrap();
    let err = m.wait(expiring.item, LONG).await.unwrap_err();
    match err.downcast_ref::<TransferFailure>() {
        Some(TransferFailure {
            code, description, ..
        }) => {
            assert_eq!(code, "EXPIRED");
            // Defect 14: the fatal error and the last event say the same; it is said once.
            let reason = "the task's deadline passed before it completed";
            assert_eq!(description.matches(reason).count(), 1, "{description}");
        }
        None => panic!("{err:?}"),
    }
    let doomed = m.enqueue(spec(&emu, "/f", "/never")).await.unwrap();
    tokio::time::timeout(LONG, m.flush())
        .await
        .unwrap()
        .unwrap();
    m.cancel_label(&doomed.label).await.unwrap();
    let err = m.wait(doomed.item, LONG).await.unwrap_err();
    match err.downcast_ref::<TransferFailure>() {
        Some(failure) => assert_eq!(failure.code, "CANCELED"),
        None => panic!("{err:?}"),
    }
    let waited = m.wait(expiring.item, Duration::from_millis(1)).await;
    assert!(waited.is_err());
    let pending = m.enqueue(spec(&emu, "/f", "/slow")).await.unwrap();
    match m
        .wait(pending.item, Duration::from_millis(100))
        .await
        .unwrap_err()
    {
        Error::Timeout(_) => {}
        other => panic!("{other:?}"),
    }
}
}

on_both_engines! {
    async fn an_inactive_task_is_a_needs_attention_error_naming_the_fix(engine: Engine) {
    let emu =
        Emu::with(|c| c.faults = vec![fault(FaultKind::Inactive, Some("/expired"), None, None)]);
    write(emu.root_a(), "expired", b"x");
    let state = engine.fresh().await;
    let m = manager(&emu, &state.url, config()).await;
    let item = m.enqueue(spec(&emu, "/expired", "/x")).await.unwrap();
    let err = m.wait(item.item, LONG).await.unwrap_err();
    match err.downcast_ref::<NeedsAttention>() {
        Some(paused) => {
            assert!(paused.resumes_on_login);
            assert_eq!(err.remedy(), Some(&Remedy::ResumeTaskByLogin));
            m.cancel_task(&paused.task_id).await.unwrap();
        }
        None => panic!("{err:?}"),
    }
}
}

// ---- processes -------------------------------------------------------------------------

const CHILD_ENV: &str = "PS_GLOBUS_TEST_CHILD";

/// Runs the ignored `child` test in a new process with `vars`; returns (success, output).
fn run_child(vars: &[(&str, String)]) -> (bool, String) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args(["--ignored", "--exact", "manager::child", "--nocapture"]);
    for (k, v) in vars {
        command.env(k, v);
    }
    let output = command.output().unwrap();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// The other process: enqueues `COUNT` items from `a:/in/N` and, unless a failpoint kills
/// it first, waits for them and reports how many poll cycles it made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of the crash and sharing tests, which run it themselves"]
async fn child() {
    let var = |k: &str| std::env::var(format!("{CHILD_ENV}_{k}")).expect("run by a parent test");
    let client =
        TransferClient::with_base_url(&var("URL"), Arc::new(StaticTokenAuthorizer::new(TOKEN)))
            .unwrap()
            .with_retry(fast_retry())
            .unwrap();
    // The failpoint comes from the environment the parent set, read once as settings.
    let mut config = {
        let mut built = config();
        built.failpoint = ps_globus::Settings::from_env().failpoint;
        built
    };
    // HOLD: keep the batch open (no quiet or age limit will close it) and wait to be
    // killed once the items are committed.
    let hold = std::env::var(format!("{CHILD_ENV}_HOLD")).is_ok();
    if hold {
        config.quiet = Duration::from_secs(3600);
        config.max_delay = Duration::from_secs(3600);
    }
    let db = StateDb::open_url(&var("DB"), ps_globus::Settings::global())
        .await
        .unwrap();
    let m = TransferManager::start(db, client, config).await.unwrap();
    let count: usize = var("COUNT").parse().unwrap();
    let prefix = var("PREFIX");
    let mut items = Vec::new();
    let shared = std::env::var(format!("{CHILD_ENV}_KEEP_LABEL")).is_ok();
    for i in 0..count {
        let spec = ItemSpec::new(
            var("A"),
            format!("/in/{i}"),
            var("B"),
            format!("/{prefix}/{i}"),
        )
        .options(options(shared));
        items.push(m.enqueue(spec).await.unwrap());
    }
    if hold {
        println!("ENQUEUED {}", items[0].label);
        std::io::Write::flush(&mut std::io::stdout()).unwrap();
        std::future::pending::<()>().await;
    }
    m.flush().await.unwrap();
    for item in &items {
        m.wait(item.item, LONG).await.unwrap();
    }
    println!("CHILD-POLLS {}", m.poll_cycles());
}

fn child_vars(emu: &Emu, db: &str, count: usize, prefix: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "PS_GLOBUS_TEST_CHILD_URL",
            emu.sim.transfer_url().to_owned(),
        ),
        ("PS_GLOBUS_TEST_CHILD_DB", db.to_owned()),
        ("PS_GLOBUS_TEST_CHILD_COUNT", count.to_string()),
        ("PS_GLOBUS_TEST_CHILD_PREFIX", prefix.to_owned()),
        ("PS_GLOBUS_TEST_CHILD_A", emu.a.clone()),
        ("PS_GLOBUS_TEST_CHILD_B", emu.b.clone()),
    ]
}

async fn crash_then_resume(engine: Engine, failpoint: &str) {
    let emu = Emu::start();
    for i in 0..20 {
        write(emu.root_a(), &format!("in/{i}"), format!("{i}").as_bytes());
    }
    let state = engine.fresh().await;
    let db = state.url.clone();
    let mut vars = child_vars(&emu, &db, 20, "out");
    vars.push(("PS_GLOBUS_FAILPOINT", failpoint.to_owned()));
    let (ok, output) = run_child(&vars);
    assert!(!ok, "the child died at the failpoint:\n{output}");
    assert!(
        output.contains(&format!("failpoint {failpoint} reached")),
        "{output}"
    );
    let posted_before = emu.sim.stats().tasks();
    assert_eq!(posted_before, u64::from(failpoint == "after-post"));

    // A new process (here: this one) resumes from the database.
    let m = manager(&emu, &db, config()).await;
    let batch = m.batches(10).await.unwrap();
    assert_eq!(batch.len(), 1);
    // The submission id was committed before the POST. The resumed manager may already
    // have posted it again (and Globus answered Duplicate) by the time this looks, and
    // on a loaded machine even seen its task end (`DONE`: this assertion failed once
    // under load, listing only the two earlier states); the task count below shows the
    // batch stayed one task.
    assert!(
        matches!(
            batch[0].state,
            BatchState::Submitting | BatchState::Submitted | BatchState::Done
        ) && batch[0].submission_id.is_some(),
        "the submission id was committed before the POST: {:?}",
        batch[0]
    );
    let done = tokio::time::timeout(LONG, m.wait_label(&batch[0].label, LONG))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.len(), 20, "no item lost");
    assert!(done.iter().all(|s| s.state == ItemState::Succeeded));
    assert_eq!(
        emu.sim.stats().tasks(),
        1,
        "the batch is one Globus task, not two"
    );
    assert_delivered(&emu, 20);
}

on_both_engines! {
    async fn killed_after_the_commit_the_batch_is_posted_once_on_resume(engine: Engine) {
    crash_then_resume(engine, "after-commit").await;
}
}

on_both_engines! {
    async fn killed_after_the_post_the_repost_is_a_duplicate_not_a_second_task(engine: Engine) {
    crash_then_resume(engine, "after-post").await;
}
}

on_both_engines! {
    async fn two_processes_share_one_database_with_one_poller(engine: Engine) {
    let emu = Emu::with(|c| c.task_latency_ms = 200);
    for i in 0..20 {
        write(emu.root_a(), &format!("in/{i}"), b"shared");
    }
    let state = engine.fresh().await;
    let db = state.url.clone();
    let m = manager(&emu, &db, config()).await;
    // This process polls (it holds the lease) while the child submits and waits.
    let mine = m.enqueue(spec(&emu, "/in/0", "/parent/0")).await.unwrap();
    m.flush().await.unwrap();
    m.poll_now().await.unwrap();
    let vars = child_vars(&emu, &db, 20, "child");
    let (ok, output) = tokio::task::spawn_blocking(move || run_child(&vars))
        .await
        .unwrap();
    assert!(ok, "{output}");
    assert!(
        output.contains("CHILD-POLLS 0"),
        "only one process polls Globus:\n{output}"
    );
    m.wait(mine.item, LONG).await.unwrap();
    let batches = m.batches(100).await.unwrap();
    assert_eq!(
        emu.sim.stats().tasks(),
        batches.len() as u64,
        "no batch submitted twice"
    );
    assert!(m.poll_cycles() > 0);
    assert!(emu.root_b().join("child/19").exists());
}
}

/// An authorizer whose first token is stale; `refresh` switches to the good one.
#[derive(Debug)]
struct StaleThenFresh {
    refreshed: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl ps_globus::auth::Authorizer for StaleThenFresh {
    async fn authorization(&self) -> ps_globus::Result<String> {
        let fresh = self.refreshed.load(std::sync::atomic::Ordering::SeqCst) > 0;
        Ok(format!("Bearer {}", if fresh { TOKEN } else { "stale" }))
    }
    async fn refresh(&self) -> ps_globus::Result<bool> {
        self.refreshed
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(true)
    }
    fn identity(&self) -> String {
        "test:stale-then-fresh".into()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_refreshes_the_credentials_once_and_retries() {
    let emu = Emu::start();
    let auth = Arc::new(StaleThenFresh {
        refreshed: Default::default(),
    });
    let c = TransferClient::with_base_url(emu.sim.transfer_url(), auth.clone()).unwrap();
    assert_eq!(c.submission_id().await.unwrap().len(), 36);
    assert_eq!(auth.refreshed.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(c.submission_id().await.unwrap().len(), 36);
    assert_eq!(
        auth.refreshed.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "no refresh while the token works"
    );
    let stats = emu.sim.stats();
    assert_eq!((stats.by_status[&401], stats.by_status[&200]), (1, 2));
}

/// Regression: a service that accepts connections but never answers made `task list`
/// take 373 s to fail (60 s a request, six attempts). Requests now time out as their
/// operation warrants, and no retry starts past the call's budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_never_answers_fails_within_the_retry_budget() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream); // accepted, never answered
        }
    });
    let client =
        TransferClient::with_base_url(&url, Arc::new(StaticTokenAuthorizer::new(TOKEN))).unwrap();
    let per_request = {
        let mut built = RetryConfig::default();
        built.max_retries = 2;
        built.max_sleep = Duration::from_millis(5);
        built.base = Duration::from_millis(1);
        built.read_timeout = Duration::from_millis(100);
        built
    };
    let err = client
        .with_retry(per_request)
        .unwrap()
        .task_list(&Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Unreachable(_)),
        "expected a network error, got {err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("(after 2 retries)"),
        "every attempt timed out and was retried: {text}"
    );
    assert!(
        text.starts_with(&format!("could not reach {url}")),
        "{text}"
    );
    assert_eq!(err.kind(), ps_globus::ErrorKind::Unreachable);
    // With a budget shorter than its retries, the call stops retrying at the budget.
    let budgeted = {
        let mut built = per_request;
        built.max_retries = 1000;
        built.total = Duration::from_millis(300);
        built
    };
    let err = client
        .with_retry(budgeted)
        .unwrap()
        .task_list(&Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Unreachable(_)),
        "expected a network error, got {err:?}"
    );
    let retries: u32 = err
        .to_string()
        .rsplit_once("(after ")
        .and_then(|(_, rest)| rest.split(' ').next()?.parse().ok())
        .unwrap_or(0);
    assert!(retries < 1000, "{retries} retries: {err}");
    silent.abort();
}

on_both_engines! {
    /// Regression: a task the service no longer knows (lost in a restart, or deleted from
    /// history) stayed SUBMITTED forever, and `transfer` and `status --watch` never ended.
    /// After its first moments, a task missing from the list and unknown to a direct
    /// lookup fails its items with a typed reason.
    async fn a_task_the_service_lost_fails_its_items_instead_of_waiting_forever(engine: Engine) {
    // The task would never finish on its own.
    let emu = Emu::with(|c| c.task_latency_ms = 3_600_000);
    write(emu.root_a(), "in/0", b"0");
    let state = engine.fresh().await;
    let quick = { let mut built = config(); built.young = Duration::from_millis(50); built };
    let m = manager(&emu, &state.url, quick).await;
    let item = m.enqueue(spec(&emu, "/in/0", "/out/0")).await.unwrap();
    m.flush().await.unwrap();
    let task = m.item(item.item).await.unwrap().task_id.expect("submitted");
    assert!(emu.sim.forget_task(&task), "the emulator knew the task");
    let err = m.wait(item.item, LONG).await.unwrap_err();
    match err.downcast_ref::<TransferFailure>() {
        Some(TransferFailure {
            code,
            task_id,
            description,
            ..
        }) => {
            assert_eq!(code, "TASK_NOT_FOUND");
            assert_eq!(task_id.as_deref(), Some(task.as_str()));
            assert!(description.contains(&task), "{description}");
        }
        None => panic!("expected a typed failure, got {err:?}"),
    }
    let batch = &m.batches(1).await.unwrap()[0];
    assert_eq!(batch.state, BatchState::Done);
}
}

on_both_engines! {
    /// Items enqueued by a process killed with `kill -9` while their batch was still open
    /// (no exit hook runs then) are submitted by the next process on the same state
    /// database: it adopts the open batches of dead processes.
    async fn a_batch_left_open_by_a_killed_process_is_submitted_by_the_next(engine: Engine) {
    let emu = Emu::start();
    for i in 0..5 {
        write(emu.root_a(), &format!("in/{i}"), format!("{i}").as_bytes());
    }
    let state = engine.fresh().await;
    let db = state.url.clone();
    let mut child = HoldingChild::spawn(&emu, &db, 5, false);
    child.kill();
    assert_eq!(emu.sim.stats().tasks(), 0, "nothing reached Globus");

    let m = manager(&emu, &db, config()).await;
    let batches = m.batches(10).await.unwrap();
    assert_eq!(batches.len(), 1);
    let done = m.wait_label(&batches[0].label, LONG).await.unwrap();
    assert_eq!(done.len(), 5, "no item lost");
    assert_eq!(emu.sim.stats().tasks(), 1);
    assert_delivered(&emu, 5);
}
}

on_both_engines! {
    /// Shared open batches (`share.rs`) and crash safety: a process joins another
    /// process's open batch, then its opener is killed with `kill -9` before closing it.
    /// The joiner's flush waits for that batch, adopts it, and it goes as one task with
    /// every item, the opener's and the joiner's, under the label both were told.
    async fn a_shared_batch_whose_opener_was_killed_is_adopted_by_a_process_that_joined_it(engine: Engine) {
    let emu = Emu::start();
    for i in 0..8 {
        write(emu.root_a(), &format!("in/{i}"), format!("{i}").as_bytes());
    }
    let state = engine.fresh().await;
    let db = state.url.clone();
    let mut opener = HoldingChild::spawn(&emu, &db, 5, true);

    let m = manager(&emu, &db, config()).await;
    let mut joined = Vec::new();
    for i in 5..8 {
        let spec = ItemSpec::new(&emu.a, format!("/in/{i}"), &emu.b, format!("/out/{i}"))
            .options(options(true));
        joined.push(m.enqueue(spec).await.unwrap());
    }
    assert!(
        joined.iter().all(|e| e.label == opener.label),
        "the puts joined the opener's batch {}: {joined:?}",
        opener.label
    );
    opener.kill();
    assert_eq!(emu.sim.stats().tasks(), 0, "nothing reached Globus");

    m.flush().await.unwrap();
    let done = m.wait_label(&opener.label, LONG).await.unwrap();
    assert_eq!(done.len(), 8, "no item lost, the opener's nor the joiner's");
    assert!(done.iter().all(|i| i.state == ItemState::Succeeded));
    assert_eq!(emu.sim.stats().tasks(), 1, "one task for the shared batch");
    assert_delivered(&emu, 8);
}
}

/// The batch options of the child and the tests: `keep_label` for a Globus store's
/// batches, which other processes' puts join (`share.rs`).
fn options(keep_label: bool) -> BatchOptions {
    let mut built = BatchOptions::default();
    built.keep_label = keep_label;
    built
}

/// A `child` that committed its items into a batch it holds open, and waits to be killed.
struct HoldingChild {
    process: std::process::Child,
    /// The label of its open batch.
    label: String,
}

impl HoldingChild {
    /// Starts one that puts `count` items (`keep_label`: as a Globus store's) and
    /// returns once they are committed.
    fn spawn(emu: &Emu, db: &str, count: usize, keep_label: bool) -> Self {
        use std::io::BufRead;
        let mut vars = child_vars(emu, db, count, "out");
        vars.push(("PS_GLOBUS_TEST_CHILD_HOLD", "1".into()));
        if keep_label {
            vars.push(("PS_GLOBUS_TEST_CHILD_KEEP_LABEL", "1".into()));
        }
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["--ignored", "--exact", "manager::child", "--nocapture"])
            .stdout(std::process::Stdio::piped());
        for (k, v) in &vars {
            command.env(k, v);
        }
        let mut process = command.spawn().unwrap();
        let stdout = std::io::BufReader::new(process.stdout.take().unwrap());
        let label = stdout
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix("ENQUEUED ").map(str::to_owned))
            .expect("the child committed its items");
        HoldingChild { process, label }
    }

    /// `kill -9`: no exit hook, no flush.
    fn kill(&mut self) {
        self.process.kill().unwrap();
        self.process.wait().unwrap();
    }
}

on_both_engines! {
    /// Defect 9, the readers' side: the watcher that readers at other sites follow tasks
    /// with reports a task the service lost (an emulator restarted without its state) as
    /// `FAILED` with `TASK_NOT_FOUND`, so readers end instead of waiting until its deadline.
    async fn the_watcher_reports_a_task_the_service_lost_as_not_found(engine: Engine) {
    let emu = Emu::with(|c| c.task_latency_ms = 3_600_000);
    write(emu.root_a(), "f", b"x");
    let state = engine.fresh().await;
    let m = manager(&emu, &state.url, config()).await;
    let item = m.enqueue(spec(&emu, "/f", "/g")).await.unwrap();
    tokio::time::timeout(LONG, m.flush())
        .await
        .unwrap()
        .unwrap();
    let watcher = ps_globus::transfer::watch::Watcher::start(client(&emu));
    let _watch = watcher.watch(&item.label);
    // Event-driven: each cycle of the watcher wakes `changed`.
    let seen = loop {
        let changed = watcher.changed();
        if let Some(task) = watcher.task(&item.label) {
            break task;
        }
        tokio::time::timeout(LONG, changed).await.unwrap();
    };
    assert_eq!(seen.status, TaskStatus::Active);
    assert!(emu.sim.forget_task(&seen.task_id));
    let lost = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let changed = watcher.changed();
            let task = watcher.task(&item.label).unwrap();
            if task.status == TaskStatus::Failed {
                break task;
            }
            changed.await;
        }
    })
    .await
    .expect("reported well before the task's deadline, a day away");
    assert_eq!(lost.fatal_error.unwrap().code, "TASK_NOT_FOUND");
}
}

/// Enqueues `count` files (`/<dir>/N`, holding `N`) from one loop and waits for each:
/// their labels, and each item's end state.
async fn enqueue_and_wait(m: &TransferManager, emu: &Emu, dir: &str, count: usize) -> Vec<String> {
    for i in 0..count {
        write(
            emu.root_a(),
            &format!("{dir}/{i}"),
            format!("{i}").as_bytes(),
        );
    }
    let mut items = Vec::new();
    for i in 0..count {
        let spec = spec(emu, &format!("/{dir}/{i}"), &format!("/out/{i}"));
        items.push(m.enqueue(spec).await.unwrap());
    }
    for item in &items {
        let done = m.wait(item.item, LONG).await.unwrap();
        assert_eq!(done.state, ItemState::Succeeded, "{done:?}");
    }
    items.into_iter().map(|i| i.label).collect()
}

/// Every task of the manager's batches together copied `count` files: none twice.
async fn assert_copied_once(m: &TransferManager, count: i64) -> usize {
    let batches = m.batches(1000).await.unwrap();
    let posted: Vec<_> = batches.iter().filter(|b| b.task_id.is_some()).collect();
    let copied: i64 = posted.iter().map(|b| b.files_transferred).sum();
    assert_eq!(copied, count, "{batches:?}");
    posted.len()
}

on_both_engines! {
    async fn a_batch_over_the_services_body_limit_is_posted_in_parts_and_fails_nothing(engine: Engine) {
    // 300 items with 100-byte paths make a document of about 60 KB; the service takes
    // 16 KiB, far less than the manager's own cap.
    let emu = Emu::with(|c| c.max_body_bytes = 16 << 10);
    let state = engine.fresh().await;
    let one_batch = { let mut built = config(); built.quiet = Duration::from_secs(2); built };
    let m = manager(&emu, &state.url, one_batch).await;
    let labels = enqueue_and_wait(&m, &emu, &"d".repeat(90), 300).await;
    assert_delivered(&emu, 300);
    let stats = emu.sim.stats();
    assert!(stats.by_status.get(&413).is_some_and(|n| *n >= 1), "{stats:?}");
    let tasks = assert_copied_once(&m, 300).await;
    assert!(tasks >= 4, "{tasks} tasks for about 60 KB in 16 KiB posts");
    assert_eq!(stats.tasks() as usize, tasks);
    // Every item is still found under the label it was enqueued with.
    let label = &labels[0];
    assert!(labels.iter().all(|l| l == label));
    assert_eq!(m.items(label).await.unwrap().len(), 300);
}
}

on_both_engines! {
    async fn batches_close_at_their_document_size_before_the_service_refuses_one(engine: Engine) {
    let emu = Emu::start();
    let state = engine.fresh().await;
    let capped = { let mut built = config(); built.quiet = Duration::from_secs(2); built.max_document_bytes = 16 << 10; built };
    let m = manager(&emu, &state.url, capped).await;
    let labels = enqueue_and_wait(&m, &emu, &"d".repeat(90), 300).await;
    assert_delivered(&emu, 300);
    let stats = emu.sim.stats();
    assert_eq!(stats.by_status.get(&413), None, "{stats:?}");
    let tasks = assert_copied_once(&m, 300).await;
    // Closed at the cap: each batch its own label and task, none split.
    let distinct: std::collections::BTreeSet<_> = labels.iter().collect();
    assert!(tasks >= 6, "{tasks} tasks for about 80 KB in batches of 12 KiB");
    assert_eq!(distinct.len(), tasks);
}
}

/// The README's transfer through the manager, on the emulator: a file copied between
/// collections, waited for, its task named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_twin_the_manager_copies_a_file_between_collections() {
    let emu = Emu::start();
    write(emu.root_a(), "data/run1.h5", b"run 1");
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(dir.path().join("readme.db")).await.unwrap();
    let manager = TransferManager::start(db, client(&emu), ManagerConfig::default())
        .await
        .unwrap();
    let item = manager
        .enqueue(ItemSpec::new(
            emu.a.clone(),
            "/data/run1.h5",
            emu.b.clone(),
            "/scratch/run1.h5",
        ))
        .await
        .unwrap();
    let done = manager
        .wait(item.item, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(done.state, ItemState::Succeeded);
    assert!(done.task_id.is_some());
    assert_eq!(
        std::fs::read(emu.root_b().join("scratch/run1.h5")).unwrap(),
        b"run 1"
    );
}

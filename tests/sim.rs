//! The emulator over HTTP: each Transfer resource, the task lifecycle, Duplicate, filters,
//! pagination, concurrency limits, the latency model, faults, path confinement, and Auth.

use std::time::{Duration, Instant};

use crate::support::emulator::{Emu, fault, write};
use ps_globus_sim::{CollectionConfig, FaultKind};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Digest;

/// Every key of the Transfer task document (as `GET /task/{id}` returns it).
const TASK_KEYS: &[&str] = &[
    "task_id",
    "type",
    "status",
    "label",
    "owner_id",
    "request_time",
    "completion_time",
    "deadline",
    "source_endpoint_id",
    "source_endpoint_display_name",
    "destination_endpoint_id",
    "destination_endpoint_display_name",
    "sync_level",
    "verify_checksum",
    "encrypt_data",
    "preserve_timestamp",
    "delete_destination_extra",
    "skip_source_errors",
    "fail_on_quota_errors",
    "recursive_symlinks",
    "filter_rules",
    "command",
    "files",
    "directories",
    "symlinks",
    "files_transferred",
    "files_skipped",
    "bytes_transferred",
    "bytes_checksummed",
    "effective_bytes_per_second",
    "subtasks_total",
    "subtasks_pending",
    "subtasks_retrying",
    "subtasks_succeeded",
    "subtasks_failed",
    "subtasks_canceled",
    "subtasks_expired",
    "subtasks_skipped_errors",
    "faults",
    "fatal_error",
    "is_ok",
    "is_paused",
    "nice_status",
    "nice_status_short_description",
    "nice_status_details",
    "nice_status_expires_in",
    "canceled_by_admin",
    "canceled_by_admin_message",
    "history_deleted",
];

#[tokio::test]
async fn a_transfer_really_copies_and_reports_like_globus() {
    let emu = Emu::start();
    write(emu.root_a(), "data/x.bin", &vec![7u8; 300_000]);
    write(emu.root_a(), "tree/keep.txt", b"keep");
    write(emu.root_a(), "tree/skip.tmp", b"skip");
    write(emu.root_a(), "tree/sub/deep.txt", b"deep");
    let task = emu
        .submit(
            &[("/~/data/x.bin", "/~/out/x.bin"), ("/tree", "/copy")],
            json!({"label": "first", "verify_checksum": true,
                   "filter_rules": [{"DATA_TYPE": "filter_rule", "method": "exclude", "name": "*.tmp", "type": "file"}]}),
        )
        .await;
    let doc = emu.wait(&task, "final").await;
    for key in TASK_KEYS {
        assert!(doc.get(*key).is_some(), "task document lacks {key}");
    }
    assert_eq!(doc["status"], "SUCCEEDED");
    assert_eq!(doc["type"], "TRANSFER");
    assert_eq!(doc["label"], "first");
    assert_eq!(doc["files"], 3);
    assert_eq!(doc["files_transferred"], 3);
    assert_eq!(doc["bytes_transferred"], 300_008);
    assert_eq!(doc["bytes_checksummed"], 300_008);
    assert_eq!(
        doc["subtasks_total"], 5,
        "two item expansions plus three files"
    );
    assert_eq!(doc["subtasks_succeeded"], 5);
    assert_eq!(doc["subtasks_pending"], 0);
    assert_eq!(doc["is_ok"], Value::Null);
    assert_eq!(doc["nice_status"], Value::Null);
    assert!(doc["completion_time"].as_str().unwrap().ends_with("+00:00"));
    assert_eq!(
        std::fs::read(emu.root_b().join("out/x.bin")).unwrap(),
        vec![7u8; 300_000]
    );
    assert_eq!(
        std::fs::read(emu.root_b().join("copy/sub/deep.txt")).unwrap(),
        b"deep"
    );
    assert!(
        !emu.root_b().join("copy/skip.tmp").exists(),
        "filter rule excluded it"
    );

    let (_, ok) = emu
        .get(&format!("/v0.10/task/{task}/successful_transfers"))
        .await;
    let mut copied: Vec<&str> = ok["DATA"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["destination_path"].as_str().unwrap())
        .collect();
    copied.sort();
    assert_eq!(
        copied,
        vec!["/copy/keep.txt", "/copy/sub/deep.txt", "/out/x.bin"]
    );
    assert_eq!(ok["next_marker"], Value::Null);

    let (_, events) = emu
        .get(&format!("/v0.10/task/{task}/event_list?limit=1000&filter="))
        .await;
    let codes: Vec<&str> = events["DATA"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes.first(), Some(&"SUCCEEDED"), "newest first");
    assert_eq!(codes.last(), Some(&"STARTED"));
    let (_, errors) = emu
        .get(&format!("/v0.10/task/{task}/event_list?filter=is_error:1"))
        .await;
    assert_eq!(errors["total"], 0);
}

#[tokio::test]
async fn a_reused_submission_id_answers_duplicate_and_never_makes_a_second_task() {
    let emu = Emu::start();
    write(emu.root_a(), "f", b"once");
    let doc = emu.transfer_doc(&[("/f", "/g")], json!({})).await;
    let (status, first) = emu.post("/v0.10/transfer", doc.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    for _ in 0..3 {
        let (status, again) = emu.post("/v0.10/transfer", doc.clone()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(again["code"], "Duplicate");
        assert_eq!(again["task_id"], first["task_id"]);
    }
    assert_eq!(emu.sim.stats().tasks(), 1);
    let (_, list) = emu.get("/v0.10/task_list?limit=1000").await;
    assert_eq!(list["total"], 1);
}

#[tokio::test]
async fn bad_requests_get_globus_error_documents() {
    let emu = Emu::start();
    let mut doc = emu.transfer_doc(&[("/x", "/y")], json!({})).await;
    doc["DATA"] = json!([]);
    let (status, body) = emu.post("/v0.10/transfer", doc.clone()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some("ClientError.BadRequest.NoTransferItems")
        )
    );
    assert_eq!(body["request_id"].as_str().unwrap().len(), 9);

    let mut doc = emu
        .transfer_doc(&[("/x", "/y")], json!({"label": "two\nlines"}))
        .await;
    let (status, _) = emu.post("/v0.10/transfer", doc.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    doc["label"] = json!("fine");
    doc["destination_endpoint"] = json!("00000000-0000-0000-0000-000000000000");
    let (status, body) = emu.post("/v0.10/transfer", doc).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("EndpointNotFound"))
    );

    let (status, body) = emu
        .get("/v0.10/task/00000000-0000-0000-0000-000000000000")
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("TaskNotFound"))
    );
    let (status, _) = emu.get("/v0.10/task_list?limit=1001").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = emu.get("/v0.10/task_list?filter=colour:red").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("ClientError.BadRequest"))
    );
    let (status, body) = emu
        .call_as("wrong", Method::GET, "/v0.10/task_list", None)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (
            StatusCode::UNAUTHORIZED,
            Some("ClientError.AuthenticationFailed")
        )
    );
    let (status, _) = emu
        .http
        .get(emu.url("/v0.10/task_list"))
        .send()
        .await
        .map(|r| (r.status(), ()))
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = emu.get("/v0.10/no/such/resource").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("ClientError.NotFound"))
    );
}

#[tokio::test]
async fn tasks_are_visible_only_to_their_owner() {
    let emu = Emu::with(|c| {
        c.clients.insert(
            "11111111-2222-3333-4444-555555555555".into(),
            "s3cret".into(),
        );
    });
    write(emu.root_a(), "f", b"mine");
    let task = emu.submit(&[("/f", "/g")], json!({})).await;
    let other = emu
        .client_token(
            "11111111-2222-3333-4444-555555555555",
            "s3cret",
            "urn:globus:auth:scope:transfer.api.globus.org:all",
        )
        .await;
    let (status, body) = emu
        .call_as(&other, Method::GET, &format!("/v0.10/task/{task}"), None)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("TaskNotFound"))
    );
    let (_, list) = emu
        .call_as(&other, Method::GET, "/v0.10/task_list", None)
        .await;
    assert_eq!(list["total"], 0);
    let (status, _) = emu
        .call_as(
            &other,
            Method::POST,
            &format!("/v0.10/task/{task}/cancel"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn task_list_filters_orders_projects_and_pages() {
    let emu = Emu::start();
    write(emu.root_a(), "f", b"x");
    let mut ids = Vec::new();
    for label in ["psg-aaa", "psg-bbb", "other"] {
        let task = emu
            .submit(&[("/f", &format!("/{label}"))], json!({"label": label}))
            .await;
        emu.wait(&task, "final").await;
        ids.push(task);
    }
    let count = |list: &Value| list["DATA"].as_array().unwrap().len();
    let (_, list) = emu.get("/v0.10/task_list?filter=label:=psg-bbb").await;
    assert_eq!(
        (count(&list), list["DATA"][0]["task_id"].as_str()),
        (1, Some(ids[1].as_str()))
    );
    let (_, list) = emu.get("/v0.10/task_list?filter=label:~psg-*").await;
    assert_eq!(count(&list), 2);
    let (_, list) = emu.get("/v0.10/task_list?filter=label:!~psg").await;
    assert_eq!(list["DATA"][0]["label"], "other");
    let (_, list) = emu
        .get(&format!(
            "/v0.10/task_list?filter=task_id:{},{}/status:SUCCEEDED/type:TRANSFER,DELETE",
            ids[0], ids[2]
        ))
        .await;
    assert_eq!(count(&list), 2);
    let (_, list) = emu
        .get("/v0.10/task_list?filter=status:ACTIVE,INACTIVE")
        .await;
    assert_eq!(list["total"], 0);
    let (_, list) = emu
        .get("/v0.10/task_list?filter=request_time:2000-01-01,")
        .await;
    assert_eq!(list["total"], 3);

    let (_, list) = emu.get("/v0.10/task_list").await;
    let order: Vec<&str> = list["DATA"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["task_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        vec![ids[2].as_str(), ids[1].as_str(), ids[0].as_str()],
        "newest first by default"
    );
    let (_, list) = emu
        .get("/v0.10/task_list?orderby=label+ASC&fields=task_id,label")
        .await;
    let labels: Vec<&str> = list["DATA"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, vec!["other", "psg-aaa", "psg-bbb"]);
    assert!(list["DATA"][0].get("status").is_none(), "fields projects");

    let (_, page) = emu.get("/v0.10/task_list?limit=2&offset=2").await;
    assert_eq!(
        (
            count(&page),
            page["total"].as_u64(),
            page["offset"].as_u64()
        ),
        (1, Some(3), Some(2))
    );
}

#[tokio::test]
async fn three_tasks_run_per_identity_the_rest_queue_and_the_cap_refuses_more() {
    let emu = Emu::with(|c| {
        c.task_latency_ms = 3_600_000; // tasks hold their slot until canceled
        c.pending_cap = 5;
    });
    write(emu.root_a(), "f", b"x");
    let mut tasks = Vec::new();
    for i in 0..5 {
        tasks.push(emu.submit(&[("/f", &format!("/g{i}"))], json!({})).await);
    }
    for task in &tasks[..3] {
        emu.wait(task, "running").await;
    }
    for task in &tasks[3..] {
        let doc = emu.task(task).await;
        assert_eq!(
            (doc["status"].as_str(), doc["nice_status"].as_str()),
            (Some("ACTIVE"), Some("Queued"))
        );
        assert_eq!(doc["nice_status_expires_in"], -1);
    }
    let doc = emu.transfer_doc(&[("/f", "/over")], json!({})).await;
    let (status, body) = emu.post("/v0.10/transfer", doc).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // Cancelling a running task lets the first queued one start, in order.
    let (status, body) = emu
        .post(&format!("/v0.10/task/{}/cancel", tasks[0]), json!({}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::OK, Some("Canceled"))
    );
    let canceled = emu.task(&tasks[0]).await;
    assert_eq!(canceled["status"], "FAILED");
    assert_eq!(canceled["fatal_error"]["code"], "CANCELED");
    emu.wait(&tasks[3], "running").await;
    assert_eq!(emu.task(&tasks[4]).await["nice_status"], "Queued");
    let (_, again) = emu
        .post(&format!("/v0.10/task/{}/cancel", tasks[0]), json!({}))
        .await;
    assert_eq!(again["code"], "TaskComplete");
    for task in &tasks[1..] {
        emu.post(&format!("/v0.10/task/{task}/cancel"), json!({}))
            .await;
    }
    let stats = emu.sim.stats();
    assert_eq!(stats.tasks_finished["TRANSFER"]["FAILED"], 5);
}

#[tokio::test]
async fn the_latency_is_paid_per_task_after_taking_a_slot() {
    let latency = Duration::from_millis(150);
    let emu = Emu::with(|c| c.task_latency_ms = latency.as_millis() as u64);
    write(emu.root_a(), "f", b"x");
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..7 {
        tasks.push(emu.submit(&[("/f", &format!("/g{i}"))], json!({})).await);
    }
    for task in &tasks {
        assert_eq!(emu.wait(task, "final").await["status"], "SUCCEEDED");
    }
    // 7 tasks through 3 slots need at least 3 rounds of latency.
    assert!(start.elapsed() >= latency * 3, "{:?}", start.elapsed());

    // One task of many files pays the latency once.
    let files: Vec<(String, String)> = (0..30)
        .map(|i| (format!("/many/{i}"), format!("/many-out/{i}")))
        .collect();
    for (s, _) in &files {
        write(emu.root_a(), s.trim_start_matches('/'), b"y");
    }
    let items: Vec<(&str, &str)> = files
        .iter()
        .map(|(s, d)| (s.as_str(), d.as_str()))
        .collect();
    let task = emu.submit(&items, json!({})).await;
    assert_eq!(emu.wait(&task, "final").await["files_transferred"], 30);
}

#[tokio::test]
async fn bandwidth_paces_a_copy_and_readers_can_see_a_partial_file() {
    // 1 MB at 200 kB/s: each 256 KiB chunk waits for its tokens, so the task is still
    // copying when its first chunk lands.
    let emu = Emu::with(|c| c.bandwidth = Some("200kB/s".into()));
    write(emu.root_a(), "big", &vec![1u8; 1_000_000]);
    let start = Instant::now();
    let task = emu.submit(&[("/big", "/big")], json!({})).await;
    let during = emu.wait(&task, "progress").await;
    assert_eq!(during["status"], "ACTIVE");
    let partial = std::fs::metadata(emu.root_b().join("big")).unwrap().len();
    assert!(
        partial > 0 && partial < 1_000_000,
        "written in place while the task runs: {partial}"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "the first chunk waited for its tokens: {:?}",
        start.elapsed()
    );
    let (_, canceled) = emu
        .post(&format!("/v0.10/task/{task}/cancel"), json!({}))
        .await;
    assert_eq!(canceled["code"], "Canceled");
}

#[tokio::test]
async fn sync_levels_and_checksums() {
    let emu = Emu::start();
    write(emu.root_a(), "same", b"12345");
    write(emu.root_b(), "same", b"abcde");
    write(emu.root_a(), "grown", b"123456");
    write(emu.root_b(), "grown", b"abc");
    let task = emu
        .submit(
            &[("/same", "/same"), ("/grown", "/grown")],
            json!({"sync_level": 1}),
        )
        .await;
    let doc = emu.wait(&task, "final").await;
    assert_eq!(
        (
            doc["files_skipped"].as_u64(),
            doc["files_transferred"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(
        std::fs::read(emu.root_b().join("same")).unwrap(),
        b"abcde",
        "same size: skipped"
    );
    let task = emu
        .submit(&[("/same", "/same")], json!({"sync_level": 3}))
        .await;
    assert_eq!(
        emu.wait(&task, "final").await["files_transferred"],
        1,
        "checksums differ: copied"
    );

    // External checksums in several algorithms: the right one passes, a wrong one fails.
    let sha256 = "5994471abb01112afcc18159f6cc74b4f511b99806da59b3caf5a9c173cacfc5"; // "12345"
    let doc = emu.transfer_doc(&[("/same", "/ok")], json!({})).await;
    let mut ok = doc.clone();
    ok["DATA"][0]["external_checksum"] = json!(sha256);
    ok["DATA"][0]["checksum_algorithm"] = json!("SHA256");
    let (_, r) = emu.post("/v0.10/transfer", ok).await;
    assert_eq!(
        emu.wait(r["task_id"].as_str().unwrap(), "final").await["status"],
        "SUCCEEDED"
    );
    let mut bad = emu.transfer_doc(&[("/same", "/bad")], json!({})).await;
    bad["DATA"][0]["external_checksum"] = json!("00000000");
    bad["DATA"][0]["checksum_algorithm"] = json!("ADLER32");
    let (_, r) = emu.post("/v0.10/transfer", bad).await;
    let doc = emu.wait(r["task_id"].as_str().unwrap(), "final").await;
    assert_eq!(
        (doc["status"].as_str(), doc["fatal_error"]["code"].as_str()),
        (Some("FAILED"), Some("CHECKSUM_MISMATCH"))
    );
}

/// `checksum_algorithm` governs every checksum of its item (globus-sdk documents it for
/// `verify_checksum`, sync level 3 and `external_checksum` alike): a verified copy with a
/// SHA256 external checksum hashes the source once while copying and the destination once
/// after, in SHA256 only, and a wrong copy is still caught.
#[tokio::test]
async fn one_checksum_algorithm_serves_verify_sync_and_the_external_checksum() {
    let emu = Emu::start();
    let data = vec![7u8; 3 << 20];
    write(emu.root_a(), "obj", &data);
    let sha256: String = sha2::Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let verified = |options: Value| {
        let emu = &emu;
        let sha256 = sha256.clone();
        async move {
            let mut doc = emu.transfer_doc(&[("/obj", "/obj")], options).await;
            doc["DATA"][0]["external_checksum"] = json!(sha256);
            doc["DATA"][0]["checksum_algorithm"] = json!("SHA256");
            doc
        }
    };
    let doc = verified(json!({"verify_checksum": true})).await;
    let (_, r) = emu.post("/v0.10/transfer", doc).await;
    let done = emu.wait(r["task_id"].as_str().unwrap(), "final").await;
    assert_eq!(done["status"], "SUCCEEDED");
    let len = data.len() as u64;
    let hashed = emu.sim.stats().bytes_checksummed;
    assert_eq!(
        hashed.into_iter().collect::<Vec<_>>(),
        [("SHA256".to_owned(), 2 * len)]
    );

    // Sync level 3 compares the two ends in the item's algorithm too.
    let doc = verified(json!({"verify_checksum": true, "sync_level": 3})).await;
    let (_, r) = emu.post("/v0.10/transfer", doc).await;
    let done = emu.wait(r["task_id"].as_str().unwrap(), "final").await;
    assert_eq!(done["files_skipped"], 1);
    let hashed = emu.sim.stats().bytes_checksummed;
    assert_eq!(
        hashed.into_iter().collect::<Vec<_>>(),
        [("SHA256".to_owned(), 4 * len)]
    );
}

#[tokio::test]
async fn a_missing_source_retries_while_active_until_the_deadline() {
    let emu = Emu::start();
    let deadline = (chrono::Utc::now() + chrono::Duration::seconds(2))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let task = emu
        .submit(&[("/nope", "/x")], json!({"deadline": deadline}))
        .await;
    let retrying = emu.wait(&task, "retrying").await;
    assert_eq!(retrying["status"], "ACTIVE");
    assert_eq!(retrying["nice_status"], "FILE_NOT_FOUND");
    assert!(retrying["faults"].as_u64().unwrap() >= 1);
    let done = emu.wait(&task, "final").await;
    assert_eq!(done["status"], "FAILED");
    assert_eq!(done["fatal_error"]["code"], "EXPIRED");
    assert!(done["subtasks_expired"].as_u64().unwrap() >= 1);
    let (_, events) = emu
        .get(&format!(
            "/v0.10/task/{task}/event_list?filter=is_error:1&limit=1000"
        ))
        .await;
    let codes: Vec<&str> = events["DATA"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_str().unwrap())
        .collect();
    assert!(
        codes.contains(&"FILE_NOT_FOUND") && codes.contains(&"EXPIRED"),
        "{codes:?}"
    );
}

#[tokio::test]
async fn a_file_that_appears_heals_the_retrying_task() {
    let emu = Emu::start();
    let task = emu.submit(&[("/late", "/late")], json!({})).await;
    emu.wait(&task, "retrying").await;
    write(emu.root_a(), "late", b"here now");
    let done = emu.wait(&task, "final").await;
    assert_eq!(done["status"], "SUCCEEDED");
    assert_eq!(
        std::fs::read(emu.root_b().join("late")).unwrap(),
        b"here now"
    );
}

#[tokio::test]
async fn injected_path_faults() {
    let emu = Emu::with(|c| {
        c.checksum_retries = 2;
        c.faults = vec![
            fault(FaultKind::PermissionDenied, Some("/denied/*"), None, None),
            fault(FaultKind::ChecksumMismatch, Some("/corrupt"), None, None),
            fault(FaultKind::Inactive, Some("/expired-consent"), None, None),
        ];
    });
    write(emu.root_a(), "denied/a", b"a");
    write(emu.root_a(), "fine", b"fine");
    write(emu.root_a(), "corrupt", b"c");
    write(emu.root_a(), "expired-consent", b"e");

    // skip_source_errors: the failing path is skipped, its neighbour copied.
    let task = emu
        .submit(
            &[("/denied/a", "/a"), ("/fine", "/fine")],
            json!({"skip_source_errors": true}),
        )
        .await;
    let doc = emu.wait(&task, "final").await;
    assert_eq!(
        (
            doc["status"].as_str(),
            doc["subtasks_skipped_errors"].as_u64()
        ),
        (Some("SUCCEEDED"), Some(1))
    );
    let (_, skipped) = emu.get(&format!("/v0.10/task/{task}/skipped_errors")).await;
    assert_eq!(skipped["DATA"][0]["error_code"], "PERMISSION_DENIED");
    assert_eq!(skipped["DATA"][0]["source_path"], "/denied/a");
    assert!(emu.root_b().join("fine").exists());

    // Without it, the task retries with that nice_status.
    let task = emu.submit(&[("/denied/a", "/a")], json!({})).await;
    assert_eq!(
        emu.wait(&task, "retrying").await["nice_status"],
        "PERMISSION_DENIED"
    );
    emu.post(&format!("/v0.10/task/{task}/cancel"), json!({}))
        .await;

    let task = emu
        .submit(
            &[("/corrupt", "/corrupt")],
            json!({"verify_checksum": true}),
        )
        .await;
    let doc = emu.wait(&task, "final").await;
    assert_eq!(doc["fatal_error"]["code"], "CHECKSUM_MISMATCH");
    let (_, events) = emu
        .get(&format!(
            "/v0.10/task/{task}/event_list?filter=is_error:1&limit=1000"
        ))
        .await;
    let mismatches = events["DATA"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["code"] == "CHECKSUM_MISMATCH")
        .count();
    assert_eq!(
        mismatches, 4,
        "an event per mismatch (two retried, the third too many), then the fatal one"
    );

    let task = emu.submit(&[("/expired-consent", "/e")], json!({})).await;
    let doc = emu.wait(&task, "inactive").await;
    assert_eq!(doc["status"], "INACTIVE");
    emu.post(&format!("/v0.10/task/{task}/cancel"), json!({}))
        .await;
    assert_eq!(emu.task(&task).await["fatal_error"]["code"], "CANCELED");
}

#[tokio::test]
async fn http_faults_storms_bursts_and_resets() {
    let emu = Emu::with(|c| {
        let mut storm = fault(FaultKind::Http429, None, Some("GET /v0.10/task_list"), None);
        storm.count = Some(3);
        storm.retry_after = 2;
        let mut burst = fault(
            FaultKind::Http503,
            None,
            Some("GET /v0.10/endpoint/{id}"),
            None,
        );
        burst.after = 1;
        burst.count = Some(2);
        let mut reset = fault(
            FaultKind::ConnectionReset,
            None,
            Some("POST /v0.10/transfer"),
            None,
        );
        reset.count = Some(1);
        c.faults = vec![
            storm,
            burst,
            reset,
            fault(
                FaultKind::Http502,
                None,
                Some("GET /v0.10/endpoint_search"),
                None,
            ),
        ];
    });
    for _ in 0..3 {
        let response = emu
            .http
            .get(emu.url("/v0.10/task_list"))
            .bearer_auth(&emu.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["retry-after"], "2");
    }
    assert_eq!(emu.get("/v0.10/task_list").await.0, StatusCode::OK);
    let path = format!("/v0.10/endpoint/{}", emu.a);
    let statuses = [
        emu.get(&path).await.0,
        emu.get(&path).await.0,
        emu.get(&path).await.0,
        emu.get(&path).await.0,
    ];
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::OK
        ]
    );
    let (status, body) = emu.get("/v0.10/endpoint_search").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_GATEWAY, Some("ExternalError.Backend"))
    );

    // The reset submission took effect: the re-post is a Duplicate of that task.
    write(emu.root_a(), "f", b"x");
    let doc = emu.transfer_doc(&[("/f", "/g")], json!({})).await;
    let cut = emu
        .http
        .post(emu.url("/v0.10/transfer"))
        .bearer_auth(&emu.token)
        .json(&doc)
        .send()
        .await;
    let failed = match cut {
        Err(_) => true,
        Ok(response) => response.text().await.is_err(),
    };
    assert!(failed, "the client saw the connection drop");
    let (status, again) = emu.post("/v0.10/transfer", doc).await;
    assert_eq!(
        (status, again["code"].as_str()),
        (StatusCode::OK, Some("Duplicate"))
    );
    let stats = emu.sim.stats();
    assert_eq!(stats.tasks(), 1);
    assert_eq!((stats.responses_429, stats.responses_503), (3, 2));
}

#[tokio::test]
async fn fail_rate_replays_from_the_seed() {
    let run = || async {
        let emu = Emu::with(|c| {
            c.fail_rate = 0.4;
            c.seed = 1234;
        });
        let mut seen = Vec::new();
        for _ in 0..20 {
            seen.push(emu.get("/v0.10/task_list").await.0.as_u16());
        }
        seen
    };
    let (first, second) = (run().await, run().await);
    assert_eq!(first, second);
    assert!(first.contains(&503) && first.contains(&200), "{first:?}");
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after() {
    let emu = Emu::with(|c| c.rate_limit = Some(1));
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(emu.get("/v0.10/task_list").await.0);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        10,
        "1/s over a 10 s window"
    );
    let response = emu
        .http
        .get(emu.url("/v0.10/task_list"))
        .bearer_auth(&emu.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
}

#[tokio::test]
async fn paths_are_confined_to_their_collection() {
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "secret", b"secret");
    let emu = Emu::start();
    std::os::unix::fs::symlink(outside.path(), emu.root_a().join("escape")).unwrap();
    let ls = |p: &str| format!("/v0.10/operation/endpoint/{}/ls?path={p}", emu.a);
    for path in ["/../", "/~/../../", "/escape/"] {
        let (status, body) = emu.get(&ls(path)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("EndpointPermissionDenied")),
            "{path}"
        );
    }
    let (status, _) = emu
        .get(&format!(
            "/v0.10/operation/endpoint/{}/stat?path=/escape/secret",
            emu.a
        ))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = emu
        .post(
            &format!("/v0.10/operation/endpoint/{}/mkdir", emu.a),
            json!({"DATA_TYPE": "mkdir", "path": "/../x"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let task = emu
        .submit(&[("/escape/secret", "/stolen")], json!({}))
        .await;
    let doc = emu.wait(&task, "final").await;
    assert_eq!(doc["fatal_error"]["code"], "PERMISSION_DENIED");
    assert!(!emu.root_b().join("stolen").exists());
    let task = emu.submit(&[("/fine", "/../../outside")], json!({})).await;
    assert_eq!(emu.wait(&task, "final").await["status"], "FAILED");
}

#[tokio::test]
async fn listings_match_the_service() {
    let emu = Emu::start();
    write(emu.root_a(), "dir/one.txt", b"1");
    write(emu.root_a(), "dir/two.dat", b"22");
    write(emu.root_a(), "dir/.hidden", b"h");
    write(emu.root_a(), "dir/sub/x", b"x");
    let op = |what: &str| format!("/v0.10/operation/endpoint/{}/{what}", emu.a);

    let (status, list) = emu
        .get(&format!("{}?path=/~/dir&show_hidden=0", op("ls")))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["path"], "/dir/");
    let names: Vec<&str> = list["DATA"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["sub", "one.txt", "two.dat"],
        "dirs first, hidden files hidden"
    );
    let (_, list) = emu
        .get(&format!(
            "{}?path=/dir&filter=type:dir&filter=name:~*.txt",
            op("ls")
        ))
        .await;
    assert_eq!(
        list["DATA"].as_array().unwrap().len(),
        2,
        "separate filter params OR"
    );
    let (_, list) = emu
        .get(&format!("{}?path=/dir&show_hidden=1", op("ls")))
        .await;
    assert_eq!(list["total"], 4);
    let (status, body) = emu.get(&format!("{}?path=/nope", op("ls"))).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("ClientError.NotFound"))
    );
    let (status, body) = emu.get(&format!("{}?path=/dir/one.txt", op("ls"))).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (
            StatusCode::BAD_GATEWAY,
            Some("ExternalError.DirListingFailed.NotDirectory")
        )
    );
}

#[tokio::test]
async fn stat_mkdir_rename_and_endpoints_match_the_service() {
    let emu = Emu::start();
    write(emu.root_a(), "dir/one.txt", b"1");
    write(emu.root_a(), "dir/two.dat", b"22");
    let op = |what: &str| format!("/v0.10/operation/endpoint/{}/{what}", emu.a);

    let (status, entry) = emu.get(&format!("{}?path=/dir/two.dat", op("stat"))).await;
    assert_eq!(
        (status, entry["size"].as_u64(), entry["type"].as_str()),
        (StatusCode::OK, Some(2), Some("file"))
    );
    let (status, body) = emu.get(&format!("{}?path=/dir/none", op("stat"))).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("NotFound"))
    );

    let (status, body) = emu
        .post(
            &op("mkdir"),
            json!({"DATA_TYPE": "mkdir", "path": "/~/new"}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::ACCEPTED, Some("DirectoryCreated"))
    );
    let (status, body) = emu
        .post(
            &op("mkdir"),
            json!({"DATA_TYPE": "mkdir", "path": "/~/new"}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (
            StatusCode::BAD_GATEWAY,
            Some("ExternalError.MkdirFailed.Exists")
        )
    );
    let (status, _) = emu
        .post(
            &op("mkdir"),
            json!({"DATA_TYPE": "mkdir", "path": "/a/b/c"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "mkdir is not recursive");

    let (status, body) = emu
        .post(
            &op("rename"),
            json!({"DATA_TYPE": "rename", "old_path": "/dir/one.txt", "new_path": "/dir/uno.txt"}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::OK, Some("FileRenamed"))
    );
    assert!(emu.root_a().join("dir/uno.txt").exists());
    let (status, _) = emu
        .post(
            &op("rename"),
            json!({"DATA_TYPE": "rename", "old_path": "/dir/gone", "new_path": "/dir/x"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (_, endpoint) = emu.get(&format!("/v0.10/endpoint/{}", emu.a)).await;
    assert_eq!(
        (
            endpoint["entity_type"].as_str(),
            endpoint["display_name"].as_str()
        ),
        (Some("GCP_mapped_collection"), Some("a"))
    );
    let (_, found) = emu
        .get("/v0.10/endpoint_search?filter_fulltext=b&filter_scope=my-endpoints")
        .await;
    assert_eq!(found["DATA"][0]["id"].as_str(), Some(emu.b.as_str()));
}

#[tokio::test]
async fn delete_tasks() {
    let emu = Emu::start();
    write(emu.root_a(), "d/x1.log", b"1");
    write(emu.root_a(), "d/x2.log", b"2");
    write(emu.root_a(), "d/keep.txt", b"k");
    write(emu.root_a(), "tree/a/b", b"b");
    let delete = |items: &[&str], extra: Value| {
        let items: Vec<Value> = items
            .iter()
            .map(|p| json!({"DATA_TYPE": "delete_item", "path": p}))
            .collect();
        let emu = &emu;
        async move {
            let mut doc = json!({"DATA_TYPE": "delete", "submission_id": emu.submission_id().await, "endpoint": emu.a, "DATA": items});
            for (k, v) in extra.as_object().cloned().unwrap_or_default() {
                doc[k] = v;
            }
            let (status, body) = emu.post("/v0.10/delete", doc).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
            assert_eq!(body["DATA_TYPE"], "delete_result");
            emu.wait(body["task_id"].as_str().unwrap(), "final").await
        }
    };
    let doc = delete(&["/d/x*.log"], json!({"interpret_globs": true})).await;
    assert_eq!(
        (doc["status"].as_str(), doc["type"].as_str()),
        (Some("SUCCEEDED"), Some("DELETE"))
    );
    assert_eq!(doc["destination_endpoint_id"], Value::Null);
    assert!(!emu.root_a().join("d/x1.log").exists() && emu.root_a().join("d/keep.txt").exists());
    let doc = delete(&["/tree"], json!({})).await;
    assert_eq!(doc["status"], "FAILED", "a directory needs recursive");
    let doc = delete(&["/tree"], json!({"recursive": true})).await;
    assert_eq!(doc["status"], "SUCCEEDED");
    assert!(!emu.root_a().join("tree").exists());
    let doc = delete(&["/missing"], json!({})).await;
    assert_eq!(
        (
            doc["fatal_error"]["code"].as_str(),
            doc["faults"].as_u64(),
            doc["subtasks_failed"].as_u64()
        ),
        (Some("FILE_NOT_FOUND"), Some(1), Some(1))
    );
    let doc = delete(&["/missing"], json!({"ignore_missing": true})).await;
    assert_eq!(doc["status"], "SUCCEEDED");
}

#[tokio::test]
async fn task_update_and_deadlines() {
    let emu = Emu::with(|c| c.task_latency_ms = 3_600_000);
    write(emu.root_a(), "f", b"x");
    let task = emu
        .submit(&[("/f", "/g")], json!({"label": "before"}))
        .await;
    emu.wait(&task, "running").await;
    let soon = (chrono::Utc::now() + chrono::Duration::milliseconds(300)).to_rfc3339();
    let (status, body) = emu
        .call(
            Method::PUT,
            &format!("/v0.10/task/{task}"),
            Some(json!({"DATA_TYPE": "task", "label": "after", "deadline": soon})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::OK, Some("Updated"))
    );
    let doc = emu.wait(&task, "final").await;
    assert_eq!(
        (doc["label"].as_str(), doc["fatal_error"]["code"].as_str()),
        (Some("after"), Some("EXPIRED"))
    );
    let (status, _) = emu
        .call(
            Method::PUT,
            &format!("/v0.10/task/{task}"),
            Some(json!({"DATA_TYPE": "task", "label": "late"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (_, pause) = emu.get(&format!("/v0.10/task/{task}/pause_info")).await;
    assert_eq!(pause["DATA_TYPE"], "pause_info_limited");
}

#[tokio::test]
async fn large_files_stream_through_intact() {
    let emu = Emu::start();
    let data: Vec<u8> = (0..(24u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    write(emu.root_a(), "big.bin", &data);
    let task = emu
        .submit(
            &[("/big.bin", "/big.bin")],
            json!({"verify_checksum": true}),
        )
        .await;
    assert_eq!(emu.wait(&task, "final").await["status"], "SUCCEEDED");
    assert!(std::fs::read(emu.root_b().join("big.bin")).unwrap() == data);
    assert_eq!(emu.sim.stats().bytes_copied, data.len() as u64);
}

#[tokio::test]
async fn stats_count_api_requests_by_identity_route_and_status() {
    let emu = Emu::start();
    emu.get("/v0.10/task_list").await;
    emu.get("/v0.10/task_list").await;
    emu.call_as("bad", Method::GET, "/v0.10/task_list", None)
        .await;
    emu.http.get(emu.url("/__sim/stats")).send().await.unwrap();
    let stats = emu.sim.stats();
    assert_eq!(stats.api_requests, 3, "/__sim is not counted");
    assert_eq!(stats.route("GET /v0.10/task_list"), 3);
    assert_eq!(stats.by_status[&200], 2);
    assert_eq!(stats.by_status[&401], 1);
    assert_eq!(stats.by_identity["anonymous"], 1);
    let served: ps_globus_sim::SimStats = emu
        .http
        .get(emu.url("/__sim/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served, stats);
}

#[tokio::test]
async fn consent_required_until_the_token_carries_data_access() {
    let client = "aaaaaaaa-0000-0000-0000-000000000001";
    let emu = Emu::with(|c| {
        c.clients.insert(client.into(), "pw".into());
        let guarded = c.collections.get_mut("b").unwrap();
        *guarded = CollectionConfig {
            requires_data_access: true,
            ..guarded.clone()
        };
    });
    let plain = emu
        .client_token(
            client,
            "pw",
            "urn:globus:auth:scope:transfer.api.globus.org:all",
        )
        .await;
    let ls = format!("/v0.10/operation/endpoint/{}/ls", emu.b);
    let (status, body) = emu.call_as(&plain, Method::GET, &ls, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("ConsentRequired"))
    );
    let required = body["required_scopes"][0].as_str().unwrap().to_owned();
    assert!(
        required.contains(&format!("{}/data_access", emu.b)),
        "{required}"
    );
    let (_, endpoint) = emu
        .call_as(
            &plain,
            Method::GET,
            &format!("/v0.10/endpoint/{}", emu.b),
            None,
        )
        .await;
    assert_eq!(endpoint["entity_type"], "GCSv5_mapped_collection");

    let consented = emu.client_token(client, "pw", &required).await;
    let (status, _) = emu.call_as(&consented, Method::GET, &ls, None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn mirror_options_timestamps_and_the_remaining_sync_levels() {
    let emu = Emu::start();
    write(emu.root_a(), "src/keep", b"k");
    write(emu.root_b(), "dst/keep", b"old");
    write(emu.root_b(), "dst/extra", b"gone soon");
    write(emu.root_b(), "dst/olddir/x", b"gone too");
    let old = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    std::fs::File::options()
        .write(true)
        .open(emu.root_a().join("src/keep"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let task = emu
        .submit(
            &[("/src", "/dst")],
            json!({"delete_destination_extra": true, "preserve_timestamp": true}),
        )
        .await;
    assert_eq!(emu.wait(&task, "final").await["status"], "SUCCEEDED");
    assert_eq!(std::fs::read(emu.root_b().join("dst/keep")).unwrap(), b"k");
    assert!(!emu.root_b().join("dst/extra").exists() && !emu.root_b().join("dst/olddir").exists());
    let mtime = std::fs::metadata(emu.root_b().join("dst/keep"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(mtime, old, "preserve_timestamp");

    // sync_level 0: the destination exists, so nothing is copied.
    write(emu.root_a(), "s0", b"new");
    write(emu.root_b(), "s0", b"old!");
    let task = emu
        .submit(&[("/s0", "/s0")], json!({"sync_level": 0}))
        .await;
    assert_eq!(emu.wait(&task, "final").await["files_skipped"], 1);
    // sync_level 2: same size but the source is newer, so it is copied; then it is not.
    write(emu.root_a(), "s2", b"AAAA");
    write(emu.root_b(), "s2", b"BBBB");
    std::fs::File::options()
        .write(true)
        .open(emu.root_b().join("s2"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let task = emu
        .submit(
            &[("/s2", "/s2")],
            json!({"sync_level": 2, "preserve_timestamp": true}),
        )
        .await;
    assert_eq!(emu.wait(&task, "final").await["files_transferred"], 1);
    let task = emu
        .submit(&[("/s2", "/s2")], json!({"sync_level": 2}))
        .await;
    assert_eq!(emu.wait(&task, "final").await["files_skipped"], 1);
}

#[tokio::test]
async fn delete_tasks_have_their_own_three_slots() {
    let emu = Emu::with(|c| c.task_latency_ms = 3_600_000);
    write(emu.root_a(), "f", b"x");
    let mut transfers = Vec::new();
    for i in 0..3 {
        transfers.push(emu.submit(&[("/f", &format!("/g{i}"))], json!({})).await);
    }
    let doc = json!({"DATA_TYPE": "delete", "submission_id": emu.submission_id().await, "endpoint": emu.a,
                     "DATA": [{"DATA_TYPE": "delete_item", "path": "/f"}]});
    let (_, submitted) = emu.post("/v0.10/delete", doc).await;
    let delete = submitted["task_id"].as_str().unwrap().to_owned();
    let running = emu.wait(&delete, "running").await;
    assert_eq!(
        running["nice_status"], "OK",
        "three running transfers do not block a delete"
    );
    for task in transfers.iter().chain([&delete]) {
        emu.post(&format!("/v0.10/task/{task}/cancel"), json!({}))
            .await;
    }
}

#[tokio::test]
async fn quota_errors_retry_or_fail_as_asked() {
    let emu = Emu::with(|c| {
        c.faults = vec![fault(FaultKind::QuotaExceeded, Some("/full/*"), None, None)]
    });
    write(emu.root_a(), "full/x", b"x");
    let task = emu
        .submit(&[("/full/x", "/x")], json!({"fail_on_quota_errors": true}))
        .await;
    let doc = emu.wait(&task, "final").await;
    assert_eq!(doc["fatal_error"]["code"], "QUOTA_EXCEEDED");
    let task = emu.submit(&[("/full/x", "/x")], json!({})).await;
    assert_eq!(
        emu.wait(&task, "retrying").await["nice_status"],
        "QUOTA_EXCEEDED"
    );
    emu.post(&format!("/v0.10/task/{task}/cancel"), json!({}))
        .await;
}

/// Regression: a symbolic link planted under a recursive transfer's destination made
/// the emulator create and overwrite files outside the collection, and `ls` showed the
/// size and owner of what a link outside pointed to. Nothing is written through such a
/// link, and `ls` shows only the link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_under_a_destination_are_not_followed_and_ls_hides_what_they_point_to() {
    let emu = Emu::start();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("file"), b"original").unwrap();
    write(emu.root_a(), "tree/sub/file", b"overwrite?");
    std::fs::create_dir_all(emu.root_b().join("dest")).unwrap();
    std::os::unix::fs::symlink(outside.path(), emu.root_b().join("dest/sub")).unwrap();
    let task = emu
        .submit(&[("/tree", "/dest")], json!({"recursive": true}))
        .await;
    let done = emu.wait(&task, "final").await;
    assert_eq!(done["status"], "FAILED", "{done}");
    let (_, events) = emu.get(&format!("/v0.10/task/{task}/event_list")).await;
    let text = events.to_string();
    assert!(
        !text.contains(&outside.path().display().to_string()),
        "{text}"
    );
    assert_eq!(
        std::fs::read(outside.path().join("file")).unwrap(),
        b"original"
    );
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        1,
        "nothing created outside"
    );

    let (status, listing) = emu
        .get(&format!(
            "/v0.10/operation/endpoint/{}/ls?path=/dest/",
            emu.b
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{listing}");
    let entry = listing["DATA"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "sub")
        .expect("the link is listed")
        .clone();
    assert_eq!(entry["type"], "invalid_symlink", "{entry}");
    assert!(entry["link_target"].is_null(), "{entry}");
    assert!(
        !listing
            .to_string()
            .contains(&outside.path().display().to_string())
    );
}

/// Regression: a transfer of a file onto itself truncated it and reported success, and
/// a recursive one into its own subtree nested until the path was too long. Within one
/// collection both are refused at submission, before anything is opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_onto_itself_or_into_its_own_subtree_is_refused_at_submission() {
    let emu = Emu::start();
    write(emu.root_a(), "dir/file", b"precious");
    for (source, destination, recursive) in [
        ("/dir/file", "/dir/file", false),
        ("/dir/file", "/~/dir//./file", false),
        ("/dir", "/dir/copy", true),
    ] {
        let mut doc = emu.transfer_doc(&[(source, destination)], json!({})).await;
        doc["destination_endpoint"] = emu.a.clone().into();
        doc["DATA"][0]["recursive"] = recursive.into();
        let (status, body) = emu.post("/v0.10/transfer", doc).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{source} -> {destination}: {body}"
        );
        assert_eq!(body["code"], "ClientError.BadRequest", "{body}");
    }
    assert_eq!(
        std::fs::read(emu.root_a().join("dir/file")).unwrap(),
        b"precious"
    );
    assert!(!emu.root_a().join("dir/copy").exists());
}

/// Defect 4, what a path check misses: a destination that is the source file under
/// another name (a hard link, a link inside the collection) is refused at submission,
/// and the file keeps its bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_onto_the_same_file_under_another_name_is_refused() {
    let emu = Emu::start();
    write(emu.root_a(), "dir/file", b"precious");
    std::fs::hard_link(emu.root_a().join("dir/file"), emu.root_a().join("hard")).unwrap();
    std::os::unix::fs::symlink("dir/file", emu.root_a().join("soft")).unwrap();
    for destination in ["/hard", "/soft"] {
        let mut doc = emu
            .transfer_doc(&[("/dir/file", destination)], json!({}))
            .await;
        doc["destination_endpoint"] = emu.a.clone().into();
        let (status, body) = emu.post("/v0.10/transfer", doc).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{destination}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("under another name"),
            "{body}"
        );
    }
    assert_eq!(
        std::fs::read(emu.root_a().join("dir/file")).unwrap(),
        b"precious"
    );
}

/// ... and a hard link made after submission, while the task waits to copy, is found at
/// copy time: nothing is written, the task never succeeds, the file keeps its bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_linked_to_its_source_after_submission_is_not_written() {
    let emu = Emu::with(|c| c.task_latency_ms = 300);
    write(emu.root_a(), "file", b"precious");
    let deadline = (chrono::Utc::now() + chrono::Duration::seconds(2))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let mut doc = emu
        .transfer_doc(&[("/file", "/later")], json!({"deadline": deadline}))
        .await;
    doc["destination_endpoint"] = emu.a.clone().into();
    let (status, body) = emu.post("/v0.10/transfer", doc).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    std::fs::hard_link(emu.root_a().join("file"), emu.root_a().join("later")).unwrap();
    let done = emu.wait(body["task_id"].as_str().unwrap(), "final").await;
    assert_eq!(done["status"], "FAILED", "{done}");
    assert_eq!(
        std::fs::read(emu.root_a().join("file")).unwrap(),
        b"precious"
    );
}

/// Regression: a file copied again after a checksum mismatch was counted again in
/// `bytes_transferred` on every attempt. Each byte of the file counts once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_file_counts_its_bytes_once() {
    let emu = Emu::with(|c| {
        c.checksum_retries = 2;
        c.faults = vec![fault(
            FaultKind::ChecksumMismatch,
            Some("/retried"),
            None,
            None,
        )];
    });
    let data = vec![7u8; 300_000];
    write(emu.root_a(), "retried", &data);
    let task = emu.submit(&[("/retried", "/retried")], json!({})).await;
    let doc = emu.wait(&task, "final").await;
    assert_eq!(doc["faults"], 3, "copied three times: {doc}");
    assert_eq!(doc["bytes_transferred"], data.len() as u64, "{doc}");
}

/// With `--state FILE`, a restart is a service blip, not amnesia: finished tasks keep
/// their documents, events and file lists, a re-posted submission id is still a
/// duplicate, and an unfinished task runs again. Without it, every task is forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_a_state_file_keeps_every_task_and_resumes_the_unfinished() {
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().join("sim-state.json");
    let keep = |c: &mut ps_globus_sim::SimConfig| c.state_file = Some(state.clone());
    let emu = Emu::with(keep);
    write(emu.root_a(), "f", b"done before");
    let doc = emu
        .transfer_doc(&[("/f", "/f")], json!({"label": "kept"}))
        .await;
    let (status, first) = emu.post("/v0.10/transfer", doc.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let done = first["task_id"].as_str().unwrap().to_owned();
    assert_eq!(emu.wait(&done, "final").await["status"], "SUCCEEDED");
    // Its source is missing: it retries, unfinished, when the service goes down.
    let waiting = emu.submit(&[("/late", "/late")], json!({})).await;
    emu.wait(&waiting, "retrying").await;
    let before = emu.task(&done).await;

    let emu = emu.restart(keep);
    let after = emu.task(&done).await;
    for field in [
        "status",
        "label",
        "request_time",
        "completion_time",
        "files_transferred",
        "bytes_transferred",
    ] {
        assert_eq!(after[field], before[field], "{field}");
    }
    let (_, copied) = emu
        .get(&format!("/v0.10/task/{done}/successful_transfers"))
        .await;
    assert_eq!(copied["DATA"][0]["destination_path"], "/f", "{copied}");
    let (status, again) = emu.post("/v0.10/transfer", doc).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["code"], "Duplicate");
    assert_eq!(again["task_id"], done.as_str());
    write(emu.root_a(), "late", b"here now");
    let resumed = emu.wait(&waiting, "final").await;
    assert_eq!(resumed["status"], "SUCCEEDED", "{resumed}");
    assert_eq!(
        resumed["files_transferred"], 1,
        "counted once, after the restart"
    );
    let (_, events) = emu
        .get(&format!("/v0.10/task/{waiting}/event_list?limit=1000"))
        .await;
    assert!(
        events["DATA"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["code"] == "RESTARTED"),
        "{events}"
    );
    assert_eq!(
        std::fs::read(emu.root_b().join("late")).unwrap(),
        b"here now"
    );

    let emu = emu.restart(|_| {});
    let (status, _) = emu.get(&format!("/v0.10/task/{done}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no state file: forgotten");
}

/// A state file that is not one is refused with its name, not silently replaced.
#[test]
fn a_state_file_that_is_not_one_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    std::fs::write(&state, b"{ not json").unwrap();
    let err = ps_globus_sim::Simulator::start(ps_globus_sim::SimConfig {
        state_file: Some(state.clone()),
        ..Default::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("state.json"), "{err}");
    assert!(err.to_string().contains("move it away"), "{err}");
    assert_eq!(
        std::fs::read(&state).unwrap(),
        b"{ not json",
        "left as it was"
    );
}

/// A task fault with a `count` heals after acting that often on a path: the task
/// retries through it and succeeds, as with a destination whose quota was raised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counted_path_fault_heals_and_the_task_succeeds() {
    let emu = Emu::with(|c| {
        c.faults = vec![fault(
            FaultKind::QuotaExceeded,
            Some("/heal/*"),
            None,
            Some(3),
        )]
    });
    write(emu.root_a(), "heal/x", b"after a while");
    let task = emu.submit(&[("/heal/x", "/x")], json!({})).await;
    let done = emu.wait(&task, "final").await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    assert!(done["faults"].as_u64().unwrap() >= 1, "{done}");
    assert_eq!(
        std::fs::read(emu.root_b().join("x")).unwrap(),
        b"after a while"
    );
}

/// A kill in the middle of a save leaves half a line at the end of the state file: the
/// restart ignores it and keeps everything saved before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_written_last_line_of_the_state_file_is_ignored() {
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().join("sim-state.json");
    let keep = |c: &mut ps_globus_sim::SimConfig| c.state_file = Some(state.clone());
    let emu = Emu::with(keep);
    write(emu.root_a(), "f", b"kept");
    let task = emu.submit(&[("/f", "/f")], json!({})).await;
    assert_eq!(emu.wait(&task, "final").await["status"], "SUCCEEDED");
    let emu = emu.restart(|_| {});
    let mut journal = std::fs::OpenOptions::new()
        .append(true)
        .open(&state)
        .unwrap();
    std::io::Write::write_all(&mut journal, br#"{"v":1,"task":{"id":"#).unwrap();
    let emu = emu.restart(keep);
    assert_eq!(emu.task(&task).await["status"], "SUCCEEDED");
}

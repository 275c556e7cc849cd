//! The real-service rules the emulator enforces by default (SPEC §3.11): identical-path
//! conflicts, the 50-id filter, documented label filters, the rate limit, lingering
//! `nice_status`, recoverable faults, path-free events, `default_directory`, checksum
//! algorithms per collection, no copy order, and paging markers.

use crate::support::emulator::{Emu, fault, write};
use ps_globus_sim::{FaultKind, SimConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A transfer document of `(source, destination, recursive)` items from a to b.
async fn doc_with(emu: &Emu, items: &[(&str, &str, bool)]) -> Value {
    let mut doc = emu.transfer_doc(&[], json!({})).await;
    doc["DATA"] = items
        .iter()
        .map(|(s, d, r)| {
            json!({"DATA_TYPE": "transfer_item", "source_path": s, "destination_path": d, "recursive": r})
        })
        .collect();
    doc
}

/// Submits `items`; the status and body of the answer.
async fn post(emu: &Emu, items: &[(&str, &str, bool)]) -> (StatusCode, Value, Value) {
    let doc = doc_with(emu, items).await;
    let (status, body) = emu.post("/v0.10/transfer", doc.clone()).await;
    (status, body, doc)
}

#[test]
fn the_default_configuration_is_as_strict_as_globus() {
    let c = SimConfig::default();
    assert_eq!(c.rate_limit, Some(20));
    assert!(c.identical_path_conflicts);
    assert_eq!(c.max_filter_task_ids, 50);
    assert!(!c.bare_label_filters);
    assert_eq!(c.nice_status_linger_s, 900);
    assert!(!c.ordered_copies);
    assert_eq!(c.pending_cap, 100);
    let lenient = c.lenient();
    assert_eq!(lenient.effective_rate_limit(), None);
    assert!(!lenient.identical_path_conflicts && lenient.ordered_copies);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_paths_conflict_with_an_unfinished_task_and_the_refused_id_stays_unused() {
    let emu = Emu::with(|c| c.task_latency_ms = 3_600_000);
    write(emu.root_a(), "f", b"x");
    write(emu.root_a(), "dir/g", b"y");
    let (status, first, _) = post(&emu, &[("/f", "/out/x", false)]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let (_, tree, _) = post(&emu, &[("/dir", "/tree", true)]).await;
    assert_eq!(tree["code"], "Accepted");

    // The same path (however written), a path below a recursive destination, and a
    // recursive destination above an existing path all conflict.
    for items in [
        vec![("/f", "/~/out//x", false)],
        vec![("/f", "/tree/sub/file", false)],
        vec![("/dir", "/out", true)],
    ] {
        let (status, body, _) = post(&emu, &items).await;
        assert_eq!(status, StatusCode::CONFLICT, "{items:?}: {body}");
        assert_eq!(body["code"], "Conflict");
        assert_eq!(
            body["message"],
            "A transfer with identical paths has not yet completed"
        );
    }
    // A neighbour, and a path that only shares a prefix, do not.
    let (_, ok, _) = post(&emu, &[("/f", "/out/x2", false)]).await;
    assert_eq!(ok["code"], "Accepted", "{ok}");
    let (_, ok, _) = post(&emu, &[("/f", "/treehouse", false)]).await;
    assert_eq!(ok["code"], "Accepted", "{ok}");

    // The refused submission id was not used up: once the first task ends, the same
    // document is accepted as a new task (not answered Duplicate).
    let (status, _, refused) = post(&emu, &[("/f", "/out/x", false)]).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let id = first["task_id"].as_str().unwrap();
    emu.post(&format!("/v0.10/task/{id}/cancel"), json!({}))
        .await;
    emu.wait(id, "final").await;
    let (status, again) = emu.post("/v0.10/transfer", refused).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["code"], "Accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_paths_are_accepted_when_the_rule_is_relaxed() {
    let emu = Emu::with(|c| {
        c.task_latency_ms = 3_600_000;
        c.identical_path_conflicts = false;
    });
    write(emu.root_a(), "f", b"x");
    for _ in 0..2 {
        let (status, body, _) = post(&emu, &[("/f", "/out/x", false)]).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_id_filter_takes_at_most_fifty_ids() {
    let emu = Emu::start();
    let ids: Vec<String> = (0..51).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let (status, body) = emu
        .get(&format!(
            "/v0.10/task_list?filter=task_id:{}",
            ids.join(",")
        ))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], "ClientError.BadRequest");
    assert!(body["message"].as_str().unwrap().contains("at most 50"));
    let (status, body) = emu
        .get(&format!(
            "/v0.10/task_list?filter=task_id:{}",
            ids[..50].join(",")
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_filters_need_an_operator_exact_or_like() {
    let emu = Emu::start();
    write(emu.root_a(), "f", b"x");
    for (label, dst) in [("run-1", "/a"), ("run-10", "/b")] {
        let task = emu.submit(&[("/f", dst)], json!({ "label": label })).await;
        emu.wait(&task, "final").await;
    }
    let labels = |body: &Value| -> Vec<String> {
        let mut l: Vec<String> = body["DATA"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["label"].as_str().unwrap().to_owned())
            .collect();
        l.sort();
        l
    };
    let (status, body) = emu.get("/v0.10/task_list?filter=label:run-1").await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a bare label is undocumented"
    );
    assert!(body["message"].as_str().unwrap().contains("=exact"));
    let (_, exact) = emu.get("/v0.10/task_list?filter=label:=run-1").await;
    assert_eq!(labels(&exact), ["run-1"]);
    let (_, like) = emu.get("/v0.10/task_list?filter=label:~run-1").await;
    assert_eq!(labels(&like), ["run-1", "run-10"]);
    let (_, both) = emu
        .get("/v0.10/task_list?filter=label:=run-1,=run-10")
        .await;
    assert_eq!(labels(&both), ["run-1", "run-10"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_is_on_by_default_per_identity() {
    let emu = Emu::start();
    let mut throttled = None;
    for i in 0..260 {
        let (status, body) = emu.get("/v0.10/submission_id").await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            throttled = Some((i, body));
            break;
        }
    }
    let (i, body) = throttled.expect("20 requests/s over 10 s is 200 a window");
    assert_eq!(
        i, 200,
        "the 201st request in the window is the first refused"
    );
    assert_eq!(body["code"], "RequestLimitExceeded");
}

/// A fault with a count is retried by the task, which then succeeds ("fails 3 times
/// then succeeds"), and no event names the path. (That `nice_status` keeps the fault
/// after the recovery is tested on the task state itself.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recoverable_fault_is_retried_and_names_no_path() {
    let emu = Emu::with(|c| {
        c.faults = vec![fault(
            FaultKind::ConnectFailed,
            Some("/in/secret-name"),
            None,
            Some(3),
        )];
    });
    write(emu.root_a(), "in/secret-name", b"small");
    write(emu.root_a(), "in/other", b"other");
    let task = emu
        .submit(
            &[("/in/secret-name", "/out/a"), ("/in/other", "/out/b")],
            json!({"skip_source_errors": true}),
        )
        .await;
    let doc = emu.wait(&task, "final").await;
    assert_eq!(doc["status"], "SUCCEEDED", "{doc}");
    assert_eq!(doc["faults"], 3, "each failed attempt counts once");
    assert_eq!(doc["files_transferred"], 2);
    assert_eq!(
        doc["subtasks_skipped_errors"], 0,
        "CONNECT_FAILED is never skipped"
    );
    let (_, events) = emu
        .get(&format!("/v0.10/task/{task}/event_list?limit=1000"))
        .await;
    let events = events["DATA"].as_array().unwrap();
    let faults = events
        .iter()
        .filter(|e| e["code"] == "CONNECT_FAILED")
        .count();
    assert_eq!(faults, 3);
    for event in events {
        let details = event["details"].as_str().unwrap();
        assert!(
            !details.contains("secret-name") && !details.contains("/in"),
            "{details}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_skipped_and_fatal_paths_name_no_path() {
    let emu = Emu::start();
    write(emu.root_a(), "dir/f", b"x");
    let skipped = emu
        .submit(
            &[("/missing-name", "/out/m")],
            json!({"skip_source_errors": true}),
        )
        .await;
    let fatal = emu.submit(&[("/dir", "/out/d")], json!({})).await; // a directory, not recursive
    for task in [&skipped, &fatal] {
        emu.wait(task, "final").await;
        let (_, events) = emu
            .get(&format!("/v0.10/task/{task}/event_list?limit=1000"))
            .await;
        for event in events["DATA"].as_array().unwrap() {
            let details = event["details"].as_str().unwrap();
            assert!(
                !details.contains("missing-name")
                    && !details.contains("/dir")
                    && !details.contains("/out"),
                "{details}"
            );
        }
    }
    // The skipped error itself still says which path it is about.
    let (_, skips) = emu
        .get(&format!("/v0.10/task/{skipped}/skipped_errors"))
        .await;
    assert_eq!(skips["DATA"][0]["source_path"], "/missing-name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tilde_leads_to_the_collections_default_directory() {
    let emu = Emu::with(|c| {
        c.collections.get_mut("b").unwrap().default_directory = Some("/home/u".into());
    });
    write(emu.root_a(), "f", b"home");
    let (_, endpoint) = emu.get(&format!("/v0.10/endpoint/{}", emu.b)).await;
    assert_eq!(endpoint["default_directory"], "/home/u/");
    let (_, endpoint) = emu.get(&format!("/v0.10/endpoint/{}", emu.a)).await;
    assert_eq!(
        endpoint["default_directory"], "/",
        "the root unless declared"
    );
    let task = emu.submit(&[("/~/f", "~/x")], json!({})).await;
    assert_eq!(emu.wait(&task, "final").await["status"], "SUCCEEDED");
    assert_eq!(
        std::fs::read(emu.root_b().join("home/u/x")).unwrap(),
        b"home"
    );
    let (_, copied) = emu
        .get(&format!("/v0.10/task/{task}/successful_transfers"))
        .await;
    assert_eq!(copied["DATA"][0]["destination_path"], "/home/u/x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checksum_the_collection_cannot_compute_retries_until_the_deadline() {
    let emu = Emu::with(|c| {
        c.collections.get_mut("b").unwrap().checksum_algorithms =
            Some(vec!["MD5".into(), "ADLER32".into()]);
    });
    write(emu.root_a(), "f", b"data");
    let mut doc = emu.transfer_doc(&[("/f", "/g")], json!({})).await;
    doc["DATA"][0]["external_checksum"] =
        json!("3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7");
    doc["DATA"][0]["checksum_algorithm"] = json!("SHA256");
    let (_, accepted) = emu.post("/v0.10/transfer", doc).await;
    let task = accepted["task_id"].as_str().unwrap().to_owned();
    let doc = emu.wait(&task, "retrying").await;
    assert_eq!(doc["status"], "ACTIVE");
    assert_eq!(doc["nice_status"], "UNSUPPORTED_CHECKSUM_ALGORITHM");
    assert!(!emu.root_b().join("g").exists(), "nothing written");
    // MD5, which it supports, goes through.
    let mut doc = emu.transfer_doc(&[("/f", "/h")], json!({})).await;
    doc["DATA"][0]["external_checksum"] = json!("8d777f385d3dfec8815d20f7496026dc");
    doc["DATA"][0]["checksum_algorithm"] = json!("MD5");
    let (_, accepted) = emu.post("/v0.10/transfer", doc).await;
    let done = emu
        .wait(accepted["task_id"].as_str().unwrap(), "final")
        .await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
}

/// Globus promises no order within a task; the emulator's order is random but seeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_of_a_task_are_copied_in_a_seeded_random_order() {
    let order = |seed: u64| async move {
        let emu = Emu::with(|c| c.seed = seed);
        let names: Vec<String> = (0..20).map(|i| format!("f{i:02}")).collect();
        for n in &names {
            write(emu.root_a(), &format!("in/{n}"), n.as_bytes());
        }
        let items: Vec<(String, String)> = names
            .iter()
            .map(|n| (format!("/in/{n}"), format!("/out/{n}")))
            .collect();
        let refs: Vec<(&str, &str)> = items
            .iter()
            .map(|(s, d)| (s.as_str(), d.as_str()))
            .collect();
        let task = emu.submit(&refs, json!({})).await;
        emu.wait(&task, "final").await;
        let (_, copied) = emu
            .get(&format!("/v0.10/task/{task}/successful_transfers"))
            .await;
        let order: Vec<String> = copied["DATA"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["destination_path"].as_str().unwrap().to_owned())
            .collect();
        (order, items.into_iter().map(|(_, d)| d).collect::<Vec<_>>())
    };
    let (first, requested) = order(7).await;
    assert_eq!(first.len(), 20);
    assert_ne!(first, requested, "not the request order");
    let mut sorted = first.clone();
    sorted.sort();
    assert_eq!(sorted, requested, "every file, once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_page_of_a_marker_list_has_no_marker() {
    let emu = Emu::start();
    write(emu.root_a(), "f", b"x");
    let task = emu.submit(&[("/f", "/g")], json!({})).await;
    emu.wait(&task, "final").await;
    let (status, body) = emu
        .get(&format!("/v0.10/task/{task}/successful_transfers?marker=0"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = emu
        .get(&format!("/v0.10/task/{task}/successful_transfers"))
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pending_task_limit_counts_every_client_of_an_identity() {
    let emu = Emu::with(|c| {
        c.task_latency_ms = 3_600_000;
        c.pending_cap = 2;
    });
    write(emu.root_a(), "f", b"x");
    // Two clients (two HTTP connections pools, as two processes) of one identity.
    let other = reqwest::Client::new();
    let (s1, _, _) = post(&emu, &[("/f", "/1", false)]).await;
    let doc = doc_with(&emu, &[("/f", "/2", false)]).await;
    let s2 = other
        .post(emu.url("/v0.10/transfer"))
        .bearer_auth(crate::support::emulator::TOKEN)
        .json(&doc)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!((s1, s2), (StatusCode::ACCEPTED, StatusCode::ACCEPTED));
    let (status, body, _) = post(&emu, &[("/f", "/3", false)]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "ClientError.Conflict.PendingTaskLimit");
}

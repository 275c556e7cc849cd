//! The tests of `transfer/types.rs`.
use super::*;

/// Documents recorded from the real service (`tests/fixtures/globus-api/`) parse into
/// these types.
fn fixture(name: &str) -> serde_json::Value {
    let path = format!(
        "{}/tests/fixtures/globus-api/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str::<serde_json::Value>(&text).unwrap()["json"].clone()
}

/// SPEC §3.11: `nice_status_expires_in` comes as -1, 0, a number, a string or null,
/// and paths may be null for a viewer without the role; none of it fails a poll.
#[test]
fn varying_wire_forms_parse_leniently() {
    for (text, want) in [
        ("-1", Some(-1)),
        ("0", Some(0)),
        ("3600", Some(3600)),
        ("\"120\"", Some(120)),
        ("12.5", Some(12)),
        ("null", None),
        ("\"soon\"", None),
    ] {
        let task: Task =
            serde_json::from_str(&format!(r#"{{"nice_status_expires_in": {text}}}"#)).unwrap();
        assert_eq!(task.nice_status_expires_in, want, "{text}");
    }
    let copied: SuccessfulTransfer = serde_json::from_str(
        r#"{"DATA_TYPE": "successful_transfer", "source_path": null, "destination_path": "/x"}"#,
    )
    .unwrap();
    assert_eq!(
        (
            copied.source_path.as_str(),
            copied.destination_path.as_str()
        ),
        ("", "/x")
    );
}

#[test]
fn recorded_documents_parse() {
    let list: Page<Task> = serde_json::from_value(fixture("cli.task_list.0.json")).unwrap();
    assert_eq!(list.data[0].status, TaskStatus::Succeeded);
    assert_eq!(list.data[0].subtasks_total, 2);
    assert!(list.data[0].is_final());
    let events: Page<Event> =
        serde_json::from_value(fixture("cli.task_event_list.0.json")).unwrap();
    assert_eq!(events.data[0].code, "CANCELED");
    let ls: FileList = serde_json::from_value(fixture("cli.ls_results.1.json")).unwrap();
    assert_eq!(ls.data[0].kind, "dir");
    let ok: MarkerPage<SuccessfulTransfer> = serde_json::from_value(fixture(
        "sdk.transfer.endpoint_manager_task_successful_transfers.default.json",
    ))
    .unwrap();
    assert_eq!(ok.next_marker, Some(93979));
    let skipped: MarkerPage<SkippedError> =
        serde_json::from_value(fixture("cli.skipped_error_list.0.json")).unwrap();
    assert_eq!(skipped.data[1].error_code, "PERMISSION_DENIED");
    let submit: SubmitResult =
        serde_json::from_value(fixture("sdk.transfer.submit_transfer.default.json")).unwrap();
    assert_eq!(submit.code, "Accepted");
    let err: ErrorDoc =
        serde_json::from_value(fixture("sdk.transfer.submit_transfer.failure.json")).unwrap();
    assert_eq!(err.code, "ClientError.BadRequest.NoTransferItems");
    let mapped: Endpoint = serde_json::from_value(fixture(
        "cli.collection_operations.get_endpoint.GCSv5_mapped_collection.json",
    ))
    .unwrap();
    assert!(mapped.requires_data_access_scope());
    let gcp: Endpoint = serde_json::from_value(fixture(
        "cli.collection_operations.get_endpoint.GCP_mapped_collection.json",
    ))
    .unwrap();
    assert!(!gcp.requires_data_access_scope());
}

#[test]
fn requests_leave_out_absent_fields() {
    let doc = TransferRequest {
        data_type: "transfer".into(),
        submission_id: "s".into(),
        source_endpoint: "a".into(),
        destination_endpoint: "b".into(),
        data: vec![TransferItem {
            data_type: "transfer_item".into(),
            source_path: "/x".into(),
            destination_path: "/y".into(),
            ..Default::default()
        }],
        verify_checksum: Some(true),
        ..Default::default()
    };
    let json = serde_json::to_value(&doc).unwrap();
    assert_eq!(json["verify_checksum"], true);
    assert!(json.get("label").is_none());
    assert!(json["DATA"][0].get("recursive").is_none());
}

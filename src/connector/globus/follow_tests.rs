//! One test per transition of [`Follow`], without an emulator: tasks are values.
use super::*;
use crate::error::TransferFailure;
use crate::transfer::types::FatalError;

fn paths() -> Paths {
    Paths {
        source: "/src/store/o".into(),
        destination: "/dst/store/o".into(),
    }
}

fn task(label: &str, id: &str, status: TaskStatus) -> Task {
    Task {
        task_id: id.into(),
        label: Some(label.into()),
        status,
        ..Task::default()
    }
}

fn failed_with(label: &str, id: &str, code: &str) -> Task {
    Task {
        fatal_error: Some(FatalError {
            code: code.into(),
            description: format!("{code} said the service"),
        }),
        ..task(label, id, TaskStatus::Failed)
    }
}

fn skipped(destination: &str, code: &str) -> SkippedError {
    SkippedError {
        data_type: "skipped_error".into(),
        source_path: "/src/store/o".into(),
        destination_path: destination.into(),
        error_code: code.into(),
        error_details: "no space".into(),
        error_time: String::new(),
        is_directory: false,
        is_symlink: false,
        is_delete_destination_extra: false,
        external_checksum: None,
        checksum_algorithm: None,
    }
}

fn ended_code(next: Next) -> Option<String> {
    match next {
        Next::Ended(Some(e)) if e.is::<TransferFailure>() => {
            Some(e.downcast_ref::<TransferFailure>().unwrap().code.clone())
        }
        Next::Ended(None) => None,
        other => panic!("not ended: {other:?}"),
    }
}

#[test]
fn the_keys_own_label_unseen_is_waited_for_without_end() {
    let mut f = Follow::new("L", paths());
    let later = Instant::now() + Duration::from_secs(3600);
    assert!(matches!(f.tick(later), Next::Wait));
    assert!(!f.any_seen());
}

#[test]
fn a_running_task_is_waited_for() {
    let mut f = Follow::new("L", paths());
    let now = Instant::now();
    f.task_seen(&task("L", "t1", TaskStatus::Active), now);
    assert!(f.any_seen());
    assert!(matches!(f.tick(now), Next::Wait));
}

#[test]
fn a_succeeded_task_has_its_skips_read_then_the_file_is_looked_at_again() {
    let mut f = Follow::new("L", paths());
    let now = Instant::now();
    f.task_seen(&task("L", "t1", TaskStatus::Succeeded), now);
    match f.tick(now) {
        Next::ReadSkips(ids) => assert_eq!(ids, ["t1"]),
        other => panic!("{other:?}"),
    }
    f.file_verdict("t1", &[skipped("/dst/store/other", "FILE_NOT_FOUND")]);
    assert!(matches!(f.tick(now), Next::LookAgain));
    // Looked again and still absent: the family is listed once, then the end.
    assert!(matches!(f.tick(now), Next::ListFamily));
    f.family_listed(["L"], now);
    assert_eq!(ended_code(f.tick(now)), None, "succeeded, not skipped");
}

#[test]
fn a_file_verdict_naming_the_object_ends_with_its_reason() {
    let mut f = Follow::new("L", paths());
    let now = Instant::now();
    f.task_succeeded(&task("L", "t1", TaskStatus::Succeeded));
    // The service's paths may differ by a doubled or trailing slash.
    f.file_verdict("t1", &[skipped("/dst//store/o", "QUOTA_EXCEEDED")]);
    assert_eq!(ended_code(f.tick(now)).as_deref(), Some("QUOTA_EXCEEDED"));
}

#[test]
fn a_failed_task_ends_with_its_own_code_after_the_family_is_listed() {
    let mut f = Follow::new("L", paths());
    let now = Instant::now();
    f.task_failed(&failed_with("L", "t1", "PERMISSION_DENIED"), now);
    assert!(matches!(f.tick(now), Next::ListFamily));
    assert_eq!(f.family_filter(), "label:~L-*");
    f.family_listed([], now);
    assert_eq!(
        ended_code(f.tick(now)).as_deref(),
        Some("PERMISSION_DENIED")
    );
}

#[test]
fn a_cancel_follows_its_resplit_for_the_grace_period_then_reports_the_cancel() {
    let mut f = Follow::new("L", paths());
    let now = Instant::now();
    f.task_seen(&failed_with("L", "t1", "CANCELED"), now);
    assert_eq!(f.labels().collect::<Vec<_>>(), ["L", "L-resplit"]);
    assert!(matches!(f.tick(now), Next::Wait), "the re-split may appear");
    let after = now + RESPLIT_GRACE + Duration::from_millis(1);
    assert!(matches!(f.tick(after), Next::ListFamily));
    f.family_listed([], after);
    assert_eq!(ended_code(f.tick(after)).as_deref(), Some("CANCELED"));
}

#[test]
fn a_resplits_failure_is_reported_rather_than_the_cancel_before_it() {
    let mut f = Follow::new("L", paths());
    let now = Instant::now();
    f.task_failed(&failed_with("L", "t1", "CANCELED"), now);
    f.task_failed(&failed_with("L-resplit", "t2", "FILE_NOT_FOUND"), now);
    assert_eq!(
        f.labels().count(),
        2,
        "a re-split's own cancel adds nothing"
    );
    assert!(matches!(f.tick(now), Next::ListFamily));
    f.family_listed(["L", "L-resplit"], now);
    assert_eq!(ended_code(f.tick(now)).as_deref(), Some("FILE_NOT_FOUND"));
}

#[test]
fn a_listed_part_is_followed_until_it_ends() {
    let mut f = Follow::new("L", paths());
    let now = Instant::now();
    f.task_succeeded(&task("L", "t1", TaskStatus::Succeeded));
    assert!(matches!(f.tick(now), Next::ReadSkips(_)));
    f.file_verdict("t1", &[]);
    assert!(matches!(f.tick(now), Next::LookAgain));
    assert!(matches!(f.tick(now), Next::ListFamily));
    // Another family's label is not ours, though it shares the prefix text.
    f.family_listed(["L-part1", "LX-part1"], now);
    assert_eq!(f.labels().collect::<Vec<_>>(), ["L", "L-part1"]);
    assert!(matches!(f.tick(now), Next::Wait), "the part, not seen yet");
    // Its end: the family is not listed again (nothing was added since), a part's
    // failure is the object's.
    f.task_seen(&failed_with("L-part1", "t3", "ENDPOINT_ERROR"), now);
    assert_eq!(ended_code(f.tick(now)).as_deref(), Some("ENDPOINT_ERROR"));
}

#[test]
fn a_task_of_a_label_not_followed_changes_nothing() {
    let mut f = Follow::new("L", paths());
    let now = Instant::now();
    f.task_seen(&failed_with("M", "t9", "CANCELED"), now);
    assert!(!f.any_seen());
    assert_eq!(f.labels().count(), 1);
}

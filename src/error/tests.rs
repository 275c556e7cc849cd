use super::*;
use std::error::Error as _;

#[test]
fn wrapped_failures_keep_their_cause_as_the_source() {
    let json = serde_json::from_str::<u8>("nope").unwrap_err();
    let e = Error::state("/x/state.db", "reference \"r\" is unreadable", json);
    let source = e.source().expect("the parser's error is kept");
    assert!(source.downcast_ref::<serde_json::Error>().is_some());
    assert!(e.downcast_ref::<serde_json::Error>().is_some());
    assert!(e.to_string().contains("/x/state.db"), "{e}");
    let e = Error::encode("json", "bad value");
    assert_eq!(e.source().unwrap().to_string(), "bad value");
    let e = Error::background("the delete batcher", None);
    assert!(e.source().is_none());
    assert_eq!(e.kind(), ErrorKind::Internal);
    assert_eq!(e.to_string(), "the delete batcher failed");
}

#[test]
fn remedies_are_typed_and_messages_name_no_command() {
    let consent = Error::from(ConsentRequired::new(vec![], vec!["c1".into(), "c2".into()]));
    let login = Error::login_required("no stored login");
    let refused = Error::unauthorized("token expired");
    for e in [&consent, &login, &refused] {
        assert!(!e.to_string().contains("ps-globus"), "{e}");
        assert!(matches!(e, Error::PermissionDenied(_)));
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
        assert!(e.needs_login());
    }
    assert_eq!(
        consent.remedy(),
        Some(&Remedy::Login {
            collections: vec!["c1".into(), "c2".into()]
        })
    );
    assert_eq!(refused.remedy(), Some(&Remedy::LoginAgain));
    let attention = Error::from(NeedsAttention::access("t", "paused"));
    assert_eq!(
        attention.remedy(),
        Some(&Remedy::GrantAccessOrCancelTask {
            task_id: "t".into()
        })
    );
    assert!(attention.needs_login());
    assert_eq!(attention.kind(), ErrorKind::TransferFailed);
    assert_eq!(
        attention.to_string(),
        "Globus task t needs attention: paused"
    );
    let untrusted = Error::from(Untrusted::new("Redis server", "evil:6379", "add it"));
    assert_eq!(untrusted.kind(), ErrorKind::PermissionDenied);
    assert!(!untrusted.needs_login());
}

#[test]
fn kinds_sort_the_categories_a_caller_acts_on() {
    let timeout = Error::timeout("a transfer", Duration::from_secs(1));
    assert_eq!(timeout.kind(), ErrorKind::Timeout);
    assert!(timeout.is_transient());
    assert_eq!(
        timeout.to_string(),
        "timed out after 1s waiting for a transfer"
    );
    let unsupported = Error::unsupported("resolve_path", "local", "read it with get");
    assert_eq!(unsupported.kind(), ErrorKind::Unsupported);
    assert!(!unsupported.is_transient());
    assert_eq!(Error::malformed("x").kind(), ErrorKind::InvalidInput);
    let io = Error::io(
        "write",
        "/full",
        std::io::Error::from(std::io::ErrorKind::StorageFull),
    );
    assert_eq!(io.kind(), ErrorKind::Storage);
    assert!(io.to_string().contains("free space"), "{io}");
    assert!(!io.is_transient());
    let busy = Error::io(
        "read",
        "/x",
        std::io::Error::from(std::io::ErrorKind::Interrupted),
    );
    assert!(busy.is_transient());
}

#[test]
fn back_end_detail_is_reachable_by_downcast_and_picks_the_category() {
    let redis = |code: &str| {
        Error::from(ServerError {
            service: "Redis",
            url: "redis://h:1".into(),
            operation: "SET".into(),
            code: code.into(),
            message: "m".into(),
        })
    };
    let oom = redis("OOM");
    assert_eq!(oom.kind(), ErrorKind::Service);
    assert_eq!(oom.downcast_ref::<ServerError>().unwrap().code, "OOM");
    assert!(matches!(oom.remedy(), Some(Remedy::Advice(a)) if a.contains("maxmemory")));
    assert!(!oom.is_transient());
    assert!(redis("LOADING").is_transient());
    let wrongpass = redis("WRONGPASS");
    assert_eq!(wrongpass.kind(), ErrorKind::PermissionDenied);
    assert!(
        !wrongpass.needs_login(),
        "a Redis password is not a Globus login"
    );
    let api = Error::from(GlobusApiError::new(
        503,
        GlobusCode::ServiceUnavailable,
        "down",
        "r1",
        ("GET", "/task"),
    ));
    assert_eq!(api.kind(), ErrorKind::Service);
    assert!(api.is_transient());
    assert_eq!(
        api.to_string(),
        "Globus answered 503 ServiceUnavailable to GET /task: down (request id r1; not retried)"
    );
    assert_eq!(
        api.downcast_ref::<GlobusApiError>().unwrap().code,
        GlobusCode::ServiceUnavailable
    );
    let route = Error::from(NoRoute {
        size: 3,
        tags: vec![],
        refusals: vec![("a".into(), "too big".into())],
    });
    assert_eq!(route.kind(), ErrorKind::InvalidInput);
    assert!(route.is::<NoRoute>());
    assert!(!route.is::<ServerError>());
}

#[test]
fn a_result_stays_two_words_wide() {
    assert_eq!(
        std::mem::size_of::<Error>(),
        2 * std::mem::size_of::<usize>()
    );
    assert!(std::mem::size_of::<Result<()>>() <= 2 * std::mem::size_of::<usize>());
}

//! The examples, as a user runs them.

use std::process::Command;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The examples end with an error message and exit code 1, never a panic (`cargo test`
/// builds them beside the test binaries).
#[test]
fn examples_end_with_a_message_not_a_panic() {
    let examples = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("examples");
    for (example, args) in [
        ("bench_store", &["--sizes", "x"][..]),
        ("bench_transfer", &["--items"][..]),
        ("bench_globus", &["--objects", "many"][..]),
    ] {
        let out = Command::new(examples.join(example))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{example}: {e}"));
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{example}: {stderr}");
        assert!(stderr.starts_with("error: "), "{example}: {stderr}");
        assert!(!stderr.contains("panicked"), "{example}: {stderr}");
    }
}

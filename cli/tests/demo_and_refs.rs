//! The demo and the reference commands, run as a user runs them.

use std::process::Command;

use ps_globus::Store;

use crate::support::sites::{pair, shared};
use crate::support::{succeeded, unique_name};

#[test]
fn the_demo_runs_end_to_end_and_reports_what_it_did() {
    let stdout = succeeded(
        Command::new(env!("CARGO_BIN_EXE_ps-globus"))
            .args([
                "demo",
                "--objects",
                "20",
                "--max-size",
                "65536",
                "--task-latency-ms",
                "100",
            ])
            .env_remove("PS_GLOBUS_SITE"),
    );
    assert!(stdout.starts_with("20 objects"), "{stdout}");
    let count = |label: &str| -> u64 {
        stdout
            .split(label)
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("no {label}in {stdout}"))
    };
    // Every object is under the HTTPS lane's 4 MiB: one PUT each, no task.
    assert_eq!(count("Globus tasks: "), 0, "{stdout}");
    assert_eq!(count("HTTPS PUTs: "), 20, "{stdout}");
    // The tenth is 5-10 MB, above it: by Transfer.
    let mixed = succeeded(
        Command::new(env!("CARGO_BIN_EXE_ps-globus"))
            .args(["demo", "--objects", "10", "--max-size", "10000000"])
            .args(["--task-latency-ms", "100"])
            .env_remove("PS_GLOBUS_SITE"),
    );
    assert!(mixed.contains("Globus tasks: 1 "), "{mixed}");
    assert!(mixed.contains("HTTPS PUTs: 9 "), "{mixed}");
}

/// Regression: the exit hook, running after `main` returned, used the exiting thread's
/// tokio context, which was already gone, and panicked (quietly caught, but loud on
/// stderr, and nothing was flushed). A process that ends normally prints no panic.
#[test]
fn a_process_that_returns_from_main_exits_without_a_panic() {
    let out = Command::new(env!("CARGO_BIN_EXE_ps-globus"))
        .args([
            "demo",
            "--objects",
            "3",
            "--max-size",
            "4096",
            "--task-latency-ms",
            "50",
        ])
        .env_remove("PS_GLOBUS_SITE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The reference commands, and `status`, `task list` and `doctor`, work the same on
/// either state database engine.
#[test]
fn cli_ref_import_resolve_at_site_b_and_remove() {
    refs_through_the_cli(None);
    let postgres = ps_globus::block_on(crate::support::pg_cluster::fresh_database());
    refs_through_the_cli(Some(&postgres));
}

fn refs_through_the_cli(state_url: Option<&str>) {
    let emu = shared();
    let (a, _) = pair(&unique_name("cli-refs"));
    let store = Store::builder(unique_name("cli-ref-store"), a)
        .build()
        .unwrap();
    let data: Vec<u8> = (0..50_000u32).map(|i| (i % 199) as u8).collect();
    let key = store.put(&data).unwrap();
    let text = ps_globus::proxy::DatasetRef::new("input", store.config().clone(), key)
        .to_string_form()
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ps-globus"))
            .args(args)
            .env("PS_GLOBUS_HOME", home.path())
            .env("PS_GLOBUS_SITE", "b")
            .env("PS_GLOBUS_ACCESS_TOKEN", crate::support::emulator::TOKEN)
            .env("PS_GLOBUS_TRANSFER_URL", emu.sim.transfer_url())
            .envs(state_url.map(|url| ("PS_GLOBUS_STATE_URL", url)))
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(
        run(&["ref", "import", &text, "--name", "staged/input"]).0,
        0
    );
    let (code, list, _) = run(&["ref", "list"]);
    assert_eq!(code, 0);
    let rows: Vec<&str> = list.lines().collect();
    assert!(
        rows[0].starts_with("Name") && rows[2].starts_with("staged/input "),
        "{list}"
    );
    let (code, path, stderr) = run(&["ref", "resolve", "staged/input"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        path.starts_with(&emu.root_b().display().to_string()),
        "{path}"
    );
    assert!(std::fs::read(&path).unwrap() == data);
    let (code, exported, _) = run(&["ref", "export", "staged/input"]);
    assert_eq!(code, 0);
    assert!(exported.starts_with("psgref1."));
    assert_eq!(run(&["ref", "rm", "staged/input"]).0, 0);
    let (code, _, stderr) = run(&["ref", "show", "staged/input"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no reference named"), "{stderr}");
    let (code, _, _) = run(&["ref", "import", "garbage"]);
    assert_eq!(code, 1);
    // Site B only waited for site A's task: nothing of its own is in flight.
    let (code, status, stderr) = run(&["status"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(status.contains("in flight: 0 task(s)"), "{status}");
    let (_, report, _) = run(&["doctor"]);
    let engine = if state_url.is_some() {
        "state database: PostgreSQL at postgres://"
    } else {
        "state database: SQLite at "
    };
    assert!(report.contains(engine), "{report}");
}

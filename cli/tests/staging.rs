//! The staging command line against the emulator: transfer, stage-in/out, task,
//! status, config, site, doctor, completions; exit codes and JSON output.

use std::path::PathBuf;

use crate::command::{Setup, task_ids};
use crate::first_hour::stuck_emu;
use crate::support::emulator::{Emu, fault, write};
use ps_globus::config::Config;
use ps_globus_sim::FaultKind;
use serde_json::Value;

#[test]
fn a_batch_of_500_files_is_one_command_and_few_tasks() {
    let emu = Emu::start();
    let setup = Setup::new(&emu);
    let mut batch = String::from("# staged inputs\n\n");
    for i in 0..500 {
        write(
            emu.root_a(),
            &format!("in/f{i}"),
            format!("file {i}").as_bytes(),
        );
        batch.push_str(&format!("a:/in/f{i} b:/staged/f{i}\n"));
    }
    let batch_file = setup.home.path().join("batch.txt");
    std::fs::write(&batch_file, batch).unwrap();
    let doc = setup.json(&[
        "transfer",
        "--batch",
        batch_file.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(doc["items"], 500);
    assert_eq!(doc["succeeded"], 500);
    assert!(doc["failed"].as_array().unwrap().is_empty());
    let tasks = doc["task_ids"].as_array().unwrap().len();
    assert!((1..=2).contains(&tasks), "{tasks} tasks");
    assert_eq!(
        emu.sim.stats().route("POST /v0.10/transfer") as usize,
        tasks
    );
    for i in [0, 250, 499] {
        let got = std::fs::read(emu.root_b().join(format!("staged/f{i}"))).unwrap();
        assert_eq!(got, format!("file {i}").as_bytes());
    }
    // The local database knows them: status reports them, nothing in flight.
    let status = setup.json(&["status", "--json"]);
    assert_eq!(status["active"], 0);
    assert!(!status["DATA"].as_array().unwrap().is_empty());
}

#[test]
fn a_failing_path_exits_1_with_the_globus_reason() {
    let emu = Emu::with(|c| {
        c.faults.push(fault(
            FaultKind::PermissionDenied,
            Some("/secret/*"),
            None,
            None,
        ))
    });
    let setup = Setup::new(&emu);
    write(emu.root_a(), "secret/x", b"x");
    write(emu.root_a(), "open/y", b"y");
    let (code, _, stderr) = setup.run(&["transfer", "a:/secret/x", "b:/x"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("PERMISSION_DENIED"), "{stderr}");
    assert!(stderr.contains("/secret/x"), "{stderr}");
    let (code, _, stderr) = setup.run(&["transfer", "a:/open/y", "b:/y"]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn stage_in_and_out_use_local_paths_at_the_current_site() {
    let emu = Emu::start();
    let mut setup = Setup::new(&emu);
    setup.site = "b".into();
    write(emu.root_a(), "data/input.h5", b"input bytes");
    let local_in = emu.root_b().canonicalize().unwrap().join("work/input.h5");
    let (code, _, stderr) =
        setup.run(&["stage-in", "a:/data/input.h5", local_in.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(std::fs::read(&local_in).unwrap(), b"input bytes");

    write(emu.root_b(), "work/result.txt", b"result");
    let local_out = emu.root_b().canonicalize().unwrap().join("work/result.txt");
    let (code, _, stderr) = setup.run(&["stage-out", local_out.to_str().unwrap(), "a:/results/"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        std::fs::read(emu.root_a().join("results/result.txt")).unwrap(),
        b"result"
    );

    // Directories, recursively.
    write(emu.root_a(), "tree/x/1", b"1");
    write(emu.root_a(), "tree/y/2", b"2");
    let dest = emu.root_b().canonicalize().unwrap().join("tree-copy");
    let (code, _, stderr) =
        setup.run(&["stage-in", "--recursive", "a:/tree", dest.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(std::fs::read(dest.join("y/2")).unwrap(), b"2");

    // The wrong side, a path outside the site, an unknown site: clear errors, caught
    // before anything is sent: exit 2 (usage).
    for (args, says) in [
        (vec!["stage-out", "a:/data/input.h5", "b:/z"], "stage-out"),
        (vec!["transfer", "/etc/passwd", "a:/z"], "not under site b"),
        (vec!["transfer", "mars:/x", "a:/z"], "mars"),
        (vec!["transfer", "a:/../etc", "b:/z"], ".."),
    ] {
        let (code, _, stderr) = setup.run(&args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("invalid address configuration"),
            "{stderr}"
        );
    }
    let (code, _, _) = setup.run(&["transfer"]);
    assert_eq!(code, 2, "missing arguments are a usage error");
}

#[test]
fn dry_run_submits_nothing() {
    let emu = Emu::start();
    let setup = Setup::new(&emu);
    write(emu.root_a(), "in/x", b"x");
    let doc = setup.json(&["transfer", "--dry-run", "--json", "a:/in/x", "b:/out/x"]);
    assert_eq!(doc["dry_run"], true);
    assert_eq!(doc["items"][0]["source"]["path"], "/in/x");
    assert_eq!(doc["items"][0]["destination"]["collection"], emu.b.as_str());
    assert_eq!(emu.sim.stats().route("POST /v0.10/transfer"), 0);
}

#[test]
fn task_commands_follow_wait_time_out_and_cancel() {
    let emu = Emu::with(|c| c.task_latency_ms = 600_000);
    let setup = Setup::new(&emu);
    write(emu.root_a(), "slow/x", b"x");
    let (code, stdout, stderr) = setup.run(&[
        "transfer",
        "--no-wait",
        "--label",
        "nightly-run",
        "a:/slow/x",
        "b:/x",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let task = task_ids(&stdout).remove(0);
    assert_eq!(task.len(), 36, "{stdout}");

    let shown = setup.json(&["task", "show", &task, "--json"]);
    assert_eq!(shown["task_id"], task.as_str());
    assert_eq!(shown["status"], "ACTIVE");
    let listed = setup.json(&["task", "list", "--json"]);
    assert!(
        listed["DATA"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["task_id"] == task.as_str())
    );

    let (code, _, stderr) = setup.run(&[
        "task",
        "wait",
        &task,
        "--timeout",
        "0",
        "--timeout-exit-code",
        "50",
    ]);
    assert_eq!(code, 50, "{stderr}");
    assert!(stderr.contains("yet to complete"), "{stderr}");

    let cancelled = setup.json(&["task", "cancel", "--label", "nightly-run", "--json"]);
    assert_eq!(cancelled["DATA"][0]["task_id"], task.as_str());
    let (code, _, stderr) = setup.run(&["task", "wait", &task, "--polling-interval", "0.1"]);
    assert_eq!(code, 1, "a canceled task is a failure: {stderr}");
    // globus-cli's name, and the earlier one as an alias: the same events.
    let events = setup.json(&["task", "event-list", &task, "--json"]);
    assert!(!events["DATA"].as_array().unwrap().is_empty());
    assert_eq!(setup.json(&["task", "events", &task, "--json"]), events);
    let (code, _, _) = setup.run(&["task", "show", "00000000-0000-0000-0000-000000000000"]);
    assert_eq!(code, 1);
}

#[test]
fn several_tasks_are_awaited_together() {
    let emu = Emu::start();
    let setup = Setup::new(&emu);
    let mut ids = Vec::new();
    for name in ["p", "q", "r"] {
        write(emu.root_a(), &format!("{name}/f"), name.as_bytes());
        // Different destinations' options make separate tasks.
        let level = match name {
            "p" => "exists",
            "q" => "size",
            _ => "mtime",
        };
        let (code, stdout, stderr) = setup.run(&[
            "transfer",
            "--no-wait",
            "--sync-level",
            level,
            &format!("a:/{name}/f"),
            &format!("b:/{name}/f"),
        ]);
        assert_eq!(code, 0, "{stderr}");
        ids.extend(task_ids(&stdout));
    }
    let mut args = vec!["task", "wait", "--json", "--polling-interval", "0.1"];
    args.extend(ids.iter().map(String::as_str));
    let done = setup.json(&args);
    assert_eq!(done["DATA"].as_array().unwrap().len(), 3);
    assert!(
        done["DATA"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["status"] == "SUCCEEDED")
    );
}

#[test]
fn status_watch_in_a_terminal_shows_aggregate_progress() {
    let emu = Emu::with(|c| c.task_latency_ms = 1500);
    let setup = Setup::new(&emu);
    write(emu.root_a(), "w/x", &vec![7u8; 4096]);
    let (code, _, stderr) = setup.run(&["transfer", "--no-wait", "a:/w/x", "b:/w/x"]);
    assert_eq!(code, 0, "{stderr}");
    let (code, text) = setup.in_terminal("status --watch");
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("all tasks ["), "an aggregate bar: {text}");
    assert!(text.contains("1 task(s)"), "{text}");
    assert!(!text.contains("0/0"), "never a bar at 0/0: {text}");
    assert!(
        text.contains("SUCCEEDED"),
        "the finished task is shown so: {text}"
    );
    assert!(text.contains("ETA"), "{text}");
    assert!(
        text.contains("in flight: 0 task(s)"),
        "it ends when all are done: {text}"
    );
}

#[test]
fn config_init_site_add_doctor_and_completions() {
    let emu = Emu::start();
    let setup = Setup::new(&emu);
    let config_path = setup.home.path().join("config.toml");
    std::fs::remove_file(&config_path).unwrap();
    let (code, stdout, _) = setup.run(&["config", "init"]);
    assert_eq!(code, 0);
    assert_eq!(PathBuf::from(stdout.trim()), config_path);
    assert_eq!(setup.run(&["config", "init"]).0, 1, "no silent overwrite");

    let root_a = emu.root_a().to_str().unwrap().to_owned();
    let (code, _, stderr) = setup.run(&[
        "site",
        "add",
        "a",
        &emu.a,
        "--collection-path",
        "/",
        "--local-path",
        &root_a,
        "--host-regex",
        "^never$",
    ]);
    assert_eq!(code, 0, "{stderr}");
    // The lookup says whether the collection serves HTTPS (the lane for small objects).
    assert!(stderr.contains("(HTTPS at http://127.0.0.1:"), "{stderr}");
    let root_b = emu.root_b().to_str().unwrap().to_owned();
    assert_eq!(
        setup
            .run(&[
                "site",
                "add",
                "b",
                &emu.b,
                "--collection-path",
                "/",
                "--local-path",
                &root_b,
                "--https-max-size",
                "0",
            ])
            .0,
        0
    );
    let (code, _, stderr) = setup.run(&[
        "site",
        "add",
        "c",
        &emu.b,
        "--collection-path",
        "/",
        "--local-path",
        "/no/such/dir",
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("not a directory"), "{stderr}");
    let config = Config::load_from(&config_path).unwrap();
    assert_eq!(config.sites.len(), 2);
    assert_eq!(config.sites["a"].host_regex.as_deref(), Some("^never$"));
    assert_eq!(config.sites["a"].https_max_size, None);
    assert_eq!(config.sites["b"].https_max_size, Some(0));

    let (code, stdout, _) = setup.run(&["doctor"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("ok    current site: a"), "{stdout}");
    let state = setup.home.path().join("state.db");
    assert!(
        stdout.contains(&format!(
            "ok    state database: SQLite at {} (wal journal, schema version 9)",
            state.display()
        )),
        "{stdout}"
    );
    assert!(stdout.contains("ok    site b"), "{stdout}");

    // A broken site: doctor says what is wrong and how to fix it.
    let mut broken = config.clone();
    broken.sites.get_mut("b").unwrap().collection_path = "/missing-dir".into();
    broken.save_to(&config_path).unwrap();
    let (code, stdout, _) = setup.run(&["doctor"]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("FAIL  site b"), "{stdout}");
    assert!(stdout.contains("fix:"), "{stdout}");

    let doctor = serde_json::from_str::<Value>(&setup.run(&["doctor", "--json"]).1).unwrap();
    assert_eq!(doctor["problems"], 1);

    // A state directory that cannot hold a database: named, with its fix.
    let not_a_dir = setup.home.path().join("not-a-dir");
    std::fs::write(&not_a_dir, b"").unwrap();
    let env = [("PS_GLOBUS_HOME", not_a_dir.to_str().unwrap())];
    let (code, stdout, _) = setup.run_env(&["doctor"], &env);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("FAIL  state database:"), "{stdout}");
    assert!(stdout.contains("fix: make PS_GLOBUS_HOME"), "{stdout}");
    let sites = setup.json(&["site", "list", "--json"]);
    assert_eq!(sites["b"]["collection_path"], "/missing-dir");
    let (code, stdout, _) = setup.run(&["completions", "bash"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("ps-globus") && stdout.contains("stage-in"));
}

/// Regression: with eight `transfer` processes sharing one state directory, one of them
/// sometimes never returned although its item SUCCEEDED (its outcome was recorded by a
/// poller in another process that then exited). Every process must return, every time.
#[test]
fn eight_transfer_processes_sharing_a_state_directory_all_return() {
    let emu = Emu::start();
    let setup = Setup::new(&emu);
    for i in 0..8 {
        write(
            emu.root_a(),
            &format!("in/{i}"),
            format!("file {i}").as_bytes(),
        );
    }
    for round in 0..3 {
        let children: Vec<_> = (0..8)
            .map(|i| {
                let (src, dst) = (format!("a:/in/{i}"), format!("b:/out/{round}/{i}"));
                // A hang ends at the timeout with exit code 3, not in a stuck test.
                let args = [
                    "transfer",
                    &src,
                    &dst,
                    "--timeout",
                    "120",
                    "--timeout-exit-code",
                    "3",
                ];
                setup
                    .command(&args)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for (i, child) in children.into_iter().enumerate() {
            let out = child.wait_with_output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "round {round}, process {i}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let arrived = std::fs::read(emu.root_b().join(format!("out/{round}/{i}"))).unwrap();
            assert_eq!(arrived, format!("file {i}").as_bytes());
        }
    }
}

/// The hidden scenario of SPEC §3.11's identical paths: a stage-in of the same paths
/// while the first one's task is still running. Globus refuses the second (409
/// `Conflict`); it waits for the first to end, then goes: both commands succeed, one
/// task each. (The second asks for another sync level: the very same copy would follow
/// the first's item instead, `first_hour.rs`.)
#[test]
fn a_second_stage_in_of_paths_in_flight_waits_and_both_succeed() {
    let emu = Emu::with(|c| c.task_latency_ms = 1_500);
    let mut setup = Setup::new(&emu);
    setup.site = "b".into();
    write(emu.root_a(), "data/input.h5", b"input bytes");
    let local = emu.root_b().canonicalize().unwrap().join("work/input.h5");
    let local = local.to_str().unwrap();
    // The first returns once its task is at Globus; the second comes while it runs.
    let (code, stdout, stderr) = setup.run(&["stage-in", "a:/data/input.h5", local, "--no-wait"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(emu.sim.stats().tasks(), 1, "{stdout}");
    let (code, _, stderr) = setup.run(&[
        "stage-in",
        "--sync-level",
        "checksum",
        "a:/data/input.h5",
        local,
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("Already queued"), "{stderr}");
    assert_eq!(emu.sim.stats().tasks(), 2, "one task each");
    assert!(emu.sim.stats().by_status.get(&409).copied().unwrap_or(0) >= 1);
    assert_eq!(std::fs::read(local).unwrap(), b"input bytes");
    let finished = &emu.sim.stats().tasks_finished["TRANSFER"];
    assert_eq!(finished.get("SUCCEEDED"), Some(&2), "{finished:?}");
}

/// A bad deadline or a malformed task id is a usage error (exit 2), caught before
/// anything is sent, as globus-cli does.
#[test]
fn usage_errors_exit_2_before_anything_is_sent() {
    let emu = Emu::start();
    let setup = Setup::new(&emu);
    write(emu.root_a(), "in/f", b"x");
    for args in [
        vec!["transfer", "a:/in/f", "b:/out/f", "--deadline", "soon"],
        vec!["task", "show", "not-a-task"],
        vec!["task", "wait", "1234"],
        vec!["task", "cancel", "nope"],
        vec!["task", "event-list", "x"],
        vec!["task", "list", "--jmespath", "DATA[?"],
    ] {
        let (code, _, stderr) = setup.run(&args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(
            stderr.contains("is not a")
                || stderr.contains("is neither")
                || stderr.contains("not a JMESPath"),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(emu.sim.stats().api_requests, 0, "nothing was sent");
    // A deadline Globus reads goes through.
    let (code, _, stderr) = setup.run(&[
        "transfer",
        "a:/in/f",
        "b:/out/f",
        "--deadline",
        "2099-01-01 00:00:00",
    ]);
    assert_eq!(code, 0, "{stderr}");
}

/// Regression: a transfer of a file onto itself truncated it and reported success, and a
/// recursive transfer into its own subtree nested until the path was too long. Both are
/// refused before anything is submitted, and the file is intact.
#[test]
fn a_transfer_onto_itself_or_into_its_own_subtree_is_refused() {
    let emu = Emu::start();
    let setup = Setup::new(&emu);
    write(emu.root_a(), "data/x", b"precious");
    for args in [
        vec!["transfer", "a:/data/x", "a:/data/x"],
        vec!["transfer", "a:/data/x", "a://data/./x"],
        vec!["transfer", "a:/data/x", "a:/data/"],
        vec!["transfer", "--recursive", "a:/data", "a:/data/copy"],
        vec!["transfer", "--dry-run", "a:/data/x", "a:/data/x"],
    ] {
        let (code, _, stderr) = setup.run(&args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(
            stderr.contains("onto itself") || stderr.contains("nest into itself"),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(
        std::fs::read(emu.root_a().join("data/x")).unwrap(),
        b"precious"
    );
    assert_eq!(emu.sim.stats().tasks(), 0, "nothing was submitted");
}

/// Regression: two batch lines with one destination both reported success while the
/// file held only one of the sources. Such a batch is refused, naming both lines.
#[test]
fn a_batch_with_two_lines_to_one_destination_is_refused() {
    let emu = Emu::start();
    let setup = Setup::new(&emu);
    write(emu.root_a(), "in/1", b"one");
    write(emu.root_a(), "in/2", b"two");
    let batch = setup.home.path().join("batch.txt");
    std::fs::write(&batch, "a:/in/1 b:/out/same\na:/in/2 b:/out//same\n").unwrap();
    let (code, _, stderr) = setup.run(&["transfer", "--batch", batch.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("items 1 and 2 have the same destination"),
        "{stderr}"
    );
    assert_eq!(emu.sim.stats().tasks(), 0, "nothing was submitted");
    assert!(!emu.root_b().join("out/same").exists());
}

/// Regression: a task Globus paused (INACTIVE: credentials or a consent expired) printed
/// `FAILED … PENDING` with no description and exited 1. It is reported as paused, with
/// the login hint, and exits 4 as globus-cli does for a login problem.
#[test]
fn a_paused_task_exits_4_with_the_login_hint() {
    let emu =
        Emu::with(|c| c.faults = vec![fault(FaultKind::Inactive, Some("/expired"), None, None)]);
    let setup = Setup::new(&emu);
    write(emu.root_a(), "expired", b"needs a fresh consent");
    let (code, _, stderr) = setup.run(&["transfer", "a:/expired", "b:/expired"]);
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("PAUSED /expired -> /expired"), "{stderr}");
    assert!(stderr.contains("hint: run `ps-globus login`"), "{stderr}");
    assert!(!stderr.contains("FAILED"), "{stderr}");
}

/// Regressions: the reason the current site is unknown was dropped (`PS_GLOBUS_SITE=mars`),
/// a NUL in an address was reported as "may not contain `..`", `--batch /missing` did not
/// name the file, and `doctor` said "ok config" for a missing file.
#[test]
fn address_and_setup_errors_say_what_is_wrong() {
    let emu = Emu::start();
    let setup = Setup::new(&emu);
    let out = setup
        .command(&["transfer", "/tmp/x", "b:/x"])
        .env("PS_GLOBUS_SITE", "mars")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("PS_GLOBUS_SITE=mars is not a configured site"),
        "{stderr}"
    );

    // (A NUL cannot travel in an argument; a batch file can hold one.)
    let nul = setup.home.path().join("nul-batch.txt");
    std::fs::write(&nul, "a:/x\0y b:/x\n").unwrap();
    let (code, _, stderr) = setup.run(&["transfer", "--batch", nul.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("NUL") && !stderr.contains("`..`"),
        "{stderr}"
    );

    // A PS_GLOBUS_SITE no site has is refused, also where no local path needs it.
    let out = setup
        .command(&["transfer", "a:/x", "b:/x"])
        .env("PS_GLOBUS_SITE", "mars")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("PS_GLOBUS_SITE=mars"), "{stderr}");

    // A collection id that is not one says what one looks like.
    let (code, _, stderr) = setup.run(&[
        "site",
        "add",
        "x",
        "not-a-uuid",
        "--collection-path",
        "/",
        "--local-path",
        "/tmp",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("\"not-a-uuid\" is not a collection id"),
        "{stderr}"
    );
    assert!(!stderr.contains("invalid character"), "{stderr}");

    let missing = setup.home.path().join("no-such-batch.txt");
    let (code, _, stderr) = setup.run(&["transfer", "--batch", missing.to_str().unwrap()]);
    // Caught before anything is sent: a usage error (README: exit codes).
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");

    std::fs::remove_file(setup.home.path().join("config.toml")).unwrap();
    let (code, stdout, _) = setup.run(&["doctor"]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("FAIL  config") && stdout.contains("does not exist"),
        "{stdout}"
    );
    assert!(!stdout.contains("ok    config"), "{stdout}");
}

/// Regression: `ps-globus doctor | head -1` panicked on the broken pipe. (The
/// completion script is longer than a pipe's buffer, so the writer surely meets the
/// closed pipe.)
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    let emu = Emu::start();
    let setup = Setup::new(&emu);
    let mut child = setup
        .command(&["completions", "bash"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap(); // the reader, and so the pipe, is dropped here
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!first.is_empty());
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        out.status.signal() == Some(13) || out.status.success(),
        "ended by SIGPIPE, as Unix tools are: {:?}",
        out.status
    );
}

/// Regression: a transfer retried after its command failed copied the file twice (the
/// failed command's item was still queued, and the retry queued another). The retry
/// follows the earlier item, also when it runs as another identity (a refused token
/// replaced by a good one), which then takes the never-submitted batch over.
#[test]
fn a_retried_transfer_follows_the_item_its_failed_run_left_queued_instead_of_copying_twice() {
    let emu = Emu::start();
    let setup = Setup::new(&emu);
    write(emu.root_a(), "in/x", b"copied once");
    let (code, _, stderr) = setup.run_env(
        &["transfer", "a:/in/x", "b:/out/x"],
        &[("PS_GLOBUS_ACCESS_TOKEN", "expired-or-wrong")],
    );
    assert_eq!(code, 4, "{stderr}");
    assert!(
        stderr.contains("Running this command again submits them once"),
        "{stderr}"
    );
    let (code, stdout, stderr) = setup.run(&["transfer", "a:/in/x", "b:/out/x"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stderr.contains("Already queued by an earlier command"),
        "{stderr}"
    );
    assert_eq!(task_ids(&stdout).len(), 1, "{stdout}");
    assert_eq!(emu.sim.stats().tasks(), 1);
    assert_eq!(
        std::fs::read(emu.root_b().join("out/x")).unwrap(),
        b"copied once"
    );
    // Nothing of it is left queued.
    let (code, stdout, _) = setup.run(&["status", "-F", "json"]);
    assert_eq!(code, 0);
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status["unsubmitted"], serde_json::json!([]), "{stdout}");
}

#[test]
fn a_transfer_retried_after_its_timeout_as_the_same_identity_is_posted_once() {
    let emu = stuck_emu();
    let setup = Setup::new(&emu);
    write(emu.root_a(), "in/stuck", b"1");
    write(emu.root_a(), "in/other", b"2");
    let (code, stdout, stderr) = setup.run(&["transfer", "--no-wait", "a:/in/stuck", "b:/out/x"]);
    assert_eq!(code, 0, "{stderr}");
    let stuck = task_ids(&stdout)[0].clone();
    // Held by Globus (identical paths in flight) until it times out: left queued.
    let (code, _, stderr) = setup.run(&["transfer", "--timeout", "2", "a:/in/other", "b:/out/x"]);
    assert_ne!(code, 0, "{stderr}");
    let (code, _, stderr) = setup.run(&["task", "cancel", &stuck]);
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, stderr) = setup.run(&["transfer", "a:/in/other", "b:/out/x"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stderr.contains("Already queued by an earlier command"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(emu.root_b().join("out/x")).unwrap(), b"2");
    // The stuck task, and one task for the retried copy.
    assert_eq!(emu.sim.stats().tasks(), 2);
}

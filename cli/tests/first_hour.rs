//! The first hour of a globus-cli user (issue 14), against the emulator with the real
//! binary: commands never hang and end with the right exit code, never-submitted work
//! is visible, failures are told the same everywhere, globus-cli's output formats.

use crate::command::{Setup, finished, task_ids};
use crate::support::emulator::{Emu, fault, write};
use ps_globus_sim::FaultKind;

/// An emulator where a transfer of `/in/stuck` never ends: its destination keeps
/// refusing connections, which Globus retries until the deadline.
pub(crate) fn stuck_emu() -> Emu {
    Emu::with(|c| {
        c.faults.push(fault(
            FaultKind::ConnectFailed,
            Some("/in/stuck"),
            None,
            None,
        ))
    })
}

#[test]
fn a_refused_login_exits_4_with_the_login_hint_and_keeps_the_items() {
    let emu = Emu::start();
    let setup = Setup::new(&emu);
    write(emu.root_a(), "in/x", b"x");
    // `--timeout` only as a net: before the fix this retried forever, and the net's exit
    // code (1) fails the assertion below.
    let (code, _, stderr) = setup.run_env(
        &["transfer", "--timeout", "120", "a:/in/x", "b:/out/x"],
        &[("PS_GLOBUS_ACCESS_TOKEN", "expired-or-wrong")],
    );
    assert_eq!(code, 4, "{stderr}");
    assert!(
        stderr.contains("Globus refused the credentials"),
        "{stderr}"
    );
    // The token came from the environment: logging in would not help, and it says so.
    assert!(
        stderr.contains("hint: Globus refuses the token in PS_GLOBUS_ACCESS_TOKEN"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Not submitted: 1 item(s) in batch psg-"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("will retry"),
        "the report replaces the retry log"
    );
    assert_eq!(emu.sim.stats().route("POST /v0.10/transfer"), 0);
}

#[test]
fn an_unreachable_service_exits_1_naming_the_url_after_bounded_retries() {
    let emu = Emu::start();
    let setup = Setup::new(&emu);
    write(emu.root_a(), "in/x", b"x");
    // Port 9 (discard) on loopback: nothing listens, so connecting is refused at once.
    let (code, _, stderr) = setup.run_env(
        &["transfer", "--timeout", "300", "a:/in/x", "b:/out/x"],
        &[
            ("PS_GLOBUS_TRANSFER_URL", "http://127.0.0.1:9/"),
            ("PS_GLOBUS_RETRIES", "1"),
        ],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("could not reach http://127.0.0.1:9/v0.10/submission_id"),
        "{stderr}"
    );
    // Regression: "failed 1 time(s) in a row … (5 retries)" contradicted itself.
    assert!(stderr.contains("(after 1 retry)"), "{stderr}");
    assert!(!stderr.contains("time(s) in a row"), "{stderr}");
    assert!(stderr.contains("Not submitted: 1 item(s)"), "{stderr}");
}

#[test]
fn the_timeout_covers_submission_as_well_as_waiting() {
    // The first task never ends (its destination keeps refusing connections); a second
    // transfer to the same destination is held by Globus (409, identical paths) and
    // cannot be submitted before the first ends.
    let emu = stuck_emu();
    let setup = Setup::new(&emu);
    write(emu.root_a(), "in/stuck", b"1");
    write(emu.root_a(), "in/other", b"2");
    let (code, stdout, stderr) = setup.run(&["transfer", "--no-wait", "a:/in/stuck", "b:/out/x"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(task_ids(&stdout).len(), 1, "{stdout}");
    let (code, stdout, stderr) = setup.run(&[
        "transfer",
        "--timeout",
        "2",
        "--timeout-exit-code",
        "3",
        "a:/in/other",
        "b:/out/x",
    ]);
    assert_eq!(code, 3, "{stderr}");
    assert!(task_ids(&stdout).is_empty(), "never submitted: {stdout}");
    assert!(
        stderr.contains("Transfer has yet to complete after 2 seconds"),
        "{stderr}"
    );
    assert!(stderr.contains("Not submitted yet: 1 item(s)"), "{stderr}");
    assert!(emu.sim.stats().by_status.get(&409).copied().unwrap_or(0) >= 1);
}

#[test]
fn ctrl_c_prints_the_tasks_left_running_and_how_to_resume_or_cancel_them() {
    let emu = stuck_emu();
    let setup = Setup::new(&emu);
    write(emu.root_a(), "in/stuck", b"1");
    // The task id is printed once the task exists; then the command waits.
    let (child, task) = setup.spawn_until_task(&["transfer", "a:/in/stuck", "b:/out/x"], &[]);
    // Our own child, alive (its stdout is open).
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let (code, _, stderr) = finished(child.wait_with_output().unwrap());
    assert_eq!(code, 130, "{stderr}");
    assert!(
        stderr.contains("Left running at Globus: 1 task(s)"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("ps-globus task wait {task}"))
            && stderr.contains(&format!("ps-globus task cancel {task}")),
        "{stderr}"
    );
    let doc = ps_globus::block_on(emu.task(&task));
    assert_eq!(
        doc["status"], "ACTIVE",
        "Ctrl-C stops waiting, not the task"
    );
}

#[test]
fn a_file_skipped_on_an_error_is_a_failure_everywhere() {
    let emu = Emu::start();
    // At site b, a missing source at site a is only found missing by Globus.
    let mut setup = Setup::new(&emu);
    setup.site = "b".into();
    write(emu.root_a(), "in/ok", b"ok");
    let batch = setup.home.path().join("batch.txt");
    std::fs::write(&batch, "a:/in/ok b:/out/ok\na:/in/missing b:/out/missing\n").unwrap();
    // `transfer`: exit 1, the task id printed, the failure named.
    let (code, stdout, stderr) = setup.run(&["transfer", "--batch", batch.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    let task = task_ids(&stdout).remove(0);
    assert!(
        stderr.contains("FAILED /in/missing -> /out/missing: FILE_NOT_FOUND on /in/missing"),
        "{stderr}"
    );
    // Regression: the code was said twice (`FILE_NOT_FOUND FILE_NOT_FOUND on …`).
    assert!(
        !stderr.contains("FILE_NOT_FOUND FILE_NOT_FOUND"),
        "{stderr}"
    );
    // Globus calls the task SUCCEEDED (it skipped the file, as asked) ...
    let doc = setup.json(&["task", "show", &task, "-F", "json"]);
    assert_eq!(doc["status"], "SUCCEEDED");
    assert_eq!(doc["subtasks_skipped_errors"], 1);
    // ... but nothing here says so without the skip.
    let (code, stdout, stderr) = setup.run(&["task", "show", &task]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("SUCCEEDED with 1 file(s) skipped on errors: not all arrived"),
        "{stdout}"
    );
    // Regression: the longest name ran into its value (`…Errors:1`); values share one
    // column.
    assert!(
        stdout.contains("Subtasks with Skipped Errors: 1\n"),
        "{stdout}"
    );
    let column = |name: &str| {
        let line = stdout.lines().find(|l| l.starts_with(name)).unwrap();
        line.len() - line[name.len()..].trim_start().len()
    };
    assert_eq!(
        column("Task ID:"),
        column("Subtasks with Skipped Errors:"),
        "{stdout}"
    );
    assert!(
        stderr.contains("SKIPPED /in/missing -> /out/missing"),
        "{stderr}"
    );
    let (code, _, stderr) = setup.run(&["task", "wait", &task]);
    assert_eq!(code, 1, "a skipped file fails the wait: {stderr}");
    assert!(
        stderr.contains(&format!("task {task} SKIPPED /in/missing")),
        "{stderr}"
    );
    assert!(
        !stderr.contains("FILE_NOT_FOUND FILE_NOT_FOUND"),
        "{stderr}"
    );
    let status = setup.json(&["status", "-F", "json"]);
    let batch_doc = &status["DATA"][0];
    assert_eq!(batch_doc["task_id"], task.as_str());
    assert_eq!(batch_doc["outcome"], "FAILED");
    assert_eq!(batch_doc["items_failed"], 1);
    assert_eq!(batch_doc["items_succeeded"], 1);
    assert_eq!(status["items_failed"], 1);
    let (_, table, _) = setup.run(&["status"]);
    let row = table.lines().find(|l| l.starts_with(&task)).unwrap();
    assert!(
        row.contains("| FAILED ") && row.contains("1 ok, 1 failed"),
        "{table}"
    );
    // Every row's Bytes as `moved / total` (`?`: a source's size is not known here).
    assert!(row.contains("| 2 B / ? |"), "{table}");
    // Skipped as up to date (--sync-level) is not a failure.
    let (code, stdout, stderr) = setup.run(&[
        "transfer",
        "--sync-level",
        "exists",
        "a:/in/ok",
        "b:/out/ok",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let again = task_ids(&stdout).remove(0);
    assert_eq!(setup.run(&["task", "wait", &again]).0, 0);
    let doc = setup.json(&["task", "show", &again, "-F", "json"]);
    assert_eq!(doc["files_skipped"], 1, "{doc}");
}

#[test]
fn never_submitted_work_is_shown_and_can_be_canceled_or_pruned() {
    let emu = Emu::start();
    let setup = Setup::new(&emu);
    write(emu.root_a(), "in/x", b"x");
    let stopped = |to: &str| {
        let (code, _, _) = setup.run_env(
            &["transfer", "a:/in/x", to],
            &[("PS_GLOBUS_ACCESS_TOKEN", "refused")],
        );
        assert_eq!(code, 4);
    };
    stopped("b:/out/1");
    let status = setup.json(&["status", "-F", "json"]);
    let left = status["unsubmitted"].as_array().unwrap();
    assert_eq!(left.len(), 1, "{status}");
    assert_eq!(left[0]["items"], 1);
    assert_eq!(left[0]["owner_alive"], false);
    assert!(
        left[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("refused the credentials"),
        "{status}"
    );
    let label = left[0]["label"].as_str().unwrap().to_owned();
    let (_, text, _) = setup.run(&["status"]);
    assert!(
        text.contains(&format!("Not submitted: batch {label} (1 item(s), READY"))
            && text.contains("status --prune"),
        "{text}"
    );
    // `task cancel` takes the batch label.
    let (code, stdout, stderr) = setup.run(&["task", "cancel", &label]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("canceled before submission"), "{stdout}");
    assert!(
        setup.json(&["status", "-F", "json"])["unsubmitted"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // `status --prune` drops all that stopped commands left.
    stopped("b:/out/2");
    stopped("b:/out/3");
    let pruned = setup.json(&["status", "--prune", "-F", "json"]);
    assert_eq!(pruned["DATA"].as_array().unwrap().len(), 2, "{pruned}");
    assert!(
        setup.json(&["status", "-F", "json"])["unsubmitted"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        emu.sim.stats().route("POST /v0.10/transfer"),
        0,
        "nothing was ever sent"
    );
}

#[test]
fn globus_cli_formats_unix_and_jmespath_and_tables() {
    let emu = Emu::start();
    let setup = Setup::new(&emu);
    write(emu.root_a(), "in/x", b"x");
    let (code, stdout, stderr) = setup.run(&["transfer", "--label", "fmt", "a:/in/x", "b:/out/x"]);
    assert_eq!(code, 0, "{stderr}");
    let task = task_ids(&stdout).remove(0);
    // --jmespath filters the JSON document (and implies it).
    let ids = setup.json(&["task", "list", "--jmespath", "DATA[].task_id"]);
    assert_eq!(ids, serde_json::json!([task]));
    // -F unix: tab-separated lines, with the jmespath applied first.
    let (code, stdout, stderr) = setup.run(&[
        "task",
        "list",
        "-F",
        "unix",
        "--jmespath",
        "DATA[].[task_id, status]",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, format!("{task}\tSUCCEEDED\n"));
    // Tables: a header and a rule, the sites by name.
    let (_, table, _) = setup.run(&["task", "list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("Task ID ")
            && lines[0].contains("| Source ")
            && lines[0].contains("| Destination"),
        "{table}"
    );
    assert!(lines[1].starts_with("-----"), "{table}");
    assert!(
        lines[2].starts_with(&task) && lines[2].contains("| a ") && lines[2].contains("| b "),
        "{table}"
    );
    let (_, events, _) = setup.run(&["task", "event-list", &task]);
    assert!(events.starts_with("Time "), "{events}");
}

#[test]
fn batch_files_take_endpoints_and_per_line_recursive() {
    let emu = Emu::start();
    let setup = Setup::new(&emu);
    write(emu.root_a(), "runs/tree/one", b"1");
    write(emu.root_a(), "runs/tree/sub/two", b"2");
    write(emu.root_a(), "runs/my file", b"3");
    let batch = setup.home.path().join("batch.txt");
    std::fs::write(&batch, "--recursive tree copied\n'my file' single\n").unwrap();
    // globus-cli's form: endpoints (with base paths) on the command line, paths in the file.
    let (code, _, stderr) = setup.run(&[
        "transfer",
        "a:/runs",
        "b:/dst",
        "--batch",
        batch.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        std::fs::read(emu.root_b().join("dst/copied/sub/two")).unwrap(),
        b"2"
    );
    assert_eq!(
        std::fs::read(emu.root_b().join("dst/single")).unwrap(),
        b"3"
    );
    // A bad line is refused with its number before anything is sent.
    std::fs::write(&batch, "tree copied\n--delete x y\n").unwrap();
    let (code, _, stderr) = setup.run(&[
        "transfer",
        "a:/runs",
        "b:/dst",
        "--batch",
        batch.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "refused before anything is sent: {stderr}");
    assert!(
        !stderr.contains("invalid batch file configuration"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 2: unknown option --delete"),
        "{stderr}"
    );
    assert_eq!(emu.sim.stats().route("POST /v0.10/transfer"), 1);
}

#[test]
fn sites_at_other_facilities_rm_and_show_keep_the_files_comments() {
    let emu = Emu::start();
    let setup = Setup::new(&emu);
    let config = setup.home.path().join("fresh.toml");
    let run = |args: &[&str]| {
        finished(
            setup
                .command(args)
                .env("PS_GLOBUS_CONFIG", &config)
                .env_remove("PS_GLOBUS_SITE")
                .output()
                .unwrap(),
        )
    };
    assert_eq!(run(&["config", "init"]).0, 0);
    let here = emu.root_a().to_str().unwrap().to_owned();
    let (code, _, stderr) = run(&[
        "site",
        "add",
        "laptop",
        &emu.a,
        "--collection-path",
        "/",
        "--local-path",
        &here,
        "--host-regex",
        ".*",
    ]);
    assert_eq!(code, 0, "{stderr}");
    // The other facility's path does not exist here: refused, with the way out named ...
    let remote = [
        "site",
        "add",
        "hpc",
        &emu.b,
        "--collection-path",
        "/",
        "--local-path",
        "/lus/grand/projects/x",
    ];
    let (code, _, stderr) = run(&remote);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("add --remote if the site is at another facility"),
        "{stderr}"
    );
    // ... and accepted as the other facility's, kept as given.
    let (code, _, stderr) = run(&[&remote[..], &["--remote"]].concat());
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, stderr) = run(&["config", "show", "-F", "json"]);
    assert_eq!(code, 0, "{stderr}");
    let shown: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(shown["sites"]["hpc"]["local_path"], "/lus/grand/projects/x");
    assert_eq!(shown["current_site"], "laptop", "matched by its host regex");
    let (code, stdout, _) = run(&["config", "show"]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("current site:  laptop") && stdout.contains("\nhpc "),
        "{stdout}"
    );
    // rm: the site goes, the comments `config init` wrote stay.
    assert_eq!(run(&["site", "rm", "hpc"]).0, 0);
    let (code, _, stderr) = run(&["site", "rm", "hpc"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("no site \"hpc\"") && stderr.contains("laptop"),
        "{stderr}"
    );
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.starts_with("# ps-globus configuration."), "{text}");
    assert!(
        text.contains("# [sites.NAME]") && text.contains("[sites.laptop]"),
        "{text}"
    );
    assert!(!text.contains("hpc"), "{text}");
}

#[test]
fn error_messages_name_the_real_cause() {
    let emu = Emu::start();
    let setup = Setup::new(&emu);
    // No configuration file: say how to make one.
    let none = setup.home.path().join("none.toml");
    let (code, _, stderr) = setup.run_env(
        &["transfer", "a:/in/x", "b:/out/x"],
        &[("PS_GLOBUS_CONFIG", none.to_str().unwrap())],
    );
    assert_eq!(code, 2, "caught before anything is sent: {stderr}");
    assert!(stderr.contains("run `ps-globus config init`"), "{stderr}");
    // A missing source here is named before anything is sent.
    let (code, _, stderr) = setup.run(&["transfer", "a:/in/nothing", "b:/out/x"]);
    assert_eq!(code, 2, "{stderr}");
    let missing = emu.root_a().canonicalize().unwrap().join("in/nothing");
    assert!(
        stderr.contains(&format!("{} does not exist here", missing.display())),
        "{stderr}"
    );
    assert_eq!(emu.sim.stats().api_requests, 0);
    // whoami describes the token taken from the environment, without showing it.
    let (code, stdout, stderr) = setup.run(&["whoami"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("PS_GLOBUS_ACCESS_TOKEN") && stdout.contains("No stored login"),
        "{stdout}"
    );
    assert!(!stdout.contains(crate::support::emulator::TOKEN));
    // doctor: an unreachable service is named as such, with its fix.
    let (code, stdout, _) = setup.run_env(
        &["doctor"],
        &[
            ("PS_GLOBUS_TRANSFER_URL", "http://127.0.0.1:9/"),
            ("PS_GLOBUS_RETRIES", "0"),
        ],
    );
    assert_eq!(code, 1);
    assert!(
        stdout.contains("the Transfer service at http://127.0.0.1:9/ does not answer"),
        "{stdout}"
    );
}

#[test]
fn a_service_that_stops_answering_mid_wait_ends_the_wait_with_the_url() {
    let emu = stuck_emu();
    let setup = Setup::new(&emu);
    write(emu.root_a(), "in/stuck", b"1");
    let (child, _) = setup.spawn_until_task(
        &["transfer", "a:/in/stuck", "b:/out/x"],
        &[("PS_GLOBUS_RETRIES", "0")],
    );
    let url = emu.sim.transfer_url().to_owned();
    // The service goes away while the command waits on its task.
    let Emu { sim, .. } = emu;
    sim.shutdown();
    let (code, _, stderr) = finished(child.wait_with_output().unwrap());
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("polling Globus failed"), "{stderr}");
    assert!(
        stderr.contains(&format!("could not reach {url}")),
        "{stderr}"
    );
    assert!(
        stderr.contains("Left running at Globus: 1 task(s)"),
        "{stderr}"
    );
}

#[test]
fn a_waiting_transfer_in_a_terminal_shows_bytes_toward_the_total() {
    let emu = Emu::with(|c| c.task_latency_ms = 1500);
    let setup = Setup::new(&emu);
    write(emu.root_a(), "in/big", &vec![5u8; 3 << 20]);
    let (code, text) = setup.in_terminal("transfer a:/in/big b:/out/big");
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("Task ID: "), "{text}");
    assert!(
        text.contains("/3.00 MiB"),
        "bytes toward the known total: {text}"
    );
    assert!(text.contains("ETA"), "{text}");
    assert!(!text.contains("0/0"), "{text}");
    // Regression: before a byte moved, the bar promised `ETA 0s` (the task waits 1.5 s
    // before its first byte: the bar is drawn meanwhile).
    assert!(text.contains("0 B/3.00 MiB 0 B/s ETA ?"), "{text}");
    assert!(text.contains("1 of 1 item(s) succeeded"), "{text}");
}

#[test]
fn no_wait_returns_when_globus_holds_a_batch_and_says_it_is_queued() {
    let emu = stuck_emu();
    let setup = Setup::new(&emu);
    write(emu.root_a(), "in/stuck", b"1");
    write(emu.root_a(), "in/other", b"2");
    let (code, _, stderr) = setup.run(&["transfer", "--no-wait", "a:/in/stuck", "b:/out/x"]);
    assert_eq!(code, 0, "{stderr}");
    // Globus refuses the second (identical paths in flight) until the first ends: the
    // command returns anyway (`--timeout` only as a net: before, it waited for the hold).
    let (code, stdout, stderr) = setup.run(&[
        "transfer",
        "--no-wait",
        "--timeout",
        "60",
        "a:/in/other",
        "b:/out/x",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(task_ids(&stdout).is_empty(), "{stdout}");
    assert!(
        stderr.contains("Not submitted yet: 1 item(s)") && stderr.contains("asked it to wait"),
        "{stderr}"
    );
    let status = setup.json(&["status", "-F", "json"]);
    let left = &status["unsubmitted"][0];
    assert_eq!(left["state"], "SUBMITTING", "{status}");
    assert!(
        left["last_error"].as_str().unwrap().contains("409"),
        "{status}"
    );
}

/// A wait for an object on its way says so on stderr while it lasts (what, since when,
/// when it gives up, the likely cause and the command that shows more), at most once a
/// period: here a proxy fetched at b whose task takes ten minutes, with the store's own
/// 3 s limit and a report every second.
#[test]
fn a_long_wait_is_said_on_stderr_with_the_command_to_run() {
    use ps_globus::connector::GlobusConnector;
    let emu = Emu::with(|c| c.task_latency_ms = 600_000);
    let mut setup = Setup::new(&emu);
    let mut config = crate::support::sites::config_for(&emu, "long-wait");
    config.wait_timeout_s = Some(3);
    let at_a = GlobusConnector::builder(config)
        .site("a")
        .authorizer(std::sync::Arc::new(
            ps_globus::auth::StaticTokenAuthorizer::new(crate::support::emulator::TOKEN),
        ))
        .home(setup.home.path().join("a"))
        .build()
        .unwrap();
    let store = ps_globus::Store::new("long-wait", at_a).unwrap();
    let proxy = store.proxy(&b"on a slow road".to_vec()).unwrap();
    store.close().unwrap();
    let file = setup.home.path().join("proxy.json");
    std::fs::write(&file, serde_json::to_string(&proxy).unwrap()).unwrap();
    setup.site = "b".into();
    let out = setup.home.path().join("out");
    let (code, _, stderr) = setup.run_env(
        &[
            "proxy",
            "fetch",
            file.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
        &[("PS_GLOBUS_WAIT_REPORT_S", "1")],
    );
    assert_eq!(code, 1, "{stderr}");
    let said: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("still waiting for object long-wait/"))
        .collect();
    assert!(!said.is_empty(), "{stderr}");
    assert!(
        said[0].contains("to arrive at site b") && said[0].contains("`ps-globus task show "),
        "{stderr}"
    );
    assert!(
        said.len() <= 3,
        "at most one a second in a 3 s wait: {stderr}"
    );
    assert!(stderr.contains("timed out after 3s"), "{stderr}");
}

/// PostgreSQL first contact: a database that does not exist yet is named with the
/// command that creates it (no SQLite advice, no source line of ours).
#[test]
fn a_missing_postgresql_database_says_to_create_it() {
    let emu = Emu::start();
    let setup = Setup::new(&emu);
    let url = ps_globus::block_on(crate::support::pg_cluster::fresh_database());
    let (base, query) = url.split_once('?').unwrap_or((&url, ""));
    let (server, name) = base.rsplit_once('/').unwrap();
    let missing = format!("{name}_not_created");
    let missing_url = format!("{server}/{missing}?{query}");
    for args in [&["status"][..], &["doctor"][..]] {
        let (code, stdout, stderr) =
            setup.run_env(args, &[("PS_GLOBUS_STATE_URL", missing_url.as_str())]);
        let said = format!("{stdout}{stderr}");
        assert_eq!(code, 1, "{said}");
        assert!(
            said.contains(&format!("createdb {missing}")),
            "{args:?}: {said}"
        );
        assert!(!said.to_lowercase().contains("sqlite"), "{args:?}: {said}");
        assert!(!said.contains("at line"), "{args:?}: {said}");
    }
}

//! The first hour of a globus-cli user (issue 14), against the emulator with the real
//! binary: commands never hang and end with the right exit code, never-submitted work
//! is visible, failures are told the same everywhere, globus-cli's output formats.

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use ps_globus::sim::FaultKind;
use support::cli::{Setup, task_ids};
use support::emulator::{Emu, fault, write};

/// `(exit code, stdout, stderr)` of a finished child.
fn finished(out: std::process::Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_refused_login_exits_4_with_the_login_hint_and_keeps_the_items() {
    let emu = Emu::start();
    let setup = Setup::new(&emu);
    write(emu.root_a(), "in/x", b"x");
    // `--timeout` only as a net: before the fix this retried forever, and the net's exit
    // code (1) fails the assertion below.
    let out = setup
        .command(&["transfer", "--timeout", "120", "a:/in/x", "b:/out/x"])
        .env("PS_GLOBUS_ACCESS_TOKEN", "expired-or-wrong")
        .output()
        .unwrap();
    let (code, _, stderr) = finished(out);
    assert_eq!(code, 4, "{stderr}");
    assert!(
        stderr.contains("Globus refused the credentials"),
        "{stderr}"
    );
    assert!(stderr.contains("hint: run `ps-globus login`"), "{stderr}");
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
    let out = setup
        .command(&["transfer", "--timeout", "300", "a:/in/x", "b:/out/x"])
        .env("PS_GLOBUS_TRANSFER_URL", "http://127.0.0.1:9/")
        .env("PS_GLOBUS_RETRIES", "1")
        .output()
        .unwrap();
    let (code, _, stderr) = finished(out);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("could not reach http://127.0.0.1:9/v0.10/submission_id"),
        "{stderr}"
    );
    assert!(stderr.contains("(1 retries)"), "{stderr}");
    assert!(stderr.contains("Not submitted: 1 item(s)"), "{stderr}");
}

#[test]
fn the_timeout_covers_submission_as_well_as_waiting() {
    // The first task never ends (its destination keeps refusing connections); a second
    // transfer to the same destination is held by Globus (409, identical paths) and
    // cannot be submitted before the first ends.
    let emu = Emu::with(|c| {
        c.faults.push(fault(
            FaultKind::ConnectFailed,
            Some("/in/stuck"),
            None,
            None,
        ))
    });
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
    assert!(stderr.contains("Not submitted: 1 item(s)"), "{stderr}");
    assert!(emu.sim.stats().by_status.get(&409).copied().unwrap_or(0) >= 1);
}

#[test]
fn ctrl_c_prints_the_tasks_left_running_and_how_to_resume_or_cancel_them() {
    let emu = Emu::with(|c| {
        c.faults.push(fault(
            FaultKind::ConnectFailed,
            Some("/in/stuck"),
            None,
            None,
        ))
    });
    let setup = Setup::new(&emu);
    write(emu.root_a(), "in/stuck", b"1");
    let mut child = setup
        .command(&["transfer", "a:/in/stuck", "b:/out/x"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The task id is printed once the task exists; then the command waits.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let task = line
        .strip_prefix("Task ID: ")
        .unwrap_or_else(|| panic!("{line:?}"))
        .trim()
        .to_owned();
    // SAFETY: sending SIGINT to our own child, which is alive (its stdout is open).
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    let (code, _, stderr) = finished(out);
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

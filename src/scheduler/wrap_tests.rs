//! Reading `job submit` command lines and writing wrappers; running a wrapper under
//! Slurm is in `tests/job.rs`.

use super::*;

fn words(line: &str) -> Vec<OsString> {
    line.split(' ').map(OsString::from).collect()
}

const OURS: &[&str] = &["stage-in", "stage-out"];
const FLAGS: &[&str] = &["hold-until-staged"];

#[test]
fn options_up_to_the_script_are_ours_or_sbatchs_and_the_rest_the_scripts() {
    let line = SubmitLine::parse(
        &words("--stage-in a:/x:/y -J name --time=10 -N 2 --hold-until-staged --stage-out=b -p debug job.sh -J --stage-in z"),
        OURS,
        FLAGS,
    )
    .unwrap();
    assert_eq!(
        line.ours,
        [
            ("stage-in".to_owned(), Some("a:/x:/y".into())),
            ("hold-until-staged".to_owned(), None),
            ("stage-out".to_owned(), Some("b".into())),
        ]
    );
    assert_eq!(line.sbatch, words("-J name --time=10 -N 2 -p debug"));
    assert_eq!(line.script, PathBuf::from("job.sh"));
    assert_eq!(
        line.args,
        words("-J --stage-in z"),
        "after SCRIPT, all the script's"
    );
}

#[test]
fn separate_values_of_sbatch_options_are_not_taken_for_the_script() {
    let line = SubmitLine::parse(
        &words("--job-name run.sh --output out.txt -vJ j -c4 real.sh arg"),
        OURS,
        FLAGS,
    )
    .unwrap();
    assert_eq!(
        line.sbatch,
        words("--job-name run.sh --output out.txt -vJ j -c4")
    );
    assert_eq!(line.script, PathBuf::from("real.sh"));
    assert_eq!(line.args, words("arg"));
    let dashed = SubmitLine::parse(&words("-N 1 -- -odd-name.sh x"), OURS, FLAGS).unwrap();
    assert_eq!(dashed.script, PathBuf::from("-odd-name.sh"));
}

#[test]
fn options_we_decide_or_cannot_wrap_are_refused_saying_what_instead() {
    for (line, says) in [
        ("--hold job.sh", "--hold-until-staged"),
        ("-H job.sh", "--hold-until-staged"),
        ("-vH job.sh", "--hold-until-staged"),
        ("--wrap=hostname", "give a script"),
        ("--array 1-4 job.sh", "arrays"),
        ("-a 1-4 job.sh", "arrays"),
        ("--parsable job.sh", "printed"),
        ("-W job.sh", "job status"),
    ] {
        let e = SubmitLine::parse(&words(line), OURS, FLAGS).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{line}");
        assert!(e.to_string().contains(says), "{line}: {e}");
    }
    for line in ["-J name", "--stage-in", "-J", "--", ""] {
        let e = SubmitLine::parse(&words(line), OURS, FLAGS).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{line:?}");
    }
}

#[test]
fn a_wrapper_keeps_the_directives_gates_on_the_first_step_and_carries_the_script() {
    let script = b"#!/bin/bash\n# a comment\n#SBATCH -J named\n\n#SBATCH --time=5\necho hi\n#SBATCH --not-a-directive-any-more\n";
    let step = [OsString::from("ps-globus"), OsString::from("it's")];
    let wrapper = String::from_utf8(wrapper_script(script, &step).unwrap()).unwrap();
    let lines: Vec<&str> = wrapper.lines().collect();
    assert_eq!(
        lines[..3],
        ["#!/bin/sh", "#SBATCH -J named", "#SBATCH --time=5"]
    );
    assert_eq!(
        wrapper.matches("#SBATCH").count(),
        5,
        "2 copied, and the script's 3 inside it, past the wrapper's first command"
    );
    assert!(
        wrapper.contains(
            "ps_globus_exports=$('ps-globus' 'it'\\''s' 3>&1 1>&2) || exit $?\neval \"$ps_globus_exports\"\n"
        ),
        "{wrapper}"
    );
    assert!(wrapper.contains("#!/bin/bash\n# a comment\n#SBATCH -J named\n\n"));
    // Not a batch script, or not text: refused as sbatch would.
    for bad in [&b"echo hi\n"[..], b"#!/bin/sh\n\0"] {
        let e = wrapper_script(bad, &step).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }
}

/// Starts the wrapper of `script` and `first_step` in `dir`, in a process group of its
/// own (as Slurm runs a step), with `dir/tmp` as its `TMPDIR`: the shell and that `TMPDIR`.
fn start_wrapper(
    dir: &std::path::Path,
    script: &[u8],
    first_step: &[OsString],
) -> (std::process::Child, std::path::PathBuf) {
    use std::os::unix::process::CommandExt;
    let path = dir.join("wrapper.sh");
    std::fs::write(&path, wrapper_script(script, first_step).unwrap()).unwrap();
    let tmp = dir.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let shell = std::process::Command::new("sh")
        .arg(&path)
        .env("TMPDIR", &tmp)
        .process_group(0)
        .spawn()
        .unwrap();
    (shell, tmp)
}

/// Waits (bounded) until `path` exists: the step or script got that far.
fn until_exists(path: &std::path::Path) {
    let limit = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !path.exists() {
        assert!(
            std::time::Instant::now() < limit,
            "{} never came",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Sends `signal` to every process of the step, as Slurm does.
fn signal_step(shell: &std::process::Child, signal: &str) {
    let group = format!("-{}", shell.id());
    let sent = std::process::Command::new("kill")
        .args([signal, "--", &group])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// Regression (found in the job tests' /tmp, twice): a job cancelled, or requeued held,
/// while its first step waited left the carried copy of its script behind on the node.
/// A trap covers SIGTERM, but a requeue (and `scancel` after `KillWait`) ends the step
/// with SIGKILL, which no trap sees: the copy is now made only after the first step.
#[test]
fn a_wrapper_killed_during_its_first_step_leaves_no_copy_of_the_script_behind() {
    let dir = tempfile::tempdir().unwrap();
    let listing = dir.path().join("listing");
    let started = dir.path().join("started");
    let step = format!(
        "ls -A \"$TMPDIR\" > '{}'; touch '{}'; sleep 60",
        listing.display(),
        started.display()
    );
    let first_step = [
        OsString::from("sh"),
        OsString::from("-c"),
        OsString::from(step),
    ];
    let (mut shell, tmp) = start_wrapper(dir.path(), b"#!/bin/sh\necho ran\n", &first_step);
    until_exists(&started);
    assert_eq!(
        std::fs::read_to_string(&listing).unwrap(),
        "",
        "no copy before the step"
    );
    signal_step(&shell, "-KILL");
    shell.wait().unwrap();
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "nothing left behind"
    );
}

/// A wrapper stopped by SIGTERM while its script runs removes the copy (its trap).
#[test]
fn a_wrapper_ended_by_sigterm_while_its_script_runs_removes_the_copy() {
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let script = format!("#!/bin/sh\ntouch '{}'\nsleep 60\n", started.display());
    let (mut shell, tmp) = start_wrapper(dir.path(), script.as_bytes(), &[OsString::from("true")]);
    until_exists(&started);
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 1, "the copy runs");
    signal_step(&shell, "-TERM");
    let status = shell.wait().unwrap();
    assert_eq!(status.code(), Some(143), "{status:?}");
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "the copy was removed"
    );
}

/// Only what the first step writes to descriptor 3 is run by the wrapper; what it prints
/// on its standard output (a message, or text a server chose) goes to the job's output.
#[test]
fn only_the_first_steps_exports_on_descriptor_3_are_run() {
    let dir = tempfile::tempdir().unwrap();
    let injected = dir.path().join("injected");
    let seen = dir.path().join("seen");
    let step = format!(
        "echo \"touch '{}'\"; echo \"export PS_GLOBUS_REF_X='a b'\" >&3",
        injected.display()
    );
    let script = format!(
        "#!/bin/sh\nprintf '%s' \"$PS_GLOBUS_REF_X\" > '{}'\n",
        seen.display()
    );
    let first_step = [
        OsString::from("sh"),
        OsString::from("-c"),
        OsString::from(step),
    ];
    let (mut shell, tmp) = start_wrapper(dir.path(), script.as_bytes(), &first_step);
    assert!(shell.wait().unwrap().success());
    assert_eq!(std::fs::read_to_string(&seen).unwrap(), "a b");
    assert!(!injected.exists(), "standard output was run");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
}

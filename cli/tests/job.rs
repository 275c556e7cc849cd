//! `job submit` against the emulator and a real throw-away Slurm cluster
//! (`tests/support/slurm_cluster.rs`): the stage-in starts at submission, the job's
//! first step (on the node, with the token store, as on a cluster) waits for it and
//! verifies it, and only then does the batch script run; a failed stage-in fails that
//! step with Globus's reason, and the script never runs.

use std::path::Path;
use std::time::{Duration, Instant};

use ps_globus::auth::{FileTokenStore, StoredToken, TRANSFER_RS, TokenStore};
use ps_globus::job::{JobId, JobInfo, JobState, Slurm};

use crate::command::Setup;
use crate::support::emulator::{Emu, TOKEN, write};
use crate::support::slurm_cluster;

/// A setup at site `b` (the cluster), whose token store holds the emulator's token: a
/// job's steps get no token through Slurm, as on a real cluster.
pub(crate) fn cluster_setup(emu: &Emu) -> Setup {
    let mut setup = Setup::new(emu);
    setup.site = "b".into();
    let now = chrono::Utc::now().timestamp();
    FileTokenStore::new(setup.home.path().join("tokens.json"))
        .update(&mut |set| {
            set.tokens.insert(
                TRANSFER_RS.into(),
                StoredToken {
                    access_token: TOKEN.into(),
                    refresh_token: None,
                    expires_at: now + 3600,
                    scope: "urn:globus:auth:scope:transfer.api.globus.org:all".into(),
                    issued_at: now,
                },
            );
        })
        .unwrap();
    setup
}

/// `ps-globus job submit ARGS` on the cluster, logged in through the token store as its
/// jobs are: (exit code, stdout, stderr).
pub(crate) fn submit(setup: &Setup, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["job", "submit"];
    all.extend_from_slice(args);
    let out = setup
        .command(&all)
        .env_remove("PS_GLOBUS_ACCESS_TOKEN")
        .env("SLURM_CONF", slurm_cluster::conf())
        .env("PS_GLOBUS_TOKEN_STORE", "file")
        .output()
        .unwrap();
    crate::command::finished(out)
}

/// The job `stdout` names ("Submitted batch job N"), once `there` says so of it (its
/// output in `log`, shown if that does not come).
pub(crate) fn until(stdout: &str, log: &Path, there: impl Fn(&JobInfo) -> bool) -> JobInfo {
    let id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Submitted batch job "))
        .unwrap_or_else(|| panic!("no job id in {stdout:?}"));
    let job = JobId::parse_parsable(id).unwrap();
    let slurm = Slurm::from_path().with_conf(slurm_cluster::conf());
    let limit = Instant::now() + Duration::from_secs(120);
    loop {
        // Slurm has no way to tell but being asked.
        let info = ps_globus::block_on(slurm.show(&job)).unwrap().unwrap();
        if there(&info) {
            return info;
        }
        assert!(
            Instant::now() < limit,
            "job {job} still {:?}: {}",
            info.state,
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A batch script in `dir` that copies `from` to `dir/seen`.
pub(crate) fn script(dir: &Path, from: &Path) -> String {
    let path = dir.join("job.sh");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n#SBATCH --job-name=staged\ncat '{}' > '{}'\n",
            from.display(),
            dir.join("seen").display()
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

/// What a staged job left: its end, its output, and what its script read (if it ran).
struct Ran {
    info: JobInfo,
    said: String,
    seen: Option<Vec<u8>>,
}

/// Submits a job at site `b` whose stage-in brings `a:/data/NAME` to `b`'s
/// `scratch/NAME`, and whose script reads that, with our `options`; waits for its end.
fn run_staged(emu: &Emu, name: &str, options: &[&str]) -> Ran {
    run_staged_until(emu, name, options, |info| info.state.is_final())
}

/// [`run_staged`], waiting until `there` says so of the job.
fn run_staged_until(
    emu: &Emu,
    name: &str,
    options: &[&str],
    there: impl Fn(&JobInfo) -> bool,
) -> Ran {
    let setup = cluster_setup(emu);
    let arrives = emu
        .root_b()
        .canonicalize()
        .unwrap()
        .join("scratch")
        .join(name);
    let dir = tempfile::tempdir().unwrap();
    let job_script = script(dir.path(), &arrives);
    let log = dir.path().join("slurm.out");
    let stage_in = format!("a:/data/{name}:{}", arrives.display());
    let output = ["-o", log.to_str().unwrap()];
    let mut args = vec!["--stage-in", &stage_in];
    args.extend_from_slice(options);
    args.extend([output[0], output[1], &job_script]);
    let (code, stdout, stderr) = submit(&setup, &args);
    assert_eq!(code, 0, "{stderr}");
    let info = until(&stdout, &log, there);
    Ran {
        info,
        said: std::fs::read_to_string(&log).unwrap_or_default(),
        seen: std::fs::read(dir.path().join("seen")).ok(),
    }
}

#[test]
fn a_job_runs_its_script_once_its_stage_in_has_arrived_verified() {
    // The task takes longer than Slurm takes to start the job: the first step waits.
    let emu = Emu::with(|c| c.task_latency_ms = 3000);
    write(emu.root_a(), "data/input.h5", b"input bytes");
    let ran = run_staged(&emu, "input.h5", &[]);
    assert_eq!(ran.info.state, JobState::Completed, "{}", ran.said);
    assert_eq!(ran.seen.as_deref(), Some(&b"input bytes"[..]));
    assert!(
        ran.said.contains("arrived and verified (1 file(s))"),
        "{}",
        ran.said
    );
}

#[test]
fn a_failed_stage_in_fails_the_first_step_with_the_globus_reason_and_the_script_never_runs() {
    let emu = Emu::start();
    let ran = run_staged(&emu, "missing.h5", &[]);
    assert_eq!(
        (ran.info.state, ran.info.exit_code.as_str()),
        (JobState::Failed, "1:0"),
        "{}",
        ran.said
    );
    assert_eq!(ran.seen, None, "the batch script never ran");
    assert!(
        ran.said.contains("missing.h5"),
        "the reason names the file: {}",
        ran.said
    );
}

#[test]
fn a_failed_stage_in_cancels_requeues_held_or_runs_the_job_as_asked() {
    let emu = Emu::start();
    let policy = |word| ["--on-stage-in-failure", word];
    let cancelled = run_staged(&emu, "gone-1.h5", &policy("cancel"));
    assert_eq!(
        cancelled.info.state,
        JobState::Cancelled,
        "{}",
        cancelled.said
    );
    assert_eq!(cancelled.seen, None, "the batch script never ran");

    let held = run_staged_until(&emu, "gone-2.h5", &policy("hold"), |info| {
        info.state == JobState::Pending && info.held
    });
    assert!(
        held.said.contains("goes back to the queue, held"),
        "{}",
        held.said
    );
    assert_eq!(held.seen, None, "the batch script never ran");

    let ran = run_staged(&emu, "gone-3.h5", &policy("run"));
    assert!(
        ran.said.contains("running the batch script anyway"),
        "{}",
        ran.said
    );
    assert!(ran.seen.is_some(), "the batch script ran: {}", ran.said);
}

#[test]
fn usage_errors_of_job_submit_exit_2_and_submit_nothing() {
    let emu = Emu::start();
    let setup = cluster_setup(&emu);
    let dir = tempfile::tempdir().unwrap();
    let job_script = script(dir.path(), Path::new("/dev/null"));
    let not_a_batch_script = dir.path().join("no-shebang.sh");
    std::fs::write(&not_a_batch_script, "echo hi\n").unwrap();
    let not_a_batch_script = not_a_batch_script.to_str().unwrap().to_owned();
    let scratch = emu.root_b().canonicalize().unwrap().join("scratch/x");
    let valid_stage_in = format!("a:/data/x:{}", scratch.display());
    for (args, says) in [
        (vec!["--hold", job_script.as_str()], "--hold-until-staged"),
        (
            vec!["--stage-in", "nocolon", job_script.as_str()],
            "SRC:DST",
        ),
        (
            vec!["--stage-in", "a:/x:/etc/passwd", job_script.as_str()],
            "not under site b",
        ),
        (vec!["-J", "name"], "no SCRIPT"),
        (
            vec!["--on-stage-in-failure", "retry", job_script.as_str()],
            "fail, cancel, hold, run",
        ),
        (vec!["/nonexistent/job.sh"], "cannot read the batch script"),
        (
            vec!["--stage-out", "result.dat", job_script.as_str()],
            "--stage-out \"result.dat\": give SRC:DST",
        ),
        (
            vec!["--batch", "/nonexistent/lines", job_script.as_str()],
            "cannot read it",
        ),
        (
            vec!["--stage-in", &valid_stage_in, not_a_batch_script.as_str()],
            "#!",
        ),
    ] {
        let (code, stdout, stderr) = submit(&setup, &args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stdout.contains("Submitted"), "{args:?}");
    }
    // A path that is not UTF-8 is refused, not read lossily as another path.
    let not_utf8 = {
        use std::os::unix::ffi::OsStrExt;
        let mut bytes = format!("a:/data/x:{}/", scratch.parent().unwrap().display()).into_bytes();
        bytes.push(0xff);
        std::ffi::OsStr::from_bytes(&bytes).to_owned()
    };
    let out = setup
        .command(&["job", "submit", "--stage-in"])
        .arg(&not_utf8)
        .arg(&job_script)
        .env_remove("PS_GLOBUS_ACCESS_TOKEN")
        .env("SLURM_CONF", slurm_cluster::conf())
        .env("PS_GLOBUS_TOKEN_STORE", "file")
        .output()
        .unwrap();
    let (code, _, stderr) = crate::command::finished(out);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("not UTF-8"), "{stderr}");
    assert_eq!(
        emu.sim.stats().route("POST /v0.10/transfer"),
        0,
        "nothing was staged for a job that was refused"
    );
}

/// `--batch FILE`: stage-in lines as `globus transfer --batch` reads them, each waited
/// for as a `--stage-in` is.
#[test]
fn a_batch_file_of_stage_in_lines_is_waited_for_like_stage_in_options() {
    let emu = Emu::start();
    write(emu.root_a(), "data/one.h5", b"one ");
    write(emu.root_a(), "data/two.h5", b"two");
    let setup = cluster_setup(&emu);
    let scratch = emu.root_b().canonicalize().unwrap().join("scratch");
    let dir = tempfile::tempdir().unwrap();
    let lines = dir.path().join("lines");
    std::fs::write(
        &lines,
        format!(
            "# inputs\na:/data/one.h5 {0}/one.h5\na:/data/two.h5 {0}/two.h5\n",
            scratch.display()
        ),
    )
    .unwrap();
    let job_script = dir.path().join("job.sh");
    std::fs::write(
        &job_script,
        format!(
            "#!/bin/sh\ncat '{0}/one.h5' '{0}/two.h5' > '{1}'\n",
            scratch.display(),
            dir.path().join("seen").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("slurm.out");
    let (code, stdout, stderr) = submit(
        &setup,
        &[
            "--batch",
            lines.to_str().unwrap(),
            "-o",
            log.to_str().unwrap(),
            job_script.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("Stage-in: 2 file(s)"), "{stdout}");
    assert_eq!(
        (
            emu.sim
                .stats()
                .route("GET /v0.10/operation/endpoint/{id}/ls"),
            emu.sim
                .stats()
                .route("GET /v0.10/operation/endpoint/{id}/stat")
        ),
        (1, 0),
        "the sources' sizes: one listing of their directory"
    );
    let info = until(&stdout, &log, |i| i.state.is_final());
    assert_eq!(
        info.state,
        JobState::Completed,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(std::fs::read(dir.path().join("seen")).unwrap(), b"one two");
}

/// `--stage-in-ref NAME`: the job's first step waits until the reference's object is at
/// the job's site, verified, and the script reads it at `PS_GLOBUS_REF_<NAME>`; a name
/// not saved is refused before anything is submitted.
#[test]
fn a_job_reads_a_named_reference_at_its_site_from_its_variable() {
    use crate::support::sites::{pair, shared};
    use crate::support::unique_name;
    let emu = shared();
    let (a, _) = pair(&unique_name("job-refs"));
    let store = ps_globus::Store::builder(unique_name("job-ref-store"), a)
        .build()
        .unwrap();
    let data = b"referenced bytes ".repeat(1000);
    let key = store.put(&data).unwrap();
    let text = ps_globus::proxy::DatasetRef::new("input", store.config().clone(), key)
        .to_string_form()
        .unwrap();
    let setup = cluster_setup(emu);
    let (code, _, stderr) = setup.run(&["ref", "import", &text, "--name", "run7/input.h5"]);
    assert_eq!(code, 0, "{stderr}");
    let dir = tempfile::tempdir().unwrap();
    let job_script = dir.path().join("job.sh");
    std::fs::write(
        &job_script,
        format!(
            "#!/bin/sh\ncat \"$PS_GLOBUS_REF_RUN7_INPUT_H5\" > '{}'\n",
            dir.path().join("seen").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("slurm.out");
    let script = job_script.to_str().unwrap();
    let (code, stdout, stderr) = submit(
        &setup,
        &[
            "--stage-in-ref",
            "run7/input.h5",
            "-o",
            log.to_str().unwrap(),
            script,
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let info = until(&stdout, &log, |i| i.state.is_final());
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(info.state, JobState::Completed, "{said}");
    assert!(said.contains("1 reference(s)"), "{said}");
    assert_eq!(std::fs::read(dir.path().join("seen")).unwrap(), data);

    let (code, stdout, stderr) = submit(&setup, &["--stage-in-ref", "never/saved", script]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("no reference of that name"), "{stderr}");
}

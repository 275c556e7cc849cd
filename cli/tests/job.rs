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
fn cluster_setup(emu: &Emu) -> Setup {
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
fn submit(setup: &Setup, args: &[&str]) -> (i32, String, String) {
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

/// The job `stdout` names ("Submitted batch job N"), once it has ended (its output in
/// `log`, shown if it does not end).
fn ended(stdout: &str, log: &Path) -> JobInfo {
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
        if info.state.is_final() {
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
fn script(dir: &Path, from: &Path) -> String {
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

#[test]
fn a_job_runs_its_script_once_its_stage_in_has_arrived_verified() {
    let emu = Emu::start();
    let setup = cluster_setup(&emu);
    write(emu.root_a(), "data/input.h5", b"input bytes");
    let arrives = emu
        .root_b()
        .canonicalize()
        .unwrap()
        .join("scratch/input.h5");
    let dir = tempfile::tempdir().unwrap();
    let job_script = script(dir.path(), &arrives);
    let log = dir.path().join("slurm.out");
    let stage_in = format!("a:/data/input.h5:{}", arrives.display());
    let (code, stdout, stderr) = submit(
        &setup,
        &[
            "--stage-in",
            &stage_in,
            "-o",
            log.to_str().unwrap(),
            &job_script,
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let info = ended(&stdout, &log);
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(info.state, JobState::Completed, "{said}");
    assert_eq!(
        std::fs::read(dir.path().join("seen")).unwrap(),
        b"input bytes"
    );
    assert!(said.contains("arrived and verified (1 file(s))"), "{said}");
}

#[test]
fn a_failed_stage_in_fails_the_first_step_with_the_globus_reason_and_the_script_never_runs() {
    let emu = Emu::start();
    let setup = cluster_setup(&emu);
    let arrives = emu
        .root_b()
        .canonicalize()
        .unwrap()
        .join("scratch/missing.h5");
    let dir = tempfile::tempdir().unwrap();
    let job_script = script(dir.path(), &arrives);
    let log = dir.path().join("slurm.out");
    let stage_in = format!("a:/data/missing.h5:{}", arrives.display());
    let (code, stdout, stderr) = submit(
        &setup,
        &[
            "--stage-in",
            &stage_in,
            "-o",
            log.to_str().unwrap(),
            &job_script,
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let info = ended(&stdout, &log);
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(info.state, JobState::Failed, "{said}");
    assert_eq!(info.exit_code, "1:0", "{said}");
    assert!(
        !dir.path().join("seen").exists(),
        "the batch script never ran"
    );
    assert!(
        said.contains("missing.h5"),
        "the reason names the file: {said}"
    );
}

#[test]
fn usage_errors_of_job_submit_exit_2_and_submit_nothing() {
    let emu = Emu::start();
    let setup = cluster_setup(&emu);
    let dir = tempfile::tempdir().unwrap();
    let job_script = script(dir.path(), Path::new("/dev/null"));
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
        (vec!["/nonexistent/job.sh"], "cannot read the batch script"),
    ] {
        let (code, stdout, stderr) = submit(&setup, &args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stdout.contains("Submitted"), "{args:?}");
    }
}

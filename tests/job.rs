//! Slurm's commands as the library calls them, against a real throw-away cluster
//! (`support::slurm_cluster`): submission held and not, release, cancel, the states a
//! job ends in, and the errors of a cluster that is not there.

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use ps_globus::ErrorKind;
use ps_globus::job::{JobId, JobInfo, JobState, Slurm, wrapper_script};

use crate::support::slurm_cluster;

fn slurm() -> Slurm {
    Slurm::from_path().with_conf(slurm_cluster::conf())
}

/// A batch script in `dir` running `body`, its output to `dir/out`.
fn script(dir: &Path, body: &str) -> std::path::PathBuf {
    let path = dir.join("job.sh");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    path
}

fn output_to(dir: &Path) -> Vec<OsString> {
    vec!["-o".into(), dir.join("out").into()]
}

/// Polls Slurm (it has no other way to tell) until the job has ended.
async fn ended(slurm: &Slurm, job: &JobId) -> JobInfo {
    let limit = Instant::now() + Duration::from_secs(120);
    loop {
        let info = slurm.show(job).await.unwrap().expect("Slurm knows the job");
        if info.state.is_final() {
            return info;
        }
        assert!(Instant::now() < limit, "job {job} still {:?}", info.state);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_held_job_waits_without_a_start_until_released_then_runs_its_script_with_args() {
    let dir = tempfile::tempdir().unwrap();
    let slurm = slurm();
    let marker = dir.path().join("ran");
    let job_script = script(dir.path(), "echo \"$1 $2\" > \"$3\"");
    let args: Vec<OsString> = vec!["one".into(), "two words".into(), marker.clone().into()];
    let job = slurm
        .submit(&output_to(dir.path()), &job_script, &args, true)
        .await
        .unwrap();
    let info = slurm.show(&job).await.unwrap().unwrap();
    assert_eq!(info.state, JobState::Pending);
    assert!(info.held, "{info:?}");
    assert_eq!(info.reason, "JobHeldUser");
    assert_eq!(slurm.expected_start(&job).await.unwrap(), None, "held: N/A");
    assert!(!marker.exists());
    slurm.release(&job).await.unwrap();
    let info = ended(&slurm, &job).await;
    assert_eq!(info.state, JobState::Completed);
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "one two words\n");
    assert_eq!(
        slurm.accounted(&job).await.unwrap(),
        None,
        "this cluster keeps no accounting"
    );
}

#[tokio::test]
async fn a_failing_script_ends_failed_with_its_exit_code_and_a_cancelled_job_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let slurm = slurm();
    let failing = script(dir.path(), "exit 3");
    let job = slurm
        .submit(&output_to(dir.path()), &failing, &[], false)
        .await
        .unwrap();
    let info = ended(&slurm, &job).await;
    assert_eq!(
        (info.state, info.exit_code.as_str()),
        (JobState::Failed, "3:0")
    );

    let held = slurm
        .submit(&output_to(dir.path()), &failing, &[], true)
        .await
        .unwrap();
    slurm.cancel(&held).await.unwrap();
    assert_eq!(ended(&slurm, &held).await.state, JobState::Cancelled);
}

#[tokio::test]
async fn a_job_slurm_never_knew_is_none() {
    let unknown = JobId {
        id: 60_000_000,
        cluster: None,
    };
    assert_eq!(slurm().show(&unknown).await.unwrap(), None);
}

#[tokio::test]
async fn a_controller_that_is_not_there_is_unreachable_naming_the_command() {
    let dir = tempfile::tempdir().unwrap();
    // The cluster's configuration, its controller moved to a port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let conf: String = std::fs::read_to_string(slurm_cluster::conf())
        .unwrap()
        .lines()
        .map(|line| match line.strip_prefix("SlurmctldPort=") {
            Some(_) => format!("SlurmctldPort={port}\n"),
            None => format!("{line}\n"),
        })
        .collect();
    let moved = dir.path().join("slurm.conf");
    std::fs::write(&moved, conf).unwrap();
    let slurm = Slurm::from_path().with_conf(&moved);
    let e = slurm
        .submit(&[], &script(dir.path(), "true"), &[], false)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unreachable, "{e}");
    assert!(e.to_string().contains("`sbatch --parsable"), "{e}");
    let job = JobId {
        id: 1,
        cluster: None,
    };
    let e = slurm.show(&job).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unreachable, "{e}");
    assert!(e.to_string().contains("`scontrol"), "{e}");
}

/// Submits `script` wrapped with `first_step`; the job's end.
async fn run_wrapped(dir: &Path, script: &str, first_step: &[&str], args: &[&str]) -> JobInfo {
    let wrapper = wrapper_script(
        script.as_bytes(),
        &first_step.iter().map(OsString::from).collect::<Vec<_>>(),
    )
    .unwrap();
    let path = dir.join("wrapped.sh");
    std::fs::write(&path, wrapper).unwrap();
    let slurm = slurm();
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    let job = slurm
        .submit(&output_to(dir), &path, &args, false)
        .await
        .unwrap();
    let info = ended(&slurm, &job).await;
    // The job's name came from the user's script's #SBATCH line.
    let named = std::process::Command::new("scontrol")
        .env("SLURM_CONF", slurm_cluster::conf())
        .args(["show", "job", "-o", &job.text()])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&named.stdout).contains("JobName=from-directive"),
        "{}",
        String::from_utf8_lossy(&named.stdout)
    );
    info
}

#[tokio::test]
async fn a_wrapped_script_runs_after_its_first_step_with_its_args_and_directives() {
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    let script = format!(
        "#!/bin/bash\n#SBATCH --job-name=from-directive\nprintf '%s|' \"$@\" > {}\n",
        ran.display()
    );
    let info = run_wrapped(dir.path(), &script, &["true"], &["a b", "c"]).await;
    assert_eq!(info.state, JobState::Completed);
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "a b|c|");
}

#[tokio::test]
async fn a_failed_first_step_fails_the_job_with_its_status_and_the_script_never_runs() {
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    let script = format!(
        "#!/bin/sh\n#SBATCH -J from-directive\ntouch {}\n",
        ran.display()
    );
    let info = run_wrapped(dir.path(), &script, &["sh", "-c", "exit 7"], &[]).await;
    assert_eq!(
        (info.state, info.exit_code.as_str()),
        (JobState::Failed, "7:0")
    );
    assert!(!ran.exists(), "the batch script did not run");
}

/// Regression (issue 38's trust review): `sbatch` hands the job its whole environment
/// (`--export=ALL`, the default), and slurmctld saves it with the job in its state
/// directory: a token in the submitting process's environment would be stored there and
/// reach every node of the job. Ours, and any variable a caller names, are kept out.
#[tokio::test]
async fn a_submitted_job_never_gets_our_secrets_in_its_environment_nor_slurms_state() {
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("env");
    let secret = format!("tok-{}", uuid::Uuid::new_v4().simple());
    let slurm = slurm()
        .env("PS_GLOBUS_ACCESS_TOKEN", &secret)
        .env("PS_GLOBUS_CLIENT_SECRET", &secret)
        .env("MY_REDIS_PASSWORD", &secret)
        .env("PS_GLOBUS_SITE", "hpc")
        .withholding("MY_REDIS_PASSWORD");
    let job_script = script(dir.path(), &format!("env > {}", seen.display()));
    let job = slurm
        .submit(&output_to(dir.path()), &job_script, &[], true)
        .await
        .unwrap();
    // While it is held, slurmctld keeps the job's environment in its state directory.
    let conf = std::fs::read_to_string(slurm_cluster::conf()).unwrap();
    let state_dir = conf
        .lines()
        .find_map(|l| l.strip_prefix("StateSaveLocation="))
        .expect("the cluster's state directory");
    let leaked = std::process::Command::new("grep")
        .args(["-r", "-l", &secret, state_dir])
        .output()
        .unwrap();
    assert!(
        leaked.stdout.is_empty(),
        "the secret is in Slurm's state: {}",
        String::from_utf8_lossy(&leaked.stdout)
    );
    slurm.release(&job).await.unwrap();
    assert_eq!(ended(&slurm, &job).await.state, JobState::Completed);
    let env = std::fs::read_to_string(&seen).unwrap();
    assert!(
        env.contains("PS_GLOBUS_SITE=hpc"),
        "the rest goes with the job"
    );
    assert!(!env.contains(&secret), "{env}");
}

//! `job watch` and `job status` against the emulator and the throw-away Slurm cluster: a
//! job submitted `--hold-until-staged` is released once, only after its stage-in arrived,
//! though two watchers race or one dies mid-way; a failed stage-in keeps it held with
//! the reason; stage-out follows `COMPLETED` and not `FAILED` (unless asked); `scancel`
//! cancels the stage-in; a job Slurm forgot unseen is `UNKNOWN`, nothing staged out.
//!
//! What the watchers ran is seen through an `scontrol` on their `PATH` that logs each
//! release (and whether the staged file was there at that moment) before running
//! Slurm's own.

use std::path::Path;
use std::time::{Duration, Instant};

use ps_globus::job::JobState;

use crate::job::{cluster_setup, script};
use crate::job_support::{
    Shim, Site, Staged, arrival, output_job, show, slurm, staged_out, until_final,
};
use crate::support::emulator::{Emu, write};

/// A held job's release, raced by two watchers at a time, on the facility's PostgreSQL
/// state: exactly one `scontrol release`, made after the file arrived; the script then
/// reads what was staged.
#[test]
fn a_held_job_is_released_once_after_its_stage_in_arrived_though_two_watchers_race() {
    // The task takes 4 s: the first pass comes while it is on its way.
    let emu = Emu::with(|c| c.task_latency_ms = 4000);
    write(emu.root_a(), "data/held.h5", b"held bytes");
    let setup = cluster_setup(&emu);
    let site = Site {
        setup: &setup,
        state_url: Some(ps_globus::block_on(
            crate::support::pg_cluster::fresh_database(),
        )),
    };
    let staged = Staged::held(&site, &emu, "held.h5", &[]);
    let job = &staged.job;
    assert!(
        staged.said.contains("held until its stage-in arrives"),
        "{}",
        staged.said
    );
    let info = show(job);
    assert!(
        info.held && info.state == JobState::Pending,
        "submitted held: {info:?}"
    );
    // Each release takes a second: the other watcher of the pair looks meanwhile.
    let shim = Shim::logging_slow_releases(&staged.arrives, 1);
    let limit = Instant::now() + Duration::from_secs(120);
    // A pass while the stage-in is on its way releases nothing.
    let (code, said) = site.watch(&shim, &[]);
    assert_eq!(code, 0, "{said}");
    assert_eq!(shim.releases(), Vec::<String>::new());
    // Once it arrived, both watchers of a pair find the job held and its data there.
    while site.status(job)["stage_in"]["arrived"] != 1 {
        assert!(Instant::now() < limit, "the stage-in never arrived");
    }
    while show(job).held {
        let path = shim.path();
        let racing: Vec<_> = (0..2)
            .map(|_| {
                site.command(&["job", "watch", "--once"], &[("PATH", path.as_os_str())])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in racing {
            let out = child.wait_with_output().unwrap();
            let (code, stdout, stderr) = crate::command::finished(out);
            assert_eq!(code, 0, "{stdout}{stderr}");
        }
        assert!(
            Instant::now() < limit,
            "never released: {:?}",
            site.status(job)
        );
    }
    staged.completed();
    assert_eq!(
        std::fs::read(staged.dir.path().join("seen")).unwrap(),
        b"held bytes"
    );
    assert_eq!(
        shim.releases(),
        [format!("release {job} arrived")],
        "one release, after the file arrived"
    );
    // More passes (the job ended) release nothing more.
    site.watch(&shim, &[]);
    site.watch(&shim, &[]);
    assert_eq!(shim.releases().len(), 1);
    let status = site.status(job);
    assert_eq!(status["releases"], 1, "{status:#}");
    assert_eq!(status["released"], true);
    assert_eq!(status["state"], "COMPLETED");
    assert_eq!(status["stage_in"]["arrived"], 1);
    assert_eq!(status["stage_in"]["bytes_done"], 10);
    assert_eq!(
        status["stage_in"]["bytes_total"], 10,
        "the remote source's size, asked of Globus at submission"
    );
}

/// A watcher killed after it claimed a release (before running it), and one killed after
/// releasing (before recording it): the next watcher releases once in all.
#[test]
fn a_watcher_killed_mid_release_and_restarted_releases_once() {
    let emu = Emu::start();
    let setup = cluster_setup(&emu);
    let site = Site::sqlite(&setup);
    for (n, failpoint) in ["job-release-claimed", "job-released"].iter().enumerate() {
        let name = format!("crash-{n}.h5");
        write(emu.root_a(), &format!("data/{name}"), b"bytes");
        let staged = Staged::held(&site, &emu, &name, &[]);
        let job = &staged.job;
        let shim = Shim::logging_releases(&staged.arrives);
        // Passes with the failpoint until one reaches it (the stage-in arrived) and dies.
        let limit = Instant::now() + Duration::from_secs(120);
        let died = loop {
            let (code, said) = site.watch_dying_at(&shim, failpoint);
            if code != 0 {
                break said;
            }
            assert!(Instant::now() < limit, "{failpoint} never reached: {said}");
        };
        assert!(died.contains(failpoint), "{died}");
        let released_before_dying = *failpoint == "job-released";
        assert_eq!(
            shim.releases().len(),
            usize::from(released_before_dying),
            "{failpoint}: {:?}",
            shim.releases()
        );
        // Restarted: the job is released (after the dead watcher's claim lapses, if it
        // never released it), and only once in all.
        let status = site.watch_until(&shim, job, |s| s["released"] == true);
        assert_eq!(
            shim.releases(),
            [format!("release {job} arrived")],
            "{failpoint}: one release in all"
        );
        assert_eq!(
            status["releases"],
            usize::from(!released_before_dying),
            "{failpoint}: releases this database saw run: {status:#}"
        );
        staged.completed();
    }
}

/// Stage-out after `COMPLETED`; none after `FAILED`, unless `--stage-out-always`.
#[test]
fn stage_out_follows_a_completed_job_and_not_a_failed_one_unless_asked() {
    let emu = Emu::start();
    let setup = cluster_setup(&emu);
    let site = Site::sqlite(&setup);
    let shim = Shim::logging_releases(Path::new("/nonexistent"));
    let cases = [
        ("completed.dat", 0, &[][..], true),
        ("failed.dat", 3, &[][..], false),
        ("failed-always.dat", 3, &["--stage-out-always"][..], true),
    ];
    let jobs: Vec<_> = cases
        .iter()
        .map(|(name, code, options, _)| output_job(&site, &emu, name, *code, options))
        .collect();
    let ends: Vec<JobState> = jobs.iter().map(|(job, _)| until_final(job).state).collect();
    assert_eq!(
        ends,
        [JobState::Completed, JobState::Failed, JobState::Failed]
    );
    for ((name, _, _, staged), (job, _)) in cases.iter().zip(&jobs) {
        let status = site.watch_until(&shim, job, |s| {
            s["tracked"] == false && (!staged || s["stage_out"]["arrived"] == 1)
        });
        assert_eq!(status["stage_out"]["queued"], *staged, "{name}: {status:#}");
        assert_eq!(
            staged_out(&emu, name),
            staged.then(|| format!("result {name}").into_bytes()),
            "{name}"
        );
    }
    // Another pass stages nothing out again.
    let before = emu.sim.stats().route("POST /v0.10/transfer");
    let (code, said) = site.watch(&shim, &[]);
    assert_eq!(code, 0, "{said}");
    assert_eq!(emu.sim.stats().route("POST /v0.10/transfer"), before);
}

/// `scancel` of a job whose stage-in is on its way cancels that stage-in.
#[test]
fn scancel_of_a_job_cancels_its_unfinished_stage_in() {
    let emu = Emu::with(|c| c.task_latency_ms = 600_000);
    write(emu.root_a(), "data/slow.h5", b"slow bytes");
    let setup = cluster_setup(&emu);
    let site = Site::sqlite(&setup);
    let staged = Staged::held(&site, &emu, "slow.h5", &[]);
    ps_globus::block_on(slurm().cancel(&staged.job)).unwrap();
    let shim = Shim::logging_releases(&staged.arrives);
    let status = site.watch_until(&shim, &staged.job, |s| {
        s["tracked"] == false && s["stage_in"]["failed"] == 1
    });
    assert_eq!(status["state"], "CANCELLED", "{status:#}");
    assert_eq!(status["stage_in"]["arrived"], 0);
    assert!(
        shim.releases().is_empty(),
        "a cancelled job is not released"
    );
    assert!(!staged.arrives.exists(), "the stage-in never arrived");
}

/// A job Slurm forgot before any watcher saw it end (no accounting) is `UNKNOWN`:
/// nothing is staged out, and `job status` says why. With accounting, `sacct`'s end
/// counts, and the stage-out follows it.
#[test]
fn a_job_slurm_forgot_unseen_ends_unknown_unless_sacct_remembers_it() {
    let emu = Emu::start();
    let setup = cluster_setup(&emu);
    let site = Site::sqlite(&setup);
    let (job, _dir) = output_job(&site, &emu, "forgotten.dat", 0, &[]);
    assert_eq!(until_final(&job).state, JobState::Completed);
    let (code, said) = site.watch(&Shim::forgetting(), &[]);
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains(&format!("job {job}: ended UNKNOWN")),
        "{said}"
    );
    let status = site.status(&job);
    assert_eq!(status["state"], "UNKNOWN", "{status:#}");
    assert_eq!(status["stage_out"]["queued"], false);
    assert!(
        status["reason"].as_str().unwrap().contains("MinJobAge"),
        "{status:#}"
    );
    assert_eq!(emu.sim.stats().route("POST /v0.10/transfer"), 0);
    // The text view says the same.
    let (code, stdout, _) = site.run(&["job", "status"], &[]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("UNKNOWN") && stdout.contains("MinJobAge"),
        "{stdout}"
    );

    // Where the cluster keeps accounting, `sacct` tells the end of a job `scontrol` forgot.
    let (job, _dir) = output_job(&site, &emu, "accounted.dat", 0, &[]);
    assert_eq!(until_final(&job).state, JobState::Completed);
    let accounted = Shim::forgetting_but_accounted("COMPLETED");
    let status = site.watch_until(&accounted, &job, |s| {
        s["tracked"] == false && s["stage_out"]["arrived"] == 1
    });
    assert_eq!(status["state"], "COMPLETED", "{status:#}");
    assert_eq!(
        staged_out(&emu, "accounted.dat"),
        Some(b"result accounted.dat".to_vec())
    );
}

/// A watcher killed after it claimed a stage-out, and one killed after queueing it
/// (before recording it): the next watcher stages out once in all (one Globus task).
#[test]
fn a_watcher_killed_mid_stage_out_and_restarted_stages_out_once() {
    let emu = Emu::start();
    let setup = cluster_setup(&emu);
    let site = Site::sqlite(&setup);
    let shim = Shim::logging_releases(Path::new("/nonexistent"));
    for failpoint in ["job-stage-out-claimed", "job-stage-out-queued"] {
        let name = format!("{failpoint}.dat");
        let (job, _dir) = output_job(&site, &emu, &name, 0, &[]);
        assert_eq!(until_final(&job).state, JobState::Completed);
        let posted = emu.sim.stats().route("POST /v0.10/transfer");
        let (code, said) = site.watch_dying_at(&shim, failpoint);
        assert_ne!(code, 0, "{failpoint}: {said}");
        assert!(said.contains(failpoint), "{said}");
        let status = site.watch_until(&shim, &job, |s| {
            s["tracked"] == false && s["stage_out"]["arrived"] == 1
        });
        assert_eq!(status["state"], "COMPLETED", "{status:#}");
        assert_eq!(
            emu.sim.stats().route("POST /v0.10/transfer") - posted,
            1,
            "{failpoint}: one stage-out task"
        );
        assert_eq!(
            staged_out(&emu, &name),
            Some(format!("result {name}").into_bytes())
        );
    }
}

/// A held job whose stage-in fails stays held, and `job status` says why; asked to
/// cancel instead, the watcher cancels it.
#[test]
fn a_held_job_whose_stage_in_failed_stays_held_with_the_reason_or_is_cancelled() {
    let emu = Emu::start();
    let setup = cluster_setup(&emu);
    let site = Site::sqlite(&setup);
    let held = Staged::held(&site, &emu, "never.h5", &[]);
    let shim = Shim::logging_releases(&held.arrives);
    let status = site.watch_until(&shim, &held.job, |s| {
        !s["reason"].is_null() && s["stage_in"]["failed"] == 1
    });
    let reason = status["reason"].as_str().unwrap();
    assert!(
        reason.contains("stays held: its stage-in failed"),
        "{reason}"
    );
    assert!(
        reason.contains("never.h5"),
        "Globus's reason names the file: {reason}"
    );
    let info = show(&held.job);
    assert!(info.held && info.state == JobState::Pending, "{info:?}");
    let (code, stdout, _) = site.run(&["job", "status", &held.job.text()], &[]);
    assert_eq!(code, 0);
    assert!(stdout.contains("stays held"), "{stdout}");

    let cancel = ["--on-stage-in-failure", "cancel"];
    let cancelled = Staged::held(&site, &emu, "never-2.h5", &cancel);
    let status = site.watch_until(&shim, &cancelled.job, |s| s["tracked"] == false);
    assert_eq!(status["state"], "CANCELLED", "{status:#}");
    assert!(shim.releases().is_empty(), "{:?}", shim.releases());
    ps_globus::block_on(slurm().cancel(&held.job)).unwrap();
}

/// At submission, a stage-in whose estimated finish (its bytes over the rate of recent
/// tasks between the same collections) is after Slurm's expected start is warned of;
/// one that should arrive before it is not.
#[test]
fn submit_warns_when_the_stage_in_should_finish_after_the_expected_start() {
    let emu = Emu::start();
    let setup = cluster_setup(&emu);
    let site = Site::sqlite(&setup);
    // A measured rate: one earlier task between the same collections.
    write(emu.root_a(), "data/earlier.bin", &vec![7u8; 1 << 20]);
    let earlier = arrival(&emu, "earlier.bin");
    let (code, _, stderr) = site.run(
        &[
            "transfer",
            "--timeout",
            "120",
            "a:/data/earlier.bin",
            &format!(
                "b:{}",
                earlier
                    .strip_prefix(emu.root_b().canonicalize().unwrap())
                    .unwrap()
                    .display()
            ),
        ],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    write(emu.root_a(), "data/big.bin", &vec![9u8; 1 << 20]);
    let dir = tempfile::tempdir().unwrap();
    let job_script = script(dir.path(), Path::new("/dev/null"));
    let log = dir.path().join("slurm.out");
    for (n, start, warned) in [
        (0, "2000-01-01T00:00:00", true),
        (1, "2999-01-01T00:00:00", false),
    ] {
        let arrives = arrival(&emu, &format!("big-{n}.bin"));
        let stage_in = format!("a:/data/big.bin:{}", arrives.display());
        let shim = Shim::expecting_start(start);
        let path = shim.path();
        let (code, stdout, stderr) = site.run(
            &[
                "job",
                "submit",
                "--stage-in",
                &stage_in,
                "-o",
                log.to_str().unwrap(),
                &job_script,
            ],
            &[("PATH", path.as_os_str())],
        );
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains("Submitted batch job"), "{stdout}");
        let said = stderr.contains("after Slurm's expected start");
        assert_eq!(said, warned, "start {start}: {stderr}");
        if warned {
            assert!(stderr.contains(&format!("({start})")), "{stderr}");
            assert!(stderr.contains("1.0 MB"), "the bytes to move: {stderr}");
        }
    }
}

/// A long-running watcher outlives a controller that is down: it says so, tries again,
/// and releases the job once Slurm answers.
#[test]
fn a_running_watcher_outlives_a_controller_outage_then_releases() {
    let emu = Emu::start();
    write(emu.root_a(), "data/outage.h5", b"bytes");
    let setup = cluster_setup(&emu);
    let site = Site::sqlite(&setup);
    let staged = Staged::held(&site, &emu, "outage.h5", &[]);
    let down = staged.dir.path().join("down");
    std::fs::write(&down, b"").unwrap();
    let shim = Shim::down_while(&down);
    let said = staged.dir.path().join("watcher.err");
    let path = shim.path();
    let mut watcher = site
        .command(
            &["job", "watch", "--interval", "1"],
            &[("PATH", path.as_os_str())],
        )
        .stderr(std::fs::File::create(&said).unwrap())
        .spawn()
        .unwrap();
    let limit = Instant::now() + Duration::from_secs(120);
    let read = || std::fs::read_to_string(&said).unwrap_or_default();
    while !read().contains("Unable to contact slurm controller") {
        assert!(Instant::now() < limit, "{}", read());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(read().contains("trying again"), "{}", read());
    assert!(
        show(&staged.job).held,
        "nothing released while Slurm is down"
    );
    std::fs::remove_file(&down).unwrap();
    while show(&staged.job).held {
        assert!(Instant::now() < limit, "never released: {}", read());
        assert!(
            watcher.try_wait().unwrap().is_none(),
            "the watcher exited: {}",
            read()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    watcher.kill().unwrap();
    watcher.wait().unwrap();
    staged.completed();
}

/// Ctrl-C while sbatch runs (at a terminal: SIGINT to the whole process group): the
/// submission it began is finished (sbatch is not killed half-way, leaving a queued job
/// nobody knows), recorded, and said, then the command exits 130.
#[test]
fn ctrl_c_during_sbatch_finishes_and_records_the_submission_then_exits_130() {
    use std::os::unix::process::CommandExt;
    let emu = Emu::start();
    write(emu.root_a(), "data/interrupted.h5", b"bytes");
    let setup = cluster_setup(&emu);
    let site = Site::sqlite(&setup);
    let dir = tempfile::tempdir().unwrap();
    let arrives = arrival(&emu, "interrupted.h5");
    let job_script = script(dir.path(), &arrives);
    let started = dir.path().join("sbatch-started");
    let shim = Shim::slow_sbatch(&started, 2);
    let stage_in = format!("a:/data/interrupted.h5:{}", arrives.display());
    let path = shim.path();
    let log = dir.path().join("slurm.out");
    let child = site
        .command(
            &[
                "job",
                "submit",
                "--hold-until-staged",
                "--stage-in",
                &stage_in,
                "-o",
                log.to_str().unwrap(),
                &job_script,
            ],
            &[("PATH", path.as_os_str())],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let limit = Instant::now() + Duration::from_secs(120);
    while !started.exists() {
        assert!(Instant::now() < limit, "sbatch never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    let group = format!("-{}", child.id());
    let sent = std::process::Command::new("kill")
        .args(["-INT", "--", &group])
        .status()
        .unwrap();
    assert!(sent.success());
    let (code, stdout, stderr) = crate::command::finished(child.wait_with_output().unwrap());
    assert_eq!(code, 130, "{stdout}{stderr}");
    let id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Submitted batch job "))
        .unwrap_or_else(|| panic!("no job id: {stdout}{stderr}"));
    let job = ps_globus::job::JobId::parse_parsable(id).unwrap();
    assert!(
        stderr.contains(&format!(
            "interrupted after job {job} was submitted and recorded"
        )),
        "{stderr}"
    );
    assert_eq!(
        site.status(&job)["tracked"],
        true,
        "recorded for the watcher"
    );
    assert!(show(&job).held);
    ps_globus::block_on(slurm().cancel(&job)).unwrap();
}

//! `job watch` and `job status` against the emulator and the throw-away Slurm cluster: a
//! job submitted `--hold-until-staged` is released once, only after its stage-in arrived,
//! though two watchers race or one dies mid-way; a failed stage-in keeps it held with
//! the reason; stage-out follows `COMPLETED` and not `FAILED` (unless asked); `scancel`
//! cancels the stage-in; a job Slurm forgot unseen is `UNKNOWN`, nothing staged out.
//!
//! What the watchers ran is seen through an `scontrol` on their `PATH` that logs each
//! release (and whether the staged file was there at that moment) before running
//! Slurm's own.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ps_globus::job::{JobId, JobInfo, JobState, Slurm};
use serde_json::Value;

use crate::command::Setup;
use crate::job::{cluster_setup, script, until};
use crate::support::emulator::{Emu, write};
use crate::support::slurm_cluster;

/// Slurm's own command `name`, as found on `PATH`.
fn slurm_command(name: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("no {name} on PATH"))
}

/// A directory of Slurm commands that log what they are asked, then run Slurm's.
struct Shim {
    dir: tempfile::TempDir,
}

impl Shim {
    /// An `scontrol` that logs `release JOB arrived|absent` (`watched` there or not).
    fn logging_releases(watched: &Path) -> Shim {
        let shim = Shim {
            dir: tempfile::tempdir().unwrap(),
        };
        shim.install(
            "scontrol",
            &format!(
                "if [ \"$1\" = release ]; then\n\
                 \x20 if [ -f '{}' ]; then was=arrived; else was=absent; fi\n\
                 \x20 echo \"release $2 $was\" >> '{}'\n\
                 fi\n",
                watched.display(),
                shim.log().display()
            ),
        );
        shim
    }

    /// Commands that answer as Slurm does once it has forgotten a job (`MinJobAge` after
    /// its end, without accounting).
    fn forgetting() -> Shim {
        let shim = Shim {
            dir: tempfile::tempdir().unwrap(),
        };
        shim.install(
            "scontrol",
            "if [ \"$1\" = show ]; then\n\
             \x20 echo 'slurm_load_jobs error: Invalid job id specified' >&2\n\
             \x20 exit 1\n\
             fi\n",
        );
        shim
    }

    /// `name` runs `before` (shell), then Slurm's own `name`.
    fn install(&self, name: &str, before: &str) {
        let path = self.dir.path().join(name);
        let real = slurm_command(name);
        std::fs::write(
            &path,
            format!("#!/bin/sh\n{before}exec '{}' \"$@\"\n", real.display()),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("calls.log")
    }

    /// The releases logged, in order.
    fn releases(&self) -> Vec<String> {
        std::fs::read_to_string(self.log())
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// `PATH` with these commands first.
    fn path(&self) -> std::ffi::OsString {
        let mut dirs = vec![self.dir.path().to_path_buf()];
        dirs.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        std::env::join_paths(dirs).unwrap()
    }
}

/// How the commands of one test run: its setup, the state database (SQLite in the home,
/// or a PostgreSQL URL), and the `PATH` of its watchers.
struct Site<'a> {
    setup: &'a Setup,
    state_url: Option<String>,
}

impl Site<'_> {
    /// `ps-globus ARGS` on the cluster, logged in through the token store as its jobs
    /// are, with `env` set.
    fn command(&self, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> std::process::Command {
        let mut command = self.setup.command(args);
        command
            .env_remove("PS_GLOBUS_ACCESS_TOKEN")
            .env("SLURM_CONF", slurm_cluster::conf())
            .env("PS_GLOBUS_TOKEN_STORE", "file");
        if let Some(url) = &self.state_url {
            command.env("PS_GLOBUS_STATE_URL", url);
        }
        for (name, value) in env {
            command.env(name, value);
        }
        command
    }

    fn run(&self, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> (i32, String, String) {
        crate::command::finished(self.command(args, env).output().unwrap())
    }

    /// Submits `job submit ARGS`; the job's id.
    fn submit(&self, args: &[&str]) -> (JobId, String) {
        let mut all = vec!["job", "submit"];
        all.extend_from_slice(args);
        let (code, stdout, stderr) = self.run(&all, &[]);
        assert_eq!(code, 0, "{stderr}");
        let id = stdout
            .lines()
            .find_map(|l| l.strip_prefix("Submitted batch job "))
            .unwrap_or_else(|| panic!("no job id in {stdout:?}"));
        (
            JobId::parse_parsable(id).unwrap(),
            format!("{stdout}{stderr}"),
        )
    }

    /// One `job watch --once` pass with `PATH` from `shim`: (exit code, what it said).
    fn watch(&self, shim: &Shim, extra: &[(&str, &std::ffi::OsStr)]) -> (i32, String) {
        let path = shim.path();
        let mut env = vec![("PATH", path.as_os_str())];
        env.extend_from_slice(extra);
        let (code, stdout, stderr) = self.run(&["job", "watch", "--once"], &env);
        (code, format!("{stdout}{stderr}"))
    }

    /// `job status JOB -F json`: its report.
    fn status(&self, job: &JobId) -> Value {
        let (code, stdout, stderr) = self.run(&["job", "status", &job.text(), "-F", "json"], &[]);
        assert_eq!(code, 0, "{stderr}");
        let reports: Value = serde_json::from_str(&stdout).unwrap();
        reports[0].clone()
    }

    /// Runs watcher passes until `done` says so of the job's status.
    fn watch_until(&self, shim: &Shim, job: &JobId, done: impl Fn(&Value) -> bool) -> Value {
        let limit = Instant::now() + Duration::from_secs(120);
        loop {
            let (code, said) = self.watch(shim, &[]);
            assert_eq!(code, 0, "{said}");
            let status = self.status(job);
            if done(&status) {
                return status;
            }
            assert!(Instant::now() < limit, "job {job}: {status:#}");
        }
    }
}

fn show(job: &JobId) -> JobInfo {
    let slurm = Slurm::from_path().with_conf(slurm_cluster::conf());
    ps_globus::block_on(slurm.show(job)).unwrap().unwrap()
}

/// Waits until Slurm says the job ended.
fn until_final(job: &JobId) -> JobInfo {
    let limit = Instant::now() + Duration::from_secs(120);
    loop {
        let info = show(job);
        if info.state.is_final() {
            return info;
        }
        assert!(Instant::now() < limit, "job {job} still {:?}", info.state);
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Where `name` arrives at site `b` (the cluster).
fn arrival(emu: &Emu, name: &str) -> PathBuf {
    emu.root_b()
        .canonicalize()
        .unwrap()
        .join("scratch")
        .join(name)
}

/// A held job's release, raced by two watchers at a time, on the facility's PostgreSQL
/// state: exactly one `scontrol release`, made after the file arrived; the script then
/// reads what was staged.
#[test]
fn a_held_job_is_released_once_after_its_stage_in_arrived_though_two_watchers_race() {
    let emu = Emu::with(|c| c.task_latency_ms = 2000);
    write(emu.root_a(), "data/held.h5", b"held bytes");
    let setup = cluster_setup(&emu);
    let site = Site {
        setup: &setup,
        state_url: Some(ps_globus::block_on(
            crate::support::pg_cluster::fresh_database(),
        )),
    };
    let arrives = arrival(&emu, "held.h5");
    let dir = tempfile::tempdir().unwrap();
    let job_script = script(dir.path(), &arrives);
    let log = dir.path().join("slurm.out");
    let stage_in = format!("a:/data/held.h5:{}", arrives.display());
    let (job, said) = site.submit(&[
        "--hold-until-staged",
        "--stage-in",
        &stage_in,
        "-o",
        log.to_str().unwrap(),
        &job_script,
    ]);
    assert!(said.contains("held until its stage-in arrives"), "{said}");
    let info = show(&job);
    assert!(
        info.held && info.state == JobState::Pending,
        "submitted held: {info:?}"
    );
    let shim = Shim::logging_releases(&arrives);
    let limit = Instant::now() + Duration::from_secs(120);
    while show(&job).held {
        let racing: Vec<_> = (0..2)
            .map(|_| {
                let path = shim.path();
                site.command(&["job", "watch", "--once"], &[("PATH", path.as_os_str())])
                    .output()
                    .unwrap()
            })
            .collect();
        for out in racing {
            let (code, stdout, stderr) = crate::command::finished(out);
            assert_eq!(code, 0, "{stdout}{stderr}");
        }
        assert!(
            Instant::now() < limit,
            "never released: {:?}",
            site.status(&job)
        );
    }
    let ended = until(&format!("Submitted batch job {job}\n"), &log, |i| {
        i.state.is_final()
    });
    assert_eq!(ended.state, JobState::Completed);
    assert_eq!(
        std::fs::read(dir.path().join("seen")).unwrap(),
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
    let status = site.status(&job);
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
    let site = Site {
        setup: &setup,
        state_url: None,
    };
    for (n, failpoint) in ["job-release-claimed", "job-released"].iter().enumerate() {
        let name = format!("crash-{n}.h5");
        write(emu.root_a(), &format!("data/{name}"), b"bytes");
        let arrives = arrival(&emu, &name);
        let dir = tempfile::tempdir().unwrap();
        let job_script = script(dir.path(), &arrives);
        let log = dir.path().join("slurm.out");
        let stage_in = format!("a:/data/{name}:{}", arrives.display());
        let (job, _) = site.submit(&[
            "--hold-until-staged",
            "--stage-in",
            &stage_in,
            "-o",
            log.to_str().unwrap(),
            &job_script,
        ]);
        let shim = Shim::logging_releases(&arrives);
        // Passes with the failpoint until one reaches it (the stage-in arrived) and dies.
        let limit = Instant::now() + Duration::from_secs(120);
        let died = loop {
            let path = shim.path();
            let (code, stdout, stderr) = site.run(
                &["job", "watch", "--once", "--claim-seconds", "2"],
                &[
                    ("PATH", path.as_os_str()),
                    ("PS_GLOBUS_FAILPOINT", std::ffi::OsStr::new(failpoint)),
                ],
            );
            let said = format!("{stdout}{stderr}");
            if code != 0 {
                break said;
            }
            assert!(Instant::now() < limit, "{failpoint} never reached: {said}");
        };
        assert!(died.contains(failpoint), "{died}");
        let before = shim.releases().len();
        assert_eq!(
            before,
            usize::from(*failpoint == "job-released"),
            "{failpoint}: {:?}",
            shim.releases()
        );
        // Restarted: the job is released (after the dead watcher's claim lapses, if it
        // never released it), and only once in all.
        let status = site.watch_until(&shim, &job, |s| s["released"] == true);
        assert_eq!(
            shim.releases(),
            [format!("release {job} arrived")],
            "{failpoint}: one release in all"
        );
        assert_eq!(
            status["releases"],
            usize::from(*failpoint == "job-release-claimed"),
            "{failpoint}: releases this database saw run: {status:#}"
        );
        let ended = until(&format!("Submitted batch job {job}\n"), &log, |i| {
            i.state.is_final()
        });
        assert_eq!(ended.state, JobState::Completed, "{failpoint}");
    }
}

/// A batch script in `dir` that writes `bytes` to `out` and exits `code`.
fn writing_script(dir: &Path, out: &Path, bytes: &str, code: i32) -> String {
    let path = dir.join("job.sh");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nprintf '{bytes}' > '{}'\nexit {code}\n",
            out.display()
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

/// Stage-out after `COMPLETED`; none after `FAILED`, unless `--stage-out-always`.
#[test]
fn stage_out_follows_a_completed_job_and_not_a_failed_one_unless_asked() {
    let emu = Emu::start();
    let setup = cluster_setup(&emu);
    let site = Site {
        setup: &setup,
        state_url: None,
    };
    let shim = Shim::logging_releases(Path::new("/nonexistent"));
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut jobs = Vec::new();
    for (n, (code, always)) in [(0, false), (3, false), (3, true)].into_iter().enumerate() {
        let out = arrival(&emu, &format!("out-{n}.dat"));
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let job_script = writing_script(dirs[n].path(), &out, &format!("result {n}"), code);
        let stage_out = format!("{}:a:/results/out-{n}.dat", out.display());
        let log = dirs[n].path().join("slurm.out");
        let mut args = vec!["--stage-out", &stage_out];
        if always {
            args.push("--stage-out-always");
        }
        args.extend(["-o", log.to_str().unwrap(), &job_script]);
        jobs.push(site.submit(&args).0);
    }
    let ends: Vec<JobState> = jobs.iter().map(|job| until_final(job).state).collect();
    assert_eq!(
        ends,
        [JobState::Completed, JobState::Failed, JobState::Failed]
    );
    for (n, job) in jobs.iter().enumerate() {
        let staged = n != 1;
        let status = site.watch_until(&shim, job, |s| {
            s["tracked"] == false && (!staged || s["stage_out"]["arrived"] == 1)
        });
        assert_eq!(status["stage_out"]["queued"], staged, "job {n}: {status:#}");
        let copied = std::fs::read(emu.root_a().join(format!("results/out-{n}.dat"))).ok();
        assert_eq!(
            copied,
            staged.then(|| format!("result {n}").into_bytes()),
            "job {n}"
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
    let site = Site {
        setup: &setup,
        state_url: None,
    };
    let arrives = arrival(&emu, "slow.h5");
    let dir = tempfile::tempdir().unwrap();
    let job_script = script(dir.path(), &arrives);
    let stage_in = format!("a:/data/slow.h5:{}", arrives.display());
    let (job, _) = site.submit(&["--hold-until-staged", "--stage-in", &stage_in, &job_script]);
    let slurm = Slurm::from_path().with_conf(slurm_cluster::conf());
    ps_globus::block_on(slurm.cancel(&job)).unwrap();
    let shim = Shim::logging_releases(&arrives);
    let status = site.watch_until(&shim, &job, |s| {
        s["tracked"] == false && s["stage_in"]["failed"] == 1
    });
    assert_eq!(status["state"], "CANCELLED", "{status:#}");
    assert_eq!(status["stage_in"]["arrived"], 0);
    assert!(
        shim.releases().is_empty(),
        "a cancelled job is not released"
    );
    assert!(!arrives.exists(), "the stage-in never arrived");
}

/// A job Slurm forgot before any watcher saw it end (no accounting) is `UNKNOWN`:
/// nothing is staged out, and `job status` says why.
#[test]
fn a_job_slurm_forgot_unseen_ends_unknown_and_is_not_staged_out() {
    let emu = Emu::start();
    let setup = cluster_setup(&emu);
    let site = Site {
        setup: &setup,
        state_url: None,
    };
    let dir = tempfile::tempdir().unwrap();
    let out = arrival(&emu, "forgotten.dat");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let job_script = writing_script(dir.path(), &out, "done", 0);
    let stage_out = format!("{}:a:/results/forgotten.dat", out.display());
    let (job, _) = site.submit(&["--stage-out", &stage_out, &job_script]);
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
}

/// A watcher killed after it claimed a stage-out, and one killed after queueing it
/// (before recording it): the next watcher stages out once in all (one Globus task).
#[test]
fn a_watcher_killed_mid_stage_out_and_restarted_stages_out_once() {
    let emu = Emu::start();
    let setup = cluster_setup(&emu);
    let site = Site {
        setup: &setup,
        state_url: None,
    };
    let shim = Shim::logging_releases(Path::new("/nonexistent"));
    for (n, failpoint) in ["job-stage-out-claimed", "job-stage-out-queued"]
        .iter()
        .enumerate()
    {
        let dir = tempfile::tempdir().unwrap();
        let out = arrival(&emu, &format!("crash-out-{n}.dat"));
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let job_script = writing_script(dir.path(), &out, "out", 0);
        let stage_out = format!("{}:a:/results/crash-out-{n}.dat", out.display());
        let (job, _) = site.submit(&["--stage-out", &stage_out, &job_script]);
        assert_eq!(until_final(&job).state, JobState::Completed);
        let posted = emu.sim.stats().route("POST /v0.10/transfer");
        let path = shim.path();
        let (code, stdout, stderr) = site.run(
            &["job", "watch", "--once", "--claim-seconds", "2"],
            &[
                ("PATH", path.as_os_str()),
                ("PS_GLOBUS_FAILPOINT", std::ffi::OsStr::new(failpoint)),
            ],
        );
        assert_ne!(code, 0, "{failpoint}: {stdout}{stderr}");
        assert!(stderr.contains(failpoint), "{stderr}");
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
            std::fs::read(emu.root_a().join(format!("results/crash-out-{n}.dat"))).unwrap(),
            b"out"
        );
    }
}

/// A held job whose stage-in fails stays held, and `job status` says why; asked to
/// cancel instead, the watcher cancels it.
#[test]
fn a_held_job_whose_stage_in_failed_stays_held_with_the_reason_or_is_cancelled() {
    let emu = Emu::start();
    let setup = cluster_setup(&emu);
    let site = Site {
        setup: &setup,
        state_url: None,
    };
    let dir = tempfile::tempdir().unwrap();
    let arrives = arrival(&emu, "never.h5");
    let job_script = script(dir.path(), &arrives);
    let shim = Shim::logging_releases(&arrives);
    let stage_in = format!("a:/data/never.h5:{}", arrives.display());
    let (held, _) = site.submit(&["--hold-until-staged", "--stage-in", &stage_in, &job_script]);
    let status = site.watch_until(&shim, &held, |s| {
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
    let info = show(&held);
    assert!(info.held && info.state == JobState::Pending, "{info:?}");
    let (code, stdout, _) = site.run(&["job", "status", &held.text()], &[]);
    assert_eq!(code, 0);
    assert!(stdout.contains("stays held"), "{stdout}");

    let (cancelled, _) = site.submit(&[
        "--hold-until-staged",
        "--on-stage-in-failure",
        "cancel",
        "--stage-in",
        &format!(
            "a:/data/never-2.h5:{}",
            arrival(&emu, "never-2.h5").display()
        ),
        &job_script,
    ]);
    let status = site.watch_until(&shim, &cancelled, |s| s["tracked"] == false);
    assert_eq!(status["state"], "CANCELLED", "{status:#}");
    assert!(shim.releases().is_empty(), "{:?}", shim.releases());
    let slurm = Slurm::from_path().with_conf(slurm_cluster::conf());
    ps_globus::block_on(slurm.cancel(&held)).unwrap();
}

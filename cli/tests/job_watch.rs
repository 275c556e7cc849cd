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
        Shim::logging_slow_releases(watched, 0)
    }

    /// [`Shim::logging_releases`], each release taking `seconds` more: a second watcher
    /// then looks while the first is releasing (Slurm still says held).
    fn logging_slow_releases(watched: &Path, seconds: u32) -> Shim {
        let shim = Shim {
            dir: tempfile::tempdir().unwrap(),
        };
        shim.install(
            "scontrol",
            &format!(
                "if [ \"$1\" = release ]; then\n\
                 \x20 if [ -f '{}' ]; then was=arrived; else was=absent; fi\n\
                 \x20 echo \"release $2 $was\" >> '{}'\n\
                 \x20 sleep {seconds}\n\
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

    /// [`Shim::forgetting`], with accounting: `sacct` remembers every job as `state`.
    fn forgetting_but_accounted(state: &str) -> Shim {
        let shim = Shim::forgetting();
        shim.install("sacct", &format!("echo '{state}'\nexit 0\n"));
        shim
    }

    /// An `scontrol` that answers as a controller that is down while `down` exists.
    fn down_while(down: &Path) -> Shim {
        let shim = Shim {
            dir: tempfile::tempdir().unwrap(),
        };
        shim.install(
            "scontrol",
            &format!(
                "if [ -e '{}' ]; then\n\
                 \x20 echo 'slurm_load_jobs error: Unable to contact slurm controller (connect failure)' >&2\n\
                 \x20 exit 1\n\
                 fi\n",
                down.display()
            ),
        );
        shim
    }

    /// An `squeue` whose `--start` says Slurm expects every job to start at `start`.
    fn expecting_start(start: &str) -> Shim {
        let shim = Shim {
            dir: tempfile::tempdir().unwrap(),
        };
        shim.install(
            "squeue",
            &format!("if [ \"$1\" = --start ]; then echo '{start}'; exit 0; fi\n"),
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

impl<'a> Site<'a> {
    /// The site of `setup`, its state in SQLite in the home.
    fn sqlite(setup: &'a Setup) -> Site<'a> {
        Site {
            setup,
            state_url: None,
        }
    }

    /// One `job watch --once` pass that aborts at `failpoint`, its claims lapsing after
    /// 2 s: (exit code, what it said).
    fn watch_dying_at(&self, shim: &Shim, failpoint: &str) -> (i32, String) {
        let claim = ["--claim-seconds", "2"];
        let path = shim.path();
        let env = [
            ("PATH", path.as_os_str()),
            ("PS_GLOBUS_FAILPOINT", std::ffi::OsStr::new(failpoint)),
        ];
        let mut args = vec!["job", "watch", "--once"];
        args.extend(claim);
        let (code, stdout, stderr) = self.run(&args, &env);
        (code, format!("{stdout}{stderr}"))
    }

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
    ps_globus::block_on(slurm().show(job)).unwrap().unwrap()
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

/// A job at `b` whose script copies what arrives at `b`'s `scratch/NAME` (staged from
/// `a:/data/NAME`) to `seen` in `dir`, its output in `log`.
struct Staged {
    job: JobId,
    arrives: PathBuf,
    dir: tempfile::TempDir,
    log: PathBuf,
    said: String,
}

impl Staged {
    /// Submits it `--hold-until-staged`, with `options` too.
    fn held(site: &Site, emu: &Emu, name: &str, options: &[&str]) -> Staged {
        let arrives = arrival(emu, name);
        let dir = tempfile::tempdir().unwrap();
        let job_script = script(dir.path(), &arrives);
        let log = dir.path().join("slurm.out");
        let stage_in = format!("a:/data/{name}:{}", arrives.display());
        let mut args = vec!["--hold-until-staged", "--stage-in", &stage_in];
        args.extend_from_slice(options);
        args.extend(["-o", log.to_str().unwrap(), &job_script]);
        let (job, said) = site.submit(&args);
        Staged {
            job,
            arrives,
            dir,
            log,
            said,
        }
    }

    /// Waits for its end, which must be `COMPLETED`.
    fn completed(&self) {
        let ended = until(
            &format!("Submitted batch job {}\n", self.job),
            &self.log,
            |i| i.state.is_final(),
        );
        assert_eq!(ended.state, JobState::Completed);
    }
}

/// Submits a job at `b` that writes `result {n}` to `b`'s `scratch/NAME` and exits
/// `code`, to be staged out to `a:/results/NAME`, with `options` too: (job, its output
/// file, its directory).
fn output_job(
    site: &Site,
    emu: &Emu,
    name: &str,
    code: i32,
    options: &[&str],
) -> (JobId, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let out = arrival(emu, name);
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let path = dir.path().join("job.sh");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nprintf 'result {name}' > '{}'\nexit {code}\n",
            out.display()
        ),
    )
    .unwrap();
    let stage_out = format!("{}:a:/results/{name}", out.display());
    let log = dir.path().join("slurm.out");
    let mut args = vec!["--stage-out", &stage_out];
    args.extend_from_slice(options);
    args.extend(["-o", log.to_str().unwrap(), path.to_str().unwrap()]);
    (site.submit(&args).0, dir)
}

/// What `a:/results/NAME` holds, if anything.
fn staged_out(emu: &Emu, name: &str) -> Option<Vec<u8>> {
    std::fs::read(emu.root_a().join("results").join(name)).ok()
}

fn slurm() -> Slurm {
    Slurm::from_path().with_conf(slurm_cluster::conf())
}

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

//! The helpers of the `job_watch` tests: a site's commands (`Site`), Slurm commands that
//! log or answer as a test needs (`Shim`), and jobs that stage in or out.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ps_globus::job::{JobId, JobInfo, JobState, Slurm};
use serde_json::Value;

use crate::command::Setup;
use crate::job::{script, until};
use crate::support::emulator::Emu;
use crate::support::slurm_cluster;

/// Slurm's own command `name`, as found on `PATH`.
fn slurm_command(name: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("no {name} on PATH"))
}

/// A directory of Slurm commands that log what they are asked, then run Slurm's.
pub(crate) struct Shim {
    dir: tempfile::TempDir,
}

impl Shim {
    /// An empty directory of commands: Slurm's own, as `PATH` finds them.
    fn new() -> Shim {
        Shim {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// An `scontrol` that logs `release JOB arrived|absent` (`watched` there or not).
    pub(crate) fn logging_releases(watched: &Path) -> Shim {
        Shim::logging_slow_releases(watched, 0)
    }

    /// [`Shim::logging_releases`], each release taking `seconds` more: a second watcher
    /// then looks while the first is releasing (Slurm still says held).
    pub(crate) fn logging_slow_releases(watched: &Path, seconds: u32) -> Shim {
        let shim = Shim::new();
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
    pub(crate) fn forgetting() -> Shim {
        let shim = Shim::new();
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
    pub(crate) fn forgetting_but_accounted(state: &str) -> Shim {
        let shim = Shim::forgetting();
        shim.install("sacct", &format!("echo '{state}'\nexit 0\n"));
        shim
    }

    /// An `scontrol` that answers as a controller that is down while `down` exists.
    pub(crate) fn down_while(down: &Path) -> Shim {
        let shim = Shim::new();
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

    /// An `sbatch` that writes `started` when it is run, then takes `seconds` before
    /// Slurm's own runs.
    pub(crate) fn slow_sbatch(started: &Path, seconds: u32) -> Shim {
        let shim = Shim::new();
        shim.install(
            "sbatch",
            &format!("touch '{}'\nsleep {seconds}\n", started.display()),
        );
        shim
    }

    /// An `squeue` whose `--start` says Slurm expects every job to start at `start`.
    pub(crate) fn expecting_start(start: &str) -> Shim {
        let shim = Shim::new();
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
    pub(crate) fn releases(&self) -> Vec<String> {
        std::fs::read_to_string(self.log())
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// `PATH` with these commands first.
    pub(crate) fn path(&self) -> std::ffi::OsString {
        let mut dirs = vec![self.dir.path().to_path_buf()];
        dirs.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        std::env::join_paths(dirs).unwrap()
    }
}

/// How the commands of one test run: its setup, the state database (SQLite in the home,
/// or a PostgreSQL URL), and the `PATH` of its watchers.
pub(crate) struct Site<'a> {
    pub(crate) setup: &'a Setup,
    pub(crate) state_url: Option<String>,
}

impl<'a> Site<'a> {
    /// The site of `setup`, its state in SQLite in the home.
    pub(crate) fn sqlite(setup: &'a Setup) -> Site<'a> {
        Site {
            setup,
            state_url: None,
        }
    }

    /// One `job watch --once` pass that aborts at `failpoint`, its claims lapsing after
    /// 2 s: (exit code, what it said).
    pub(crate) fn watch_dying_at(&self, shim: &Shim, failpoint: &str) -> (i32, String) {
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
    pub(crate) fn command(
        &self,
        args: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> std::process::Command {
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

    pub(crate) fn run(
        &self,
        args: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> (i32, String, String) {
        crate::command::finished(self.command(args, env).output().unwrap())
    }

    /// Submits `job submit ARGS`; the job's id.
    pub(crate) fn submit(&self, args: &[&str]) -> (JobId, String) {
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
    pub(crate) fn watch(&self, shim: &Shim, extra: &[(&str, &std::ffi::OsStr)]) -> (i32, String) {
        let path = shim.path();
        let mut env = vec![("PATH", path.as_os_str())];
        env.extend_from_slice(extra);
        let (code, stdout, stderr) = self.run(&["job", "watch", "--once"], &env);
        (code, format!("{stdout}{stderr}"))
    }

    /// `job status JOB -F json`: its report.
    pub(crate) fn status(&self, job: &JobId) -> Value {
        let (code, stdout, stderr) = self.run(&["job", "status", &job.text(), "-F", "json"], &[]);
        assert_eq!(code, 0, "{stderr}");
        let reports: Value = serde_json::from_str(&stdout).unwrap();
        reports[0].clone()
    }

    /// Runs watcher passes until `done` says so of the job's status.
    pub(crate) fn watch_until(
        &self,
        shim: &Shim,
        job: &JobId,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
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

pub(crate) fn show(job: &JobId) -> JobInfo {
    ps_globus::block_on(slurm().show(job)).unwrap().unwrap()
}

/// Waits until Slurm says the job ended.
pub(crate) fn until_final(job: &JobId) -> JobInfo {
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
pub(crate) fn arrival(emu: &Emu, name: &str) -> PathBuf {
    emu.root_b()
        .canonicalize()
        .unwrap()
        .join("scratch")
        .join(name)
}

/// A job at `b` whose script copies what arrives at `b`'s `scratch/NAME` (staged from
/// `a:/data/NAME`) to `seen` in `dir`, its output in `log`.
pub(crate) struct Staged {
    pub(crate) job: JobId,
    pub(crate) arrives: PathBuf,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) log: PathBuf,
    pub(crate) said: String,
}

impl Staged {
    /// Submits it `--hold-until-staged`, with `options` too.
    pub(crate) fn held(site: &Site, emu: &Emu, name: &str, options: &[&str]) -> Staged {
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
    pub(crate) fn completed(&self) {
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
pub(crate) fn output_job(
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
pub(crate) fn staged_out(emu: &Emu, name: &str) -> Option<Vec<u8>> {
    std::fs::read(emu.root_a().join("results").join(name)).ok()
}

pub(crate) fn slurm() -> Slurm {
    Slurm::from_path().with_conf(slurm_cluster::conf())
}

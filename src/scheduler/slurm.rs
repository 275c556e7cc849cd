//! Slurm's commands as typed calls: `sbatch`, `scontrol`, `squeue`, `sacct`, `scancel`.
//!
//! Their machine-readable outputs are the contract (`--parsable`, `-o` formats, `scontrol
//! show job -o`'s one line of `Key=Value`s), never the tables people read. A command that
//! is missing, cannot reach the controller, or says something we cannot read is an error
//! that names the command and says what it printed.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::error::{Error, ErrorKind, Result};

/// A Slurm job: its id and, on a federation or multi-cluster site, its cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JobId {
    /// The job id, as Slurm numbers it.
    pub id: u64,
    /// The cluster `sbatch --parsable` named after a `;`, if any.
    pub cluster: Option<String>,
}

impl JobId {
    /// Reads `sbatch --parsable`'s answer: `ID` or `ID;CLUSTER`.
    pub fn parse_parsable(text: &str) -> Result<JobId> {
        let line = text.lines().map(str::trim).rfind(|l| !l.is_empty());
        let unreadable = || {
            Error::new(
                ErrorKind::Service,
                format!("`sbatch --parsable` printed {text:?}, not a job id (ID or ID;CLUSTER)"),
            )
        };
        let line = line.ok_or_else(unreadable)?;
        let (id, cluster) = match line.split_once(';') {
            Some((id, cluster)) => (id, Some(cluster.to_owned())),
            None => (line, None),
        };
        let id = id.parse().map_err(|_| unreadable())?;
        Ok(JobId { id, cluster })
    }

    /// The id as Slurm's commands take it (`-M CLUSTER` goes separately).
    pub fn text(&self) -> String {
        self.id.to_string()
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.cluster {
            Some(cluster) => write!(f, "{};{cluster}", self.id),
            None => write!(f, "{}", self.id),
        }
    }
}

/// A job's state, as Slurm names it (`JobState=` of `scontrol`, `%T` of `squeue`,
/// `State` of `sacct`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Queued (held or not).
    Pending,
    /// Running.
    Running,
    /// Suspended by an administrator or a preemption.
    Suspended,
    /// Ended, its epilog still running.
    Completing,
    /// Ended with exit code 0.
    Completed,
    /// Ended with a non-zero exit code or another failure.
    Failed,
    /// Cancelled (`scancel`).
    Cancelled,
    /// Ran out of its time limit.
    Timeout,
    /// Its node failed.
    NodeFail,
    /// Preempted.
    Preempted,
    /// Ran out of memory.
    OutOfMemory,
    /// Its node failed to boot.
    BootFail,
    /// Missed its `--deadline`.
    Deadline,
    /// Any other word Slurm uses (`REQUEUED`, `RESIZING`, …), kept as printed.
    Other(String),
}

impl JobState {
    /// Reads a state word. `sacct` adds who cancelled (`CANCELLED by 0`): only the first
    /// word counts.
    pub fn parse(text: &str) -> JobState {
        let word = text.split_whitespace().next().unwrap_or_default();
        match word {
            "PENDING" => JobState::Pending,
            "RUNNING" => JobState::Running,
            "SUSPENDED" => JobState::Suspended,
            "COMPLETING" => JobState::Completing,
            "COMPLETED" => JobState::Completed,
            "FAILED" => JobState::Failed,
            "CANCELLED" => JobState::Cancelled,
            "TIMEOUT" => JobState::Timeout,
            "NODE_FAIL" => JobState::NodeFail,
            "PREEMPTED" => JobState::Preempted,
            "OUT_OF_MEMORY" => JobState::OutOfMemory,
            "BOOT_FAIL" => JobState::BootFail,
            "DEADLINE" => JobState::Deadline,
            other => JobState::Other(other.to_owned()),
        }
    }

    /// Whether the job has ended: nothing of it runs, nor will (`COMPLETING` has not:
    /// its epilog still runs).
    pub fn is_final(&self) -> bool {
        !matches!(
            self,
            JobState::Pending
                | JobState::Running
                | JobState::Suspended
                | JobState::Completing
                | JobState::Other(_)
        )
    }

    /// Slurm's word for it.
    pub fn as_str(&self) -> &str {
        match self {
            JobState::Pending => "PENDING",
            JobState::Running => "RUNNING",
            JobState::Suspended => "SUSPENDED",
            JobState::Completing => "COMPLETING",
            JobState::Completed => "COMPLETED",
            JobState::Failed => "FAILED",
            JobState::Cancelled => "CANCELLED",
            JobState::Timeout => "TIMEOUT",
            JobState::NodeFail => "NODE_FAIL",
            JobState::Preempted => "PREEMPTED",
            JobState::OutOfMemory => "OUT_OF_MEMORY",
            JobState::BootFail => "BOOT_FAIL",
            JobState::Deadline => "DEADLINE",
            JobState::Other(word) => word,
        }
    }
}

/// What `scontrol show job -o` says of a job that Slurm still knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobInfo {
    /// `JobState=`.
    pub state: JobState,
    /// `Reason=` (`JobHeldUser`, `Priority`, `None`, …).
    pub reason: String,
    /// Held by its user or an administrator (`Priority=0` with a held reason).
    pub held: bool,
    /// `ExitCode=` as `CODE:SIGNAL`.
    pub exit_code: String,
}

impl JobInfo {
    /// Reads `scontrol show job -o`'s one line of space-separated `Key=Value`s. Values
    /// with spaces (a `Command=` path, `Comment=`) do not break the keys read here:
    /// they come before any value that could hold a space.
    pub fn parse_scontrol(line: &str) -> Result<JobInfo> {
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
        };
        let state = field("JobState").ok_or_else(|| {
            Error::new(
                ErrorKind::Service,
                format!("`scontrol show job -o` printed no JobState: {line:?}"),
            )
        })?;
        let reason = field("Reason").unwrap_or("None").to_owned();
        let held = field("Priority") == Some("0")
            || matches!(reason.as_str(), "JobHeldUser" | "JobHeldAdmin");
        Ok(JobInfo {
            state: JobState::parse(state),
            reason,
            held,
            exit_code: field("ExitCode").unwrap_or("0:0").to_owned(),
        })
    }
}

/// Slurm's commands on this host: those on `PATH`, or in one directory; with the
/// configuration `SLURM_CONF` names, or another file.
#[derive(Clone, Debug, Default)]
pub struct Slurm {
    bin_dir: Option<PathBuf>,
    conf: Option<PathBuf>,
    /// Variables set for the commands (and so for a submitted job's environment).
    env: Vec<(OsString, OsString)>,
    /// Variables kept out of a submitted job's environment, besides ours
    /// ([`SECRET_VARIABLES`](crate::settings::SECRET_VARIABLES)).
    withheld: Vec<OsString>,
}

impl Slurm {
    /// The commands found on `PATH`, with the environment's configuration.
    pub fn from_path() -> Slurm {
        Slurm::default()
    }

    /// The commands in `dir` (a site's own build, say).
    pub fn in_dir(mut self, dir: impl Into<PathBuf>) -> Slurm {
        self.bin_dir = Some(dir.into());
        self
    }

    /// The cluster that the configuration file `conf` describes (its `SLURM_CONF`).
    pub fn with_conf(mut self, conf: impl Into<PathBuf>) -> Slurm {
        self.conf = Some(conf.into());
        self
    }

    /// Sets `name` to `value` for the commands; `sbatch` hands it to the job (its
    /// default `--export=ALL`).
    pub fn env(mut self, name: impl Into<OsString>, value: impl Into<OsString>) -> Slurm {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Keeps `name` out of the environment of the jobs it submits: a variable that holds
    /// a secret (a Redis password a configuration names, say). Ours always are.
    pub fn withholding(mut self, name: impl Into<OsString>) -> Slurm {
        self.withheld.push(name.into());
        self
    }

    /// Submits `script` with `args`, passing `options` to `sbatch` before it; held
    /// (`--hold`) if asked. Its id.
    pub async fn submit(
        &self,
        options: &[OsString],
        script: &Path,
        args: &[OsString],
        hold: bool,
    ) -> Result<JobId> {
        let mut argv: Vec<OsString> = vec!["--parsable".into()];
        if hold {
            argv.push("--hold".into());
        }
        argv.extend(options.iter().cloned());
        argv.push(script.into());
        argv.extend(args.iter().cloned());
        let out = self.run("sbatch", &argv).await?;
        JobId::parse_parsable(&out)
    }

    /// `scontrol show job -o ID`: the job, or `None` once Slurm has forgotten it
    /// (`MinJobAge` after its end, 300 s by default) or never knew it.
    pub async fn show(&self, job: &JobId) -> Result<Option<JobInfo>> {
        let mut argv: Vec<OsString> = Vec::new();
        cluster_args(job, &mut argv);
        argv.extend(["show".into(), "job".into(), "-o".into(), job.text().into()]);
        match self.run("scontrol", &argv).await {
            Ok(out) => {
                let line = out.lines().find(|l| l.contains("JobState=")).unwrap_or("");
                JobInfo::parse_scontrol(line).map(Some)
            }
            Err(e) if e.to_string().contains("Invalid job id") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `sacct`'s state of the job (its allocation, `-X`), or `None` where there is no
    /// accounting (no slurmdbd) or it has no record of the job.
    pub async fn accounted(&self, job: &JobId) -> Result<Option<JobState>> {
        let mut argv: Vec<OsString> = Vec::new();
        cluster_args(job, &mut argv);
        argv.extend(
            ["-n", "-P", "-X", "-o", "State", "-j"]
                .map(OsString::from)
                .into_iter()
                .chain([job.text().into()]),
        );
        match self.run("sacct", &argv).await {
            Ok(out) => Ok(out
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .map(JobState::parse)),
            Err(e) if no_accounting(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// When Slurm expects a pending job to start (`squeue --start`), as it prints it
    /// (`2026-12-06T18:00:00`); `None` when it does not know (`N/A`: held, or not yet
    /// planned by the backfill scheduler).
    pub async fn expected_start(&self, job: &JobId) -> Result<Option<String>> {
        let mut argv: Vec<OsString> = Vec::new();
        cluster_args(job, &mut argv);
        argv.extend(
            ["--start", "-h", "-o", "%S", "-j"]
                .map(OsString::from)
                .into_iter()
                .chain([job.text().into()]),
        );
        let out = self.run("squeue", &argv).await?;
        Ok(out
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && *l != "N/A")
            .map(str::to_owned))
    }

    /// Releases a held job (`scontrol release`).
    pub async fn release(&self, job: &JobId) -> Result<()> {
        let mut argv: Vec<OsString> = Vec::new();
        cluster_args(job, &mut argv);
        argv.extend(["release".into(), job.text().into()]);
        self.run("scontrol", &argv).await.map(drop)
    }

    /// Puts a job back in the queue, held (`scontrol requeuehold`): from inside a
    /// running job, its batch step ends and the job waits for a release.
    pub async fn requeue_held(&self, job: &JobId) -> Result<()> {
        let mut argv: Vec<OsString> = Vec::new();
        cluster_args(job, &mut argv);
        argv.extend(["requeuehold".into(), job.text().into()]);
        self.run("scontrol", &argv).await.map(drop)
    }

    /// Cancels a job (`scancel`).
    pub async fn cancel(&self, job: &JobId) -> Result<()> {
        let mut argv: Vec<OsString> = Vec::new();
        cluster_args(job, &mut argv);
        argv.push(job.text().into());
        self.run("scancel", &argv).await.map(drop)
    }

    /// Runs `command` with `argv`; its standard output, or an error naming the command
    /// with what it printed.
    async fn run(&self, command: &str, argv: &[OsString]) -> Result<String> {
        let program = match &self.bin_dir {
            Some(dir) => dir.join(command),
            None => PathBuf::from(command),
        };
        let shown = || {
            let words: Vec<String> = argv
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            format!("{command} {}", words.join(" "))
        };
        let mut child = tokio::process::Command::new(&program);
        if let Some(conf) = &self.conf {
            child.env("SLURM_CONF", conf);
        }
        child.envs(self.env.iter().map(|(k, v)| (k, v)));
        // sbatch copies its environment into the job, which slurmctld saves in its
        // state directory and hands to the job's nodes: no credential of ours goes there.
        for name in crate::settings::SECRET_VARIABLES {
            child.env_remove(name);
        }
        for name in &self.withheld {
            child.env_remove(name);
        }
        // A process group of its own: a Ctrl-C at the terminal is the caller's to handle
        // (`job submit` finishes a submission it began), not a kill of sbatch half-way,
        // which may leave a job queued that nobody knows the id of.
        let out = child
            .args(argv)
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| {
                let kind = if e.kind() == std::io::ErrorKind::NotFound {
                    ErrorKind::Unsupported
                } else {
                    ErrorKind::Internal
                };
                Error::with_source(
                    kind,
                    format!(
                        "cannot run Slurm's `{command}` ({}): is Slurm installed on this \
                         host (a login node), and on PATH?",
                        program.display()
                    ),
                    e,
                )
            })?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            return Ok(stdout);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let said = stderr.trim();
        let kind = if said.contains("Unable to contact slurm controller")
            || said.contains("Socket timed out")
            || said.contains("Connection refused")
        {
            ErrorKind::Unreachable
        } else {
            ErrorKind::Service
        };
        Err(Error::new(
            kind,
            format!(
                "`{}` failed ({}): {}",
                shown(),
                out.status,
                if said.is_empty() { stdout.trim() } else { said }
            ),
        ))
    }
}

/// `-M CLUSTER` for a job of a named cluster.
fn cluster_args(job: &JobId, argv: &mut Vec<OsString>) {
    if let Some(cluster) = &job.cluster {
        argv.extend(["-M".into(), cluster.into()]);
    }
}

/// Whether `sacct` failed because this site keeps no accounting.
fn no_accounting(e: &Error) -> bool {
    let text = e.to_string();
    text.contains("accounting storage is disabled")
        || text.contains("Slurm accounting storage is disabled")
        || text.contains("Problem talking to the database")
}

#[cfg(test)]
#[path = "slurm_tests.rs"]
mod tests;

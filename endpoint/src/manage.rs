//! Managing endpoints in a home directory: configure, list, stop, remove. (Starting is
//! [`serve::run`](crate::serve::run), which the command runs in a detached child.)

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ps_globus::connector::endpoint::config::{self, EndpointFileConfig};
use rustix::process::{Pid, Signal, kill_process, test_kill_process};

use crate::serve::ServeError;

/// The process id file in an endpoint's directory while it runs.
pub const PID_FILE: &str = "daemon.pid";

/// The log file a detached endpoint writes.
pub const LOG_FILE: &str = "log.txt";

/// Whether an endpoint runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Its process is alive.
    Running(i32),
    /// It is not.
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Running(_) => "RUNNING",
            Status::Stopped => "STOPPED",
        })
    }
}

/// Makes `home/<name>/` (owner-only) with a new configuration; refuses an existing one.
pub fn configure(home: &Path, config: &EndpointFileConfig) -> Result<PathBuf, ServeError> {
    config::check_name(&config.name).map_err(|e| ServeError(e.to_string()))?;
    let dir = home.join(&config.name);
    if dir.join(config::CONFIG_FILE).exists() {
        return Err(ServeError(format!(
            "an endpoint named {} is already configured in {} (remove it first with `ps-globus \
             endpoint remove {}`)",
            config.name,
            dir.display(),
            config.name
        )));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| ServeError(format!("making {}: {e}", dir.display())))?;
    config.save(&dir).map_err(|e| ServeError(e.to_string()))?;
    Ok(dir)
}

/// The endpoint named `name` under `home`: its directory and configuration.
pub fn find(home: &Path, name: &str) -> Result<(PathBuf, EndpointFileConfig), ServeError> {
    config::check_name(name).map_err(|e| ServeError(e.to_string()))?;
    let dir = home.join(name);
    if !dir.join(config::CONFIG_FILE).exists() {
        return Err(ServeError(format!(
            "no endpoint named {name} in {} (`ps-globus endpoint configure {name}` makes one)",
            home.display()
        )));
    }
    let config = EndpointFileConfig::load(&dir).map_err(|e| ServeError(e.to_string()))?;
    Ok((dir, config))
}

/// The pid in `dir`'s pid file, if its process is alive.
pub fn status(dir: &Path) -> Status {
    let pid = std::fs::read_to_string(dir.join(PID_FILE))
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok());
    match pid.and_then(Pid::from_raw) {
        Some(pid) if test_kill_process(pid).is_ok() => Status::Running(pid.as_raw_nonzero().get()),
        _ => Status::Stopped,
    }
}

/// Writes this process's pid into `dir`'s pid file, refusing if another live process
/// holds it.
pub fn claim_pid_file(dir: &Path) -> Result<(), ServeError> {
    if let Status::Running(pid) = status(dir)
        && pid != std::process::id() as i32
    {
        return Err(ServeError(format!(
            "the endpoint in {} is already running (pid {pid})",
            dir.display()
        )));
    }
    std::fs::write(dir.join(PID_FILE), std::process::id().to_string())
        .map_err(|e| ServeError(format!("writing the pid file in {}: {e}", dir.display())))
}

/// Stops the endpoint in `dir`: SIGTERM, then SIGKILL if it has not exited after `grace`.
/// Returns whether it was running.
pub async fn stop(dir: &Path, grace: Duration) -> Result<bool, ServeError> {
    let Status::Running(raw) = status(dir) else {
        return Ok(false);
    };
    let pid = Pid::from_raw(raw).expect("a live pid is positive");
    kill_process(pid, Signal::TERM)
        .map_err(|e| ServeError(format!("signalling pid {raw}: {e}")))?;
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        if test_kill_process(pid).is_err() {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::warn!("pid {raw} did not stop within {grace:?}; killing it");
    let _ = kill_process(pid, Signal::KILL);
    let _ = std::fs::remove_file(dir.join(PID_FILE));
    Ok(true)
}

/// Removes the endpoint in `dir` and its objects; refused while it runs.
pub fn remove(dir: &Path) -> Result<(), ServeError> {
    if let Status::Running(pid) = status(dir) {
        return Err(ServeError(format!(
            "the endpoint in {} is running (pid {pid}): stop it first",
            dir.display()
        )));
    }
    std::fs::remove_dir_all(dir).map_err(|e| ServeError(format!("removing {}: {e}", dir.display())))
}

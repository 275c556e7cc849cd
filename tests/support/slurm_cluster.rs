//! A throw-away single-node Slurm cluster for tests: the one `scripts/test` started
//! (its configuration in `PS_GLOBUS_TEST_SLURM_CONF`), else one this test process
//! starts itself with `scripts/slurm-throwaway.sh` (Debian's packages, installed when
//! missing; needs root) and stops when it exits.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The script that starts and stops clusters, in the repository's `scripts/` (above the
/// package of the test binary: the library's, or the command's in `cli/`).
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join("scripts/slurm-throwaway.sh"))
        .find(|script| script.exists())
        .expect("scripts/slurm-throwaway.sh above the package")
}

/// The cluster's `slurm.conf` (give it to `Slurm::with_conf`, or as `SLURM_CONF`).
pub fn conf() -> &'static Path {
    static CONF: OnceLock<PathBuf> = OnceLock::new();
    CONF.get_or_init(|| match std::env::var("PS_GLOBUS_TEST_SLURM_CONF") {
        Ok(conf) if !conf.is_empty() => PathBuf::from(conf),
        _ => start(),
    })
}

/// The directory of the cluster this process started, stopped at exit.
static STARTED: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn stop_at_exit() {
    if let Some(dir) = STARTED.get() {
        let _ = Command::new("bash")
            .arg("-c")
            .arg("source \"$0\" && slurm_dir=\"$1\" && stop_slurm")
            .arg(script())
            .arg(dir)
            .status();
    }
}

/// Starts a cluster; its `slurm.conf`.
fn start() -> PathBuf {
    let out = Command::new("bash")
        .arg("-c")
        .arg("source \"$0\" && start_slurm >&2 && echo \"$slurm_dir\"")
        .arg(script())
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "the throw-away Slurm cluster did not start (it needs root, and Debian's slurmctld \
         slurmd slurm-client munge; scripts/test installs them): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let _ = STARTED.set(dir.clone());
    // SAFETY: registers a plain function with no arguments, run once at exit.
    #[allow(unsafe_code)]
    unsafe {
        libc::atexit(stop_at_exit)
    };
    dir.join("slurm.conf")
}

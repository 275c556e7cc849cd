//! Running the `ps-globus` binary against an emulator, as a user would.

use std::process::Command;

use ps_globus::config::{Config, SiteConfig};
use serde_json::Value;

use crate::support::emulator::{Emu, TOKEN};

/// A configured home (sites `a` and `b` of `emu`) for running the binary.
pub struct Setup {
    pub home: tempfile::TempDir,
    pub transfer_url: String,
    pub site: String,
}

impl Setup {
    pub fn new(emu: &Emu) -> Setup {
        let home = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        for (name, id, root) in [("a", &emu.a, emu.root_a()), ("b", &emu.b, emu.root_b())] {
            config.sites.insert(name.into(), {
                let mut built = SiteConfig::default();
                built.collection = id.parse().unwrap();
                built.collection_path = "/".into();
                built.local_path = root.canonicalize().unwrap();
                built.host_regex = None;
                built
            });
        }
        config.save_to(&home.path().join("config.toml")).unwrap();
        Setup {
            home,
            transfer_url: emu.sim.transfer_url().into(),
            site: "a".into(),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ps-globus"));
        c.args(args)
            .env("PS_GLOBUS_HOME", self.home.path())
            .env("PS_GLOBUS_CONFIG", self.home.path().join("config.toml"))
            .env("PS_GLOBUS_TRANSFER_URL", &self.transfer_url)
            .env("PS_GLOBUS_ACCESS_TOKEN", TOKEN)
            .env("PS_GLOBUS_SITE", &self.site)
            .env_remove("PS_GLOBUS_CLIENT_ID")
            .env_remove("PS_GLOBUS_CLIENT_SECRET");
        c
    }

    /// (exit code, stdout, stderr)
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        self.run_env(args, &[])
    }

    /// Runs `ps-globus ARGS` (a shell word list) in a pseudo-terminal (`script`), as a
    /// user at a terminal would: (exit code, everything it drew).
    pub fn in_terminal(&self, args: &str) -> (i32, String) {
        let command = self.command(&[]);
        let mut script = Command::new("script");
        let bin = env!("CARGO_BIN_EXE_ps-globus");
        script.args(["-qec", &format!("{bin} {args}"), "/dev/null"]);
        for (k, v) in command.get_envs() {
            match v {
                Some(v) => script.env(k, v),
                None => script.env_remove(k),
            };
        }
        let out = script.env("TERM", "xterm").output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// (exit code, stdout, stderr) of `ps-globus ARGS` with `env` added to the setup's.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
        let mut command = self.command(args);
        for (k, v) in env {
            command.env(k, v);
        }
        finished(command.output().unwrap())
    }

    /// Starts `ps-globus ARGS` (with `env` added) and reads its first line, which must
    /// be `Task ID: …`: the task exists and the command is waiting on it. Returns the
    /// child (its stdout read so far) and the task id.
    pub fn spawn_until_task(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> (std::process::Child, String) {
        use std::io::BufRead;
        let mut command = self.command(args);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let task = line
            .strip_prefix("Task ID: ")
            .unwrap_or_else(|| panic!("not a task id: {line:?}"))
            .trim()
            .to_owned();
        (child, task)
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let (code, stdout, stderr) = self.run(args);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
    }
}

/// The task ids a human-readable `transfer` printed (`Task ID: …` lines, as globus-cli).
pub fn task_ids(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("Task ID: "))
        .map(str::to_owned)
        .collect()
}

/// `(exit code, stdout, stderr)` of a finished child.
pub fn finished(out: std::process::Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

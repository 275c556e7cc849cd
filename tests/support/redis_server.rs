//! Throw-away `redis-server` processes for tests, from Debian's packages (`scripts/test`
//! installs `redis-server` when missing): one per test, on a free loopback port (and a
//! Unix socket) in a temporary directory, with persistence off, killed on drop. A test
//! can stop, restart, pause (`SIGSTOP`) and resume the server.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use ps_globus::connector::RedisConfig;

/// One running (or stopped) test server.
pub struct RedisServer {
    dir: tempfile::TempDir,
    /// The loopback port (plain TCP, or TLS for [`RedisServer::start_tls`]).
    pub port: u16,
    args: Vec<String>,
    tls: bool,
    child: Option<Child>,
}

impl RedisServer {
    /// A server with no password.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A server with extra `redis-server` options (`--requirepass`, `--maxmemory`, …).
    pub fn start_with(extra: &[&str]) -> Self {
        Self::launch(extra, false)
    }

    /// A server that speaks only TLS, with a certificate for `localhost` and 127.0.0.1
    /// signed by itself: [`RedisServer::ca_file`] is the CA a client must trust.
    pub fn start_tls() -> Self {
        Self::launch(&[], true)
    }

    fn launch(extra: &[&str], tls: bool) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ps-globus-redis.")
            .tempdir()
            .unwrap();
        let port = free_port();
        let mut args: Vec<String> = vec![
            "--bind".into(),
            "127.0.0.1".into(),
            "--unixsocket".into(),
            dir.path().join("redis.sock").to_str().unwrap().into(),
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            dir.path().to_str().unwrap().into(),
        ];
        if tls {
            make_certificate(dir.path());
            let file = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
            args.extend(
                [
                    "--port",
                    "0",
                    "--tls-port",
                    &port.to_string(),
                    "--tls-cert-file",
                    &file("cert.pem"),
                    "--tls-key-file",
                    &file("key.pem"),
                    "--tls-ca-cert-file",
                    &file("ca.pem"),
                    "--tls-auth-clients",
                    "no",
                ]
                .map(String::from),
            );
        } else {
            args.extend(["--port".to_owned(), port.to_string()]);
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut server = RedisServer {
            dir,
            port,
            args,
            tls,
            child: None,
        };
        server.restart();
        server
    }

    /// A connector config for this server (over TCP).
    pub fn config(&self) -> RedisConfig {
        let mut config = RedisConfig::new("127.0.0.1", self.port);
        if self.tls {
            config.tls = true;
            config.tls_ca_file = Some(self.ca_file());
        }
        config
    }

    /// The server's Unix socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// The CA file a TLS client must trust.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Starts the server (again, on the same port, empty), returning once it accepts
    /// connections: it says so on its standard output.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        let mut child = Command::new("redis-server")
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}): install it (apt-get install redis-server; \
                     scripts/test does)"
                )
            });
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut said = Vec::new();
        for line in stdout.lines() {
            let line = line.unwrap_or_default();
            if line.contains("Ready to accept connections") {
                self.child = Some(child);
                return;
            }
            said.push(line);
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "redis-server exited before it was ready:\n{}",
            said.join("\n")
        );
    }

    /// Kills the server (its data goes with it: persistence is off).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (`SIGSTOP`): it accepts nothing and answers nothing.
    pub fn pause(&self) {
        self.signal(rustix::process::Signal::STOP);
    }

    /// Thaws a paused server.
    pub fn resume(&self) {
        self.signal(rustix::process::Signal::CONT);
    }

    fn signal(&self, signal: rustix::process::Signal) {
        let pid = self.child.as_ref().expect("the server is running").id();
        let pid = rustix::process::Pid::from_raw(pid as i32).expect("a child's pid is positive");
        rustix::process::kill_process(pid, signal).expect("our own child takes a signal");
    }

    /// Runs `redis-cli` against the server (over its Unix socket) and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut command = Command::new("redis-cli");
        command.arg("-s").arg(self.socket());
        if let Some(at) = self.args.iter().position(|a| a == "--requirepass") {
            command
                .arg("--no-auth-warning")
                .arg("-a")
                .arg(&self.args[at + 1]);
        }
        let out = command.args(args).output().expect("redis-cli runs");
        assert!(out.status.success(), "redis-cli {args:?} failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// How many times the server ran `command` (from `INFO commandstats`).
    pub fn calls(&self, command: &str) -> u64 {
        let stats = self.cli(&["INFO", "commandstats"]);
        let prefix = format!("cmdstat_{}:calls=", command.to_lowercase());
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next()?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.resume();
        }
        self.stop();
    }
}

/// A loopback port nothing listens on now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A certificate authority (`ca.pem`) and a server certificate for `localhost` and
/// 127.0.0.1 that it signed (`cert.pem`, `key.pem`), in `dir`, by openssl's CLI.
fn make_certificate(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "key.pem",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "cert.pem",
    ]);
}

/// A multi connector that sends objects of up to `max_small` bytes to Redis at `server`
/// (child `small`, priority 1) and the rest to `large` (child `large`).
pub fn small_to_redis(
    server: &RedisServer,
    max_small: u64,
    large: ps_globus::connector::ConnectorConfig,
) -> ps_globus::connector::MultiConnector {
    use ps_globus::connector::{Connector, MultiConnector, Policy, RedisConnector};
    let small = Policy::default().max_size(max_small).priority(1);
    let redis = RedisConnector::new(server.config()).unwrap().config();
    MultiConnector::new([("small", redis, small), ("large", large, Policy::default())]).unwrap()
}

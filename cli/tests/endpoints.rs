//! Endpoints as real processes on loopback: ProxyStore's REST API as its client sees it,
//! the owner check, storage across restarts, the commands as a user runs them; and the
//! harness `endpoint_peering.rs` shares (a home of endpoints, processes, a relay).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use bytes::Bytes;
use ps_globus::connector::endpoint::config::EndpointFileConfig;
use ps_globus::connector::{Connector, EndpointConfig, EndpointConnector, PutOptions};
use serde_json::Value;
use uuid::Uuid;

use crate::support::until;

/// A `PROXYSTORE_HOME` with endpoints in it.
pub struct Home {
    dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
}

/// A child process, killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Home {
    pub fn new() -> Home {
        Home {
            dir: tempfile::tempdir().unwrap(),
            env: Vec::new(),
        }
    }

    /// A home in `parent` (a directory other users can traverse, for tests that connect
    /// as another user).
    pub fn new_in(parent: &str) -> Home {
        Home {
            dir: tempfile::tempdir_in(parent).unwrap(),
            env: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ps-globus"));
        c.args(args)
            .env("PROXYSTORE_HOME", self.path())
            .env("PS_GLOBUS_HOME", self.path().join(".ps-globus"))
            .env(
                "PS_GLOBUS_CONFIG",
                self.path().join(".ps-globus/config.toml"),
            )
            .env_remove("PS_GLOBUS_CLIENT_ID")
            .env_remove("PS_GLOBUS_CLIENT_SECRET")
            .env_remove("PROXYSTORE_GLOBUS_CLIENT_ID")
            .env_remove("PROXYSTORE_GLOBUS_CLIENT_SECRET");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.command(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn configure(&self, name: &str, extra: &[&str]) -> Uuid {
        let mut args = vec!["endpoint", "configure", name];
        args.extend_from_slice(extra);
        let (code, out, err) = self.run(&args);
        assert_eq!(code, 0, "{err}");
        out.trim().parse().unwrap()
    }

    pub fn config(&self, name: &str) -> EndpointFileConfig {
        EndpointFileConfig::load(&self.path().join(name)).unwrap()
    }

    /// Runs endpoint `name` in the foreground (a child the test can kill), once it serves.
    pub async fn start(&self, name: &str) -> Proc {
        let child = self
            .command(&["-v", "endpoint", "start", name, "--no-detach"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id().to_string();
        let proc = Proc(child);
        let dir = self.path().join(name);
        // This child's own pid file and an answer from its port: a killed predecessor
        // leaves its host, socket and pid file behind.
        until(&format!("{name} to serve"), async || {
            std::fs::read_to_string(dir.join("daemon.pid")).is_ok_and(|p| p == pid)
                && EndpointFileConfig::load(&dir).is_ok_and(|c| c.host.is_some())
                && http()
                    .get(format!("{}endpoint", self.base(name)))
                    .send()
                    .await
                    .is_ok()
        })
        .await;
        proc
    }

    /// A connector whose home is `endpoint`.
    pub fn connector(&self, endpoint: Uuid) -> EndpointConnector {
        EndpointConnector::new(EndpointConfig {
            endpoints: vec![endpoint],
            proxystore_dir: Some(self.path().to_owned()),
            timeout_ms: None,
        })
        .unwrap()
    }

    pub fn base(&self, name: &str) -> String {
        let config = self.config(name);
        format!("http://{}:{}/", config.host.unwrap(), config.port)
    }

    /// `/ps-globus/status` of endpoint `name`.
    pub async fn status(&self, name: &str) -> Value {
        http()
            .get(format!("{}ps-globus/status", self.base(name)))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// `ps-globus relay serve` on a free loopback port; its `tcp://` address.
pub fn relay(home: &Home, listen: &str, extra: &[&str]) -> (Proc, String) {
    let mut args = vec!["relay", "serve", "--listen", listen];
    args.extend_from_slice(extra);
    relay_from(home.command(&args))
}

/// Runs `command` (a `relay serve`) and reads the address from its first line.
pub fn relay_from(mut command: Command) -> (Proc, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let doc: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    (Proc(child), doc["address"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rest_api_answers_as_proxystores_does() {
    let home = Home::new();
    let me = home.configure("ep", &["--max-object-size", "1000"]);
    let _ep = home.start("ep").await;
    let base = home.base("ep");
    let http = http();
    let call = async |method: reqwest::Method, route: &str, body: Option<Vec<u8>>| {
        let mut request = http.request(method, format!("{base}{route}"));
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    };
    use reqwest::Method as M;
    assert_eq!(call(M::GET, "", None).await, (200, String::new()));
    assert_eq!(
        call(M::GET, "endpoint", None).await,
        (200, format!(r#"{{"uuid":"{me}"}}"#))
    );
    assert_eq!(
        call(M::GET, "get", None).await,
        (400, "request missing key".into())
    );
    assert_eq!(
        call(M::GET, "get?key=k&endpoint=not-a-uuid", None).await,
        (400, "not-a-uuid is not a valid UUID4".into())
    );
    assert_eq!(
        call(M::GET, "get?key=k", None).await,
        (404, "no data associated with request key".into())
    );
    assert_eq!(
        call(M::POST, "set?key=k", Some(Vec::new())).await,
        (400, "received empty payload".into())
    );
    assert_eq!(
        call(
            M::POST,
            &format!("set?key=k&endpoint={me}"),
            Some(b"v1".to_vec())
        )
        .await
        .0,
        200
    );
    assert_eq!(call(M::GET, "get?key=k", None).await, (200, "v1".into()));
    assert_eq!(
        call(M::GET, "exists?key=k", None).await,
        (200, r#"{"exists":true}"#.into())
    );
    // Over max_object_size: 413, and nothing stored.
    let (status, body) = call(M::POST, "set?key=big", Some(vec![7u8; 1001])).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(
        call(M::GET, "exists?key=big", None).await.1,
        r#"{"exists":false}"#
    );
    // A chunked body (ProxyStore's client streams 1 MB chunks) is one object.
    let chunks = futures_util::stream::iter(
        [&b"chunk-one,"[..], &b"chunk-two"[..]]
            .map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c))),
    );
    let response = http
        .post(format!("{base}set?key=chunked"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        call(M::GET, "get?key=chunked", None).await.1,
        "chunk-one,chunk-two"
    );
    // Evicting twice is fine.
    assert_eq!(call(M::POST, "evict?key=k", None).await.0, 200);
    assert_eq!(call(M::POST, "evict?key=k", None).await.0, 200);
    assert_eq!(call(M::GET, "get?key=k", None).await.0, 404);
    // A peer this endpoint cannot reach (it has no relay): 500 with ProxyStore's text.
    let stranger = Uuid::new_v4();
    let (status, body) = call(M::GET, &format!("get?key=k&endpoint={stranger}"), None).await;
    assert_eq!(status, 500);
    assert!(
        body.starts_with(&format!("Request to peer {stranger} failed")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn another_users_connection_is_refused_on_loopback() {
    let home = Home::new();
    home.configure("ep", &[]);
    let _ep = home.start("ep").await;
    let url = format!("{}endpoint", home.base("ep"));
    let curl = |uid: Option<u32>| {
        let mut c = Command::new("curl");
        c.args([
            "-s",
            "--noproxy",
            "*",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            &url,
        ]);
        if let Some(uid) = uid {
            std::os::unix::process::CommandExt::uid(&mut c, uid);
        }
        let out = c.output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let own = curl(None);
    assert!(own.ends_with("\n200"), "{own}");
    if !rustix::process::getuid().is_root() {
        eprintln!("not root: cannot connect as another user; only the owner's side was checked");
        return;
    }
    // uid 65534 (nobody): the same request from another user's socket.
    let foreign = curl(Some(65534));
    assert!(foreign.ends_with("\n403"), "{foreign}");
    assert!(foreign.contains("belongs to uid 65534"), "{foreign}");
    // The Unix socket is the owner's only: its directory is 0700.
    let mode = std::fs::metadata(home.path().join("ep")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o700
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn another_users_connection_to_the_socket_is_refused_even_where_permissions_allow_it() {
    if !rustix::process::getuid().is_root() {
        eprintln!("not root: cannot connect as another user");
        return;
    }
    // Under /tmp (TMPDIR may be private), with every permission opened on the way: a user
    // who loosened them still serves only themselves (SO_PEERCRED).
    let home = Home::new_in("/tmp");
    home.configure("ep", &[]);
    let _ep = home.start("ep").await;
    let socket = home.path().join("ep/endpoint.sock");
    for (path, mode) in [
        (home.path().to_owned(), 0o755),
        (home.path().join("ep"), 0o755),
        (socket.clone(), 0o666),
    ] {
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .unwrap();
    }
    let mut c = Command::new("curl");
    c.args(["-s", "-o", "-", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(&socket)
        .arg("http://endpoint/endpoint");
    std::os::unix::process::CommandExt::uid(&mut c, 65534);
    let out = String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned();
    assert!(out.ends_with("\n403"), "{out}");
    assert!(out.contains("belongs to uid 65534"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn objects_outlive_a_restart_beyond_the_memory_budget_and_damage_is_caught() {
    let home = Home::new();
    let me = home.configure("ep", &["--memory-budget", "3000"]);
    let ep = home.start("ep").await;
    let connector = home.connector(me);
    let objects: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 1500]).collect();
    let mut keys = Vec::new();
    for object in &objects {
        keys.push(connector.put(object, &PutOptions::default()).await.unwrap());
    }
    let status = home.status("ep").await;
    assert_eq!(status["objects"], 5);
    assert!(status["memory_bytes"].as_u64().unwrap() <= 3000, "{status}");
    drop(ep);

    // Killed (SIGKILL), restarted: every object is there, read back from the database.
    let _ep = home.start("ep").await;
    let connector = home.connector(me);
    for (key, object) in keys.iter().zip(&objects) {
        assert_eq!(
            connector.get(key).await.unwrap().as_deref(),
            Some(&object[..])
        );
    }
    // One row damaged on disk (object 1 is all ones; zeroed): refused, not served, and
    // removed.
    assert!(
        zero_a_row(&home.path().join("ep/objects.db"), keys[1].id()),
        "the row was damaged"
    );
    drop(_ep);
    let _ep = home.start("ep").await;
    let connector = home.connector(me);
    let damaged = connector.get(&keys[1]).await.unwrap_err();
    assert!(damaged.to_string().contains("damaged"), "{damaged}");
    assert_eq!(connector.get(&keys[1]).await.unwrap(), None);
    assert!(connector.exists(&keys[2]).await.unwrap());
    connector.evict(&keys[2]).await.unwrap();
    assert!(!connector.exists(&keys[2]).await.unwrap());
}

/// Zeroes the stored value of `key`, with SQL through `python3`'s sqlite3 module (which
/// every test machine has).
fn zero_a_row(db: &Path, key: &str) -> bool {
    let script = format!(
        "import sqlite3; c = sqlite3.connect({db:?}); \
         n = c.execute(\"UPDATE objects SET value = zeroblob(length(value)) WHERE key = ?\", ({key:?},)).rowcount; \
         c.commit(); print(n)",
        db = db.display().to_string()
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "1"
}

#[test]
fn configure_start_list_check_stop_remove_as_a_user_does() {
    let home = Home::new();
    let id = home.configure("site-ep", &[]);
    let (code, out, err) = home.run(&["endpoint", "start", "site-ep"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), id.to_string());
    // A second start of a running endpoint is refused, naming its process.
    let (code, _, err) = home.run(&["endpoint", "start", "site-ep"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("already running (pid"), "{err}");
    let (_, listed, _) = home.run(&["endpoint", "list", "-F", "json"]);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[0]["status"], "RUNNING");
    let (code, put, err) = home.run(&["endpoint", "test", "site-ep", "put", "hello"]);
    assert_eq!(code, 0, "{err}");
    let (_, got, _) = home.run(&["endpoint", "test", "site-ep", "get", put.trim()]);
    assert_eq!(got.trim(), "hello");
    let (code, check, _) = home.run(&["endpoint", "check", "site-ep", "-F", "json"]);
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<Value>(&check).unwrap()["objects"], 1);
    let (code, _, err) = home.run(&["endpoint", "remove", "site-ep"]);
    assert_eq!(code, 1, "removing a running endpoint is refused");
    assert!(err.contains("stop it first"), "{err}");
    let (code, _, err) = home.run(&["endpoint", "stop", "site-ep"]);
    assert_eq!(code, 0, "{err}");
    // Stopped: no host in its config (a client skips it), no pid file, no socket.
    let config = home.config("site-ep");
    assert_eq!(config.host, None);
    assert!(!home.path().join("site-ep/daemon.pid").exists());
    assert!(!home.path().join("site-ep/endpoint.sock").exists());
    let (code, _, err) = home.run(&["endpoint", "remove", "site-ep"]);
    assert_eq!(code, 0, "{err}");
    assert!(!home.path().join("site-ep").exists());
}

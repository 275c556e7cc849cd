//! Endpoints and the relay as real processes on loopback: ProxyStore's REST API as its
//! client sees it, the owner check, storage across restarts, and peering — direct, through
//! the relay when the direct path is blackholed, across a peer's and the relay's restart,
//! and across token expiry with Globus Auth (the emulator) checking the tokens.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use bytes::Bytes;
use ps_globus::ErrorKind;
use ps_globus::connector::endpoint::config::EndpointFileConfig;
use ps_globus::connector::{Connector, EndpointConfig, EndpointConnector, PutOptions};
use serde_json::Value;
use uuid::Uuid;

use crate::support::emulator::Emu;
use crate::support::until;

/// A `PROXYSTORE_HOME` with endpoints in it.
struct Home {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

/// A child process, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Home {
    fn new() -> Home {
        Home {
            dir: tempfile::tempdir().unwrap(),
            env: Vec::new(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self, args: &[&str]) -> Command {
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

    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.command(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn configure(&self, name: &str, extra: &[&str]) -> Uuid {
        let mut args = vec!["endpoint", "configure", name];
        args.extend_from_slice(extra);
        let (code, out, err) = self.run(&args);
        assert_eq!(code, 0, "{err}");
        out.trim().parse().unwrap()
    }

    fn config(&self, name: &str) -> EndpointFileConfig {
        EndpointFileConfig::load(&self.path().join(name)).unwrap()
    }

    /// Runs endpoint `name` in the foreground (a child the test can kill), once it serves.
    async fn start(&self, name: &str) -> Proc {
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
    fn connector(&self, endpoint: Uuid) -> EndpointConnector {
        EndpointConnector::new(EndpointConfig {
            endpoints: vec![endpoint],
            proxystore_dir: Some(self.path().to_owned()),
            timeout_ms: None,
        })
        .unwrap()
    }

    fn base(&self, name: &str) -> String {
        let config = self.config(name);
        format!("http://{}:{}/", config.host.unwrap(), config.port)
    }

    /// `/ps-globus/status` of endpoint `name`.
    async fn status(&self, name: &str) -> Value {
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
fn relay(home: &Home, listen: &str, extra: &[&str]) -> (Proc, String) {
    let mut args = vec!["relay", "serve", "--listen", listen];
    args.extend_from_slice(extra);
    let mut child = home
        .command(&args)
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

/// Two endpoints `a` and `b` on a relay without auth; `a` advertises `a_advertise`
/// (default: where it listens).
async fn pair(
    home: &Home,
    relay_address: &str,
    a_advertise: Option<&str>,
) -> (Uuid, Uuid, Proc, Proc) {
    let mut a_args = vec![
        "--relay-address",
        relay_address,
        "--relay-auth",
        "none",
        "--peer-listen",
        "127.0.0.1:0",
        "--peer-timeout-s",
        "8",
    ];
    if let Some(advertise) = a_advertise {
        a_args.extend_from_slice(&["--peer-advertise", advertise]);
    }
    let a = home.configure("a", &a_args);
    let b = home.configure(
        "b",
        &[
            "--relay-address",
            relay_address,
            "--relay-auth",
            "none",
            "--peer-listen",
            "127.0.0.1:0",
            "--peer-timeout-s",
            "8",
        ],
    );
    let pa = home.start("a").await;
    let pb = home.start("b").await;
    for name in ["a", "b"] {
        until(&format!("{name} to register"), async || {
            home.status(name).await["peering"]["connected"] == true
        })
        .await;
    }
    (a, b, pa, pb)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_serves_directly_and_an_unknown_peer_is_a_typed_error_naming_it() {
    let home = Home::new();
    let (_relay, address) = relay(&home, "127.0.0.1:0", &["--auth", "none"]);
    let (a, b, _pa, _pb) = pair(&home, &address, None).await;
    let at_a = home.connector(a);
    let at_b = home.connector(b);
    let object: Vec<u8> = (0..3_000_000u32).map(|i| i as u8).collect();
    let key = at_a.put(&object, &PutOptions::default()).await.unwrap();
    // Read at b: b fetches from a, verified.
    assert_eq!(at_b.get(&key).await.unwrap().as_deref(), Some(&object[..]));
    assert!(at_b.exists(&key).await.unwrap());
    let status = home.status("b").await;
    assert_eq!(status["peering"]["direct_connections"], 1, "{status}");
    assert_eq!(status["peering"]["relayed_connections"], 0, "{status}");
    // b evicts a's object at a.
    at_b.evict(&key).await.unwrap();
    assert_eq!(at_a.get(&key).await.unwrap(), None);

    // A key naming an endpoint nobody runs: Unreachable, naming it.
    let stranger = Uuid::new_v4();
    let forged: ps_globus::connector::Key = format!(
        r#"{{"v":1,"kind":"endpoint","id":"{}","meta":{{"endpoint":"{stranger}"}}}}"#,
        ps_globus::connector::Key::new_id()
    )
    .parse()
    .unwrap();
    let e = at_b.get(&forged).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unreachable, "{e}");
    assert!(e.to_string().contains(&stranger.to_string()), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blackholed_direct_path_gives_way_to_the_relay_within_the_deadline() {
    let home = Home::new();
    let (_relay, address) = relay(&home, "127.0.0.1:0", &["--auth", "none"]);
    // A listener that is never accepted: the kernel completes TCP's handshake, and then
    // nothing answers TLS (a firewall that swallows packets, as on Polaris).
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hole = blackhole.local_addr().unwrap().to_string();
    let (a, b, _pa, _pb) = pair(&home, &address, Some(&hole)).await;
    let key = home
        .connector(a)
        .put(b"through the relay", &PutOptions::default())
        .await
        .unwrap();
    let at_b = home.connector(b);
    assert_eq!(
        at_b.get(&key).await.unwrap().as_deref(),
        Some(&b"through the relay"[..])
    );
    let status = home.status("b").await;
    assert_eq!(status["peering"]["relayed_connections"], 1, "{status}");
    assert_eq!(status["peering"]["direct_connections"], 0, "{status}");
    // The next connection goes straight to the relay (the direct path is remembered as
    // failed): a second reader at b, on a connection of its own, still gets it.
    assert!(at_b.exists(&key).await.unwrap());
    drop(blackhole);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_killed_mid_request_and_restarted_is_reached_again() {
    let home = Home::new();
    let (_relay, address) = relay(&home, "127.0.0.1:0", &["--auth", "none"]);
    let (a, b, pa, _pb) = pair(&home, &address, None).await;
    let object: Vec<u8> = (0..24_000_000u32).map(|i| (i * 7) as u8).collect();
    let key = home
        .connector(a)
        .put(&object, &PutOptions::default())
        .await
        .unwrap();
    let at_b = home.connector(b);
    let reading = tokio::spawn({
        let key = key.clone();
        async move { at_b.get(&key).await }
    });
    // Once b has its connection to a, a dies (SIGKILL) and comes back.
    until("b to connect to a", async || {
        home.status("b").await["peering"]["direct_connections"] == 1
    })
    .await;
    drop(pa);
    let _pa = home.start("a").await;
    let got = reading.await.unwrap().unwrap();
    assert_eq!(got.as_deref().map(<[u8]>::len), Some(object.len()));
    assert!(got.as_deref() == Some(&object[..]), "the bytes differ");
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoints_reregister_after_the_relay_restarts() {
    let home = Home::new();
    let (relay_proc, address) = relay(&home, "127.0.0.1:0", &["--auth", "none"]);
    let listen = address.trim_start_matches("tcp://").to_owned();
    let (a, b, _pa, _pb) = pair(&home, &address, None).await;
    drop(relay_proc);
    until("b to notice the relay is gone", async || {
        home.status("b").await["peering"]["connected"] == false
    })
    .await;
    let (_relay, _) = relay(&home, &listen, &["--auth", "none"]);
    for name in ["a", "b"] {
        until(&format!("{name} to register again"), async || {
            let status = home.status(name).await;
            status["peering"]["connected"] == true && status["peering"]["registrations"] == 2
        })
        .await;
    }
    let key = home
        .connector(a)
        .put(b"after the restart", &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(
        home.connector(b).get(&key).await.unwrap().as_deref(),
        Some(&b"after the restart"[..])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn over_a_tls_relay_an_expiring_token_is_renewed_and_identities_do_not_mix() {
    // Globus Auth (the emulator): tokens live 2 s; the relay introspects as its own client.
    let emu = Emu::with(|config| {
        config.token_lifetime_s = 2;
        config
            .clients
            .insert("relay-client".into(), "relay-secret".into());
        config
            .clients
            .insert("site-client".into(), "site-secret".into());
        config
            .clients
            .insert("other-client".into(), "other-secret".into());
    });
    let auth_url = emu.sim.auth_url().to_owned();
    let mut relay_home = Home::new();
    relay_home.env = vec![
        ("PS_GLOBUS_AUTH_URL".into(), auth_url.clone()),
        ("PS_GLOBUS_CLIENT_ID".into(), "relay-client".into()),
        ("PS_GLOBUS_CLIENT_SECRET".into(), "relay-secret".into()),
    ];
    // The relay serves TLS (tokens cross it) with a certificate for 127.0.0.1 signed by
    // a CA the endpoints are told to trust.
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::IpAddress([127, 0, 0, 1].into())];
    let signing_key = rcgen::KeyPair::generate().unwrap();
    let made = params.signed_by(&signing_key, &ca).unwrap();
    let path = |name: &str| relay_home.path().join(name);
    std::fs::write(path("ca.pem"), ca.pem()).unwrap();
    std::fs::write(path("relay.pem"), made.pem()).unwrap();
    std::fs::write(path("relay.key"), signing_key.serialize_pem()).unwrap();
    let [ca_arg, cert_arg, key_arg] =
        ["ca.pem", "relay.pem", "relay.key"].map(|name| path(name).display().to_string());
    let (_relay, address) = relay(
        &relay_home,
        "127.0.0.1:0",
        &["--tls-cert", &cert_arg, "--tls-key", &key_arg],
    );
    assert!(address.starts_with("tls://127.0.0.1:"), "{address}");

    let mut home = Home::new();
    home.env = vec![
        ("PS_GLOBUS_AUTH_URL".into(), auth_url.clone()),
        ("PS_GLOBUS_CLIENT_ID".into(), "site-client".into()),
        ("PS_GLOBUS_CLIENT_SECRET".into(), "site-secret".into()),
    ];
    let peer_args = [
        "--relay-address",
        &address,
        "--relay-ca-file",
        &ca_arg,
        "--peer-listen",
        "127.0.0.1:0",
        "--peer-timeout-s",
        "5",
    ];
    let a = home.configure("a", &peer_args);
    let b = home.configure("b", &peer_args);
    let _pa = home.start("a").await;
    let _pb = home.start("b").await;
    // Each registration ends when its token expires; the endpoint comes back with a new one.
    for name in ["a", "b"] {
        until(&format!("{name} to register a third time"), async || {
            let status = home.status(name).await;
            status["peering"]["registrations"].as_u64() >= Some(3)
        })
        .await;
    }
    let key = home
        .connector(a)
        .put(b"still peers", &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(
        home.connector(b).get(&key).await.unwrap().as_deref(),
        Some(&b"still peers"[..])
    );

    // An endpoint of another identity on the same relay is not a peer.
    let mut other = Home::new();
    other.env = vec![
        ("PS_GLOBUS_AUTH_URL".into(), auth_url),
        ("PS_GLOBUS_CLIENT_ID".into(), "other-client".into()),
        ("PS_GLOBUS_CLIENT_SECRET".into(), "other-secret".into()),
    ];
    let c = other.configure("c", &peer_args);
    let _pc = other.start("c").await;
    until("c to register", async || {
        other.status("c").await["peering"]["connected"] == true
    })
    .await;
    let e = other.connector(c).get(&key).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unreachable, "{e}");
    assert!(e.to_string().contains("another identity"), "{e}");
}

#[test]
fn configure_start_list_check_stop_remove_as_a_user_does() {
    let home = Home::new();
    let id = home.configure("site-ep", &[]);
    let (code, out, err) = home.run(&["endpoint", "start", "site-ep"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), id.to_string());
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

/// A private network namespace, deleted when dropped.
struct Netns(String);

impl Netns {
    /// A namespace with loopback up and a link on which 10.99.0.2 swallows every packet
    /// (a veth whose peer has no such address, and a permanent neighbour entry, so SYNs
    /// leave and nothing ever answers): the firewall that drops, as on Polaris.
    fn with_a_swallowing_host() -> Option<Netns> {
        let name = crate::support::unique_name("psg")[..15].to_owned();
        let ip = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        if !ip(&["netns", "add", &name]) {
            return None;
        }
        let ns = Netns(name);
        let n = ns.0.as_str();
        for args in [
            &["-n", n, "link", "set", "lo", "up"][..],
            &[
                "-n", n, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
            ],
            &["-n", n, "addr", "add", "10.99.0.1/24", "dev", "v0"],
            &["-n", n, "link", "set", "v0", "up"],
            &["-n", n, "link", "set", "v1", "up"],
            &[
                "-n",
                n,
                "neigh",
                "add",
                "10.99.0.2",
                "lladdr",
                "02:00:00:00:00:02",
                "dev",
                "v0",
                "nud",
                "permanent",
            ],
        ] {
            assert!(ip(args), "ip {args:?}");
        }
        Some(ns)
    }

    /// `ps-globus ARGS` inside the namespace, as `home`'s user.
    fn ps_globus(&self, home: &Home, args: &[&str]) -> Command {
        let inner = home.command(args);
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0])
            .arg(inner.get_program())
            .args(inner.get_args());
        for (k, v) in inner.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c
    }

    fn run(&self, home: &Home, args: &[&str]) -> String {
        let out = self.ps_globus(home, args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Netns {
    /// Kills what still runs inside (a detached endpoint of a failed test), then deletes.
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.0]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn a_direct_path_whose_packets_vanish_in_a_network_namespace_gives_way_to_the_relay() {
    if !rustix::process::getuid().is_root() {
        eprintln!("not root: no network namespace; the listener blackhole test covers the path");
        return;
    }
    let Some(ns) = Netns::with_a_swallowing_host() else {
        eprintln!("`ip netns add` failed here; the listener blackhole test covers the path");
        return;
    };
    let home = Home::new();
    let mut relay = ns
        .ps_globus(
            &home,
            &[
                "relay",
                "serve",
                "--auth",
                "none",
                "--listen",
                "127.0.0.1:0",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(relay.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _relay = Proc(relay);
    let address = serde_json::from_str::<Value>(&line).unwrap()["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let common = [
        "--relay-address",
        &address,
        "--relay-auth",
        "none",
        "--peer-timeout-s",
        "8",
    ];
    // a is dialled at 10.99.0.2, whose SYNs vanish; its real listener is on loopback.
    let mut a_args = vec!["endpoint", "configure", "a", "--peer-listen", "127.0.0.1:0"];
    a_args.extend_from_slice(&["--peer-advertise", "10.99.0.2:4000"]);
    a_args.extend_from_slice(&common);
    let a = ns.run(&home, &a_args);
    let mut b_args = vec!["endpoint", "configure", "b", "--peer-listen", "127.0.0.1:0"];
    b_args.extend_from_slice(&common);
    ns.run(&home, &b_args);
    ns.run(&home, &["endpoint", "start", "a"]);
    ns.run(&home, &["endpoint", "start", "b"]);
    let stop = |name: &str| ns.run(&home, &["endpoint", "stop", name]);
    let key = ns.run(
        &home,
        &["endpoint", "test", "a", "put", "past the firewall"],
    );
    // Both registered before b asks (`check` exits 1 until its relay is connected).
    for name in ["a", "b"] {
        let connected = || {
            ns.ps_globus(&home, &["endpoint", "check", name])
                .output()
                .is_ok_and(|out| out.status.success())
        };
        let limit = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !connected() {
            assert!(std::time::Instant::now() < limit, "{name} never registered");
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
    }
    let got = ns.run(
        &home,
        &["endpoint", "test", "b", "--remote", &a, "get", &key],
    );
    assert_eq!(got, "past the firewall");
    let status: Value =
        serde_json::from_str(&ns.run(&home, &["endpoint", "check", "b", "-F", "json"])).unwrap();
    assert_eq!(status["peering"]["relayed_connections"], 1, "{status}");
    assert_eq!(status["peering"]["direct_connections"], 0, "{status}");
    stop("a");
    stop("b");
}

//! Peering between endpoints as processes: direct, through the relay when the direct
//! path is blackholed (a listener that never answers TLS, or a network namespace where
//! packets vanish), across a peer's and the relay's restart, and across token expiry
//! with Globus Auth (the emulator) checking the tokens. The harness is `endpoints.rs`'s.

use std::process::Command;

use ps_globus::ErrorKind;
use ps_globus::connector::{Connector, PutOptions};
use serde_json::Value;
use uuid::Uuid;

use crate::endpoints::{Home, Proc, relay, relay_from};
use crate::support::emulator::Emu;
use crate::support::until;

/// Puts `object` through endpoint `at`, gets it through `via` (which fetches it from `at`),
/// and checks the bytes; the key.
async fn put_at_get_via(
    home: &Home,
    at: Uuid,
    via: Uuid,
    object: &[u8],
) -> ps_globus::connector::Key {
    let key = home
        .connector(at)
        .put(object, &PutOptions::default())
        .await
        .unwrap();
    let got = home.connector(via).get(&key).await.unwrap();
    assert!(got.as_deref() == Some(object), "the bytes differ");
    key
}

/// Two endpoints `a` and `b` on a relay without auth; `a` advertises `a_advertise`
/// (default: where it listens).
async fn pair(
    home: &Home,
    relay_address: &str,
    a_advertise: Option<&str>,
) -> (Uuid, Uuid, Proc, Proc) {
    let common = [
        "--relay-address",
        relay_address,
        "--relay-auth",
        "none",
        "--peer-listen",
        "127.0.0.1:0",
        "--peer-timeout-s",
        "8",
    ];
    let mut a_args = common.to_vec();
    if let Some(advertise) = a_advertise {
        a_args.extend_from_slice(&["--peer-advertise", advertise]);
    }
    let a = home.configure("a", &a_args);
    let b = home.configure("b", &common);
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
    put_at_get_via(&home, a, b, b"after the restart").await;
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
    let key = put_at_get_via(&home, a, b, b"still peers").await;

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
    let (_relay, address) = relay_from(ns.ps_globus(
        &home,
        &[
            "relay",
            "serve",
            "--auth",
            "none",
            "--listen",
            "127.0.0.1:0",
        ],
    ));
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

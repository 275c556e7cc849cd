//! The trust boundary (docs/THREAT-MODEL.md), attacked: hostile proxies and events are
//! resolved against recording fake servers on loopback (a Redis and an HTTP one), with a
//! local configuration that trusts neither. No secret — this process's token, a password
//! from an environment variable the proxy names — may reach them, and no file outside every
//! store directory may be deleted. The cases are a table: a new connector option that data
//! could abuse gets a row here.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use ps_globus::connector::{
    FileConnector, Key, ProcessDefaults, RedisConfig, RedisConnector, set_process_defaults,
};
use ps_globus::error::Untrusted;
use ps_globus::{Proxy, Settings, Store};

/// This process's own bearer token: it must never reach a server a proxy names.
const TOKEN: &str = "tok-never-leaves-9f8e7d";

/// A loopback server that records every byte it is sent and answers each read with
/// `reply`, until the test ends.
struct Recorder {
    port: u16,
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl Recorder {
    fn start(reply: &'static [u8]) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&bytes);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let record = Arc::clone(&record);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = stream.read(&mut buf) {
                        record.lock().unwrap().extend_from_slice(&buf[..n]);
                        if stream.write_all(reply).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Recorder { port, bytes }
    }

    fn received(&self) -> Vec<u8> {
        self.bytes.lock().unwrap().clone()
    }
}

/// The local configuration every case runs under: a config file with one Redis table
/// (not the recorders'), this process's token, and its own Transfer URL (not the
/// recorders' either).
fn local_configuration() -> &'static Path {
    // In cargo's directory for integration tests' files (a static is never dropped, so a
    // temporary directory here would be left behind in TMPDIR).
    static HOME: OnceLock<std::path::PathBuf> = OnceLock::new();
    HOME.get_or_init(|| {
        let home = Path::new(env!("CARGO_TARGET_TMPDIR")).join("trust-home");
        std::fs::create_dir_all(&home).unwrap();
        let config = home.join("config.toml");
        std::fs::write(
            &config,
            "[redis.lab]\nhost = \"redis.lab.invalid\"\nport = 6380\npassword_env = \"LAB_PW\"\n",
        )
        .unwrap();
        let vars = [
            ("PS_GLOBUS_HOME", home.display().to_string()),
            ("PS_GLOBUS_CONFIG", config.display().to_string()),
            ("PS_GLOBUS_ACCESS_TOKEN", TOKEN.to_owned()),
            ("PS_GLOBUS_TRANSFER_URL", "http://127.0.0.1:1/".to_owned()),
            ("PS_GLOBUS_SITE", "here".to_owned()),
        ];
        let settings = Settings::from_lookup(|name| {
            vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.into())
        });
        set_process_defaults({
            let mut built = ProcessDefaults::default();
            built.settings = Some(settings);
            built
        });
        home
    })
}

/// A proxy's JSON for an object of `store` under `key`, with `edit` applied to its
/// connector options — what a hostile peer sends.
fn hostile_proxy(
    store: &Store,
    key: Key,
    evict: bool,
    edit: impl FnOnce(&mut serde_json::Value),
) -> Proxy<Vec<u8>> {
    let options = ps_globus::ProxyOptions::default().with_evict(evict);
    let proxy: Proxy<Vec<u8>> = store.proxy_from_key_with(key, &options);
    let mut json = serde_json::to_value(&proxy).unwrap();
    edit(find_options(&mut json).expect("a proxy carries its connector's options"));
    serde_json::from_value(json).unwrap()
}

/// The connector options inside a proxy's JSON, wherever the format puts them.
fn find_options(json: &mut serde_json::Value) -> Option<&mut serde_json::Value> {
    let is_connector = json
        .as_object()
        .is_some_and(|o| o.contains_key("kind") && o.contains_key("options"));
    if is_connector {
        return json.get_mut("options");
    }
    match json {
        serde_json::Value::Object(map) => map.values_mut().find_map(find_options),
        serde_json::Value::Array(items) => items.iter_mut().find_map(find_options),
        _ => None,
    }
}

/// Every secret this process holds that a hostile proxy might try to exfiltrate.
fn secrets() -> Vec<Vec<u8>> {
    let path = std::env::var("PATH").unwrap_or_default();
    let home = std::env::var("HOME").unwrap_or_default();
    [TOKEN.to_owned(), path, home]
        .into_iter()
        .filter(|s| s.len() >= 4)
        .map(String::into_bytes)
        .collect()
}

fn assert_no_secret(what: &str, received: &[u8]) {
    for secret in secrets() {
        assert!(
            !received.windows(secret.len()).any(|w| w == &secret[..]),
            "{what}: a secret reached the recording server: {}",
            String::from_utf8_lossy(received)
        );
    }
    let text = String::from_utf8_lossy(received).to_ascii_uppercase();
    assert!(!text.contains("AUTH"), "{what}: AUTH was sent: {text}");
    assert!(
        !text.contains("BEARER"),
        "{what}: a bearer token was sent: {text}"
    );
}

/// One hostile case: what the proxy names, and what must come of resolving it.
struct Case {
    name: &'static str,
    proxy: Proxy<Vec<u8>>,
    /// Refused before any connection (`Untrusted`), or allowed to fail otherwise.
    refused: bool,
}

fn redis_store(port: u16, name: &str) -> Store {
    let connector = RedisConnector::new(RedisConfig::new("127.0.0.1", port)).unwrap();
    Store::builder(name, connector)
        .register(false)
        .build()
        .unwrap()
}

fn globus_store(name: &str, dir: &Path) -> Store {
    let config: ps_globus::connector::GlobusConfig = serde_json::from_value(serde_json::json!({
        "store_dir": "store",
        "sites": {
            "here": {"collection": "05d2c76a-e867-4f67-aa57-76edeb0beda0",
                     "collection_path": "/", "local_path": dir},
            "there": {"collection": "9a1f2f3e-0000-4000-8000-000000000001",
                      "collection_path": "/", "local_path": dir.join("there")}
        }
    }))
    .unwrap();
    let connector = ps_globus::connector::GlobusConnector::builder(config)
        .site("here")
        .build()
        .unwrap();
    Store::builder(name, connector)
        .register(false)
        .build()
        .unwrap()
}

#[test]
fn hostile_proxies_never_send_a_secret_to_a_server_the_local_configuration_does_not_name() {
    local_configuration();
    let redis = Recorder::start(b"-ERR recorded\r\n");
    let http = Recorder::start(b"HTTP/1.1 500 Recorded\r\ncontent-length: 0\r\n\r\n");
    let dir = tempfile::tempdir().unwrap();
    let cases = vec![
        Case {
            name: "a Redis proxy on loopback naming PATH as its password variable",
            proxy: hostile_proxy(
                &redis_store(redis.port, "trust-redis-loopback"),
                Key::generate("redis"),
                false,
                |o| {
                    o["password_env"] = "PATH".into();
                    o["username"] = "admin".into();
                    o["timeout_ms"] = 500.into();
                },
            ),
            refused: false,
        },
        Case {
            name: "a Redis proxy naming a server no table names",
            proxy: hostile_proxy(
                &redis_store(redis.port, "trust-redis-elsewhere"),
                Key::generate("redis"),
                false,
                |o| {
                    o["host"] = "collector.invalid".into();
                    o["password_env"] = "HOME".into();
                },
            ),
            refused: true,
        },
        Case {
            name: "a Redis proxy naming the local table, with its own host",
            proxy: hostile_proxy(
                &redis_store(redis.port, "trust-redis-table"),
                Key::generate("redis"),
                false,
                |o| {
                    o["server"] = "missing-table".into();
                    o["password_env"] = "PATH".into();
                },
            ),
            refused: true,
        },
        Case {
            name: "a Redis stream event naming PATH as its store's password variable",
            proxy: {
                let store = redis_store(redis.port, "trust-redis-event");
                let mut config = serde_json::to_value(store.config()).unwrap();
                config["connector"]["options"]["password_env"] = "PATH".into();
                config["connector"]["options"]["timeout_ms"] = 500.into();
                let event: ps_globus::stream::Event = serde_json::from_value(serde_json::json!({
                    "v": 1, "topic": "t", "position": 0, "published_ms": 0,
                    "object": {"store": config, "key": Key::generate("redis")},
                }))
                .unwrap();
                event.proxy().unwrap().unwrap()
            },
            refused: false,
        },
        Case {
            name: "a Globus proxy naming its own Transfer URL",
            proxy: hostile_proxy(
                &globus_store("trust-globus-url", dir.path()),
                Key::generate("globus"),
                false,
                |o| o["transfer_url"] = format!("http://127.0.0.1:{}/", http.port).into(),
            ),
            refused: true,
        },
        Case {
            name: "a Globus proxy naming plain http to a remote host",
            proxy: hostile_proxy(
                &globus_store("trust-globus-http", dir.path()),
                Key::generate("globus"),
                false,
                |o| o["transfer_url"] = "http://transfer.invalid/".into(),
            ),
            refused: true,
        },
    ];
    for case in cases {
        let result = case.proxy.resolve().map(|_| ());
        match (case.refused, result) {
            (true, Err(e)) if e.is::<Untrusted>() => {}
            (false, Err(_)) => {}
            (true, other) => panic!("{}: expected a refusal, got {other:?}", case.name),
            (false, Ok(())) => panic!("{}: the recorder holds no object", case.name),
        }
        assert_no_secret(case.name, &redis.received());
        assert_no_secret(case.name, &http.received());
    }
    // The loopback case did reach the Redis recorder (the check above looked at real
    // traffic), without credentials.
    assert!(!redis.received().is_empty(), "the loopback proxy connected");
}

/// `ps-globus demo-consumer` used to read `~/.ssh/authorized_keys` and delete it, given a
/// proxy of a `file` store at `~/.ssh` with that key and evict-on-resolve. A file outside
/// every store directory survives every hostile eviction; a genuine store's proxy still
/// evicts its own object.
#[test]
fn a_hostile_evict_deletes_no_file_outside_every_store_directory() {
    local_configuration();
    let victim_dir = tempfile::tempdir().unwrap();
    let victim = victim_dir.path().join("authorized_keys");
    std::fs::write(&victim, b"ssh-ed25519 AAAA me@laptop").unwrap();
    let minted = Key::new_id();
    std::fs::write(victim_dir.path().join(&minted), b"\x93\x01\x02\x03").unwrap();

    let genuine_dir = tempfile::tempdir().unwrap();
    let genuine = Store::builder(
        "trust-file-genuine",
        FileConnector::new(genuine_dir.path()).unwrap(),
    )
    .register(false)
    .build()
    .unwrap();
    for id in ["authorized_keys", minted.as_str()] {
        let key = Key::new("file", id).unwrap();
        let proxy = hostile_proxy(&genuine, key, true, |o| {
            o["dir"] = victim_dir.path().display().to_string().into();
        });
        let _ = proxy.resolve();
    }
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        b"ssh-ed25519 AAAA me@laptop"
    );
    assert!(victim_dir.path().join(&minted).exists());

    // The genuine hand-off: a proxy of the store's own object, resolved as data here
    // (serialized and read back), evicts it.
    let key = genuine.put(&vec![7u8; 3]).unwrap();
    let proxy = hostile_proxy(&genuine, key.clone(), true, |_| {});
    assert_eq!(proxy.resolve().unwrap(), &vec![7u8; 3]);
    assert!(!genuine.exists(&key).unwrap(), "its own object was evicted");
}

/// A proxy from elsewhere cannot take the name of a store this process registered, nor
/// make genuine proxies of another name conflict: stores rebuilt from data are kept by
/// their whole config.
#[test]
fn a_planted_proxy_does_not_poison_a_store_name() {
    local_configuration();
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let store = Store::builder("trust-poison", FileConnector::new(dir.path()).unwrap())
        .register(false)
        .build()
        .unwrap();
    let key = store.put(&vec![1u8, 2]).unwrap();
    let planted = hostile_proxy(&store, key.clone(), false, |o| {
        o["dir"] = other.path().display().to_string().into();
    });
    let _ = planted.resolve();
    let genuine = hostile_proxy(&store, key, false, |_| {});
    assert_eq!(genuine.resolve().unwrap(), &vec![1u8, 2]);
}

/// Regression: a proxy with a huge `wait_timeout_s` (or `resolve_timeout`) made
/// `Proxy::resolve()` — documented to return a `Result` — panic on `Instant + Duration`
/// overflow. Numbers from data are bounded and every deadline saturates.
#[test]
fn a_proxy_with_a_huge_wait_resolves_instead_of_panicking() {
    local_configuration();
    let dir = tempfile::tempdir().unwrap();
    let config: ps_globus::connector::GlobusConfig = serde_json::from_value(serde_json::json!({
        "store_dir": "store",
        "destinations": ["here"],
        "sites": {
            "here": {"collection": "05d2c76a-e867-4f67-aa57-76edeb0beda0",
                     "collection_path": "/", "local_path": dir.path()}
        }
    }))
    .unwrap();
    let connector = ps_globus::connector::GlobusConnector::builder(config)
        .site("here")
        .build()
        .unwrap();
    let store = Store::builder("trust-huge-wait", connector)
        .resolve_timeout(std::time::Duration::MAX)
        .register(false)
        .build()
        .unwrap();
    let key = store.put(&vec![4u8; 10]).unwrap();
    let proxy = hostile_proxy(&store, key, false, |o| {
        o["wait_timeout_s"] = u64::MAX.into();
    });
    assert_eq!(proxy.resolve().unwrap(), &vec![4u8; 10]);
}

/// A lease row names its store's whole config, as a proxy does: the process that ends
/// the lease rebuilds that store as data. A row naming a Redis password variable sends
/// no password, whatever the row says.
#[test]
fn a_lease_row_never_sends_a_secret_either() {
    local_configuration();
    let redis = Recorder::start(b"-ERR recorded\r\n");
    let mut config = RedisConfig::new("127.0.0.1", redis.port);
    config.password_env = Some("PATH".into());
    config.timeout_ms = 500;
    let store = Store::builder("trust-lease-row", RedisConnector::new(config).unwrap())
        .register(false)
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    ps_globus::block_on(async {
        let db = ps_globus::state::StateDb::open(dir.path().join("state.db"))
            .await
            .unwrap();
        let lease = store
            .lease_in_async(&db, std::time::Duration::from_secs(3600))
            .await
            .unwrap();
        lease.attach_async(&Key::generate("redis")).await.unwrap();
        let ended = ps_globus::proxy::end_lease(&db, lease.id()).await;
        assert!(
            ended.is_err(),
            "the recorder answers every command with an error"
        );
    });
    assert!(!redis.received().is_empty(), "the row's store connected");
    assert_no_secret("a lease row", &redis.received());
}

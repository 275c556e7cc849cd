//! The bodies of the fuzz targets (`fuzz/fuzz_targets/*.rs`), kept in the library so that
//! an ordinary test replays the fuzz corpora (`fuzz/corpus/<target>/`) with the same code.
//!
//! Each function takes arbitrary bytes, parses them the way ps-globus meets such input
//! from outside, and checks what must hold for anything that parses: it round-trips, and
//! a path never leaves its collection. A panic is a bug. Not a stable API.

use std::str::FromStr;

use crate::config::Config;
use crate::connector::Key;
use crate::proxy::{DatasetRef, ProxyFactory};
use crate::staging;
use crate::transfer::path::collection_path;

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// The fuzz targets, by name: what `scripts/fuzz` runs and the corpus test replays (the
/// emulator's own, `transfer_document`, is `sim::FUZZ_TARGETS`: nothing here reaches
/// into the emulator).
pub const TARGETS: &[(&str, Target)] = &[
    ("key", key),
    ("proxy_json", proxy_json),
    ("reference", reference),
    ("config_toml", config_toml),
    ("address", address),
    ("batch_file", batch_file),
    ("trust_admit", trust_admit),
];

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// A key's text form: what parses prints and parses back to the same key.
pub fn key(data: &[u8]) {
    let Some(text) = text(data) else { return };
    if let Ok(key) = Key::from_str(text) {
        let again = Key::from_str(&key.to_string()).expect("a printed key parses");
        assert_eq!(again, key);
    }
}

/// The trust boundary's pure step on a store config from data (a proxy's, an event's, a
/// lease row's), against a fixed local configuration: parse, admit every binding, bound
/// the numbers, compute the deadlines. What is admitted names only local bindings: a
/// Transfer URL this configuration trusts, a Redis server it names (with its own password
/// source) or one on loopback without credentials. No connector is started, no database
/// opened, no socket made.
pub fn trust_admit(data: &[u8]) {
    use crate::connector::trust::{LocalTrust, MAX_DATA_TIMEOUT, admit, is_loopback_host};
    use crate::connector::{GlobusConfig, MultiConfig, RedisConfig};

    let Some(text) = text(data) else { return };
    let Ok(mut store) = serde_json::from_str::<crate::StoreConfig>(text) else {
        return;
    };
    let mut lab = RedisConfig::new("redis.lab.example.org", 6380);
    lab.password_env = Some("LAB_REDIS_PASSWORD".into());
    let local = LocalTrust {
        config_path: "/fuzz/config.toml".into(),
        transfer_url: "http://127.0.0.1:4455/".into(),
        trusted_transfer_urls: vec!["https://transfer.staging.example.org/".into()],
        redis: [("lab".to_owned(), lab.clone())].into(),
        store_dirs: vec!["/fuzz/stores".into()],
        collections: vec![],
    };
    store.bound_numbers();
    if let Some(limit) = store.resolve_timeout {
        assert!(limit <= MAX_DATA_TIMEOUT);
        let _ = crate::runtime::deadline_after(limit);
    }
    let Ok(admitted) = admit(&store.connector, &local) else {
        return;
    };
    fn check(config: &crate::connector::ConnectorConfig, lab: &RedisConfig) {
        match config.kind.as_str() {
            "globus" => {
                let Ok(globus) = config.options_as::<GlobusConfig>() else {
                    return;
                };
                if let Some(url) = &globus.transfer_url {
                    let trusted = [
                        "http://127.0.0.1:4455",
                        "https://transfer.staging.example.org",
                        "https://transfer.api.globus.org",
                    ];
                    assert!(trusted.contains(&url.trim_end_matches('/')), "{url}");
                }
                let wait = std::time::Duration::from_secs(globus.wait_timeout_s.unwrap_or(0));
                assert!(wait <= MAX_DATA_TIMEOUT);
                let _ = crate::runtime::deadline_after(wait);
            }
            "redis" => {
                let Ok(redis) = config.options_as::<RedisConfig>() else {
                    return;
                };
                let is_lab =
                    redis.host == lab.host && redis.port == lab.port && redis.socket.is_none();
                if is_lab {
                    assert_eq!(redis.password_env, lab.password_env);
                } else {
                    assert!(
                        redis.socket.is_some() || is_loopback_host(&redis.host),
                        "{}",
                        redis.host
                    );
                    assert_eq!(redis.password_env, None);
                }
            }
            "multi" => {
                let Ok(multi) = config.options_as::<MultiConfig>() else {
                    return;
                };
                for child in &multi.children {
                    check(&child.connector, lab);
                }
            }
            _ => {}
        }
    }
    check(&admitted, &lab);
}

/// A proxy's JSON: what parses serialises and parses back to the same factory.
pub fn proxy_json(data: &[u8]) {
    let Some(text) = text(data) else { return };
    if let Ok(factory) = ProxyFactory::from_json(text) {
        let json = serde_json::to_string(&factory).expect("a factory serialises");
        assert_eq!(
            ProxyFactory::from_json(&json).expect("parses back"),
            factory
        );
    }
}

/// A `psgref1.` string: what parses prints and parses back to the same reference.
pub fn reference(data: &[u8]) {
    let Some(text) = text(data) else { return };
    if let Ok(reference) = DatasetRef::from_string_form(text) {
        let printed = reference.to_string_form().expect("a reference prints");
        assert_eq!(
            DatasetRef::from_string_form(&printed).expect("parses back"),
            reference
        );
    }
}

/// The configuration file: it parses or says why, and every site it accepts resolves
/// addresses inside its own collection path.
pub fn config_toml(data: &[u8]) {
    let Some(text) = text(data) else { return };
    if let Ok(config) = Config::from_toml(text, "fuzz.toml") {
        for name in config.sites.keys() {
            let _ = staging::resolve_address(&format!("{name}:/x"), &config, Some(name));
        }
    }
}

/// A command line address, at a fixed two-site configuration: whatever resolves is a
/// collection path the shared reading accepts, and reads back as itself.
pub fn address(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let _ = collection_path(text).map(|p| {
        assert_eq!(collection_path(&p).as_deref(), Ok(p.as_str()));
        assert!(!p.split('/').any(|c| c == ".." || c == "."));
    });
    // Parsed once: the fuzzer calls this hundreds of thousands of times a second.
    /// The slot's own type.
    struct FuzzConfig(Config);
    let config = &crate::process::inherited(|| {
        FuzzConfig(Config::from_toml(ADDRESS_CONFIG, "fuzz").expect("the fixed configuration"))
    })
    .0;
    if let Ok(location) = staging::resolve_address(text, config, Some("a"))
        && let Ok(path) = collection_path(&location.path)
    {
        assert!(!path.split('/').any(|c| c == ".."));
    }
}

const ADDRESS_CONFIG: &str = r#"
[sites.a]
collection = "4efbb335-3676-5cf2-b072-9f80cb395e68"
collection_path = "/projects/a"
local_path = "/tmp/ps-globus-fuzz/a"
[sites.b]
collection = "fcbea9c4-1c9b-5147-93b2-9171bbe2b2df"
collection_path = "/"
local_path = "/tmp/ps-globus-fuzz/b"
"#;

/// A `--batch` file: it parses or names the bad line.
pub fn batch_file(data: &[u8]) {
    let Some(text) = text(data) else { return };
    if let Ok(lines) = staging::parse_batch(text) {
        assert!(
            lines
                .iter()
                .all(|l| !l.source.is_empty() && !l.destination.is_empty())
        );
    }
}

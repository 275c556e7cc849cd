use std::collections::BTreeSet;

use super::*;
use crate::connector::{Connector, FileConnector, Key, PutOptions};
use crate::error::Untrusted;

const LOCAL_TRANSFER: &str = "http://127.0.0.1:4455/";

/// A fixed local configuration: one Redis table, the emulator's Transfer URL.
fn local() -> LocalTrust {
    let mut lab = RedisConfig::new("redis.lab.example.org", 6380);
    lab.password_env = Some("LAB_REDIS_PASSWORD".into());
    lab.tls = true;
    LocalTrust {
        config_path: "/home/me/.config/ps-globus/config.toml".into(),
        transfer_url: LOCAL_TRANSFER.into(),
        trusted_transfer_urls: vec!["http://transfer.staging.example.org/".into()],
        redis: [("lab".to_owned(), lab)].into(),
        store_dirs: vec![],
        collections: vec![],
    }
}

fn globus(transfer_url: Option<&str>) -> ConnectorConfig {
    let mut options = serde_json::json!({
        "store_dir": "s",
        "sites": {"a": {"collection": uuid::Uuid::nil(), "collection_path": "/", "local_path": "/tmp",
                        "https_max_size": u64::MAX}},
        "wait_timeout_s": u64::MAX,
        "https_max_size": u64::MAX,
    });
    if let Some(url) = transfer_url {
        options["transfer_url"] = url.into();
    }
    ConnectorConfig::new("globus", options).unwrap()
}

fn admitted_url(config: &ConnectorConfig) -> Result<Option<String>> {
    let admitted: GlobusConfig = admit(config, &local())?.options_as()?;
    Ok(admitted.transfer_url)
}

#[test]
fn a_proxys_transfer_url_is_used_only_where_the_local_configuration_trusts_it() {
    // None: the process's own; its own or the real service's: honoured.
    assert_eq!(admitted_url(&globus(None)).unwrap(), None);
    for trusted in [
        LOCAL_TRANSFER,
        "http://127.0.0.1:4455",
        DEFAULT_TRANSFER_URL,
    ] {
        assert_eq!(
            admitted_url(&globus(Some(trusted))).unwrap().as_deref(),
            Some(trusted)
        );
    }
    // Anything else is refused, naming the URL and the line that would trust it.
    for hostile in [
        "https://collector.evil.example/",
        "http://127.0.0.1:9/",
        "https://transfer.api.globus.org.evil.example/",
    ] {
        let err = admitted_url(&globus(Some(hostile))).unwrap_err();
        let text = err.to_string();
        assert!(err.is::<Untrusted>(), "{text}");
        assert!(text.contains(hostile.trim_end_matches('/')), "{text}");
        assert!(text.contains("transfer_urls"), "{text}");
    }
    // Listed, but plain http to a host that is not loopback: never.
    let err = admitted_url(&globus(Some("http://transfer.staging.example.org/"))).unwrap_err();
    assert!(err.to_string().contains("https://"), "{err}");
}

#[test]
fn numbers_from_data_are_bounded() {
    let admitted: GlobusConfig = admit(&globus(None), &local())
        .unwrap()
        .options_as()
        .unwrap();
    assert_eq!(admitted.wait_timeout_s, Some(MAX_DATA_TIMEOUT.as_secs()));
    assert_eq!(admitted.https_max_size, Some(MAX_DATA_HTTPS_SIZE));
    assert_eq!(
        admitted.sites["a"].https_max_size,
        Some(MAX_DATA_HTTPS_SIZE)
    );
}

fn redis(options: serde_json::Value) -> ConnectorConfig {
    ConnectorConfig::new("redis", options).unwrap()
}

fn admitted_redis(options: serde_json::Value) -> Result<RedisConfig> {
    admit(&redis(options), &local())?.options_as()
}

#[test]
fn a_redis_proxy_never_chooses_the_server_or_the_password_variable() {
    // The local table's binding replaces the data's: same server, named by host/port or
    // by table name; the password variable is the table's, whatever the proxy says.
    for named in [
        serde_json::json!({"host": "redis.lab.example.org", "port": 6380, "password_env": "AWS_SECRET_ACCESS_KEY"}),
        serde_json::json!({"server": "lab", "host": "collector.evil.example", "password_env": "PS_GLOBUS_CLIENT_SECRET", "prefix": "p:"}),
    ] {
        let admitted = admitted_redis(named).unwrap();
        assert_eq!(admitted.password_env.as_deref(), Some("LAB_REDIS_PASSWORD"));
        assert_eq!(admitted.host, "redis.lab.example.org");
        assert_eq!(admitted.port, 6380);
        assert!(admitted.tls);
    }
    assert_eq!(
        admitted_redis(serde_json::json!({"server": "lab", "prefix": "p:", "db": 3}))
            .map(|c| (c.prefix, c.db))
            .unwrap(),
        ("p:".to_owned(), 3),
        "locators stay the data's"
    );
    // Loopback, unknown to the configuration: used, without any credential.
    let admitted = admitted_redis(serde_json::json!({"host": "127.0.0.1", "port": 7, "password_env": "PS_GLOBUS_CLIENT_SECRET", "username": "admin"})).unwrap();
    assert_eq!((admitted.password_env, admitted.username), (None, None));
    // Elsewhere, unknown: refused, naming the server and the table that would trust it.
    let err = admitted_redis(
        serde_json::json!({"host": "collector.evil.example", "port": 6379, "password_env": "HOME"}),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(err.is::<Untrusted>(), "{text}");
    assert!(
        text.contains("redis://collector.evil.example:6379"),
        "{text}"
    );
    assert!(
        text.contains("[redis.NAME]") && text.contains("host = \"collector.evil.example\""),
        "{text}"
    );
    // A table name the configuration lacks: refused.
    assert!(
        admitted_redis(serde_json::json!({"server": "nope"})).is_err_and(|e| e.is::<Untrusted>())
    );
}

#[test]
fn a_multi_configs_children_are_admitted_too() {
    let multi = ConnectorConfig::new(
        "multi",
        serde_json::json!({"children": [
            {"name": "small", "connector": redis(serde_json::json!({"host": "collector.evil.example"}))},
            {"name": "large", "connector": globus(None)},
        ]}),
    )
    .unwrap();
    assert!(admit(&multi, &local()).is_err_and(|e| e.is::<Untrusted>()));
}

#[test]
fn an_endpoint_proxy_never_chooses_the_directory_its_home_endpoint_is_found_in() {
    let planted = ConnectorConfig {
        kind: "endpoint".into(),
        options: serde_json::json!({
            "endpoints": ["6f6b8e1e-4b1e-4e55-9a63-8f0e8a7bde21"],
            "proxystore_dir": "/tmp/planted",
            "timeout_ms": u64::MAX,
        }),
    };
    let admitted: crate::connector::EndpointConfig =
        admit(&planted, &local()).unwrap().options_as().unwrap();
    assert_eq!(admitted.proxystore_dir, None);
    assert_eq!(
        admitted.timeout_ms,
        Some(MAX_DATA_TIMEOUT.as_millis() as u64)
    );
    assert_eq!(admitted.endpoints.len(), 1);
}

#[test]
fn only_minted_ids_are_changed_from_data() {
    assert!(is_minted_id(&Key::new_id()));
    for id in ["authorized_keys", "0123", &"A".repeat(32), &"g".repeat(32)] {
        assert!(!is_minted_id(id), "{id}");
    }
}

/// A hostile proxy's file store at a directory nobody marked: nothing is deleted or
/// written there, even under a minted id; the marked directory of a genuine store is.
#[test]
fn a_file_store_from_data_changes_only_minted_objects_in_a_marked_directory() {
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("authorized_keys");
    std::fs::write(&victim, b"ssh-ed25519 AAAA").unwrap();
    let minted = Key::new_id();
    std::fs::write(outside.path().join(&minted), b"not a store's").unwrap();
    let data = Provenance::Data(Arc::new(local()));
    let hostile = ConnectorConfig::new("file", serde_json::json!({"dir": outside.path()})).unwrap();
    let connector = hostile.build_as(&data).unwrap();
    for id in ["authorized_keys", minted.as_str()] {
        let key = Key::new("file", id).unwrap();
        let err = crate::block_on(connector.evict(&key)).unwrap_err();
        assert!(err.is::<Untrusted>(), "{err}");
    }
    assert!(crate::block_on(connector.put(b"x", &PutOptions::default())).is_err());
    assert_eq!(std::fs::read(&victim).unwrap(), b"ssh-ed25519 AAAA");
    assert!(outside.path().join(&minted).exists());
    assert!(
        !outside.path().join(STORE_MARKER).exists(),
        "data marks nothing"
    );

    // A directory the configuration lists under `[trust] store_dirs` (here through a
    // path with a `.` in it, resolved) takes the minted object's eviction, not others.
    let listed = LocalTrust {
        store_dirs: vec![outside.path().join(".")],
        ..local()
    };
    assert!(listed.allows_changes_in(outside.path()));
    let rebuilt = hostile
        .build_as(&Provenance::Data(Arc::new(listed)))
        .unwrap();
    crate::block_on(rebuilt.evict(&Key::new("file", minted.as_str()).unwrap())).unwrap();
    assert!(!outside.path().join(&minted).exists());
    let e = crate::block_on(rebuilt.evict(&Key::new("file", "authorized_keys").unwrap()));
    assert!(e.as_ref().is_err_and(|e| e.is::<Untrusted>()), "{e:?}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"ssh-ed25519 AAAA");

    // A genuine store's directory carries the marker: its own objects go.
    let store_dir = tempfile::tempdir().unwrap();
    let genuine = FileConnector::new(store_dir.path()).unwrap();
    let key = crate::block_on(genuine.put(b"hello", &PutOptions::default())).unwrap();
    let rebuilt = genuine.config().build_as(&data).unwrap();
    crate::block_on(rebuilt.evict(&key)).unwrap();
    assert!(!crate::block_on(genuine.exists(&key)).unwrap());
}

/// The field names `T` deserializes, as serde's derive lists them (a deserializer that
/// only records what `deserialize_struct` is told): every field, whether or not a value
/// serializes it.
fn fields_of<T: serde::de::DeserializeOwned>() -> Vec<&'static str> {
    struct Capture<'a>(&'a mut Vec<&'static str>);
    impl<'de> serde::Deserializer<'de> for Capture<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: serde::de::Visitor<'de>>(
            self,
            _: V,
        ) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0.extend_from_slice(fields);
            Err(serde::de::Error::custom("fields recorded"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut fields = Vec::new();
    let _ = T::deserialize(Capture(&mut fields));
    assert!(
        !fields.is_empty(),
        "{} lists no fields",
        std::any::type_name::<T>()
    );
    fields
}

/// Every option of every built-in connector (every field its config deserializes) is
/// classified in [`FIELDS`], and `docs/THREAT-MODEL.md` lists each the same way: a new
/// option fails here until it is.
#[test]
fn every_connector_option_is_classified_as_locator_or_binding_in_the_threat_model() {
    let classified: BTreeSet<(&str, &str)> = FIELDS.iter().map(|(k, f, _)| (*k, *f)).collect();
    let shapes = [
        ("store", fields_of::<crate::StoreConfig>()),
        (
            "local",
            fields_of::<crate::connector::local::LocalOptions>(),
        ),
        ("file", fields_of::<crate::connector::file::FileOptions>()),
        ("endpoint", fields_of::<crate::connector::EndpointConfig>()),
        ("globus", fields_of::<GlobusConfig>()),
        ("redis", fields_of::<RedisConfig>()),
        ("multi", fields_of::<MultiConfig>()),
    ];
    let mut listed = BTreeSet::new();
    for (kind, fields) in shapes {
        for field in fields {
            // A store config's own version and connector are the format, not options.
            if kind == "store" && matches!(field, "v" | "connector") {
                continue;
            }
            assert!(
                classified.contains(&(kind, field)),
                "{kind}.{field} is not classified in trust::FIELDS"
            );
            listed.insert((kind, field));
        }
    }
    assert_eq!(listed, classified, "FIELDS lists options no config has");
    let document = include_str!("../../../docs/THREAT-MODEL.md");
    for (kind, field, role) in FIELDS {
        let role = match role {
            Role::Locator => "locator",
            Role::Binding => "binding",
            Role::Tuning => "tuning",
        };
        let row = format!("| `{kind}` | `{field}` | {role} |");
        assert!(
            document.contains(&row),
            "docs/THREAT-MODEL.md lacks the row {row}"
        );
    }
}

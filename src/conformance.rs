//! The connector conformance suite: the contract of [`Connector`], checked the same way
//! for every implementation, including connectors written outside this crate.
//!
//! A connector proves itself with one line per connector in an integration test (the
//! test crate needs `tokio` with the `macros` and `rt-multi-thread` features):
//!
//! ```ignore
//! use ps_globus::conformance::Harness;
//! ps_globus::conformance_suite!(my_connector, || Harness::new(MyConnector::new()));
//! ```
//!
//! What a connector cannot do is a field of the [`Capabilities`] it reports, which
//! changes what a check expects; no check is skipped.

use std::any::Any;
use std::sync::Arc;

use crate::Error;
use crate::connector::{Capabilities, Connector, ConnectorConfig, KEY_VERSION, Key, PutOptions};
use crate::error::{AlreadySet, ProducerGone};

/// One connector under test, with whatever must stay alive beside it (a temp dir, an
/// emulator).
pub struct Harness {
    /// The connector.
    pub connector: Arc<dyn Connector>,
    /// What it reports it can do.
    pub caps: Capabilities,
    keep: Vec<Box<dyn Any + Send>>,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("caps", &self.caps)
            .finish_non_exhaustive()
    }
}

impl Harness {
    /// A harness for `connector`, with the capabilities it reports.
    pub fn new(connector: impl Connector + 'static) -> Self {
        let caps = connector.capabilities();
        Harness {
            connector: Arc::new(connector),
            caps,
            keep: Vec::new(),
        }
    }

    /// Keeps `guard` alive as long as the harness.
    pub fn keep(mut self, guard: impl Any + Send) -> Self {
        self.keep.push(Box::new(guard));
        self
    }
}

/// Generates one test per check for a connector: `conformance_suite!(name, || harness)`.
///
/// `conformance_suite!(@sequential name, || harness)` generates one ignored test that
/// runs every check in turn instead: for a connector whose configuration comes from the
/// process's environment, run as a child process that has it (`--ignored --exact name`).
#[macro_export]
macro_rules! conformance_suite {
    (@sequential $name:ident, $make:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[ignore = "run in a child process that has the connector's environment"]
        async fn $name() {
            let make = || -> $crate::conformance::Harness { ($make)() };
            $crate::conformance_suite!(@list @run make);
        }
    };
    ($name:ident, $make:expr) => {
        mod $name {
            use super::*;
            fn make() -> $crate::conformance::Harness {
                ($make)()
            }
            $crate::conformance_suite!(@list @each);
        }
    };
    // The one list of checks, handed to a mode.
    (@list @$mode:ident $($args:ident)*) => {
        $crate::conformance_suite!(@$mode $($args)* ;
            round_trips_of_every_size,
            missing_keys_are_none,
            evict_is_idempotent,
            batches_keep_order,
            concurrent_puts_and_gets,
            config_round_trip_reads_old_keys,
            rebuilt_after_all_instances_dropped,
            foreign_keys_are_refused,
            malformed_keys_are_refused,
            keys_are_tagged_and_versioned,
            put_file_stores_the_file,
            resolve_path_gives_the_bytes_or_is_unsupported,
            close_keeps_every_object,
            deferred_keys_wait_for_set_or_are_unsupported,
            a_future_is_settled_once,
            an_evicted_future_fails_at_once,
        );
    };
    (@each ; $($check:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                $crate::conformance::$check(make()).await;
            }
        )*
    };
    (@run $make:ident ; $($check:ident,)*) => {
        $(
            eprintln!("conformance: {}", stringify!($check));
            $crate::conformance::$check($make()).await;
        )*
    };
}

/// Bytes that differ at every offset, so a shifted or truncated read cannot pass.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(seed as u32 * 7) as u8 ^ (i >> 8) as u8)
        .collect()
}

fn opts() -> PutOptions {
    PutOptions::default()
}

/// Objects of 0 B to 64 MiB come back byte for byte, and `exists` sees them.
pub async fn round_trips_of_every_size(h: Harness) {
    let c = &h.connector;
    for (seed, len) in [0usize, 1, 1 << 20, 64 << 20].into_iter().enumerate() {
        let data = pattern(len, seed as u8);
        let key = c.put(&data, &opts()).await.unwrap();
        assert!(
            c.exists(&key).await.unwrap(),
            "exists after put of {len} bytes"
        );
        let back = c.get(&key).await.unwrap().expect("object just stored");
        assert_eq!(back.len(), len);
        assert!(back[..] == data[..], "bytes of a {len}-byte object differ");
        c.evict(&key).await.unwrap();
    }
}

/// A key never stored, or evicted, reads as `None`, never an error.
pub async fn missing_keys_are_none(h: Harness) {
    let c = &h.connector;
    let never_stored = Key::new(c.kind(), Key::new_id()).unwrap();
    assert_eq!(c.get(&never_stored).await.unwrap(), None);
    assert!(!c.exists(&never_stored).await.unwrap());

    let key = c.put(b"soon gone", &opts()).await.unwrap();
    c.evict(&key).await.unwrap();
    assert_eq!(c.get(&key).await.unwrap(), None);
}

/// Evicting twice succeeds and leaves other objects alone.
pub async fn evict_is_idempotent(h: Harness) {
    let c = &h.connector;
    let key = c.put(b"x", &opts()).await.unwrap();
    let other = c.put(b"stays", &opts()).await.unwrap();
    c.evict(&key).await.unwrap();
    c.evict(&key).await.unwrap();
    assert!(!c.exists(&key).await.unwrap());
    assert_eq!(c.get(&key).await.unwrap(), None);
    assert_eq!(c.get(&other).await.unwrap().as_deref(), Some(&b"stays"[..]));
}

/// Batch results keep the order of their inputs, with `None` for missing keys.
pub async fn batches_keep_order(h: Harness) {
    let c = &h.connector;
    let big = pattern(4096, 9);
    let objects: Vec<&[u8]> = vec![b"first", b"", &big, b"last"];
    let keys = c.put_batch(&objects, &opts()).await.unwrap();
    assert_eq!(keys.len(), 4);
    let mut ids: Vec<&str> = keys.iter().map(Key::id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "batch keys are distinct");

    let missing = Key::new(c.kind(), Key::new_id()).unwrap();
    let asked = [
        keys[3].clone(),
        missing,
        keys[0].clone(),
        keys[2].clone(),
        keys[1].clone(),
    ];
    let got = c.get_batch(&asked).await.unwrap();
    let got: Vec<Option<&[u8]>> = got.iter().map(|b| b.as_deref()).collect();
    assert_eq!(
        got,
        vec![
            Some(&b"last"[..]),
            None,
            Some(&b"first"[..]),
            Some(&big[..]),
            Some(&b""[..])
        ]
    );
    assert!(c.put_batch(&[], &opts()).await.unwrap().is_empty());
    assert!(c.get_batch(&[]).await.unwrap().is_empty());
}

/// 32 tasks putting and getting at once each get their own keys and bytes.
pub async fn concurrent_puts_and_gets(h: Harness) {
    let tasks: Vec<_> = (0..32u8)
        .map(|t| {
            let c = Arc::clone(&h.connector);
            tokio::spawn(async move {
                let mut mine = Vec::new();
                for i in 0..8u8 {
                    let data = pattern(100 + t as usize * 8 + i as usize, t ^ i);
                    mine.push((c.put(&data, &opts()).await.unwrap(), data));
                }
                for (key, data) in &mine {
                    let back = c.get(key).await.unwrap().expect("stored by this task");
                    assert!(back[..] == data[..], "task {t} read another object");
                }
                mine.into_iter().map(|(k, _)| k).collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let count = all.len();
    all.sort_by(|a, b| a.id().cmp(b.id()));
    all.dedup_by(|a, b| a.id() == b.id());
    assert_eq!(all.len(), count, "every concurrent put got its own key");
    assert_eq!(count, 256);
}

/// The config survives JSON and rebuilds a connector that reads the old keys, and the
/// original reads what the rebuilt one writes.
pub async fn config_round_trip_reads_old_keys(h: Harness) {
    let c = &h.connector;
    let key = c.put(b"before rebuild", &opts()).await.unwrap();
    let json = serde_json::to_string(&c.config()).unwrap();
    let config: ConnectorConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(config, c.config());
    assert_eq!(config.kind, c.kind());

    let rebuilt = config.build().unwrap();
    assert_eq!(rebuilt.config(), c.config());
    let back = rebuilt.get(&key).await.unwrap();
    assert_eq!(back.as_deref(), Some(&b"before rebuild"[..]));
    let key2 = rebuilt.put(b"after rebuild", &opts()).await.unwrap();
    let back2 = c.get(&key2).await.unwrap();
    assert_eq!(back2.as_deref(), Some(&b"after rebuild"[..]));
}

/// What a fresh process sees: a connector rebuilt once no instance is left alive.
pub async fn rebuilt_after_all_instances_dropped(h: Harness) {
    let Harness {
        connector,
        caps,
        keep: _keep,
    } = h;
    let key = connector.put(b"outlive me?", &opts()).await.unwrap();
    let config = connector.config();
    drop(connector);
    let rebuilt = config.build().unwrap();
    let expected = caps.outlives_instances.then_some(&b"outlive me?"[..]);
    assert_eq!(rebuilt.get(&key).await.unwrap().as_deref(), expected);
    assert_eq!(rebuilt.exists(&key).await.unwrap(), caps.outlives_instances);
}

/// A key of another kind is refused ([`Error::InvalidInput`], naming both kinds) for
/// every operation.
pub async fn foreign_keys_are_refused(h: Harness) {
    let c = &h.connector;
    let foreign = Key::new("some-other-kind", Key::new_id()).unwrap();
    let is_foreign = |e: Error| {
        matches!(e, Error::InvalidInput(_))
            && e.to_string()
                .contains("made by a 'some-other-kind' connector")
    };
    assert!(is_foreign(c.get(&foreign).await.unwrap_err()));
    assert!(is_foreign(c.exists(&foreign).await.unwrap_err()));
    assert!(is_foreign(c.evict(&foreign).await.unwrap_err()));
    assert!(is_foreign(
        c.get_batch(std::slice::from_ref(&foreign))
            .await
            .unwrap_err()
    ));
}

/// Ids that could escape a directory, and malformed or future keys, are refused.
pub async fn malformed_keys_are_refused(h: Harness) {
    let kind = h.connector.kind();
    let bad_ids = [
        "../escape",
        "a/b",
        "/etc/passwd",
        "",
        ".hidden",
        "sp ace",
        "nul\u{0}",
    ];
    for id in bad_ids {
        assert!(
            matches!(Key::new(kind, id), Err(Error::InvalidInput(_))),
            "Key::new accepted id {id:?}"
        );
        let json = serde_json::json!({"v": 1, "kind": kind, "id": id}).to_string();
        assert!(
            matches!(json.parse::<Key>(), Err(Error::InvalidInput(_))),
            "parsed id {id:?}"
        );
    }
    let too_long = "x".repeat(129);
    assert!(Key::new(kind, too_long).is_err());
    for text in [
        "not json",
        "{}",
        r#"{"v":1,"kind":"file"}"#,
        r#"{"v":0,"kind":"file","id":"abc"}"#,
        r#"{"v":1,"kind":"","id":"abc"}"#,
        r#"{"v":"1","kind":"file","id":"abc"}"#,
    ] {
        assert!(
            matches!(text.parse::<Key>(), Err(Error::InvalidInput(_))),
            "parsed {text}"
        );
    }
    let future = format!(
        r#"{{"v":{},"kind":"{kind}","id":"abc","new_field":1}}"#,
        KEY_VERSION + 1
    );
    let e = future.parse::<Key>().unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
    assert!(
        e.to_string().starts_with("unsupported key format version"),
        "{e}"
    );
}

/// Keys name their kind and format version, and stay small.
pub async fn keys_are_tagged_and_versioned(h: Harness) {
    let c = &h.connector;
    let key = c.put(b"tagged", &opts()).await.unwrap();
    assert_eq!(key.kind(), c.kind());
    assert_eq!(key.version(), KEY_VERSION);
    let text = key.to_string();
    assert!(text.len() < h.caps.max_key_len, "a key is small: {text}");
    let parsed: Key = text.parse().unwrap();
    assert_eq!(parsed, key);
    assert_eq!(
        c.get(&parsed).await.unwrap().as_deref(),
        Some(&b"tagged"[..])
    );
}

/// `put_file` stores the file's bytes; the object stays whatever happens to the file
/// afterwards: removed, the object is still there; rewritten in place, a get returns
/// the bytes that were put or an integrity error, never the new bytes (a connector may
/// make the object a hard link of the file only if its reads verify).
pub async fn put_file_stores_the_file(h: Harness) {
    let c = &h.connector;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("input.bin");
    let data = pattern(3 << 20, 5);
    std::fs::write(&path, &data).unwrap();
    let key = c.put_file(&path, &opts()).await.unwrap();
    std::fs::remove_file(&path).unwrap();
    let back = c.get(&key).await.unwrap().expect("stored from a file");
    assert!(back[..] == data[..], "put_file stored other bytes");

    std::fs::write(&path, &data).unwrap();
    let key = c.put_file(&path, &opts()).await.unwrap();
    std::fs::write(&path, pattern(3 << 20, 6)).unwrap();
    match c.get(&key).await {
        Ok(back) => assert!(
            back.is_some_and(|b| b[..] == data[..]),
            "the file's new bytes came back as the object"
        ),
        Err(e) => assert!(matches!(e, Error::Integrity(_)), "{e}"),
    }
    let missing = c.put_file(&dir.path().join("absent"), &opts()).await;
    assert!(
        matches!(missing, Err(Error::Storage(_))),
        "a missing file is an I/O error naming it: {missing:?}"
    );
}

/// `resolve_path` gives a local file holding exactly the object, for every object where
/// the connector promises it ([`Capabilities::resolve_path`]); otherwise it may still give
/// one for some objects (a multi connector's objects in a child that keeps files), and
/// refuses the others with [`Error::Unsupported`].
pub async fn resolve_path_gives_the_bytes_or_is_unsupported(h: Harness) {
    let c = &h.connector;
    for (len, seed) in [(100, 2), (70_000, 3)] {
        let data = pattern(len, seed);
        let key = c.put(&data, &opts()).await.unwrap();
        match c.resolve_path(&key).await {
            Ok(path) => assert_eq!(std::fs::read(&path).unwrap(), data),
            Err(e @ Error::Unsupported(_)) => {
                assert!(
                    !h.caps.resolve_path,
                    "resolve_path is a capability but refused"
                );
                assert!(
                    e.to_string().starts_with("resolve_path is not available"),
                    "{e}"
                );
            }
            Err(other) => panic!("resolve_path failed: {other}"),
        }
    }
    let foreign = Key::new("some-other-kind", Key::new_id()).unwrap();
    assert!(matches!(
        c.resolve_path(&foreign).await,
        Err(Error::InvalidInput(_))
    ));
}

/// `close` never deletes: objects stay readable by a connector rebuilt from the config
/// (where objects outlive instances), and by the closed one.
pub async fn close_keeps_every_object(h: Harness) {
    let c = &h.connector;
    let key = c.put(b"closing keeps me", &opts()).await.unwrap();
    c.close().await.unwrap();
    assert_eq!(
        c.get(&key).await.unwrap().as_deref(),
        Some(&b"closing keeps me"[..])
    );
    if h.caps.outlives_instances {
        let rebuilt = c.config().build().unwrap();
        assert_eq!(
            rebuilt.get(&key).await.unwrap().as_deref(),
            Some(&b"closing keeps me"[..])
        );
    }
}

/// With deferred keys: a key from `new_key` reads as missing until `set`, then as the
/// bytes set (also through a rebuilt connector where objects outlive instances); an
/// abandoned one is [`ProducerGone`](crate::error::ProducerGone); eviction removes a set one. Without: every
/// deferred-key operation is [`Error::Unsupported`].
pub async fn deferred_keys_wait_for_set_or_are_unsupported(h: Harness) {
    let c = &h.connector;
    if !h.caps.deferred_keys {
        let e = c.new_key(&opts()).unwrap_err();
        assert!(matches!(e, Error::Unsupported(_)), "{e}");
        let plain = c.put(b"x", &opts()).await.unwrap();
        let e = c.set(&plain, b"y").await.unwrap_err();
        assert!(matches!(e, Error::Unsupported(_)), "{e}");
        return;
    }
    let key = c.new_key(&opts()).unwrap();
    assert!(key.is_deferred());
    assert_eq!(key.kind(), c.kind());
    assert!(c.get(&key).await.unwrap().is_none(), "not set yet");
    assert!(!c.exists(&key).await.unwrap());
    let data = pattern(100_000, 9);
    c.set(&key, &data).await.unwrap();
    assert_eq!(c.get(&key).await.unwrap().as_deref(), Some(&data[..]));
    assert!(c.exists(&key).await.unwrap());
    let text = key.to_string();
    assert!(text.len() < h.caps.max_key_len, "a key is small: {text}");
    if h.caps.outlives_instances {
        let rebuilt = c.config().build().unwrap();
        let got = rebuilt.get(&text.parse().unwrap()).await.unwrap();
        assert_eq!(got.as_deref(), Some(&data[..]));
    }
    let gets = c.get_batch(std::slice::from_ref(&key)).await.unwrap();
    assert_eq!(gets[0].as_deref(), Some(&data[..]), "batches unwrap it too");
    c.evict(&key).await.unwrap();
    // A tombstone: not "not set yet" (its readers would wait), but gone.
    let gone = c.get(&key).await.unwrap_err();
    assert!(matches!(gone, Error::NotFound(_)), "{gone}");

    let given_up = c.new_key(&opts()).unwrap();
    c.abandon(&given_up, "no value today").await.unwrap();
    let e = c.get(&given_up).await.unwrap_err();
    assert!(e.is::<ProducerGone>(), "{e}");
    assert!(e.to_string().contains("no value today"), "{e}");

    let plain = c.put(b"x", &opts()).await.unwrap();
    let e = c.set(&plain, b"y").await.unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e}");
    assert_eq!(c.get(&plain).await.unwrap().as_deref(), Some(&b"x"[..]));
}

/// A deferred key is settled once: a second value (a setter deserialized twice, a
/// retried task) and an abandon after a value are [`AlreadySet`](crate::error::AlreadySet) and change
/// nothing; a value after an abandon too. Skipped without deferred keys.
pub async fn a_future_is_settled_once(h: Harness) {
    let c = &h.connector;
    if !h.caps.deferred_keys {
        return;
    }
    let key = c.new_key(&opts()).unwrap();
    let first = pattern(5000, 3);
    c.set(&key, &first).await.unwrap();
    for second in [
        c.set(&key, &pattern(5000, 4)).await,
        c.abandon(&key, "a retry gave up").await,
    ] {
        let e = second.unwrap_err();
        assert!(e.is::<AlreadySet>(), "{e}");
    }
    // The very same bytes again changes nothing either way (on Redis it cannot be told
    // from a retried command that had landed, and succeeds).
    match c.set(&key, &first).await {
        Ok(()) => {}
        Err(e) if e.is::<AlreadySet>() => {}
        Err(e) => panic!("the same value again: {e}"),
    }
    assert_eq!(c.get(&key).await.unwrap().as_deref(), Some(&first[..]));

    let abandoned = c.new_key(&opts()).unwrap();
    c.abandon(&abandoned, "first word").await.unwrap();
    let late = c.set(&abandoned, b"late").await.unwrap_err();
    assert!(late.is::<AlreadySet>(), "{late}");
    let e = c.get(&abandoned).await.unwrap_err();
    assert!(e.to_string().contains("first word"), "{e}");
    c.evict(&key).await.unwrap();
    c.evict(&abandoned).await.unwrap();
}

/// Regression: an evicted future made every later resolve wait the whole resolve timeout
/// (a day by default). Its eviction leaves a tombstone: a later read fails at once with
/// a "not found … evicted" error, `exists` is false, and a late setter is refused.
pub async fn an_evicted_future_fails_at_once(h: Harness) {
    let c = &h.connector;
    if !h.caps.deferred_keys {
        return;
    }
    let key = c.new_key(&opts()).unwrap();
    c.set(&key, b"soon gone").await.unwrap();
    c.evict(&key).await.unwrap();
    let e = c.get(&key).await.unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e}");
    assert!(e.to_string().contains("evicted"), "{e}");
    assert!(!c.exists(&key).await.unwrap());
    let late = c.set(&key, b"again").await.unwrap_err();
    assert!(late.is::<AlreadySet>(), "{late}");
    c.evict(&key).await.unwrap();
}

//! `Proxy<T>` and `Store` behaviour: laziness, failure, caching, registry, async use.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::{GatedConnector, panic_text, unique_name};
use ps_globus::connector::{Connector, FileConnector, Key, LocalConnector, PutOptions};
use ps_globus::{Codec, Error, Proxy, ProxyOptions, Store, get_or_create_store, get_store};
use serde::{Deserialize, Serialize};

fn local_store(prefix: &str) -> Store {
    Store::new(unique_name(prefix), LocalConnector::new()).unwrap()
}

fn gated_store(prefix: &str) -> (Store, Arc<GatedConnector>) {
    let gated = GatedConnector::new();
    let shared: Arc<dyn Connector> = gated.clone();
    (Store::new(unique_name(prefix), shared).unwrap(), gated)
}

fn sum_of(v: &[i64]) -> i64 {
    v.iter().sum()
}

#[test]
fn closure_proxy_behaves_as_its_object() {
    let x: Vec<i64> = vec![3, 1, 4, 1, 5];
    let expected = x.clone();
    let p = Proxy::new(move || x.clone());
    assert!(!p.is_resolved());
    assert_eq!(p.len(), 5);
    assert!(p.is_resolved());
    assert_eq!(p.iter().sum::<i64>(), 14);
    #[allow(clippy::op_ref)] // the design's example, kept verbatim
    let same = &*p == &expected;
    assert!(same);
    assert_eq!(sum_of(&p), 14, "&Proxy<Vec<i64>> coerces to &[i64]");
    let v: &Vec<i64> = &p;
    assert_eq!(v, &expected);
    assert_eq!(p.into_inner().unwrap(), expected);
}

#[test]
fn closure_runs_once_and_only_when_used() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let p = Proxy::new(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        String::from("made")
    });
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(&*p, "made");
    assert_eq!(p.to_uppercase(), "MADE");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn closure_proxy_cannot_be_serialized() {
    let p = Proxy::new(|| 1u8);
    let err = serde_json::to_string(&p).unwrap_err();
    assert!(err.to_string().contains("closure"), "{err}");
}

#[test]
fn store_proxy_defers_resolution_until_use() {
    let store = local_store("defer");
    let object = vec![10i64, 20, 30];
    let p = store.proxy(&object).unwrap();
    assert!(!p.is_resolved());
    assert_eq!(store.metrics().get.calls, 0, "no read before use");
    assert_eq!(sum_of(&p), 60);
    assert!(p.is_resolved());
    assert_eq!(store.metrics().get.calls, 1);
    assert_eq!(p[1], 20);
    assert_eq!(store.metrics().get.calls, 1, "later uses do not read again");
    assert_eq!(p.key().unwrap().kind(), "local");
}

#[test]
fn resolve_returns_errors_and_deref_panics_naming_store_key_and_cause() {
    let store = local_store("missing");
    let p: Proxy<Vec<u8>> = store.proxy(&vec![1u8, 2, 3]).unwrap();
    let key = p.key().unwrap().clone();
    store.evict(&key).unwrap();

    let err = p.resolve().unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    let message = panic_text(catch_unwind(AssertUnwindSafe(|| p.len())).unwrap_err());
    assert!(message.contains(store.name()), "{message}");
    assert!(message.contains(key.id()), "{message}");
    assert!(message.contains("is not in store"), "{message}");
    assert!(message.contains("Proxy::resolve"), "{message}");
}

#[test]
fn resolve_timeout_is_a_typed_error_and_a_clear_panic() {
    let gated = GatedConnector::new();
    let shared: Arc<dyn Connector> = gated.clone();
    let store = Store::builder(unique_name("timeout"), shared)
        .resolve_timeout(Duration::from_millis(20))
        .build()
        .unwrap();
    let p = store.proxy(&String::from("never arrives")).unwrap();
    let err = p.resolve().unwrap_err();
    assert!(
        matches!(err, Error::Timeout(_)),
        "expected a timeout, got {err:?}"
    );
    let text = err.to_string();
    assert!(
        text.starts_with("timed out after 20ms waiting for "),
        "{text}"
    );
    assert!(text.contains(store.name()), "{text}");
    assert!(err.is_transient());
    let message = panic_text(catch_unwind(AssertUnwindSafe(|| p.len())).unwrap_err());
    assert!(message.contains("timed out after 20ms"), "{message}");
    assert!(message.contains(store.name()), "{message}");
}

#[test]
fn prefetch_fetches_in_the_background_and_deref_finds_it_ready() {
    let (store, gated) = gated_store("prefetch");
    let p = store.proxy(&vec![1u32, 2, 3]).unwrap();
    p.prefetch();
    p.prefetch(); // a second call does not start a second fetch
    ps_globus::block_on(gated.wait_for_gets(1));
    assert!(!p.is_resolved(), "the fetch is still held at the gate");
    gated.open(1);
    assert_eq!(p.iter().sum::<u32>(), 6);
    assert_eq!(gated.gets(), 1, "deref used the background fetch");
}

#[test]
fn concurrent_derefs_fetch_once() {
    let (store, gated) = gated_store("concurrent");
    let p = store.proxy(&String::from("shared")).unwrap();
    std::thread::scope(|scope| {
        let readers: Vec<_> = (0..8).map(|_| scope.spawn(|| p.len())).collect();
        ps_globus::block_on(gated.wait_for_gets(1));
        gated.open_all();
        for reader in readers {
            assert_eq!(reader.join().unwrap(), 6);
        }
    });
    assert_eq!(gated.gets(), 1);
}

#[test]
fn clones_share_one_fetch_and_the_resolved_value() {
    let (store, gated) = gated_store("clones");
    let p = store.proxy(&String::from("shared")).unwrap();
    let clones: Vec<Proxy<String>> = (0..4).map(|_| p.clone()).collect();
    std::thread::scope(|scope| {
        let readers: Vec<_> = clones
            .iter()
            .map(|c| scope.spawn(move || c.len()))
            .collect();
        ps_globus::block_on(gated.wait_for_gets(1));
        gated.open_all();
        for reader in readers {
            assert_eq!(reader.join().unwrap(), 6);
        }
    });
    assert_eq!(gated.gets(), 1, "one fetch for all clones");
    assert!(p.is_resolved(), "resolving a clone resolves the original");
    let later = p.clone();
    assert!(later.is_resolved());
    assert!(std::ptr::eq(&*later, &*p), "the same value, not a copy");
    // A closure proxy's clones run the closure once.
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let c = Proxy::new(move || counted.fetch_add(1, Ordering::SeqCst) + 41);
    let d = c.clone();
    assert_eq!((*d, *c), (41, 41), "a second run would give 42");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn evict_option_removes_the_object_after_first_resolve() {
    let store = local_store("evict");
    let options = ProxyOptions::default().with_evict(true);
    let p = store.proxy_with(&vec![7u8; 100], &options).unwrap();
    let key = p.key().unwrap().clone();
    assert!(store.exists(&key).unwrap());
    assert_eq!(p.len(), 100);
    assert!(!store.exists(&key).unwrap());
    assert_eq!(p[99], 7, "the resolved object stays usable");
    let again: Proxy<Vec<u8>> = store.proxy_from_key(key);
    assert!(matches!(again.resolve(), Err(Error::NotFound(_))));
}

#[test]
fn into_inner_and_into_shared() {
    let store = Store::builder(unique_name("inner"), LocalConnector::new())
        .cache_size(4)
        .build()
        .unwrap();
    let key = store.put(&String::from("owned")).unwrap();
    let p: Proxy<String> = store.proxy_from_key(key.clone());
    assert_eq!(p.into_inner().unwrap(), "owned");
    let shared = store.proxy_from_key::<String>(key).into_shared().unwrap();
    assert_eq!(*shared, "owned");
}

/// A type that counts how often it is decoded.
#[derive(Debug, PartialEq, Serialize)]
struct Counted(u64);
static DECODES: AtomicUsize = AtomicUsize::new(0);
impl<'de> Deserialize<'de> for Counted {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        DECODES.fetch_add(1, Ordering::SeqCst);
        u64::deserialize(d).map(Counted)
    }
}

#[test]
fn cache_hit_neither_rereads_nor_redecodes() {
    let connector: Arc<dyn Connector> = Arc::new(LocalConnector::new());
    let store = Store::builder(unique_name("cache"), Arc::clone(&connector))
        .cache_size(8)
        .build()
        .unwrap();
    let key = store.put(&Counted(5)).unwrap();
    let before = DECODES.load(Ordering::SeqCst);
    let first = store.get::<Counted>(&key).unwrap().unwrap();
    assert_eq!(DECODES.load(Ordering::SeqCst), before + 1);

    // Remove the bytes behind the store's back: only the cache can answer now.
    ps_globus::block_on(connector.evict(&key)).unwrap();
    let second = store
        .get::<Counted>(&key)
        .unwrap()
        .expect("served from the cache");
    assert!(Arc::ptr_eq(&first, &second), "the same decoded object");
    assert_eq!(
        DECODES.load(Ordering::SeqCst),
        before + 1,
        "no second decode"
    );
    let m = store.metrics();
    assert_eq!((m.cache_hits, m.cache_misses), (1, 1));

    store.evict(&key).unwrap();
    assert!(
        store.get::<Counted>(&key).unwrap().is_none(),
        "evict clears the cache"
    );
}

#[test]
fn cache_size_zero_always_reads() {
    let connector: Arc<dyn Connector> = Arc::new(LocalConnector::new());
    let store = Store::new(unique_name("nocache"), Arc::clone(&connector)).unwrap();
    let key = store.put(&1u64).unwrap();
    assert_eq!(*store.get::<u64>(&key).unwrap().unwrap(), 1);
    ps_globus::block_on(connector.evict(&key)).unwrap();
    assert!(store.get::<u64>(&key).unwrap().is_none());
    assert_eq!(store.metrics().cache_hits, 0);
}

#[test]
fn metrics_count_calls_objects_bytes_and_errors() {
    let store = local_store("metrics");
    let k1 = store.put(&vec![0u8; 1000]).unwrap();
    let keys = store
        .put_batch(&[vec![1u8; 10], vec![2u8; 20]], &PutOptions::default())
        .unwrap();
    store.get::<Vec<u8>>(&k1).unwrap();
    let got = store.get_batch::<Vec<u8>>(&keys).unwrap();
    assert_eq!(got[1].as_deref().map(Vec::len), Some(20));
    store.exists(&k1).unwrap();
    store.evict(&k1).unwrap();
    let foreign = Key::new("other", Key::new_id()).unwrap();
    assert!(store.get::<Vec<u8>>(&foreign).is_err());

    let m = store.metrics();
    assert_eq!((m.put.calls, m.put.bytes), (1, 1000));
    assert_eq!(
        (m.put_batch.calls, m.put_batch.objects, m.put_batch.bytes),
        (1, 2, 30)
    );
    assert_eq!((m.get.calls, m.get.errors, m.get.bytes), (2, 1, 1000));
    assert_eq!((m.get_batch.objects, m.get_batch.bytes), (2, 30));
    assert_eq!((m.exists.calls, m.evict.calls), (1, 1));
}

#[test]
fn batches_keep_order_with_cache_and_missing_keys() {
    let store = Store::builder(unique_name("batch"), LocalConnector::new())
        .cache_size(2)
        .build()
        .unwrap();
    let values = vec![String::from("a"), String::from("b"), String::from("c")];
    let proxies = store
        .proxy_batch(&values, &ProxyOptions::default())
        .unwrap();
    let keys: Vec<Key> = proxies.iter().map(|p| p.key().unwrap().clone()).collect();
    store.get::<String>(&keys[1]).unwrap(); // now cached
    let missing = Key::new("local", Key::new_id()).unwrap();
    let asked = [keys[2].clone(), missing, keys[1].clone(), keys[0].clone()];
    let got = store.get_batch::<String>(&asked).unwrap();
    let got: Vec<Option<&str>> = got
        .iter()
        .map(|v| v.as_deref().map(String::as_str))
        .collect();
    assert_eq!(got, vec![Some("c"), None, Some("b"), Some("a")]);
    assert_eq!(store.metrics().cache_hits, 1);
    let joined: String = proxies.iter().map(|p| p.as_str()).collect();
    assert_eq!(joined, "abc");
}

#[test]
fn byte_payloads_are_stored_raw_and_typed_values_in_the_codec() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::builder(unique_name("raw"), FileConnector::new(dir.path()).unwrap())
        .codec(Codec::Json)
        .build()
        .unwrap();
    let raw = vec![0u8, 159, 146, 150];
    let key = store.put(&raw).unwrap();
    assert_eq!(std::fs::read(dir.path().join(key.id())).unwrap(), raw);
    let as_bytes = store.get::<bytes::Bytes>(&key).unwrap().unwrap();
    assert_eq!(&as_bytes[..], &raw[..]);

    let key = store.put(&vec![1u16, 2]).unwrap();
    assert_eq!(std::fs::read(dir.path().join(key.id())).unwrap(), b"[1,2]");
    let err = store.get::<String>(&key).unwrap_err();
    assert!(
        matches!(err, Error::Codec(_)) && err.to_string().contains("with codec json"),
        "{err:?}"
    );
    assert!(
        err.is::<serde_json::Error>(),
        "the codec's own error is the source: {err:?}"
    );
}

#[test]
fn registry_conflicts_are_typed_and_equal_configs_share() {
    let name = unique_name("registry");
    let store = Store::new(name.clone(), LocalConnector::new()).unwrap();
    assert!(get_store(&name).unwrap().ptr_eq(&store));

    let other = Store::new(name.clone(), LocalConnector::new());
    assert!(matches!(other, Err(Error::Conflict(_))));
    let other_config = Store::builder(name.clone(), LocalConnector::new())
        .register(false)
        .build()
        .unwrap();
    assert!(matches!(
        get_or_create_store(other_config.config()),
        Err(Error::Conflict(_))
    ));
    assert!(get_or_create_store(store.config()).unwrap().ptr_eq(&store));

    store.close().unwrap();
    assert!(get_store(&name).is_none());
    let rebuilt = get_or_create_store(store.config()).unwrap();
    assert!(!rebuilt.ptr_eq(&store));
    assert_eq!(rebuilt.config(), store.config());
}

#[test]
fn deserialized_proxy_finds_the_registered_store() {
    let store = local_store("roundtrip");
    let p = store.proxy(&(String::from("pair"), 2u8)).unwrap();
    let json = serde_json::to_string(&p).unwrap();
    assert!(!json.contains("pair"), "the object never travels: {json}");
    let q: Proxy<(String, u8)> = serde_json::from_str(&json).unwrap();
    assert_eq!(q.0, "pair");
    assert_eq!(q.1, 2);
    let mp = rmp_serde::to_vec_named(&p).unwrap();
    let r: Proxy<(String, u8)> = rmp_serde::from_slice(&mp).unwrap();
    assert_eq!(r.0, "pair");
}

/// Regression: a proxy whose store config asked for a huge `cache_size` aborted any
/// process that resolved it (the cache table was allocated up front). Sizes that come
/// from outside allocate nothing until used.
#[test]
fn a_proxy_with_a_huge_cache_size_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(
        unique_name("huge-cache"),
        ps_globus::connector::FileConnector::new(dir.path()).unwrap(),
    )
    .unwrap();
    let p = store.proxy(&String::from("small object")).unwrap();
    let mut doc: serde_json::Value = serde_json::to_value(&p).unwrap();
    doc["store"]["name"] = unique_name("huge-cache-elsewhere").into();
    doc["store"]["cache_size"] = serde_json::json!(1u64 << 62);
    let q: Proxy<String> = serde_json::from_value(doc).unwrap();
    assert_eq!(q.resolve().unwrap().as_str(), "small object");
    assert_eq!(q.as_str(), "small object", "resolved again from the cache");
}

#[test]
fn bad_serialized_proxies_are_typed_errors() {
    let store = local_store("bad");
    let p = store.proxy(&1u8).unwrap();
    let mut doc: serde_json::Value = serde_json::to_value(&p).unwrap();

    doc["v"] = 99.into();
    let err = serde_json::from_value::<Proxy<u8>>(doc.clone()).unwrap_err();
    assert!(err.to_string().contains("upgrade ps-globus"), "{err}");

    doc["v"] = 1.into();
    doc["store"]["name"] = unique_name("unknown-kind").into();
    doc["store"]["connector"]["kind"] = "memcached".into();
    let q: Proxy<u8> = serde_json::from_value(doc.clone()).unwrap();
    assert!(matches!(q.resolve(), Err(Error::InvalidInput(_))));

    doc["key"]["id"] = "../../etc/passwd".into();
    let err = serde_json::from_value::<Proxy<u8>>(doc).unwrap_err();
    assert!(err.to_string().contains("malformed key"), "{err}");

    let err = ps_globus::proxy::ProxyFactory::from_json("{not json").unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deref_inside_a_multi_thread_runtime_waits_without_starving_it() {
    let (store, gated) = gated_store("mt");
    let p = Arc::new(store.proxy(&vec![5u64; 4]).unwrap());
    let reader = {
        let p = Arc::clone(&p);
        tokio::spawn(async move { p.iter().sum::<u64>() }) // blocking Deref on a worker
    };
    gated.wait_for_gets(1).await; // this task keeps running meanwhile
    gated.open(1);
    assert_eq!(reader.await.unwrap(), 20);
}

#[tokio::test(flavor = "current_thread")]
async fn deref_inside_a_current_thread_runtime_works_but_blocks_it() {
    let (store, gated) = gated_store("ct");
    let p = store.proxy(&String::from("current")).unwrap();
    // Nothing on this runtime can run while Deref blocks, so the gate opens from a thread.
    let opener = std::thread::spawn(move || {
        ps_globus::block_on(gated.wait_for_gets(1));
        gated.open(1);
    });
    assert_eq!(p.len(), 7);
    opener.join().unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn async_code_resolves_without_blocking() {
    let (store, gated) = gated_store("async");
    let p = store.proxy_async(&vec![1i64, 2]).await.unwrap();
    let resolving = async {
        let v = p.resolve_async().await.unwrap();
        v.len()
    };
    let opening = async {
        gated.wait_for_gets(1).await;
        gated.open(1);
    };
    let (len, ()) = tokio::join!(resolving, opening);
    assert_eq!(len, 2);
    assert_eq!(sum_of(&p), 3);
}

#[tokio::test(flavor = "current_thread")]
async fn a_factory_may_resolve_another_proxy_even_on_a_current_thread_runtime() {
    let (store, gated) = gated_store("nested");
    let inner = store.proxy(&vec![2u64, 3]).unwrap();
    let outer = Proxy::new(move || inner.iter().product::<u64>() * 10);
    let opener = std::thread::spawn(move || {
        ps_globus::block_on(gated.wait_for_gets(1));
        gated.open(1);
    });
    assert_eq!(*outer, 60);
    opener.join().unwrap();
}

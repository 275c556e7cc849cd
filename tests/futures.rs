//! Futures: a proxy handed out before its value exists; set, abandoned, timed out,
//! tampered with; resolved and set in other processes; across Globus sites, where the
//! object and its manifest travel in one task.

use std::process::{Command, Stdio};
use std::time::Duration;

use ps_globus::connector::{Connector, FileConnector, Key, LocalConnector, PutOptions};
use ps_globus::error::{AlreadySet, ProducerGone};
use ps_globus::{Error, ErrorKind, FutureSetter, Proxy, Store};

fn file_store(dir: &tempfile::TempDir) -> Store {
    let connector = FileConnector::new(dir.path()).unwrap();
    Store::new(crate::support::unique_name("future-file"), connector).unwrap()
}

#[test]
fn a_consumer_waits_for_the_value_and_gets_it_verified() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(&dir);
    let (proxy, setter) = store.future::<Vec<u64>>().unwrap();
    assert!(proxy.key().unwrap().is_deferred());
    assert!(!store.exists(setter.key()).unwrap(), "nothing before set");
    let consumer = std::thread::spawn(move || proxy.iter().sum::<u64>());
    setter.set(&(1..=100).collect()).unwrap();
    assert_eq!(consumer.join().unwrap(), 5050);
}

/// Regression: a setter deserialized twice (a workflow retried the task that got it)
/// overwrote the delivered value with "abandoned" when the second copy dropped, or with a
/// second value when it set. The first settlement wins: the second copy's set is
/// `AlreadySet`, its drop changes nothing.
#[test]
fn a_setter_deserialized_twice_never_overwrites_the_delivered_value() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(&dir);
    let (proxy, setter) = store.future::<Vec<u32>>().unwrap();
    let wire = serde_json::to_string(&setter).unwrap();
    let first: FutureSetter<Vec<u32>> = serde_json::from_str(&wire).unwrap();
    let retry: FutureSetter<Vec<u32>> = serde_json::from_str(&wire).unwrap();
    let dropped: FutureSetter<Vec<u32>> = serde_json::from_str(&wire).unwrap();
    first.set(&vec![1, 2, 3]).unwrap();
    let e = retry.set(&vec![9, 9]).unwrap_err();
    assert!(e.is::<AlreadySet>(), "{e}");
    assert_eq!(e.kind(), ErrorKind::Conflict);
    drop(dropped);
    drop(setter);
    assert_eq!(proxy.resolve().unwrap(), &vec![1, 2, 3]);
    let again: Proxy<Vec<u32>> = store.proxy_from_key(proxy.key().unwrap().clone());
    assert_eq!(again.resolve().unwrap(), &vec![1, 2, 3]);
}

#[test]
fn a_producer_that_drops_or_panics_fails_its_consumers_at_once() {
    // No resolve timeout: without the abandon, these resolves would wait for a day.
    let store = Store::new(
        crate::support::unique_name("future-gone"),
        LocalConnector::new(),
    )
    .unwrap();
    let (proxy, setter) = store.future::<String>().unwrap();
    drop(setter);
    let e = proxy.resolve().unwrap_err();
    assert!(e.is::<ProducerGone>(), "{e}");
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("without setting it"), "{e}");

    let (proxy, setter) = store.future::<String>().unwrap();
    let producer = std::thread::spawn(move || {
        let _setter = setter;
        panic!("the producer's work failed");
    });
    assert!(producer.join().is_err());
    let e = proxy.resolve().unwrap_err();
    assert!(e.to_string().contains("panicked"), "{e}");

    let (proxy, setter) = store.future::<String>().unwrap();
    setter.abandon("the input was empty").unwrap();
    let e = proxy.resolve().unwrap_err();
    assert!(e.to_string().contains("the input was empty"), "{e}");
}

#[test]
fn an_unset_future_times_out_with_a_typed_error() {
    let store = Store::builder(
        crate::support::unique_name("future-slow"),
        LocalConnector::new(),
    )
    .resolve_timeout(Duration::from_millis(200))
    .build()
    .unwrap();
    let (proxy, _setter) = store.future::<u8>().unwrap();
    let e = proxy.resolve().unwrap_err();
    assert!(matches!(e, Error::Timeout(_)), "{e}");
    assert!(e.to_string().contains("to be set"), "{e}");
}

#[test]
fn a_future_changed_after_it_was_set_is_an_integrity_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(&dir);
    let (proxy, setter) = store.future::<Vec<u8>>().unwrap();
    let id = setter.key().id().to_owned();
    setter.set(&vec![1u8; 64]).unwrap();
    let object = dir.path().join(&id);
    let mut bytes = std::fs::read(&object).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&object, bytes).unwrap();
    let e = proxy.resolve().unwrap_err();
    assert!(matches!(e, Error::Integrity(_)), "{e}");
}

#[test]
fn a_sent_setter_is_the_receivers_and_the_senders_copy_refuses() {
    let store = Store::new(
        crate::support::unique_name("future-sent"),
        LocalConnector::new(),
    )
    .unwrap();
    let (proxy, setter) = store.future::<u8>().unwrap();
    let wire = serde_json::to_string(&setter).unwrap();
    let e = setter.set(&1).unwrap_err();
    assert!(e.is::<ProducerGone>(), "{e}");
    let received: FutureSetter<u8> = serde_json::from_str(&wire).unwrap();
    received.set(&2).unwrap();
    assert_eq!(*proxy, 2, "the sender's drop abandoned nothing");
    let proxy_form = serde_json::to_string(&proxy).unwrap();
    assert!(serde_json::from_str::<FutureSetter<u8>>(&proxy_form).is_err());
}

const WIRE_VAR: &str = "PS_GLOBUS_TEST_FUTURE_WIRE";

/// Child of the cross-process tests: sets the future whose setter it is given, or
/// resolves the proxy it is given and prints the value's sum.
#[test]
#[ignore = "child process of a_future_is_set_and_resolved_in_other_processes"]
fn child_sets_or_resolves() {
    let wire = std::env::var(WIRE_VAR).unwrap();
    if let Ok(setter) = serde_json::from_str::<FutureSetter<Vec<u32>>>(&wire) {
        setter.set(&vec![7; 1000]).unwrap();
        println!("SET");
    } else {
        let proxy: Proxy<Vec<u32>> = serde_json::from_str(&wire).unwrap();
        println!("SUM {}", proxy.iter().sum::<u32>());
    }
}

#[test]
fn a_future_is_set_and_resolved_in_other_processes() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(&dir);

    // The consumer is another process, started before the value exists.
    let (proxy, setter) = store.future::<Vec<u32>>().unwrap();
    let consumer = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "futures::child_sets_or_resolves",
            "--nocapture",
        ])
        .env(WIRE_VAR, serde_json::to_string(&proxy).unwrap())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    setter.set(&vec![3; 10]).unwrap();
    let out = consumer.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUM 30"));

    // The producer is another process, given the setter.
    let (proxy, setter) = store.future::<Vec<u32>>().unwrap();
    let wire = serde_json::to_string(&setter).unwrap();
    drop(setter);
    let stdout = crate::support::run_child("futures::child_sets_or_resolves", WIRE_VAR, wire);
    assert!(stdout.contains("SET"), "{stdout}");
    assert_eq!(proxy.iter().sum::<u32>(), 7000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_globus_future_arrives_with_its_manifest_in_one_task_and_is_evicted_there() {
    let emu = crate::support::emulator::Emu::start();
    let config = crate::support::sites::config_for(&emu, &crate::support::unique_name("future"));
    let (_home, a, b) = crate::support::sites::own_pair(&config, "a", "b");
    // A lost manifest must fail the test, not hang it.
    let at = |name: &str, connector: ps_globus::connector::GlobusConnector| {
        Store::builder(crate::support::unique_name(name), connector)
            .resolve_timeout(Duration::from_secs(60))
            .build()
            .unwrap()
    };
    let (store_a, store_b) = (at("future-a", a.clone()), at("future-b", b.clone()));

    // Made at a, resolved at b, set at a.
    let (proxy, setter) = store_a.future::<Vec<u8>>().unwrap();
    let key: Key = proxy.key().unwrap().clone();
    let at_b: Proxy<Vec<u8>> = store_b.proxy_from_key(key.clone());
    let waiting = tokio::spawn(async move { at_b.resolve_async().await.map(|v| v.len()) });
    setter.set_async(&vec![5u8; 300_000]).await.unwrap();
    assert_eq!(waiting.await.unwrap().unwrap(), 300_000);
    let (_, list) = emu.get("/v0.10/task_list?filter=type:TRANSFER").await;
    let tasks = list["DATA"].as_array().unwrap();
    assert_eq!(tasks.len(), 1, "{list}");
    assert_eq!(tasks[0]["files"], 2, "the object and its manifest");

    // Evicted at the site that set it: its copy at b goes too, in one delete task, and a
    // tombstone replaces its manifest there: a reader at b, waiting meanwhile, fails once
    // it lands, instead of waiting for the whole resolve timeout.
    store_a.evict_async(&key).await.unwrap();
    store_a.close_async().await.unwrap();
    assert_eq!(emu.the_one_delete_task().await["status"], "SUCCEEDED");
    let e = store_b.get_async::<Vec<u8>>(&key).await.unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e}");
    assert!(e.to_string().contains("evicted"), "{e}");
    assert!(!b.exists(&key).await.unwrap());
    let store_dir_b = emu.root_b().join(&config.store_dir);
    let files: Vec<String> = std::fs::read_dir(&store_dir_b)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        files,
        [format!("{}.manifest", key.id())],
        "only the tombstone"
    );

    // Made at a for a setter at a: a setter at b is refused and writes nothing, so two
    // sites can never both "win" one future.
    let key = a.new_key(&Default::default()).unwrap();
    let refused = b.set(&key, b"from b").await.unwrap_err();
    assert!(matches!(refused, Error::Unsupported(_)), "{refused}");
    assert!(
        refused.to_string().contains("settled only at site \"a\""),
        "{refused}"
    );
    assert!(!emu.root_b().join(&config.store_dir).join(key.id()).exists());

    // Made at a for a setter at b (future_with's settling site): it arrives at a.
    let key = a
        .new_key(&PutOptions::default().with_settling_site("b"))
        .unwrap();
    b.set(&key, b"from b").await.unwrap();
    b.close().await.unwrap();
    // Byte payloads are stored raw, so the store at a reads b's bytes as a Vec<u8>.
    let got = store_a.get_async::<Vec<u8>>(&key).await.unwrap().unwrap();
    assert_eq!(&got[..], b"from b");
}

/// Flips one byte of `path`, keeping its size.
fn corrupt(path: &std::path::Path) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

/// Regression: a Globus future whose bytes did not match its manifest read as "still
/// arriving", so its readers waited out the resolve timeout instead of failing. At the
/// site that set it, it fails `Integrity` at once; elsewhere the manifest names the batch
/// label of the object's transfer, and a reader fails `Integrity` once that task is final.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_globus_future_whose_bytes_do_not_match_fails_integrity_instead_of_waiting() {
    let emu = crate::support::emulator::Emu::start();
    let config =
        crate::support::sites::config_for(&emu, &crate::support::unique_name("future-bad"));
    let (_home, a, b) = crate::support::sites::own_pair(&config, "a", "b");
    let key = a.new_key(&PutOptions::default()).unwrap();
    a.set(&key, &[3u8; 50_000]).await.unwrap();
    a.close().await.unwrap();
    // Arrived at b, whole and verified (b's connector waits for it).
    let store_b = Store::builder(crate::support::unique_name("future-bad-b"), b.clone())
        .build()
        .unwrap();
    // Byte payloads are stored raw: the store reads them back as a Vec<u8>.
    let arrived = store_b.get_async::<Vec<u8>>(&key).await.unwrap().unwrap();
    assert_eq!(*arrived, vec![3u8; 50_000]);

    let at = |root: &std::path::Path| root.join(&config.store_dir).join(key.id());
    corrupt(&at(emu.root_a()));
    let e = a.get(&key).await.unwrap_err();
    assert!(matches!(e, Error::Integrity(_)), "at the setting site: {e}");
    corrupt(&at(emu.root_b()));
    let e = b.get(&key).await.unwrap_err();
    assert!(
        matches!(e, Error::Integrity(_)),
        "once its task is final: {e}"
    );
}

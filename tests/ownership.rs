//! Owned proxies and lifetimes evict exactly what they own: counted at the connector;
//! ownership moved to another process; a lifetime on a Globus store evicting in one delete
//! task at both sites.

use std::sync::Arc;

use crate::support::Counting;
use ps_globus::connector::{Connector, FileConnector, Key};
use ps_globus::{OwnedProxy, Proxy, Store};

fn store(name: &str) -> (Store, Arc<Counting>) {
    let counting = Arc::new(Counting::default());
    let connector: Arc<dyn Connector> = counting.clone();
    let name = format!("{name}-{}", Key::new_id());
    (Store::new(name, connector).unwrap(), counting)
}

#[test]
fn dropping_the_owner_evicts_once_and_borrows_never_do() {
    let (store, counting) = store("owned-drop");
    let owned = store.owned_proxy(&vec![7u8; 100]).unwrap();
    let id = owned.key().id().to_owned();
    {
        let borrowed: &Proxy<Vec<u8>> = owned.borrow();
        assert_eq!(borrowed.len(), 100);
        let copy = borrowed.clone();
        drop(copy);
    }
    assert!(counting.evicted().is_empty(), "a borrow evicts nothing");
    assert!(owned.is_owner());
    drop(owned);
    assert_eq!(counting.evicted(), vec![id.clone()]);
    assert!(!store.exists(&Key::new("local", id).unwrap()).unwrap());
}

#[test]
fn into_proxy_gives_up_ownership_and_evict_reports_failures() {
    let (store, counting) = store("owned-release");
    let owned = store.owned_proxy(&1u32).unwrap();
    let plain = owned.into_proxy();
    assert_eq!(*plain, 1);
    assert!(counting.evicted().is_empty());
    assert!(store.exists(plain.key().unwrap()).unwrap());

    let owned = store.owned_proxy(&2u32).unwrap();
    let id = owned.key().id().to_owned();
    owned.evict().unwrap();
    assert_eq!(
        counting.evicted(),
        vec![id],
        "evicted once, not again on drop"
    );
}

#[test]
fn a_clone_is_a_new_stored_copy_with_an_owner_of_its_own() {
    let (store, counting) = store("owned-clone");
    let first = store.owned_proxy(&"shared text".to_string()).unwrap();
    let second = first.clone();
    assert_ne!(first.key(), second.key());
    assert_eq!(*second, "shared text");
    let (a, b) = (first.key().id().to_owned(), second.key().id().to_owned());
    drop(first);
    assert_eq!(counting.evicted(), vec![a.clone()]);
    assert_eq!(*second, "shared text", "the copy outlives the original");
    drop(second);
    assert_eq!(counting.evicted(), vec![a, b]);
}

#[test]
fn serializing_moves_ownership_to_whoever_deserializes() {
    let (store, counting) = store("owned-move");
    let sender = store.owned_proxy(&vec![1u64, 2, 3]).unwrap();
    let id = sender.key().id().to_owned();
    let wire = serde_json::to_string(&sender).unwrap();
    assert!(!sender.is_owner());
    drop(sender);
    assert!(counting.evicted().is_empty(), "the sender no longer evicts");

    let receiver: OwnedProxy<Vec<u64>> = serde_json::from_str(&wire).unwrap();
    assert!(receiver.is_owner());
    assert_eq!(receiver.iter().sum::<u64>(), 6);
    drop(receiver);
    assert_eq!(counting.evicted(), vec![id]);

    // A plain proxy's form carries no ownership, and is not taken as an owned one.
    let plain = store.proxy(&5u8).unwrap();
    let text = serde_json::to_string(&plain).unwrap();
    let refused = serde_json::from_str::<OwnedProxy<u8>>(&text).unwrap_err();
    assert!(refused.to_string().contains("owned"), "{refused}");
    // ...while an owned proxy's form still reads as a plain proxy.
    let owned = store.owned_proxy(&6u8).unwrap();
    let as_plain: Proxy<u8> =
        serde_json::from_str(&serde_json::to_string(&owned).unwrap()).unwrap();
    assert_eq!(*as_plain, 6);
}

#[test]
fn a_scope_evicts_exactly_what_it_stored_even_when_it_fails() {
    let (store, counting) = store("lifetime-scope");
    let outside = store.put(&"not in the scope").unwrap();
    let attached = store.put(&"attached").unwrap();
    let ids = store
        .lifetime(|lt| -> std::result::Result<_, Box<dyn std::error::Error>> {
            let p = lt.proxy(&vec![0u8; 10])?;
            let k = lt.put(&42u32)?;
            lt.attach(attached.clone());
            assert_eq!(p.len(), 10);
            Ok(vec![p.key().unwrap().id().to_owned(), k.id().to_owned()])
        })
        .unwrap();
    let mut evicted = counting.evicted();
    evicted.sort();
    let mut expected = vec![ids[0].clone(), ids[1].clone(), attached.id().to_owned()];
    expected.sort();
    assert_eq!(evicted, expected);
    assert!(store.exists(&outside).unwrap());

    let failed: std::result::Result<(), Box<dyn std::error::Error>> = store.lifetime(|lt| {
        lt.put(&1u8)?;
        Err("the work failed".into())
    });
    assert_eq!(failed.unwrap_err().to_string(), "the work failed");
    assert_eq!(
        counting.evicted().len(),
        4,
        "the failed scope's object went too"
    );
}

#[test]
fn a_guard_evicts_when_dropped_or_ended() {
    let (store, counting) = store("lifetime-guard");
    let guard = ps_globus::Lifetime::new(&store);
    let a = guard.put(&1u8).unwrap();
    let b = guard.put(&2u8).unwrap();
    assert_eq!(guard.keys(), vec![a.clone(), b.clone()]);
    drop(guard);
    assert_eq!(counting.evicted().len(), 2);

    let guard = ps_globus::Lifetime::new(&store);
    guard.put(&3u8).unwrap();
    guard.end().unwrap();
    assert_eq!(
        counting.evicted().len(),
        3,
        "ended once, nothing more on drop"
    );
}

const OWNED_VAR: &str = "PS_GLOBUS_TEST_OWNED_PROXY";

/// The child of `ownership_moves_to_another_process`: takes the owned proxy, checks it,
/// drops it.
#[test]
#[ignore = "child process of ownership_moves_to_another_process"]
fn child_takes_ownership() {
    let wire = std::env::var(OWNED_VAR).unwrap();
    let owned: OwnedProxy<Vec<u8>> = serde_json::from_str(&wire).unwrap();
    assert!(owned.is_owner());
    println!("LEN {}", owned.len());
}

#[test]
fn ownership_moves_to_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(
        crate::support::unique_name("owned-xproc"),
        FileConnector::new(dir.path()).unwrap(),
    )
    .unwrap();
    let owned = store.owned_proxy(&vec![3u8; 5000]).unwrap();
    let key = owned.key().clone();
    let wire = serde_json::to_string(&owned).unwrap();
    drop(owned);
    assert!(store.exists(&key).unwrap(), "the sender gave up ownership");

    let stdout = crate::support::run_child("ownership::child_takes_ownership", OWNED_VAR, &wire);
    assert!(stdout.contains("LEN 5000"), "{stdout}");
    assert!(
        !store.exists(&key).unwrap(),
        "the receiver evicted it when it dropped it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lifetime_on_a_globus_store_evicts_in_one_delete_task_at_both_sites() {
    let emu = crate::support::emulator::Emu::start();
    let config = crate::support::sites::config_for(&emu, &crate::support::unique_name("lifetime"));
    let (_home, a, b) = crate::support::sites::own_pair(&config, "a", "b");
    let store = Store::new(crate::support::unique_name("lifetime-globus"), a).unwrap();
    let lifetime = ps_globus::Lifetime::new(&store);
    let mut keys = Vec::new();
    for i in 0..5u8 {
        let key = lifetime.put(&vec![i; 100]).unwrap();
        b.resolve_path(&key).await.unwrap();
        keys.push(key);
    }
    lifetime.end_async().await.unwrap();
    crate::support::sites::assert_evicted_in_one_delete_task(&emu, &store, &b, &keys).await;
}

const STATIC_DIR_VAR: &str = "PS_GLOBUS_TEST_STATIC_DIR";

/// The child of `a_static_lifetime_ends_when_the_process_exits`: stores two objects in
/// the static lifetime and one outside it, prints their keys, and exits normally.
#[test]
#[ignore = "child process of a_static_lifetime_ends_when_the_process_exits"]
fn child_stores_for_the_process() {
    let dir = std::env::var(STATIC_DIR_VAR).unwrap();
    let store = Store::new("static-child", FileConnector::new(dir).unwrap()).unwrap();
    let lifetime = store.static_lifetime();
    let gone = [lifetime.put(&1u32).unwrap(), lifetime.put(&2u32).unwrap()];
    let stays = store.put(&3u32).unwrap();
    println!("GONE {} {}", gone[0].id(), gone[1].id());
    println!("STAYS {}", stays.id());
}

#[test]
fn a_static_lifetime_ends_when_the_process_exits() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = crate::support::run_child(
        "ownership::child_stores_for_the_process",
        STATIC_DIR_VAR,
        dir.path(),
    );
    let ids = |tag: &str| -> Vec<String> {
        let line = stdout.lines().find_map(|l| l.strip_prefix(tag)).unwrap();
        line.split_whitespace().map(str::to_owned).collect()
    };
    let (gone, stays) = (ids("GONE "), ids("STAYS "));
    assert_eq!(gone.len(), 2);
    for id in &gone {
        assert!(!dir.path().join(id).exists(), "{id} was evicted at exit");
    }
    assert!(
        dir.path().join(&stays[0]).exists(),
        "an object outside it stays"
    );
}

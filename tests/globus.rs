//! The Globus connector across sites on the emulator: reads at a destination wait for
//! and verify the transfer, failures are typed, proxies cross processes.

use std::process::Command;
use std::sync::Arc;

use crate::support::emulator::{Emu, fault};
use crate::support::sites::{config_for, pair, shared};
use crate::support::succeeded;
use crate::support::unique_name;
use ps_globus::connector::{Connector, GlobusConnector, Key, PutOptions};
use ps_globus::error::{IntegrityMismatch, TransferFailure};
use ps_globus::transfer::{ManagerConfig, RESPLIT_SUFFIX};
use ps_globus::{Error, Store};
use ps_globus_sim::FaultKind;

fn opts() -> PutOptions {
    PutOptions::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_put_at_a_resolve_verified_at_b_in_few_tasks() {
    let (a, b) = pair(&unique_name("cross"));
    let before = shared().sim.stats();
    let mut keys = Vec::new();
    for i in 0..20u8 {
        keys.push(a.put(&vec![i; 1000 + i as usize], &opts()).await.unwrap());
    }
    for (i, key) in keys.iter().enumerate() {
        let bytes = b.get(key).await.unwrap().expect("arrives at b");
        assert_eq!(bytes.len(), 1000 + i);
        assert!(bytes.iter().all(|&x| x == i as u8));
        assert!(b.exists(key).await.unwrap());
    }
    let after = shared().sim.stats();
    let tasks = after.route("POST /v0.10/transfer") - before.route("POST /v0.10/transfer");
    assert!((1..=4).contains(&tasks), "20 puts became {tasks} tasks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_started_before_the_transfer_waits_for_it() {
    let emu = Emu::with(|c| c.task_latency_ms = 300);
    let config = config_for(&emu, &unique_name("early"));
    let (_home, a, b) = crate::support::sites::own_pair(&config, "a", "b");
    shared(); // process defaults: the static token
    let key = a.put(b"on its way", &opts()).await.unwrap();
    // The read starts while the batch is not even submitted.
    let reader = tokio::spawn(async move { b.get(&key).await });
    assert_eq!(
        reader.await.unwrap().unwrap().as_deref(),
        Some(&b"on its way"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_transfer_is_a_typed_error_with_the_globus_reason() {
    let store_dir = unique_name("broken");
    let emu = Emu::with(|c| {
        c.faults.push(fault(
            FaultKind::PermissionDenied,
            Some(&format!("/{store_dir}/*")),
            None,
            None,
        ))
    });
    shared();
    let config = config_for(&emu, &store_dir);
    let (_home, a, b) = crate::support::sites::own_pair(&config, "a", "b");
    let key = a.put(b"never arrives", &opts()).await.unwrap();
    let err = b.get(&key).await.unwrap_err();
    let Some(TransferFailure {
        code,
        task_id,
        destination_path,
        ..
    }) = err.downcast_ref::<TransferFailure>()
    else {
        panic!("expected TransferFailed, got {err}");
    };
    assert_eq!(code, "PERMISSION_DENIED", "{err}");
    assert!(task_id.is_some());
    assert!(destination_path.ends_with(key.id()), "{destination_path}");
}

/// Defect 13: a task stuck on a fatal error is cancelled and what it did not copy is
/// re-split into a new batch; readers follow their objects there instead of failing with
/// the cancel of the task they first followed. (Here the re-split is stuck too, so the
/// readers end with *its* cancel: the task id tells which one they followed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_follow_their_objects_into_the_resplit_of_a_cancelled_task() {
    let store_dir = unique_name("resplit");
    let emu = Emu::with(|c| {
        c.faults.push(fault(
            FaultKind::QuotaExceeded,
            Some(&format!("/{store_dir}/*")),
            None,
            None,
        ));
        c.fault_retry_ms = 50;
    });
    shared();
    let config = config_for(&emu, &store_dir);
    let home = tempfile::tempdir().unwrap();
    let at = |site: &str| {
        GlobusConnector::builder(config.clone())
            .site(site)
            .home(home.path())
            .manager_config({
                let mut built = ManagerConfig::default();
                built.fail_fast_after = std::time::Duration::from_millis(300);
                built
            })
            .build()
            .unwrap()
    };
    let (a, b) = (at("a"), Arc::new(at("b")));
    let mut readers = Vec::new();
    for n in 0..3u8 {
        let key = a.put(&[n; 64], &opts()).await.unwrap();
        let b = b.clone();
        readers.push(tokio::spawn(async move { b.get(&key).await }));
    }
    let mut followed = Vec::new();
    for reader in readers {
        let err = reader.await.unwrap().unwrap_err();
        match err.downcast_ref::<TransferFailure>() {
            Some(failure) if failure.code == "CANCELED" => {
                followed.push(failure.task_id.clone().expect("a task id"))
            }
            _ => panic!("{err}"),
        }
    }
    let (_, list) = emu.get("/v0.10/task_list?limit=100").await;
    let labels: Vec<(&str, &str)> = list["DATA"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["label"].as_str().unwrap(), t["task_id"].as_str().unwrap()))
        .collect();
    let resplits: Vec<&str> = labels
        .iter()
        .filter(|(label, _)| label.ends_with(RESPLIT_SUFFIX))
        .map(|(_, id)| *id)
        .collect();
    // The puts made one batch or a few; each was re-split once.
    assert!(!resplits.is_empty());
    assert_eq!(labels.len(), 2 * resplits.len(), "{labels:?}");
    assert!(
        followed.iter().all(|id| resplits.contains(&id.as_str())),
        "readers ended with {followed:?}, not with a re-split of {labels:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_bytes_at_the_destination_are_an_integrity_error() {
    let (a, b) = pair(&unique_name("corrupt"));
    let key = a.put(b"precious bytes", &opts()).await.unwrap();
    let path = b.resolve_path(&key).await.unwrap();
    std::fs::write(&path, b"PRECIOUS BYTES").unwrap(); // same size, other bytes
    for err in [
        b.get(&key).await.unwrap_err(),
        b.resolve_path(&key).await.unwrap_err(),
    ] {
        assert!(matches!(err, Error::Integrity(_)), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_file_links_and_resolve_path_returns_the_verified_copy() {
    use std::os::unix::fs::MetadataExt;
    let (a, b) = pair(&unique_name("files"));
    let dir = tempfile::tempdir_in(shared().root_a()).unwrap();
    let source = dir.path().join("array.bin");
    let data: Vec<u8> = (0..(8 << 20)).map(|i: u32| (i % 251) as u8).collect();
    std::fs::write(&source, &data).unwrap();
    let key = a.put_file(&source, &opts()).await.unwrap();
    let at_a = a.resolve_path(&key).await.unwrap();
    assert_eq!(
        std::fs::metadata(&at_a).unwrap().ino(),
        std::fs::metadata(&source).unwrap().ino(),
        "same file system: a hard link, no copy"
    );
    let at_b = b.resolve_path(&key).await.unwrap();
    assert!(at_b.starts_with(shared().root_b()));
    assert!(std::fs::read(&at_b).unwrap() == data);
    let missing = a
        .put_file(&dir.path().join("nope"), &opts())
        .await
        .unwrap_err();
    assert!(matches!(missing, Error::Storage(_)), "{missing}");
}

/// Regression: an object whose size changed after it arrived was reported as MISSING
/// ("deleted since?"), not as the integrity failure it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_whose_size_changed_after_arrival_is_an_integrity_error() {
    let (a, b) = pair(&unique_name("resized"));
    let key = a.put(b"exactly these bytes", &opts()).await.unwrap();
    let arrived = b.resolve_path(&key).await.unwrap();
    std::fs::write(&arrived, b"exactly these bytes, and more").unwrap();
    for err in [
        b.resolve_path(&key).await.unwrap_err(),
        b.get(&key).await.unwrap_err(),
    ] {
        assert!(
            matches!(err, Error::Integrity(_)),
            "expected an integrity error, got {err}"
        );
        let mismatch = err.downcast_ref::<IntegrityMismatch>().unwrap();
        assert!(mismatch.found.contains("29 bytes"), "{err}");
    }
}

/// Regression: a key without metadata read through a link at `<store>/<id>`; a link to
/// a directory in an object's path passed (only the last component was checked), and
/// the integrity error then gave the size and sha256 of any file on the host; an evict
/// through such a link removed a file outside the store. Links anywhere below the
/// site's local path are refused, and no error describes a file outside the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_anywhere_in_an_objects_path_are_refused_and_no_outside_file_is_described() {
    let (a, b) = pair(&unique_name("links"));
    let outside = tempfile::tempdir().unwrap();
    let secret = b"top secret bytes";
    std::fs::write(outside.path().join("secret"), secret).unwrap();
    let key = a.put(b"x", &opts()).await.unwrap();
    let mut stores = Vec::new();
    for site in [&a, &b] {
        let path = site.resolve_path(&key).await.unwrap();
        stores.push(path.parent().unwrap().to_owned());
    }
    let (store_a, store_b) = (&stores[0], &stores[1]);
    let refused = |err: Error| {
        let text = err.to_string();
        assert!(
            matches!(&err, Error::InvalidInput(_))
                && err.to_string().starts_with("malformed key: ")
                && err.to_string().contains("symbolic link"),
            "{text}"
        );
        assert!(
            !text.contains(&outside.path().display().to_string()),
            "{text}"
        );
        assert!(!text.contains(&format!("{} bytes", secret.len())), "{text}");
    };

    // A bare key whose file is a link.
    std::os::unix::fs::symlink(outside.path().join("secret"), store_b.join("barelink")).unwrap();
    let bare = Key::new(GlobusConnector::KIND, "barelink").unwrap();
    refused(b.get(&bare).await.unwrap_err());
    refused(b.exists(&bare).await.unwrap_err());

    // A link to a directory on the way to the object, at both sites.
    for store in [store_a, store_b] {
        std::os::unix::fs::symlink(outside.path(), store.join("dirlink")).unwrap();
    }
    let mut meta = key.meta().unwrap().clone();
    meta["path"] = "dirlink/secret".into();
    meta["size"] = secret.len().into();
    meta["sha256"] = "0".repeat(64).into();
    let evil = Key::new(GlobusConnector::KIND, key.id())
        .unwrap()
        .with_meta(meta)
        .unwrap();
    refused(b.get(&evil).await.unwrap_err());
    refused(b.resolve_path(&evil).await.unwrap_err());
    refused(a.get(&evil).await.unwrap_err());
    refused(a.evict(&evil).await.unwrap_err());
    assert_eq!(
        std::fs::read(outside.path().join("secret")).unwrap(),
        secret,
        "nothing outside the store was removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_crafted_paths_and_other_sites_are_refused() {
    let (a, b) = pair(&unique_name("guard"));
    let key = a.put(b"x", &opts()).await.unwrap();
    let mut meta = key.meta().unwrap().clone();
    meta["path"] = "../../etc/passwd".into();
    let evil = Key::new(GlobusConnector::KIND, key.id())
        .unwrap()
        .with_meta(meta)
        .unwrap();
    for err in [
        b.get(&evil).await.unwrap_err(),
        b.resolve_path(&evil).await.unwrap_err(),
        a.evict(&evil).await.unwrap_err(),
    ] {
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    }

    // A link planted where an object should arrive is refused, not followed.
    let planted = a.put(b"secret?", &opts()).await.unwrap();
    let at_b = b.resolve_path(&planted).await.unwrap();
    std::fs::remove_file(&at_b).unwrap();
    std::os::unix::fs::symlink(a.resolve_path(&planted).await.unwrap(), &at_b).unwrap();
    for err in [
        b.get(&planted).await.unwrap_err(),
        b.resolve_path(&planted).await.unwrap_err(),
    ] {
        assert!(
            matches!(&err, Error::InvalidInput(_))
                && err.to_string().starts_with("malformed key: ")
                && err.to_string().contains("symbolic link"),
            "{err}"
        );
    }

    // A site the object was not sent to.
    let mut config = config_for(shared(), &unique_name("only-b"));
    let mut c_site = config.sites["b"].clone();
    let c_root = tempfile::tempdir().unwrap();
    c_site.local_path = c_root.path().to_path_buf();
    config.sites.insert("c".into(), c_site);
    config.destinations = Some(vec!["b".into()]);
    let a = GlobusConnector::builder(config.clone())
        .site("a")
        .build()
        .unwrap();
    let c = GlobusConnector::builder(config.clone())
        .site("c")
        .build()
        .unwrap();
    let key = a.put(b"for b only", &opts()).await.unwrap();
    let err = c.get(&key).await.unwrap_err();
    assert!(
        matches!(&err, Error::NotFound(_)) && err.to_string().contains("is not staged at site c "),
        "{err}"
    );
    let err = GlobusConnector::builder(config)
        .site("nowhere")
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
}

/// A proxy serialized at site a resolves in another process configured as site b.
#[test]
fn a_proxy_crosses_to_another_process_at_site_b() {
    let emu = shared();
    let config = config_for(emu, &unique_name("proxy"));
    let connector = GlobusConnector::builder(config).site("a").build().unwrap();
    let store = Store::builder(unique_name("globus-store"), connector)
        .build()
        .unwrap();
    let value: Vec<u64> = (0..10_000).collect();
    let proxy = store.proxy(&value).unwrap();
    let json = serde_json::to_string(&proxy).unwrap();

    let home = tempfile::tempdir().unwrap();
    let stdout = succeeded(
        child_test("child_resolves_a_proxy")
            .env("PS_GLOBUS_CHILD_PROXY", &json)
            // The consumer is configured with the service its token goes to: a URL in a
            // proxy is only honoured where it matches (docs/THREAT-MODEL.md).
            .env("PS_GLOBUS_TRANSFER_URL", emu.sim.transfer_url())
            .env("PS_GLOBUS_SITE", "b")
            .env("PS_GLOBUS_HOME", home.path())
            .env("PS_GLOBUS_TOKEN_STORE", "file")
            .env("PS_GLOBUS_TEST_TOKEN", crate::support::emulator::TOKEN),
    );
    assert!(
        stdout.contains("resolved 10000 values, sum 49995000"),
        "{stdout}"
    );
}

/// Regression: a producer that exited without `close()` right after a put (an error in
/// its own code, say) left the transfer of an object whose key it had already handed
/// out unsubmitted for ever: stores in the process registry are never dropped. An exit
/// hook submits what is held back.
#[test]
fn puts_of_a_producer_that_exits_without_close_reach_the_destination() {
    let emu = shared();
    let mut config = config_for(emu, &unique_name("no-close"));
    let home = tempfile::tempdir().unwrap();
    let stdout = succeeded(
        child_test("child_puts_and_exits_without_close")
            .env(
                "PS_GLOBUS_CHILD_CONFIG",
                serde_json::to_string(&config).unwrap(),
            )
            .env("PS_GLOBUS_CHILD_HOME", home.path())
            .env("PS_GLOBUS_TEST_TOKEN", crate::support::emulator::TOKEN),
    );
    let key: Key = stdout
        .lines()
        .find_map(|l| l.strip_prefix("KEY "))
        .expect("the child printed its key")
        .parse()
        .unwrap();
    // Without the hook, the object never left site a and this wait ran out.
    config.wait_timeout_s = Some(60);
    let b = GlobusConnector::builder(config).site("b").build().unwrap();
    let path = ps_globus::block_on(b.resolve_path(&key)).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), b"handed out, never closed");
}

/// A Rust program whose exit hook cannot send its puts (Globus refuses its token) says
/// so on stderr -- how many, the state database that keeps them, the fix -- and its own
/// exit status is left alone: the library never changes a host program's status.
#[test]
fn a_producer_whose_puts_cannot_be_sent_at_exit_says_so_and_keeps_its_status() {
    let emu = shared();
    let config = config_for(emu, &unique_name("refused-at-exit"));
    let home = tempfile::tempdir().unwrap();
    let out = child_test("child_puts_and_exits_without_close")
        .env(
            "PS_GLOBUS_CHILD_CONFIG",
            serde_json::to_string(&config).unwrap(),
        )
        .env("PS_GLOBUS_CHILD_HOME", home.path())
        .env("PS_GLOBUS_TEST_TOKEN", "a-token-globus-refuses")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr.matches("NOT sent").count(), 1, "{stderr}");
    assert!(stderr.contains("1 transfer item(s)"), "{stderr}");
    assert!(stderr.contains("ps-globus login"), "{stderr}");
    assert!(
        stderr.contains(&home.path().display().to_string()),
        "names the state database: {stderr}"
    );
    assert!(!stderr.contains("a-token-globus-refuses"), "{stderr}");
}

/// An authorizer whose token waits behind a gate while it is shut: what a Transfer
/// service or Auth server that does not answer looks like to a flush.
#[derive(Debug)]
struct GatedAuthorizer {
    token: String,
    open: std::sync::Mutex<bool>,
    opened: std::sync::Condvar,
    /// Set when a caller gave up waiting for the gate (the hang detector fired).
    forced: std::sync::atomic::AtomicBool,
}

impl GatedAuthorizer {
    fn set(&self, open: bool) {
        *self.open.lock().unwrap() = open;
        self.opened.notify_all();
    }
}

#[async_trait::async_trait]
impl ps_globus::auth::Authorizer for GatedAuthorizer {
    async fn authorization(&self) -> ps_globus::Result<String> {
        let open = self.open.lock().unwrap();
        // Far beyond a healthy run's need, and shorter than the 30 s the old drop waited.
        let (_still_open, waited) = self
            .opened
            .wait_timeout_while(open, std::time::Duration::from_secs(20), |open| !*open)
            .unwrap();
        if waited.timed_out() {
            self.forced.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(format!("Bearer {}", self.token))
    }

    fn identity(&self) -> String {
        "gated".into()
    }
}

/// Regression (issue 33): dropping a connector whose put was still held back blocked the
/// dropping thread until the flush ended, up to 30 s with a service that does not answer.
/// Now the drop waits a bounded moment (2 s) and leaves the flush to the background: it
/// returns while the only way to the service is shut, and the object still reaches the
/// destination once it opens.
#[test]
fn dropping_a_connector_never_waits_for_its_flush_and_the_flush_still_lands() {
    let emu = shared();
    let config = config_for(emu, &unique_name("drop-flush"));
    let home = tempfile::tempdir().unwrap();
    let gate = Arc::new(GatedAuthorizer {
        token: crate::support::emulator::TOKEN.into(),
        open: std::sync::Mutex::new(true),
        opened: std::sync::Condvar::new(),
        forced: Default::default(),
    });
    // A batch that only a flush closes.
    let mut manager = ManagerConfig::from_settings(&ps_globus::Settings::from_env());
    manager.max_delay = std::time::Duration::from_secs(3600);
    let a = GlobusConnector::builder(config.clone())
        .site("a")
        .authorizer(gate.clone())
        .home(home.path())
        .manager_config(manager)
        .build()
        .unwrap();
    let key = ps_globus::block_on(a.put(b"dropped, never closed", &PutOptions::default())).unwrap();
    gate.set(false);
    drop(a);
    gate.set(true);
    assert!(
        !gate.forced.load(std::sync::atomic::Ordering::SeqCst),
        "the drop waited for its flush behind a shut gate"
    );
    let mut config = config;
    config.wait_timeout_s = Some(60);
    let b = GlobusConnector::builder(config).site("b").build().unwrap();
    let path = ps_globus::block_on(b.resolve_path(&key)).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), b"dropped, never closed");
}

#[test]
#[ignore = "child process of puts_of_a_producer_that_exits_without_close_reach_the_destination"]
fn child_puts_and_exits_without_close() {
    let var = |k: &str| std::env::var(k).unwrap();
    let config = serde_json::from_str(&var("PS_GLOBUS_CHILD_CONFIG")).unwrap();
    let token = var("PS_GLOBUS_TEST_TOKEN");
    let connector = GlobusConnector::builder(config)
        .site("a")
        .authorizer(Arc::new(ps_globus::auth::StaticTokenAuthorizer::new(token)))
        .home(var("PS_GLOBUS_CHILD_HOME"))
        .build()
        .unwrap();
    let store = Store::builder(unique_name("no-close"), connector)
        .build()
        .unwrap();
    let store = ps_globus::register_store(&store).unwrap();
    let key = ps_globus::block_on(
        store
            .connector()
            .put(b"handed out, never closed", &PutOptions::default()),
    )
    .unwrap();
    println!("KEY {key}");
    // Exits at once: no close, no drop, the batch still open.
    std::process::exit(0);
}

#[test]
#[ignore = "child process of a_proxy_crosses_to_another_process_at_site_b"]
fn child_resolves_a_proxy() {
    // This process is site b (PS_GLOBUS_SITE); it acts as the test token's identity.
    let token = std::env::var("PS_GLOBUS_TEST_TOKEN").unwrap();
    ps_globus::connector::set_process_defaults({
        let mut built = ps_globus::connector::ProcessDefaults::default();
        built.authorizer = Some(Arc::new(ps_globus::auth::StaticTokenAuthorizer::new(token)));
        built
    });
    let json = std::env::var("PS_GLOBUS_CHILD_PROXY").unwrap();
    let proxy: ps_globus::Proxy<Vec<u64>> = serde_json::from_str(&json).unwrap();
    let sum: u64 = proxy.iter().sum();
    println!("resolved {} values, sum {sum}", proxy.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_survive_restarts_and_refuse_bad_input() {
    use ps_globus::proxy::{DatasetRef, list_refs, load_ref, remove_ref, save_ref};
    use ps_globus::state::StateDb;
    let (a, _) = pair(&unique_name("refs"));
    let store = Store::builder(unique_name("ref-store"), a).build().unwrap();
    let key = store.put_async(&b"dataset".to_vec()).await.unwrap();
    let r = DatasetRef::new("run-1/input", store.config().clone(), key);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let db = StateDb::open(&path).await.unwrap();
        save_ref(&db, &r, false).await.unwrap();
        let again = save_ref(&db, &r, false).await.unwrap_err();
        assert!(matches!(again, Error::InvalidInput(_)), "{again}");
        save_ref(&db, &r, true).await.unwrap();
        db.close().await;
    }
    // A new process would see exactly this: a fresh pool on the same file.
    let db = StateDb::open(&path).await.unwrap();
    assert_eq!(load_ref(&db, "run-1/input").await.unwrap(), Some(r.clone()));
    assert_eq!(list_refs(&db).await.unwrap(), vec![r.clone()]);
    let text = r.to_string_form().unwrap();
    assert_eq!(
        DatasetRef::from_string_form(&format!(" {text}\n")).unwrap(),
        r
    );
    for bad in ["psgref1.!!!", "nonsense", "psgref1.e30"] {
        let err = DatasetRef::from_string_form(bad).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{bad}: {err}");
    }
    let mut newer = serde_json::to_value(&r).unwrap();
    newer["v"] = 9.into();
    let newer = format!(
        "psgref1.{}",
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            newer.to_string()
        )
    );
    let e = DatasetRef::from_string_form(&newer).unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
    assert!(e.to_string().contains("format version 9"), "{e}");
    let bad_name = DatasetRef::new("no spaces", r.store.clone(), r.key.clone());
    assert!(save_ref(&db, &bad_name, false).await.is_err());
    assert!(remove_ref(&db, "run-1/input").await.unwrap());
    assert!(!remove_ref(&db, "run-1/input").await.unwrap());
    assert!(store.exists_async(&r.key).await.unwrap(), "the data stays");
}

/// Dropping the last handle submits what is still batching (a producer that never
/// calls `close`); on a current-thread runtime it does so in the background, since
/// blocking the runtime's only worker would stall every other task on it.
#[tokio::test(flavor = "current_thread")]
async fn dropping_the_last_handle_submits_pending_puts_even_on_a_current_thread_runtime() {
    let store_dir = unique_name("drop");
    let emu = Emu::start();
    shared();
    let config = crate::support::sites::config_for(&emu, &store_dir);
    let (_home, a, b) = crate::support::sites::own_pair(&config, "a", "b");
    let key = a.put(b"last words", &opts()).await.unwrap();
    drop(a);
    let path = b.resolve_path(&key).await.unwrap();
    assert_eq!(std::fs::read(path).unwrap(), b"last words");
}

/// Regression: an eviction that first waits for its object's transfer used to miss the
/// delete batch of the evictions made with it (a second delete task a poll later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eviction_waiting_for_its_transfer_joins_the_delete_task_of_its_peers() {
    let store_dir = unique_name("evict-wait");
    let emu = Emu::with(|c| c.task_latency_ms = 300);
    shared();
    let config = crate::support::sites::config_for(&emu, &store_dir);
    let (_home, a, b) = crate::support::sites::own_pair(&config, "a", "b");
    let arrived = a.put(b"arrived", &opts()).await.unwrap();
    b.resolve_path(&arrived).await.unwrap();
    // Still on its way: its eviction waits for the transfer before deleting the copy.
    let in_flight = a.put(b"in flight", &opts()).await.unwrap();
    let (first, second) = tokio::join!(a.evict(&arrived), a.evict(&in_flight));
    first.unwrap();
    second.unwrap();
    a.close().await.unwrap(); // waits for the copies' deletion, in the background
    let done = emu.the_one_delete_task().await;
    assert_eq!(done["status"], "SUCCEEDED");
    assert_eq!(done["subtasks_succeeded"], 2, "{done}");
    assert!(!b.exists(&arrived).await.unwrap());
    assert!(
        !b.exists(&in_flight).await.unwrap(),
        "the late copy is gone too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// Regression: each eviction waited for its delete task's submission, so evictions made
/// one after another (ProxyStore's `ContextLifetime` closing, an owned proxy after another)
/// made one delete task each. They return once the object is gone here and share one.
async fn evicting_at_the_source_one_after_another_removes_the_copies_in_one_delete_task() {
    let store_dir = unique_name("evict");
    let emu = Emu::start();
    shared();
    let config = crate::support::sites::config_for(&emu, &store_dir);
    let (_home, a, b) = crate::support::sites::own_pair(&config, "a", "b");
    let mut keys = Vec::new();
    for i in 0..5u8 {
        let key = a.put(&[i; 100], &opts()).await.unwrap();
        b.resolve_path(&key).await.unwrap();
        keys.push(key);
    }
    for key in &keys {
        a.evict(key).await.unwrap();
        assert!(
            !a.exists(key).await.unwrap(),
            "gone here when evict returns"
        );
    }
    a.close().await.unwrap(); // waits for the copies' deletion, in the background
    assert_eq!(emu.the_one_delete_task().await["status"], "SUCCEEDED");
    for key in &keys {
        assert!(!a.exists(key).await.unwrap());
        assert!(!b.exists(key).await.unwrap(), "the copy at b is gone");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_may_name_its_own_destinations() {
    let (a, _) = pair(&unique_name("dest"));
    let none = a
        .put(
            b"stays home",
            &opts().with_destinations(Vec::<String>::new()),
        )
        .await
        .unwrap();
    let meta: ps_globus::connector::ObjectMeta = none.meta_as().unwrap();
    assert!(meta.destinations.is_empty());
    let err = a
        .put(b"x", &opts().with_destinations(["mars"]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
}

/// The express lane's classes (issue 37): a put is latency work below the store's
/// `latency_max_size`, bulk work at or above it, or when its options say so; its batch
/// (and Globus task) has that priority, and every object still arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_are_bulk_work_from_latency_max_size_or_when_asked() {
    let store_dir = unique_name("classes");
    let mut config = config_for(shared(), &store_dir);
    config.latency_max_size = Some(1000);
    let a = GlobusConnector::builder(config.clone())
        .site("a")
        .build()
        .unwrap();
    let b = GlobusConnector::builder(config).site("b").build().unwrap();
    let puts = [
        (vec![1u8; 999], opts(), "latency"),
        (vec![2u8; 1000], opts(), "bulk"),
        (vec![3u8; 10], opts().with_bulk(), "bulk"),
    ];
    for (bytes, options, class) in puts {
        let key = a.put(&bytes, &options).await.unwrap();
        let meta: ps_globus::connector::ObjectMeta = key.meta_as().unwrap();
        let label = &meta.destinations["b"];
        let mut found = None;
        for manager in ps_globus::transfer::TransferManager::running() {
            if let Some(batch) = manager.batch(label).await.unwrap() {
                found = Some(batch.priority);
            }
        }
        assert_eq!(found.as_deref(), Some(class), "{} bytes", bytes.len());
        assert_eq!(b.get(&key).await.unwrap().as_deref(), Some(&bytes[..]));
    }
}

/// Staging and resolving a 256 MiB file keeps memory far below the file's size (run in
/// its own process, so its high-water mark is its own).
#[test]
fn put_file_of_a_large_file_keeps_memory_bounded() {
    let stdout = succeeded(Command::new(std::env::current_exe().unwrap()).args([
        "--ignored",
        "--exact",
        "globus::child_stages_a_large_file",
        "--nocapture",
    ]));
    let peak_kib: u64 = stdout
        .split("peak_kib=")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .expect("the child reports its peak");
    assert!(
        peak_kib < 160 * 1024,
        "peak RSS {peak_kib} KiB for a 256 MiB file"
    );
}

#[test]
#[ignore = "child process of put_file_of_a_large_file_keeps_memory_bounded"]
fn child_stages_a_large_file() {
    let emu = shared();
    let (a, b) = pair(&unique_name("large"));
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("array.bin");
    // Sparse: 256 MiB without writing them; every byte still goes through the hashes
    // and the emulator's copy.
    let file = std::fs::File::create(&source).unwrap();
    file.set_len(256 << 20).unwrap();
    let at_b = ps_globus::block_on(async {
        let key = a.put_file(&source, &opts()).await.unwrap();
        b.resolve_path(&key).await.unwrap()
    });
    assert!(at_b.starts_with(emu.root_b()));
    assert_eq!(std::fs::metadata(&at_b).unwrap().len(), 256 << 20);
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let peak = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    println!("peak_kib={peak}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_on_demand_fetches_to_a_site_that_was_not_a_destination() {
    let c_root = tempfile::tempdir().unwrap();
    let emu = crate::support::sites::emu_with_c(c_root.path());
    shared();
    let mut config = config_for(&emu, &unique_name("pull"));
    crate::support::sites::add_site_c(&mut config, &emu, c_root.path());
    config.destinations = Some(vec!["b".into()]);
    config.pull_on_demand = true;
    let (_home, a, c) = crate::support::sites::own_pair(&config, "a", "c");
    let key = a.put(b"fetched when needed", &opts()).await.unwrap();
    let meta: ps_globus::connector::ObjectMeta = key.meta_as().unwrap();
    assert!(!meta.destinations.contains_key("c"));
    assert_eq!(
        c.get(&key).await.unwrap().as_deref(),
        Some(&b"fetched when needed"[..])
    );
    assert!(
        c.resolve_path(&key)
            .await
            .unwrap()
            .starts_with(c_root.path())
    );
}

/// Runs `command` to its end, fails the test with its output unless it succeeded, and
/// returns its standard output.
/// This test binary, running only the ignored test `name` (a child process's half).
fn child_test(name: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    let name = format!("globus::{name}");
    command.args(["--ignored", "--exact", &name, "--nocapture"]);
    command
}

/// A batch too large for the service is posted in parts, each under a label derived from
/// the key's (`L-partN`), and the batch itself last: a reader whose object travels in a
/// part still copying when `L`'s own task has ended follows it there, instead of
/// reporting its object missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_follow_their_objects_into_the_parts_of_a_batch_too_large_to_post() {
    let (plain, late) = (unique_name("parts"), unique_name("late"));
    // 41 items of about 330 bytes: too many for one 10 KiB post, few enough for two.
    let emu = Emu::with(|c| {
        c.max_body_bytes = 10 << 10;
        // The last object (in the part) is copied only at its sixth attempt.
        c.faults.push(fault(
            FaultKind::ConnectFailed,
            Some(&format!("/{late}/*")),
            None,
            Some(5),
        ));
        c.fault_retry_ms = 400;
    });
    shared();
    let home = tempfile::tempdir().unwrap();
    let at = |store_dir: &str, site: &str| {
        GlobusConnector::builder(config_for(&emu, store_dir))
            .site(site)
            .home(home.path())
            .manager_config({
                let mut built = ManagerConfig::default();
                built.quiet = std::time::Duration::from_secs(2);
                built
            })
            .build()
            .unwrap()
    };
    // Two stores at a share one manager, so their puts share one batch.
    let (a, late_a) = (at(&plain, "a"), at(&late, "a"));
    let mut keys = Vec::new();
    for i in 0..40u8 {
        keys.push(a.put(&[i; 100], &opts()).await.unwrap());
    }
    let late_key = late_a.put(b"in the part", &opts()).await.unwrap();
    let (b, late_b) = (at(&plain, "b"), at(&late, "b"));
    assert_eq!(
        late_b.get(&late_key).await.unwrap().as_deref(),
        Some(&b"in the part"[..])
    );
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(b.get(key).await.unwrap().unwrap().as_ref(), &[i as u8; 100]);
    }
    let stats = emu.sim.stats();
    assert_eq!(stats.by_status.get(&413), Some(&1), "{stats:?}");
    let (_, list) = emu.get("/v0.10/task_list?limit=100").await;
    let mut labels: Vec<String> = list["DATA"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["label"].as_str().unwrap().to_owned())
        .collect();
    labels.sort();
    assert_eq!(labels.len(), 2, "{labels:?}");
    assert_eq!(labels[1], format!("{}-part1", labels[0]));
}

/// The README's Globus store ("Across sites"), on the emulator: sites from JSON, a proxy
/// made at one site, `close` sends the batch, the proxy resolves at the other.
#[test]
fn readme_twin_a_globus_store_proxies_at_one_site_and_resolves_at_the_other() {
    let emu = shared();
    let site = |id: &str, root: &std::path::Path, regex: &str| {
        serde_json::json!({"collection": id, "collection_path": "/",
                           "local_path": root, "host_regex": regex})
    };
    let config: ps_globus::connector::GlobusConfig = serde_json::from_value(serde_json::json!({
        "store_dir": unique_name("readme"),
        "sites": {"polaris": site(&emu.a, emu.root_a(), "^polaris"),
                  "lab": site(&emu.b, emu.root_b(), "^lab-")},
        "transfer_url": emu.sim.transfer_url(),
    }))
    .unwrap();
    let at = |name: &str| {
        GlobusConnector::builder(config.clone())
            .site(name)
            .build()
            .unwrap()
    };
    let store = Store::new("readme-globus", at("polaris")).unwrap();
    let array = vec![0.5f64; 1 << 16];
    let wire = serde_json::to_string(&store.proxy(&array).unwrap()).unwrap();
    store.close().unwrap();
    let lab = Store::new("readme-globus-lab", at("lab")).unwrap();
    let proxy: ps_globus::Proxy<Vec<f64>> = serde_json::from_str(&wire).unwrap();
    let key = proxy.key().unwrap().clone();
    assert_eq!(*lab.get::<Vec<f64>>(&key).unwrap().unwrap(), array);
}

//! The HTTPS lane of a Globus store (issue 34): small objects PUT straight to each
//! destination collection, Transfer for the rest and for what fails, crash-safe through
//! the `HTTPS` state of the state database.

use std::sync::Arc;

use crate::support::emulator::{Emu, TOKEN, fault};
use crate::support::sites::config_for;
use crate::support::unique_name;
use ps_globus::auth::StaticTokenAuthorizer;
use ps_globus::connector::{Connector, GlobusConfig, GlobusConnector, Key, PutOptions};
use ps_globus::error::ConsentRequired;
use ps_globus::transfer::{BatchState, ManagerConfig};
use ps_globus_sim::FaultKind;

const PUT: &str = "HTTPS PUT";
const TASKS: &str = "POST /v0.10/transfer";

/// A store on `emu`'s sites with the lane on (its default size).
fn lane_config(emu: &Emu, store_dir: &str) -> GlobusConfig {
    let mut config = config_for(emu, store_dir);
    config.https_max_size = None;
    config
}

/// Connectors at `a` and `b` on one state directory of their own, with the emulator's
/// static token for Transfer and for every collection's HTTPS.
fn lane_pair(config: &GlobusConfig) -> (tempfile::TempDir, GlobusConnector, GlobusConnector) {
    let home = tempfile::tempdir().unwrap();
    let at = |site: &str| connector_at(config, site, home.path());
    let (a, b) = (at("a"), at("b"));
    (home, a, b)
}

/// A connector at `site`, whose batches close only at `close` (or a minute): puts made
/// one after another share one, however slow the machine.
fn connector_at(config: &GlobusConfig, site: &str, home: &std::path::Path) -> GlobusConnector {
    let mut manager = ManagerConfig::default();
    manager.quiet = std::time::Duration::from_secs(60);
    manager.max_delay = std::time::Duration::from_secs(60);
    builder_at(config, site, home)
        .manager_config(manager)
        .build()
        .unwrap()
}

/// A builder at `site` with the emulator's static token for Transfer and HTTPS.
fn builder_at(
    config: &GlobusConfig,
    site: &str,
    home: &std::path::Path,
) -> ps_globus::connector::GlobusConnectorBuilder {
    let token = Arc::new(StaticTokenAuthorizer::new(TOKEN));
    GlobusConnector::builder(config.clone())
        .site(site)
        .home(home)
        .settings(ps_globus::Settings::isolated(home))
        .authorizer(token.clone())
        .https_authorizer(token)
}

/// The batch label a key names for site `b`.
fn label_for_b(key: &Key) -> String {
    key.meta().unwrap()["destinations"]["b"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_objects_go_by_https_and_make_no_transfer_task() {
    let emu = Emu::with(|c| c.task_latency_ms = 1000);
    let (_home, a, b) = lane_pair(&lane_config(&emu, &unique_name("lane")));
    let mut keys = Vec::new();
    for i in 0..10u8 {
        keys.push(a.put(&[i; 1024], &PutOptions::default()).await.unwrap());
    }
    a.close().await.unwrap();
    for (i, key) in keys.iter().enumerate() {
        let bytes = b.get(key).await.unwrap().expect("arrives at b");
        assert_eq!(&bytes[..], &[i as u8; 1024][..]);
    }
    let stats = emu.sim.stats();
    assert_eq!(stats.route(TASKS), 0, "no Transfer task for the lane");
    assert_eq!(stats.route(PUT), 10, "one PUT per object");
    // Their batches ended without a task: every item delivered.
    let manager = a.transfer_manager().await.unwrap();
    let batch = manager
        .batch(&label_for_b(&keys[0]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(batch.state, BatchState::Done);
    assert_eq!(batch.task_id, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_over_the_limit_and_to_a_collection_without_https_go_by_transfer() {
    let emu = Emu::with(|c| c.collections.get_mut("b").unwrap().disable_https = true);
    let (_home, a, b) = lane_pair(&lane_config(&emu, &unique_name("nolane")));
    let key = a
        .put(b"small, but b has no HTTPS", &PutOptions::default())
        .await
        .unwrap();
    a.close().await.unwrap();
    assert_eq!(
        b.get(&key).await.unwrap().as_deref(),
        Some(&b"small, but b has no HTTPS"[..])
    );
    assert_eq!(emu.sim.stats().route(PUT), 0);
    assert_eq!(emu.sim.stats().route(TASKS), 1);

    let emu = Emu::start();
    let mut config = lane_config(&emu, &unique_name("limit"));
    config.https_max_size = Some(100);
    let (_home, a, b) = lane_pair(&config);
    let small = a.put(&[1; 100], &PutOptions::default()).await.unwrap();
    let large = a.put(&[2; 101], &PutOptions::default()).await.unwrap();
    a.close().await.unwrap();
    assert_eq!(b.get(&small).await.unwrap().unwrap().len(), 100);
    assert_eq!(b.get(&large).await.unwrap().unwrap().len(), 101);
    let stats = emu.sim.stats();
    assert_eq!((stats.route(PUT), stats.route(TASKS)), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_ceiling_below_the_stores_wins() {
    let emu = Emu::start();
    let mut config = lane_config(&emu, &unique_name("ceiling"));
    config.https_max_size = Some(1 << 20);
    config.sites.get_mut("b").unwrap().https_max_size = Some(0);
    assert_eq!(config.https_max_size_for("b").unwrap(), 0);
    let (_home, a, b) = lane_pair(&config);
    let key = a.put(b"tiny", &PutOptions::default()).await.unwrap();
    a.close().await.unwrap();
    assert!(b.get(&key).await.unwrap().is_some());
    assert_eq!(emu.sim.stats().route(PUT), 0, "site b said: never HTTPS");
}

/// Every PUT fails (503, after the lane's one retry): the objects go by Transfer, once,
/// together, in a task labelled as their keys say, and arrive verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_puts_fall_back_once_into_one_task_under_the_keys_label() {
    let emu = Emu::with(|c| {
        c.faults
            .push(fault(FaultKind::Http503, None, Some(PUT), None))
    });
    let (_home, a, b) = lane_pair(&lane_config(&emu, &unique_name("fallback")));
    let mut keys = Vec::new();
    for i in 0..5u8 {
        keys.push(a.put(&[i; 300], &PutOptions::default()).await.unwrap());
    }
    a.close().await.unwrap();
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(&b.get(key).await.unwrap().unwrap()[..], &[i as u8; 300][..]);
    }
    let stats = emu.sim.stats();
    assert_eq!(stats.route(TASKS), 1, "the fallbacks share one task");
    assert_eq!(stats.route(PUT), 10, "each PUT tried twice, then Transfer");
    let label = label_for_b(&keys[0]);
    assert!(keys.iter().all(|k| label_for_b(k) == label));
    let (_, tasks) = emu
        .get(&format!("/v0.10/task_list?filter=label:={label}"))
        .await;
    assert_eq!(tasks["DATA"].as_array().unwrap().len(), 1, "{tasks}");
    let manager = a.transfer_manager().await.unwrap();
    let done = manager
        .wait_label(&label, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(done.len(), 5);
}

/// Some PUTs fail, some arrive: the fallback task carries only the failed ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_task_carries_only_the_objects_whose_put_failed() {
    let emu = Emu::with(|c| {
        let mut first_two = fault(FaultKind::Http503, None, Some(PUT), Some(2));
        first_two.after = 0;
        c.faults.push(first_two);
    });
    let (_home, a, b) = lane_pair(&lane_config(&emu, &unique_name("partial")));
    let first = a
        .put(b"first: its PUT fails twice", &PutOptions::default())
        .await
        .unwrap();
    a.close().await.unwrap();
    let second = a
        .put(b"second: its PUT succeeds", &PutOptions::default())
        .await
        .unwrap();
    a.close().await.unwrap();
    assert!(b.get(&first).await.unwrap().is_some());
    assert!(b.get(&second).await.unwrap().is_some());
    let stats = emu.sim.stats();
    assert_eq!((stats.route(PUT), stats.route(TASKS)), (3, 1));
    let (_, task) = emu
        .get(&format!(
            "/v0.10/task_list?filter=label:={}",
            label_for_b(&first)
        ))
        .await;
    assert_eq!(task["DATA"][0]["files"], 1, "{task}");
}

/// A PUT that stops half-way leaves a short file; a reader never takes it for the object
/// and reads the bytes the fallback brings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_short_file_at_the_destination_is_never_read_as_the_object() {
    let emu = Emu::with(|c| {
        c.faults
            .push(fault(FaultKind::Http502, None, Some(PUT), None));
        c.task_latency_ms = 300;
    });
    let config = lane_config(&emu, &unique_name("short"));
    let (_home, a, b) = lane_pair(&config);
    let data = vec![7u8; 4096];
    let key = a.put(&data, &PutOptions::default()).await.unwrap();
    // What a PUT cut off mid-body leaves: the object's first bytes.
    let at_b = emu.root_b().join(&config.store_dir).join(key.id());
    std::fs::create_dir_all(at_b.parent().unwrap()).unwrap();
    std::fs::write(&at_b, &data[..1000]).unwrap();
    a.close().await.unwrap();
    assert_eq!(b.get(&key).await.unwrap().as_deref(), Some(&data[..]));
    assert_eq!(emu.sim.stats().route(TASKS), 1);
}

/// No HTTPS credentials for a destination: the put is a typed error naming the scope,
/// nothing is enqueued, and the written file is gone. Never a silent fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_without_https_consent_is_a_typed_error_naming_the_scope() {
    let emu = Emu::start();
    let config = lane_config(&emu, &unique_name("consent"));
    let home = tempfile::tempdir().unwrap();
    let a = GlobusConnector::builder(config.clone())
        .site("a")
        .home(home.path())
        .settings(ps_globus::Settings::isolated(home.path()))
        .authorizer(Arc::new(StaticTokenAuthorizer::new(TOKEN)))
        .build()
        .unwrap();
    let err = a
        .put(b"needs consent", &PutOptions::default())
        .await
        .unwrap_err();
    let consent = err
        .downcast_ref::<ConsentRequired>()
        .unwrap_or_else(|| panic!("expected ConsentRequired, got {err}"));
    let scope = format!("https://auth.globus.org/scopes/{}/https", emu.b);
    assert!(consent.required_scopes.contains(&scope), "{consent:?}");
    assert!(err.needs_login(), "exit code 4 at the command line");
    let store = emu.root_a().join(&config.store_dir);
    let left: Vec<_> = std::fs::read_dir(&store)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.iter().all(|n| n.to_string_lossy().starts_with('.')),
        "{left:?}"
    );
    let manager = a.transfer_manager().await.unwrap();
    assert!(manager.batches(10).await.unwrap().is_empty());
    assert_eq!(emu.sim.stats().route(PUT), 0);
}

/// An eviction waits for the PUT to end, then deletes the copy at b.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_lane_object_is_gone_from_both_sites() {
    let emu = Emu::with(|c| c.https_latency_ms = 200);
    let config = lane_config(&emu, &unique_name("evict"));
    let (_home, a, b) = lane_pair(&config);
    let key = a.put(b"short-lived", &PutOptions::default()).await.unwrap();
    a.evict(&key).await.unwrap();
    a.close().await.unwrap(); // waits for the copy's deletion, in the background
    assert_eq!(emu.the_one_delete_task().await["status"], "SUCCEEDED");
    assert!(!a.exists(&key).await.unwrap());
    assert!(!b.exists(&key).await.unwrap(), "the copy at b was deleted");
    assert_eq!(emu.sim.stats().route(PUT), 1);
}

const CRASH_VAR: &str = "PS_GLOBUS_TEST_LANE_CRASH";

/// A producer killed while its PUT hangs: the next manager on its state database moves
/// the object to Transfer, in a task labelled as the key says, and it arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_killed_mid_put_leaves_its_object_to_transfer() {
    let emu = Emu::with(|c| c.https_latency_ms = 600_000);
    let config = lane_config(&emu, &unique_name("crash"));
    let home = tempfile::tempdir().unwrap();
    let job = serde_json::json!({"config": config, "home": home.path()});
    let out =
        crate::support::run_child_output("lane::child_puts_then_dies", CRASH_VAR, job.to_string());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let key: Key = stdout
        .lines()
        .find_map(|l| l.strip_prefix("KEY "))
        .map(|k| serde_json::from_str(k).unwrap())
        .unwrap_or_else(|| panic!("no key from the child: {stdout}"));
    assert!(!out.status.success(), "the child aborted");
    assert_eq!(
        emu.sim.stats().route(TASKS),
        0,
        "nothing went by Transfer yet"
    );

    let b = connector_at(&config, "b", home.path());
    let a = connector_at(&config, "a", home.path());
    // Starting a's manager finds the dead sender's item and hands it to Transfer.
    let manager = a.transfer_manager().await.unwrap();
    let label = label_for_b(&key);
    assert_eq!(
        b.get(&key).await.unwrap().as_deref(),
        Some(&b"sent by a process that died"[..])
    );
    let batch = manager.batch(&label).await.unwrap().unwrap();
    assert!(batch.task_id.is_some(), "went by a task labelled {label}");
    assert_eq!(emu.sim.stats().route(TASKS), 1);
}

/// The producer of the test above: puts, prints the key, and dies without its hooks.
#[test]
#[ignore = "child process of a_producer_killed_mid_put_leaves_its_object_to_transfer"]
fn child_puts_then_dies() {
    let job: serde_json::Value =
        serde_json::from_str(&std::env::var(CRASH_VAR).expect("run by its parent")).unwrap();
    let config: GlobusConfig = serde_json::from_value(job["config"].clone()).unwrap();
    let home = std::path::PathBuf::from(job["home"].as_str().unwrap());
    let a = connector_at(&config, "a", &home);
    let key =
        ps_globus::block_on(a.put(b"sent by a process that died", &PutOptions::default())).unwrap();
    println!("KEY {}", serde_json::to_string(&key).unwrap());
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    std::process::abort();
}

/// A site that is no destination pulls a small object from the source by ranged GET:
/// no Transfer task, and the bytes verified; a large one still goes by Transfer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_on_demand_fetches_a_small_object_by_https_ranges() {
    let c_root = tempfile::tempdir().unwrap();
    let emu = crate::support::sites::emu_with_c(c_root.path());
    let mut config = lane_config(&emu, &unique_name("pull"));
    crate::support::sites::add_site_c(&mut config, &emu, c_root.path());
    config.destinations = Some(vec![]);
    config.pull_on_demand = true;
    config.https_max_size = Some(1000);
    let home = tempfile::tempdir().unwrap();
    let a = connector_at(&config, "a", home.path());
    // c's batches close as they would in use: its Transfer pull goes at once.
    let c = builder_at(&config, "c", home.path()).build().unwrap();
    let small = a
        .put(b"fetched by HTTPS", &PutOptions::default())
        .await
        .unwrap();
    let large = a.put(&[5; 1001], &PutOptions::default()).await.unwrap();
    assert_eq!(
        c.get(&small).await.unwrap().as_deref(),
        Some(&b"fetched by HTTPS"[..])
    );
    assert!(
        c.resolve_path(&small)
            .await
            .unwrap()
            .starts_with(c_root.path())
    );
    let stats = emu.sim.stats();
    assert_eq!((stats.route("HTTPS GET"), stats.route(TASKS)), (1, 0));
    assert_eq!(c.get(&large).await.unwrap().unwrap().len(), 1001);
    assert_eq!(emu.sim.stats().route(TASKS), 1);
}

/// A token the collection refuses at PUT time (401): that object goes by Transfer (not
/// lost), and the next put to the collection is the typed consent error naming the
/// scope, not another quiet detour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_https_token_falls_back_once_then_fails_puts_naming_the_scope() {
    let emu = Emu::start();
    let config = lane_config(&emu, &unique_name("refused"));
    let home = tempfile::tempdir().unwrap();
    let build = |site: &str| {
        builder_at(&config, site, home.path())
            .https_authorizer(Arc::new(StaticTokenAuthorizer::new("not-a-token")))
            .build()
            .unwrap()
    };
    let (a, b) = (build("a"), build("b"));
    let key = a
        .put(b"refused over HTTPS", &PutOptions::default())
        .await
        .unwrap();
    a.close().await.unwrap();
    assert_eq!(
        b.get(&key).await.unwrap().as_deref(),
        Some(&b"refused over HTTPS"[..])
    );
    assert_eq!(emu.sim.stats().route(TASKS), 1, "it went by Transfer");
    let err = a.put(b"next", &PutOptions::default()).await.unwrap_err();
    let consent = err
        .downcast_ref::<ConsentRequired>()
        .unwrap_or_else(|| panic!("expected ConsentRequired, got {err}"));
    let scope = format!("https://auth.globus.org/scopes/{}/https", emu.b);
    assert!(consent.required_scopes.contains(&scope), "{consent:?}");
}

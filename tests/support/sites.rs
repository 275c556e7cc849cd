//! Two sites on the emulator for the Globus connector: `a` (this host's site by its
//! host regex) and `b`, both served by one emulator per test process.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use ps_globus::auth::StaticTokenAuthorizer;
use ps_globus::config::SiteConfig;
use ps_globus::connector::{GlobusConfig, GlobusConnector, ProcessDefaults};

use super::emulator::{Emu, TOKEN};

/// The process's emulator; connectors rebuilt from a config act as its static token.
///
/// A test with an emulator of its own gives its connectors a state directory of their
/// own (`.home(...)`): the poller lease is per identity and database, and every emulator
/// accepts the same static token, so a shared database would let one emulator's
/// manager hold the lease while another's tasks go unpolled.
pub fn shared() -> &'static Emu {
    static EMU: OnceLock<Emu> = OnceLock::new();
    EMU.get_or_init(|| {
        let home = tempfile::tempdir().unwrap().keep();
        ps_globus::connector::set_process_defaults({
            let mut built = ProcessDefaults::default();
            built.authorizer = Some(Arc::new(StaticTokenAuthorizer::new(TOKEN)));
            built.settings = Some({
                // The static token serves every collection's HTTPS too.
                let mut settings = ps_globus::Settings::isolated(&home);
                settings.access_token = Some(TOKEN.into());
                settings
            });
            built
        });
        let emu = Emu::start();
        for dir in [home, emu.root_a().to_path_buf(), emu.root_b().to_path_buf()] {
            remove_at_exit(dir);
        }
        emu
    })
}

/// Directories removed when the test process exits. A static is never dropped, so the
/// shared emulator's sites (every test's objects, a 256 MiB one among them) were left
/// in the temporary directory by every run until the disk filled.
static REMOVED_AT_EXIT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

extern "C" fn remove_them() {
    if let Ok(dirs) = REMOVED_AT_EXIT.lock() {
        for dir in dirs.iter() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Removes `dir` (and all it holds) when the test process exits.
pub fn remove_at_exit(dir: PathBuf) {
    let mut dirs = REMOVED_AT_EXIT.lock().unwrap();
    if dirs.is_empty() {
        // SAFETY: registers a function without arguments, run once at exit.
        #[allow(unsafe_code)]
        unsafe {
            libc::atexit(remove_them)
        };
    }
    dirs.push(dir);
}

/// Sites `a` and `b` of `emu`, for a store in `store_dir`.
pub fn config_for(emu: &Emu, store_dir: &str) -> GlobusConfig {
    let site = |id: &str, root: &std::path::Path, regex: Option<&str>| {
        let mut built = SiteConfig::default();
        built.collection = id.parse().unwrap();
        built.collection_path = "/".into();
        built.local_path = root.to_path_buf();
        built.host_regex = regex.map(str::to_owned);
        built
    };
    {
        let mut built = GlobusConfig::default();
        built.store_dir = store_dir.into();
        built.sites = [
            ("a".to_string(), site(&emu.a, emu.root_a(), Some("."))),
            ("b".to_string(), site(&emu.b, emu.root_b(), None)),
        ]
        .into();
        built.destinations = None;
        built.pull_on_demand = false;
        built.wait_timeout_s = None;
        built.transfer_url = Some(emu.sim.transfer_url().into());
        // These stores test the Transfer path: the HTTPS lane's tests (`lane.rs`) turn
        // it on.
        built.https_max_size = Some(0);
        built
    }
}

/// A connector at `site` of the shared emulator (the guard is a placeholder to keep).
pub fn connector(site: &str, store_dir: &str) -> ((), GlobusConnector) {
    let config = config_for(shared(), store_dir);
    let connector = GlobusConnector::builder(config).site(site).build().unwrap();
    ((), connector)
}

/// Connectors at `first` and `second` for a test's own emulator, sharing a state
/// directory of their own (kept alive by the returned guard).
pub fn own_pair(
    config: &GlobusConfig,
    first: &str,
    second: &str,
) -> (tempfile::TempDir, GlobusConnector, GlobusConnector) {
    shared(); // the process defaults: the static token
    let home = tempfile::tempdir().unwrap();
    let at = |site: &str| {
        GlobusConnector::builder(config.clone())
            .site(site)
            .home(home.path())
            .build()
            .unwrap()
    };
    let (a, b) = (at(first), at(second));
    (home, a, b)
}

/// After an eviction at site a of `keys` of `store`: it took one delete task, which
/// succeeded, and neither site has the objects any more.
pub async fn assert_evicted_in_one_delete_task(
    emu: &Emu,
    store: &ps_globus::Store,
    b: &GlobusConnector,
    keys: &[ps_globus::connector::Key],
) {
    use ps_globus::connector::Connector;
    // Evictions return once the object is gone here; closing waits for the deletion of
    // the copies elsewhere (in the background, sharing one task).
    store.close_async().await.unwrap();
    assert_eq!(emu.the_one_delete_task().await["status"], "SUCCEEDED");
    for key in keys {
        assert!(!store.exists_async(key).await.unwrap());
        assert!(!b.exists(key).await.unwrap(), "the copy at b is gone");
    }
}

/// A connector at each of sites `a` and `b` of the shared emulator, for `store_dir`.
pub fn pair(store_dir: &str) -> (GlobusConnector, GlobusConnector) {
    (connector("a", store_dir).1, connector("b", store_dir).1)
}

/// An emulator with a third collection, `c`, served from `c_root`.
pub fn emu_with_c(c_root: &std::path::Path) -> Emu {
    let c_dir = c_root.to_path_buf();
    Emu::with(move |cfg| {
        cfg.collections.insert(
            "c".into(),
            ps_globus_sim::CollectionConfig {
                root: c_dir,
                ..Default::default()
            },
        );
    })
}

/// Adds `emu`'s collection `c` (served from `c_root`) to `config` as site `c`.
pub fn add_site_c(config: &mut GlobusConfig, emu: &Emu, c_root: &std::path::Path) {
    let mut site_c = config.sites["b"].clone();
    site_c.collection = emu.sim.collection("c").unwrap().id;
    site_c.local_path = c_root.to_path_buf();
    config.sites.insert("c".into(), site_c);
}

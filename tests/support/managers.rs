//! Transfer clients and managers against a test emulator.

use std::sync::Arc;
use std::time::Duration;

use ps_globus::auth::StaticTokenAuthorizer;
use ps_globus::state::StateDb;
use ps_globus::transfer::{ItemSpec, ManagerConfig, RetryConfig, TransferClient, TransferManager};

use super::emulator::{Emu, TOKEN};

pub fn fast_retry() -> RetryConfig {
    {
        let mut built = RetryConfig::default();
        built.max_retries = 5;
        built.max_sleep = Duration::from_millis(20);
        built.base = Duration::from_millis(2);
        built
    }
}

pub fn config() -> ManagerConfig {
    let mut config = ManagerConfig::default();
    // Tests that enqueue one item after another expect one batch: a gap between two
    // enqueues longer than `quiet` (a loaded CI machine, a PostgreSQL round trip) would
    // close it between them.
    config.quiet = Duration::from_millis(150);
    config.poll_min = Duration::from_millis(50);
    config.poll_idle = Duration::from_millis(50);
    config.poll_max = Duration::from_millis(200);
    config
}

pub fn client(emu: &Emu) -> TransferClient {
    TransferClient::with_base_url(
        emu.sim.transfer_url(),
        Arc::new(StaticTokenAuthorizer::new(TOKEN)),
    )
    .unwrap()
    .with_retry(fast_retry())
    .unwrap()
}

/// The state URL of the SQLite database at `path`.
pub fn sqlite(path: &std::path::Path) -> String {
    format!("sqlite:{}", path.display())
}

/// A manager on the state database at `state` (a `sqlite:` or `postgres://` URL).
pub async fn manager(emu: &Emu, state: &str, config: ManagerConfig) -> TransferManager {
    let db = StateDb::open_url(state, ps_globus::Settings::global())
        .await
        .unwrap();
    TransferManager::start(db, client(emu), config)
        .await
        .unwrap()
}

/// The state database engines a test runs on.
#[derive(Clone, Copy, Debug)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// A fresh state database of a test, kept while this lives.
pub struct TestState {
    /// Its URL, for [`StateDb::open_url`] (here or in a child process).
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Engine {
    /// A fresh, empty state database: a SQLite file in a temporary directory, or a new
    /// database on the test PostgreSQL server.
    pub async fn fresh(self) -> TestState {
        match self {
            Engine::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                TestState {
                    url: format!("sqlite:{}", dir.path().join("state.db").display()),
                    _dir: Some(dir),
                }
            }
            Engine::Postgres => TestState {
                url: super::pg_cluster::fresh_database().await,
                _dir: None,
            },
        }
    }
}

/// `async fn NAME(engine: Engine) { … }` as two tests, `NAME::sqlite` and
/// `NAME::postgres`: the manager's conformance on both state database engines.
#[macro_export]
macro_rules! on_both_engines {
    ($(#[$attr:meta])* async fn $name:ident($engine:ident: Engine) $body:block) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                run($crate::support::managers::Engine::Sqlite).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                run($crate::support::managers::Engine::Postgres).await
            }

            $(#[$attr])*
            async fn run($engine: $crate::support::managers::Engine) $body
        }
    };
}

pub fn spec(emu: &Emu, from: &str, to: &str) -> ItemSpec {
    ItemSpec::new(emu.a.clone(), from, emu.b.clone(), to)
}

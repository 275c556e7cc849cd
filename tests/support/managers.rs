//! Transfer clients and managers against a test emulator.

use std::sync::Arc;
use std::time::Duration;

use ps_globus::auth::StaticTokenAuthorizer;
use ps_globus::state::StateDb;
use ps_globus::transfer::{ItemSpec, ManagerConfig, RetryConfig, TransferClient, TransferManager};

use super::emulator::{Emu, TOKEN};

pub fn fast_retry() -> RetryConfig {
    RetryConfig {
        max_retries: 5,
        max_sleep: Duration::from_millis(20),
        base: Duration::from_millis(2),
        ..RetryConfig::default()
    }
}

pub fn config() -> ManagerConfig {
    ManagerConfig {
        poll_min: Duration::from_millis(50),
        poll_idle: Duration::from_millis(50),
        poll_max: Duration::from_millis(200),
        ..ManagerConfig::default()
    }
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

pub async fn manager(emu: &Emu, db: &std::path::Path, config: ManagerConfig) -> TransferManager {
    TransferManager::start(StateDb::open(db).await.unwrap(), client(emu), config)
        .await
        .unwrap()
}

pub fn spec(emu: &Emu, from: &str, to: &str) -> ItemSpec {
    ItemSpec::new(emu.a.clone(), from, emu.b.clone(), to)
}

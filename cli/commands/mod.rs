//! One module per command group, each a few lines over a library call. What several
//! groups need (the settings, a Transfer client, this process's manager) is here.

pub mod config;
pub mod demo;
pub mod doctor;
pub mod endpoint;
pub mod https;
pub mod job;
pub mod lease;
pub mod login;
pub mod proxy;
pub mod redis;
pub mod refs;
pub mod sim;
pub mod status;
pub mod stop;
pub mod stream;
pub mod task;
pub mod transfer;

use std::time::Duration;

use ps_globus::Settings;
use ps_globus::state::StateDb;
use ps_globus::transfer::{ManagerConfig, TransferClient, TransferManager};

/// The environment's settings, read once for the whole command.
pub fn settings() -> &'static Settings {
    Settings::global()
}

/// A command's error: a library error (its hint and exit code survive the box) or a
/// message.
pub type CommandError = Box<dyn std::error::Error>;

/// A Transfer client acting as this process's identity.
pub fn client() -> Result<TransferClient, CommandError> {
    let settings = settings();
    Ok(TransferClient::new(
        settings,
        ps_globus::auth::default_authorizer(settings)?,
    )?)
}

/// The manager of this short-lived process: batches stay open until the command's
/// `flush`, so one command's items share tasks however long it takes to enqueue them.
/// It also submits what stopped commands left behind (`adopt_orphans`).
pub async fn manager() -> Result<TransferManager, CommandError> {
    start_manager(true).await
}

/// A manager for commands that look at or prune the state (`status`, `task cancel`):
/// it polls, but never submits work that other (stopped) commands left behind.
pub async fn observer() -> Result<TransferManager, CommandError> {
    start_manager(false).await
}

async fn start_manager(adopt_orphans: bool) -> Result<TransferManager, CommandError> {
    let settings = settings();
    let db = StateDb::open_default(settings).await?;
    let config = {
        let mut built = ManagerConfig::from_settings(settings);
        built.quiet = Duration::from_secs(60);
        built.max_delay = Duration::from_secs(120);
        built.adopt_orphans = adopt_orphans;
        built
    };
    Ok(TransferManager::start(db, client()?, config).await?)
}

/// Configured site names by collection id, to show instead of UUIDs (empty without a
/// readable configuration).
pub fn site_names() -> std::collections::HashMap<String, String> {
    ps_globus::config::Config::load(settings())
        .map(|config| {
            config
                .sites
                .iter()
                .map(|(name, site)| (site.collection.to_string(), name.clone()))
                .collect()
        })
        .unwrap_or_default()
}

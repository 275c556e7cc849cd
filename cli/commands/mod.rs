//! One module per command group, each a few lines over a library call. What several
//! groups need (the settings, a Transfer client, this process's manager) is here.

pub mod config;
pub mod demo;
pub mod doctor;
pub mod login;
pub mod proxy;
pub mod refs;
pub mod sim;
pub mod status;
pub mod stop;
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
pub async fn manager() -> Result<TransferManager, CommandError> {
    let settings = settings();
    let db = StateDb::open_default(settings).await?;
    let config = ManagerConfig {
        quiet: Duration::from_secs(60),
        max_delay: Duration::from_secs(120),
        ..ManagerConfig::from_settings(settings)
    };
    Ok(TransferManager::start(db, client()?, config).await?)
}

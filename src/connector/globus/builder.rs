//! Building a [`GlobusConnector`]: from a builder in the producer, or from its config in
//! whatever process a proxy reaches (with that process's defaults).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use tokio::sync::OnceCell;

use super::config::{GlobusConfig, check_relative};
use super::{GlobusConnector, Inner};
use crate::auth::Authorizer;
use crate::connector::Provenance;
use crate::error::{Error, Result};
use crate::fsutil::ObjectDir;
use crate::settings::Settings;
use crate::transfer::ManagerConfig;

/// Process-wide defaults for Globus connectors rebuilt from a config (in a proxy).
///
/// ```
/// use ps_globus::connector::{GlobusConfig, GlobusConnector, ProcessDefaults, set_process_defaults};
/// let config: GlobusConfig = serde_json::from_value(serde_json::json!({
///     "store_dir": "run",
///     "sites": {
///         "hpc": {"collection": "05d2c76a-e867-4f67-aa57-76edeb0beda0",
///                 "collection_path": "/x", "local_path": "/lus/x"},
///         "lab": {"collection": "9a1f2f3e-0000-4000-8000-000000000001",
///                 "collection_path": "/data", "local_path": "/srv/data"}
///     }
/// }))?;
/// // This process knows where it runs: every connector it builds or rebuilds is there.
/// let mut defaults = ProcessDefaults::default();
/// defaults.site = Some("lab".into());
/// set_process_defaults(defaults);
/// assert_eq!(GlobusConnector::builder(config.clone()).build()?.site(), "lab");
/// // A builder's own choice still wins.
/// assert_eq!(GlobusConnector::builder(config).site("hpc").build()?.site(), "hpc");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct ProcessDefaults {
    /// The identity to act as (default: [`crate::auth::default_authorizer`]).
    pub authorizer: Option<Arc<dyn Authorizer>>,
    /// The settings, the state directory among them (default: [`Settings::global`]).
    pub settings: Option<Settings>,
    /// The site this process is at (default: the settings' `PS_GLOBUS_SITE`, else the
    /// host regexes): a program that knows where it runs says so once, here.
    pub site: Option<String>,
}

impl std::fmt::Debug for ProcessDefaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessDefaults")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The process defaults (a forked child keeps them).
fn defaults_slot() -> &'static RwLock<Option<ProcessDefaults>> {
    /// The slot's own type.
    #[derive(Default)]
    struct Defaults(RwLock<Option<ProcessDefaults>>);
    &crate::process::inherited(Defaults::default).0
}

/// The settings connectors rebuilt from a config use in this process: the process
/// defaults', else [`Settings::global`].
pub(crate) fn settings_default() -> Settings {
    defaults_slot()
        .read()
        .expect("defaults lock")
        .as_ref()
        .and_then(|d| d.settings.clone())
        .unwrap_or_else(|| Settings::global().clone())
}

/// Sets what connectors rebuilt from a config use in this process.
pub fn set_process_defaults(defaults: ProcessDefaults) {
    *defaults_slot().write().expect("defaults lock") = Some(defaults);
}

/// Builds a [`GlobusConnector`].
pub struct GlobusConnectorBuilder {
    config: GlobusConfig,
    site: Option<String>,
    authorizer: Option<Arc<dyn Authorizer>>,
    https_authorizer: Option<Arc<dyn Authorizer>>,
    home: Option<PathBuf>,
    settings: Option<Settings>,
    manager: Option<ManagerConfig>,
    provenance: Provenance,
}

impl std::fmt::Debug for GlobusConnectorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlobusConnectorBuilder")
            .field("config", &self.config)
            .field("site", &self.site)
            .finish_non_exhaustive()
    }
}

impl GlobusConnectorBuilder {
    pub(super) fn new(config: GlobusConfig) -> Self {
        GlobusConnectorBuilder {
            config,
            site: None,
            authorizer: None,
            https_authorizer: None,
            home: None,
            settings: None,
            manager: None,
            provenance: Provenance::Local,
        }
    }

    /// Where the configuration came from (default [`Provenance::Local`]); rebuilt from
    /// data, the connector deletes only objects it minted, in a trusted directory, and
    /// pulls on demand only into a collection the local configuration names.
    pub fn provenance(mut self, provenance: Provenance) -> Self {
        self.provenance = provenance;
        self
    }

    /// Acts as site `name` (default: the process defaults' site, else
    /// [`GlobusConfig::current_site`]).
    pub fn site(mut self, name: impl Into<String>) -> Self {
        self.site = Some(name.into());
        self
    }

    /// Acts as this identity (default: the process defaults, else the settings).
    pub fn authorizer(mut self, authorizer: Arc<dyn Authorizer>) -> Self {
        self.authorizer = Some(authorizer);
        self
    }

    /// Sends HTTPS requests to every collection with this identity's token (a token
    /// every collection accepts, or a test's). Default: a token per collection from the
    /// settings ([`crate::auth::https_authorizer`]).
    pub fn https_authorizer(mut self, authorizer: Arc<dyn Authorizer>) -> Self {
        self.https_authorizer = Some(authorizer);
        self
    }

    /// Keeps transfer state in `home/state.db`.
    pub fn home(mut self, home: impl Into<PathBuf>) -> Self {
        self.home = Some(home.into());
        self
    }

    /// Takes the site, service URL, state directory and credentials from `settings`
    /// where nothing more specific is given (default: the process defaults, else
    /// [`Settings::global`]).
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = Some(settings);
        self
    }

    /// Tunes the transfer manager this connector starts (batching, polling, when a stuck
    /// task is cancelled); default: [`ManagerConfig::from_settings`].
    pub fn manager_config(mut self, config: ManagerConfig) -> Self {
        self.manager = Some(config);
        self
    }

    /// Checks the configuration and builds the connector. No network yet: the Transfer
    /// client and manager start on first use.
    pub fn build(self) -> Result<GlobusConnector> {
        let mut config = self.config;
        check_relative(&config.store_dir, "store_dir")?;
        if config.sites.is_empty() {
            return Err(Error::invalid_config(
                "globus",
                "no sites: add at least two to the store's configuration",
            ));
        }
        let defaults = defaults_slot()
            .read()
            .expect("defaults lock")
            .clone()
            .unwrap_or_default();
        let settings = self.settings.unwrap_or_else(settings_default);
        let site = match self.site.or(defaults.site) {
            Some(site) => {
                config.site(&site)?;
                site
            }
            None => config.current_site(&settings)?,
        };
        let transfer_url = config
            .transfer_url
            .clone()
            .unwrap_or_else(|| settings.transfer_url.clone());
        if self.provenance.trust().is_none() {
            crate::connector::trust::configured_transfer_url(&transfer_url);
        }
        if let Some(trust) = self.provenance.trust() {
            // A pull spends this identity's transfers into this site's collection: from
            // data, only into a collection the local configuration names.
            let collection = config.site(&site)?.collection;
            if config.pull_on_demand && !trust.collections.contains(&collection) {
                tracing::warn!(
                    "a proxy's Globus store asks to pull on demand into collection \
                     {collection}, which {} names for no site: not pulling (reads wait for \
                     the producer's transfers)",
                    trust.config_path.display()
                );
                config.pull_on_demand = false;
            }
        }
        Ok(GlobusConnector {
            inner: Arc::new(Inner {
                objects: ObjectDir::new(config.site(&site)?.local_path.clone(), &config.store_dir),
                config,
                site,
                authorizer: self.authorizer.or(defaults.authorizer),
                https_authorizer: self.https_authorizer,
                home: self.home.unwrap_or_else(|| settings.home.clone()),
                transfer_url,
                manager_config: self
                    .manager
                    .unwrap_or_else(|| ManagerConfig::from_settings(&settings)),
                settings,
                client: OnceCell::new(),
                db: OnceCell::new(),
                manager: OnceCell::new(),
                watcher: OnceCell::new(),
                deleter: OnceCell::new(),
                lane: OnceCell::new(),
                provenance: self.provenance,
                marked: std::sync::Once::new(),
            }),
        })
    }
}

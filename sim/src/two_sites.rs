//! Two sites on the built-in emulator, for `ps-globus demo`, the Globus benchmark and
//! tests: collections `a` and `b` in a temporary directory, a service identity both sites
//! act as, and a [`GlobusConfig`] naming both. A producer at `a` proxies objects; a
//! consumer in another process, configured as `b` through [`TwoSites::consumer_env`],
//! resolves them.
//!
//! This harness is the one part of the emulator that uses the library above the
//! Transfer document types: it builds the connector a producer uses.

use std::path::PathBuf;
use std::sync::Arc;

use super::{CollectionConfig, SimConfig, Simulator};
use ps_globus::auth::{ClientCredentialsAuthorizer, TRANSFER_SCOPE};
use ps_globus::config::SiteConfig;
use ps_globus::connector::{GlobusConfig, GlobusConnector, GlobusConnectorBuilder};
use ps_globus::settings::Settings;
use ps_globus::{Error, Result};

const CLIENT_ID: &str = "d3m0d3m0-0000-4000-8000-000000000001";
const CLIENT_SECRET: &str = "demo-service-secret";

/// An emulator with sites `a` and `b` in a temporary directory (removed on drop).
pub struct TwoSites {
    /// The emulator.
    pub sim: Simulator,
    /// The store configuration both sites use.
    pub config: GlobusConfig,
    dir: tempfile::TempDir,
}

impl TwoSites {
    /// Starts the emulator with `task_latency_ms` of per-task overhead.
    pub fn start(task_latency_ms: u64) -> Result<TwoSites> {
        Self::start_with(|config| config.task_latency_ms = task_latency_ms)
    }

    /// Starts the emulator with the settings `tweak` makes (its collections and client
    /// are the harness's).
    pub fn start_with(tweak: impl FnOnce(&mut SimConfig)) -> Result<TwoSites> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("create", std::env::temp_dir(), e))?;
        let mut sim_config = SimConfig::default();
        tweak(&mut sim_config);
        sim_config
            .clients
            .insert(CLIENT_ID.into(), CLIENT_SECRET.into());
        for name in ["a", "b"] {
            let root = dir.path().join(format!("site-{name}"));
            std::fs::create_dir_all(&root).map_err(|e| Error::io("create", &root, e))?;
            sim_config.collections.insert(
                name.into(),
                CollectionConfig {
                    root,
                    ..Default::default()
                },
            );
        }
        let sim = Simulator::start(sim_config)?;
        let mut sites = std::collections::BTreeMap::new();
        for name in ["a", "b"] {
            let collection = sim.collection(name).expect("started with it");
            sites.insert(name.to_string(), {
                let mut built = SiteConfig::default();
                built.collection = collection.id;
                built.collection_path = "/".into();
                built.local_path = collection.root.clone();
                built.host_regex = None;
                built
            });
        }
        let config = {
            let mut built = GlobusConfig::default();
            built.store_dir = "demo-store".into();
            built.sites = sites;
            built.destinations = None;
            built.pull_on_demand = false;
            built.wait_timeout_s = Some(600);
            built.transfer_url = Some(sim.transfer_url().into());
            built
        };
        Ok(TwoSites { sim, config, dir })
    }

    /// The state directory of `site`'s processes.
    pub fn home(&self, site: &str) -> PathBuf {
        self.dir.path().join(format!("home-{site}"))
    }

    /// The connector of a producer at site `a`, in this process.
    pub fn producer(&self) -> Result<GlobusConnector> {
        self.connector("a")
    }

    /// A connector at `site` in this process, with that site's state directory, acting
    /// as the harness's service identity (for Transfer and each collection's HTTPS).
    pub fn connector(&self, site: &str) -> Result<GlobusConnector> {
        self.builder(site)?.build()
    }

    /// The builder of [`connector`](Self::connector), for a caller that sets more (its
    /// manager's configuration, say).
    pub fn builder(&self, site: &str) -> Result<GlobusConnectorBuilder> {
        let auth = ClientCredentialsAuthorizer::new(
            self.sim.auth_url(),
            CLIENT_ID,
            CLIENT_SECRET,
            TRANSFER_SCOPE,
        )?;
        // The same identity asks for each collection's HTTPS scopes (the lane).
        let mut settings = Settings::isolated(self.home(site));
        settings.client_id = Some(CLIENT_ID.into());
        settings.client_secret = Some(CLIENT_SECRET.into());
        settings.auth_url = self.sim.auth_url().into();
        Ok(GlobusConnector::builder(self.config.clone())
            .site(site)
            .authorizer(Arc::new(auth))
            .settings(settings))
    }

    /// The environment of a consumer process at site `b`: it rebuilds the store from
    /// the proxies and acts as the same service identity.
    pub fn consumer_env(&self) -> Vec<(String, String)> {
        self.env("b")
    }

    /// The environment of a process at `site`, with its own state directory and the
    /// service identity's credentials.
    pub fn env(&self, site: &str) -> Vec<(String, String)> {
        vec![
            ("PS_GLOBUS_SITE".into(), site.into()),
            (
                "PS_GLOBUS_HOME".into(),
                self.home(site).display().to_string(),
            ),
            ("PS_GLOBUS_CLIENT_ID".into(), CLIENT_ID.into()),
            ("PS_GLOBUS_CLIENT_SECRET".into(), CLIENT_SECRET.into()),
            ("PS_GLOBUS_AUTH_URL".into(), self.sim.auth_url().into()),
            (
                "PS_GLOBUS_TRANSFER_URL".into(),
                self.sim.transfer_url().into(),
            ),
        ]
    }
}

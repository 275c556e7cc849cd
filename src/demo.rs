//! Two sites on the built-in emulator, for `ps-globus demo` and the Globus benchmark.
//!
//! [`TwoSites`] starts the emulator with collections `a` and `b` in a temporary
//! directory, a service identity both sites act as, and a [`GlobusConfig`] naming both.
//! A producer at `a` proxies objects; a consumer in another process, configured as `b`
//! through [`TwoSites::consumer_env`], resolves and verifies them ([`consume`]).

use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::StreamExt;

use crate::auth::{ClientCredentialsAuthorizer, TRANSFER_SCOPE};
use crate::config::SiteConfig;
use crate::connector::{GlobusConfig, GlobusConnector};
use crate::error::{Error, Result};
use crate::proxy::Proxy;
use crate::sim::{CollectionConfig, SimConfig, Simulator};

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
        let dir = tempfile::tempdir().map_err(|e| Error::io("create", std::env::temp_dir(), e))?;
        let mut sim_config = SimConfig {
            task_latency_ms,
            ..SimConfig::default()
        };
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
            sites.insert(
                name.to_string(),
                SiteConfig {
                    collection: collection.id,
                    collection_path: "/".into(),
                    local_path: collection.root.clone(),
                    host_regex: None,
                },
            );
        }
        let config = GlobusConfig {
            store_dir: "demo-store".into(),
            sites,
            destinations: None,
            pull_on_demand: false,
            wait_timeout_s: Some(600),
            transfer_url: Some(sim.transfer_url().into()),
        };
        Ok(TwoSites { sim, config, dir })
    }

    /// The state directory of `site`'s processes.
    pub fn home(&self, site: &str) -> PathBuf {
        self.dir.path().join(format!("home-{site}"))
    }

    /// The connector of a producer at site `a`, in this process.
    pub fn producer(&self) -> Result<GlobusConnector> {
        let auth = ClientCredentialsAuthorizer::new(
            self.sim.auth_url(),
            CLIENT_ID,
            CLIENT_SECRET,
            TRANSFER_SCOPE,
        )?;
        GlobusConnector::builder(self.config.clone())
            .site("a")
            .authorizer(Arc::new(auth))
            .home(self.home("a"))
            .build()
    }

    /// The environment of a consumer process at site `b`: it rebuilds the store from
    /// the proxies and acts as the same service identity.
    pub fn consumer_env(&self) -> Vec<(String, String)> {
        vec![
            ("PS_GLOBUS_SITE".into(), "b".into()),
            (
                "PS_GLOBUS_HOME".into(),
                self.home("b").display().to_string(),
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

/// The `index`th demo object: between 1 KiB and `max_size` bytes, content from the
/// index, so the consumer can check every byte without being told them.
///
/// ```
/// let a = ps_globus::demo::object(3, 1 << 20);
/// assert_eq!(a, ps_globus::demo::object(3, 1 << 20));
/// assert!(a.len() >= 1024 && a.len() <= 1 << 20);
/// ```
pub fn object(index: usize, max_size: usize) -> Vec<u8> {
    let max_size = max_size.max(1024);
    // Mostly small, every tenth large: like a workflow's mix of metadata and arrays.
    let mut x = (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    let size = if index % 10 == 9 {
        max_size / 2 + (x as usize % (max_size / 2 + 1))
    } else {
        1024 + (x as usize % (max_size / 16).max(1))
    }
    .min(max_size);
    (0..size)
        .map(|i| (i as u64 ^ x).wrapping_mul(31) as u8)
        .collect()
}

/// Resolves the proxies on `lines` (`INDEX<TAB>PROXY JSON` each), 64 at a time, and
/// checks each against `expected(index)`. `resolved(index, bytes)` is called as each
/// arrives. Returns (objects, bytes).
pub async fn consume(
    lines: impl BufRead,
    expected: impl Fn(usize) -> Vec<u8>,
    mut resolved: impl FnMut(usize, usize),
) -> Result<(usize, u64)> {
    let expected = &expected;
    let mut work = Vec::new();
    for line in lines.lines() {
        let line = line.map_err(|e| Error::io("read", "standard input", e))?;
        let Some((index, json)) = line.split_once('\t') else {
            continue;
        };
        let index: usize = index
            .parse()
            .map_err(|_| Error::malformed(format!("bad demo line index {index:?}")))?;
        work.push((index, json.to_owned()));
    }
    let mut results =
        futures_util::stream::iter(work.into_iter().map(|(index, json)| async move {
            let proxy: Proxy<Vec<u8>> =
                serde_json::from_str(&json).map_err(|e| Error::MalformedProxy {
                    reason: e.to_string(),
                })?;
            let value = proxy.resolve_async().await?;
            if *value != expected(index) {
                return Err(Error::Integrity {
                    path: PathBuf::from(format!("object {index}")),
                    expected: "the producer's bytes".into(),
                    found: format!("{} other bytes", value.len()),
                });
            }
            Ok::<_, Error>((index, value.len()))
        }))
        .buffer_unordered(64);
    let (mut count, mut bytes) = (0, 0u64);
    while let Some(result) = results.next().await {
        let (index, len) = result?;
        count += 1;
        bytes += len as u64;
        resolved(index, len);
    }
    Ok((count, bytes))
}

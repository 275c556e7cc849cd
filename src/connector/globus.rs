//! Objects staged to Globus collections: written at the local site, copied to the other
//! sites by Globus Transfer, verified where they are read.
//!
//! **Put.** The bytes go atomically to `<site local path>/<store dir>/<object id>`; one
//! transfer item per destination site is committed to the [`TransferManager`]'s state
//! database, which coalesces items from back-to-back and concurrent puts into few Globus
//! tasks. `put` returns once the items are durably enqueued, not when they arrive. The
//! key carries, versioned: the source site and collection, the path under the store
//! directory, the size, the sha256, and per destination the batch label.
//!
//! **Get.** At the source site, a local read. At a destination, the completion signal is
//! the file itself, present with the key's size and sha256: that needs no credentials
//! and cannot be fooled by a partial file. Where this process can see the task (same
//! Globus identity), one shared poller follows every awaited batch with one
//! `task_list` request per cycle, so a failed transfer is a typed error with the Globus
//! reason at once, not a timeout, and the wait ends at the task's deadline. Bytes that do
//! not match are an [`Error::Integrity`], never returned.
//!
//! **Closing.** `put` returns before the batch is submitted; a producer that exits right
//! after its puts must call `Store::close` (or `Connector::close`) first, which submits
//! what is still batching. Otherwise the next process at that site with the same state
//! directory resumes it.
//!
//! **Sites.** The current site is fixed by the builder, else `PS_GLOBUS_SITE`, else the
//! first site whose host regex matches the host name.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{ErrorKind, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, OnceCell, oneshot};

use super::{Connector, ConnectorConfig, Key, PutOptions};
use crate::auth::Authorizer;
use crate::config::SiteConfig;
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::state::StateDb;
use crate::transfer::types::{DeleteItem, DeleteRequest, Task};
use crate::transfer::{
    ItemSpec, ManagerConfig, Priority, TaskQuery, TransferClient, TransferManager,
};

/// The newest object-metadata format this build writes and reads.
pub const META_VERSION: u16 = 1;

/// How long a read waits for a transfer whose task (and so deadline) it cannot see.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(24 * 3600);

/// The connector's configuration: travels inside every proxy, so any site can rebuild it.
///
/// ```
/// let config: ps_globus::connector::GlobusConfig = serde_json::from_value(serde_json::json!({
///     "store_dir": "my-workflow",
///     "sites": {
///         "hpc": {"collection": "05d2c76a-e867-4f67-aa57-76edeb0beda0",
///                 "collection_path": "/projects/x", "local_path": "/lus/projects/x"},
///         "lab": {"collection": "9a1f2f3e-0000-4000-8000-000000000001",
///                 "collection_path": "/data", "local_path": "/srv/data"}
///     }
/// })).unwrap();
/// assert_eq!(config.destinations_from("hpc").unwrap(), vec!["lab".to_string()]);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobusConfig {
    /// The store's directory under every site's prefix (relative, no `..`).
    pub store_dir: String,
    /// The sites, by name.
    pub sites: BTreeMap<String, SiteConfig>,
    /// Where puts are sent (default: every site but the source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destinations: Option<Vec<String>>,
    /// At a site that is not a destination, transfer the object here on first read.
    #[serde(default)]
    pub pull_on_demand: bool,
    /// Longest wait for a transfer, in seconds (default: the task's Globus deadline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_timeout_s: Option<u64>,
    /// The Transfer service root (default `PS_GLOBUS_TRANSFER_URL`, else the real one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_url: Option<String>,
}

impl GlobusConfig {
    /// A store in `store_dir` over the sites of the configuration file
    /// ([`crate::config::Config::load`]).
    pub fn from_config_file(store_dir: impl Into<String>) -> Result<GlobusConfig> {
        let file = crate::config::Config::load()?;
        if file.sites.is_empty() {
            return Err(Error::InvalidConfig {
                what: "globus".into(),
                message: format!(
                    "no sites in {}: add them (see `sites` in the README)",
                    crate::config::Config::default_path().display()
                ),
            });
        }
        Ok(GlobusConfig {
            store_dir: store_dir.into(),
            sites: file.sites,
            destinations: None,
            pull_on_demand: false,
            wait_timeout_s: None,
            transfer_url: None,
        })
    }

    /// The destination sites of a put made at `source` (the store's default).
    pub fn destinations_from(&self, source: &str) -> Result<Vec<String>> {
        self.destinations_for(source, None)
    }

    /// The destination sites of a put made at `source`: `asked` (a put's own), else the
    /// store's, else every other site.
    pub fn destinations_for(&self, source: &str, asked: Option<&[String]>) -> Result<Vec<String>> {
        let names: Vec<String> = match (asked, &self.destinations) {
            (Some(list), _) => list.to_vec(),
            (None, Some(list)) => list.clone(),
            (None, None) => self.sites.keys().cloned().collect(),
        };
        for name in &names {
            self.site(name)?;
        }
        Ok(names.into_iter().filter(|n| n != source).collect())
    }

    fn site(&self, name: &str) -> Result<&SiteConfig> {
        self.sites.get(name).ok_or_else(|| Error::UnknownSite {
            message: format!("{name:?} is not a site of this store"),
            known: crate::config::site_list(&self.sites),
        })
    }

    /// The site this process is at: `PS_GLOBUS_SITE`, else the first site whose host
    /// regex matches the host name.
    pub fn current_site(&self) -> Result<String> {
        crate::config::current_site(&self.sites)
    }
}

/// What a Globus key carries besides its id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// Format version.
    pub v: u16,
    /// The site the object was put at.
    pub source: String,
    /// That site's collection.
    pub collection: uuid::Uuid,
    /// The path under the store directory.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256, lowercase hex.
    pub sha256: String,
    /// Per destination site: the batch label of its transfer.
    pub destinations: BTreeMap<String, String>,
}

/// Process-wide defaults for Globus connectors rebuilt from a config (in a proxy).
#[derive(Clone, Default)]
pub struct ProcessDefaults {
    /// The identity to act as (default: [`crate::auth::default_authorizer`]).
    pub authorizer: Option<Arc<dyn Authorizer>>,
    /// The state directory (default [`crate::state::default_home`]).
    pub home: Option<PathBuf>,
}

static DEFAULTS: RwLock<Option<ProcessDefaults>> = RwLock::new(None);

/// Sets what connectors rebuilt from a config use in this process.
pub fn set_process_defaults(defaults: ProcessDefaults) {
    *DEFAULTS.write().expect("defaults lock") = Some(defaults);
}

/// Builds a [`GlobusConnector`].
pub struct GlobusConnectorBuilder {
    config: GlobusConfig,
    site: Option<String>,
    authorizer: Option<Arc<dyn Authorizer>>,
    home: Option<PathBuf>,
}

impl GlobusConnectorBuilder {
    /// Acts as site `name` (default: [`GlobusConfig::current_site`]).
    pub fn site(mut self, name: impl Into<String>) -> Self {
        self.site = Some(name.into());
        self
    }

    /// Acts as this identity (default: the process defaults, else the environment).
    pub fn authorizer(mut self, authorizer: Arc<dyn Authorizer>) -> Self {
        self.authorizer = Some(authorizer);
        self
    }

    /// Keeps transfer state in `home/state.db`.
    pub fn home(mut self, home: impl Into<PathBuf>) -> Self {
        self.home = Some(home.into());
        self
    }

    /// Checks the configuration and builds the connector. No network yet: the Transfer
    /// client and manager start on first use.
    pub fn build(self) -> Result<GlobusConnector> {
        let config = self.config;
        check_relative(&config.store_dir, "store_dir")?;
        if config.sites.is_empty() {
            return Err(Error::InvalidConfig {
                what: "globus".into(),
                message: "no sites: add at least two to the store's configuration".into(),
            });
        }
        let site = match self.site {
            Some(site) => {
                config.site(&site)?;
                site
            }
            None => config.current_site()?,
        };
        let defaults = DEFAULTS
            .read()
            .expect("defaults lock")
            .clone()
            .unwrap_or_default();
        let transfer_url = config
            .transfer_url
            .clone()
            .or_else(|| {
                std::env::var("PS_GLOBUS_TRANSFER_URL")
                    .ok()
                    .filter(|v| !v.is_empty())
            })
            .unwrap_or_else(|| crate::transfer::DEFAULT_TRANSFER_URL.into());
        Ok(GlobusConnector {
            inner: Arc::new(Inner {
                config,
                site,
                authorizer: self.authorizer.or(defaults.authorizer),
                home: self
                    .home
                    .or(defaults.home)
                    .unwrap_or_else(crate::state::default_home),
                transfer_url,
                client: OnceCell::new(),
                manager: OnceCell::new(),
                watcher: OnceCell::new(),
                deleter: OnceCell::new(),
            }),
        })
    }
}

/// The Globus connector (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct GlobusConnector {
    inner: Arc<Inner>,
}

struct Inner {
    config: GlobusConfig,
    site: String,
    authorizer: Option<Arc<dyn Authorizer>>,
    home: PathBuf,
    transfer_url: String,
    client: OnceCell<TransferClient>,
    manager: OnceCell<TransferManager>,
    watcher: OnceCell<Arc<Watcher>>,
    deleter: OnceCell<Arc<Deleter>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Puts return once enqueued; make sure a process that ends now still submits.
        if let Some(manager) = self.manager.get() {
            let flushed = crate::runtime::block_on(crate::runtime::timeout(
                Duration::from_secs(30),
                manager.flush(),
            ));
            match flushed {
                Some(Ok(())) => {}
                Some(Err(e)) => tracing::warn!("submitting pending transfers at close: {e}"),
                None => tracing::warn!(
                    "pending transfers were not submitted within 30 s; the next run at this site resumes them"
                ),
            }
        }
    }
}

impl std::fmt::Debug for GlobusConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlobusConnector")
            .field("site", &self.inner.site)
            .field("store_dir", &self.inner.config.store_dir)
            .finish()
    }
}

impl GlobusConnector {
    /// The registry name of this kind.
    pub const KIND: &'static str = "globus";

    /// A builder for `config`.
    pub fn builder(config: GlobusConfig) -> GlobusConnectorBuilder {
        GlobusConnectorBuilder {
            config,
            site: None,
            authorizer: None,
            home: None,
        }
    }

    /// Rebuilds from a [`ConnectorConfig`] (the registry's builder).
    pub(crate) fn build(config: &ConnectorConfig) -> Result<Arc<dyn Connector>> {
        let config: GlobusConfig = config.options_as()?;
        Ok(Arc::new(Self::builder(config).build()?))
    }

    /// The site this connector acts at.
    pub fn site(&self) -> &str {
        &self.inner.site
    }

    /// The configuration.
    pub fn globus_config(&self) -> &GlobusConfig {
        &self.inner.config
    }

    async fn client(&self) -> Result<&TransferClient> {
        self.inner
            .client
            .get_or_try_init(|| async {
                let auth = match &self.inner.authorizer {
                    Some(auth) => auth.clone(),
                    None => crate::auth::default_authorizer()?,
                };
                TransferClient::with_base_url(&self.inner.transfer_url, auth)
            })
            .await
    }

    async fn manager(&self) -> Result<&TransferManager> {
        self.inner
            .manager
            .get_or_try_init(|| async {
                let db = StateDb::open(self.inner.home.join("state.db")).await?;
                TransferManager::start(db, self.client().await?.clone(), ManagerConfig::default())
                    .await
            })
            .await
    }

    async fn watcher(&self) -> Result<&Arc<Watcher>> {
        let client = self.client().await?.clone();
        self.inner
            .watcher
            .get_or_try_init(|| async { Ok(Watcher::start(client)) })
            .await
    }

    /// `<site local path>/<store dir>/<path>` and the same on the collection.
    fn paths(&self, site: &str, path: &str) -> Result<(PathBuf, String)> {
        check_relative(path, "object path")?;
        let s = self.inner.config.site(site)?;
        let store = &self.inner.config.store_dir;
        let local = s.local_path.join(store).join(path);
        let remote = format!("{}/{store}/{path}", s.collection_path.trim_end_matches('/'));
        Ok((local, remote))
    }

    fn meta(&self, key: &Key) -> Result<Option<ObjectMeta>> {
        key.check_kind(Self::KIND)?;
        if key.meta().is_none() {
            return Ok(None);
        }
        let meta: ObjectMeta = key.meta_as()?;
        if meta.v > META_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "Globus object metadata",
                found: meta.v,
                supported: META_VERSION,
            });
        }
        check_relative(&meta.path, "object path")?;
        Ok(Some(meta))
    }

    /// Enqueues the transfers of a freshly written object; returns its key.
    async fn stage(
        &self,
        id: String,
        size: u64,
        sha256: String,
        options: &PutOptions,
    ) -> Result<Key> {
        let source = self.inner.site.clone();
        let (_, source_path) = self.paths(&source, &id)?;
        let collection = self.inner.config.site(&source)?.collection;
        let mut destinations = BTreeMap::new();
        let targets = self
            .inner
            .config
            .destinations_for(&source, options.destinations.as_deref())?;
        if !targets.is_empty() {
            let manager = self.manager().await?;
            for dest in targets {
                let (_, dest_path) = self.paths(&dest, &id)?;
                let spec = ItemSpec::new(
                    collection.to_string(),
                    source_path.clone(),
                    self.inner.config.site(&dest)?.collection.to_string(),
                    dest_path,
                )
                .priority(Priority::Latency)
                .checksum(sha256.clone(), "SHA256");
                destinations.insert(dest, manager.enqueue(spec).await?.label);
            }
        }
        Key::new(Self::KIND, id.clone())?.with_meta(ObjectMeta {
            v: META_VERSION,
            source,
            collection,
            path: id,
            size,
            sha256,
            destinations,
        })
    }

    /// [`Connector::put_file`]: a hard link into the store directory when on the same
    /// file system, else a streamed copy; the sha256 is streamed. Then the same
    /// transfers as a `put`. The hard link shares the file: change the original
    /// afterwards and readers get an [`Error::Integrity`], not the changed bytes.
    async fn stage_file(&self, file: &Path, options: &PutOptions) -> Result<Key> {
        let id = Key::new_id();
        let (local, _) = self.paths(&self.inner.site, &id)?;
        let dir = local.parent().expect("object paths have a parent");
        fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        if let Err(link_error) = fs::hard_link(file, &local) {
            if link_error.kind() == ErrorKind::NotFound {
                return Err(Error::io("stage", file, link_error));
            }
            let tmp = dir.join(format!(".{id}.partial"));
            let copied = fs::copy(file, &tmp)
                .map_err(|e| Error::io("copy", file, e))
                .and_then(|_| fs::rename(&tmp, &local).map_err(|e| Error::io("rename", &tmp, e)));
            if copied.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            copied?;
        }
        let (size, sha256) = hash_file(&local)?;
        self.stage(id, size, sha256, options).await
    }

    /// [`Connector::resolve_path`]: the verified local path at this site, waiting for
    /// the transfer if it is on the way; a 40 GB array never passes through memory.
    async fn verified_path(&self, key: &Key) -> Result<PathBuf> {
        let meta = self.meta(key)?.ok_or_else(|| Error::InvalidConfig {
            what: "globus key".into(),
            message: format!("key {} carries no object metadata", key.id()),
        })?;
        let (local, _) = self.paths(&self.inner.site, &meta.path)?;
        if meta.source != self.inner.site {
            self.wait_for(&meta, &local).await?;
        }
        match verify_file(&local, &meta)? {
            Verdict::Match => Ok(local),
            Verdict::Absent => Err(Error::not_found(&self.inner.config.store_dir, key, "")),
            Verdict::Mismatch(found) => Err(integrity(&local, &meta, found)),
        }
    }

    /// Waits until the object is at this site (a destination, or pulled on demand).
    async fn wait_for(&self, meta: &ObjectMeta, local: &Path) -> Result<()> {
        let site = &self.inner.site;
        let label = match meta.destinations.get(site) {
            Some(label) => label.clone(),
            None if matches!(verify_file(local, meta)?, Verdict::Match) => return Ok(()),
            None if self.inner.config.pull_on_demand => self.pull(meta).await?,
            None => {
                return Err(Error::NotStaged {
                    key: meta.path.clone(),
                    site: site.clone(),
                    destinations: meta.destinations.keys().cloned().collect(),
                });
            }
        };
        // Already here: no need to follow the transfer (nor to ask Globus anything).
        if matches!(verify_file(local, meta)?, Verdict::Match) {
            return Ok(());
        }
        let (_, source_path) = self.paths(&meta.source, &meta.path)?;
        let (_, dest_path) = self.paths(site, &meta.path)?;
        let watcher = self.watcher().await?.clone();
        let _watch = watcher.watch(&label);
        let explicit = self.inner.config.wait_timeout_s.map(Duration::from_secs);
        let mut until = Instant::now() + explicit.unwrap_or(DEFAULT_WAIT);
        let mut delay = Duration::from_millis(10);
        let mut checked_skips = false;
        loop {
            let changed = watcher.changed.notified();
            let verdict = verify_file(local, meta)?;
            if matches!(verdict, Verdict::Match) {
                return Ok(());
            }
            let task = watcher.task(&label);
            if let Some(task) = &task {
                if explicit.is_none()
                    && let Some(deadline) = task
                        .deadline
                        .as_deref()
                        .and_then(crate::transfer::types::parse_time)
                {
                    let left = (deadline - chrono::Utc::now()).to_std().unwrap_or_default();
                    until = Instant::now() + left + Duration::from_secs(5);
                }
                let failed = |code: String, description: String| Error::TransferFailed {
                    task_id: Some(task.task_id.clone()),
                    code,
                    description,
                    source_path: source_path.clone(),
                    destination_path: dest_path.clone(),
                };
                match task.status.as_str() {
                    "FAILED" => {
                        let (code, description) = match &task.fatal_error {
                            Some(f) => (f.code.clone(), f.description.clone()),
                            None => ("FAILED".into(), "the Globus task failed".into()),
                        };
                        return Err(failed(code, description));
                    }
                    "SUCCEEDED" if !checked_skips => {
                        checked_skips = true;
                        let client = self.client().await?;
                        let skipped = client.skipped_errors(&task.task_id).await?;
                        if let Some(s) = skipped.iter().find(|s| s.destination_path == dest_path) {
                            return Err(failed(s.error_code.clone(), s.error_details.clone()));
                        }
                        // The file should be there now: one more look below.
                        continue;
                    }
                    "SUCCEEDED" => {
                        return Err(match verdict {
                            Verdict::Mismatch(found) => integrity(local, meta, found),
                            _ => failed(
                                "MISSING".into(),
                                format!(
                                    "the task succeeded but {} is not there (deleted since?)",
                                    local.display()
                                ),
                            ),
                        });
                    }
                    _ => {}
                }
            } else if let Verdict::Mismatch(found) = verdict {
                // Right size, wrong bytes, and no task of ours in flight to explain it.
                return Err(integrity(local, meta, found));
            }
            let now = Instant::now();
            if now >= until {
                return Err(Error::WaitTimeout {
                    what: format!("{} to arrive at site {site}", meta.path),
                    after: explicit.unwrap_or(DEFAULT_WAIT),
                });
            }
            let _ = crate::runtime::timeout(delay.min(until - now), changed).await;
            // A stat is cheap; the file is the completion signal, so look often.
            delay = (delay * 2).min(Duration::from_millis(100));
        }
    }

    /// Transfers an object from its source to this site; returns the batch label.
    async fn pull(&self, meta: &ObjectMeta) -> Result<String> {
        let (_, source_path) = self.paths(&meta.source, &meta.path)?;
        let (_, dest_path) = self.paths(&self.inner.site, &meta.path)?;
        let spec = ItemSpec::new(
            meta.collection.to_string(),
            source_path,
            self.inner
                .config
                .site(&self.inner.site)?
                .collection
                .to_string(),
            dest_path,
        )
        .priority(Priority::Latency)
        .checksum(meta.sha256.clone(), "SHA256");
        Ok(self.manager().await?.enqueue(spec).await?.label)
    }

    /// Deletes the object's copies at the destinations, after their transfers end.
    async fn evict_remote(&self, meta: &ObjectMeta) -> Result<()> {
        let manager = self.manager().await?;
        for (dest, label) in &meta.destinations {
            let (_, dest_path) = self.paths(dest, &meta.path)?;
            // Let an in-flight transfer finish first, or it would land after the delete.
            for item in manager.items(label).await? {
                if item.destination_path == dest_path && !item.is_final() {
                    let _ = manager.wait(item.item, Duration::from_secs(3600)).await;
                }
            }
            let collection = self.inner.config.site(dest)?.collection.to_string();
            self.deleter().await?.delete(collection, dest_path).await?;
        }
        Ok(())
    }

    async fn deleter(&self) -> Result<&Arc<Deleter>> {
        let client = self.client().await?.clone();
        self.inner
            .deleter
            .get_or_try_init(|| async { Ok(Arc::new(Deleter::new(client))) })
            .await
    }
}

fn integrity(local: &Path, meta: &ObjectMeta, found: String) -> Error {
    Error::Integrity {
        path: local.to_owned(),
        expected: format!("{} bytes, sha256 {}", meta.size, meta.sha256),
        found,
    }
}

/// Refuses paths that could leave their directory.
fn check_relative(path: &str, what: &str) -> Result<()> {
    let p = Path::new(path);
    let ok = !path.is_empty()
        && !path.contains('\0')
        && p.components().all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(Error::malformed(format!(
            "{what} {path:?} must be relative and stay inside its directory"
        )))
    }
}

enum Verdict {
    Match,
    Absent,
    Mismatch(String),
}

/// Whether `local` holds exactly the object: size first (cheap), then the sha256.
fn verify_file(local: &Path, meta: &ObjectMeta) -> Result<Verdict> {
    refuse_symlink(local)?;
    match fs::metadata(local) {
        Ok(m) if m.len() == meta.size => {}
        Ok(_) => return Ok(Verdict::Absent),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Verdict::Absent),
        Err(e) => return Err(Error::io("inspect", local, e)),
    }
    let (_, sha) = hash_file(local)?;
    Ok(if sha == meta.sha256 {
        Verdict::Match
    } else {
        Verdict::Mismatch(format!("sha256 {sha}"))
    })
}

/// An object file must be a file in its directory, not a link to elsewhere (DESIGN:
/// "symlinks out are refused"): a planted link could make a reader return any file.
fn refuse_symlink(local: &Path) -> Result<()> {
    match fs::symlink_metadata(local) {
        Ok(m) if m.file_type().is_symlink() => Err(Error::malformed(format!(
            "{} is a symbolic link; objects are plain files in their store directory",
            local.display()
        ))),
        _ => Ok(()),
    }
}

fn hash_file(path: &Path) -> Result<(u64, String)> {
    let mut file = fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::io("read", path, e))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((size, hex(&hasher.finalize())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[async_trait]
impl Connector for GlobusConnector {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    fn config(&self) -> ConnectorConfig {
        ConnectorConfig::new(Self::KIND, &self.inner.config).expect("the config serializes")
    }

    async fn put(&self, data: &[u8], options: &PutOptions) -> Result<Key> {
        let id = Key::new_id();
        let (local, _) = self.paths(&self.inner.site, &id)?;
        if let Err(e) = write_atomic(&local, data, false) {
            // The store directory is created on first use.
            let dir = local.parent().expect("object paths have a parent");
            if dir.exists() {
                return Err(e);
            }
            fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
            write_atomic(&local, data, false)?;
        }
        let sha256 = hex(&Sha256::digest(data));
        self.stage(id, data.len() as u64, sha256, options).await
    }

    async fn get(&self, key: &Key) -> Result<Option<Bytes>> {
        let Some(meta) = self.meta(key)? else {
            // A bare id names `<store dir>/<id>` here; nothing stored under it is "missing".
            let (local, _) = self.paths(&self.inner.site, key.id())?;
            return match fs::read(&local) {
                Ok(bytes) => Ok(Some(bytes.into())),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::io("read", local, e)),
            };
        };
        let (local, _) = self.paths(&self.inner.site, &meta.path)?;
        if meta.source != self.inner.site {
            self.wait_for(&meta, &local).await?;
        }
        refuse_symlink(&local)?;
        let bytes = match fs::read(&local) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", local, e)),
        };
        let sha = hex(&Sha256::digest(&bytes));
        if bytes.len() as u64 != meta.size || sha != meta.sha256 {
            return Err(integrity(
                &local,
                &meta,
                format!("{} bytes, sha256 {sha}", bytes.len()),
            ));
        }
        Ok(Some(bytes.into()))
    }

    async fn put_file(&self, file: &Path, options: &PutOptions) -> Result<Key> {
        self.stage_file(file, options).await
    }

    async fn resolve_path(&self, key: &Key) -> Result<PathBuf> {
        self.verified_path(key).await
    }

    /// Submits every transfer still waiting in an open batch, so that a producer that
    /// exits right after its puts does not leave them for its next run. (Dropping the
    /// last handle does the same, best effort.)
    async fn close(&self) -> Result<()> {
        if let Some(manager) = self.inner.manager.get() {
            manager.flush().await?;
        }
        Ok(())
    }

    async fn exists(&self, key: &Key) -> Result<bool> {
        let path = match self.meta(key)? {
            Some(meta) => meta.path,
            None => key.id().to_owned(),
        };
        let (local, _) = self.paths(&self.inner.site, &path)?;
        Ok(local.exists())
    }

    async fn evict(&self, key: &Key) -> Result<()> {
        let meta = self.meta(key)?;
        let path = meta.as_ref().map_or(key.id(), |m| m.path.as_str());
        let (local, _) = self.paths(&self.inner.site, path)?;
        match fs::remove_file(&local) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", local, e)),
        }
        if let Some(meta) = meta.filter(|m| m.source == self.inner.site)
            && !meta.destinations.is_empty()
        {
            self.evict_remote(&meta).await?;
        }
        Ok(())
    }
}

/// Coalesces evictions: the paths evicted within a few milliseconds of each other on
/// one collection become one Globus delete task.
struct Deleter {
    client: TransferClient,
    pending: Mutex<HashMap<String, Vec<PendingDelete>>>,
}

/// A path waiting for the next delete task, and who to tell when it is submitted.
type PendingDelete = (String, oneshot::Sender<Result<(), String>>);

impl Deleter {
    fn new(client: TransferClient) -> Deleter {
        Deleter {
            client,
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Deletes `path` on `collection` in the next delete task; returns once submitted.
    async fn delete(self: &Arc<Self>, collection: String, path: String) -> Result<()> {
        let (done, submitted) = oneshot::channel();
        let first = {
            let mut pending = self.pending.lock().expect("deleter lock");
            let first = pending.is_empty();
            pending.entry(collection).or_default().push((path, done));
            first
        };
        if first {
            let me = self.clone();
            crate::runtime::handle().spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                me.flush().await;
            });
        }
        match submitted.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::Background(format!("deleting evicted copies: {e}"))),
            Err(_) => Err(Error::Background("the delete batcher stopped".into())),
        }
    }

    async fn flush(&self) {
        let batches = std::mem::take(&mut *self.pending.lock().expect("deleter lock"));
        for (collection, items) in batches {
            let result = self
                .submit(&collection, &items)
                .await
                .map_err(|e| e.to_string());
            for (_, done) in items {
                let _ = done.send(result.clone());
            }
        }
    }

    async fn submit(&self, collection: &str, items: &[PendingDelete]) -> Result<()> {
        let request = DeleteRequest {
            data_type: "delete".into(),
            submission_id: self.client.submission_id().await?,
            endpoint: collection.to_owned(),
            data: items
                .iter()
                .map(|(path, _)| DeleteItem {
                    data_type: "delete_item".into(),
                    path: path.clone(),
                })
                .collect(),
            label: Some(format!("{}-evict", crate::transfer::new_label())),
            deadline: None,
            recursive: None,
            ignore_missing: Some(true),
            interpret_globs: None,
            local_user: None,
            notify_on_succeeded: Some(false),
            notify_on_failed: Some(false),
            notify_on_inactive: Some(false),
        };
        self.client.submit_delete(&request).await.map(|_| ())
    }
}

/// Follows the Globus tasks of awaited batches: one `task_list` request per cycle for
/// all of them, whatever the number of readers.
struct Watcher {
    client: TransferClient,
    labels: Mutex<HashMap<String, (usize, Option<Task>)>>,
    changed: Notify,
    wake: Notify,
}

impl Watcher {
    fn start(client: TransferClient) -> Arc<Watcher> {
        let watcher = Arc::new(Watcher {
            client,
            labels: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            wake: Notify::new(),
        });
        crate::runtime::handle().spawn(poll_loop(Arc::downgrade(&watcher)));
        watcher
    }

    fn watch(self: &Arc<Self>, label: &str) -> WatchGuard {
        let new_label = {
            let mut labels = self.labels.lock().expect("watcher lock");
            let entry = labels.entry(label.to_owned()).or_insert((0, None));
            entry.0 += 1;
            entry.0 == 1
        };
        // Only a label nobody watched yet needs a poll now; more readers of the same
        // batch share its next one.
        if new_label {
            self.wake.notify_one();
        }
        WatchGuard {
            watcher: self.clone(),
            label: label.to_owned(),
        }
    }

    fn task(&self, label: &str) -> Option<Task> {
        self.labels
            .lock()
            .expect("watcher lock")
            .get(label)
            .and_then(|(_, t)| t.clone())
    }
}

struct WatchGuard {
    watcher: Arc<Watcher>,
    label: String,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let mut labels = self.watcher.labels.lock().expect("watcher lock");
        if let Some(entry) = labels.get_mut(&self.label) {
            entry.0 -= 1;
            if entry.0 == 0 {
                labels.remove(&self.label);
            }
        }
    }
}

async fn poll_loop(watcher: Weak<Watcher>) {
    let mut interval = Duration::from_millis(250);
    loop {
        let Some(w) = watcher.upgrade() else { return };
        let labels: Vec<String> = w
            .labels
            .lock()
            .expect("watcher lock")
            .iter()
            .filter(|(_, (_, task))| task.as_ref().is_none_or(|t| !is_final(&t.status)))
            .map(|(label, _)| label.clone())
            .collect();
        if labels.is_empty() {
            // Re-check now and then, so a dropped connector ends this loop.
            let _ = crate::runtime::timeout(Duration::from_secs(5), w.wake.notified()).await;
            continue;
        }
        let mut progressed = false;
        for chunk in labels.chunks(50) {
            let query = TaskQuery {
                filter: Some(format!("label:{}", chunk.join(","))),
                limit: Some(1000),
                ..Default::default()
            };
            match w.client.task_list(&query).await {
                Ok(page) => {
                    let mut map = w.labels.lock().expect("watcher lock");
                    for task in page.data {
                        if let Some(entry) = task.label.clone().and_then(|l| map.get_mut(&l)) {
                            progressed |= entry.1.as_ref().is_none_or(|old| {
                                old.status != task.status
                                    || old.bytes_transferred != task.bytes_transferred
                            });
                            entry.1 = Some(task);
                        }
                    }
                }
                Err(e) => tracing::warn!("following Globus tasks failed, will retry: {e}"),
            }
        }
        w.changed.notify_waiters();
        interval = if progressed {
            Duration::from_millis(250)
        } else {
            (interval * 3 / 2).min(Duration::from_secs(5))
        };
        let _ = crate::runtime::timeout(interval, w.wake.notified()).await;
    }
}

fn is_final(status: &str) -> bool {
    matches!(status, "SUCCEEDED" | "FAILED")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(regexes: &[(&str, Option<&str>)]) -> GlobusConfig {
        GlobusConfig {
            store_dir: "s".into(),
            sites: regexes
                .iter()
                .map(|(name, re)| {
                    (
                        name.to_string(),
                        SiteConfig {
                            collection: uuid::Uuid::nil(),
                            collection_path: "/".into(),
                            local_path: "/tmp".into(),
                            host_regex: re.map(str::to_owned),
                        },
                    )
                })
                .collect(),
            destinations: None,
            pull_on_demand: false,
            wait_timeout_s: None,
            transfer_url: None,
        }
    }

    #[test]
    fn the_current_site_comes_from_the_host_regex_or_a_clear_error() {
        // (PS_GLOBUS_SITE is not set where the tests run.)
        let found = config(&[("lab", Some("^no-such-host$")), ("hpc", Some("."))]);
        assert_eq!(found.current_site().unwrap(), "hpc");
        let none = config(&[("lab", Some("^no-such-host$")), ("hpc", None)]);
        let err = none.current_site().unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::UnknownSite { .. }), "{text}");
        assert!(text.contains("PS_GLOBUS_SITE"), "{text}");
        assert!(
            text.contains("lab (hosts matching ^no-such-host$)"),
            "{text}"
        );
        assert!(text.contains("hpc"), "{text}");
        let broken = config(&[("lab", Some("(unclosed"))]);
        assert!(matches!(
            broken.current_site(),
            Err(Error::InvalidConfig { .. })
        ));
    }

    #[test]
    fn paths_must_stay_inside_their_directory() {
        for bad in ["../x", "/etc/passwd", "a/../../b", "", "./x", "nul\0"] {
            assert!(check_relative(bad, "path").is_err(), "{bad:?}");
        }
        for good in ["x", "a/b", "dir.d/file-1"] {
            assert!(check_relative(good, "path").is_ok(), "{good:?}");
        }
    }
}

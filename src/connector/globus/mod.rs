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
//! **Evict.** At the site that put the object, `evict` removes it here and returns; its
//! copies at the destinations are deleted in the background, each after its transfer
//! ended, and evictions close together (concurrent, or one after another as ProxyStore's
//! `ContextLifetime` makes them) share one delete task. A failure there is logged and
//! returned by the next `close`.
//!
//! **Closing.** `put` returns before the batch is submitted; a producer that exits right
//! after its puts must call `Store::close` (or `Connector::close`) first, which submits
//! what is still batching (and waits for the deletion of evicted copies). Otherwise the
//! next process at that site with the same state directory resumes the puts.
//!
//! **Sites.** The current site is fixed by the builder, else `PS_GLOBUS_SITE`, else the
//! first site whose host regex matches the host name.
//!
//! **Files.** `config.rs` (the serializable configuration and key metadata), `builder.rs`
//! (building, process defaults), `stage.rs` (put: write, then enqueue the transfers),
//! `read.rs` (get: wait for the file, follow the task, verify), `verify.rs` (size and
//! sha256 checks, off the async workers for large files). The transfer machinery it
//! uses lives in [`crate::transfer`]: the manager, the [`Watcher`] readers wait on, and
//! the [`Deleter`] that batches evictions.

mod builder;
mod config;
mod deferred;
mod follow;
mod read;
mod stage;
mod verify;

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::OnceCell;

pub(crate) use builder::settings_default;
pub use builder::{GlobusConnectorBuilder, ProcessDefaults, set_process_defaults};
pub(crate) use config::{DEFAULT_WAIT, META_VERSION};
pub use config::{GlobusConfig, ObjectMeta};

use super::{Capabilities, Connector, ConnectorConfig, Key, Provenance, PutOptions, Settlement};
use crate::auth::Authorizer;
use crate::error::{Error, Result, Untrusted};
use crate::fsutil::ObjectDir;
use crate::settings::Settings;
use crate::state::StateDb;
use crate::transfer::budget::RequestBudget;
use crate::transfer::delete::Deleter;
use crate::transfer::watch::Watcher;
use crate::transfer::{
    HttpsCredentials, HttpsLane, ManagerConfig, TransferClient, TransferManager,
};
use config::check_relative;
use verify::sha256_hex;

/// The Globus connector (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct GlobusConnector {
    inner: Arc<Inner>,
}

struct Inner {
    config: GlobusConfig,
    /// This site's store directory, where puts write.
    objects: ObjectDir,
    site: String,
    authorizer: Option<Arc<dyn Authorizer>>,
    /// HTTPS credentials for every collection (default: per collection, from the
    /// settings: [`crate::auth::https_authorizer`]).
    https_authorizer: Option<Arc<dyn Authorizer>>,
    home: PathBuf,
    transfer_url: String,
    settings: Settings,
    manager_config: ManagerConfig,
    client: OnceCell<TransferClient>,
    db: OnceCell<StateDb>,
    manager: OnceCell<TransferManager>,
    watcher: OnceCell<Arc<Watcher>>,
    deleter: OnceCell<Arc<Deleter>>,
    lane: OnceCell<HttpsLane>,
    /// Local, or rebuilt from data: then it deletes only objects it minted, in a store
    /// directory this process trusts.
    provenance: Provenance,
    /// Set once this site's store directory carries the store marker.
    marked: std::sync::Once,
}

/// How long dropping the last handle waits for pending submissions.
const DROP_FLUSH_LIMIT: Duration = Duration::from_secs(30);

impl Drop for Inner {
    /// Puts return once enqueued: a connector dropped with transfers held back hands their
    /// submission to the library runtime, waits for it at most [`DROP_WAIT`] (it usually
    /// takes milliseconds, and then nothing of this store outlives the drop), and returns
    /// (it used to wait up to 30 s here). On a current-thread runtime it does not wait at
    /// all: its only worker must not block. The flush holds the manager until it is done;
    /// a process that exits first has the exit hook (`transfer/manager/exit.rs`), which
    /// submits what every running manager holds back and says what it could not.
    fn drop(&mut self) {
        let Some(manager) = self.manager.get().cloned() else {
            return;
        };
        let flush = crate::runtime::handle().spawn(async move {
            match crate::runtime::timeout(DROP_FLUSH_LIMIT, manager.flush()).await {
                Some(Ok(())) => {}
                Some(Err(e)) => tracing::warn!("submitting pending transfers at close: {e}"),
                None => tracing::warn!(
                    "pending transfers were not submitted within 30 s; the next run at this site resumes them"
                ),
            }
        });
        let on_current_thread_runtime = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
        if !on_current_thread_runtime {
            // Past the moment, the flush goes on in the background (a dropped handle
            // detaches the task, it does not cancel it).
            crate::runtime::block_on(crate::runtime::timeout(DROP_WAIT, flush));
        }
    }
}

/// How long dropping a connector waits for its flush before leaving it to the background.
const DROP_WAIT: Duration = Duration::from_secs(2);

impl std::fmt::Debug for GlobusConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlobusConnector")
            .field("site", &self.inner.site)
            .field("store_dir", &self.inner.config.store_dir)
            .finish()
    }
}

/// Objects at least this large are hashed on a second thread while they are written.
const HASH_BESIDE_WRITE: usize = 4 << 20;

impl GlobusConnector {
    /// The registry name of this kind.
    pub const KIND: &'static str = "globus";

    /// A builder for `config`.
    pub fn builder(config: GlobusConfig) -> GlobusConnectorBuilder {
        GlobusConnectorBuilder::new(config)
    }

    /// Rebuilds from a [`ConnectorConfig`] (the registry's builder); from data, its
    /// Transfer URL was already checked by [`trust::admit`](super::trust::admit).
    pub(crate) fn build(
        config: &ConnectorConfig,
        provenance: &Provenance,
    ) -> Result<Arc<dyn Connector>> {
        let config: GlobusConfig = config.options_as()?;
        Ok(Arc::new(
            Self::builder(config)
                .provenance(provenance.clone())
                .build()?,
        ))
    }

    /// Marks this site's store directory as the store's (once, after a local put created
    /// it): a process that rebuilds the store from a proxy may then delete here.
    pub(super) fn mark_store_dir(&self) {
        if self.inner.provenance.trust().is_none() {
            self.inner
                .marked
                .call_once(|| super::trust::mark_store_dir(&self.inner.objects.path()));
        }
    }

    /// Checks that this connector may change object `id` at this site (see
    /// [`trust::check_change`](super::trust::check_change)).
    fn check_change(&self, id: &str, path: &str, operation: &'static str) -> Result<()> {
        if self.inner.provenance.trust().is_some() && path != id {
            return Err(Error::from(Untrusted::new(
                "object path",
                path,
                format!(
                    "{operation} skipped: a store rebuilt from a proxy changes only the \
                     objects it minted, each at its id"
                ),
            )));
        }
        super::trust::check_change(
            &self.inner.provenance,
            Some(&self.inner.objects.path()),
            id,
            operation,
        )
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
                    None => crate::auth::default_authorizer(&self.inner.settings)?,
                };
                let client = TransferClient::with_base_url(&self.inner.transfer_url, auth)?;
                // Its own requests (deletes, a reader's look at skipped files) draw on the
                // database's budget too, as the manager's and the watcher's do.
                Ok(RequestBudget::gate(
                    client,
                    self.db().await?,
                    self.inner.manager_config.request_budget,
                ))
            })
            .await
    }

    /// The state database, opened once for the manager and the watcher.
    async fn db(&self) -> Result<&StateDb> {
        self.inner
            .db
            .get_or_try_init(|| async {
                StateDb::open_in(&self.inner.home, &self.inner.settings).await
            })
            .await
    }

    /// The transfer manager this connector's puts go through (started on first use):
    /// its batches, their items and their tasks.
    pub async fn transfer_manager(&self) -> Result<TransferManager> {
        self.manager().await.cloned()
    }

    async fn manager(&self) -> Result<&TransferManager> {
        self.inner
            .manager
            .get_or_try_init(|| async {
                let db = self.db().await?.clone();
                let config = self.inner.manager_config.clone();
                TransferManager::start(db, self.client().await?.clone(), config).await
            })
            .await
    }

    /// The readers' watcher, shared with every process of this state database.
    async fn watcher(&self) -> Result<&Arc<Watcher>> {
        let client = self.client().await?.clone();
        let db = self.db().await?.clone();
        let budget = self.inner.manager_config.request_budget;
        self.inner
            .watcher
            .get_or_try_init(|| async { Ok(Watcher::start_shared(client, db, budget)) })
            .await
    }

    /// This site's local path, below which its objects live, and `<it>/<store dir>/<path>`.
    /// Unchecked: for the reads whose verification checks the links right before reading.
    pub(crate) fn object_at_site(&self, path: &str) -> Result<(PathBuf, PathBuf)> {
        let (local, _) = self.paths(&self.inner.site, path)?;
        let root = self.inner.config.site(&self.inner.site)?.local_path.clone();
        Ok((root, local))
    }

    /// [`object_at_site`](Self::object_at_site), checked to pass through no symbolic link.
    pub(crate) fn local_object(&self, path: &str) -> Result<(PathBuf, PathBuf)> {
        let (root, local) = self.object_at_site(path)?;
        verify::refuse_links(&root, &local)?;
        Ok((root, local))
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
            return Err(Error::unsupported_version(
                "Globus object metadata",
                meta.v,
                META_VERSION,
            ));
        }
        check_relative(&meta.path, "object path")?;
        Ok(Some(meta))
    }

    /// The HTTPS lane of this connector's puts (and pulls), on its manager.
    async fn lane(&self) -> Result<&HttpsLane> {
        self.inner
            .lane
            .get_or_try_init(|| async {
                let manager = self.manager().await?.clone();
                let credentials: HttpsCredentials = match &self.inner.https_authorizer {
                    Some(auth) => {
                        let auth = Arc::clone(auth);
                        Arc::new(move |_, _| Ok(Arc::clone(&auth)))
                    }
                    None => {
                        let settings = self.inner.settings.clone();
                        Arc::new(move |collection, scopes| {
                            crate::auth::https_authorizer(&settings, collection, scopes)
                        })
                    }
                };
                Ok(HttpsLane::new(manager, credentials))
            })
            .await
    }

    async fn deleter(&self) -> Result<&Arc<Deleter>> {
        let client = self.client().await?.clone();
        self.inner
            .deleter
            .get_or_try_init(|| async { Ok(Arc::new(Deleter::new(client))) })
            .await
    }
}

#[async_trait]
impl Connector for GlobusConnector {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    fn config(&self) -> ConnectorConfig {
        ConnectorConfig::new(Self::KIND, &self.inner.config).expect("the config serializes")
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::in_memory()
            .outliving_instances()
            // A key carries the size, the sha256 and a label per destination.
            .with_max_key_len(600)
            .with_put_file()
            .with_resolve_path()
            .with_deferred_keys()
    }

    async fn put(&self, data: &[u8], options: &PutOptions) -> Result<Key> {
        let id = Key::new_id();
        self.check_change(&id, &id, "a put")?;
        // The store directory is opened once (checked for links on the way, created on
        // first use) and each put writes by name inside it.
        let write = || self.inner.objects.write_atomic(&id, data);
        // The caller's bytes are in memory and borrowed: they are hashed where they are.
        // A large object is hashed on a second thread while this one writes it: the put
        // then costs about the longer of the two, not their sum.
        let sha256 = if data.len() >= HASH_BESIDE_WRITE {
            std::thread::scope(|scope| {
                let hashing = scope.spawn(|| sha256_hex(data));
                let written = write();
                let sha256 = hashing.join().expect("hashing never panics");
                written.map(|()| sha256)
            })?
        } else {
            write()?;
            sha256_hex(data)
        };
        self.stage(id, data.len() as u64, sha256, options, Some(data))
            .await
    }

    async fn get(&self, key: &Key) -> Result<Option<Bytes>> {
        if key.is_deferred() {
            key.check_kind(Self::KIND)?;
            return self.get_deferred(key).await;
        }
        let Some(meta) = self.meta(key)? else {
            // A bare id names `<store dir>/<id>` here; nothing stored under it is "missing".
            let (_, local) = self.local_object(key.id())?;
            return match fs::read(&local) {
                Ok(bytes) => Ok(Some(bytes.into())),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::io("read", local, e)),
            };
        };
        // The waits and the read check the links themselves, right before each look.
        let (root, local) = self.object_at_site(&meta.path)?;
        if meta.source != self.inner.site
            && let Some(bytes) = self.wait_for(&meta, &root, &local, true).await?
        {
            return Ok(Some(bytes));
        }
        verify::read_verified(&root, &local, &meta).await
    }

    /// Waits for every object at once (each wait is on the shared watcher, so this costs
    /// no more requests than one), rather than one after another.
    async fn get_batch(&self, keys: &[Key]) -> Result<Vec<Option<Bytes>>> {
        futures_util::future::try_join_all(keys.iter().map(|key| self.get(key))).await
    }

    async fn put_file(&self, file: &Path, options: &PutOptions) -> Result<Key> {
        self.stage_file(file, options).await
    }

    async fn resolve_path(&self, key: &Key) -> Result<PathBuf> {
        if key.is_deferred() {
            key.check_kind(Self::KIND)?;
            return match self.get_deferred(key).await? {
                Some(_) => Ok(self.object_at_site(key.id())?.1),
                None => Err(Error::not_found(
                    &self.inner.config.store_dir,
                    key,
                    "the future is not set (or not here) yet",
                )),
            };
        }
        self.verified_path(key).await
    }

    fn new_key(&self, options: &PutOptions) -> Result<Key> {
        self.new_deferred_key(options)
    }

    async fn settle(&self, key: &Key, settlement: Settlement<'_>) -> Result<()> {
        self.settle_here_and_send(key, settlement).await
    }

    /// The site objects are put at: a process there evicts every copy.
    fn reach(&self) -> super::Reach {
        super::Reach::site(self.inner.site.clone())
    }

    /// Submits every transfer still waiting in an open batch, and waits for the HTTPS
    /// requests on their way (each delivered, or handed to Transfer and submitted), so
    /// that a producer that exits right after its puts does not leave them for its next
    /// run. (Dropping the last handle does the same, best effort.)
    async fn close(&self) -> Result<()> {
        if let Some(manager) = self.inner.manager.get() {
            manager.flush().await?;
        }
        Ok(())
    }

    async fn exists(&self, key: &Key) -> Result<bool> {
        if key.is_deferred() {
            key.check_kind(Self::KIND)?;
            return match self.get_deferred(key).await {
                Ok(found) => Ok(found.is_some()),
                // Evicted: a tombstone, not an object.
                Err(Error::NotFound(_)) => Ok(false),
                Err(e) => Err(e),
            };
        }
        let path = match self.meta(key)? {
            Some(meta) => meta.path,
            None => key.id().to_owned(),
        };
        let (_, local) = self.local_object(&path)?;
        Ok(local.exists())
    }

    async fn evict(&self, key: &Key) -> Result<()> {
        if key.is_deferred() {
            key.check_kind(Self::KIND)?;
            return self.evict_deferred(key).await;
        }
        let meta = self.meta(key)?;
        let path = meta.as_ref().map_or(key.id(), |m| m.path.as_str());
        self.check_change(key.id(), path, "an eviction")?;
        let (root, local) = self.object_at_site(path)?;
        // A link where the object should be is removed (not what it points to); a link
        // on the way there would make the removal hit a file outside the store.
        verify::refuse_links(&root, local.parent().unwrap_or(&root))?;
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
/// The options of every transfer this connector enqueues: its keys (and a reader's own
/// wait) find the Globus task by the batch's label, so the batch keeps it.
fn labelled_batches() -> crate::transfer::BatchOptions {
    crate::transfer::BatchOptions {
        keep_label: true,
        ..Default::default()
    }
}

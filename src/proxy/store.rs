//! `Store`: a named connector with a codec, a cache of decoded objects and metrics.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::cache::Cache;
use super::lazy::{Proxy, ProxyOptions};
use super::metrics::{Metrics, MetricsSnapshot};
use super::{Codec, registry};
use crate::connector::{Connector, ConnectorConfig, Key, PutOptions};
use crate::error::{Error, Result};
use crate::runtime::{self, block_on};

/// The largest cache a store rebuilt from data keeps (objects).
const MAX_DATA_CACHE: usize = 4096;

/// The newest store-config format this build writes and reads.
pub(crate) const STORE_CONFIG_VERSION: u16 = 1;

/// Everything needed to rebuild a [`Store`] in another process.
///
/// It travels inside every serialized proxy. Two stores are the same store when their
/// configs are equal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StoreConfig {
    /// Format version of this config.
    #[serde(rename = "v")]
    pub version: u16,
    /// The store's name, unique within a process.
    pub name: String,
    /// The connector to rebuild.
    pub connector: ConnectorConfig,
    /// How values become bytes.
    #[serde(default)]
    pub codec: Codec,
    /// How many decoded objects to cache (0: no cache).
    #[serde(default)]
    pub cache_size: usize,
    /// Give up resolving a key after this long (`None`: wait as long as the connector does).
    #[serde(
        default,
        with = "optional_millis",
        skip_serializing_if = "Option::is_none"
    )]
    pub resolve_timeout: Option<Duration>,
}

impl StoreConfig {
    /// Bounds the numbers of a config from data: a cache of at most 4096 objects, a time
    /// limit of at most a day (so a deadline never overflows). Pure: the trust boundary's
    /// fuzz target runs it.
    pub(crate) fn bound_numbers(&mut self) {
        self.cache_size = self.cache_size.min(MAX_DATA_CACHE);
        self.resolve_timeout = self
            .resolve_timeout
            .map(|t| t.min(crate::connector::trust::MAX_DATA_TIMEOUT));
    }
}

mod optional_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// Anything a [`Store`] can be built on: a connector, or a shared one.
pub trait IntoConnector {
    /// The connector as a shared trait object.
    fn into_connector(self) -> Arc<dyn Connector>;
}

impl<C: Connector + 'static> IntoConnector for C {
    fn into_connector(self) -> Arc<dyn Connector> {
        Arc::new(self)
    }
}

impl IntoConnector for Arc<dyn Connector> {
    fn into_connector(self) -> Arc<dyn Connector> {
        self
    }
}

/// A named object store: a [`Connector`] plus a [`Codec`], a cache of decoded objects
/// and [metrics](MetricsSnapshot). Cheap to clone (clones share everything).
///
/// Every operation has a synchronous form (`put`, `get`, ...) for plain code and an
/// `*_async` form for async code. The synchronous forms may be called anywhere, even from
/// inside a tokio runtime (see [`block_on`](crate::block_on)).
///
/// A store is registered in the process-wide registry under its name when built, so that
/// proxies deserialized in this process find it instead of building a second one.
///
/// ```
/// use ps_globus::{Store, connector::FileConnector};
/// let dir = tempfile::tempdir()?;
/// let store = Store::builder("doc-store", FileConnector::new(dir.path())?).cache_size(16).build()?;
///
/// let key = store.put(&vec![1.0f64, 2.0, 3.0])?;
/// let back = store.get::<Vec<f64>>(&key)?.expect("just stored");
/// assert_eq!(*back, vec![1.0, 2.0, 3.0]);
///
/// let proxy = store.proxy(&String::from("hello"))?;
/// assert_eq!(proxy.len(), 5); // resolved here, on first use
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<StoreConfig>,
    connector: Arc<dyn Connector>,
    cache: Cache,
    metrics: Metrics,
}

/// Builds a [`Store`]; from [`Store::builder`].
#[must_use]
pub struct StoreBuilder {
    name: String,
    connector: Arc<dyn Connector>,
    codec: Codec,
    cache_size: usize,
    resolve_timeout: Option<Duration>,
    register: bool,
}

impl std::fmt::Debug for StoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreBuilder")
            .field("name", &self.name)
            .field("codec", &self.codec)
            .field("cache_size", &self.cache_size)
            .finish_non_exhaustive()
    }
}

impl StoreBuilder {
    /// The codec for typed values (default MessagePack).
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// How many decoded objects to keep (default 0: no cache).
    pub fn cache_size(mut self, size: usize) -> Self {
        self.cache_size = size;
        self
    }

    /// Fail a get or a proxy resolution that takes longer than `timeout`.
    pub fn resolve_timeout(mut self, timeout: Duration) -> Self {
        self.resolve_timeout = Some(timeout);
        self
    }

    /// Whether to register the store in the process-wide registry (default true).
    pub fn register(mut self, register: bool) -> Self {
        self.register = register;
        self
    }

    /// Builds the store; fails with [`Error::Conflict`](crate::Error::Conflict) if another store of the same
    /// name but a different configuration is registered.
    pub fn build(self) -> Result<Store> {
        let config = StoreConfig {
            version: STORE_CONFIG_VERSION,
            name: self.name,
            connector: self.connector.config(),
            codec: self.codec,
            cache_size: self.cache_size,
            resolve_timeout: self.resolve_timeout,
        };
        let store = Store::assemble(config, self.connector);
        if self.register {
            return registry::register_store(&store);
        }
        Ok(store)
    }
}

impl Store {
    /// Starts building a store called `name` on `connector`.
    pub fn builder(name: impl Into<String>, connector: impl IntoConnector) -> StoreBuilder {
        StoreBuilder {
            name: name.into(),
            connector: connector.into_connector(),
            codec: Codec::default(),
            cache_size: 0,
            resolve_timeout: None,
            register: true,
        }
    }

    /// A registered store called `name` on `connector` with default settings.
    pub fn new(name: impl Into<String>, connector: impl IntoConnector) -> Result<Store> {
        Store::builder(name, connector).build()
    }

    /// Builds an unregistered store from `config` **as data from elsewhere** (a proxy's),
    /// rebuilding its connector with [`ConnectorConfig::build`]: its bindings are checked
    /// against this process's configuration, and its numbers bounded
    /// (`docs/THREAT-MODEL.md`).
    ///
    /// To share one instance per config in a process, use
    /// [`get_or_create_store`](crate::get_or_create_store) instead.
    pub fn from_config(mut config: StoreConfig) -> Result<Store> {
        if config.version == 0 || config.version > STORE_CONFIG_VERSION {
            return Err(Error::unsupported_version(
                "store config",
                config.version,
                STORE_CONFIG_VERSION,
            ));
        }
        let connector = config.connector.build()?;
        config.bound_numbers();
        Ok(Store::assemble(config, connector))
    }

    fn assemble(config: StoreConfig, connector: Arc<dyn Connector>) -> Store {
        Store {
            inner: Arc::new(Inner {
                cache: Cache::new(config.cache_size),
                config: Arc::new(config),
                connector,
                metrics: Metrics::default(),
            }),
        }
    }

    /// The store's name.
    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    /// The config that rebuilds this store anywhere.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    pub(crate) fn config_arc(&self) -> &Arc<StoreConfig> {
        &self.inner.config
    }

    /// The connector under the store.
    pub fn connector(&self) -> &Arc<dyn Connector> {
        &self.inner.connector
    }

    /// A snapshot of the store's metrics.
    ///
    /// ```
    /// # use ps_globus::{Store, connector::LocalConnector};
    /// let store = Store::new("doc-metrics", LocalConnector::new())?;
    /// store.put(&42u64)?;
    /// assert_eq!(store.metrics().put.calls, 1);
    /// # Ok::<(), ps_globus::Error>(())
    /// ```
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics.snapshot()
    }

    /// Whether two handles are the same store instance.
    pub fn ptr_eq(&self, other: &Store) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    pub(crate) fn codec(&self) -> Codec {
        self.inner.config.codec
    }

    // ---- async API -------------------------------------------------------------------

    /// Stores `value` and returns its key.
    pub async fn put_async<T: Serialize + 'static>(&self, value: &T) -> Result<Key> {
        self.put_with_async(value, &PutOptions::default()).await
    }

    /// Stores `value` with per-put `options` and returns its key.
    pub async fn put_with_async<T: Serialize + 'static>(
        &self,
        value: &T,
        options: &PutOptions,
    ) -> Result<Key> {
        let start = Instant::now();
        let result = async {
            let bytes = self.codec().encode(value)?;
            let key = self.inner.connector.put(&bytes, options).await?;
            Ok((key, bytes.len() as u64))
        }
        .await;
        let bytes = result.as_ref().map_or(0, |(_, n)| *n);
        self.inner
            .metrics
            .put
            .record(start, 1, bytes, result.is_ok());
        result.map(|(key, _)| key)
    }

    /// The object `key` names, decoded as `T`, or `None` if it does not exist.
    ///
    /// Served from the cache when enabled and present (no read, no decode). Fails with
    /// [`Error::Timeout`] past the store's resolve timeout. A future's key (see
    /// [`Store::future`]) is waited for until it is set.
    pub async fn get_async<T>(&self, key: &Key) -> Result<Option<Arc<T>>>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        let start = Instant::now();
        let cache = &self.inner.cache;
        if let Some(hit) = cache.get::<T>(key.id()) {
            self.inner.metrics.cache_hits.fetch_add(1, Relaxed);
            self.inner.metrics.get.record(start, 1, 0, true);
            return Ok(Some(hit));
        }
        if cache.is_enabled() {
            self.inner.metrics.cache_misses.fetch_add(1, Relaxed);
        }
        let result = async {
            let bytes = if key.is_deferred() {
                self.wait_for_future(key).await?
            } else {
                self.with_timeout(key, self.inner.connector.get(key))
                    .await?
            };
            let len = bytes.as_ref().map_or(0, |b| b.len() as u64);
            let value = bytes.map(|b| self.decode::<T>(key, b)).transpose()?;
            if let Some(value) = &value {
                cache.insert(key.id(), Arc::clone(value));
            }
            Ok((value, len))
        }
        .await;
        let bytes = result.as_ref().map_or(0, |(_, n)| *n);
        self.inner
            .metrics
            .get
            .record(start, 1, bytes, result.is_ok());
        result.map(|(value, _)| value)
    }

    /// Stores the file at `path` as a raw-bytes object (read back as `Vec<u8>` or
    /// `Bytes`). Connectors that keep files (Globus) stage it without reading it into
    /// memory.
    pub async fn put_file_async(&self, path: &std::path::Path) -> Result<Key> {
        self.inner
            .connector
            .put_file(path, &PutOptions::default())
            .await
    }

    /// Blocking [`put_file_async`](Self::put_file_async).
    pub fn put_file(&self, path: &std::path::Path) -> Result<Key> {
        block_on(self.put_file_async(path))
    }

    /// The verified local file holding `key` at this site (waiting for it if it is on
    /// its way), for data too large to decode into memory.
    pub async fn resolve_path_async(&self, key: &Key) -> Result<std::path::PathBuf> {
        self.inner.connector.resolve_path(key).await
    }

    /// Blocking [`resolve_path_async`](Self::resolve_path_async).
    pub fn resolve_path(&self, key: &Key) -> Result<std::path::PathBuf> {
        block_on(self.resolve_path_async(key))
    }

    /// Whether the object `key` names exists.
    pub async fn exists_async(&self, key: &Key) -> Result<bool> {
        let start = Instant::now();
        let result = self.inner.connector.exists(key).await;
        self.inner
            .metrics
            .exists
            .record(start, 1, 0, result.is_ok());
        result
    }

    /// Removes the object `key` names (and its cached copy); a missing one is fine.
    pub async fn evict_async(&self, key: &Key) -> Result<()> {
        let start = Instant::now();
        self.inner.cache.remove(key.id());
        let result = self.inner.connector.evict(key).await;
        self.inner.metrics.evict.record(start, 1, 0, result.is_ok());
        result
    }

    /// Stores many values; keys come back in the order of `values`.
    pub async fn put_batch_async<T: Serialize + 'static>(
        &self,
        values: &[T],
        options: &PutOptions,
    ) -> Result<Vec<Key>> {
        let start = Instant::now();
        let result = async {
            let encoded = values
                .iter()
                .map(|v| self.codec().encode(v))
                .collect::<Result<Vec<_>>>()?;
            let slices: Vec<&[u8]> = encoded.iter().map(|b| &b[..]).collect();
            let keys = self.inner.connector.put_batch(&slices, options).await?;
            Ok((keys, slices.iter().map(|s| s.len() as u64).sum()))
        }
        .await;
        let bytes = result.as_ref().map_or(0, |(_, n)| *n);
        let objects = values.len() as u64;
        (self.inner.metrics.put_batch).record(start, objects, bytes, result.is_ok());
        result.map(|(keys, _)| keys)
    }

    /// Gets many objects; results come back in the order of `keys`. Cached objects are
    /// served from the cache; the rest are read with one connector batch call.
    pub async fn get_batch_async<T>(&self, keys: &[Key]) -> Result<Vec<Option<Arc<T>>>>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        let start = Instant::now();
        let cache = &self.inner.cache;
        let mut values: Vec<Option<Arc<T>>> = keys.iter().map(|k| cache.get(k.id())).collect();
        let hits = values.iter().filter(|v| v.is_some()).count() as u64;
        self.inner.metrics.cache_hits.fetch_add(hits, Relaxed);
        let missing: Vec<usize> = (0..keys.len()).filter(|&i| values[i].is_none()).collect();
        if cache.is_enabled() {
            (self.inner.metrics.cache_misses).fetch_add(missing.len() as u64, Relaxed);
        }
        let result = async {
            if missing.is_empty() {
                return Ok(0);
            }
            let wanted: Vec<Key> = missing.iter().map(|&i| keys[i].clone()).collect();
            let fetch = self.inner.connector.get_batch(&wanted);
            let fetched = self.with_timeout(&wanted[0], fetch).await?;
            let mut total = 0;
            for (i, bytes) in missing.iter().zip(fetched) {
                if let Some(bytes) = bytes {
                    total += bytes.len() as u64;
                    let value = self.decode::<T>(&keys[*i], bytes)?;
                    cache.insert(keys[*i].id(), Arc::clone(&value));
                    values[*i] = Some(value);
                }
            }
            Ok(total)
        }
        .await;
        let objects = keys.len() as u64;
        let bytes = *result.as_ref().unwrap_or(&0);
        (self.inner.metrics.get_batch).record(start, objects, bytes, result.is_ok());
        result.map(|_| values)
    }

    /// Stores `value` and returns a proxy that resolves to it.
    pub async fn proxy_async<T>(&self, value: &T) -> Result<Proxy<T>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        self.proxy_with_async(value, &ProxyOptions::default()).await
    }

    /// Stores `value` and returns a proxy with `options` (e.g. evict after resolving).
    pub async fn proxy_with_async<T>(&self, value: &T, options: &ProxyOptions) -> Result<Proxy<T>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let key = self.put_with_async(value, &options.put).await?;
        Ok(self.proxy_from_key_with(key, options))
    }

    /// Stores many values (one connector batch call) and returns their proxies, in order.
    pub async fn proxy_batch_async<T>(
        &self,
        values: &[T],
        options: &ProxyOptions,
    ) -> Result<Vec<Proxy<T>>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let keys = self.put_batch_async(values, &options.put).await?;
        Ok(keys
            .into_iter()
            .map(|key| self.proxy_from_key_with(key, options))
            .collect())
    }

    /// Closes the connector and removes the store from the registry. Stored objects stay.
    pub async fn close_async(&self) -> Result<()> {
        registry::unregister_if_same(self);
        self.inner.connector.close().await
    }

    // ---- proxies from keys (no I/O) ------------------------------------------------

    /// A proxy for an object already stored under `key`. No I/O happens until it is used.
    pub fn proxy_from_key<T>(&self, key: Key) -> Proxy<T>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        self.proxy_from_key_with(key, &ProxyOptions::default())
    }

    /// [`proxy_from_key`](Self::proxy_from_key) with `options`.
    pub fn proxy_from_key_with<T>(&self, key: Key, options: &ProxyOptions) -> Proxy<T>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        Proxy::from_store(self.clone(), key, options.evict)
    }

    // ---- sync API: the async forms, run with block_on --------------------------------

    /// Synchronous [`put_async`](Self::put_async).
    pub fn put<T: Serialize + 'static>(&self, value: &T) -> Result<Key> {
        block_on(self.put_async(value))
    }

    /// Synchronous [`put_with_async`](Self::put_with_async).
    pub fn put_with<T: Serialize + 'static>(&self, value: &T, options: &PutOptions) -> Result<Key> {
        block_on(self.put_with_async(value, options))
    }

    /// Synchronous [`get_async`](Self::get_async).
    pub fn get<T: DeserializeOwned + Send + Sync + 'static>(
        &self,
        key: &Key,
    ) -> Result<Option<Arc<T>>> {
        block_on(self.get_async(key))
    }

    /// Synchronous [`exists_async`](Self::exists_async).
    pub fn exists(&self, key: &Key) -> Result<bool> {
        block_on(self.exists_async(key))
    }

    /// Synchronous [`evict_async`](Self::evict_async).
    pub fn evict(&self, key: &Key) -> Result<()> {
        block_on(self.evict_async(key))
    }

    /// Synchronous [`put_batch_async`](Self::put_batch_async).
    pub fn put_batch<T: Serialize + 'static>(
        &self,
        values: &[T],
        options: &PutOptions,
    ) -> Result<Vec<Key>> {
        block_on(self.put_batch_async(values, options))
    }

    /// Synchronous [`get_batch_async`](Self::get_batch_async).
    pub fn get_batch<T: DeserializeOwned + Send + Sync + 'static>(
        &self,
        keys: &[Key],
    ) -> Result<Vec<Option<Arc<T>>>> {
        block_on(self.get_batch_async(keys))
    }

    /// Synchronous [`proxy_async`](Self::proxy_async).
    pub fn proxy<T>(&self, value: &T) -> Result<Proxy<T>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        block_on(self.proxy_async(value))
    }

    /// Synchronous [`proxy_with_async`](Self::proxy_with_async).
    pub fn proxy_with<T>(&self, value: &T, options: &ProxyOptions) -> Result<Proxy<T>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        block_on(self.proxy_with_async(value, options))
    }

    /// Synchronous [`proxy_batch_async`](Self::proxy_batch_async).
    pub fn proxy_batch<T>(&self, values: &[T], options: &ProxyOptions) -> Result<Vec<Proxy<T>>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        block_on(self.proxy_batch_async(values, options))
    }

    /// Synchronous [`close_async`](Self::close_async).
    pub fn close(&self) -> Result<()> {
        block_on(self.close_async())
    }

    // ---- helpers ---------------------------------------------------------------------

    fn decode<T: DeserializeOwned + 'static>(&self, key: &Key, bytes: Bytes) -> Result<Arc<T>> {
        let codec = self.codec();
        codec
            .decode::<T>(bytes)
            .map(Arc::new)
            .map_err(|message| Error::decode(self.name(), &key, codec.name(), message))
    }

    /// A future's bytes, once set: polls the connector (a local look on file and Globus
    /// stores, one `GET` on Redis), more slowly as the wait goes on, until the store's
    /// resolve timeout (default: a day).
    async fn wait_for_future(&self, key: &Key) -> Result<Option<Bytes>> {
        let limit = self
            .inner
            .config
            .resolve_timeout
            .unwrap_or(crate::connector::DEFAULT_WAIT);
        let waiting = crate::waits::begin(
            format!("future {key} of store '{}' to be set", self.name()),
            limit,
            "its producer has not set it yet (is it still running? a producer that failed \
             abandons it, and this wait then ends at once)",
        );
        let look = || {
            waiting.tick();
            self.inner.connector.get(key)
        };
        match runtime::poll_until_found(limit, Duration::from_millis(200), look).await? {
            Some(bytes) => Ok(Some(bytes)),
            None => Err(Error::timeout(
                format!(
                    "future {key} of store '{}' to be set (is its producer still running?)",
                    self.name()
                ),
                limit,
            )),
        }
    }

    async fn with_timeout<V>(
        &self,
        key: &Key,
        future: impl Future<Output = Result<V>>,
    ) -> Result<V> {
        let Some(limit) = self.inner.config.resolve_timeout else {
            return future.await;
        };
        runtime::timeout(limit, future).await.unwrap_or_else(|| {
            Err(Error::timeout(
                format!("key {key} of store '{}' to resolve", self.name()),
                limit,
            ))
        })
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("name", &self.name())
            .field("connector", &self.inner.connector)
            .field("codec", &self.codec())
            .field("cache_size", &self.inner.config.cache_size)
            .finish()
    }
}

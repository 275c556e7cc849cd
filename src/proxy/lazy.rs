//! `Proxy<T>`: a lazy reference that becomes its object on first use.

use std::fmt;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};

use serde::de::{DeserializeOwned, Error as _};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;

use super::registry::get_or_create_store;
use super::store::{Store, StoreConfig};
use crate::connector::{Key, PutOptions};
use crate::error::{Error, Result, Untrusted};
use crate::runtime::{self, block_on};

/// The newest serialized-proxy format this build writes and reads.
pub(crate) const PROXY_VERSION: u16 = 1;

/// Options for proxies made by a [`Store`].
///
/// ```
/// let options = ps_globus::ProxyOptions::default().with_evict(true);
/// assert!(options.evict);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProxyOptions {
    /// Evict the object from the store once the proxy has resolved (a one-shot hand-off).
    pub evict: bool,
    /// Options for the put behind the proxy.
    pub put: PutOptions,
}

impl ProxyOptions {
    /// These options with evict-on-resolve set to `evict`.
    pub fn with_evict(mut self, evict: bool) -> Self {
        self.evict = evict;
        self
    }

    /// These options with `put` for the put behind the proxy.
    pub fn with_put(mut self, put: PutOptions) -> Self {
        self.put = put;
        self
    }
}

/// What a store-backed proxy serializes as: how to find its object, never the object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProxyFactory {
    /// Format version of the serialized proxy.
    #[serde(rename = "v")]
    pub version: u16,
    /// The store to rebuild (or find registered) where the proxy resolves.
    pub store: Arc<StoreConfig>,
    /// The object's key in that store.
    pub key: Key,
    /// Evict the object after the first resolve.
    #[serde(default)]
    pub evict: bool,
}

impl ProxyFactory {
    /// Parses a serialized proxy's JSON (as written by `serde_json::to_string(&proxy)`)
    /// and checks its format version.
    ///
    /// ```
    /// use ps_globus::proxy::ProxyFactory;
    /// let err = ProxyFactory::from_json("{\"v\": 1}").unwrap_err();
    /// assert!(matches!(err, ps_globus::Error::InvalidInput(_)));
    /// ```
    pub fn from_json(text: &str) -> Result<Self> {
        let factory: ProxyFactory = serde_json::from_str(text).map_err(Error::malformed_proxy)?;
        factory.check_version()?;
        Ok(factory)
    }

    fn check_version(&self) -> Result<()> {
        if self.version == 0 || self.version > PROXY_VERSION {
            return Err(Error::unsupported_version(
                "proxy",
                self.version,
                PROXY_VERSION,
            ));
        }
        Ok(())
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Fetch<T> = fn(Store, Key, bool) -> BoxFuture<Result<Arc<T>>>;

/// A lazy reference to a `T` that resolves on first use, in any process.
///
/// A proxy behaves as its object through [`Deref`]: `p.len()`, `&*p == &x`, and `&p`
/// where a `&T` is expected. The object is fetched (or built) the first time it is
/// needed and kept; later uses cost nothing.
///
/// A proxy made by a [`Store`] serializes as its *factory* (the store's config and the
/// object's key), a few hundred bytes whatever the object's size. Deserialized in
/// another process, it rebuilds the store from the config and fetches the object there.
/// A proxy made from a closure with [`Proxy::new`] works the same locally but cannot be
/// serialized.
///
/// ```
/// use ps_globus::Proxy;
/// let x = vec![1, 2, 3];
/// let p = Proxy::new(move || x.clone());
/// assert!(!p.is_resolved());
/// assert_eq!(p.len(), 3);
/// assert_eq!(p.iter().sum::<i32>(), 6);
/// assert!(p.is_resolved());
/// fn takes_a_slice(v: &[i32]) -> usize { v.len() }
/// assert_eq!(takes_a_slice(&p), 3);
/// ```
///
/// **Failure.** [`Deref`] cannot return an error, so a proxy that cannot resolve panics
/// there with a message naming the store, the key and the cause. Code that must handle
/// failure calls [`resolve`](Proxy::resolve) (or [`resolve_async`](Proxy::resolve_async))
/// first, which returns a `Result`.
///
/// **Async code.** `Deref` blocks the calling thread while the object is fetched. That is
/// fine in plain threads and on tokio multi-thread workers (the runtime moves its other
/// tasks away); on a tokio *current-thread* runtime it works, but stalls every other task
/// of that runtime until the object arrives. In async code, `p.resolve_async().await?`
/// first, then use `&*p` freely.
///
/// **Clones** are the same proxy: they share the factory, one fetch, and once resolved
/// the value (an `evict` proxy is still fetched, and evicted, once).
pub struct Proxy<T> {
    state: Arc<State<T>>,
}

impl<T> Clone for Proxy<T> {
    fn clone(&self) -> Self {
        Proxy {
            state: Arc::clone(&self.state),
        }
    }
}

/// What every clone of a proxy shares.
struct State<T> {
    cell: OnceCell<Arc<T>>,
    source: Source<T>,
    prefetch: Mutex<Option<JoinHandle<Result<Arc<T>>>>>,
}

impl<T> State<T> {
    fn proxy(source: Source<T>) -> Proxy<T> {
        Proxy {
            state: Arc::new(State {
                cell: OnceCell::new(),
                source,
                prefetch: Mutex::new(None),
            }),
        }
    }
}

enum Source<T> {
    Closure(Mutex<Option<Box<dyn FnOnce() -> T + Send>>>),
    Store(StoreSource<T>),
}

struct StoreSource<T> {
    factory: ProxyFactory,
    /// The live store: known at once for proxies made here, looked up on first resolve
    /// for deserialized ones.
    store: OnceLock<Store>,
    /// Fetches and decodes the object; a function pointer chosen where `T`'s serde bounds
    /// are known, so that `Deref` itself needs no bounds on `T`.
    fetch: Fetch<T>,
}

impl<T> StoreSource<T> {
    fn store(&self) -> Result<Store> {
        if let Some(store) = self.store.get() {
            return Ok(store.clone());
        }
        let store = get_or_create_store(&self.factory.store)?;
        Ok(self.store.get_or_init(|| store).clone())
    }
}

fn fetch<T>(store: Store, key: Key, evict: bool) -> BoxFuture<Result<Arc<T>>>
where
    T: DeserializeOwned + Send + Sync + 'static,
{
    Box::pin(async move {
        let value = store.get_async::<T>(&key).await?.ok_or_else(|| {
            Error::not_found(store.name(), &key, store.connector().not_found_hint())
        })?;
        if evict {
            match store.evict_async(&key).await {
                // A proxy from elsewhere asked to delete what this process may not: the
                // value is still the caller's; the deletion is skipped and reported.
                Err(e) if e.is::<Untrusted>() => {
                    tracing::warn!("evict-on-resolve of {key} skipped: {e}")
                }
                other => other?,
            }
        }
        Ok(value)
    })
}

impl<T> Proxy<T> {
    /// A proxy whose object is made by `factory` on first use.
    pub fn new(factory: impl FnOnce() -> T + Send + 'static) -> Self {
        State::proxy(Source::Closure(Mutex::new(Some(Box::new(factory)))))
    }

    /// Whether the object has been fetched (or built) already.
    pub fn is_resolved(&self) -> bool {
        self.state.cell.initialized()
    }

    /// The object, fetching it now if needed. Blocks; see the type's docs for async code.
    pub fn resolve(&self) -> Result<&T> {
        if let Some(value) = self.state.cell.get() {
            return Ok(value);
        }
        block_on(self.resolve_async())
    }

    /// The object, fetching it now if needed, without blocking a thread.
    ///
    /// Concurrent calls (sync or async) fetch once; the others wait for that fetch.
    pub async fn resolve_async(&self) -> Result<&T> {
        let value = self.state.cell.get_or_try_init(|| self.load()).await?;
        Ok(value)
    }

    /// The object as a shared pointer, resolving first. Cheap when the object is also in
    /// the store's cache.
    pub fn into_shared(self) -> Result<Arc<T>> {
        self.resolve()?;
        Ok(Arc::clone(self.state.cell.get().expect("resolved above")))
    }

    /// The object itself, resolving first. Clones only if the store's cache, or another
    /// clone of this proxy, still shares it.
    pub fn into_inner(self) -> Result<T>
    where
        T: Clone,
    {
        Ok(Arc::unwrap_or_clone(self.into_shared()?))
    }

    /// The key of a store-backed proxy (`None` for a closure proxy).
    pub fn key(&self) -> Option<&Key> {
        self.factory().map(|f| &f.key)
    }

    /// What a store-backed proxy serializes as (`None` for a closure proxy).
    pub fn factory(&self) -> Option<&ProxyFactory> {
        match &self.state.source {
            Source::Store(source) => Some(&source.factory),
            Source::Closure(_) => None,
        }
    }

    /// The store a store-backed proxy's object is in (found or built from its config);
    /// [`Error::not_serializable()`] for a closure proxy, which has none.
    pub(crate) fn store(&self) -> Result<Store> {
        match &self.state.source {
            Source::Store(source) => source.store(),
            Source::Closure(_) => Err(Error::not_serializable()),
        }
    }

    async fn load(&self) -> Result<Arc<T>> {
        let prefetch = self.state.prefetch.lock().expect("proxy poisoned").take();
        if let Some(handle) = prefetch {
            return handle
                .await
                .map_err(|e| Error::background("background resolve", Some(e.into())))?;
        }
        match &self.state.source {
            Source::Closure(factory) => {
                let factory = factory.lock().expect("proxy poisoned").take();
                factory
                    .map(|f| Arc::new(f()))
                    .ok_or(Error::factory_consumed())
            }
            Source::Store(source) => {
                let store = source.store()?;
                (source.fetch)(store, source.factory.key.clone(), source.factory.evict).await
            }
        }
    }

    /// The panic message for a failed `Deref`.
    fn failure_message(&self, error: &Error) -> String {
        match self.factory() {
            Some(f) => format!(
                "ps-globus: cannot resolve proxy (store '{}', key {}): {error}. \
                 Call Proxy::resolve() first to handle this error without a panic.",
                f.store.name, f.key
            ),
            None => format!("ps-globus: cannot resolve closure proxy: {error}"),
        }
    }
}

impl<T: DeserializeOwned + Send + Sync + 'static> Proxy<T> {
    pub(crate) fn from_store(store: Store, key: Key, evict: bool) -> Self {
        let factory = ProxyFactory {
            version: PROXY_VERSION,
            store: Arc::clone(store.config_arc()),
            key,
            evict,
        };
        Self::from_source(factory, OnceLock::from(store))
    }

    /// A proxy from its factory, as deserialization makes it. Nothing is fetched until use.
    pub fn from_factory(factory: ProxyFactory) -> Result<Self> {
        factory.check_version()?;
        Ok(Self::from_source(factory, OnceLock::new()))
    }

    fn from_source(factory: ProxyFactory, store: OnceLock<Store>) -> Self {
        State::proxy(Source::Store(StoreSource {
            factory,
            store,
            fetch: fetch::<T>,
        }))
    }

    /// Starts fetching the object in the background and returns at once, so that a later
    /// use finds it ready (ProxyStore's `resolve_async`). Errors surface at that use.
    ///
    /// ```
    /// # use ps_globus::{Store, connector::LocalConnector};
    /// # let store = Store::new("doc-prefetch", LocalConnector::new())?;
    /// let p = store.proxy(&vec![1u32, 2, 3])?;
    /// p.prefetch();
    /// // ... other work ...
    /// assert_eq!(p[2], 3);
    /// # Ok::<(), ps_globus::Error>(())
    /// ```
    pub fn prefetch(&self) {
        if self.is_resolved() {
            return;
        }
        let Source::Store(source) = &self.state.source else {
            return; // a closure is cheap to run when used, and is not 'static-shareable
        };
        let mut slot = self.state.prefetch.lock().expect("proxy poisoned");
        if slot.is_some() {
            return;
        }
        let (key, evict, fetch) = (
            source.factory.key.clone(),
            source.factory.evict,
            source.fetch,
        );
        let store = source.store();
        *slot = Some(runtime::handle().spawn(async move { fetch(store?, key, evict).await }));
    }
}

impl<T> Deref for Proxy<T> {
    type Target = T;

    /// The object, resolving it on first use.
    ///
    /// # Panics
    /// If the object cannot be resolved; the message names the store, the key and the
    /// cause. Use [`Proxy::resolve`] to get a `Result` instead.
    fn deref(&self) -> &T {
        match self.resolve() {
            Ok(value) => value,
            Err(error) => panic!("{}", self.failure_message(&error)),
        }
    }
}

impl<T> AsRef<T> for Proxy<T> {
    fn as_ref(&self) -> &T {
        self
    }
}

impl<T> fmt::Debug for Proxy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("Proxy");
        if let Some(factory) = self.factory() {
            out.field("store", &factory.store.name)
                .field("key", &factory.key.to_string());
        } else {
            out.field("source", &"closure");
        }
        out.field("resolved", &self.is_resolved()).finish()
    }
}

impl<T> Serialize for Proxy<T> {
    /// Serializes the factory (store config + key), never the object. A closure proxy
    /// fails (an [`Error::InvalidInput`](crate::Error::InvalidInput) message: only
    /// store-backed proxies travel).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.factory() {
            Some(factory) => factory.serialize(serializer),
            None => Err(S::Error::custom(Error::not_serializable())),
        }
    }
}

impl<'de, T: DeserializeOwned + Send + Sync + 'static> Deserialize<'de> for Proxy<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let factory = ProxyFactory::deserialize(deserializer)?;
        Proxy::from_factory(factory).map_err(D::Error::custom)
    }
}

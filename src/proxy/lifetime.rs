//! `Lifetime`: a group of stored objects evicted together when the lifetime ends.
//!
//! A scope ([`Store::lifetime`]) or a guard ([`Lifetime::new`], ended by
//! [`Lifetime::end`] or by dropping it) collects the objects stored through it (or
//! attached with [`Lifetime::attach`]) and evicts every one of them at its end, all at once
//! (on a Globus store the evictions share delete tasks, as [`Store::evict`] does). The
//! proxies it hands out are plain proxies: they may travel to other processes, and resolve
//! there until the lifetime ends.
//!
//! A store's *static* lifetime ([`Store::static_lifetime`]) ends when the process exits
//! normally: an exit hook evicts its objects (after submitting held-back transfers, so an
//! eviction never waits on one that would never start). A crash, `abort` or `kill -9`
//! skips the hook and leaves the objects. A forked child has static lifetimes of its own,
//! and never evicts its parent's.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::lazy::{Proxy, ProxyOptions};
use super::store::Store;
use crate::connector::Key;
use crate::error::Result;
use crate::runtime::{self, block_on};

/// Objects of one store that are evicted together when the lifetime ends.
///
/// ```
/// use ps_globus::{Store, connector::LocalConnector};
/// let store = Store::new("doc-lifetime", LocalConnector::new())?;
/// let kept = store.put(&"outlives the scope")?;
/// let key = store.lifetime(|lt| -> Result<_, ps_globus::Error> {
///     let p = lt.proxy(&vec![0u8; 16])?;
///     assert_eq!(p.len(), 16);
///     Ok(p.key().cloned().unwrap())
/// })?;
/// assert!(!store.exists(&key)?);
/// assert!(store.exists(&kept)?);
/// # Ok::<(), ps_globus::Error>(())
/// ```
#[derive(Debug)]
pub struct Lifetime {
    store: Store,
    keys: Mutex<Vec<Key>>,
}

impl Lifetime {
    /// A lifetime of objects in `store`; it ends when [`end`](Self::end)ed or dropped.
    pub fn new(store: &Store) -> Self {
        Lifetime {
            store: store.clone(),
            keys: Mutex::new(Vec::new()),
        }
    }

    /// Stores `value` for this lifetime; a plain proxy of it.
    pub fn proxy<T>(&self, value: &T) -> Result<Proxy<T>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        self.proxy_with(value, &ProxyOptions::default())
    }

    /// [`proxy`](Self::proxy) with `options`.
    pub fn proxy_with<T>(&self, value: &T, options: &ProxyOptions) -> Result<Proxy<T>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let key = self.store.put_with(value, &options.put)?;
        self.attach(key.clone());
        Ok(self.store.proxy_from_key_with(key, options))
    }

    /// Stores `value` for this lifetime; its key.
    pub fn put<T: Serialize + 'static>(&self, value: &T) -> Result<Key> {
        let key = self.store.put(value)?;
        self.attach(key.clone());
        Ok(key)
    }

    /// Makes an object already stored in this lifetime's store part of it.
    pub fn attach(&self, key: Key) {
        self.keys.lock().expect("lifetime poisoned").push(key);
    }

    /// The keys of the objects this lifetime will evict.
    pub fn keys(&self) -> Vec<Key> {
        self.keys.lock().expect("lifetime poisoned").clone()
    }

    /// Ends the lifetime now: evicts every object (all at once), and reports the first
    /// failure after trying them all.
    pub fn end(self) -> Result<()> {
        block_on(self.evict_all())
    }

    /// Async [`end`](Self::end).
    pub async fn end_async(self) -> Result<()> {
        self.evict_all().await
    }

    async fn evict_all(&self) -> Result<()> {
        let keys = std::mem::take(&mut *self.keys.lock().expect("lifetime poisoned"));
        let results = join_all(keys.iter().map(|key| self.store.evict_async(key))).await;
        results.into_iter().collect()
    }
}

impl Drop for Lifetime {
    fn drop(&mut self) {
        if self.keys.lock().map(|k| k.is_empty()).unwrap_or(true) {
            return;
        }
        if let Err(e) = block_on(self.evict_all()) {
            tracing::warn!(
                "a lifetime of store '{}' could not evict: {e}",
                self.store.name()
            );
        }
    }
}

impl Store {
    /// Runs `scope` with a new [`Lifetime`] and evicts every object stored through it
    /// when `scope` returns, whether it succeeded or not. The scope's error comes first;
    /// then an eviction's. The scope's error type is the caller's choice (any type a
    /// ps-globus [`Error`](crate::Error) converts into).
    pub fn lifetime<R, E: From<crate::Error>>(
        &self,
        scope: impl FnOnce(&Lifetime) -> std::result::Result<R, E>,
    ) -> std::result::Result<R, E> {
        let lifetime = Lifetime::new(self);
        let result = scope(&lifetime);
        let ended = lifetime.end();
        let value = result?;
        ended?;
        Ok(value)
    }
}

/// How long the exit hook waits for the static lifetimes' evictions (and, first, for
/// held-back transfers to be submitted).
const EXIT_LIMIT: Duration = Duration::from_secs(10);

/// This process's static lifetimes, one per store.
fn static_lifetimes() -> &'static Mutex<Vec<Arc<Lifetime>>> {
    /// The slot's own type.
    struct StaticLifetimes(Mutex<Vec<Arc<Lifetime>>>);
    &crate::process::own(|| {
        install_exit_hook();
        StaticLifetimes(Mutex::default())
    })
    .0
}

/// Registers, once per process, the exit work that ends the static lifetimes.
fn install_exit_hook() {
    /// The slot's own type: the hook is registered.
    struct ExitHook;
    fn end_static_lifetimes() {
        let lifetimes = std::mem::take(&mut *static_lifetimes().lock().expect("poisoned"));
        if lifetimes.iter().all(|l| l.keys().is_empty()) {
            return;
        }
        block_on(async {
            // Held-back transfers first: an eviction waits for its object's transfer.
            let flushes = crate::transfer::TransferManager::running()
                .into_iter()
                .map(|m| async move { m.flush().await });
            let _ = runtime::timeout(EXIT_LIMIT, join_all(flushes)).await;
            let ends = lifetimes.iter().map(|l| l.evict_all());
            match runtime::timeout(EXIT_LIMIT, join_all(ends)).await {
                Some(results) if results.iter().all(Result::is_ok) => {}
                _ => eprintln!(
                    "ps-globus: objects of a static lifetime were not all evicted at exit"
                ),
            }
        })
    }
    crate::process::inherited(|| {
        runtime::at_exit(end_static_lifetimes);
        ExitHook
    });
}

impl Store {
    /// This store's static lifetime in this process: objects stored through it are
    /// evicted when the process exits normally (see the module docs). The same lifetime
    /// for every call with this store.
    ///
    /// ```
    /// use ps_globus::{Store, connector::LocalConnector};
    /// let store = Store::new("doc-static", LocalConnector::new())?;
    /// let key = store.static_lifetime().put(&"until this process exits")?;
    /// assert!(store.exists(&key)?);
    /// assert!(std::sync::Arc::ptr_eq(&store.static_lifetime(), &store.static_lifetime()));
    /// # Ok::<(), ps_globus::Error>(())
    /// ```
    pub fn static_lifetime(&self) -> Arc<Lifetime> {
        let mut all = static_lifetimes()
            .lock()
            .expect("static lifetimes poisoned");
        if let Some(found) = all.iter().find(|l| l.store.ptr_eq(self)) {
            return Arc::clone(found);
        }
        let lifetime = Arc::new(Lifetime::new(self));
        all.push(Arc::clone(&lifetime));
        lifetime
    }
}

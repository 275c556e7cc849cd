//! `OwnedProxy<T>`: a proxy that owns its object and evicts it when dropped.
//!
//! ProxyStore's ownership rules, in Rust's terms:
//! - An [`OwnedProxy`] is the one owner of its stored object. When it is dropped, the
//!   object is evicted (on a Globus store, the eviction joins the next delete task, as
//!   [`Store::evict`] does).
//! - [`OwnedProxy::borrow`] lends a `&Proxy<T>`: a plain proxy that never evicts, which the
//!   borrow checker keeps from outliving its owner in this process (ProxyStore's
//!   `RefProxy`). It may be serialized to another process like any proxy; the owner
//!   decides when the object goes.
//! - Serializing an owned proxy *moves* the ownership: the receiver deserializes an
//!   [`OwnedProxy`] that evicts when it drops, and the sender's copy no longer evicts.
//!   (Serializing it twice hands ownership to two receivers; the first to drop evicts.)
//! - [`Clone`] stores a new copy of the object with an owner of its own (ProxyStore's
//!   `clone` semantics); [`OwnedProxy::try_clone`] is the fallible form.
//! - [`OwnedProxy::into_proxy`] gives up ownership: the object then stays until something
//!   evicts it.
//!
//! Dropping waits for the eviction to be accepted: microseconds on a local or file store,
//! a round trip on Redis, and on a Globus store until its delete task is submitted (20 ms
//! when the object has arrived, up to a few seconds while its transfer is still running).
//! Where that matters, give up ownership with [`OwnedProxy::into_proxy`] and evict in a
//! [`Lifetime`](super::Lifetime) at a better moment.
//!
//! ProxyStore's `RefMutProxy` (an exclusive borrow that may write the object back) has no
//! counterpart: a stored object is immutable here, and `&mut` access to a proxy's value
//! would not reach other processes.

use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::lazy::{Proxy, ProxyFactory};
use super::store::Store;
use crate::error::Result;
use crate::runtime::block_on;

/// A proxy that owns its stored object: dropping it evicts the object.
///
/// ```
/// use ps_globus::{Store, connector::{Connector, LocalConnector}};
/// let store = Store::new("doc-owned", LocalConnector::new())?;
/// let owned = store.owned_proxy(&vec![1u8, 2, 3])?;
/// let key = owned.key().clone();
/// assert_eq!(owned.len(), 3);
/// drop(owned);
/// assert!(!store.exists(&key)?);
/// # Ok::<(), ps_globus::Error>(())
/// ```
pub struct OwnedProxy<T> {
    proxy: Proxy<T>,
    /// Whether dropping this value evicts the object (cleared once ownership moved).
    owns: AtomicBool,
}

impl<T> OwnedProxy<T> {
    /// The object's key.
    pub fn key(&self) -> &crate::connector::Key {
        self.proxy.key().expect("an owned proxy is store-backed")
    }

    /// A plain proxy of the object that never evicts it, valid while `self` lives.
    // ProxyStore's name (`borrow(proxy)`). `std::borrow::Borrow` would not do: its blanket
    // `Borrow<Self>` makes every `owned.borrow()` call need a type annotation.
    #[allow(clippy::should_implement_trait)]
    pub fn borrow(&self) -> &Proxy<T> {
        &self.proxy
    }

    /// Whether dropping this value will evict the object.
    pub fn is_owner(&self) -> bool {
        self.owns.load(Ordering::Acquire)
    }

    /// Gives up ownership: a plain proxy, and the object stays.
    pub fn into_proxy(self) -> Proxy<T> {
        self.owns.store(false, Ordering::Release);
        self.proxy.clone()
    }

    /// Evicts the object now (what dropping does), reporting a failure instead of
    /// logging it.
    pub fn evict(self) -> Result<()> {
        self.owns.store(false, Ordering::Release);
        let store = self.proxy.store()?;
        store.evict(self.key())
    }
}

impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> OwnedProxy<T> {
    pub(crate) fn new(proxy: Proxy<T>) -> Self {
        OwnedProxy {
            proxy,
            owns: AtomicBool::new(true),
        }
    }

    /// A new stored copy of the object, owned by the proxy returned.
    pub fn try_clone(&self) -> Result<Self> {
        let store = self.proxy.store()?;
        let value = self.proxy.resolve()?;
        store.owned_proxy(value)
    }
}

impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> Clone for OwnedProxy<T> {
    /// Stores a new copy of the object (see [`try_clone`](Self::try_clone)); panics, naming
    /// the store and key, if that fails, as `Deref` does.
    fn clone(&self) -> Self {
        self.try_clone().unwrap_or_else(|e| {
            panic!(
                "ps-globus: cannot clone owned proxy {}: {e}. Call try_clone() to handle \
                 this error without a panic.",
                self.key()
            )
        })
    }
}

impl<T> Drop for OwnedProxy<T> {
    fn drop(&mut self) {
        if !self.owns.swap(false, Ordering::AcqRel) {
            return;
        }
        let key = self.key().clone();
        let evicted = self
            .proxy
            .store()
            .and_then(|store| block_on(store.evict_async(&key)));
        if let Err(e) = evicted {
            tracing::warn!("an owned proxy could not evict {key} when dropped: {e}");
        }
    }
}

impl<T> Deref for OwnedProxy<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.proxy
    }
}

impl<T> fmt::Debug for OwnedProxy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedProxy")
            .field("proxy", &self.proxy)
            .field("owner", &self.is_owner())
            .finish()
    }
}

/// What an owned proxy serializes as: its factory, marked owned.
#[derive(Serialize, Deserialize)]
struct OwnedForm {
    owned: bool,
    #[serde(flatten)]
    factory: ProxyFactory,
}

impl<T> Serialize for OwnedProxy<T> {
    /// Moves the ownership into the serialized form: from now on this value does not
    /// evict the object, and whoever deserializes it does.
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let factory = self
            .proxy
            .factory()
            .expect("an owned proxy is store-backed");
        let form = OwnedForm {
            owned: true,
            factory: factory.clone(),
        };
        let out = form.serialize(serializer)?;
        self.owns.store(false, Ordering::Release);
        Ok(out)
    }
}

impl<'de, T: Serialize + DeserializeOwned + Send + Sync + 'static> Deserialize<'de>
    for OwnedProxy<T>
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let form = OwnedForm::deserialize(deserializer)?;
        if !form.owned {
            return Err(D::Error::custom(
                "this proxy does not carry ownership: deserialize it as a Proxy",
            ));
        }
        let proxy = Proxy::from_factory(form.factory).map_err(D::Error::custom)?;
        Ok(OwnedProxy::new(proxy))
    }
}

impl Store {
    /// Stores `value` and returns the proxy that owns it: dropping it evicts the object.
    pub fn owned_proxy<T>(&self, value: &T) -> Result<OwnedProxy<T>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        Ok(OwnedProxy::new(self.proxy(value)?))
    }

    /// Async [`owned_proxy`](Self::owned_proxy).
    pub async fn owned_proxy_async<T>(&self, value: &T) -> Result<OwnedProxy<T>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        Ok(OwnedProxy::new(self.proxy_async(value).await?))
    }
}

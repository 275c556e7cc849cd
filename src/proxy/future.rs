//! Futures: a proxy of an object that does not exist yet, and the setter that makes it.
//!
//! [`Store::future`] gives a [`Proxy<T>`] at once (send it to the consumer before the
//! producer has run) and a [`FutureSetter<T>`] for the producer. The consumer's resolve
//! waits until the value is set (on a Globus store, until it has arrived at the
//! consumer's site and verified), up to the store's resolve timeout (default: a day), then
//! fails with [`Error::Timeout`].
//!
//! The future's key is a *deferred* key ([`Connector::new_key`]): it cannot carry a size
//! and sha256 that do not exist yet, so `set` writes a small self-verifying manifest (the
//! object's size and sha256, and the manifest's own checksum) that travels with the
//! object, and the reader verifies the object from it. The store's connector must have
//! [`Capabilities::deferred_keys`] (local, file, Globus and Redis do; multi does when its
//! policies send a future to one child whatever its size: by tag or site).
//!
//! **A producer that dies.** A setter dropped without a value (the producer returned
//! early, failed with an error, or panicked) *abandons* the future: every consumer's
//! resolve fails at once with [`ProducerGone`](crate::error::ProducerGone), saying why. A producer killed
//! outright (`kill -9`, a node lost) runs no code at all: its consumers see
//! [`Error::Timeout`] at the store's resolve timeout, which is why a store used for
//! futures should set one.
//!
//! **Moving the setter.** Like an [`OwnedProxy`](super::OwnedProxy), a setter moves by
//! serialization: the receiver may set it, and the sender's copy no longer abandons on
//! drop (and refuses to set).
//!
//! [`Connector::new_key`]: crate::connector::Connector::new_key
//! [`Capabilities::deferred_keys`]: crate::connector::Capabilities::deferred_keys

use crate::error::{AlreadySet, ProducerGone};
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::lazy::Proxy;
use super::store::{Store, StoreConfig};
use crate::connector::{Key, PutOptions};
use crate::error::{Error, Result};
use crate::runtime::block_on;

/// The producer's side of a future (see the module docs): `set` it once, or drop it to
/// tell the consumers that no value is coming.
///
/// ```
/// use ps_globus::{Store, connector::LocalConnector};
/// let store = Store::new("doc-future", LocalConnector::new())?;
/// let (proxy, setter) = store.future::<Vec<u32>>()?;
/// let consumer = std::thread::spawn(move || proxy.iter().sum::<u32>()); // waits
/// setter.set(&vec![1, 2, 3])?;
/// assert_eq!(consumer.join().unwrap(), 6);
/// # Ok::<(), ps_globus::Error>(())
/// ```
pub struct FutureSetter<T> {
    store: Store,
    key: Key,
    /// Whether this value may set the future, and abandons it when dropped (cleared once
    /// it is set, abandoned, or sent to another process).
    armed: AtomicBool,
    _value: PhantomData<fn(&T)>,
}

impl Store {
    /// A future of a `T`: a proxy to hand out now, and the setter that makes its value.
    pub fn future<T>(&self) -> Result<(Proxy<T>, FutureSetter<T>)>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        self.future_with(&PutOptions::default())
    }

    /// [`future`](Self::future) with put options (a Globus store's destinations).
    pub fn future_with<T>(&self, options: &PutOptions) -> Result<(Proxy<T>, FutureSetter<T>)>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let key = self.connector().new_key(options)?;
        let setter = FutureSetter::armed(self.clone(), key);
        Ok((setter.proxy(), setter))
    }
}

impl<T> FutureSetter<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn armed(store: Store, key: Key) -> Self {
        FutureSetter {
            store,
            key,
            armed: AtomicBool::new(true),
            _value: PhantomData,
        }
    }

    /// The future's (deferred) key.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// Another proxy of the future.
    pub fn proxy(&self) -> Proxy<T> {
        self.store.proxy_from_key(self.key.clone())
    }

    /// Sets the value: it is stored with its manifest, and every consumer's resolve ends.
    pub fn set(self, value: &T) -> Result<()> {
        block_on(self.set_async(value))
    }

    /// Async [`set`](Self::set).
    pub async fn set_async(self, value: &T) -> Result<()> {
        self.disarm()?;
        let bytes = self.store.codec().encode(value)?;
        let set = self.store.connector().set(&self.key, &bytes).await;
        // A future someone already settled keeps its outcome: nothing to abandon.
        if set.as_ref().is_err_and(|e| !e.is::<AlreadySet>()) {
            self.abandon_now("the producer's set failed").await;
        }
        set
    }

    /// Gives the future up: consumers fail with [`ProducerGone`](crate::error::ProducerGone) and `reason`.
    pub fn abandon(self, reason: &str) -> Result<()> {
        self.disarm()?;
        block_on(self.store.connector().abandon(&self.key, reason))
    }

    fn disarm(&self) -> Result<()> {
        if self.armed.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        Err(Error::from(ProducerGone::new(
            format!("this setter of future {}", self.key),
            "it was sent to another process, which sets it now",
        )))
    }
}

impl<T> FutureSetter<T> {
    /// Abandons without a caller to tell: a failure is logged.
    async fn abandon_now(&self, reason: &str) {
        match self.store.connector().abandon(&self.key, reason).await {
            // Another copy of this setter (a retried task) set it: the value stands.
            Ok(()) => {}
            Err(e) if e.is::<AlreadySet>() => {}
            Err(e) => tracing::warn!("could not abandon future {}: {e}", self.key),
        }
    }
}

impl<T> Drop for FutureSetter<T> {
    fn drop(&mut self) {
        if !self.armed.swap(false, Ordering::AcqRel) {
            return;
        }
        let reason = if std::thread::panicking() {
            "its producer panicked before setting it"
        } else {
            "its producer dropped the setter without setting it (it failed or returned early)"
        };
        block_on(self.abandon_now(reason));
    }
}

impl<T> fmt::Debug for FutureSetter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FutureSetter")
            .field("store", &self.store.name())
            .field("key", &self.key)
            .field("armed", &self.armed.load(Ordering::Acquire))
            .finish()
    }
}

/// A setter's wire form: the store to rebuild and the key to set.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    setter: bool,
    store: StoreConfig,
    key: Key,
}

/// Serializing moves the right to set: the sender's copy no longer sets or abandons.
impl<T> Serialize for FutureSetter<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let wire = Wire {
            setter: true,
            store: self.store.config().clone(),
            key: self.key.clone(),
        };
        let out = wire.serialize(serializer)?;
        self.armed.store(false, Ordering::Release);
        Ok(out)
    }
}

impl<'de, T> Deserialize<'de> for FutureSetter<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let wire = Wire::deserialize(deserializer)?;
        if !wire.setter || !wire.key.is_deferred() {
            return Err(D::Error::custom("not a future's setter"));
        }
        let store = super::get_or_create_store(&wire.store).map_err(D::Error::custom)?;
        Ok(FutureSetter::armed(store, wire.key))
    }
}

//! The process-wide store registry: one live [`Store`] per name.
//!
//! A proxy deserialized in this process carries its store's config; resolving it looks
//! the name up here and builds the store from the config only if none is registered. A
//! registered store with the same name but another config is a typed conflict, never a
//! silent swap: objects would otherwise be read from the wrong place.

use std::collections::HashMap;
use std::sync::RwLock;

use super::store::{Store, StoreConfig};
use crate::error::{Error, Result};

/// This process's stores (a forked child starts without its parent's: their connectors'
/// managers and connections belong to the parent).
fn stores() -> &'static RwLock<HashMap<String, Store>> {
    static STORES: crate::runtime::ForkLocal<RwLock<HashMap<String, Store>>> =
        crate::runtime::ForkLocal::new();
    STORES.get_or_init(Default::default)
}

/// Registers `store` under its name and returns the registered instance.
///
/// If a store with the same name and an equal config is already registered, that one is
/// kept and returned (so both handles share a cache); a different config is
/// [`Error::StoreConflict`].
pub fn register_store(store: &Store) -> Result<Store> {
    let mut stores = stores().write().expect("store registry poisoned");
    match stores.get(store.name()) {
        Some(existing) if existing.config() == store.config() => Ok(existing.clone()),
        Some(_) => Err(Error::StoreConflict {
            name: store.name().to_owned(),
        }),
        None => {
            stores.insert(store.name().to_owned(), store.clone());
            Ok(store.clone())
        }
    }
}

/// The store registered as `name`, if any.
pub fn get_store(name: &str) -> Option<Store> {
    stores()
        .read()
        .expect("store registry poisoned")
        .get(name)
        .cloned()
}

/// The store registered under `config.name`, building and registering it from `config`
/// if there is none. What a deserialized proxy uses to find its store.
///
/// ```
/// use ps_globus::{Store, get_or_create_store, connector::LocalConnector};
/// let store = Store::new("doc-registry", LocalConnector::new())?;
/// let again = get_or_create_store(store.config())?;
/// assert!(again.ptr_eq(&store));
/// # Ok::<(), ps_globus::Error>(())
/// ```
pub fn get_or_create_store(config: &StoreConfig) -> Result<Store> {
    if let Some(existing) = get_store(&config.name) {
        return if existing.config() == config {
            Ok(existing)
        } else {
            Err(Error::StoreConflict {
                name: config.name.clone(),
            })
        };
    }
    // Built outside the lock: building may touch the file system. A racing builder of the
    // same config loses to whichever registered first.
    register_store(&Store::from_config(config.clone())?)
}

/// Removes the store registered as `name`, returning it.
pub fn unregister_store(name: &str) -> Option<Store> {
    stores()
        .write()
        .expect("store registry poisoned")
        .remove(name)
}

/// Removes `store` from the registry if it is the instance registered under its name.
pub(crate) fn unregister_if_same(store: &Store) {
    let mut stores = stores().write().expect("store registry poisoned");
    if stores.get(store.name()).is_some_and(|s| s.ptr_eq(store)) {
        stores.remove(store.name());
    }
}

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

/// This process's stores: those its own code registered, by name, and those rebuilt
/// from data (a proxy's, an event's config), by their whole config, so that a config
/// from data never takes a name from another: a planted proxy cannot make genuine
/// proxies of the same name conflict, nor be read through its store.
#[derive(Default)]
struct Stores {
    local: HashMap<String, Store>,
    from_data: HashMap<String, Store>,
}

/// This process's stores (a forked child starts without its parent's: their connectors'
/// managers and connections belong to the parent).
fn stores() -> &'static RwLock<Stores> {
    crate::process::own(RwLock::<Stores>::default)
}

/// The text a config from data is filed under.
fn data_key(config: &StoreConfig) -> String {
    serde_json::to_string(config).expect("a store config serializes")
}

/// Registers `store` under its name and returns the registered instance.
///
/// If a store with the same name and an equal config is already registered, that one is
/// kept and returned (so both handles share a cache); a different config is
/// [`Error::Conflict`](crate::Error::Conflict).
pub fn register_store(store: &Store) -> Result<Store> {
    let mut stores = stores().write().expect("store registry poisoned");
    match stores.local.get(store.name()) {
        Some(existing) if existing.config() == store.config() => Ok(existing.clone()),
        Some(_) => Err(Error::store_conflict(store.name())),
        None => {
            stores.local.insert(store.name().to_owned(), store.clone());
            Ok(store.clone())
        }
    }
}

/// The store this process registered as `name`, if any (a store rebuilt from a proxy
/// is not found by name).
pub fn get_store(name: &str) -> Option<Store> {
    stores()
        .read()
        .expect("store registry poisoned")
        .local
        .get(name)
        .cloned()
}

/// The store for `config`, a config that arrived as data (a deserialized proxy's): the
/// store this process registered under `config.name` if its config is equal, else one
/// rebuilt from `config` — its bindings checked against this process's own configuration
/// (`docs/THREAT-MODEL.md`) — and kept for the next proxy with the same config.
///
/// ```
/// use ps_globus::{Store, get_or_create_store, connector::LocalConnector};
/// let store = Store::new("doc-registry", LocalConnector::new())?;
/// let again = get_or_create_store(store.config())?;
/// assert!(again.ptr_eq(&store));
/// # Ok::<(), ps_globus::Error>(())
/// ```
pub fn get_or_create_store(config: &StoreConfig) -> Result<Store> {
    let key = data_key(config);
    {
        let stores = stores().read().expect("store registry poisoned");
        match stores.local.get(&config.name) {
            Some(existing) if existing.config() == config => return Ok(existing.clone()),
            Some(_) => {
                return Err(Error::store_conflict(&config.name.clone()));
            }
            None => {}
        }
        if let Some(existing) = stores.from_data.get(&key) {
            return Ok(existing.clone());
        }
    }
    // Built outside the lock: building may touch the file system. A racing builder of the
    // same config loses to whichever was filed first.
    let built = Store::from_config(config.clone())?;
    let mut stores = stores().write().expect("store registry poisoned");
    Ok(stores.from_data.entry(key).or_insert(built).clone())
}

/// Removes the store registered as `name`, returning it (and forgets the stores rebuilt
/// from data under that name).
pub fn unregister_store(name: &str) -> Option<Store> {
    let mut stores = stores().write().expect("store registry poisoned");
    stores.from_data.retain(|_, store| store.name() != name);
    stores.local.remove(name)
}

/// Removes `store` from the registry if it is the instance registered under its name.
pub(crate) fn unregister_if_same(store: &Store) {
    let mut stores = stores().write().expect("store registry poisoned");
    if stores
        .local
        .get(store.name())
        .is_some_and(|s| s.ptr_eq(store))
    {
        stores.local.remove(store.name());
    }
    stores.from_data.retain(|_, s| !s.ptr_eq(store));
}

//! `local`: objects in this process's memory.
//!
//! The fastest connector, for objects that never leave the process (tests, pipelines of
//! threads). A connector's config names its *instance*: rebuilding from the config in the
//! same process shares the same memory, so proxies deserialized in-process resolve. In
//! another process the instance is new and empty, and its objects are not found.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{Capabilities, Connector, ConnectorConfig, Key, PutOptions, Settlement};
use crate::connector::manifest;
use crate::error::{AlreadySet, Error, Result};

type Objects = RwLock<HashMap<String, Bytes>>;

/// Live instances in this process, so a rebuilt connector shares its original's objects.
fn instances() -> &'static Mutex<HashMap<String, Weak<Objects>>> {
    /// The slot's own type.
    #[derive(Default)]
    struct Instances(Mutex<HashMap<String, Weak<Objects>>>);
    &crate::process::inherited(Instances::default).0
}

/// An in-memory connector.
///
/// ```
/// use ps_globus::connector::{Connector, LocalConnector, PutOptions};
/// # ps_globus::block_on(async {
/// let connector = LocalConnector::new();
/// let key = connector.put(b"hello", &PutOptions::default()).await?;
/// assert_eq!(connector.get(&key).await?.as_deref(), Some(&b"hello"[..]));
/// # Ok::<(), ps_globus::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct LocalConnector {
    instance: String,
    objects: Arc<Objects>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct LocalOptions {
    instance: String,
}

impl LocalConnector {
    /// The kind name in keys and configs.
    pub const KIND: &'static str = "local";

    /// A new, empty instance.
    pub fn new() -> Self {
        Self::instance(Key::new_id())
    }

    /// The instance named `instance`: shared if it is alive in this process, else new.
    fn instance(instance: String) -> Self {
        let mut instances = instances().lock().expect("local instances poisoned");
        let objects = match instances.get(&instance).and_then(Weak::upgrade) {
            Some(objects) => objects,
            None => {
                instances.retain(|_, weak| weak.strong_count() > 0);
                let objects = Arc::new(Objects::default());
                instances.insert(instance.clone(), Arc::downgrade(&objects));
                objects
            }
        };
        LocalConnector { instance, objects }
    }

    pub(super) fn build(
        config: &ConnectorConfig,
        _provenance: &super::Provenance,
    ) -> Result<Arc<dyn Connector>> {
        let options: LocalOptions = config.options_as()?;
        Ok(Arc::new(Self::instance(options.instance)))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Bytes>> {
        self.objects.read().expect("local connector poisoned")
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Bytes>> {
        self.objects.write().expect("local connector poisoned")
    }
}

impl Default for LocalConnector {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Connector for LocalConnector {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    fn config(&self) -> ConnectorConfig {
        ConnectorConfig {
            kind: Self::KIND.to_owned(),
            options: serde_json::json!({ "instance": self.instance }),
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::in_memory().with_deferred_keys()
    }

    async fn put(&self, data: &[u8], _options: &PutOptions) -> Result<Key> {
        let key = Key::generate(Self::KIND);
        let value = Bytes::copy_from_slice(data);
        self.write().insert(key.id().to_owned(), value);
        Ok(key)
    }

    async fn get(&self, key: &Key) -> Result<Option<Bytes>> {
        key.check_kind(Self::KIND)?;
        let value = self.read().get(key.id()).cloned();
        manifest::unwrap_value(key, value)
    }

    async fn exists(&self, key: &Key) -> Result<bool> {
        key.check_kind(Self::KIND)?;
        if key.is_deferred() {
            return Ok(self.get(key).await.is_ok_and(|v| v.is_some()));
        }
        Ok(self.read().contains_key(key.id()))
    }

    /// A future's object leaves a tombstone: its later readers fail at once.
    async fn evict(&self, key: &Key) -> Result<()> {
        key.check_kind(Self::KIND)?;
        if key.is_deferred() {
            let tombstone = Bytes::from(manifest::tombstone());
            self.write().insert(key.id().to_owned(), tombstone);
        } else {
            self.write().remove(key.id());
        }
        Ok(())
    }

    async fn put_batch(&self, objects: &[&[u8]], _options: &PutOptions) -> Result<Vec<Key>> {
        let mut keys = Vec::with_capacity(objects.len());
        let mut values = Vec::with_capacity(objects.len());
        for data in objects {
            let key = Key::generate(Self::KIND);
            values.push((key.id().to_owned(), Bytes::copy_from_slice(data)));
            keys.push(key);
        }
        self.write().extend(values);
        Ok(keys)
    }

    async fn get_batch(&self, keys: &[Key]) -> Result<Vec<Option<Bytes>>> {
        for key in keys {
            key.check_kind(Self::KIND)?;
        }
        let objects = self.read();
        keys.iter()
            .map(|k| manifest::unwrap_value(k, objects.get(k.id()).cloned()))
            .collect()
    }

    /// One envelope value: the manifest, then the object.
    async fn settle(&self, key: &Key, settlement: Settlement<'_>) -> Result<()> {
        key.check_deferred(Self::KIND)?;
        let value = Bytes::from(manifest::envelope(settlement));
        match self.write().entry(key.id().to_owned()) {
            std::collections::hash_map::Entry::Occupied(_) => {
                Err(Error::from(AlreadySet::new(format!("the future {key}"))))
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(value);
                Ok(())
            }
        }
    }

    fn not_found_hint(&self) -> &'static str {
        "objects of a local connector live only in the memory of the process that stored them"
    }
}

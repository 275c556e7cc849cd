//! Persistent dataset references: a named (store config, key) pair kept in the state
//! database, with a stable string form to paste into another workflow or site.
//!
//! The string form is `psgref1.` followed by the reference's JSON in unpadded URL-safe
//! base64: one shell-safe word, versioned by its prefix and by the `v` inside. A
//! reference outlives every store and process; closing a store never deletes one.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use super::{Store, StoreConfig};
use crate::connector::Key;
use crate::error::{Error, Result};
use crate::state::StateDb;
use crate::state::refs::{self, RefRow};

/// The newest reference format this build writes and reads.
pub(crate) const REF_VERSION: u16 = 1;

const PREFIX: &str = "psgref1.";

/// A named reference to one stored object.
///
/// ```
/// use ps_globus::proxy::DatasetRef;
/// use ps_globus::{Store, connector::LocalConnector};
/// let store = Store::new("refs-doc", LocalConnector::new())?;
/// let key = store.put(&vec![1u8, 2, 3])?;
/// let r = DatasetRef::new("run-42/input", store.config().clone(), key);
/// let text = r.to_string_form()?;
/// assert!(text.starts_with("psgref1."));
/// assert_eq!(DatasetRef::from_string_form(&text)?, r);
/// # Ok::<(), ps_globus::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetRef {
    /// Format version.
    pub v: u16,
    /// The reference's name (`[A-Za-z0-9._/-]`, up to 200 characters).
    pub name: String,
    /// The store the object is in.
    pub store: StoreConfig,
    /// The object.
    pub key: Key,
}

impl DatasetRef {
    /// A reference named `name` to `key` in the store configured by `store`.
    pub fn new(name: impl Into<String>, store: StoreConfig, key: Key) -> Self {
        DatasetRef {
            v: REF_VERSION,
            name: name.into(),
            store,
            key,
        }
    }

    /// The pasteable string form.
    pub fn to_string_form(&self) -> Result<String> {
        let json = serde_json::to_vec(self).map_err(|e| Error::encode("json", e))?;
        Ok(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(json)))
    }

    /// Parses a string form (surrounding whitespace is ignored).
    pub fn from_string_form(text: &str) -> Result<Self> {
        let bad = |why: String| {
            Error::malformed_proxy(format!(
                "not a dataset reference ({why}); it starts with {PREFIX}"
            ))
        };
        let text = text.trim();
        let Some(body) = text.strip_prefix(PREFIX) else {
            return Err(bad("wrong prefix".into()));
        };
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|e| bad(format!("bad base64: {e}")))?;
        let value: serde_json::Value =
            serde_json::from_slice(&json).map_err(|e| bad(format!("bad JSON: {e}")))?;
        let found = value["v"].as_u64().unwrap_or(0) as u16;
        if found > REF_VERSION {
            return Err(Error::unsupported_version(
                "dataset reference",
                found,
                REF_VERSION,
            ));
        }
        let r: DatasetRef = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        check_name(&r.name)?;
        Ok(r)
    }

    /// The store, rebuilt (or found in this process's registry).
    pub fn store(&self) -> Result<Store> {
        crate::proxy::get_or_create_store(&self.store)
    }
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_config(
            "dataset reference",
            format!(
                "name {name:?} must be 1-200 characters of letters, digits, '.', '_', '/', '-'"
            ),
        ))
    }
}

/// Saves `r` in `db`; an existing reference of that name is replaced only if `replace`.
pub async fn save_ref(db: &StateDb, r: &DatasetRef, replace: bool) -> Result<()> {
    check_name(&r.name)?;
    let row = RefRow {
        name: r.name.clone(),
        v: i64::from(r.v),
        store: to_json(&r.store)?,
        key: to_json(&r.key)?,
    };
    refs::save(db, &row, replace).await
}

/// The reference named `name`, if any.
pub async fn load_ref(db: &StateDb, name: &str) -> Result<Option<DatasetRef>> {
    refs::load(db, name)
        .await?
        .map(|row| decode_row(db, row))
        .transpose()
}

/// Every reference, by name.
pub async fn list_refs(db: &StateDb) -> Result<Vec<DatasetRef>> {
    let rows = refs::list(db).await?;
    rows.into_iter().map(|row| decode_row(db, row)).collect()
}

/// Forgets the reference named `name` (the object itself stays); `false` if none.
pub async fn remove_ref(db: &StateDb, name: &str) -> Result<bool> {
    refs::remove(db, name).await
}

fn decode_row(db: &StateDb, row: RefRow) -> Result<DatasetRef> {
    let name = row.name;
    let broken = |e: serde_json::Error| {
        Error::state(
            db.path(),
            format!("reference {name:?} in the state database is unreadable"),
            e,
        )
    };
    Ok(DatasetRef {
        v: row.v as u16,
        store: serde_json::from_str(&row.store).map_err(broken)?,
        key: serde_json::from_str(&row.key).map_err(broken)?,
        name,
    })
}

fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::encode("json", e))
}

//! Named references from Python: the state database's `ref` table, as the CLI's
//! `ps-globus ref` sees it.

use ps_globus::Settings;
use ps_globus::proxy::{DatasetRef, StoreConfig, list_refs, load_ref, remove_ref, save_ref};
use ps_globus::state::StateDb;
use pyo3::prelude::*;

use crate::wait::wait;

fn json(r: &DatasetRef) -> ps_globus::Result<String> {
    serde_json::to_string(r).map_err(|e| ps_globus::Error::invalid_config_from("reference", e))
}

fn invalid(e: serde_json::Error) -> ps_globus::Error {
    ps_globus::Error::invalid_config_from("reference", e)
}

/// Saves `name` for the object `key` (text) of the store `store_json` (a store config:
/// `{"v": 1, "name": ..., "connector": {"kind": ..., "options": ...}}`); returns its
/// string form, which `ref_import` (or `ps-globus ref import`) takes at another site.
#[pyfunction]
pub fn ref_save(
    py: Python<'_>,
    name: String,
    store_json: &str,
    key: &str,
    replace: bool,
) -> PyResult<String> {
    let built = (|| -> ps_globus::Result<DatasetRef> {
        let store: StoreConfig = serde_json::from_str(store_json).map_err(invalid)?;
        Ok(DatasetRef::new(name, store, key.parse()?))
    })();
    wait(py, async move {
        let r = built?;
        let db = StateDb::shared_default(&Settings::from_env()).await?;
        save_ref(&db, &r, replace).await?;
        r.to_string_form()
    })
}

/// The reference `name` as JSON, or `None`.
#[pyfunction]
pub fn ref_load(py: Python<'_>, name: String) -> PyResult<Option<String>> {
    wait(py, async move {
        let db = StateDb::open_default(&Settings::from_env()).await?;
        load_ref(&db, &name).await?.as_ref().map(json).transpose()
    })
}

/// Every reference, as JSON objects in a list, by name.
#[pyfunction]
pub fn ref_list(py: Python<'_>) -> PyResult<Vec<String>> {
    wait(py, async move {
        let db = StateDb::open_default(&Settings::from_env()).await?;
        list_refs(&db).await?.iter().map(json).collect()
    })
}

/// Removes `name`; whether it existed.
#[pyfunction]
pub fn ref_remove(py: Python<'_>, name: String) -> PyResult<bool> {
    wait(py, async move {
        let db = StateDb::open_default(&Settings::from_env()).await?;
        remove_ref(&db, &name).await
    })
}

/// Saves a reference from its string form (under `name` if given); returns its JSON.
#[pyfunction]
#[pyo3(signature = (text, name=None, replace=false))]
pub fn ref_import(
    py: Python<'_>,
    text: String,
    name: Option<String>,
    replace: bool,
) -> PyResult<String> {
    wait(py, async move {
        let mut r = DatasetRef::from_string_form(&text)?;
        if let Some(name) = name {
            r.name = name;
        }
        let db = StateDb::open_default(&Settings::from_env()).await?;
        save_ref(&db, &r, replace).await?;
        json(&r)
    })
}

/// The string form of a reference given as JSON.
#[pyfunction]
pub fn ref_string_form(py: Python<'_>, reference_json: &str) -> PyResult<String> {
    let parsed: Result<DatasetRef, _> = serde_json::from_str(reference_json).map_err(invalid);
    parsed
        .and_then(|r| r.to_string_form())
        .map_err(|e| crate::errors::to_py_err(py, e))
}

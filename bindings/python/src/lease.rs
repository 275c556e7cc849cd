//! `_core.Lease`: the library's lease (`ps_globus::proxy::Lease`), kept in the state
//! database, so it outlives the process that made it; and `reap_expired_leases`.

use std::time::Duration;

use ps_globus::Store;
use ps_globus::proxy::Lease;
use ps_globus::state::StateDb;
use pyo3::prelude::*;

use crate::connector::PyConnector;
use crate::errors::to_py_err;
use crate::fork_local::ForkLocal;
use crate::wait::wait;

/// A duration from seconds a Python caller gave: finite and not negative.
fn seconds(what: &str, s: f64) -> PyResult<Duration> {
    if s.is_finite() && s >= 0.0 {
        // Past about 31 years a lease might as well be for ever (and fits every clock).
        Ok(Duration::from_secs_f64(s.min(1e9)))
    } else {
        Err(pyo3::exceptions::PyValueError::new_err(format!(
            "{what} must be a non-negative number of seconds, not {s}"
        )))
    }
}

/// A lease of a store's objects, evicted when it expires by whichever process of the
/// state database sees it first.
#[pyclass(module = "ps_globus._core", name = "Lease", frozen)]
pub struct PyLease {
    store: Store,
    id: String,
    live: ForkLocal<Lease>,
}

/// The store a lease is of: the connector under the Python store, by the Python store's
/// name (not registered: the Python `Store` is the user's).
fn store_of(py: Python<'_>, connector: &PyConnector, name: &str) -> PyResult<Store> {
    let connector = connector.connector(py)?;
    Store::builder(name, connector)
        .register(false)
        .build()
        .map_err(|e| to_py_err(py, e))
}

impl PyLease {
    /// The lease, reopened by id in a child forked after it was made (the parent's holds
    /// the parent's database pool).
    fn lease(&self, py: Python<'_>) -> PyResult<Lease> {
        self.live.get(|_| {
            let (store, id) = (self.store.clone(), self.id.clone());
            wait(py, async move {
                let db = StateDb::shared_default(&ps_globus::Settings::from_env()).await?;
                store.lease_by_id_in_async(&db, &id).await
            })
        })
    }
}

#[pymethods]
impl PyLease {
    /// A new lease of the objects of store `store_name` on `connector`, expiring in
    /// `ttl_s` seconds; or, with `lease_id`, that live lease (another process's).
    #[new]
    #[pyo3(signature = (connector, store_name, ttl_s = None, lease_id = None))]
    fn new(
        py: Python<'_>,
        connector: &PyConnector,
        store_name: &str,
        ttl_s: Option<f64>,
        lease_id: Option<String>,
    ) -> PyResult<Self> {
        let store = store_of(py, connector, store_name)?;
        let opened = store.clone();
        let ttl = ttl_s.map(|s| seconds("ttl", s)).transpose()?;
        let lease = wait(py, async move {
            let db = StateDb::shared_default(&ps_globus::Settings::from_env()).await?;
            match (lease_id, ttl) {
                (Some(id), _) => opened.lease_by_id_in_async(&db, &id).await,
                (None, Some(ttl)) => opened.lease_in_async(&db, ttl).await,
                (None, None) => Err(ps_globus::Error::invalid_config(
                    "lease",
                    "give a ttl for a new lease, or the id of a live one",
                )),
            }
        })?;
        Ok(PyLease {
            store,
            id: lease.id().to_owned(),
            live: ForkLocal::new(lease),
        })
    }

    /// The lease's id (`ps-globus lease list`).
    #[getter]
    fn id(&self) -> String {
        self.id.clone()
    }

    /// When it expires, as Unix seconds; `LeaseEnded` (a `NotFound`) once it is over.
    fn expires_at(&self, py: Python<'_>) -> PyResult<f64> {
        let lease = self.lease(py)?;
        let at = wait(py, async move { lease.expires_at_async().await })?;
        Ok(at.timestamp_millis() as f64 / 1000.0)
    }

    /// Moves the expiry `by_s` seconds later; the new expiry as Unix seconds.
    fn extend(&self, py: Python<'_>, by_s: f64) -> PyResult<f64> {
        let by = seconds("by", by_s)?;
        let lease = self.lease(py)?;
        let at = wait(py, async move { lease.extend_async(by).await })?;
        Ok(at.timestamp_millis() as f64 / 1000.0)
    }

    /// Makes the object of `key` (a key's JSON text) part of the lease.
    fn attach(&self, py: Python<'_>, key: &str) -> PyResult<()> {
        let key: ps_globus::connector::Key = key.parse().map_err(|e| to_py_err(py, e))?;
        let lease = self.lease(py)?;
        wait(py, async move { lease.attach_async(&key).await })
    }

    /// Ends the lease now: evicts its objects.
    fn end(&self, py: Python<'_>) -> PyResult<()> {
        let lease = self.lease(py)?;
        wait(py, async move { lease.end_async().await })
    }
}

/// Evicts the objects of every expired lease of the default state database (also those
/// whose owner died); one report per lease as JSON.
#[pyfunction]
pub fn reap_expired_leases(py: Python<'_>) -> PyResult<Vec<String>> {
    wait(py, async move {
        let db = StateDb::shared_default(&ps_globus::Settings::from_env()).await?;
        let reports = ps_globus::proxy::reap_expired_leases(&db).await?;
        Ok(reports
            .iter()
            .map(|r| serde_json::to_string(r).expect("a report serializes"))
            .collect())
    })
}

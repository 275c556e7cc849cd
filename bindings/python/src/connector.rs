//! `_core.Connector`: one ps-globus connector, driven from Python.
//!
//! The ProxyStore-facing classes (`ps_globus.proxystore`) are pure Python and hold one of
//! these; keys cross as their compact JSON text.

use std::sync::Arc;

use ps_globus::connector::{
    Connector, ConnectorConfig, GlobusConfig, GlobusConnector, Key, PutOptions, RedisConnector,
};
use ps_globus::{Error, Settings};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyBytes;

use crate::aio::awaitable;
use crate::errors::to_py_err;
use crate::fork_local::ForkLocal;
use crate::wait::wait;

/// A connector of any kind the library knows (`globus`, `file`, …), built from its
/// options as JSON.
#[pyclass(module = "ps_globus._core", name = "Connector", frozen)]
pub struct PyConnector {
    kind: String,
    options: serde_json::Value,
    live: ForkLocal<Live>,
}

/// The connector serving this process, and the site it acts as (Globus).
#[derive(Clone)]
struct Live {
    connector: Arc<dyn Connector>,
    site: Option<String>,
}

/// Builds the connector. A Globus connector reads the environment now (the site, the
/// state directory, the credentials), not when the library first started: a test or a
/// notebook may set them after importing.
fn build(kind: &str, options: &serde_json::Value) -> ps_globus::Result<Live> {
    let (connector, site): (Arc<dyn Connector>, Option<String>) = if kind == GlobusConnector::KIND {
        let config: GlobusConfig = serde_json::from_value(options.clone())
            .map_err(|e| Error::invalid_config_from("globus connector", e))?;
        let connector = GlobusConnector::builder(config)
            .settings(Settings::from_env())
            .build()?;
        let site = connector.site().to_owned();
        (Arc::new(connector), Some(site))
    } else {
        let config = ConnectorConfig {
            kind: kind.to_owned(),
            options: options.clone(),
        };
        (config.build_local()?, None)
    };
    Ok(Live { connector, site })
}

fn parse_key(py: Python<'_>, text: &str) -> PyResult<Key> {
    text.parse().map_err(|e| to_py_err(py, e))
}

fn to_bytes(py: Python<'_>, data: Option<bytes::Bytes>) -> Option<Py<PyBytes>> {
    data.map(|d| PyBytes::new(py, &d).unbind())
}

impl PyConnector {
    /// The connector of this process: rebuilt from its options in a child forked after it
    /// was made (the parent's holds the parent's runtime, manager and connections).
    pub(crate) fn connector(&self, py: Python<'_>) -> PyResult<Arc<dyn Connector>> {
        Ok(self.live(py)?.connector)
    }

    fn live(&self, py: Python<'_>) -> PyResult<Live> {
        self.live
            .get(|_| build(&self.kind, &self.options).map_err(|e| to_py_err(py, e)))
    }
}

#[pymethods]
impl PyConnector {
    /// Builds a connector of `kind` from `options_json` (its config's options).
    #[new]
    fn new(py: Python<'_>, kind: &str, options_json: &str) -> PyResult<Self> {
        let options: serde_json::Value = serde_json::from_str(options_json).map_err(|e| {
            to_py_err(
                py,
                Error::invalid_config_from(&format!("{kind} connector"), e),
            )
        })?;
        let live = build(kind, &options).map_err(|e| to_py_err(py, e))?;
        Ok(PyConnector {
            kind: kind.to_owned(),
            options,
            live: ForkLocal::new(live),
        })
    }

    /// The site this process acts as (Globus connectors), else `None`.
    #[getter]
    fn site(&self, py: Python<'_>) -> PyResult<Option<String>> {
        Ok(self.live(py)?.site)
    }

    /// The connector's config options as JSON (what rebuilds it anywhere).
    fn config_json(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.connector(py)?.config().options.to_string())
    }

    /// Stores `data` (with `tags` for a multi connector's policies); returns the key's
    /// text.
    #[pyo3(signature = (data, tags = Vec::new()))]
    fn put(&self, py: Python<'_>, data: PyBackedBytes, tags: Vec<String>) -> PyResult<String> {
        let c = self.connector(py)?;
        wait(py, async move {
            let options = PutOptions::default().with_tags(tags);
            Ok(c.put(&data, &options).await?.to_string())
        })
    }

    /// Stores every object (one Globus task per destination for the lot); keys in order.
    #[pyo3(signature = (objects, tags = Vec::new()))]
    fn put_batch(
        &self,
        py: Python<'_>,
        objects: Vec<PyBackedBytes>,
        tags: Vec<String>,
    ) -> PyResult<Vec<String>> {
        let c = self.connector(py)?;
        wait(py, async move {
            let slices: Vec<&[u8]> = objects.iter().map(|o| &o[..]).collect();
            let keys = c
                .put_batch(&slices, &PutOptions::default().with_tags(tags))
                .await?;
            Ok(keys.iter().map(Key::to_string).collect())
        })
    }

    /// Removes every object of a Redis connector's layout, and nothing else; how many.
    fn clear(&self, py: Python<'_>) -> PyResult<u64> {
        if self.kind != RedisConnector::KIND {
            let unsupported =
                Error::unsupported("clear", &self.kind.clone(), "evict objects one by one");
            return Err(to_py_err(py, unsupported));
        }
        let config = ConnectorConfig {
            kind: self.kind.clone(),
            options: self.options.clone(),
        };
        let redis = config
            .options_as()
            .and_then(RedisConnector::new)
            .map_err(|e| to_py_err(py, e))?;
        wait(py, async move { redis.clear().await })
    }

    /// Stores the file at `path` (a Globus connector stages it without reading it into
    /// memory); returns the key's text.
    fn put_file(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<String> {
        let c = self.connector(py)?;
        wait(py, async move {
            Ok(c.put_file(&path, &PutOptions::default()).await?.to_string())
        })
    }

    /// The object's bytes (waiting for its transfer), or `None` if it is gone.
    fn get(&self, py: Python<'_>, key: &str) -> PyResult<Option<Py<PyBytes>>> {
        let (c, key) = (self.connector(py)?, parse_key(py, key)?);
        let data = wait(py, async move { c.get(&key).await })?;
        Ok(to_bytes(py, data))
    }

    /// Many objects, waited for together (one poller serves every wait); in order.
    fn get_batch(&self, py: Python<'_>, keys: Vec<String>) -> PyResult<Vec<Option<Py<PyBytes>>>> {
        let c = self.connector(py)?;
        let keys = keys
            .iter()
            .map(|k| parse_key(py, k))
            .collect::<PyResult<Vec<_>>>()?;
        let values = wait(py, async move { c.get_batch(&keys).await })?;
        Ok(values.into_iter().map(|v| to_bytes(py, v)).collect())
    }

    /// Whether the object exists (here, now: no wait, no Globus request).
    fn exists(&self, py: Python<'_>, key: &str) -> PyResult<bool> {
        let (c, key) = (self.connector(py)?, parse_key(py, key)?);
        wait(py, async move { c.exists(&key).await })
    }

    /// Removes the object; removing a missing one succeeds.
    fn evict(&self, py: Python<'_>, key: &str) -> PyResult<()> {
        let (c, key) = (self.connector(py)?, parse_key(py, key)?);
        wait(py, async move { c.evict(&key).await })
    }

    /// The verified local file holding the object at this site (waiting for it).
    fn resolve_path(&self, py: Python<'_>, key: &str) -> PyResult<String> {
        let (c, key) = (self.connector(py)?, parse_key(py, key)?);
        let path = wait(py, async move { c.resolve_path(&key).await })?;
        Ok(path.display().to_string())
    }

    /// Whether this connector makes deferred keys (futures): `new_key` then `set`.
    #[getter]
    fn deferred_keys(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.connector(py)?.capabilities().deferred_keys)
    }

    /// A deferred key (a future's), whose object `set` writes later, perhaps in another
    /// process: `settling_site` is the one Globus site that may set it (default: here),
    /// `destinations` where it goes, `tags` a multi connector's routing.
    #[pyo3(signature = (settling_site = None, destinations = None, tags = Vec::new()))]
    fn new_key(
        &self,
        py: Python<'_>,
        settling_site: Option<String>,
        destinations: Option<Vec<String>>,
        tags: Vec<String>,
    ) -> PyResult<String> {
        let mut options = PutOptions::default().with_tags(tags);
        if let Some(site) = settling_site {
            options = options.with_settling_site(site);
        }
        if let Some(sites) = destinations {
            options = options.with_destinations(sites);
        }
        let key = self.connector(py)?.new_key(&options);
        Ok(key.map_err(|e| to_py_err(py, e))?.to_string())
    }

    /// Writes the object of a deferred key, once (a second settlement raises
    /// `AlreadySet` and changes nothing).
    fn set(&self, py: Python<'_>, key: &str, data: PyBackedBytes) -> PyResult<()> {
        let (c, key) = (self.connector(py)?, parse_key(py, key)?);
        wait(py, async move { c.set(&key, &data).await })
    }

    /// Records that a deferred key's object will never come, and why: its readers raise
    /// `ProducerGone` instead of waiting.
    fn abandon(&self, py: Python<'_>, key: &str, reason: String) -> PyResult<()> {
        let (c, key) = (self.connector(py)?, parse_key(py, key)?);
        wait(py, async move { c.abandon(&key, &reason).await })
    }

    /// `put` as an awaitable (for asyncio): the key's text.
    #[pyo3(signature = (data, tags = Vec::new()))]
    fn put_async<'py>(
        &self,
        py: Python<'py>,
        data: PyBackedBytes,
        tags: Vec<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.connector(py)?;
        let work = async move {
            let options = PutOptions::default().with_tags(tags);
            Ok(c.put(&data, &options).await?.to_string())
        };
        awaitable(py, work, |_, key| Ok(key))
    }

    /// `get` as an awaitable: the object's bytes (waiting for its transfer), or `None`.
    fn get_async<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Bound<'py, PyAny>> {
        let (c, key) = (self.connector(py)?, parse_key(py, key)?);
        awaitable(py, async move { c.get(&key).await }, |py, data| {
            Ok(to_bytes(py, data))
        })
    }

    /// `get_batch` as an awaitable: every object, waited for together; in order.
    fn get_batch_async<'py>(
        &self,
        py: Python<'py>,
        keys: Vec<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let c = self.connector(py)?;
        let keys = keys
            .iter()
            .map(|k| parse_key(py, k))
            .collect::<PyResult<Vec<_>>>()?;
        awaitable(py, async move { c.get_batch(&keys).await }, |py, values| {
            Ok(values
                .into_iter()
                .map(|v| to_bytes(py, v))
                .collect::<Vec<_>>())
        })
    }

    /// `evict` as an awaitable.
    fn evict_async<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Bound<'py, PyAny>> {
        let (c, key) = (self.connector(py)?, parse_key(py, key)?);
        awaitable(py, async move { c.evict(&key).await }, |_, ()| Ok(()))
    }

    /// Submits what is held back for batching; never deletes data.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let c = self.connector(py)?;
        wait(py, async move { c.close().await })
    }

    fn __repr__(&self) -> String {
        format!("<ps_globus._core.Connector kind={:?}>", self.kind)
    }
}

//! `_core.Endpoint`: an endpoint served from this process, for users' own tests
//! (`ps_globus.testing.endpoint()` wraps it). The command `ps-globus endpoint start` is
//! the way to run one for real.

use std::path::PathBuf;
use std::sync::Mutex;

use ps_globus::connector::endpoint::config::{CONFIG_FILE, EndpointFileConfig};
use ps_globus_endpoint::serve::InProcess;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// A running endpoint until `stop`.
#[pyclass(module = "ps_globus._core", name = "Endpoint", frozen)]
pub struct PyEndpoint {
    uuid: String,
    dir: PathBuf,
    running: Mutex<Option<InProcess>>,
}

fn error(e: impl std::fmt::Display) -> PyErr {
    PyRuntimeError::new_err(e.to_string())
}

#[pymethods]
impl PyEndpoint {
    /// Configures endpoint `name` in `home` (unless it is already) and serves it.
    #[new]
    #[pyo3(signature = (home, name, max_object_size=None))]
    fn new(
        py: Python<'_>,
        home: PathBuf,
        name: &str,
        max_object_size: Option<u64>,
    ) -> PyResult<Self> {
        let dir = home.join(name);
        if !dir.join(CONFIG_FILE).exists() {
            let mut config = EndpointFileConfig::new(name, 0).map_err(error)?;
            config.storage.max_object_size = max_object_size;
            ps_globus_endpoint::manage::configure(&home, &config).map_err(error)?;
        }
        let running = py.detach(|| InProcess::start(&dir)).map_err(error)?;
        Ok(PyEndpoint {
            uuid: running.uuid.to_string(),
            dir,
            running: Mutex::new(Some(running)),
        })
    }

    /// The endpoint's id.
    #[getter]
    fn uuid(&self) -> &str {
        &self.uuid
    }

    /// Its directory.
    #[getter]
    fn dir(&self) -> PathBuf {
        self.dir.clone()
    }

    /// Stops serving (idempotent); its objects stay in its directory.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        let running = self.running.lock().expect("endpoint lock").take();
        match running {
            Some(mut running) => py.detach(|| running.stop()).map_err(error),
            None => Ok(()),
        }
    }
}

//! `_core.Emulator`: the built-in Globus emulator, for users' own tests
//! (`ps_globus.testing.emulator()` wraps it).

use std::sync::Mutex;

use ps_globus_sim::{SimConfig, Simulator};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use crate::errors::to_py_err;

/// A running emulator (Transfer and Auth on one loopback port) until `shutdown`.
#[pyclass(module = "ps_globus._core", name = "Emulator", frozen)]
pub struct PyEmulator {
    sim: Mutex<Option<Simulator>>,
    transfer_url: String,
    auth_url: String,
    collections: String,
}

#[pymethods]
impl PyEmulator {
    /// Starts one from `config_json` (the fields of `ps-globus sim serve --config`).
    #[new]
    fn new(py: Python<'_>, config_json: &str) -> PyResult<Self> {
        let config: SimConfig = serde_json::from_str(config_json)
            .map_err(|e| PyValueError::new_err(format!("emulator config: {e}")))?;
        config
            .validate()
            .map_err(|e| PyValueError::new_err(format!("emulator config: {e}")))?;
        let sim = py
            .detach(|| Simulator::start(config))
            .map_err(|e| to_py_err(py, e))?;
        let collections = serde_json::to_string(sim.collections())
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        Ok(PyEmulator {
            transfer_url: sim.transfer_url().to_owned(),
            auth_url: sim.auth_url().to_owned(),
            collections,
            sim: Mutex::new(Some(sim)),
        })
    }

    /// The Transfer API root (ends with `/`).
    #[getter]
    fn transfer_url(&self) -> &str {
        &self.transfer_url
    }

    /// The Auth API root.
    #[getter]
    fn auth_url(&self) -> &str {
        &self.auth_url
    }

    /// `{name: {"id": UUID, "root": DIR}}` as JSON.
    fn collections_json(&self) -> &str {
        &self.collections
    }

    /// The request and task counters as JSON (see `GET /__sim/stats`).
    fn stats_json(&self) -> PyResult<String> {
        let sim = self.sim.lock().expect("emulator lock");
        let sim = sim
            .as_ref()
            .ok_or_else(|| PyRuntimeError::new_err("the emulator was shut down"))?;
        serde_json::to_string(&sim.stats()).map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }

    /// Stops serving (idempotent).
    fn shutdown(&self, py: Python<'_>) {
        let sim = self.sim.lock().expect("emulator lock").take();
        if let Some(sim) = sim {
            py.detach(|| sim.shutdown());
        }
    }
}

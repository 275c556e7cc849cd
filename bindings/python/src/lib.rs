//! `ps_globus._core`: the Rust engine behind the `ps_globus` Python package.
//!
//! Everything Python users touch is in the pure-Python package beside this crate
//! (`python/ps_globus`): ProxyStore connectors at importable paths, exceptions that
//! pickle, the staging and reference functions. This module is their engine: every wait
//! runs off the GIL ([`wait::wait`]) and a process forked after the library started
//! rebuilds what it needs (`ps_globus::internal::ForkLocal`).

// These functions pass the library's own `Error` through unchanged (to become a Python
// exception a moment later); boxing it here would only add an allocation.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use ps_globus::transfer::TransferManager;
use pyo3::prelude::*;

mod aio;
mod connector;
mod emulator;
mod endpoint;
mod errors;
mod exit_gate;
mod fork_local;
mod job;
mod lease;
mod refs;
mod staging;
mod stream;
mod wait;

/// How long interpreter exit waits for results already on their way into Python.
const EXIT_GATE_LIMIT: Duration = Duration::from_secs(5);

/// How long interpreter exit waits for each manager's held-back batches.
const EXIT_FLUSH_LIMIT: Duration = Duration::from_secs(10);

/// Submits every transfer this process holds back for batching (Python's `atexit` calls
/// it, while the interpreter still runs). Returns how many managers did not finish within
/// the limit; a manager that cannot submit at all (a refused login) raises its error,
/// after every other manager was flushed.
#[pyfunction]
fn flush_all(py: Python<'_>) -> PyResult<usize> {
    wait::wait(py, async {
        let mut unfinished = 0;
        let mut first_error = None;
        for manager in TransferManager::running() {
            match tokio::time::timeout(EXIT_FLUSH_LIMIT, manager.flush()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => unfinished += 1,
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(unfinished),
        }
    })
}

/// Flushes every manager at interpreter exit (Python's `atexit`, while the interpreter
/// still runs), after closing the [`exit_gate`]: the reports of what could not be sent (empty when everything went), each
/// said once (the library's own exit hook then stays quiet about it).
#[pyfunction]
fn flush_at_exit(py: Python<'_>) -> PyResult<Vec<String>> {
    py.detach(|| exit_gate::close(EXIT_GATE_LIMIT));
    wait::wait(py, async {
        let mut reports = Vec::new();
        for manager in TransferManager::running() {
            reports.extend(manager.flush_before_exit(EXIT_FLUSH_LIMIT).await);
        }
        Ok(reports)
    })
}

/// How many results of awaitables the exit gate kept out of an exiting interpreter
/// (tests watch it).
#[pyfunction]
fn exit_gate_refusals() -> u64 {
    exit_gate::refused()
}

/// The sites of the configuration file the CLI uses (`$PS_GLOBUS_CONFIG`, `ps-globus
/// site add`), as JSON: `{name: {"collection", "collection_path", "local_path",
/// "host_regex"?}}`.
#[pyfunction]
fn config_sites_json(py: Python<'_>) -> PyResult<String> {
    let settings = ps_globus::Settings::from_env();
    let config =
        ps_globus::config::Config::load(&settings).map_err(|e| errors::to_py_err(py, e))?;
    serde_json::to_string(&config.sites)
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // Long waits are said through Python's logging (`wait::wait`), not `tracing`.
    ps_globus::internal::report_through_host();
    m.add_class::<connector::PyConnector>()?;
    m.add_class::<emulator::PyEmulator>()?;
    m.add_class::<endpoint::PyEndpoint>()?;
    m.add_class::<lease::PyLease>()?;
    m.add_function(wrap_pyfunction!(lease::reap_expired_leases, m)?)?;
    m.add_class::<stream::PyMessagePublisher>()?;
    m.add_class::<stream::PyMessageSubscriber>()?;
    m.add_function(wrap_pyfunction!(stream::default_stream_key_file, m)?)?;
    m.add_function(wrap_pyfunction!(stream::create_stream_key, m)?)?;
    m.add_function(wrap_pyfunction!(flush_all, m)?)?;
    m.add_function(wrap_pyfunction!(flush_at_exit, m)?)?;
    m.add_function(wrap_pyfunction!(exit_gate_refusals, m)?)?;
    m.add_function(wrap_pyfunction!(config_sites_json, m)?)?;
    m.add_function(wrap_pyfunction!(errors::_raise_library_error, m)?)?;
    m.add_function(wrap_pyfunction!(staging::transfer, m)?)?;
    m.add_function(wrap_pyfunction!(job::job_submit, m)?)?;
    m.add_function(wrap_pyfunction!(job::job_watch, m)?)?;
    m.add_function(wrap_pyfunction!(job::job_status, m)?)?;
    m.add_function(wrap_pyfunction!(refs::ref_save, m)?)?;
    m.add_function(wrap_pyfunction!(refs::ref_load, m)?)?;
    m.add_function(wrap_pyfunction!(refs::ref_list, m)?)?;
    m.add_function(wrap_pyfunction!(refs::ref_remove, m)?)?;
    m.add_function(wrap_pyfunction!(refs::ref_import, m)?)?;
    m.add_function(wrap_pyfunction!(refs::ref_string_form, m)?)?;
    Ok(())
}

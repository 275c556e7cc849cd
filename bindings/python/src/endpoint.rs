//! `_core.Endpoint`: an endpoint served from this process, for users' own tests
//! (`ps_globus.testing.endpoint()` wraps it). The command `ps-globus endpoint start` is
//! the way to run one for real.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use ps_globus::connector::endpoint::config::EndpointFileConfig;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tokio::sync::oneshot;

/// A running endpoint until `stop`.
#[pyclass(module = "ps_globus._core", name = "Endpoint", frozen)]
pub struct PyEndpoint {
    uuid: String,
    dir: PathBuf,
    running: Mutex<Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>>,
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
        let error = |e: &dyn std::fmt::Display| PyRuntimeError::new_err(e.to_string());
        let dir = home.join(name);
        if !dir.join("config.toml").exists() {
            let mut config = EndpointFileConfig::new(name, 0).map_err(|e| error(&e))?;
            config.storage.max_object_size = max_object_size;
            ps_globus_endpoint::manage::configure(&home, &config).map_err(|e| error(&e))?;
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = dir.clone();
        let task = ps_globus::internal::handle().spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            if let Err(e) = ps_globus_endpoint::serve::run(&serving, shutdown).await {
                eprintln!("ps_globus endpoint: {e}");
            }
        });
        // Up once its config names its host (serve writes it after binding).
        let config = py.detach(|| {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                if task.is_finished() {
                    return Err("the endpoint stopped at start (see stderr)".to_owned());
                }
                if let Ok(config) = EndpointFileConfig::load(&dir)
                    && config.host.is_some()
                {
                    return Ok(config);
                }
                if std::time::Instant::now() > deadline {
                    return Err("the endpoint did not start within 20 s".to_owned());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let config = config.map_err(|e| error(&e))?;
        Ok(PyEndpoint {
            uuid: config.uuid.to_string(),
            dir,
            running: Mutex::new(Some((stop, task))),
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
    fn stop(&self, py: Python<'_>) {
        let running = self.running.lock().expect("endpoint lock").take();
        if let Some((stop, task)) = running {
            let _ = stop.send(());
            py.detach(|| {
                let _ = ps_globus::block_on(task);
            });
        }
    }
}

//! `_core.MessagePublisher` and `_core.MessageSubscriber`: the library's sealed message
//! channels (`ps_globus::stream::MessageChannel`), under the Python package's ProxyStore
//! stream shims (`ps_globus/stream.py`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ps_globus::connector::{
    ConnectorConfig, GlobusConfig, GlobusConnector, RedisConfig, RedisConnector,
};
use ps_globus::stream::{MessageChannel, MessagePublisher, MessageSubscriber, StreamKey};
use ps_globus::{Error, Settings};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyBytes;
use tokio::sync::Mutex;

use crate::errors::to_py_err;
use crate::fork_local::ForkLocal;
use crate::wait::wait;

/// How long `next` waits when the caller gives no limit: a day, as a stream consumer's.
const DEFAULT_WAIT: Duration = Duration::from_secs(24 * 3600);

/// What builds a channel again (in a forked child): the connector's kind and options,
/// and the key file (`None`: unsealed, Redis only).
#[derive(Clone)]
struct Recipe {
    kind: String,
    options: serde_json::Value,
    key_file: Option<PathBuf>,
}

impl Recipe {
    fn channel(&self) -> ps_globus::Result<MessageChannel> {
        let key = self.key_file.as_deref().map(StreamKey::load).transpose()?;
        let config = ConnectorConfig {
            kind: self.kind.clone(),
            options: self.options.clone(),
        };
        match (self.kind.as_str(), key) {
            (GlobusConnector::KIND, Some(key)) => {
                let globus: GlobusConfig = config.options_as()?;
                let connector = GlobusConnector::builder(globus)
                    .settings(Settings::from_env())
                    .build()?;
                Ok(MessageChannel::Globus(connector, key))
            }
            (GlobusConnector::KIND, None) => Err(Error::invalid_config(
                "Globus stream channel",
                "it needs a key file: its messages are files anyone who can write the \
                 collection could plant",
            )),
            (RedisConnector::KIND, key) => {
                let redis: RedisConfig = config.options_as()?;
                Ok(MessageChannel::Redis(RedisConnector::new(redis)?, key))
            }
            (other, _) => Err(Error::unsupported(
                "stream channels",
                other,
                "use a Globus or Redis connector",
            )),
        }
    }
}

fn recipe(
    py: Python<'_>,
    kind: &str,
    options_json: &str,
    key_file: Option<PathBuf>,
) -> PyResult<Recipe> {
    let options = serde_json::from_str(options_json).map_err(|e| {
        to_py_err(
            py,
            Error::invalid_config_from(&format!("{kind} stream channel"), e),
        )
    })?;
    Ok(Recipe {
        kind: kind.to_owned(),
        options,
        key_file,
    })
}

/// Publishes sealed messages to any topic of one channel.
#[pyclass(module = "ps_globus._core", name = "MessagePublisher", frozen)]
pub struct PyMessagePublisher {
    recipe: Recipe,
    live: ForkLocal<Arc<Mutex<MessagePublisher>>>,
}

impl PyMessagePublisher {
    fn publisher(&self, py: Python<'_>) -> PyResult<Arc<Mutex<MessagePublisher>>> {
        self.live.get(|_| {
            let channel = self.recipe.channel().map_err(|e| to_py_err(py, e))?;
            Ok(Arc::new(Mutex::new(MessagePublisher::new(channel))))
        })
    }
}

#[pymethods]
impl PyMessagePublisher {
    /// A publisher on the channel of a `kind` connector with `options_json`, sealing
    /// with the key in `key_file` (`None`: unsealed, Redis only).
    #[new]
    #[pyo3(signature = (kind, options_json, key_file = None))]
    fn new(
        py: Python<'_>,
        kind: &str,
        options_json: &str,
        key_file: Option<PathBuf>,
    ) -> PyResult<Self> {
        let recipe = recipe(py, kind, options_json, key_file)?;
        let channel = recipe.channel().map_err(|e| to_py_err(py, e))?;
        Ok(PyMessagePublisher {
            recipe,
            live: ForkLocal::new(Arc::new(Mutex::new(MessagePublisher::new(channel)))),
        })
    }

    /// Publishes `message` to `topic`; its position.
    fn send(&self, py: Python<'_>, topic: String, message: PyBackedBytes) -> PyResult<u64> {
        let publisher = self.publisher(py)?;
        wait(py, async move {
            publisher.lock().await.send(&topic, &message).await
        })
    }

    /// Submits the message files still batching (Globus).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let publisher = self.publisher(py)?;
        wait(py, async move { publisher.lock().await.close().await })
    }
}

/// Reads one topic's sealed messages in order.
#[pyclass(module = "ps_globus._core", name = "MessageSubscriber", frozen)]
pub struct PyMessageSubscriber {
    recipe: Recipe,
    topic: String,
    live: ForkLocal<Arc<Mutex<MessageSubscriber>>>,
}

impl PyMessageSubscriber {
    fn subscriber(&self, py: Python<'_>) -> PyResult<Arc<Mutex<MessageSubscriber>>> {
        self.live.get(|parents| {
            // The child continues where the parent was when it forked.
            let position = parents.try_lock().map(|s| s.position()).unwrap_or(0);
            let channel = self.recipe.channel().map_err(|e| to_py_err(py, e))?;
            let subscriber = MessageSubscriber::new(channel, &self.topic, position)
                .map_err(|e| to_py_err(py, e))?;
            Ok(Arc::new(Mutex::new(subscriber)))
        })
    }
}

#[pymethods]
impl PyMessageSubscriber {
    /// A subscriber of `topic` on the channel (as the publisher's), from `position`.
    #[new]
    #[pyo3(signature = (kind, options_json, topic, key_file = None, position = 0))]
    fn new(
        py: Python<'_>,
        kind: &str,
        options_json: &str,
        topic: String,
        key_file: Option<PathBuf>,
        position: u64,
    ) -> PyResult<Self> {
        let recipe = recipe(py, kind, options_json, key_file)?;
        let channel = recipe.channel().map_err(|e| to_py_err(py, e))?;
        let subscriber =
            MessageSubscriber::new(channel, &topic, position).map_err(|e| to_py_err(py, e))?;
        Ok(PyMessageSubscriber {
            recipe,
            topic,
            live: ForkLocal::new(Arc::new(Mutex::new(subscriber))),
        })
    }

    /// The next genuine message, waiting up to `timeout_s` seconds (default: a day);
    /// `None` if none came.
    #[pyo3(signature = (timeout_s = None))]
    fn next(&self, py: Python<'_>, timeout_s: Option<f64>) -> PyResult<Option<Py<PyBytes>>> {
        let limit = wait_limit(timeout_s)?;
        let subscriber = self.subscriber(py)?;
        let message = wait(py, async move { subscriber.lock().await.next(limit).await })?;
        Ok(message.map(|m| PyBytes::new(py, &m).unbind()))
    }

    /// The next genuine message and those after it that are here already (up to
    /// `max`), waiting up to `timeout_s` seconds for the first (default: a day); empty if
    /// none came.
    #[pyo3(signature = (timeout_s = None, max = 256))]
    fn next_batch(
        &self,
        py: Python<'_>,
        timeout_s: Option<f64>,
        max: usize,
    ) -> PyResult<Vec<Py<PyBytes>>> {
        let limit = wait_limit(timeout_s)?;
        let subscriber = self.subscriber(py)?;
        let batch = wait(py, async move {
            subscriber.lock().await.next_batch(limit, max.max(1)).await
        })?;
        Ok(batch.iter().map(|m| PyBytes::new(py, m).unbind()).collect())
    }

    /// How many messages were dropped because they did not open under the key.
    #[getter]
    fn rejected(&self, py: Python<'_>) -> PyResult<u64> {
        let subscriber = self.subscriber(py)?;
        wait(py, async move { Ok(subscriber.lock().await.rejected()) })
    }

    /// The position of the next message.
    #[getter]
    fn position(&self, py: Python<'_>) -> PyResult<u64> {
        let subscriber = self.subscriber(py)?;
        wait(py, async move { Ok(subscriber.lock().await.position()) })
    }
}

/// How long a read waits: `timeout_s` seconds, or a day.
fn wait_limit(timeout_s: Option<f64>) -> PyResult<Duration> {
    match timeout_s {
        Some(s) if s.is_finite() && s >= 0.0 => Ok(Duration::from_secs_f64(s.min(1e9))),
        Some(s) => Err(pyo3::exceptions::PyValueError::new_err(format!(
            "timeout_s must be a non-negative number of seconds, not {s}"
        ))),
        None => Ok(DEFAULT_WAIT),
    }
}

/// The default key file of sealed stream channels (`stream.key` in the state directory).
#[pyfunction]
pub fn default_stream_key_file() -> PathBuf {
    StreamKey::default_path(&Settings::from_env())
}

/// Makes a new key file at `path` (which must not exist), readable by its owner only.
#[pyfunction]
pub fn create_stream_key(py: Python<'_>, path: PathBuf) -> PyResult<PathBuf> {
    let key = StreamKey::create(&path).map_err(|e| to_py_err(py, e))?;
    Ok(key.path().to_owned())
}

//! `endpoint`: objects held by a long-running endpoint process at each site, fetched from
//! the endpoint that holds them in one round trip (ProxyStore's Endpoint store, and its
//! REST API).
//!
//! A connector names the endpoints it may use by id. Each process finds its **home**
//! endpoint among them in its own endpoint directory (`$PROXYSTORE_HOME`, else
//! `$XDG_DATA_HOME/proxystore`, else `~/.local/share/proxystore`): the first configured,
//! running one that answers with its id. Every request goes to the home endpoint; a key
//! names the endpoint that holds the object, and the home endpoint fetches it from that
//! peer (through the relay it is configured with). A key names an endpoint **by id**,
//! never by address: where the home endpoint is comes from the local directory, and where
//! a peer is comes from the home endpoint's relay.
//!
//! **Ways in.** Where the endpoint's directory has its Unix socket, the connector uses it
//! (the endpoint checks the caller's uid with `SO_PEERCRED`); otherwise plain HTTP to the
//! loopback address in its `config.toml`, as ProxyStore's client does (the endpoint then
//! checks the connecting socket's owner in `/proc/net/tcp`). HTTP proxies are never used.
//!
//! **Errors.** A missing object is `None`. A peer that cannot be reached within the
//! endpoint's deadline is [`Error::Unreachable`] naming the peer's id; an object over
//! the endpoint's size limit is [`ServerError`] with code `413`.

pub mod config;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::{Capabilities, Connector, ConnectorConfig, Key, PutOptions};
use crate::error::{Error, ErrorKind, Result, ServerError};
use crate::runtime::in_library_context;

/// The response header in which our endpoint says what kind of failure a 500 is (its
/// body stays ProxyStore's text).
pub const ERROR_HEADER: &str = "x-ps-globus-error";

/// The [`ERROR_HEADER`] value of a peer that could not be reached in time.
pub const PEER_UNREACHABLE: &str = "peer-unreachable";

/// How long the probe of one configured endpoint may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The default time limit of one request (a large object's whole body included).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// An endpoint connector's settings: its config, as a proxy carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// The endpoints this connector may use, by id; each process's home is the first of
    /// them running in its endpoint directory.
    pub endpoints: Vec<Uuid>,
    /// The endpoint directory to look in (default: this process's own, see the module
    /// docs). From data it is never followed: a proxy cannot point a process at
    /// configuration files it planted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxystore_dir: Option<PathBuf>,
    /// How long one request may take, in milliseconds (default 300 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// The home endpoint this process talks to.
#[derive(Debug)]
struct Home {
    http: reqwest::Client,
    /// `http://host:port/`, or `http://endpoint/` over the Unix socket.
    base: String,
    uuid: Uuid,
}

/// What a key of this connector carries besides the object id.
#[derive(Serialize, Deserialize)]
struct KeyMeta {
    /// The endpoint that holds the object.
    endpoint: Uuid,
    /// The object is empty: ProxyStore's REST API refuses an empty body, so the endpoint
    /// holds [`EMPTY_MARKER`] for it (every other object is stored byte for byte, as
    /// ProxyStore's own client would read it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    empty: bool,
}

/// What the endpoint holds for an empty object.
const EMPTY_MARKER: &[u8] = b"\0";

/// A connector whose objects live in endpoints (ProxyStore's Endpoint store).
///
/// ```no_run
/// use ps_globus::connector::{Connector, EndpointConfig, EndpointConnector, PutOptions};
/// # ps_globus::block_on(async {
/// let me: uuid::Uuid = "6f6b8e1e-4b1e-4e55-9a63-8f0e8a7bde21".parse().unwrap();
/// let connector = EndpointConnector::new(EndpointConfig {
///     endpoints: vec![me],
///     proxystore_dir: None,
///     timeout_ms: None,
/// })?;
/// let key = connector.put(b"small and near", &PutOptions::default()).await?;
/// assert_eq!(connector.get(&key).await?.as_deref(), Some(&b"small and near"[..]));
/// # Ok::<(), ps_globus::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct EndpointConnector {
    config: EndpointConfig,
    dir: PathBuf,
    home: OnceCell<Arc<Home>>,
    /// Rebuilt from data: evicts only objects it minted.
    provenance: super::Provenance,
}

impl EndpointConnector {
    /// The kind name in keys and configs.
    pub const KIND: &'static str = "endpoint";

    /// A connector over `config.endpoints`. Finds its home endpoint at the first request.
    pub fn new(config: EndpointConfig) -> Result<Self> {
        if config.endpoints.is_empty() {
            return Err(Error::invalid_config(
                "endpoint connector",
                "it names no endpoint: give the id of at least one (`ps-globus endpoint list`)",
            ));
        }
        let dir = config
            .proxystore_dir
            .clone()
            .unwrap_or_else(|| crate::Settings::global().proxystore_home.clone());
        Ok(EndpointConnector {
            config,
            dir,
            home: OnceCell::new(),
            provenance: super::Provenance::Local,
        })
    }

    /// Rebuilds from a config; from data, [`trust::admit`](super::trust::admit) has
    /// already replaced its directory with this process's own.
    pub(super) fn build(
        config: &ConnectorConfig,
        provenance: &super::Provenance,
    ) -> Result<Arc<dyn Connector>> {
        Ok(Arc::new(EndpointConnector {
            provenance: provenance.clone(),
            ..Self::new(config.options_as()?)?
        }))
    }

    /// The home endpoint's id (found now if not yet).
    pub async fn home_endpoint(&self) -> Result<Uuid> {
        Ok(self.home().await?.uuid)
    }

    fn timeout(&self) -> Duration {
        self.config
            .timeout_ms
            .map_or(DEFAULT_TIMEOUT, Duration::from_millis)
    }

    async fn home(&self) -> Result<Arc<Home>> {
        self.home
            .get_or_try_init(|| in_library_context(self.discover()))
            .await
            .cloned()
    }

    /// Finds the home endpoint: for each endpoint of ours configured in the directory
    /// with a host (in the order the config lists them), probe `GET /endpoint` and take
    /// the first that answers with its own id. A refused or silent one is skipped, not
    /// fatal (ProxyStore's client aborts the search on the first refused connection).
    async fn discover(&self) -> Result<Arc<Home>> {
        let mut tried = Vec::new();
        let configs = config::configs_in(&self.dir, &mut tried);
        for wanted in &self.config.endpoints {
            for (dir, file) in configs.iter().filter(|(_, c)| &c.uuid == wanted) {
                let Some(host) = &file.host else {
                    tried.push(format!("{} ({wanted}) is not running", file.name));
                    continue;
                };
                let socket = dir.join(config::SOCKET_FILE);
                let (http, base) = if socket.exists() {
                    (self.client(Some(socket))?, "http://endpoint/".to_owned())
                } else {
                    let host = if host.contains(':') {
                        format!("[{host}]")
                    } else {
                        host.clone()
                    };
                    (self.client(None)?, format!("http://{host}:{}/", file.port))
                };
                match probe(&http, &base).await {
                    Ok(uuid) if uuid == *wanted => {
                        return Ok(Arc::new(Home { http, base, uuid }));
                    }
                    Ok(other) => tried.push(format!(
                        "{} at {base} answers as {other}, not {wanted}",
                        file.name
                    )),
                    Err(e) => tried.push(format!("{} at {base}: {e}", file.name)),
                }
            }
        }
        let ids: Vec<String> = self.config.endpoints.iter().map(Uuid::to_string).collect();
        Err(Error::new(
            ErrorKind::NotFound,
            format!(
                "no running endpoint among [{}] in {}: start one there with \
                 `ps-globus endpoint start NAME` (or set PROXYSTORE_HOME to the directory \
                 that has it){}",
                ids.join(", "),
                self.dir.display(),
                if tried.is_empty() {
                    String::new()
                } else {
                    format!("; tried: {}", tried.join("; "))
                }
            ),
        ))
    }

    fn client(&self, socket: Option<PathBuf>) -> Result<reqwest::Client> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(PROBE_TIMEOUT)
            .timeout(self.timeout());
        if let Some(socket) = socket {
            builder = builder.unix_socket(socket);
        }
        builder
            .build()
            .map_err(|e| Error::invalid_config_from("endpoint connector", e))
    }

    /// Sends one request for `key` (an object id) at `endpoint` to the home endpoint.
    async fn request(
        &self,
        operation: &'static str,
        method: reqwest::Method,
        key: &str,
        endpoint: Uuid,
        body: Option<Bytes>,
    ) -> Result<reqwest::Response> {
        let home = self.home().await?;
        let url = format!("{}{}", home.base, operation.trim_start_matches('/'));
        let endpoint = endpoint.to_string();
        let mut request = home
            .http
            .request(method, &url)
            .query(&[("key", key), ("endpoint", endpoint.as_str())]);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(body);
        }
        let response = in_library_context(request.send()).await.map_err(|e| {
            if e.is_timeout() {
                Error::timeout(
                    format!("endpoint {} to answer {operation}", home.uuid),
                    self.timeout(),
                )
            } else {
                Error::unreachable(&home.base, e, 0)
            }
        })?;
        let status = response.status();
        if status.is_success() || status == reqwest::StatusCode::NOT_FOUND {
            return Ok(response);
        }
        let kind = response
            .headers()
            .get(ERROR_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let message = in_library_context(response.text())
            .await
            .unwrap_or_default();
        if kind.as_deref() == Some(PEER_UNREACHABLE) {
            return Err(Error::new(ErrorKind::Unreachable, message));
        }
        Err(Error::from(ServerError {
            service: "endpoint",
            url: home.base.clone(),
            operation: operation.into(),
            code: status.as_u16().to_string(),
            message,
        }))
    }

    /// The object id of `key` and what its key says of it. A key without metadata names
    /// an object at the home endpoint (as a ProxyStore request without `endpoint` does).
    async fn locate(&self, key: &Key) -> Result<(String, KeyMeta)> {
        key.check_kind(Self::KIND)?;
        let meta = match key.meta() {
            Some(_) => key.meta_as()?,
            None => KeyMeta {
                endpoint: self.home().await?.uuid,
                empty: false,
            },
        };
        Ok((key.id().to_owned(), meta))
    }
}

/// `GET /endpoint` at `base`: the id it answers with.
async fn probe(http: &reqwest::Client, base: &str) -> Result<Uuid> {
    #[derive(Deserialize)]
    struct Answer {
        uuid: Uuid,
    }
    let answer = tokio::time::timeout(PROBE_TIMEOUT, async {
        http.get(format!("{base}endpoint"))
            .send()
            .await?
            .error_for_status()?
            .json::<Answer>()
            .await
    })
    .await
    .map_err(|_| Error::timeout(format!("the endpoint at {base} to answer"), PROBE_TIMEOUT))?
    .map_err(|e| Error::unreachable(base, e, 0))?;
    Ok(answer.uuid)
}

#[async_trait]
impl Connector for EndpointConnector {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    fn config(&self) -> ConnectorConfig {
        ConnectorConfig::new(Self::KIND, &self.config).expect("an endpoint config serializes")
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::in_memory().outliving_instances()
    }

    async fn put(&self, data: &[u8], _options: &PutOptions) -> Result<Key> {
        let home = self.home().await?.uuid;
        let empty = data.is_empty();
        let key = Key::generate(Self::KIND).with_meta(KeyMeta {
            endpoint: home,
            empty,
        })?;
        let body = Bytes::copy_from_slice(if empty { EMPTY_MARKER } else { data });
        self.request("set", reqwest::Method::POST, key.id(), home, Some(body))
            .await?;
        Ok(key)
    }

    async fn get(&self, key: &Key) -> Result<Option<Bytes>> {
        let (id, meta) = self.locate(key).await?;
        let response = self
            .request("get", reqwest::Method::GET, &id, meta.endpoint, None)
            .await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let bytes = in_library_context(response.bytes()).await.map_err(|e| {
            Error::with_source(
                ErrorKind::Unreachable,
                "reading an object from the endpoint",
                e,
            )
        })?;
        Ok(Some(if meta.empty { Bytes::new() } else { bytes }))
    }

    async fn exists(&self, key: &Key) -> Result<bool> {
        #[derive(Deserialize)]
        struct Answer {
            exists: bool,
        }
        let (id, meta) = self.locate(key).await?;
        let response = self
            .request("exists", reqwest::Method::GET, &id, meta.endpoint, None)
            .await?;
        let answer: Answer = in_library_context(response.json()).await.map_err(|e| {
            Error::with_source(ErrorKind::Service, "the endpoint's exists answer", e)
        })?;
        Ok(answer.exists)
    }

    async fn evict(&self, key: &Key) -> Result<()> {
        let (id, meta) = self.locate(key).await?;
        super::trust::check_change(&self.provenance, None, &id, "an eviction")?;
        self.request("evict", reqwest::Method::POST, &id, meta.endpoint, None)
            .await?;
        Ok(())
    }
}

//! Running one endpoint: its storage, its REST API (loopback TCP, as ProxyStore's clients
//! expect, and a Unix socket for ours), and, with a relay configured, its peering.
//!
//! While it runs, its `config.toml` carries `host` (so clients find it) and its directory
//! holds `daemon.pid` and `endpoint.sock`; a clean stop (SIGTERM or SIGINT) removes all
//! three, so a stopped endpoint is never probed by a client (ProxyStore's `stop` leaves
//! `host`, and its client then fails with a connection error instead of going on).

use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ps_globus::auth::{Authorizer, ClientCredentialsAuthorizer};
use ps_globus::connector::endpoint::config::{EndpointFileConfig, SOCKET_FILE};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::oneshot;
use tokio::time::Instant;
use uuid::Uuid;

use crate::manage::{self, PID_FILE};
use crate::owner::{TcpOwners, UnixOwners, own_uid};
use crate::peer::{Peers, tls};
use crate::relay::auth::PROXYSTORE_RELAY_SCOPE;
use crate::relay::client::{Registration, RelayClient};
use crate::relay::transport::RelayAddress;
use crate::rest::{self, Api};
use crate::storage::{DATABASE_FILE, Storage};

/// The default memory budget: 1 GiB of objects.
pub const DEFAULT_MEMORY_BUDGET: u64 = 1 << 30;

/// The default deadline of a request to a peer.
pub const DEFAULT_PEER_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an endpoint could not run.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ServeError(pub String);

fn fail(what: &str, e: impl std::fmt::Display) -> ServeError {
    ServeError(format!("{what}: {e}"))
}

/// Runs the endpoint configured in `dir` until `shutdown` completes.
pub async fn run(
    dir: &Path,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    run_telling(dir, shutdown, None).await
}

/// [`run`], sending the endpoint's id on `ready` once it is listening.
async fn run_telling(
    dir: &Path,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: Option<oneshot::Sender<Uuid>>,
) -> Result<(), ServeError> {
    let mut config = EndpointFileConfig::load(dir).map_err(|e| ServeError(e.to_string()))?;
    manage::claim_pid_file(dir)?;
    let outcome = serve(dir, &mut config, shutdown, ready).await;
    // Whatever happened, leave the directory saying "not running".
    config.host = None;
    if let Err(e) = config.save(dir) {
        tracing::error!("clearing host in {}: {e}", dir.display());
    }
    let _ = std::fs::remove_file(dir.join(SOCKET_FILE));
    let _ = std::fs::remove_file(dir.join(PID_FILE));
    outcome
}

async fn serve(
    dir: &Path,
    config: &mut EndpointFileConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: Option<oneshot::Sender<Uuid>>,
) -> Result<(), ServeError> {
    let ext = config.ps_globus.clone();
    if config.relay.is_some() && ext.relay_address.is_none() {
        tracing::warn!(
            "the [relay] table (ProxyStore's websocket relay) is not ours: this endpoint serves \
             its own objects only; set relay_address in its [ps_globus] table to peer"
        );
    }
    if config.storage.database_path.is_some() {
        tracing::warn!(
            "[storage] database_path is ProxyStore's; this endpoint keeps its objects in {}",
            dir.join(DATABASE_FILE).display()
        );
    }
    let storage = Storage::open(
        &dir.join(DATABASE_FILE),
        ext.memory_budget.unwrap_or(DEFAULT_MEMORY_BUDGET),
        config.max_object_size(),
    )
    .map_err(|e| ServeError(e.to_string()))?;

    let rest_host = ext.rest_host.clone().unwrap_or_else(|| "127.0.0.1".into());
    let tcp = TcpListener::bind((rest_host.as_str(), config.port))
        .await
        .map_err(|e| fail(&format!("listening on {rest_host}:{}", config.port), e))?;
    let rest_address = tcp.local_addr().map_err(|e| fail("REST address", e))?;
    let socket_path = dir.join(SOCKET_FILE);
    let _ = std::fs::remove_file(&socket_path);
    let unix = UnixListener::bind(&socket_path)
        .map_err(|e| fail(&socket_path.display().to_string(), e))?;
    std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| fail(&socket_path.display().to_string(), e))?;

    let peers = match &ext.relay_address {
        Some(address) => Some(start_peering(config, address, storage.clone()).await?),
        None => None,
    };
    let api = Api {
        uuid: config.uuid,
        name: config.name.clone(),
        storage,
        peers,
        owner: own_uid(),
        allow_remote_clients: ext.allow_remote_clients,
    };
    let router = rest::router(api);

    config.port = rest_address.port();
    config.host = Some(rest_address.ip().to_string());
    config.save(dir).map_err(|e| ServeError(e.to_string()))?;
    tracing::info!(uuid = %config.uuid, name = %config.name, rest = %rest_address, "endpoint running");
    if let Some(ready) = ready {
        let _ = ready.send(config.uuid);
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let tcp_server = axum::serve(
        TcpOwners(tcp),
        router
            .clone()
            .into_make_service_with_connect_info::<crate::owner::Caller>(),
    )
    .with_graceful_shutdown(stopped(stop_rx.clone()));
    let unix_server = axum::serve(
        UnixOwners(unix),
        router.into_make_service_with_connect_info::<crate::owner::Caller>(),
    )
    .with_graceful_shutdown(stopped(stop_rx));
    let (a, b) = tokio::join!(tcp_server, unix_server);
    a.and(b).map_err(|e| fail("serving", e))
}

/// The token source for the relay, as configured.
fn relay_token(config: &EndpointFileConfig) -> Result<Option<Arc<dyn Authorizer>>, ServeError> {
    match config.ps_globus.relay_auth.as_deref().unwrap_or("globus") {
        "none" => Ok(None),
        "globus" => {
            let settings = ps_globus::Settings::global();
            let (Some(id), Some(secret)) = (&settings.client_id, &settings.client_secret) else {
                return Err(ServeError(
                    "the relay needs a Globus Auth token: set PS_GLOBUS_CLIENT_ID and \
                     PS_GLOBUS_CLIENT_SECRET (or PROXYSTORE_GLOBUS_CLIENT_ID and _SECRET) to a \
                     service identity, or relay_auth = \"none\" for a relay that checks nothing"
                        .into(),
                ));
            };
            let scope = config
                .ps_globus
                .relay_scope
                .clone()
                .unwrap_or_else(|| PROXYSTORE_RELAY_SCOPE.into());
            let authorizer = ClientCredentialsAuthorizer::new(
                &settings.auth_url,
                id.clone(),
                secret.clone(),
                scope,
            )
            .map_err(|e| ServeError(e.to_string()))?;
            Ok(Some(Arc::new(authorizer)))
        }
        other => Err(ServeError(format!(
            "relay_auth {other:?} is not globus or none"
        ))),
    }
}

/// Listens for peers, registers with the relay and answers circuits.
async fn start_peering(
    config: &EndpointFileConfig,
    relay: &str,
    storage: Storage,
) -> Result<Arc<Peers>, ServeError> {
    let ext = &config.ps_globus;
    let token = relay_token(config)?;
    let relay = RelayAddress::parse(
        relay,
        ext.relay_ca_file.as_deref().map(Path::new),
        token.is_some(),
    )
    .map_err(ServeError)?;
    let listen = ext
        .peer_listen
        .clone()
        .unwrap_or_else(|| "0.0.0.0:0".into());
    let listener = TcpListener::bind(&listen)
        .await
        .map_err(|e| fail(&format!("listening for peers on {listen}"), e))?;
    let bound = listener.local_addr().map_err(|e| fail("peer address", e))?;
    let addresses = if ext.peer_advertise.is_empty() {
        advertised(bound)
    } else {
        ext.peer_advertise.clone()
    };
    let identity = tls::Identity::generate().map_err(|e| fail("making the TLS certificate", e))?;
    let registration = Registration {
        uuid: config.uuid,
        name: config.name.clone(),
        fingerprint: identity.fingerprint().to_owned(),
        addresses,
    };
    let (client, mut incoming) = RelayClient::start(relay, registration, token);
    let timeout = ext
        .peer_timeout_s
        .map_or(DEFAULT_PEER_TIMEOUT, Duration::from_secs);
    let peers = Arc::new(Peers::new(
        config.uuid,
        identity,
        client.clone(),
        storage,
        timeout,
    ));

    let serving = peers.clone();
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(
                        serving
                            .clone()
                            .serve_connection(crate::peer::direct(stream)),
                    );
                }
                Err(e) => {
                    tracing::warn!("accepting a peer: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    let answering = peers.clone();
    tokio::spawn(async move {
        while let Some((circuit, from)) = incoming.recv().await {
            let peers = answering.clone();
            let relay = client.clone();
            tokio::spawn(async move {
                match relay
                    .join(&circuit, Instant::now() + Duration::from_secs(10))
                    .await
                {
                    Ok(stream) => peers.serve_connection(stream).await,
                    Err(e) => tracing::warn!(%from, "joining a circuit: {e}"),
                }
            });
        }
    });
    Ok(peers)
}

/// Where peers are told to dial a listener bound to `bound`: that address when it is one
/// host's; for a wildcard, this host's name's addresses, then loopback (a peer on this
/// host; one elsewhere fails the certificate pin there at once and moves on).
fn advertised(bound: SocketAddr) -> Vec<String> {
    if !bound.ip().is_unspecified() {
        return vec![bound.to_string()];
    }
    let port = bound.port();
    let name = ps_globus::internal::host_name();
    let mut found: Vec<String> = (name.as_str(), port)
        .to_socket_addrs()
        .into_iter()
        .flatten()
        .filter(|a| a.is_ipv4() && !a.ip().is_loopback())
        .map(|a| a.to_string())
        .collect();
    found.push(format!("127.0.0.1:{port}"));
    found.dedup();
    found
}

/// An endpoint served by this process on the library's runtime (the Python package's
/// `ps_globus.testing.endpoint()`, and tests); stopped when dropped.
#[derive(Debug)]
pub struct InProcess {
    /// The endpoint's id.
    pub uuid: Uuid,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), ServeError>>>,
}

impl InProcess {
    /// Serves the endpoint configured in `dir`, returning once it listens (blocks the
    /// calling thread: call it outside async code, or from a blocking section).
    pub fn start(dir: &Path) -> Result<InProcess, ServeError> {
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready, listening) = oneshot::channel();
        let dir = dir.to_owned();
        let task = ps_globus::internal::handle().spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            run_telling(&dir, shutdown, Some(ready)).await
        });
        match ps_globus::block_on(listening) {
            Ok(uuid) => Ok(InProcess {
                uuid,
                stop: Some(stop),
                task: Some(task),
            }),
            // It ended before listening: its own error says why.
            Err(_) => Err(ps_globus::block_on(task)
                .map_err(|e| ServeError(format!("the endpoint's task: {e}")))?
                .err()
                .unwrap_or_else(|| ServeError("the endpoint stopped at start".into()))),
        }
    }

    /// Stops serving and waits until it has (its objects stay in its directory).
    pub fn stop(&mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => ps_globus::block_on(task)
                .map_err(|e| ServeError(format!("the endpoint's task: {e}")))?,
            None => Ok(()),
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::error!("stopping an in-process endpoint: {e}");
        }
    }
}

//! A local emulator of the Globus Transfer and Auth APIs.
//!
//! Collections are local directories; tasks really copy files (streamed, written in
//! place); tasks follow Globus's lifecycle, concurrency limits and latency; faults can be
//! injected and replay from a seed. It is faithful enough for the official Python
//! globus-sdk and globus-cli to run against it unmodified, so users can develop
//! workflows offline and our own tests exercise everything Globus-related without
//! network. `ps-globus sim serve` is the command-line face of [`Simulator`].
//!
//! ```no_run
//! use ps_globus_sim::{SimConfig, Simulator};
//! let mut config = SimConfig::default();
//! config.static_token = Some("dev-token".into());
//! config.collections.insert("laptop".into(), ps_globus_sim::CollectionConfig {
//!     root: "/tmp/laptop".into(),
//!     ..Default::default()
//! });
//! let sim = Simulator::start(config)?;
//! println!("Transfer API at {}", sim.transfer_url());
//! # Ok::<(), ps_globus::Error>(())
//! ```

// The endpoint document is one large `json!` literal.
#![recursion_limit = "256"]
#![warn(missing_docs)]

mod auth;
mod checksum;
mod config;
pub mod demo;
mod engine;
mod faults;
mod https;
mod paths;
mod persist;
mod stats;
mod tasks;
mod transfer_api;
mod two_sites;

pub use config::{CollectionConfig, FaultConfig, FaultKind, SimConfig, parse_rate};
pub use stats::SimStats;
pub use transfer_api::check_transfer_document;

/// The emulator's fuzz targets, by name (the library's are `ps_globus::fuzzing::TARGETS`):
/// what `scripts/fuzz` runs and the corpus test replays. Not a stable API.
#[doc(hidden)]
pub const FUZZ_TARGETS: &[(&str, ps_globus::fuzzing::Target)] =
    &[("transfer_document", transfer_document)];

/// A transfer document as the emulator receives it: checked without a panic.
#[doc(hidden)]
pub fn transfer_document(data: &[u8]) {
    let _ = check_transfer_document(data);
}
pub use two_sites::TwoSites;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use faults::HttpFault;
use ps_globus::{Error, Result};
use transfer_api::ApiError;

/// A collection as the emulator serves it.
pub(crate) struct Collection {
    pub name: String,
    pub id: Uuid,
    /// Canonical local root.
    pub root: PathBuf,
    pub config: CollectionConfig,
    /// Its HTTPS origin (`http://127.0.0.1:PORT`), unless HTTPS is disabled for it.
    pub https_server: Option<String>,
}

impl Collection {
    /// Where `~` leads: the declared `default_directory`, normalised, or `/`.
    pub(crate) fn home(&self) -> String {
        self.config
            .default_directory
            .as_deref()
            .and_then(|d| ps_globus::internal::collection_path(d).ok())
            .unwrap_or_else(|| "/".into())
    }

    /// Resolves a collection path inside this collection (see [`paths::resolve_from`]).
    pub(crate) fn resolve(
        &self,
        path: &str,
    ) -> std::result::Result<paths::Resolved, paths::Escape> {
        paths::resolve_from(&self.root, &self.home(), path)
    }

    /// Whether its storage can compute checksums with `algorithm`.
    pub(crate) fn supports_checksum(&self, algorithm: &str) -> bool {
        self.config
            .checksum_algorithms
            .as_ref()
            .is_none_or(|all| all.iter().any(|a| a.eq_ignore_ascii_case(algorithm)))
    }
}

/// The id an emulated collection called `name` always has.
///
/// ```
/// let id = ps_globus_sim::collection_id("laptop");
/// assert_eq!(id, ps_globus_sim::collection_id("laptop"));
/// assert_eq!(id.get_version_num(), 5);
/// ```
pub fn collection_id(name: &str) -> Uuid {
    Uuid::new_v5(
        &Uuid::NAMESPACE_URL,
        format!("ps-globus-sim:collection:{name}").as_bytes(),
    )
}

/// Everything the routes share.
pub(crate) struct SimState {
    pub config: SimConfig,
    pub base_url: String,
    pub collections: Vec<Arc<Collection>>,
    pub bandwidth: Option<u64>,
    /// The link every running task copies through (`link_bandwidth`).
    pub link: std::sync::Mutex<engine::Bucket>,
    pub auth: auth::AuthState,
    pub tasks: tasks::TaskTable,
    pub faults: faults::Faults,
    pub stats: stats::Stats,
    pub log_requests: bool,
    /// The state file's journal, with `--state FILE`.
    pub journal: Option<persist::Journal>,
}

impl SimState {
    /// Saves `task` as it stands now, if the emulator keeps a state file (a submission
    /// or an outcome the service has answered for must survive a restart). A failure is
    /// reported; the next save of the task tries again.
    pub(crate) fn record(&self, task: &tasks::TaskHandle) {
        if let Some(journal) = &self.journal
            && let Err(e) = journal.record(task)
        {
            eprintln!("ps-globus sim: saving task {} failed: {e}", task.id);
        }
    }

    pub(crate) fn collection_by_id(&self, id: &str) -> Option<Arc<Collection>> {
        let id = Uuid::parse_str(id).ok()?;
        self.collections.iter().find(|c| c.id == id).cloned()
    }
}

/// A collection of a running emulator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimCollection {
    /// Its id (stable across restarts: [`collection_id`]).
    pub id: Uuid,
    /// The local directory it serves.
    pub root: PathBuf,
    /// Its HTTPS origin (`http://127.0.0.1:PORT`), unless HTTPS is disabled for it.
    pub https_server: Option<String>,
}

/// A running emulator: on its own runtime thread, until [`shutdown`](Self::shutdown) or drop.
pub struct Simulator {
    url: String,
    collections: BTreeMap<String, SimCollection>,
    state: Arc<SimState>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("url", &self.url)
            .field("collections", &self.collections)
            .finish()
    }
}

impl Simulator {
    /// Starts an emulator; it accepts connections when this returns.
    pub fn start(config: SimConfig) -> Result<Simulator> {
        Self::start_with_logging(config, false)
    }

    /// [`start`](Self::start), logging one line per request to stderr (what `sim serve` does).
    pub fn start_with_logging(config: SimConfig, log_requests: bool) -> Result<Simulator> {
        let invalid = |message: String| Error::invalid_config("emulator", message);
        config.validate().map_err(invalid)?;
        let listener = std::net::TcpListener::bind(config.listen)
            .map_err(|e| Error::io("listen on", config.listen.to_string(), e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("listen on", config.listen.to_string(), e))?;
        let address = listener
            .local_addr()
            .map_err(|e| Error::io("listen on", config.listen.to_string(), e))?;
        let url = format!("http://{address}/");
        let (collections, public, https_listeners) = open_collections(&config)?;
        auth::warm_up_keys();
        let tasks = tasks::TaskTable::default();
        let (journal, unfinished) = restore(&config, &tasks)?;
        let state = Arc::new(SimState {
            bandwidth: config.bandwidth_bytes_per_s().map_err(invalid)?,
            link: std::sync::Mutex::new(engine::Bucket::new(
                config.link_bandwidth_bytes_per_s().map_err(invalid)?,
            )),
            auth: auth::AuthState::new(&config),
            tasks,
            faults: faults::Faults::new(&config),
            stats: stats::Stats::default(),
            base_url: url.clone(),
            collections,
            config,
            log_requests,
            journal,
        });
        let keeper = Arc::clone(&state);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let router = router(Arc::clone(&state));
        let thread = std::thread::Builder::new()
            .name("ps-globus-sim".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("ps-globus-sim")
                    .enable_all()
                    .build()
                    .expect("emulator runtime");
                runtime.block_on(async move {
                    let with_https = keeper
                        .collections
                        .iter()
                        .filter(|c| c.https_server.is_some());
                    for (c, listener) in with_https.zip(https_listeners) {
                        https::serve(Arc::clone(&keeper), Arc::clone(c), listener);
                    }
                    if keeper.journal.is_some() {
                        for task in unfinished {
                            tokio::spawn(engine::run(Arc::clone(&keeper), task));
                        }
                        tokio::spawn(persist::keep_saved(Arc::clone(&keeper)));
                    }
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("emulator listener");
                    let served = axum::serve(listener, router).with_graceful_shutdown(async {
                        let _ = stop_rx.await;
                    });
                    if let Err(e) = served.await {
                        eprintln!("ps-globus sim: server stopped: {e}");
                    }
                    for task in keeper.tasks.unfinished() {
                        keeper.record(&task);
                    }
                });
                // In-flight tasks are dropped with the runtime.
                runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            })
            .map_err(|e| Error::io("start the emulator thread", "ps-globus-sim", e))?;
        Ok(Simulator {
            url,
            collections: public,
            state,
            shutdown: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The Transfer service root (`http://127.0.0.1:PORT/`), as `PS_GLOBUS_TRANSFER_URL`
    /// and `GLOBUS_SDK_SERVICE_URL_TRANSFER` want it.
    pub fn transfer_url(&self) -> &str {
        &self.url
    }

    /// The Auth service root (the same server).
    pub fn auth_url(&self) -> &str {
        &self.url
    }

    /// The settings it runs with.
    pub fn config(&self) -> &SimConfig {
        &self.state.config
    }

    /// The collections by name.
    pub fn collections(&self) -> &BTreeMap<String, SimCollection> {
        &self.collections
    }

    /// One collection by name.
    pub fn collection(&self, name: &str) -> Option<&SimCollection> {
        self.collections.get(name)
    }

    /// Forgets task `id` (any identity's), as a service restarted without its state or
    /// a deletion from history does: it is then unknown to every route. False if no such
    /// task. For testing how clients survive a service that lost a task.
    pub fn forget_task(&self, id: &str) -> bool {
        id.parse::<Uuid>()
            .is_ok_and(|id| self.state.tasks.forget(&id))
    }

    /// A snapshot of the counters (`GET /__sim/stats`).
    pub fn stats(&self) -> SimStats {
        self.state.stats.snapshot()
    }

    /// The one JSON line `sim serve` prints once it accepts connections.
    pub fn startup_line(&self) -> String {
        serde_json::json!({
            "transfer_url": self.transfer_url(),
            "auth_url": self.auth_url(),
            "collections": self.collections,
        })
        .to_string()
    }

    /// Stops serving and waits for the server thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.stop();
    }
}

fn router(state: Arc<SimState>) -> Router {
    use transfer_api as t;
    let api = Router::new()
        .route("/v0.10/submission_id", get(t::submission_id))
        .route("/v0.10/transfer", post(t::submit_transfer))
        .route("/v0.10/delete", post(t::submit_delete))
        .route("/v0.10/task_list", get(t::task_list))
        .route("/v0.10/task/{id}", get(t::get_task).put(t::update_task))
        .route("/v0.10/task/{id}/cancel", post(t::cancel_task))
        .route("/v0.10/task/{id}/event_list", get(t::event_list))
        .route(
            "/v0.10/task/{id}/successful_transfers",
            get(t::successful_transfers),
        )
        .route("/v0.10/task/{id}/skipped_errors", get(t::skipped_errors))
        .route("/v0.10/task/{id}/pause_info", get(t::pause_info))
        .route("/v0.10/endpoint/{id}", get(t::get_endpoint))
        .route("/v0.10/endpoint_search", get(t::endpoint_search))
        .route("/v0.10/operation/endpoint/{id}/ls", get(t::ls))
        .route("/v0.10/operation/endpoint/{id}/stat", get(t::stat))
        .route("/v0.10/operation/endpoint/{id}/mkdir", post(t::mkdir))
        .route("/v0.10/operation/endpoint/{id}/rename", post(t::rename))
        .route("/v2/oauth2/authorize", get(auth::authorize))
        .route("/v2/web/auth-code", get(auth::auth_code_page))
        .route("/v2/oauth2/token", post(auth::token))
        .route("/v2/oauth2/token/revoke", post(auth::revoke))
        .route("/v2/oauth2/token/introspect", post(auth::introspect))
        .route("/v2/oauth2/token/validate", post(auth::validate))
        .route(
            "/v2/oauth2/userinfo",
            get(auth::userinfo).post(auth::userinfo),
        )
        .route(
            "/.well-known/openid-configuration",
            get(auth::openid_configuration),
        )
        .route("/jwk.json", get(auth::jwk))
        .route("/v2/api/identities", get(auth::identities))
        .route("/v2/api/identities/{id}/consents", get(auth::consents))
        .route("/v2/api/clients", post(auth::create_client))
        .fallback(not_found)
        // Transfer and delete documents are measured in `observe`, with a Globus error
        // document; this is the same limit for every other body.
        .layer(axum::extract::DefaultBodyLimit::max(
            state.config.max_body_bytes,
        ))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), observe));
    api.route("/__sim/stats", get(sim_stats))
        .route("/__sim/wait/{id}", get(sim_wait))
        .with_state(state)
}

/// `GET /__sim/wait/{task}?until=final|running|progress|retrying|inactive&timeout_ms=N`:
/// answers with the task document once the condition holds (or the task is final), or
/// 408 after the timeout (default 60 s). A test affordance: it lets a test observe a
/// task's states without polling, and it is not counted in the stats.
async fn sim_wait(
    State(sim): State<Arc<SimState>>,
    headers: axum::http::HeaderMap,
    axum::extract::Path(id): axum::extract::Path<Uuid>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    // Only the task's owner may watch it, with a Transfer token, as for `GET /task`.
    let caller = match sim.auth.check(auth::bearer(&headers), auth::TRANSFER_RS) {
        Ok(caller) => caller,
        Err(problem) => {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "AuthenticationFailed",
                problem.message(),
            )
            .into_response();
        }
    };
    let Some(task) = sim.tasks.get(&id).filter(|t| t.owner == caller.identity.id) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "TaskNotFound",
            format!("Task {id} not found"),
        )
        .into_response();
    };
    let until = q.get("until").map_or("final", String::as_str).to_owned();
    let timeout = std::time::Duration::from_millis(
        q.get("timeout_ms")
            .and_then(|t| t.parse().ok())
            .unwrap_or(60_000),
    );
    let holds = |doc: &ps_globus::transfer::types::Task| {
        doc.is_final()
            || match until.as_str() {
                "running" => doc.nice_status.as_deref() != Some("Queued"),
                "progress" => doc.bytes_transferred > 0,
                "retrying" => doc.is_ok == Some(false),
                "inactive" => doc.status == ps_globus::transfer::types::TaskStatus::Inactive,
                _ => false,
            }
    };
    let waited = tokio::time::timeout(timeout, async {
        loop {
            let changed = task.changed.notified();
            let doc = task.state().current();
            if holds(&doc) {
                return doc;
            }
            changed.await;
        }
    })
    .await;
    match waited {
        Ok(doc) => axum::Json(doc).into_response(),
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "Timeout",
            format!("task {id} did not reach {until:?} in time"),
        )
        .into_response(),
    }
}

async fn not_found(request: Request) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "ClientError.NotFound",
        format!("No such resource {}", request.uri().path()),
    )
    .into_response()
}

async fn sim_stats(State(sim): State<Arc<SimState>>) -> Response {
    axum::Json(sim.stats.snapshot()).into_response()
}

/// Largest response body the emulator buffers (to cut one in half).
const BODY_LIMIT: usize = 64 << 20;

/// Every API request passes here: Transfer authentication, the rate limit, injected
/// faults, then the route; and, on the way out, stats and the log line.
async fn observe(State(sim): State<Arc<SimState>>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let template = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "(unmatched)".to_owned(), |m| m.as_str().to_owned());
    let route = format!("{method} {template}");
    let mut who = "anonymous".to_owned();
    let response = if path.starts_with("/v0.10/") {
        match sim
            .auth
            .check(auth::bearer(request.headers()), auth::TRANSFER_RS)
        {
            Err(problem) => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "ClientError.AuthenticationFailed",
                problem.message(),
            )
            .into_response(),
            Ok(caller) => {
                who = caller.identity.id.to_string();
                transfer_request(&sim, caller, &who, &route, request, next).await
            }
        }
    } else {
        who = auth::requester(&sim.auth, request.headers());
        next.run(request).await
    };
    let status = response.status().as_u16();
    sim.stats.request(&who, &route, status);
    if sim.log_requests {
        // Paths and statuses only: never a header, a token, a code or a secret.
        eprintln!(
            "{} {method} {path} -> {status} ({:.1} ms, {who})",
            chrono::Utc::now().format("%H:%M:%S%.3f"),
            start.elapsed().as_secs_f64() * 1e3
        );
    }
    response
}

async fn transfer_request(
    sim: &SimState,
    caller: auth::Caller,
    who: &str,
    route: &str,
    request: Request,
    next: Next,
) -> Response {
    if let Some(wait) = sim.faults.rate_limited(who) {
        return with_retry_after(
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "RequestLimitExceeded",
                format!(
                    "Rate limit exceeded: at most {} requests per second, averaged over 10 seconds",
                    sim.config.effective_rate_limit().unwrap_or(0)
                ),
            ),
            wait,
        );
    }
    // A submission's faults are keyed by its submission id, so a re-post is a new attempt.
    let (mut request, occurrence) = if request.method() == Method::POST
        && (route.ends_with("/transfer") || route.ends_with("/delete"))
    {
        let (parts, body) = request.into_parts();
        let limit = sim.config.max_body_bytes;
        let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "ClientError.RequestTooLarge",
                format!("The request body is over the limit of {limit} bytes; submit fewer items"),
            )
            .into_response();
        };
        let submission = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["submission_id"].as_str().map(str::to_owned));
        (Request::from_parts(parts, Body::from(bytes)), submission)
    } else {
        (request, None)
    };
    let fault = sim.faults.http_fault(who, route, occurrence.as_deref());
    match fault {
        Some(HttpFault::TooManyRequests { retry_after }) => {
            return with_retry_after(
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "RequestLimitExceeded",
                    "Too many requests (injected)",
                ),
                retry_after,
            );
        }
        Some(HttpFault::Unavailable { retry_after }) => {
            return with_retry_after(
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "The service is temporarily unavailable (injected)",
                ),
                retry_after,
            );
        }
        Some(HttpFault::ExternalError) => {
            return ApiError::new(
                StatusCode::BAD_GATEWAY,
                "ExternalError.Backend",
                "The storage backend failed (injected)",
            )
            .into_response();
        }
        _ => {}
    }
    request.extensions_mut().insert(caller);
    let response = next.run(request).await;
    if fault == Some(HttpFault::ConnectionReset) {
        return cut_off(response).await;
    }
    response
}

fn with_retry_after(error: ApiError, seconds: u64) -> Response {
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// The response with its body cut in half and the connection then dropped: the request
/// took effect, but the client never learns how.
pub(crate) async fn cut_off(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, BODY_LIMIT)
        .await
        .unwrap_or_default();
    let half = bytes.slice(..bytes.len() / 2);
    parts.headers.remove(header::CONTENT_LENGTH);
    let chunks: Vec<std::result::Result<bytes::Bytes, std::io::Error>> = vec![
        Ok(half),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected connection reset",
        )),
    ];
    Response::from_parts(parts, Body::from_stream(futures_util::stream::iter(chunks)))
}

/// The collections as [`Simulator`] shows them, by name.
type PublicCollections = BTreeMap<String, SimCollection>;

/// The configured collections, their roots made canonical: as the server keeps them,
/// and as [`Simulator`] shows them.
/// The collections, with the HTTPS origin each has bound (not yet serving).
type Opened = (
    Vec<Arc<Collection>>,
    PublicCollections,
    Vec<std::net::TcpListener>,
);

fn open_collections(config: &SimConfig) -> Result<Opened> {
    let mut collections = Vec::new();
    let mut public = BTreeMap::new();
    let mut listeners = Vec::new();
    for (name, c) in &config.collections {
        let root = std::fs::canonicalize(&c.root)
            .map_err(|e| Error::io("open collection root", &c.root, e))?;
        let id = collection_id(name);
        let https_server = if c.disable_https {
            None
        } else {
            let origin = https::bind().map_err(|e| Error::io("listen on", "127.0.0.1:0", e))?;
            listeners.push(origin.listener);
            Some(origin.url)
        };
        public.insert(
            name.clone(),
            SimCollection {
                id,
                root: root.clone(),
                https_server: https_server.clone(),
            },
        );

        collections.push(Arc::new(Collection {
            name: name.clone(),
            id,
            root,
            config: c.clone(),
            https_server,
        }));
    }
    Ok((collections, public, listeners))
}

/// With a `--state FILE`, the tasks it kept, restored into `tasks`: its journal, and
/// the tasks to run again from their start.
fn restore(
    config: &SimConfig,
    tasks: &tasks::TaskTable,
) -> Result<(Option<persist::Journal>, Vec<Arc<tasks::TaskHandle>>)> {
    let Some(path) = &config.state_file else {
        return Ok((None, Vec::new()));
    };
    let mut unfinished = Vec::new();
    for restored in persist::load(path)? {
        if restored.unfinished {
            unfinished.push(Arc::clone(&restored.task));
        }
        tasks.restore(restored.task, restored.unfinished);
    }
    Ok((
        Some(persist::Journal::create(path, &tasks.all())?),
        unfinished,
    ))
}

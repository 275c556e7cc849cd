//! The REST API, exactly as ProxyStore's endpoint serves it (routes, query parameters,
//! statuses and bodies), so that ProxyStore's own `EndpointConnector` works against us:
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /` | 200, empty |
//! | `GET /endpoint` | 200 `{"uuid": …}` |
//! | `GET /exists?key=&endpoint=` | 200 `{"exists": bool}` |
//! | `GET /get?key=&endpoint=` | 200 bytes in 1,000,000-byte chunks; 404 `no data associated with request key` |
//! | `POST /set?key=&endpoint=` | 200; 400 `received empty payload`; 413 over `max_object_size` |
//! | `POST /evict?key=&endpoint=` | 200, also for a missing key |
//!
//! A missing `key` is 400 `request missing key`; an `endpoint` that is not a UUID is 400
//! `<value> is not a valid UUID4`; a peer that fails is 500 `Request to peer <uuid>
//! failed: <reason>` — with, beside ProxyStore's text, an `x-ps-globus-error` header our
//! connector reads to tell an unreachable peer from other failures.
//!
//! Two differences, both refusals ProxyStore does not make: a caller whose socket belongs
//! to another user is refused with 403 (see [`owner`](crate::owner)), and an object over
//! the size limit is refused with 413 as its body arrives, not after buffering all of it.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use ps_globus::connector::endpoint::{ERROR_HEADER, PEER_UNREACHABLE};
use serde::Deserialize;
use uuid::Uuid;

use crate::owner::Caller;
use crate::peer::{Answer, Op, PeerError, Peers};
use crate::storage::{Storage, StorageError};

/// ProxyStore's chunk size for `/get` bodies.
const CHUNK: usize = 1_000_000;

/// The longest key accepted.
const MAX_KEY_LEN: usize = 1024;

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct Api {
    /// This endpoint's id.
    pub uuid: Uuid,
    /// Its name.
    pub name: String,
    /// Its objects.
    pub storage: Storage,
    /// Its peers, when it has a relay.
    pub peers: Option<Arc<Peers>>,
    /// The uid allowed to call (ours).
    pub owner: u32,
    /// Whether callers on other hosts are served (unchecked).
    pub allow_remote_clients: bool,
}

/// The router of the REST API.
pub fn router(api: Api) -> Router {
    Router::new()
        .route("/", get(|| async { StatusCode::OK }))
        .route("/endpoint", get(identity))
        .route("/exists", get(exists))
        .route("/get", get(get_object))
        .route("/set", post(set_object))
        .route("/evict", post(evict))
        .route("/ps-globus/status", get(status))
        .layer(middleware::from_fn_with_state(api.clone(), only_the_owner))
        .with_state(api)
}

/// Refuses callers that are not the endpoint's owner.
async fn only_the_owner(
    State(api): State<Api>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    request: Request,
    next: Next,
) -> Response {
    match caller.uid {
        Some(uid) if uid == api.owner => next.run(request).await,
        None if api.allow_remote_clients => next.run(request).await,
        Some(uid) => text(
            StatusCode::FORBIDDEN,
            format!(
                "this endpoint serves uid {} only; the connection from {} belongs to uid {uid}",
                api.owner, caller.from
            ),
        ),
        None => text(
            StatusCode::FORBIDDEN,
            format!(
                "this endpoint serves clients on its own host only (the caller's user cannot \
                 be checked from {}); set allow_remote_clients in its [ps_globus] table to \
                 serve anyone who reaches the port",
                caller.from
            ),
        ),
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

/// The query every object route takes.
#[derive(Deserialize)]
struct KeyQuery {
    key: Option<String>,
    endpoint: Option<String>,
}

/// Where a request goes: this endpoint's storage, or a peer.
enum Target {
    Local,
    Peer(Uuid),
}

impl KeyQuery {
    /// The key and the target, or ProxyStore's 400.
    fn parse(self, api: &Api) -> Result<(String, Target), (StatusCode, String)> {
        let key = match self.key {
            Some(key) if !key.is_empty() => key,
            _ => return Err((StatusCode::BAD_REQUEST, "request missing key".into())),
        };
        if key.len() > MAX_KEY_LEN {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("the key is longer than {MAX_KEY_LEN} bytes"),
            ));
        }
        let target = match self.endpoint {
            None => Target::Local,
            Some(text_id) => match Uuid::parse_str(&text_id) {
                Ok(id) if id == api.uuid => Target::Local,
                Ok(id) => Target::Peer(id),
                Err(_) => {
                    return Err((
                        StatusCode::BAD_REQUEST,
                        format!("{text_id} is not a valid UUID4"),
                    ));
                }
            },
        };
        Ok((key, target))
    }
}

async fn identity(State(api): State<Api>) -> Response {
    axum::Json(serde_json::json!({"uuid": api.uuid.to_string()})).into_response()
}

/// Runs `op` on `key` here or at the peer.
async fn run(api: &Api, key: String, target: Target, op: Op) -> Result<Answer, Response> {
    match target {
        Target::Local => crate::peer::run_local(&api.storage, &key, op)
            .await
            .map_err(storage_error),
        Target::Peer(peer) => match &api.peers {
            Some(peers) => peers.request(peer, key, op).await.map_err(peer_error),
            None => Err(peer_error(PeerError::unreachable(
                peer,
                "this endpoint has no relay configured, so it reaches no peer",
            ))),
        },
    }
}

fn storage_error(e: StorageError) -> Response {
    match e {
        StorageError::TooLarge { .. } => text(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
        other => {
            tracing::error!("{other}");
            text(StatusCode::INTERNAL_SERVER_ERROR, other.to_string())
        }
    }
}

fn peer_error(e: PeerError) -> Response {
    if let PeerError::Remote { message, .. } = &e
        && message.contains("max_object_size")
    {
        return text(StatusCode::PAYLOAD_TOO_LARGE, e.to_string());
    }
    let mut response = text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    if matches!(e, PeerError::Unreachable { .. }) {
        response
            .headers_mut()
            .insert(ERROR_HEADER, HeaderValue::from_static(PEER_UNREACHABLE));
    }
    response
}

/// Our own route: what `ps-globus endpoint check` shows.
async fn status(State(api): State<Api>) -> Response {
    let usage = match api.storage.usage().await {
        Ok(usage) => usage,
        Err(e) => return storage_error(e),
    };
    let peering = api.peers.as_ref().map(|peers| {
        let relay = peers.relay();
        serde_json::json!({
            "relay": relay.address(),
            "connected": relay.is_connected(),
            "registrations": relay.registrations(),
            "problem": relay.last_problem(),
            "timeout_s": peers.timeout().as_secs_f64(),
            "direct_connections": peers.paths.direct.load(std::sync::atomic::Ordering::Relaxed),
            "relayed_connections": peers.paths.relayed.load(std::sync::atomic::Ordering::Relaxed),
        })
    });
    axum::Json(serde_json::json!({
        "uuid": api.uuid.to_string(),
        "name": api.name,
        "objects": usage.objects,
        "bytes": usage.bytes,
        "memory_bytes": usage.memory_bytes,
        "max_object_size": api.storage.max_object_size(),
        "peering": peering,
    }))
    .into_response()
}

async fn exists(State(api): State<Api>, Query(query): Query<KeyQuery>) -> Response {
    let (key, target) = match query.parse(&api) {
        Ok(parsed) => parsed,
        Err((status, message)) => return text(status, message),
    };
    match run(&api, key, target, Op::Exists).await {
        Ok(Answer::Exists(found)) => {
            axum::Json(serde_json::json!({"exists": found})).into_response()
        }
        Ok(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "a peer answered exists with something else",
        ),
        Err(response) => response,
    }
}

async fn get_object(State(api): State<Api>, Query(query): Query<KeyQuery>) -> Response {
    let (key, target) = match query.parse(&api) {
        Ok(parsed) => parsed,
        Err((status, message)) => return text(status, message),
    };
    match run(&api, key, target, Op::Get).await {
        Ok(Answer::Data(Some(data))) => {
            let chunks = (0..data.len()).step_by(CHUNK).map(move |at| {
                Ok::<_, std::io::Error>(data.slice(at..(at + CHUNK).min(data.len())))
            });
            (
                [(header::CONTENT_TYPE, "application/octet-stream")],
                Body::from_stream(futures_util::stream::iter(chunks.collect::<Vec<_>>())),
            )
                .into_response()
        }
        Ok(Answer::Data(None)) => {
            text(StatusCode::NOT_FOUND, "no data associated with request key")
        }
        Ok(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "a peer answered get with something else",
        ),
        Err(response) => response,
    }
}

async fn set_object(
    State(api): State<Api>,
    Query(query): Query<KeyQuery>,
    request: Request,
) -> Response {
    let (key, target) = match query.parse(&api) {
        Ok(parsed) => parsed,
        Err((status, message)) => return text(status, message),
    };
    let data = match read_body(request.into_body(), api.storage.max_object_size()).await {
        Ok(data) => data,
        Err(response) => return response,
    };
    if data.is_empty() {
        return text(StatusCode::BAD_REQUEST, "received empty payload");
    }
    match run(&api, key, target, Op::Set(data)).await {
        Ok(_) => StatusCode::OK.into_response(),
        Err(response) => response,
    }
}

/// The whole body (chunked or not), refused with 413 as soon as it passes `limit`.
async fn read_body(body: Body, limit: u64) -> Result<Bytes, Response> {
    let mut stream = body.into_data_stream();
    let mut data = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| text(StatusCode::BAD_REQUEST, format!("reading the body: {e}")))?;
        if (data.len() + chunk.len()) as u64 > limit {
            return Err(text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the object is over this endpoint's max_object_size of {limit} bytes"),
            ));
        }
        if data.is_empty() && chunk.len() >= (1 << 20) {
            // A large body: room for ProxyStore's remaining 1 MB chunks, grown as they come.
            data.reserve(chunk.len() * 4);
        }
        data.extend_from_slice(&chunk);
    }
    Ok(data.freeze())
}

async fn evict(State(api): State<Api>, Query(query): Query<KeyQuery>) -> Response {
    let (key, target) = match query.parse(&api) {
        Ok(parsed) => parsed,
        Err((status, message)) => return text(status, message),
    };
    match run(&api, key, target, Op::Evict).await {
        Ok(_) => StatusCode::OK.into_response(),
        Err(response) => response,
    }
}

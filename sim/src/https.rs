//! HTTPS on collections, as Globus Connect Server v5 serves it
//! (`../shared/globus-api/HTTPS.md`, its §7 checklist): each collection with HTTPS on an
//! origin of its own (a loopback port), published as the endpoint document's
//! `https_server`. Files only: GET (with absolute ranges), HEAD, PUT (overwrite, not
//! atomic), DELETE, OPTIONS; no listings.
//!
//! Tokens: the collection id is the resource server, the token must carry
//! `https://auth.globus.org/scopes/<id>/https`, and a non-high-assurance GCSv5 mapped
//! collection also its `data_access` scope; then the collection's access rules. A request
//! with no token gets the 302 that `GCSDownloader` sniffs the collection id from, or with
//! `X-Requested-With: XMLHttpRequest` a 401 whose JSON names the scopes to ask for.
//!
//! Guesses, where HTTPS.md says nothing is sourced (said here so they are not taken for
//! facts): the 302's target path; 403 for a valid token the access rules refuse, for a
//! GET or DELETE of a directory, and for a path outside the root; 200 with an empty body
//! for PUT and DELETE; a PUT whose parent directory is missing is a 404 (strict: the
//! client makes directories through Transfer); `~` is not expanded.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::auth::{self, Caller};
use crate::faults::HttpFault;
use crate::{Collection, SimState};

/// The scope a token needs for HTTPS on collection `id`.
pub(crate) fn https_scope(id: &uuid::Uuid) -> String {
    format!("https://auth.globus.org/scopes/{id}/https")
}

/// The top-level `data_access` scope an HTTPS token of a mapped collection carries.
fn data_access_scope(id: &uuid::Uuid) -> String {
    format!("https://auth.globus.org/scopes/{id}/data_access")
}

/// A bound, not yet serving, HTTPS origin of one collection.
pub(crate) struct Origin {
    pub(crate) listener: std::net::TcpListener,
    pub(crate) url: String,
}

/// Binds an origin on the loopback interface (any free port).
pub(crate) fn bind() -> std::io::Result<Origin> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    listener.set_nonblocking(true)?;
    let url = format!("http://{}", listener.local_addr()?);
    Ok(Origin { listener, url })
}

/// Serves collection `c` on `listener` until the emulator's runtime stops.
pub(crate) fn serve(sim: Arc<SimState>, c: Arc<Collection>, listener: std::net::TcpListener) {
    let origin = Arc::new(OriginState {
        sim,
        collection: c,
        failing: Mutex::new(HashSet::new()),
    });
    let router = Router::new().fallback(handle).with_state(origin);
    tokio::spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("https listener");
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(listener, service).await {
            eprintln!("ps-globus sim: an HTTPS origin stopped: {e}");
        }
    });
}

/// What one origin's requests share.
struct OriginState {
    sim: Arc<SimState>,
    collection: Arc<Collection>,
    /// Connections (by peer address) that drew the `ENDPOINT_ERROR` fault: every later
    /// request on them draws it too.
    failing: Mutex<HashSet<SocketAddr>>,
}

/// The body of the 404 a failing GCS backend answers (HTTPS.md §4).
const ENDPOINT_ERROR: &str = "Mapping collection to specified ID failed.\nGlobusError: v=1 c=ENDPOINT_ERROR\nGCS Manager Internal Error";

async fn handle(
    State(origin): State<Arc<OriginState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (sim, c) = (&origin.sim, &origin.collection);
    let method = request.method().clone();
    let route = format!("HTTPS {method}");
    let response = match authorize(sim, c, &method, request.headers()) {
        Err(refused) => *refused,
        Ok(caller) => {
            let who = caller.identity.id.to_string();
            let latency = sim.config.https_latency_ms;
            if latency > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
            }
            let fault = sim.faults.http_fault(&who, &route, None);
            answer(&origin, peer, fault, request).await
        }
    };
    sim.stats.https_request(&route, response.status().as_u16());
    with_cors(response)
}

/// The answer to an authorized request, with `fault` (or the connection's own) acting on it.
async fn answer(
    origin: &OriginState,
    peer: SocketAddr,
    fault: Option<HttpFault>,
    request: Request,
) -> Response {
    let c = &origin.collection;
    {
        let mut failing = origin.failing.lock().expect("failing connections");
        if fault == Some(HttpFault::EndpointError) {
            failing.insert(peer);
        }
        if failing.contains(&peer) {
            return text(StatusCode::NOT_FOUND, ENDPOINT_ERROR);
        }
    }
    match fault {
        Some(HttpFault::Unavailable { .. }) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable (injected)",
        ),
        Some(HttpFault::TooManyRequests { .. }) => text(
            StatusCode::TOO_MANY_REQUESTS,
            "Too Many Requests (injected)",
        ),
        Some(HttpFault::ExternalError) => text(StatusCode::BAD_GATEWAY, "Bad Gateway (injected)"),
        Some(HttpFault::ConnectionReset) => crate::cut_off(serve_file(c, request).await).await,
        _ => serve_file(c, request).await,
    }
}

/// The caller, or the answer that refuses it.
fn authorize(
    sim: &SimState,
    c: &Collection,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Caller, Box<Response>> {
    let mut required = vec![https_scope(&c.id)];
    if c.config.requires_data_access && !c.config.high_assurance {
        required.push(data_access_scope(&c.id));
    }
    let xhr = headers
        .get("x-requested-with")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"XMLHttpRequest"));
    let token = auth::bearer(headers);
    if token.is_none() && !xhr && matches!(*method, Method::GET | Method::HEAD) {
        // What a browser gets: off to log in, the collection id as the client id.
        let location = format!(
            "{}v2/oauth2/authorize?client_id={}&scope={}&response_type=code",
            sim.base_url, c.id, required[0]
        );
        return Err(Box::new(
            (StatusCode::FOUND, [(header::LOCATION, location)]).into_response(),
        ));
    }
    let (caller, scopes) = sim
        .auth
        .check_scoped(token, &c.id.to_string())
        .map_err(|problem| Box::new(needs_auth(&required, &problem.message())))?;
    if let Some(scopes) = scopes {
        let missing: Vec<String> = required
            .iter()
            .filter(|r| !scopes.contains(r))
            .cloned()
            .collect();
        if !missing.is_empty() {
            let message = format!("the token lacks {}", missing.join(" and "));
            return Err(Box::new(needs_auth(&required, &message)));
        }
    }
    if !crate::transfer_api::allowed(c, &caller) {
        let body = json!({
            "code": "PermissionDenied",
            "message": format!("{} may not use collection {}", caller.identity.username, c.id),
        });
        return Err(Box::new(
            (StatusCode::FORBIDDEN, axum::Json(body)).into_response(),
        ));
    }
    Ok(caller)
}

/// 401 with the scopes to ask for, as a GARE-shaped `authorization_parameters`.
fn needs_auth(required: &[String], message: &str) -> Response {
    let body = json!({
        "code": "AuthenticationFailed",
        "message": message,
        "authorization_parameters": {
            "session_message": message,
            "required_scopes": required,
        },
    });
    (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response()
}

async fn serve_file(c: &Collection, request: Request) -> Response {
    let raw = request.uri().path();
    let path = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
    let local = match crate::paths::resolve_from(&c.root, "/", &path) {
        Ok(resolved) => resolved.local,
        Err(escape) => return text(StatusCode::FORBIDDEN, &escape.0),
    };
    let download = request.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|p| p == "download" || p.starts_with("download="))
    });
    match *request.method() {
        Method::OPTIONS => StatusCode::OK.into_response(),
        Method::HEAD => head(&local).await,
        Method::GET => get(&local, request.headers(), download).await,
        Method::PUT => put(&local, request.into_body()).await,
        Method::DELETE => delete(&local).await,
        _ => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
    }
}

/// A plain-text answer.
fn text(status: StatusCode, body: &str) -> Response {
    (status, body.to_owned()).into_response()
}

/// A missing file: a plain miss, with the marker GridFTP gives one.
fn missing() -> Response {
    let mut response = text(StatusCode::NOT_FOUND, "No such file or directory");
    response
        .headers_mut()
        .insert("gridftp-errno", HeaderValue::from_static("2"));
    response
}

async fn head(local: &Path) -> Response {
    match tokio::fs::metadata(local).await {
        Err(_) => StatusCode::NOT_FOUND.into_response(), // no body on a HEAD 404
        Ok(meta) if meta.is_dir() => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "httpd/unix-directory"),
                (header::CONTENT_LENGTH, "4096"),
            ],
        )
            .into_response(),
        Ok(meta) => (
            StatusCode::OK,
            [
                (header::CONTENT_LENGTH, meta.len().to_string()),
                (header::ACCEPT_RANGES, "bytes".into()),
            ],
        )
            .into_response(),
    }
}

async fn get(local: &Path, headers: &HeaderMap, download: bool) -> Response {
    let meta = match tokio::fs::metadata(local).await {
        Err(_) => return missing(),
        Ok(meta) if meta.is_dir() => {
            return text(
                StatusCode::FORBIDDEN,
                "directory listings are not available over HTTPS: list through Transfer",
            );
        }
        Ok(meta) => meta,
    };
    let ranges = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => None,
        Some(spec) => match parse_ranges(spec, meta.len()) {
            Ok(ranges) => ranges,
            Err(()) => return text(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable"),
        },
    };
    let bytes = match tokio::fs::read(local).await {
        Ok(bytes) => bytes,
        Err(_) => return missing(),
    };
    let mut response = match ranges.as_deref() {
        None => (StatusCode::OK, bytes).into_response(),
        Some([(from, to)]) => {
            let part = bytes[*from as usize..=*to as usize].to_vec();
            (
                StatusCode::PARTIAL_CONTENT,
                [(header::CONTENT_RANGE, format!("bytes {from}-{to}/*"))],
                part,
            )
                .into_response()
        }
        Some(many) => multipart(&bytes, many),
    };
    response
        .headers_mut()
        .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if download {
        let name = local.file_name().map(|n| n.to_string_lossy().into_owned());
        let value = format!("attachment; filename=\"{}\"", name.unwrap_or_default());
        if let Ok(value) = HeaderValue::from_str(&value) {
            response
                .headers_mut()
                .insert(header::CONTENT_DISPOSITION, value);
        }
    }
    response
}

/// `Range: bytes=a-b, c-` as absolute inclusive ranges within `len` bytes. `Ok(None)`:
/// not a byte range (served whole, as HTTP allows); `Err`: a suffix range (`-N`, which
/// the service refuses) or one that starts past the end.
fn parse_ranges(spec: &str, len: u64) -> Result<Option<Vec<(u64, u64)>>, ()> {
    let Some(list) = spec.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    let mut ranges = Vec::new();
    for part in list.split(',') {
        let Some((from, to)) = part.trim().split_once('-') else {
            return Ok(None);
        };
        if from.is_empty() {
            return Err(()); // a suffix range
        }
        let Ok(from) = from.parse::<u64>() else {
            return Ok(None);
        };
        let to = match to {
            "" => len.saturating_sub(1),
            to => match to.parse::<u64>() {
                Ok(to) if to >= from => to.min(len.saturating_sub(1)),
                _ => return Ok(None),
            },
        };
        if from >= len {
            return Err(());
        }
        ranges.push((from, to));
    }
    Ok(Some(ranges))
}

/// Several ranges as one `multipart/byteranges` body.
fn multipart(bytes: &[u8], ranges: &[(u64, u64)]) -> Response {
    const BOUNDARY: &str = "ps-globus-sim-byteranges";
    let mut body = Vec::new();
    for (from, to) in ranges {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Type: application/octet-stream\r\n\
                 Content-Range: bytes {from}-{to}/*\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(&bytes[*from as usize..=*to as usize]);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    (
        StatusCode::PARTIAL_CONTENT,
        [(
            header::CONTENT_TYPE,
            format!("multipart/byteranges; boundary={BOUNDARY}"),
        )],
        body,
    )
        .into_response()
}

/// Writes the body over the file as it arrives: a PUT cut short leaves the file cut
/// short, as the service's does (no atomic replace).
async fn put(local: &Path, body: Body) -> Response {
    if tokio::fs::metadata(local).await.is_ok_and(|m| m.is_dir()) {
        return text(StatusCode::FORBIDDEN, "a directory cannot be written over");
    }
    if let Some(parent) = local.parent()
        && !tokio::fs::metadata(parent).await.is_ok_and(|m| m.is_dir())
    {
        return text(StatusCode::NOT_FOUND, "the parent directory does not exist");
    }
    let mut file = match tokio::fs::File::create(local).await {
        Ok(file) => file,
        Err(e) => return text(StatusCode::FORBIDDEN, &e.to_string()),
    };
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let written = match chunk {
            Ok(chunk) => file.write_all(&chunk).await,
            // The client went away mid-body: what arrived stays (written out before the
            // answer, so whoever hears it finds the file as it is).
            Err(_) => {
                let _ = file.flush().await;
                return text(StatusCode::BAD_REQUEST, "the upload was cut short");
            }
        };
        if let Err(e) = written {
            return text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
        }
    }
    match file.flush().await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn delete(local: &Path) -> Response {
    match tokio::fs::metadata(local).await {
        Err(_) => missing(),
        Ok(meta) if meta.is_dir() => text(StatusCode::FORBIDDEN, "only files can be deleted"),
        Ok(_) => match tokio::fs::remove_file(local).await {
            Ok(()) => StatusCode::OK.into_response(),
            Err(e) => text(StatusCode::FORBIDDEN, &e.to_string()),
        },
    }
}

/// The CORS headers every answer carries, as the service's Apache front end sends them.
fn with_cors(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        ("access-control-allow-origin", "*"),
        (
            "access-control-allow-headers",
            "Authorization, Content-Type, X-Requested-With, Range",
        ),
        (
            "access-control-allow-methods",
            "HEAD, GET, PUT, DELETE, OPTIONS",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::parse_ranges;

    #[test]
    fn ranges_are_absolute_and_suffix_ranges_are_refused() {
        assert_eq!(parse_ranges("bytes=0-0", 10), Ok(Some(vec![(0, 0)])));
        assert_eq!(parse_ranges("bytes=2-", 10), Ok(Some(vec![(2, 9)])));
        assert_eq!(parse_ranges("bytes=2-100", 10), Ok(Some(vec![(2, 9)])));
        assert_eq!(
            parse_ranges("bytes=0-1, 4-5", 10),
            Ok(Some(vec![(0, 1), (4, 5)]))
        );
        assert_eq!(parse_ranges("bytes=-3", 10), Err(()));
        assert_eq!(parse_ranges("bytes=10-", 10), Err(()));
        assert_eq!(parse_ranges("items=0-1", 10), Ok(None));
        assert_eq!(parse_ranges("bytes=5-2", 10), Ok(None));
    }
}

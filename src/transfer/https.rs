//! A collection's files over HTTPS (GCS v5 "HTTPS access to collections"; the facts and
//! the guesses are in `../shared/globus-api/HTTPS.md`): GET (whole, or an absolute
//! range), HEAD, PUT, DELETE, with a token for the collection itself.
//!
//! - The origin comes from the collection's endpoint document ([`CollectionHttps::discover`])
//!   or local configuration, never from data: a token for the collection goes there.
//! - Every request says `X-Requested-With: XMLHttpRequest`, so refusals come back as
//!   JSON, and no redirect is followed (a 302 means the token was not accepted).
//! - A refused token (401) is a typed [`ConsentRequired`](crate::error::ConsentRequired)
//!   naming the scopes the service listed, never a silent fallback.
//! - The 404 a failing GCS backend answers (`c=ENDPOINT_ERROR`) sticks to its
//!   connection: it is retried on a fresh one. 5xx answers and cut connections are
//!   retried with backoff, as the Transfer client's are ([`RetryConfig`]).
//! - HTTPS has no checksums and a PUT is not atomic: callers verify size and sha256.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, StatusCode};
use uuid::Uuid;

use super::retry::RetryConfig;
use crate::auth::Authorizer;
use crate::error::{ConsentRequired, Error, ErrorKind, Result};

/// One collection's HTTPS origin, with the credentials for it.
#[derive(Debug, Clone)]
pub struct CollectionHttps {
    collection: Uuid,
    origin: String,
    auth: Arc<dyn Authorizer>,
    http: reqwest::Client,
    /// For a retry after `ENDPOINT_ERROR`: a client that never reuses a connection.
    fresh: reqwest::Client,
    retry: RetryConfig,
    /// Each request's limit, from connecting to the body's end (default 300 s).
    timeout: Duration,
}

/// How long one request may take by default.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// What one attempt came to.
enum Attempt {
    Answer(reqwest::StatusCode, reqwest::header::HeaderMap, Bytes),
    /// The backend fault that sticks to a connection: retry on a fresh one.
    EndpointError,
    /// A 5xx or a cut connection: retry after a pause.
    Transient(Error),
}

impl CollectionHttps {
    /// The scope a token needs for HTTPS on `collection` (its resource server is the
    /// collection).
    pub fn scope(collection: &Uuid) -> String {
        format!("https://auth.globus.org/scopes/{collection}/https")
    }

    /// The scopes a token for `collection`'s HTTPS needs, as its endpoint document says
    /// (`https`, plus `data_access` for a GCSv5 mapped collection that is not
    /// high-assurance, as globus-sdk's `GCSDownloader` decides it); empty when it serves
    /// no HTTPS.
    pub fn scopes(collection: &Uuid, endpoint: &super::types::Endpoint) -> Vec<String> {
        if endpoint.https_origin().is_none() {
            return Vec::new();
        }
        let mut scopes = vec![Self::scope(collection)];
        if endpoint.requires_data_access_scope() {
            scopes.push(crate::auth::data_access_scope(collection));
        }
        scopes
    }

    /// `collection`'s files at `origin` (its `https_server`), with a token from `auth`
    /// (whose resource server must be the collection).
    pub fn new(collection: Uuid, origin: &str, auth: Arc<dyn Authorizer>) -> Result<Self> {
        let build = |reuse: bool| {
            let mut builder =
                reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
            if !reuse {
                builder = builder.pool_max_idle_per_host(0);
            }
            crate::http::client("collection HTTPS", origin, builder)
        };
        let (http, base) = build(true)?;
        let (fresh, _) = build(false)?;
        Ok(CollectionHttps {
            collection,
            origin: base.trim_end_matches('/').to_owned(),
            auth,
            http,
            fresh,
            retry: RetryConfig::default(),
            timeout: REQUEST_TIMEOUT,
        })
    }

    /// `collection`'s HTTPS as its endpoint document publishes it: [`ErrorKind::Unsupported`]
    /// when the collection serves none.
    pub async fn discover(
        transfer: &super::TransferClient,
        collection: Uuid,
        auth: Arc<dyn Authorizer>,
    ) -> Result<Self> {
        let endpoint = transfer.endpoint(&collection.to_string()).await?;
        match endpoint.https_origin() {
            Some(origin) => Self::new(collection, origin, auth),
            None => Err(Error::unsupported(
                "HTTPS",
                "globus",
                format!(
                    "collection {collection} has HTTPS disabled (its https_server is null): its files go by Transfer"
                ),
            )),
        }
    }

    /// With another retry policy (tests use a fast one).
    pub fn with_retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    /// With another limit on each request (a sender that falls back to Transfer wants a
    /// short one).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The collection served.
    pub fn collection(&self) -> &Uuid {
        &self.collection
    }

    /// The origin requests go to.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The file at collection `path`, whole; `None` if there is none.
    pub async fn get(&self, path: &str) -> Result<Option<Bytes>> {
        let (status, _, body) = self.request(Method::GET, path, None, None).await?;
        match status {
            StatusCode::OK => Ok(Some(body)),
            StatusCode::NOT_FOUND => Ok(None),
            other => Err(self.refusal("GET", path, other, &body)),
        }
    }

    /// Bytes `from..=to` of the file at `path` (an absolute range: the service refuses
    /// suffix ranges); `None` if there is no such file.
    pub async fn get_range(&self, path: &str, from: u64, to: u64) -> Result<Option<Bytes>> {
        let range = format!("bytes={from}-{to}");
        let (status, _, body) = self.request(Method::GET, path, Some(range), None).await?;
        match status {
            StatusCode::PARTIAL_CONTENT | StatusCode::OK => Ok(Some(body)),
            StatusCode::NOT_FOUND => Ok(None),
            other => Err(self.refusal("GET", path, other, &body)),
        }
    }

    /// The first `size` bytes of the file at `path` (a file whose size is known, from
    /// its key or a HEAD), asked in absolute ranges of at most 8 MiB; a missing file is
    /// [`ErrorKind::NotFound`], a shorter one comes back short (the caller checks).
    pub async fn get_sized(&self, path: &str, size: u64) -> Result<Bytes> {
        const RANGE: u64 = 8 << 20;
        let missing = || {
            Error::new(
                ErrorKind::NotFound,
                format!("{path} is not on collection {}", self.collection),
            )
        };
        if size == 0 {
            return self.get(path).await?.ok_or_else(missing);
        }
        let mut bytes = Vec::with_capacity(size as usize);
        while (bytes.len() as u64) < size {
            let from = bytes.len() as u64;
            let to = (from + RANGE).min(size) - 1;
            let part = self.get_range(path, from, to).await?.ok_or_else(missing)?;
            if part.is_empty() {
                break;
            }
            bytes.extend_from_slice(&part);
        }
        Ok(bytes.into())
    }

    /// The size of the file at `path`; `None` if there is none.
    pub async fn size(&self, path: &str) -> Result<Option<u64>> {
        let (status, headers, body) = self.request(Method::HEAD, path, None, None).await?;
        match status {
            StatusCode::OK => Ok(headers
                .get(reqwest::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())),
            StatusCode::NOT_FOUND => Ok(None),
            other => Err(self.refusal("HEAD", path, other, &body)),
        }
    }

    /// Writes `data` over the file at `path` (its directory must exist: a missing one is
    /// [`ErrorKind::NotFound`]). Not atomic: a failed PUT may leave the file cut short.
    pub async fn put(&self, path: &str, data: Bytes) -> Result<()> {
        let (status, _, body) = self.request(Method::PUT, path, None, Some(data)).await?;
        match status {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_FOUND => Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "collection {} has no directory for {path} (HTTPS makes none): make it \
                     through Transfer first",
                    self.collection
                ),
            )),
            other => Err(self.refusal("PUT", path, other, &body)),
        }
    }

    /// Deletes the file at `path`; whether there was one.
    pub async fn delete(&self, path: &str) -> Result<bool> {
        let (status, _, body) = self.request(Method::DELETE, path, None, None).await?;
        match status {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            other => Err(self.refusal("DELETE", path, other, &body)),
        }
    }

    /// Sends one request, retrying what the service says may pass.
    async fn request(
        &self,
        method: Method,
        path: &str,
        range: Option<String>,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, reqwest::header::HeaderMap, Bytes)> {
        let url = self.url(path)?;
        let mut backoff = backon::BackoffBuilder::build(self.retry);
        let mut fresh = false;
        let mut attempt = 0;
        loop {
            let client = if fresh { &self.fresh } else { &self.http };
            let sent = self
                .attempt(client, &method, &url, range.as_deref(), body.clone())
                .await?;
            attempt += 1;
            let last = attempt > self.retry.max_retries;
            match sent {
                Attempt::Answer(status, headers, body) => return Ok((status, headers, body)),
                Attempt::EndpointError if !last => fresh = true,
                Attempt::Transient(_) if !last => {
                    let pause = backoff.next().unwrap_or(self.retry.max_sleep);
                    crate::runtime::sleep(pause).await;
                }
                Attempt::EndpointError => {
                    return Err(Error::new(
                        ErrorKind::Service,
                        format!(
                            "collection {} answered {method} {path} with ENDPOINT_ERROR \
                             on {attempt} connections",
                            self.collection
                        ),
                    ));
                }
                Attempt::Transient(e) => return Err(e),
            }
        }
    }

    async fn attempt(
        &self,
        client: &reqwest::Client,
        method: &Method,
        url: &str,
        range: Option<&str>,
        body: Option<Bytes>,
    ) -> Result<Attempt> {
        let token = self.auth.authorization().await?;
        let mut request = client
            .request(method.clone(), url)
            .header(reqwest::header::AUTHORIZATION, token)
            .header("X-Requested-With", "XMLHttpRequest")
            .timeout(self.timeout);
        if let Some(range) = range {
            request = request.header(reqwest::header::RANGE, range);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let unreachable = |e: reqwest::Error| {
            Attempt::Transient(Error::unreachable(&self.origin, e.without_url(), 0))
        };
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return Ok(unreachable(e)),
        };
        let (status, headers) = (response.status(), response.headers().clone());
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(e) => return Ok(unreachable(e)),
        };
        if status == StatusCode::NOT_FOUND && contains(&body, b"c=ENDPOINT_ERROR") {
            return Ok(Attempt::EndpointError);
        }
        if status.is_server_error() {
            let message = format!("collection {} answered {status}", self.collection);
            return Ok(Attempt::Transient(Error::new(ErrorKind::Service, message)));
        }
        Ok(Attempt::Answer(status, headers, body))
    }

    /// The URL of collection `path` (an absolute collection path; each component
    /// percent-encoded).
    fn url(&self, path: &str) -> Result<String> {
        let normal = crate::transfer::path::collection_path(path)
            .map_err(|e| Error::invalid_config("collection path", e))?;
        let mut url = reqwest::Url::parse(&self.origin)
            .map_err(|e| Error::invalid_config("collection HTTPS", e))?;
        url.path_segments_mut()
            .map_err(|()| Error::invalid_config("collection HTTPS", "not a base URL"))?
            .extend(normal.split('/').filter(|p| !p.is_empty()));
        Ok(url.to_string())
    }

    /// The error for an answer that is no success: a token the service did not accept
    /// names the scopes to ask for.
    fn refusal(&self, method: &str, path: &str, status: StatusCode, body: &[u8]) -> Error {
        let doc: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FOUND => {
                let required: Vec<String> = doc
                    .as_ref()
                    .and_then(|d| d["authorization_parameters"]["required_scopes"].as_array())
                    .map(|scopes| {
                        scopes
                            .iter()
                            .filter_map(|s| s.as_str().map(str::to_owned))
                            .collect()
                    })
                    .filter(|s: &Vec<String>| !s.is_empty())
                    .unwrap_or_else(|| vec![Self::scope(&self.collection)]);
                ConsentRequired::new(required, vec![self.collection.to_string()]).into()
            }
            StatusCode::FORBIDDEN => Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "collection {} refused {method} {path} over HTTPS: {}",
                    self.collection,
                    message(doc.as_ref(), body)
                ),
            ),
            other => Error::new(
                ErrorKind::Service,
                format!(
                    "collection {} answered {other} to {method} {path} over HTTPS: {}",
                    self.collection,
                    message(doc.as_ref(), body)
                ),
            ),
        }
    }
}

/// The service's message: the JSON document's, else the body's start.
fn message(doc: Option<&serde_json::Value>, body: &[u8]) -> String {
    doc.and_then(|d| d["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

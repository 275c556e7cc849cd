//! A typed client of the Globus Transfer API v0.10.
//!
//! Every request runs on the library's own runtime (so a pooled connection never belongs
//! to a caller's short-lived runtime), goes through the retry policy of
//! [`RetryConfig`](super::RetryConfig), and turns error documents into typed
//! [`Error`]s: [`GlobusApiError`](crate::error::GlobusApiError) with the status, code, message and request id;
//! [`ConsentRequired`](crate::error::ConsentRequired) with the scopes and collections; [`Error::PermissionDenied`](crate::Error::PermissionDenied)
//! after one failed refresh. The `Authorization` header never reaches an error or a log.

use crate::error::{ConsentRequired, ErrorKind, GlobusApiError, GlobusCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use backon::Retryable;
use reqwest::Method;
use reqwest::header::AUTHORIZATION;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::RetryConfig;
use super::answer::{Failure, Refusal, classify, data_access_collections, send};
use super::types::{
    DeleteRequest, Endpoint, Event, FatalError, FileEntry, FileList, MarkerPage, MkdirRequest,
    Page, RenameRequest, ResultDoc, SkippedError, SubmissionId, SubmitResult, SuccessfulTransfer,
    Task, TaskUpdate, TransferRequest,
};
use crate::auth::Authorizer;
use crate::error::{Error, Result};
use crate::runtime;
use crate::settings::Settings;

/// The real service's root.
pub use crate::settings::DEFAULT_TRANSFER_URL;

/// How many task ids one `task_list` filter may carry: Globus refuses more than 50.
pub(crate) const MAX_IDS_PER_LIST: usize = 50;

/// A query of `GET /task_list`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskQuery {
    /// The Transfer filter grammar: `field:value,value` clauses joined by `/`, e.g.
    /// `status:ACTIVE/label:=psg-...`.
    pub filter: Option<String>,
    /// Only these keys of each task (comma-separated).
    pub fields: Option<String>,
    /// E.g. `request_time DESC`.
    pub orderby: Option<String>,
    /// Page size (at most 1000).
    pub limit: Option<u32>,
    /// Where the page starts.
    pub offset: Option<u32>,
}

/// A client of one Transfer service as one identity. Cheap to clone.
///
/// ```no_run
/// use std::sync::Arc;
/// use ps_globus::auth::StaticTokenAuthorizer;
/// use ps_globus::transfer::TransferClient;
/// # ps_globus::block_on(async {
/// let client = TransferClient::new(ps_globus::Settings::global(), Arc::new(StaticTokenAuthorizer::new("token")))?;
/// let id = client.submission_id().await?;
/// # Ok::<(), ps_globus::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct TransferClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: String,
    auth: Arc<dyn Authorizer>,
    retry: RetryConfig,
    /// Each collection's home directory, as its endpoint document gave it.
    homes: std::sync::Mutex<std::collections::HashMap<String, Option<String>>>,
    /// What each request waits on first (a shared request budget), if anything.
    gate: Option<Arc<dyn RequestGate>>,
}

/// What every request of a client waits on before it is sent: a request budget shared
/// with other processes (the manager's request budget).
#[async_trait::async_trait]
pub trait RequestGate: Send + Sync + std::fmt::Debug {
    /// Returns when one more request may go.
    async fn admit(&self);
}

impl std::fmt::Debug for TransferClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransferClient")
            .field("base", &self.inner.base)
            .field("identity", &self.inner.auth.identity())
            .finish()
    }
}

impl TransferClient {
    /// A client of the service the settings name (`PS_GLOBUS_TRANSFER_URL`, default the
    /// real service), retrying as they say (`PS_GLOBUS_RETRIES`).
    pub fn new(settings: &Settings, auth: Arc<dyn Authorizer>) -> Result<Self> {
        let defaults = RetryConfig::default();
        let retry = RetryConfig {
            max_retries: settings.retries.unwrap_or(defaults.max_retries),
            ..defaults
        };
        Self::build(&settings.transfer_url, auth, retry)
    }

    /// A client of the service rooted at `base_url` (e.g. an emulator's `transfer_url`).
    pub fn with_base_url(base_url: &str, auth: Arc<dyn Authorizer>) -> Result<Self> {
        Self::build(base_url, auth, RetryConfig::default())
    }

    /// This client with another retry policy.
    pub fn with_retry(&self, retry: RetryConfig) -> Result<Self> {
        Ok(self.sibling(retry, self.inner.gate.clone()))
    }

    /// This client with every request (retries included) waiting on `gate` first.
    pub fn with_gate(&self, gate: Arc<dyn RequestGate>) -> Self {
        self.sibling(self.inner.retry, Some(gate))
    }

    /// A client sharing this one's connection pool and authorizer.
    fn sibling(&self, retry: RetryConfig, gate: Option<Arc<dyn RequestGate>>) -> Self {
        TransferClient {
            inner: Arc::new(Inner {
                http: self.inner.http.clone(),
                base: self.inner.base.clone(),
                auth: Arc::clone(&self.inner.auth),
                retry,
                homes: std::sync::Mutex::default(),
                gate,
            }),
        }
    }

    /// The identity this client acts as, with the service: `IDENTITY@TRANSFER_URL`.
    /// State kept per identity (batches, leases, the request budget) is keyed by it: a
    /// task id from one Transfer service means nothing to another.
    pub fn service_identity(&self) -> String {
        format!("{}@{}", self.identity(), self.base_url())
    }

    fn build(base_url: &str, auth: Arc<dyn Authorizer>, retry: RetryConfig) -> Result<Self> {
        let builder =
            reqwest::Client::builder().user_agent(concat!("ps-globus/", env!("CARGO_PKG_VERSION")));
        let (http, base) = crate::http::client("Transfer service URL", base_url, builder)?;
        Ok(TransferClient {
            inner: Arc::new(Inner {
                http,
                base,
                auth,
                retry,
                homes: std::sync::Mutex::default(),
                gate: None,
            }),
        })
    }

    /// The service root.
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    /// The identity the client acts as (non-secret).
    pub fn identity(&self) -> String {
        self.inner.auth.identity()
    }

    async fn call<T: DeserializeOwned + Send + 'static>(
        &self,
        method: Method,
        path: String,
        query: Vec<(String, String)>,
        body: Option<Value>,
    ) -> Result<T> {
        let inner = Arc::clone(&self.inner);
        runtime::handle()
            .spawn(async move { inner.execute(method, path, query, body).await })
            .await
            .map_err(|e| Error::background("a Transfer request task", Some(e.into())))?
    }

    async fn get<T: DeserializeOwned + Send + 'static>(
        &self,
        path: String,
        query: Vec<(String, String)>,
    ) -> Result<T> {
        self.call(Method::GET, path, query, None).await
    }

    async fn post<T: DeserializeOwned + Send + 'static>(
        &self,
        path: String,
        body: &impl Serialize,
    ) -> Result<T> {
        let body = serde_json::to_value(body).map_err(|e| Error::encode("json", e))?;
        self.call(Method::POST, path, Vec::new(), Some(body)).await
    }

    /// `GET /submission_id`: a fresh submission id.
    pub async fn submission_id(&self) -> Result<String> {
        let doc: SubmissionId = self.get("v0.10/submission_id".into(), Vec::new()).await?;
        Ok(doc.value)
    }

    /// `POST /transfer`. Safe to repeat: the submission id makes it idempotent.
    pub async fn submit_transfer(&self, request: &TransferRequest) -> Result<SubmitResult> {
        self.post("v0.10/transfer".into(), request).await
    }

    /// `POST /delete`.
    pub async fn submit_delete(&self, request: &DeleteRequest) -> Result<SubmitResult> {
        self.post("v0.10/delete".into(), request).await
    }

    /// `GET /task/{id}`.
    pub async fn task(&self, task_id: &str) -> Result<Task> {
        self.get(format!("v0.10/task/{task_id}"), Vec::new()).await
    }

    /// Why task `task_id` is over for good if the service no longer knows it (a direct
    /// lookup answers 404: it lost the task in a restart, or deleted it from history):
    /// a `TASK_NOT_FOUND` error. `None` while the service still has it.
    pub async fn lost_task(&self, task_id: &str) -> Result<Option<FatalError>> {
        match self.task(task_id).await {
            Err(e)
                if e.downcast_ref::<GlobusApiError>()
                    .is_some_and(|a| a.status == 404) =>
            {
                Ok(Some(FatalError {
                    code: "TASK_NOT_FOUND".into(),
                    description: format!(
                        "Globus no longer knows task {task_id} (the service lost it, or it was \
                     deleted from history); nothing more will happen to it"
                    ),
                }))
            }
            Ok(_) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /task_list`.
    pub async fn task_list(&self, query: &TaskQuery) -> Result<Page<Task>> {
        let mut q = Vec::new();
        let mut add = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                q.push((k.to_owned(), v));
            }
        };
        add("filter", query.filter.clone());
        add("fields", query.fields.clone());
        add("orderby", query.orderby.clone());
        add("limit", query.limit.map(|l| l.to_string()));
        add("offset", query.offset.map(|o| o.to_string()));
        self.get("v0.10/task_list".into(), q).await
    }

    /// The tasks with these ids, in as few `task_list` requests as the URL limit allows
    /// (`MAX_IDS_PER_LIST` ids each).
    pub async fn tasks_by_id(&self, ids: &[String], fields: Option<&str>) -> Result<Vec<Task>> {
        let mut tasks = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_IDS_PER_LIST) {
            let query = TaskQuery {
                filter: Some(format!("task_id:{}", chunk.join(","))),
                fields: fields.map(str::to_owned),
                limit: Some(1000),
                ..TaskQuery::default()
            };
            tasks.extend(self.task_list(&query).await?.data);
        }
        Ok(tasks)
    }

    /// `GET /task/{id}/event_list`, newest first; `errors_only` filters `is_error:1`.
    pub async fn events(
        &self,
        task_id: &str,
        limit: u32,
        errors_only: bool,
    ) -> Result<Page<Event>> {
        let filter = if errors_only { "is_error:1" } else { "" };
        let q = vec![
            ("limit".into(), limit.to_string()),
            ("filter".into(), filter.into()),
        ];
        self.get(format!("v0.10/task/{task_id}/event_list"), q)
            .await
    }

    /// Every file a task copied (following the markers).
    pub async fn successful_transfers(&self, task_id: &str) -> Result<Vec<SuccessfulTransfer>> {
        self.all_markers(format!("v0.10/task/{task_id}/successful_transfers"))
            .await
    }

    /// Every source path a task skipped (following the markers).
    pub async fn skipped_errors(&self, task_id: &str) -> Result<Vec<SkippedError>> {
        self.all_markers(format!("v0.10/task/{task_id}/skipped_errors"))
            .await
    }

    async fn all_markers<T: DeserializeOwned + Send + 'static>(
        &self,
        path: String,
    ) -> Result<Vec<T>> {
        let mut all = Vec::new();
        // The first page is asked for without a marker, as globus-sdk does.
        let mut marker = None;
        loop {
            let query =
                marker.map_or_else(Vec::new, |m: u64| vec![("marker".into(), m.to_string())]);
            let page: MarkerPage<T> = self.get(path.clone(), query).await?;
            all.extend(page.data);
            match page.next_marker {
                Some(next) if marker.is_none_or(|m| next > m) => marker = Some(next),
                _ => return Ok(all),
            }
        }
    }

    /// `POST /task/{id}/cancel`.
    pub async fn cancel(&self, task_id: &str) -> Result<ResultDoc> {
        self.post(
            format!("v0.10/task/{task_id}/cancel"),
            &serde_json::json!({}),
        )
        .await
    }

    /// `PUT /task/{id}`: a new label or deadline.
    pub async fn update_task(&self, task_id: &str, update: &TaskUpdate) -> Result<ResultDoc> {
        let body = serde_json::to_value(update).map_err(|e| Error::encode("json", e))?;
        self.call(
            Method::PUT,
            format!("v0.10/task/{task_id}"),
            Vec::new(),
            Some(body),
        )
        .await
    }

    /// Where `~` leads on `collection` (its `default_directory`, normalised), looked up
    /// once per client; `None` when the collection does not say (or says `/~/`).
    pub async fn home_directory(&self, collection: &str) -> Result<Option<String>> {
        if let Some(home) = self.inner.homes.lock().expect("homes lock").get(collection) {
            return Ok(home.clone());
        }
        let endpoint = self.endpoint(collection).await?;
        let home = crate::transfer::path::home_directory(endpoint.default_directory.as_deref());
        self.inner
            .homes
            .lock()
            .expect("homes lock")
            .insert(collection.to_owned(), home.clone());
        Ok(home)
    }

    /// `GET /endpoint/{id}`: a collection's document.
    pub async fn endpoint(&self, collection: &str) -> Result<Endpoint> {
        self.get(format!("v0.10/endpoint/{collection}"), Vec::new())
            .await
    }

    /// `GET /operation/endpoint/{id}/ls`.
    pub async fn ls(&self, collection: &str, path: &str) -> Result<FileList> {
        self.get(
            format!("v0.10/operation/endpoint/{collection}/ls"),
            vec![("path".into(), path.into())],
        )
        .await
    }

    /// `GET /operation/endpoint/{id}/stat`.
    pub async fn stat(&self, collection: &str, path: &str) -> Result<FileEntry> {
        self.get(
            format!("v0.10/operation/endpoint/{collection}/stat"),
            vec![("path".into(), path.into())],
        )
        .await
    }

    /// `POST /operation/endpoint/{id}/mkdir`.
    pub async fn mkdir(&self, collection: &str, path: &str) -> Result<ResultDoc> {
        let doc = MkdirRequest {
            data_type: "mkdir".into(),
            path: path.into(),
        };
        self.post(format!("v0.10/operation/endpoint/{collection}/mkdir"), &doc)
            .await
    }

    /// `POST /operation/endpoint/{id}/rename`.
    pub async fn rename(
        &self,
        collection: &str,
        old_path: &str,
        new_path: &str,
    ) -> Result<ResultDoc> {
        let doc = RenameRequest {
            data_type: "rename".into(),
            old_path: old_path.into(),
            new_path: new_path.into(),
        };
        self.post(
            format!("v0.10/operation/endpoint/{collection}/rename"),
            &doc,
        )
        .await
    }
}

impl Inner {
    async fn execute<T: DeserializeOwned>(
        &self,
        method: Method,
        path: String,
        query: Vec<(String, String)>,
        body: Option<Value>,
    ) -> Result<T> {
        let attempts = AtomicU32::new(0);
        let refreshed = AtomicBool::new(false);
        let consented = AtomicBool::new(false);
        let max_sleep = self.retry.max_sleep;
        let started = std::time::Instant::now();
        let within_budget = || started.elapsed() < self.retry.total;
        let result = (|| async {
            attempts.fetch_add(1, Ordering::Relaxed);
            self.attempt(
                &method,
                &path,
                &query,
                body.as_ref(),
                (&refreshed, &consented),
            )
            .await
        })
        .retry(self.retry)
        .when(|f: &Failure| f.retryable && within_budget())
        .adjust(|f: &Failure, backoff| match (f.retry_after, backoff) {
            // Retry-After replaces the backoff sleep but still uses up an attempt.
            (Some(wait), Some(_)) => Some(wait.min(max_sleep)),
            (_, backoff) => backoff,
        })
        .await;
        let retries = attempts.load(Ordering::Relaxed).saturating_sub(1);
        let text = result.map_err(|f| f.into_error(retries))?;
        serde_json::from_slice(&text).map_err(|e| {
            let mut answer = GlobusApiError::new(
                200,
                GlobusCode::BadResponse,
                format!("the answer is not the expected document: {e}"),
                "",
                (method.to_string(), format!("/{path}")),
            );
            answer.retries = retries;
            Error::with_source(ErrorKind::Service, answer.to_string(), e)
        })
    }

    /// One attempt (plus one repeat after a successful refresh on 401, and one after the
    /// authorizer added a missing `data_access`); the body of a success. Building,
    /// sending and classifying the answer are the three functions below.
    async fn attempt(
        &self,
        method: &Method,
        path: &str,
        query: &[(String, String)],
        body: Option<&Value>,
        (refreshed, consented): (&AtomicBool, &AtomicBool),
    ) -> Result<bytes::Bytes, Failure> {
        let url = format!("{}{path}", self.base);
        loop {
            let request = self.build(method, &url, query, body).await?;
            tracing::trace!(%method, path, "Globus Transfer request");
            let (status, retry_after, text) = send(request, &url).await?;
            if status.is_success() {
                return Ok(text);
            }
            if status.as_u16() == 401
                && !refreshed.swap(true, Ordering::SeqCst)
                && self.auth.refresh().await.map_err(Failure::fatal)?
            {
                continue;
            }
            match classify(status.as_u16(), retry_after, &text, (method, path)) {
                Refusal::Consent(required_scopes) => {
                    let collections = data_access_collections(&required_scopes);
                    if !consented.swap(true, Ordering::SeqCst)
                        && self.add_data_access(&collections).await?
                    {
                        continue;
                    }
                    return Err(Failure::fatal(Error::from(ConsentRequired::new(
                        required_scopes,
                        collections,
                    ))));
                }
                Refusal::Failed(failure) => return Err(failure),
            }
        }
    }

    /// The request, after the identity's request budget admits it, with the
    /// authorizer's header (kept out of any Debug output: logs at trace level).
    async fn build(
        &self,
        method: &Method,
        url: &str,
        query: &[(String, String)],
        body: Option<&Value>,
    ) -> Result<reqwest::RequestBuilder, Failure> {
        if let Some(gate) = &self.gate {
            gate.admit().await;
        }
        let header = self.auth.authorization().await.map_err(Failure::fatal)?;
        let mut header = reqwest::header::HeaderValue::from_str(&header).map_err(|_| {
            Failure::fatal(Error::unauthorized(
                "the authorizer produced a header that is not valid HTTP",
            ))
        })?;
        header.set_sensitive(true);
        let timeout = if *method == Method::GET {
            self.retry.read_timeout
        } else {
            self.retry.write_timeout
        };
        let mut request = self
            .http
            .request(method.clone(), url)
            .timeout(timeout)
            .header(AUTHORIZATION, header);
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        Ok(request)
    }

    /// Asks the authorizer to add `data_access` for `collections` (those that are
    /// collection ids); whether it did.
    async fn add_data_access(&self, collections: &[String]) -> Result<bool, Failure> {
        let ids: Vec<uuid::Uuid> = collections
            .iter()
            .filter_map(|c| uuid::Uuid::parse_str(c).ok())
            .collect();
        if ids.is_empty() {
            return Ok(false);
        }
        self.auth
            .add_data_access(&ids)
            .await
            .map_err(Failure::fatal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consent_scopes_name_their_collections() {
        let scopes = vec![
            "urn:globus:auth:scope:transfer.api.globus.org:all[*https://auth.globus.org/scopes/c1/data_access https://auth.globus.org/scopes/c2/data_access]".to_owned(),
        ];
        assert_eq!(data_access_collections(&scopes), vec!["c1", "c2"]);
    }
}

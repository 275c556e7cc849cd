//! The Transfer API v0.10 routes of the emulator (SPEC §3).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::auth::{Caller, data_access_scope};
use super::checksum::Algorithm;
use super::paths::{self, Resolved};
use super::tasks::{Admission, Kind, Request, TaskHandle, TaskState};
use super::{Collection, SimState, engine};
use crate::transfer::types::{
    DeleteRequest, ErrorDoc, FileEntry, FileList, Link, MarkerPage, MkdirRequest, Page,
    RenameRequest, ResultDoc, SubmitResult, Task, TaskUpdate, TransferRequest, format_time,
    parse_time, status,
};

/// An error answer in the Transfer dialect.
pub(crate) struct ApiError {
    status: StatusCode,
    doc: Box<ErrorDoc>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            doc: Box::new(ErrorDoc {
                code: code.into(),
                message: message.into(),
                request_id: Some(request_id()),
                resource: None,
                required_scopes: None,
                authorization_parameters: None,
            }),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ClientError.BadRequest", message)
    }

    fn consent_required(collection: &Collection) -> Self {
        let scope = data_access_scope(&collection.id);
        let message = format!(
            "Missing required data_access consent for collection {}",
            collection.id
        );
        let mut error = Self::new(StatusCode::FORBIDDEN, "ConsentRequired", message.clone());
        error.doc.required_scopes = Some(vec![scope.clone()]);
        error.doc.authorization_parameters =
            Some(json!({"required_scopes": [scope], "session_message": message}));
        error
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.doc)).into_response()
    }
}

type ApiResult<T = Response> = Result<T, ApiError>;

/// Nine alphanumerics, like the service's request ids.
pub(crate) fn request_id() -> String {
    Uuid::new_v4().simple().to_string()[..9].to_owned()
}

fn ok<T: serde::Serialize>(status: StatusCode, doc: T) -> ApiResult {
    Ok((status, Json(doc)).into_response())
}

/// Decoded `key=value` pairs of a query string, repeated keys kept.
pub(crate) fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    let decode = |s: &str| -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = |b: u8| (b as char).to_digit(16);
                    match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                        (Some(h), Some(l)) => {
                            out.push((h * 16 + l) as u8);
                            i += 2;
                        }
                        _ => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    raw.unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

fn param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn number(pairs: &[(String, String)], key: &str, default: u64) -> ApiResult<u64> {
    match param(pairs, key) {
        None | Some("") => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| ApiError::bad_request(format!("{key} must be a whole number, not {v:?}"))),
    }
}

fn collection(sim: &SimState, id: &str) -> ApiResult<Arc<Collection>> {
    sim.collection_by_id(id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "EndpointNotFound",
            format!("No such endpoint '{id}'"),
        )
    })
}

/// The collection, after checking the caller may use it (the `data_access` consent).
fn usable_collection(sim: &SimState, caller: &Caller, id: &str) -> ApiResult<Arc<Collection>> {
    let c = collection(sim, id)?;
    if c.config.requires_data_access && !c.config.high_assurance && !caller.has_data_access(&c.id) {
        return Err(ApiError::consent_required(&c));
    }
    Ok(c)
}

fn confine(c: &Collection, path: &str) -> ApiResult<Resolved> {
    paths::resolve(&c.root, path)
        .map_err(|e| ApiError::new(StatusCode::FORBIDDEN, "EndpointPermissionDenied", e.0))
}

fn own_task(sim: &SimState, caller: &Caller, id: &str) -> ApiResult<Arc<TaskHandle>> {
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "TaskNotFound",
            format!("Task {id} not found"),
        )
    };
    let uuid = Uuid::parse_str(id).map_err(|_| not_found())?;
    sim.tasks
        .get(&uuid)
        .filter(|t| t.owner == caller.identity.id)
        .ok_or_else(not_found)
}

// ---- submission ----------------------------------------------------------------------

/// `GET /submission_id`.
pub(crate) async fn submission_id() -> ApiResult {
    ok(
        StatusCode::OK,
        json!({"DATA_TYPE": "submission_id", "value": Uuid::new_v4()}),
    )
}

fn check_label(label: &Option<String>) -> ApiResult<()> {
    if let Some(label) = label
        && (label.chars().count() > 128 || label.contains(['\r', '\n']) || label.trim() != label)
    {
        return Err(ApiError::bad_request(
            "label must be at most 128 characters, one line, without surrounding spaces",
        ));
    }
    Ok(())
}

fn deadline(text: &Option<String>, default: Duration) -> ApiResult<DateTime<Utc>> {
    match text {
        None => Ok(Utc::now() + chrono::Duration::from_std(default).unwrap_or_default()),
        Some(t) => parse_time(t)
            .ok_or_else(|| ApiError::bad_request(format!("deadline {t:?} is not a date or time"))),
    }
}

fn check_submission_id(id: &str) -> ApiResult<()> {
    Uuid::parse_str(id).map(|_| ()).map_err(|_| {
        ApiError::bad_request(format!(
            "submission_id {id:?} is not a UUID (get one from /submission_id)"
        ))
    })
}

/// What transfer and delete documents share.
trait Submission: serde::de::DeserializeOwned {
    /// `"transfer"` or `"delete"`.
    const KIND: &'static str;
    /// The error code for a document without items.
    const NO_ITEMS: &'static str;
    /// (DATA_TYPE, submission id, number of items, label).
    fn header(&self) -> (&str, &str, usize, &Option<String>);
}

impl Submission for TransferRequest {
    const KIND: &'static str = "transfer";
    const NO_ITEMS: &'static str = "ClientError.BadRequest.NoTransferItems";
    fn header(&self) -> (&str, &str, usize, &Option<String>) {
        (
            &self.data_type,
            &self.submission_id,
            self.data.len(),
            &self.label,
        )
    }
}

impl Submission for DeleteRequest {
    const KIND: &'static str = "delete";
    const NO_ITEMS: &'static str = "ClientError.BadRequest.NoDeleteItems";
    fn header(&self) -> (&str, &str, usize, &Option<String>) {
        (
            &self.data_type,
            &self.submission_id,
            self.data.len(),
            &self.label,
        )
    }
}

/// Parses a submission and checks its DATA_TYPE, submission id, items and label.
fn parse_submission<T: Submission>(body: &[u8]) -> ApiResult<T> {
    let kind = T::KIND;
    let doc: T = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid {kind} document: {e}")))?;
    let (data_type, submission_id, items, label) = doc.header();
    if data_type != kind {
        return Err(ApiError::bad_request(format!(
            "DATA_TYPE must be \"{kind}\""
        )));
    }
    check_submission_id(submission_id)?;
    if items == 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            T::NO_ITEMS,
            format!("A {kind} requires at least one item"),
        ));
    }
    check_label(label)?;
    Ok(doc)
}

/// `POST /transfer`.
pub(crate) async fn submit_transfer(
    State(sim): State<Arc<SimState>>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> ApiResult {
    let req: TransferRequest = parse_submission(&body)?;
    if req.sync_level.is_some_and(|l| l > 3) {
        return Err(ApiError::bad_request("sync_level must be 0, 1, 2 or 3"));
    }
    for item in &req.data {
        if !matches!(
            item.data_type.as_str(),
            "transfer_item" | "transfer_symlink_item"
        ) {
            return Err(ApiError::bad_request(format!(
                "unknown item DATA_TYPE {:?}",
                item.data_type
            )));
        }
        if item.source_path.is_empty() || item.destination_path.is_empty() {
            return Err(ApiError::bad_request(
                "every item needs source_path and destination_path",
            ));
        }
        if item.external_checksum.is_some() && item.recursive == Some(true) {
            return Err(ApiError::bad_request(
                "external_checksum is not allowed on recursive items",
            ));
        }
        if let Some(a) = &item.checksum_algorithm
            && Algorithm::parse(a).is_none()
        {
            return Err(ApiError::bad_request(format!(
                "unsupported checksum_algorithm {a:?} (MD5, SHA1, SHA256, SHA512, ADLER32)"
            )));
        }
    }
    let src = usable_collection(&sim, &caller, &req.source_endpoint)?;
    let dst = usable_collection(&sim, &caller, &req.destination_endpoint)?;
    let deadline = deadline(&req.deadline, Duration::from_secs(24 * 3600))?;
    let mut doc = new_task_doc(&caller, Kind::Transfer, &req.label, deadline);
    doc.source_endpoint = Some(src.name.clone());
    doc.source_endpoint_id = Some(src.id.to_string());
    doc.source_endpoint_display_name = Some(src.name.clone());
    doc.destination_endpoint = Some(dst.name.clone());
    doc.destination_endpoint_id = Some(dst.id.to_string());
    doc.destination_endpoint_display_name = Some(dst.name.clone());
    doc.sync_level = req.sync_level;
    doc.verify_checksum = req.verify_checksum.unwrap_or(false);
    doc.encrypt_data = req.encrypt_data.unwrap_or(false);
    doc.preserve_timestamp = req.preserve_timestamp.unwrap_or(false);
    doc.delete_destination_extra = req.delete_destination_extra.unwrap_or(false);
    doc.skip_source_errors = req.skip_source_errors.unwrap_or(false);
    doc.fail_on_quota_errors = req.fail_on_quota_errors.unwrap_or(false);
    doc.filter_rules = req.filter_rules.clone();
    doc.recursive_symlinks = Some(
        req.recursive_symlinks
            .clone()
            .unwrap_or_else(|| "ignore".into()),
    );
    let submission = req.submission_id.clone();
    admit(
        &sim,
        &caller,
        Kind::Transfer,
        &submission,
        Request::Transfer(req),
        doc,
        deadline,
    )
}

/// `POST /delete`.
pub(crate) async fn submit_delete(
    State(sim): State<Arc<SimState>>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> ApiResult {
    let req: DeleteRequest = parse_submission(&body)?;
    let c = usable_collection(&sim, &caller, &req.endpoint)?;
    let deadline = deadline(&req.deadline, Duration::from_secs(24 * 3600))?;
    let mut doc = new_task_doc(&caller, Kind::Delete, &req.label, deadline);
    doc.source_endpoint = Some(c.name.clone());
    doc.source_endpoint_id = Some(c.id.to_string());
    doc.source_endpoint_display_name = Some(c.name.clone());
    let submission = req.submission_id.clone();
    admit(
        &sim,
        &caller,
        Kind::Delete,
        &submission,
        Request::Delete(req),
        doc,
        deadline,
    )
}

fn new_task_doc(
    caller: &Caller,
    kind: Kind,
    label: &Option<String>,
    deadline: DateTime<Utc>,
) -> Task {
    Task {
        data_type: "task".into(),
        task_id: String::new(),
        kind: kind.as_str().into(),
        status: status::ACTIVE.into(),
        label: label.clone(),
        owner_id: caller.identity.id.to_string(),
        username: Some(caller.identity.username.clone()),
        request_time: Some(format_time(Utc::now())),
        deadline: Some(format_time(deadline)),
        command: "API 0.10".into(),
        is_ok: Some(true),
        nice_status: Some("Queued".into()),
        nice_status_short_description: Some("Queued".into()),
        nice_status_expires_in: Some(-1),
        ..Task::default()
    }
}

fn admit(
    sim: &Arc<SimState>,
    caller: &Caller,
    kind: Kind,
    submission: &str,
    request: Request,
    mut doc: Task,
    deadline: DateTime<Utc>,
) -> ApiResult {
    let id = Uuid::new_v4();
    doc.task_id = id.to_string();
    let make = || {
        let state = TaskState {
            doc,
            events: Vec::new(),
            successful: Vec::new(),
            skipped: Vec::new(),
            deadline,
            started: None,
        };
        TaskHandle::new(id, caller.identity.id, kind, request, state)
    };
    let (kind_name, result_type) = match kind {
        Kind::Transfer => ("transfer", "transfer_result"),
        Kind::Delete => ("delete", "delete_result"),
    };
    let (code, message, task_id, status) = match sim.tasks.admit(
        submission,
        sim.config.pending_cap,
        make,
    ) {
        Admission::Accepted(task) => {
            sim.stats.task_submitted(kind.as_str());
            tokio::spawn(engine::run(Arc::clone(sim), task));
            let message = format!(
                "The {kind_name} has been accepted and a task has been created and queued for execution"
            );
            ("Accepted", message, id, StatusCode::ACCEPTED)
        }
        Admission::Duplicate(original) => (
            "Duplicate",
            format!(
                "A {kind_name} with submission id {submission} was already accepted as task {original}"
            ),
            original,
            StatusCode::OK,
        ),
        Admission::OverCap(pending) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "ClientError.Conflict.PendingTaskLimit",
                format!(
                    "You have {pending} tasks queued or running, the most allowed ({}); wait for some to finish",
                    sim.config.pending_cap
                ),
            ));
        }
    };
    ok(
        status,
        SubmitResult {
            data_type: result_type.into(),
            code: code.into(),
            message,
            request_id: request_id(),
            resource: format!("/{kind_name}"),
            submission_id: submission.into(),
            task_id: task_id.to_string(),
            task_link: Some(Link {
                data_type: "link".into(),
                href: format!("task/{task_id}?format=json"),
                rel: "related".into(),
                resource: "task".into(),
                title: "related task".into(),
            }),
        },
    )
}

// ---- tasks ---------------------------------------------------------------------------

/// `GET /task/{id}`.
pub(crate) async fn get_task(
    State(sim): State<Arc<SimState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult {
    let task = own_task(&sim, &caller, &id)?;
    let doc = task.state().doc.clone();
    ok(StatusCode::OK, doc)
}

/// `PUT /task/{id}`: change the label or deadline of an unfinished task.
pub(crate) async fn update_task(
    State(sim): State<Arc<SimState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Json(update): Json<TaskUpdate>,
) -> ApiResult {
    let task = own_task(&sim, &caller, &id)?;
    check_label(&update.label)?;
    let new_deadline = update
        .deadline
        .as_ref()
        .map(|d| deadline(&Some(d.clone()), Duration::ZERO))
        .transpose()?;
    {
        let mut state = task.state();
        if state.is_final() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "ClientError.Conflict",
                "The task is complete and cannot be modified",
            ));
        }
        if let Some(label) = update.label {
            state.doc.label = Some(label);
        }
        if let Some(d) = new_deadline {
            state.deadline = d;
            state.doc.deadline = Some(format_time(d));
        }
    }
    task.changed.notify_waiters();
    ok(
        StatusCode::OK,
        result_doc(
            "result",
            "Updated",
            "Updated successfully",
            &format!("/task/{id}"),
        ),
    )
}

fn result_doc(data_type: &str, code: &str, message: &str, resource: &str) -> ResultDoc {
    ResultDoc {
        data_type: data_type.into(),
        code: code.into(),
        message: message.into(),
        request_id: request_id(),
        resource: resource.into(),
    }
}

/// `POST /task/{id}/cancel`: cancels and waits (briefly) until the task has stopped.
pub(crate) async fn cancel_task(
    State(sim): State<Arc<SimState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult {
    let task = own_task(&sim, &caller, &id)?;
    let resource = format!("/task/{id}/cancel");
    if task.state().is_final() {
        return ok(
            StatusCode::OK,
            result_doc(
                "result",
                "TaskComplete",
                "The task completed before the cancel request was processed.",
                &resource,
            ),
        );
    }
    task.request_cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let changed = task.changed.notified();
            if task.state().is_final() {
                return;
            }
            changed.await;
        }
    })
    .await;
    let (code, message) = match stopped {
        Ok(()) => ("Canceled", "The task has been cancelled successfully."),
        Err(_) => (
            "CancelAccepted",
            "The cancel request has been accepted and the task will stop shortly.",
        ),
    };
    ok(
        StatusCode::OK,
        result_doc("result", code, message, &resource),
    )
}

/// `GET /task/{id}/pause_info`.
pub(crate) async fn pause_info(
    State(sim): State<Arc<SimState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult {
    own_task(&sim, &caller, &id)?;
    ok(
        StatusCode::OK,
        json!({"DATA_TYPE": "pause_info_limited", "pause_rules": [], "source_pause_message": null,
               "destination_pause_message": null, "source_pause_message_share": null,
               "destination_pause_message_share": null}),
    )
}

/// `GET /task/{id}/event_list`: newest first; `filter=is_error:1|0` or empty.
pub(crate) async fn event_list(
    State(sim): State<Arc<SimState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let task = own_task(&sim, &caller, &id)?;
    let q = query_pairs(raw.as_deref());
    let (limit, offset) = (number(&q, "limit", 10)?.min(1000), number(&q, "offset", 0)?);
    let only_errors = match param(&q, "filter").unwrap_or("") {
        "" => None,
        "is_error:1" => Some(true),
        "is_error:0" => Some(false),
        other => {
            return Err(ApiError::bad_request(format!(
                "unsupported event filter {other:?} (use is_error:1 or is_error:0)"
            )));
        }
    };
    let events: Vec<_> = task
        .state()
        .events
        .iter()
        .rev()
        .filter(|e| only_errors.is_none_or(|want| e.is_error == want))
        .cloned()
        .collect();
    let total = events.len() as u64;
    let data: Vec<_> = events
        .into_iter()
        .skip(offset as usize)
        .take(limit as usize)
        .collect();
    ok(
        StatusCode::OK,
        Page {
            data_type: "event_list".into(),
            length: data.len() as u64,
            data,
            limit,
            offset,
            total,
        },
    )
}

fn marker_page<T: Clone + serde::Serialize>(
    data_type: &str,
    all: &[T],
    raw: Option<&str>,
) -> ApiResult {
    const PAGE: usize = 1000;
    let q = query_pairs(raw);
    let marker = number(&q, "marker", 0)? as usize;
    let data: Vec<T> = all.iter().skip(marker).take(PAGE).cloned().collect();
    let next = marker + data.len();
    ok(
        StatusCode::OK,
        MarkerPage {
            data_type: data_type.into(),
            marker: marker as u64,
            next_marker: (next < all.len()).then_some(next as u64),
            data,
        },
    )
}

/// `GET /task/{id}/successful_transfers`.
pub(crate) async fn successful_transfers(
    State(sim): State<Arc<SimState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let task = own_task(&sim, &caller, &id)?;
    let all = task.state().successful.clone();
    marker_page("successful_transfers", &all, raw.as_deref())
}

/// `GET /task/{id}/skipped_errors`.
pub(crate) async fn skipped_errors(
    State(sim): State<Arc<SimState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let task = own_task(&sim, &caller, &id)?;
    let all = task.state().skipped.clone();
    marker_page("skipped_errors", &all, raw.as_deref())
}

/// One clause of the task_list filter grammar (SPEC §3.5).
enum Clause {
    Values(String, Vec<String>),
    Label(Vec<String>),
    Time(String, Option<DateTime<Utc>>, Option<DateTime<Utc>>),
}

fn parse_task_filter(text: &str) -> ApiResult<Vec<Clause>> {
    let mut clauses = Vec::new();
    for clause in text.split('/').filter(|c| !c.is_empty()) {
        let (field, values) = clause.split_once(':').ok_or_else(|| {
            ApiError::bad_request(format!("filter clause {clause:?} is not field:value"))
        })?;
        let values: Vec<String> = values.split(',').map(str::to_owned).collect();
        clauses.push(match field {
            "type" | "status" | "task_id" => Clause::Values(field.into(), values),
            "label" => Clause::Label(values),
            "request_time" | "completion_time" => {
                let time = |i: usize| -> ApiResult<Option<DateTime<Utc>>> {
                    match values.get(i).map(|v| v.trim()).filter(|v| !v.is_empty()) {
                        None => Ok(None),
                        Some(v) => parse_time(v).map(Some).ok_or_else(|| {
                            ApiError::bad_request(format!("bad time {v:?} in filter"))
                        }),
                    }
                };
                Clause::Time(field.into(), time(0)?, time(1)?)
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unsupported task_list filter field {other:?}"
                )));
            }
        });
    }
    Ok(clauses)
}

fn like(pattern: &str, text: &str) -> bool {
    if pattern.contains(['*', '?', '[']) {
        glob::Pattern::new(pattern)
            .map(|p| p.matches(text))
            .unwrap_or(false)
    } else {
        text.contains(pattern)
    }
}

fn label_matches(label: Option<&str>, value: &str) -> bool {
    let label = label.unwrap_or("");
    if let Some(p) = value.strip_prefix("!~") {
        !like(p, label)
    } else if let Some(p) = value.strip_prefix('~') {
        like(p, label)
    } else if let Some(p) = value.strip_prefix('!') {
        label != p
    } else {
        label == value.strip_prefix('=').unwrap_or(value)
    }
}

fn task_matches(doc: &Task, clauses: &[Clause]) -> bool {
    clauses.iter().all(|clause| match clause {
        Clause::Values(field, values) => {
            let v = match field.as_str() {
                "type" => &doc.kind,
                "status" => &doc.status,
                _ => &doc.task_id,
            };
            values.iter().any(|want| want.eq_ignore_ascii_case(v))
        }
        Clause::Label(values) => {
            // Negations must all hold; positive values are alternatives.
            let (neg, pos): (Vec<&String>, Vec<&String>) =
                values.iter().partition(|v| v.starts_with('!'));
            neg.iter().all(|v| label_matches(doc.label.as_deref(), v))
                && (pos.is_empty() || pos.iter().any(|v| label_matches(doc.label.as_deref(), v)))
        }
        Clause::Time(field, start, end) => {
            let t = if field == "request_time" {
                &doc.request_time
            } else {
                &doc.completion_time
            };
            let Some(t) = t.as_deref().and_then(parse_time) else {
                return false;
            };
            start.is_none_or(|s| t >= s) && end.is_none_or(|e| t <= e)
        }
    })
}

/// `GET /task_list`.
pub(crate) async fn task_list(
    State(sim): State<Arc<SimState>>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let q = query_pairs(raw.as_deref());
    let limit = number(&q, "limit", 10)?;
    if limit > 1000 {
        return Err(ApiError::bad_request("limit must be at most 1000"));
    }
    let offset = number(&q, "offset", 0)?;
    let clauses = parse_task_filter(param(&q, "filter").unwrap_or(""))?;
    let mut docs: Vec<Task> = sim
        .tasks
        .owned_by(caller.identity.id)
        .iter()
        .map(|t| t.state().doc.clone())
        .filter(|d| task_matches(d, &clauses))
        .collect();
    let orderby = param(&q, "orderby").unwrap_or("request_time DESC");
    let keys: Vec<(String, bool)> = orderby
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            let mut words = s.split_whitespace();
            let field = words.next().unwrap_or("request_time").to_owned();
            (
                field,
                words.next().is_some_and(|d| d.eq_ignore_ascii_case("DESC")),
            )
        })
        .collect();
    // Submission order breaks ties, so equal request times stay stable.
    if keys.iter().any(|(f, _)| f == "request_time") {
        let desc = keys
            .iter()
            .find(|(f, _)| f == "request_time")
            .is_some_and(|(_, d)| *d);
        if desc {
            docs.reverse();
        }
    }
    let sort_key = |d: &Task, field: &str| -> String {
        match field {
            "completion_time" => d.completion_time.clone().unwrap_or_default(),
            "label" => d.label.clone().unwrap_or_default(),
            "status" => d.status.clone(),
            "type" => d.kind.clone(),
            "task_id" => d.task_id.clone(),
            _ => d.request_time.clone().unwrap_or_default(),
        }
    };
    docs.sort_by(|a, b| {
        for (field, desc) in &keys {
            let ord = sort_key(a, field).cmp(&sort_key(b, field));
            let ord = if *desc { ord.reverse() } else { ord };
            if ord.is_ne() {
                return ord;
            }
        }
        std::cmp::Ordering::Equal
    });
    let total = docs.len() as u64;
    let fields: Option<Vec<&str>> = param(&q, "fields")
        .filter(|f| !f.is_empty())
        .map(|f| f.split(',').collect());
    let data: Vec<Value> = docs
        .into_iter()
        .skip(offset as usize)
        .take(limit as usize)
        .map(|d| {
            let full = serde_json::to_value(d).unwrap_or_default();
            match &fields {
                None => full,
                Some(fields) => {
                    let mut m = serde_json::Map::new();
                    m.insert("DATA_TYPE".into(), json!("task"));
                    for f in fields {
                        if let Some(v) = full.get(*f) {
                            m.insert((*f).into(), v.clone());
                        }
                    }
                    Value::Object(m)
                }
            }
        })
        .collect();
    ok(
        StatusCode::OK,
        Page {
            data_type: "task_list".into(),
            length: data.len() as u64,
            data,
            limit,
            offset,
            total,
        },
    )
}

// ---- collections ---------------------------------------------------------------------

fn endpoint_doc(c: &Collection, owner: &Uuid) -> Value {
    let entity_type = if c.config.requires_data_access {
        "GCSv5_mapped_collection"
    } else {
        "GCP_mapped_collection"
    };
    let gcp = !c.config.requires_data_access;
    json!({
        "DATA_TYPE": "endpoint", "id": c.id, "display_name": c.name, "canonical_name": format!("sim#{}", c.name),
        "name": c.name, "entity_type": entity_type, "owner_id": owner, "owner_string": "user@sim.ps-globus.local",
        "username": "user@sim.ps-globus.local", "organization": "ps-globus emulator", "department": null,
        "description": format!("emulated collection {} ({})", c.name, c.root.display()), "keywords": null,
        "contact_email": null, "contact_info": null, "info_link": null, "public": false, "subscription_id": null,
        "default_directory": "/~/", "force_encryption": false, "disable_verify": false, "force_verify": false,
        "high_assurance": c.config.high_assurance, "is_globus_connect": gcp, "gcp_connected": if gcp { json!(true) } else { json!(null) },
        "gcp_paused": if gcp { json!(false) } else { json!(null) }, "gcs_version": if gcp { json!(null) } else { json!("5.4.70") },
        "gcs_manager_url": null, "https_server": null, "host_endpoint_id": null, "host_path": null,
        "non_functional": false, "shareable": false, "acl_available": false, "acl_editable": false,
        "in_use": false, "my_effective_roles": ["administrator"], "local_user_info_available": null,
        "mfa_required": false, "activated": true, "expires_in": -1, "expire_time": null,
        "myproxy_server": null, "oauth_server": null, "network_use": null, "location": null,
        "max_concurrency": null, "preferred_concurrency": null, "max_parallelism": null, "preferred_parallelism": null,
        "DATA": [{"DATA_TYPE": "server", "hostname": null, "id": 0, "port": null, "scheme": null, "subject": null,
                  "uri": null, "is_connected": true, "is_paused": false, "incoming_data_port_start": null,
                  "incoming_data_port_end": null, "outgoing_data_port_start": null, "outgoing_data_port_end": null}],
    })
}

/// `GET /endpoint/{id}`.
pub(crate) async fn get_endpoint(
    State(sim): State<Arc<SimState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult {
    let c = collection(&sim, &id)?;
    ok(StatusCode::OK, endpoint_doc(&c, &caller.identity.id))
}

/// `GET /endpoint_search`.
pub(crate) async fn endpoint_search(
    State(sim): State<Arc<SimState>>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let q = query_pairs(raw.as_deref());
    let text = param(&q, "filter_fulltext").unwrap_or("").to_lowercase();
    let (limit, offset) = (number(&q, "limit", 25)?.min(100), number(&q, "offset", 0)?);
    let matching: Vec<Value> = sim
        .collections
        .iter()
        .filter(|c| {
            text.is_empty() || c.name.to_lowercase().contains(&text) || c.id.to_string() == text
        })
        .map(|c| endpoint_doc(c, &caller.identity.id))
        .collect();
    let data: Vec<Value> = matching
        .iter()
        .skip(offset as usize)
        .take(limit as usize)
        .cloned()
        .collect();
    let has_next = (offset + data.len() as u64) < matching.len() as u64;
    ok(
        StatusCode::OK,
        json!({"DATA_TYPE": "endpoint_list", "DATA": data, "has_next_page": has_next, "limit": limit, "offset": offset}),
    )
}

// ---- file operations -----------------------------------------------------------------

fn file_entry(name: &str, local: &std::path::Path) -> std::io::Result<FileEntry> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let link = std::fs::symlink_metadata(local)?;
    let (kind, meta, link_target) = if link.file_type().is_symlink() {
        let target = std::fs::read_link(local)
            .ok()
            .map(|t| t.display().to_string());
        match std::fs::metadata(local) {
            Ok(m) => (if m.is_dir() { "dir" } else { "file" }, m, target),
            Err(_) => ("invalid_symlink", link.clone(), target),
        }
    } else {
        (
            if link.is_dir() { "dir" } else { "file" },
            link.clone(),
            None,
        )
    };
    let modified: DateTime<Utc> = meta
        .modified()
        .map(Into::into)
        .unwrap_or_else(|_| Utc::now());
    Ok(FileEntry {
        data_type: "file".into(),
        name: name.into(),
        kind: kind.into(),
        size: meta.len(),
        permissions: format!("{:04o}", meta.permissions().mode() & 0o7777),
        last_modified: modified.format("%Y-%m-%d %H:%M:%S+00:00").to_string(),
        user: Some(meta.uid().to_string()),
        group: Some(meta.gid().to_string()),
        link_target: link_target.clone(),
        link_group: link_target.as_ref().map(|_| link.gid().to_string()),
        link_last_modified: None,
        link_size: link_target.as_ref().map(|_| link.len()),
        link_user: link_target.as_ref().map(|_| link.uid().to_string()),
    })
}

/// One `ls` filter parameter: `/`-separated clauses, all of which must hold.
fn ls_filter_matches(filter: &str, entry: &FileEntry) -> bool {
    filter.split('/').filter(|c| !c.is_empty()).all(|clause| {
        let Some((field, values)) = clause.split_once(':') else {
            return true;
        };
        match field {
            "name" => {
                let (neg, pos): (Vec<&str>, Vec<&str>) =
                    values.split(',').partition(|v| v.starts_with('!'));
                let one = |v: &str| label_matches(Some(&entry.name), v);
                neg.iter().all(|v| one(v)) && (pos.is_empty() || pos.iter().any(|v| one(v)))
            }
            "type" => values.split(',').any(|t| t == entry.kind),
            _ => true,
        }
    })
}

/// `GET /operation/endpoint/{id}/ls`.
pub(crate) async fn ls(
    State(sim): State<Arc<SimState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let c = usable_collection(&sim, &caller, &id)?;
    let q = query_pairs(raw.as_deref());
    let path = param(&q, "path").filter(|p| !p.is_empty()).unwrap_or("/~/");
    let dir = confine(&c, path)?;
    let show_hidden = !matches!(param(&q, "show_hidden"), Some("0") | Some("false"));
    let (limit, offset) = (
        number(&q, "limit", 100_000)?.min(100_000),
        number(&q, "offset", 0)?,
    );
    let filters: Vec<&str> = q
        .iter()
        .filter(|(k, _)| k == "filter")
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
        .collect();
    let meta = std::fs::metadata(&dir.local).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ApiError::new(
            StatusCode::NOT_FOUND,
            "ClientError.NotFound",
            format!("Directory {path} not found"),
        ),
        _ => ApiError::new(
            StatusCode::FORBIDDEN,
            "EndpointPermissionDenied",
            format!("Cannot list {path}: {e}"),
        ),
    })?;
    if !meta.is_dir() {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "ExternalError.DirListingFailed.NotDirectory",
            format!("{path} is not a directory"),
        ));
    }
    let mut entries = Vec::new();
    let read = std::fs::read_dir(&dir.local).map_err(|e| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "EndpointPermissionDenied",
            format!("Cannot list {path}: {e}"),
        )
    })?;
    for entry in read.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !show_hidden && name.starts_with('.') {
            continue;
        }
        if let Ok(e) = file_entry(&name, &entry.path())
            && (filters.is_empty() || filters.iter().any(|f| ls_filter_matches(f, &e)))
        {
            entries.push(e);
        }
    }
    entries.sort_by(|a, b| (a.kind != "dir", &a.name).cmp(&(b.kind != "dir", &b.name)));
    let total = entries.len() as u64;
    let data: Vec<FileEntry> = entries
        .into_iter()
        .skip(offset as usize)
        .take(limit as usize)
        .collect();
    let shown = if dir.path.ends_with('/') {
        dir.path.clone()
    } else {
        format!("{}/", dir.path)
    };
    ok(
        StatusCode::OK,
        FileList {
            data_type: "file_list".into(),
            path: shown,
            absolute_path: None,
            endpoint: c.id.to_string(),
            length: data.len() as u64,
            total,
            rename_supported: true,
            symlink_supported: false,
            data,
        },
    )
}

/// `GET /operation/endpoint/{id}/stat`.
pub(crate) async fn stat(
    State(sim): State<Arc<SimState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let c = usable_collection(&sim, &caller, &id)?;
    let q = query_pairs(raw.as_deref());
    let path = param(&q, "path").filter(|p| !p.is_empty()).unwrap_or("/~/");
    let target = confine(&c, path)?;
    let name = target.path.rsplit('/').next().unwrap_or("").to_owned();
    match file_entry(&name, &target.local) {
        Ok(entry) => ok(StatusCode::OK, entry),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("Path '{path}' not found"),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "EndpointPermissionDenied",
            format!("Cannot stat {path}: {e}"),
        )),
    }
}

/// `POST /operation/endpoint/{id}/mkdir` (not recursive).
pub(crate) async fn mkdir(
    State(sim): State<Arc<SimState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    let c = usable_collection(&sim, &caller, &id)?;
    let req: MkdirRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid mkdir document: {e}")))?;
    let target = confine(&c, &req.path)?;
    match std::fs::create_dir(&target.local) {
        Ok(()) => ok(
            StatusCode::ACCEPTED,
            result_doc(
                "mkdir_result",
                "DirectoryCreated",
                "The directory was created successfully",
                &format!("/operation/endpoint/{id}/mkdir"),
            ),
        ),
        Err(e) => Err(match e.kind() {
            std::io::ErrorKind::AlreadyExists => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "ExternalError.MkdirFailed.Exists",
                format!("Path already exists: {}", req.path),
            ),
            std::io::ErrorKind::NotFound => ApiError::new(
                StatusCode::NOT_FOUND,
                "ClientError.NotFound",
                format!("Parent directory of {} not found", req.path),
            ),
            _ => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "ExternalError.MkdirFailed.PermissionDenied",
                format!("Cannot create {}: {e}", req.path),
            ),
        }),
    }
}

/// `POST /operation/endpoint/{id}/rename`.
pub(crate) async fn rename(
    State(sim): State<Arc<SimState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    let c = usable_collection(&sim, &caller, &id)?;
    let req: RenameRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid rename document: {e}")))?;
    let (old, new) = (confine(&c, &req.old_path)?, confine(&c, &req.new_path)?);
    if old.path == "/" || new.path == "/" {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "EndpointPermissionDenied",
            "The collection root cannot be renamed",
        ));
    }
    if std::fs::symlink_metadata(&old.local).is_err() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "ClientError.NotFound",
            format!("Path '{}' not found", req.old_path),
        ));
    }
    if std::fs::symlink_metadata(&new.local).is_ok() {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "ExternalError.RenameFailed.Exists",
            format!("Path already exists: {}", req.new_path),
        ));
    }
    std::fs::rename(&old.local, &new.local).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "ExternalError.RenameFailed",
            format!("Cannot rename: {e}"),
        )
    })?;
    ok(
        StatusCode::OK,
        result_doc(
            "result",
            "FileRenamed",
            "File or directory renamed successfully",
            &format!("/operation/endpoint/{id}/rename"),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_decode_and_keep_repeats() {
        let q = query_pairs(Some(
            "filter=type%3Adir&filter=name%3A~*.txt&orderby=request_time+DESC&empty=",
        ));
        assert_eq!(q[0], ("filter".into(), "type:dir".into()));
        assert_eq!(q[1], ("filter".into(), "name:~*.txt".into()));
        assert_eq!(param(&q, "orderby"), Some("request_time DESC"));
        assert_eq!(param(&q, "empty"), Some(""));
    }

    #[test]
    fn label_filters() {
        assert!(label_matches(Some("psg-abc"), "=psg-abc"));
        assert!(label_matches(Some("psg-abc"), "psg-abc"));
        assert!(label_matches(Some("psg-abc"), "~abc"));
        assert!(label_matches(Some("psg-abc"), "~psg-*"));
        assert!(!label_matches(Some("psg-abc"), "!psg-abc"));
        assert!(label_matches(None, "!~psg"));
    }
}

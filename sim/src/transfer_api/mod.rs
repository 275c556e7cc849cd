//! The Transfer API v0.10 routes of the emulator: submission, tasks, collections and
//! file operations, with the service's error documents.

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
use super::paths::Resolved;
use super::tasks::{Admission, Kind, Request, TaskHandle, TaskState};
use super::{Collection, SimConfig, SimState, engine};
use ps_globus::internal::collection_path_from;
use ps_globus::transfer::types::{
    DeleteRequest, ErrorDoc, FileEntry, FileList, Link, MarkerPage, MkdirRequest, Page,
    RenameRequest, ResultDoc, SubmitResult, Task, TaskStatus, TaskUpdate, TransferRequest,
    format_time, parse_time,
};

mod files;
mod submit;
mod tasks;

#[allow(unused_imports)]
pub(crate) use files::*;
pub use submit::check_transfer_document;
#[allow(unused_imports)]
pub(crate) use submit::*;
#[allow(unused_imports)]
pub(crate) use tasks::*;

/// An error answer in the Transfer dialect.
pub(crate) struct ApiError {
    status: StatusCode,
    doc: Box<ErrorDoc>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            doc: Box::new({
                let mut built = ErrorDoc::default();
                built.code = code.into();
                built.message = message.into();
                built.request_id = Some(request_id());
                built.resource = None;
                built.required_scopes = None;
                built.authorization_parameters = None;
                built
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

/// Whether collection `c`'s access rules let `caller` use it (by username, identity id or
/// client id; no rules: everyone the emulator authenticates).
pub(crate) fn allowed(c: &Collection, caller: &Caller) -> bool {
    let Some(allow) = &c.config.allow else {
        return true;
    };
    let who = &caller.identity;
    let client_id = who.username.strip_suffix("@clients.auth.globus.org");
    allow
        .iter()
        .any(|a| *a == who.username || *a == who.id.to_string() || Some(a.as_str()) == client_id)
}

/// The collection, after checking the caller may use it: its access rules, then the
/// `data_access` consent.
fn usable_collection(sim: &SimState, caller: &Caller, id: &str) -> ApiResult<Arc<Collection>> {
    let c = collection(sim, id)?;
    if !allowed(&c, caller) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "PermissionDenied",
            format!(
                "{} has no role on collection {} ({}); its access rules allow others",
                caller.identity.username, c.name, c.id
            ),
        ));
    }
    if c.config.requires_data_access && !c.config.high_assurance && !caller.has_data_access(&c.id) {
        return Err(ApiError::consent_required(&c));
    }
    Ok(c)
}

fn confine(c: &Collection, path: &str) -> ApiResult<Resolved> {
    c.resolve(path)
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

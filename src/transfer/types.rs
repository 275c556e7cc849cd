//! The Globus Transfer API v0.10 documents, defined once for the client and the emulator.
//!
//! Request documents leave out absent fields (the service applies its defaults); the
//! task document carries every key, with `null` where none applies, as the service does.
//! Field names follow the wire (`DATA_TYPE`, `DATA`), as Transfer API v0.10 sends them.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

/// `GET /submission_id` (the client hands out the id itself).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct SubmissionId {
    /// Always `"submission_id"`.
    #[serde(rename = "DATA_TYPE", default = "data_type::submission_id")]
    pub data_type: String,
    /// A fresh submission id.
    pub value: String,
}

/// One file or directory of a transfer.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TransferItem {
    /// `"transfer_item"` (or `"transfer_symlink_item"`).
    #[serde(rename = "DATA_TYPE", default = "data_type::transfer_item")]
    pub data_type: String,
    /// Path on the source collection.
    pub source_path: String,
    /// Path on the destination collection (for a file, the file itself).
    pub destination_path: String,
    /// Directory or file; absent means the service detects it.
    pub recursive: Option<bool>,
    /// A checksum of the source file the copy must match.
    pub external_checksum: Option<String>,
    /// The algorithm of `external_checksum` (MD5 when absent).
    pub checksum_algorithm: Option<String>,
}

/// A filter rule applied while expanding directories.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FilterRule {
    /// Always `"filter_rule"`.
    #[serde(rename = "DATA_TYPE", default = "data_type::filter_rule")]
    pub data_type: String,
    /// `"include"` or `"exclude"`.
    pub method: String,
    /// A glob matched against entry names.
    pub name: String,
    /// `"file"` or `"dir"`; absent applies to both.
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// `POST /transfer`: the transfer document.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TransferRequest {
    /// Always `"transfer"`.
    #[serde(rename = "DATA_TYPE", default = "data_type::transfer")]
    pub data_type: String,
    /// From `GET /submission_id`; makes the submission idempotent.
    pub submission_id: String,
    /// Source collection id.
    pub source_endpoint: String,
    /// Destination collection id.
    pub destination_endpoint: String,
    /// The items to copy.
    #[serde(rename = "DATA", default)]
    pub data: Vec<TransferItem>,
    /// A label, at most 128 characters.
    pub label: Option<String>,
    /// 0 exists, 1 size, 2 mtime, 3 checksum; absent: always copy.
    pub sync_level: Option<u8>,
    /// Verify checksums after copying.
    pub verify_checksum: Option<bool>,
    /// Copy modification times.
    pub preserve_timestamp: Option<bool>,
    /// Encrypt data in transit.
    pub encrypt_data: Option<bool>,
    /// When the task expires.
    pub deadline: Option<String>,
    /// Skip missing or unreadable source paths instead of retrying them.
    pub skip_source_errors: Option<bool>,
    /// Fail on quota errors instead of retrying.
    pub fail_on_quota_errors: Option<bool>,
    /// Delete destination files absent from the source (recursive items).
    pub delete_destination_extra: Option<bool>,
    /// E-mail on success.
    pub notify_on_succeeded: Option<bool>,
    /// E-mail on failure.
    pub notify_on_failed: Option<bool>,
    /// E-mail when inactive.
    pub notify_on_inactive: Option<bool>,
    /// Filter rules for recursive items.
    pub filter_rules: Option<Vec<FilterRule>>,
    /// `"ignore"`, `"keep"` or `"copy"`.
    pub recursive_symlinks: Option<String>,
    /// GCSv5 identity mapping on the source.
    pub source_local_user: Option<String>,
    /// GCSv5 identity mapping on the destination.
    pub destination_local_user: Option<String>,
}

/// One path of a delete.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DeleteItem {
    /// Always `"delete_item"`.
    #[serde(rename = "DATA_TYPE", default = "data_type::delete_item")]
    pub data_type: String,
    /// The path to delete.
    pub path: String,
}

/// `POST /delete`: the delete document.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DeleteRequest {
    /// Always `"delete"`.
    #[serde(rename = "DATA_TYPE", default = "data_type::delete")]
    pub data_type: String,
    /// From `GET /submission_id`.
    pub submission_id: String,
    /// The collection id.
    pub endpoint: String,
    /// The paths to delete.
    #[serde(rename = "DATA", default)]
    pub data: Vec<DeleteItem>,
    /// A label.
    pub label: Option<String>,
    /// When the task expires (default 24 h).
    pub deadline: Option<String>,
    /// Needed to delete directories.
    pub recursive: Option<bool>,
    /// Do not fail on missing paths.
    pub ignore_missing: Option<bool>,
    /// Expand `*`, `?`, `[...]` in the last path component.
    pub interpret_globs: Option<bool>,
    /// GCSv5 identity mapping.
    pub local_user: Option<String>,
    /// E-mail on success.
    pub notify_on_succeeded: Option<bool>,
    /// E-mail on failure.
    pub notify_on_failed: Option<bool>,
    /// E-mail when inactive.
    pub notify_on_inactive: Option<bool>,
}

/// A link to a related resource.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Link {
    /// Always `"link"`.
    #[serde(rename = "DATA_TYPE", default)]
    pub data_type: String,
    /// Relative reference, e.g. `task/<id>?format=json`.
    pub href: String,
    /// `"related"`.
    pub rel: String,
    /// `"task"`.
    pub resource: String,
    /// A title.
    pub title: String,
}

/// The answer to `POST /transfer` and `POST /delete`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SubmitResult {
    /// `"transfer_result"` or `"delete_result"`.
    #[serde(rename = "DATA_TYPE", default)]
    pub data_type: String,
    /// `"Accepted"`, or `"Duplicate"` for a reused submission id.
    pub code: String,
    /// Human text.
    pub message: String,
    /// The request's id.
    #[serde(default)]
    pub request_id: String,
    /// The resource path.
    #[serde(default)]
    pub resource: String,
    /// The submission id.
    pub submission_id: String,
    /// The task (the original task for a duplicate).
    pub task_id: String,
    /// A link to the task.
    #[serde(default)]
    pub task_link: Option<Link>,
}

/// A fatal error of a finished task.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FatalError {
    /// E.g. `FILE_NOT_FOUND`, `CANCELED`, `EXPIRED`.
    pub code: String,
    /// Human text.
    pub description: String,
}

#[doc(no_inline)]
pub use super::states::TaskStatus;

/// `GET /task/{id}`: the task document (every key present, `null` where none applies).
///
/// Every field defaults, so partial documents (`task_list?fields=...`) parse too.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[allow(missing_docs)] // the field names are the service's task document keys
#[non_exhaustive]
pub struct Task {
    #[serde(rename = "DATA_TYPE", default)]
    pub data_type: String,
    pub task_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: TaskStatus,
    pub label: Option<String>,
    pub owner_id: String,
    pub username: Option<String>,
    pub request_time: Option<String>,
    pub completion_time: Option<String>,
    pub deadline: Option<String>,
    pub source_endpoint: Option<String>,
    pub source_endpoint_id: Option<String>,
    pub source_endpoint_display_name: Option<String>,
    pub destination_endpoint: Option<String>,
    pub destination_endpoint_id: Option<String>,
    pub destination_endpoint_display_name: Option<String>,
    pub sync_level: Option<u8>,
    pub verify_checksum: bool,
    pub encrypt_data: bool,
    pub preserve_timestamp: bool,
    pub delete_destination_extra: bool,
    pub skip_source_errors: bool,
    pub fail_on_quota_errors: bool,
    pub recursive_symlinks: Option<String>,
    pub filter_rules: Option<Vec<FilterRule>>,
    pub source_local_user: Option<String>,
    pub source_local_user_status: Option<String>,
    pub destination_local_user: Option<String>,
    pub destination_local_user_status: Option<String>,
    pub source_base_path: Option<String>,
    pub destination_base_path: Option<String>,
    pub command: String,
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    pub files_transferred: u64,
    pub files_skipped: u64,
    pub bytes_transferred: u64,
    pub bytes_checksummed: u64,
    pub effective_bytes_per_second: u64,
    pub subtasks_total: u64,
    pub subtasks_pending: u64,
    pub subtasks_retrying: u64,
    pub subtasks_succeeded: u64,
    pub subtasks_failed: u64,
    pub subtasks_canceled: u64,
    pub subtasks_expired: u64,
    pub subtasks_skipped_errors: u64,
    pub faults: u64,
    pub fatal_error: Option<FatalError>,
    pub is_ok: Option<bool>,
    pub is_paused: bool,
    pub nice_status: Option<String>,
    pub nice_status_short_description: Option<String>,
    pub nice_status_details: Option<String>,
    /// Seconds until `nice_status` expires: `-1`, `0`, a number, a numeric string or
    /// null on the wire (read leniently: anything else is `None`).
    #[serde(deserialize_with = "lenient::seconds")]
    pub nice_status_expires_in: Option<i64>,
    pub canceled_by_admin: Option<String>,
    pub canceled_by_admin_message: Option<String>,
    pub history_deleted: bool,
}

impl Task {
    /// Whether the task has finished (SUCCEEDED or FAILED).
    pub fn is_final(&self) -> bool {
        self.status.is_final()
    }
}

/// A paged list (`task_list`, `event_list`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Page<T> {
    /// `"task_list"`, `"event_list"`.
    #[serde(rename = "DATA_TYPE", default)]
    pub data_type: String,
    /// This page's entries.
    #[serde(rename = "DATA")]
    pub data: Vec<T>,
    /// Entries in this page.
    pub length: u64,
    /// The page size asked for.
    pub limit: u64,
    /// Where this page starts.
    pub offset: u64,
    /// Entries in all pages.
    pub total: u64,
}

// By hand: an empty page needs no `T: Default`.
impl<T> Default for Page<T> {
    fn default() -> Self {
        Page {
            data_type: String::new(),
            data: Vec::new(),
            length: 0,
            limit: 0,
            offset: 0,
            total: 0,
        }
    }
}

/// One task event.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Event {
    /// Always `"event"`.
    #[serde(rename = "DATA_TYPE", default)]
    pub data_type: String,
    /// E.g. `STARTED`, `SUCCEEDED`, `FILE_NOT_FOUND`.
    pub code: String,
    /// Short text.
    pub description: String,
    /// Long text.
    pub details: String,
    /// Whether the event reports an error.
    pub is_error: bool,
    /// When it happened.
    pub time: String,
}

/// A marker-paged list (`successful_transfers`, `skipped_errors`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MarkerPage<T> {
    /// `"successful_transfers"`, `"skipped_errors"`.
    #[serde(rename = "DATA_TYPE", default)]
    pub data_type: String,
    /// Where this page starts.
    #[serde(default)]
    pub marker: u64,
    /// Where the next page starts; `None` at the end.
    pub next_marker: Option<u64>,
    /// This page's entries.
    #[serde(rename = "DATA")]
    pub data: Vec<T>,
}

// By hand: an empty page needs no `T: Default`.
impl<T> Default for MarkerPage<T> {
    fn default() -> Self {
        MarkerPage {
            data_type: String::new(),
            marker: 0,
            next_marker: None,
            data: Vec::new(),
        }
    }
}

/// A file a task copied.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SuccessfulTransfer {
    /// Always `"successful_transfer"`.
    #[serde(rename = "DATA_TYPE", default)]
    pub data_type: String,
    /// Source path (empty where the service gave null: a viewer without the role).
    #[serde(deserialize_with = "lenient::path")]
    pub source_path: String,
    /// Destination path (empty where the service gave null).
    #[serde(deserialize_with = "lenient::path")]
    pub destination_path: String,
}

/// A source path a task skipped (with `skip_source_errors`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // the field names are the service's
#[non_exhaustive]
pub struct SkippedError {
    #[serde(rename = "DATA_TYPE", default)]
    pub data_type: String,
    /// Empty where the service gave null (a viewer without the role).
    #[serde(deserialize_with = "lenient::path")]
    pub source_path: String,
    #[serde(deserialize_with = "lenient::path")]
    pub destination_path: String,
    pub error_code: String,
    pub error_details: String,
    pub error_time: String,
    pub is_directory: bool,
    pub is_symlink: bool,
    pub is_delete_destination_extra: bool,
    pub external_checksum: Option<String>,
    pub checksum_algorithm: Option<String>,
}

/// A generic result (`cancel`, `rename`, `mkdir`, task update).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ResultDoc {
    /// `"result"` or `"mkdir_result"`.
    #[serde(rename = "DATA_TYPE", default)]
    pub data_type: String,
    /// E.g. `Canceled`, `FileRenamed`, `DirectoryCreated`.
    pub code: String,
    /// Human text.
    pub message: String,
    /// The request's id.
    #[serde(default)]
    pub request_id: String,
    /// The resource path.
    #[serde(default)]
    pub resource: String,
}

/// An error answer, as the emulator writes it and the client reads it (callers see it as
/// a [`GlobusApiError`](crate::error::GlobusApiError): not part of the API).
#[doc(hidden)]
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ErrorDoc {
    /// E.g. `ClientError.NotFound`, `ConsentRequired`.
    pub code: String,
    /// Human text.
    pub message: String,
    /// The request's id.
    pub request_id: Option<String>,
    /// The resource path.
    pub resource: Option<String>,
    /// For `ConsentRequired`: the scopes to ask for.
    pub required_scopes: Option<Vec<String>>,
    /// For `ConsentRequired`: parameters for the new login.
    pub authorization_parameters: Option<serde_json::Value>,
}

/// A file or directory entry (`ls`, `stat`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // the field names are the service's
#[non_exhaustive]
pub struct FileEntry {
    #[serde(rename = "DATA_TYPE", default)]
    pub data_type: String,
    pub name: String,
    /// `file`, `dir` or `invalid_symlink`.
    #[serde(rename = "type")]
    pub kind: String,
    pub size: u64,
    pub permissions: String,
    /// `YYYY-MM-DD HH:MM:SS+00:00`.
    pub last_modified: String,
    pub user: Option<String>,
    pub group: Option<String>,
    pub link_target: Option<String>,
    pub link_group: Option<String>,
    pub link_last_modified: Option<String>,
    pub link_size: Option<u64>,
    pub link_user: Option<String>,
}

/// `GET /operation/endpoint/{id}/ls`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // the field names are the service's
#[non_exhaustive]
pub struct FileList {
    #[serde(rename = "DATA_TYPE", default)]
    pub data_type: String,
    pub path: String,
    pub absolute_path: Option<String>,
    pub endpoint: String,
    pub length: u64,
    pub total: u64,
    pub rename_supported: bool,
    pub symlink_supported: bool,
    #[serde(rename = "DATA")]
    pub data: Vec<FileEntry>,
}

/// `POST /operation/endpoint/{id}/mkdir`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MkdirRequest {
    /// Always `"mkdir"`.
    #[serde(rename = "DATA_TYPE", default = "data_type::mkdir")]
    pub data_type: String,
    /// The directory to create.
    pub path: String,
}

/// `POST /operation/endpoint/{id}/rename`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RenameRequest {
    /// Always `"rename"`.
    #[serde(rename = "DATA_TYPE", default = "data_type::rename")]
    pub data_type: String,
    /// The current path.
    pub old_path: String,
    /// The new path.
    pub new_path: String,
}

/// `PUT /task/{id}`: the fields a task update may change.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskUpdate {
    /// Always `"task"`.
    #[serde(rename = "DATA_TYPE", default = "data_type::task")]
    pub data_type: String,
    /// A new label.
    pub label: Option<String>,
    /// A new deadline.
    pub deadline: Option<String>,
}

/// The collection fields the product reads from `GET /endpoint/{id}`; the rest of the
/// document is kept in `other`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Endpoint {
    /// Always `"endpoint"`.
    #[serde(rename = "DATA_TYPE", default)]
    pub data_type: String,
    /// The collection id.
    pub id: String,
    /// Its name.
    pub display_name: Option<String>,
    /// E.g. `GCSv5_mapped_collection`, `GCP_mapped_collection`.
    pub entity_type: Option<String>,
    /// High-assurance collections need no `data_access` consent.
    pub high_assurance: bool,
    /// Where relative paths start (`/~/`).
    pub default_directory: Option<String>,
    /// The collection's HTTPS origin (GCS v5 collections that enable HTTPS), else null.
    pub https_server: Option<String>,
    /// Every other key of the document.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

impl Endpoint {
    /// Whether Transfer requires a `data_access` consent to use this collection: GCSv5
    /// mapped collections that are not high-assurance (as globus-sdk decides it).
    pub fn requires_data_access_scope(&self) -> bool {
        self.entity_type.as_deref() == Some("GCSv5_mapped_collection") && !self.high_assurance
    }

    /// The HTTPS origin to send its files to, without a trailing `/`: `None` when the
    /// collection serves no HTTPS (`https_server` null or empty).
    pub fn https_origin(&self) -> Option<&str> {
        self.https_server
            .as_deref()
            .map(|s| s.trim_end_matches('/'))
            .filter(|s| !s.is_empty())
    }
}

/// Formats a time as the task documents do: `2021-09-02T18:04:47+00:00`.
#[doc(hidden)]
pub fn format_time(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
}

/// Parses the time forms clients send: RFC 3339, `YYYY-MM-DD HH:MM:SS` (UTC), a date.
///
/// ```
/// use ps_globus::transfer::types::parse_time;
/// let a = parse_time("2030-01-01 00:00:00").unwrap();
/// assert_eq!(a, parse_time("2030-01-01T00:00:00+00:00").unwrap());
/// assert_eq!(a, parse_time("2030-01-01").unwrap());
/// assert!(parse_time("soon").is_none());
/// ```
#[doc(hidden)]
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Some(t.and_utc());
        }
    }
    for format in ["%Y-%m-%d %H:%M:%S%:z", "%Y-%m-%d %H:%M:%S%z"] {
        if let Ok(t) = DateTime::parse_from_str(text, format) {
            return Some(t.with_timezone(&Utc));
        }
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// Readers for fields whose wire form varies (SPEC §3.11).
mod lenient {
    use serde::{Deserialize, Deserializer};

    /// An integer, a numeric string, or null/anything else as `None`.
    pub(super) fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        Ok(match serde_json::Value::deserialize(d)? {
            serde_json::Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
            serde_json::Value::String(s) => s.trim().parse::<f64>().ok().map(|f| f as i64),
            _ => None,
        })
    }

    /// A path, or null as the empty string (which matches no item's path).
    pub(super) fn path<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
    }
}

mod data_type {
    pub(super) fn submission_id() -> String {
        "submission_id".into()
    }
    pub(super) fn transfer_item() -> String {
        "transfer_item".into()
    }
    pub(super) fn filter_rule() -> String {
        "filter_rule".into()
    }
    pub(super) fn transfer() -> String {
        "transfer".into()
    }
    pub(super) fn delete_item() -> String {
        "delete_item".into()
    }
    pub(super) fn delete() -> String {
        "delete".into()
    }
    pub(super) fn mkdir() -> String {
        "mkdir".into()
    }
    pub(super) fn rename() -> String {
        "rename".into()
    }
    pub(super) fn task() -> String {
        "task".into()
    }
}

#[cfg(test)]
#[path = "types_tests.rs"]
mod tests;

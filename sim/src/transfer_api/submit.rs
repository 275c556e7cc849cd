//! Submitting transfer and delete tasks: parsing, validation, admission.

use super::*;

// ---- submission ----------------------------------------------------------------------

/// `GET /submission_id`.
pub(crate) async fn submission_id() -> ApiResult {
    ok(
        StatusCode::OK,
        json!({"DATA_TYPE": "submission_id", "value": Uuid::new_v4()}),
    )
}

pub(super) fn check_label(label: &Option<String>) -> ApiResult<()> {
    if let Some(label) = label
        && (label.chars().count() > 128 || label.contains(['\r', '\n']) || label.trim() != label)
    {
        return Err(ApiError::bad_request(
            "label must be at most 128 characters, one line, without surrounding spaces",
        ));
    }
    Ok(())
}

pub(super) fn deadline(text: &Option<String>, default: Duration) -> ApiResult<DateTime<Utc>> {
    match text {
        None => Ok(Utc::now() + chrono::Duration::from_std(default).unwrap_or_default()),
        Some(t) => parse_time(t)
            .ok_or_else(|| ApiError::bad_request(format!("deadline {t:?} is not a date or time"))),
    }
}

pub(super) fn check_submission_id(id: &str) -> ApiResult<()> {
    Uuid::parse_str(id).map(|_| ()).map_err(|_| {
        ApiError::bad_request(format!(
            "submission_id {id:?} is not a UUID (get one from /submission_id)"
        ))
    })
}

/// What transfer and delete documents share.
pub(super) trait Submission: serde::de::DeserializeOwned {
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
pub(super) fn parse_submission<T: Submission>(body: &[u8]) -> ApiResult<T> {
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

/// Runs the checks a transfer document passes before anything touches a collection:
/// its shape, submission id, label, deadline and every path. For the fuzzer: whatever
/// the bytes, this returns, and never panics.
#[doc(hidden)]
pub fn check_transfer_document(body: &[u8]) -> Result<(), String> {
    let doc: TransferRequest = parse_submission(body).map_err(|e| e.doc.message)?;
    deadline(&doc.deadline, Duration::from_secs(86_400)).map_err(|e| e.doc.message)?;
    for item in &doc.data {
        for path in [&item.source_path, &item.destination_path] {
            ps_globus::internal::collection_path(path).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Refuses, before anything is opened, an item whose copy would destroy its source: a
/// destination that is the source path, or lies inside the source directory (a
/// recursive copy would nest into itself), within one collection; or a destination that
/// is the very file of the source under another name (a hard link, a link inside the
/// collection, collections whose folders overlap), where writing truncates what is read.
pub(super) fn refuse_copies_onto_themselves(
    src: &Collection,
    dst: &Collection,
    req: &TransferRequest,
) -> ApiResult<()> {
    use std::os::unix::fs::MetadataExt;
    for item in &req.data {
        let (Ok(source), Ok(dest)) = (
            src.resolve(&item.source_path),
            dst.resolve(&item.destination_path),
        ) else {
            continue; // the task reports paths that leave the collection
        };
        let source_meta = std::fs::metadata(&source.local);
        if src.id == dst.id {
            let is_dir = source_meta.as_ref().is_ok_and(|m| m.is_dir());
            let inside = dest
                .path
                .starts_with(&format!("{}/", source.path.trim_end_matches('/')));
            if source.path == dest.path {
                return Err(ApiError::bad_request(format!(
                    "the source and the destination of {} are the same path",
                    item.source_path
                )));
            }
            if inside && (is_dir || item.recursive == Some(true)) {
                return Err(ApiError::bad_request(format!(
                    "the destination {} lies inside the source directory {}",
                    item.destination_path, item.source_path
                )));
            }
        }
        if let (Ok(a), Ok(b)) = (&source_meta, std::fs::metadata(&dest.local))
            && a.is_file()
            && (a.dev(), a.ino()) == (b.dev(), b.ino())
        {
            return Err(ApiError::bad_request(format!(
                "the destination {} is the source {} itself under another name; the copy \
                 would destroy it",
                item.destination_path, item.source_path
            )));
        }
    }
    Ok(())
}

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
    refuse_copies_onto_themselves(&src, &dst, &req)?;
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

/// Where a transfer writes: its destination collection and each item's normalised
/// destination path, with whether the item is recursive. `None` if the collection is
/// gone (such a task conflicts with nothing).
fn destinations(sim: &SimState, req: &TransferRequest) -> Option<(Uuid, Vec<(String, bool)>)> {
    let collection = sim.collection_by_id(&req.destination_endpoint)?;
    let home = collection.home();
    let paths = req
        .data
        .iter()
        .filter_map(|item| {
            let path = collection_path_from(&item.destination_path, &home).ok()?;
            Some((path, item.recursive == Some(true)))
        })
        .collect();
    Some((collection.id, paths))
}

/// Whether two transfers write to the same place: a destination path of one equals one
/// of the other, or lies under a recursive destination of the other.
///
/// Linear in the items (a set of paths, and a walk up each path's ancestors), not their
/// product: batches of ten thousand items meet each other here on every submission.
fn overlap(
    (a_collection, a): &(Uuid, Vec<(String, bool)>),
    (b_collection, b): &(Uuid, Vec<(String, bool)>),
) -> bool {
    a_collection == b_collection && (writes_into(a, b) || writes_into(b, a))
}

/// Whether a path of `a` is a path of `b` or lies under one of `b`'s recursive ones.
fn writes_into(a: &[(String, bool)], b: &[(String, bool)]) -> bool {
    let trimmed = |p: &str| p.trim_end_matches('/').to_owned();
    let paths: std::collections::HashSet<String> = b.iter().map(|(p, _)| trimmed(p)).collect();
    let dirs: std::collections::HashSet<String> = b
        .iter()
        .filter(|(_, recursive)| *recursive)
        .map(|(p, _)| trimmed(p))
        .collect();
    a.iter().any(|(path, _)| {
        let path = trimmed(path);
        if paths.contains(&path) || dirs.contains("") {
            return true;
        }
        let mut at = path.as_str();
        while let Some(slash) = at.rfind('/') {
            at = &at[..slash];
            if dirs.contains(at) {
                return true;
            }
        }
        false
    })
}

pub(super) fn new_task_doc(
    caller: &Caller,
    kind: Kind,
    label: &Option<String>,
    deadline: DateTime<Utc>,
) -> Task {
    {
        let mut built = Task::default();
        built.data_type = "task".into();
        built.task_id = String::new();
        built.kind = kind.as_str().into();
        built.status = TaskStatus::Active;
        built.label = label.clone();
        built.owner_id = caller.identity.id.to_string();
        built.username = Some(caller.identity.username.clone());
        built.request_time = Some(format_time(Utc::now()));
        built.deadline = Some(format_time(deadline));
        built.command = "API 0.10".into();
        built.is_ok = Some(true);
        built.nice_status = Some("Queued".into());
        built.nice_status_short_description = Some("Queued".into());
        built.nice_status_expires_in = Some(-1);
        built
    }
}

pub(super) fn admit(
    sim: &Arc<SimState>,
    caller: &Caller,
    kind: Kind,
    submission: &str,
    request: Request,
    mut doc: Task,
    deadline: DateTime<Utc>,
) -> ApiResult {
    let claims = match (&request, sim.config.identical_path_conflicts) {
        (Request::Transfer(req), true) => destinations(sim, req),
        _ => None,
    };
    let conflicts = |other: &TaskHandle| match (&claims, &other.request) {
        (Some(mine), Request::Transfer(theirs)) => {
            destinations(sim, theirs).is_some_and(|theirs| overlap(mine, &theirs))
        }
        _ => false,
    };
    let id = Uuid::new_v4();
    doc.task_id = id.to_string();
    let make = || {
        let state = TaskState::new(doc, deadline);
        TaskHandle::new(
            id,
            caller.identity.id,
            kind,
            (submission.to_owned(), request),
            state,
        )
    };
    let (kind_name, result_type) = match kind {
        Kind::Transfer => ("transfer", "transfer_result"),
        Kind::Delete => ("delete", "delete_result"),
    };
    let (code, message, task_id, status) = match sim.tasks.admit(
        submission,
        sim.config.pending_cap,
        conflicts,
        make,
    ) {
        Admission::Accepted(task) => {
            sim.stats.task_submitted(kind.as_str());
            sim.record(&task);
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
        Admission::Conflict => {
            // Globus's words; like Globus, the answer does not name the other task.
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "Conflict",
                "A transfer with identical paths has not yet completed",
            ));
        }
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
    ok(status, {
        let mut built = SubmitResult::default();
        built.data_type = result_type.into();
        built.code = code.into();
        built.message = message;
        built.request_id = request_id();
        built.resource = format!("/{kind_name}");
        built.submission_id = submission.into();
        built.task_id = task_id.to_string();
        built.task_link = Some({
            let mut built = Link::default();
            built.data_type = "link".into();
            built.href = format!("task/{task_id}?format=json");
            built.rel = "related".into();
            built.resource = "task".into();
            built.title = "related task".into();
            built
        });
        built
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(paths: &[(&str, bool)]) -> (Uuid, Vec<(String, bool)>) {
        let paths = paths.iter().map(|(p, r)| (p.to_string(), *r)).collect();
        (Uuid::nil(), paths)
    }

    /// The linear check finds the same conflicts as comparing every pair did: the same
    /// path, a path under a recursive destination (either way round, also "/"), and
    /// nothing for siblings, prefixes that are not directories, or other collections.
    #[test]
    fn overlapping_destinations_are_found_without_comparing_every_pair() {
        let cases = [
            (vec![("/d/x", false)], vec![("/d/x", false)], true),
            (vec![("/d/x", false)], vec![("/d/x/", false)], true),
            (vec![("/d/sub/x", false)], vec![("/d", true)], true),
            (vec![("/d", true)], vec![("/d/sub/x", false)], true),
            (vec![("/anything", false)], vec![("/", true)], true),
            (vec![("/d/x", false)], vec![("/d/y", false)], false),
            (vec![("/dx/y", false)], vec![("/d", true)], false),
            (vec![("/d/sub", false)], vec![("/d/sub/x", false)], false),
        ];
        for (a, b, expected) in cases {
            assert_eq!(overlap(&claims(&a), &claims(&b)), expected, "{a:?} / {b:?}");
        }
        let mut other = claims(&[("/d/x", false)]);
        other.0 = Uuid::from_u128(1);
        assert!(!overlap(&claims(&[("/d/x", false)]), &other));
        let many: Vec<(String, bool)> = (0..20_000).map(|i| (format!("/d/{i}"), false)).collect();
        let (mine, theirs) = (
            (Uuid::nil(), many.clone()),
            (Uuid::nil(), many[19_999..].to_vec()),
        );
        assert!(overlap(&mine, &theirs));
    }
}

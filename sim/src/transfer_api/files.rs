//! Collection and file routes: endpoint documents and search, `ls`, `stat`, `mkdir`, `rename`.

use super::*;

// ---- collections ---------------------------------------------------------------------

pub(super) fn endpoint_doc(c: &Collection, owner: &Uuid) -> Value {
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
        "default_directory": format!("{}/", c.home().trim_end_matches('/')), "force_encryption": false, "disable_verify": false, "force_verify": false,
        "high_assurance": c.config.high_assurance, "is_globus_connect": gcp, "gcp_connected": if gcp { json!(true) } else { json!(null) },
        "gcp_paused": if gcp { json!(false) } else { json!(null) }, "gcs_version": if gcp { json!(null) } else { json!("5.4.70") },
        "gcs_manager_url": null, "https_server": c.https_server, "host_endpoint_id": null, "host_path": null,
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

pub(super) fn file_entry(
    root: &std::path::Path,
    name: &str,
    local: &std::path::Path,
) -> std::io::Result<FileEntry> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let link = std::fs::symlink_metadata(local)?;
    let (kind, meta, link_target) = if link.file_type().is_symlink() {
        // A link that leads outside the collection shows only itself: never the size,
        // times, owner or name of what it points to.
        let inside = std::fs::canonicalize(local).is_ok_and(|real| real.starts_with(root));
        let target = std::fs::read_link(local)
            .ok()
            .filter(|_| inside)
            .map(|t| t.display().to_string());
        match std::fs::metadata(local) {
            Ok(m) if inside => (if m.is_dir() { "dir" } else { "file" }, m, target),
            _ => ("invalid_symlink", link.clone(), target),
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
    Ok({
        let mut built = FileEntry::default();
        built.data_type = "file".into();
        built.name = name.into();
        built.kind = kind.into();
        built.size = meta.len();
        built.permissions = format!("{:04o}", meta.permissions().mode() & 0o7777);
        built.last_modified = modified.format("%Y-%m-%d %H:%M:%S+00:00").to_string();
        built.user = Some(meta.uid().to_string());
        built.group = Some(meta.gid().to_string());
        built.link_target = link_target.clone();
        built.link_group = link_target.as_ref().map(|_| link.gid().to_string());
        built.link_last_modified = None;
        built.link_size = link_target.as_ref().map(|_| link.len());
        built.link_user = link_target.as_ref().map(|_| link.uid().to_string());
        built
    })
}

/// One `ls` filter parameter: `/`-separated clauses, all of which must hold.
pub(super) fn ls_filter_matches(filter: &str, entry: &FileEntry) -> bool {
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
        if let Ok(e) = file_entry(&c.root, &name, &entry.path())
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
    ok(StatusCode::OK, {
        let mut built = FileList::default();
        built.data_type = "file_list".into();
        built.path = shown;
        built.absolute_path = None;
        built.endpoint = c.id.to_string();
        built.length = data.len() as u64;
        built.total = total;
        built.rename_supported = true;
        built.symlink_supported = false;
        built.data = data;
        built
    })
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
    match file_entry(&c.root, &name, &target.local) {
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

//! Task routes: get, update, cancel, events, per-file results, and `task_list` with its filter grammar.

use super::*;

// ---- tasks ---------------------------------------------------------------------------

/// `GET /task/{id}`.
pub(crate) async fn get_task(
    State(sim): State<Arc<SimState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult {
    let task = own_task(&sim, &caller, &id)?;
    let doc = task.state().current();
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

pub(super) fn result_doc(data_type: &str, code: &str, message: &str, resource: &str) -> ResultDoc {
    {
        let mut built = ResultDoc::default();
        built.data_type = data_type.into();
        built.code = code.into();
        built.message = message.into();
        built.request_id = request_id();
        built.resource = resource.into();
        built
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
        page("event_list", data, (limit, offset, total)),
    )
}

pub(super) fn marker_page<T: Clone + serde::Serialize>(
    data_type: &str,
    all: &[T],
    raw: Option<&str>,
) -> ApiResult {
    const PAGE: usize = 1000;
    let q = query_pairs(raw);
    // A marker is an opaque token the service hands out in `next_marker`; the first page
    // is asked for without one (as globus-sdk does). This service never hands out 0.
    if param(&q, "marker") == Some("0") {
        return Err(ApiError::bad_request(
            "marker 0 was not given by this service: leave the marker out for the first page",
        ));
    }
    let marker = number(&q, "marker", 0)? as usize;
    let data: Vec<T> = all.iter().skip(marker).take(PAGE).cloned().collect();
    let next = marker + data.len();
    ok(StatusCode::OK, {
        let mut built = MarkerPage::default();
        built.data_type = data_type.into();
        built.marker = marker as u64;
        built.next_marker = (next < all.len()).then_some(next as u64);
        built.data = data;
        built
    })
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

/// One clause of the `task_list` filter grammar: `field:v1,v2` (any of the values),
/// `label:=exact` or `label:~like`, and `field:FROM,TO` time ranges; clauses are joined
/// with `/`.
pub(super) enum Clause {
    Values(String, Vec<String>),
    Label(Vec<String>),
    Time(String, Option<DateTime<Utc>>, Option<DateTime<Utc>>),
}

/// Parses a `task_list` filter as strictly as `config` says: at most
/// `max_filter_task_ids` ids in a `task_id:` clause, and label values led by `=`, `~`,
/// `!` or `!~` unless `bare_label_filters` (a bare value is undocumented).
pub(super) fn parse_task_filter(text: &str, config: &SimConfig) -> ApiResult<Vec<Clause>> {
    let mut clauses = Vec::new();
    for clause in text.split('/').filter(|c| !c.is_empty()) {
        let (field, values) = clause.split_once(':').ok_or_else(|| {
            ApiError::bad_request(format!("filter clause {clause:?} is not field:value"))
        })?;
        let values: Vec<String> = values.split(',').map(str::to_owned).collect();
        if field == "task_id" && values.len() > config.max_filter_task_ids {
            return Err(ApiError::bad_request(format!(
                "a task_id filter may hold at most {} ids, not {}",
                config.max_filter_task_ids,
                values.len()
            )));
        }
        if field == "label"
            && !config.bare_label_filters
            && let Some(bare) = values.iter().find(|v| !v.starts_with(['=', '~', '!']))
        {
            return Err(ApiError::bad_request(format!(
                "label filter value {bare:?} needs an operator: =exact, ~like, !not, !~not-like"
            )));
        }
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

/// `label:~pattern`: `*` (and `?`, `[…]`) as wild-cards, else a part of the label; in any
/// case, as globus-cli documents its inexact filters.
pub(super) fn like(pattern: &str, text: &str) -> bool {
    let (pattern, text) = (pattern.to_lowercase(), text.to_lowercase());
    if pattern.contains(['*', '?', '[']) {
        glob::Pattern::new(&pattern)
            .map(|p| p.matches(&text))
            .unwrap_or(false)
    } else {
        text.contains(&pattern)
    }
}

pub(super) fn label_matches(label: Option<&str>, value: &str) -> bool {
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

pub(super) fn task_matches(doc: &Task, clauses: &[Clause]) -> bool {
    clauses.iter().all(|clause| match clause {
        Clause::Values(field, values) => {
            let v = match field.as_str() {
                "type" => doc.kind.as_str(),
                "status" => doc.status.as_str(),
                _ => doc.task_id.as_str(),
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
    let clauses = parse_task_filter(param(&q, "filter").unwrap_or(""), &sim.config)?;
    let mut docs: Vec<Task> = sim
        .tasks
        .owned_by(caller.identity.id)
        .iter()
        .map(|t| t.state().current())
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
            "status" => d.status.to_string(),
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
        page("task_list", data, (limit, offset, total)),
    )
}

/// A page of `data` as the service lists it: `limit` and `offset` as asked, `total` in all.
fn page<T>(data_type: &str, data: Vec<T>, (limit, offset, total): (u64, u64, u64)) -> Page<T> {
    let mut page = Page::default();
    page.data_type = data_type.into();
    page.length = data.len() as u64;
    page.data = data;
    page.limit = limit;
    page.offset = offset;
    page.total = total;
    page
}

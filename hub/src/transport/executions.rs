//! HTTP handlers for executions as wholes: the summary, the result
//! (long-poll) and the list of recent executions.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use exechub_protocol::{ExecutionList, ExecutionSummary, Loc, StatusFilter, ValidationError};

use super::http::{authenticate, authorize, execution_id, query_u64};
use crate::AppState;
use crate::auth::Action;
use crate::error::ApiError;
use crate::store::ListCursor;

/// Longest `wait` a result request may ask for, in seconds.
pub const MAX_RESULT_WAIT: u64 = 60;
/// Largest page of the list of executions.
pub const MAX_LIST_LIMIT: u64 = 200;
/// Page size when `limit` is not given.
pub const DEFAULT_LIST_LIMIT: u64 = 50;
/// Pages of the store read at most to fill one page for a filtered or
/// restricted caller.
const SCAN_PAGES: usize = 20;

/// `GET /api/v1/executions/{execution_id}`: the execution's summary, 404 when unknown.
#[utoipa::path(get, path = "/api/v1/executions/{execution_id}", tag = "executions",
    params(("execution_id" = String, Path, min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f{}]+$", description = "The execution: 1 to 256 bytes of UTF-8, without control characters, `{` or `}`"), ("access_token" = Option<String>, Query, description = "The token, for clients that cannot set headers")),
    security((), ("BearerAuth" = [])),
    responses(
        (status = 200, description = "The execution's summary", body = ExecutionSummary),
        (status = 401, description = "No token, or an invalid one (when the hub requires tokens)", body = exechub_protocol::ErrorBody),
        (status = 403, description = "The token does not allow this execution", body = exechub_protocol::ErrorBody),
        (status = 404, description = "Execution not found", body = exechub_protocol::ErrorBody),
        (status = 422, description = "Validation Error", body = exechub_protocol::HttpValidationError),
        (status = 503, description = "The event store is unavailable; retry", body = exechub_protocol::ErrorBody),
    ))]
pub async fn summary(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<ExecutionSummary>, ApiError> {
    let execution_id = readable(&app, path, &query, &headers)?;
    match app.store.summary(&execution_id).await? {
        Some(summary) => Ok(Json(summary)),
        None => Err(ApiError::NotFound),
    }
}

/// `GET /api/v1/executions/{execution_id}/result?wait=S`: the summary as soon
/// as the execution has ended, waiting up to `S` seconds (at most 60); when
/// the wait runs out first, the summary as it stands (`status: running`).
/// 404 when the execution is still unknown at the end of the wait.
#[utoipa::path(get, path = "/api/v1/executions/{execution_id}/result", tag = "executions",
    params(("execution_id" = String, Path, min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f{}]+$", description = "The execution: 1 to 256 bytes of UTF-8, without control characters, `{` or `}`"),
        ("wait" = Option<u64>, Query, minimum = 0, maximum = 60, description = "Seconds to wait for the end (default 0)"),
        ("access_token" = Option<String>, Query, description = "The token, for clients that cannot set headers")),
    security((), ("BearerAuth" = [])),
    responses(
        (status = 200, description = "The summary once ended, or as it stands when the wait ran out", body = ExecutionSummary),
        (status = 401, description = "No token, or an invalid one (when the hub requires tokens)", body = exechub_protocol::ErrorBody),
        (status = 403, description = "The token does not allow this execution", body = exechub_protocol::ErrorBody),
        (status = 404, description = "Execution not found (after the wait)", body = exechub_protocol::ErrorBody),
        (status = 422, description = "Validation Error", body = exechub_protocol::HttpValidationError),
        (status = 503, description = "The event store is unavailable; retry", body = exechub_protocol::ErrorBody),
    ))]
pub async fn result(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<ExecutionSummary>, ApiError> {
    let execution_id = readable(&app, path, &query, &headers)?;
    let wait = Duration::from_secs(query_u64(&query, "wait", 0, MAX_RESULT_WAIT)?);
    let shutdown = app.shutdown.clone();
    let summary = tokio::select! {
        summary = app.directory.result(&execution_id, wait) => summary?,
        // A hub going down answers now rather than holding the request.
        () = shutdown.cancelled() => app.store.summary(&execution_id).await?,
    };
    summary.map(Json).ok_or(ApiError::NotFound)
}

/// `GET /api/v1/executions?status=running|ended|all&limit=N&cursor=C`:
/// executions by most recent activity, with their summaries; only those the
/// caller may subscribe to.
#[utoipa::path(get, path = "/api/v1/executions", tag = "executions",
    params(
        ("status" = Option<StatusFilter>, Query, description = "`all` (default), `running` or `ended`"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 200, description = "Executions per page (default 50)"),
        ("cursor" = Option<String>, Query, pattern = r"^[0-9]{1,19}\.([0-7][0-9a-fA-F]){0,512}$", description = "`next_cursor` of the previous page (opaque; the pattern covers ids in ASCII)"),
        ("access_token" = Option<String>, Query, description = "The token, for clients that cannot set headers")),
    security((), ("BearerAuth" = [])),
    responses(
        (status = 200, description = "Executions the caller may subscribe to, most recently updated first", body = ExecutionList),
        (status = 401, description = "No token, or an invalid one (when the hub requires tokens)", body = exechub_protocol::ErrorBody),
        (status = 422, description = "Validation Error", body = exechub_protocol::HttpValidationError),
        (status = 503, description = "The event store is unavailable; retry", body = exechub_protocol::ErrorBody),
    ))]
pub async fn list(
    State(app): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<ExecutionList>, ApiError> {
    let grant = authenticate(&app, &headers, query.get("access_token"))?;
    let ListQuery {
        status,
        limit,
        cursor,
    } = ListQuery::read(&query)?;
    let mut executions = Vec::with_capacity(limit);
    let mut position = cursor;
    let mut more = false;
    for _ in 0..SCAN_PAGES {
        let page = app.store.recent(position.as_ref(), limit).await?;
        let last_page = page.len() < limit;
        for listed in page {
            position = Some(listed.cursor);
            let summary = listed.summary;
            let visible = status.matches(&summary)
                && grant
                    .check(Action::Subscribe, &summary.execution_id)
                    .is_ok();
            if visible {
                executions.push(summary);
                if executions.len() == limit {
                    break;
                }
            }
        }
        more = !last_page || executions.len() == limit;
        if last_page || executions.len() == limit {
            break;
        }
    }
    let next_cursor = more.then(|| position.as_ref().map(encode_cursor)).flatten();
    Ok(Json(ExecutionList {
        executions,
        next_cursor,
    }))
}

/// The list's query, validated: every problem at once, as a 422 lists them.
struct ListQuery {
    status: StatusFilter,
    limit: usize,
    cursor: Option<ListCursor>,
}

impl ListQuery {
    fn read(query: &HashMap<String, String>) -> Result<Self, ApiError> {
        let mut problems = Vec::new();
        let status = match query.get("status").map(String::as_str) {
            None => StatusFilter::All,
            Some(wire) => StatusFilter::from_wire(wire).unwrap_or_else(|| {
                problems.push(ValidationError::new(
                    vec![Loc::from("query"), Loc::from("status")],
                    "enum",
                    "Input should be 'all', 'running' or 'ended'",
                ));
                StatusFilter::All
            }),
        };
        let limit = query_u64(query, "limit", DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT)
            .and_then(at_least_one)
            .map_err(|p| problems.push(p))
            .unwrap_or(DEFAULT_LIST_LIMIT);
        let cursor = query.get("cursor").and_then(|text| {
            let cursor = decode_cursor(text);
            if cursor.is_none() {
                problems.push(ValidationError::new(
                    vec![Loc::from("query"), Loc::from("cursor")],
                    "value_error",
                    "Value error, not a cursor this hub returned",
                ));
            }
            cursor
        });
        if !problems.is_empty() {
            return Err(ApiError::Validation(problems));
        }
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        Ok(Self {
            status,
            limit,
            cursor,
        })
    }
}

/// A page size of 0 asks for nothing.
fn at_least_one(limit: u64) -> Result<u64, ValidationError> {
    if limit == 0 {
        let loc = vec![Loc::from("query"), Loc::from("limit")];
        return Err(ValidationError::new(
            loc,
            "greater_than_equal",
            "Input should be greater than or equal to 1",
        ));
    }
    Ok(limit)
}

/// The execution of the path, if the caller may subscribe to it.
fn readable(
    app: &AppState,
    path: Result<Path<String>, PathRejection>,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<String, ApiError> {
    let token = query.get("access_token");
    let (_, id) = authorize(app, headers, token, execution_id(path), Action::Subscribe)?;
    Ok(id)
}

/// `<updated_ms>.<execution id in hex>`: opaque to clients, safe in a URL.
fn encode_cursor(cursor: &ListCursor) -> String {
    let mut text = format!("{}.", cursor.updated_ms);
    for byte in cursor.execution_id.as_bytes() {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

fn decode_cursor(text: &str) -> Option<ListCursor> {
    let (ms, hex) = text.split_once('.')?;
    if hex.len() % 2 != 0 || hex.len() > 1024 {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some(ListCursor {
        updated_ms: ms.parse().ok()?,
        execution_id: String::from_utf8(bytes).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let cursor = ListCursor {
            updated_ms: 1_700_000_000_123,
            execution_id: "run/ä 1".into(),
        };
        assert_eq!(decode_cursor(&encode_cursor(&cursor)), Some(cursor));
        assert_eq!(decode_cursor("12.zz"), None);
        assert_eq!(decode_cursor("x.00"), None);
        assert_eq!(decode_cursor("12"), None);
    }
}

//! HTTP handlers: publish, history, health (executions as wholes: [`super::executions`]).

use std::collections::HashMap;
use std::convert::Infallible;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use exechub_protocol::{
    BatchAccepted, Loc, PublishAccepted, ValidationError, body_not_json, is_idempotency_key,
    validate_execution_id,
};
use serde_json::json;

use super::body::{BatchBody, PublishBody};
use crate::AppState;
use crate::auth::{Action, Grant, bearer};
use crate::error::ApiError;
use crate::limits::ClientKey;

/// Largest page `GET …/events` returns.
pub const MAX_HISTORY_LIMIT: u64 = 10_000;
/// Page size when `limit` is not given.
pub const DEFAULT_HISTORY_LIMIT: u64 = 1_000;

/// `POST /api/v1/executions/{execution_id}/events`: validate, store, answer 202 with the seq.
///
/// An `Idempotency-Key` header makes retries safe: a repeat within the window
/// answers 202 with the original seq (and `Idempotent-Replayed: true`).
#[utoipa::path(post, path = "/api/v1/executions/{execution_id}/events", tag = "executions",
    operation_id = "publish_execution_event_api_v1_executions__execution_id__events_post",
    summary = "Publish Execution Event",
    params(("execution_id" = String, Path, min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f{}]+$", description = "The execution: 1 to 256 bytes of UTF-8, without control characters, `{` or `}`"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 256, pattern = r"^[!-~]+$", description = "Makes retries safe: a repeat within the window answers with the original seq"),
        ("traceparent" = Option<String>, Header, description = "W3C trace context, kept with the event's log lines and passed to webhooks and NATS")),
    request_body(content = exechub_protocol::PublishRequest, content_type = "application/json"),
    security((), ("BearerAuth" = [])),
    responses(
        (status = 202, description = "Stored; the event's seq", body = exechub_protocol::PublishAccepted,
            headers(("Idempotent-Replayed" = String, description = "`true` when an earlier publish with this key answered"))),
        (status = 401, description = "No token, or an invalid one (when the hub requires tokens)", body = exechub_protocol::ErrorBody),
        (status = 403, description = "The token does not allow this execution", body = exechub_protocol::ErrorBody),
        (status = 409, description = "The execution has ended", body = exechub_protocol::ErrorBody),
        (status = 413, description = "The body exceeds --max-event-bytes", body = exechub_protocol::ErrorBody),
        (status = 422, description = "Validation Error", body = exechub_protocol::HttpValidationError),
        (status = 429, description = "Over the client's publish rate", body = exechub_protocol::ErrorBody,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
        (status = 503, description = "The event store is unavailable; retry", body = exechub_protocol::ErrorBody,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
    ))]
pub async fn publish(State(app): State<AppState>, request: PublishRequest) -> Response {
    counted(publish_one(app, request).await)
}

async fn publish_one(app: AppState, request: PublishRequest) -> Result<Response, ApiError> {
    let headers = &request.headers;
    let grant = authenticate(&app, headers, None)?;
    let body = request
        .body
        .map_err(|rejection| body_error(&rejection, app.config.max_event_bytes))?;
    let (execution_id, key, event) =
        publish_input(request.path, headers, &body, PublishBody::read)?;
    grant.check(Action::Publish, &execution_id)?;
    let client = client_of(&app, headers, None, request.connection);
    app.publish_limit.check(client, 1)?;
    let event = event
        .encode(execution_id.clone())
        .with_idempotency_key(key)
        .with_traceparent(traceparent(headers));
    let receipt = app.publisher.publish(event).await?;
    let replayed = replayed_header(receipt.duplicate);
    let accepted = PublishAccepted {
        status: "accepted".into(),
        execution_id,
        seq: receipt.seq,
        timestamp: receipt.timestamp,
    };
    Ok((StatusCode::ACCEPTED, replayed, Json(accepted)).into_response())
}

/// `POST /api/v1/executions/{execution_id}/events/batch`: validate the whole
/// batch, store it atomically with consecutive seqs, answer 202 with the first
/// and last seq. Nothing is stored when any event is invalid (422 with `loc`
/// pointing into `events[i]`). `Idempotency-Key` works as for a single publish.
#[utoipa::path(post, path = "/api/v1/executions/{execution_id}/events/batch", tag = "executions",
    params(("execution_id" = String, Path, min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f{}]+$", description = "The execution: 1 to 256 bytes of UTF-8, without control characters, `{` or `}`"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 256, pattern = r"^[!-~]+$", description = "Makes retries safe, as for a single publish"),
        ("traceparent" = Option<String>, Header, description = "W3C trace context, passed on with every event of the batch")),
    request_body(content = exechub_protocol::BatchRequest, content_type = "application/json"),
    security((), ("BearerAuth" = [])),
    responses(
        (status = 202, description = "Stored with consecutive seqs", body = exechub_protocol::BatchAccepted,
            headers(("Idempotent-Replayed" = String, description = "`true` when an earlier batch with this key answered"))),
        (status = 401, description = "No token, or an invalid one (when the hub requires tokens)", body = exechub_protocol::ErrorBody),
        (status = 403, description = "The token does not allow this execution", body = exechub_protocol::ErrorBody),
        (status = 409, description = "The execution has ended", body = exechub_protocol::ErrorBody),
        (status = 413, description = "The body exceeds --max-batch-bytes", body = exechub_protocol::ErrorBody),
        (status = 422, description = "Validation Error (nothing stored)", body = exechub_protocol::HttpValidationError),
        (status = 429, description = "Over the client's publish rate", body = exechub_protocol::ErrorBody,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
        (status = 503, description = "The event store is unavailable; retry", body = exechub_protocol::ErrorBody,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
    ))]
pub async fn publish_batch(State(app): State<AppState>, request: PublishRequest) -> Response {
    counted(publish_many(app, request).await)
}

async fn publish_many(app: AppState, request: PublishRequest) -> Result<Response, ApiError> {
    let headers = &request.headers;
    let grant = authenticate(&app, headers, None)?;
    let body = request
        .body
        .map_err(|rejection| body_error(&rejection, app.config.max_batch_bytes))?;
    let max_events = app.config.max_batch_events;
    let (execution_id, key, batch) = publish_input(request.path, headers, &body, |body| {
        BatchBody::read(body, max_events)
    })?;
    grant.check(Action::Publish, &execution_id)?;
    let client = client_of(&app, headers, None, request.connection);
    app.publish_limit.check(client, batch.len() as u64)?;
    let batch = batch
        .encode(execution_id.clone())
        .with_idempotency_key(key)
        .with_traceparent(traceparent(headers));
    let receipt = app.publisher.publish_batch(batch).await?;
    let accepted = BatchAccepted {
        status: "accepted".into(),
        execution_id,
        first_seq: receipt.first_seq,
        last_seq: receipt.last_seq,
        count: receipt.last_seq - receipt.first_seq + 1,
    };
    let replayed = replayed_header(receipt.duplicate);
    Ok((StatusCode::ACCEPTED, replayed, Json(accepted)).into_response())
}

/// A publish's answer, counted by its status
/// (`exechub_publishes_total{transport="http",result}`): every way a publish
/// over HTTP ends goes through here, refusals included.
fn counted(result: Result<Response, ApiError>) -> Response {
    let response = result.into_response();
    crate::metrics::count_http_publish(&response);
    response
}

/// What the publish routes read from a request, each part as it came (the
/// handler reports every problem at once). The headers are taken out of the
/// request, not cloned as axum's `HeaderMap` extractor would: a cost on
/// every publish.
pub struct PublishRequest {
    /// The connection's key, for the publish rate limit without a token.
    connection: Option<ClientKey>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    /// Limited by the route's `DefaultBodyLimit`.
    body: Result<Bytes, BytesRejection>,
}

impl FromRequest<AppState> for PublishRequest {
    type Rejection = Infallible;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Infallible> {
        let (mut parts, body) = request.into_parts();
        let connection = parts.extensions.get::<ClientKey>().copied();
        let path = Path::from_request_parts(&mut parts, state).await;
        let headers = std::mem::take(&mut parts.headers);
        let body = Bytes::from_request(Request::from_parts(parts, body), state).await;
        Ok(Self {
            connection,
            path,
            headers,
            body,
        })
    }
}

/// The execution id, idempotency key and parsed body of a publish, or every
/// problem with them at once (one 422, as FastAPI reports them).
fn publish_input<'a, T>(
    path: Result<Path<String>, PathRejection>,
    headers: &HeaderMap,
    body: &'a [u8],
    parse: impl FnOnce(&'a [u8]) -> Result<T, Vec<ValidationError>>,
) -> Result<(String, Option<String>, T), ApiError> {
    let parsed = match is_json(headers) {
        true => parse(body),
        false => Err(vec![body_not_json()]),
    };
    match (execution_id(path), idempotency_key(headers), parsed) {
        (Ok(id), Ok(key), Ok(parsed)) => Ok((id, key, parsed)),
        (id, key, parsed) => {
            let detail = id
                .err()
                .into_iter()
                .chain(key.err())
                .chain(parsed.err().into_iter().flatten())
                .collect();
            Err(ApiError::Validation(detail))
        }
    }
}

/// A well-formed W3C `traceparent` header of the request, handed on to the providers.
fn traceparent(headers: &HeaderMap) -> Option<std::sync::Arc<crate::telemetry::TraceParent>> {
    crate::telemetry::TraceParent::from_headers(headers).map(std::sync::Arc::new)
}

fn replayed_header(duplicate: bool) -> [(HeaderName, HeaderValue); 1] {
    [(
        HeaderName::from_static("idempotent-replayed"),
        HeaderValue::from_static(if duplicate { "true" } else { "false" }),
    )]
}

/// Whether the body is declared JSON (`application/json` or
/// `application/*+json`). Anything else — a form, text, or no type — is not
/// parsed, as in the replaced FastAPI service: a page on another site can
/// send those without a CORS preflight, and they must not publish.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|subtype| subtype.ends_with("+json"))
}

/// The optional `Idempotency-Key` header: 1–256 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ValidationError> {
    let Some(raw) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match raw.to_str() {
        Ok(key) if is_idempotency_key(key) => Ok(Some(key.to_owned())),
        _ => Err(ValidationError::new(
            vec![Loc::from("header"), Loc::from("idempotency-key")],
            "string_type",
            "Input should be 1 to 256 visible ASCII characters",
        )),
    }
}

/// `GET /api/v1/executions/{execution_id}/events?after=N&limit=M`: stored events after N.
#[utoipa::path(get, path = "/api/v1/executions/{execution_id}/events", tag = "executions",
    params(("execution_id" = String, Path, min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f{}]+$", description = "The execution: 1 to 256 bytes of UTF-8, without control characters, `{` or `}`"),
        ("after" = Option<u64>, Query, format = "uint64", maximum = 18446744073709551615_u64, description = "Events with a higher seq (default 0)"),
        ("limit" = Option<u64>, Query, minimum = 0, maximum = 10000, description = "At most this many (default 1000)"),
        ("access_token" = Option<String>, Query, description = "The token, for clients that cannot set headers")),
    security((), ("BearerAuth" = [])),
    responses(
        (status = 200, description = "Stored events after `after`", body = exechub_protocol::HistoryPage),
        (status = 401, description = "No token, or an invalid one (when the hub requires tokens)", body = exechub_protocol::ErrorBody),
        (status = 403, description = "The token does not allow this execution", body = exechub_protocol::ErrorBody),
        (status = 422, description = "Validation Error", body = exechub_protocol::HttpValidationError),
        (status = 503, description = "The event store is unavailable; retry", body = exechub_protocol::ErrorBody),
    ))]
pub async fn history(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = query.get("access_token");
    let (_, execution_id) =
        authorize(&app, &headers, token, execution_id(path), Action::Subscribe)?;
    let after = query_u64(&query, "after", 0, u64::MAX)?;
    let limit = query_u64(&query, "limit", DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT)?;
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let page = app.store.range(&execution_id, after, limit).await?;
    // Stored events are already JSON: splice them in rather than re-encoding.
    let mut body = Vec::with_capacity(
        page.events
            .iter()
            .map(|e| e.json().len() + 1)
            .sum::<usize>()
            + 128,
    );
    body.extend_from_slice(br#"{"execution_id":"#);
    body.extend_from_slice(json!(execution_id).to_string().as_bytes());
    body.extend_from_slice(format!(r#","last_seq":{},"oldest_seq":"#, page.last_seq).as_bytes());
    body.extend_from_slice(json!(page.oldest_seq).to_string().as_bytes());
    if let Some(epoch) = &page.epoch {
        body.extend_from_slice(format!(r#","epoch":"{epoch}""#).as_bytes());
    }
    if let (None, Some(end)) = (&page.epoch, &page.ended) {
        // The events expired; the ended execution's summary is still kept.
        let lost = format!(
            r#","history_lost":{{"reason":"expired","last_seq":{}}}"#,
            end.seq
        );
        body.extend_from_slice(lost.as_bytes());
    }
    body.extend_from_slice(br#","events":["#);
    for (i, event) in page.events.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(event.json());
    }
    body.extend_from_slice(b"]}");
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `GET /health`: the store in use and whether it works, open connections,
/// and each provider's health and counters (a failing provider does not make
/// the hub unhealthy: publishing does not depend on it).
#[utoipa::path(get, path = "/health", tag = "operations",
    responses(
        (status = 200, description = "The store works", body = Object),
        (status = 503, description = "The store does not work", body = Object),
    ))]
pub async fn health(State(app): State<AppState>) -> Response {
    let store = app.store.health().await;
    let (websockets, sse) = app.stats.open();
    // A cluster with a shard down still serves the other shards' executions:
    // the node stays in the load balancer, and `store.shards` says which.
    let status = if store.serves_some() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if store.ok { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "store": store,
        "connections": {
            "websocket": websockets,
            "sse": sse,
            "limit": app.stats.limit(),
            "refused": app.stats.refused(),
        },
        "subscriptions": app.feeds.subscriptions(),
        "refused": {
            "publishes_rate_limited": app.publish_limit.refused(),
            "subscriptions_over_token_limit": app.token_subscriptions.refused(),
        },
        "subscribed_executions": app.feeds.active(),
        "executions_followers": app.directory.followers(),
        "auth": if app.auth.enabled() { "jwt" } else { "off" },
        "dev_token": app.config.dev_token,
        "providers": app.publisher.providers().health(),
    });
    (status, Json(body)).into_response()
}

/// The empty execution id (`/api/v1/executions//events`): a 422 like any other bad id.
pub async fn empty_execution_id() -> ApiError {
    match validate_execution_id("") {
        Err(error) => error.into(),
        Ok(()) => ApiError::Validation(Vec::new()),
    }
}

/// The caller's grant, from `Authorization: Bearer` or an `access_token` query
/// parameter (which `EventSource` needs, as it cannot set headers).
pub(crate) fn authenticate(
    app: &AppState,
    headers: &HeaderMap,
    query_token: Option<&String>,
) -> Result<Grant, ApiError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = bearer(authorization, None).or(query_token.map(String::as_str));
    Ok(app.auth.authenticate(token)?)
}

/// Who a request counts against for the per-client limits: its token when
/// auth is on, otherwise its connection (`connection`, set by the listener).
pub(crate) fn client_of(
    app: &AppState,
    headers: &HeaderMap,
    query_token: Option<&String>,
    connection: Option<ClientKey>,
) -> ClientKey {
    if app.auth.enabled() {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if let Some(token) = bearer(authorization, None).or(query_token.map(String::as_str)) {
            return ClientKey::token(token);
        }
    }
    connection.unwrap_or_else(ClientKey::connection)
}

/// The caller's grant for `action` on the execution the path names, and that
/// execution id: authenticate, validate the id, check the grant — in this
/// order on every route, so a refusal comes before any store access and
/// never reveals whether an execution exists.
pub(crate) fn authorize(
    app: &AppState,
    headers: &HeaderMap,
    query_token: Option<&String>,
    execution_id: Result<String, ValidationError>,
    action: Action,
) -> Result<(Grant, String), ApiError> {
    let grant = authenticate(app, headers, query_token)?;
    let execution_id = execution_id?;
    grant.check(action, &execution_id)?;
    Ok((grant, execution_id))
}

/// A development token, `GET /dev/token`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DevToken {
    /// A signed JWT allowing publish and subscribe on every execution for 12 hours.
    pub token: String,
}

/// `GET /dev/token` (only with `--dev-token`): a fresh development token for the demo page.
#[utoipa::path(get, path = "/dev/token", tag = "operations",
    responses(
        (status = 200, description = "A development token (only with --dev-token)", body = DevToken),
        (status = 404, description = "The hub runs without --dev-token"),
    ))]
pub async fn dev_token(State(app): State<AppState>) -> Response {
    match app.dev_token() {
        Some(token) => Json(DevToken { token }).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The validated `{execution_id}` path segment.
pub(crate) fn execution_id(
    path: Result<Path<String>, PathRejection>,
) -> Result<String, ValidationError> {
    let loc = || vec![Loc::from("path"), Loc::from("execution_id")];
    let Path(id) = path.map_err(|rejection| {
        ValidationError::new(
            loc(),
            "string_type",
            // The rejection is not echoed: it may quote the client's path.
            &format!("Input should be a valid string ({})", rejection.status()),
        )
    })?;
    validate_execution_id(&id)?;
    // The request's log lines name the execution from here on.
    tracing::Span::current().record("execution_id", id.as_str());
    Ok(id)
}

/// An optional non-negative integer query parameter, at most `max`.
pub(crate) fn query_u64(
    query: &HashMap<String, String>,
    name: &str,
    default: u64,
    max: u64,
) -> Result<u64, ValidationError> {
    let loc = || vec![Loc::from("query"), Loc::from(name)];
    let Some(raw) = query.get(name) else {
        return Ok(default);
    };
    let value = raw.parse::<u64>().map_err(|_| {
        ValidationError::new(
            loc(),
            "int_parsing",
            "Input should be a valid integer, unable to parse string as an integer",
        )
    })?;
    if value > max {
        let msg = format!("Input should be less than or equal to {max}");
        return Err(ValidationError::new(loc(), "less_than_equal", &msg));
    }
    Ok(value)
}

fn body_error(rejection: &BytesRejection, limit: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge { limit }
    } else {
        ApiError::Validation(vec![ValidationError::new(
            vec![Loc::from("body")],
            "body_unreadable",
            &format!("The request body could not be read: {rejection}"),
        )])
    }
}

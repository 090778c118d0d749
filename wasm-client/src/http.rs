//! HTTP calls with gloo-net: history, and publishing for workers that only
//! need `POST` (one event, or a batch stored atomically).

use exechub_protocol::names::field;
use exechub_protocol::{
    BatchAccepted, BatchRequest, HistoryPage, HttpValidationError, PublishAccepted, PublishRequest,
};
use gloo_net::http::{Request, RequestBuilder, Response};

use crate::error::ClientError;
use crate::wire::{self, to_json};

/// The history query's page size parameter (a query parameter, so not among
/// `exechub_protocol::names`' body and frame fields).
const LIMIT: &str = "limit";

/// `…/api/v1/executions/{id}/events` under `base_url`, with `suffix`.
fn events_url(base_url: &str, execution_id: &str, suffix: &str) -> String {
    let id = String::from(js_sys::encode_uri_component(execution_id));
    let base = base_url.trim_end_matches('/');
    format!("{base}/api/v1/executions/{id}/events{suffix}")
}

/// Stored events of an execution after `after` (default 0), at most `limit`.
///
/// # Errors
/// [`ClientError::Network`], [`ClientError::Http`] or [`ClientError::Protocol`].
pub async fn history(
    base_url: &str,
    execution_id: &str,
    after: Option<u64>,
    limit: Option<u64>,
    token: Option<&str>,
) -> Result<HistoryPage, ClientError> {
    let after = after.unwrap_or(0).to_string();
    let mut query = vec![(field::AFTER, after)];
    query.extend(limit.map(|limit| (LIMIT, limit.to_string())));
    let request = Request::get(&events_url(base_url, execution_id, "")).query(query);
    let answer = send(authorized(request, token), None).await?;
    wire::parse(&answer, "history page")
}

/// `POST …/events`; the hub's answer carries the seq.
///
/// # Errors
/// [`ClientError::Http`] (a 422 carries the validation detail),
/// [`ClientError::Network`] or [`ClientError::Protocol`].
pub async fn publish(
    base_url: &str,
    execution_id: &str,
    event: &PublishRequest,
    idempotency_key: Option<&str>,
    token: Option<&str>,
) -> Result<PublishAccepted, ClientError> {
    let url = events_url(base_url, execution_id, "");
    let request = keyed(authorized(Request::post(&url), token), idempotency_key);
    let answer = send(request, Some(to_json(event)?)).await?;
    wire::parse(&answer, "publish answer")
}

/// `POST …/events/batch`: stored atomically with consecutive seqs.
///
/// # Errors
/// As [`publish`].
pub async fn publish_batch(
    base_url: &str,
    execution_id: &str,
    batch: &BatchRequest,
    idempotency_key: Option<&str>,
    token: Option<&str>,
) -> Result<BatchAccepted, ClientError> {
    let url = events_url(base_url, execution_id, "/batch");
    let request = keyed(authorized(Request::post(&url), token), idempotency_key);
    let answer = send(request, Some(to_json(batch)?)).await?;
    wire::parse(&answer, "batch answer")
}

fn authorized(request: RequestBuilder, token: Option<&str>) -> RequestBuilder {
    match token {
        Some(token) => request.header("Authorization", &format!("Bearer {token}")),
        None => request,
    }
}

fn keyed(request: RequestBuilder, idempotency_key: Option<&str>) -> RequestBuilder {
    match idempotency_key {
        Some(key) => request.header("Idempotency-Key", key),
        None => request,
    }
}

/// Sends the request, with `body` as its JSON, and returns the answer's
/// text (one function for every call, not one per answer type: it is most
/// of an HTTP call's code).
async fn send(request: RequestBuilder, body: Option<String>) -> Result<String, ClientError> {
    let request = match body {
        Some(body) => request
            .header("Content-Type", "application/json")
            .body(body),
        None => request.build(),
    };
    let network = |error: gloo_net::Error| ClientError::Network(error.to_string());
    let response = request.map_err(network)?.send().await.map_err(network)?;
    let text = response.text().await.map_err(network)?;
    if !response.ok() {
        return Err(http_error(&response, &text));
    }
    Ok(text)
}

/// [`ClientError::Http`] for an error status, keeping the hub's detail: the
/// 422 list, or the text other errors carry in `detail`.
fn http_error(response: &Response, body: &str) -> ClientError {
    let (message, detail) = match wire::parse::<HttpValidationError>(body, "error") {
        Ok(invalid) => ("invalid request".to_owned(), Some(invalid.detail)),
        Err(_) => (
            error_text(body).unwrap_or_else(|| response.status_text()),
            None,
        ),
    };
    ClientError::Http {
        status: response.status(),
        message,
        detail,
    }
}

/// The text of a non-422 error body (`{"detail": "…"}`).
fn error_text(body: &str) -> Option<String> {
    let body = js_sys::JSON::parse(body).ok()?;
    js_sys::Reflect::get(&body, &field::DETAIL.into())
        .ok()?
        .as_string()
}

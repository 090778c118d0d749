//! HTTP calls with gloo-net: history, publishing for workers that only
//! need `POST` (one event, or a batch stored atomically), and executions as
//! wholes (a summary, its final result, the list of recent ones).

use exechub_protocol::names::field;
use exechub_protocol::{
    BatchAccepted, BatchRequest, ErrorCode, ExecutionList, ExecutionSummary, HistoryPage,
    HttpValidationError, PublishAccepted, PublishRequest, StatusFilter,
};
use gloo_net::http::{Request, RequestBuilder, Response};

use crate::error::ClientError;
use crate::wire::{self, to_json};

/// The history query's page size parameter (a query parameter, so not among
/// `exechub_protocol::names`' body and frame fields).
const LIMIT: &str = "limit";

/// Query parameters of the executions API (not among the body and frame
/// fields of `exechub_protocol::names`).
const WAIT: &str = "wait";
const CURSOR: &str = "cursor";

/// Not found: an execution the hub does not know (or no longer knows).
const NOT_FOUND: u16 = 404;

/// The HTTP base URL of the hub whose socket is at `ws_url` (`ws(s)://`,
/// checked by the dialer): `http(s)` for `ws(s)`, without a final `/ws`.
pub fn base_of(ws_url: &str) -> String {
    let http = ws_url.replacen("ws", "http", 1);
    let address = http.split(['?', '#']).next().unwrap_or_default();
    let address = address.trim_end_matches('/');
    address.strip_suffix("/ws").unwrap_or(address).to_owned()
}

/// `…/api/v1/executions` under `base_url`.
fn executions_url(base_url: &str) -> String {
    format!("{}/api/v1/executions", base_url.trim_end_matches('/'))
}

/// `…/api/v1/executions/{id}` under `base_url`, with `suffix`.
fn execution_url(base_url: &str, execution_id: &str, suffix: &str) -> String {
    let id = String::from(js_sys::encode_uri_component(execution_id));
    format!("{}/{id}{suffix}", executions_url(base_url))
}

/// `…/api/v1/executions/{id}/events` under `base_url`, with `suffix`.
fn events_url(base_url: &str, execution_id: &str, suffix: &str) -> String {
    execution_url(base_url, execution_id, &format!("/events{suffix}"))
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

/// What to ask of an execution.
pub enum Ask {
    /// Its summary now.
    Summary,
    /// Its summary once it ended, waiting up to `wait` seconds for that
    /// (still `running` when the wait ran out).
    Result {
        /// Seconds to wait; the hub's default (0) when absent.
        wait: Option<u64>,
    },
}

/// The summary of an execution, as `ask` says; `None` when the hub does not
/// know it. (One call for both questions: each async call costs the
/// download a state machine of its own.)
///
/// # Errors
/// As [`history`].
pub async fn execution(
    base_url: &str,
    execution_id: &str,
    ask: Ask,
    token: Option<&str>,
) -> Result<Option<ExecutionSummary>, ClientError> {
    let (suffix, wait) = match ask {
        Ask::Summary => ("", None),
        Ask::Result { wait } => ("/result", wait),
    };
    let url = execution_url(base_url, execution_id, suffix);
    let query = wait.map(|wait| (WAIT, wait.to_string()));
    let request = authorized(Request::get(&url).query(query), token);
    match send(request, None).await {
        Ok(answer) => wire::parse(&answer, "execution summary").map(Some),
        Err(ClientError::Http {
            status: NOT_FOUND, ..
        }) => Ok(None),
        Err(error) => Err(error),
    }
}

/// A page of executions, most recently updated first.
///
/// # Errors
/// As [`history`].
pub async fn executions(
    base_url: &str,
    status: Option<StatusFilter>,
    limit: Option<u64>,
    cursor: Option<&str>,
    token: Option<&str>,
) -> Result<ExecutionList, ClientError> {
    let mut query = Vec::new();
    query.extend(status.map(|status| (field::STATUS, status_name(status).to_owned())));
    query.extend(limit.map(|limit| (LIMIT, limit.to_string())));
    query.extend(cursor.map(|cursor| (CURSOR, cursor.to_owned())));
    let request = Request::get(&executions_url(base_url)).query(query);
    let answer = send(authorized(request, token), None).await?;
    wire::parse(&answer, "execution list")
}

/// A filter's name in a query.
fn status_name(status: StatusFilter) -> &'static str {
    match status {
        StatusFilter::All => "all",
        StatusFilter::Running => "running",
        StatusFilter::Ended => "ended",
    }
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

/// [`ClientError::Http`] for an error status, keeping the hub's answer: a
/// 422's list (FastAPI's shape, `invalid_request`), or the `ErrorBody`'s
/// text and code.
fn http_error(response: &Response, body: &str) -> ClientError {
    let status = response.status();
    let (code, message, detail) = match wire::parse::<HttpValidationError>(body, "error") {
        Ok(invalid) => (
            Some(ErrorCode::InvalidRequest),
            "invalid request".to_owned(),
            Some(invalid.detail),
        ),
        Err(_) => (
            body_text(body, field::CODE).and_then(|code| ErrorCode::from_wire(&code)),
            body_text(body, field::DETAIL).unwrap_or_else(|| response.status_text()),
            None,
        ),
    };
    ClientError::Http {
        status,
        code,
        message,
        detail,
    }
}

/// A text field of an error body (`{"detail": "…", "code": "…"}`).
fn body_text(body: &str, name: &str) -> Option<String> {
    let body = js_sys::JSON::parse(body).ok()?;
    js_sys::Reflect::get(&body, &name.into()).ok()?.as_string()
}

#[cfg(test)]
mod tests {
    use super::base_of;

    #[test]
    fn the_http_base_is_the_sockets_origin_and_path_without_ws() {
        assert_eq!(base_of("ws://127.0.0.1:8080/ws"), "http://127.0.0.1:8080");
        assert_eq!(base_of("wss://hub.example/ws?x=1"), "https://hub.example");
        assert_eq!(
            base_of("wss://example.com/hub/ws/"),
            "https://example.com/hub"
        );
        assert_eq!(base_of("ws://example.com"), "http://example.com");
    }
}

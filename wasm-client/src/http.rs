//! HTTP calls: history, and publishing for workers that only need `POST`.

use exechub_protocol::{HistoryPage, HttpValidationError, PublishAccepted, PublishRequest};
use gloo_net::http::{Request, RequestBuilder, Response};

use crate::error::ClientError;

/// `…/api/v1/executions/{id}/events` under `base_url`.
fn events_url(base_url: &str, execution_id: &str) -> String {
    let id = String::from(js_sys::encode_uri_component(execution_id));
    format!(
        "{}/api/v1/executions/{id}/events",
        base_url.trim_end_matches('/')
    )
}

fn authorized(request: RequestBuilder, token: Option<&str>) -> RequestBuilder {
    match token {
        Some(token) => request.header("Authorization", &format!("Bearer {token}")),
        None => request,
    }
}

/// Stored events of an execution after `after`.
///
/// # Errors
/// [`ClientError::Network`] or [`ClientError::Http`].
pub async fn history(
    base_url: &str,
    execution_id: &str,
    after: Option<u64>,
    limit: Option<u64>,
    token: Option<&str>,
) -> Result<HistoryPage, ClientError> {
    let mut url = events_url(base_url, execution_id);
    url.push_str(&format!("?after={}", after.unwrap_or(0)));
    if let Some(limit) = limit {
        url.push_str(&format!("&limit={limit}"));
    }
    let response = send(authorized(Request::get(&url), token)).await?;
    response
        .json()
        .await
        .map_err(|e| ClientError::Protocol(e.to_string()))
}

/// `POST …/events`; resolves with the seq the hub assigned.
///
/// # Errors
/// [`ClientError::Http`] (422 carries the validation detail), or [`ClientError::Network`].
pub async fn publish(
    base_url: &str,
    execution_id: &str,
    request: &PublishRequest,
    idempotency_key: Option<&str>,
    token: Option<&str>,
) -> Result<u64, ClientError> {
    let mut builder = authorized(Request::post(&events_url(base_url, execution_id)), token);
    if let Some(key) = idempotency_key {
        builder = builder.header("Idempotency-Key", key);
    }
    let request = builder
        .json(request)
        .map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
    let response = request
        .send()
        .await
        .map_err(|e| ClientError::Network(e.to_string()))?;
    let accepted: PublishAccepted = check(response)
        .await?
        .json()
        .await
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    Ok(accepted.seq)
}

async fn send(request: RequestBuilder) -> Result<Response, ClientError> {
    let response = request
        .send()
        .await
        .map_err(|e| ClientError::Network(e.to_string()))?;
    check(response).await
}

/// Turns an error status into [`ClientError::Http`], keeping the hub's detail.
async fn check(response: Response) -> Result<Response, ClientError> {
    if response.ok() {
        return Ok(response);
    }
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let (message, detail) = match serde_json::from_str::<HttpValidationError>(&body) {
        Ok(error) => ("invalid request".to_owned(), Some(error.detail)),
        Err(_) => {
            let text = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["detail"].as_str().map(str::to_owned))
                .unwrap_or_else(|| response.status_text());
            (text, None)
        }
    };
    Err(ClientError::Http {
        status,
        message,
        detail,
    })
}

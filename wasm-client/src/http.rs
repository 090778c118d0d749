//! HTTP calls: history, and publishing for workers that only need `POST`.

use exechub_protocol::names::field;
use js_sys::Array;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::core::{Publish, publish_body, push_decimal};
use crate::error::ClientError;
use crate::js::{self, Response, get, object, set};
use crate::types::{number_field, page_view};

/// `…/api/v1/executions/{id}/events` under `base_url`.
fn events_url(base_url: &str, execution_id: &str) -> String {
    [
        base_url.trim_end_matches('/'),
        "/api/v1/executions/",
        &js::encode_uri_component(execution_id),
        "/events",
    ]
    .concat()
}

/// Stored events of an execution after `after`, as a `HistoryPage` object.
///
/// # Errors
/// [`ClientError::Network`], [`ClientError::Http`] or [`ClientError::Protocol`].
pub async fn history(
    base_url: &str,
    execution_id: &str,
    after: Option<u64>,
    limit: Option<u64>,
    token: Option<&str>,
) -> Result<JsValue, ClientError> {
    let mut url = events_url(base_url, execution_id);
    url.push_str("?after=");
    push_decimal(&mut url, after.unwrap_or(0));
    if let Some(limit) = limit {
        url.push_str("&limit=");
        push_decimal(&mut url, limit);
    }
    let page = send(&url, "GET", &headers(token, None), None).await?;
    page_view(&page)
}

/// `POST …/events`; resolves with the seq the hub assigned.
///
/// # Errors
/// [`ClientError::Http`] (422 carries the validation detail), [`ClientError::Network`]
/// or [`ClientError::Protocol`].
pub async fn publish(
    base_url: &str,
    execution_id: &str,
    request: &Publish,
    idempotency_key: Option<&str>,
    token: Option<&str>,
) -> Result<u64, ClientError> {
    let url = events_url(base_url, execution_id);
    let headers = headers(token, idempotency_key);
    set(&headers, "Content-Type", &"application/json".into());
    let body = JsValue::from_str(&publish_body(request));
    let accepted = send(&url, "POST", &headers, Some(&body)).await?;
    number_field(&accepted, field::SEQ)
        .ok_or_else(|| ClientError::Protocol("publish answer without a seq".into()))
}

/// The request headers: the token and idempotency key when given.
fn headers(token: Option<&str>, idempotency_key: Option<&str>) -> JsValue {
    let headers = object(&[]);
    if let Some(token) = token {
        set(
            &headers,
            "Authorization",
            &["Bearer ", token].concat().into(),
        );
    }
    if let Some(key) = idempotency_key {
        set(&headers, "Idempotency-Key", &key.into());
    }
    headers
}

/// Makes a request and parses the JSON answer.
async fn send(
    url: &str,
    method: &str,
    headers: &JsValue,
    body: Option<&JsValue>,
) -> Result<JsValue, ClientError> {
    let init = object(&[
        ("method", &method.into()),
        ("headers", headers),
        ("body", body.unwrap_or(&JsValue::UNDEFINED)),
    ]);
    let network = |error: JsValue| ClientError::Network(js::to_text(&error));
    let response: Response = await_promise(js::fetch(url, &init))
        .await
        .map_err(network)?
        .unchecked_into();
    let text = await_promise(response.text()).await;
    if response.ok() {
        let text = text.map_err(network)?;
        return js::parse_json(&text)
            .map_err(|_| ClientError::Protocol("the answer is not JSON".into()));
    }
    // An error body that cannot be read or parsed still leaves the status.
    let body = text.and_then(|text| js::parse_json(&text));
    Err(http_error(&response, body.unwrap_or(JsValue::UNDEFINED)))
}

async fn await_promise(promise: Result<js_sys::Promise, JsValue>) -> Result<JsValue, JsValue> {
    JsFuture::from(promise?).await
}

/// [`ClientError::Http`] for an error status, keeping the hub's detail: the
/// 422 list, or the text other errors carry in `detail`.
fn http_error(response: &Response, body: JsValue) -> ClientError {
    let detail = get(&body, field::DETAIL);
    let (message, detail) = if Array::is_array(&detail) {
        ("invalid request".to_owned(), Some(detail))
    } else {
        let text = detail.as_string().unwrap_or_else(|| response.status_text());
        (text, None)
    };
    ClientError::Http {
        status: response.status(),
        message,
        detail,
    }
}

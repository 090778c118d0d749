//! `exechub-client`: a typed publish/subscribe client for the exechub event
//! hub, compiled to WebAssembly for browsers and web workers.
//!
//! One [`ExechubClient`] keeps one WebSocket for all of its subscriptions. When
//! the socket drops it reconnects with exponential backoff and jitter, and
//! resubscribes every subscription after the last seq it delivered, so the
//! application sees each event once and in order ([`core`] holds that logic,
//! testable on the host; [`ws`] drives the socket). [`history`] and
//! [`publish_http`] use plain HTTP. This file is only the JavaScript facade:
//! every failure reaches JavaScript as an `ExechubError` ([`error`]), and every
//! value crossing the boundary has a TypeScript type ([`types`]). All wire
//! types come from `exechub-protocol`, shared with the hub.

mod auth;
pub mod core;
pub mod error;
mod http;
pub mod types;
mod ws;

use std::rc::Rc;
use std::time::Duration;

use exechub_protocol::{ErrorCode, EventData, PublishRequest};
use js_sys::Function;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

pub use crate::error::ClientError;
use crate::types::{
    ClientOptionsJs, ConnectionStateJs, DataJs, EventHandlerJs, HistoryOptionsJs, HistoryPromise,
    PublishOptionsJs, SeqPromise, SubscribeOptionsJs, field, string_field, u64_field,
};
use crate::ws::{Settings, Shared, SharedRef, Sub};

/// A connection to a hub's `/ws` endpoint, shared by all subscriptions.
#[wasm_bindgen]
pub struct ExechubClient {
    shared: SharedRef,
}

#[wasm_bindgen]
impl ExechubClient {
    /// Connects to `url` (e.g. `ws://127.0.0.1:8080/ws`) and keeps reconnecting until `close()`.
    #[wasm_bindgen(constructor)]
    pub fn new(url: &str, options: Option<ClientOptionsJs>) -> Result<ExechubClient, JsValue> {
        let options: JsValue = options.map(Into::into).unwrap_or(JsValue::UNDEFINED);
        if !(url.starts_with("ws://") || url.starts_with("wss://")) {
            return Err(
                ClientError::InvalidArgument("url must start with ws:// or wss://".into()).into(),
            );
        }
        let tokens = auth::Tokens::new(
            string_field(&options, "token"),
            function(&options, "getToken"),
        );
        let settings = Settings {
            url: url.to_owned(),
            tokens,
            min_delay: Duration::from_millis(
                u64_field(&options, "minReconnectDelayMs")?.unwrap_or(250),
            ),
            max_delay: Duration::from_millis(
                u64_field(&options, "maxReconnectDelayMs")?.unwrap_or(10_000),
            ),
        };
        let shared = Shared::new(function(&options, "onStateChange"));
        wasm_bindgen_futures::spawn_local(ws::drive(Rc::clone(&shared), settings));
        Ok(Self { shared })
    }

    /// Calls `onEvent` with each event of `executionId`, once each, in seq order.
    pub fn subscribe(
        &self,
        #[wasm_bindgen(js_name = executionId)] execution_id: String,
        #[wasm_bindgen(js_name = onEvent)] on_event: EventHandlerJs,
        options: Option<SubscribeOptionsJs>,
    ) -> Result<Subscription, JsValue> {
        let options: JsValue = options.map(Into::into).unwrap_or(JsValue::UNDEFINED);
        let on_event: Function = on_event
            .dyn_into()
            .map_err(|_| ClientError::InvalidArgument("onEvent must be a function".into()))?;
        let sub = Sub {
            position: core::Position::new(u64_field(&options, "after")?),
            on_event,
            on_lost: function(&options, "onHistoryLost"),
            on_error: function(&options, "onError"),
        };
        ws::subscribe(&self.shared, execution_id.clone(), sub)?;
        Ok(Subscription {
            shared: Rc::downgrade(&self.shared),
            execution_id,
        })
    }

    /// Publishes an event; resolves with its seq once the hub stored it.
    pub fn publish(
        &self,
        #[wasm_bindgen(js_name = executionId)] execution_id: String,
        #[wasm_bindgen(js_name = eventType)] event_type: String,
        data: DataJs,
        timestamp: Option<String>,
    ) -> SeqPromise {
        let request = publish_request(event_type, data.into(), timestamp);
        let publish = ws::publish(Rc::clone(&self.shared), execution_id, request);
        seq_promise(publish)
    }

    /// The connection state.
    #[wasm_bindgen(getter)]
    pub fn state(&self) -> ConnectionStateJs {
        JsValue::from(self.shared.borrow().state().as_str()).unchecked_into()
    }

    /// Closes the socket and stops reconnecting; pending publishes reject with `closed`.
    pub fn close(&self) {
        ws::close(&self.shared);
    }
}

/// A subscription made with [`ExechubClient::subscribe`].
#[wasm_bindgen]
pub struct Subscription {
    shared: std::rc::Weak<std::cell::RefCell<ws::Shared>>,
    execution_id: String,
}

#[wasm_bindgen]
impl Subscription {
    /// Stops delivery; no event is delivered after this returns.
    pub fn unsubscribe(&self) {
        if let Some(shared) = self.shared.upgrade() {
            ws::unsubscribe(&shared, &self.execution_id);
        }
    }

    /// The execution subscribed to.
    #[wasm_bindgen(getter, js_name = executionId)]
    pub fn execution_id(&self) -> String {
        self.execution_id.clone()
    }

    /// The last seq delivered (or where delivery starts), if known yet.
    #[wasm_bindgen(getter, js_name = lastSeq)]
    pub fn last_seq(&self) -> Option<f64> {
        let shared = self.shared.upgrade()?;
        ws::last_seq(&shared, &self.execution_id).map(|seq| seq as f64)
    }
}

/// Reads stored events over HTTP from the hub at `baseUrl` (e.g. `http://127.0.0.1:8080`).
#[wasm_bindgen]
pub fn history(
    #[wasm_bindgen(js_name = baseUrl)] base_url: String,
    #[wasm_bindgen(js_name = executionId)] execution_id: String,
    options: Option<HistoryOptionsJs>,
) -> HistoryPromise {
    let options: JsValue = options.map(Into::into).unwrap_or(JsValue::UNDEFINED);
    let page = async move {
        let after = u64_field(&options, "after")?;
        let limit = u64_field(&options, "limit")?;
        let token = string_field(&options, "token");
        let page = http::history(&base_url, &execution_id, after, limit, token.as_deref()).await?;
        types::page_to_js(&page).map_err(|e| ClientError::Protocol(e.to_string()).into())
    };
    wasm_bindgen_futures::future_to_promise(page).unchecked_into()
}

/// Publishes over HTTP (`POST /api/v1/executions/{id}/events`); resolves with the seq.
#[wasm_bindgen(js_name = publishHttp)]
pub fn publish_http(
    #[wasm_bindgen(js_name = baseUrl)] base_url: String,
    #[wasm_bindgen(js_name = executionId)] execution_id: String,
    #[wasm_bindgen(js_name = eventType)] event_type: String,
    data: DataJs,
    options: Option<PublishOptionsJs>,
) -> SeqPromise {
    let options: JsValue = options.map(Into::into).unwrap_or(JsValue::UNDEFINED);
    let request = publish_request(event_type, data.into(), string_field(&options, "timestamp"));
    let key = string_field(&options, "idempotencyKey");
    let token = string_field(&options, "token");
    seq_promise(async move {
        http::publish(
            &base_url,
            &execution_id,
            &request?,
            key.as_deref(),
            token.as_deref(),
        )
        .await
    })
}

/// Validates a publish locally with the hub's own rules (shared crate), so bad
/// input fails with the same `detail` the hub would send.
fn publish_request(
    event_type: String,
    data: JsValue,
    timestamp: Option<String>,
) -> Result<PublishRequest, ClientError> {
    let data: serde_json::Value = serde_wasm_bindgen::from_value(data)
        .map_err(|e| ClientError::InvalidArgument(format!("data is not JSON: {e}")))?;
    let mut fields = EventData::new();
    fields.insert("event_type".into(), event_type.into());
    fields.insert("data".into(), data);
    if let Some(timestamp) = timestamp {
        fields.insert("timestamp".into(), timestamp.into());
    }
    PublishRequest::from_fields(fields).map_err(|detail| ClientError::Hub {
        code: ErrorCode::InvalidRequest,
        message: "invalid request".into(),
        detail: Some(detail),
    })
}

fn seq_promise(
    future: impl std::future::Future<Output = Result<u64, ClientError>> + 'static,
) -> SeqPromise {
    let promise = async move {
        match future.await {
            Ok(seq) => Ok(JsValue::from(seq as f64)),
            Err(error) => Err(error.to_js()),
        }
    };
    wasm_bindgen_futures::future_to_promise(promise).unchecked_into()
}

fn function(options: &JsValue, name: &str) -> Option<Function> {
    field(options, name).and_then(|value| value.dyn_into().ok())
}

//! `exechub-client`: a typed publish/subscribe client for the exechub event
//! hub, compiled to WebAssembly for browsers and web workers.
//!
//! One [`ExechubClient`] keeps one WebSocket for all of its subscriptions. When
//! the socket drops it reconnects with exponential backoff and jitter, and
//! resubscribes every subscription after the last position (epoch and seq)
//! it delivered, so the application sees each event once and in order, and
//! hears of a restarted history (`onHistoryLost`) before its new seq 1
//! ([`core`] holds that logic, testable on the host; [`ws`] drives the socket). [`history`] and
//! [`publish_http`] use plain HTTP. This file is only the JavaScript facade:
//! every failure reaches JavaScript as an `ExechubError` ([`error`]), and every
//! value crossing the boundary has a TypeScript type ([`types`]). All wire
//! names and validation rules come from `exechub-protocol`, shared with the hub.
//!
//! The package has a size budget (40 KiB gzipped, `.wasm` and glue together,
//! see the README), which explains three choices: the browser parses frames
//! (`JSON.parse`) and the client reads the result; the client writes its few
//! frames by hand ([`core`]); and it binds the browser APIs it uses directly
//! ([`js`]) instead of going through web-sys and gloo.

mod auth;
pub mod core;
pub mod error;
mod http;
mod inbound;
mod js;
pub mod types;
mod ws;

use std::rc::{Rc, Weak};
use std::time::Duration;

use exechub_protocol::FieldType;
use js_sys::Function;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

use crate::core::Publish;
pub use crate::error::ClientError;
use crate::types::{
    ClientOptionsJs, ConnectionStateJs, DataJs, EventHandlerJs, HistoryOptionsJs, HistoryPromise,
    PublishOptionsJs, SeqPromise, SubscribeOptionsJs, option_field, string_field, u64_field,
};
use crate::ws::{Settings, SharedRef, Sub};

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
        let shared = ws::start(settings, function(&options, "onStateChange"));
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
        ws::publish(&self.shared, &execution_id, request).unchecked_into()
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
    shared: Weak<std::cell::RefCell<ws::Shared>>,
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
        let page = http::history(&base_url, &execution_id, after, limit, token.as_deref()).await;
        page.map_err(|error| error.to_js())
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
/// input fails with the same `detail` the hub would send. `data` is
/// serialized here, once, by the browser.
fn publish_request(
    event_type: String,
    data: JsValue,
    timestamp: Option<String>,
) -> Result<Publish, ClientError> {
    let json = js::stringify(&data).map_err(|e| {
        ClientError::InvalidArgument(["data is not JSON: ", &js::to_text(&e)].concat())
    })?;
    // The JSON text says what the hub would see: an object, or something else
    // (`undefined` for values JSON cannot hold, e.g. a function).
    let data = match json.as_string() {
        Some(json) if json.starts_with('{') => Ok(json),
        Some(_) => Err(FieldType::Other),
        None => Err(FieldType::Null),
    };
    Publish::new(event_type, data, timestamp)
        .map_err(|detail| ClientError::invalid("invalid request", &detail))
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
    option_field(options, name).and_then(|value| value.dyn_into().ok())
}

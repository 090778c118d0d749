//! `exechub-client`: a typed publish/subscribe client for the exechub event
//! hub, compiled to WebAssembly for browsers, web workers and Node.
//!
//! One [`ExechubClient`] keeps one WebSocket for all of its subscriptions. When
//! the socket drops it reconnects with exponential backoff and jitter, and
//! resubscribes every subscription after the last position (epoch and seq)
//! it delivered, so the application sees each event once and in order, and
//! hears of a restarted history (`onHistoryLost`) before its new seq 1.
//! A subscription ends when its execution does (`onEnd`). The same socket
//! follows the list of executions (`subscribeExecutions`); the client's
//! `getExecution`, `result` and `listExecutions`, and [`history`],
//! [`publish_http`] and [`publish_batch_http`] use plain HTTP.
//!
//! The layout:
//! - [`connection`]: the connection's logic as a plain-Rust state machine
//!   (positions, pending publishes, backoff), tested on the host;
//! - `driver`, `socket`: the thin layer that runs it on a gloo-net
//!   WebSocket; `shared`: the state the JavaScript handles and the driver
//!   share, and how the machine's decisions reach JavaScript;
//! - `wire`, `input`, [`types`]: values crossing to and from JavaScript with
//!   serde-wasm-bindgen as the protocol's own types, publishes checked with
//!   the hub's own rules, and the TypeScript types;
//! - `http` (gloo-net), `auth` (tokens), `global` (timers, via web-sys);
//! - this file: the JavaScript facade only. Every failure reaches
//!   JavaScript as an `ExechubError` ([`error`]).
//!
//! A client lives until `close()` or `free()` (and `Symbol.dispose`), like
//! a browser `WebSocket` with listeners: while it has a live subscription, a
//! list subscription or a publish in flight, it keeps running after its
//! handle is garbage collected, and once it has none it closes (`shared`).
//! Closed, its driver closes the socket and stops, and every callback the
//! client held is released.

mod auth;
pub mod connection;
mod driver;
pub mod error;
mod executions;
mod global;
mod http;
mod input;
mod shared;
mod socket;
pub mod types;
mod wire;

use std::cell::RefCell;
use std::future::Future;
use std::rc::{Rc, Weak};
use std::time::Duration;

use exechub_protocol::backoff::Backoff;
use exechub_protocol::{BatchRequest, PublishRequest};
use js_sys::{Function, Promise};
use serde_json::Value;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

use crate::auth::Tokens;
use crate::connection::{Connection, Publish};
pub use crate::error::ClientError;
pub use crate::executions::ExecutionsSubscription;
use crate::input::EventFields;
use crate::shared::{Handlers, Settle, Shared, SharedRef, act, perform};
use crate::socket::Dialer;
use crate::types::{
    BatchOptionsJs, BatchPromise, BatchView, CallOptions, ClientOptions, ClientOptionsJs,
    ConnectionStateJs, DataJs, EventHandlerJs, HistoryOptionsJs, HistoryPromise,
    HttpBatchOptionsJs, HttpPublishOptionsJs, NewEventsJs, PageView, SeqPromise,
    SocketPublishOptionsJs, SubscribeOptions, SubscribeOptionsJs,
};
use crate::wire::to_js;

/// A connection to a hub's `/ws` endpoint, shared by all subscriptions.
#[wasm_bindgen]
pub struct ExechubClient {
    shared: SharedRef,
    /// The hub's HTTP base URL.
    http_url: String,
    /// `getToken`, for HTTP calls made before the socket fetched a token.
    get_token: Option<Function>,
}

#[wasm_bindgen]
impl ExechubClient {
    /// Connects to `url` (e.g. `ws://127.0.0.1:8080/ws`) and keeps reconnecting
    /// until `close()` or `free()`.
    #[wasm_bindgen(constructor)]
    pub fn new(url: &str, options: Option<ClientOptionsJs>) -> Result<ExechubClient, JsValue> {
        let options: ClientOptions = types::options(options.map(Into::into), "ClientOptions")?;
        let dialer = Dialer::new(url, options.websocket)?;
        let backoff = Backoff {
            first: Duration::from_millis(options.min_reconnect_delay_ms.unwrap_or(250)),
            max: Duration::from_millis(options.max_reconnect_delay_ms.unwrap_or(10_000)),
        };
        let machine = Connection::new(backoff);
        let token = options.token.clone();
        let (shared, outbox) = Shared::new(machine, options.on_state_change, token);
        let get_token = options.get_token.clone();
        let tokens = Tokens::new(options.token, options.get_token);
        driver::spawn(Rc::downgrade(&shared), outbox, dialer, tokens);
        let http_url = options.http_url.unwrap_or_else(|| http::base_of(url));
        Ok(Self {
            shared,
            http_url,
            get_token,
        })
    }

    /// Calls `onEvent` with each event of `executionId`, once each, in seq order.
    pub fn subscribe(
        &self,
        #[wasm_bindgen(js_name = executionId)] execution_id: String,
        #[wasm_bindgen(js_name = onEvent)] on_event: EventHandlerJs,
        options: Option<SubscribeOptionsJs>,
    ) -> Result<Subscription, JsValue> {
        let options: SubscribeOptions =
            types::options(options.map(Into::into), "SubscribeOptions")?;
        let on_event: Function = JsValue::from(on_event)
            .dyn_into()
            .map_err(|_| ClientError::InvalidArgument("onEvent must be a function".into()))?;
        let handlers = Rc::new(Handlers::new(
            on_event,
            options.on_history_lost,
            options.on_error,
            options.on_end,
        ));
        let subscribed = self.shared.borrow_mut().machine.subscribe(
            execution_id.clone(),
            options.after,
            handlers,
        );
        perform(&self.shared, subscribed?);
        Ok(Subscription {
            shared: Rc::downgrade(&self.shared),
            execution_id,
        })
    }

    /// Publishes an event over the socket; resolves with its seq once the hub
    /// stored it. `options` may be the event's timestamp alone.
    pub fn publish(
        &self,
        #[wasm_bindgen(js_name = executionId)] execution_id: String,
        #[wasm_bindgen(js_name = eventType)] event_type: String,
        data: DataJs,
        options: Option<SocketPublishOptionsJs>,
    ) -> SeqPromise {
        let options = options.map(JsValue::from);
        let options = match options.as_ref().and_then(JsValue::as_string) {
            Some(timestamp) => Ok(CallOptions {
                timestamp: Some(timestamp),
                ..CallOptions::default()
            }),
            None => types::options::<CallOptions>(options, "PublishOptions"),
        };
        let publish = options.and_then(|options| {
            let event = event_request(event_type, data, options.timestamp)?;
            Ok((Publish::One(event), options.idempotency_key))
        });
        self.settled_by_hub(execution_id, publish, false)
            .unchecked_into()
    }

    /// Publishes events atomically, with consecutive seqs, over the socket;
    /// resolves with their seqs once the hub stored them all.
    #[wasm_bindgen(js_name = publishBatch)]
    pub fn publish_batch(
        &self,
        #[wasm_bindgen(js_name = executionId)] execution_id: String,
        events: NewEventsJs,
        options: Option<BatchOptionsJs>,
    ) -> BatchPromise {
        let options = types::options::<CallOptions>(options.map(Into::into), "BatchOptions");
        let publish = options.and_then(|options| {
            let events = input::batch(input::events_from_js(events.into())?)?;
            Ok((Publish::Batch(events), options.idempotency_key))
        });
        self.settled_by_hub(execution_id, publish, true)
            .unchecked_into()
    }

    /// The connection state.
    #[wasm_bindgen(getter)]
    pub fn state(&self) -> ConnectionStateJs {
        to_js(&self.shared.borrow().machine.state()).unchecked_into()
    }

    /// Closes the socket and stops reconnecting; pending publishes reject with
    /// `closed`. `free()` does the same and releases the client.
    pub fn close(&self) {
        let actions = self.shared.borrow_mut().close();
        perform(&self.shared, actions);
    }

    /// The token for an HTTP call: the socket's latest, else a fresh one
    /// from `getToken`, else none.
    fn http_token(&self) -> impl Future<Output = Option<String>> + 'static {
        let current = self.shared.borrow().token.clone();
        let get_token = self.get_token.clone();
        async move {
            match (current, get_token) {
                (Some(token), _) => Some(token),
                (None, Some(get_token)) => auth::fetch(get_token).await,
                (None, None) => None,
            }
        }
    }

    /// A Promise settled by the hub's answer to `publish`, or at once when it
    /// cannot be sent.
    fn settled_by_hub(
        &self,
        execution_id: String,
        publish: Result<(Publish, Option<String>), ClientError>,
        batch: bool,
    ) -> Promise {
        let mut publish = Some(publish);
        Promise::new(&mut |resolve, reject| {
            // The executor runs exactly once, inside `new Promise`.
            let Some(publish) = publish.take() else {
                return;
            };
            match publish {
                Ok((publish, key)) => {
                    let settle = Settle {
                        resolve,
                        reject,
                        batch,
                    };
                    let execution_id = execution_id.clone();
                    act(&self.shared, |machine| {
                        machine.publish(execution_id, publish, key, settle)
                    });
                }
                Err(error) => drop(reject.call1(&JsValue::NULL, &error.to_js())),
            }
        })
    }
}

impl Drop for ExechubClient {
    /// The handle is gone (garbage collected, or freed after the package's
    /// `free()` closed it): the client closes once nothing waits on it.
    fn drop(&mut self) {
        shared::release(&self.shared);
    }
}

/// A subscription made with [`ExechubClient::subscribe`]. Freeing the handle
/// does not end the subscription (a handle that is garbage collected must
/// not stop events): call `unsubscribe()`.
#[wasm_bindgen]
pub struct Subscription {
    shared: Weak<RefCell<Shared>>,
    execution_id: String,
}

#[wasm_bindgen]
impl Subscription {
    /// Stops delivery; no event is delivered after this returns.
    pub fn unsubscribe(&self) {
        if let Some(shared) = self.shared.upgrade() {
            act(&shared, |machine| machine.unsubscribe(&self.execution_id));
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
        let last = shared.borrow().machine.last_seq(&self.execution_id);
        last.map(|seq| seq as f64)
    }
}

/// Reads stored events over HTTP from the hub at `baseUrl` (e.g. `http://127.0.0.1:8080`).
#[wasm_bindgen]
pub fn history(
    #[wasm_bindgen(js_name = baseUrl)] base_url: String,
    #[wasm_bindgen(js_name = executionId)] execution_id: String,
    options: Option<HistoryOptionsJs>,
) -> HistoryPromise {
    let options = types::options::<CallOptions>(options.map(Into::into), "HistoryOptions");
    promise(async move {
        let CallOptions {
            after,
            limit,
            token,
            ..
        } = options?;
        let page = http::history(&base_url, &execution_id, after, limit, token.as_deref());
        Ok(to_js(&PageView::from(&page.await?)))
    })
    .unchecked_into()
}

/// Publishes over HTTP (`POST /api/v1/executions/{id}/events`); resolves with the seq.
#[wasm_bindgen(js_name = publishHttp)]
pub fn publish_http(
    #[wasm_bindgen(js_name = baseUrl)] base_url: String,
    #[wasm_bindgen(js_name = executionId)] execution_id: String,
    #[wasm_bindgen(js_name = eventType)] event_type: String,
    data: DataJs,
    options: Option<HttpPublishOptionsJs>,
) -> SeqPromise {
    let options = types::options::<CallOptions>(options.map(Into::into), "PublishOptions");
    let request = options.and_then(|options| {
        let event = event_request(event_type, data, options.timestamp.clone())?;
        Ok((event, options))
    });
    promise(async move {
        let (event, options) = request?;
        let key = options.idempotency_key.as_deref();
        let token = options.token.as_deref();
        let accepted = http::publish(&base_url, &execution_id, &event, key, token).await?;
        Ok(JsValue::from(accepted.seq as f64))
    })
    .unchecked_into()
}

/// Publishes events atomically over HTTP (`POST …/events/batch`); resolves
/// with their seqs.
#[wasm_bindgen(js_name = publishBatchHttp)]
pub fn publish_batch_http(
    #[wasm_bindgen(js_name = baseUrl)] base_url: String,
    #[wasm_bindgen(js_name = executionId)] execution_id: String,
    events: NewEventsJs,
    options: Option<HttpBatchOptionsJs>,
) -> BatchPromise {
    let options = types::options::<CallOptions>(options.map(Into::into), "BatchOptions");
    let request = options.and_then(|options| {
        let events = input::batch(input::events_from_js(events.into())?)?;
        Ok((BatchRequest { events }, options))
    });
    promise(async move {
        let (batch, options) = request?;
        let key = options.idempotency_key.as_deref();
        let token = options.token.as_deref();
        let accepted = http::publish_batch(&base_url, &execution_id, &batch, key, token).await?;
        Ok(to_js(&BatchView::from(&accepted)))
    })
    .unchecked_into()
}

/// One event from the arguments of a publish, checked with the hub's rules.
fn event_request(
    event_type: String,
    data: DataJs,
    timestamp: Option<String>,
) -> Result<PublishRequest, ClientError> {
    input::event(EventFields {
        event_type: Some(Value::String(event_type)),
        data: Some(input::json(data.into(), "data")?),
        timestamp: timestamp.map(Value::String),
    })
}

/// A Promise of what `future` gives, rejected with an `ExechubError`.
fn promise(future: impl Future<Output = Result<JsValue, ClientError>> + 'static) -> Promise {
    wasm_bindgen_futures::future_to_promise(async move { future.await.map_err(|e| e.to_js()) })
}

//! What the browser tests share: the hubs `scripts/test.sh` started (their
//! URLs are compiled in), unique execution ids, waiting for a condition,
//! collecting a subscription's events, and publishing over HTTP.
//!
//! Each test binary uses part of it.
#![allow(dead_code)]

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use exechub_client::{ExechubClient, publish_http};
use js_sys::Reflect;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

pub fn hub() -> &'static str {
    env!(
        "EXECHUB_TEST_URL",
        "set EXECHUB_TEST_URL to a running hub to build the browser tests"
    )
}

/// The hub whose histories expire after one second, for tests of a reset.
/// Read at run time of the test that needs it, not build time, so the other
/// tests (and clippy) build with `EXECHUB_TEST_URL` alone.
pub fn short_ttl_hub() -> &'static str {
    match option_env!("EXECHUB_TEST_URL_SHORT_TTL") {
        Some(url) => url,
        None => panic!("set EXECHUB_TEST_URL_SHORT_TTL to a hub started with --event-ttl 1"),
    }
}

pub fn ws_url(hub: &str) -> String {
    format!("{}/ws", hub.replacen("http", "ws", 1))
}

pub fn execution_id(name: &str) -> String {
    format!("{name}-{}", (js_sys::Math::random() * 1e12) as u64)
}

pub fn get(value: &JsValue, key: &str) -> JsValue {
    Reflect::get(value, &key.into()).unwrap_or(JsValue::UNDEFINED)
}

pub fn data(json: &str) -> JsValue {
    js_sys::JSON::parse(json).expect("test JSON")
}

pub async fn settled(promise: impl Into<JsValue>) -> Result<JsValue, JsValue> {
    JsFuture::from(js_sys::Promise::from(promise.into())).await
}

/// `n` events `{eventType: "tick", data: {n}}` for a batch, from `first`.
pub fn batch(first: u32, n: u32) -> JsValue {
    let events: Vec<String> = (first..first + n)
        .map(|i| format!(r#"{{"eventType":"tick","data":{{"n":{i}}}}}"#))
        .collect();
    data(&format!("[{}]", events.join(",")))
}

/// Open WebSockets on the hub, from its `/health`.
pub async fn open_websockets() -> f64 {
    let response = gloo_net::http::Request::get(&format!("{}/health", hub()))
        .send()
        .await
        .expect("health");
    let health = js_sys::JSON::parse(&response.text().await.expect("body")).expect("JSON");
    get(&get(&health, "connections"), "websocket")
        .as_f64()
        .expect("a count")
}

/// Polls `condition` until it holds, for at most 10 s.
pub async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..400 {
        if condition() {
            return;
        }
        gloo_timers::future::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Events received by a subscription, and the closure that receives them.
pub struct Collector {
    pub events: Rc<RefCell<Vec<JsValue>>>,
    closure: Closure<dyn FnMut(JsValue)>,
}

impl Collector {
    pub fn new() -> Self {
        let events = Rc::new(RefCell::new(Vec::new()));
        let sink = Rc::clone(&events);
        let closure = Closure::wrap(
            Box::new(move |event: JsValue| sink.borrow_mut().push(event))
                as Box<dyn FnMut(JsValue)>,
        );
        Self { events, closure }
    }

    pub fn handler(&self) -> exechub_client::types::EventHandlerJs {
        self.closure.as_ref().clone().unchecked_into()
    }

    pub fn seqs(&self) -> Vec<f64> {
        self.events
            .borrow()
            .iter()
            .filter_map(|e| get(e, "seq").as_f64())
            .collect()
    }
}

pub async fn connected() -> ExechubClient {
    connected_to(hub()).await
}

pub async fn connected_to(hub: &str) -> ExechubClient {
    let client = ExechubClient::new(&ws_url(hub), None).expect("client");
    until("the connection to open", || {
        JsValue::from(client.state()) == "open"
    })
    .await;
    client
}

pub async fn publish_over_http(id: &str, n: u32) -> f64 {
    publish_to(hub(), id, n).await
}

pub async fn publish_to(hub: &str, id: &str, n: u32) -> f64 {
    let promise = publish_http(
        hub.into(),
        id.into(),
        "tick".into(),
        data(&format!(r#"{{"n":{n}}}"#)).unchecked_into(),
        None,
    );
    JsFuture::from(js_sys::Promise::from(JsValue::from(promise)))
        .await
        .expect("published")
        .as_f64()
        .expect("seq")
}

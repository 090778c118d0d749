//! The browser APIs the client calls, bound directly, and small helpers for
//! reading and building plain JavaScript objects.
//!
//! Binding only what is used (instead of web-sys through gloo-net) keeps the
//! generated JavaScript glue small. Every binding is a global, so the client
//! works the same in a window and in a web worker.

use js_sys::{Function, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    /// A browser `WebSocket`.
    pub type WebSocket;

    /// Starts connecting to `url`.
    #[wasm_bindgen(constructor, catch)]
    pub fn new(url: &str) -> Result<WebSocket, JsValue>;

    /// Sends a text frame; throws when the socket is not open.
    #[wasm_bindgen(method, catch)]
    pub fn send(this: &WebSocket, text: &str) -> Result<(), JsValue>;

    /// Closes with code 1000.
    #[wasm_bindgen(method)]
    pub fn close(this: &WebSocket);

    /// `onopen`.
    #[wasm_bindgen(method, setter)]
    pub fn set_onopen(this: &WebSocket, handler: Option<&Function>);

    /// `onmessage`.
    #[wasm_bindgen(method, setter)]
    pub fn set_onmessage(this: &WebSocket, handler: Option<&Function>);

    /// `onclose`.
    #[wasm_bindgen(method, setter)]
    pub fn set_onclose(this: &WebSocket, handler: Option<&Function>);

    /// The event of `onmessage`.
    pub type MessageEvent;

    /// The frame: a string for text frames.
    #[wasm_bindgen(method, getter)]
    pub fn data(this: &MessageEvent) -> JsValue;

    /// The event of `onclose`.
    pub type CloseEvent;

    /// The close code (1006 when the connection failed or dropped).
    #[wasm_bindgen(method, getter)]
    pub fn code(this: &CloseEvent) -> u16;

    /// Calls `handler` after `ms` milliseconds; returns the timer's id.
    #[wasm_bindgen(js_name = setTimeout)]
    pub fn set_timeout(handler: &Function, ms: f64) -> JsValue;

    /// Cancels a timer.
    #[wasm_bindgen(js_name = clearTimeout)]
    pub fn clear_timeout(id: &JsValue);

    /// Decodes base64 (to read a token's expiry).
    #[wasm_bindgen(catch)]
    pub fn atob(data: &str) -> Result<String, JsValue>;

    /// Starts an HTTP request.
    #[wasm_bindgen(catch)]
    pub fn fetch(url: &str, init: &JsValue) -> Result<Promise, JsValue>;

    /// The answer to `fetch`.
    pub type Response;

    /// Whether the status is 2xx.
    #[wasm_bindgen(method, getter)]
    pub fn ok(this: &Response) -> bool;

    /// The status code.
    #[wasm_bindgen(method, getter)]
    pub fn status(this: &Response) -> u16;

    /// The status text.
    #[wasm_bindgen(method, getter, js_name = statusText)]
    pub fn status_text(this: &Response) -> String;

    /// Reads the body as text.
    #[wasm_bindgen(method, catch)]
    pub fn text(this: &Response) -> Result<Promise, JsValue>;

    /// `JSON.parse`, given a JavaScript string so the text never enters wasm memory.
    #[wasm_bindgen(catch, js_namespace = JSON, js_name = parse)]
    pub fn parse_json(text: &JsValue) -> Result<JsValue, JsValue>;

    /// `JSON.stringify`: a string, or `undefined` for values JSON has no text for.
    #[wasm_bindgen(catch, js_namespace = JSON, js_name = stringify)]
    pub fn stringify(value: &JsValue) -> Result<JsValue, JsValue>;

    /// `String(value)`: e.g. `"TypeError: Failed to fetch"` for an error.
    #[wasm_bindgen(js_name = String)]
    pub fn to_text(value: &JsValue) -> String;

    /// Percent-encodes a URL component.
    #[wasm_bindgen(js_name = encodeURIComponent)]
    pub fn encode_uri_component(component: &str) -> String;
}

/// Property `key` of `value`; `undefined` when `value` is not an object or lacks it.
pub fn get(value: &JsValue, key: &str) -> JsValue {
    Reflect::get(value, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

/// Sets property `key` of `target`, a plain object this client made (which
/// cannot refuse it).
pub fn set(target: &JsValue, key: &str, value: &JsValue) {
    let _ = Reflect::set(target, &JsValue::from_str(key), value);
}

/// A plain object with these properties.
pub fn object(properties: &[(&str, &JsValue)]) -> JsValue {
    let object = Object::new().into();
    for (key, value) in properties {
        set(&object, key, value);
    }
    object
}

/// Whether `value` is an object and not an array (or `null`): a JSON object.
pub fn is_plain_object(value: &JsValue) -> bool {
    value.is_object() && !js_sys::Array::is_array(value)
}

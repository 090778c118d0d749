//! The one place where values cross between Rust and JavaScript, with
//! serde-wasm-bindgen: frames and bodies are the protocol's serde types
//! (`ClientMsg`, `ServerMsg`, `HistoryPage`, …), never spelled by hand.
//!
//! A server frame is parsed by the JavaScript engine (`JSON.parse`) and read
//! into a [`ServerMsg`]; a client frame is written from a [`ClientMsg`] into
//! a JavaScript object and serialized by `JSON.stringify`. Neither direction
//! carries a JSON parser or printer in the download, and an event's `data`
//! reaches the application as a plain object, never as JSON text.

use exechub_protocol::ServerMsg;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_wasm_bindgen::Serializer;
use wasm_bindgen::{JsCast, JsValue};

use crate::error::ClientError;

/// How values are handed to JavaScript: maps (an event's `data`) as plain
/// objects rather than `Map`s, and `None` as `null` unless a field is skipped.
fn serializer() -> Serializer {
    Serializer::new()
        .serialize_maps_as_objects(true)
        .serialize_missing_as_null(true)
}

/// `value` as a JavaScript value.
///
/// Everything this client hands out serializes (its numbers are seqs and
/// counts, far below 2^53); were one not to, the serializer's error is
/// handed out instead, which at least says what went wrong.
pub fn to_js<T: Serialize + ?Sized>(value: &T) -> JsValue {
    value.serialize(&serializer()).unwrap_or_else(Into::into)
}

/// `value` as JSON text, written by `JSON.stringify`.
///
/// # Errors
/// [`ClientError::InvalidArgument`] if the value cannot be written (it holds
/// a number too large for JavaScript).
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String, ClientError> {
    let invalid = |e: String| ClientError::InvalidArgument(e);
    let value = value
        .serialize(&serializer())
        .map_err(|e| invalid(e.to_string()))?;
    let text = js_sys::JSON::stringify(&value).map_err(|e| invalid(describe(&e)))?;
    Ok(text.into())
}

/// A JavaScript value read as `T`; `what` names it in the error.
///
/// # Errors
/// [`ClientError::InvalidArgument`] when `value` does not have `T`'s shape.
pub fn from_js<T: DeserializeOwned>(value: JsValue, what: &str) -> Result<T, ClientError> {
    serde_wasm_bindgen::from_value(value)
        .map_err(|e| ClientError::InvalidArgument(format!("{what}: {e}")))
}

/// JSON text read as `T`, for answers of the hub.
///
/// # Errors
/// [`ClientError::Protocol`] when the text is not JSON of `T`'s shape.
pub fn parse<T: DeserializeOwned>(text: &str, what: &str) -> Result<T, ClientError> {
    let protocol = |e: String| ClientError::Protocol(format!("{what}: {e}"));
    let value = js_sys::JSON::parse(text).map_err(|e| protocol(describe(&e)))?;
    serde_wasm_bindgen::from_value(value).map_err(|e| protocol(e.to_string()))
}

/// A server frame; `None` for frames this client does not know (a newer
/// hub's) or that are not what the hub sends.
pub fn decode(text: &str) -> Option<ServerMsg> {
    parse(text, "frame").ok()
}

/// What a thrown value says: e.g. `"TypeError: Failed to fetch"` for an error.
pub fn describe(value: &JsValue) -> String {
    match (value.dyn_ref::<js_sys::Error>(), value.as_string()) {
        (Some(error), _) => error.to_string().into(),
        (None, Some(text)) => text,
        (None, None) => "an exception that is not an Error".to_owned(),
    }
}

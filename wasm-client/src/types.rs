//! The TypeScript types of the package, and the conversions of wire types
//! into the camelCase JavaScript objects those types describe.
//!
//! Values go straight from Rust to JavaScript objects with
//! `serde-wasm-bindgen`: an event's JSON is parsed once, never re-stringified.

use exechub_protocol::{Event, EventData, HistoryPage};
use serde::Serialize;
use wasm_bindgen::prelude::*;

#[wasm_bindgen(typescript_custom_section)]
const TYPES: &'static str = r#"
/** Connection state of an {@link ExechubClient}. */
export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

/** One event of an execution. `seq` is 1, 2, 3… per execution, without gaps. */
export interface ExecutionEvent {
  executionId: string;
  seq: number;
  eventType: string;
  /** RFC 3339 time given by the publisher, or stamped by the hub. */
  timestamp: string;
  data: Record<string, unknown>;
}

/** Options of {@link ExechubClient}. */
export interface ClientOptions {
  /** Bearer token, sent as `access_token` on the WebSocket URL. */
  token?: string;
  /**
   * Returns a fresh bearer token. Called before every (re)connection and
   * shortly before the current token's `exp`; the new token is sent on the open
   * socket, so subscriptions are not interrupted.
   */
  getToken?: () => string | Promise<string>;
  /** First reconnect delay (default 250 ms); doubles up to `maxReconnectDelayMs`, with jitter. */
  minReconnectDelayMs?: number;
  /** Longest reconnect delay (default 10 000 ms). */
  maxReconnectDelayMs?: number;
  /** Called on every connection state change. */
  onStateChange?: (state: ConnectionState) => void;
}

/** Options of {@link ExechubClient.subscribe}. */
export interface SubscribeOptions {
  /** Replay stored events with `seq > after` first; only new events when absent. */
  after?: number;
  /** The requested position no longer exists (history expired or was trimmed). */
  onHistoryLost?: (lost: HistoryLost) => void;
  /** The hub reported an error for this subscription. */
  onError?: (error: ExechubError) => void;
}

/** Events `after + 1 ..= resumeAfter` are gone; delivery continues after `resumeAfter`. */
export interface HistoryLost {
  executionId: string;
  after: number;
  resumeAfter: number;
}

/** Options of {@link history}. */
export interface HistoryOptions {
  after?: number;
  limit?: number;
  token?: string;
}

/** A page of stored events. */
export interface HistoryPage {
  executionId: string;
  events: ExecutionEvent[];
  /** Highest seq assigned so far (0 when there is no history). */
  lastSeq: number;
  /** Lowest seq still stored, or null when none is. */
  oldestSeq: number | null;
}

/** Options of {@link publishHttp}. */
export interface PublishOptions {
  /** RFC 3339 time; the hub stamps its own when absent. */
  timestamp?: string;
  /** A retry with the same key within the hub's window returns the original seq. */
  idempotencyKey?: string;
  token?: string;
}

/** One field problem, as in FastAPI's 422 body. */
export interface ValidationError {
  loc: (string | number)[];
  msg: string;
  type: string;
}

/** Machine-readable reason of an {@link ExechubError}. */
export type ErrorCode =
  | "not_connected" | "connection_lost" | "closed" | "network_error" | "http_error"
  | "invalid_argument" | "protocol_error" | "already_subscribed"
  | "bad_frame" | "unknown_op" | "invalid_request" | "not_subscribed"
  | "too_many_subscriptions" | "unavailable" | "internal";

/** Every failure of the client is an `ExechubError`. */
export interface ExechubError extends Error {
  name: "ExechubError";
  code: ErrorCode;
  /** For `invalid_request`: the same entries a 422 carries. */
  detail?: ValidationError[];
  /** For HTTP failures: the status code. */
  status?: number;
}
"#;

#[wasm_bindgen]
extern "C" {
    /// `ClientOptions` from TypeScript.
    #[wasm_bindgen(typescript_type = "ClientOptions")]
    pub type ClientOptionsJs;
    /// `SubscribeOptions` from TypeScript.
    #[wasm_bindgen(typescript_type = "SubscribeOptions")]
    pub type SubscribeOptionsJs;
    /// `HistoryOptions` from TypeScript.
    #[wasm_bindgen(typescript_type = "HistoryOptions")]
    pub type HistoryOptionsJs;
    /// `PublishOptions` from TypeScript.
    #[wasm_bindgen(typescript_type = "PublishOptions")]
    pub type PublishOptionsJs;
    /// The event callback.
    #[wasm_bindgen(typescript_type = "(event: ExecutionEvent) => void")]
    pub type EventHandlerJs;
    /// An event payload.
    #[wasm_bindgen(typescript_type = "Record<string, unknown>")]
    pub type DataJs;
    /// A Promise of a seq.
    #[wasm_bindgen(typescript_type = "Promise<number>")]
    pub type SeqPromise;
    /// A Promise of a history page.
    #[wasm_bindgen(typescript_type = "Promise<HistoryPage>")]
    pub type HistoryPromise;
    /// The connection state.
    #[wasm_bindgen(typescript_type = "ConnectionState")]
    pub type ConnectionStateJs;
}

/// `ExecutionEvent` as JavaScript sees it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventView<'a> {
    execution_id: &'a str,
    seq: u64,
    event_type: &'a str,
    timestamp: &'a str,
    data: &'a EventData,
}

impl<'a> From<&'a Event> for EventView<'a> {
    fn from(event: &'a Event) -> Self {
        Self {
            execution_id: &event.execution_id,
            seq: event.seq,
            event_type: &event.event_type,
            timestamp: &event.timestamp,
            data: &event.data,
        }
    }
}

/// `HistoryPage` as JavaScript sees it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PageView<'a> {
    execution_id: &'a str,
    events: Vec<EventView<'a>>,
    last_seq: u64,
    oldest_seq: Option<u64>,
}

/// `HistoryLost` as JavaScript sees it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryLostView<'a> {
    /// The execution concerned.
    pub execution_id: &'a str,
    /// The position asked for.
    pub after: u64,
    /// Where delivery continues.
    pub resume_after: u64,
}

/// Converts to a plain JavaScript value: objects (not `Map`s), numbers (not `BigInt`s).
pub fn to_js<T: Serialize + ?Sized>(value: &T) -> Result<JsValue, serde_wasm_bindgen::Error> {
    value.serialize(&serde_wasm_bindgen::Serializer::json_compatible())
}

/// An `ExecutionEvent` object.
pub fn event_to_js(event: &Event) -> Result<JsValue, serde_wasm_bindgen::Error> {
    to_js(&EventView::from(event))
}

/// A `HistoryPage` object.
pub fn page_to_js(page: &HistoryPage) -> Result<JsValue, serde_wasm_bindgen::Error> {
    to_js(&PageView {
        execution_id: &page.execution_id,
        events: page.events.iter().map(EventView::from).collect(),
        last_seq: page.last_seq,
        oldest_seq: page.oldest_seq,
    })
}

/// Reads an optional field of an options object.
pub fn field(options: &JsValue, name: &str) -> Option<JsValue> {
    if options.is_undefined() || options.is_null() {
        return None;
    }
    js_sys::Reflect::get(options, &name.into())
        .ok()
        .filter(|v| !v.is_undefined() && !v.is_null())
}

/// Reads an optional non-negative integer field.
pub fn u64_field(options: &JsValue, name: &str) -> Result<Option<u64>, crate::ClientError> {
    match field(options, name).map(|v| v.as_f64()) {
        None => Ok(None),
        Some(Some(n)) if n >= 0.0 && n.fract() == 0.0 && n <= 9_007_199_254_740_991.0 => {
            Ok(Some(n as u64))
        }
        Some(_) => Err(crate::ClientError::InvalidArgument(format!(
            "`{name}` must be a non-negative integer"
        ))),
    }
}

/// Reads an optional string field.
pub fn string_field(options: &JsValue, name: &str) -> Option<String> {
    field(options, name).and_then(|v| v.as_string())
}

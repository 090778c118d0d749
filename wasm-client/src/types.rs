//! The TypeScript types of the package, and the camelCase JavaScript objects
//! those types describe, made from the hub's snake_case wire objects.
//!
//! Wire objects come from the browser's `JSON.parse`, and an event's `data` is
//! handed on as the object the browser parsed: an event's JSON is parsed once
//! and its payload is never re-stringified or copied through Rust.

use exechub_protocol::names::field;
use exechub_protocol::{Loc, LostReason, ValidationError};
use js_sys::Array;
use wasm_bindgen::prelude::*;

use crate::ClientError;
use crate::core::whole_number;
use crate::js::{get, is_plain_object, object, set};

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
  /** Ceiling of the first reconnect delay (default 250 ms); doubles up to `maxReconnectDelayMs`. Each delay is drawn from the upper half of its ceiling (jitter). */
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
  /** The position no longer exists (history expired, trimmed or reset); delivery goes on. */
  onHistoryLost?: (lost: HistoryLost) => void;
  /** The hub reported an error for this subscription. */
  onError?: (error: ExechubError) => void;
}

/** Why a subscription's position could not be continued. */
export type LostReason =
  /** The execution's history expired (TTL); a new one starts at seq 1. */
  | "expired"
  /** Events after the position were trimmed; same history. */
  | "trimmed"
  /** The history was dropped otherwise (hub restarted or evicted it); a new one starts. */
  | "reset";

/**
 * The position `after` cannot be continued: for `"trimmed"`, events
 * `after + 1 ..= resumeAfter` are gone; otherwise the history `after` belonged
 * to is gone. Delivery continues after `resumeAfter` of history `epoch`.
 */
export interface HistoryLost {
  executionId: string;
  after: number;
  resumeAfter: number;
  reason: LostReason;
  /** The history delivery continues in; absent while the execution has none. */
  epoch?: string;
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

/// An event of the wire as the `ExecutionEvent` handed to the application,
/// with what the bookkeeping needs.
pub struct EventView {
    /// The execution the event belongs to.
    pub execution_id: String,
    /// Its seq.
    pub seq: u64,
    /// The `ExecutionEvent` object.
    pub view: JsValue,
}

impl EventView {
    /// Reads a wire event (`{"seq", "execution_id", "event_type", "timestamp",
    /// "data"}`); `None` when a field is missing or of the wrong type.
    pub fn from_wire(event: &JsValue) -> Option<Self> {
        let [seq, execution_id, event_type, timestamp, data] = [
            field::SEQ,
            field::EXECUTION_ID,
            field::EVENT_TYPE,
            field::TIMESTAMP,
            field::DATA,
        ]
        .map(|key| get(event, key));
        let number = seq.as_f64().and_then(whole_number)?;
        if !(event_type.is_string() && timestamp.is_string() && is_plain_object(&data)) {
            return None;
        }
        let view = object(&[
            ("executionId", &execution_id),
            ("seq", &seq),
            ("eventType", &event_type),
            ("timestamp", &timestamp),
            ("data", &data),
        ]);
        Some(Self {
            execution_id: execution_id.as_string()?,
            seq: number,
            view,
        })
    }
}

/// A whole-number field of a wire object.
pub fn number_field(value: &JsValue, key: &str) -> Option<u64> {
    get(value, key).as_f64().and_then(whole_number)
}

/// A string field of a wire object.
pub fn string_of(value: &JsValue, key: &str) -> Option<String> {
    get(value, key).as_string()
}

/// The `HistoryPage` object for a wire page (`GET …/events`).
///
/// # Errors
/// [`ClientError::Protocol`] when the page is not what the hub sends.
pub fn page_view(page: &JsValue) -> Result<JsValue, ClientError> {
    let bad = |what: &str| ClientError::Protocol(["history page: bad `", what, "`"].concat());
    let execution_id = get(page, field::EXECUTION_ID);
    if !execution_id.is_string() {
        return Err(bad(field::EXECUTION_ID));
    }
    let wire_events = get(page, field::EVENTS);
    if !Array::is_array(&wire_events) {
        return Err(bad(field::EVENTS));
    }
    let events = Array::new();
    for event in wire_events.unchecked_into::<Array>().iter() {
        let event = EventView::from_wire(&event).ok_or_else(|| bad(field::EVENTS))?;
        events.push(&event.view);
    }
    let last_seq = number_field(page, field::LAST_SEQ).ok_or_else(|| bad(field::LAST_SEQ))?;
    let oldest_seq = get(page, field::OLDEST_SEQ);
    if !(oldest_seq.is_null() || oldest_seq.as_f64().and_then(whole_number).is_some()) {
        return Err(bad(field::OLDEST_SEQ));
    }
    Ok(object(&[
        ("executionId", &execution_id),
        ("events", &events),
        ("lastSeq", &JsValue::from(last_seq as f64)),
        ("oldestSeq", &oldest_seq),
    ]))
}

/// The `HistoryLost` object (`epoch` left out when there is none).
pub fn history_lost_view(
    execution_id: &str,
    after: u64,
    resume_after: u64,
    reason: LostReason,
    epoch: Option<&str>,
) -> JsValue {
    let view = object(&[
        ("executionId", &JsValue::from_str(execution_id)),
        ("after", &JsValue::from(after as f64)),
        ("resumeAfter", &JsValue::from(resume_after as f64)),
        ("reason", &JsValue::from_str(reason.as_str())),
    ]);
    if let Some(epoch) = epoch {
        set(&view, "epoch", &JsValue::from_str(epoch));
    }
    view
}

/// The `detail` array of an `ExechubError`, for problems found locally.
///
/// `ctx` is left out: only a JSON syntax error has one, and this client never
/// sends the hub text it did not write as JSON itself.
pub fn detail_to_js(detail: &[ValidationError]) -> JsValue {
    let entries = Array::new();
    for problem in detail {
        let loc = Array::new();
        for part in &problem.loc {
            loc.push(&match part {
                Loc::Index(index) => JsValue::from(*index as f64),
                Loc::Key(key) => JsValue::from_str(key),
            });
        }
        entries.push(&object(&[
            (field::LOC, &loc),
            (field::MSG, &JsValue::from_str(&problem.msg)),
            (field::TYPE, &JsValue::from_str(&problem.kind)),
        ]));
    }
    entries.into()
}

/// Reads an optional field of an options object.
pub fn option_field(options: &JsValue, name: &str) -> Option<JsValue> {
    if options.is_undefined() || options.is_null() {
        return None;
    }
    Some(get(options, name)).filter(|v| !v.is_undefined() && !v.is_null())
}

/// Reads an optional non-negative integer field.
///
/// # Errors
/// [`ClientError::InvalidArgument`] for anything but a whole number in JavaScript's safe range.
pub fn u64_field(options: &JsValue, name: &str) -> Result<Option<u64>, ClientError> {
    match option_field(options, name) {
        None => Ok(None),
        Some(value) => value
            .as_f64()
            .and_then(whole_number)
            .map(Some)
            .ok_or_else(|| {
                ClientError::InvalidArgument(
                    ["`", name, "` must be a non-negative integer"].concat(),
                )
            }),
    }
}

/// Reads an optional string field.
pub fn string_field(options: &JsValue, name: &str) -> Option<String> {
    option_field(options, name).and_then(|v| v.as_string())
}

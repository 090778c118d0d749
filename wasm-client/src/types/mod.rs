//! The package's TypeScript types, and the Rust shapes of the values they
//! describe: options read from JavaScript objects and results handed back,
//! all moved with serde-wasm-bindgen ([`crate::wire`]). The names here are
//! the JavaScript API's (camelCase); the wire's names live in
//! `exechub-protocol` only. [`executions`] has those of executions as wholes.

pub mod executions;

use exechub_protocol::{BatchAccepted, Event, EventData, HistoryPage, LostReason, StatusFilter};
use js_sys::Function;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
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

/** One event to publish (an item of {@link ExechubClient.publishBatch}). */
export interface NewEvent {
  eventType: string;
  data: Record<string, unknown>;
  /** RFC 3339 time; the hub stamps its own when absent. */
  timestamp?: string;
}

/**
 * A WebSocket constructor: the global one in browsers, web workers and
 * Node ≥ 22, or for example the `ws` package's in Node 20.
 */
export type WebSocketConstructor = new (url: string) => unknown;

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
  /**
   * The WebSocket implementation; default: the global `WebSocket`. Node 20
   * has none: pass the `ws` package's (`import { WebSocket } from "ws"`).
   */
  websocket?: WebSocketConstructor;
  /**
   * The hub's HTTP base URL for {@link ExechubClient.getExecution},
   * {@link ExechubClient.result} and {@link ExechubClient.listExecutions};
   * default: the socket's URL with `http(s)` for `ws(s)` and without its `/ws`.
   */
  httpUrl?: string;
}

/** Options of {@link ExechubClient.subscribe}. */
export interface SubscribeOptions {
  /** Replay stored events with `seq > after` first; only new events when absent. */
  after?: number;
  /** The position no longer exists (history expired, trimmed or reset); delivery goes on. */
  onHistoryLost?: (lost: HistoryLost) => void;
  /** The hub reported an error for this subscription. */
  onError?: (error: ExechubError) => void;
  /**
   * The execution ended: called once, after its terminal event was
   * delivered, and the subscription is over (it is not resumed after a
   * reconnect). `finalEvent` is the terminal event, or `null` when this
   * subscription did not receive it (it started after it, or the events
   * expired): {@link ExechubClient.getExecution} has it as `final`.
   */
  onEnd?: (status: ExecutionStatus, finalEvent: ExecutionEvent | null) => void;
}

/** Options of every HTTP call. */
export interface HttpOptions {
  /** Bearer token, for hubs with auth on. */
  token?: string;
}

/** Options of {@link history}. */
export interface HistoryOptions extends HttpOptions {
  /** Events with `seq > after` (default 0). */
  after?: number;
  /** At most this many events (the hub's default when absent). */
  limit?: number;
}

/** A page of stored events. */
export interface HistoryPage {
  executionId: string;
  events: ExecutionEvent[];
  /** Highest seq assigned so far (0 when there is no history). */
  lastSeq: number;
  /** Lowest seq still stored, or null when none is. */
  oldestSeq: number | null;
  /** The history these seqs belong to; absent when the execution has none. */
  epoch?: string;
  /**
   * Present when the events are gone but the execution is known (it ended
   * and its events expired; its summary keeps the final result).
   */
  historyLost?: { reason: LostReason; lastSeq: number };
}

/** Options of {@link ExechubClient.publish} and {@link publishHttp}. */
export interface PublishOptions {
  /** RFC 3339 time; the hub stamps its own when absent. */
  timestamp?: string;
  /** A retry with the same key within the hub's window returns the original seq. */
  idempotencyKey?: string;
}

/** Options of {@link ExechubClient.publishBatch} and {@link publishBatchHttp}. */
export interface BatchOptions {
  /** A retry with the same key within the hub's window returns the original seqs. */
  idempotencyKey?: string;
}

/** Where a batch was stored: seqs `firstSeq..=lastSeq`, in order. */
export interface BatchStored {
  firstSeq: number;
  lastSeq: number;
  count: number;
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
  | "too_many_subscriptions" | "unavailable" | "internal"
  | "unauthorized" | "forbidden" | "rate_limited"
  /** A publish after the execution's terminal event (HTTP 409 or over the socket). */
  | "execution_ended"
  /** HTTP 401: why the token was refused. */
  | "missing_token" | "malformed_token" | "bad_signature" | "token_expired" | "invalid_token"
  /** HTTP: the hub at a limit (503), an origin refused (403), not found (404), too large (413). */
  | "busy" | "origin_not_allowed" | "not_found" | "payload_too_large" | "slow_consumer";

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
    /// Options of a socket publish: `PublishOptions`, or the timestamp alone.
    #[wasm_bindgen(typescript_type = "PublishOptions | string")]
    pub type SocketPublishOptionsJs;
    /// `PublishOptions & HttpOptions` from TypeScript.
    #[wasm_bindgen(typescript_type = "PublishOptions & HttpOptions")]
    pub type HttpPublishOptionsJs;
    /// `BatchOptions` from TypeScript.
    #[wasm_bindgen(typescript_type = "BatchOptions")]
    pub type BatchOptionsJs;
    /// `BatchOptions & HttpOptions` from TypeScript.
    #[wasm_bindgen(typescript_type = "BatchOptions & HttpOptions")]
    pub type HttpBatchOptionsJs;
    /// The event callback.
    #[wasm_bindgen(typescript_type = "(event: ExecutionEvent) => void")]
    pub type EventHandlerJs;
    /// An event payload.
    #[wasm_bindgen(typescript_type = "Record<string, unknown>")]
    pub type DataJs;
    /// A batch to publish.
    #[wasm_bindgen(typescript_type = "NewEvent[]")]
    pub type NewEventsJs;
    /// A Promise of a seq.
    #[wasm_bindgen(typescript_type = "Promise<number>")]
    pub type SeqPromise;
    /// A Promise of a stored batch.
    #[wasm_bindgen(typescript_type = "Promise<BatchStored>")]
    pub type BatchPromise;
    /// A Promise of a history page.
    #[wasm_bindgen(typescript_type = "Promise<HistoryPage>")]
    pub type HistoryPromise;
    /// The connection state.
    #[wasm_bindgen(typescript_type = "ConnectionState")]
    pub type ConnectionStateJs;
}

/// `ClientOptions`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClientOptions {
    /// A fixed bearer token.
    pub token: Option<String>,
    /// Fetches fresh tokens.
    #[serde(default, deserialize_with = "callback")]
    pub get_token: Option<Function>,
    /// Ceiling of the first reconnect delay.
    pub min_reconnect_delay_ms: Option<u64>,
    /// Largest reconnect delay.
    pub max_reconnect_delay_ms: Option<u64>,
    /// Told every state change.
    #[serde(default, deserialize_with = "callback")]
    pub on_state_change: Option<Function>,
    /// The WebSocket constructor, when not the global one.
    #[serde(default, deserialize_with = "callback")]
    pub websocket: Option<Function>,
    /// The HTTP base URL, when not derived from the socket's.
    pub http_url: Option<String>,
}

/// `SubscribeOptions`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SubscribeOptions {
    /// Replay after this seq.
    pub after: Option<u64>,
    /// Told of a lost position.
    #[serde(default, deserialize_with = "callback")]
    pub on_history_lost: Option<Function>,
    /// Told of the hub's errors for the subscription.
    #[serde(default, deserialize_with = "callback")]
    pub on_error: Option<Function>,
    /// Told of the execution's end.
    #[serde(default, deserialize_with = "callback")]
    pub on_end: Option<Function>,
}

/// `HistoryOptions`, `PublishOptions`, `BatchOptions` and `HttpOptions`:
/// every field any call reads (each call reads its own).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CallOptions {
    /// `history`: replay after this seq.
    pub after: Option<u64>,
    /// `history`: page size.
    pub limit: Option<u64>,
    /// HTTP: bearer token.
    pub token: Option<String>,
    /// Publishes: the event's time.
    pub timestamp: Option<String>,
    /// Publishes: the retry key.
    pub idempotency_key: Option<String>,
    /// `listExecutions`: which executions.
    pub status: Option<StatusFilter>,
    /// `listExecutions`: the page after this cursor.
    pub cursor: Option<String>,
    /// `result`: seconds to wait for the end.
    pub wait: Option<u64>,
}

/// A function-valued option: absent, `undefined` and `null` read as `None`.
pub(crate) fn callback<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Function>, D::Error> {
    let value: JsValue = serde_wasm_bindgen::preserve::deserialize(de)?;
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    value
        .dyn_into()
        .map(Some)
        .map_err(|_| D::Error::custom("a callback option must be a function"))
}

/// An `ExecutionEvent`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventView<'a> {
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

/// A `HistoryPage`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PageView<'a> {
    execution_id: &'a str,
    events: Vec<EventView<'a>>,
    last_seq: u64,
    oldest_seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    history_lost: Option<PageLostView>,
}

/// A page's `historyLost`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PageLostView {
    reason: LostReason,
    last_seq: u64,
}

impl<'a> From<&'a HistoryPage> for PageView<'a> {
    fn from(page: &'a HistoryPage) -> Self {
        Self {
            execution_id: &page.execution_id,
            events: page.events.iter().map(EventView::from).collect(),
            last_seq: page.last_seq,
            oldest_seq: page.oldest_seq,
            epoch: page.epoch.as_deref(),
            history_lost: page.history_lost.as_ref().map(|lost| PageLostView {
                reason: lost.reason,
                last_seq: lost.last_seq,
            }),
        }
    }
}

/// A `BatchStored`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchView {
    first_seq: u64,
    last_seq: u64,
    count: u64,
}

impl BatchView {
    /// The seqs `first..=last`.
    pub fn new(first: u64, last: u64) -> Self {
        Self {
            first_seq: first,
            last_seq: last,
            count: last.saturating_sub(first) + 1,
        }
    }
}

impl From<&BatchAccepted> for BatchView {
    fn from(accepted: &BatchAccepted) -> Self {
        Self {
            first_seq: accepted.first_seq,
            last_seq: accepted.last_seq,
            count: accepted.count,
        }
    }
}

/// `options` read as `T`, its defaults when absent.
///
/// # Errors
/// [`crate::ClientError::InvalidArgument`] naming `what` when an option has the wrong type.
pub fn options<T: serde::de::DeserializeOwned + Default>(
    options: Option<JsValue>,
    what: &str,
) -> Result<T, crate::ClientError> {
    match options {
        Some(options) if !options.is_undefined() && !options.is_null() => {
            crate::wire::from_js(options, what)
        }
        _ => Ok(T::default()),
    }
}

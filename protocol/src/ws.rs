//! WebSocket messages (`GET /ws`): JSON text frames in both directions.
//!
//! Client frames carry `op`, server frames carry `type`. Every client request
//! may carry an `id` of its choosing, echoed in the answer. See
//! `docs/protocol.md` for an example exchange.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ErrorCode;
use crate::event::{Event, EventData};
use crate::execution::{ExecutionSummary, StatusFilter};
use crate::names::{field, op};
use crate::publish::{PublishRequest, is_idempotency_key, validate_execution_id};
use crate::validation::ValidationError;

/// A client-chosen request id, echoed in the answer: a string or an integer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    /// Numeric id.
    Num(u64),
    /// String id.
    Str(String),
}

/// A frame sent by a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ClientMsg {
    /// Receive an execution's events: the stored ones after `after` (if given),
    /// then live ones, in seq order without gaps or duplicates.
    Subscribe {
        /// Echoed in `subscribed` or `error`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// The execution to follow.
        execution_id: String,
        /// Replay stored events with `seq > after` first; live only when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<u64>,
        /// The epoch `after` belongs to (from `subscribed`, an event frame or
        /// `history_lost`). When the execution's history has another epoch
        /// now, the answer is `history_lost` and delivery restarts in the new
        /// epoch; without it, `after` is taken to be in the current epoch.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<String>,
    },
    /// Stop receiving an execution's events.
    Unsubscribe {
        /// Echoed in `unsubscribed` or `error`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// The execution to stop following.
        execution_id: String,
    },
    /// Append an event, answered with `ack` (carrying the seq) or `error`.
    Publish {
        /// Echoed in `ack` or `error`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// The execution to append to.
        execution_id: String,
        /// The event, validated exactly like the HTTP body.
        #[serde(flatten)]
        event: PublishRequest,
        /// A retry with the same key (same execution, within the hub's window)
        /// is answered with the original seq and stores nothing new.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idempotency_key: Option<String>,
    },
    /// Appends several events atomically with consecutive seqs (a `publish`
    /// frame carrying `events` instead of one event's fields), answered with
    /// one `ack` carrying `first_seq` and `seq` (the last) or one `error`.
    /// (Written with op `publish`; read by [`ClientMsg::decode`], which tells
    /// the two apart by the `events` field.)
    #[serde(rename = "publish", skip_deserializing)]
    PublishBatch {
        /// Echoed in `ack` or `error`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// The execution to append to.
        execution_id: String,
        /// The events, in order, validated like the HTTP batch body.
        events: Vec<PublishRequest>,
        /// As for a single publish: a retry returns the original seqs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idempotency_key: Option<String>,
    },
    /// Follow the list of executions: answered with an `executions`
    /// snapshot (most recently updated first), then an `execution` frame on
    /// every change of one that matches `status`.
    SubscribeExecutions {
        /// Echoed in `executions` or `error`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// Which executions (default: all).
        #[serde(default)]
        status: StatusFilter,
    },
    /// Stop following the list of executions.
    UnsubscribeExecutions {
        /// Echoed in `unsubscribed`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
    },
    /// Liveness check, answered with `pong`.
    Ping {
        /// Echoed in `pong`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
    },
    /// Replaces the connection's token (before it expires), answered with
    /// `authenticated` or `error`; the connection is not interrupted.
    Auth {
        /// Echoed in `authenticated` or `error`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// A fresh bearer token.
        token: String,
    },
}

/// A frame sent by the hub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// An event of a subscribed execution.
    Event {
        /// The epoch of the history the event belongs to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<String>,
        /// The event, with its `execution_id` and `seq`.
        event: Event,
    },
    /// A subscription is active; events follow.
    Subscribed {
        /// The request id of the `subscribe`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// The execution subscribed to.
        execution_id: String,
        /// Delivery continues with the event after this seq: the requested
        /// `after`, or for a live-only subscription the head at subscribe
        /// time. A client that reconnects before any event arrives resumes here.
        #[serde(default)]
        after: u64,
        /// The epoch `after` belongs to: the identity of the execution's
        /// current history (absent while it has none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<String>,
    },
    /// A subscription ended at the client's request.
    Unsubscribed {
        /// The request id of the `unsubscribe`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// The execution unsubscribed from (absent in the answer to
        /// `unsubscribe_executions`).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        execution_id: String,
    },
    /// A publish was stored.
    Ack {
        /// The request id of the `publish`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// The execution appended to.
        execution_id: String,
        /// The seq the store assigned (for a batch: its last event's).
        seq: u64,
        /// For a batch: the seq of its first event.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        first_seq: Option<u64>,
        /// The event's timestamp (for a batch: its first event's).
        timestamp: String,
    },
    /// Answer to `ping`.
    Pong {
        /// The request id of the `ping`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
    },
    /// The token sent with `auth` was accepted.
    Authenticated {
        /// The request id of the `auth`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// When the new token expires (Unix seconds); refresh before then.
        expires_at: u64,
    },
    /// The position no longer exists: events after `after` were trimmed
    /// (same epoch: `after + 1 ..= resume_after` are gone), or the history
    /// the position belonged to is gone and a new one (`epoch`) started.
    /// Delivery continues with seq `resume_after + 1` of `epoch`.
    HistoryLost {
        /// The execution concerned.
        execution_id: String,
        /// The position that could not be continued.
        after: u64,
        /// Delivery continues after this seq (of `epoch`).
        resume_after: u64,
        /// Why the position was lost.
        reason: LostReason,
        /// The epoch delivery continues in (absent while the execution has no history).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<String>,
    },
    /// The subscribed execution has ended: its terminal event (`seq`) was
    /// the last one delivered, and the subscription is over.
    Ended {
        /// The execution that ended.
        execution_id: String,
        /// How it ended (`completed`, `failed`, …).
        status: String,
        /// The seq of its terminal event.
        seq: u64,
    },
    /// Answer to `subscribe_executions`: the matching executions now, most
    /// recently updated first.
    Executions {
        /// The request id of the `subscribe_executions`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// The snapshot.
        executions: Vec<ExecutionSummary>,
    },
    /// One execution of a followed list changed (or appeared).
    Execution {
        /// Its summary now (boxed: the other frames are much smaller).
        execution: Box<ExecutionSummary>,
    },
    /// A request failed; the connection stays usable.
    Error {
        /// The request id of the failed request, when it could be read.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// What went wrong, as data.
        code: ErrorCode,
        /// Human-readable explanation.
        message: String,
        /// The execution concerned, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        execution_id: Option<String>,
        /// For `invalid_request`: the same entries a 422 would carry.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<Vec<ValidationError>>,
    },
}

/// Why a subscriber's position could not be continued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LostReason {
    /// The history the position belonged to expired (its TTL passed with no
    /// new event); the execution's events now belong to a new epoch.
    Expired,
    /// Events after the position were trimmed by the retention cap.
    Trimmed,
    /// The history was dropped for another reason (the hub's embedded store
    /// restarted or evicted it to stay within its memory bound), or the
    /// position lies beyond the history's head.
    Reset,
}

impl LostReason {
    /// The reason as it appears on the wire, e.g. `"expired"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Trimmed => "trimmed",
            Self::Reset => "reset",
        }
    }
}

/// A client frame that could not be decoded, with what is needed to answer it.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameError {
    /// The request id, when the frame had a readable one.
    pub id: Option<RequestId>,
    /// The kind of failure.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
    /// Field-level problems for `invalid_request`.
    pub detail: Option<Vec<ValidationError>>,
}

impl FrameError {
    fn new(id: Option<RequestId>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            id,
            code,
            message: message.into(),
            detail: None,
        }
    }

    fn invalid(id: Option<RequestId>, detail: Vec<ValidationError>) -> Self {
        Self {
            detail: Some(detail),
            ..Self::new(id, ErrorCode::InvalidRequest, "invalid request")
        }
    }

    /// The `error` frame that answers this failure.
    pub fn into_msg(self) -> ServerMsg {
        ServerMsg::Error {
            id: self.id,
            code: self.code,
            message: self.message,
            execution_id: None,
            detail: self.detail,
        }
    }
}

impl ClientMsg {
    /// Decodes one text frame, validating fields the way the HTTP API does.
    ///
    /// # Errors
    /// A [`FrameError`] describing the first structural problem, or every
    /// field problem at once for `invalid_request`.
    pub fn decode(text: &str) -> Result<Self, FrameError> {
        Self::decode_limited(text, MAX_BATCH_EVENTS)
    }

    /// [`ClientMsg::decode`] accepting batches of at most `max_batch_events`.
    ///
    /// # Errors
    /// As [`ClientMsg::decode`].
    pub fn decode_limited(text: &str, max_batch_events: usize) -> Result<Self, FrameError> {
        let mut fields = frame_object(text)?;
        let id = request_id(fields.remove(field::ID))?;
        let Some(Value::String(op)) = fields.remove(field::OP) else {
            return Err(FrameError::new(
                id,
                ErrorCode::BadFrame,
                "frame needs a string `op`",
            ));
        };
        match op.as_str() {
            op::SUBSCRIBE => decode_subscribe(id, fields),
            op::UNSUBSCRIBE => {
                let execution_id = execution_id(&id, &mut fields)
                    .map_err(|d| FrameError::invalid(id.clone(), d))?;
                Ok(Self::Unsubscribe { id, execution_id })
            }
            op::PUBLISH if fields.contains_key(field::EVENTS) => {
                decode_batch(id, fields, max_batch_events)
            }
            op::PUBLISH => decode_publish(id, fields),
            op::SUBSCRIBE_EXECUTIONS => {
                let status = status_filter(&id, fields.remove(field::STATUS))?;
                Ok(Self::SubscribeExecutions { id, status })
            }
            op::UNSUBSCRIBE_EXECUTIONS => Ok(Self::UnsubscribeExecutions { id }),
            op::PING => Ok(Self::Ping { id }),
            op::AUTH => decode_auth(id, fields),
            other => Err(FrameError::new(
                id,
                ErrorCode::UnknownOp,
                format!("unknown op `{}`", echo(other)),
            )),
        }
    }
}

/// The frame's fields, if it is a JSON object.
fn frame_object(text: &str) -> Result<EventData, FrameError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err(FrameError::new(
            None,
            ErrorCode::BadFrame,
            "frame must be a JSON object",
        )),
        Err(err) => Err(FrameError::new(
            None,
            ErrorCode::BadFrame,
            format!("frame is not JSON: {err}"),
        )),
    }
}

/// The request id, echoed in the answer: absent, a non-negative integer, or
/// a string bounded like an idempotency key.
fn request_id(raw: Option<Value>) -> Result<Option<RequestId>, FrameError> {
    match raw {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) if id.len() > MAX_REQUEST_ID_BYTES => Err(FrameError::new(
            None,
            ErrorCode::BadFrame,
            "id must be a string of at most 256 bytes or a non-negative integer",
        )),
        Some(raw) => serde_json::from_value(raw).map(Some).map_err(|_| {
            FrameError::new(
                None,
                ErrorCode::BadFrame,
                "id must be a string or a non-negative integer",
            )
        }),
    }
}

/// `subscribe_executions`' `status` (default `all`).
fn status_filter(id: &Option<RequestId>, raw: Option<Value>) -> Result<StatusFilter, FrameError> {
    match raw {
        None | Some(Value::Null) => Ok(StatusFilter::All),
        Some(Value::String(status)) if StatusFilter::from_wire(&status).is_some() => {
            Ok(StatusFilter::from_wire(&status).unwrap_or_default())
        }
        Some(_) => {
            let problem = ValidationError::body_field(
                field::STATUS,
                "enum",
                "Input should be 'all', 'running' or 'ended'",
            );
            Err(FrameError::invalid(id.clone(), vec![problem]))
        }
    }
}

fn decode_auth(id: Option<RequestId>, mut fields: EventData) -> Result<ClientMsg, FrameError> {
    match fields.remove(field::TOKEN) {
        Some(Value::String(token)) => Ok(ClientMsg::Auth { id, token }),
        _ => Err(FrameError::invalid(
            id,
            vec![ValidationError::body_field(
                field::TOKEN,
                "string_type",
                "Input should be a valid string",
            )],
        )),
    }
}

fn decode_subscribe(id: Option<RequestId>, mut fields: EventData) -> Result<ClientMsg, FrameError> {
    let mut detail = Vec::new();
    let execution_id = execution_id(&id, &mut fields)
        .map_err(|d| detail.extend(d))
        .ok();
    let after = match fields.remove(field::AFTER) {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
        Some(_) => {
            detail.push(ValidationError::body_field(
                field::AFTER,
                "int_type",
                "Input should be a valid non-negative integer",
            ));
            None
        }
    };
    let epoch = match fields.remove(field::EPOCH) {
        None | Some(Value::Null) => None,
        Some(Value::String(epoch)) if is_epoch(&epoch) => Some(epoch),
        Some(_) => {
            detail.push(ValidationError::body_field(
                field::EPOCH,
                "string_type",
                "Input should be an epoch string as sent by the hub",
            ));
            None
        }
    };
    match execution_id {
        Some(execution_id) if detail.is_empty() => Ok(ClientMsg::Subscribe {
            id,
            execution_id,
            after,
            epoch,
        }),
        _ => Err(FrameError::invalid(id, detail)),
    }
}

/// A client string as echoed in an error: at most 64 characters, so an
/// answer never grows with what the client sent.
fn echo(text: &str) -> String {
    const MAX: usize = 64;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Longest string request id accepted (it is echoed in the answer).
pub const MAX_REQUEST_ID_BYTES: usize = 256;

/// Most events one batch may carry unless the hub says otherwise.
pub const MAX_BATCH_EVENTS: usize = 1000;

/// The optional `idempotency_key` of a publish frame.
fn idempotency_key(
    id: &Option<RequestId>,
    fields: &mut EventData,
) -> Result<Option<String>, FrameError> {
    match fields.remove(field::IDEMPOTENCY_KEY) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(key)) if is_idempotency_key(&key) => Ok(Some(key)),
        Some(_) => {
            let error = ValidationError::body_field(
                field::IDEMPOTENCY_KEY,
                "string_type",
                "Input should be 1 to 256 visible ASCII characters",
            );
            Err(FrameError::invalid(id.clone(), vec![error]))
        }
    }
}

fn decode_batch(
    id: Option<RequestId>,
    mut fields: EventData,
    max_events: usize,
) -> Result<ClientMsg, FrameError> {
    let execution_id = execution_id(&id, &mut fields);
    let idempotency_key = idempotency_key(&id, &mut fields)?;
    let batch = crate::publish::BatchRequest::from_value(fields.remove(field::EVENTS), max_events);
    match (execution_id, batch) {
        (Ok(execution_id), Ok(batch)) => Ok(ClientMsg::PublishBatch {
            id,
            execution_id,
            events: batch.events,
            idempotency_key,
        }),
        (Ok(_), Err(detail)) | (Err(detail), Ok(_)) => Err(FrameError::invalid(id, detail)),
        (Err(mut detail), Err(more)) => {
            detail.extend(more);
            Err(FrameError::invalid(id, detail))
        }
    }
}

fn decode_publish(id: Option<RequestId>, mut fields: EventData) -> Result<ClientMsg, FrameError> {
    let execution_id = execution_id(&id, &mut fields);
    let idempotency_key = idempotency_key(&id, &mut fields)?;
    match (execution_id, PublishRequest::from_fields(fields)) {
        (Ok(execution_id), Ok(event)) => Ok(ClientMsg::Publish {
            id,
            execution_id,
            event,
            idempotency_key,
        }),
        (Ok(_), Err(detail)) | (Err(detail), Ok(_)) => Err(FrameError::invalid(id, detail)),
        (Err(mut detail), Err(more)) => {
            detail.extend(more);
            Err(FrameError::invalid(id, detail))
        }
    }
}

/// Longest epoch string the hub accepts back (it mints 16 hex digits).
pub const MAX_EPOCH_BYTES: usize = 64;

/// Whether `epoch` can be an epoch the hub minted: 1–64 ASCII letters,
/// digits, `-` or `_`. Anything else cannot name a history and is refused.
pub fn is_epoch(epoch: &str) -> bool {
    !epoch.is_empty()
        && epoch.len() <= MAX_EPOCH_BYTES
        && epoch
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Takes and validates `execution_id`; in a frame its location is the body.
fn execution_id(
    _id: &Option<RequestId>,
    fields: &mut EventData,
) -> Result<String, Vec<ValidationError>> {
    let field =
        |kind: &str, msg: &str| vec![ValidationError::body_field(field::EXECUTION_ID, kind, msg)];
    match fields.remove(field::EXECUTION_ID) {
        Some(Value::String(s)) => match validate_execution_id(&s) {
            Ok(()) => Ok(s),
            Err(e) => Err(field(&e.kind, &e.msg)),
        },
        Some(_) => Err(field("string_type", "Input should be a valid string")),
        None => Err(field("missing", "Field required")),
    }
}

/// WebSocket close codes the hub uses, and what a client should do on each.
///
/// Ranges: 4000–4499 mean "reconnect and resume from your last seq";
/// 4500–4999 mean "do not reconnect without changing something".
pub mod close {
    /// The hub is shutting down: reconnect (possibly to another node) and resume.
    pub const GOING_AWAY: u16 = 1001;
    /// The client sent something the protocol forbids (e.g. an unmasked frame).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame was not valid UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// A frame exceeded the size limit.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The hub is at a limit (connections, subscriptions): try again later, with backoff.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// Unexpected server failure: reconnect with backoff.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// The client could not keep up with its events and its outbound queue
    /// filled: reconnect and resume from the last seq received.
    pub const SLOW_CONSUMER: u16 = 4001;
    /// The connection's token expired and no fresh one came with `auth`:
    /// reconnect with a new token.
    pub const TOKEN_EXPIRED: u16 = 4002;
    /// The connection stayed silent past the hub's ping timeout (a dead or
    /// suspended peer): reconnect and resume.
    pub const PING_TIMEOUT: u16 = 4003;

    /// Whether a client should reconnect (with backoff) after this close code.
    pub fn should_reconnect(code: u16) -> bool {
        matches!(code, 1001 | 1006 | 1011 | 1012 | 1013 | 1014) || (4000..4500).contains(&code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_op() {
        let sub = ClientMsg::decode(r#"{"op":"subscribe","id":1,"execution_id":"e","after":3}"#);
        assert_eq!(
            sub,
            Ok(ClientMsg::Subscribe {
                id: Some(RequestId::Num(1)),
                execution_id: "e".into(),
                after: Some(3),
                epoch: None,
            })
        );
        let publish = ClientMsg::decode(
            r#"{"op":"publish","id":"p","execution_id":"e","event_type":"t","data":{}}"#,
        );
        assert!(matches!(publish, Ok(ClientMsg::Publish { .. })));
        let batch = ClientMsg::decode(
            r#"{"op":"publish","id":"b","execution_id":"e","events":[{"event_type":"t","data":{}}]}"#,
        );
        assert!(
            matches!(batch, Ok(ClientMsg::PublishBatch { ref events, .. }) if events.len() == 1)
        );
        let too_long = ClientMsg::decode_limited(
            r#"{"op":"publish","execution_id":"e","events":[{"event_type":"t","data":{}},{"event_type":"t","data":{}}]}"#,
            1,
        );
        assert!(matches!(
            too_long,
            Err(FrameError {
                code: ErrorCode::InvalidRequest,
                ..
            })
        ));
        assert_eq!(
            ClientMsg::decode(r#"{"op":"ping"}"#),
            Ok(ClientMsg::Ping { id: None })
        );
    }

    #[test]
    fn round_trips_through_serde() {
        let msg = ClientMsg::Publish {
            id: Some(RequestId::Str("a".into())),
            execution_id: "e".into(),
            event: PublishRequest {
                event_type: "t".into(),
                data: EventData::new(),
                timestamp: None,
            },
            idempotency_key: Some("k".into()),
        };
        let text = serde_json::to_string(&msg).expect("serializes");
        assert_eq!(ClientMsg::decode(&text), Ok(msg));
    }

    #[test]
    fn bad_frames_keep_the_id_when_readable() {
        let err = ClientMsg::decode(r#"{"op":"fly","id":7}"#).expect_err("unknown");
        assert_eq!(
            (err.id, err.code),
            (Some(RequestId::Num(7)), ErrorCode::UnknownOp)
        );
        let long_id = format!(r#"{{"op":"ping","id":"{}"}}"#, "x".repeat(300));
        let err = ClientMsg::decode(&long_id).expect_err("id too long");
        assert_eq!((err.id, err.code), (None, ErrorCode::BadFrame));
        let err = ClientMsg::decode("nope").expect_err("not json");
        assert_eq!(err.code, ErrorCode::BadFrame);
        let err = ClientMsg::decode(r#"{"op":"publish","id":2,"data":[]}"#).expect_err("invalid");
        assert_eq!(err.code, ErrorCode::InvalidRequest);
        assert_eq!(err.detail.map(|d| d.len()), Some(3));
    }
}

//! Server frames, read from the browser's `JSON.parse` output: the one place
//! where the client decodes what the hub sends. Field names and frame kinds
//! come from `exechub_protocol::names`, shared with the hub's serde types.

use exechub_protocol::names::{field, kind};
use exechub_protocol::{ErrorCode, LostReason};
use js_sys::Array;
use wasm_bindgen::JsValue;

use crate::error::ClientError;
use crate::js::get;
use crate::types::{EventView, number_field, string_of};

/// A server frame this client acts on.
pub enum ServerFrame {
    /// `event`: an event of a subscribed execution.
    Event {
        /// The history the event belongs to.
        epoch: Option<String>,
        /// The event.
        event: EventView,
    },
    /// `subscribed`: delivery starts after `(epoch, after)`.
    Subscribed {
        /// The execution subscribed to.
        execution_id: String,
        /// Where delivery starts.
        after: u64,
        /// The history `after` belongs to (none for a fresh execution).
        epoch: Option<String>,
    },
    /// `history_lost`: the position `after` cannot be continued; delivery
    /// continues after `(epoch, resume_after)`.
    HistoryLost {
        /// The execution concerned.
        execution_id: String,
        /// The position that could not be continued.
        after: u64,
        /// Where delivery continues.
        resume_after: u64,
        /// Why.
        reason: LostReason,
        /// The history delivery continues in.
        epoch: Option<String>,
    },
    /// `ack`: a publish was stored.
    Ack {
        /// The publish's request id.
        id: u64,
        /// The seq it got.
        seq: u64,
    },
    /// `error`: a request failed.
    Error {
        /// The failed request's id, when numeric (this client's ids are).
        id: Option<u64>,
        /// The execution concerned, when known.
        execution_id: Option<String>,
        /// The failure, with the hub's code, message and detail.
        error: ClientError,
    },
}

impl ServerFrame {
    /// Reads a parsed frame; `None` for kinds this client ignores and for
    /// frames that are not what the hub sends.
    pub fn decode(frame: &JsValue) -> Option<Self> {
        let execution_id = || string_of(frame, field::EXECUTION_ID);
        let number = |key| number_field(frame, key);
        let epoch = || string_of(frame, field::EPOCH);
        Some(match string_of(frame, field::TYPE)?.as_str() {
            kind::EVENT => Self::Event {
                epoch: epoch(),
                event: EventView::from_wire(&get(frame, field::EVENT))?,
            },
            kind::SUBSCRIBED => Self::Subscribed {
                execution_id: execution_id()?,
                after: number(field::AFTER).unwrap_or(0),
                epoch: epoch(),
            },
            kind::HISTORY_LOST => Self::HistoryLost {
                execution_id: execution_id()?,
                after: number(field::AFTER)?,
                resume_after: number(field::RESUME_AFTER)?,
                reason: lost_reason(string_of(frame, field::REASON)),
                epoch: epoch(),
            },
            kind::ACK => Self::Ack {
                id: number(field::ID)?,
                seq: number(field::SEQ)?,
            },
            kind::ERROR => Self::Error {
                id: number(field::ID),
                execution_id: execution_id(),
                error: ClientError::Hub {
                    code: ErrorCode::from_wire(&string_of(frame, field::CODE)?)?,
                    message: string_of(frame, field::MESSAGE)?,
                    detail: Some(get(frame, field::DETAIL)).filter(Array::is_array),
                },
            },
            _ => return None,
        })
    }
}

/// A `history_lost` reason; one this version does not know reads as
/// `reset`, the most general ("the history was dropped").
fn lost_reason(wire: Option<String>) -> LostReason {
    [LostReason::Expired, LostReason::Trimmed]
        .into_iter()
        .find(|reason| wire.as_deref() == Some(reason.as_str()))
        .unwrap_or(LostReason::Reset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_reasons_read_as_the_hub_writes_them() {
        for reason in [LostReason::Expired, LostReason::Trimmed, LostReason::Reset] {
            assert_eq!(lost_reason(Some(reason.as_str().into())), reason);
        }
        assert_eq!(lost_reason(Some("newer".into())), LostReason::Reset);
        assert_eq!(lost_reason(None), LostReason::Reset);
    }
}

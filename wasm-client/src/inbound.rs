//! Server frames, read from the browser's `JSON.parse` output: the one place
//! where the client decodes what the hub sends. Field names and frame kinds
//! come from `exechub_protocol::names`, shared with the hub's serde types.

use exechub_protocol::ErrorCode;
use exechub_protocol::names::{field, kind};
use js_sys::Array;
use wasm_bindgen::JsValue;

use crate::error::ClientError;
use crate::js::get;
use crate::types::{EventView, number_field, string_of};

/// A server frame this client acts on.
pub enum ServerFrame {
    /// `event`: an event of a subscribed execution.
    Event(EventView),
    /// `subscribed`: delivery starts after `after`.
    Subscribed {
        /// The execution subscribed to.
        execution_id: String,
        /// Where delivery starts.
        after: u64,
    },
    /// `history_lost`: events `after + 1 ..= resume_after` are gone.
    HistoryLost {
        /// The execution concerned.
        execution_id: String,
        /// The position asked for.
        after: u64,
        /// Where delivery continues.
        resume_after: u64,
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
        Some(match string_of(frame, field::TYPE)?.as_str() {
            kind::EVENT => Self::Event(EventView::from_wire(&get(frame, field::EVENT))?),
            kind::SUBSCRIBED => Self::Subscribed {
                execution_id: execution_id()?,
                after: number(field::AFTER).unwrap_or(0),
            },
            kind::HISTORY_LOST => Self::HistoryLost {
                execution_id: execution_id()?,
                after: number(field::AFTER)?,
                resume_after: number(field::RESUME_AFTER)?,
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

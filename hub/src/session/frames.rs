//! The frames a session sends: its subscriptions' encoder and the answers
//! and refusals it writes.

use std::sync::Arc;

use exechub_protocol::{ErrorCode, RequestId, ServerMsg};
use tokio_tungstenite::tungstenite::Message;

use crate::auth::AuthError;
use crate::error::ws_store_error;
use crate::event::Epoch;
use crate::limits::RateLimited;
use crate::subscription::{Encoder, Item};

/// Encodes one WebSocket subscription's items.
pub struct WsEncoder {
    pub(super) id: Option<RequestId>,
    pub(super) execution_id: Arc<str>,
}

impl Encoder for WsEncoder {
    type Frame = Message;
    const FAILURE_ENDS_CONNECTION: bool = false;
    const END_ENDS_CONNECTION: bool = false;

    fn encode(&self, item: Item<'_>) -> Message {
        let execution_id = || self.execution_id.to_string();
        match item {
            Item::Event(event) => Message::Text(event.ws_frame()),
            Item::Subscribed { after, epoch } => text(&ServerMsg::Subscribed {
                id: self.id.clone(),
                execution_id: execution_id(),
                after,
                epoch: epoch.map(Epoch::to_string),
            }),
            Item::Lost {
                after,
                resume_after,
                reason,
                epoch,
            } => text(&ServerMsg::HistoryLost {
                execution_id: execution_id(),
                after,
                resume_after,
                reason,
                epoch: epoch.map(Epoch::to_string),
            }),
            Item::Ended { status, seq } => text(&ServerMsg::Ended {
                execution_id: execution_id(),
                status: status.to_owned(),
                seq,
            }),
            Item::Failed(error) => {
                let (code, message) = ws_store_error(error);
                text(&error_msg(None, code, message, Some(execution_id())))
            }
        }
    }
}

pub(super) fn text(msg: &ServerMsg) -> Message {
    // Server messages are plain data; encoding cannot fail.
    Message::Text(serde_json::to_string(msg).unwrap_or_default().into())
}

/// The `error` frame for a publish over the rate limit; the message says when to retry.
pub(super) fn rate_limited(
    id: Option<RequestId>,
    limited: &RateLimited,
    execution_id: String,
) -> ServerMsg {
    let message = format!(
        "publish rate limit reached; retry in {} ms",
        limited.retry_after.as_millis().max(1)
    );
    error_msg(id, ErrorCode::RateLimited, &message, Some(execution_id))
}

pub(super) fn store_error_msg(
    id: Option<RequestId>,
    error: &crate::store::StoreError,
    execution_id: String,
) -> ServerMsg {
    let (code, message) = ws_store_error(error);
    error_msg(id, code, message, Some(execution_id))
}

pub(super) fn error_msg(
    id: Option<RequestId>,
    code: ErrorCode,
    message: &str,
    execution_id: Option<String>,
) -> ServerMsg {
    ServerMsg::Error {
        id,
        code,
        message: message.to_owned(),
        execution_id,
        detail: None,
    }
}

/// The `error` frame for a refused token or operation.
pub(super) fn auth_error(
    id: Option<RequestId>,
    refusal: &AuthError,
    execution_id: String,
) -> ServerMsg {
    let code = if refusal.is_forbidden() {
        ErrorCode::Forbidden
    } else {
        ErrorCode::Unauthorized
    };
    error_msg(id, code, &refusal.to_string(), Some(execution_id))
}

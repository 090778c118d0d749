//! WebSocket helpers shared by the modes: the subscribe request and its answer.

use anyhow::{Result, bail};
use exechub_protocol::ServerMsg;
use futures_util::StreamExt;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// The `subscribe` frame for `execution` (request id 1, live events only).
pub fn subscribe_frame(execution: &str) -> Message {
    let request = json!({ "op": "subscribe", "id": 1, "execution_id": execution });
    Message::text(request.to_string())
}

/// Reads until the first text frame and checks that it is `subscribed`.
///
/// # Errors
/// The socket failed or closed first, the frame is not valid JSON, or the hub
/// answered something else (an `error`, typically).
pub async fn expect_subscribed<S>(socket: &mut WebSocketStream<S>) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(frame) = socket.next().await {
        if let Message::Text(text) = frame? {
            return match serde_json::from_str(text.as_str())? {
                ServerMsg::Subscribed { .. } => Ok(()),
                other => bail!("expected subscribed, got {other:?}"),
            };
        }
    }
    bail!("connection closed before subscribed")
}

//! WebSocket helpers shared by the modes: the handshake with a small read
//! buffer, the subscribe request and its answer.

use anyhow::{Context, Result, bail};
use exechub_protocol::ServerMsg;
use futures_util::StreamExt;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::target::Hub;

/// A client WebSocket over plain TCP.
pub type Socket = WebSocketStream<TcpStream>;

/// Upgrades a connected `stream` to a WebSocket on the hub's `/ws`.
///
/// # Errors
/// The hub refused the upgrade or the connection failed.
pub async fn handshake(hub: &Hub, stream: TcpStream) -> Result<Socket> {
    // tungstenite's 128 KiB default read buffer would cost the bench ~2.5 GB
    // at 20k connections; the frames here are a few hundred bytes.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (socket, _) =
        tokio_tungstenite::client_async_with_config(hub.ws_url(), stream, Some(config))
            .await
            .context("WebSocket handshake")?;
    Ok(socket)
}

/// The `subscribe` frame for `execution` (request id 1, live events only).
pub fn subscribe_frame(execution: &str) -> Message {
    let request = json!({ "op": "subscribe", "id": 1, "execution_id": execution });
    Message::text(request.to_string())
}

/// Reads until the first text frame, checks that it is `subscribed`, and
/// returns its `after`: delivery starts with the event after that seq.
///
/// # Errors
/// The socket failed or closed first, the frame is not valid JSON, or the hub
/// answered something else (an `error`, typically).
pub async fn expect_subscribed<S>(socket: &mut WebSocketStream<S>) -> Result<u64>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(frame) = socket.next().await {
        if let Message::Text(text) = frame? {
            return match serde_json::from_str(text.as_str())? {
                ServerMsg::Subscribed { after, .. } => Ok(after),
                other => bail!("expected subscribed, got {other:?}"),
            };
        }
    }
    bail!("connection closed before subscribed")
}

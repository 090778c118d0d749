//! A WebSocket test client speaking the hub's protocol.

use anyhow::{Context, Result, bail};
use exechub_protocol::{Event, ServerMsg};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::within;

/// What the next frame turned out to be.
#[derive(Debug)]
pub enum Received {
    Msg(ServerMsg),
    Closed(Option<CloseFrame>),
}

pub struct WsClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl WsClient {
    /// Connects with a prepared handshake request (extra headers), returning
    /// the handshake error itself so tests can read a refusal's status.
    pub async fn connect_request(
        request: tokio_tungstenite::tungstenite::handshake::client::Request,
    ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        let (socket, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(Self { socket, next_id: 0 })
    }

    pub async fn connect(url: &str) -> Result<Self> {
        let (socket, _) = within(
            "the WebSocket handshake",
            tokio_tungstenite::connect_async(url),
        )
        .await??;
        Ok(Self { socket, next_id: 0 })
    }

    pub async fn send_text(&mut self, text: &str) -> Result<()> {
        self.socket.send(Message::text(text)).await?;
        Ok(())
    }

    pub async fn send_binary(&mut self, bytes: &[u8]) -> Result<()> {
        self.socket.send(Message::binary(bytes.to_vec())).await?;
        Ok(())
    }

    /// Sends `request` with a fresh numeric `id`, returning that id.
    pub async fn request(&mut self, mut request: Value) -> Result<u64> {
        self.next_id += 1;
        request["id"] = json!(self.next_id);
        self.send_text(&request.to_string()).await?;
        Ok(self.next_id)
    }

    /// The next protocol message or close, skipping pings.
    pub async fn next(&mut self) -> Result<Received> {
        loop {
            let frame = within("a WebSocket frame", self.socket.next()).await?;
            match frame {
                None => return Ok(Received::Closed(None)),
                Some(Err(error)) => bail!("WebSocket error: {error}"),
                Some(Ok(Message::Text(text))) => {
                    let msg = serde_json::from_str(text.as_str())
                        .with_context(|| format!("decoding {text}"))?;
                    return Ok(Received::Msg(msg));
                }
                Some(Ok(Message::Close(frame))) => return Ok(Received::Closed(frame)),
                Some(Ok(_)) => {}
            }
        }
    }

    /// The next protocol message; a close is an error.
    pub async fn next_msg(&mut self) -> Result<ServerMsg> {
        match self.next().await? {
            Received::Msg(msg) => Ok(msg),
            Received::Closed(frame) => bail!("connection closed: {frame:?}"),
        }
    }

    /// Subscribes and waits for `subscribed`.
    pub async fn subscribe(&mut self, execution_id: &str, after: Option<u64>) -> Result<()> {
        let mut request = json!({ "op": "subscribe", "execution_id": execution_id });
        if let Some(after) = after {
            request["after"] = json!(after);
        }
        self.request(request).await?;
        match self.next_msg().await? {
            ServerMsg::Subscribed {
                execution_id: id, ..
            } if id == execution_id => Ok(()),
            other => bail!("expected subscribed, got {other:?}"),
        }
    }

    /// The next event; any other message is an error.
    pub async fn next_event(&mut self) -> Result<Event> {
        match self.next_msg().await? {
            ServerMsg::Event { event, .. } => Ok(event),
            other => bail!("expected an event, got {other:?}"),
        }
    }

    /// Reads events until one with `seq >= last` arrives, returning all seqs seen.
    pub async fn events_until(&mut self, last: u64) -> Result<Vec<u64>> {
        let mut seqs = Vec::new();
        loop {
            let event = self.next_event().await?;
            seqs.push(event.seq);
            if event.seq >= last {
                return Ok(seqs);
            }
        }
    }

    /// Publishes and waits for the ack, returning the seq.
    pub async fn publish(
        &mut self,
        execution_id: &str,
        event_type: &str,
        data: Value,
    ) -> Result<u64> {
        let request = json!({ "op": "publish", "execution_id": execution_id, "event_type": event_type, "data": data });
        let id = self.request(request).await?;
        self.ack(id).await
    }

    /// Reads the next message, which must be the `ack` of request `id`;
    /// returns its seq.
    pub async fn ack(&mut self, id: u64) -> Result<u64> {
        match self.next_msg().await? {
            ServerMsg::Ack {
                id: Some(exechub_protocol::RequestId::Num(n)),
                seq,
                ..
            } if n == id => Ok(seq),
            other => bail!("expected ack {id}, got {other:?}"),
        }
    }

    /// Sends `frames` publishes to `execution_id` without waiting for their
    /// acks — every tenth a batch of 3 events, the others single events,
    /// each event's `data` `{"n": k}` with k counting from 1 — then reads the
    /// acks, which must come in the order sent, with consecutive seqs.
    /// Returns the number of events published.
    pub async fn publish_pipelined(&mut self, execution_id: &str, frames: u64) -> Result<u64> {
        let mut sent = Vec::new();
        let mut k = 0;
        for frame in 0..frames {
            let request = if frame % 10 == 9 {
                let events: Vec<Value> = (k + 1..=k + 3)
                    .map(|n| json!({ "event_type": "log", "data": { "n": n } }))
                    .collect();
                k += 3;
                json!({ "op": "publish", "execution_id": execution_id, "events": events })
            } else {
                k += 1;
                json!({ "op": "publish", "execution_id": execution_id, "event_type": "log", "data": { "n": k } })
            };
            sent.push((self.request(request).await?, k));
        }
        for (id, last) in sent {
            let seq = self.ack(id).await?;
            if seq != last {
                bail!("ack {id} has seq {seq}, expected {last}");
            }
        }
        Ok(k)
    }

    /// Drops the connection without a close frame; with `reset`, the kernel
    /// sends RST instead of FIN, as when a client process is killed.
    pub fn abandon(self, reset: bool) -> Result<()> {
        if reset && let MaybeTlsStream::Plain(tcp) = self.socket.get_ref() {
            tcp.set_zero_linger()?;
        }
        Ok(())
    }

    /// Closes cleanly: sends a close frame and fails unless the hub echoes one.
    pub async fn close(mut self) -> Result<()> {
        self.socket.close(None).await?;
        // RFC 6455 §5.5.1: the hub answers a close frame with its own.
        within("the hub to echo the close frame", async {
            while let Some(message) = self.socket.next().await {
                if let Message::Close(_) = message? {
                    return Ok(());
                }
            }
            bail!("the socket ended without the hub's close frame")
        })
        .await?
    }
}

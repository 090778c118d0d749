//! One idle connection's life: open it from a given source address, subscribe
//! to its own execution, hold it without a word, and close it when told.
//!
//! WebSocket: `GET /ws`, a `subscribe` frame, the `subscribed` answer.
//! SSE: a hand-written `GET …/stream` request, read until the hub's
//! `: subscribed` comment. No HTTP client: the request is one `write`.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::ValueEnum;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::target::Hub;
use crate::ws::{Socket, expect_subscribed, handshake, subscribe_frame};

/// How long a clean close waits for the hub's close frame.
const CLOSE_ECHO_WAIT: Duration = Duration::from_secs(2);
/// Bytes of an SSE response read while looking for `: subscribed`.
const SSE_HEAD_LIMIT: usize = 16 * 1024;
/// What the hub sends once an SSE subscription is in place.
const SSE_SUBSCRIBED: &[u8] = b": subscribed\n";

/// The transport the idle connections use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// WebSocket (`GET /ws`).
    Ws,
    /// Server-Sent Events (`GET /api/v1/executions/{id}/stream`).
    Sse,
}

impl Transport {
    /// The flag value, for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ws => "ws",
            Self::Sse => "sse",
        }
    }
}

/// How the connections end after the idle period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CloseMode {
    /// WebSocket: send a close frame and wait briefly for the echo.
    /// SSE: shut down the write half (FIN), then close.
    Clean,
    /// Close the socket with no goodbye, as a killed client would.
    Drop,
}

impl CloseMode {
    /// The flag value, for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Clean => "clean",
            Self::Drop => "drop",
        }
    }
}

/// An open, subscribed connection.
pub enum Conn {
    /// A WebSocket (boxed: it is much larger than a bare stream).
    Ws(Box<WebSocketStream<TcpStream>>),
    /// An SSE response being streamed.
    Sse(TcpStream),
}

/// How a held connection ended.
#[derive(Debug)]
pub enum Outcome {
    /// Closed by us when told (for a clean WebSocket close: echo received).
    Closed,
    /// Clean WebSocket close sent, but no close frame came back in time.
    NoEcho,
    /// The connection failed or the hub closed it before we were told to close.
    Lost(String),
}

/// Opens a connection from `source` and subscribes it to `execution`.
///
/// # Errors
/// Connecting, the handshake or the subscription failed.
pub async fn open(
    hub: &Hub,
    transport: Transport,
    source: Ipv4Addr,
    execution: &str,
) -> Result<Conn> {
    let stream = hub.connect_from(source).await?;
    match transport {
        Transport::Ws => Ok(Conn::Ws(Box::new(open_ws(hub, stream, execution).await?))),
        Transport::Sse => Ok(Conn::Sse(open_sse(hub, stream, execution).await?)),
    }
}

async fn open_ws(hub: &Hub, stream: TcpStream, execution: &str) -> Result<Socket> {
    let mut socket = handshake(hub, stream).await?;
    socket.send(subscribe_frame(execution)).await?;
    expect_subscribed(&mut socket).await?;
    Ok(socket)
}

async fn open_sse(hub: &Hub, mut stream: TcpStream, execution: &str) -> Result<TcpStream> {
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        hub.sse_path(execution),
        hub.authority
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(512);
    while !contains(&head, SSE_SUBSCRIBED) {
        if head.len() > SSE_HEAD_LIMIT {
            bail!("no `: subscribed` in the first {SSE_HEAD_LIMIT} bytes");
        }
        if stream.read_buf(&mut head).await? == 0 {
            bail!("closed before `: subscribed`: {}", status_line(&head));
        }
        if !head.starts_with(b"HTTP/1.1 200") && head.contains(&b'\n') {
            bail!("stream refused: {}", status_line(&head));
        }
    }
    Ok(stream)
}

/// Holds `conn` open until `close` turns true, then closes it as `mode` says.
pub async fn hold(conn: Conn, mut close: watch::Receiver<bool>, mode: CloseMode) -> Outcome {
    match conn {
        Conn::Ws(mut socket) => {
            tokio::select! {
                () = told_to_close(&mut close) => close_ws(*socket, mode).await,
                lost = until_lost_ws(&mut socket) => Outcome::Lost(lost),
            }
        }
        Conn::Sse(mut stream) => {
            tokio::select! {
                () = told_to_close(&mut close) => close_sse(stream, mode).await,
                lost = until_lost_sse(&mut stream) => Outcome::Lost(lost),
            }
        }
    }
}

/// Returns once `close` is true (or its sender is gone).
async fn told_to_close(close: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is a read lock: drop it here, not across the close.
    let _ = close.wait_for(|&c| c).await;
}

/// Reads (answering pings) until the WebSocket ends; returns why it ended.
async fn until_lost_ws(socket: &mut WebSocketStream<TcpStream>) -> String {
    loop {
        match socket.next().await {
            Some(Ok(Message::Close(frame))) => {
                return format!("hub closed the WebSocket: {frame:?}");
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => return error.to_string(),
            None => return "WebSocket ended".into(),
        }
    }
}

/// Reads (keep-alive comments) until the SSE stream ends; returns why it ended.
async fn until_lost_sse(stream: &mut TcpStream) -> String {
    let mut scrap = [0u8; 256];
    loop {
        match stream.read(&mut scrap).await {
            Ok(0) => return "hub ended the SSE stream".into(),
            Ok(_) => {}
            Err(error) => return error.to_string(),
        }
    }
}

async fn close_ws(mut socket: WebSocketStream<TcpStream>, mode: CloseMode) -> Outcome {
    if mode == CloseMode::Drop {
        return Outcome::Closed;
    }
    if let Err(error) = socket.close(None).await {
        return Outcome::Lost(format!("sending close: {error}"));
    }
    let echo = async {
        while let Some(Ok(frame)) = socket.next().await {
            if frame.is_close() {
                return true;
            }
        }
        false
    };
    match tokio::time::timeout(CLOSE_ECHO_WAIT, echo).await {
        Ok(true) => Outcome::Closed,
        _ => Outcome::NoEcho,
    }
}

async fn close_sse(mut stream: TcpStream, mode: CloseMode) -> Outcome {
    if mode == CloseMode::Clean {
        // SSE has no close message: FIN is the polite goodbye.
        let _ = stream.shutdown().await;
    }
    Outcome::Closed
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The first line of an HTTP response, for error messages.
fn status_line(head: &[u8]) -> String {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    String::from_utf8_lossy(line).trim_end().to_string()
}

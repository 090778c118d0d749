//! The hub's own count of open connections and subscriptions, from `GET /health`
//! (one hand-written HTTP/1.1 request; no HTTP client needed).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::target::Hub;

/// How long one `/health` request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between polls while waiting for the counts to drain.
const POLL_EVERY: Duration = Duration::from_millis(100);

/// What `/health` says is open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// `connections.websocket`.
    pub websocket: u64,
    /// `connections.sse`.
    pub sse: u64,
    /// `subscribed_executions`.
    pub subscribed_executions: u64,
}

impl Counts {
    /// True when nothing is open or subscribed.
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} websocket, {} sse, {} subscribed executions",
            self.websocket, self.sse, self.subscribed_executions
        )
    }
}

/// The hub's counts now.
///
/// # Errors
/// The request failed or timed out, or the body lacks the counts.
pub async fn counts(hub: &Hub) -> Result<Counts> {
    let body = tokio::time::timeout(REQUEST_TIMEOUT, get(hub, &hub.health_path()))
        .await
        .context("GET /health timed out")??;
    let health: Value = serde_json::from_slice(&body).context("/health is not JSON")?;
    let count = |pointer: &str| {
        health
            .pointer(pointer)
            .and_then(Value::as_u64)
            .with_context(|| format!("/health has no {pointer}"))
    };
    Ok(Counts {
        websocket: count("/connections/websocket")?,
        sse: count("/connections/sse")?,
        subscribed_executions: count("/subscribed_executions")?,
    })
}

/// Polls until every count is 0 or `limit` has passed since `since`.
/// Returns when they reached 0 (measured from `since`), or `None`, and the last counts.
///
/// # Errors
/// A `/health` request failed.
pub async fn wait_for_zero(
    hub: &Hub,
    since: Instant,
    limit: Duration,
) -> Result<(Option<Duration>, Counts)> {
    loop {
        let now = counts(hub).await?;
        if now.is_zero() {
            return Ok((Some(since.elapsed()), now));
        }
        if since.elapsed() >= limit {
            return Ok((None, now));
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// `GET path` with `Connection: close`; returns the body of a 2xx answer.
async fn get(hub: &Hub, path: &str) -> Result<Vec<u8>> {
    let mut stream = TcpStream::connect(hub.addr).await?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        hub.authority
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 2") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or_default());
    }
    let body = &response[split + 4..];
    if head.contains("transfer-encoding: chunked") {
        return dechunk(body);
    }
    Ok(body.to_vec())
}

/// Joins the chunks of a `Transfer-Encoding: chunked` body.
fn dechunk(mut body: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("bad chunk")?;
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size_hex = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).context("bad chunk size")?;
        let data = body
            .get(line_end + 2..line_end + 2 + size)
            .context("short chunk")?;
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(data);
        body = body.get(line_end + 4 + size..).context("short chunk")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunk_joins_chunks() {
        let body = b"3\r\n{\"a\r\n5\r\n\":1}\n\r\n0\r\n\r\n";
        assert_eq!(dechunk(body).unwrap(), b"{\"a\":1}\n");
    }
}

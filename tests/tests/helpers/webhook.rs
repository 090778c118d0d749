//! A webhook receiver: a small axum server in the test process, on a free
//! loopback port, that records every request and answers as scripted.
//!
//! Also the receiver side of the signature scheme, written from docs/providers.md's
//! description, so the tests check what a real receiver would check.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::mpsc;

use super::within;

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    /// This status, with a `Retry-After` (seconds) when given.
    Status(u16, Option<u64>),
    /// Never answers (the hub's attempt times out).
    Hang,
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Result<serde_json::Value> {
        Ok(serde_json::from_slice(&self.body)?)
    }

    /// The event's seq, from the body.
    pub fn seq(&self) -> Result<u64> {
        self.json()?["seq"].as_u64().context("body has a seq")
    }
}

#[derive(Clone)]
struct Script {
    /// Answers for the first requests, in order; then `then` for every other.
    first: Arc<Mutex<VecDeque<Answer>>>,
    then: Answer,
    seen: mpsc::UnboundedSender<Request>,
}

/// A running receiver; stops with the test's runtime.
pub struct Receiver {
    pub addr: SocketAddr,
    requests: mpsc::UnboundedReceiver<Request>,
}

impl Receiver {
    /// Answers 200 to everything.
    pub async fn accepting() -> Result<Self> {
        Self::scripted(Vec::new(), Answer::Status(200, None)).await
    }

    /// Answers `first` to the first requests, in order, then `then` to every other.
    pub async fn scripted(first: Vec<Answer>, then: Answer) -> Result<Self> {
        let (seen, requests) = mpsc::unbounded_channel();
        let script = Script {
            first: Arc::new(Mutex::new(first.into())),
            then,
            seen,
        };
        let app = Router::new().fallback(receive).with_state(script);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { addr, requests })
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks/exechub", self.addr)
    }

    /// The next request, waiting at most [`super::WAIT`].
    pub async fn next(&mut self) -> Result<Request> {
        within("a webhook request", self.requests.recv())
            .await?
            .context("receiver stopped")
    }

    /// The next `n` requests.
    pub async fn take(&mut self, n: usize) -> Result<Vec<Request>> {
        let mut requests = Vec::with_capacity(n);
        for _ in 0..n {
            requests.push(self.next().await?);
        }
        Ok(requests)
    }

    /// A request that already arrived, if any (does not wait).
    pub fn try_next(&mut self) -> Option<Request> {
        self.requests.try_recv().ok()
    }
}

async fn receive(State(script): State<Script>, headers: HeaderMap, body: Bytes) -> Response {
    let _ = script.seen.send(Request {
        headers,
        body,
        at: Instant::now(),
    });
    let answer = script
        .first
        .lock()
        .ok()
        .and_then(|mut first| first.pop_front())
        .unwrap_or(script.then);
    match answer {
        Answer::Status(code, retry_after) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            match retry_after {
                Some(seconds) => (status, [("retry-after", seconds.to_string())]).into_response(),
                None => status.into_response(),
            }
        }
        Answer::Hang => std::future::pending().await,
    }
}

/// Verifies a request as docs/providers.md tells receivers to: the signature is
/// `v1=` + hex HMAC-SHA256(secret, "{timestamp}.{body}"), compared in
/// constant time, and the timestamp is at most five minutes away.
pub fn verify(secret: &str, request: &Request) -> Result<()> {
    let timestamp = request
        .header("x-exechub-timestamp")
        .context("no timestamp header")?;
    let signature = request
        .header("x-exechub-signature")
        .context("no signature header")?;
    let Some(hex) = signature.strip_prefix("v1=") else {
        bail!("signature is not v1: {signature}");
    };
    let sent: u64 = timestamp.parse().context("timestamp is Unix seconds")?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    ensure!(
        now.abs_diff(sent) <= 300,
        "timestamp {sent} is too far from {now}"
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())?;
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(&request.body);
    mac.verify_slice(&decode_hex(hex)?)
        .context("signature does not match")
}

fn decode_hex(hex: &str) -> Result<Vec<u8>> {
    ensure!(hex.len().is_multiple_of(2), "odd-length hex");
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            let pair = hex.get(i..i + 2).context("hex is ASCII")?;
            Ok(u8::from_str_radix(pair, 16)?)
        })
        .collect()
}

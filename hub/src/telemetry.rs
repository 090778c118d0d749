//! What operators see of a running hub besides its API: log output (text or
//! JSON lines), request ids, W3C trace context, and the settings for them
//! and for `/metrics`.
//!
//! - Every HTTP response carries `x-request-id`: the request's own when it
//!   sent a sensible one, otherwise a fresh one; the request's log span
//!   carries it as `request_id` ([`RequestLayer`], [`http_span`]).
//! - A publish's `traceparent` header (W3C Trace Context) is kept with the
//!   event's log lines and handed on to webhooks and NATS as a header
//!   ([`TraceParent`]).

mod request;

use std::io::IsTerminal;

use axum::http::{HeaderValue, Request};
use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

use crate::secret::Secret;

pub use request::RequestLayer;

/// The `x-request-id` header.
pub const REQUEST_ID: &str = "x-request-id";
/// Longest request id taken from a client (longer ones are replaced).
const MAX_REQUEST_ID: usize = 128;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colored on a terminal).
    Text,
    /// One JSON object per line: timestamp, level, target, message, span fields.
    Json,
}

/// Operations settings: logs and the metrics endpoint.
#[derive(Debug, Clone, Args)]
pub struct OperationsConfig {
    /// Log output: `text` (human-readable) or `json` (one object per line,
    /// with the span fields `request_id`, `execution_id`, `conn_id`).
    #[arg(long, env = "EXECHUB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Require `Authorization: Bearer <token>` on `/metrics` and
    /// `/metrics.json`. Without it they are open (a warning is logged when
    /// the hub listens beyond loopback).
    #[arg(long, env = "EXECHUB_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<Secret>,
}

/// Starts logging to stderr in `format`; `RUST_LOG` filters (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .flatten_event(true)
            .init(),
    }
}

/// The request id of a request served outside the router (a direct SSE
/// stream): the client's when it is usable ([`is_request_id`]), else a fresh one.
pub fn request_id_of(headers: &axum::http::HeaderMap) -> String {
    headers
        .get(REQUEST_ID)
        .filter(|v| is_request_id(v.as_bytes()))
        .and_then(|v| v.to_str().ok())
        .map_or_else(fresh_request_id, str::to_owned)
}

/// A new request id: 16 random hex digits (written out by hand: this runs
/// for most requests, and `format!` costs several times as much).
pub fn fresh_request_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let random = crate::clock::random_u64();
    (0..16)
        .rev()
        .map(|i| char::from(HEX[((random >> (i * 4)) & 0xf) as usize]))
        .collect()
}

/// Whether a client's request id may be kept: 1–128 visible ASCII characters.
pub fn is_request_id(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.len() <= MAX_REQUEST_ID && bytes.iter().all(u8::is_ascii_graphic)
}

/// The span of one HTTP request: method, path (never the query: it may
/// hold an `access_token`), request id, and the execution once the handler
/// has read it (`execution_id`, recorded when the path is read).
pub fn http_span<B>(request: &Request<B>) -> tracing::Span {
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let traceparent = TraceParent::from_headers(request.headers());
    let traceparent = traceparent.as_ref().map(TraceParent::as_str);
    tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id, traceparent, execution_id = tracing::field::Empty)
}

/// A new WebSocket connection's id for its log lines (`conn_id`), numbered
/// from 1 per process. A field on the connection's few lines rather than a
/// span around it: an entered span costs every idle connection ~0.9 KB.
pub fn next_conn_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A W3C `traceparent` (version 00): `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent(HeaderValue);

impl TraceParent {
    /// The header value, when it is a well-formed `traceparent` (the all-zero
    /// ids the specification forbids are refused).
    pub fn parse(value: &HeaderValue) -> Option<Self> {
        let text = value.to_str().ok()?;
        let parts: Vec<&str> = text.split('-').collect();
        let [version, trace, parent, flags] = parts[..] else {
            return None;
        };
        let hex = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let zero = |s: &str| s.bytes().all(|b| b == b'0');
        let valid = version == "00"
            && hex(trace, 32)
            && hex(parent, 16)
            && hex(flags, 2)
            && !zero(trace)
            && !zero(parent);
        valid.then(|| Self(value.clone()))
    }

    /// The header of an HTTP request, if it carries a valid one.
    pub fn from_headers(headers: &axum::http::HeaderMap) -> Option<Self> {
        headers.get("traceparent").and_then(Self::parse)
    }

    /// The header value, to send on.
    pub fn header(&self) -> HeaderValue {
        self.0.clone()
    }

    /// The header value as text.
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_are_checked() {
        let ok =
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(
            TraceParent::parse(&ok).map(|t| t.as_str().to_owned()),
            Some(ok.to_str().unwrap_or_default().to_owned())
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "garbage",
        ] {
            assert!(
                TraceParent::parse(&HeaderValue::from_static(bad)).is_none(),
                "{bad}"
            );
        }
    }

    #[test]
    fn fresh_request_ids_are_16_hex_digits() {
        let id = fresh_request_id();
        assert_eq!(id.len(), 16);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(fresh_request_id(), id);
    }

    #[test]
    fn request_ids_are_short_visible_ascii() {
        assert!(is_request_id(b"abc-123"));
        assert!(!is_request_id(b""));
        assert!(!is_request_id(b"a b"));
        assert!(!is_request_id(&[b'a'; 129]));
    }
}

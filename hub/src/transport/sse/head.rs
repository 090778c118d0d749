//! The head of a request that opens an SSE stream, recognised on a fresh
//! connection by peeking at its socket (`super::serve_direct` then serves
//! it without hyper; see `transport/listener.rs` for why).

use std::collections::HashMap;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use exechub_protocol::{Loc, ValidationError, validate_execution_id};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Bytes peeked to recognise a stream request (its whole head must fit).
const PEEK: usize = 8 * 1024;
/// Headers read from a stream request.
const MAX_HEADERS: usize = 48;

/// A stream request, parsed: what the SSE route's extractors would give.
pub(crate) struct Head {
    /// The percent-decoded `{execution_id}` path segment, validated.
    pub execution_id: Result<String, ValidationError>,
    /// Query parameters.
    pub query: HashMap<String, String>,
    /// Request headers.
    pub headers: HeaderMap,
}

/// Peeks at the first request; when it is a complete `GET …/stream` head,
/// consumes it and returns it parsed. `None` leaves the socket untouched.
pub(crate) async fn stream_request(socket: &mut TcpStream) -> Option<Head> {
    let mut peeked = vec![0_u8; PEEK];
    let n = socket.peek(&mut peeked).await.ok()?;
    let (length, head) = parse(&peeked[..n])?;
    drop(peeked);
    let mut consumed = vec![0_u8; length];
    socket.read_exact(&mut consumed).await.ok()?;
    Some(head)
}

/// `(head length, head)` when `bytes` start with a complete stream request.
fn parse(bytes: &[u8]) -> Option<(usize, Head)> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut slots);
    let httparse::Status::Complete(length) = request.parse(bytes).ok()? else {
        return None;
    };
    if request.method? != "GET" {
        return None;
    }
    let (path, query) = request.path?.split_once('?').unwrap_or((request.path?, ""));
    let segment = path
        .strip_prefix("/api/v1/executions/")?
        .strip_suffix("/stream")?;
    // One non-empty segment, as the route matches; anything else is the router's.
    if segment.is_empty() || segment.contains('/') {
        return None;
    }
    let query = serde_urlencoded::from_str(query).ok()?;
    let mut headers = HeaderMap::with_capacity(request.headers.len());
    for header in request.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).ok()?;
        headers.append(name, HeaderValue::from_bytes(header.value).ok()?);
    }
    let head = Head {
        execution_id: decode_segment(segment),
        query,
        headers,
    };
    Some((length, head))
}

/// The path segment percent-decoded and validated, as the router's `Path`
/// extractor and `execution_id` check do.
fn decode_segment(segment: &str) -> Result<String, ValidationError> {
    let decoded = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| {
            ValidationError::new(
                vec![Loc::from("path"), Loc::from("execution_id")],
                "string_type",
                "Input should be a valid string: not UTF-8 once percent-decoded",
            )
        })?
        .into_owned();
    validate_execution_id(&decoded)?;
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_only_complete_stream_requests() {
        let full = b"GET /api/v1/executions/exec%2042/stream?after=3 HTTP/1.1\r\nHost: h\r\nLast-Event-ID: ab-3\r\n\r\n";
        let (length, head) = parse(full).expect("a stream request");
        assert_eq!(length, full.len());
        assert_eq!(head.execution_id.expect("valid"), "exec 42");
        assert_eq!(head.query.get("after").map(String::as_str), Some("3"));
        assert_eq!(head.headers["last-event-id"], "ab-3");
        assert!(parse(b"GET /api/v1/executions/e/stream HTTP/1.1\r\nHost: h\r\n").is_none());
        assert!(parse(b"GET /api/v1/executions/e/events HTTP/1.1\r\n\r\n").is_none());
        assert!(parse(b"POST /api/v1/executions/e/stream HTTP/1.1\r\n\r\n").is_none());
        assert!(parse(b"GET /api/v1/executions//stream HTTP/1.1\r\n\r\n").is_none());
        assert!(parse(b"GET /api/v1/executions/a/b/stream HTTP/1.1\r\n\r\n").is_none());
    }
}

//! The accept loop: every connection is served by hyper with the axum router,
//! except a connection whose first request opens a Server-Sent Events stream,
//! which is served directly (`sse::serve_direct`).
//!
//! Why the exception: a streaming response held by hyper keeps the HTTP
//! connection's read and write buffers (about 24 KiB) for as long as the
//! stream lives, which would make an idle SSE subscriber several times more
//! expensive than a WebSocket. The first request is recognised by peeking at
//! the socket (nothing is consumed unless it is a complete stream request);
//! anything else — including a stream request later on a kept-alive
//! connection, which the router's SSE route serves — goes to hyper unchanged.

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use exechub_protocol::{Loc, ValidationError, validate_execution_id};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::AppState;
use crate::limits::ClientKey;
use tower::ServiceExt;

/// Bytes peeked to recognise a stream request (its whole head must fit).
const PEEK: usize = 8 * 1024;
/// Headers read from a stream request.
const MAX_HEADERS: usize = 48;
/// Pause after an accept error (e.g. out of file descriptors) before retrying.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A stream request, parsed: what the SSE route's extractors would give.
pub(crate) struct Head {
    /// The percent-decoded `{execution_id}` path segment, validated.
    pub execution_id: Result<String, ValidationError>,
    /// Query parameters.
    pub query: HashMap<String, String>,
    /// Request headers.
    pub headers: HeaderMap,
}

/// Accepts until `shutdown`, serving each connection in a task tracked by `connections`.
pub async fn serve(
    listener: TcpListener,
    app: AppState,
    router: Router,
    shutdown: CancellationToken,
    connections: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((socket, _)) => {
                let task = connection(app.clone(), router.clone(), socket, shutdown.clone());
                connections.spawn(task);
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

async fn connection(
    app: AppState,
    router: Router,
    mut socket: TcpStream,
    shutdown: CancellationToken,
) {
    // Small frames (events, pings) go out at once.
    let _ = socket.set_nodelay(true);
    let head = tokio::select! {
        () = shutdown.cancelled() => return,
        head = stream_request(&mut socket) => head,
    };
    match head {
        Some(head) => super::sse::serve_direct(app, socket, head).await,
        // Boxed: an idle stream's task should not reserve room for hyper's state.
        None => Box::pin(serve_http(router, socket, shutdown)).await,
    }
}

/// Serves HTTP/1.1 (and WebSocket upgrades) on `socket` with the router.
async fn serve_http(router: Router, socket: TcpStream, shutdown: CancellationToken) {
    // Requests on one connection count as one client when auth is off.
    let client = ClientKey::connection();
    let router = router.map_request(move |mut request: axum::http::Request<_>| {
        request.extensions_mut().insert(client);
        request
    });
    let service = TowerToHyperService::new(router);
    let http = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(socket), service)
        .with_upgrades();
    tokio::pin!(http);
    tokio::select! {
        _ = http.as_mut() => {}
        () = shutdown.cancelled() => {
            http.as_mut().graceful_shutdown();
            let _ = http.await;
        }
    }
}

/// Peeks at the first request; when it is a complete `GET …/stream` head,
/// consumes it and returns it parsed. `None` leaves the socket untouched.
async fn stream_request(socket: &mut TcpStream) -> Option<Head> {
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

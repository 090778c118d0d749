//! `GET /ws`: checks origin, token and the connection limit, performs the
//! WebSocket handshake (RFC 6455 §4.2) and hands the socket, as a
//! tokio-tungstenite stream, to a [`Session`](crate::session) running in a
//! task of its own.
//!
//! The handshake is done here rather than through a framework wrapper so that
//! a connection is exactly one task holding one tokio-tungstenite stream,
//! configured for small idle connections (see [`READ_BUFFER`]).

use axum::body::Body;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::AppState;
use crate::auth::bearer;
use crate::error::ApiError;
use crate::limits::ClientKey;
use crate::outbox::Outbox;
use crate::outbox::SharedSocket;
use crate::session;

/// Room for the publish envelope (`op`, `id`, `execution_id`) around an event body.
const FRAME_OVERHEAD: usize = 64 * 1024;
/// Initial read buffer of a socket. Client frames are mostly small requests;
/// a larger frame grows the buffer while it is read. (tungstenite's default,
/// 128 KiB, touched on the first read, would dominate an idle connection.)
pub const READ_BUFFER: usize = 512;

/// Refuses before upgrading when the request is no WebSocket handshake (400),
/// the page's origin (403) or the token (401) is not acceptable, or the hub
/// is at its connection limit (503 with `Retry-After`); otherwise answers 101
/// and starts the session, tracked so shutdown can wait for its close.
#[utoipa::path(get, path = "/ws", tag = "executions",
    description = "The multiplexed WebSocket: subscribe, publish and more over one socket (docs/protocol.md).",
    params(("access_token" = Option<String>, Query, description = "The token, for browsers (they cannot set headers on a WebSocket)")),
    security((), ("BearerAuth" = [])),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket handshake", content_type = "text/plain", body = String),
        (status = 401, description = "No token, or an invalid one (when the hub requires tokens)", body = exechub_protocol::ErrorBody),
        (status = 403, description = "The token does not allow this execution", body = exechub_protocol::ErrorBody),
        (status = 503, description = "At the connection limit", body = exechub_protocol::ErrorBody,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
    ))]
pub async fn upgrade(
    State(app): State<AppState>,
    RawQuery(query): RawQuery,
    mut request: Request,
) -> Response {
    let headers = request.headers();
    let Some(accept) = handshake_accept(request.method(), headers) else {
        let body = "expected a WebSocket handshake (Upgrade: websocket, version 13)";
        return (StatusCode::BAD_REQUEST, body).into_response();
    };
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    if !app.origins.allows(origin) {
        return ApiError::OriginNotAllowed.into_response();
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = bearer(authorization, query.as_deref());
    let grant = match app.auth.authenticate(token) {
        Ok(grant) => grant,
        Err(refusal) => return ApiError::Auth(refusal).into_response(),
    };
    // Limits count per token when auth is on, per connection otherwise.
    let client = match (app.auth.enabled(), token) {
        (true, Some(token)) => ClientKey::token(token),
        _ => ClientKey::connection(),
    };
    let Some(counted) = app.stats.websocket() else {
        return ApiError::Busy("connection").into_response();
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    let sessions = app.sessions.clone();
    let conn_id = crate::telemetry::next_conn_id();
    tracing::debug!(conn_id, "WebSocket connection accepted");
    let caller = session::Caller {
        grant,
        client,
        conn_id,
    };
    tokio::spawn(sessions.track_future(connection(app, caller, counted, on_upgrade)));
    switching_protocols(accept)
}

/// One connection's task, from the end of the handshake to the end of the
/// socket. The session's state is boxed once the socket exists, so the task
/// does not also reserve room for the handshake's.
async fn connection(
    app: AppState,
    caller: session::Caller,
    counted: crate::ConnectionGuard,
    on_upgrade: hyper::upgrade::OnUpgrade,
) {
    let Ok(upgraded) = on_upgrade.await else {
        return;
    };
    // The TCP socket itself, so that frames can be written to it from any
    // task (`outbox::direct`); the listener serves every connection over it.
    let Ok(parts) = upgraded.downcast::<TokioIo<TcpStream>>() else {
        tracing::error!(
            conn_id = caller.conn_id,
            "upgraded connection is not a TCP socket"
        );
        return;
    };
    let tcp = Arc::new(parts.io.into_inner());
    let outbox = Arc::new(Outbox::on_socket(app.config.outbox_limits(), tcp));
    // What hyper read past the handshake is a view into its read buffer:
    // copied (it is rarely anything), so that buffer is freed now.
    let read_ahead = bytes::Bytes::copy_from_slice(&parts.read_buf);
    drop(parts.read_buf);
    let io = SharedSocket::new(Arc::clone(&outbox), read_ahead);
    let config = socket_config(app.config.max_event_bytes.max(app.config.max_batch_bytes));
    let mut socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    // The session borrows the socket: it lives here once, not twice.
    session::run(app, caller, &mut socket, outbox).await;
    drop(counted);
}

/// The socket settings: frames up to the event (or batch) limit plus envelope, a small
/// read buffer, and no write buffer (the layer writes only its own control
/// frames; the outbox writes everything else, see `outbox::direct`).
fn socket_config(max_event_bytes: usize) -> WebSocketConfig {
    let max_frame = max_event_bytes.saturating_add(FRAME_OVERHEAD);
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(max_frame))
        .max_frame_size(Some(max_frame))
}

/// `Sec-WebSocket-Accept` for a valid handshake request, `None` otherwise.
fn handshake_accept(method: &Method, headers: &HeaderMap) -> Option<String> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    let valid = method == Method::GET
        && has_token(header::CONNECTION, "upgrade")
        && has_token(header::UPGRADE, "websocket")
        && headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13");
    let key = headers.get(header::SEC_WEBSOCKET_KEY)?;
    valid.then(|| derive_accept_key(key.as_bytes()))
}

fn switching_protocols(accept: String) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an idle connection's task holds besides the boxed session.
    #[tokio::test]
    async fn a_connection_task_is_small() {
        use clap::Parser;
        let cli = crate::config::Cli::try_parse_from(["exechub"]).expect("flags");
        let app = AppState::new(cli.config).await.expect("state");
        let counted = app.stats.websocket().expect("under the limit");
        let mut request = Request::new(Body::empty());
        let on_upgrade = hyper::upgrade::on(&mut request);
        let caller = session::Caller {
            grant: crate::auth::Grant::unrestricted(),
            client: ClientKey::connection(),
            conn_id: 1,
        };
        let task = connection(app, caller, counted, on_upgrade);
        let size = std::mem::size_of_val(&task);
        // 1.5 KiB, 16 bytes for the close log line's `conn_id` (kept twice: the
        // caller it came in and the session run it is passed to), and 64 for
        // the outbox that writes the socket itself (kept across the handshake
        // and the session). The socket no longer sits behind hyper's boxed
        // `Upgraded`, so the connection as a whole is no larger (see the
        // idle-memory figures in bench/RESULTS.md).
        assert!(size <= 1616, "a connection's task is {size} bytes");
    }

    #[test]
    fn accepts_only_a_websocket_handshake_and_derives_the_rfc_key() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        headers.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        // The example of RFC 6455 §1.3.
        assert_eq!(
            handshake_accept(&Method::GET, &headers).as_deref(),
            Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
        assert_eq!(handshake_accept(&Method::POST, &headers), None);
        headers.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert_eq!(handshake_accept(&Method::GET, &headers), None);
    }
}

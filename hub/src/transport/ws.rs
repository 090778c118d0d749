//! `GET /ws`: checks origin and token, upgrades, and hands the socket to a
//! [`Session`](crate::session).

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use crate::AppState;
use crate::auth::bearer;
use crate::error::ApiError;
use crate::session;

/// Room for the publish envelope (`op`, `id`, `execution_id`) around an event body.
const FRAME_OVERHEAD: usize = 64 * 1024;
/// Initial read buffer of a socket. Client frames are mostly small requests;
/// a larger frame grows the buffer while it is read. (tungstenite's default,
/// 128 KiB, touched on the first read, would dominate an idle connection.)
const READ_BUFFER: usize = 1024;

/// Refuses before upgrading when the page's origin (403) or the token (401) is
/// not acceptable, or the hub is at its connection limit (503 with
/// `Retry-After`); the session is tracked so shutdown can wait for its close.
pub async fn upgrade(
    State(app): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    upgrade: WebSocketUpgrade,
) -> Response {
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    if !app.origins.allows(origin) {
        return ApiError::OriginNotAllowed.into_response();
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let grant = match app
        .auth
        .authenticate(bearer(authorization, query.as_deref()))
    {
        Ok(grant) => grant,
        Err(refusal) => return ApiError::Auth(refusal).into_response(),
    };
    let Some(counted) = app.stats.websocket() else {
        return ApiError::Busy("connection").into_response();
    };
    let max_frame = app.config.max_event_bytes.saturating_add(FRAME_OVERHEAD);
    let sessions = app.sessions.clone();
    upgrade
        .max_message_size(max_frame)
        .max_frame_size(max_frame)
        .read_buffer_size(READ_BUFFER)
        // Frames go out as soon as they are queued (a flush per batch of
        // queued frames), so no write buffer is kept per connection.
        .write_buffer_size(0)
        .on_upgrade(move |socket| {
            let (sink, stream) = socket.split();
            sessions.track_future(async move {
                session::run(app, grant, sink, stream).await;
                drop(counted);
            })
        })
}

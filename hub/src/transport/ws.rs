//! `GET /ws`: upgrades to a WebSocket and hands it to a [`Session`](crate::session).

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::response::Response;
use futures_util::StreamExt;

use crate::AppState;
use crate::session;

/// Room for the publish envelope (`op`, `id`, `execution_id`) around an event body.
const FRAME_OVERHEAD: usize = 64 * 1024;

/// Accepts the upgrade; the session is tracked so shutdown can wait for its close.
pub async fn upgrade(State(app): State<AppState>, upgrade: WebSocketUpgrade) -> Response {
    let max_frame = app.config.max_event_bytes.saturating_add(FRAME_OVERHEAD);
    let sessions = app.sessions.clone();
    upgrade
        .max_message_size(max_frame)
        .max_frame_size(max_frame)
        .on_upgrade(move |socket| {
            let (sink, stream) = socket.split();
            sessions.track_future(session::run(app, sink, stream))
        })
}

//! Transports: adapters that parse a request, hand it to the store or the
//! broker, and encode the answer. No delivery logic lives here.
//!
//! - [`http`]: publish, history and health (the API of the replaced service).
//! - [`sse`]: `GET …/stream`, one execution's events as Server-Sent Events.
//! - [`ws`]: `GET /ws`, the multiplexed WebSocket (see [`crate::session`]).

pub mod http;
pub mod sse;
pub mod ws;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get, post};
use tower_http::services::ServeDir;
use tower_http::trace::TraceLayer;

use crate::AppState;

/// All routes of the hub.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_event_bytes;
    let static_dir = state.config.static_dir.clone();
    let api = Router::new()
        .route("/health", get(http::health))
        .route(
            "/api/v1/executions/{execution_id}/events",
            post(http::publish).get(http::history),
        )
        // `{execution_id}` never matches an empty segment; answer it with a 422, not a 404.
        .route("/api/v1/executions//events", any(http::empty_execution_id))
        .route("/api/v1/executions//stream", any(http::empty_execution_id))
        .route("/api/v1/executions/{execution_id}/stream", get(sse::stream))
        .route("/ws", get(ws::upgrade))
        .layer(DefaultBodyLimit::max(body_limit));
    let api = match static_dir {
        Some(dir) => {
            api.fallback_service(ServeDir::new(dir).append_index_html_on_directories(true))
        }
        None => api,
    };
    api.layer(TraceLayer::new_for_http()).with_state(state)
}

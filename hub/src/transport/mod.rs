//! Transports: adapters that parse a request, hand it to the store or the
//! broker, and encode the answer. No delivery logic lives here.
//!
//! - [`http`]: publish, history and health (the API of the replaced service).
//! - [`sse`]: `GET …/stream`, one execution's events as Server-Sent Events.
//! - [`ws`]: `GET /ws`, the multiplexed WebSocket (see [`crate::session`]).
//! - [`listener`]: the accept loop that hands connections to these.
//! - [`openapi`]: `GET /openapi.json`; [`status`]: `GET /status`, the operator page.

pub mod body;
pub mod executions;
pub mod frame;
pub mod http;
pub mod listener;
pub mod openapi;
pub mod sse;
pub mod status;
pub mod ws;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::routing::{any, get, post};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::services::ServeDir;

use crate::AppState;

/// All routes of the hub.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_event_bytes;
    let batch_limit = state.config.max_batch_bytes;
    let static_dir = state.config.static_dir();
    let api = Router::new()
        .route("/health", get(http::health))
        .route(
            "/api/v1/executions/{execution_id}/events",
            post(http::publish).get(http::history),
        )
        .route(
            "/api/v1/executions/{execution_id}/events/batch",
            post(http::publish_batch).layer(DefaultBodyLimit::max(batch_limit)),
        )
        // `{execution_id}` never matches an empty segment; answer it with a 422, not a 404.
        .route("/api/v1/executions//events", any(http::empty_execution_id))
        .route("/api/v1/executions//stream", any(http::empty_execution_id))
        .route("/api/v1/executions/{execution_id}/stream", get(sse::stream))
        .route("/api/v1/executions", get(executions::list))
        .route(
            "/api/v1/executions/{execution_id}",
            get(executions::summary),
        )
        .route(
            "/api/v1/executions/{execution_id}/result",
            get(executions::result),
        )
        .route("/ws", get(ws::upgrade))
        .layer(DefaultBodyLimit::max(body_limit));
    // CORS only for the origins the operator lists; never for the
    // development token, which no other site may read.
    let api = match cors(&state.config.cors_origins) {
        Some(cors) => api.layer(cors),
        None => api,
    };
    let api = api
        .route("/dev/token", get(http::dev_token))
        .route("/metrics", get(crate::metrics::scrape::metrics))
        .route("/metrics.json", get(crate::metrics::scrape::metrics_json))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/status", get(status::page));
    let api = match static_dir {
        Some(dir) => {
            api.fallback_service(ServeDir::new(dir).append_index_html_on_directories(true))
        }
        None => api,
    };
    // Spans carry the path only (a query may hold an `access_token`) and the request id.
    api.layer(crate::telemetry::RequestLayer).with_state(state)
}

/// Browser pages on the listed origins (`--cors-origin`; `*` for any) may
/// call the API; without a list, only same-origin pages can.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else if origins.is_empty() {
        return None;
    } else {
        let values = origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok());
        AllowOrigin::list(values)
    };
    let layer = CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([
            HeaderName::from_static("idempotent-replayed"),
            header::RETRY_AFTER,
        ]);
    Some(layer)
}

/// Whether a page of `origin` may read answers (`--cors-origin`), for
/// responses written outside the router (direct SSE streams).
pub(crate) fn cors_allows(origins: &[String], origin: &str) -> bool {
    origins
        .iter()
        .any(|allowed| allowed == "*" || allowed.trim_end_matches('/') == origin)
}

//! `GET /status`: the operator page (`status.html` of the static directory,
//! built with the demo by `scripts/build-web.sh`). It reads `/metrics.json`
//! every second and draws the hub's connections, subscriptions, rates,
//! health and busiest executions.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::ServeFile;

use crate::AppState;

/// `GET /status`: the operator page, when the hub serves static files.
#[utoipa::path(get, path = "/status", tag = "operations",
    responses(
        (status = 200, description = "The operator page", content_type = "text/html", body = String),
        (status = 404, description = "No static directory is served (see --static-dir)", content_type = "text/plain", body = String),
    ))]
pub async fn page(State(app): State<AppState>, request: Request) -> Response {
    let Some(dir) = app.config.static_dir() else {
        return (StatusCode::NOT_FOUND, "no static directory is served").into_response();
    };
    match ServeFile::new(dir.join("status.html"))
        .oneshot(request)
        .await
    {
        Ok(response) => response.map(Body::new),
        Err(never) => match never {},
    }
}

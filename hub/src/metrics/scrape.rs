//! `GET /metrics` (Prometheus text) and `GET /metrics.json` (the same
//! registry summed per metric, plus health and the busiest executions, for
//! the operator page). Gauges that mirror the hub's own counters are set
//! here, at scrape time, so keeping them costs nothing in between.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use exechub_protocol::{ErrorBody, ErrorCode};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::bearer;

/// The content type of the Prometheus text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Busiest executions listed by `/metrics.json`.
const TOP: usize = 10;

/// `GET /metrics`: every metric in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    security((), ("BearerAuth" = [])),
    responses(
        (status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String),
        (status = 401, description = "`--metrics-token` is set and the request does not carry it", body = exechub_protocol::ErrorBody),
    ))]
pub async fn metrics(State(app): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(refusal) = refuse(&app, &headers) {
        return refusal;
    }
    refresh(&app).await;
    let content_type = [(header::CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT))];
    (content_type, super::render()).into_response()
}

/// The operator page's reading of the hub.
#[derive(Debug, Serialize, ToSchema)]
pub struct Snapshot {
    /// Every metric of `/metrics`, summed over its labels (histograms: their `_sum` and `_count`).
    pub totals: BTreeMap<String, f64>,
    /// Per-label series of the metrics the page breaks down (`name{labels}` → value).
    pub series: BTreeMap<String, f64>,
    /// The store and providers, as `/health` reports them.
    #[schema(value_type = Object)]
    pub health: serde_json::Value,
    /// The busiest executions by publish rate (events/s over the last window), busiest first.
    #[schema(value_type = Vec<Object>)]
    pub top_executions: Vec<super::top::Busy>,
}

/// `GET /metrics.json`: the registry summed per metric, health, and the busiest executions.
#[utoipa::path(get, path = "/metrics.json", tag = "operations",
    security((), ("BearerAuth" = [])),
    responses(
        (status = 200, description = "Metrics summary", body = Snapshot),
        (status = 401, description = "`--metrics-token` is set and the request does not carry it", body = exechub_protocol::ErrorBody),
    ))]
pub async fn metrics_json(State(app): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(refusal) = refuse(&app, &headers) {
        return refusal;
    }
    let health = refresh(&app).await;
    let (totals, series) = summarize(&super::render());
    let mut top = super::handles().top.snapshot();
    top.truncate(TOP);
    let snapshot = Snapshot {
        totals,
        series,
        health,
        top_executions: top,
    };
    Json(snapshot).into_response()
}

/// A 401 when `--metrics-token` is set and not presented.
fn refuse(app: &AppState, headers: &HeaderMap) -> Option<Response> {
    let expected = app.config.operations.metrics_token.as_ref()?;
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let presented = bearer(presented, None).unwrap_or_default();
    if constant_time_eq(presented.as_bytes(), expected.expose()) {
        return None;
    }
    let challenge = [(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(r#"Bearer realm="exechub-metrics""#),
    )];
    let body = Json(ErrorBody::new(
        ErrorCode::Unauthorized,
        "metrics need the --metrics-token bearer token",
    ));
    Some((StatusCode::UNAUTHORIZED, challenge, body).into_response())
}

/// Equal bytes, compared without an early exit on the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Sets the gauges read from the hub's counters; returns the health part of the JSON.
async fn refresh(app: &AppState) -> serde_json::Value {
    let handles = super::handles();
    metrics::counter!("exechub_deliveries_total", "transport" => "websocket")
        .absolute(handles.deliveries_ws.sum());
    metrics::counter!("exechub_deliveries_total", "transport" => "sse")
        .absolute(handles.deliveries_sse.sum());
    let (websockets, sse) = app.stats.open();
    metrics::gauge!("exechub_connections", "transport" => "websocket").set(websockets as f64);
    metrics::gauge!("exechub_connections", "transport" => "sse").set(sse as f64);
    metrics::counter!("exechub_connections_refused_total").absolute(app.stats.refused() as u64);
    metrics::gauge!("exechub_subscriptions").set(app.feeds.subscriptions() as f64);
    metrics::gauge!("exechub_subscribed_executions").set(app.feeds.active() as f64);
    metrics::counter!("exechub_publishes_refused_rate_limited_total")
        .absolute(app.publish_limit.refused());
    let store = app.store.health().await;
    metrics::gauge!("exechub_store_up", "backend" => store.backend)
        .set(f64::from(u8::from(store.ok)));
    let providers = app.publisher.providers().health();
    for provider in &providers {
        let labels = [
            ("provider", provider.name.clone()),
            ("kind", provider.kind.to_owned()),
        ];
        let counters = provider.counters;
        metrics::counter!("exechub_provider_delivered_total", &labels).absolute(counters.delivered);
        metrics::counter!("exechub_provider_retries_total", &labels).absolute(counters.retried);
        metrics::counter!("exechub_provider_dropped_total", &labels).absolute(counters.dropped);
        metrics::counter!("exechub_provider_failed_total", &labels).absolute(counters.failed);
        metrics::gauge!("exechub_provider_queue_depth", &labels).set(provider.queue_depth as f64);
        metrics::gauge!("exechub_provider_up", &labels).set(f64::from(u8::from(provider.ok)));
    }
    json!({ "store": store, "providers": providers })
}

/// Metrics the operator page breaks down by label.
const SERIES: &[&str] = &[
    "exechub_connections",
    "exechub_publishes_total",
    "exechub_deliveries_total",
];

/// Sums the text exposition per metric name (histogram buckets skipped),
/// and keeps the labelled series of `SERIES`.
pub fn summarize(text: &str) -> (BTreeMap<String, f64>, BTreeMap<String, f64>) {
    let mut totals = BTreeMap::new();
    let mut series = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let name = key.split('{').next().unwrap_or(key);
        if name.ends_with("_bucket") || key.contains("quantile=") {
            continue;
        }
        *totals.entry(name.to_owned()).or_insert(0.0) += value;
        if SERIES.contains(&name) {
            series.insert(key.to_owned(), value);
        }
    }
    (totals, series)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_add_up_labels_and_skip_buckets() {
        let text = "# HELP x\nexechub_deliveries_total{transport=\"websocket\"} 3\n\
            exechub_deliveries_total{transport=\"sse\"} 4\n\
            exechub_store_operation_duration_seconds_bucket{le=\"0.1\"} 9\n\
            exechub_store_operation_duration_seconds_count 9\n";
        let (totals, series) = summarize(text);
        assert_eq!(totals["exechub_deliveries_total"], 7.0);
        assert_eq!(
            totals["exechub_store_operation_duration_seconds_count"],
            9.0
        );
        assert!(!totals.contains_key("exechub_store_operation_duration_seconds_bucket"));
        assert_eq!(series["exechub_deliveries_total{transport=\"sse\"}"], 4.0);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}

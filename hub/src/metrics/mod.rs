//! Prometheus metrics: the recorder, the handles the hot paths increment,
//! and the scrape (`GET /metrics`, `GET /metrics.json`).
//!
//! Recording goes through the `metrics` facade into
//! `metrics-exporter-prometheus`'s recorder, installed once per process.
//! Hot paths (each delivery, each publish) never look a metric up by name:
//! they increment handles registered once ([`handles`]), which are atomics.
//! What the hub already counts elsewhere — open connections, subscriptions,
//! provider counters, store health — is read at scrape time ([`scrape`]),
//! so it costs nothing until someone asks.
//!
//! Names follow Prometheus conventions: the `exechub_` prefix, `_total` for
//! counters, `_seconds` for durations; see docs/operations.md.

pub mod scrape;
pub mod sharded;
pub mod store;
pub mod top;

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

/// Buckets of the latency histograms, in seconds (50 µs to 10 s).
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];

/// How often histogram samples are folded into their buckets when nobody
/// scrapes (the recorder keeps raw samples until then).
const UPKEEP: Duration = Duration::from_secs(5);

/// The transports a publish or a delivery can come through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// HTTP `POST …/events` and `…/events/batch`.
    Http,
    /// A WebSocket `publish`, or a WebSocket subscriber.
    WebSocket,
    /// A Server-Sent Events stream.
    Sse,
}

impl Transport {
    /// The `transport` label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::WebSocket => "websocket",
            Self::Sse => "sse",
        }
    }
}

/// How a publish ended, the `result` label of `exechub_publishes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishResult {
    /// Stored.
    Accepted,
    /// An `Idempotency-Key` seen before: answered with the original seq.
    IdempotentReplay,
    /// Refused as invalid (422, WebSocket `invalid_*`).
    Invalid,
    /// Over the size limit (413, WebSocket 1009).
    TooLarge,
    /// The store could not take it (503, WebSocket `unavailable`).
    Unavailable,
    /// No or a wrong token, or not allowed (401, 403).
    Forbidden,
    /// Over the client's publish rate (429, WebSocket `rate_limited`).
    RateLimited,
    /// The execution had ended (409).
    Ended,
    /// Anything else (a store failure that is not retryable).
    Failed,
}

impl PublishResult {
    const ALL: [Self; 9] = [
        Self::Accepted,
        Self::IdempotentReplay,
        Self::Invalid,
        Self::TooLarge,
        Self::Unavailable,
        Self::Forbidden,
        Self::RateLimited,
        Self::Ended,
        Self::Failed,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::IdempotentReplay => "idempotent_replay",
            Self::Invalid => "invalid",
            Self::TooLarge => "too_large",
            Self::Unavailable => "unavailable",
            Self::Forbidden => "forbidden",
            Self::RateLimited => "rate_limited",
            Self::Ended => "ended",
            Self::Failed => "failed",
        }
    }

    /// The result an HTTP publish answered with `status`.
    pub fn of_status(status: u16, replayed: bool) -> Self {
        match status {
            200..=299 if replayed => Self::IdempotentReplay,
            200..=299 => Self::Accepted,
            401 | 403 => Self::Forbidden,
            409 => Self::Ended,
            413 => Self::TooLarge,
            400 | 415 | 422 => Self::Invalid,
            429 => Self::RateLimited,
            503 => Self::Unavailable,
            _ => Self::Failed,
        }
    }
}

/// Handles of the metrics recorded on hot paths, registered once.
pub struct Handles {
    /// `[transport][result]`, transports HTTP and WebSocket.
    publishes: [[Counter; PublishResult::ALL.len()]; 2],
    /// Events stored by accepted publishes (a batch counts each event).
    pub events_published: Counter,
    /// Events queued for WebSocket subscribers (published at scrape time).
    pub deliveries_ws: sharded::ShardedCounter,
    /// Events queued for SSE subscribers (published at scrape time).
    pub deliveries_sse: sharded::ShardedCounter,
    /// Accepted (hub-internal) → the frame handed to the socket, sampled.
    pub publish_to_send: Histogram,
    /// WebSockets admitted.
    pub opened_ws: Counter,
    /// SSE streams admitted.
    pub opened_sse: Counter,
    /// The busiest executions by publish rate.
    pub top: top::TopExecutions,
}

impl Handles {
    fn register() -> Self {
        let publishes = [Transport::Http, Transport::WebSocket].map(|transport| {
            PublishResult::ALL.map(|result| {
                metrics::counter!("exechub_publishes_total",
                    "transport" => transport.label(), "result" => result.label())
            })
        });
        Self {
            publishes,
            events_published: metrics::counter!("exechub_events_published_total"),
            deliveries_ws: sharded::ShardedCounter::default(),
            deliveries_sse: sharded::ShardedCounter::default(),
            publish_to_send: metrics::histogram!("exechub_publish_to_send_seconds"),
            opened_ws: metrics::counter!("exechub_connections_opened_total", "transport" => "websocket"),
            opened_sse: metrics::counter!("exechub_connections_opened_total", "transport" => "sse"),
            top: top::TopExecutions::default(),
        }
    }

    /// Counts a publish request through `transport` (HTTP or WebSocket).
    pub fn publish(&self, transport: Transport, result: PublishResult) {
        let row = usize::from(transport != Transport::Http);
        let column = PublishResult::ALL
            .iter()
            .position(|r| *r == result)
            .unwrap_or_default();
        self.publishes[row][column].increment(1);
    }

    /// Counts `events` stored by an accepted publish to `execution_id`.
    pub fn published(&self, execution_id: &str, events: u64) {
        self.events_published.increment(events);
        self.top.record(execution_id, events);
    }
}

/// The process's recorder: installed on first use, then shared.
fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics stays empty");
        }
        describe();
        handle
    })
}

/// The hot-path handles (installing the recorder first if needed).
pub fn handles() -> &'static Handles {
    static HANDLES: OnceLock<Handles> = OnceLock::new();
    HANDLES.get_or_init(|| {
        recorder();
        Handles::register()
    })
}

/// Installs the recorder and keeps unscraped histogram samples folded, until
/// `shutdown`; warns when `/metrics` is open beyond loopback.
pub fn start(config: &crate::Config, shutdown: &CancellationToken) {
    handles();
    metrics::counter!("exechub_redis_pubsub_reconnects_total").increment(0);
    if config.operations.metrics_token.is_none() && !config.listen.ip().is_loopback() {
        tracing::warn!("/metrics is open to anyone who reaches this port (set --metrics-token)");
    }
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => recorder().run_upkeep(),
            }
        }
    });
}

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    recorder().render()
}

/// Counts a connection that ended, by transport and why.
pub fn closed(transport: Transport, reason: &'static str) {
    metrics::counter!("exechub_connections_closed_total",
        "transport" => transport.label(), "reason" => reason)
    .increment(1);
    if reason == "slow_consumer" {
        metrics::counter!("exechub_slow_consumer_closes_total", "transport" => transport.label())
            .increment(1);
    }
}

/// Counts a `history_lost` told to a subscriber.
pub fn history_lost(transport: Transport, reason: exechub_protocol::LostReason) {
    let reason = serde_json::to_value(reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    metrics::counter!("exechub_history_lost_total",
        "transport" => transport.label(), "reason" => reason)
    .increment(1);
}

/// The `reason` label of a WebSocket close code.
pub fn close_reason(code: u16) -> &'static str {
    use exechub_protocol::close;
    match code {
        close::GOING_AWAY => "shutdown",
        close::PROTOCOL_ERROR => "protocol_error",
        close::INVALID_DATA => "invalid_data",
        close::MESSAGE_TOO_BIG => "message_too_big",
        close::TRY_AGAIN_LATER => "try_again_later",
        close::INTERNAL_ERROR => "internal_error",
        close::SLOW_CONSUMER => "slow_consumer",
        close::TOKEN_EXPIRED => "token_expired",
        close::PING_TIMEOUT => "ping_timeout",
        _ => "other",
    }
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("exechub_connections", "Open connections by transport");
    describe_counter!("exechub_connections_opened_total", "Connections admitted");
    describe_counter!(
        "exechub_connections_closed_total",
        "Connections ended, by transport and reason"
    );
    describe_counter!(
        "exechub_connections_refused_total",
        "Connections refused at --max-connections"
    );
    describe_gauge!("exechub_subscriptions", "Subscriptions held by this node");
    describe_gauge!(
        "exechub_subscribed_executions",
        "Executions with at least one local subscriber"
    );
    describe_counter!(
        "exechub_publishes_total",
        "Publish requests by transport and result"
    );
    describe_counter!(
        "exechub_events_published_total",
        "Events stored by accepted publishes"
    );
    describe_counter!("exechub_deliveries_total", "Events queued for subscribers");
    describe_counter!(
        "exechub_slow_consumer_closes_total",
        "Connections closed because they did not read in time"
    );
    describe_counter!(
        "exechub_history_lost_total",
        "history_lost told to subscribers, by reason"
    );
    describe_histogram!(
        "exechub_store_operation_duration_seconds",
        Unit::Seconds,
        "Store operations by backend and operation"
    );
    describe_counter!(
        "exechub_store_errors_total",
        "Failed store operations by backend and operation"
    );
    describe_histogram!(
        "exechub_publish_to_send_seconds",
        Unit::Seconds,
        "From an event's acceptance to its frame handed to a subscriber's socket (sampled)"
    );
    describe_counter!(
        "exechub_redis_pubsub_reconnects_total",
        "Redis pub/sub connections lost and re-established"
    );
}

/// Counts an HTTP publish by its answer
/// (`exechub_publishes_total{transport="http",result}`).
pub fn count_http_publish(response: &axum::response::Response) {
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    let result = PublishResult::of_status(response.status().as_u16(), replayed);
    handles().publish(Transport::Http, result);
}

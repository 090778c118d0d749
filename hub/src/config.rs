//! Command-line and environment configuration: the only place that reads the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::providers::{ProvidersConfig, nats, webhook};

/// exechub: a real-time event hub for executions.
///
/// Every flag can also be set through the environment variable named in its help.
#[derive(Debug, Clone, Parser)]
#[command(name = "exechub", version, about, long_about = None)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port (the bound address is logged).
    #[arg(long, env = "EXECHUB_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Seconds an execution's history is kept after its last event.
    #[arg(long, env = "EXECHUB_EVENT_TTL", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub event_ttl: u64,

    /// Largest accepted event body (HTTP) or publish frame (WebSocket), in bytes.
    #[arg(long, env = "EXECHUB_MAX_EVENT_BYTES", default_value_t = 1024 * 1024)]
    pub max_event_bytes: usize,

    /// Events retained per execution; the oldest are trimmed beyond this.
    #[arg(long, env = "EXECHUB_MAX_EVENTS_PER_EXECUTION", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_events_per_execution: u64,

    /// Frames queued per connection (WebSocket or SSE) before it counts as slow.
    #[arg(long, env = "EXECHUB_CLIENT_QUEUE", default_value_t = 1024)]
    pub client_queue: usize,

    /// Live events buffered per execution for subscribers that are momentarily busy.
    #[arg(long, env = "EXECHUB_SUBSCRIBER_BUFFER", default_value_t = 4096)]
    pub subscriber_buffer: usize,

    /// Milliseconds a live event may wait for room in a full client queue
    /// before that client is disconnected as a slow consumer.
    #[arg(long, env = "EXECHUB_SLOW_CLIENT_TIMEOUT_MS", default_value_t = 2000)]
    pub slow_client_timeout_ms: u64,

    /// Subscriptions allowed on one WebSocket connection.
    #[arg(long, env = "EXECHUB_MAX_SUBSCRIPTIONS", default_value_t = 1000)]
    pub max_subscriptions: usize,

    /// Seconds between SSE keep-alive comments.
    #[arg(long, env = "EXECHUB_SSE_KEEPALIVE", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    pub sse_keepalive: u64,

    /// Seconds to wait for open connections to close on shutdown.
    #[arg(long, env = "EXECHUB_SHUTDOWN_TIMEOUT", default_value_t = 10)]
    pub shutdown_timeout: u64,

    /// Redis URL (e.g. `redis://127.0.0.1:6379`): store events in Redis and fan
    /// out across hub nodes. Without it the hub uses its embedded store.
    /// `REDIS_URL` is also accepted.
    #[arg(long, env = "EXECHUB_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Seconds an idempotency key is remembered (a retry within it returns the original seq).
    #[arg(long, env = "EXECHUB_IDEMPOTENCY_WINDOW", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub idempotency_window: u64,

    /// Directory of static files served at `/` (the web demo).
    #[arg(long, env = "EXECHUB_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,

    /// Webhook URL that every accepted event is POSTed to; repeat the flag for
    /// several (the environment variable takes a comma-separated list).
    #[arg(long = "webhook", env = "EXECHUB_WEBHOOK", value_delimiter = ',', value_parser = webhook::parse_url)]
    pub webhooks: Vec<reqwest::Url>,

    /// Secret that signs webhook requests (`X-Exechub-Signature`); without it they are unsigned.
    #[arg(long, env = "EXECHUB_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<webhook::Secret>,

    /// Milliseconds one webhook attempt may take (connect, send, answer).
    #[arg(long, env = "EXECHUB_WEBHOOK_TIMEOUT_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_timeout_ms: u64,

    /// Attempts per event and webhook URL before the event is skipped for that URL.
    #[arg(long, env = "EXECHUB_WEBHOOK_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub webhook_max_attempts: u32,

    /// NATS server URL (e.g. `nats://127.0.0.1:4222`): publish every accepted event to NATS.
    #[arg(long, env = "EXECHUB_NATS_URL")]
    pub nats_url: Option<String>,

    /// First subject token(s) for NATS: events go to `<prefix>.<execution_id>.events`.
    #[arg(long, env = "EXECHUB_NATS_SUBJECT_PREFIX", default_value = "executions", value_parser = nats::parse_subject_prefix)]
    pub nats_subject_prefix: String,

    /// Publish to NATS through JetStream, waiting for each acknowledgement
    /// (a stream must capture the subjects).
    #[arg(long, env = "EXECHUB_NATS_JETSTREAM", value_parser = clap::builder::BoolishValueParser::new())]
    pub nats_jetstream: bool,

    /// Events each provider (every webhook URL, NATS) may queue; when full, the oldest are dropped.
    #[arg(long, env = "EXECHUB_PROVIDER_QUEUE", default_value_t = 10_000)]
    pub provider_queue: usize,

    /// Bytes of events each provider may queue; when full, the oldest are dropped.
    #[arg(long, env = "EXECHUB_PROVIDER_QUEUE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub provider_queue_bytes: usize,
}

impl Config {
    /// History time-to-live.
    pub fn event_ttl(&self) -> Duration {
        Duration::from_secs(self.event_ttl)
    }

    /// Slow-consumer timeout.
    pub fn slow_client_timeout(&self) -> Duration {
        Duration::from_millis(self.slow_client_timeout_ms)
    }

    /// Shutdown grace period.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout)
    }

    /// Parses flags and environment, including the conventional `REDIS_URL`.
    pub fn from_env() -> Self {
        let mut config = Self::parse();
        if config.redis_url.is_none() {
            config.redis_url = std::env::var("REDIS_URL")
                .ok()
                .filter(|url| !url.is_empty());
        }
        config
    }

    /// Settings for the store.
    pub fn store(&self) -> crate::store::StoreConfig {
        crate::store::StoreConfig {
            ttl: self.event_ttl(),
            max_events: self.max_events_per_execution,
            idempotency_window: Duration::from_secs(self.idempotency_window),
        }
    }

    /// Which providers to run, and their settings.
    pub fn providers(&self) -> ProvidersConfig {
        ProvidersConfig {
            outbox: crate::providers::OutboxLimits {
                events: self.provider_queue,
                bytes: self.provider_queue_bytes,
            },
            webhook: webhook::WebhookConfig {
                urls: self.webhooks.clone(),
                secret: self.webhook_secret.clone(),
                timeout: Duration::from_millis(self.webhook_timeout_ms),
                max_attempts: self.webhook_max_attempts,
            },
            nats: self.nats_url.clone().map(|url| nats::NatsConfig {
                url,
                subject_prefix: self.nats_subject_prefix.clone(),
                jetstream: self.nats_jetstream,
            }),
        }
    }
}

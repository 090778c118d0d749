//! Providers: outbound integrations fed with every accepted event, after the store has it.
//!
//! The store (embedded or Redis) is the source of truth and the WebSocket/SSE
//! transports are fed by the broker; providers are the optional extras a
//! deployment turns on by configuration: HTTP webhooks ([`webhook`]) and NATS
//! ([`nats`]). Each is a [`worker::Worker`]: a bounded [`queue::ProviderQueue`],
//! one task and [`Counters`], shared by every provider, around the provider's
//! own [`worker::Destination`] (how one event is sent). [`Provider::offer`]
//! only queues (never blocks, never fails), so a slow or dead endpoint cannot
//! delay a publish, grow memory without bound, or affect another provider.
//! Each reports its health and counters in `/health`.
//!
//! Events reach a provider in the order they are offered, which
//! [`crate::publish`] makes seq order per execution.

pub mod nats;
pub mod queue;
pub mod webhook;
pub mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::event::Epoch;
use crate::telemetry::TraceParent;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use queue::QueueLimits;

/// One accepted event, as every provider receives it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The execution the event belongs to.
    pub execution_id: Arc<str>,
    /// The history the seq belongs to.
    pub epoch: Epoch,
    /// The event's seq in that history.
    pub seq: u64,
    /// The event exactly as stored (`exechub_protocol::Event` JSON).
    pub json: Bytes,
    /// The publish's W3C `traceparent`, sent on as a header (behind a thin
    /// pointer: most events have none, and queued deliveries stay small).
    pub traceparent: Option<Arc<TraceParent>>,
}

impl Delivery {
    /// The event at `(epoch, seq)` of `execution_id`, encoded as `json`.
    pub fn new(execution_id: Arc<str>, epoch: Epoch, seq: u64, json: Bytes) -> Self {
        Self {
            execution_id,
            epoch,
            seq,
            json,
            traceparent: None,
        }
    }

    /// Carries the publish's W3C `traceparent` (a header on webhooks and NATS messages).
    pub fn with_traceparent(mut self, traceparent: Option<Arc<TraceParent>>) -> Self {
        self.traceparent = traceparent;
        self
    }

    /// `<execution_id>:<epoch>:<seq>`: unique per event — also across
    /// histories, as seqs restart at 1 in a new epoch — and the same on every
    /// retry, so a receiver can drop deliveries it has already processed.
    pub fn idempotency_id(&self) -> String {
        format!("{}:{}:{}", self.execution_id, self.epoch, self.seq)
    }
}

/// An outbound integration fed with accepted events.
pub trait Provider: Send + Sync {
    /// Queues an accepted event for delivery. Never blocks and never fails:
    /// a full queue evicts its oldest event instead (counted as dropped).
    fn offer(&self, delivery: &Delivery);

    /// Current health and counters, for `/health`.
    fn health(&self) -> ProviderHealth;
}

/// Delivery counters of one provider; updated by its worker, read by `/health`.
#[derive(Debug, Default)]
pub struct Counters {
    delivered: AtomicU64,
    retried: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

/// A reading of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CounterSnapshot {
    /// Events the destination accepted.
    pub delivered: u64,
    /// Attempts repeated after a retryable failure.
    pub retried: u64,
    /// Events evicted unsent because the provider's queue was full.
    pub dropped: u64,
    /// Events given up on: refused (e.g. a 4xx) or out of attempts.
    pub failed: u64,
}

impl Counters {
    /// Counts an event the destination accepted.
    pub fn add_delivered(&self) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a repeated attempt.
    pub fn add_retried(&self) {
        self.retried.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `n` events evicted from a full queue.
    pub fn add_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts an event given up on.
    pub fn add_failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    /// The current values.
    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            delivered: self.delivered.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

/// One provider's entry in `/health`'s `providers` array.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderHealth {
    /// Which destination, without anything secret: a webhook's
    /// [`webhook::display_url`], NATS's [`nats::display_servers`].
    pub name: String,
    /// `webhook` or `nats`.
    pub kind: &'static str,
    /// Whether the latest attempt (or connection) succeeded.
    pub ok: bool,
    /// The counters.
    #[serde(flatten)]
    pub counters: CounterSnapshot,
    /// Events waiting in the provider's queue.
    pub queue_depth: usize,
}

/// Why the providers could not be started (bad configuration only: an
/// unreachable destination is retried in the background, not an error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The HTTP client for webhooks could not be built (TLS set-up).
    #[error("cannot build the webhook HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// The NATS options were refused (e.g. a malformed URL).
    #[error("invalid NATS configuration: {0}")]
    Nats(#[source] async_nats::ConnectError),
}

/// Which providers to run, and their settings.
#[derive(Debug, Clone)]
pub struct ProvidersConfig {
    /// Limits of every provider's queue.
    pub queue: QueueLimits,
    /// Webhook endpoints and their shared settings.
    pub webhook: webhook::WebhookConfig,
    /// The NATS server, if any.
    pub nats: Option<nats::NatsConfig>,
}

/// The running providers.
#[derive(Default)]
pub struct Providers {
    all: Vec<Arc<dyn Provider>>,
}

impl Providers {
    /// Starts every configured provider; workers stop when `shutdown` is cancelled.
    ///
    /// # Errors
    /// [`ProviderError`] when a provider's configuration is unusable.
    pub async fn start(
        config: ProvidersConfig,
        shutdown: &CancellationToken,
    ) -> Result<Self, ProviderError> {
        let mut all: Vec<Arc<dyn Provider>> = Vec::new();
        for endpoint in webhook::start(&config.webhook, config.queue, shutdown)? {
            all.push(endpoint);
        }
        if let Some(nats) = &config.nats {
            all.push(nats::start(nats, config.queue, shutdown).await?);
        }
        Ok(Self { all })
    }

    /// Whether no provider is configured (publishing then skips them entirely).
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Hands an accepted event to every provider; never blocks.
    pub fn offer(&self, delivery: &Delivery) {
        for provider in &self.all {
            provider.offer(delivery);
        }
    }

    /// Every provider's health, in configuration order.
    pub fn health(&self) -> Vec<ProviderHealth> {
        self.all.iter().map(|p| p.health()).collect()
    }
}

/// `scheme://host[:port]` of `url`: the most of a destination that logs and
/// the unauthenticated `/health` may show, since user info, paths and query
/// strings often carry tokens.
pub fn origin(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_hides_credentials_path_and_query() {
        let url = reqwest::Url::parse("https://user:pw@hooks.example.com:8443/in?token=s3cret")
            .expect("valid URL");
        assert_eq!(origin(&url), "https://hooks.example.com:8443");
        let v6 = reqwest::Url::parse("http://[::1]/x").expect("valid URL");
        assert_eq!(origin(&v6), "http://[::1]");
    }

    #[test]
    fn idempotency_id_is_execution_epoch_and_seq() {
        let epoch = Epoch::parse("ep9").expect("epoch");
        let delivery = Delivery::new(Arc::from("exec:7"), epoch, 12, Bytes::new());
        assert_eq!(delivery.idempotency_id(), "exec:7:ep9:12");
    }
}

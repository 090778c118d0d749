//! Event storage behind one trait: append (assigning seq), read ranges, and
//! subscribe to live appends.
//!
//! The store is the source of truth: a publish is acknowledged once the store
//! has it. [`memory::MemoryStore`] is the embedded default; other backends
//! (Redis) implement the same trait and share the conformance tests.

pub mod memory;
pub mod redis;

use async_trait::async_trait;

use crate::broker::LiveFeed;
use crate::event::{NewEvent, SharedEvent};

use std::time::Duration;

/// Failures of a store operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend cannot be reached right now; the operation may be retried.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    /// The backend answered with data the hub cannot read; not retryable.
    #[error("event store returned corrupt data: {0}")]
    Corrupt(String),
    /// The backend refused the operation (bad configuration, wrong key type…); not retryable.
    #[error("event store refused the operation: {0}")]
    Rejected(String),
}

impl StoreError {
    /// Whether retrying the same operation later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// What an append returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The seq of the event (the original one for an idempotent retry).
    pub seq: u64,
    /// The event's timestamp (the original one for an idempotent retry).
    pub timestamp: String,
    /// `true` when an earlier publish with the same idempotency key was found
    /// and nothing new was stored.
    pub duplicate: bool,
}

/// A slice of an execution's stored history.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Events with `seq > after`, in seq order.
    pub events: Vec<SharedEvent>,
    /// Highest seq assigned so far (0 when there is no history).
    pub last_seq: u64,
    /// Lowest seq still retained, if any.
    pub oldest_seq: Option<u64>,
}

/// Settings every backend honours.
#[derive(Debug, Clone, Copy)]
pub struct StoreConfig {
    /// A history expires this long after its last event.
    pub ttl: Duration,
    /// At most this many events are retained per execution; older ones are trimmed.
    pub max_events: u64,
    /// How long an idempotency key is remembered.
    pub idempotency_window: Duration,
}

/// Whether a store can serve requests, for `/health`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoreHealth {
    /// Backend name, e.g. `memory`.
    pub backend: &'static str,
    /// `true` when operations are expected to succeed.
    pub ok: bool,
    /// Why it is not ok, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Where events live. Implementations must assign seq 1, 2, 3… per execution
/// atomically, with no gaps, and announce every append on the live feed in
/// seq order.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends an event, or finds the earlier append with the same idempotency
    /// key, and says which seq it has. Returns only once the write is durable
    /// as far as the backend goes.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the backend cannot take the write; the
    /// event may then be retried (with its idempotency key, if it had one).
    async fn append(&self, event: NewEvent) -> Result<Receipt, StoreError>;

    /// Returns up to `limit` stored events of `execution_id` with `seq > after`.
    ///
    /// # Errors
    /// [`StoreError`] when the backend cannot be read.
    async fn range(&self, execution_id: &str, after: u64, limit: usize)
    -> Result<Page, StoreError>;

    /// Starts receiving the events appended to `execution_id` from now on.
    ///
    /// # Errors
    /// [`StoreError`] when the live feed cannot be set up.
    async fn subscribe(&self, execution_id: &str) -> Result<LiveFeed, StoreError>;

    /// Current health, for `/health`.
    async fn health(&self) -> StoreHealth;
}

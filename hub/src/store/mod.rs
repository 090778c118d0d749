//! Event storage behind one trait: append (assigning seq), read ranges, and
//! subscribe to live appends.
//!
//! The store is the source of truth: a publish is acknowledged once the store
//! has it. [`memory::MemoryStore`] is the embedded default; other backends
//! (Redis) implement the same trait and share the conformance tests.

pub mod memory;

use async_trait::async_trait;

use crate::broker::LiveFeed;
use crate::event::{NewEvent, SharedEvent};

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
}

impl StoreError {
    /// Whether retrying the same operation later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
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
    /// Appends an event and returns it numbered.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the backend cannot take the write; the
    /// event was then not stored.
    async fn append(&self, event: NewEvent) -> Result<SharedEvent, StoreError>;

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

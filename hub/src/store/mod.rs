//! Event storage behind one trait: append (assigning the position), read
//! ranges, and keep live appends flowing to this node.
//!
//! The store is the source of truth: a publish is acknowledged once the store
//! has it. Every store announces what it appends to the node's live feeds
//! through [`LiveSink`](crate::feeds::LiveSink), which it is given when built;
//! it knows nothing of subscriptions. [`memory::MemoryStore`] is the embedded
//! default; [`redis::RedisStore`] shares one history between hub nodes. Both
//! pass the same conformance tests (`hub/tests/store_conformance.rs`).

pub mod memory;
pub mod redis;

use async_trait::async_trait;
use exechub_protocol::{ExecutionSummary, LostReason};
use tokio::sync::oneshot;

use crate::event::{Epoch, NewBatch, NewEvent, SharedEvent};
use crate::lifecycle::AfterEnd;

use std::time::Duration;

/// Failures of a store operation.
#[derive(Debug, Clone, thiserror::Error)]
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
    /// The execution has ended (its terminal event is stored): it takes no more events.
    #[error("execution has ended ({status}); it accepts no more events")]
    Ended {
        /// How it ended.
        status: String,
    },
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
    /// The history the event belongs to.
    pub epoch: Epoch,
    /// The seq of the event (the original one for an idempotent retry).
    pub seq: u64,
    /// The event's timestamp (the original one for an idempotent retry).
    pub timestamp: String,
    /// `true` when an earlier publish with the same idempotency key was found
    /// and nothing new was stored.
    pub duplicate: bool,
    /// What the append changed in the execution's summary.
    pub change: Change,
}

/// What an append changed for the list of executions, so followers of the
/// list hear of it: always the start and the end, other activity at most
/// once a second per execution (across hub nodes, as the store tracks it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Change {
    /// Nothing worth announcing (a replay, or activity within the second).
    #[default]
    None,
    /// The execution's first event.
    Started,
    /// New events (announced at most once a second).
    Activity,
    /// The terminal event.
    Ended,
}

/// What a batch append returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchReceipt {
    /// The history the events belong to.
    pub epoch: Epoch,
    /// The seq of the batch's first event.
    pub first_seq: u64,
    /// The seq of its last event.
    pub last_seq: u64,
    /// The first event's timestamp.
    pub timestamp: String,
    /// `true` when an earlier batch with the same idempotency key was found
    /// and nothing new was stored.
    pub duplicate: bool,
    /// What the append changed in the execution's summary.
    pub change: Change,
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
    /// The history these seqs belong to; `None` when the execution has none.
    pub epoch: Option<Epoch>,
    /// Set once the execution has ended: how, and the seq of its terminal event.
    pub ended: Option<End>,
}

/// How and where an execution ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct End {
    /// The status its terminal event gave it (`completed`, `failed`, …).
    pub status: String,
    /// The seq of its terminal event.
    pub seq: u64,
}

/// A position in the list of executions: its `updated_at` in Unix
/// milliseconds and its id (ties are ordered by id, descending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCursor {
    /// `updated_at` of the last execution returned, in Unix milliseconds.
    pub updated_ms: u64,
    /// Its id.
    pub execution_id: String,
}

impl ListCursor {
    /// Whether the entry `(execution_id, updated_ms)` comes after this
    /// position in the list (newest first, ties by id descending).
    pub fn is_before(&self, execution_id: &str, updated_ms: u64) -> bool {
        updated_ms < self.updated_ms
            || (updated_ms == self.updated_ms && execution_id < self.execution_id.as_str())
    }
}

/// One entry of the list of executions.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Where it stands in the list.
    pub cursor: ListCursor,
    /// Its summary.
    pub summary: ExecutionSummary,
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
    /// Bytes the embedded store may hold in total (Redis has its own `maxmemory`).
    pub max_bytes: usize,
    /// How long an ended execution's summary outlives its events.
    pub final_state_ttl: Duration,
    /// Whether an ended execution still takes events (checked by the store,
    /// atomically with the append).
    pub after_end: AfterEnd,
    /// Executions the list of executions keeps.
    pub max_listed: usize,
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
    /// On a Redis Cluster: each shard's state. A shard that is down fails
    /// only its executions, so the node keeps serving the others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shards: Option<Vec<ShardHealth>>,
}

impl StoreHealth {
    /// Whether some executions can be served: the store is ok, or at least
    /// one shard of a cluster is.
    pub fn serves_some(&self) -> bool {
        self.ok
            || self
                .shards
                .as_ref()
                .is_some_and(|shards| shards.iter().any(|shard| shard.ok))
    }
}

/// One Redis Cluster shard's state, for `/health`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ShardHealth {
    /// The shard's master, `host:port`.
    pub master: String,
    /// The hash slots it holds, e.g. `0-5460`.
    pub slots: String,
    /// `true` when its master answers.
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

    /// Appends every event of `batch` atomically, with consecutive seqs, or
    /// finds the earlier batch with the same idempotency key.
    ///
    /// # Errors
    /// As [`EventStore::append`]; nothing of the batch is stored then.
    async fn append_batch(&self, batch: NewBatch) -> Result<BatchReceipt, StoreError>;

    /// Returns up to `limit` stored events of `execution_id` with `seq > after`.
    ///
    /// # Errors
    /// [`StoreError`] when the backend cannot be read.
    async fn range(&self, execution_id: &str, after: u64, limit: usize)
    -> Result<Page, StoreError>;

    /// The summary of `execution_id` (kept `final_state_ttl` beyond its
    /// events once it has ended); `None` when the store knows nothing of it.
    ///
    /// # Errors
    /// [`StoreError`] when the backend cannot be read.
    async fn summary(&self, execution_id: &str) -> Result<Option<ExecutionSummary>, StoreError>;

    /// Up to `count` executions, most recently updated first, after `cursor`
    /// (from the start when `None`).
    ///
    /// # Errors
    /// [`StoreError`] when the backend cannot be read.
    async fn recent(
        &self,
        cursor: Option<&ListCursor>,
        count: usize,
    ) -> Result<Vec<Listed>, StoreError>;

    /// Whether other hub nodes may append to this store (then changes made
    /// elsewhere must be looked for; the embedded store sees every append).
    fn is_shared(&self) -> bool {
        false
    }

    /// Whether appends (single or batch) whose futures are first polled one
    /// after another are applied in that order, even while the earlier ones
    /// are still on their way: then one WebSocket may have several publishes
    /// in flight and keep their order (otherwise it has one at a time).
    fn keeps_order(&self) -> bool {
        false
    }

    /// Keeps `execution_id`'s appends — including those of other hub nodes —
    /// flowing into this node's live feeds while the returned [`Watch`] lives.
    fn watch(&self, execution_id: &str) -> Watch;

    /// Why a history with `epoch`, which is no longer the current one, ended,
    /// as far as this store can tell.
    fn lost_reason(&self, epoch: &Epoch) -> LostReason {
        let _ = epoch;
        LostReason::Expired
    }

    /// Current health, for `/health`.
    async fn health(&self) -> StoreHealth;
}

/// Keeps an execution's live appends flowing to this node; see [`EventStore::watch`].
#[must_use = "the watch ends when dropped"]
pub struct Watch {
    confirmed: Option<oneshot::Receiver<()>>,
    release: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl Watch {
    /// A watch that needs nothing (the store announces every append itself).
    pub fn local() -> Self {
        Self {
            confirmed: None,
            release: None,
        }
    }

    /// A watch confirmed through `confirmed`, released by calling `release`.
    pub fn new(
        confirmed: oneshot::Receiver<()>,
        release: impl FnOnce() + Send + Sync + 'static,
    ) -> Self {
        Self {
            confirmed: Some(confirmed),
            release: Some(Box::new(release)),
        }
    }

    /// A future that completes once appends made from now on are sure to be
    /// announced (for Redis: the channel subscription is confirmed). History
    /// must be read only after it, or an append in between would reach neither.
    pub fn confirmed(&mut self) -> impl Future<Output = ()> + Send + 'static {
        let confirmed = self.confirmed.take();
        async move {
            if let Some(confirmed) = confirmed {
                let _ = confirmed.await;
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

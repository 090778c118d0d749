//! The one publish path: append to the store, then feed the providers.
//!
//! Both transports that accept events (HTTP `POST` and WebSocket `publish`)
//! call [`Publisher::publish`]. A publish is acknowledged once the store has
//! the event; the providers are then offered the stored JSON without waiting
//! (their queues never block). An idempotent replay (`Receipt::duplicate`) is
//! offered again: the first append's answer — and its offer — may have been
//! lost, and providers are at-least-once (receivers de-duplicate by id).
//!
//! Providers must see each execution's events in seq order, but two
//! concurrent publishes to one execution may finish their appends in either
//! order. So, while providers are configured, publishes to the same execution
//! take turns through the append-and-offer step (an async lock per stripe of
//! executions); publishes to other executions are not held up, and without
//! providers nothing is serialized. With several hub nodes, each node feeds
//! its providers the events it accepted itself.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Mutex;

use crate::directory::Directory;
use crate::event::{Epoch, NewBatch, NewEvent, splice_seq};
use crate::lifecycle::Lifecycle;
use crate::providers::{Delivery, Providers};
use crate::store::{BatchReceipt, Change, EventStore, Receipt, StoreError};

/// Lock stripes: executions hashing to the same stripe take turns. Enough
/// that unrelated executions rarely share one; small enough to allocate once.
const STRIPES: usize = 256;

/// Appends events and hands them on to the providers, in seq order per execution.
pub struct Publisher {
    store: Arc<dyn EventStore>,
    providers: Providers,
    lifecycle: Lifecycle,
    directory: Arc<Directory>,
    /// Held across one append and its offer, so offers follow seq order.
    stripes: Box<[Mutex<()>]>,
    hasher: RandomState,
}

impl Publisher {
    /// A publisher appending to `store`, ending executions on `lifecycle`'s
    /// terminal events, telling `directory` what changed, and feeding `providers`.
    pub fn new(
        store: Arc<dyn EventStore>,
        providers: Providers,
        lifecycle: Lifecycle,
        directory: Arc<Directory>,
    ) -> Self {
        Self {
            store,
            providers,
            lifecycle,
            directory,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            hasher: RandomState::new(),
        }
    }

    /// The running providers, for `/health`.
    pub fn providers(&self) -> &Providers {
        &self.providers
    }

    /// Stores `event` and, unless it was an idempotent replay, offers it to
    /// every provider. Returns as soon as the store has it.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot take the event; providers are then not fed.
    pub async fn publish(&self, event: NewEvent) -> Result<Receipt, StoreError> {
        let ending = self.lifecycle.ending(&event.event_type());
        let event = event.ending_with(ending);
        // The id is copied only when someone follows the list of executions.
        let followed = self
            .directory
            .is_followed()
            .then(|| event.execution_id().to_owned());
        let receipt = self.append(event).await?;
        if let Some(execution_id) = followed
            && receipt.change != Change::None
        {
            self.directory.changed(&execution_id, receipt.change);
        }
        Ok(receipt)
    }

    async fn append(&self, event: NewEvent) -> Result<Receipt, StoreError> {
        if self.providers.is_empty() {
            let execution_id = event.execution_id().to_owned();
            let receipt = self.store.append(event).await?;
            counted(&execution_id, 1, receipt.duplicate);
            return Ok(receipt);
        }
        let execution_id: Arc<str> = Arc::from(event.execution_id());
        let tail = event.tail().clone();
        let traceparent = event.traceparent().cloned();
        // An async lock is the point here: it orders the appends of one
        // execution. It is never a std lock, and nothing else awaits under it.
        let _turn = self.stripe(&execution_id).lock().await;
        let receipt = self.store.append(event).await?;
        counted(&execution_id, 1, receipt.duplicate);
        let json = if receipt.duplicate {
            // A replay may be the retry of an append whose answer was lost
            // before its offer: offer the stored event again (providers and
            // their receivers de-duplicate by id), as it was stored.
            self.stored(&execution_id, &receipt).await
        } else {
            Some(splice_seq(receipt.seq, &tail))
        };
        if let Some(json) = json {
            let delivery = Delivery::new(execution_id, receipt.epoch.clone(), receipt.seq, json)
                .with_traceparent(traceparent);
            self.providers.offer(&delivery);
        }
        Ok(receipt)
    }

    /// Stores a batch atomically and offers its events to every provider, in
    /// order (a replay is offered again, as stored, like a single publish).
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot take the batch; nothing is stored then.
    pub async fn publish_batch(&self, mut batch: NewBatch) -> Result<BatchReceipt, StoreError> {
        let count = batch.events().len();
        for (i, event) in batch.events_mut().iter_mut().enumerate() {
            let Some(status) = self.lifecycle.ending(&event.event_type()) else {
                continue;
            };
            // Events after the terminal one would be publishes after the end.
            if i + 1 < count && self.lifecycle.after_end().is_final() {
                return Err(StoreError::Ended {
                    status: status.to_string(),
                });
            }
            *event = event.clone().ending_with(Some(status));
        }
        let execution_id = batch.execution_id().to_owned();
        let receipt = self.append_batch(batch).await?;
        if receipt.change != Change::None {
            self.directory.changed(&execution_id, receipt.change);
        }
        Ok(receipt)
    }

    async fn append_batch(&self, batch: NewBatch) -> Result<BatchReceipt, StoreError> {
        let events = batch.events().len() as u64;
        if self.providers.is_empty() {
            let execution_id = batch.execution_id().to_owned();
            let receipt = self.store.append_batch(batch).await?;
            counted(&execution_id, events, receipt.duplicate);
            return Ok(receipt);
        }
        let execution_id: Arc<str> = Arc::from(batch.execution_id());
        let traceparent = batch.traceparent().cloned();
        let tails: Vec<Bytes> = batch.events().iter().map(|e| e.tail().clone()).collect();
        let _turn = self.stripe(&execution_id).lock().await;
        let receipt = self.store.append_batch(batch).await?;
        counted(&execution_id, events, receipt.duplicate);
        let stored: Vec<(u64, Bytes)> = if receipt.duplicate {
            self.stored_range(
                &execution_id,
                &receipt.epoch,
                receipt.first_seq,
                receipt.last_seq,
            )
            .await
        } else {
            (receipt.first_seq..=receipt.last_seq)
                .zip(&tails)
                .map(|(seq, tail)| (seq, splice_seq(seq, tail)))
                .collect()
        };
        for (seq, json) in stored {
            let delivery =
                Delivery::new(Arc::clone(&execution_id), receipt.epoch.clone(), seq, json)
                    .with_traceparent(traceparent.clone());
            self.providers.offer(&delivery);
        }
        Ok(receipt)
    }

    /// The stored events `first..=last` of history `epoch`, as far as it still holds them.
    async fn stored_range(
        &self,
        execution_id: &str,
        epoch: &Epoch,
        first: u64,
        last: u64,
    ) -> Vec<(u64, Bytes)> {
        let count = usize::try_from(last.saturating_sub(first) + 1).unwrap_or(usize::MAX);
        let Ok(page) = self
            .store
            .range(execution_id, first.saturating_sub(1), count)
            .await
        else {
            return Vec::new();
        };
        page.events
            .into_iter()
            .filter(|e| e.epoch() == epoch && e.seq() <= last)
            .map(|e| (e.seq(), e.json().clone()))
            .collect()
    }

    /// The stored JSON of the event a receipt names, while its history holds it.
    async fn stored(&self, execution_id: &str, receipt: &Receipt) -> Option<Bytes> {
        let page = self
            .store
            .range(execution_id, receipt.seq.saturating_sub(1), 1)
            .await
            .ok()?;
        page.events
            .into_iter()
            .find(|e| e.seq() == receipt.seq && *e.epoch() == receipt.epoch)
            .map(|e| e.json().clone())
    }

    fn stripe(&self, execution_id: &str) -> &Mutex<()> {
        let hash = self.hasher.hash_one(execution_id);
        // The modulo keeps the index below STRIPES, so it fits a usize.
        let index = usize::try_from(hash % STRIPES as u64).unwrap_or_default();
        &self.stripes[index]
    }
}

/// Counts the events an append stored (a replay stored nothing).
fn counted(execution_id: &str, events: u64, duplicate: bool) {
    if !duplicate {
        crate::metrics::handles().published(execution_id, events);
    }
}

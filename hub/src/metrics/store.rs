//! A store wrapper that times appends and range reads and counts failures,
//! so every backend is measured the same way without knowing about metrics.
//! Every method of [`EventStore`] is forwarded — including those with a
//! default body, which would otherwise silently answer for the wrapped store.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use exechub_protocol::{ExecutionSummary, LostReason};
use metrics::{Counter, Histogram};

use crate::event::{Epoch, NewBatch, NewEvent};
use crate::store::{
    BatchReceipt, EventStore, ListCursor, Listed, Page, Receipt, StoreError, StoreHealth, Watch,
};

/// One operation's handles.
struct Op {
    duration: Histogram,
    errors: Counter,
}

impl Op {
    fn new(backend: &'static str, operation: &'static str) -> Self {
        Self {
            duration: metrics::histogram!("exechub_store_operation_duration_seconds",
                "backend" => backend, "operation" => operation),
            errors: metrics::counter!("exechub_store_errors_total",
                "backend" => backend, "operation" => operation),
        }
    }

    fn record<T>(&self, started: Instant, result: &Result<T, StoreError>) {
        self.duration.record(started.elapsed().as_secs_f64());
        if result.is_err() {
            self.errors.increment(1);
        }
    }
}

/// [`EventStore`] with operation timing; everything else is passed through.
pub struct MeteredStore {
    inner: Arc<dyn EventStore>,
    append: Op,
    append_batch: Op,
    range: Op,
    summary: Op,
    recent: Op,
}

impl MeteredStore {
    /// Wraps `inner`, labelling its measurements with `backend`.
    pub fn wrap(inner: Arc<dyn EventStore>, backend: &'static str) -> Arc<dyn EventStore> {
        super::handles();
        Arc::new(Self {
            inner,
            append: Op::new(backend, "append"),
            append_batch: Op::new(backend, "append_batch"),
            range: Op::new(backend, "range"),
            summary: Op::new(backend, "summary"),
            recent: Op::new(backend, "recent"),
        })
    }
}

#[async_trait]
impl EventStore for MeteredStore {
    async fn append(&self, event: NewEvent) -> Result<Receipt, StoreError> {
        let started = Instant::now();
        let result = self.inner.append(event).await;
        self.append.record(started, &result);
        result
    }

    async fn append_batch(&self, batch: NewBatch) -> Result<BatchReceipt, StoreError> {
        let started = Instant::now();
        let result = self.inner.append_batch(batch).await;
        self.append_batch.record(started, &result);
        result
    }

    async fn range(
        &self,
        execution_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let started = Instant::now();
        let result = self.inner.range(execution_id, after, limit).await;
        self.range.record(started, &result);
        result
    }

    async fn summary(&self, execution_id: &str) -> Result<Option<ExecutionSummary>, StoreError> {
        let started = Instant::now();
        let result = self.inner.summary(execution_id).await;
        self.summary.record(started, &result);
        result
    }

    async fn recent(
        &self,
        cursor: Option<&ListCursor>,
        count: usize,
    ) -> Result<Vec<Listed>, StoreError> {
        let started = Instant::now();
        let result = self.inner.recent(cursor, count).await;
        self.recent.record(started, &result);
        result
    }

    fn is_shared(&self) -> bool {
        self.inner.is_shared()
    }

    fn keeps_order(&self) -> bool {
        self.inner.keeps_order()
    }

    fn watch(&self, execution_id: &str) -> Watch {
        self.inner.watch(execution_id)
    }

    fn lost_reason(&self, epoch: &Epoch) -> LostReason {
        self.inner.lost_reason(epoch)
    }

    async fn health(&self) -> StoreHealth {
        self.inner.health().await
    }
}

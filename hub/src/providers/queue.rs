//! A provider's bounded queue: FIFO, one consumer, drop-oldest when full.
//! (A connection's outbound queue is another thing: [`crate::outbox`].)
//!
//! Publishing must never wait for a provider, so [`ProviderQueue::push`]
//! never blocks: when the queue holds its limit of events or bytes, the
//! oldest events are evicted to make room (counted, and logged at most once
//! per ten seconds). Keeping the newest events is the useful choice for a
//! live feed: a receiver that comes back wants what is happening now, and can
//! read anything older from the hub's history API.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::{Counters, Delivery};

/// Shortest time between two "queue full" warnings of one queue.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// How much a provider's queue may hold.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Most events held; at least 1.
    pub events: usize,
    /// Most payload bytes held (a single larger event is still kept, alone).
    pub bytes: usize,
}

/// A bounded FIFO of deliveries for one provider worker.
pub struct ProviderQueue {
    /// Names the provider in warnings.
    name: String,
    limits: QueueLimits,
    state: Mutex<State>,
    /// Wakes the worker; `notify_one` keeps a permit, so no push is missed.
    ready: Notify,
}

#[derive(Default)]
struct State {
    items: VecDeque<Delivery>,
    bytes: usize,
    /// When the last overflow warning was logged.
    warned_at: Option<Instant>,
    /// Evictions since that warning.
    dropped_since_warning: u64,
}

impl ProviderQueue {
    /// An empty queue for the provider called `name`.
    pub fn new(name: String, limits: QueueLimits) -> Self {
        Self {
            name,
            limits: QueueLimits {
                events: limits.events.max(1),
                bytes: limits.bytes,
            },
            state: Mutex::new(State::default()),
            ready: Notify::new(),
        }
    }

    /// Queues `delivery`, evicting the oldest entries while the queue is
    /// full; each eviction is counted in `counters.dropped`. Never blocks.
    pub fn push(&self, delivery: Delivery, counters: &Counters) {
        let size = delivery.json.len();
        let mut state = self.lock();
        let mut evicted = 0;
        while !state.items.is_empty()
            && (state.items.len() >= self.limits.events || state.bytes + size > self.limits.bytes)
        {
            if let Some(old) = state.items.pop_front() {
                state.bytes -= old.json.len();
                evicted += 1;
            }
        }
        state.bytes += size;
        state.items.push_back(delivery);
        if evicted > 0 {
            counters.add_dropped(evicted);
            self.warn_overflow(&mut state, evicted);
        }
        drop(state);
        self.ready.notify_one();
    }

    /// Waits for the oldest queued delivery and takes it.
    pub async fn pop(&self) -> Delivery {
        loop {
            if let Some(delivery) = self.try_pop() {
                return delivery;
            }
            self.ready.notified().await;
        }
    }

    /// Deliveries waiting.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn try_pop(&self) -> Option<Delivery> {
        let mut state = self.lock();
        let delivery = state.items.pop_front()?;
        state.bytes -= delivery.json.len();
        Some(delivery)
    }

    fn warn_overflow(&self, state: &mut State, evicted: u64) {
        state.dropped_since_warning += evicted;
        let due = state
            .warned_at
            .is_none_or(|at| at.elapsed() >= WARN_INTERVAL);
        if due {
            tracing::warn!(
                provider = %self.name,
                dropped = state.dropped_since_warning,
                limit_events = self.limits.events,
                limit_bytes = self.limits.bytes,
                "provider queue full: dropped the oldest events (they stay in the hub's history)"
            );
            state.warned_at = Some(Instant::now());
            state.dropped_since_warning = 0;
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation keeps `bytes` in step with `items` before it can panic
        // (it cannot), so a poisoned lock still guards a consistent queue.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::Arc;

    fn delivery(seq: u64, bytes: usize) -> Delivery {
        let epoch = crate::event::Epoch::parse("e").expect("epoch");
        Delivery::new(
            Arc::from("exec"),
            epoch,
            seq,
            Bytes::from(vec![b'x'; bytes]),
        )
    }

    #[tokio::test]
    async fn full_queue_drops_the_oldest_and_counts_them() {
        let counters = Counters::default();
        let queue = ProviderQueue::new(
            "test".into(),
            QueueLimits {
                events: 3,
                bytes: 1000,
            },
        );
        for seq in 1..=5 {
            queue.push(delivery(seq, 10), &counters);
        }
        assert_eq!(queue.len(), 3);
        assert_eq!(counters.snapshot().dropped, 2);
        let seqs = [queue.pop().await.seq, queue.pop().await.seq];
        assert_eq!(seqs, [3, 4]);
    }

    #[tokio::test]
    async fn byte_limit_evicts_until_the_new_event_fits() {
        let counters = Counters::default();
        let limits = QueueLimits {
            events: 100,
            bytes: 25,
        };
        let queue = ProviderQueue::new("test".into(), limits);
        queue.push(delivery(1, 10), &counters);
        queue.push(delivery(2, 10), &counters);
        queue.push(delivery(3, 10), &counters);
        assert_eq!(queue.len(), 2);
        // An event larger than the whole limit is still kept, alone.
        queue.push(delivery(4, 100), &counters);
        assert_eq!(queue.len(), 1);
        assert_eq!(counters.snapshot().dropped, 3);
        assert_eq!(queue.pop().await.seq, 4);
        assert!(queue.is_empty());
    }

    #[tokio::test]
    async fn pop_waits_for_a_push() {
        let queue = Arc::new(ProviderQueue::new(
            "test".into(),
            QueueLimits {
                events: 10,
                bytes: 1000,
            },
        ));
        let waiter = tokio::spawn({
            let queue = Arc::clone(&queue);
            async move { queue.pop().await.seq }
        });
        tokio::task::yield_now().await;
        queue.push(delivery(7, 1), &Counters::default());
        assert_eq!(waiter.await.ok(), Some(7));
    }
}

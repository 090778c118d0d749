//! A provider's bounded outbox: FIFO, one consumer, drop-oldest when full.
//!
//! Publishing must never wait for a provider, so [`Outbox::push`] never blocks:
//! when the outbox holds its limit of events or bytes, the oldest events are
//! evicted to make room (counted, and logged at most once per
//! ten seconds). Keeping the newest events is the useful choice for a
//! live feed: a receiver that comes back wants what is happening now, and can
//! read anything older from the hub's history API.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::{Counters, Delivery};

/// Shortest time between two "outbox full" warnings of one outbox.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// How much an outbox may hold.
#[derive(Debug, Clone, Copy)]
pub struct OutboxLimits {
    /// Most events held; at least 1.
    pub events: usize,
    /// Most payload bytes held (a single larger event is still kept, alone).
    pub bytes: usize,
}

/// A bounded FIFO of deliveries for one provider worker.
pub struct Outbox {
    /// Names the provider in warnings.
    name: String,
    limits: OutboxLimits,
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

impl Outbox {
    /// An empty outbox for the provider called `name`.
    pub fn new(name: String, limits: OutboxLimits) -> Self {
        Self {
            name,
            limits: OutboxLimits {
                events: limits.events.max(1),
                bytes: limits.bytes,
            },
            state: Mutex::new(State::default()),
            ready: Notify::new(),
        }
    }

    /// Queues `delivery`, evicting the oldest entries while the outbox is
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
                "provider outbox full: dropped the oldest events (they stay in the hub's history)"
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
    async fn full_outbox_drops_the_oldest_and_counts_them() {
        let counters = Counters::default();
        let outbox = Outbox::new(
            "test".into(),
            OutboxLimits {
                events: 3,
                bytes: 1000,
            },
        );
        for seq in 1..=5 {
            outbox.push(delivery(seq, 10), &counters);
        }
        assert_eq!(outbox.len(), 3);
        assert_eq!(counters.snapshot().dropped, 2);
        let seqs = [outbox.pop().await.seq, outbox.pop().await.seq];
        assert_eq!(seqs, [3, 4]);
    }

    #[tokio::test]
    async fn byte_limit_evicts_until_the_new_event_fits() {
        let counters = Counters::default();
        let limits = OutboxLimits {
            events: 100,
            bytes: 25,
        };
        let outbox = Outbox::new("test".into(), limits);
        outbox.push(delivery(1, 10), &counters);
        outbox.push(delivery(2, 10), &counters);
        outbox.push(delivery(3, 10), &counters);
        assert_eq!(outbox.len(), 2);
        // An event larger than the whole limit is still kept, alone.
        outbox.push(delivery(4, 100), &counters);
        assert_eq!(outbox.len(), 1);
        assert_eq!(counters.snapshot().dropped, 3);
        assert_eq!(outbox.pop().await.seq, 4);
        assert!(outbox.is_empty());
    }

    #[tokio::test]
    async fn pop_waits_for_a_push() {
        let outbox = Arc::new(Outbox::new(
            "test".into(),
            OutboxLimits {
                events: 10,
                bytes: 1000,
            },
        ));
        let waiter = tokio::spawn({
            let outbox = Arc::clone(&outbox);
            async move { outbox.pop().await.seq }
        });
        tokio::task::yield_now().await;
        outbox.push(delivery(7, 1), &Counters::default());
        assert_eq!(waiter.await.ok(), Some(7));
    }
}

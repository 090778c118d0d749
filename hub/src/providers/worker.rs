//! The core every provider shares: a bounded [`ProviderQueue`], the
//! [`Counters`], one task that takes events in queue order and makes a
//! bounded number of attempts at each (with the hub's [`Backoff`] between
//! them, unless the destination names a delay), and the `/health` entry.
//!
//! A provider supplies only a [`Destination`]: how to make one attempt at one
//! event, and when it can make one. Delivering one event at a time keeps seq
//! order per execution, and a slow destination only ever delays itself.
//! Shutdown cancels the task wherever it waits (for an event, a connection,
//! an answer or a retry delay).

use std::future::Future;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::queue::{ProviderQueue, QueueLimits};
use super::{Counters, Delivery, Provider, ProviderHealth};
use crate::retry::Backoff;
use crate::telemetry::TraceParent;

/// What one attempt at one event came to.
#[derive(Debug)]
pub enum Attempt {
    /// The destination accepted the event.
    Delivered,
    /// Worth another attempt.
    Retry {
        /// The delay the destination asked for (`Retry-After`); otherwise
        /// the backoff decides.
        after: Option<Duration>,
        /// Why the attempt failed, for logs.
        reason: String,
    },
    /// Final: the destination refused the event (e.g. a 4xx).
    Refused(String),
    /// The destination is gone for good: the worker stops.
    Gone,
}

/// How many attempts an event gets, and the delays between them.
#[derive(Debug, Clone, Copy)]
pub struct Retries {
    /// Attempts per event (at least 1 is made).
    pub attempts: u32,
    /// Delays between attempts, where the destination names none.
    pub backoff: Backoff,
}

/// What a provider implements: delivery of one event to its destination.
pub trait Destination: Send + Sync + 'static {
    /// `webhook` or `nats`: the provider's kind in `/health` and logs.
    const KIND: &'static str;

    /// Waits until the destination can take events (NATS: connected), so
    /// events wait in the queue meanwhile; `false` when it never will again.
    fn ready(&self) -> impl Future<Output = bool> + Send {
        async { true }
    }

    /// One attempt at `delivery`; `attempt` counts from 1.
    fn attempt(&self, delivery: &Delivery, attempt: u32) -> impl Future<Output = Attempt> + Send;

    /// Whether the destination is reachable now (NATS: connected); `/health`
    /// reports ok only while it is and the latest attempt delivered.
    fn reachable(&self) -> bool {
        true
    }
}

/// A running provider: a [`Destination`] fed from its own queue by its own task.
pub struct Worker<D> {
    /// The destination without credentials or query, for logs and `/health`.
    name: String,
    destination: D,
    retries: Retries,
    queue: ProviderQueue,
    counters: Counters,
    /// Whether the latest attempt delivered.
    ok: AtomicBool,
}

impl<D: Destination> Worker<D> {
    /// Starts the task that delivers to `destination`, called `name`; it
    /// stops when `shutdown` is cancelled or the destination is gone.
    pub fn start(
        name: String,
        destination: D,
        retries: Retries,
        limits: QueueLimits,
        shutdown: &CancellationToken,
    ) -> Arc<Self> {
        let worker = Arc::new(Self {
            queue: ProviderQueue::new(name.clone(), limits),
            name,
            destination,
            retries,
            counters: Counters::default(),
            ok: AtomicBool::new(true),
        });
        tokio::spawn(Arc::clone(&worker).run(shutdown.clone()));
        worker
    }

    /// Delivers queued events one by one until shutdown.
    async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let next = async {
                self.destination.ready().await && self.deliver(&self.queue.pop().await).await
            };
            let go_on = tokio::select! {
                () = shutdown.cancelled() => false,
                go_on = next => go_on,
            };
            if !go_on {
                return;
            }
        }
    }

    /// Attempts `delivery` until it is settled; `false` when the destination is gone.
    async fn deliver(&self, delivery: &Delivery) -> bool {
        let mut attempt = 1;
        loop {
            let outcome = self.destination.attempt(delivery, attempt).await;
            match self.settle(delivery, attempt, outcome) {
                ControlFlow::Break(go_on) => return go_on,
                ControlFlow::Continue(delay) => tokio::time::sleep(delay).await,
            }
            attempt += 1;
        }
    }

    /// Counts and logs one attempt's outcome: settled (and whether the worker
    /// goes on), or to be retried after a delay.
    fn settle(
        &self,
        delivery: &Delivery,
        attempt: u32,
        outcome: Attempt,
    ) -> ControlFlow<bool, Duration> {
        let (retry_after, reason) = match outcome {
            Attempt::Gone => return ControlFlow::Break(false),
            Attempt::Delivered => {
                self.ok.store(true, Ordering::Relaxed);
                self.counters.add_delivered();
                return ControlFlow::Break(true);
            }
            Attempt::Refused(reason) => (None, reason),
            Attempt::Retry { after, reason } => (Some(after), reason),
        };
        self.ok.store(false, Ordering::Relaxed);
        match retry_after {
            Some(after) if attempt < self.retries.attempts => {
                ControlFlow::Continue(self.retry_delay(delivery, attempt, after, &reason))
            }
            _ => {
                self.give_up(delivery, attempt, &reason);
                ControlFlow::Break(true)
            }
        }
    }

    fn retry_delay(
        &self,
        delivery: &Delivery,
        attempt: u32,
        after: Option<Duration>,
        reason: &str,
    ) -> Duration {
        self.counters.add_retried();
        let delay = after.unwrap_or_else(|| self.retries.backoff.delay(attempt));
        tracing::debug!(provider = %self.name, id = %delivery.idempotency_id(), traceparent = delivery.traceparent.as_deref().map(TraceParent::as_str), attempt, ?delay, %reason, "{} attempt failed; retrying", D::KIND);
        delay
    }

    fn give_up(&self, delivery: &Delivery, attempts: u32, reason: &str) {
        self.counters.add_failed();
        tracing::warn!(provider = %self.name, id = %delivery.idempotency_id(), traceparent = delivery.traceparent.as_deref().map(TraceParent::as_str), attempts, %reason, "{} delivery failed; event skipped", D::KIND);
    }
}

impl<D: Destination> Provider for Worker<D> {
    fn offer(&self, delivery: &Delivery) {
        self.queue.push(delivery.clone(), &self.counters);
    }

    fn health(&self) -> ProviderHealth {
        ProviderHealth {
            name: self.name.clone(),
            kind: D::KIND,
            ok: self.destination.reachable() && self.ok.load(Ordering::Relaxed),
            counters: self.counters.snapshot(),
            queue_depth: self.queue.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use bytes::Bytes;
    use tokio::time::Instant;

    use super::*;
    use crate::event::Epoch;

    /// A destination that answers from a script (then delivers), noting
    /// each attempt's number and time.
    #[derive(Default)]
    struct Script {
        outcomes: Mutex<VecDeque<Attempt>>,
        seen: Mutex<Vec<(u64, u32, Instant)>>,
    }

    impl Destination for Script {
        const KIND: &'static str = "test";

        async fn attempt(&self, delivery: &Delivery, attempt: u32) -> Attempt {
            let mut seen = self.seen.lock().expect("unpoisoned");
            seen.push((delivery.seq, attempt, Instant::now()));
            let mut outcomes = self.outcomes.lock().expect("unpoisoned");
            outcomes.pop_front().unwrap_or(Attempt::Delivered)
        }
    }

    fn retry(after: Option<Duration>) -> Attempt {
        Attempt::Retry {
            after,
            reason: "answered 503".into(),
        }
    }

    fn worker(attempts: u32, outcomes: Vec<Attempt>) -> Arc<Worker<Script>> {
        let script = Script {
            outcomes: Mutex::new(outcomes.into()),
            ..Script::default()
        };
        let retries = Retries {
            attempts,
            backoff: Backoff {
                first: Duration::from_secs(1),
                max: Duration::from_secs(4),
            },
        };
        let limits = QueueLimits {
            events: 10,
            bytes: 1000,
        };
        let shutdown = CancellationToken::new();
        Worker::start("test".into(), script, retries, limits, &shutdown)
    }

    fn offer(worker: &Worker<Script>, seq: u64) {
        let epoch = Epoch::parse("e").expect("epoch");
        worker.offer(&Delivery::new(Arc::from("exec"), epoch, seq, Bytes::new()));
    }

    /// Waits (in paused time) until `n` events are settled.
    async fn settled(worker: &Worker<Script>, n: u64) -> ProviderHealth {
        loop {
            let health = worker.health();
            if health.counters.delivered + health.counters.failed >= n {
                return health;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn attempts_seen(worker: &Worker<Script>) -> Vec<(u64, u32)> {
        let seen = worker.destination.seen.lock().expect("unpoisoned");
        seen.iter().map(|&(seq, n, _)| (seq, n)).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn retryable_failures_are_retried_until_delivered_in_order() {
        let worker = worker(5, vec![retry(None), retry(None)]);
        offer(&worker, 1);
        offer(&worker, 2);
        let health = settled(&worker, 2).await;
        assert_eq!(attempts_seen(&worker), [(1, 1), (1, 2), (1, 3), (2, 1)]);
        assert_eq!((health.counters.delivered, health.counters.retried), (2, 2));
        assert!(health.ok);
        assert_eq!((health.kind, health.queue_depth), ("test", 0));
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_and_exhausted_attempts_fail_the_event_only() {
        let refused = Attempt::Refused("answered 400".into());
        let worker = worker(2, vec![refused, retry(None), retry(None)]);
        offer(&worker, 1);
        offer(&worker, 2);
        let health = settled(&worker, 2).await;
        assert_eq!(attempts_seen(&worker), [(1, 1), (2, 1), (2, 2)]);
        assert_eq!((health.counters.failed, health.counters.retried), (2, 1));
        assert!(!health.ok);
        offer(&worker, 3);
        assert!(settled(&worker, 3).await.ok);
    }

    #[tokio::test(start_paused = true)]
    async fn delays_follow_the_backoff_unless_the_destination_names_one() {
        let worker = worker(5, vec![retry(None), retry(Some(Duration::from_secs(9)))]);
        offer(&worker, 1);
        settled(&worker, 1).await;
        let seen = worker.destination.seen.lock().expect("unpoisoned").clone();
        let first = seen[1].2 - seen[0].2;
        assert!(first >= Duration::from_millis(500) && first <= Duration::from_secs(1));
        assert_eq!(seen[2].2 - seen[1].2, Duration::from_secs(9));
    }

    #[tokio::test(start_paused = true)]
    async fn a_destination_gone_for_good_stops_the_worker() {
        let worker = worker(5, vec![Attempt::Gone]);
        offer(&worker, 1);
        offer(&worker, 2);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(attempts_seen(&worker), [(1, 1)]);
        assert_eq!(worker.health().queue_depth, 1);
    }
}

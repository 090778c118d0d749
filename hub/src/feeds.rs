//! Live feeds: which local subscriptions follow which execution, and the
//! hand-off of every new event to them.
//!
//! Stores publish into the registry through the small [`LiveSink`] interface
//! (the store knows nothing of subscriptions); subscriptions join it through
//! [`Feeds::join`]. A feed is a list of subscribers per execution, created on
//! the first join and dropped with the last: an execution nobody watches costs
//! nothing, and one that is watched costs a map entry and a vector, with no
//! ring buffer sized for the worst case. An event is offered to each
//! subscriber synchronously; a subscriber only copies a reference-counted
//! frame into its connection's queue (or notes that it must catch up), so an
//! offer never blocks and never allocates per subscriber.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::event::{Epoch, SharedEvent};

/// What a feed carries.
#[derive(Debug, Clone, Copy)]
pub enum Live<'a> {
    /// A newly appended event.
    Event(&'a SharedEvent),
    /// The execution's history is now at `(epoch, seq)`. Announced when a lost
    /// upstream connection comes back (pub/sub is at-most-once) and when a
    /// history is dropped (`epoch: None`), so subscribers reconcile with the store.
    Head {
        /// The current history, `None` when the execution has none.
        epoch: Option<&'a Epoch>,
        /// Its highest seq (0 without history).
        seq: u64,
    },
}

/// The first this many subscribers of an event may have it written to their
/// sockets in the offering context (`outbox::direct`); the others' frames
/// are queued for their connections' tasks, which the runtime spreads over
/// its workers. This bounds how long a publisher (or a store's bridge)
/// spends on one event, and lets a large fan-out use every core.
pub const WRITE_IN_PLACE: usize = 128;

/// A local subscription, as the registry sees it.
pub trait Subscriber: Send + Sync {
    /// Takes a live item; `in_place`: its frame may be written to the socket
    /// now, from the caller's context. Must not block, await or call back
    /// into [`Feeds`].
    fn offer(&self, live: Live<'_>, in_place: bool);
}

/// Where stores announce what they append. Implemented by [`Feeds`].
pub trait LiveSink: Send + Sync {
    /// Hands `event` to every local subscriber of `execution_id`; never blocks.
    fn event(&self, execution_id: &str, event: &SharedEvent);
    /// Tells local subscribers of `execution_id` where its history stands now.
    fn head(&self, execution_id: &str, epoch: Option<&Epoch>, seq: u64);
}

/// Refused: the node's subscription limit is reached.
#[derive(Debug, thiserror::Error)]
#[error("the hub's subscription limit ({0}) is reached")]
pub struct SubscriptionLimit(pub usize);

/// The local registry: execution id → its live subscribers.
#[derive(Default)]
pub struct Feeds {
    feeds: Mutex<HashMap<Arc<str>, Arc<Feed>>>,
    subscriptions: AtomicUsize,
}

#[derive(Default)]
struct Feed {
    subscribers: Mutex<Vec<Arc<dyn Subscriber>>>,
}

impl Feeds {
    /// An empty registry.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Adds `subscriber` to `execution_id`'s feed until the returned
    /// membership is dropped.
    ///
    /// # Errors
    /// [`SubscriptionLimit`] when the node already holds `limit` subscriptions.
    pub fn join(
        self: &Arc<Self>,
        execution_id: &Arc<str>,
        subscriber: Arc<dyn Subscriber>,
        limit: usize,
    ) -> Result<Membership, SubscriptionLimit> {
        let counted = self.subscriptions.fetch_add(1, Ordering::Relaxed);
        if counted >= limit {
            self.subscriptions.fetch_sub(1, Ordering::Relaxed);
            return Err(SubscriptionLimit(limit));
        }
        let feed = Arc::clone(
            self.lock()
                .entry(Arc::clone(execution_id))
                .or_insert_with(|| {
                    // One slot: most executions have one or a few local subscribers.
                    Arc::new(Feed {
                        subscribers: Mutex::new(Vec::with_capacity(1)),
                    })
                }),
        );
        lock(&feed.subscribers).push(Arc::clone(&subscriber));
        Ok(Membership {
            feeds: Arc::clone(self),
            execution_id: Arc::clone(execution_id),
            feed,
            subscriber,
        })
    }

    /// How many executions have local subscribers now.
    pub fn active(&self) -> usize {
        self.lock().len()
    }

    /// How many subscriptions this node holds now.
    pub fn subscriptions(&self) -> usize {
        self.subscriptions.load(Ordering::Relaxed)
    }

    fn feed(&self, execution_id: &str) -> Option<Arc<Feed>> {
        self.lock().get(execution_id).cloned()
    }

    fn offer(&self, execution_id: &str, live: Live<'_>) {
        // The registry lock is held only for the lookup; the feed's own lock
        // keeps this execution's offers in the order the store made them.
        if let Some(feed) = self.feed(execution_id) {
            for (i, subscriber) in lock(&feed.subscribers).iter().enumerate() {
                subscriber.offer(live, i < WRITE_IN_PLACE);
            }
        }
    }

    fn leave(&self, execution_id: &Arc<str>, feed: &Arc<Feed>, subscriber: &Arc<dyn Subscriber>) {
        let empty = {
            let mut subscribers = lock(&feed.subscribers);
            if let Some(i) = subscribers.iter().position(|s| Arc::ptr_eq(s, subscriber)) {
                subscribers.swap_remove(i);
                self.subscriptions.fetch_sub(1, Ordering::Relaxed);
            }
            subscribers.is_empty()
        };
        if empty {
            let mut feeds = self.lock();
            // Another subscriber may have joined since; only drop a feed that is
            // still this one and still empty.
            if feeds
                .get(execution_id)
                .is_some_and(|f| Arc::ptr_eq(f, feed) && lock(&f.subscribers).is_empty())
            {
                feeds.remove(execution_id);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Feed>>> {
        lock(&self.feeds)
    }
}

impl LiveSink for Feeds {
    fn event(&self, execution_id: &str, event: &SharedEvent) {
        self.offer(execution_id, Live::Event(event));
    }

    fn head(&self, execution_id: &str, epoch: Option<&Epoch>, seq: u64) {
        self.offer(execution_id, Live::Head { epoch, seq });
    }
}

/// A subscriber's place in a feed; leaving it is dropping it.
pub struct Membership {
    feeds: Arc<Feeds>,
    execution_id: Arc<str>,
    feed: Arc<Feed>,
    subscriber: Arc<dyn Subscriber>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.feeds
            .leave(&self.execution_id, &self.feed, &self.subscriber);
    }
}

/// Every critical section here is a push, a removal or a loop of
/// non-panicking offers, so a poisoned lock holds consistent data.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[derive(Default)]
    struct Seen(Mutex<Vec<u64>>);

    impl Subscriber for Seen {
        fn offer(&self, live: Live<'_>, _: bool) {
            if let Live::Event(event) = live {
                lock(&self.0).push(event.seq());
            }
        }
    }

    #[test]
    fn feeds_exist_while_someone_listens_and_respect_the_limit() {
        let feeds = Feeds::new();
        let id: Arc<str> = Arc::from("e");
        let a = Arc::new(Seen::default());
        let b = Arc::new(Seen::default());
        let first = feeds.join(&id, a.clone(), 2).expect("joins");
        let second = feeds.join(&id, b.clone(), 2).expect("joins");
        assert!(feeds.join(&id, Arc::new(Seen::default()), 2).is_err());
        let epoch = Epoch::parse("e1").expect("epoch");
        feeds.event("e", &SharedEvent::new(epoch, 1, Bytes::from_static(b"{}")));
        assert_eq!((lock(&a.0).clone(), lock(&b.0).clone()), (vec![1], vec![1]));
        drop(first);
        assert_eq!((feeds.active(), feeds.subscriptions()), (1, 1));
        drop(second);
        assert_eq!((feeds.active(), feeds.subscriptions()), (0, 0));
    }
}

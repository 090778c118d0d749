//! Fan-out: the local registry of live feeds, and the replay-then-live merge.
//!
//! Each execution with at least one local subscriber has one bounded
//! `broadcast` channel. A store announces each append once; every subscriber
//! holds a cheap clone of the same [`SharedEvent`]. A subscriber that falls a
//! whole channel behind is told it lagged, and is disconnected as slow rather
//! than slowing the publisher down. With Redis, [`redis_bridge`] feeds these
//! channels from one upstream pub/sub subscription per execution.

pub mod follow;
pub mod redis_bridge;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tokio::sync::broadcast;

use crate::event::SharedEvent;

/// What a live feed carries.
#[derive(Debug, Clone)]
pub enum Live {
    /// A newly appended event.
    Event(SharedEvent),
    /// The execution's latest seq is this one. Sent when a lost upstream
    /// connection comes back, so subscribers fetch whatever they missed.
    Head(u64),
}

/// Called with an execution id when its last local subscriber leaves.
pub type IdleHook = Box<dyn Fn(&str) + Send + Sync>;

/// The local registry: execution id → live channel, for executions that have subscribers.
pub struct Topics {
    channels: Mutex<HashMap<String, broadcast::Sender<Live>>>,
    capacity: usize,
    on_idle: OnceLock<IdleHook>,
}

impl Topics {
    /// A registry whose channels buffer `capacity` events per execution.
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            channels: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            on_idle: OnceLock::new(),
        })
    }

    /// Registers the hook told when an execution loses its last local
    /// subscriber (the Redis bridge then unsubscribes upstream). Set once.
    pub fn set_idle_hook(&self, hook: IdleHook) {
        let _ = self.on_idle.set(hook);
    }

    /// Hands `event` to every local subscriber of `execution_id`; never blocks.
    pub fn publish(&self, execution_id: &str, event: &SharedEvent) {
        self.send(execution_id, Live::Event(event.clone()));
    }

    /// Tells local subscribers of `execution_id` that its latest seq is `seq`.
    pub fn announce_head(&self, execution_id: &str, seq: u64) {
        self.send(execution_id, Live::Head(seq));
    }

    /// Starts a live feed of `execution_id`; it ends when the feed is dropped.
    pub fn subscribe(self: &Arc<Self>, execution_id: &str) -> LiveFeed {
        let receiver = self
            .lock()
            .entry(execution_id.to_owned())
            .or_insert_with(|| broadcast::channel(self.capacity).0)
            .subscribe();
        LiveFeed {
            receiver,
            _release: Release {
                topics: Arc::clone(self),
                execution_id: execution_id.to_owned(),
            },
        }
    }

    /// Whether `execution_id` has local subscribers.
    pub fn contains(&self, execution_id: &str) -> bool {
        self.lock().contains_key(execution_id)
    }

    /// Executions with local subscribers now.
    pub fn executions(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// How many executions have local subscribers now.
    pub fn active(&self) -> usize {
        self.lock().len()
    }

    fn send(&self, execution_id: &str, item: Live) {
        if let Some(sender) = self.lock().get(execution_id) {
            // An error only means every receiver just left.
            let _ = sender.send(item);
        }
    }

    fn release(&self, execution_id: &str) {
        let removed = {
            let mut channels = self.lock();
            let idle = channels
                .get(execution_id)
                .is_some_and(|s| s.receiver_count() == 0);
            idle && channels.remove(execution_id).is_some()
        };
        if removed && let Some(hook) = self.on_idle.get() {
            hook(execution_id);
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, broadcast::Sender<Live>>> {
        self.channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Live items of one execution, from the moment of subscribing.
pub struct LiveFeed {
    // Declared first so the receiver is dropped before `Release` counts receivers.
    receiver: broadcast::Receiver<Live>,
    _release: Release,
}

impl LiveFeed {
    /// The next live item.
    ///
    /// # Errors
    /// `Lagged` when the subscriber fell a whole channel behind.
    pub async fn recv(&mut self) -> Result<Live, broadcast::error::RecvError> {
        self.receiver.recv().await
    }
}

struct Release {
    topics: Arc<Topics>,
    execution_id: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        self.topics.release(&self.execution_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn channel_lives_while_someone_listens_and_idle_is_reported() {
        let topics = Topics::new(4);
        let idle = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&idle);
        topics.set_idle_hook(Box::new(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        }));
        let mut a = topics.subscribe("e");
        let b = topics.subscribe("e");
        topics.publish("e", &SharedEvent::new(1, Bytes::from_static(b"{}")));
        assert!(matches!(a.recv().await, Ok(Live::Event(e)) if e.seq() == 1));
        drop(a);
        assert_eq!((topics.active(), idle.load(Ordering::SeqCst)), (1, 0));
        drop(b);
        assert_eq!((topics.active(), idle.load(Ordering::SeqCst)), (0, 1));
    }
}

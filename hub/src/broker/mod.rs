//! Fan-out: the local registry of live feeds, and the replay-then-live merge.
//!
//! Each execution with at least one local subscriber has one bounded
//! `broadcast` channel. A store announces each append once; every subscriber
//! holds a cheap clone of the same [`SharedEvent`]. A subscriber that falls a
//! whole channel behind is told it lagged, and is disconnected as slow rather
//! than slowing the publisher down.

pub mod follow;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;

use crate::event::SharedEvent;

/// The local registry: execution id → live channel, for executions that have subscribers.
pub struct Topics {
    channels: Mutex<HashMap<String, broadcast::Sender<SharedEvent>>>,
    capacity: usize,
}

impl Topics {
    /// A registry whose channels buffer `capacity` events per execution.
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            channels: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        })
    }

    /// Hands `event` to every local subscriber of `execution_id`; never blocks.
    pub fn publish(&self, execution_id: &str, event: &SharedEvent) {
        if let Some(sender) = self.lock().get(execution_id) {
            // An error only means every receiver just left.
            let _ = sender.send(event.clone());
        }
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

    /// Executions with local subscribers now.
    pub fn active(&self) -> usize {
        self.lock().len()
    }

    fn release(&self, execution_id: &str) {
        let mut channels = self.lock();
        if channels
            .get(execution_id)
            .is_some_and(|s| s.receiver_count() == 0)
        {
            channels.remove(execution_id);
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, broadcast::Sender<SharedEvent>>> {
        self.channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Live events of one execution, from the moment of subscribing.
pub struct LiveFeed {
    // Declared first so the receiver is dropped before `Release` counts receivers.
    receiver: broadcast::Receiver<SharedEvent>,
    _release: Release,
}

impl LiveFeed {
    /// The next live event.
    ///
    /// # Errors
    /// `Lagged` when the subscriber fell a whole channel behind.
    pub async fn recv(&mut self) -> Result<SharedEvent, broadcast::error::RecvError> {
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

    #[tokio::test]
    async fn channel_lives_while_someone_listens() {
        let topics = Topics::new(4);
        let mut a = topics.subscribe("e");
        let b = topics.subscribe("e");
        topics.publish("e", &SharedEvent::new(1, Bytes::from_static(b"{}")));
        assert_eq!(a.recv().await.expect("event").seq(), 1);
        drop(a);
        assert_eq!(topics.active(), 1);
        drop(b);
        assert_eq!(topics.active(), 0);
    }
}

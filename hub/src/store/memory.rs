//! The embedded store: per-execution histories in process memory.
//!
//! Appends take one short critical section (no await inside) that assigns the
//! seq, stores the event and hands it to the live feed, so live order always
//! equals seq order. Memory is bounded per execution by a retained-event cap,
//! and histories expire `ttl` after their last event, as they do in Redis.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{EventStore, Page, StoreError, StoreHealth};
use crate::broker::{LiveFeed, Topics};
use crate::event::{NewEvent, SharedEvent};

/// Limits of the in-memory store.
#[derive(Debug, Clone, Copy)]
pub struct MemoryConfig {
    /// A history expires this long after its last event.
    pub ttl: Duration,
    /// At most this many events are retained per execution; older ones are trimmed.
    pub max_events: usize,
}

/// In-process [`EventStore`].
pub struct MemoryStore {
    histories: Mutex<HashMap<String, History>>,
    topics: Arc<Topics>,
    config: MemoryConfig,
}

struct History {
    /// Contiguous events, oldest first.
    events: VecDeque<SharedEvent>,
    last_seq: u64,
    expires_at: Instant,
}

impl History {
    fn oldest_seq(&self) -> Option<u64> {
        self.events.front().map(SharedEvent::seq)
    }
}

impl MemoryStore {
    /// A store announcing appends on `topics`.
    pub fn new(config: MemoryConfig, topics: Arc<Topics>) -> Arc<Self> {
        Arc::new(Self {
            histories: Mutex::new(HashMap::new()),
            topics,
            config,
        })
    }

    /// Frees expired histories periodically until `shutdown` is cancelled.
    /// Reads already ignore expired histories; this only returns the memory.
    pub fn spawn_sweeper(self: &Arc<Self>, shutdown: CancellationToken) {
        let store = Arc::downgrade(self);
        let period =
            (self.config.ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(60));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => match store.upgrade() {
                        Some(store) => store.sweep(),
                        None => return,
                    },
                }
            }
        });
    }

    fn sweep(&self) {
        let now = Instant::now();
        self.lock().retain(|_, history| history.expires_at > now);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, History>> {
        // A panic while holding the lock cannot leave a history half-written
        // (every mutation is a single push/pop), so a poisoned map is usable.
        self.histories
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn append(&self, event: NewEvent) -> Result<SharedEvent, StoreError> {
        let now = Instant::now();
        let mut histories = self.lock();
        let history = histories
            .entry(event.execution_id().to_owned())
            .or_insert_with(|| History {
                events: VecDeque::new(),
                last_seq: 0,
                expires_at: now,
            });
        if history.expires_at <= now {
            // The previous history expired: seqs start again, as after a Redis TTL.
            history.events.clear();
            history.last_seq = 0;
        }
        history.last_seq += 1;
        let numbered = event.numbered(history.last_seq);
        history.events.push_back(numbered.clone());
        while history.events.len() > self.config.max_events {
            history.events.pop_front();
        }
        history.expires_at = now + self.config.ttl;
        self.topics.publish(event.execution_id(), &numbered);
        Ok(numbered)
    }

    async fn range(
        &self,
        execution_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let histories = self.lock();
        let Some(history) = histories
            .get(execution_id)
            .filter(|h| h.expires_at > Instant::now())
        else {
            return Ok(Page::default());
        };
        let oldest = history.oldest_seq();
        let skip = oldest.map_or(0, |oldest| after.saturating_add(1).saturating_sub(oldest));
        let events = history
            .events
            .iter()
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
            .take(limit)
            .cloned()
            .collect();
        Ok(Page {
            events,
            last_seq: history.last_seq,
            oldest_seq: oldest,
        })
    }

    async fn subscribe(&self, execution_id: &str) -> Result<LiveFeed, StoreError> {
        Ok(self.topics.subscribe(execution_id))
    }

    async fn health(&self) -> StoreHealth {
        StoreHealth {
            backend: "memory",
            ok: true,
            detail: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use exechub_protocol::PublishRequest;

    fn store(ttl_secs: u64, max_events: usize) -> Arc<MemoryStore> {
        let config = MemoryConfig {
            ttl: Duration::from_secs(ttl_secs),
            max_events,
        };
        MemoryStore::new(config, Topics::new(16))
    }

    async fn publish(store: &MemoryStore, id: &str) -> u64 {
        let request =
            PublishRequest::from_slice(br#"{"event_type":"t","data":{}}"#).expect("valid");
        store
            .append(NewEvent::encode(id.into(), &request))
            .await
            .expect("append")
            .seq()
    }

    #[tokio::test(start_paused = true)]
    async fn history_expires_ttl_after_the_last_event_and_seqs_restart() {
        let store = store(10, 100);
        assert_eq!(publish(&store, "e").await, 1);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(publish(&store, "e").await, 2);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(
            store.range("e", 0, 10).await.expect("range").events.len(),
            2
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(store.range("e", 0, 10).await.expect("range").last_seq, 0);
        assert_eq!(publish(&store, "e").await, 1);
    }

    #[tokio::test]
    async fn retention_cap_trims_the_oldest_and_reports_it() {
        let store = store(60, 3);
        for _ in 0..5 {
            publish(&store, "e").await;
        }
        let page = store.range("e", 0, 10).await.expect("range");
        let seqs: Vec<u64> = page.events.iter().map(SharedEvent::seq).collect();
        assert_eq!(
            (seqs, page.oldest_seq, page.last_seq),
            (vec![3, 4, 5], Some(3), 5)
        );
        let page = store.range("e", 3, 1).await.expect("range");
        assert_eq!(
            page.events.iter().map(SharedEvent::seq).collect::<Vec<_>>(),
            vec![4]
        );
    }
}

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

use super::{EventStore, Page, Receipt, StoreConfig, StoreError, StoreHealth};
use crate::broker::{LiveFeed, Topics};
use crate::event::{NewEvent, SharedEvent};

/// In-process [`EventStore`].
pub struct MemoryStore {
    histories: Mutex<HashMap<String, History>>,
    topics: Arc<Topics>,
    config: StoreConfig,
}

struct History {
    /// Contiguous events, oldest first.
    events: VecDeque<SharedEvent>,
    last_seq: u64,
    expires_at: Instant,
    /// Idempotency key → (seq, timestamp, remembered until).
    keys: HashMap<String, (u64, String, Instant)>,
}

impl History {
    fn new(now: Instant) -> Self {
        Self {
            events: VecDeque::new(),
            last_seq: 0,
            expires_at: now,
            keys: HashMap::new(),
        }
    }

    fn oldest_seq(&self) -> Option<u64> {
        self.events.front().map(SharedEvent::seq)
    }
}

impl MemoryStore {
    /// A store announcing appends on `topics`.
    pub fn new(config: StoreConfig, topics: Arc<Topics>) -> Arc<Self> {
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
                    () = shutdown.cancelled() => return,
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
        let mut histories = self.lock();
        histories.retain(|_, history| history.expires_at > now);
        for history in histories.values_mut() {
            history.keys.retain(|_, (_, _, until)| *until > now);
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, History>> {
        // Every mutation is a single push/pop/insert, so a panic elsewhere while
        // the lock was held cannot leave a history half-written.
        self.histories
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn append(&self, event: NewEvent) -> Result<Receipt, StoreError> {
        let now = Instant::now();
        let mut histories = self.lock();
        let history = histories
            .entry(event.execution_id().to_owned())
            .or_insert_with(|| History::new(now));
        if history.expires_at <= now {
            // The previous history expired: seqs start again, as after a Redis TTL.
            *history = History::new(now);
        }
        if let Some(key) = event.idempotency_key()
            && let Some((seq, timestamp, until)) = history.keys.get(key)
            && *until > now
        {
            let (seq, timestamp) = (*seq, timestamp.clone());
            return Ok(Receipt {
                seq,
                timestamp,
                duplicate: true,
            });
        }
        history.last_seq += 1;
        let seq = history.last_seq;
        let numbered = event.numbered(seq);
        history.events.push_back(numbered.clone());
        while history.events.len() as u64 > self.config.max_events {
            history.events.pop_front();
        }
        history.expires_at = now + self.config.ttl;
        if let Some(key) = event.idempotency_key() {
            let until = now + self.config.idempotency_window;
            history
                .keys
                .insert(key.to_owned(), (seq, event.timestamp().to_owned(), until));
        }
        self.topics.publish(event.execution_id(), &numbered);
        Ok(Receipt {
            seq,
            timestamp: event.timestamp().to_owned(),
            duplicate: false,
        })
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

    fn store(ttl_secs: u64, max_events: u64) -> Arc<MemoryStore> {
        let config = StoreConfig {
            ttl: Duration::from_secs(ttl_secs),
            max_events,
            idempotency_window: Duration::from_secs(5),
        };
        MemoryStore::new(config, Topics::new(16))
    }

    async fn publish(store: &MemoryStore, id: &str, key: Option<&str>) -> Receipt {
        let request =
            PublishRequest::from_slice(br#"{"event_type":"t","data":{}}"#).expect("valid");
        let event = NewEvent::encode(id.into(), &request).with_idempotency_key(key.map(Into::into));
        store.append(event).await.expect("append")
    }

    #[tokio::test(start_paused = true)]
    async fn history_expires_ttl_after_the_last_event_and_seqs_restart() {
        let store = store(10, 100);
        assert_eq!(publish(&store, "e", None).await.seq, 1);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(publish(&store, "e", None).await.seq, 2);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(
            store.range("e", 0, 10).await.expect("range").events.len(),
            2
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(store.range("e", 0, 10).await.expect("range").last_seq, 0);
        assert_eq!(publish(&store, "e", None).await.seq, 1);
    }

    #[tokio::test]
    async fn retention_cap_trims_the_oldest_and_reports_it() {
        let store = store(60, 3);
        for _ in 0..5 {
            publish(&store, "e", None).await;
        }
        let page = store.range("e", 0, 10).await.expect("range");
        let seqs: Vec<u64> = page.events.iter().map(SharedEvent::seq).collect();
        assert_eq!(
            (seqs, page.oldest_seq, page.last_seq),
            (vec![3, 4, 5], Some(3), 5)
        );
        let page = store.range("e", 3, 1).await.expect("range");
        let seqs: Vec<u64> = page.events.iter().map(SharedEvent::seq).collect();
        assert_eq!(seqs, vec![4]);
    }

    #[tokio::test(start_paused = true)]
    async fn idempotent_retry_returns_the_original_seq_within_the_window() {
        let store = store(60, 100);
        let first = publish(&store, "e", Some("k1")).await;
        let retry = publish(&store, "e", Some("k1")).await;
        assert_eq!(
            (retry.seq, retry.duplicate, retry.timestamp),
            (1, true, first.timestamp)
        );
        assert_eq!(publish(&store, "e", Some("k2")).await.seq, 2);
        assert_eq!(
            store.range("e", 0, 10).await.expect("range").events.len(),
            2
        );
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(publish(&store, "e", Some("k1")).await.seq, 3);
    }
}

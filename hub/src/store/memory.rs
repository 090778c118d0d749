//! The embedded store: per-execution histories in process memory.
//!
//! Appends take one short critical section (no await inside) that assigns the
//! position, stores the event and hands it to the live feeds, so live order
//! always equals seq order. Histories expire `ttl` after their last event, as
//! they do in Redis; each new history gets a new epoch, minted with this
//! process's boot id so a position from before a restart is recognised as
//! such. Memory is bounded twice: per execution by the retained-event cap, and
//! in total by `max_bytes`, beyond which the least recently updated histories
//! are evicted (their subscribers are told, and resume with `history_lost`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use exechub_protocol::execution::RUNNING;
use exechub_protocol::{Event, ExecutionSummary, LostReason};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    BatchReceipt, Change, End, EventStore, ListCursor, Listed, Page, Receipt, StoreConfig,
    StoreError, StoreHealth, Watch,
};
use crate::clock::{now_ms, random_u64, rfc3339_of_ms};
use crate::event::{Epoch, NewBatch, NewEvent, SharedEvent};
use crate::feeds::LiveSink;

/// Bytes counted for an event besides its JSON (shared event, queue slot).
const EVENT_OVERHEAD: usize = 128;
/// Bytes counted for a history besides its events (map entries, epoch).
const HISTORY_OVERHEAD: usize = 256;
/// Bytes counted for a remembered idempotency key besides its text.
const KEY_OVERHEAD: usize = 96;
/// Evicted epochs remembered to name the reason for late resumes.
const EVICTED_MEMORY: usize = 65_536;

/// In-process [`EventStore`].
pub struct MemoryStore {
    state: Mutex<State>,
    sink: Arc<dyn LiveSink>,
    config: StoreConfig,
    /// High half of every epoch this process mints.
    boot: u32,
}

#[derive(Default)]
struct State {
    histories: HashMap<Arc<str>, History>,
    /// Update order for eviction: tick → execution id.
    by_update: BTreeMap<u64, Arc<str>>,
    tick: u64,
    /// Bytes held by all histories, as counted by [`History::bytes`].
    bytes: usize,
    evicted: HashSet<Epoch>,
    /// Executions as wholes; they outlive their histories once ended.
    summaries: HashMap<Arc<str>, Summary>,
    /// `(updated_ms, id)` of every summary: the list of executions.
    listed: BTreeSet<(u64, Arc<str>)>,
}

/// What the store keeps of an execution as a whole.
struct Summary {
    started_ms: u64,
    updated_ms: u64,
    /// When the list last heard of it (activity is announced once a second);
    /// its key in `listed`.
    announced_ms: u64,
    last_seq: u64,
    ended: Option<Ending>,
    expires_at: Instant,
}

/// The terminal event of an ended execution.
struct Ending {
    status: String,
    at_ms: u64,
    event: SharedEvent,
}

struct History {
    epoch: Epoch,
    /// Contiguous events, oldest first.
    events: VecDeque<SharedEvent>,
    last_seq: u64,
    expires_at: Instant,
    /// Idempotency key → what it stored.
    keys: HashMap<String, KeyRecord>,
    tick: u64,
    bytes: usize,
}

/// What an idempotency key stored, and until when it is remembered.
struct KeyRecord {
    first: u64,
    last: u64,
    timestamp: String,
    until: Instant,
}

impl History {
    fn oldest_seq(&self) -> Option<u64> {
        self.events.front().map(SharedEvent::seq)
    }
}

impl State {
    /// Removes a history and its accounting; returns it.
    fn remove(&mut self, execution_id: &str) -> Option<History> {
        let history = self.histories.remove(execution_id)?;
        self.by_update.remove(&history.tick);
        self.bytes -= history.bytes;
        Some(history)
    }

    /// Marks `execution_id` as just updated.
    fn touch(&mut self, execution_id: &Arc<str>) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(history) = self.histories.get_mut(execution_id) {
            self.by_update.remove(&history.tick);
            history.tick = tick;
            self.by_update.insert(tick, Arc::clone(execution_id));
        }
    }

    fn charge(&mut self, execution_id: &str, delta: isize) {
        if let Some(history) = self.histories.get_mut(execution_id) {
            history.bytes = history.bytes.saturating_add_signed(delta);
            self.bytes = self.bytes.saturating_add_signed(delta);
        }
    }
}

impl MemoryStore {
    /// A store announcing appends to `sink`.
    pub fn new(config: StoreConfig, sink: Arc<dyn LiveSink>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::default(),
            sink,
            config,
            boot: random_u64() as u32,
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

    /// Bytes the histories hold now, as counted against `max_bytes`.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn sweep(&self) {
        let now = Instant::now();
        let mut state = self.lock();
        let expired: Vec<Arc<str>> = state
            .histories
            .iter()
            .filter(|(_, h)| h.expires_at <= now)
            .map(|(id, _)| Arc::clone(id))
            .collect();
        for id in expired {
            state.remove(&id);
        }
        let gone: Vec<(u64, Arc<str>)> = state
            .summaries
            .iter()
            .filter(|(_, s)| s.expires_at <= now)
            .map(|(id, s)| (s.announced_ms, Arc::clone(id)))
            .collect();
        for entry in gone {
            state.summaries.remove(&entry.1);
            state.listed.remove(&entry);
        }
        let mut delta: isize = 0;
        for (id, history) in &mut state.histories {
            let before = history.keys.len();
            history.keys.retain(|_, record| record.until > now);
            if history.keys.len() < before {
                let bytes = history_bytes(id, history);
                delta += bytes as isize - history.bytes as isize;
                history.bytes = bytes;
            }
        }
        state.bytes = state.bytes.saturating_add_signed(delta);
    }

    /// Drops the least recently updated histories (never `keep`) until the
    /// total is within `max_bytes`, and tells their subscribers.
    fn evict(&self, state: &mut State, keep: &str) {
        while state.bytes > self.config.max_bytes {
            let Some(oldest) = state.by_update.values().find(|id| &***id != keep).cloned() else {
                return;
            };
            if let Some(history) = state.remove(&oldest) {
                if state.evicted.len() >= EVICTED_MEMORY {
                    state.evicted.clear();
                }
                state.evicted.insert(history.epoch);
                tracing::debug!(execution_id = %oldest, "history evicted to stay within the memory bound");
                self.sink.head(&oldest, None, 0);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation is a few inserts and removals that cannot panic midway.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What a history is charged against the memory bound.
fn history_bytes(execution_id: &str, history: &History) -> usize {
    let events: usize = history
        .events
        .iter()
        .map(|e| e.json().len() + EVENT_OVERHEAD)
        .sum();
    let keys: usize = history
        .keys
        .iter()
        .map(|(k, record)| k.len() + record.timestamp.len() + KEY_OVERHEAD)
        .sum();
    HISTORY_OVERHEAD + execution_id.len() + events + keys
}

/// The history `history_for` just made sure of.
fn history_mut<'a>(
    state: &'a mut State,
    execution_id: &str,
) -> Result<&'a mut History, StoreError> {
    state
        .histories
        .get_mut(execution_id)
        .ok_or_else(|| StoreError::Rejected("history vanished under the store lock".into()))
}

/// The receipt of the earlier append with idempotency key `idem`, while it
/// is remembered.
fn replay(history: &History, idem: Option<&str>, now: Instant) -> Option<BatchReceipt> {
    let record = history.keys.get(idem?)?;
    (record.until > now).then(|| BatchReceipt {
        epoch: history.epoch.clone(),
        first_seq: record.first,
        last_seq: record.last,
        timestamp: record.timestamp.clone(),
        duplicate: true,
        change: Change::None,
    })
}

impl MemoryStore {
    /// Appends `events` (one or a batch) under one lock, or finds the earlier
    /// append with the same idempotency key (`idem`, already namespaced).
    fn append_all(
        &self,
        execution_id: &str,
        idem: Option<String>,
        events: &[NewEvent],
    ) -> Result<BatchReceipt, StoreError> {
        let now = Instant::now();
        let mut state = self.lock();
        let key = self.history_for(&mut state, execution_id, now);
        if let Some(replay) = replay(history_mut(&mut state, execution_id)?, idem.as_deref(), now) {
            return Ok(replay);
        }
        self.refuse_after_end(&mut state, execution_id)?;
        let history = history_mut(&mut state, execution_id)?;
        let epoch = history.epoch.clone();
        let first_seq = history.last_seq + 1;
        let (numbered, mut delta) = self.number(history, &epoch, events);
        history.expires_at = now + self.config.ttl;
        let last_seq = history.last_seq;
        let timestamp = events
            .first()
            .map(|e| e.timestamp().to_owned())
            .unwrap_or_default();
        if let Some(idem) = idem {
            delta += (idem.len() + timestamp.len() + KEY_OVERHEAD) as isize;
            let record = KeyRecord {
                first: first_seq,
                last: last_seq,
                timestamp: timestamp.clone(),
                until: now + self.config.idempotency_window,
            };
            history.keys.insert(idem, record);
        }
        state.charge(execution_id, delta);
        state.touch(&key);
        let change = self.summarize(&mut state, &key, events, &numbered, now);
        // Announced under the lock, so live order is seq order.
        for shared in &numbered {
            self.sink.event(execution_id, shared);
        }
        self.evict(&mut state, execution_id);
        Ok(BatchReceipt {
            epoch,
            first_seq,
            last_seq,
            timestamp,
            duplicate: false,
            change,
        })
    }

    /// Refuses an append to an execution that has ended, unless the end is
    /// not final; a history that the refused append just created goes again.
    fn refuse_after_end(&self, state: &mut State, execution_id: &str) -> Result<(), StoreError> {
        if !self.config.after_end.is_final() {
            return Ok(());
        }
        let Some(ending) = state
            .summaries
            .get(execution_id)
            .and_then(|s| s.ended.as_ref())
        else {
            return Ok(());
        };
        let status = ending.status.clone();
        if state
            .histories
            .get(execution_id)
            .is_some_and(|h| h.last_seq == 0)
        {
            state.remove(execution_id);
        }
        Err(StoreError::Ended { status })
    }

    /// Numbers `events` onto `history` and trims it to the retained count:
    /// the stored events, and the bytes the history grew by.
    fn number(
        &self,
        history: &mut History,
        epoch: &Epoch,
        events: &[NewEvent],
    ) -> (Vec<SharedEvent>, isize) {
        let mut delta = 0_isize;
        let mut numbered = Vec::with_capacity(events.len());
        for event in events {
            history.last_seq += 1;
            let shared = event.numbered(epoch.clone(), history.last_seq);
            delta += (shared.json().len() + EVENT_OVERHEAD) as isize;
            history.events.push_back(shared.clone());
            numbered.push(shared);
        }
        while history.events.len() as u64 > self.config.max_events {
            if let Some(trimmed) = history.events.pop_front() {
                delta -= (trimmed.json().len() + EVENT_OVERHEAD) as isize;
            }
        }
        (numbered, delta)
    }

    /// Updates the summary of `id` after `events` were stored as `numbered`,
    /// and says what the list of executions should hear of it.
    fn summarize(
        &self,
        state: &mut State,
        id: &Arc<str>,
        events: &[NewEvent],
        numbered: &[SharedEvent],
        now: Instant,
    ) -> Change {
        let now_ms = now_ms();
        let Some(last) = numbered.last() else {
            return Change::None;
        };
        let ending = events
            .iter()
            .zip(numbered)
            .find_map(|(event, shared)| event.ending().map(|status| (status, shared)));
        let fresh = !state.summaries.contains_key(id);
        let summary = state.summaries.entry(Arc::clone(id)).or_insert(Summary {
            started_ms: now_ms,
            updated_ms: now_ms,
            announced_ms: now_ms,
            last_seq: 0,
            ended: None,
            expires_at: now,
        });
        let mut change = if fresh {
            Change::Started
        } else if now_ms.saturating_sub(summary.announced_ms) >= 1_000 {
            Change::Activity
        } else {
            Change::None
        };
        summary.updated_ms = now_ms;
        summary.last_seq = last.seq();
        if summary.ended.is_none()
            && let Some((status, event)) = ending
        {
            summary.ended = Some(Ending {
                status: status.to_owned(),
                at_ms: now_ms,
                event: event.clone(),
            });
            change = Change::Ended;
        }
        let final_ttl = summary
            .ended
            .as_ref()
            .map_or(Duration::ZERO, |_| self.config.final_state_ttl);
        summary.expires_at = now + self.config.ttl + final_ttl;
        if change != Change::None {
            let previous = std::mem::replace(&mut summary.announced_ms, now_ms);
            self.announce(state, id, previous, now_ms);
        }
        change
    }

    /// Moves `id` in the list of executions, from `previous` to `now_ms`. The
    /// list moves with announcements, as in Redis: at most once a second per
    /// execution, and at its start and end. It is bounded (with the summaries
    /// it names): the least recently updated executions leave it first.
    fn announce(&self, state: &mut State, id: &Arc<str>, previous: u64, now_ms: u64) {
        state.listed.remove(&(previous, Arc::clone(id)));
        state.listed.insert((now_ms, Arc::clone(id)));
        while state.summaries.len() > self.config.max_listed {
            let Some(oldest) = state.listed.pop_first() else {
                break;
            };
            state.summaries.remove(&oldest.1);
        }
    }

    /// The summary of `id` as the protocol shows it.
    fn summary_of(state: &State, id: &str, now: Instant) -> Option<ExecutionSummary> {
        let summary = state.summaries.get(id).filter(|s| s.expires_at > now)?;
        let history = state.histories.get(id).filter(|h| h.expires_at > now);
        let first_seq = history.and_then(History::oldest_seq).unwrap_or(0);
        let retained = history.map_or(0, |h| h.events.len() as u64);
        let final_event = summary
            .ended
            .as_ref()
            .and_then(|e| serde_json::from_slice::<Event>(e.event.json()).ok());
        Some(ExecutionSummary {
            execution_id: id.to_owned(),
            status: summary
                .ended
                .as_ref()
                .map_or_else(|| RUNNING.to_owned(), |e| e.status.clone()),
            ended: summary.ended.is_some(),
            epoch: history.map(|h| h.epoch.to_string()),
            first_seq,
            last_seq: summary.last_seq,
            events: retained,
            started_at: rfc3339_of_ms(summary.started_ms),
            updated_at: rfc3339_of_ms(summary.updated_ms),
            ended_at: summary.ended.as_ref().map(|e| rfc3339_of_ms(e.at_ms)),
            final_event,
        })
    }

    /// The live history of `execution_id` (a new one, with a new epoch, when
    /// there is none or it expired), and its key.
    fn history_for(&self, state: &mut State, execution_id: &str, now: Instant) -> Arc<str> {
        if state
            .histories
            .get(execution_id)
            .is_some_and(|h| h.expires_at <= now)
        {
            // The previous history expired: a new one starts, as after a Redis TTL.
            state.remove(execution_id);
        }
        if let Some((key, _)) = state.histories.get_key_value(execution_id) {
            return Arc::clone(key);
        }
        let key: Arc<str> = Arc::from(execution_id);
        let history = History {
            epoch: Epoch::mint(self.boot),
            events: VecDeque::new(),
            last_seq: 0,
            expires_at: now,
            keys: HashMap::new(),
            tick: 0,
            bytes: 0,
        };
        state.histories.insert(Arc::clone(&key), history);
        state.charge(
            execution_id,
            (HISTORY_OVERHEAD + execution_id.len()) as isize,
        );
        key
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn append(&self, event: NewEvent) -> Result<Receipt, StoreError> {
        let idem = event.idempotency_key().map(str::to_owned);
        let receipt = self.append_all(event.execution_id(), idem, std::slice::from_ref(&event))?;
        Ok(Receipt {
            epoch: receipt.epoch,
            seq: receipt.last_seq,
            timestamp: receipt.timestamp,
            duplicate: receipt.duplicate,
            change: receipt.change,
        })
    }

    async fn append_batch(&self, batch: NewBatch) -> Result<BatchReceipt, StoreError> {
        // Batch keys live apart from single-publish keys, as in Redis.
        let idem = batch.idempotency_key().map(|key| format!("batch:{key}"));
        self.append_all(batch.execution_id(), idem, batch.events())
    }

    async fn range(
        &self,
        execution_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let state = self.lock();
        let now = Instant::now();
        let ended = state
            .summaries
            .get(execution_id)
            .filter(|s| s.expires_at > now)
            .and_then(|s| s.ended.as_ref())
            .map(|e| End {
                status: e.status.clone(),
                seq: e.event.seq(),
            });
        let Some(history) = state
            .histories
            .get(execution_id)
            .filter(|h| h.expires_at > now)
        else {
            return Ok(Page {
                ended,
                ..Page::default()
            });
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
            epoch: Some(history.epoch.clone()),
            ended,
        })
    }

    async fn summary(&self, execution_id: &str) -> Result<Option<ExecutionSummary>, StoreError> {
        Ok(Self::summary_of(&self.lock(), execution_id, Instant::now()))
    }

    async fn recent(
        &self,
        cursor: Option<&ListCursor>,
        count: usize,
    ) -> Result<Vec<Listed>, StoreError> {
        let state = self.lock();
        let now = Instant::now();
        let entries: Box<dyn Iterator<Item = &(u64, Arc<str>)>> = match cursor {
            Some(cursor) => {
                let bound = (
                    cursor.updated_ms,
                    Arc::<str>::from(cursor.execution_id.as_str()),
                );
                Box::new(state.listed.range(..bound).rev())
            }
            None => Box::new(state.listed.iter().rev()),
        };
        Ok(entries
            .filter_map(|(ms, id)| {
                let summary = Self::summary_of(&state, id, now)?;
                let cursor = ListCursor {
                    updated_ms: *ms,
                    execution_id: id.to_string(),
                };
                Some(Listed { cursor, summary })
            })
            .take(count)
            .collect())
    }

    /// An append is done in its first poll, under the store's lock.
    fn keeps_order(&self) -> bool {
        true
    }

    fn watch(&self, _execution_id: &str) -> Watch {
        // Every append of this store is announced by `append` itself.
        Watch::local()
    }

    fn lost_reason(&self, epoch: &Epoch) -> LostReason {
        let ours = epoch
            .as_str()
            .get(..8)
            .is_some_and(|boot| boot == format!("{:08x}", self.boot));
        if !ours || self.lock().evicted.contains(epoch) {
            LostReason::Reset
        } else {
            LostReason::Expired
        }
    }

    async fn health(&self) -> StoreHealth {
        StoreHealth {
            backend: "memory",
            ok: true,
            detail: None,
            shards: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feeds::Feeds;
    use exechub_protocol::PublishRequest;

    fn store(ttl_secs: u64, max_events: u64, max_bytes: usize) -> Arc<MemoryStore> {
        let config = StoreConfig {
            ttl: Duration::from_secs(ttl_secs),
            max_events,
            idempotency_window: Duration::from_secs(5),
            max_bytes,
            final_state_ttl: Duration::from_secs(60),
            after_end: crate::lifecycle::AfterEnd::Final,
            max_listed: 1000,
        };
        MemoryStore::new(config, Feeds::new())
    }

    async fn publish(store: &MemoryStore, id: &str, key: Option<&str>) -> Receipt {
        let request =
            PublishRequest::from_slice(br#"{"event_type":"t","data":{}}"#).expect("valid");
        let event = NewEvent::encode(id.into(), &request).with_idempotency_key(key.map(Into::into));
        store.append(event).await.expect("append")
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_starts_a_new_epoch_and_names_the_old_one_expired() {
        let store = store(10, 100, usize::MAX);
        let first = publish(&store, "e", None).await;
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(store.range("e", 0, 10).await.expect("range").epoch, None);
        let second = publish(&store, "e", None).await;
        assert_eq!(second.seq, 1);
        assert_ne!(first.epoch, second.epoch);
        assert_eq!(store.lost_reason(&first.epoch), LostReason::Expired);
        let foreign = Epoch::parse("0123456789abcdef").expect("epoch");
        assert_eq!(store.lost_reason(&foreign), LostReason::Reset);
    }

    #[tokio::test]
    async fn memory_bound_evicts_the_least_recently_updated() {
        let store = store(60, 100, 2_000);
        for id in ["a", "b", "c", "d", "e", "f"] {
            publish(&store, id, None).await;
        }
        let kept: Vec<bool> = futures_util::future::join_all(
            ["a", "f"]
                .map(|id| async { store.range(id, 0, 1).await.expect("range").epoch.is_some() }),
        )
        .await;
        assert_eq!(kept, vec![false, true]);
        assert!(store.bytes() <= 2_000, "{}", store.bytes());
    }

    #[tokio::test]
    async fn retention_cap_trims_the_oldest_and_reports_it() {
        let store = store(60, 3, usize::MAX);
        for _ in 0..5 {
            publish(&store, "e", None).await;
        }
        let page = store.range("e", 0, 10).await.expect("range");
        let seqs: Vec<u64> = page.events.iter().map(SharedEvent::seq).collect();
        assert_eq!(
            (seqs, page.oldest_seq, page.last_seq),
            (vec![3, 4, 5], Some(3), 5)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idempotent_retry_returns_the_original_seq_within_the_window() {
        let store = store(60, 100, usize::MAX);
        let first = publish(&store, "e", Some("k1")).await;
        let retry = publish(&store, "e", Some("k1")).await;
        assert_eq!(
            (retry.seq, retry.duplicate, retry.timestamp),
            (1, true, first.timestamp)
        );
        assert_eq!(publish(&store, "e", Some("k2")).await.seq, 2);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(publish(&store, "e", Some("k1")).await.seq, 3);
    }
}

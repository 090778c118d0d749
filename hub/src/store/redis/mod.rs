//! The Redis store: the replaced service's list `execution:<id>:events`,
//! shared by every hub node.
//!
//! Both the append and the range read are Lua scripts, so seq assignment, the
//! epoch, list order, trimming and the pub/sub announcement are one atomic
//! step, and a read sees a consistent (epoch, oldest, last) triple. The key
//! layout is in [`keys`]; the pub/sub side, which brings other nodes' appends
//! to this node's live feeds, is the [`bridge`]. On one Redis, concurrent
//! appends go out grouped, one script call for many (`appender`).
//!
//! Items in the list that are not the hub's (no leading `{"seq":N`, e.g.
//! written by the replaced service or by hand) are skipped, counted and
//! logged once per execution; they never make a read fail.

mod appender;
pub mod bridge;
pub mod connection;
pub mod keys;
mod relay;
pub mod sharded;
mod shards;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::{ProtocolVersion, RedisError, RetryMethod, Script};
use tokio_util::sync::CancellationToken;

use exechub_protocol::execution::RUNNING;
use exechub_protocol::{Event, ExecutionSummary};

use super::{
    BatchReceipt, Change, End, EventStore, ListCursor, Listed, Page, Receipt, StoreConfig,
    StoreError, StoreHealth, Watch,
};
use crate::clock::{now_ms, rfc3339_of_ms};
use crate::event::{Epoch, NewBatch, NewEvent, SharedEvent, seq_of};
use crate::feeds::LiveSink;
use appender::{
    Announce, AppendArgs, Appender, BatchArgs, Outcome, Scripts, append_batch, append_group,
};
use bridge::Bridge;
use connection::RedisConnection;
use keys::{
    EXECUTIONS_INDEX, batch_idempotency_key, channel, epoch_key, events_key, idempotency_key,
    seq_key, summary_key,
};
use sharded::ShardedBridge;
use shards::Replicas;

/// The helpers every append script starts with.
const COMMON: &str = include_str!("lua/common.lua");
/// Appends single events, grouped or alone (after [`COMMON`]).
const APPEND: &str = include_str!("lua/append.lua");
/// Appends a batch with consecutive seqs (after [`COMMON`]).
const APPEND_BATCH: &str = include_str!("lua/append_batch.lua");
/// An execution's summary with its retained count, oldest seq and epoch.
const SUMMARY: &str = include_str!("lua/summary.lua");
/// A page of events after a seq, with the history's bounds and end.
const RANGE: &str = include_str!("lua/range.lua");

/// Executions whose foreign items were already logged (bounded).
const FOREIGN_LOGGED: usize = 1024;

/// Where the Redis store keeps its events.
#[derive(Debug, Clone)]
pub enum RedisTarget {
    /// One Redis server, by URL; classic pub/sub.
    Single(String),
    /// A Redis Cluster, by seed node URLs; sharded pub/sub (Redis ≥ 7).
    Cluster(Vec<String>),
}

/// How the Redis store connects.
#[derive(Debug, Clone)]
pub struct RedisSetup {
    /// One Redis or a cluster.
    pub target: RedisTarget,
    /// Replicas that must acknowledge an append before it is acknowledged
    /// (`WAIT`), so it survives a failover; 0 for none.
    pub wait_replicas: u32,
}

/// The live side: classic pub/sub on one Redis, sharded on a cluster.
enum LiveBridge {
    Classic(Bridge),
    Sharded(ShardedBridge),
}

/// [`EventStore`] on Redis, with live events from the pub/sub [`Bridge`]
/// (one Redis) or the [`ShardedBridge`] (Redis Cluster).
pub struct RedisStore {
    connection: RedisConnection,
    bridge: LiveBridge,
    wait_replicas: u32,
    config: StoreConfig,
    /// The append scripts, for a cluster (one Redis appends through the appender).
    scripts: Scripts,
    /// Groups concurrent appends into one call (one Redis; `None` on a cluster).
    appender: Option<Appender>,
    range: Script,
    summary: Script,
    /// Items skipped because they are not the hub's.
    foreign: AtomicU64,
    foreign_logged: Mutex<HashSet<String>>,
}

impl RedisStore {
    /// Connects to `url` and starts the pub/sub bridge feeding `sink`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when Redis cannot be reached at start-up,
    /// [`StoreError::Rejected`] when the URL is invalid.
    pub async fn connect(
        url: &str,
        config: StoreConfig,
        sink: Arc<dyn LiveSink>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, StoreError> {
        let setup = RedisSetup {
            target: RedisTarget::Single(url.to_owned()),
            wait_replicas: 0,
        };
        Self::open(&setup, config, sink, shutdown).await
    }

    /// Connects to one Redis or a cluster as `setup` says, and starts the
    /// live bridge feeding `sink`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when Redis cannot be reached at start-up,
    /// [`StoreError::Rejected`] when a URL is invalid.
    pub async fn open(
        setup: &RedisSetup,
        config: StoreConfig,
        sink: Arc<dyn LiveSink>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, StoreError> {
        let (connection, bridge) = match &setup.target {
            RedisTarget::Single(url) => Self::single(url, sink, shutdown).await?,
            RedisTarget::Cluster(nodes) => Self::cluster(nodes, sink, shutdown).await?,
        };
        let announce = match bridge {
            LiveBridge::Classic(_) => Announce::Publish,
            LiveBridge::Sharded(_) => Announce::SPublish,
        };
        let scripts = Scripts {
            many: Script::new(&format!("{COMMON}{APPEND}")),
            batch: Script::new(&format!("{COMMON}{APPEND_BATCH}")),
            announce,
        };
        let appender = match bridge {
            LiveBridge::Classic(_) => {
                Some(Appender::spawn(connection.clone(), scripts.clone(), config))
            }
            LiveBridge::Sharded(_) => None,
        };
        Ok(Arc::new(Self {
            scripts,
            appender,
            range: Script::new(RANGE),
            summary: Script::new(SUMMARY),
            connection,
            bridge,
            wait_replicas: setup.wait_replicas,
            config,
            foreign: AtomicU64::new(0),
            foreign_logged: Mutex::default(),
        }))
    }

    /// One Redis: a reconnecting connection and the classic pub/sub bridge.
    async fn single(
        url: &str,
        sink: Arc<dyn LiveSink>,
        shutdown: CancellationToken,
    ) -> Result<(RedisConnection, LiveBridge), StoreError> {
        let client = redis::Client::open(url).map_err(store_error)?;
        let settings = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            // One reconnect attempt per failing command: during an outage a
            // publish should answer 503 at once, not after a retry ladder.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2));
        let connection = ConnectionManager::new_with_config(client.clone(), settings)
            .await
            .map_err(store_error)?;
        let bridge = Bridge::spawn(client, connection.clone(), sink, shutdown);
        Ok((
            RedisConnection::Single(connection),
            LiveBridge::Classic(bridge),
        ))
    }

    /// A Redis Cluster: a connection that follows the topology, speaking
    /// RESP3 so sharded pub/sub messages arrive as pushes, and the sharded
    /// bridge.
    async fn cluster(
        nodes: &[String],
        sink: Arc<dyn LiveSink>,
        shutdown: CancellationToken,
    ) -> Result<(RedisConnection, LiveBridge), StoreError> {
        let (pushes_to, pushes) = tokio::sync::mpsc::unbounded_channel();
        let client = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
            .use_protocol(ProtocolVersion::RESP3)
            .push_sender(pushes_to)
            .connection_timeout(Duration::from_secs(2))
            .response_timeout(Duration::from_secs(2))
            // Enough to follow MOVED/ASK during a slot migration; a shard
            // that is down should answer 503 soon, not after a retry ladder.
            .retries(3)
            .min_retry_wait(50)
            .max_retry_wait(500)
            .build()
            .map_err(store_error)?;
        let connection = client.get_async_connection().await.map_err(store_error)?;
        let replicas = Replicas::track(connection.clone(), shutdown.clone()).await;
        let bridge = ShardedBridge::spawn(connection.clone(), pushes, sink, shutdown);
        Ok((
            RedisConnection::Cluster(connection, replicas),
            LiveBridge::Sharded(bridge),
        ))
    }

    /// Puts an execution the script says changed (`change`: 0 none, 1
    /// started, 2 activity, 3 ended) at the head of the list of executions.
    /// The list is its own key (another Cluster slot), so this is a second
    /// command, sent at most once a second per execution; a failure only
    /// delays the list, never the publish.
    async fn announce(&self, execution_id: &str, change: u8, now: u64) -> Change {
        let change = match change {
            1 => Change::Started,
            2 => Change::Activity,
            3 => Change::Ended,
            _ => return Change::None,
        };
        let mut connection = self.connection.clone();
        let mut pipe = redis::pipe();
        pipe.cmd("ZADD")
            .arg(EXECUTIONS_INDEX)
            .arg(now)
            .arg(execution_id)
            .ignore()
            .cmd("ZREMRANGEBYRANK")
            .arg(EXECUTIONS_INDEX)
            .arg(0)
            .arg(-1 - i64::try_from(self.config.max_listed).unwrap_or(i64::MAX - 1))
            .ignore();
        if let Err(error) = pipe.query_async::<()>(&mut connection).await {
            tracing::debug!(%error, %execution_id, "could not update the list of executions");
        }
        change
    }

    /// Items skipped so far because they are not the hub's.
    pub fn foreign_items(&self) -> u64 {
        self.foreign.load(Ordering::Relaxed)
    }

    /// Finishes an append of execution `id` the script answered: a refusal
    /// after the end is [`StoreError::Ended`]; otherwise it waits for
    /// replicas as configured and announces the change. Returns the
    /// script's receipt text, the epoch, whether it was a replay, and the change.
    async fn finish_append(
        &self,
        id: &str,
        (outcome, receipt, epoch, change): Outcome,
        now: u64,
    ) -> Result<(String, String, bool, Change), StoreError> {
        match outcome {
            2 => return Err(StoreError::Ended { status: receipt }),
            3 => return Err(StoreError::Rejected(receipt)),
            _ => {}
        }
        self.connection
            .wait_replicas(&events_key(id), self.wait_replicas)
            .await?;
        let change = self.announce(id, change, now).await;
        Ok((receipt, epoch, outcome == 1, change))
    }

    /// Counts a foreign item, and logs the first one of each execution.
    fn skip_foreign(&self, execution_id: &str) {
        self.foreign.fetch_add(1, Ordering::Relaxed);
        let mut logged = self
            .foreign_logged
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if logged.len() >= FOREIGN_LOGGED {
            logged.clear();
        }
        if logged.insert(execution_id.to_owned()) {
            tracing::warn!(%execution_id, "skipping list items that are not the hub's events (no leading seq)");
        }
    }
}

impl RedisStore {
    /// Up to `want` entries of the list of executions (id, last update in
    /// ms), newest first, from `position`'s score down (ties included: the
    /// caller skips those it has seen).
    async fn index_page(
        &self,
        position: Option<&ListCursor>,
        want: usize,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let max = position.map_or_else(|| "+inf".to_owned(), |p| p.updated_ms.to_string());
        redis::cmd("ZREVRANGEBYSCORE")
            .arg(EXECUTIONS_INDEX)
            .arg(max)
            .arg("-inf")
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(want)
            .query_async(&mut self.connection.clone())
            .await
            .map_err(store_error)
    }
}

#[async_trait]
impl EventStore for RedisStore {
    async fn append(&self, event: NewEvent) -> Result<Receipt, StoreError> {
        let id = event.execution_id();
        let now = now_ms();
        let idem = event.idempotency_key().map(|key| idempotency_key(id, key));
        let args = AppendArgs {
            keys: append_keys(id),
            // The timestamp is only kept in the idempotency record.
            timestamp: match idem {
                Some(_) => event.timestamp().to_owned(),
                None => String::new(),
            },
            idem,
            tail: event.tail().clone(),
            channel: channel(id),
            ending: event.ending().unwrap_or_default().to_owned(),
        };
        let outcome = match &self.appender {
            Some(appender) => appender.append(args).await?,
            None => {
                let mut connection = self.connection.clone();
                let events = std::iter::once(&args);
                let outcomes = append_group(&self.scripts, &mut connection, &self.config, events);
                outcomes
                    .await?
                    .pop()
                    .ok_or_else(|| StoreError::Corrupt("no answer to an append".into()))??
            }
        };
        let (receipt, epoch, duplicate, change) = self.finish_append(id, outcome, now).await?;
        let mut receipt = parse_receipt(&receipt, &epoch, event.timestamp(), duplicate)?;
        receipt.change = change;
        Ok(receipt)
    }

    async fn append_batch(&self, batch: NewBatch) -> Result<BatchReceipt, StoreError> {
        let id = batch.execution_id();
        let now = now_ms();
        let events = batch.events();
        // The tails joined by newlines: the pub/sub message carries them
        // as they are (JSON escapes its own newlines).
        let mut joined = Vec::with_capacity(events.iter().map(|e| e.tail().len() + 1).sum());
        for (i, event) in events.iter().enumerate() {
            if i > 0 {
                joined.push(b'\n');
            }
            joined.extend_from_slice(event.tail());
        }
        let args = BatchArgs {
            keys: append_keys(id),
            idem: batch
                .idempotency_key()
                .map(|key| batch_idempotency_key(id, key)),
            channel: channel(id),
            joined,
            first_timestamp: events.first().map_or("", |e| e.timestamp()).to_owned(),
            // Only the last event of a batch may end the execution (the publisher checks).
            ending: events
                .last()
                .and_then(NewEvent::ending)
                .unwrap_or_default()
                .to_owned(),
            tails: events.iter().map(|event| event.tail().clone()).collect(),
        };
        let outcome = match &self.appender {
            Some(appender) => appender.append_batch(args).await?,
            None => {
                let mut connection = self.connection.clone();
                append_batch(&self.scripts, &mut connection, &self.config, &args).await?
            }
        };
        let (receipt, epoch, duplicate, change) = self.finish_append(id, outcome, now).await?;
        let mut receipt = parse_batch_receipt(&receipt, &epoch, duplicate)?;
        receipt.change = change;
        Ok(receipt)
    }

    async fn range(
        &self,
        execution_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let mut connection = self.connection.clone();
        let (last_seq, oldest, epoch, items, status, end_seq): (
            u64,
            u64,
            String,
            Vec<Vec<u8>>,
            String,
            u64,
        ) = self
            .range
            .key(events_key(execution_id))
            .key(seq_key(execution_id))
            .key(epoch_key(execution_id))
            .key(summary_key(execution_id))
            .arg(after)
            .arg(limit)
            .invoke_async(&mut connection)
            .await
            .map_err(store_error)?;
        // Without an epoch there is no history (or one written before epochs
        // existed; its first append here gives it one).
        let epoch = Epoch::parse(&epoch);
        let mut events = Vec::with_capacity(items.len());
        for json in items {
            match (seq_of(&json), &epoch) {
                (Some(seq), Some(epoch)) if seq > after => {
                    events.push(SharedEvent::new(epoch.clone(), seq, Bytes::from(json)));
                }
                (Some(_), _) => {}
                (None, _) => self.skip_foreign(execution_id),
            }
        }
        let ended = (!status.is_empty()).then_some(End {
            status,
            seq: end_seq,
        });
        Ok(Page {
            events,
            last_seq,
            oldest_seq: (oldest > 0).then_some(oldest),
            epoch,
            ended,
        })
    }

    async fn summary(&self, execution_id: &str) -> Result<Option<ExecutionSummary>, StoreError> {
        let mut connection = self.connection.clone();
        let (fields, retained, oldest, epoch): (HashMap<String, Vec<u8>>, u64, u64, String) = self
            .summary
            .key(summary_key(execution_id))
            .key(events_key(execution_id))
            .key(epoch_key(execution_id))
            .invoke_async(&mut connection)
            .await
            .map_err(store_error)?;
        summary_of(execution_id, &fields, retained, oldest, epoch)
    }

    async fn recent(
        &self,
        cursor: Option<&ListCursor>,
        count: usize,
    ) -> Result<Vec<Listed>, StoreError> {
        let mut listed = Vec::with_capacity(count);
        let mut position = cursor.cloned();
        while listed.len() < count {
            // Ties on the score are skipped by id; fetch a little more than asked.
            let want = count - listed.len() + 8;
            let entries = self.index_page(position.as_ref(), want).await?;
            let exhausted = entries.len() < want;
            let fresh: Vec<(String, u64)> = entries
                .into_iter()
                .filter(|(id, ms)| position.as_ref().is_none_or(|p| p.is_before(id, *ms)))
                .collect();
            if fresh.is_empty() {
                break;
            }
            let summaries =
                futures_util::future::join_all(fresh.iter().map(|(id, _)| self.summary(id))).await;
            for ((id, ms), summary) in fresh.into_iter().zip(summaries) {
                position = Some(ListCursor {
                    updated_ms: ms,
                    execution_id: id.clone(),
                });
                match summary? {
                    Some(summary) if listed.len() < count => listed.push(Listed {
                        cursor: ListCursor {
                            updated_ms: ms,
                            execution_id: id,
                        },
                        summary,
                    }),
                    Some(_) => {}
                    // Expired: drop it from the list as well.
                    None => {
                        let _: Result<u64, _> = redis::cmd("ZREM")
                            .arg(EXECUTIONS_INDEX)
                            .arg(&id)
                            .query_async(&mut self.connection.clone())
                            .await;
                    }
                }
            }
            if exhausted {
                break;
            }
        }
        Ok(listed)
    }

    fn is_shared(&self) -> bool {
        true
    }

    /// With one Redis every append goes through the appender's queue, in
    /// order; a cluster's appends go out on their own (and may be retried
    /// on another node), so there one publish at a time.
    fn keeps_order(&self) -> bool {
        self.appender.is_some()
    }

    fn watch(&self, execution_id: &str) -> Watch {
        match &self.bridge {
            LiveBridge::Classic(bridge) => bridge.watch(execution_id),
            LiveBridge::Sharded(bridge) => bridge.watch(execution_id),
        }
    }

    async fn health(&self) -> StoreHealth {
        let bridge = match &self.bridge {
            LiveBridge::Classic(bridge) => bridge,
            LiveBridge::Sharded(bridge) => return bridge.health().await,
        };
        let mut connection = self.connection.clone();
        let command = redis::cmd("PING");
        let ping = command.query_async::<String>(&mut connection);
        let detail = match tokio::time::timeout(Duration::from_secs(1), ping).await {
            Ok(Ok(_)) if bridge.is_connected() => None,
            Ok(Ok(_)) => Some("pub/sub connection is down; reconnecting".to_owned()),
            Ok(Err(error)) => Some(format!("redis: {error}")),
            Err(_) => Some("redis did not answer PING within 1s".to_owned()),
        };
        StoreHealth {
            backend: "redis",
            ok: detail.is_none(),
            detail,
            shards: None,
        }
    }
}

/// The keys both append scripts take first, all in the execution's slot:
/// the list, seq, epoch and summary (the idempotency record follows when
/// there is one).
fn append_keys(id: &str) -> [String; 4] {
    [events_key(id), seq_key(id), epoch_key(id), summary_key(id)]
}

/// An append's receipt as a [`Receipt`]: `seq` (a new event: its epoch is
/// the one the script answered, its timestamp the event's), or a replay's
/// record, `seq|epoch|timestamp` (or, from before epochs, `seq|timestamp`).
fn parse_receipt(
    receipt: &str,
    epoch: &str,
    timestamp: &str,
    duplicate: bool,
) -> Result<Receipt, StoreError> {
    let corrupt = || StoreError::Corrupt(format!("append receipt {receipt:?}"));
    let (seq, rest) = receipt.split_once('|').unwrap_or((receipt, ""));
    let seq: u64 = seq.parse().map_err(|_| corrupt())?;
    let (epoch, timestamp) = match rest.split_once('|') {
        Some((epoch, timestamp)) if Epoch::parse(epoch).is_some() => (epoch, timestamp),
        _ if rest.is_empty() => (epoch, timestamp),
        _ => (epoch, rest),
    };
    Ok(Receipt {
        epoch: Epoch::parse(epoch).ok_or_else(corrupt)?,
        seq,
        timestamp: timestamp.to_owned(),
        duplicate,
        change: Change::None,
    })
}

/// `first-last|epoch|timestamp` as a [`BatchReceipt`].
fn parse_batch_receipt(
    receipt: &str,
    epoch: &str,
    duplicate: bool,
) -> Result<BatchReceipt, StoreError> {
    let corrupt = || StoreError::Corrupt(format!("batch receipt {receipt:?}"));
    let mut parts = receipt.splitn(3, '|');
    let (range, stored_epoch, timestamp) = (parts.next(), parts.next(), parts.next());
    let (first, last) = range.and_then(|r| r.split_once('-')).ok_or_else(corrupt)?;
    let epoch = stored_epoch
        .and_then(Epoch::parse)
        .or_else(|| Epoch::parse(epoch));
    Ok(BatchReceipt {
        epoch: epoch.ok_or_else(corrupt)?,
        first_seq: first.parse().map_err(|_| corrupt())?,
        last_seq: last.parse().map_err(|_| corrupt())?,
        timestamp: timestamp.unwrap_or_default().to_owned(),
        duplicate,
        change: Change::None,
    })
}

/// A summary hash (with the retained count, oldest seq and epoch) as the
/// protocol shows it; `None` when the hash is empty.
fn summary_of(
    execution_id: &str,
    fields: &HashMap<String, Vec<u8>>,
    retained: u64,
    oldest: u64,
    epoch: String,
) -> Result<Option<ExecutionSummary>, StoreError> {
    if fields.is_empty() {
        return Ok(None);
    }
    let text = |name: &str| fields.get(name).and_then(|v| std::str::from_utf8(v).ok());
    let number = |name: &str| text(name).and_then(|v| v.parse::<u64>().ok());
    let corrupt = || StoreError::Corrupt(format!("summary of {execution_id}"));
    let started = number("started_ms").ok_or_else(corrupt)?;
    let updated = number("updated_ms").unwrap_or(started);
    let final_event = match fields.get("final") {
        Some(json) => Some(serde_json::from_slice::<Event>(json).map_err(|_| corrupt())?),
        None => None,
    };
    let ended_at = number("ended_ms").map(rfc3339_of_ms);
    Ok(Some(ExecutionSummary {
        execution_id: execution_id.to_owned(),
        status: text("status").unwrap_or(RUNNING).to_owned(),
        ended: ended_at.is_some(),
        epoch: Epoch::parse(&epoch).map(|e| e.to_string()),
        first_seq: oldest,
        last_seq: number("last_seq").unwrap_or_default(),
        events: retained,
        started_at: rfc3339_of_ms(started),
        updated_at: rfc3339_of_ms(updated),
        ended_at,
        final_event,
    }))
}

/// Connection trouble is retryable; anything Redis refuses outright is not.
pub(crate) fn store_error(error: RedisError) -> StoreError {
    if error.is_timeout() || !matches!(error.retry_method(), RetryMethod::NoRetry) {
        StoreError::Unavailable(error.to_string())
    } else {
        StoreError::Rejected(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TS: &str = "2026-01-01T00:00:00.000Z";

    #[test]
    fn receipts_parse_with_and_without_an_epoch() {
        let new =
            parse_receipt("7|ab12|2026-01-01T00:00:00.000Z", "ab12", "", true).expect("parses");
        assert_eq!(
            (new.seq, new.epoch.as_str(), new.duplicate),
            (7, "ab12", true)
        );
        assert_eq!(new.timestamp, TS);
        let old = parse_receipt("3|2026-01-01T00:00:00.000Z", "cd34", "", true).expect("parses");
        assert_eq!(
            (old.seq, old.epoch.as_str(), old.timestamp.as_str()),
            (3, "cd34", TS)
        );
        let stored = parse_receipt("12", "ef56", TS, false).expect("parses");
        assert_eq!(
            (
                stored.seq,
                stored.epoch.as_str(),
                stored.timestamp.as_str(),
                stored.duplicate
            ),
            (12, "ef56", TS, false)
        );
        assert!(parse_receipt("x|y", "cd34", "", false).is_err());
        assert!(parse_receipt("12", "not an epoch", TS, false).is_err());
    }

    #[test]
    fn append_answers_parse_or_are_corrupt() {
        use super::appender::parse_outcome;
        let stored = parse_outcome("02ab12\n7").expect("parses");
        assert_eq!(stored, (0, "7".to_owned(), "ab12".to_owned(), 2));
        let ended = parse_outcome("20\ncompleted").expect("parses");
        assert_eq!(ended, (2, "completed".to_owned(), String::new(), 0));
        let refused = parse_outcome("30\nWRONGTYPE\nsecond line").expect("parses");
        assert_eq!(refused.1, "WRONGTYPE\nsecond line");
        for bad in ["", "0", "02ab12", "9\n", "x0\n7", "04\n7"] {
            assert!(
                matches!(parse_outcome(bad), Err(StoreError::Corrupt(_))),
                "{bad:?}"
            );
        }
    }
}

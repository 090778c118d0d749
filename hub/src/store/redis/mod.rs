//! The Redis store: the replaced service's list `execution:<id>:events`,
//! shared by every hub node.
//!
//! Both the append and the range read are Lua scripts, so seq assignment, the
//! epoch, list order, trimming and the pub/sub announcement are one atomic
//! step, and a read sees a consistent (epoch, oldest, last) triple. The key
//! layout is in [`keys`]; the pub/sub side, which brings other nodes' appends
//! to this node's live feeds, is the [`bridge`].
//!
//! Items in the list that are not the hub's (no leading `{"seq":N`, e.g.
//! written by the replaced service or by hand) are skipped, counted and
//! logged once per execution; they never make a read fail.

pub mod bridge;
pub mod connection;
pub mod keys;
mod relay;
pub mod sharded;
mod shards;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::{ProtocolVersion, RedisError, RetryMethod, Script};
use tokio_util::sync::CancellationToken;

use super::{BatchReceipt, EventStore, Page, Receipt, StoreConfig, StoreError, StoreHealth, Watch};
use crate::event::{Epoch, NewBatch, NewEvent, SharedEvent, seq_of};
use crate::feeds::LiveSink;
use bridge::Bridge;
use connection::RedisConnection;
use keys::{batch_idempotency_key, channel, epoch_key, events_key, idempotency_key, seq_key};
use sharded::ShardedBridge;
use shards::Replicas;

/// Appends one event: idempotency check, INCR, the epoch of a new history,
/// RPUSH, trim, TTLs, PUBLISH of `<epoch> <json>`.
const APPEND: &str = r#"
local idem = KEYS[4]
if idem then
  local prior = redis.call('GET', idem)
  if prior then return {1, prior, redis.call('GET', KEYS[3]) or ''} end
end
local seq = redis.call('INCR', KEYS[2])
local epoch = redis.call('GET', KEYS[3])
if seq == 1 or not epoch then
  epoch = ARGV[7]
  redis.call('SET', KEYS[3], epoch)
end
local json = '{"seq":' .. string.format('%d', seq) .. ARGV[1]
local len = redis.call('RPUSH', KEYS[1], json)
local max = tonumber(ARGV[3])
if len > max then redis.call('LTRIM', KEYS[1], -max, -1) end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[2])
local receipt = string.format('%d', seq) .. '|' .. epoch .. '|' .. ARGV[5]
if idem then redis.call('SET', idem, receipt, 'EX', ARGV[6]) end
redis.call('PUBLISH', ARGV[4], epoch .. ' ' .. json)
return {0, receipt, epoch}
"#;

/// Appends a batch (ARGV[7..]: the events' tails) with consecutive seqs:
/// idempotency check, INCRBY, epoch, RPUSH, trim, TTLs, and one PUBLISH of
/// `<epoch> <json>\n<json>…`.
const APPEND_BATCH: &str = r#"
local idem = KEYS[4]
if idem then
  local prior = redis.call('GET', idem)
  if prior then return {1, prior, redis.call('GET', KEYS[3]) or ''} end
end
local n = #ARGV - 6
local last = redis.call('INCRBY', KEYS[2], n)
local first = last - n + 1
local epoch = redis.call('GET', KEYS[3])
if first == 1 or not epoch then
  epoch = ARGV[5]
  redis.call('SET', KEYS[3], epoch)
end
local items = {}
for i = 1, n do
  items[i] = '{"seq":' .. string.format('%d', first + i - 1) .. ARGV[6 + i]
end
local len = 0
for i = 1, n, 256 do
  len = redis.call('RPUSH', KEYS[1], unpack(items, i, math.min(i + 255, n)))
end
local max = tonumber(ARGV[2])
if len > max then redis.call('LTRIM', KEYS[1], -max, -1) end
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[3], ARGV[1])
local receipt = string.format('%d-%d', first, last) .. '|' .. epoch .. '|' .. ARGV[6]
if idem then redis.call('SET', idem, receipt, 'EX', ARGV[4]) end
redis.call('PUBLISH', ARGV[3], epoch .. ' ' .. table.concat(items, '\n'))
return {0, receipt, epoch}
"#;

/// Reads at most ARGV[2] events after seq ARGV[1], with the last seq, the
/// oldest retained seq and the epoch. Items that are not the hub's are
/// skipped; when they shift positions, the read falls back to a scan.
const RANGE: &str = r#"
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local epoch = redis.call('GET', KEYS[3]) or ''
local function seq_of(item) return tonumber(string.match(item, '^{"seq":(%d+)')) end
local first, oldest = -1, 0
local len = redis.call('LLEN', KEYS[1])
local chunk = 0
while first < 0 and chunk < len do
  local items = redis.call('LRANGE', KEYS[1], chunk, chunk + 99)
  for i, item in ipairs(items) do
    local s = seq_of(item)
    if s then first, oldest = chunk + i - 1, s; break end
  end
  chunk = chunk + 100
end
local after = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
if first < 0 or limit == 0 or after >= last then return {last, oldest, epoch, {}} end
local want = math.max(after + 1, oldest)
local start = first + (want - oldest)
local probe = redis.call('LINDEX', KEYS[1], start)
if probe and seq_of(probe) == want then
  return {last, oldest, epoch, redis.call('LRANGE', KEYS[1], start, start + limit - 1)}
end
local out = {}
for _, item in ipairs(redis.call('LRANGE', KEYS[1], first, -1)) do
  local s = seq_of(item)
  if s and s > after then
    out[#out + 1] = item
    if #out >= limit then break end
  end
end
return {last, oldest, epoch, out}
"#;

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
    append: Script,
    append_batch: Script,
    range: Script,
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
        // On a cluster the scripts announce with SPUBLISH: the message goes
        // only to the shard that owns the execution's slot.
        let script = |text: &str| match bridge {
            LiveBridge::Classic(_) => Script::new(text),
            LiveBridge::Sharded(_) => {
                Script::new(&text.replace("redis.call('PUBLISH', ", "redis.call('SPUBLISH', "))
            }
        };
        Ok(Arc::new(Self {
            append: script(APPEND),
            append_batch: script(APPEND_BATCH),
            range: Script::new(RANGE),
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

    /// Items skipped so far because they are not the hub's.
    pub fn foreign_items(&self) -> u64 {
        self.foreign.load(Ordering::Relaxed)
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

#[async_trait]
impl EventStore for RedisStore {
    async fn append(&self, event: NewEvent) -> Result<Receipt, StoreError> {
        let id = event.execution_id();
        let mut invocation = self.append.prepare_invoke();
        invocation
            .key(events_key(id))
            .key(seq_key(id))
            .key(epoch_key(id));
        if let Some(key) = event.idempotency_key() {
            invocation.key(idempotency_key(id, key));
        }
        invocation
            .arg(event.tail().as_ref())
            .arg(self.config.ttl.as_secs().max(1))
            .arg(self.config.max_events)
            .arg(channel(id))
            .arg(event.timestamp())
            .arg(self.config.idempotency_window.as_secs().max(1))
            .arg(Epoch::random().as_str());
        let mut connection = self.connection.clone();
        let (duplicate, receipt, epoch): (u8, String, String) = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(store_error)?;
        connection
            .wait_replicas(&events_key(id), self.wait_replicas)
            .await?;
        parse_receipt(&receipt, &epoch, duplicate == 1)
    }

    async fn append_batch(&self, batch: NewBatch) -> Result<BatchReceipt, StoreError> {
        let id = batch.execution_id();
        let mut invocation = self.append_batch.prepare_invoke();
        invocation
            .key(events_key(id))
            .key(seq_key(id))
            .key(epoch_key(id));
        if let Some(key) = batch.idempotency_key() {
            invocation.key(batch_idempotency_key(id, key));
        }
        let first_timestamp = batch.events().first().map_or("", |e| e.timestamp());
        invocation
            .arg(self.config.ttl.as_secs().max(1))
            .arg(self.config.max_events)
            .arg(channel(id))
            .arg(self.config.idempotency_window.as_secs().max(1))
            .arg(Epoch::random().as_str())
            .arg(first_timestamp);
        for event in batch.events() {
            invocation.arg(event.tail().as_ref());
        }
        let mut connection = self.connection.clone();
        let (duplicate, receipt, epoch): (u8, String, String) = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(store_error)?;
        connection
            .wait_replicas(&events_key(id), self.wait_replicas)
            .await?;
        parse_batch_receipt(&receipt, &epoch, duplicate == 1)
    }

    async fn range(
        &self,
        execution_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let mut connection = self.connection.clone();
        let (last_seq, oldest, epoch, items): (u64, u64, String, Vec<Vec<u8>>) = self
            .range
            .key(events_key(execution_id))
            .key(seq_key(execution_id))
            .key(epoch_key(execution_id))
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
        Ok(Page {
            events,
            last_seq,
            oldest_seq: (oldest > 0).then_some(oldest),
            epoch,
        })
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

/// `seq|epoch|timestamp` (or, from before epochs, `seq|timestamp` with the
/// epoch the script found) as a [`Receipt`].
fn parse_receipt(receipt: &str, epoch: &str, duplicate: bool) -> Result<Receipt, StoreError> {
    let corrupt = || StoreError::Corrupt(format!("append receipt {receipt:?}"));
    let (seq, rest) = receipt.split_once('|').ok_or_else(corrupt)?;
    let seq: u64 = seq.parse().map_err(|_| corrupt())?;
    let (epoch, timestamp) = match rest.split_once('|') {
        Some((epoch, timestamp)) if Epoch::parse(epoch).is_some() => (epoch, timestamp),
        _ => (epoch, rest),
    };
    Ok(Receipt {
        epoch: Epoch::parse(epoch).ok_or_else(corrupt)?,
        seq,
        timestamp: timestamp.to_owned(),
        duplicate,
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
    })
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

    #[test]
    fn receipts_parse_with_and_without_an_epoch() {
        let new = parse_receipt("7|ab12|2026-01-01T00:00:00.000Z", "ab12", true).expect("parses");
        assert_eq!(
            (new.seq, new.epoch.as_str(), new.duplicate),
            (7, "ab12", true)
        );
        assert_eq!(new.timestamp, "2026-01-01T00:00:00.000Z");
        let old = parse_receipt("3|2026-01-01T00:00:00.000Z", "cd34", true).expect("parses");
        assert_eq!((old.seq, old.epoch.as_str()), (3, "cd34"));
        assert!(parse_receipt("x|y", "cd34", false).is_err());
    }
}

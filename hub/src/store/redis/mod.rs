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
use crate::event::{Epoch, NewBatch, NewEvent, SharedEvent, now_ms, rfc3339_of_ms, seq_of};
use crate::feeds::LiveSink;
use appender::{
    APPEND_MANY, AppendArgs, Appender, BatchArgs, Outcome, Scripts, append_batch, append_group,
};
use bridge::Bridge;
use connection::RedisConnection;
use keys::{
    EXECUTIONS_INDEX, batch_idempotency_key, channel, epoch_key, events_key, idempotency_key,
    seq_key, summary_key,
};
use sharded::ShardedBridge;
use shards::Replicas;

/// Appends one event: idempotency check, the end check, INCR, the epoch of a
/// new history, RPUSH, trim, the summary (and, with it, the TTLs), PUBLISH of
/// `<epoch> <json>`. `keys`: the list, seq, epoch, summary and (optional)
/// idempotency record; then the event's tail, channel, timestamp and ending;
/// `c`: what all events of one call share (see [`appender::APPEND_MANY`]).
/// Answers as [`appender::parse_outcome`] reads, with the seq as the receipt.
///
/// Costs measured in Redis (`INFO commandstats`) shaped it: the Lua around
/// the commands cost more than the commands. Every number handed to
/// `redis.call` or concatenated is printed to text (`printf`), and a table
/// in a reply costs more than a string, so the seq is formatted once and the
/// answer is one string.
const APPEND_FN: &str = r#"
local function append(keys, tail, channel, timestamp, ending, c)
  local refusal, state = refused(keys, c.after_end)
  if refusal then return refusal end
  local seq, epoch, fresh = take_seqs(keys, 1, c.epoch)
  local s = string.format('%d', seq)
  local json = '{"seq":' .. s .. tail
  local len = redis.call('RPUSH', keys[1], json)
  if len > c.max then redis.call('LTRIM', keys[1], c.keep_from, -1) end
  if keys[5] then redis.call('SET', keys[5], s .. '|' .. epoch .. '|' .. timestamp, 'EX', c.idem_ttl) end
  local change = summarize(keys[4], state, s, json, c, ending)
  if change ~= 0 or fresh or len == 1 then keep_history(keys, c.keep) end
  redis.call('PUBLISH', channel, epoch .. ' ' .. json)
  return answer(0, change, epoch, s)
end
"#;

/// Appends a batch with consecutive seqs: idempotency check, INCRBY, epoch,
/// RPUSH, trim, TTLs, and one PUBLISH of `<epoch> =<first>\n<tail>\n<tail>…`
/// (the joined tails come ready from the hub, ARGV[9]: building a large
/// string in Lua costs more than the rest of the script). KEYS: as
/// [`APPEND_FN`]; ARGV: the shared arguments [`appender::APPEND_MANY`] takes
/// (1–7), the channel, the joined tails, the first timestamp, the ending,
/// then each event's tail. Answers like [`APPEND_FN`], with
/// `first-last|epoch|timestamp` as the receipt.
const APPEND_BATCH: &str = r#"
local c = shared(ARGV)
local idem = KEYS[5]
local refusal, state = refused(KEYS, c.after_end)
if refusal then return refusal end
local n = #ARGV - 11
local last, epoch, fresh = take_seqs(KEYS, n, c.epoch)
local first = last - n + 1
local items = {}
for i = 1, n do
  items[i] = string.format('{"seq":%d%s', first + i - 1, ARGV[11 + i])
end
local len = 0
for i = 1, n, 256 do
  len = redis.call('RPUSH', KEYS[1], unpack(items, i, math.min(i + 255, n)))
end
if len > c.max then redis.call('LTRIM', KEYS[1], c.keep_from, -1) end
local span = string.format('%d-%d', first, last)
local receipt = span .. '|' .. epoch .. '|' .. ARGV[10]
if idem then redis.call('SET', idem, receipt, 'EX', c.idem_ttl) end
local change = summarize(KEYS[4], state, string.format('%d', last), items[n], c, ARGV[11])
if change ~= 0 or fresh or len == n then keep_history(KEYS, c.keep) end
redis.call('PUBLISH', ARGV[8], epoch .. ' =' .. string.format('%d', first) .. '\n' .. ARGV[9])
return answer(0, change, epoch, receipt)
"#;

/// Helpers every append script starts with.
///
/// `summarize` updates an execution's summary hash after an append and
/// keeps it alive. `state`: its `ended_ms` and `announced_ms` as read
/// before the append; `seq`: the last appended seq (text); `ending`: the
/// status the last appended event ends the execution with (`''`: none).
/// Returns what the list of executions should hear: 0 nothing, 1 started,
/// 2 activity (at most once a second), 3 ended. Most appends cost one HSET
/// here; the TTL is refreshed with each announcement (so at least once a
/// second while events flow, with 2 s of slack over the events' TTL), and is
/// `final_ttl` longer once ended.
const SUMMARIZE: &str = r#"
local CODES = {[0] = '0', '1', '2', '3'}
-- An append's answer: outcome (0 stored, 1 replay, 2 ended, 3 refused),
-- change, the epoch, a newline, and the receipt (or status, or error).
local function answer(outcome, change, epoch, rest)
  return CODES[outcome] .. CODES[change] .. epoch .. '\n' .. rest
end
-- The arguments all events of one call share, converted once.
local function shared(argv)
  local max = tonumber(argv[2])
  return {
    ttl = tonumber(argv[1]), keep = tonumber(argv[1]) + 1, max = max,
    keep_from = -max, idem_ttl = argv[3], after_end = argv[4],
    final_ttl = tonumber(argv[5]), now = argv[6], now_ms = tonumber(argv[6]),
    epoch = argv[7],
  }
end
local function summarize(key, state, seq, json, c, ending)
  local ended, announced = state[1], state[2]
  local change = 0
  if not announced then
    change = 1
  elseif c.now_ms - tonumber(announced) >= 1000 then
    change = 2
  end
  if not ended and ending ~= '' then change = 3 end
  if change == 0 then
    redis.call('HSET', key, 'updated_ms', c.now, 'last_seq', seq)
    return 0
  end
  if not announced then redis.call('HSET', key, 'started_ms', c.now) end
  if change == 3 then
    redis.call('HSET', key, 'status', ending, 'ended_ms', c.now, 'end_seq', seq, 'final', json)
  end
  redis.call('HSET', key, 'updated_ms', c.now, 'last_seq', seq, 'announced_ms', c.now)
  local keep = c.ttl + 2
  if ended or change == 3 then keep = keep + c.final_ttl end
  redis.call('EXPIRE', key, keep)
  return change
end
-- What an append that must not run answers: the receipt of an idempotency
-- key already used (a replay), or the status of an execution that has ended
-- (unless `allow_after_end` is '1'). Otherwise nil, and the summary's state.
local function refused(keys, allow_after_end)
  if keys[5] then
    local prior = redis.call('GET', keys[5])
    if prior then return answer(1, 0, redis.call('GET', keys[3]) or '', prior) end
  end
  local state = redis.call('HMGET', keys[4], 'ended_ms', 'announced_ms', 'status')
  if state[1] and allow_after_end ~= '1' then return answer(2, 0, '', state[3] or '') end
  return nil, state
end
-- Takes `n` seqs: returns the last, the history's epoch, and whether
-- the history starts here (its first seq, or no epoch yet: it gets `candidate`).
local function take_seqs(keys, n, candidate)
  -- INCR for one: a number argument costs Redis a conversion to text.
  local last
  if n == 1 then last = redis.call('INCR', keys[2]) else last = redis.call('INCRBY', keys[2], n) end
  local epoch = redis.call('GET', keys[3])
  local fresh = last == n or not epoch
  if fresh then
    epoch = candidate
    redis.call('SET', keys[3], epoch)
  end
  return last, epoch, fresh
end
-- The list, seq and epoch live `ttl` seconds after the last event. Their
-- TTLs are set with each announcement (at least once a second while events
-- flow, see summarize) rather than three EXPIREs per event, so they get one
-- second of slack (`keep` = ttl + 1): never less than `ttl` after the last event.
local function keep_history(keys, keep)
  redis.call('EXPIRE', keys[1], keep)
  redis.call('EXPIRE', keys[2], keep)
  redis.call('EXPIRE', keys[3], keep)
end
"#;

/// An execution's summary: the hash, the retained count, the oldest retained
/// seq and the epoch (`{{}, 0, 0, ''}` when there is none).
const SUMMARY: &str = r#"
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then return {{}, 0, 0, ''} end
local len = redis.call('LLEN', KEYS[2])
local oldest = 0
if len > 0 then
  oldest = tonumber(string.match(redis.call('LINDEX', KEYS[2], 0), '^{"seq":(%d+)') or '0')
end
return {fields, len, oldest, redis.call('GET', KEYS[3]) or ''}
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
local ending = redis.call('HMGET', KEYS[4], 'status', 'end_seq')
local status, end_seq = ending[1] or '', tonumber(ending[2] or '0')
if first < 0 or limit == 0 or after >= last then return {last, oldest, epoch, {}, status, end_seq} end
local want = math.max(after + 1, oldest)
local start = first + (want - oldest)
local probe = redis.call('LINDEX', KEYS[1], start)
if probe and seq_of(probe) == want then
  return {last, oldest, epoch, redis.call('LRANGE', KEYS[1], start, start + limit - 1), status, end_seq}
end
local out = {}
for _, item in ipairs(redis.call('LRANGE', KEYS[1], first, -1)) do
  local s = seq_of(item)
  if s and s > after then
    out[#out + 1] = item
    if #out >= limit then break end
  end
end
return {last, oldest, epoch, out, status, end_seq}
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
    /// Groups concurrent appends into one call (one Redis; `None` on a cluster).
    appender: Option<Appender>,
    append_batch: Script,
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
        // On a cluster the scripts announce with SPUBLISH: the message goes
        // only to the shard that owns the execution's slot.
        let script = |text: &str| match bridge {
            LiveBridge::Classic(_) => Script::new(text),
            LiveBridge::Sharded(_) => {
                Script::new(&text.replace("redis.call('PUBLISH', ", "redis.call('SPUBLISH', "))
            }
        };
        let append = script(&format!("{SUMMARIZE}{APPEND_FN}{APPEND_MANY}"));
        let append_batch = script(&format!("{SUMMARIZE}{APPEND_BATCH}"));
        let appender = match bridge {
            LiveBridge::Classic(_) => {
                let scripts = Scripts {
                    many: append.clone(),
                    batch: append_batch.clone(),
                };
                Some(Appender::spawn(connection.clone(), scripts, config))
            }
            LiveBridge::Sharded(_) => None,
        };
        Ok(Arc::new(Self {
            append,
            appender,
            append_batch,
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
                let outcomes = append_group(&self.append, &mut connection, &self.config, events);
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
                append_batch(&self.append_batch, &mut connection, &self.config, &args).await?
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
        let mut connection = self.connection.clone();
        let mut listed = Vec::with_capacity(count);
        let mut position = cursor.cloned();
        while listed.len() < count {
            // Ties on the score are skipped by id; fetch a little more than asked.
            let want = count - listed.len() + 8;
            let max = position
                .as_ref()
                .map_or_else(|| "+inf".to_owned(), |p| p.updated_ms.to_string());
            let entries: Vec<(String, u64)> = redis::cmd("ZREVRANGEBYSCORE")
                .arg(EXECUTIONS_INDEX)
                .arg(max)
                .arg("-inf")
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(0)
                .arg(want)
                .query_async(&mut connection)
                .await
                .map_err(store_error)?;
            let exhausted = entries.len() < want;
            let fresh: Vec<(String, u64)> = entries
                .into_iter()
                .filter(|(id, ms)| {
                    position.as_ref().is_none_or(|p| {
                        *ms < p.updated_ms || (*ms == p.updated_ms && *id < p.execution_id)
                    })
                })
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
                            .query_async(&mut connection)
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

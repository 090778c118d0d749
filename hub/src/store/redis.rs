//! The Redis store: the seed's list `execution:<id>:events`, shared by every hub node.
//!
//! Keys of one execution (all in one Redis Cluster hash slot, see the README):
//! - `execution:<id>:events` — list of event JSON in seq order (the seed's key), TTL refreshed
//!   on every append, trimmed to the newest `max_events`;
//! - `{execution:<id>:events}:seq` — the seq counter, same TTL;
//! - `{execution:<id>:events}:idem:<key>` — `seq|timestamp` of an idempotent publish;
//! - channel `{execution:<id>:events}:live` — every appended event, for other nodes.
//!
//! Both the append and the range read are Lua scripts, so seq assignment, list
//! order, trimming and the pub/sub announcement are one atomic step, and a read
//! sees a consistent (oldest, last) pair. The hash tag `{execution:<id>:events}`
//! hashes exactly like the untagged list key, which is what keeps them together.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, RetryMethod, Script};
use tokio_util::sync::CancellationToken;

use super::{EventStore, Page, Receipt, StoreConfig, StoreError, StoreHealth};
use crate::broker::redis_bridge::Bridge;
use crate::broker::{LiveFeed, Topics};
use crate::event::{NewEvent, SharedEvent, seq_of};

/// Appends one event: idempotency check, INCR, RPUSH, trim, TTLs, PUBLISH.
const APPEND: &str = r#"
if KEYS[3] then
  local prior = redis.call('GET', KEYS[3])
  if prior then return {1, prior} end
end
local seq = redis.call('INCR', KEYS[2])
local json = '{"seq":' .. string.format('%d', seq) .. ARGV[1]
local len = redis.call('RPUSH', KEYS[1], json)
local max = tonumber(ARGV[3])
if len > max then redis.call('LTRIM', KEYS[1], -max, -1) end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
local receipt = string.format('%d', seq) .. '|' .. ARGV[5]
if KEYS[3] then redis.call('SET', KEYS[3], receipt, 'EX', ARGV[6]) end
redis.call('PUBLISH', ARGV[4], json)
return {0, receipt}
"#;

/// Reads events after ARGV[1] (at most ARGV[2]) with the current last and oldest seq.
const RANGE: &str = r#"
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local first = redis.call('LINDEX', KEYS[1], 0)
if not first then return {last, 0, {}} end
local oldest = tonumber(string.match(first, '^{"seq":(%d+)'))
local after = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
if limit == 0 or after >= last then return {last, oldest, {}} end
local start = after + 1 - oldest
if start < 0 then start = 0 end
return {last, oldest, redis.call('LRANGE', KEYS[1], start, start + limit - 1)}
"#;

/// The list holding an execution's events (the seed's key).
pub fn events_key(execution_id: &str) -> String {
    format!("execution:{execution_id}:events")
}

/// The seq counter, in the list's hash slot.
pub fn seq_key(execution_id: &str) -> String {
    format!("{{execution:{execution_id}:events}}:seq")
}

/// The record of an idempotent publish, in the list's hash slot.
pub fn idempotency_key(execution_id: &str, key: &str) -> String {
    format!("{{execution:{execution_id}:events}}:idem:{key}")
}

/// The pub/sub channel announcing an execution's appends.
pub fn channel(execution_id: &str) -> String {
    format!("{{execution:{execution_id}:events}}:live")
}

/// The execution id of a channel name made by [`channel`].
pub fn execution_of_channel(channel: &str) -> Option<&str> {
    channel
        .strip_prefix("{execution:")?
        .strip_suffix(":events}:live")
}

/// [`EventStore`] on Redis, with live events from the pub/sub [`Bridge`].
pub struct RedisStore {
    connection: ConnectionManager,
    topics: Arc<Topics>,
    bridge: Bridge,
    config: StoreConfig,
    append: Script,
    range: Script,
}

impl RedisStore {
    /// Connects to `url` and starts the pub/sub bridge feeding `topics`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when Redis cannot be reached at start-up,
    /// [`StoreError::Rejected`] when the URL is invalid.
    pub async fn connect(
        url: &str,
        config: StoreConfig,
        topics: Arc<Topics>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, StoreError> {
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
        let bridge = Bridge::spawn(client, connection.clone(), Arc::clone(&topics), shutdown);
        Ok(Arc::new(Self {
            connection,
            topics,
            bridge,
            config,
            append: Script::new(APPEND),
            range: Script::new(RANGE),
        }))
    }
}

#[async_trait]
impl EventStore for RedisStore {
    async fn append(&self, event: NewEvent) -> Result<Receipt, StoreError> {
        let id = event.execution_id();
        let mut invocation = self.append.prepare_invoke();
        invocation.key(events_key(id)).key(seq_key(id));
        if let Some(key) = event.idempotency_key() {
            invocation.key(idempotency_key(id, key));
        }
        invocation
            .arg(event.tail().as_ref())
            .arg(self.config.ttl.as_secs().max(1))
            .arg(self.config.max_events)
            .arg(channel(id))
            .arg(event.timestamp())
            .arg(self.config.idempotency_window.as_secs().max(1));
        let mut connection = self.connection.clone();
        let (duplicate, receipt): (u8, String) = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(store_error)?;
        let (seq, timestamp) = receipt
            .split_once('|')
            .and_then(|(seq, ts)| Some((seq.parse().ok()?, ts.to_owned())))
            .ok_or_else(|| StoreError::Corrupt(format!("append receipt {receipt:?}")))?;
        Ok(Receipt {
            seq,
            timestamp,
            duplicate: duplicate == 1,
        })
    }

    async fn range(
        &self,
        execution_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let mut connection = self.connection.clone();
        let (last_seq, oldest, items): (u64, u64, Vec<Vec<u8>>) = self
            .range
            .key(events_key(execution_id))
            .key(seq_key(execution_id))
            .arg(after)
            .arg(limit)
            .invoke_async(&mut connection)
            .await
            .map_err(store_error)?;
        let events = items
            .into_iter()
            .map(|json| {
                let seq = seq_of(&json).ok_or_else(|| {
                    StoreError::Corrupt(format!("event without seq in {execution_id}"))
                })?;
                Ok(SharedEvent::new(seq, Bytes::from(json)))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let oldest_seq = (oldest > 0).then_some(oldest);
        Ok(Page {
            events,
            last_seq,
            oldest_seq,
        })
    }

    async fn subscribe(&self, execution_id: &str) -> Result<LiveFeed, StoreError> {
        let feed = self.topics.subscribe(execution_id);
        // The upstream subscription must be confirmed before history is read,
        // or an event published in between would reach neither.
        self.bridge.ensure(execution_id).await;
        Ok(feed)
    }

    async fn health(&self) -> StoreHealth {
        let mut connection = self.connection.clone();
        let command = redis::cmd("PING");
        let ping = command.query_async::<String>(&mut connection);
        let detail = match tokio::time::timeout(Duration::from_secs(1), ping).await {
            Ok(Ok(_)) if self.bridge.is_connected() => None,
            Ok(Ok(_)) => Some("pub/sub connection is down; reconnecting".to_owned()),
            Ok(Err(error)) => Some(format!("redis: {error}")),
            Err(_) => Some("redis did not answer PING within 1s".to_owned()),
        };
        StoreHealth {
            backend: "redis",
            ok: detail.is_none(),
            detail,
        }
    }
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
    fn keys_share_the_list_hash_slot_and_channels_round_trip() {
        assert_eq!(events_key("e-1"), "execution:e-1:events");
        assert_eq!(seq_key("e-1"), "{execution:e-1:events}:seq");
        assert_eq!(idempotency_key("e-1", "k"), "{execution:e-1:events}:idem:k");
        assert_eq!(execution_of_channel(&channel("a:b c")), Some("a:b c"));
        assert_eq!(execution_of_channel("other"), None);
    }
}

//! What the hub knows of a Redis Cluster's shards, from `CLUSTER SLOTS`:
//! per-shard health for `/health` (each master pinged; a shard that is down
//! fails only the executions whose slots it holds), and each slot's live
//! replicas, so an append waits only for replicas that exist.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use redis::Value;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};

use crate::store::{ShardHealth, StoreHealth};

const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// The cluster's health: every shard's master answers PING, and no watched
/// execution waits to be subscribed again (`resubscribing`).
pub async fn health(connection: &ClusterConnection, resubscribing: usize) -> StoreHealth {
    let masters = match tokio::time::timeout(PING_TIMEOUT, masters(connection.clone())).await {
        Ok(Ok(masters)) => masters,
        Ok(Err(error)) => return down(format!("redis cluster: {error}")),
        Err(_) => return down("no redis cluster node answered CLUSTER SLOTS within 1s".to_owned()),
    };
    let pings = masters.into_iter().map(|((host, port), ranges)| {
        let mut connection = connection.clone();
        async move {
            let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                host: host.clone(),
                port,
            });
            let ping = connection.route_command(redis::cmd("PING"), routing);
            let detail = match tokio::time::timeout(PING_TIMEOUT, ping).await {
                Ok(Ok(_)) => None,
                Ok(Err(error)) => Some(error.to_string()),
                Err(_) => Some("no answer to PING within 1s".to_owned()),
            };
            ShardHealth {
                master: format!("{host}:{port}"),
                slots: ranges
                    .iter()
                    .map(|(start, end)| format!("{start}-{end}"))
                    .collect::<Vec<_>>()
                    .join(","),
                ok: detail.is_none(),
                detail,
            }
        }
    });
    let shards = futures_util::future::join_all(pings).await;
    let down_count = shards.iter().filter(|shard| !shard.ok).count();
    let detail = if down_count > 0 {
        Some(format!(
            "{down_count} of {} shards down: their executions answer 503",
            shards.len()
        ))
    } else if resubscribing > 0 {
        Some(format!(
            "{resubscribing} executions waiting to be subscribed again after a failover or slot move"
        ))
    } else {
        None
    };
    StoreHealth {
        backend: "redis-cluster",
        ok: detail.is_none(),
        detail,
        shards: Some(shards),
    }
}

/// Hash slots in a Redis Cluster.
const SLOTS: usize = 16_384;
/// How often the replica counts are read again.
const REFRESH: Duration = Duration::from_secs(1);

/// Each slot's live replicas, refreshed in the background.
pub struct Replicas {
    per_slot: Box<[AtomicU8]>,
}

impl Replicas {
    /// Reads the counts now, then every second until `shutdown`.
    pub async fn track(connection: ClusterConnection, shutdown: CancellationToken) -> Arc<Self> {
        let replicas = Arc::new(Self {
            per_slot: (0..SLOTS).map(|_| AtomicU8::new(0)).collect(),
        });
        replicas.refresh(connection.clone()).await;
        let tracked = Arc::clone(&replicas);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(REFRESH) => tracked.refresh(connection.clone()).await,
                }
            }
        });
        replicas
    }

    /// The live replicas of the shard holding `key` (at most 255).
    pub fn of_key(&self, key: &str) -> u8 {
        self.per_slot[usize::from(slot(key.as_bytes()))].load(Ordering::Relaxed)
    }

    async fn refresh(&self, connection: ClusterConnection) {
        let read = tokio::time::timeout(PING_TIMEOUT, slot_ranges(connection)).await;
        let Ok(Ok(ranges)) = read else {
            // Keep the last counts: a cluster in trouble answers 503 anyway.
            return;
        };
        for range in ranges {
            let count = u8::try_from(range.replicas).unwrap_or(u8::MAX);
            for slot in range.start..=range.end.min(SLOTS - 1) {
                self.per_slot[slot].store(count, Ordering::Relaxed);
            }
        }
    }
}

/// The hash slot of `key` (CRC16-XMODEM of its hash tag, or of the whole
/// key, modulo 16384), as Redis Cluster computes it.
pub fn slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|b| *b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|b| *b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    let mut crc: u16 = 0;
    for byte in tagged {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 == 0 {
                crc << 1
            } else {
                (crc << 1) ^ 0x1021
            };
        }
    }
    crc % SLOTS as u16
}

fn down(detail: String) -> StoreHealth {
    StoreHealth {
        backend: "redis-cluster",
        ok: false,
        detail: Some(detail),
        shards: Some(Vec::new()),
    }
}

/// One slot range of `CLUSTER SLOTS`: its master and live replicas.
struct SlotRange {
    start: usize,
    end: usize,
    host: String,
    port: u16,
    replicas: usize,
}

/// The slot ranges as one node of the cluster sees them (`CLUSTER SLOTS`,
/// which leaves out replicas marked as failed).
async fn slot_ranges(mut connection: ClusterConnection) -> redis::RedisResult<Vec<SlotRange>> {
    let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
    let mut slots = redis::cmd("CLUSTER");
    slots.arg("SLOTS");
    let reply = connection.route_command(slots, routing).await?;
    let Value::Array(ranges) = reply else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(ranges.len());
    for range in ranges {
        let Value::Array(fields) = range else {
            continue;
        };
        // [start, end, [host, port, id, …], replicas…]
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            continue;
        };
        let (Some(host), Some(Value::Int(port))) = (master.first(), master.get(1)) else {
            continue;
        };
        let host = match host {
            Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            Value::SimpleString(text) => text.clone(),
            _ => continue,
        };
        let (Ok(start), Ok(end), Ok(port)) = (
            usize::try_from(*start),
            usize::try_from(*end),
            u16::try_from(*port),
        ) else {
            continue;
        };
        out.push(SlotRange {
            start,
            end,
            host,
            port,
            replicas: fields.len().saturating_sub(3),
        });
    }
    Ok(out)
}

/// Each master's `(host, port)` with its slot ranges.
async fn masters(
    connection: ClusterConnection,
) -> redis::RedisResult<BTreeMap<(String, u16), Vec<(usize, usize)>>> {
    let mut masters: BTreeMap<(String, u16), Vec<(usize, usize)>> = BTreeMap::new();
    for range in slot_ranges(connection).await? {
        masters
            .entry((range.host, range.port))
            .or_default()
            .push((range.start, range.end));
    }
    for ranges in masters.values_mut() {
        ranges.sort_unstable();
    }
    Ok(masters)
}

#[cfg(test)]
mod tests {
    use super::slot;

    #[test]
    fn slots_match_redis_cluster_keyslot() {
        // `CLUSTER KEYSLOT` answers on Redis 7.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"123456789"), 12739);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(
            slot(b"{execution:e1:events}:seq"),
            slot(b"execution:e1:events")
        );
        assert_eq!(slot(b"{}x"), slot(b"{}x"));
    }
}

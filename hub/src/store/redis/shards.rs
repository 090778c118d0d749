//! Per-shard health of a Redis Cluster, for `/health`: the masters and their
//! slot ranges as the cluster reports them (`CLUSTER SLOTS`), each pinged.
//! A shard that is down fails only the executions whose slots it holds.

use std::collections::BTreeMap;
use std::time::Duration;

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

fn down(detail: String) -> StoreHealth {
    StoreHealth {
        backend: "redis-cluster",
        ok: false,
        detail: Some(detail),
        shards: Some(Vec::new()),
    }
}

/// Each master's `(host, port)` with its slot ranges, from `CLUSTER SLOTS`.
async fn masters(
    mut connection: ClusterConnection,
) -> redis::RedisResult<BTreeMap<(String, u16), Vec<(i64, i64)>>> {
    let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
    let mut slots = redis::cmd("CLUSTER");
    slots.arg("SLOTS");
    let reply = connection.route_command(slots, routing).await?;
    let mut masters: BTreeMap<(String, u16), Vec<(i64, i64)>> = BTreeMap::new();
    let Value::Array(ranges) = reply else {
        return Ok(masters);
    };
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
        let Ok(port) = u16::try_from(*port) else {
            continue;
        };
        masters
            .entry((host, port))
            .or_default()
            .push((*start, *end));
    }
    for ranges in masters.values_mut() {
        ranges.sort_unstable();
    }
    Ok(masters)
}

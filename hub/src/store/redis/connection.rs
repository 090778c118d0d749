//! The connection the Redis store talks through: one Redis (a reconnecting
//! [`ConnectionManager`]) or a Redis Cluster (a [`ClusterConnection`] that
//! follows MOVED/ASK and topology changes). Both implement
//! [`ConnectionLike`], so the store's scripts and commands run unchanged on
//! either; the cluster routes each by its first key, and every key of one
//! execution shares one hash slot (see [`super::keys`]).

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::shards::Replicas;
use super::store_error;
use crate::store::StoreError;

/// How long an append waits for its replicas (`--redis-wait-replicas`).
pub const REPLICA_WAIT: Duration = Duration::from_secs(1);

/// One Redis or a Redis Cluster, cheap to clone (both are multiplexed).
#[derive(Clone)]
pub enum RedisConnection {
    /// One Redis server.
    Single(ConnectionManager),
    /// A Redis Cluster, with each slot's live replicas.
    Cluster(ClusterConnection, Arc<Replicas>),
}

impl RedisConnection {
    /// Waits until `replicas` replicas acknowledged the writes this
    /// connection made so far to the node holding `key` (`WAIT`), so an
    /// acknowledged append survives a failover. On a cluster, a shard with
    /// fewer live replicas (one was lost, or its master failed over) waits
    /// for those it has. Nothing to do for 0.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when fewer replicas acknowledged in
    /// [`REPLICA_WAIT`]: the write is on the master but may not survive its
    /// loss, so the publisher is told to retry (with its idempotency key).
    pub async fn wait_replicas(&self, key: &str, replicas: u32) -> Result<(), StoreError> {
        let replicas = match self {
            Self::Single(_) => replicas,
            Self::Cluster(_, live) => replicas.min(u32::from(live.of_key(key))),
        };
        if replicas == 0 {
            return Ok(());
        }
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas).arg(REPLICA_WAIT.as_millis() as u64);
        let acked: u32 = match self.clone() {
            Self::Single(mut connection) => wait.query_async(&mut connection).await,
            Self::Cluster(mut connection, _) => {
                // WAIT has no key: send it to the master that took the write,
                // on the same (multiplexed) connection.
                let route = Route::with_key(key.as_bytes(), SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                connection
                    .route_command(wait, routing)
                    .await
                    .and_then(|value| Ok(redis::from_redis_value(value)?))
            }
        }
        .map_err(store_error)?;
        if acked < replicas {
            return Err(StoreError::Unavailable(format!(
                "{acked} of {replicas} replicas acknowledged the write in {}ms",
                REPLICA_WAIT.as_millis()
            )));
        }
        Ok(())
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection, _) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection, _) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection) => connection.get_db(),
            Self::Cluster(connection, _) => connection.get_db(),
        }
    }
}

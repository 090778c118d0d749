//! The sharded pub/sub bridge, for Redis Cluster: one `SSUBSCRIBE` per
//! execution that this node watches, on the shard that owns the execution's
//! slot, so each shard carries only its own executions' messages (a classic
//! `PUBLISH` would reach every node of the cluster).
//!
//! A single task owns the subscriptions; the cluster connection routes each
//! `SSUBSCRIBE` to the slot's master and delivers every push message (RESP3)
//! here. Sharded pub/sub is at-most-once, and a subscription ends without a
//! message when its shard goes away: Redis sends `sunsubscribe` when the
//! slot moves to another shard, and the connection reports a disconnection
//! when a node dies. Either way the task subscribes the affected executions
//! again (retrying with backoff until the slot has an owner: a replica is
//! promoted, a migration completes) and then announces each one's head
//! `(epoch, seq)` to the live feeds, so every subscriber fills what it missed
//! from the list — as the single-Redis [`Bridge`](super::bridge::Bridge)
//! does after a reconnect.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncCommands, PushInfo, PushKind, RedisResult, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::keys::{channel, epoch_key, execution_of_channel, seq_key};
use super::relay::Relay;
use crate::feeds::LiveSink;
use crate::retry::Backoff;
use crate::store::{StoreHealth, Watch};

const RESUBSCRIBE: Backoff = Backoff {
    first: Duration::from_millis(100),
    max: Duration::from_secs(1),
};

enum Command {
    /// One more local watcher; subscribe on its shard if it is the first, then answer.
    Watch(Arc<str>, oneshot::Sender<()>),
    /// One local watcher less; unsubscribe after the last.
    Unwatch(Arc<str>),
}

/// The head `(seq, epoch)` read after a resubscription.
type Head = (Option<u64>, Option<String>);

/// A finished `SSUBSCRIBE`: the execution, the watch to confirm (first
/// subscription) and, for a resubscription, the head read after it.
type Subscribed = (
    Arc<str>,
    Option<oneshot::Sender<()>>,
    RedisResult<Option<Head>>,
);

/// Handle to the sharded bridge task.
pub struct ShardedBridge {
    connection: ClusterConnection,
    // Unbounded, but each watch sends exactly one `Watch` and one `Unwatch`,
    // so what it holds is bounded by the node's subscription limit.
    commands: mpsc::UnboundedSender<Command>,
    resubscribing: Arc<AtomicUsize>,
}

impl ShardedBridge {
    /// Starts the bridge task on `connection`, whose push messages arrive on
    /// `pushes`; it runs until `shutdown` is cancelled.
    pub fn spawn(
        connection: ClusterConnection,
        pushes: mpsc::UnboundedReceiver<PushInfo>,
        sink: Arc<dyn LiveSink>,
        shutdown: CancellationToken,
    ) -> Self {
        let (commands, receiver) = mpsc::unbounded_channel();
        let resubscribing = Arc::new(AtomicUsize::new(0));
        let task = Task {
            connection: connection.clone(),
            relay: Relay::new(sink),
            commands: receiver,
            pushes,
            watchers: HashMap::new(),
            stale: HashSet::new(),
            subscribing: FuturesUnordered::new(),
            resubscribing: Arc::clone(&resubscribing),
        };
        tokio::spawn(task.run(shutdown));
        Self {
            connection,
            commands,
            resubscribing,
        }
    }

    /// Watches `execution_id`: confirmed once its shard confirmed the
    /// subscription, or at once when the shard cannot be reached (the
    /// resubscription will announce its head, so nothing is missed).
    pub fn watch(&self, execution_id: &str) -> Watch {
        super::relay::watch_through(
            &self.commands,
            execution_id,
            Command::Watch,
            Command::Unwatch,
        )
    }

    /// Each shard's state, and whether watched executions wait to be
    /// subscribed again (their shard failed over or their slot moved).
    pub async fn health(&self) -> StoreHealth {
        let resubscribing = self.resubscribing.load(Ordering::Relaxed);
        super::shards::health(&self.connection, resubscribing).await
    }
}

struct Task {
    connection: ClusterConnection,
    relay: Relay,
    commands: mpsc::UnboundedReceiver<Command>,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
    /// Local watches per execution.
    watchers: HashMap<Arc<str>, usize>,
    /// Watched executions whose subscription was lost, to subscribe again.
    stale: HashSet<Arc<str>>,
    /// `SSUBSCRIBE`s in flight: a shard that is failing over must not hold
    /// up the others' messages.
    subscribing: FuturesUnordered<BoxFuture<'static, Subscribed>>,
    resubscribing: Arc<AtomicUsize>,
}

impl Task {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = RESUBSCRIBE.attempts();
        let retry = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(retry);
        let mut retry_armed = false;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                command = self.commands.recv() => match command {
                    Some(command) => self.apply(command),
                    None => return,
                },
                push = self.pushes.recv() => match push {
                    Some(push) => self.push(push),
                    None => return,
                },
                Some((id, done, result)) = self.subscribing.next() => {
                    self.subscribed(id, done, result);
                    if self.stale.is_empty() {
                        backoff.reset();
                    }
                }
                () = &mut retry, if retry_armed => {
                    retry_armed = false;
                    for id in std::mem::take(&mut self.stale) {
                        self.subscribe(id, None);
                    }
                }
            }
            if !self.stale.is_empty() && !retry_armed {
                retry_armed = true;
                retry
                    .as_mut()
                    .reset(tokio::time::Instant::now() + backoff.next_delay());
            }
            self.resubscribing
                .store(self.stale.len(), Ordering::Relaxed);
        }
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::Watch(id, done) => {
                let count = self.watchers.entry(Arc::clone(&id)).or_insert(0);
                *count += 1;
                if *count == 1 {
                    self.subscribe(id, Some(done));
                } else {
                    let _ = done.send(());
                }
            }
            Command::Unwatch(id) => {
                let Some(count) = self.watchers.get_mut(&id) else {
                    return;
                };
                *count -= 1;
                if *count > 0 {
                    return;
                }
                self.watchers.remove(&id);
                self.stale.remove(&id);
                self.relay.forget(&id);
                let mut connection = self.connection.clone();
                tokio::spawn(async move {
                    if let Err(error) = connection.sunsubscribe(channel(&id)).await {
                        tracing::debug!(%error, execution_id = %id, "sharded unsubscribe failed");
                    }
                });
            }
        }
    }

    /// Subscribes `id` on its shard: the first time (`done` set: confirm
    /// the watch), or again (read the head afterwards, to announce it).
    fn subscribe(&mut self, id: Arc<str>, done: Option<oneshot::Sender<()>>) {
        let mut connection = self.connection.clone();
        self.subscribing.push(Box::pin(async move {
            let again = done.is_none();
            let result = async {
                connection.ssubscribe(channel(&id)).await?;
                if !again {
                    return Ok(None);
                }
                let head: Head = connection.mget(&[seq_key(&id), epoch_key(&id)]).await?;
                Ok(Some(head))
            }
            .await;
            (id, done, result)
        }));
    }

    fn subscribed(
        &mut self,
        id: Arc<str>,
        done: Option<oneshot::Sender<()>>,
        result: RedisResult<Option<Head>>,
    ) {
        if let Some(done) = done {
            let _ = done.send(());
        }
        if !self.watchers.contains_key(&id) {
            // Unwatched meanwhile; its `SUNSUBSCRIBE` follows the subscribe.
            return;
        }
        match result {
            Ok(Some((seq, epoch))) => self.relay.head(&id, epoch.as_deref(), seq),
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, execution_id = %id, "sharded subscribe failed; retrying");
                self.stale.insert(id);
            }
        }
    }

    /// The watched execution whose channel `name` is, if any.
    fn watched(&self, name: &Value) -> Option<Arc<str>> {
        let Value::BulkString(name) = name else {
            return None;
        };
        let id = execution_of_channel(std::str::from_utf8(name).ok()?)?;
        self.watchers
            .get_key_value(id)
            .map(|(id, _)| Arc::clone(id))
    }

    /// One push message: an event to relay, or a lost subscription.
    fn push(&mut self, push: PushInfo) {
        match push.kind {
            PushKind::SMessage => {
                let [name, Value::BulkString(payload)] = push.data.as_slice() else {
                    return;
                };
                if let Some(id) = self.watched(name) {
                    self.relay.message(&id, payload);
                }
            }
            // Redis unsubscribes a shard channel whose slot moved away.
            PushKind::SUnsubscribe => {
                if let Some(id) = push.data.first().and_then(|name| self.watched(name)) {
                    tracing::info!(execution_id = %id, "sharded subscription ended by redis (slot moved); subscribing again");
                    self.stale.insert(id);
                }
            }
            // A node's connection dropped: its subscriptions are gone (the
            // connection cannot say which executions it held, so every one
            // is subscribed again; a live shard confirms at once).
            PushKind::Disconnection => {
                tracing::warn!(
                    executions = self.watchers.len(),
                    "redis cluster connection to a node lost; subscribing again"
                );
                metrics::counter!("exechub_redis_pubsub_reconnects_total").increment(1);
                self.stale.extend(self.watchers.keys().cloned());
            }
            _ => {}
        }
    }
}

//! The Redis pub/sub bridge: one upstream subscription per execution that this
//! node watches, shared by all its local subscribers.
//!
//! A single task owns the pub/sub connection. A [`Watch`] asks it to subscribe
//! an execution's channel (confirmed once Redis acknowledged, so no event can
//! slip between the live feed and the history read) and, when dropped, to let
//! go of it; the task counts watches per execution. Redis pub/sub is
//! at-most-once: when the connection drops, the task reconnects with backoff,
//! resubscribes every watched execution and announces each one's head
//! `(epoch, seq)` to the live feeds, so every subscriber fills what it missed
//! from the list. Seq jumps on a live stream are filled by the subscriptions
//! themselves (see [`crate::subscription`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, PubSubSink, PubSubStream};
use redis::{AsyncCommands, Msg};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::keys::{channel, epoch_key, execution_of_channel, seq_key};
use super::relay::Relay;
use crate::feeds::LiveSink;
use crate::retry::Backoff;
use crate::store::Watch;

const RECONNECT: Backoff = Backoff {
    first: Duration::from_millis(100),
    max: Duration::from_secs(2),
};
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

enum Command {
    /// One more local watcher; subscribe upstream if it is the first, then answer.
    Watch(Arc<str>, oneshot::Sender<()>),
    /// One local watcher less; unsubscribe upstream after the last.
    Unwatch(Arc<str>),
}

/// Handle to the bridge task.
pub struct Bridge {
    // Unbounded, but each watch sends exactly one `Watch` and one `Unwatch`,
    // so what it holds is bounded by the node's subscription limit.
    commands: mpsc::UnboundedSender<Command>,
    connected: Arc<AtomicBool>,
}

impl Bridge {
    /// Starts the bridge task; it runs until `shutdown` is cancelled.
    pub fn spawn(
        client: redis::Client,
        connection: ConnectionManager,
        sink: Arc<dyn LiveSink>,
        shutdown: CancellationToken,
    ) -> Self {
        let (commands, receiver) = mpsc::unbounded_channel();
        let connected = Arc::new(AtomicBool::new(false));
        let task = Task {
            client,
            connection,
            relay: Relay::new(sink),
            commands: receiver,
            connected: Arc::clone(&connected),
            watchers: HashMap::new(),
        };
        tokio::spawn(task.run(shutdown));
        Self {
            commands,
            connected,
        }
    }

    /// Watches `execution_id`: confirmed once its channel is subscribed
    /// upstream, or at once while Redis is unreachable (the reconnect will
    /// subscribe it and announce its head, so nothing is missed).
    pub fn watch(&self, execution_id: &str) -> Watch {
        super::relay::watch_through(
            &self.commands,
            execution_id,
            Command::Watch,
            Command::Unwatch,
        )
    }

    /// Whether the pub/sub connection is up.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

struct Task {
    client: redis::Client,
    connection: ConnectionManager,
    relay: Relay,
    commands: mpsc::UnboundedReceiver<Command>,
    connected: Arc<AtomicBool>,
    /// Local watches per execution; subscribed upstream while connected.
    watchers: HashMap<Arc<str>, usize>,
}

impl Task {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = RECONNECT.attempts();
        loop {
            let attempt = tokio::time::timeout(CONNECT_TIMEOUT, self.client.get_async_pubsub());
            let pubsub = tokio::select! {
                () = shutdown.cancelled() => return,
                attempt = attempt => attempt.ok().and_then(Result::ok),
            };
            if let Some(pubsub) = pubsub {
                let (sink, stream) = pubsub.split();
                if self.resubscribe(sink.clone()).await {
                    backoff.reset();
                    self.connected.store(true, Ordering::Relaxed);
                    tracing::info!(executions = self.watchers.len(), "redis pub/sub connected");
                    if self.serve(sink, stream, &shutdown).await.is_break() {
                        return;
                    }
                    self.connected.store(false, Ordering::Relaxed);
                    tracing::warn!("redis pub/sub connection lost; reconnecting");
                    metrics::counter!("exechub_redis_pubsub_reconnects_total").increment(1);
                }
            }
            if self
                .wait_disconnected(backoff.next_delay(), &shutdown)
                .await
                .is_break()
            {
                return;
            }
        }
    }

    /// Subscribes every watched execution, then announces each one's head so
    /// subscribers catch up on what the outage hid.
    async fn resubscribe(&mut self, mut sink: PubSubSink) -> bool {
        let watched: Vec<Arc<str>> = self.watchers.keys().cloned().collect();
        for id in &watched {
            if sink.subscribe(channel(id)).await.is_err() {
                return false;
            }
        }
        for id in &watched {
            let mut connection = self.connection.clone();
            let head: Result<(Option<u64>, Option<String>), _> =
                connection.mget(&[seq_key(id), epoch_key(id)]).await;
            match head {
                Ok((seq, epoch)) => self.relay.head(id, epoch.as_deref(), seq),
                Err(error) => {
                    tracing::warn!(%error, execution_id = %id, "cannot read head after reconnect")
                }
            }
        }
        true
    }

    /// Relays messages and commands until the connection drops (Continue) or shutdown (Break).
    async fn serve(
        &mut self,
        mut sink: PubSubSink,
        mut stream: PubSubStream,
        shutdown: &CancellationToken,
    ) -> std::ops::ControlFlow<()> {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return std::ops::ControlFlow::Break(()),
                command = self.commands.recv() => match command {
                    None => return std::ops::ControlFlow::Break(()),
                    Some(command) => {
                        if !self.apply(command, Some(&mut sink)).await {
                            return std::ops::ControlFlow::Continue(());
                        }
                    }
                },
                message = stream.next() => match message {
                    Some(message) => self.relay(&message),
                    None => return std::ops::ControlFlow::Continue(()),
                },
            }
        }
    }

    /// Applies a command; with a live connection (`sink`), subscribes or
    /// unsubscribes upstream. `false` when the connection failed.
    async fn apply(&mut self, command: Command, sink: Option<&mut PubSubSink>) -> bool {
        match command {
            Command::Watch(id, done) => {
                let count = self.watchers.entry(Arc::clone(&id)).or_insert(0);
                *count += 1;
                let ok = match sink {
                    Some(sink) if *count == 1 => sink.subscribe(channel(&id)).await.is_ok(),
                    _ => true,
                };
                // On failure the reconnect subscribes it and announces its head.
                let _ = done.send(());
                ok
            }
            Command::Unwatch(id) => {
                let Some(count) = self.watchers.get_mut(&id) else {
                    return true;
                };
                *count -= 1;
                if *count > 0 {
                    return true;
                }
                self.watchers.remove(&id);
                self.relay.forget(&id);
                match sink {
                    Some(sink) => sink.unsubscribe(channel(&id)).await.is_ok(),
                    None => true,
                }
            }
        }
    }

    /// Hands one pub/sub message of a watched execution to the live feeds.
    fn relay(&mut self, message: &Msg) {
        let Some(id) = execution_of_channel(message.get_channel_name()) else {
            return;
        };
        if let Some((id, _)) = self.watchers.get_key_value(id) {
            self.relay.message(id, message.get_payload_bytes());
        }
    }

    /// While disconnected: track commands (confirming watches at once) until
    /// it is time to retry.
    async fn wait_disconnected(
        &mut self,
        backoff: Duration,
        shutdown: &CancellationToken,
    ) -> std::ops::ControlFlow<()> {
        let retry = tokio::time::sleep(backoff);
        tokio::pin!(retry);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return std::ops::ControlFlow::Break(()),
                () = &mut retry => return std::ops::ControlFlow::Continue(()),
                command = self.commands.recv() => match command {
                    None => return std::ops::ControlFlow::Break(()),
                    Some(command) => { self.apply(command, None).await; }
                },
            }
        }
    }
}

//! The Redis pub/sub bridge: one upstream subscription per execution that has
//! local subscribers, shared by all of them.
//!
//! A single task owns the pub/sub connection. Local feeds ask it to `ensure` a
//! subscription (answered once Redis confirmed it, so no event can slip
//! between the live feed and the history read), and the registry tells it when
//! an execution has no local subscriber left. Redis pub/sub is at-most-once:
//! when the connection drops, the task reconnects with backoff, resubscribes
//! every active execution and announces each one's current head seq, so every
//! subscriber fills what it missed from the list. Seq jumps on a live stream
//! are filled by the subscribers themselves (see [`super::follow`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, PubSubSink, PubSubStream};
use redis::{AsyncCommands, Msg};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::Topics;
use crate::event::{SharedEvent, seq_of};
use crate::store::redis::{channel, execution_of_channel, seq_key};

const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

enum Command {
    /// Subscribe upstream if not yet, then answer.
    Ensure(String, oneshot::Sender<()>),
    /// The execution lost its last local subscriber.
    Release(String),
}

/// Handle to the bridge task.
pub struct Bridge {
    // Unbounded, but each subscriber has at most one `Ensure` in flight and
    // `Release` is sent at most once per idle execution.
    commands: mpsc::UnboundedSender<Command>,
    connected: Arc<AtomicBool>,
}

impl Bridge {
    /// Starts the bridge task; it runs until `shutdown` is cancelled.
    pub fn spawn(
        client: redis::Client,
        connection: ConnectionManager,
        topics: Arc<Topics>,
        shutdown: CancellationToken,
    ) -> Self {
        let (commands, receiver) = mpsc::unbounded_channel();
        let releases = commands.clone();
        topics.set_idle_hook(Box::new(move |id| {
            let _ = releases.send(Command::Release(id.to_owned()));
        }));
        let connected = Arc::new(AtomicBool::new(false));
        let task = Task {
            client,
            connection,
            topics,
            commands: receiver,
            connected: Arc::clone(&connected),
            subscribed: HashSet::new(),
        };
        tokio::spawn(task.run(shutdown));
        Self {
            commands,
            connected,
        }
    }

    /// Returns once `execution_id`'s channel is subscribed upstream, or at once
    /// while Redis is unreachable (the reconnect will subscribe it and announce
    /// its head, so nothing is missed).
    pub async fn ensure(&self, execution_id: &str) {
        let (done, confirmed) = oneshot::channel();
        if self
            .commands
            .send(Command::Ensure(execution_id.to_owned(), done))
            .is_ok()
        {
            let _ = confirmed.await;
        }
    }

    /// Whether the pub/sub connection is up.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

struct Task {
    client: redis::Client,
    connection: ConnectionManager,
    topics: Arc<Topics>,
    commands: mpsc::UnboundedReceiver<Command>,
    connected: Arc<AtomicBool>,
    subscribed: HashSet<String>,
}

impl Task {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = BACKOFF_FIRST;
        loop {
            let attempt = tokio::time::timeout(CONNECT_TIMEOUT, self.client.get_async_pubsub());
            let pubsub = tokio::select! {
                () = shutdown.cancelled() => return,
                attempt = attempt => attempt.ok().and_then(Result::ok),
            };
            if let Some(pubsub) = pubsub {
                let (sink, stream) = pubsub.split();
                if self.resubscribe(sink.clone()).await {
                    backoff = BACKOFF_FIRST;
                    self.connected.store(true, Ordering::Relaxed);
                    tracing::info!(
                        executions = self.subscribed.len(),
                        "redis pub/sub connected"
                    );
                    if self.serve(sink, stream, &shutdown).await.is_break() {
                        return;
                    }
                    self.connected.store(false, Ordering::Relaxed);
                    tracing::warn!("redis pub/sub connection lost; reconnecting");
                }
            }
            if self.wait_disconnected(backoff, &shutdown).await.is_break() {
                return;
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Subscribes every execution with local subscribers, then announces each
    /// one's head so subscribers catch up on what the outage hid.
    async fn resubscribe(&mut self, mut sink: PubSubSink) -> bool {
        self.subscribed.clear();
        for id in self.topics.executions() {
            if sink.subscribe(channel(&id)).await.is_err() {
                return false;
            }
            self.subscribed.insert(id);
        }
        for id in &self.subscribed {
            let mut connection = self.connection.clone();
            match connection.get::<_, Option<u64>>(seq_key(id)).await {
                Ok(head) => self.topics.announce_head(id, head.unwrap_or(0)),
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
                        if !self.apply(command, &mut sink).await {
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

    /// Applies a command on a live connection; `false` when the connection failed.
    async fn apply(&mut self, command: Command, sink: &mut PubSubSink) -> bool {
        match command {
            Command::Ensure(id, done) => {
                let ok =
                    self.subscribed.contains(&id) || sink.subscribe(channel(&id)).await.is_ok();
                if ok {
                    self.subscribed.insert(id);
                }
                // On failure the reconnect subscribes it (it is in `topics`) and announces its head.
                let _ = done.send(());
                ok
            }
            Command::Release(id) => {
                if self.topics.contains(&id) || !self.subscribed.remove(&id) {
                    return true;
                }
                sink.unsubscribe(channel(&id)).await.is_ok()
            }
        }
    }

    fn relay(&self, message: &Msg) {
        let Some(id) = execution_of_channel(message.get_channel_name()) else {
            return;
        };
        let json = Bytes::copy_from_slice(message.get_payload_bytes());
        match seq_of(&json) {
            Some(seq) => self.topics.publish(id, &SharedEvent::new(seq, json)),
            None => tracing::warn!(execution_id = %id, "ignoring a pub/sub message without seq"),
        }
    }

    /// While disconnected: answer commands at once, until it is time to retry.
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
                    Some(Command::Ensure(_, done)) => { let _ = done.send(()); }
                    Some(Command::Release(_)) => {}
                },
            }
        }
    }
}

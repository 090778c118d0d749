//! One WebSocket connection: many subscriptions multiplexed over one socket,
//! driven by a single task.
//!
//! The task waits on everything the connection can do at once: a client
//! frame, frames in the connection's [`Outbox`] to write, the heartbeat, the
//! token's expiry and hub shutdown. Subscriptions push into the outbox from
//! the publisher's context (see [`crate::subscription`]), and the outbox
//! writes a frame straight to the socket when nothing is ahead of it
//! ([`crate::outbox::direct`]): a live event costs its connection a `write`,
//! not a wake-up of this task. Nothing else runs per connection, so an idle
//! connection is this one task and its socket.
//!
//! Every way a connection can end ends it, and frees everything it holds:
//! the client closes (its close frame is echoed, RFC 6455 §5.5.1), resets or
//! vanishes (read error or EOF), stops answering pings (closed after
//! `--ping-interval` + `--ping-timeout` of silence, code 4003), sends a frame
//! over the size limit (1009), falls behind (4001), its token expires (4002),
//! or the hub shuts down (1001). Closing never waits on the client for longer
//! than [`CLOSE_GRACE`].
//!
//! Publishes are pipelined: a `publish` goes to the store at once, and the
//! next frames are read while it is on its way, up to
//! [`MAX_PUBLISHES_IN_FLIGHT`] (then the socket waits: backpressure). They
//! reach the store in the order they came, so one connection's events keep
//! their order, and are answered in that order; a publisher that does not
//! wait for each `ack` gets more than one event per round trip to the store,
//! and the store's grouped appends get fuller. A store that cannot promise
//! that order ([`crate::store::EventStore::keeps_order`]: a Redis Cluster)
//! gets one publish at a time.
//!
//! The loop is generic over `Sink`/`Stream`, so it runs over channels in the
//! unit tests (`session/tests.rs`). Its parts: `socket` (writing, reading,
//! closing), `timers` (heartbeat and token deadline), `frames` (what it
//! sends).

mod frames;
mod socket;
mod timers;

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;

use exechub_protocol::ws::FrameError;
use exechub_protocol::{ClientMsg, ErrorCode, RequestId, ServerMsg, close};
use futures_util::stream::FuturesOrdered;
use futures_util::{Sink, Stream, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::AppState;
use crate::auth::{Action, AuthError, Grant};
use crate::directory::Following;
use crate::event::{Epoch, NewBatch, NewEvent};
use crate::limits::{ClientKey, TokenSlot};
use crate::metrics::{self, PublishResult, Transport};
use crate::outbox::{Closing, Outbox, PushError};
use crate::store::StoreError;
use crate::subscription::{Start, Subscription};
use crate::transport::frame::{FrameEvents, PublishFrame};

pub use frames::WsEncoder;
pub use socket::{CLOSE_GRACE, Ending, ReadError};
pub use timers::expiry_instant;
pub(crate) use timers::{expiry_timer, until};

use frames::{auth_error, error_msg, rate_limited, store_error_msg, text};
use socket::{Io, finish, poll_socket};
use timers::Heartbeat;

/// Publishes one connection may have on their way to the store at once;
/// with that many, its next frames wait in the socket.
pub const MAX_PUBLISHES_IN_FLIGHT: usize = 16;

/// Runs a connection until it ends (see the module doc), then closes it.
/// `socket` is both halves of the WebSocket, read and written by this one
/// task; `outbox` is the connection's queue. When the outbox writes the
/// socket itself ([`Outbox::on_socket`]), frames go out from whoever pushes
/// them, and this task only finishes what the socket could not take.
pub async fn run<W, E>(app: AppState, caller: Caller, mut socket: W, outbox: Arc<Outbox<Message>>)
where
    W: Sink<Message> + Stream<Item = Result<Message, E>> + Unpin,
    E: ReadError,
{
    let mut session = Session {
        app,
        grant: caller.grant,
        client: caller.client,
        outbox,
        subscriptions: Subscriptions::default(),
        executions: None,
        publishing: None,
    };
    let ending = session.serve(&mut socket).await;
    if matches!(ending, Ending::Close(..)) {
        // The hub closes: publishes on their way get their answers first (a
        // client would otherwise retry ones that were stored).
        let _ = tokio::time::timeout(CLOSE_GRACE, session.settle()).await;
    }
    // Subscriptions end before anything else, and the outbox takes nothing
    // more: no frame may follow the close frame.
    let outbox = Arc::clone(&session.outbox);
    drop(session);
    outbox.close(Closing::Done);
    drop(outbox);
    // Boxed: only a closing connection needs the handshake's state.
    Box::pin(finish(socket, ending, caller.conn_id)).await;
}

/// A subscription and, with auth on, its place in the token's count.
struct Held {
    subscription: Subscription<WsEncoder>,
    _slot: Option<TokenSlot>,
}

/// A connection's subscriptions by execution id: a vector grown one slot at
/// a time while small (most connections hold one or a few, and a hash map's
/// smallest table would cost more than the subscription itself). Lookups
/// happen on subscribe and unsubscribe only, never per event.
#[derive(Default)]
struct Subscriptions(Vec<(Arc<str>, Held)>);

impl Subscriptions {
    fn get(&self, execution_id: &str) -> Option<&Held> {
        self.0
            .iter()
            .find(|(key, _)| &**key == execution_id)
            .map(|(_, held)| held)
    }

    fn remove(&mut self, execution_id: &str) -> Option<Held> {
        let index = self.0.iter().position(|(key, _)| &**key == execution_id)?;
        Some(self.0.swap_remove(index).1)
    }

    fn insert(&mut self, execution_id: Arc<str>, held: Held) {
        if self.0.len() == self.0.capacity() {
            // Exact while small, doubling beyond.
            self.0.reserve_exact(self.0.len().clamp(1, usize::MAX / 2));
        }
        self.0.push((execution_id, held));
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn keys(&self) -> impl Iterator<Item = &Arc<str>> {
        self.0.iter().map(|(key, _)| key)
    }
}

/// A `publish` to perform: the one request that waits (for the store).
/// It runs as one of the connection's [`InFlight`] publishes.
enum Publish {
    One {
        id: Option<RequestId>,
        event: NewEvent,
    },
    Batch {
        id: Option<RequestId>,
        batch: NewBatch,
    },
}

/// A publish on its way to the store; its answer (`ack` or `error`) when done.
type Answer = Pin<Box<dyn Future<Output = ServerMsg> + Send>>;

/// A connection's publishes on their way to the store. Polled in the order
/// they came (so they reach the store in that order) and answered in it.
type InFlight = FuturesOrdered<Answer>;

/// Who is on the other end of a connection.
pub struct Caller {
    /// What the connection's token allows.
    pub grant: Grant,
    /// Who the per-client limits count against (the token, or this connection).
    pub client: ClientKey,
    /// The connection's id in log lines.
    pub conn_id: u64,
}

struct Session {
    app: AppState,
    /// What the connection's token allows; replaced by an `auth` op.
    grant: Grant,
    /// Who the per-client limits count against.
    client: ClientKey,
    /// The connection's bounded outbound queue.
    outbox: Arc<Outbox<Message>>,
    /// This connection's subscriptions.
    subscriptions: Subscriptions,
    /// Following the list of executions (`subscribe_executions`).
    executions: Option<Box<Following>>,
    /// Publishes on their way to the store (boxed: only publishers have them).
    publishing: Option<Box<InFlight>>,
}

impl Session {
    async fn serve<W, E>(&mut self, socket: &mut W) -> Ending
    where
        W: Sink<Message> + Stream<Item = Result<Message, E>> + Unpin,
        E: ReadError,
    {
        let mut heartbeat =
            Heartbeat::new(self.app.config.ping_interval, self.app.config.ping_timeout);
        // Only a connection whose token expires has an expiry timer.
        let mut expires_at = self.grant.expires_at;
        let mut expiry = expiry_timer(expires_at);
        // Registered once with the shared token, not once per loop turn: the
        // token's waiter list is shared by every connection.
        let shutdown = self.app.shutdown.clone().cancelled_owned();
        tokio::pin!(shutdown);
        // Pipelined only where the store keeps the publishes' order.
        let max_in_flight = match self.app.store.keeps_order() {
            true => MAX_PUBLISHES_IN_FLIGHT,
            false => 1,
        };
        loop {
            let in_flight = self.publishing.as_ref().map_or(0, |p| p.len());
            let read = in_flight < max_in_flight;
            let outcome = tokio::select! {
                biased;
                () = &mut shutdown => Err(Ending::Close(close::GOING_AWAY, "server shutting down")),
                () = until(&mut expiry) => Err(Ending::Close(close::TOKEN_EXPIRED, "token expired: reconnect with a fresh token")),
                () = heartbeat.due() => heartbeat.beat(&self.outbox),
                Some(answer) = next_answer(&mut self.publishing), if in_flight > 0 => self.reply(answer),
                io = poll_fn(|cx| poll_socket(socket, &self.outbox, read, cx)) => {
                    let frame = match io {
                        Io::End(ending) => return ending,
                        Io::Frame(frame) => frame,
                    };
                    heartbeat.seen();
                    match frame {
                        Some(Ok(message)) => match self.on_message(message) {
                            Ok(Some(publish)) => {
                                self.start(publish);
                                Ok(())
                            }
                            Ok(None) => Ok(()),
                            Err(ending) => Err(ending),
                        },
                        Some(Err(error)) => Err(error.ending()),
                        None => Err(Ending::Gone),
                    }
                }
            };
            if let Err(ending) = outcome {
                return ending;
            }
            if self.grant.expires_at != expires_at {
                // A fresh token (`auth`) moves the deadline.
                expires_at = self.grant.expires_at;
                expiry = expiry_timer(expires_at);
            }
        }
    }

    /// Handles a client frame; a publish is returned for the caller to await
    /// (everything else completes here, without waiting).
    fn on_message(&mut self, message: Message) -> Result<Option<Publish>, Ending> {
        match message {
            Message::Text(text) => {
                let max_events = self.app.config.max_batch_events;
                // Most frames publish: a well-formed one is read without a JSON tree.
                if let Some(frame) = PublishFrame::read(text.as_str(), max_events) {
                    return self.publish_frame(frame);
                }
                match ClientMsg::decode_limited(text.as_str(), max_events) {
                    Ok(request) => self.dispatch(request),
                    Err(error) => {
                        // Only the refusal path looks at what the frame was.
                        if error.code == ErrorCode::InvalidRequest
                            && text.as_str().contains(r#""publish""#)
                        {
                            metrics::handles()
                                .publish(Transport::WebSocket, PublishResult::Invalid);
                        }
                        self.reply(error.into_msg()).map(|()| None)
                    }
                }
            }
            Message::Binary(_) => {
                let error = FrameError {
                    id: None,
                    code: ErrorCode::BadFrame,
                    message: "binary frames are not supported; send JSON text".into(),
                    detail: None,
                };
                self.reply(error.into_msg()).map(|()| None)
            }
            // The echo is already queued by the WebSocket layer; `finish` flushes it.
            Message::Close(_) => Err(Ending::ClientClosed),
            // Pings are answered by the WebSocket layer; any frame counts as alive.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Ok(None),
        }
    }

    fn dispatch(&mut self, request: ClientMsg) -> Result<Option<Publish>, Ending> {
        let done = match request {
            ClientMsg::Subscribe {
                id,
                execution_id,
                after,
                epoch,
            } => match self.grant.check(Action::Subscribe, &execution_id) {
                Ok(()) => self.subscribe(id, execution_id, after, epoch),
                Err(refusal) => self.reply(auth_error(id, &refusal, execution_id)),
            },
            ClientMsg::Unsubscribe { id, execution_id } => self.unsubscribe(id, execution_id),
            ClientMsg::Publish {
                id,
                execution_id,
                event,
                idempotency_key,
            } => {
                return self.checked(id, execution_id, 1, |id, execution_id| {
                    let event = NewEvent::encode(execution_id, &event);
                    Publish::One {
                        id,
                        event: event.with_idempotency_key(idempotency_key),
                    }
                });
            }
            ClientMsg::PublishBatch {
                id,
                execution_id,
                events,
                idempotency_key,
            } => {
                return self.checked(id, execution_id, events.len(), |id, execution_id| {
                    let batch = NewBatch::encode(execution_id, &events);
                    Publish::Batch {
                        id,
                        batch: batch.with_idempotency_key(idempotency_key),
                    }
                });
            }
            ClientMsg::SubscribeExecutions { id, status } => {
                // A repeat replaces the filter; the old following ends first.
                self.executions = None;
                let following =
                    self.app
                        .directory
                        .follow(&self.outbox, id, status, self.grant.clone());
                self.executions = Some(Box::new(following));
                Ok(())
            }
            ClientMsg::UnsubscribeExecutions { id } => {
                self.executions = None;
                let execution_id = String::new();
                self.reply(ServerMsg::Unsubscribed { id, execution_id })
            }
            ClientMsg::Ping { id } => self.reply(ServerMsg::Pong { id }),
            ClientMsg::Auth { id, token } => self.reauthenticate(id, &token),
        };
        done.map(|()| None)
    }

    /// A publish read the quick way, as [`Session::dispatch`] takes one.
    fn publish_frame(&mut self, frame: PublishFrame<'_>) -> Result<Option<Publish>, Ending> {
        let PublishFrame {
            id,
            execution_id,
            idempotency_key,
            events,
        } = frame;
        self.checked(
            id,
            execution_id,
            events.len(),
            |id, execution_id| match events {
                FrameEvents::One(body) => Publish::One {
                    id,
                    event: body
                        .encode(execution_id)
                        .with_idempotency_key(idempotency_key),
                },
                FrameEvents::Batch(body) => Publish::Batch {
                    id,
                    batch: body
                        .encode(execution_id)
                        .with_idempotency_key(idempotency_key),
                },
            },
        )
    }

    /// The publish `make` builds, when this connection may publish `events`
    /// to `execution_id` now (see [`Session::may_publish`]).
    fn checked(
        &mut self,
        id: Option<RequestId>,
        execution_id: String,
        events: usize,
        make: impl FnOnce(Option<RequestId>, String) -> Publish,
    ) -> Result<Option<Publish>, Ending> {
        if !self.may_publish(&id, &execution_id, events as u64)? {
            return Ok(None);
        }
        Ok(Some(make(id, execution_id)))
    }

    /// Whether this connection may publish `events` to `execution_id` now;
    /// when not, the refusal (`forbidden`, `rate_limited`) is already queued.
    fn may_publish(
        &mut self,
        id: &Option<RequestId>,
        execution_id: &str,
        events: u64,
    ) -> Result<bool, Ending> {
        let counted = |result| metrics::handles().publish(Transport::WebSocket, result);
        let refusal = if let Err(refusal) = self.grant.check(Action::Publish, execution_id) {
            counted(PublishResult::Forbidden);
            auth_error(id.clone(), &refusal, execution_id.to_owned())
        } else if let Err(limited) = self.app.publish_limit.check(self.client, events) {
            counted(PublishResult::RateLimited);
            rate_limited(id.clone(), &limited, execution_id.to_owned())
        } else {
            return Ok(true);
        };
        self.reply(refusal).map(|()| false)
    }

    /// Swaps in a fresh token's grant; subscriptions it no longer covers end.
    fn reauthenticate(&mut self, id: Option<RequestId>, token: &str) -> Result<(), Ending> {
        let grant = match self.app.auth.authenticate(Some(token)) {
            Ok(grant) => grant,
            Err(refusal) => {
                let msg = error_msg(id, ErrorCode::Unauthorized, &refusal.to_string(), None);
                return self.reply(msg);
            }
        };
        let revoked: Vec<Arc<str>> = self
            .subscriptions
            .keys()
            .filter(|execution_id| grant.check(Action::Subscribe, execution_id).is_err())
            .cloned()
            .collect();
        self.grant = grant;
        for execution_id in revoked {
            self.subscriptions.remove(&execution_id);
            let refusal = AuthError::Forbidden("subscribe");
            self.reply(auth_error(None, &refusal, execution_id.to_string()))?;
        }
        let expires_at = self.grant.expires_at;
        self.reply(ServerMsg::Authenticated { id, expires_at })
    }

    fn subscribe(
        &mut self,
        id: Option<RequestId>,
        execution_id: String,
        after: Option<u64>,
        epoch: Option<String>,
    ) -> Result<(), Ending> {
        let key: Arc<str> = Arc::from(execution_id.as_str());
        let slot = match self.may_subscribe(&key) {
            Ok(slot) => slot,
            Err((code, msg)) => return self.reply(error_msg(id, code, &msg, Some(execution_id))),
        };
        let start = Start {
            after,
            epoch: epoch.as_deref().and_then(Epoch::parse),
            slow_timeout: self.app.config.slow_client_timeout(),
            node_limit: self.app.config.max_total_subscriptions,
            lifecycle: Arc::clone(&self.app.lifecycle),
        };
        let encoder = WsEncoder {
            id: id.clone(),
            execution_id: Arc::clone(&key),
        };
        let outbox = Arc::clone(&self.outbox);
        match Subscription::start(
            &self.app.store,
            &self.app.feeds,
            &key,
            outbox,
            encoder,
            start,
        ) {
            Ok(subscription) => {
                let held = Held {
                    subscription,
                    _slot: slot,
                };
                self.subscriptions.insert(key, held);
                Ok(())
            }
            Err(limit) => {
                tracing::warn!(%limit, "subscription refused");
                let msg = "the hub's subscription limit is reached; try again later";
                self.reply(error_msg(
                    id,
                    ErrorCode::TooManySubscriptions,
                    msg,
                    Some(execution_id),
                ))
            }
        }
    }

    /// Whether this connection may subscribe to `key` now, with the token's
    /// slot for it when tokens are counted; else the refusal's code and text.
    fn may_subscribe(&mut self, key: &Arc<str>) -> Result<Option<TokenSlot>, (ErrorCode, String)> {
        let held = self.subscriptions.get(key);
        if held.is_some_and(|held| !held.subscription.is_ended()) {
            let msg = "already subscribed to this execution";
            return Err((ErrorCode::AlreadySubscribed, msg.into()));
        }
        self.subscriptions.remove(key);
        if self.subscriptions.len() >= self.app.config.max_subscriptions {
            let msg = "subscription limit of this connection reached";
            return Err((ErrorCode::TooManySubscriptions, msg.into()));
        }
        if !self.app.auth.enabled() {
            return Ok(None);
        }
        let slot = self.app.token_subscriptions.take(self.client);
        slot.map(Some)
            .map_err(|limit| (ErrorCode::TooManySubscriptions, limit.to_string()))
    }

    fn unsubscribe(&mut self, id: Option<RequestId>, execution_id: String) -> Result<(), Ending> {
        // Dropping the subscription ends it before `unsubscribed` is queued:
        // frames already queued stay ahead of it, none follow it.
        match self.subscriptions.remove(execution_id.as_str()) {
            Some(subscription) => {
                drop(subscription);
                self.reply(ServerMsg::Unsubscribed { id, execution_id })
            }
            None => {
                let msg = "not subscribed to this execution";
                self.reply(error_msg(
                    id,
                    ErrorCode::NotSubscribed,
                    msg,
                    Some(execution_id),
                ))
            }
        }
    }

    /// Sends `publish` on its way to the store, behind the connection's
    /// other publishes; its answer comes from [`next_answer`].
    fn start(&mut self, publish: Publish) {
        let publisher = Arc::clone(&self.app.publisher);
        let answer: Answer = match publish {
            Publish::One { id, event } => Box::pin(async move {
                let execution_id = event.execution_id().to_owned();
                let result = publisher.publish(event).await;
                count_ws_publish(result.as_ref().map(|r| r.duplicate));
                match result {
                    Ok(receipt) => ServerMsg::Ack {
                        id,
                        execution_id,
                        seq: receipt.seq,
                        first_seq: None,
                        timestamp: receipt.timestamp,
                    },
                    Err(error) => store_error_msg(id, &error, execution_id),
                }
            }),
            Publish::Batch { id, batch } => Box::pin(async move {
                let execution_id = batch.execution_id().to_owned();
                let result = publisher.publish_batch(batch).await;
                count_ws_publish(result.as_ref().map(|r| r.duplicate));
                match result {
                    Ok(receipt) => ServerMsg::Ack {
                        id,
                        execution_id,
                        seq: receipt.last_seq,
                        first_seq: Some(receipt.first_seq),
                        timestamp: receipt.timestamp,
                    },
                    Err(error) => store_error_msg(id, &error, execution_id),
                }
            }),
        };
        self.publishing
            .get_or_insert_with(Box::default)
            .push_back(answer);
    }

    /// Waits for the publishes on their way and queues their answers.
    async fn settle(&mut self) {
        while let Some(answer) = next_answer(&mut self.publishing).await {
            if self.reply(answer).is_err() {
                return;
            }
        }
    }

    /// Queues an answer; a client that leaves no room for answers is slow.
    fn reply(&self, msg: ServerMsg) -> Result<(), Ending> {
        match self.outbox.push_reply(text(&msg)) {
            Ok(()) => Ok(()),
            Err(PushError::Closed | PushError::Full) => Err(Ending::Close(
                close::SLOW_CONSUMER,
                "slow consumer: resume from your last seq",
            )),
        }
    }
}

/// The answer of the oldest publish in flight, once it is done; `None`
/// when there is none.
async fn next_answer(publishing: &mut Option<Box<InFlight>>) -> Option<ServerMsg> {
    match publishing {
        Some(in_flight) => in_flight.next().await,
        None => None,
    }
}

/// Counts a WebSocket publish that reached the store (`Ok(duplicate)`).
fn count_ws_publish(result: Result<bool, &StoreError>) {
    let result = match result {
        Ok(false) => PublishResult::Accepted,
        Ok(true) => PublishResult::IdempotentReplay,
        Err(StoreError::Ended { .. }) => PublishResult::Ended,
        Err(error) if error.is_retryable() => PublishResult::Unavailable,
        Err(_) => PublishResult::Failed,
    };
    metrics::handles().publish(Transport::WebSocket, result);
}

#[cfg(test)]
mod tests;

//! One WebSocket connection: many subscriptions multiplexed over one socket.
//!
//! The session reads client frames and dispatches them; each subscription is a
//! task running [`follow`] that pushes frames into the connection's bounded
//! outbound queue; a writer task drains that queue into the socket. The loop is
//! generic over `Sink`/`Stream` so it runs over channels in unit tests.
//!
//! A client whose queue stays full is closed with [`close::SLOW_CONSUMER`];
//! on shutdown every session closes with [`close::GOING_AWAY`].

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use exechub_protocol::ws::FrameError;
use exechub_protocol::{ClientMsg, ErrorCode, RequestId, ServerMsg, close};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{AbortHandle, JoinSet};

use crate::AppState;
use crate::auth::{self, Action, AuthError, Grant, LEEWAY_SECS};
use crate::broker::follow::{FollowEnd, Item, Outbox, follow};
use crate::error::ws_store_error;
use crate::event::NewEvent;

/// How long the close frame may take to reach a client before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Runs a connection until the client leaves, falls behind, or the hub shuts down.
pub async fn run<S, R, E>(app: AppState, grant: Grant, sink: S, stream: R)
where
    S: Sink<Message> + Unpin + Send + 'static,
    S::Error: Send,
    R: Stream<Item = Result<Message, E>> + Unpin,
{
    let _counted = app.stats.websocket();
    let (out, queue) = mpsc::channel(app.config.client_queue.max(1));
    let (close_tx, close_rx) = oneshot::channel();
    let writer = tokio::spawn(write_loop(sink, queue, close_rx));
    let mut session = Session {
        app,
        grant,
        out,
        subscriptions: HashMap::new(),
        followers: JoinSet::new(),
    };
    let close = session.read_loop(stream).await;
    session.followers.abort_all();
    drop(session);
    if let Some(frame) = close {
        tracing::info!(code = frame.code, reason = %frame.reason, "closing WebSocket");
        let _ = close_tx.send(frame);
    }
    let _ = writer.await;
}

struct Session {
    app: AppState,
    /// What the connection's token allows; replaced by an `auth` op.
    grant: Grant,
    /// The connection's bounded outbound queue.
    out: mpsc::Sender<Message>,
    /// Live subscriptions by execution id.
    subscriptions: HashMap<String, AbortHandle>,
    /// The subscription tasks; each ends with its execution id and reason.
    followers: JoinSet<(String, FollowEnd)>,
}

type Ending = Option<CloseFrame>;

impl Session {
    /// Returns the close frame to send, or `None` when the client is already gone.
    async fn read_loop<R, E>(&mut self, mut stream: R) -> Ending
    where
        R: Stream<Item = Result<Message, E>> + Unpin,
    {
        loop {
            let expiry = token_expiry(self.grant.expires_at);
            let result = tokio::select! {
                () = self.app.shutdown.cancelled() => {
                    return Some(close_frame(close::GOING_AWAY, "server shutting down"));
                }
                () = expiry => {
                    return Some(close_frame(close::TOKEN_EXPIRED, "token expired: reconnect with a fresh token"));
                }
                Some(done) = self.followers.join_next_with_id() => match done {
                    Ok((task, (execution_id, end))) => self.on_follower_end(task, execution_id, end).await,
                    Err(_) => Ok(()), // aborted by unsubscribe
                },
                frame = stream.next() => match frame {
                    Some(Ok(message)) => self.on_message(message).await,
                    Some(Err(_)) | None => return None,
                },
            };
            if let Err(ending) = result {
                return ending;
            }
        }
    }

    async fn on_message(&mut self, message: Message) -> Result<(), Ending> {
        match message {
            Message::Text(text) => match ClientMsg::decode(text.as_str()) {
                Ok(request) => self.dispatch(request).await,
                Err(error) => self.reply(error.into_msg()).await,
            },
            Message::Binary(_) => {
                let error = FrameError {
                    id: None,
                    code: ErrorCode::BadFrame,
                    message: "binary frames are not supported; send JSON text".into(),
                    detail: None,
                };
                self.reply(error.into_msg()).await
            }
            Message::Close(_) => Err(None),
            Message::Ping(_) | Message::Pong(_) => Ok(()),
        }
    }

    async fn dispatch(&mut self, request: ClientMsg) -> Result<(), Ending> {
        match request {
            ClientMsg::Subscribe {
                id,
                execution_id,
                after,
            } => match self.grant.check(Action::Subscribe, &execution_id) {
                Ok(()) => self.subscribe(id, execution_id, after).await,
                Err(refusal) => self.reply(auth_error(id, &refusal, execution_id)).await,
            },
            ClientMsg::Unsubscribe { id, execution_id } => self.unsubscribe(id, execution_id).await,
            ClientMsg::Publish {
                id,
                execution_id,
                event,
                idempotency_key,
            } => {
                if let Err(refusal) = self.grant.check(Action::Publish, &execution_id) {
                    return self.reply(auth_error(id, &refusal, execution_id)).await;
                }
                let event =
                    NewEvent::encode(execution_id, &event).with_idempotency_key(idempotency_key);
                self.publish(id, event).await
            }
            ClientMsg::Ping { id } => self.reply(ServerMsg::Pong { id }).await,
            ClientMsg::Auth { id, token } => self.reauthenticate(id, &token).await,
        }
    }

    /// Swaps in a fresh token's grant; subscriptions it no longer covers end.
    async fn reauthenticate(&mut self, id: Option<RequestId>, token: &str) -> Result<(), Ending> {
        let grant = match self.app.auth.authenticate(Some(token)) {
            Ok(grant) => grant,
            Err(refusal) => {
                let msg = error_msg(id, ErrorCode::Unauthorized, &refusal.to_string(), None);
                return self.reply(msg).await;
            }
        };
        let revoked: Vec<String> = self
            .subscriptions
            .keys()
            .filter(|execution_id| grant.check(Action::Subscribe, execution_id).is_err())
            .cloned()
            .collect();
        self.grant = grant;
        for execution_id in revoked {
            if let Some(handle) = self.subscriptions.remove(&execution_id) {
                handle.abort();
            }
            let refusal = AuthError::Forbidden("subscribe");
            self.reply(auth_error(None, &refusal, execution_id)).await?;
        }
        let expires_at = self.grant.expires_at;
        self.reply(ServerMsg::Authenticated { id, expires_at })
            .await
    }

    async fn subscribe(
        &mut self,
        id: Option<RequestId>,
        execution_id: String,
        after: Option<u64>,
    ) -> Result<(), Ending> {
        let refused = if self.subscriptions.contains_key(&execution_id) {
            Some((
                ErrorCode::AlreadySubscribed,
                "already subscribed to this execution",
            ))
        } else if self.subscriptions.len() >= self.app.config.max_subscriptions {
            Some((
                ErrorCode::TooManySubscriptions,
                "subscription limit of this connection reached",
            ))
        } else {
            None
        };
        if let Some((code, message)) = refused {
            return self
                .reply(error_msg(id, code, message, Some(execution_id)))
                .await;
        }
        let outbox = Outbox {
            queue: self.out.clone(),
            encode: ws_encoder(id, execution_id.clone()),
            slow_timeout: self.app.config.slow_client_timeout(),
        };
        let store = self.app.store.clone();
        let key = execution_id.clone();
        let handle = self.followers.spawn(async move {
            let end = follow(store, execution_id.clone(), after, outbox).await;
            (execution_id, end)
        });
        self.subscriptions.insert(key, handle);
        Ok(())
    }

    async fn unsubscribe(
        &mut self,
        id: Option<RequestId>,
        execution_id: String,
    ) -> Result<(), Ending> {
        match self.subscriptions.remove(&execution_id) {
            Some(handle) => {
                // Frames already queued stay ahead of `unsubscribed`; none follow it.
                handle.abort();
                self.reply(ServerMsg::Unsubscribed { id, execution_id })
                    .await
            }
            None => {
                let msg = error_msg(
                    id,
                    ErrorCode::NotSubscribed,
                    "not subscribed to this execution",
                    Some(execution_id),
                );
                self.reply(msg).await
            }
        }
    }

    async fn publish(&mut self, id: Option<RequestId>, event: NewEvent) -> Result<(), Ending> {
        let execution_id = event.execution_id().to_owned();
        let answer = match self.app.publisher.publish(event).await {
            Ok(receipt) => ServerMsg::Ack {
                id,
                execution_id,
                seq: receipt.seq,
                timestamp: receipt.timestamp,
            },
            Err(error) => {
                let (code, message) = ws_store_error(&error);
                error_msg(id, code, message, Some(execution_id))
            }
        };
        self.reply(answer).await
    }

    async fn on_follower_end(
        &mut self,
        task: tokio::task::Id,
        execution_id: String,
        end: FollowEnd,
    ) -> Result<(), Ending> {
        if self
            .subscriptions
            .get(&execution_id)
            .is_some_and(|h| h.id() == task)
        {
            self.subscriptions.remove(&execution_id);
        }
        match end {
            FollowEnd::Closed => Err(None),
            FollowEnd::SlowConsumer => Err(Some(close_frame(
                close::SLOW_CONSUMER,
                "slow consumer: resume from your last seq",
            ))),
            FollowEnd::Store(error) => {
                let (code, message) = ws_store_error(&error);
                self.reply(error_msg(None, code, message, Some(execution_id)))
                    .await
            }
        }
    }

    /// Queues an answer; a client that leaves no room for answers is slow.
    async fn reply(&self, msg: ServerMsg) -> Result<(), Ending> {
        let text = serde_json::to_string(&msg)
            .map_err(|_| Some(close_frame(close::INTERNAL_ERROR, "encoding failed")))?;
        match self
            .out
            .send_timeout(
                Message::Text(text.into()),
                self.app.config.slow_client_timeout(),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                Err(Some(close_frame(close::SLOW_CONSUMER, "slow consumer")))
            }
            Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(None),
        }
    }
}

fn ws_encoder(
    id: Option<RequestId>,
    execution_id: String,
) -> Box<dyn Fn(Item) -> Message + Send + Sync> {
    Box::new(move |item| match item {
        Item::Event(event) => Message::Text(event.ws_frame()),
        Item::Subscribed { after } => text(&ServerMsg::Subscribed {
            id: id.clone(),
            execution_id: execution_id.clone(),
            after,
        }),
        Item::HistoryLost {
            after,
            resume_after,
        } => text(&ServerMsg::HistoryLost {
            execution_id: execution_id.clone(),
            after,
            resume_after,
        }),
    })
}

fn text(msg: &ServerMsg) -> Message {
    // Server messages are plain data; encoding cannot fail.
    Message::Text(serde_json::to_string(msg).unwrap_or_default().into())
}

fn error_msg(
    id: Option<RequestId>,
    code: ErrorCode,
    message: &str,
    execution_id: Option<String>,
) -> ServerMsg {
    ServerMsg::Error {
        id,
        code,
        message: message.to_owned(),
        execution_id,
        detail: None,
    }
}

/// The `error` frame for a refused token or operation.
fn auth_error(id: Option<RequestId>, refusal: &AuthError, execution_id: String) -> ServerMsg {
    let code = if refusal.is_forbidden() {
        ErrorCode::Forbidden
    } else {
        ErrorCode::Unauthorized
    };
    error_msg(id, code, &refusal.to_string(), Some(execution_id))
}

/// Completes when a token expiring at `expires_at` (Unix seconds) is no
/// longer valid, leeway included; never when auth is off.
async fn token_expiry(expires_at: u64) {
    if expires_at == u64::MAX {
        return std::future::pending().await;
    }
    let left = expires_at
        .saturating_add(LEEWAY_SECS)
        .saturating_sub(auth::now());
    tokio::time::sleep(Duration::from_secs(left)).await;
}

fn close_frame(code: u16, reason: &'static str) -> CloseFrame {
    CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }
}

/// Drains the outbound queue into the socket; a close request preempts
/// everything, even a write blocked on a client that stopped reading.
async fn write_loop<S>(
    mut sink: S,
    mut queue: mpsc::Receiver<Message>,
    mut close: oneshot::Receiver<CloseFrame>,
) where
    S: Sink<Message> + Unpin,
{
    loop {
        let message = tokio::select! {
            biased;
            frame = &mut close => return send_close(&mut sink, frame.ok()).await,
            message = queue.recv() => message,
        };
        let Some(message) = message else {
            // Every sender is gone: the session ended; wait for its close decision.
            return send_close(&mut sink, close.await.ok()).await;
        };
        tokio::select! {
            biased;
            frame = &mut close => return send_close(&mut sink, frame.ok()).await,
            sent = sink.send(message) => if sent.is_err() { return },
        }
    }
}

async fn send_close<S>(sink: &mut S, frame: Option<CloseFrame>)
where
    S: Sink<Message> + Unpin,
{
    if let Some(frame) = frame {
        let _ = tokio::time::timeout(CLOSE_GRACE, sink.send(Message::Close(Some(frame)))).await;
    }
    let _ = tokio::time::timeout(CLOSE_GRACE, sink.close()).await;
}

//! The socket driver: the thin layer between the state machine and a real
//! gloo-net WebSocket. One task per client: connect (with a fresh token),
//! wait for open, move frames both ways, refresh the token, and on a drop
//! wait as the machine says, then connect again — until the client is closed
//! or freed (its outbox ends), or the hub says not to reconnect.
//!
//! A socket is let go only once its `close` event has come, even when the
//! client is closed first: gloo's socket releases its callbacks when dropped,
//! and a `ws` socket in Node would otherwise fire its `close` at a callback
//! already released.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::Poll;

use exechub_protocol::ClientMsg;
use futures_channel::mpsc::{TryRecvError, UnboundedReceiver};
use futures_util::{FutureExt, SinkExt, StreamExt};
use gloo_net::websocket::futures::WebSocket;
use gloo_net::websocket::{Message, State, WebSocketError};

use crate::auth::{self, Tokens};
use crate::global::Sleep;
use crate::shared::{Machine, MachineActions, SharedRef, SharedWeak, act, perform};
use crate::socket::Dialer;
use crate::wire;

/// The close code browsers report for a connection that failed or dropped.
const ABNORMAL_CLOSURE: u16 = 1006;

/// How a connection ended.
enum Ended {
    /// The socket closed with this code.
    Dropped(u16),
    /// The client was closed or freed.
    ClientGone,
}

/// What woke a connection's loop before the open.
enum Opening {
    /// The client is gone.
    ClientGone,
    /// The socket opened.
    Opened,
    /// Something from the socket (`None`: it closed).
    Incoming(Option<Result<Message, WebSocketError>>),
}

/// What woke an open connection's loop.
enum Wake {
    /// A frame from the application (`None`: the client is gone).
    Outgoing(Option<ClientMsg>),
    /// Something from the socket (`None`: it closed).
    Incoming(Option<Result<Message, WebSocketError>>),
    /// A fresh token (`None`: `getToken` failed).
    Token(Option<String>),
}

/// A token refresh in progress: waiting for its time, then for `getToken`.
type Refresh = Pin<Box<dyn Future<Output = Option<String>>>>;

/// The driver's own state.
struct Driver {
    shared: SharedWeak,
    outbox: UnboundedReceiver<ClientMsg>,
    dialer: Dialer,
    tokens: Tokens,
}

/// Starts the driver of a client. It runs once the caller's JavaScript task is
/// done, so `onStateChange` never runs inside the constructor.
pub fn spawn(
    shared: SharedWeak,
    outbox: UnboundedReceiver<ClientMsg>,
    dialer: Dialer,
    tokens: Tokens,
) {
    let driver = Driver {
        shared,
        outbox,
        dialer,
        tokens,
    };
    wasm_bindgen_futures::spawn_local(driver.run());
}

impl Driver {
    async fn run(mut self) {
        loop {
            if !self.decide(|machine| machine.connecting()) {
                return;
            }
            let Ended::Dropped(code) = self.connection().await else {
                return;
            };
            if !self.discard_stale() {
                return;
            }
            let Some(shared) = self.shared() else { return };
            let random = js_sys::Math::random();
            let (actions, delay) = shared.borrow_mut().machine.dropped(code, random);
            perform(&shared, actions);
            drop(shared);
            let Some(delay) = delay else { return };
            if self.until_gone(Sleep::new(delay)).await.is_none() {
                return;
            }
        }
    }

    /// One connection attempt, from the token to the socket's close.
    async fn connection(&mut self) -> Ended {
        // Every attempt gets a fresh token: the last one may be why the previous failed.
        if let Some(get_token) = self.tokens.getter() {
            match self.until_gone(auth::fetch(get_token)).await {
                None => return Ended::ClientGone,
                Some(token) => token.into_iter().for_each(|t| self.remember(t)),
            }
        }
        let url = self.tokens.url(&self.dialer.url);
        let Ok((raw, mut socket)) = self.dialer.open(&url) else {
            return Ended::Dropped(ABNORMAL_CLOSURE);
        };
        let mut code = ABNORMAL_CLOSURE;
        match self.until_open(&mut socket, &mut code).await {
            Some(true) => {}
            Some(false) => return Ended::Dropped(code),
            None => return closing(&raw, socket).await,
        }
        if !self.decide(|machine| machine.opened()) {
            return closing(&raw, socket).await;
        }
        self.open(raw, socket, code).await
    }

    /// Waits until the socket opens (`Some(true)`), fails (`Some(false)`,
    /// its close code in `code`) or the client goes (`None`).
    async fn until_open(&mut self, socket: &mut WebSocket, code: &mut u16) -> Option<bool> {
        loop {
            let wake = poll_fn(|cx| {
                while let Poll::Ready(frame) = self.outbox.poll_next_unpin(cx) {
                    // Frames before the open are stale: the open resends what matters.
                    if frame.is_none() {
                        return Poll::Ready(Opening::ClientGone);
                    }
                }
                if socket.poll_ready_unpin(cx).is_ready() && matches!(socket.state(), State::Open) {
                    return Poll::Ready(Opening::Opened);
                }
                socket.poll_next_unpin(cx).map(Opening::Incoming)
            });
            match wake.await {
                Opening::ClientGone => return None,
                Opening::Opened => return Some(true),
                Opening::Incoming(None) => return Some(false),
                Opening::Incoming(Some(incoming)) => closed_with(incoming, code),
            }
        }
    }

    /// The open connection's loop.
    async fn open(
        &mut self,
        raw: web_sys::WebSocket,
        mut socket: WebSocket,
        mut code: u16,
    ) -> Ended {
        let mut refresh = self.refresh();
        loop {
            let wake = poll_fn(|cx| {
                if let Poll::Ready(frame) = self.outbox.poll_next_unpin(cx) {
                    return Poll::Ready(Wake::Outgoing(frame));
                }
                if let Poll::Ready(incoming) = socket.poll_next_unpin(cx) {
                    return Poll::Ready(Wake::Incoming(incoming));
                }
                match refresh.as_mut().map(|r| r.poll_unpin(cx)) {
                    Some(Poll::Ready(token)) => Poll::Ready(Wake::Token(token)),
                    _ => Poll::Pending,
                }
            });
            match wake.await {
                Wake::Outgoing(None) => return closing(&raw, socket).await,
                Wake::Outgoing(Some(msg)) => {
                    if let Ok(text) = wire::to_json(&msg) {
                        // A failed send means the socket is closing: its close event follows.
                        let _ = socket.send(Message::Text(text)).await;
                    }
                }
                Wake::Incoming(None) => return Ended::Dropped(code),
                Wake::Incoming(Some(Ok(Message::Text(text)))) => self.received(&text),
                Wake::Incoming(Some(incoming)) => closed_with(incoming, &mut code),
                Wake::Token(token) => {
                    if let Some(token) = token {
                        self.remember(token.clone());
                        self.decide(|machine| machine.token_refreshed(token));
                    }
                    refresh = self.refresh();
                }
            }
        }
    }

    /// The next token refresh, when the token can and should be refreshed.
    fn refresh(&self) -> Option<Refresh> {
        let delay = self.tokens.refresh_in()?;
        let get_token = self.tokens.getter()?;
        Some(Box::pin(async move {
            Sleep::new(delay).await;
            auth::fetch(get_token).await
        }))
    }

    /// Keeps a fresh token for the next connection and for HTTP calls.
    fn remember(&mut self, token: String) {
        if let Some(shared) = self.shared() {
            shared.borrow_mut().token = Some(token.clone());
        }
        self.tokens.set(token);
    }

    fn received(&self, text: &str) {
        // A frame this version does not know (a newer hub's) is skipped.
        if let Some(msg) = wire::decode(text) {
            self.decide(|machine| machine.received(msg));
        }
    }

    /// Runs `decide` on the machine and carries out the actions; `false`
    /// when the client is gone or closed.
    fn decide(&self, decide: impl FnOnce(&mut Machine) -> MachineActions) -> bool {
        let Some(shared) = self.shared() else {
            return false;
        };
        act(&shared, decide);
        let closed = shared.borrow().machine.is_closed();
        !closed
    }

    fn shared(&self) -> Option<SharedRef> {
        self.shared.upgrade()
    }

    /// Drops frames meant for a socket that is gone (the machine resends what
    /// matters on the next open); `false` when the client is gone.
    fn discard_stale(&mut self) -> bool {
        loop {
            match self.outbox.try_recv() {
                Ok(_stale) => {}
                Err(TryRecvError::Closed) => return false,
                Err(TryRecvError::Empty) => return true,
            }
        }
    }

    /// Runs `future` unless the client goes first (`None`).
    async fn until_gone<T>(&mut self, future: impl Future<Output = T>) -> Option<T> {
        let mut future = std::pin::pin!(future);
        poll_fn(|cx| {
            while let Poll::Ready(frame) = self.outbox.poll_next_unpin(cx) {
                if frame.is_none() {
                    return Poll::Ready(None);
                }
            }
            future.as_mut().poll(cx).map(Some)
        })
        .await
    }
}

/// Notes the close code when `incoming` is the socket's close event.
fn closed_with(incoming: Result<Message, WebSocketError>, code: &mut u16) {
    if let Err(WebSocketError::ConnectionClose(event)) = incoming {
        *code = event.code;
    }
}

/// Closes the socket for a client that is gone, and lets it go once its
/// close event has come.
async fn closing(raw: &web_sys::WebSocket, mut socket: WebSocket) -> Ended {
    let _ = raw.close_with_code(1000);
    while socket.next().await.is_some() {}
    Ended::ClientGone
}

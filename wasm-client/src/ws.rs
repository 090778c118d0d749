//! The WebSocket connection: one socket for all subscriptions, reconnecting
//! with backoff and resubscribing each subscription after its last seq.
//!
//! State is shared (`Rc<RefCell<…>>`, the browser is single-threaded) between
//! the JavaScript-facing handles and one driver task. JavaScript callbacks are
//! always invoked after the borrow is released, so a callback may call back
//! into the client (e.g. unsubscribe from inside `onEvent`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use exechub_protocol::{ClientMsg, ErrorCode, PublishRequest, RequestId, ServerMsg, close};
use futures_channel::{mpsc, oneshot};
use futures_util::future::{Either, select};
use futures_util::{SinkExt, StreamExt};
use gloo_net::websocket::futures::WebSocket;
use gloo_net::websocket::{Message, WebSocketError};
use js_sys::Function;
use wasm_bindgen::JsValue;

use crate::auth::Tokens;
use crate::core::{Backoff, Position, Verdict};
use crate::error::ClientError;
use crate::types::{HistoryLostView, event_to_js, to_js};

/// Connection state, as `ConnectionState` in TypeScript.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// First connection attempt.
    Connecting,
    /// Connected; subscriptions are active.
    Open,
    /// The socket dropped; waiting to reconnect.
    Reconnecting,
    /// `close()` was called, or the hub said not to reconnect.
    Closed,
}

impl ConnectionState {
    /// The TypeScript string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Open => "open",
            Self::Reconnecting => "reconnecting",
            Self::Closed => "closed",
        }
    }
}

/// Reconnect settings.
pub struct Settings {
    /// The `/ws` URL (the token is added per connection).
    pub url: String,
    /// Where the token comes from, when the hub requires one.
    pub tokens: Tokens,
    /// First reconnect delay.
    pub min_delay: Duration,
    /// Longest reconnect delay.
    pub max_delay: Duration,
}

/// One subscription's handlers and position.
pub struct Sub {
    /// Where it stands.
    pub position: Position,
    /// `onEvent`.
    pub on_event: Function,
    /// `onHistoryLost`.
    pub on_lost: Option<Function>,
    /// `onError`.
    pub on_error: Option<Function>,
}

/// State shared by the handles and the driver.
#[derive(Default)]
pub struct Shared {
    state: Option<ConnectionState>,
    on_state: Option<Function>,
    subs: HashMap<String, Sub>,
    /// Publishes waiting for their `ack`, by request id.
    pending: HashMap<u64, oneshot::Sender<Result<u64, ClientError>>>,
    /// Frames to the open socket; `None` while not connected.
    outbox: Option<mpsc::UnboundedSender<String>>,
    next_id: u64,
    closed: bool,
    /// Wakes the driver from a backoff sleep when the client is closed.
    wake: Option<oneshot::Sender<()>>,
}

/// Shared state handle.
pub type SharedRef = Rc<RefCell<Shared>>;

/// JavaScript calls to make once the state is no longer borrowed.
type Calls = Vec<(Function, JsValue)>;

fn invoke(calls: Calls) {
    for (function, argument) in calls {
        // An exception in application code must not break the client.
        let _ = function.call1(&JsValue::NULL, &argument);
    }
}

impl Shared {
    /// New state with an optional `onStateChange`.
    pub fn new(on_state: Option<Function>) -> SharedRef {
        Rc::new(RefCell::new(Self {
            on_state,
            ..Self::default()
        }))
    }

    /// The current connection state.
    pub fn state(&self) -> ConnectionState {
        self.state.unwrap_or(ConnectionState::Connecting)
    }

    fn request_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn send(&self, msg: &ClientMsg) {
        if let (Some(outbox), Ok(text)) = (&self.outbox, serde_json::to_string(msg)) {
            let _ = outbox.unbounded_send(text);
        }
    }

    fn subscribe_msg(&mut self, execution_id: &str) -> Option<ClientMsg> {
        let after = self.subs.get(execution_id)?.position.resume_after();
        let id = Some(RequestId::Num(self.request_id()));
        Some(ClientMsg::Subscribe {
            id,
            execution_id: execution_id.to_owned(),
            after,
        })
    }
}

fn set_state(shared: &SharedRef, state: ConnectionState) {
    let callback = {
        let mut inner = shared.borrow_mut();
        if inner.state == Some(state) {
            return;
        }
        inner.state = Some(state);
        inner.on_state.clone()
    };
    if let Some(callback) = callback {
        invoke(vec![(callback, state.as_str().into())]);
    }
}

/// Adds a subscription and, when connected, sends it.
///
/// # Errors
/// [`ClientError::AlreadySubscribed`], [`ClientError::Closed`], or an
/// `invalid_request` for a bad execution id.
pub fn subscribe(shared: &SharedRef, execution_id: String, sub: Sub) -> Result<(), ClientError> {
    exechub_protocol::validate_execution_id(&execution_id).map_err(|e| ClientError::Hub {
        code: ErrorCode::InvalidRequest,
        message: e.msg.clone(),
        detail: Some(vec![e]),
    })?;
    let mut inner = shared.borrow_mut();
    if inner.closed {
        return Err(ClientError::Closed);
    }
    if inner.subs.contains_key(&execution_id) {
        return Err(ClientError::AlreadySubscribed(execution_id));
    }
    inner.subs.insert(execution_id.clone(), sub);
    if let Some(msg) = inner.subscribe_msg(&execution_id) {
        inner.send(&msg);
    }
    Ok(())
}

/// Removes a subscription; no event of it is delivered afterwards.
pub fn unsubscribe(shared: &SharedRef, execution_id: &str) {
    let mut inner = shared.borrow_mut();
    if inner.subs.remove(execution_id).is_some() {
        let id = Some(RequestId::Num(inner.request_id()));
        inner.send(&ClientMsg::Unsubscribe {
            id,
            execution_id: execution_id.to_owned(),
        });
    }
}

/// The last seq delivered to (or confirmed for) a subscription.
pub fn last_seq(shared: &SharedRef, execution_id: &str) -> Option<u64> {
    shared.borrow().subs.get(execution_id)?.position.last()
}

/// Publishes over the socket; resolves with the seq once the hub acknowledged it.
///
/// Publishes are not queued while disconnected: they fail at once with
/// `not_connected`, and one in flight when the socket drops fails with
/// `connection_lost` (it may have been stored).
pub async fn publish(
    shared: SharedRef,
    execution_id: String,
    request: Result<PublishRequest, ClientError>,
) -> Result<u64, ClientError> {
    let answer = {
        let mut inner = shared.borrow_mut();
        let event = request?;
        if inner.closed {
            return Err(ClientError::Closed);
        }
        if inner.outbox.is_none() {
            return Err(ClientError::NotConnected);
        }
        let id = inner.request_id();
        let (sender, answer) = oneshot::channel();
        inner.pending.insert(id, sender);
        let msg = ClientMsg::Publish {
            id: Some(RequestId::Num(id)),
            execution_id,
            event,
            idempotency_key: None,
        };
        inner.send(&msg);
        answer
    };
    answer.await.unwrap_or(Err(ClientError::ConnectionLost))
}

/// Closes the client: the socket, pending publishes and the reconnect loop.
pub fn close(shared: &SharedRef) {
    let wake = {
        let mut inner = shared.borrow_mut();
        inner.closed = true;
        inner.outbox = None;
        inner.wake.take()
    };
    if let Some(wake) = wake {
        let _ = wake.send(());
    }
    fail_pending(shared, &ClientError::Closed);
    set_state(shared, ConnectionState::Closed);
}

fn fail_pending(shared: &SharedRef, error: &ClientError) {
    let pending: Vec<_> = shared.borrow_mut().pending.drain().collect();
    for (_, sender) in pending {
        let _ = sender.send(Err(error.clone()));
    }
}

/// Whether to try again after a connection ended.
enum Flow {
    Reconnect,
    Stop,
}

/// Runs the connection until the client is closed or the hub says not to reconnect.
pub async fn drive(shared: SharedRef, settings: Settings) {
    let mut backoff = Backoff::new(settings.min_delay, settings.max_delay);
    let mut state = ConnectionState::Connecting;
    while !shared.borrow().closed {
        set_state(&shared, state);
        let url = settings.tokens.url(&settings.url).await;
        let flow = connect_once(&shared, &url, &settings.tokens, &mut backoff).await;
        shared.borrow_mut().outbox = None;
        fail_pending(&shared, &ClientError::ConnectionLost);
        if matches!(flow, Flow::Stop) || shared.borrow().closed {
            break;
        }
        state = ConnectionState::Reconnecting;
        set_state(&shared, state);
        sleep_unless_closed(&shared, backoff.next_delay(js_sys::Math::random())).await;
    }
    close(&shared);
}

async fn sleep_unless_closed(shared: &SharedRef, delay: Duration) {
    let (wake, woken) = oneshot::channel();
    shared.borrow_mut().wake = Some(wake);
    let timer = gloo_timers::future::sleep(delay);
    futures_util::pin_mut!(timer);
    let _ = select(timer, woken).await;
}

async fn connect_once(
    shared: &SharedRef,
    url: &str,
    tokens: &Tokens,
    backoff: &mut Backoff,
) -> Flow {
    let Ok(socket) = WebSocket::open(url) else {
        return Flow::Reconnect;
    };
    let (mut sink, mut stream) = socket.split();
    // The first send completes once the socket is open (or fails if it cannot open).
    let hello = serde_json::to_string(&ClientMsg::Ping { id: None }).unwrap_or_default();
    if sink.send(Message::Text(hello)).await.is_err() {
        return Flow::Reconnect;
    }
    let (outbox, frames) = mpsc::unbounded();
    {
        let mut inner = shared.borrow_mut();
        inner.outbox = Some(outbox);
        let ids: Vec<String> = inner.subs.keys().cloned().collect();
        for id in ids {
            if let Some(msg) = inner.subscribe_msg(&id) {
                inner.send(&msg);
            }
        }
    }
    backoff.reset();
    set_state(shared, ConnectionState::Open);
    let writer = frames.map(|text| Ok(Message::Text(text))).forward(sink);
    let reader = async {
        while let Some(frame) = stream.next().await {
            match frame {
                Ok(Message::Text(text)) => handle(shared, &text),
                Ok(Message::Bytes(_)) => {}
                Err(WebSocketError::ConnectionClose(event))
                    if !close::should_reconnect(event.code) && event.code != 1000 =>
                {
                    return Flow::Stop;
                }
                Err(_) => return Flow::Reconnect,
            }
        }
        Flow::Reconnect
    };
    let refresher = tokens.keep_fresh(shared);
    futures_util::pin_mut!(writer, reader, refresher);
    match select(select(writer, reader), refresher).await {
        Either::Left((Either::Right((flow, _)), _)) => flow,
        Either::Left((Either::Left(_), _)) | Either::Right(_) => Flow::Reconnect,
    }
}

/// Sends a fresh token on the open socket (`auth` op); the hub answers
/// `authenticated`, or closes with 4002 if the old token lapses first.
pub fn send_auth(shared: &SharedRef, token: String) {
    let mut inner = shared.borrow_mut();
    let id = Some(RequestId::Num(inner.request_id()));
    inner.send(&ClientMsg::Auth { id, token });
}

/// Applies one server frame, then runs the callbacks it triggers.
fn handle(shared: &SharedRef, text: &str) {
    let Ok(msg) = serde_json::from_str::<ServerMsg>(text) else {
        return; // a newer hub may send messages this client does not know
    };
    let calls = apply(&mut shared.borrow_mut(), msg);
    invoke(calls);
}

fn apply(inner: &mut Shared, msg: ServerMsg) -> Calls {
    let mut calls = Calls::new();
    match msg {
        ServerMsg::Event { event } => {
            if let Some(sub) = inner.subs.get_mut(&event.execution_id)
                && sub.position.accept(event.seq) == Verdict::Deliver
                && let Ok(value) = event_to_js(&event)
            {
                calls.push((sub.on_event.clone(), value));
            }
        }
        ServerMsg::Subscribed {
            execution_id,
            after,
            ..
        } => {
            if let Some(sub) = inner.subs.get_mut(&execution_id) {
                sub.position.confirmed(after);
            }
        }
        ServerMsg::HistoryLost {
            execution_id,
            after,
            resume_after,
        } => {
            if let Some(sub) = inner.subs.get_mut(&execution_id) {
                sub.position.lost(resume_after);
                let view = HistoryLostView {
                    execution_id: &execution_id,
                    after,
                    resume_after,
                };
                if let (Some(callback), Ok(value)) = (&sub.on_lost, to_js(&view)) {
                    calls.push((callback.clone(), value));
                }
            }
        }
        ServerMsg::Ack {
            id: Some(RequestId::Num(id)),
            seq,
            ..
        } => {
            if let Some(sender) = inner.pending.remove(&id) {
                let _ = sender.send(Ok(seq));
            }
        }
        ServerMsg::Error {
            id,
            code,
            message,
            execution_id,
            detail,
        } => {
            let error = ClientError::Hub {
                code,
                message,
                detail,
            };
            let pending = match id {
                Some(RequestId::Num(id)) => inner.pending.remove(&id),
                _ => None,
            };
            if let Some(sender) = pending {
                let _ = sender.send(Err(error));
            } else if let Some(sub) = execution_id.and_then(|id| inner.subs.get(&id))
                && let Some(callback) = &sub.on_error
            {
                calls.push((callback.clone(), error.to_js()));
            }
        }
        _ => {}
    }
    calls
}

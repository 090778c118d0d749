//! The WebSocket connection: one socket for all subscriptions, reconnecting
//! with backoff and resubscribing each subscription after its last position
//! (epoch and seq).
//!
//! State is shared (`Rc<RefCell<…>>`, the browser is single-threaded) between
//! the JavaScript-facing handles and the socket's and timer's callbacks, which
//! drive the connection: connect → open (resubscribe) → frames → close →
//! backoff → connect, until the client is closed or the hub says not to
//! reconnect. JavaScript callbacks are always invoked after the borrow is
//! released, so a callback may call back into the client (e.g. unsubscribe
//! from inside `onEvent`).
//!
//! Server frames are parsed by the browser (`JSON.parse`), decoded in one
//! place ([`ServerFrame::decode`]), then applied here with a `match`.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use exechub_protocol::backoff::Attempts;
use js_sys::{Function, Promise};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

use crate::auth::{self, Tokens};
use crate::core::{self, Position, Publish, Verdict};
use crate::error::ClientError;
use crate::inbound::ServerFrame;
use crate::js::{self, CloseEvent, MessageEvent, WebSocket};
use crate::types::history_lost_view;

/// The close code browsers report for a connection that failed or dropped.
const ABNORMAL_CLOSURE: u16 = 1006;

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

/// Connection settings.
pub struct Settings {
    /// The `/ws` URL (the token is added per connection attempt).
    pub url: String,
    /// Where the token comes from, when the hub requires one.
    pub tokens: Tokens,
    /// Ceiling of the first reconnect delay (the protocol's backoff draws
    /// each delay from the upper half of its ceiling).
    pub min_delay: Duration,
    /// Largest reconnect delay.
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

/// A publish waiting for its `ack`: how to settle its Promise.
struct Pending {
    id: u64,
    resolve: Function,
    reject: Function,
}

/// The callbacks that drive the connection. They hold the shared state
/// strongly, so a client keeps running while its socket or timer does, like a
/// background task; [`close`] drops them, which ends that cycle.
struct Handlers {
    connect: Closure<dyn FnMut()>,
    refresh: Closure<dyn FnMut()>,
    open: Closure<dyn FnMut()>,
    message: Closure<dyn FnMut(MessageEvent)>,
    close: Closure<dyn FnMut(CloseEvent)>,
}

impl Handlers {
    fn new(shared: &SharedRef) -> Self {
        let on = |act: fn(&SharedRef)| {
            let shared = Rc::clone(shared);
            Closure::<dyn FnMut()>::new(move || act(&shared))
        };
        let (on_message, on_close) = (Rc::clone(shared), Rc::clone(shared));
        Self {
            connect: on(connect),
            refresh: on(refresh),
            open: on(opened),
            message: Closure::new(move |event: MessageEvent| received(&on_message, &event)),
            close: Closure::new(move |event: CloseEvent| ended(&on_close, event.code())),
        }
    }

    fn attach(&self, socket: &WebSocket) {
        socket.set_onopen(Some(self.open.as_ref().unchecked_ref()));
        socket.set_onmessage(Some(self.message.as_ref().unchecked_ref()));
        socket.set_onclose(Some(self.close.as_ref().unchecked_ref()));
    }
}

/// State shared by the handles and the callbacks.
pub struct Shared {
    state: Option<ConnectionState>,
    on_state: Option<Function>,
    /// Subscriptions by execution id; a client has a few, so a list is
    /// smaller than a map and as fast.
    subs: Vec<(String, Sub)>,
    /// Publishes waiting for their `ack`.
    pending: Vec<Pending>,
    /// The current socket, from `new WebSocket` until it closes.
    socket: Option<WebSocket>,
    /// Whether `socket` is open: frames are sent (and publishes accepted) only then.
    open: bool,
    next_id: u64,
    closed: bool,
    url: String,
    backoff: Attempts,
    /// The timer of the next connection attempt, while waiting.
    timer: Option<JsValue>,
    /// The token and where fresh ones come from.
    tokens: Tokens,
    /// The timer of the next token refresh, while open.
    refresh_timer: Option<JsValue>,
    /// `None` once closed.
    handlers: Option<Handlers>,
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
    /// The current connection state.
    pub fn state(&self) -> ConnectionState {
        self.state.unwrap_or(ConnectionState::Connecting)
    }

    fn request_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn send(&self, frame: &str) {
        if let (true, Some(socket)) = (self.open, &self.socket) {
            let _ = socket.send(frame);
        }
    }

    fn sub_mut(&mut self, execution_id: &str) -> Option<&mut Sub> {
        let found = self.subs.iter_mut().find(|(id, _)| id == execution_id);
        found.map(|(_, sub)| sub)
    }

    fn take_pending(&mut self, id: u64) -> Option<Pending> {
        let index = self.pending.iter().position(|p| p.id == id)?;
        Some(self.pending.swap_remove(index))
    }

    /// Sends `subscribe` for `subs[index]`, from its position.
    fn send_subscribe(&mut self, index: usize) {
        let id = self.request_id();
        let (execution_id, sub) = &self.subs[index];
        self.send(&core::resubscribe_frame(id, execution_id, &sub.position));
    }

    /// Forgets the socket and stops its callbacks; returns it.
    fn detach(&mut self) -> Option<WebSocket> {
        self.open = false;
        if let Some(timer) = self.refresh_timer.take() {
            js::clear_timeout(&timer);
        }
        let socket = self.socket.take()?;
        socket.set_onopen(None);
        socket.set_onmessage(None);
        socket.set_onclose(None);
        Some(socket)
    }
}

/// Starts connecting once the caller's JavaScript task is done, so that
/// `onStateChange` never runs inside the constructor. A timer rather than a
/// microtask: `close()` right after the constructor cancels it.
pub fn start(settings: Settings, on_state: Option<Function>) -> SharedRef {
    let shared = Rc::new(RefCell::new(Shared {
        state: None,
        on_state,
        subs: Vec::new(),
        pending: Vec::new(),
        socket: None,
        open: false,
        next_id: 0,
        closed: false,
        url: settings.url,
        backoff: core::reconnect_delays(settings.min_delay, settings.max_delay),
        timer: None,
        tokens: settings.tokens,
        refresh_timer: None,
        handlers: None,
    }));
    let handlers = Handlers::new(&shared);
    let mut inner = shared.borrow_mut();
    inner.timer = Some(js::set_timeout(
        handlers.connect.as_ref().unchecked_ref(),
        0.0,
    ));
    inner.handlers = Some(handlers);
    drop(inner);
    shared
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
    exechub_protocol::validate_execution_id(&execution_id)
        .map_err(|e| ClientError::invalid(&e.msg, std::slice::from_ref(&e)))?;
    let mut inner = shared.borrow_mut();
    if inner.closed {
        return Err(ClientError::Closed);
    }
    if inner.sub_mut(&execution_id).is_some() {
        return Err(ClientError::AlreadySubscribed(execution_id));
    }
    inner.subs.push((execution_id, sub));
    let index = inner.subs.len() - 1;
    inner.send_subscribe(index);
    Ok(())
}

/// Removes a subscription; no event of it is delivered afterwards.
pub fn unsubscribe(shared: &SharedRef, execution_id: &str) {
    let mut inner = shared.borrow_mut();
    if let Some(index) = inner.subs.iter().position(|(id, _)| id == execution_id) {
        inner.subs.swap_remove(index);
        let id = inner.request_id();
        inner.send(&core::unsubscribe_frame(id, execution_id));
    }
}

/// The last seq delivered to (or confirmed for) a subscription.
pub fn last_seq(shared: &SharedRef, execution_id: &str) -> Option<u64> {
    shared.borrow_mut().sub_mut(execution_id)?.position.last()
}

/// Publishes over the socket: a Promise of the seq, settled once the hub
/// acknowledged (or refused) the event.
///
/// Publishes are not queued while disconnected: they fail at once with
/// `not_connected`, and one in flight when the socket drops fails with
/// `connection_lost` (it may have been stored).
pub fn publish(
    shared: &SharedRef,
    execution_id: &str,
    request: Result<Publish, ClientError>,
) -> Promise {
    let mut request = Some(request);
    Promise::new(&mut |resolve, reject| {
        // The executor runs exactly once, inside `new Promise`.
        let Some(request) = request.take() else {
            return;
        };
        let mut inner = shared.borrow_mut();
        let publish = request.and_then(|publish| match (inner.closed, inner.open) {
            (true, _) => Err(ClientError::Closed),
            (false, false) => Err(ClientError::NotConnected),
            (false, true) => Ok(publish),
        });
        match publish {
            Ok(publish) => {
                let id = inner.request_id();
                inner.send(&core::publish_frame(id, execution_id, &publish));
                inner.pending.push(Pending {
                    id,
                    resolve,
                    reject,
                });
            }
            Err(error) => {
                drop(inner);
                invoke(vec![(reject, error.to_js())]);
            }
        }
    })
}

/// Closes the client: the socket, pending publishes and reconnecting.
pub fn close(shared: &SharedRef) {
    let handlers = {
        let mut inner = shared.borrow_mut();
        inner.closed = true;
        if let Some(socket) = inner.detach() {
            socket.close();
        }
        if let Some(timer) = inner.timer.take() {
            js::clear_timeout(&timer);
        }
        inner.handlers.take()
    };
    fail_pending(shared, &ClientError::Closed);
    set_state(shared, ConnectionState::Closed);
    // Last: this may run inside one of the handlers, which JavaScript keeps
    // alive until it returns.
    drop(handlers);
}

fn fail_pending(shared: &SharedRef, error: &ClientError) {
    let pending = std::mem::take(&mut shared.borrow_mut().pending);
    invoke(
        pending
            .into_iter()
            .map(|p| (p.reject, error.to_js()))
            .collect(),
    );
}

/// Opens a socket (the first attempt, or after a backoff delay).
fn connect(shared: &SharedRef) {
    if shared.borrow().state.is_none() {
        set_state(shared, ConnectionState::Connecting);
    }
    let fetcher = {
        let mut inner = shared.borrow_mut();
        inner.timer = None;
        if inner.closed {
            return;
        }
        inner.tokens.fetcher()
    };
    match fetcher {
        // Every attempt gets a fresh token: the last one may be why the previous failed.
        Some(get_token) => {
            let shared = Rc::clone(shared);
            wasm_bindgen_futures::spawn_local(async move {
                if let Some(token) = auth::fetch(get_token).await {
                    shared.borrow_mut().tokens.set(token);
                }
                open_socket(&shared);
            });
        }
        None => open_socket(shared),
    }
}

fn open_socket(shared: &SharedRef) {
    let mut inner = shared.borrow_mut();
    if inner.closed {
        return;
    }
    let url = inner.tokens.url(&inner.url);
    match (WebSocket::new(&url), &inner.handlers) {
        (Ok(socket), Some(handlers)) => {
            handlers.attach(&socket);
            inner.socket = Some(socket);
        }
        _ => {
            drop(inner);
            ended(shared, ABNORMAL_CLOSURE);
        }
    }
}

/// The socket opened: resubscribe everything after its last position.
fn opened(shared: &SharedRef) {
    {
        let mut inner = shared.borrow_mut();
        inner.open = true;
        inner.backoff.reset();
        for index in 0..inner.subs.len() {
            inner.send_subscribe(index);
        }
    }
    schedule_refresh(shared);
    set_state(shared, ConnectionState::Open);
}

/// Arms the token refresh timer, when the token can and should be refreshed.
fn schedule_refresh(shared: &SharedRef) {
    let mut inner = shared.borrow_mut();
    let (Some(ms), Some(handlers), true) =
        (inner.tokens.refresh_in_ms(), &inner.handlers, inner.open)
    else {
        return;
    };
    let timer = js::set_timeout(handlers.refresh.as_ref().unchecked_ref(), ms);
    inner.refresh_timer = Some(timer);
}

/// Gets a fresh token and sends it on the open socket (`auth`), so the hub
/// does not close the connection when the old one expires.
fn refresh(shared: &SharedRef) {
    let fetcher = {
        let mut inner = shared.borrow_mut();
        inner.refresh_timer = None;
        inner.tokens.fetcher()
    };
    let Some(get_token) = fetcher else { return };
    let shared = Rc::clone(shared);
    wasm_bindgen_futures::spawn_local(async move {
        if let Some(token) = auth::fetch(get_token).await {
            let mut inner = shared.borrow_mut();
            let id = inner.request_id();
            inner.send(&core::auth_frame(id, &token));
            inner.tokens.set(token);
        }
        schedule_refresh(&shared);
    });
}

/// The socket closed (or never opened): reconnect after a delay, or stop.
fn ended(shared: &SharedRef, code: u16) {
    let retry = {
        let mut inner = shared.borrow_mut();
        inner.detach();
        !inner.closed && core::reconnects_after(code)
    };
    fail_pending(shared, &ClientError::ConnectionLost);
    if !retry {
        close(shared);
        return;
    }
    set_state(shared, ConnectionState::Reconnecting);
    let mut inner = shared.borrow_mut();
    let delay = inner.backoff.next_delay(js_sys::Math::random());
    // `onStateChange` may have closed the client, dropping the handlers.
    let timer = inner
        .handlers
        .as_ref()
        .map(|h| js::set_timeout(h.connect.as_ref().unchecked_ref(), delay.as_millis() as f64));
    inner.timer = timer;
}

/// Applies one server frame, then runs the callbacks it triggers.
fn received(shared: &SharedRef, event: &MessageEvent) {
    let text = event.data();
    if !text.is_string() {
        return; // binary frames are not part of the protocol
    }
    let Some(frame) = js::parse_json(&text)
        .ok()
        .and_then(|f| ServerFrame::decode(&f))
    else {
        return; // a newer hub may send messages this client does not know
    };
    let calls = apply(&mut shared.borrow_mut(), frame);
    invoke(calls);
}

fn apply(inner: &mut Shared, frame: ServerFrame) -> Calls {
    let mut calls = Calls::new();
    match frame {
        ServerFrame::Event { epoch, event } => {
            if let Some(sub) = inner.sub_mut(&event.execution_id)
                && sub.position.accept(epoch.as_deref(), event.seq) == Verdict::Deliver
            {
                calls.push((sub.on_event.clone(), event.view));
            }
        }
        ServerFrame::Subscribed {
            execution_id,
            after,
            epoch,
        } => {
            if let Some(sub) = inner.sub_mut(&execution_id) {
                sub.position.confirmed(after, epoch);
            }
        }
        ServerFrame::HistoryLost {
            execution_id,
            after,
            resume_after,
            reason,
            epoch,
        } => {
            if let Some(sub) = inner.sub_mut(&execution_id) {
                if let Some(callback) = &sub.on_lost {
                    let view = history_lost_view(
                        &execution_id,
                        after,
                        resume_after,
                        reason,
                        epoch.as_deref(),
                    );
                    calls.push((callback.clone(), view));
                }
                sub.position.lost(resume_after, epoch);
            }
        }
        ServerFrame::Ack { id, seq } => {
            if let Some(pending) = inner.take_pending(id) {
                calls.push((pending.resolve, JsValue::from(seq as f64)));
            }
        }
        ServerFrame::Error {
            id,
            execution_id,
            error,
        } => {
            if let Some(pending) = id.and_then(|id| inner.take_pending(id)) {
                calls.push((pending.reject, error.to_js()));
            } else if let Some(sub) = execution_id.and_then(|id| inner.sub_mut(&id))
                && let Some(callback) = &sub.on_error
            {
                calls.push((callback.clone(), error.to_js()));
            }
        }
    }
    calls
}

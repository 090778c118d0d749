//! What a client's JavaScript handles and its socket driver share: the
//! connection's state machine, the application's callbacks, and the outbox
//! of frames for the open socket. Actions the machine decides on are carried
//! out here ([`perform`]), always after the state is released, so a callback
//! may call back into the client (e.g. unsubscribe from inside `onEvent`).
//!
//! The handles own it (`Rc`); the driver only borrows it (`Weak`). While the
//! machine is busy (a subscription, a list subscription or a publish is
//! waiting), the state also owns itself ([`Shared::retained`]), so a client
//! whose JavaScript handle was garbage collected keeps delivering, as a
//! browser `WebSocket` with listeners stays open. Once the handle is gone
//! and nothing waits, the client closes, the state and every callback go,
//! and the driver, seeing its outbox end, closes the socket and stops.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

use exechub_protocol::ClientMsg;
use futures_channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use js_sys::Function;
use wasm_bindgen::JsValue;

use crate::connection::{Action, Actions, Connection, Ended, Stored};
use crate::error::ClientError;
use crate::types::executions::SummaryView;
use crate::types::{BatchView, EventView};
use crate::wire::to_js;

/// A subscription's callbacks.
pub struct Handlers {
    /// `onEvent`.
    pub on_event: Function,
    /// `onHistoryLost`.
    pub on_lost: Option<Function>,
    /// `onError`.
    pub on_error: Option<Function>,
    /// `onEnd`.
    pub on_end: Option<Function>,
    /// The last event delivered, with its seq, kept while there is an
    /// `onEnd` to hand it to: the terminal event precedes `ended`.
    pub last: RefCell<Option<(u64, JsValue)>>,
}

impl Handlers {
    /// Handlers with nothing delivered yet.
    pub fn new(
        on_event: Function,
        on_lost: Option<Function>,
        on_error: Option<Function>,
        on_end: Option<Function>,
    ) -> Self {
        Self {
            on_event,
            on_lost,
            on_error,
            on_end,
            last: RefCell::new(None),
        }
    }

    fn deliver(&self, seq: u64, event: JsValue) {
        call(&self.on_event, &event);
        if self.on_end.is_some() {
            self.last.replace(Some((seq, event)));
        }
    }

    /// `onEnd(status, finalEvent)`: the final event when it was the last one
    /// delivered, else `null`.
    fn end(&self, ended: &Ended) {
        let Some(on_end) = &self.on_end else { return };
        let last = self.last.take();
        let last = last.filter(|(seq, _)| *seq == ended.seq);
        let last = last.map_or(JsValue::NULL, |(_, event)| event);
        let _ = on_end.call2(&JsValue::NULL, &ended.status.as_str().into(), &last);
    }
}

/// A list subscription's callbacks.
pub struct ListHandlers {
    /// `onSnapshot`.
    pub on_snapshot: Function,
    /// `onChange`.
    pub on_change: Option<Function>,
    /// `onError`.
    pub on_error: Option<Function>,
    /// Whether `unsubscribe()` was called: nothing is delivered afterwards,
    /// even of actions decided before.
    pub stopped: Cell<bool>,
}

/// How to settle a publish's Promise.
pub struct Settle {
    /// The Promise's `resolve`.
    pub resolve: Function,
    /// The Promise's `reject`.
    pub reject: Function,
    /// A batch resolves with its seqs (`BatchStored`), one event with its seq.
    pub batch: bool,
}

/// The machine as the browser runs it.
pub type Machine = Connection<Rc<Handlers>, Settle, Rc<ListHandlers>>;

/// What it decides.
pub type MachineActions = Actions<Rc<Handlers>, Settle, Rc<ListHandlers>>;

/// The shared state.
pub struct Shared {
    /// The connection's logic.
    pub machine: Machine,
    /// `onStateChange`.
    on_state: Option<Function>,
    /// The latest bearer token (fixed, or the last `getToken` gave), for
    /// HTTP calls made through the client.
    pub token: Option<String>,
    /// Frames for the socket driver; `None` once the client is closed, which
    /// tells the driver to close the socket and stop.
    outbox: Option<UnboundedSender<ClientMsg>>,
    /// This state itself, while the machine is busy: a cycle on purpose,
    /// which keeps the client alive without its handle, and which
    /// [`retain_while_busy`] breaks as soon as nothing waits.
    retained: Option<SharedRef>,
    /// Whether the JavaScript handle is gone (freed or collected): the
    /// client closes as soon as it is not busy.
    released: bool,
}

/// The handles' reference.
pub type SharedRef = Rc<RefCell<Shared>>;

/// The driver's reference.
pub type SharedWeak = Weak<RefCell<Shared>>;

impl Shared {
    /// New shared state, and the receiving end of its outbox for the driver.
    pub fn new(
        machine: Machine,
        on_state: Option<Function>,
        token: Option<String>,
    ) -> (SharedRef, UnboundedReceiver<ClientMsg>) {
        // Unbounded, but only ever holding what the application just asked
        // for: the driver empties it into the socket on its next turn.
        let (outbox, frames) = unbounded();
        let shared = Self {
            machine,
            on_state,
            token,
            outbox: Some(outbox),
            retained: None,
            released: false,
        };
        (Rc::new(RefCell::new(shared)), frames)
    }

    /// Closes for good: the machine settles what is pending, and the driver
    /// is told to close the socket.
    pub fn close(&mut self) -> MachineActions {
        self.outbox = None;
        self.machine.close()
    }
}

/// The JavaScript handle is gone: the client closes now if nothing waits,
/// else once nothing does.
pub fn release(shared: &SharedRef) {
    shared.borrow_mut().released = true;
    retain_while_busy(shared);
}

/// Keeps the state alive while the machine is busy; closes a client whose
/// handle is gone once it is not. Runs after every decision.
fn retain_while_busy(shared: &SharedRef) {
    let mut state = shared.borrow_mut();
    if state.machine.is_busy() {
        if state.retained.is_none() {
            state.retained = Some(Rc::clone(shared));
        }
        return;
    }
    // Dropped after the borrow ends: the caller holds its own reference.
    let retained = state.retained.take();
    let close = state.released && !state.machine.is_closed();
    let actions = close.then(|| state.close());
    drop(state);
    drop(retained);
    if let Some(actions) = actions {
        // Once: closed, the machine is never busy again.
        perform(shared, actions);
    }
}

/// Runs `decide` on the machine, then carries out what it decided.
pub fn act(shared: &SharedRef, decide: impl FnOnce(&mut Machine) -> MachineActions) {
    let actions = decide(&mut shared.borrow_mut().machine);
    perform(shared, actions);
}

/// Carries out the machine's actions: frames go to the driver, everything
/// else to JavaScript.
pub fn perform(shared: &SharedRef, actions: MachineActions) {
    for action in actions {
        match action {
            Action::Send(msg) => {
                if let Some(outbox) = &shared.borrow().outbox {
                    // The driver gone means the socket is too: nothing to send on.
                    let _ = outbox.unbounded_send(msg);
                }
            }
            Action::Deliver(handlers, event) => {
                handlers.deliver(event.seq, to_js(&EventView::from(&event)));
            }
            Action::Lost(handlers, lost) => call_some(&handlers.on_lost, &to_js(&lost)),
            Action::Failed(handlers, error) => call_some(&handlers.on_error, &error.to_js()),
            Action::Ended(handlers, ended) => handlers.end(&ended),
            Action::Listed(list, summaries) if !list.stopped.get() => {
                let views: Vec<SummaryView> = summaries.iter().map(SummaryView::from).collect();
                call(&list.on_snapshot, &to_js(&views));
            }
            Action::Changed(list, summary) if !list.stopped.get() => {
                call_some(&list.on_change, &to_js(&SummaryView::from(&summary)));
            }
            Action::ListFailed(list, error) if !list.stopped.get() => {
                call_some(&list.on_error, &error.to_js());
            }
            Action::Listed(..) | Action::Changed(..) | Action::ListFailed(..) => {}
            Action::Settle(settle, outcome) => settled(settle, outcome),
            Action::State(state) => {
                let on_state = shared.borrow().on_state.clone();
                call_some(&on_state, &to_js(&state));
            }
        }
    }
    retain_while_busy(shared);
}

fn settled(settle: Settle, outcome: Result<Stored, ClientError>) {
    match outcome {
        Ok(stored) if settle.batch => {
            call(
                &settle.resolve,
                &to_js(&BatchView::new(stored.first, stored.last)),
            );
        }
        Ok(stored) => call(&settle.resolve, &JsValue::from(stored.last as f64)),
        Err(error) => call(&settle.reject, &error.to_js()),
    }
}

fn call_some(function: &Option<Function>, argument: &JsValue) {
    if let Some(function) = function {
        call(function, argument);
    }
}

fn call(function: &Function, argument: &JsValue) {
    // An exception in application code must not break the client.
    let _ = function.call1(&JsValue::NULL, argument);
}

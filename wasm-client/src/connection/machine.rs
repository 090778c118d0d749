//! The connection's state machine: plain Rust, no JavaScript, no socket.
//!
//! It is told what happened — the application subscribed or published, the
//! socket opened, a frame arrived, the socket dropped — and answers with
//! [`Action`]s: frames to send, events to deliver, promises to settle, the
//! state to report, how long to wait before reconnecting. A subscription
//! ends for good when the hub says its execution `ended`. The socket driver
//! (`crate::driver`) carries them out. Handlers and promises are type
//! parameters, so host tests use plain values where the browser has
//! JavaScript functions.

use std::time::Duration;

use exechub_protocol::backoff::{Attempts, Backoff};
use exechub_protocol::{
    ClientMsg, Event, ExecutionSummary, RequestId, ServerMsg, StatusFilter, close,
    validate_execution_id,
};

use super::action::{Action, Actions, ConnectionState, Ended, HistoryLost, Publish, Stored};
use super::lists::Lists;
use super::position::{Position, Verdict};
use crate::error::ClientError;

struct Subscription<S> {
    execution_id: String,
    position: Position,
    handler: S,
}

struct Pending<P> {
    id: u64,
    promise: P,
}

/// One client's connection: its subscriptions, publishes awaiting their
/// `ack`, list subscriptions, and reconnect attempts. `S` is a
/// subscription's handlers, `P` a publish's promise, `L` a list
/// subscription's handlers.
pub struct Connection<S, P, L = S> {
    /// `None` until the first attempt starts (reported as connecting).
    state: Option<ConnectionState>,
    /// A client has a few subscriptions: a list is smaller than a map and as fast.
    subscriptions: Vec<Subscription<S>>,
    /// Publishes sent on the open socket and not answered yet.
    pending: Vec<Pending<P>>,
    /// Subscriptions to the list of executions.
    lists: Lists<L>,
    /// The last request id used (ids are this client's, 1, 2, …).
    last_id: u64,
    /// Consecutive failed attempts, for the reconnect delay.
    attempts: Attempts,
}

impl<S: Clone, P, L: Clone> Connection<S, P, L> {
    /// A connection that waits as `backoff` says between reconnect attempts.
    pub fn new(backoff: Backoff) -> Self {
        Self {
            state: None,
            subscriptions: Vec::new(),
            pending: Vec::new(),
            lists: Lists::default(),
            last_id: 0,
            attempts: backoff.attempts(),
        }
    }

    /// The current state.
    pub fn state(&self) -> ConnectionState {
        self.state.unwrap_or(ConnectionState::Connecting)
    }

    /// Whether the client is closed for good.
    pub fn is_closed(&self) -> bool {
        self.state == Some(ConnectionState::Closed)
    }

    /// Whether the application still waits on the connection: for events of
    /// a subscription or of a list subscription, or for a publish's answer.
    /// A client whose JavaScript handle is gone keeps running while it is.
    pub fn is_busy(&self) -> bool {
        let waiting = !self.subscriptions.is_empty() || !self.pending.is_empty();
        !self.is_closed() && (waiting || !self.lists.is_empty())
    }

    /// The last seq delivered to (or confirmed for) a subscription.
    pub fn last_seq(&self, execution_id: &str) -> Option<u64> {
        self.find(execution_id)?.position.last()
    }

    /// Adds a subscription starting after `after` (live only when `None`);
    /// sends it when connected, else on the next open.
    ///
    /// # Errors
    /// `invalid_request` for a bad execution id, [`ClientError::Closed`],
    /// [`ClientError::AlreadySubscribed`].
    pub fn subscribe(
        &mut self,
        execution_id: String,
        after: Option<u64>,
        handler: S,
    ) -> Result<Actions<S, P, L>, ClientError> {
        validate_execution_id(&execution_id).map_err(|e| ClientError::invalid(vec![e]))?;
        if self.is_closed() {
            return Err(ClientError::Closed);
        }
        if self.find(&execution_id).is_some() {
            return Err(ClientError::AlreadySubscribed(execution_id));
        }
        self.subscriptions.push(Subscription {
            execution_id,
            position: Position::new(after),
            handler,
        });
        let index = self.subscriptions.len() - 1;
        Ok(self.when_open(|this| this.subscribe_msg(index)))
    }

    /// Removes a subscription; none of its events is delivered afterwards.
    pub fn unsubscribe(&mut self, execution_id: &str) -> Actions<S, P, L> {
        let Some(index) = self.index(execution_id) else {
            return Vec::new();
        };
        let removed = self.subscriptions.swap_remove(index);
        self.when_open(|this| ClientMsg::Unsubscribe {
            id: Some(this.next_id()),
            execution_id: removed.execution_id,
        })
    }

    /// Publishes over the open socket; settled by the hub's `ack` or `error`.
    /// Nothing is queued while disconnected: it settles at once with
    /// `not_connected` (or `closed`).
    pub fn publish(
        &mut self,
        execution_id: String,
        publish: Publish,
        idempotency_key: Option<String>,
        promise: P,
    ) -> Actions<S, P, L> {
        let refusal = match self.state() {
            ConnectionState::Open => None,
            ConnectionState::Closed => Some(ClientError::Closed),
            _ => Some(ClientError::NotConnected),
        };
        if let Some(error) = refusal {
            return vec![Action::Settle(promise, Err(error))];
        }
        let id = self.next_id();
        let RequestId::Num(number) = id else {
            unreachable!("this client's ids are numbers")
        };
        self.pending.push(Pending {
            id: number,
            promise,
        });
        vec![Action::Send(publish_msg(
            id,
            execution_id,
            publish,
            idempotency_key,
        ))]
    }

    /// Closes for good: pending publishes fail with `closed`.
    pub fn close(&mut self) -> Actions<S, P, L> {
        if self.is_closed() {
            return Vec::new();
        }
        let mut actions = self.fail_pending(&ClientError::Closed);
        actions.extend(self.set_state(ConnectionState::Closed));
        actions
    }

    /// A connection attempt starts.
    pub fn connecting(&mut self) -> Actions<S, P, L> {
        match self.state {
            None => self.set_state(ConnectionState::Connecting),
            Some(_) => Vec::new(),
        }
    }

    /// The socket opened: every subscription is sent again from its position.
    pub fn opened(&mut self) -> Actions<S, P, L> {
        if self.is_closed() {
            return Vec::new();
        }
        self.attempts.reset();
        let mut actions = self.set_state(ConnectionState::Open);
        for index in 0..self.subscriptions.len() {
            actions.push(Action::Send(self.subscribe_msg(index)));
        }
        if !self.lists.is_empty() {
            actions.push(Action::Send(self.list_msg()));
        }
        actions
    }

    /// Follows the list of executions that match `status`: the handler gets
    /// a snapshot when the socket is open (and after each reconnect), then
    /// every change. Returns the subscription's key.
    ///
    /// # Errors
    /// [`ClientError::Closed`].
    pub fn subscribe_executions(
        &mut self,
        status: StatusFilter,
        handler: L,
    ) -> Result<(u64, Actions<S, P, L>), ClientError> {
        if self.is_closed() {
            return Err(ClientError::Closed);
        }
        let key = self.lists.add(status, handler);
        // Asked again, the hub answers with a fresh snapshot for every list
        // subscription, the new one included (a snapshot replaces a list).
        Ok((key, self.when_open(Self::list_msg)))
    }

    /// Stops the list subscription `key`; the hub stops following the list
    /// when it was the last one.
    pub fn unsubscribe_executions(&mut self, key: u64) -> Actions<S, P, L> {
        if !self.lists.remove(key) {
            return Vec::new();
        }
        self.when_open(|this| ClientMsg::UnsubscribeExecutions {
            id: Some(this.next_id()),
        })
    }

    /// Sends a fresh token on the open socket (`auth`), so the hub does not
    /// close the connection when the old one expires.
    pub fn token_refreshed(&mut self, token: String) -> Actions<S, P, L> {
        self.when_open(|this| ClientMsg::Auth {
            id: Some(this.next_id()),
            token,
        })
    }

    /// The socket closed with `code` (or never opened: 1006). Publishes in
    /// flight fail with `connection_lost`; returns how long to wait before
    /// the next attempt, or `None` when the client stops (it was closed, or
    /// the hub said not to reconnect). `random` is uniform in `[0, 1)`.
    pub fn dropped(&mut self, code: u16, random: f64) -> (Actions<S, P, L>, Option<Duration>) {
        if self.is_closed() {
            return (Vec::new(), None);
        }
        let mut actions = self.fail_pending(&ClientError::ConnectionLost);
        if !reconnects_after(code) {
            actions.extend(self.set_state(ConnectionState::Closed));
            return (actions, None);
        }
        actions.extend(self.set_state(ConnectionState::Reconnecting));
        (actions, Some(self.attempts.next_delay(random)))
    }

    /// Applies one server frame.
    pub fn received(&mut self, msg: ServerMsg) -> Actions<S, P, L> {
        if self.is_closed() {
            return Vec::new();
        }
        match msg {
            ServerMsg::Event { epoch, event } => self.event(epoch.as_deref(), event),
            ServerMsg::Subscribed {
                execution_id,
                after,
                epoch,
                ..
            } => self.confirmed(&execution_id, after, epoch),
            ServerMsg::HistoryLost {
                execution_id,
                after,
                resume_after,
                reason,
                epoch,
            } => self.lost(HistoryLost {
                execution_id,
                after,
                resume_after,
                reason,
                epoch,
            }),
            ServerMsg::Ack {
                id, seq, first_seq, ..
            } => self.settle(id, || {
                Ok(Stored {
                    first: first_seq.unwrap_or(seq),
                    last: seq,
                })
            }),
            ServerMsg::Ended {
                execution_id,
                status,
                seq,
            } => self.ended(Ended {
                execution_id,
                status,
                seq,
            }),
            ServerMsg::Executions { executions, .. } => self.listed(&executions),
            ServerMsg::Execution { execution } => self.changed(*execution),
            ServerMsg::Error {
                id,
                code,
                message,
                execution_id,
                detail,
            } => self.error(id, execution_id, ClientError::hub(code, message, detail)),
            // Answers that need no action: `unsubscribed`, `pong`, `authenticated`.
            _ => Vec::new(),
        }
    }

    /// `subscribed`: where delivery starts, as the hub confirmed it.
    fn confirmed(
        &mut self,
        execution_id: &str,
        after: u64,
        epoch: Option<String>,
    ) -> Actions<S, P, L> {
        if let Some(sub) = self.find_mut(execution_id) {
            sub.position.confirmed(after, epoch);
        }
        Vec::new()
    }

    fn event(&mut self, epoch: Option<&str>, event: Event) -> Actions<S, P, L> {
        let Some(sub) = self.find_mut(&event.execution_id) else {
            return Vec::new();
        };
        match sub.position.accept(epoch, event.seq) {
            Verdict::Deliver => vec![Action::Deliver(sub.handler.clone(), event)],
            Verdict::Duplicate | Verdict::OtherEpoch => Vec::new(),
        }
    }

    fn lost(&mut self, lost: HistoryLost) -> Actions<S, P, L> {
        let Some(sub) = self.find_mut(&lost.execution_id) else {
            return Vec::new();
        };
        sub.position.lost(lost.resume_after, lost.epoch.clone());
        vec![Action::Lost(sub.handler.clone(), lost)]
    }

    /// The execution ended: the subscription is over, and is not sent again
    /// after a reconnect.
    fn ended(&mut self, ended: Ended) -> Actions<S, P, L> {
        let Some(index) = self.index(&ended.execution_id) else {
            return Vec::new();
        };
        let sub = self.subscriptions.swap_remove(index);
        vec![Action::Ended(sub.handler, ended)]
    }

    fn listed(&self, executions: &[ExecutionSummary]) -> Actions<S, P, L> {
        let snapshot = self.lists.snapshot(executions).into_iter();
        snapshot
            .map(|(list, part)| Action::Listed(list, part))
            .collect()
    }

    fn changed(&self, execution: ExecutionSummary) -> Actions<S, P, L> {
        let lists = self.lists.changed(&execution).into_iter();
        lists
            .map(|list| Action::Changed(list, execution.clone()))
            .collect()
    }

    fn error(
        &mut self,
        id: Option<RequestId>,
        execution_id: Option<String>,
        error: ClientError,
    ) -> Actions<S, P, L> {
        if let Some(index) = self.pending_index(id.as_ref()) {
            let pending = self.pending.swap_remove(index);
            return vec![Action::Settle(pending.promise, Err(error))];
        }
        if let Some(RequestId::Num(id)) = id
            && self.lists.is_request(id)
        {
            let lists = self.lists.handlers();
            return lists
                .map(|list| Action::ListFailed(list, error.clone()))
                .collect();
        }
        match execution_id.and_then(|id| self.find(&id)) {
            Some(sub) => vec![Action::Failed(sub.handler.clone(), error)],
            None => Vec::new(),
        }
    }

    fn settle(
        &mut self,
        id: Option<RequestId>,
        outcome: impl FnOnce() -> Result<Stored, ClientError>,
    ) -> Actions<S, P, L> {
        match self.pending_index(id.as_ref()) {
            Some(index) => {
                let pending = self.pending.swap_remove(index);
                vec![Action::Settle(pending.promise, outcome())]
            }
            None => Vec::new(),
        }
    }

    fn pending_index(&self, id: Option<&RequestId>) -> Option<usize> {
        let Some(RequestId::Num(id)) = id else {
            return None;
        };
        self.pending.iter().position(|p| p.id == *id)
    }

    fn fail_pending(&mut self, error: &ClientError) -> Actions<S, P, L> {
        let pending = std::mem::take(&mut self.pending);
        let fail = |p: Pending<P>| Action::Settle(p.promise, Err(error.clone()));
        pending.into_iter().map(fail).collect()
    }

    fn set_state(&mut self, state: ConnectionState) -> Actions<S, P, L> {
        if self.state == Some(state) {
            return Vec::new();
        }
        self.state = Some(state);
        vec![Action::State(state)]
    }

    /// The frame `make` builds, as an action, when the socket is open.
    fn when_open(&mut self, make: impl FnOnce(&mut Self) -> ClientMsg) -> Actions<S, P, L> {
        match self.state {
            Some(ConnectionState::Open) => vec![Action::Send(make(self))],
            _ => Vec::new(),
        }
    }

    fn subscribe_msg(&mut self, index: usize) -> ClientMsg {
        let id = self.next_id();
        let sub = &self.subscriptions[index];
        ClientMsg::Subscribe {
            id: Some(id),
            execution_id: sub.execution_id.clone(),
            after: sub.position.resume_after(),
            epoch: sub.position.epoch().map(Into::into),
        }
    }

    /// `subscribe_executions` for what the list subscriptions need.
    fn list_msg(&mut self) -> ClientMsg {
        self.last_id += 1;
        self.lists.requested(self.last_id);
        ClientMsg::SubscribeExecutions {
            id: Some(RequestId::Num(self.last_id)),
            status: self.lists.filter(),
        }
    }

    fn next_id(&mut self) -> RequestId {
        self.last_id += 1;
        RequestId::Num(self.last_id)
    }

    fn index(&self, execution_id: &str) -> Option<usize> {
        let same = |sub: &Subscription<S>| sub.execution_id == execution_id;
        self.subscriptions.iter().position(same)
    }

    fn find(&self, execution_id: &str) -> Option<&Subscription<S>> {
        self.index(execution_id).map(|i| &self.subscriptions[i])
    }

    fn find_mut(&mut self, execution_id: &str) -> Option<&mut Subscription<S>> {
        self.index(execution_id)
            .map(move |i| &mut self.subscriptions[i])
    }
}

fn publish_msg(
    id: RequestId,
    execution_id: String,
    publish: Publish,
    idempotency_key: Option<String>,
) -> ClientMsg {
    let id = Some(id);
    match publish {
        Publish::One(event) => ClientMsg::Publish {
            id,
            execution_id,
            event,
            idempotency_key,
        },
        Publish::Batch(events) => ClientMsg::PublishBatch {
            id,
            execution_id,
            events,
            idempotency_key,
        },
    }
}

/// Whether to reconnect after the socket closed with `code`. A normal close
/// (1000) was not asked for by this client (its own closes end the machine
/// first), so it reconnects; otherwise the hub's ranges decide (4500–4999
/// and protocol errors: stop).
pub fn reconnects_after(code: u16) -> bool {
    code == 1000 || close::should_reconnect(code)
}

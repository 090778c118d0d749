//! What the state machine deals in: the connection's state, what a publish
//! carries and got, and the [`Action`]s it answers every input with.

use exechub_protocol::{ClientMsg, Event, ExecutionSummary, LostReason, PublishRequest};
use serde::Serialize;

use crate::error::ClientError;

/// Connection state, as `ConnectionState` in TypeScript.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionState {
    /// First connection attempt.
    Connecting,
    /// Connected; subscriptions are active.
    Open,
    /// The socket dropped; waiting to reconnect, or trying to.
    Reconnecting,
    /// `close()` was called, the client was freed, or the hub said not to reconnect.
    Closed,
}

/// What a publish carries: one event or a batch, and its idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub enum Publish {
    /// One event, answered with its seq.
    One(PublishRequest),
    /// Several events stored atomically with consecutive seqs.
    Batch(Vec<PublishRequest>),
}

/// The seqs a publish got: `first == last` for a single event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// The seq of the first (or only) event.
    pub first: u64,
    /// The seq of the last (or only) event.
    pub last: u64,
}

/// A subscription's position was lost (`onHistoryLost`'s argument).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryLost {
    /// The execution concerned.
    pub execution_id: String,
    /// The position that could not be continued.
    pub after: u64,
    /// Delivery continues after this seq of `epoch`.
    pub resume_after: u64,
    /// Why.
    pub reason: LostReason,
    /// The history delivery continues in; absent while the execution has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}

/// A subscription's execution ended (`onEnd`): its terminal event, `seq`,
/// was the last one, and the subscription is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// The execution that ended.
    pub execution_id: String,
    /// How it ended (`completed`, `failed`, …).
    pub status: String,
    /// The seq of its terminal event.
    pub seq: u64,
}

/// What the driver must do, in order. `S` is a subscription's handlers, `P`
/// a publish's promise, `L` a list subscription's handlers.
#[derive(Debug, PartialEq)]
pub enum Action<S, P, L = S> {
    /// Send this frame on the open socket.
    Send(ClientMsg),
    /// Hand an event to a subscription.
    Deliver(S, Event),
    /// Tell a subscription its position was lost (before the events that follow).
    Lost(S, HistoryLost),
    /// Tell a subscription the hub reported an error for it.
    Failed(S, ClientError),
    /// Tell a subscription its execution ended; nothing follows.
    Ended(S, Ended),
    /// Hand a list subscription the executions now (its first answer, and
    /// again after every reconnect).
    Listed(L, Vec<ExecutionSummary>),
    /// Hand a list subscription one execution's new summary.
    Changed(L, ExecutionSummary),
    /// Tell a list subscription the hub refused to follow the list.
    ListFailed(L, ClientError),
    /// Settle a publish.
    Settle(P, Result<Stored, ClientError>),
    /// Report the new connection state.
    State(ConnectionState),
}

/// The actions one input leads to.
pub type Actions<S, P, L = S> = Vec<Action<S, P, L>>;

//! The connection's logic, free of JavaScript so it runs in host `#[test]`s:
//! where each subscription stands ([`position`]) and what every input to the
//! connection leads to ([`machine`]): the [`action`]s to carry out — frames
//! to send, events to deliver, promises to settle — and reconnect delays
//! (the protocol's backoff). [`lists`] routes the list of executions to the
//! subscriptions that follow it.

pub mod action;
pub mod lists;
pub mod machine;
pub mod position;

#[cfg(test)]
mod tests;

pub use action::{Action, Actions, ConnectionState, Ended, HistoryLost, Publish, Stored};
pub use machine::Connection;

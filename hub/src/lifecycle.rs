//! Executions that finish: which events end one, and who follows the list
//! of executions.
//!
//! An execution's status is derived from its events by the store, atomically
//! with the append (so every hub node refuses a publish after the end, and a
//! retry of an already-stored event is still answered with its seq). This
//! module holds the policy — [`Lifecycle`]: the terminal event types — and the
//! [`directory`]: the live list of executions that WebSocket clients follow
//! with `subscribe_executions`.

pub mod directory;

use std::sync::Arc;

use exechub_protocol::execution::status_of_terminal;

/// Which event types end an execution.
#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    terminal: Box<[Box<str>]>,
    allow_after_end: bool,
}

impl Lifecycle {
    /// A policy ending executions on `terminal_types` (empty strings are
    /// ignored; none at all: executions never end).
    pub fn new(terminal_types: &[String], allow_after_end: bool) -> Self {
        Self {
            terminal: terminal_types
                .iter()
                .map(|t| t.trim())
                .filter(|t| !t.is_empty())
                .map(Box::from)
                .collect(),
            allow_after_end,
        }
    }

    /// The status an event of `event_type` ends its execution with, if it is terminal.
    pub fn status_of<'a>(&self, event_type: &'a str) -> Option<&'a str> {
        self.terminal
            .iter()
            .any(|t| **t == *event_type)
            .then(|| status_of_terminal(event_type))
    }

    /// The same, shared, for marking a [`NewEvent`](crate::event::NewEvent).
    pub fn ending(&self, event_type: &str) -> Option<Arc<str>> {
        self.status_of(event_type).map(Arc::from)
    }

    /// Whether a subscription ends with the terminal event (it does unless
    /// ended executions still take events).
    pub fn ends_subscriptions(&self) -> bool {
        !self.allow_after_end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_types_map_to_statuses_and_can_be_off() {
        let lifecycle = Lifecycle::new(&["execution_failed".into(), "done".into()], false);
        assert_eq!(lifecycle.status_of("execution_failed"), Some("failed"));
        assert_eq!(lifecycle.status_of("done"), Some("done"));
        assert_eq!(lifecycle.status_of("log"), None);
        assert_eq!(Lifecycle::new(&[String::new()], false).status_of(""), None);
    }
}

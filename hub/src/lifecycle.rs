//! Executions that finish: which events end one ([`Lifecycle`]), and whether
//! that end is final ([`AfterEnd`]).
//!
//! An execution's status is derived from its events by the store, atomically
//! with the append (so every hub node refuses a publish after the end, and a
//! retry of an already-stored event is still answered with its seq). This
//! module holds the policy; the stores and the subscriptions read it from here.

use std::sync::Arc;

use exechub_protocol::execution::status_of_terminal;

/// Whether the terminal event is the last one: the one rule behind "no
/// publish after the end" (`--allow-publish-after-end` makes it `Open`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AfterEnd {
    /// The terminal event is the last: later publishes are refused
    /// (`execution_ended`), and subscriptions end with it.
    #[default]
    Final,
    /// Publishes after the terminal event are stored and delivered (the
    /// execution stays ended), so subscriptions go on after it.
    Open,
}

impl AfterEnd {
    /// The rule `--allow-publish-after-end` asks for.
    pub fn from_flag(allow_publish_after_end: bool) -> Self {
        if allow_publish_after_end {
            Self::Open
        } else {
            Self::Final
        }
    }

    /// Whether the end is final (a publish after it is refused, a
    /// subscription ends with it).
    pub fn is_final(self) -> bool {
        self == Self::Final
    }
}

/// Which event types end an execution, and whether that end is final.
#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    terminal: Box<[Box<str>]>,
    after_end: AfterEnd,
}

impl Lifecycle {
    /// A policy ending executions on `terminal_types` (empty strings are
    /// ignored; none at all: executions never end).
    pub fn new(terminal_types: &[String], after_end: AfterEnd) -> Self {
        Self {
            terminal: terminal_types
                .iter()
                .map(|t| t.trim())
                .filter(|t| !t.is_empty())
                .map(Box::from)
                .collect(),
            after_end,
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

    /// Whether the terminal event is the last one.
    pub fn after_end(&self) -> AfterEnd {
        self.after_end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_types_map_to_statuses_and_can_be_off() {
        let lifecycle =
            Lifecycle::new(&["execution_failed".into(), "done".into()], AfterEnd::Final);
        assert_eq!(lifecycle.status_of("execution_failed"), Some("failed"));
        assert_eq!(lifecycle.status_of("done"), Some("done"));
        assert_eq!(lifecycle.status_of("log"), None);
        assert_eq!(
            Lifecycle::new(&[String::new()], AfterEnd::Final).status_of(""),
            None
        );
    }
}

//! Executions as wholes: their lifecycle status, the summary that outlives
//! their events, and the list of recent executions.
//!
//! An execution is `running` from its first event until an event whose type
//! is one of the hub's terminal types arrives; that event is its final result
//! and its status names how it ended (`execution_completed` → `completed`).
//! The summary is kept after the events expire, so "how did it end" can be
//! answered long after "what happened" is gone.

use serde::{Deserialize, Serialize};

use crate::event::Event;

/// The status of a running execution.
pub const RUNNING: &str = "running";

/// The terminal event types a hub uses unless configured otherwise.
pub const DEFAULT_TERMINAL_TYPES: [&str; 4] = [
    "execution_completed",
    "execution_failed",
    "execution_cancelled",
    "execution_timed_out",
];

/// The status a terminal event of type `event_type` gives its execution: the
/// type without a leading `execution_` (`execution_failed` → `failed`).
pub fn status_of_terminal(event_type: &str) -> &str {
    match event_type.strip_prefix("execution_") {
        Some(status) if !status.is_empty() => status,
        _ => event_type,
    }
}

/// What the hub knows of an execution as a whole
/// (`GET /api/v1/executions/{execution_id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionSummary {
    /// The execution.
    pub execution_id: String,
    /// `running`, or how it ended (`completed`, `failed`, `cancelled`, `timed_out`, …).
    pub status: String,
    /// Whether the terminal event has arrived.
    pub ended: bool,
    /// The history its seqs belong to (absent once its events expired).
    #[serde(default)]
    pub epoch: Option<String>,
    /// Lowest seq still retained (0 when no event is retained).
    pub first_seq: u64,
    /// Highest seq assigned.
    pub last_seq: u64,
    /// How many events are retained now (0 once they expired).
    pub events: u64,
    /// When the hub received its first event (RFC 3339).
    pub started_at: String,
    /// When the hub received its latest event (RFC 3339).
    pub updated_at: String,
    /// When the terminal event arrived, if it has.
    #[serde(default)]
    pub ended_at: Option<String>,
    /// The terminal event: the execution's final result.
    #[serde(default, rename = "final")]
    pub final_event: Option<Event>,
}

/// Which executions a list asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusFilter {
    /// Every execution.
    #[default]
    All,
    /// Executions without a terminal event.
    Running,
    /// Executions that have ended, however they ended.
    Ended,
}

impl StatusFilter {
    /// Whether `summary` is one of the executions asked for.
    pub fn matches(self, summary: &ExecutionSummary) -> bool {
        match self {
            Self::All => true,
            Self::Running => !summary.ended,
            Self::Ended => summary.ended,
        }
    }

    /// The filter named `wire` (`all`, `running`, `ended`).
    pub fn from_wire(wire: &str) -> Option<Self> {
        match wire {
            "all" => Some(Self::All),
            "running" => Some(Self::Running),
            "ended" => Some(Self::Ended),
            _ => None,
        }
    }
}

/// A page of executions, most recently updated first
/// (`GET /api/v1/executions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionList {
    /// The executions of this page.
    pub executions: Vec<ExecutionSummary>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_come_from_terminal_types() {
        assert_eq!(status_of_terminal("execution_completed"), "completed");
        assert_eq!(status_of_terminal("execution_timed_out"), "timed_out");
        assert_eq!(status_of_terminal("job_done"), "job_done");
        assert_eq!(status_of_terminal("execution_"), "execution_");
    }

    #[test]
    fn summary_names_its_final_event_final() {
        let summary = ExecutionSummary {
            execution_id: "e".into(),
            status: RUNNING.into(),
            ended: false,
            epoch: None,
            first_seq: 0,
            last_seq: 0,
            events: 0,
            started_at: "t".into(),
            updated_at: "t".into(),
            ended_at: None,
            final_event: None,
        };
        let json = serde_json::to_value(&summary).expect("serializes");
        assert!(json.get("final").is_some_and(serde_json::Value::is_null));
        assert!(StatusFilter::Running.matches(&summary));
        assert!(!StatusFilter::Ended.matches(&summary));
        assert_eq!(StatusFilter::from_wire("ended"), Some(StatusFilter::Ended));
    }
}

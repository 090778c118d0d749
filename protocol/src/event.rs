//! Events as the hub stores and delivers them.

use serde::{Deserialize, Serialize};

/// The free-form payload of an event: always a JSON object.
pub type EventData = serde_json::Map<String, serde_json::Value>;

/// One event of an execution, as stored, replayed and pushed to subscribers.
///
/// `seq` is assigned by the hub's store: 1, 2, 3… per execution, without gaps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position of the event in its execution's stream, starting at 1.
    pub seq: u64,
    /// The execution this event belongs to.
    pub execution_id: String,
    /// What happened, e.g. `tool_started` or `status_changed`.
    pub event_type: String,
    /// RFC 3339 time given by the publisher, or stamped by the hub on arrival.
    pub timestamp: String,
    /// Free-form payload.
    pub data: EventData,
}

/// Answer to an accepted publish (HTTP 202 body, and the WebSocket `ack`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishAccepted {
    /// Always `"accepted"`.
    pub status: String,
    /// The execution the event was appended to.
    pub execution_id: String,
    /// The sequence number the store assigned.
    pub seq: u64,
    /// The event's timestamp (the publisher's, or the one the hub stamped).
    pub timestamp: String,
}

/// Answer to an accepted batch publish (HTTP 202 body).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchAccepted {
    /// Always `"accepted"`.
    pub status: String,
    /// The execution the events were appended to.
    pub execution_id: String,
    /// The seq of the batch's first event.
    pub first_seq: u64,
    /// The seq of its last event (the seqs in between are the batch's, in order).
    pub last_seq: u64,
    /// How many events were stored.
    pub count: u64,
}

/// A page of stored events, answer of `GET /api/v1/executions/{id}/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryPage {
    /// The execution the events belong to.
    pub execution_id: String,
    /// Events with `seq > after`, in seq order, at most `limit` of them.
    pub events: Vec<Event>,
    /// Highest seq assigned so far (0 when the execution has no history).
    pub last_seq: u64,
    /// Lowest seq still retained, if any: events below it expired or were trimmed.
    pub oldest_seq: Option<u64>,
    /// The identity of the history these seqs belong to (absent when there is none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// Present when the execution's events are gone but its summary is kept
    /// (an ended execution whose events expired): why, and up to which seq.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_lost: Option<PageLost>,
}

/// Why a history page is empty although the execution is known.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageLost {
    /// Why the events are gone (`expired`).
    pub reason: crate::LostReason,
    /// The last seq the execution had.
    pub last_seq: u64,
}

//! The TypeScript types and Rust shapes of executions as wholes: the
//! summary that says how an execution stands or ended, a page of them, and
//! the options of the calls that read and follow them.

use exechub_protocol::{ExecutionList, ExecutionSummary, StatusFilter};
use js_sys::Function;
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

use super::{EventView, callback};

#[wasm_bindgen(typescript_custom_section)]
const TYPES: &'static str = r#"
/**
 * How an execution stands: `running` until its terminal event, then how it
 * ended; for a custom terminal type, the type without a leading `execution_`.
 */
export type ExecutionStatus = "running" | "completed" | "failed" | "cancelled" | "timed_out" | (string & {});

/** Which executions a list holds. */
export type StatusFilter = "all" | "running" | "ended";

/** What the hub knows of an execution as a whole; kept after its events expire. */
export interface ExecutionSummary {
  executionId: string;
  status: ExecutionStatus;
  /** Whether its terminal event arrived. */
  ended: boolean;
  /** The history its seqs belong to; null once its events expired. */
  epoch: string | null;
  /** Lowest seq still retained (0 when none is). */
  firstSeq: number;
  /** Highest seq assigned. */
  lastSeq: number;
  /** Events retained now (0 once they expired). */
  events: number;
  /** RFC 3339 times the hub received its first and latest events. */
  startedAt: string;
  updatedAt: string;
  /** When the terminal event arrived; null while running. */
  endedAt: string | null;
  /** The terminal event: the execution's final result; null while running. */
  final: ExecutionEvent | null;
}

/** A page of executions, most recently updated first. */
export interface ExecutionList {
  executions: ExecutionSummary[];
  /** Pass as `cursor` for the next page; null on the last one. */
  nextCursor: string | null;
}

/** Options of {@link ExechubClient.listExecutions}. */
export interface ListExecutionsOptions {
  /** Default `"all"`. */
  status?: StatusFilter;
  /** 1 to 200 (default 50). */
  limit?: number;
  /** A previous page's `nextCursor`. */
  cursor?: string;
}

/** Options of {@link ExechubClient.result}. */
export interface ResultOptions {
  /** Seconds (0 to 60, default 0) to wait for the end; the summary is still `running` when it runs out. */
  wait?: number;
}

/** Options of {@link ExechubClient.subscribeExecutions}. */
export interface SubscribeExecutionsOptions {
  /** Which executions (default `"all"`). */
  status?: StatusFilter;
  /** Called with each change of an execution in (or, for `"running"`, leaving) the list. */
  onChange?: (execution: ExecutionSummary) => void;
  /** The hub refused to follow the list. */
  onError?: (error: ExechubError) => void;
}

/** Why a subscription's position could not be continued. */
export type LostReason =
  /** The execution's history expired (TTL); a new one starts at seq 1. */
  | "expired"
  /** Events after the position were trimmed; same history. */
  | "trimmed"
  /** The history was dropped otherwise (hub restarted or evicted it); a new one starts. */
  | "reset";

/**
 * The position `after` cannot be continued: for `"trimmed"`, events
 * `after + 1 ..= resumeAfter` are gone; otherwise the history `after` belonged
 * to is gone. Delivery continues after `resumeAfter` of history `epoch`.
 */
export interface HistoryLost {
  executionId: string;
  after: number;
  resumeAfter: number;
  reason: LostReason;
  /** The history delivery continues in; absent while the execution has none. */
  epoch?: string;
}
"#;

#[wasm_bindgen]
extern "C" {
    /// `ListExecutionsOptions` from TypeScript.
    #[wasm_bindgen(typescript_type = "ListExecutionsOptions")]
    pub type ListOptionsJs;
    /// `ResultOptions` from TypeScript.
    #[wasm_bindgen(typescript_type = "ResultOptions")]
    pub type ResultOptionsJs;
    /// `SubscribeExecutionsOptions` from TypeScript.
    #[wasm_bindgen(typescript_type = "SubscribeExecutionsOptions")]
    pub type SubscribeExecutionsOptionsJs;
    /// The snapshot callback of a list subscription.
    #[wasm_bindgen(typescript_type = "(executions: ExecutionSummary[]) => void")]
    pub type SnapshotHandlerJs;
    /// A Promise of a summary, or null for an unknown execution.
    #[wasm_bindgen(typescript_type = "Promise<ExecutionSummary | null>")]
    pub type SummaryPromise;
    /// A Promise of a page of executions.
    #[wasm_bindgen(typescript_type = "Promise<ExecutionList>")]
    pub type ListPromise;
}

/// `SubscribeExecutionsOptions`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ListSubscribeOptions {
    /// Which executions.
    #[serde(default)]
    pub status: StatusFilter,
    /// Told of each change.
    #[serde(default, deserialize_with = "callback")]
    pub on_change: Option<Function>,
    /// Told of the hub's refusal.
    #[serde(default, deserialize_with = "callback")]
    pub on_error: Option<Function>,
}

/// An `ExecutionSummary`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SummaryView<'a> {
    execution_id: &'a str,
    status: &'a str,
    ended: bool,
    epoch: Option<&'a str>,
    first_seq: u64,
    last_seq: u64,
    events: u64,
    started_at: &'a str,
    updated_at: &'a str,
    ended_at: Option<&'a str>,
    #[serde(rename = "final")]
    final_event: Option<EventView<'a>>,
}

impl<'a> From<&'a ExecutionSummary> for SummaryView<'a> {
    fn from(summary: &'a ExecutionSummary) -> Self {
        Self {
            execution_id: &summary.execution_id,
            status: &summary.status,
            ended: summary.ended,
            epoch: summary.epoch.as_deref(),
            first_seq: summary.first_seq,
            last_seq: summary.last_seq,
            events: summary.events,
            started_at: &summary.started_at,
            updated_at: &summary.updated_at,
            ended_at: summary.ended_at.as_deref(),
            final_event: summary.final_event.as_ref().map(EventView::from),
        }
    }
}

/// An `ExecutionList`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListView<'a> {
    executions: Vec<SummaryView<'a>>,
    next_cursor: Option<&'a str>,
}

impl<'a> From<&'a ExecutionList> for ListView<'a> {
    fn from(list: &'a ExecutionList) -> Self {
        Self {
            executions: list.executions.iter().map(SummaryView::from).collect(),
            next_cursor: list.next_cursor.as_deref(),
        }
    }
}

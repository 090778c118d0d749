//! Wire types shared by the exechub hub and its clients.
//!
//! Everything that crosses a socket between a worker, the hub and a browser is
//! defined here exactly once, so the server (`exechub`) and the browser client
//! (`exechub-client`) can never disagree about a field name or an error shape.
//! The crate is serde-only and compiles for `wasm32-unknown-unknown`.
//!
//! - [`backoff`]: not a wire type but part of the same contract: the reconnect
//!   and retry delays every client (and the hub) follows.
//! - [`event`]: the stored and delivered [`Event`], history pages and the publish answer.
//! - [`execution`]: an execution as a whole: lifecycle status, the summary that
//!   outlives its events, and the list of recent executions.
//! - [`publish`]: the publish request and its FastAPI-compatible validation.
//! - [`validation`]: the `HTTPValidationError` body used by 422 answers and WebSocket errors.
//! - [`ws`]: WebSocket messages in both directions, error codes and close codes.
//! - [`names`]: the JSON names of fields, ops and frame kinds, for code that
//!   reads or writes frames without the derives (the browser client).

pub mod backoff;
pub mod error;
pub mod event;
pub mod execution;
pub mod names;
pub mod publish;
pub mod validation;
pub mod ws;

pub use error::{ErrorBody, ErrorCode};
pub use event::{BatchAccepted, Event, EventData, HistoryPage, PageLost, PublishAccepted};
pub use execution::{ExecutionList, ExecutionSummary, StatusFilter};
pub use publish::{
    BatchRequest, FieldType, MAX_EXECUTION_ID_BYTES, MAX_IDEMPOTENCY_KEY_BYTES, PublishRequest,
    body_not_json, is_idempotency_key, publish_problems, validate_execution_id,
};
pub use validation::{HttpValidationError, Loc, ValidationError};
pub use ws::{ClientMsg, LostReason, RequestId, ServerMsg, close, is_epoch};

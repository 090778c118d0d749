//! The edge error type and its mapping to HTTP answers and WebSocket error codes.
//!
//! Handlers return [`ApiError`]; this is the one place that decides status
//! codes, bodies and what is logged. Internal causes are logged, never sent.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use exechub_protocol::{ErrorCode, HttpValidationError, ValidationError};
use serde_json::json;

use crate::auth::AuthError;
use crate::store::StoreError;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The input is invalid; one entry per problem (HTTP 422).
    #[error("invalid request")]
    Validation(Vec<ValidationError>),
    /// The body exceeds the configured limit (HTTP 413).
    #[error("body exceeds {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The store failed (HTTP 503 when retryable, 500 otherwise).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The token is missing or invalid (401), or does not allow this (403).
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The page's `Origin` may not open WebSockets (403).
    #[error("origin not allowed")]
    OriginNotAllowed,
    /// The hub is at a limit (connections, subscriptions): 503 with `Retry-After`.
    #[error("at the {0} limit")]
    Busy(&'static str),
    /// The client's publish rate limit is reached: 429 with `Retry-After`.
    #[error(transparent)]
    RateLimited(#[from] crate::limits::RateLimited),
    /// An event stream asked to resume after the end of an ended execution:
    /// 204, which tells `EventSource` not to reconnect.
    #[error("the execution has ended; nothing follows")]
    StreamEnded,
    /// The execution is unknown (404).
    #[error("execution not found")]
    NotFound,
    /// The token holds its maximum of subscriptions: 429.
    #[error(transparent)]
    TokenLimit(#[from] crate::limits::TokenLimit),
}

impl From<ValidationError> for ApiError {
    fn from(error: ValidationError) -> Self {
        Self::Validation(vec![error])
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Validation(detail) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(HttpValidationError { detail }),
            )
                .into_response(),
            Self::PayloadTooLarge { limit } => {
                let detail = format!("event body exceeds the limit of {limit} bytes");
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    Json(json!({ "detail": detail })),
                )
                    .into_response()
            }
            Self::Store(error) if error.is_retryable() => {
                tracing::warn!(%error, "store unavailable");
                let body = Json(json!({ "detail": "event store unavailable, retry later" }));
                let retry = [(header::RETRY_AFTER, HeaderValue::from_static("1"))];
                (StatusCode::SERVICE_UNAVAILABLE, retry, body).into_response()
            }
            Self::Auth(refusal) if refusal.is_forbidden() => {
                let body = json!({ "detail": refusal.to_string(), "code": refusal.code() });
                (StatusCode::FORBIDDEN, Json(body)).into_response()
            }
            Self::Auth(refusal) => {
                // RFC 6750: say the scheme, and why when a token was presented.
                let challenge = match &refusal {
                    AuthError::Missing => r#"Bearer realm="exechub""#.to_owned(),
                    other => format!(
                        r#"Bearer realm="exechub", error="invalid_token", error_description="{other}""#
                    ),
                };
                let header = HeaderValue::from_str(&challenge)
                    .unwrap_or_else(|_| HeaderValue::from_static("Bearer"));
                let body = json!({ "detail": refusal.to_string(), "code": refusal.code() });
                (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, header)],
                    Json(body),
                )
                    .into_response()
            }
            Self::RateLimited(limited) => {
                let seconds = limited.retry_after.as_secs_f64().ceil().max(1.0) as u64;
                let body = json!({ "detail": limited.to_string(), "code": "rate_limited" });
                let retry = [(header::RETRY_AFTER, HeaderValue::from(seconds))];
                (StatusCode::TOO_MANY_REQUESTS, retry, Json(body)).into_response()
            }
            Self::TokenLimit(limit) => {
                let body = json!({ "detail": limit.to_string(), "code": "too_many_subscriptions" });
                (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response()
            }
            Self::Busy(what) => {
                let detail = format!("the hub is at its {what} limit; retry later");
                let body = Json(json!({ "detail": detail, "code": "busy" }));
                let retry = [(header::RETRY_AFTER, HeaderValue::from_static("5"))];
                (StatusCode::SERVICE_UNAVAILABLE, retry, body).into_response()
            }
            Self::StreamEnded => StatusCode::NO_CONTENT.into_response(),
            Self::NotFound => (
                StatusCode::NOT_FOUND,
                Json(json!({ "detail": "Execution not found" })),
            )
                .into_response(),
            Self::OriginNotAllowed => {
                let body = json!({ "detail": "this origin may not open WebSockets", "code": "origin_not_allowed" });
                (StatusCode::FORBIDDEN, Json(body)).into_response()
            }
            Self::Store(StoreError::Ended { status }) => {
                let detail = format!("execution has ended ({status}); it accepts no more events");
                let body = json!({ "detail": detail, "code": "execution_ended" });
                (StatusCode::CONFLICT, Json(body)).into_response()
            }
            Self::Store(error) => {
                tracing::error!(%error, "store failure");
                let body = Json(json!({ "detail": "internal error" }));
                (StatusCode::INTERNAL_SERVER_ERROR, body).into_response()
            }
        }
    }
}

/// The WebSocket error code and client-facing message for a store failure.
pub fn ws_store_error(error: &StoreError) -> (ErrorCode, &'static str) {
    if let StoreError::Ended { .. } = error {
        (
            ErrorCode::ExecutionEnded,
            "execution has ended; it accepts no more events",
        )
    } else if error.is_retryable() {
        tracing::warn!(%error, "store unavailable");
        (
            ErrorCode::Unavailable,
            "event store unavailable, retry later",
        )
    } else {
        tracing::error!(%error, "store failure");
        (ErrorCode::Internal, "internal error")
    }
}

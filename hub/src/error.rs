//! The edge error type and its mapping to HTTP answers and WebSocket error codes.
//!
//! Handlers return [`ApiError`]; this is the one place that decides status
//! codes, bodies and what is logged. Internal causes are logged, never sent.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use exechub_protocol::{ErrorBody, ErrorCode, HttpValidationError, ValidationError};

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
            Self::StreamEnded => StatusCode::NO_CONTENT.into_response(),
            error => {
                let (status, body) = error.answer();
                (status, error.headers(), Json(body)).into_response()
            }
        }
    }
}

impl ApiError {
    /// The status and the one error body; internal causes are logged here,
    /// never sent.
    fn answer(&self) -> (StatusCode, ErrorBody) {
        let (status, code, detail) = match self {
            Self::PayloadTooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::PayloadTooLarge,
                format!("event body exceeds the limit of {limit} bytes"),
            ),
            Self::Store(error) => return store_answer(error),
            Self::Auth(refusal) if refusal.is_forbidden() => {
                (StatusCode::FORBIDDEN, refusal.code(), refusal.to_string())
            }
            Self::Auth(refusal) => (
                StatusCode::UNAUTHORIZED,
                refusal.code(),
                refusal.to_string(),
            ),
            Self::RateLimited(limited) => (
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RateLimited,
                limited.to_string(),
            ),
            Self::TokenLimit(limit) => (
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManySubscriptions,
                limit.to_string(),
            ),
            Self::Busy(what) => (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Busy,
                format!("the hub is at its {what} limit; retry later"),
            ),
            Self::NotFound => (
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                "Execution not found".to_owned(),
            ),
            Self::OriginNotAllowed => (
                StatusCode::FORBIDDEN,
                ErrorCode::OriginNotAllowed,
                "this origin may not open WebSockets".to_owned(),
            ),
            // Answered without a body by `into_response`.
            Self::Validation(_) | Self::StreamEnded => (
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                String::new(),
            ),
        };
        (status, ErrorBody::new(code, detail))
    }

    /// `Retry-After` where retrying later helps, and RFC 6750's challenge on a 401.
    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let retry_after = match self {
            Self::Store(error) if error.is_retryable() => Some(1),
            Self::Busy(_) => Some(5),
            Self::RateLimited(limited) => {
                Some(limited.retry_after.as_secs_f64().ceil().max(1.0) as u64)
            }
            _ => None,
        };
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Self::Auth(refusal) = self
            && !refusal.is_forbidden()
        {
            headers.insert(header::WWW_AUTHENTICATE, challenge(refusal));
        }
        headers
    }
}

/// RFC 6750: the scheme, and why when a token was presented.
fn challenge(refusal: &AuthError) -> HeaderValue {
    let challenge = match refusal {
        AuthError::Missing => r#"Bearer realm="exechub""#.to_owned(),
        other => {
            format!(r#"Bearer realm="exechub", error="invalid_token", error_description="{other}""#)
        }
    };
    HeaderValue::from_str(&challenge).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

/// A store failure over HTTP: 409 after the end, 503 when retrying helps,
/// else 500.
fn store_answer(error: &StoreError) -> (StatusCode, ErrorBody) {
    let status = match error {
        StoreError::Ended { status } => {
            let detail = format!("execution has ended ({status}); it accepts no more events");
            return (
                StatusCode::CONFLICT,
                ErrorBody::new(ErrorCode::ExecutionEnded, detail),
            );
        }
        error if error.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let (code, detail) = ws_store_error(error);
    (status, ErrorBody::new(code, detail))
}

/// The error code and client-facing message for a store failure (WebSocket,
/// SSE and, with its status, HTTP); its cause is logged here.
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

//! Errors as the hub answers them: one list of codes ([`ErrorCode`]) for
//! HTTP bodies, WebSocket `error` frames and SSE `error` events, and one
//! HTTP error body ([`ErrorBody`]). A 422 keeps FastAPI's shape instead
//! ([`crate::HttpValidationError`]).

use serde::{Deserialize, Serialize};

/// Why a request failed. Data, so clients can branch on it; the same code
/// means the same thing on every transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame is not a JSON object with a string `op`, or is binary.
    BadFrame,
    /// `op` names no known operation.
    UnknownOp,
    /// Fields are missing or mistyped; `detail` says which.
    InvalidRequest,
    /// `unsubscribe` for an execution that is not subscribed.
    NotSubscribed,
    /// `subscribe` for an execution that is already subscribed on this connection.
    AlreadySubscribed,
    /// The connection (WebSocket) or the token reached its subscription limit.
    TooManySubscriptions,
    /// The event store is unavailable; retry later.
    Unavailable,
    /// An unexpected server-side failure.
    Internal,
    /// The token is missing, malformed, badly signed or expired (WebSocket
    /// `auth`; over HTTP the code says which of these it is).
    Unauthorized,
    /// The token is valid but does not allow this operation on this execution.
    Forbidden,
    /// The client's publish rate limit is reached; retry later (the message says when).
    RateLimited,
    /// The execution has ended (its terminal event was stored); it takes no more events.
    ExecutionEnded,
    /// HTTP 401: no bearer token.
    MissingToken,
    /// HTTP 401: the token is not a JWT.
    MalformedToken,
    /// HTTP 401: the token's signature does not verify.
    BadSignature,
    /// HTTP 401 (and SSE's last event): the token has expired.
    TokenExpired,
    /// HTTP 401: the token is unusable for another reason (claims, issuer, audience).
    InvalidToken,
    /// HTTP 503: the hub is at a connection or subscription limit; retry later.
    Busy,
    /// HTTP 403: the page's origin may not open WebSockets.
    OriginNotAllowed,
    /// HTTP 404: the execution is not known (or no longer).
    NotFound,
    /// HTTP 413: the body exceeds the configured limit.
    PayloadTooLarge,
    /// SSE's last event: the client fell too far behind and was closed; reconnect.
    SlowConsumer,
}

impl ErrorCode {
    /// Every code, for looking one up by its wire name.
    const ALL: [Self; 22] = [
        Self::BadFrame,
        Self::UnknownOp,
        Self::InvalidRequest,
        Self::NotSubscribed,
        Self::AlreadySubscribed,
        Self::TooManySubscriptions,
        Self::Unavailable,
        Self::Internal,
        Self::Unauthorized,
        Self::Forbidden,
        Self::RateLimited,
        Self::ExecutionEnded,
        Self::MissingToken,
        Self::MalformedToken,
        Self::BadSignature,
        Self::TokenExpired,
        Self::InvalidToken,
        Self::Busy,
        Self::OriginNotAllowed,
        Self::NotFound,
        Self::PayloadTooLarge,
        Self::SlowConsumer,
    ];

    /// The code named `wire` (e.g. `"bad_frame"`), if this version knows it;
    /// for clients that read frames without serde.
    pub fn from_wire(wire: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|code| code.as_str() == wire)
    }

    /// The code as it appears on the wire, e.g. `"bad_frame"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadFrame => "bad_frame",
            Self::UnknownOp => "unknown_op",
            Self::InvalidRequest => "invalid_request",
            Self::NotSubscribed => "not_subscribed",
            Self::AlreadySubscribed => "already_subscribed",
            Self::TooManySubscriptions => "too_many_subscriptions",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::RateLimited => "rate_limited",
            Self::ExecutionEnded => "execution_ended",
            Self::MissingToken => "missing_token",
            Self::MalformedToken => "malformed_token",
            Self::BadSignature => "bad_signature",
            Self::TokenExpired => "token_expired",
            Self::InvalidToken => "invalid_token",
            Self::Busy => "busy",
            Self::OriginNotAllowed => "origin_not_allowed",
            Self::NotFound => "not_found",
            Self::PayloadTooLarge => "payload_too_large",
            Self::SlowConsumer => "slow_consumer",
        }
    }
}

/// Every HTTP error answer but a 422: `{"detail": "…", "code": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub detail: String,
    /// What went wrong, for programs; absent only where no code applies
    /// (a proxy's answer, or a hub older than this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
}

impl ErrorBody {
    /// A body with `code`.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            detail: detail.into(),
            code: Some(code),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_from_its_wire_name_and_serde_agrees() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_wire(code.as_str()), Some(code));
            let json = serde_json::to_string(&code).expect("serializes");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
        assert_eq!(ErrorCode::from_wire("no_such_code"), None);
    }

    #[test]
    fn an_error_body_has_detail_and_code() {
        let body = ErrorBody::new(ErrorCode::Busy, "at the limit");
        let json = serde_json::to_string(&body).expect("serializes");
        assert_eq!(json, r#"{"detail":"at the limit","code":"busy"}"#);
        let bare: ErrorBody = serde_json::from_str(r#"{"detail":"x"}"#).expect("reads");
        assert_eq!(bare.code, None);
    }
}

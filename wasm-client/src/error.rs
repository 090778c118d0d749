//! Errors the client reports, and how they reach JavaScript: every failure
//! becomes an `ExechubError` (a real `Error` with `code`, and `detail` /
//! `status` when the hub gave them), delivered as a rejected Promise, thrown
//! by the call that caused it, or handed to an error callback.
//!
//! The enum is plain Rust (host-testable); only [`ClientError::to_js`] touches
//! JavaScript. It depends on nothing else in this crate. Codes are the
//! protocol's (`exechub_protocol::ErrorCode`), as the hub sends them over
//! HTTP and the socket, plus the client's own (`not_connected`, `closed`, …).

use exechub_protocol::{ErrorCode, ValidationError};
use js_sys::Reflect;
use wasm_bindgen::JsValue;

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The socket is not open (connecting or reconnecting); nothing was sent.
    /// Not fatal: retry once the state is `open`.
    #[error("not connected to the hub; retry once the state is \"open\"")]
    NotConnected,
    /// The socket dropped before the hub answered; the publish may or may not
    /// be stored. Retry with an idempotency key to be safe.
    #[error("connection lost before the hub answered")]
    ConnectionLost,
    /// `close()` was called or the client was freed. Fatal for this client.
    #[error("the client is closed")]
    Closed,
    /// The hub refused a WebSocket request; the connection stays usable.
    #[error("{message}")]
    Hub {
        /// The hub's error code.
        code: ErrorCode,
        /// The hub's explanation.
        message: String,
        /// Field problems, for `invalid_request`: as the hub sent them, or as
        /// the shared crate's checks found them locally.
        detail: Option<Vec<ValidationError>>,
    },
    /// An HTTP request got an error status.
    #[error("HTTP {status}: {message}")]
    Http {
        /// The status code.
        status: u16,
        /// The hub's error code from the body (`http_error` without one:
        /// not the hub's answer, e.g. a proxy's).
        code: Option<ErrorCode>,
        /// The hub's `detail` text, or the status text.
        message: String,
        /// Field problems, for a 422: the body's `detail` list.
        detail: Option<Vec<ValidationError>>,
    },
    /// The request could not be made (network failure, CORS, bad URL).
    #[error("network error: {0}")]
    Network(String),
    /// An argument could not be used (e.g. `data` that is not JSON-serializable).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The hub answered something this client does not understand.
    #[error("unexpected answer from the hub: {0}")]
    Protocol(String),
    /// A subscription to this execution already exists on this client.
    #[error("already subscribed to execution {0}")]
    AlreadySubscribed(String),
}

impl ClientError {
    /// The hub's refusal of a WebSocket request.
    pub fn hub(code: ErrorCode, message: String, detail: Option<Vec<ValidationError>>) -> Self {
        Self::Hub {
            code,
            message,
            detail,
        }
    }

    /// An `invalid_request` for problems the hub's rules found locally.
    pub fn invalid(detail: Vec<ValidationError>) -> Self {
        Self::Hub {
            code: ErrorCode::InvalidRequest,
            message: "invalid request".to_owned(),
            detail: Some(detail),
        }
    }

    /// The machine-readable `code` on the JavaScript error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotConnected => "not_connected",
            Self::ConnectionLost => "connection_lost",
            Self::Closed => "closed",
            Self::Hub { code, .. } => code.as_str(),
            Self::Http {
                code: Some(code), ..
            } => code.as_str(),
            Self::Http { code: None, .. } => "http_error",
            Self::Network(_) => "network_error",
            Self::InvalidArgument(_) => "invalid_argument",
            Self::Protocol(_) => "protocol_error",
            Self::AlreadySubscribed(_) => "already_subscribed",
        }
    }

    fn detail(&self) -> Option<&[ValidationError]> {
        match self {
            Self::Hub { detail, .. } | Self::Http { detail, .. } => detail.as_deref(),
            _ => None,
        }
    }

    /// The JavaScript `ExechubError` for this failure.
    pub fn to_js(&self) -> JsValue {
        let error = js_sys::Error::new(&self.to_string());
        error.set_name("ExechubError");
        let object: &JsValue = error.as_ref();
        // Setting properties on a fresh Error object cannot fail.
        let _ = Reflect::set(object, &"code".into(), &self.code().into());
        if let Some(detail) = self.detail() {
            let detail = serde_wasm_bindgen::to_value(detail).unwrap_or(JsValue::NULL);
            let _ = Reflect::set(object, &"detail".into(), &detail);
        }
        if let Self::Http { status, .. } = self {
            let _ = Reflect::set(object, &"status".into(), &JsValue::from(*status));
        }
        error.into()
    }
}

impl From<ClientError> for JsValue {
    fn from(error: ClientError) -> Self {
        error.to_js()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_errors_carry_the_hubs_code_and_nothing_is_guessed_from_the_status() {
        let http = |status, code| ClientError::Http {
            status,
            code,
            message: String::new(),
            detail: None,
        };
        assert_eq!(
            http(409, Some(ErrorCode::ExecutionEnded)).code(),
            "execution_ended"
        );
        assert_eq!(
            http(401, Some(ErrorCode::TokenExpired)).code(),
            "token_expired"
        );
        assert_eq!(http(502, None).code(), "http_error", "a proxy's answer");
        assert_eq!(ClientError::invalid(Vec::new()).code(), "invalid_request");
    }
}

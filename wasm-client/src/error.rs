//! Errors the client reports, and how they reach JavaScript: every failure
//! becomes an `ExechubError` (a real `Error` with `code`, and `detail` /
//! `status` when the hub gave them), delivered as a rejected Promise or to an
//! error callback — never thrown from inside the client.

use exechub_protocol::{ErrorCode, ValidationError};
use js_sys::Reflect;
use wasm_bindgen::JsValue;

use crate::types::detail_to_js;

/// Why an operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The socket is not open (connecting or reconnecting); nothing was sent.
    #[error("not connected to the hub; retry once the state is \"open\"")]
    NotConnected,
    /// The socket dropped before the hub answered; the publish may or may not be stored.
    #[error("connection lost before the hub answered")]
    ConnectionLost,
    /// `close()` was called.
    #[error("the client is closed")]
    Closed,
    /// The hub refused the request.
    #[error("{message}")]
    Hub {
        /// The hub's error code.
        code: ErrorCode,
        /// The hub's explanation.
        message: String,
        /// Field problems, for `invalid_request`: the `detail` array as the
        /// hub sent it, or as the shared crate's checks found them locally.
        detail: Option<JsValue>,
    },
    /// An HTTP request got an error status.
    #[error("HTTP {status}: {message}")]
    Http {
        /// The status code.
        status: u16,
        /// The hub's `detail` text, or the status text.
        message: String,
        /// Field problems, for a 422: the body's `detail` array, untouched.
        detail: Option<JsValue>,
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
    /// An `invalid_request` for problems the hub's rules found locally.
    pub fn invalid(message: &str, detail: &[ValidationError]) -> Self {
        Self::Hub {
            code: ErrorCode::InvalidRequest,
            message: message.to_owned(),
            detail: Some(detail_to_js(detail)),
        }
    }

    /// The machine-readable `code` on the JavaScript error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotConnected => "not_connected",
            Self::ConnectionLost => "connection_lost",
            Self::Closed => "closed",
            Self::Hub { code, .. } => code.as_str(),
            Self::Http { status: 422, .. } => "invalid_request",
            Self::Http { status: 503, .. } => "unavailable",
            Self::Http { .. } => "http_error",
            Self::Network(_) => "network_error",
            Self::InvalidArgument(_) => "invalid_argument",
            Self::Protocol(_) => "protocol_error",
            Self::AlreadySubscribed(_) => "already_subscribed",
        }
    }

    fn detail(&self) -> Option<&JsValue> {
        match self {
            Self::Hub { detail, .. } | Self::Http { detail, .. } => detail.as_ref(),
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
            let _ = Reflect::set(object, &"detail".into(), detail);
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

//! Opening WebSockets: with the global `WebSocket` (browsers, web workers,
//! Node ≥ 22) or a constructor the application passes (the `ws` package's in
//! Node 20), wrapped in gloo-net's futures `WebSocket` (a `Stream` of
//! messages and a `Sink` for frames).

use gloo_net::websocket::futures::WebSocket;
use js_sys::{Array, Function, Reflect};
use wasm_bindgen::{JsCast, JsValue};

use crate::error::ClientError;
use crate::global;

/// Where and how to connect.
pub struct Dialer {
    /// The `/ws` URL (the token is added per attempt).
    pub url: String,
    /// The WebSocket constructor; `None` for the global one.
    websocket: Option<Function>,
}

impl Dialer {
    /// A dialer for `url`, with `websocket` or else the global constructor.
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] for a URL that is not `ws://` or
    /// `wss://`, or when there is no constructor to use.
    pub fn new(url: &str, websocket: Option<Function>) -> Result<Self, ClientError> {
        if !(url.starts_with("ws://") || url.starts_with("wss://")) {
            let message = "url must start with ws:// or wss://";
            return Err(ClientError::InvalidArgument(message.into()));
        }
        if websocket.is_none() && !global::has("WebSocket") {
            let message = "this environment has no global WebSocket (Node before 22): pass one, \
                 e.g. `new ExechubClient(url, { websocket: WebSocket })` with \
                 `import { WebSocket } from \"ws\"`";
            return Err(ClientError::InvalidArgument(message.into()));
        }
        Ok(Self {
            url: url.to_owned(),
            websocket,
        })
    }

    /// Starts connecting to `url`: the raw socket (to close it) and gloo's
    /// wrapper (to use it).
    ///
    /// # Errors
    /// What the constructor threw (e.g. a malformed URL).
    pub fn open(&self, url: &str) -> Result<(web_sys::WebSocket, WebSocket), JsValue> {
        let raw: web_sys::WebSocket = match &self.websocket {
            Some(constructor) => {
                let arguments = Array::of1(&JsValue::from_str(url));
                Reflect::construct(constructor, &arguments)?.unchecked_into()
            }
            None => web_sys::WebSocket::new(url)?,
        };
        match WebSocket::try_from(raw.clone()) {
            Ok(socket) => Ok((raw, socket)),
            Err(error) => {
                let _ = raw.close();
                Err(JsValue::from_str(&error.to_string()))
            }
        }
    }
}

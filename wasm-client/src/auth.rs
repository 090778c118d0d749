//! Tokens for hubs with auth on: a fixed token, or a `getToken` callback that
//! is asked before every connection attempt and shortly before the current
//! token expires. A fresh token is sent on the open socket with an `auth`
//! frame, so the connection (and every subscription) stays up across refreshes.

use std::time::Duration;

use js_sys::{Function, Promise};
use serde::Deserialize;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::global;

/// Ask for a new token this long before the current one expires.
const REFRESH_MARGIN_SECS: f64 = 30.0;
/// Never ask more often than this (e.g. while `getToken` keeps failing).
const MIN_REFRESH: Duration = Duration::from_secs(5);

/// Where the connection's token comes from.
pub struct Tokens {
    current: Option<String>,
    get_token: Option<Function>,
}

/// The claims of a JWT this client reads.
#[derive(Deserialize)]
struct Claims {
    /// Expiry, Unix seconds.
    exp: Option<f64>,
}

impl Tokens {
    /// A fixed `token`, a `getToken` callback, both (the token is used first), or neither.
    pub fn new(token: Option<String>, get_token: Option<Function>) -> Self {
        Self {
            current: token,
            get_token,
        }
    }

    /// `base` with the current token as `access_token`.
    pub fn url(&self, base: &str) -> String {
        match &self.current {
            Some(token) => {
                let separator = if base.contains('?') { "&" } else { "?" };
                let token = String::from(js_sys::encode_uri_component(token));
                format!("{base}{separator}access_token={token}")
            }
            None => base.to_owned(),
        }
    }

    /// The `getToken` callback, if any.
    pub fn getter(&self) -> Option<Function> {
        self.get_token.clone()
    }

    /// Remembers a fresh token.
    pub fn set(&mut self, token: String) {
        self.current = Some(token);
    }

    /// How long until the token should be refreshed, when there is a callback
    /// to refresh it with and the token says when it expires.
    pub fn refresh_in(&self) -> Option<Duration> {
        self.get_token.as_ref()?;
        let expires = expiry(self.current.as_deref()?)?;
        let now = js_sys::Date::now() / 1000.0;
        let ms = ((expires - REFRESH_MARGIN_SECS - now) * 1000.0).max(0.0);
        Some(Duration::from_millis(ms as u64).max(MIN_REFRESH))
    }
}

/// Calls `getToken`, which may return a string or a Promise of one; `None`
/// when it throws, rejects or gives no token.
pub async fn fetch(get_token: Function) -> Option<String> {
    let mut value = get_token.call0(&JsValue::NULL).ok()?;
    if let Some(promise) = value.dyn_ref::<Promise>() {
        value = JsFuture::from(promise.clone()).await.ok()?;
    }
    value.as_string().filter(|token| !token.is_empty())
}

/// The `exp` claim of a JWT, read without verifying it (the hub verifies).
fn expiry(token: &str) -> Option<f64> {
    let payload = token.split('.').nth(1)?;
    let mut base64: String = payload
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while !base64.len().is_multiple_of(4) {
        base64.push('=');
    }
    let json = global::scope().atob(&base64).ok()?;
    let claims = js_sys::JSON::parse(&json).ok()?;
    serde_wasm_bindgen::from_value::<Claims>(claims).ok()?.exp
}

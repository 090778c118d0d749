//! Tokens for hubs with auth on: a fixed token, or a `getToken` callback that
//! is asked before every connection attempt and shortly before the current
//! token expires. A fresh token is sent on the open socket with an `auth`
//! frame, so the connection (and every subscription) stays up across refreshes.

use js_sys::{Function, Promise};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::js;

/// Ask for a new token this long before the current one expires.
const REFRESH_MARGIN_SECS: f64 = 30.0;
/// Never ask more often than this (e.g. while `getToken` keeps failing).
const MIN_REFRESH_MS: f64 = 5_000.0;

/// Where the connection's token comes from.
pub struct Tokens {
    current: Option<String>,
    fetch: Option<Function>,
}

impl Tokens {
    /// A fixed `token`, a `getToken` callback, both (the token is used first), or neither.
    pub fn new(token: Option<String>, fetch: Option<Function>) -> Self {
        Self {
            current: token,
            fetch,
        }
    }

    /// `base` with the current token as `access_token`.
    pub fn url(&self, base: &str) -> String {
        match &self.current {
            Some(token) => {
                let separator = if base.contains('?') { "&" } else { "?" };
                format!(
                    "{base}{separator}access_token={}",
                    js::encode_uri_component(token)
                )
            }
            None => base.to_owned(),
        }
    }

    /// The `getToken` callback, if any.
    pub fn fetcher(&self) -> Option<Function> {
        self.fetch.clone()
    }

    /// Remembers a fresh token.
    pub fn set(&mut self, token: String) {
        self.current = Some(token);
    }

    /// Milliseconds until the token should be refreshed, when there is a
    /// callback to refresh it with and the token says when it expires.
    pub fn refresh_in_ms(&self) -> Option<f64> {
        self.fetch.as_ref()?;
        let expires = expiry(self.current.as_deref()?)?;
        let now = js_sys::Date::now() / 1000.0;
        Some(((expires - REFRESH_MARGIN_SECS - now) * 1000.0).max(MIN_REFRESH_MS))
    }
}

/// Calls `getToken`, which may return a string or a Promise of one.
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
    let claims = js::parse_json(&js::atob(&base64).ok()?.into()).ok()?;
    js::get(&claims, "exp").as_f64()
}

//! Tokens for hubs with auth on: a fixed token, or a `getToken` callback that
//! is asked before every connection attempt and shortly before the current
//! token expires. A fresh token is sent on the open socket with an `auth` op,
//! so the connection (and every subscription) stays up across refreshes.

use std::cell::RefCell;
use std::time::Duration;

use js_sys::{Function, Promise, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::ws::{self, SharedRef};

/// Ask for a new token this long before the current one expires.
const REFRESH_MARGIN_SECS: f64 = 30.0;
/// Wait this long before asking again when `getToken` failed.
const RETRY_SECS: f64 = 5.0;

/// Where the connection's token comes from.
pub struct Tokens {
    current: RefCell<Option<String>>,
    fetch: Option<Function>,
}

impl Tokens {
    /// A fixed `token`, a `getToken` callback, both (the token is used first), or neither.
    pub fn new(token: Option<String>, fetch: Option<Function>) -> Self {
        Self {
            current: RefCell::new(token),
            fetch,
        }
    }

    /// The URL to connect to: `base` with the token as `access_token`, fetching
    /// a fresh one first when there is a callback (the old one may have expired).
    pub async fn url(&self, base: &str) -> String {
        if self.fetch.is_some() {
            self.refresh().await;
        }
        match self.current.borrow().as_deref() {
            Some(token) => {
                let separator = if base.contains('?') { '&' } else { '?' };
                let token = String::from(js_sys::encode_uri_component(token));
                format!("{base}{separator}access_token={token}")
            }
            None => base.to_owned(),
        }
    }

    /// While the socket is open: before the token expires, get a new one and
    /// send it with `auth`. Never completes; without a callback or an `exp`
    /// claim there is nothing to do.
    pub async fn keep_fresh(&self, shared: &SharedRef) {
        loop {
            let expires = self.current.borrow().as_deref().and_then(expiry);
            let (Some(expires), Some(_)) = (expires, &self.fetch) else {
                return std::future::pending().await;
            };
            let wait = (expires - REFRESH_MARGIN_SECS - now_secs()).max(1.0);
            gloo_timers::future::sleep(Duration::from_secs_f64(wait)).await;
            match self.refresh().await {
                Some(token) => ws::send_auth(shared, token),
                None => gloo_timers::future::sleep(Duration::from_secs_f64(RETRY_SECS)).await,
            }
        }
    }

    /// Calls `getToken` (which may return a string or a Promise of one).
    async fn refresh(&self) -> Option<String> {
        let fetch = self.fetch.as_ref()?;
        let mut value = fetch.call0(&JsValue::NULL).ok()?;
        if let Some(promise) = value.dyn_ref::<Promise>() {
            value = JsFuture::from(promise.clone()).await.ok()?;
        }
        let token = value.as_string().filter(|t| !t.is_empty())?;
        *self.current.borrow_mut() = Some(token.clone());
        Some(token)
    }
}

fn now_secs() -> f64 {
    js_sys::Date::now() / 1000.0
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
    let atob: Function = Reflect::get(&js_sys::global(), &"atob".into())
        .ok()?
        .dyn_into()
        .ok()?;
    let json = atob
        .call1(&JsValue::NULL, &base64.into())
        .ok()?
        .as_string()?;
    let claims = js_sys::JSON::parse(&json).ok()?;
    Reflect::get(&claims, &"exp".into()).ok()?.as_f64()
}

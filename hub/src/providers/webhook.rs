//! HTTP webhooks: every accepted event is POSTed, signed, to each configured URL.
//!
//! Each endpoint is a [`Destination`] with a [`Worker`] of its own (queue,
//! task, counters), which delivers one event at a time in queue order: that
//! keeps seq order per execution, and a slow endpoint only ever delays
//! itself. This file says how one attempt is made and what its answer means:
//! a delivery is retried on connection errors, timeouts, 408, 429 and 5xx
//! with exponential backoff and jitter (429 and 503 honour `Retry-After`), at
//! most `max_attempts` times; any other answer outside 2xx is final. Requests
//! carry:
//!
//! - `X-Exechub-Timestamp`: Unix seconds when the attempt was signed;
//! - `X-Exechub-Signature`: `v1=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>`
//!   (only with a secret);
//! - `X-Exechub-Idempotency-Id`: `<execution_id>:<epoch>:<seq>`, identical on every
//!   retry, so a receiver can drop what it already processed;
//! - `X-Exechub-Attempt`: 1 for the first attempt, 2 for the first retry….
//!
//! Many services put the secret in the URL's path (Slack's
//! `/services/T…/B…/<secret>`), so a URL is only ever shown as
//! [`display_url`]: in `/health`, in logs and in error messages.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{Client, StatusCode, Url};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::macros::format_description;
use tokio_util::sync::CancellationToken;

use super::queue::QueueLimits;
use super::worker::{Attempt, Destination, Retries, Worker};
use super::{Delivery, Provider, ProviderError, origin};
use crate::clock::unix_now;
use crate::retry::Backoff;
use crate::secret::Secret;

/// Header carrying the Unix time (seconds) the attempt was signed at.
pub const TIMESTAMP_HEADER: &str = "x-exechub-timestamp";
/// Header carrying `v1=<hex signature>`.
pub const SIGNATURE_HEADER: &str = "x-exechub-signature";
/// Header carrying `<execution_id>:<epoch>:<seq>`.
pub const IDEMPOTENCY_HEADER: &str = "x-exechub-idempotency-id";
/// Header carrying the attempt number, from 1.
pub const ATTEMPT_HEADER: &str = "x-exechub-attempt";

/// Retry delays between attempts (before `Retry-After` overrides them).
const BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(200),
    max: Duration::from_secs(30),
};
/// Longest `Retry-After` honoured: a receiver cannot park an endpoint for hours.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Connection set-up gets at most this long, even with a longer request timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Response bytes read (then discarded) so the connection can be reused.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

type HmacSha256 = Hmac<Sha256>;

/// Settings shared by every webhook endpoint.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Endpoints; each gets every event.
    pub urls: Vec<Url>,
    /// Signing secret; without one, requests are sent unsigned.
    pub secret: Option<Secret>,
    /// Time limit of one attempt (connect, send, answer).
    pub timeout: Duration,
    /// Attempts per event, at least 1.
    pub max_attempts: u32,
}

/// Parses a webhook URL for the command line: absolute `http` or `https`.
///
/// # Errors
/// A message for clap when `raw` is not such a URL.
pub fn parse_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw.trim()).map_err(|e| format!("invalid URL: {e}"))?;
    match url.scheme() {
        "http" | "https" if url.host_str().is_some() => Ok(url),
        _ => Err("webhook URLs must be http:// or https:// with a host".into()),
    }
}

/// How `url` is shown in `/health` and logs: `https://hooks.slack.com/…#3fa9c21b`.
/// Only the scheme, host and port are kept; the 8 hex digits (of a SHA-256 of
/// the whole URL) tell endpoints on one host apart without revealing the path.
pub fn display_url(url: &Url) -> String {
    let digest = Sha256::digest(url.as_str().as_bytes());
    let mut shown = format!("{}/…#", origin(url));
    for byte in &digest[..4] {
        let _ = write!(shown, "{byte:02x}");
    }
    shown
}

/// Starts one worker per configured URL.
pub(crate) fn start(
    config: &WebhookConfig,
    limits: QueueLimits,
    shutdown: &CancellationToken,
) -> Result<Vec<Arc<dyn Provider>>, ProviderError> {
    if config.urls.is_empty() {
        return Ok(Vec::new());
    }
    // Redirects are not followed: a signed payload goes only where configured.
    let client = Client::builder()
        .timeout(config.timeout)
        .connect_timeout(config.timeout.min(CONNECT_TIMEOUT))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("exechub/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(ProviderError::HttpClient)?;
    let mac = config
        .secret
        .as_ref()
        .and_then(|secret| keyed_mac(secret.expose()));
    if mac.is_none() {
        tracing::warn!("webhooks are sent unsigned: set --webhook-secret");
    }
    let retries = Retries {
        attempts: config.max_attempts,
        backoff: BACKOFF,
    };
    let endpoints = config.urls.iter().map(|url| {
        let endpoint = Endpoint {
            url: url.clone(),
            client: client.clone(),
            mac: mac.clone(),
        };
        let name = display_url(url);
        tracing::info!(url = %name, "webhook provider started");
        Worker::start(name, endpoint, retries, limits, shutdown) as Arc<dyn Provider>
    });
    Ok(endpoints.collect())
}

/// One webhook URL, and how to sign and send to it.
struct Endpoint {
    url: Url,
    /// Shared by all endpoints: one connection pool, reused across requests.
    client: Client,
    /// Keyed once; cloned per signature.
    mac: Option<HmacSha256>,
}

impl Destination for Endpoint {
    const KIND: &'static str = "webhook";

    /// One signed POST, its answer classified.
    async fn attempt(&self, delivery: &Delivery, attempt: u32) -> Attempt {
        let request = self
            .client
            .post(self.url.clone())
            .headers(self.headers(delivery, attempt))
            .body(delivery.json.clone());
        match request.send().await {
            Ok(response) => {
                let outcome = classify(response.status(), response.headers());
                drain(response).await;
                outcome
            }
            // reqwest's message names the full URL, secret path included.
            Err(error) => Attempt::Retry {
                after: None,
                reason: error_chain(&error.without_url()),
            },
        }
    }
}

impl Endpoint {
    fn headers(&self, delivery: &Delivery, attempt: u32) -> HeaderMap {
        let timestamp = unix_now();
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(TIMESTAMP_HEADER, HeaderValue::from(timestamp));
        headers.insert(ATTEMPT_HEADER, HeaderValue::from(attempt));
        let id = idempotency_header(delivery);
        if let Ok(id) = HeaderValue::from_str(&id) {
            headers.insert(IDEMPOTENCY_HEADER, id);
        }
        if let Some(traceparent) = &delivery.traceparent {
            headers.insert(HeaderName::from_static("traceparent"), traceparent.header());
        }
        if let Some(mac) = &self.mac {
            let signature = format!("v1={}", sign(mac.clone(), timestamp, &delivery.json));
            if let Ok(value) = HeaderValue::from_str(&signature) {
                headers.insert(HeaderName::from_static(SIGNATURE_HEADER), value);
            }
        }
        headers
    }
}

/// Decides whether an answer delivered the event, is worth a retry, or is final.
fn classify(status: StatusCode, headers: &HeaderMap) -> Attempt {
    if status.is_success() {
        return Attempt::Delivered;
    }
    let reason = format!("answered {status}");
    match status {
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => Attempt::Retry {
            after: retry_after(headers, OffsetDateTime::now_utc()),
            reason,
        },
        StatusCode::REQUEST_TIMEOUT => Attempt::Retry {
            after: None,
            reason,
        },
        status if status.is_server_error() => Attempt::Retry {
            after: None,
            reason,
        },
        _ => Attempt::Refused(reason),
    }
}

/// `Retry-After` as delay-seconds or an HTTP date, capped at [`MAX_RETRY_AFTER`].
fn retry_after(headers: &HeaderMap, now: OffsetDateTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let delay = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let format = format_description!(
                "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
            );
            let at = time::PrimitiveDateTime::parse(value, &format)
                .ok()?
                .assume_utc();
            Duration::try_from(at - now).unwrap_or(Duration::ZERO)
        }
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// Reads a little of the answer so the connection goes back to the pool.
async fn drain(mut response: reqwest::Response) {
    let mut read = 0;
    while let Ok(Some(chunk)) = response.chunk().await {
        read += chunk.len();
        if read > MAX_RESPONSE_BYTES {
            return;
        }
    }
}

/// An HMAC keyed with `secret` (HMAC takes keys of any length).
fn keyed_mac(secret: &[u8]) -> Option<HmacSha256> {
    HmacSha256::new_from_slice(secret).ok()
}

/// Lowercase hex of HMAC-SHA256 over `"{timestamp}.{body}"`.
fn sign(mut mac: HmacSha256, timestamp: u64, body: &[u8]) -> String {
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    digest
        .iter()
        .fold(String::with_capacity(64), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

/// `<execution_id>:<epoch>:<seq>` as a header value: bytes outside visible ASCII, and
/// `%`, are percent-encoded (`%XX`), so any execution id fits a header.
fn idempotency_header(delivery: &Delivery) -> String {
    let mut value = String::with_capacity(delivery.execution_id.len() + 12);
    for &byte in delivery.execution_id.as_bytes() {
        if byte.is_ascii_graphic() && byte != b'%' {
            value.push(char::from(byte));
        } else {
            let _ = write!(value, "%{byte:02X}");
        }
    }
    let _ = write!(value, ":{}:{}", delivery.epoch, delivery.seq);
    value
}

/// The error and its causes on one line (reqwest's own message omits the cause).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        let mac = keyed_mac(b"whsec_test").expect("any key length works");
        assert_eq!(
            sign(mac, 1_700_000_000, br#"{"seq":1}"#),
            "926c3c48823e4dc937cdb0992313bcbbc472579d779ab54f0d4e09e4049838aa"
        );
    }

    #[test]
    fn idempotency_header_escapes_what_a_header_cannot_carry() {
        let epoch = crate::event::Epoch::parse("ep1").expect("epoch");
        let plain = Delivery::new(Arc::from("exec-42"), epoch.clone(), 3, Bytes::new());
        assert_eq!(idempotency_header(&plain), "exec-42:ep1:3");
        let odd = Delivery::new(Arc::from("a b%é"), epoch, 9, Bytes::new());
        assert_eq!(idempotency_header(&odd), "a%20b%25%C3%A9:ep1:9");
    }

    #[test]
    fn only_timeouts_throttling_and_server_errors_are_retried() {
        let none = HeaderMap::new();
        let retried = |status: u16| {
            let status = StatusCode::from_u16(status).expect("valid status");
            matches!(classify(status, &none), Attempt::Retry { .. })
        };
        assert!(matches!(
            classify(StatusCode::NO_CONTENT, &none),
            Attempt::Delivered
        ));
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(retried(status), "{status} should be retried");
        }
        for status in [301, 400, 401, 403, 404, 410, 422] {
            assert!(!retried(status), "{status} should not be retried");
        }
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date_and_is_capped() {
        let now = OffsetDateTime::from_unix_timestamp(784_111_777).expect("valid time"); // Sun, 06 Nov 1994 08:49:37 GMT
        let header = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(RETRY_AFTER, HeaderValue::from_static(value));
            retry_after(&headers, now)
        };
        assert_eq!(header("2"), Some(Duration::from_secs(2)));
        assert_eq!(header("86400"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            header("Sun, 06 Nov 1994 08:49:47 GMT"),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            header("Sun, 06 Nov 1994 08:49:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(header("soon"), None);
    }

    #[test]
    fn displayed_urls_keep_the_host_and_a_hash_but_never_the_path() {
        let slack =
            parse_url("https://hooks.slack.com/services/T0/B0/SECRETPATH?x=y").expect("valid URL");
        let shown = display_url(&slack);
        assert!(shown.starts_with("https://hooks.slack.com/…#"), "{shown}");
        let hash = shown.rsplit('#').next().unwrap_or_default();
        assert_eq!(hash.len(), 8);
        assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
        for secret in ["services", "SECRETPATH", "x=y"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        let other = parse_url("https://hooks.slack.com/services/T0/B0/OTHER").expect("valid URL");
        assert_ne!(display_url(&other), shown, "endpoints stay distinguishable");
        let local = parse_url("http://user:pw@127.0.0.1:9000/in").expect("valid URL");
        assert!(display_url(&local).starts_with("http://127.0.0.1:9000/…#"));
    }

    #[tokio::test]
    async fn failed_attempts_do_not_name_the_url() {
        let endpoint = Endpoint {
            url: parse_url("http://127.0.0.1:1/hooks/SECRETPATH").expect("valid URL"),
            client: Client::new(),
            mac: None,
        };
        let epoch = crate::event::Epoch::parse("ep1").expect("epoch");
        let delivery = Delivery::new(Arc::from("exec"), epoch, 1, Bytes::new());
        match endpoint.attempt(&delivery, 1).await {
            Attempt::Retry { reason, .. } => assert!(!reason.contains("SECRETPATH"), "{reason}"),
            other => panic!("nothing listens on port 1, yet {other:?}"),
        }
    }

    #[test]
    fn webhook_urls_must_be_http_with_a_host() {
        assert!(parse_url("https://hooks.example.com/in").is_ok());
        assert!(parse_url("http://127.0.0.1:9/x").is_ok());
        assert!(parse_url("ftp://example.com/").is_err());
        assert!(parse_url("not a url").is_err());
    }
}

//! NATS: every accepted event is published to `<prefix>.<execution_id>.events`.
//!
//! The payload is the event JSON; the header `Nats-Msg-Id` carries
//! `<execution_id>:<epoch>:<seq>` (JetStream drops duplicates by it). An execution id
//! is one subject token, so characters a token cannot hold are escaped, see
//! [`subject_token`]. The client connects in the background and reconnects by
//! itself; while it is disconnected the provider's [`Worker`] waits and events
//! stay in its bounded queue (oldest dropped and counted when it is full).
//! Core NATS is at-most-once. With `jetstream`, each event is published to
//! JetStream and the worker waits for the server's acknowledgement, retrying
//! (same message id) with backoff a bounded number of times.
//!
//! The server URL may carry `user:password@` or a token: logs and `/health`
//! show it only as [`display_servers`].

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event, HeaderMap, jetstream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::queue::QueueLimits;
use super::worker::{Attempt, Destination, Retries, Worker};
use super::{Delivery, Provider, ProviderError, origin};
use crate::retry::Backoff;

/// Delay between reconnection attempts: short, because events wait meanwhile.
const RECONNECT: Backoff = Backoff {
    first: Duration::from_millis(100),
    max: Duration::from_secs(2),
};
/// Delay between JetStream publish attempts.
const BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(200),
    max: Duration::from_secs(5),
};
/// JetStream publish attempts per event.
const JETSTREAM_ATTEMPTS: u32 = 5;
/// The header JetStream deduplicates by.
const MESSAGE_ID_HEADER: &str = "Nats-Msg-Id";

/// Where and how to publish.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// Server URL, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// First subject token(s), e.g. `executions`.
    pub subject_prefix: String,
    /// Publish through JetStream and wait for each acknowledgement.
    pub jetstream: bool,
}

/// Checks a subject prefix for the command line: dot-separated, non-empty
/// tokens without wildcards (`*`, `>`) or whitespace.
///
/// # Errors
/// A message for clap when `raw` is not such a prefix.
pub fn parse_subject_prefix(raw: &str) -> Result<String, String> {
    let valid_token = |token: &str| {
        !token.is_empty()
            && !token
                .chars()
                .any(|c| c == '*' || c == '>' || c.is_whitespace() || c.is_control())
    };
    if raw.split('.').all(valid_token) {
        Ok(raw.to_owned())
    } else {
        Err("a subject prefix is dot-separated non-empty tokens without '*', '>' or spaces".into())
    }
}

/// `execution_id` as one subject token: ASCII letters, digits and `-_:~=@+`
/// are kept; every other byte of its UTF-8 (including `.`, `*`, `>`, spaces
/// and `%`) is written `%XX` (uppercase hex). Reversed by [`decode_token`].
pub fn subject_token(execution_id: &str) -> Cow<'_, str> {
    let kept = |b: u8| b.is_ascii_alphanumeric() || b"-_:~=@+".contains(&b);
    if execution_id.bytes().all(kept) {
        return Cow::Borrowed(execution_id);
    }
    let mut token = String::with_capacity(execution_id.len() + 8);
    for byte in execution_id.bytes() {
        if kept(byte) {
            token.push(char::from(byte));
        } else {
            let _ = write!(token, "%{byte:02X}");
        }
    }
    Cow::Owned(token)
}

/// The execution id a [`subject_token`] came from; `None` if it is not one.
pub fn decode_token(token: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(token.len());
    let mut rest = token.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = tail.get(2..)?;
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

/// How the server list `urls` (comma-separated, as the client takes it) is
/// shown in logs and `/health`: each as `scheme://host[:port]`, without user,
/// password, path or query; `nats` for one that is not a URL.
pub fn display_servers(urls: &str) -> String {
    let shown: Vec<String> = urls
        .split(',')
        .map(|raw| {
            let raw = raw.trim();
            // The client reads a URL without a scheme as `nats://…`.
            let full: Cow<'_, str> = if raw.contains("://") {
                Cow::Borrowed(raw)
            } else {
                Cow::Owned(format!("nats://{raw}"))
            };
            reqwest::Url::parse(&full)
                .ok()
                .filter(|url| url.host_str().is_some_and(|host| !host.is_empty()))
                .map_or_else(|| "nats".to_owned(), |url| origin(&url))
        })
        .collect();
    shown.join(",")
}

/// The subject events of `execution_id` are published to.
pub fn subject(prefix: &str, execution_id: &str) -> String {
    format!("{prefix}.{}.events", subject_token(execution_id))
}

/// Connects (in the background) and starts the worker.
pub(crate) async fn start(
    config: &NatsConfig,
    limits: QueueLimits,
    shutdown: &CancellationToken,
) -> Result<Arc<dyn Provider>, ProviderError> {
    let name = display_servers(&config.url);
    let (state, connected) = watch::channel(false);
    let log_name = name.clone();
    let options = ConnectOptions::new()
        .name("exechub")
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            RECONNECT.delay(u32::try_from(attempts).unwrap_or(u32::MAX))
        })
        .event_callback(move |event| {
            on_event(&state, &log_name, &event);
            async {}
        });
    let client = options
        .connect(config.url.as_str())
        .await
        .map_err(ProviderError::Nats)?;
    let nats = Nats {
        jetstream: config.jetstream.then(|| jetstream::new(client.clone())),
        client,
        prefix: config.subject_prefix.clone(),
        connected,
    };
    // Core NATS is at-most-once: one attempt. JetStream acknowledges, so retry.
    let attempts = if config.jetstream {
        JETSTREAM_ATTEMPTS
    } else {
        1
    };
    let retries = Retries {
        attempts,
        backoff: BACKOFF,
    };
    tracing::info!(server = %name, jetstream = config.jetstream, "NATS provider started");
    Ok(Worker::start(name, nats, retries, limits, shutdown))
}

/// Tracks the connection for the worker and `/health`, and logs changes.
fn on_event(state: &watch::Sender<bool>, name: &str, event: &Event) {
    match event {
        Event::Connected => {
            tracing::info!(server = %name, "connected to NATS");
            state.send_replace(true);
        }
        Event::Disconnected | Event::Closed => {
            tracing::warn!(server = %name, "disconnected from NATS; reconnecting");
            state.send_replace(false);
        }
        other => tracing::warn!(server = %name, event = %other, "NATS client event"),
    }
}

/// The NATS destination: one client, and where to publish.
struct Nats {
    client: Client,
    /// Set when publishing through JetStream.
    jetstream: Option<jetstream::Context>,
    prefix: String,
    /// `true` while the client is connected.
    connected: watch::Receiver<bool>,
}

impl Destination for Nats {
    const KIND: &'static str = "nats";

    /// While disconnected, events wait in the queue, where overflow is counted.
    async fn ready(&self) -> bool {
        self.until_connected().await
    }

    /// Publishes one event; through JetStream, waits for its acknowledgement.
    async fn attempt(&self, delivery: &Delivery, _attempt: u32) -> Attempt {
        let subject = subject(&self.prefix, &delivery.execution_id);
        let mut headers = HeaderMap::new();
        headers.insert(MESSAGE_ID_HEADER, delivery.idempotency_id().as_str());
        if let Some(traceparent) = &delivery.traceparent {
            headers.insert("traceparent", traceparent.as_str());
        }
        let payload = delivery.json.clone();
        let published = match &self.jetstream {
            None => self
                .client
                .publish_with_headers(subject, headers, payload)
                .await
                .map_err(|error| error.to_string()),
            Some(jetstream) => {
                // An outage does not use up attempts: wait for the connection first.
                if !self.until_connected().await {
                    return Attempt::Gone;
                }
                acknowledged(jetstream, subject, headers, payload).await
            }
        };
        match published {
            Ok(()) => Attempt::Delivered,
            Err(reason) => Attempt::Retry {
                after: None,
                reason,
            },
        }
    }

    fn reachable(&self) -> bool {
        *self.connected.borrow()
    }
}

impl Nats {
    /// Waits until the client is connected; `false` when the client is gone
    /// for good.
    async fn until_connected(&self) -> bool {
        let mut connected = self.connected.clone();
        connected.wait_for(|up| *up).await.is_ok()
    }
}

/// Publishes to JetStream and waits for the server's acknowledgement.
async fn acknowledged(
    jetstream: &jetstream::Context,
    subject: String,
    headers: HeaderMap,
    payload: bytes::Bytes,
) -> Result<(), String> {
    let ack = jetstream
        .publish_with_headers(subject, headers, payload)
        .await
        .map_err(|error| error.to_string())?;
    ack.await.map(drop).map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ids_are_their_own_token() {
        assert_eq!(
            subject("executions", "exec-42"),
            "executions.exec-42.events"
        );
        assert!(matches!(subject_token("run_7:a~b=c@d+e"), Cow::Borrowed(_)));
    }

    #[test]
    fn ids_with_subject_syntax_are_escaped_reversibly() {
        for id in ["build.42", "a b*c>d", "50%", "été", "x.%2E"] {
            let token = subject_token(id);
            assert!(
                !token.contains(['.', '*', '>', ' ']),
                "{id} gave token {token}"
            );
            assert_eq!(decode_token(&token).as_deref(), Some(id));
        }
        assert_eq!(subject_token("build.42 x"), "build%2E42%20x");
        assert_eq!(decode_token("bad%4"), None);
    }

    #[test]
    fn displayed_servers_have_no_credentials_path_or_query() {
        assert_eq!(
            display_servers("nats://127.0.0.1:4222"),
            "nats://127.0.0.1:4222"
        );
        assert_eq!(
            display_servers("tls://user:s3cret@nats.example.com:4443/x?token=t0k"),
            "tls://nats.example.com:4443"
        );
        assert_eq!(
            display_servers("user:s3cret@a.example.com:4222, nats://tok3n@b.example.com"),
            "nats://a.example.com:4222,nats://b.example.com"
        );
        assert_eq!(display_servers("::not a url::"), "nats");
    }

    #[test]
    fn subject_prefix_must_be_literal_tokens() {
        assert!(parse_subject_prefix("executions").is_ok());
        assert!(parse_subject_prefix("acme.prod.executions").is_ok());
        for bad in ["", "a..b", ".a", "a.", "a.*", "a.>", "a b"] {
            assert!(parse_subject_prefix(bad).is_err(), "{bad:?} accepted");
        }
    }
}

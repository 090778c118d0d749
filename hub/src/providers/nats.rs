//! NATS: every accepted event is published to `<prefix>.<execution_id>.events`.
//!
//! The payload is the event JSON; the header `Nats-Msg-Id` carries
//! `<execution_id>:<epoch>:<seq>` (JetStream drops duplicates by it). An execution id
//! is one subject token, so characters a token cannot hold are escaped, see
//! [`subject_token`]. The client connects in the background and reconnects by
//! itself; while it is disconnected the worker waits and events stay in the
//! provider's bounded [`Outbox`] (oldest dropped and counted when it is full).
//! Core NATS is at-most-once. With `jetstream`, each event is published to
//! JetStream and the worker waits for the server's acknowledgement, retrying
//! (same message id) with backoff a bounded number of times.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event, HeaderMap, jetstream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::queue::{Outbox, OutboxLimits};
use super::{Counters, Delivery, Provider, ProviderError, ProviderHealth, pause, redact};
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

/// The subject events of `execution_id` are published to.
pub fn subject(prefix: &str, execution_id: &str) -> String {
    format!("{prefix}.{}.events", subject_token(execution_id))
}

/// Connects (in the background) and starts the worker.
pub(crate) async fn start(
    config: &NatsConfig,
    limits: OutboxLimits,
    shutdown: &CancellationToken,
) -> Result<Arc<dyn Provider>, ProviderError> {
    let name = reqwest::Url::parse(&config.url).map_or_else(|_| "nats".to_owned(), |u| redact(&u));
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
    let provider = Arc::new(Nats {
        name,
        jetstream: config.jetstream.then(|| jetstream::new(client.clone())),
        client,
        prefix: config.subject_prefix.clone(),
        connected,
        last_ok: AtomicBool::new(true),
        outbox: Outbox::new("nats".into(), limits),
        counters: Counters::default(),
    });
    tracing::info!(server = %provider.name, jetstream = config.jetstream, "NATS provider started");
    tokio::spawn(Arc::clone(&provider).run(shutdown.clone()));
    Ok(provider)
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

/// The NATS provider: one client, one queue, one worker.
struct Nats {
    /// The server URL without credentials.
    name: String,
    client: Client,
    /// Set when publishing through JetStream.
    jetstream: Option<jetstream::Context>,
    prefix: String,
    /// `true` while the client is connected.
    connected: watch::Receiver<bool>,
    /// Whether the latest publish succeeded.
    last_ok: AtomicBool,
    outbox: Outbox,
    counters: Counters,
}

impl Provider for Nats {
    fn offer(&self, delivery: &Delivery) {
        self.outbox.push(delivery.clone(), &self.counters);
    }

    fn health(&self) -> ProviderHealth {
        ProviderHealth {
            name: self.name.clone(),
            kind: "nats",
            ok: *self.connected.borrow() && self.last_ok.load(Ordering::Relaxed),
            counters: self.counters.snapshot(),
            queue_depth: self.outbox.len(),
        }
    }
}

impl Nats {
    /// Publishes queued events in order while connected, until `shutdown`.
    async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            // While disconnected, events wait in the outbox, where overflow is counted.
            if !self.until_connected(&shutdown).await {
                return;
            }
            let delivery = tokio::select! {
                () = shutdown.cancelled() => return,
                delivery = self.outbox.pop() => delivery,
            };
            let sent = tokio::select! {
                () = shutdown.cancelled() => return,
                sent = self.send(&delivery, &shutdown) => sent,
            };
            if !sent {
                return;
            }
        }
    }

    /// Waits until the client is connected; `false` on shutdown or when the
    /// client is gone for good.
    async fn until_connected(&self, shutdown: &CancellationToken) -> bool {
        let mut connected = self.connected.clone();
        tokio::select! {
            () = shutdown.cancelled() => false,
            up = connected.wait_for(|up| *up) => up.is_ok(),
        }
    }

    /// Publishes one event; `false` when shut down meanwhile.
    async fn send(&self, delivery: &Delivery, shutdown: &CancellationToken) -> bool {
        let subject = subject(&self.prefix, &delivery.execution_id);
        let mut headers = HeaderMap::new();
        headers.insert(MESSAGE_ID_HEADER, delivery.idempotency_id().as_str());
        let Some(jetstream) = &self.jetstream else {
            let payload = delivery.json.clone();
            match self
                .client
                .publish_with_headers(subject, headers, payload)
                .await
            {
                Ok(()) => self.delivered(),
                Err(error) => self.give_up(delivery, &error),
            }
            return true;
        };
        for attempt in 1..=JETSTREAM_ATTEMPTS {
            // An outage does not use up attempts: wait for the connection first.
            if !self.until_connected(shutdown).await {
                return false;
            }
            let acked = async {
                let ack = jetstream
                    .publish_with_headers(subject.clone(), headers.clone(), delivery.json.clone())
                    .await?;
                ack.await
            };
            match acked.await {
                Ok(_) => {
                    self.delivered();
                    return true;
                }
                Err(error) if attempt == JETSTREAM_ATTEMPTS => self.give_up(delivery, &error),
                Err(error) => {
                    self.last_ok.store(false, Ordering::Relaxed);
                    self.counters.add_retried();
                    tracing::debug!(id = %delivery.idempotency_id(), attempt, %error, "JetStream publish failed; retrying");
                    if !pause(BACKOFF.delay(attempt), shutdown).await {
                        return false;
                    }
                }
            }
        }
        true
    }

    fn delivered(&self) {
        self.last_ok.store(true, Ordering::Relaxed);
        self.counters.add_delivered();
    }

    fn give_up(&self, delivery: &Delivery, error: &dyn std::error::Error) {
        self.last_ok.store(false, Ordering::Relaxed);
        self.counters.add_failed();
        tracing::warn!(id = %delivery.idempotency_id(), %error, "NATS publish failed; event skipped");
    }
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
    fn subject_prefix_must_be_literal_tokens() {
        assert!(parse_subject_prefix("executions").is_ok());
        assert!(parse_subject_prefix("acme.prod.executions").is_ok());
        for bad in ["", "a..b", ".a", "a.", "a.*", "a.>", "a b"] {
            assert!(parse_subject_prefix(bad).is_err(), "{bad:?} accepted");
        }
    }
}

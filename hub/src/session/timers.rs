//! A session's timers: the heartbeat that finds silent peers, and the
//! deadline of its token.

use std::pin::Pin;
use std::time::Duration;

use exechub_protocol::close;
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::Message;

use super::socket::Ending;
use crate::auth::LEEWAY_SECS;
use crate::outbox::Outbox;

/// Pings a connection that has been silent for a while, and gives up on one
/// that stays silent. Any frame from the client counts as a sign of life; the
/// clock is read per frame, the timer only re-armed when it fires.
pub(super) struct Heartbeat {
    interval: Duration,
    timeout: Duration,
    last_seen: Instant,
    ping_sent: Option<Instant>,
    timer: Pin<Box<Sleep>>,
}

impl Heartbeat {
    pub(super) fn new(interval: Duration, timeout: Duration) -> Self {
        let now = Instant::now();
        Self {
            interval,
            timeout,
            last_seen: now,
            ping_sent: None,
            timer: Box::pin(tokio::time::sleep_until(now + interval)),
        }
    }

    pub(super) fn seen(&mut self) {
        self.last_seen = Instant::now();
    }

    pub(super) async fn due(&mut self) {
        self.timer.as_mut().await;
    }

    /// The timer fired: ping, re-arm, or give up.
    pub(super) fn beat(&mut self, outbox: &Outbox<Message>) -> Result<(), Ending> {
        let now = Instant::now();
        if let Some(sent) = self.ping_sent
            && self.last_seen < sent
        {
            return Err(Ending::Close(close::PING_TIMEOUT, "no answer to ping"));
        }
        if now >= self.last_seen + self.interval {
            if outbox
                .push_reply(Message::Ping(bytes::Bytes::new()))
                .is_err()
            {
                return Err(Ending::Close(close::SLOW_CONSUMER, "slow consumer"));
            }
            self.ping_sent = Some(now);
            self.timer.as_mut().reset(now + self.timeout);
        } else {
            self.ping_sent = None;
            self.timer.as_mut().reset(self.last_seen + self.interval);
        }
        Ok(())
    }
}

/// A timer for a token expiring at `expires_at`; none when it never expires.
pub(crate) fn expiry_timer(expires_at: u64) -> Option<Pin<Box<Sleep>>> {
    (expires_at != u64::MAX).then(|| Box::pin(tokio::time::sleep_until(expiry_instant(expires_at))))
}

/// Completes when `timer` fires; never without one.
pub(crate) async fn until(timer: &mut Option<Pin<Box<Sleep>>>) {
    match timer {
        Some(timer) => timer.as_mut().await,
        None => std::future::pending().await,
    }
}

/// When a token expiring at `expires_at` (Unix seconds) stops being valid:
/// the moment the verifier starts refusing it (whole seconds past
/// `expires_at` + leeway, as jsonwebtoken compares), so an open connection
/// ends exactly when a reconnect with the same token would be refused — no
/// window in which a client is closed and let back in. Far in the future
/// when auth is off.
pub fn expiry_instant(expires_at: u64) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 86_400);
    if expires_at == u64::MAX {
        return Instant::now() + FAR;
    }
    let refused_from = expires_at.saturating_add(LEEWAY_SECS).saturating_add(1);
    let deadline = std::time::UNIX_EPOCH + Duration::from_secs(refused_from.min(u64::MAX / 2));
    let left = deadline
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    Instant::now() + left.min(FAR)
}

//! Per-client abuse limits: a publish rate (token bucket) and subscriptions
//! per token.
//!
//! A client is its token when auth is on — keyed by a hash of the token, so
//! what the hub keeps never grows with what a client sends — and otherwise
//! its connection. Checks run before any store access; refusals are counted
//! (`/health`). Memory is bounded: a bucket that has refilled is the same as
//! no bucket, and such buckets are dropped whenever the table grows large.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// Buckets kept before full ones are swept.
const SWEEP_ABOVE: usize = 65_536;

/// Who a limit applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(u64);

impl ClientKey {
    /// The client holding `token` (keyed by a keyed hash of it).
    pub fn token(token: &str) -> Self {
        static KEYS: std::sync::OnceLock<RandomState> = std::sync::OnceLock::new();
        Self(KEYS.get_or_init(RandomState::new).hash_one(token))
    }

    /// One connection of its own (auth off): a fresh key.
    pub fn connection() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed) | 1 << 63)
    }
}

/// A publish refused by the rate limit.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("publish rate limit reached; retry after {retry_after:?}")]
pub struct RateLimited {
    /// When enough budget will have come back.
    pub retry_after: Duration,
}

/// Events per second per client, with a burst allowance.
pub struct PublishLimiter {
    /// Events per second; 0 disables the limit.
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<ClientKey, Bucket>>,
    refused: AtomicU64,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl PublishLimiter {
    /// `rate` events per second with bursts of `burst`; `rate` 0 = unlimited.
    pub fn new(rate: u64, burst: u64) -> Self {
        Self {
            rate: rate as f64,
            burst: burst.max(1) as f64,
            buckets: Mutex::default(),
            refused: AtomicU64::new(0),
        }
    }

    /// Takes `events` from `client`'s budget.
    ///
    /// # Errors
    /// [`RateLimited`] (nothing taken) when the budget does not cover them.
    pub fn check(&self, client: ClientKey, events: u64) -> Result<(), RateLimited> {
        if self.rate == 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let cost = events as f64;
        let mut buckets = self.lock();
        if buckets.len() > SWEEP_ABOVE {
            self.sweep(&mut buckets, now);
        }
        let bucket = buckets.entry(client).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * self.rate;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= cost {
            bucket.tokens -= cost;
            return Ok(());
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        // A request larger than the burst can never pass: say when a full bucket would.
        let missing = cost.min(self.burst) - bucket.tokens;
        let retry_after = Duration::from_secs_f64((missing / self.rate).max(0.001));
        Err(RateLimited { retry_after })
    }

    /// Publishes refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn sweep(&self, buckets: &mut HashMap<ClientKey, Bucket>, now: Instant) {
        let full_after = self.burst / self.rate;
        buckets.retain(|_, bucket| {
            let idle = now.saturating_duration_since(bucket.at).as_secs_f64();
            bucket.tokens + idle * self.rate < self.burst && idle < full_after
        });
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ClientKey, Bucket>> {
        self.buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Subscriptions per token, across connections.
pub struct TokenSubscriptions {
    limit: usize,
    counts: Mutex<HashMap<ClientKey, usize>>,
    refused: AtomicU64,
}

/// Refused: the token holds its maximum of subscriptions.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("this token's subscription limit ({0}) is reached")]
pub struct TokenLimit(pub usize);

impl TokenSubscriptions {
    /// At most `limit` subscriptions per token.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            counts: Mutex::default(),
            refused: AtomicU64::new(0),
        })
    }

    /// Counts one more subscription of `client` until the slot is dropped.
    ///
    /// # Errors
    /// [`TokenLimit`] when the token already holds `limit`.
    pub fn take(self: &Arc<Self>, client: ClientKey) -> Result<TokenSlot, TokenLimit> {
        let mut counts = self.lock();
        let count = counts.entry(client).or_insert(0);
        if *count >= self.limit {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(TokenLimit(self.limit));
        }
        *count += 1;
        Ok(TokenSlot {
            owner: Arc::clone(self),
            client,
        })
    }

    /// Subscriptions refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ClientKey, usize>> {
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One counted subscription; dropping it gives the slot back.
pub struct TokenSlot {
    owner: Arc<TokenSubscriptions>,
    client: ClientKey,
}

impl Drop for TokenSlot {
    fn drop(&mut self) {
        let mut counts = self.owner.lock();
        if let Some(count) = counts.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn buckets_allow_bursts_then_the_rate_and_say_when_to_retry() {
        let limiter = PublishLimiter::new(10, 20);
        let client = ClientKey::token("t");
        assert!(limiter.check(client, 20).is_ok());
        let refused = limiter.check(client, 5).expect_err("empty");
        assert_eq!(refused.retry_after, Duration::from_millis(500));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(limiter.check(client, 5).is_ok());
        assert!(limiter.check(ClientKey::token("other"), 20).is_ok());
        assert_eq!(limiter.refused(), 1);
        assert!(PublishLimiter::new(0, 0).check(client, 1_000_000).is_ok());
    }

    #[test]
    fn token_slots_are_counted_across_connections_and_given_back() {
        let counts = TokenSubscriptions::new(2);
        let client = ClientKey::token("t");
        let a = counts.take(client).expect("first");
        let _b = counts.take(client).expect("second");
        assert!(counts.take(client).is_err());
        assert!(counts.take(ClientKey::connection()).is_ok());
        drop(a);
        assert!(counts.take(client).is_ok());
    }
}

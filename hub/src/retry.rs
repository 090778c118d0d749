//! Retry delays: one exponential-backoff-with-jitter policy for everything
//! that retries (providers, the Redis pub/sub reconnect, history reads).
//!
//! Jitter spreads the retries of many hubs (or many endpoints) that failed at
//! the same moment, so a recovering receiver is not hit by all of them at once.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

/// Exponential backoff: `first`, doubling per attempt, capped at `max`, each
/// delay drawn uniformly from its upper half ("equal jitter").
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Delay before the second attempt (before jitter).
    pub first: Duration,
    /// Largest delay (before jitter).
    pub max: Duration,
}

impl Backoff {
    /// For a store that is briefly unavailable (Redis restarting): 0.1 s up to 2 s.
    pub const STORE: Self = Self {
        first: Duration::from_millis(100),
        max: Duration::from_secs(2),
    };

    /// A counter of consecutive failures under this policy.
    pub fn attempts(self) -> Attempts {
        Attempts {
            policy: self,
            failed: 0,
        }
    }

    /// The delay after failed attempt number `attempt` (1 = the first attempt).
    pub fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(30);
        let base = self
            .first
            .saturating_mul(1 << doublings)
            .min(self.max.max(self.first));
        let half = base / 2;
        half + half.mul_f64(random_fraction())
    }
}

/// Consecutive failures of one operation, and the delay each one earns.
#[derive(Debug, Clone, Copy)]
pub struct Attempts {
    policy: Backoff,
    failed: u32,
}

impl Attempts {
    /// Counts one more failure and returns how long to wait before retrying.
    pub fn next_delay(&mut self) -> Duration {
        self.failed = self.failed.saturating_add(1);
        self.policy.delay(self.failed)
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.failed = 0;
    }
}

/// A number in `[0, 1)`. Not cryptographic: only spreads retries. The standard
/// library's randomly keyed hasher saves a dependency on a random number crate.
fn random_fraction() -> f64 {
    let bits = RandomState::new().hash_one(0_u8) >> 11;
    // 53 significant bits: exactly representable in an f64.
    bits as f64 / (1_u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_jitter_and_stop_at_the_cap() {
        let backoff = Backoff {
            first: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for _ in 0..50 {
            let first = backoff.delay(1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = backoff.delay(3);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            let late = backoff.delay(40);
            assert!(late >= Duration::from_millis(500) && late <= Duration::from_secs(1));
        }
    }

    #[test]
    fn jitter_varies() {
        let draws: std::collections::HashSet<u64> =
            (0..20).map(|_| random_fraction().to_bits()).collect();
        assert!(draws.len() > 10, "{draws:?}");
    }
}

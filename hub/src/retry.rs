//! Retry delays for everything in the hub that retries (providers, the Redis
//! pub/sub reconnect, history reads): the protocol's one backoff policy,
//! [`exechub_protocol::backoff`] (exponential, equal jitter), which the
//! browser client follows too, fed with the hub's own random fractions.
//!
//! Jitter spreads the retries of many hubs (or many endpoints) that failed at
//! the same moment, so a recovering receiver is not hit by all of them at once.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use exechub_protocol::backoff;

/// Exponential backoff: a ceiling of `first`, doubling per attempt, capped at
/// `max`; each delay drawn uniformly from the ceiling's upper half ("equal
/// jitter"). The hub's handle on [`backoff::Backoff`]: the same policy, with
/// its randomness supplied here.
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
        Attempts(self.policy().attempts())
    }

    /// The delay after failed attempt number `attempt` (1 = the first attempt).
    pub fn delay(&self, attempt: u32) -> Duration {
        self.policy().delay(attempt, random_fraction())
    }

    fn policy(self) -> backoff::Backoff {
        backoff::Backoff {
            first: self.first,
            max: self.max,
        }
    }
}

/// Consecutive failures of one operation, and the delay each one earns.
#[derive(Debug, Clone, Copy)]
pub struct Attempts(backoff::Attempts);

impl Attempts {
    /// Counts one more failure and returns how long to wait before retrying.
    pub fn next_delay(&mut self) -> Duration {
        self.0.next_delay(random_fraction())
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.0.reset();
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
    fn attempts_follow_the_policy_and_reset() {
        let mut attempts = Backoff::STORE.attempts();
        assert!(attempts.next_delay() <= Duration::from_millis(100));
        assert!(attempts.next_delay() >= Duration::from_millis(100));
        attempts.reset();
        assert!(attempts.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn jitter_varies() {
        let draws: std::collections::HashSet<u64> =
            (0..20).map(|_| random_fraction().to_bits()).collect();
        assert!(draws.len() > 10, "{draws:?}");
    }
}

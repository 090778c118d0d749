//! Reconnect and retry delays: the one exponential-backoff policy of exechub.
//!
//! It sits with the wire types because it is part of what a client is
//! expected to do, not a detail of one program: a client whose socket drops
//! (close codes 4000–4499, a restart, a lost network) waits like this before
//! reconnecting, so that the thousands of clients a restarted hub had do not
//! all come back in the same instant. The hub follows the same rule when it
//! retries a provider, a history read or its Redis pub/sub and NATS
//! connections, and the browser client (`exechub-client`) when it reconnects
//! its WebSocket.
//!
//! The rule: after failed attempt `n` (from 1), the *ceiling* is `first`
//! doubled `n - 1` times, at most `max`; the delay is drawn uniformly from the
//! upper half of the ceiling ("equal jitter"), `ceiling/2 + random × ceiling/2`.
//! Equal rather than full jitter keeps a floor under every delay, so a retry
//! never follows its failure at once, while still spreading the retries.
//!
//! The types are pure: the caller passes the random fraction, so this compiles
//! for `wasm32-unknown-unknown` without a randomness source and tests can pin
//! every delay.

use std::time::Duration;

/// Exponential backoff with equal jitter (see the [module](self) docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the delay after the first failed attempt.
    pub first: Duration,
    /// Largest ceiling (a `max` below `first` counts as `first`).
    pub max: Duration,
}

impl Backoff {
    /// The ceiling after failed attempt number `attempt` (1 = the first).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(30);
        self.first
            .saturating_mul(1 << doublings)
            .min(self.max.max(self.first))
    }

    /// The delay after failed attempt number `attempt` (1 = the first), given
    /// `random`, uniform in `[0, 1)` (values outside are clamped).
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let half = self.ceiling(attempt) / 2;
        // Whole milliseconds: plenty for a retry delay, and no float
        // `Duration` conversions (with their panics) in the browser download.
        let spread = half.as_millis() as f64 * random.clamp(0.0, 1.0);
        half.saturating_add(Duration::from_millis(spread as u64))
    }

    /// A counter of consecutive failures under this policy.
    pub fn attempts(self) -> Attempts {
        Attempts {
            policy: self,
            failed: 0,
        }
    }
}

/// Consecutive failures of one operation, and the delay each one earns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempts {
    policy: Backoff,
    failed: u32,
}

impl Attempts {
    /// Counts one more failure and returns how long to wait before the next
    /// attempt; `random` as for [`Backoff::delay`].
    pub fn next_delay(&mut self, random: f64) -> Duration {
        self.failed = self.failed.saturating_add(1);
        self.policy.delay(self.failed, random)
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.failed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn policy() -> Backoff {
        Backoff {
            first: 100 * MS,
            max: 2000 * MS,
        }
    }

    #[test]
    fn ceilings_double_from_first_and_stop_at_max() {
        let ceilings: Vec<u128> = (1..=7).map(|n| policy().ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(policy().ceiling(u32::MAX), 2000 * MS);
        let inverted = Backoff {
            first: 300 * MS,
            max: MS,
        };
        assert_eq!(inverted.ceiling(5), 300 * MS);
    }

    #[test]
    fn delays_span_the_upper_half_of_the_ceiling() {
        assert_eq!(policy().delay(1, 0.0), 50 * MS);
        assert_eq!(policy().delay(1, 0.5), 75 * MS);
        assert_eq!(policy().delay(1, 0.999_999), 99 * MS);
        assert_eq!(policy().delay(3, 0.0), 200 * MS);
        assert_eq!(policy().delay(40, 1.0), 2000 * MS);
        // Out-of-range fractions cannot leave the range.
        assert_eq!(policy().delay(3, 7.0), 400 * MS);
        assert_eq!(policy().delay(3, -1.0), 200 * MS);
        assert_eq!(policy().delay(3, f64::NAN), 200 * MS);
    }

    #[test]
    fn attempts_count_failures_until_reset() {
        let mut attempts = policy().attempts();
        let top: Vec<u128> = (0..7)
            .map(|_| attempts.next_delay(1.0).as_millis())
            .collect();
        assert_eq!(top, [100, 200, 400, 800, 1600, 2000, 2000]);
        attempts.reset();
        assert_eq!(attempts.next_delay(0.0), 50 * MS);
    }
}

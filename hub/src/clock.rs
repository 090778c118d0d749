//! The hub's clocks and identities: a leaf module (it uses nothing of the
//! hub), so that every layer can stamp, time and name things without
//! importing the layer that happens to need them first.
//!
//! - Wall clock: [`now_ms`], [`now_rfc3339`], [`rfc3339_of_ms`] (event
//!   timestamps, summaries) and [`unix_now`] (token expiry, webhook
//!   signatures).
//! - Monotonic clock: [`monotonic`] and [`since`], a plain `u64` of
//!   nanoseconds since the process's first reading: small enough to stamp
//!   every event and to keep in a connection's queue.
//! - [`random_u64`]: unpredictable-enough bits for identities (epochs,
//!   request and trace ids), not for secrets.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::macros::format_description;

/// Current UTC time as RFC 3339 with milliseconds, e.g. `2026-11-28T14:03:07.123Z`.
pub fn now_rfc3339() -> String {
    rfc3339(OffsetDateTime::now_utc())
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    u64::try_from(nanos).unwrap_or_default()
}

/// `ms` (Unix milliseconds) as RFC 3339 with milliseconds.
pub fn rfc3339_of_ms(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .map_or_else(|_| rfc3339(OffsetDateTime::UNIX_EPOCH), rfc3339)
}

fn rfc3339(at: OffsetDateTime) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    at.format(&format)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00.000Z"))
}

/// Unix time now, in whole seconds (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Monotonic nanoseconds since the clock's origin (at least 1, so 0 can mean "none").
pub fn monotonic() -> u64 {
    u64::try_from(origin().elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// The time from `then` (a reading of [`monotonic`]) until now.
pub fn since(then: u64) -> Duration {
    Duration::from_nanos(monotonic().saturating_sub(then))
}

/// 64 unpredictable-enough bits for identities (not for secrets): the std
/// hasher's random keys mixed with a counter and the clock.
pub fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_readings_agree_and_format_as_rfc3339() {
        assert!(unix_now() > 1_700_000_000);
        let ms = now_ms();
        assert!(ms / 1000 >= unix_now() - 1);
        assert_eq!(rfc3339_of_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_of_ms(1_764_338_587_123), "2025-11-28T14:03:07.123Z");
        assert_eq!(now_rfc3339().len(), "2026-11-28T14:03:07.123Z".len());
    }

    #[test]
    fn the_monotonic_clock_never_reads_zero_and_never_goes_back() {
        let then = monotonic();
        assert!(then >= 1);
        assert!(monotonic() >= then);
        assert!(since(then) < Duration::from_secs(60));
    }
}

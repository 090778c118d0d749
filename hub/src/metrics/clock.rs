//! A monotonic clock as a plain `u64` of nanoseconds since the process's
//! first reading: small enough to stamp every event and to keep in a
//! connection's queue without growing either by an `Instant`.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Nanoseconds since the clock's origin (at least 1, so 0 can mean "none").
pub fn now() -> u64 {
    u64::try_from(origin().elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// The time from `then` (a reading of [`now`]) until now.
pub fn since(then: u64) -> Duration {
    Duration::from_nanos(now().saturating_sub(then))
}

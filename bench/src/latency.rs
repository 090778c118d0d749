//! Latency recording shared by many tasks, and the quantiles every report prints.
//!
//! One histogram behind a mutex rather than one per connection: 10,000
//! subscribers with a histogram each would cost the bench hundreds of MB, and
//! the lock is held for one `record` (never across an `.await`).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Highest latency recorded exactly (µs); longer ones count as this.
const MAX_US: u64 = 3_600_000_000;

/// Wall-clock microseconds since the Unix epoch: the send time publishers put
/// in each event. Publisher and subscribers share this machine's clock.
pub fn micros_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A histogram of latencies in µs that any task may record into.
#[derive(Debug, Clone)]
pub struct Latencies(Arc<Mutex<Histogram<u64>>>);

impl Latencies {
    /// An empty recorder (1 µs to 1 h, 3 significant digits).
    pub fn new() -> Self {
        let histogram =
            Histogram::new_with_bounds(1, MAX_US, 3).expect("the bounds are valid constants");
        Self(Arc::new(Mutex::new(histogram)))
    }

    /// Records one latency of `us` microseconds.
    pub fn record_us(&self, us: u64) {
        let mut histogram = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        histogram.saturating_record(us.max(1));
    }

    /// Records the time since `since`.
    pub fn record_since(&self, since: tokio::time::Instant) {
        self.record_us(since.elapsed().as_micros() as u64);
    }

    /// The quantiles of what has been recorded so far.
    pub fn quantiles(&self) -> Quantiles {
        let histogram = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        Quantiles::of(&histogram)
    }
}

/// The figures a report gives of a latency distribution.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quantiles {
    /// How many were recorded.
    pub count: u64,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// The largest.
    pub max: Duration,
}

impl Quantiles {
    fn of(histogram: &Histogram<u64>) -> Self {
        let at = |q: f64| Duration::from_micros(histogram.value_at_quantile(q));
        Self {
            count: histogram.len(),
            p50: at(0.5),
            p99: at(0.99),
            p999: at(0.999),
            max: Duration::from_micros(histogram.max()),
        }
    }

    /// `p50 … ms, p99 … ms, p99.9 … ms, max … ms`.
    pub fn line(&self) -> String {
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            ms(self.p50),
            ms(self.p99),
            ms(self.p999),
            ms(self.max)
        )
    }

    /// The quantiles in ms, as a JSON object.
    pub fn json(&self) -> Value {
        json!({
            "count": self.count,
            "p50_ms": round3(ms(self.p50)),
            "p99_ms": round3(ms(self.p99)),
            "p999_ms": round3(ms(self.p999)),
            "max_ms": round3(ms(self.max)),
        })
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `x` rounded to 3 decimals, for JSON.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_every_recording_task() {
        let latencies = Latencies::new();
        let other = latencies.clone();
        for us in 1..=1000 {
            if us % 2 == 0 { &latencies } else { &other }.record_us(us);
        }
        let q = latencies.quantiles();
        assert_eq!(q.count, 1000);
        assert!((499..=501).contains(&(q.p50.as_micros() as u64)));
        assert!((989..=991).contains(&(q.p99.as_micros() as u64)));
        assert_eq!(q.max, Duration::from_micros(1000));
    }
}

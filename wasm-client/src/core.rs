//! The client's bookkeeping, free of JavaScript so it runs in host `#[test]`s:
//! where each subscription stands, which events to deliver, and reconnect delays.

use std::time::Duration;

/// Where one subscription stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// Highest seq delivered (or confirmed as the starting point); `None`
    /// until the hub confirmed a live-only subscription.
    last: Option<u64>,
}

/// What to do with an incoming event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it to the application.
    Deliver,
    /// Already delivered (a replay after reconnecting overlaps what was seen).
    Duplicate,
}

impl Position {
    /// A new subscription: after `after`, or live-only when `None`.
    pub fn new(after: Option<u64>) -> Self {
        Self { last: after }
    }

    /// The `after` to send when (re)subscribing.
    pub fn resume_after(&self) -> Option<u64> {
        self.last
    }

    /// The highest seq delivered or confirmed.
    pub fn last(&self) -> Option<u64> {
        self.last
    }

    /// The hub confirmed the subscription, starting after `after`.
    pub fn confirmed(&mut self, after: u64) {
        // A resubscription confirms what we asked for; only a live-only
        // subscription learns its starting point here.
        self.last.get_or_insert(after);
    }

    /// Decides about an event and, when it is delivered, moves past it.
    pub fn accept(&mut self, seq: u64) -> Verdict {
        match self.last {
            Some(last) if seq <= last => Verdict::Duplicate,
            _ => {
                self.last = Some(seq);
                Verdict::Deliver
            }
        }
    }

    /// The hub said events up to `resume_after` are gone.
    pub fn lost(&mut self, resume_after: u64) {
        self.last = Some(resume_after);
    }
}

/// Exponential reconnect delays with full jitter, capped.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Delays between `min` and `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The next delay; `random` is uniform in `[0, 1)`. Full jitter spreads
    /// reconnecting clients so a restarted hub is not hit all at once.
    pub fn next_delay(&mut self, random: f64) -> Duration {
        let ceiling = self
            .min
            .saturating_mul(2u32.saturating_pow(self.attempt))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let spread = ceiling
            .saturating_sub(self.min)
            .mul_f64(random.clamp(0.0, 1.0));
        self.min + spread
    }

    /// A connection succeeded: start over from the shortest delay.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_after_reconnect_never_deliver_twice_or_backwards() {
        let mut position = Position::new(Some(3));
        assert_eq!(position.accept(3), Verdict::Duplicate);
        assert_eq!(position.accept(4), Verdict::Deliver);
        assert_eq!(position.resume_after(), Some(4));
        // Reconnected: the hub replays from 4, some of it already seen.
        position.confirmed(4);
        assert_eq!(position.accept(4), Verdict::Duplicate);
        assert_eq!(position.accept(5), Verdict::Deliver);
    }

    #[test]
    fn live_only_learns_its_start_from_the_hub() {
        let mut position = Position::new(None);
        assert_eq!(position.resume_after(), None);
        position.confirmed(10);
        assert_eq!(position.resume_after(), Some(10));
        position.confirmed(2); // a later confirmation never moves it back
        assert_eq!(position.last(), Some(10));
        position.lost(40);
        assert_eq!(position.accept(41), Verdict::Deliver);
    }

    #[test]
    fn backoff_grows_to_the_cap_with_jitter_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let top: Vec<u128> = (0..7)
            .map(|_| backoff.next_delay(1.0).as_millis())
            .collect();
        assert_eq!(top, vec![100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(backoff.next_delay(0.0), Duration::from_millis(100));
        backoff.reset();
        assert_eq!(backoff.next_delay(1.0), Duration::from_millis(100));
    }
}

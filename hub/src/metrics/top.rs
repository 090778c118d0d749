//! The busiest executions by publish rate, bounded: a space-saving sketch.
//!
//! Counting every execution exactly would cost memory per execution; the
//! space-saving algorithm keeps [`SLOTS`] counters and, when a new execution
//! arrives with all slots taken, replaces the smallest counter (inheriting
//! its count as the possible overestimate). Every execution publishing more
//! than 1/[`SLOTS`] of the events of a window is guaranteed to be listed.
//! Windows of [`WINDOW`] rotate lazily: the last complete one is what
//! [`TopExecutions::snapshot`] reports. Recorded on publish (never per
//! delivery); a publish that finds the sketch busy skips its sample rather
//! than wait.

use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Counters kept.
pub const SLOTS: usize = 32;
/// Length of one counting window.
pub const WINDOW: Duration = Duration::from_secs(2);

/// One execution of the last window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Busy {
    /// The execution.
    pub execution_id: String,
    /// Events per second published to it in the last window (an upper bound).
    pub rate: f64,
    /// How much of `rate` may be overestimate.
    pub error: f64,
}

#[derive(Debug)]
struct Slot {
    execution_id: Arc<str>,
    count: u64,
    error: u64,
}

#[derive(Debug)]
struct Sketch {
    slots: Vec<Slot>,
    started: Instant,
    last: Vec<Busy>,
}

/// The sketch and its last complete window.
#[derive(Debug)]
pub struct TopExecutions(Mutex<Sketch>);

impl Default for TopExecutions {
    fn default() -> Self {
        Self(Mutex::new(Sketch {
            slots: Vec::with_capacity(SLOTS),
            started: Instant::now(),
            last: Vec::new(),
        }))
    }
}

impl TopExecutions {
    /// Counts `events` published to `execution_id`.
    pub fn record(&self, execution_id: &str, events: u64) {
        let mut sketch = match self.0.try_lock() {
            Ok(sketch) => sketch,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            // Someone else is counting: an approximate list can miss one sample.
            Err(TryLockError::WouldBlock) => return,
        };
        sketch.rotate(Instant::now());
        sketch.count(execution_id, events);
    }

    /// The busiest executions of the last complete window, busiest first.
    pub fn snapshot(&self) -> Vec<Busy> {
        let mut sketch = self.lock();
        sketch.rotate(Instant::now());
        sketch.last.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Sketch> {
        // Critical sections are counter updates that leave the sketch consistent.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Sketch {
    fn count(&mut self, execution_id: &str, events: u64) {
        if let Some(slot) = self
            .slots
            .iter_mut()
            .find(|s| &*s.execution_id == execution_id)
        {
            slot.count += events;
            return;
        }
        if self.slots.len() < SLOTS {
            self.slots.push(Slot {
                execution_id: Arc::from(execution_id),
                count: events,
                error: 0,
            });
            return;
        }
        if let Some(smallest) = self.slots.iter_mut().min_by_key(|s| s.count) {
            let floor = smallest.count;
            *smallest = Slot {
                execution_id: Arc::from(execution_id),
                count: floor + events,
                error: floor,
            };
        }
    }

    /// Closes the window when it is over (a window with no publish at all
    /// closes on the next look, reporting nothing).
    fn rotate(&mut self, now: Instant) {
        let elapsed = now.duration_since(self.started);
        if elapsed < WINDOW {
            return;
        }
        // Windows that passed without a look count as empty.
        let seconds = if elapsed < 2 * WINDOW {
            elapsed.as_secs_f64()
        } else {
            self.slots.clear();
            1.0
        };
        self.slots.sort_by_key(|s| std::cmp::Reverse(s.count));
        self.last = self
            .slots
            .drain(..)
            .map(|s| Busy {
                execution_id: s.execution_id.to_string(),
                rate: s.count as f64 / seconds,
                error: s.error as f64 / seconds,
            })
            .collect();
        self.started = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heavy_executions_are_listed_first_among_many_light_ones() {
        let mut sketch = Sketch {
            slots: Vec::new(),
            started: Instant::now(),
            last: Vec::new(),
        };
        for i in 0..1000 {
            sketch.count(&format!("light-{i}"), 1);
            sketch.count("heavy", 5);
            if i % 2 == 0 {
                sketch.count("medium", 3);
            }
        }
        assert!(sketch.slots.len() <= SLOTS);
        let later = sketch.started + WINDOW;
        sketch.rotate(later);
        let ids: Vec<&str> = sketch
            .last
            .iter()
            .map(|b| b.execution_id.as_str())
            .collect();
        assert_eq!(&ids[..2], ["heavy", "medium"]);
        // 5,000 events in a 2 s window: at least 2,500/s, overestimated by at most error.
        let heavy = &sketch.last[0];
        assert!(heavy.rate >= 2500.0 && heavy.rate - heavy.error <= 2500.0);
        // The next, empty window reports nothing.
        sketch.rotate(later + WINDOW);
        assert!(sketch.last.is_empty());
    }
}

//! What a fan-out run does, resolved from `--shape` presets and explicit
//! flags: how many subscribers on how many executions, how many events at
//! what rate, and which publisher connection owns which execution.

use std::time::Duration;

use clap::ValueEnum;

use crate::target::Via;

/// Bytes of an event's `data` that are not padding:
/// `{"sent_us":` + 16 digits + `,"pad":"` + `"}`.
pub const DATA_OVERHEAD: usize = 37;

/// Preset scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shape {
    /// Issue 11: 1,000 subscribers over 10 executions, 200 events/s in total
    /// for 10 s, 100-byte data (the default).
    Issue,
    /// One execution with 10,000 subscribers at 100 events/s.
    OneExecution,
    /// 10,000 executions with one subscriber each at 1 event/s each
    /// (10,000 events/s in total).
    ManyExecutions,
}

/// The numbers a shape fixes unless a flag overrides them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preset {
    /// Subscriber connections.
    pub subscribers: usize,
    /// Executions they are spread over.
    pub executions: usize,
    /// Events per second in total; 0 publishes as fast as the window allows.
    pub rate: f64,
    /// Seconds of publishing at `rate`.
    pub duration: f64,
    /// Bytes of each event's `data`.
    pub payload: usize,
}

impl Shape {
    /// The shape's numbers.
    pub fn preset(self) -> Preset {
        let (subscribers, executions, rate) = match self {
            Self::Issue => (1_000, 10, 200.0),
            Self::OneExecution => (10_000, 1, 100.0),
            Self::ManyExecutions => (10_000, 10_000, 10_000.0),
        };
        Preset {
            subscribers,
            executions,
            rate,
            duration: 10.0,
            payload: 100,
        }
    }
}

/// A resolved run.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The numbers, presets and flags combined.
    pub preset: Preset,
    /// Events each execution receives.
    pub per_execution: u64,
    /// Publisher connections.
    pub publishers: usize,
    /// How events are published.
    pub via: Via,
    /// Unacknowledged publishes per WebSocket publisher.
    pub window: usize,
}

impl Plan {
    /// Combines the preset with the flags. With `rate` 0, `events` (in total)
    /// sets the count; otherwise `rate × duration` does.
    pub fn new(
        preset: Preset,
        events: u64,
        publishers: Option<usize>,
        via: Via,
        window: usize,
    ) -> Self {
        let executions = preset.executions.max(1);
        let total = if preset.rate > 0.0 {
            (preset.rate * preset.duration).round() as u64
        } else {
            events
        };
        let default_publishers = match via {
            Via::Http => 16,
            Via::Ws => 4,
        };
        Self {
            preset: Preset {
                executions,
                ..preset
            },
            per_execution: total.div_ceil(executions as u64).max(1),
            publishers: publishers
                .unwrap_or(default_publishers)
                .clamp(1, executions),
            via,
            window: window.max(1),
        }
    }

    /// Events published in total.
    pub fn events(&self) -> u64 {
        self.per_execution * self.preset.executions as u64
    }

    /// Deliveries expected in total: every subscriber sees its execution's events.
    pub fn deliveries(&self) -> u64 {
        self.per_execution * self.preset.subscribers as u64
    }

    /// The executions publisher `p` owns: `p`, `p + publishers`, …
    pub fn owned_by(&self, p: usize) -> Vec<usize> {
        (p..self.preset.executions)
            .step_by(self.publishers)
            .collect()
    }

    /// Time between two publishes of a publisher owning `owned` executions,
    /// or `None` for as fast as possible.
    pub fn interval(&self, owned: usize) -> Option<Duration> {
        let rate = self.preset.rate * owned as f64 / self.preset.executions as f64;
        (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate))
    }

    /// How long after the common start publisher `p` begins: the publishers
    /// take turns (`p / rate`) rather than all publishing at the same instants,
    /// whose bursts would show up as latency that only the bench caused.
    pub fn offset(&self, p: usize) -> Duration {
        if self.preset.rate > 0.0 {
            Duration::from_secs_f64(p as f64 / self.preset.rate)
        } else {
            Duration::ZERO
        }
    }

    /// Padding that makes an event's `data` `payload` bytes long.
    pub fn pad(&self) -> String {
        "x".repeat(self.preset.payload.saturating_sub(DATA_OVERHEAD))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_shape_spreads_200_events_a_second_over_10_executions() {
        let plan = Plan::new(Shape::Issue.preset(), 0, None, Via::Http, 32);
        assert_eq!(plan.events(), 2_000);
        assert_eq!(plan.per_execution, 200);
        assert_eq!(plan.deliveries(), 200_000);
        assert_eq!(plan.publishers, 10, "no more publishers than executions");
        assert_eq!(plan.owned_by(3), vec![3]);
        assert_eq!(plan.interval(1), Some(Duration::from_millis(50)));
        assert_eq!(plan.offset(3), Duration::from_millis(15));
    }

    #[test]
    fn many_executions_get_one_event_a_second_each() {
        let plan = Plan::new(Shape::ManyExecutions.preset(), 0, None, Via::Http, 32);
        assert_eq!(plan.per_execution, 10);
        assert_eq!(plan.owned_by(0).len(), 625);
        assert_eq!(plan.interval(625), Some(Duration::from_micros(1600)));
        let owned: usize = (0..plan.publishers).map(|p| plan.owned_by(p).len()).sum();
        assert_eq!(owned, 10_000);
    }

    #[test]
    fn rate_zero_publishes_the_given_count_unthrottled() {
        let preset = Preset {
            rate: 0.0,
            executions: 1,
            ..Shape::Issue.preset()
        };
        let plan = Plan::new(preset, 20_000, Some(2), Via::Ws, 32);
        assert_eq!(plan.events(), 20_000);
        assert_eq!(plan.publishers, 1);
        assert_eq!(plan.interval(1), None);
    }

    #[test]
    fn padding_makes_data_payload_bytes() {
        let plan = Plan::new(Shape::Issue.preset(), 0, None, Via::Http, 32);
        let data = format!(
            r#"{{"sent_us":{},"pad":"{}"}}"#,
            1_700_000_000_000_000u64,
            plan.pad()
        );
        assert_eq!(data.len(), 100);
    }
}

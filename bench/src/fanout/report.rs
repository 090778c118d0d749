//! The fan-out run's figures: printed as human-readable lines plus one JSON
//! line, then judged (every subscriber must see every event once, in order).

use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::{Value, json};

use super::plan::Plan;
use super::subscriber::Tally;
use crate::cost::{Spent, Unit, mib, thousands};
use crate::latency::{Quantiles, round3};

const DELIVERY: Unit = Unit {
    one: "delivery",
    many: "deliveries",
};
const PUBLISH: Unit = Unit {
    one: "publish",
    many: "publishes",
};

/// The subscribers' tallies, summed.
#[derive(Debug, Default)]
pub struct Totals {
    /// Event frames received.
    pub received: u64,
    /// Expected events never received.
    pub lost: u64,
    /// Events received more than once (or never published).
    pub duplicated: u64,
    /// Events received after a higher seq.
    pub out_of_order: u64,
    /// Subscribers that saw any of the above, or stopped early.
    pub troubled: usize,
    /// The first subscriber's trouble, to tell what went wrong.
    pub first_trouble: Option<String>,
}

impl Totals {
    /// Adds one subscriber's tally.
    pub fn add(&mut self, tally: &Tally) {
        self.received += tally.received;
        self.lost += tally.check.lost();
        self.duplicated += tally.check.duplicated;
        self.out_of_order += tally.check.out_of_order;
        if !tally.is_clean() {
            self.troubled += 1;
            if self.first_trouble.is_none() {
                self.first_trouble = Some(tally.trouble.clone().unwrap_or_else(|| {
                    format!(
                        "lost {}, duplicated {}, out of order {}",
                        tally.check.lost(),
                        tally.check.duplicated,
                        tally.check.out_of_order
                    )
                }));
            }
        }
    }
}

/// Hub RSS at the run's milestones.
#[derive(Debug, Default, Clone, Copy)]
pub struct Memory {
    /// Before any subscriber connected.
    pub before: Option<u64>,
    /// Once all were subscribed.
    pub subscribed: Option<u64>,
    /// The highest sample during the publish window.
    pub peak: Option<u64>,
    /// After every connection closed (and `/health` drained, if it did).
    pub after: Option<u64>,
}

/// Everything measured in one fan-out run.
#[derive(Debug)]
pub struct Report {
    /// What was run.
    pub plan: Plan,
    /// Subscribers connected.
    pub connections: usize,
    /// Time to connect and subscribe them all.
    pub connect_time: Duration,
    /// CPU over the publish window (first publish to last delivery).
    pub window: Spent,
    /// Events the hub accepted.
    pub published: u64,
    /// Time from the first publish to the last accepted one.
    pub publish_time: Duration,
    /// The furthest a publish fell behind its schedule.
    pub behind: Duration,
    /// Publish round trips.
    pub acks: Quantiles,
    /// Publish-to-delivery latency.
    pub latency: Quantiles,
    /// The subscribers' tallies.
    pub totals: Totals,
    /// Hub RSS.
    pub memory: Memory,
}

impl Report {
    /// Prints the human-readable lines, then the JSON line.
    #[allow(clippy::print_stdout)]
    pub fn print(&self) {
        for line in self.lines() {
            println!("{line}");
        }
        println!("{}", self.json());
    }

    fn lines(&self) -> Vec<String> {
        let (p, t) = (&self.plan, &self.totals);
        let window = self.window.wall.as_secs_f64();
        let mut lines = vec![
            format!(
                "fanout: {} subscribers over {} executions; {} events ({} per execution, {}), \
                 {}-byte data, published via {} over {} connections",
                p.preset.subscribers,
                p.preset.executions,
                p.events(),
                p.per_execution,
                if p.preset.rate > 0.0 {
                    format!("{} events/s for {} s", p.preset.rate, p.preset.duration)
                } else {
                    format!("unthrottled, window {}", p.window)
                },
                p.preset.payload,
                p.via.name(),
                p.publishers
            ),
            format!(
                "connect: {} subscribed in {:.2} s",
                self.connections,
                self.connect_time.as_secs_f64()
            ),
            format!(
                "publish: {} events in {:.2} s ({:.1}/s), at most {:.1} ms behind schedule; \
                 round trip {}",
                self.published,
                self.publish_time.as_secs_f64(),
                self.published as f64 / self.publish_time.as_secs_f64(),
                self.behind.as_secs_f64() * 1e3,
                self.acks.line()
            ),
            format!(
                "delivery: {} of {} in {window:.2} s ({}/s); lost {}, duplicated {}, out of order {} \
                 ({} subscribers with trouble{})",
                t.received,
                p.deliveries(),
                thousands(t.received as f64 / window),
                t.lost,
                t.duplicated,
                t.out_of_order,
                t.troubled,
                t.first_trouble
                    .as_ref()
                    .map_or(String::new(), |f| format!("; first: {f}"))
            ),
            format!("publish-to-delivery latency: {}", self.latency.line()),
        ];
        lines.extend(self.window.lines(DELIVERY, t.received));
        lines.extend(self.window.lines(PUBLISH, self.published));
        lines.push(self.memory_line());
        lines.push(format!(
            "bench CPU {:.3} s over the {window:.2} s window",
            self.window.bench.as_secs_f64()
        ));
        lines
    }

    fn memory_line(&self) -> String {
        let m = &self.memory;
        let (Some(before), Some(subscribed), Some(peak)) = (m.before, m.subscribed, m.peak) else {
            return "hub RSS: not measured (no --hub-pid)".into();
        };
        format!(
            "hub RSS: {} before, {} subscribed ({:.0} B per connection), peak {} during the run \
             ({:.0} B per connection), {} after close",
            mib(before),
            mib(subscribed),
            self.per_connection(subscribed, before),
            mib(peak),
            self.per_connection(peak, before),
            m.after.map_or("?".into(), mib)
        )
    }

    fn per_connection(&self, rss: u64, before: u64) -> f64 {
        (rss as f64 - before as f64) / self.connections.max(1) as f64
    }

    /// The figures as one JSON object, for scripts.
    pub fn json(&self) -> Value {
        let (p, t) = (&self.plan, &self.totals);
        let m = &self.memory;
        let per_conn = |rss: Option<u64>| Some(self.per_connection(rss?, m.before?).round());
        let mut out = json!({
            "mode": "fanout",
            "subscribers": p.preset.subscribers,
            "executions": p.preset.executions,
            "rate": p.preset.rate,
            "duration_s": p.preset.duration,
            "payload": p.preset.payload,
            "publish_via": p.via.name(),
            "publishers": p.publishers,
            "events": self.published,
            "deliveries": t.received,
            "expected_deliveries": p.deliveries(),
            "lost": t.lost,
            "duplicated": t.duplicated,
            "out_of_order": t.out_of_order,
            "subscribers_with_trouble": t.troubled,
            "deliveries_per_s": (t.received as f64 / self.window.wall.as_secs_f64()).round(),
            "publishes_per_s": round3(self.published as f64 / self.publish_time.as_secs_f64()),
            "behind_schedule_ms": round3(self.behind.as_secs_f64() * 1e3),
            "latency": self.latency.json(),
            "publish_round_trip": self.acks.json(),
            "window": self.window.cpu_json(),
            "rss_before": m.before,
            "rss_subscribed": m.subscribed,
            "rss_peak": m.peak,
            "rss_after": m.after,
            "bytes_per_connection_subscribed": per_conn(m.subscribed),
            "bytes_per_connection_peak": per_conn(m.peak),
        });
        if let Value::Object(map) = &mut out {
            map.extend(self.window.json(DELIVERY, t.received));
            map.extend(self.window.json(PUBLISH, self.published));
        }
        out
    }

    /// Passes only if every subscriber saw every event once, in order.
    ///
    /// # Errors
    /// Says how many were lost, duplicated or reordered.
    pub fn verdict(&self) -> Result<()> {
        let t = &self.totals;
        if t.troubled > 0 || t.lost + t.duplicated + t.out_of_order > 0 {
            bail!(
                "{} subscribers saw trouble: lost {}, duplicated {}, out of order {} (first: {})",
                t.troubled,
                t.lost,
                t.duplicated,
                t.out_of_order,
                t.first_trouble.as_deref().unwrap_or("?")
            );
        }
        Ok(())
    }
}

//! The idle run's figures: collected phase by phase, derived per connection,
//! printed as human-readable lines plus one JSON line, and judged.

use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::{Value, json};

use super::conn::{CloseMode, Outcome, Transport};
use crate::health::Counts;
use crate::proc::Usage;

/// How the connections fared, from connect to close.
#[derive(Debug, Default)]
pub struct Tally {
    /// Connections opened and subscribed.
    pub connected: usize,
    /// Connection attempts that failed (connect, handshake or subscribe).
    pub failed: usize,
    /// Closed by us when told.
    pub closed: usize,
    /// Clean WebSocket closes that got no close frame back.
    pub no_echo: usize,
    /// Connections that failed or were closed by the hub before we closed them.
    pub lost: usize,
    /// Connections still closing when the bench gave up waiting.
    pub stuck: usize,
    /// The first failure's message, to tell what went wrong.
    pub first_failure: Option<String>,
}

impl Tally {
    /// Counts a failed connection attempt.
    pub fn fail(&mut self, error: String) {
        self.failed += 1;
        self.first_failure.get_or_insert(error);
    }

    /// Counts how a held connection ended.
    pub fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Closed => self.closed += 1,
            Outcome::NoEcho => self.no_echo += 1,
            Outcome::Lost(why) => {
                self.lost += 1;
                self.first_failure.get_or_insert(why);
            }
        }
    }

    /// The first failure's message, or a placeholder.
    pub fn first_error(&self) -> &str {
        self.first_failure.as_deref().unwrap_or("(none)")
    }
}

/// Everything measured in one idle run.
#[derive(Debug)]
pub struct Report {
    /// The transport used.
    pub transport: Transport,
    /// How the connections were closed.
    pub close: CloseMode,
    /// `--connections`.
    pub requested: usize,
    /// Hub usage before connecting.
    pub before: Usage,
    /// Hub usage once every connection was subscribed.
    pub subscribed: Usage,
    /// Hub usage after the idle period: the headline RSS.
    pub settled: Usage,
    /// Hub usage after the close and drain.
    pub after: Usage,
    /// Wall time of the connect phase.
    pub connect_time: Duration,
    /// Actual length of the idle period.
    pub settle_time: Duration,
    /// `/health` once connected.
    pub health_connected: Option<Counts>,
    /// `/health` after the drain (zero, or the last counts seen).
    pub health_after: Option<Counts>,
    /// Time from starting to close until `/health` said 0; `None` if it never did.
    pub drain: Option<Duration>,
    /// How the connections fared.
    pub tally: Tally,
}

impl Report {
    /// An empty report for a run of `requested` connections.
    pub fn new(transport: Transport, close: CloseMode, requested: usize) -> Self {
        let zero = Usage {
            rss: 0,
            cpu: Duration::ZERO,
        };
        Self {
            transport,
            close,
            requested,
            before: zero,
            subscribed: zero,
            settled: zero,
            after: zero,
            connect_time: Duration::ZERO,
            settle_time: Duration::ZERO,
            health_connected: None,
            health_after: None,
            drain: None,
            tally: Tally::default(),
        }
    }

    /// Hub RSS growth per idle connection, in bytes (the headline figure).
    pub fn bytes_per_connection(&self) -> f64 {
        (self.settled.rss as f64 - self.before.rss as f64) / self.connected()
    }

    /// Connections subscribed per second of the connect phase.
    pub fn connect_rate(&self) -> f64 {
        self.connected() / self.connect_time.as_secs_f64()
    }

    /// Hub CPU spent opening and subscribing one connection, in µs.
    pub fn cpu_us_per_connect(&self) -> f64 {
        micros(self.subscribed.cpu.saturating_sub(self.before.cpu)) / self.connected()
    }

    /// Hub CPU per idle connection per second, in µs.
    pub fn idle_cpu_us_per_conn_per_s(&self) -> f64 {
        let spent = micros(self.settled.cpu.saturating_sub(self.subscribed.cpu));
        spent / self.connected() / self.settle_time.as_secs_f64()
    }

    fn connected(&self) -> f64 {
        self.tally.connected.max(1) as f64
    }

    /// Prints the human-readable lines, then the JSON line.
    #[allow(clippy::print_stdout)]
    pub fn print(&self) {
        for line in self.lines() {
            println!("{line}");
        }
        println!("{}", self.json());
    }

    fn lines(&self) -> Vec<String> {
        let t = &self.tally;
        let health = |c: &Option<Counts>| c.map_or("?".into(), |c| c.to_string());
        vec![
            format!(
                "connect: {}/{} {} connections subscribed in {:.2} s ({:.0}/s), {} failed{}",
                t.connected,
                self.requested,
                self.transport.name(),
                self.connect_time.as_secs_f64(),
                self.connect_rate(),
                t.failed,
                if t.failed > 0 {
                    format!(" (first: {})", t.first_error())
                } else {
                    String::new()
                }
            ),
            format!(
                "hub CPU: {:.1} µs per connect; {:.3} µs per idle connection per second over {:.1} s",
                self.cpu_us_per_connect(),
                self.idle_cpu_us_per_conn_per_s(),
                self.settle_time.as_secs_f64()
            ),
            format!(
                "hub RSS: {} before, {} subscribed, {} after idle → {:.0} bytes per idle connection",
                mib(self.before.rss),
                mib(self.subscribed.rss),
                mib(self.settled.rss),
                self.bytes_per_connection()
            ),
            format!(
                "hub /health when connected: {}",
                health(&self.health_connected)
            ),
            format!(
                "close ({}): {} closed, {} without close echo, {} lost before close{}, {} stuck",
                self.close.name(),
                t.closed,
                t.no_echo,
                t.lost,
                if t.lost > 0 {
                    format!(" (first: {})", t.first_error())
                } else {
                    String::new()
                },
                t.stuck
            ),
            match self.drain {
                Some(took) => format!("drain: /health at 0 after {:.2} s", took.as_secs_f64()),
                None => format!(
                    "drain: NOT at 0 after {} s: {}",
                    super::DRAIN_LIMIT.as_secs(),
                    health(&self.health_after)
                ),
            },
            format!(
                "hub RSS after close: {} ({:+.0} bytes per connection vs before)",
                mib(self.after.rss),
                (self.after.rss as f64 - self.before.rss as f64) / self.connected()
            ),
        ]
    }

    /// The figures as one JSON object, for scripts.
    pub fn json(&self) -> Value {
        json!({
            "mode": "idle",
            "transport": self.transport.name(),
            "close": self.close.name(),
            "connections": self.tally.connected,
            "requested": self.requested,
            "failed": self.tally.failed,
            "lost": self.tally.lost,
            "close_echo_missing": self.tally.no_echo,
            "rss_before": self.before.rss,
            "rss_subscribed": self.subscribed.rss,
            "rss_connected": self.settled.rss,
            "bytes_per_connection": self.bytes_per_connection().round(),
            "connect_rate": self.connect_rate().round(),
            "hub_cpu_us_per_connect": round3(self.cpu_us_per_connect()),
            "idle_cpu_us_per_conn_per_s": round3(self.idle_cpu_us_per_conn_per_s()),
            "drained": self.drain.is_some(),
            "drain_secs": self.drain.map(|d| round3(d.as_secs_f64())),
            "rss_after_close": self.after.rss,
        })
    }

    /// Passes only if every connection opened, none was lost, and the hub
    /// reported nothing open after the close.
    ///
    /// # Errors
    /// Says which of those failed.
    pub fn verdict(&self) -> Result<()> {
        let t = &self.tally;
        if t.failed > 0 || t.lost > 0 {
            bail!(
                "{} connections failed and {} were lost: {}",
                t.failed,
                t.lost,
                t.first_error()
            );
        }
        if self.drain.is_none() {
            bail!(
                "the hub did not release its connections within {} s of the close",
                super::DRAIN_LIMIT.as_secs()
            );
        }
        Ok(())
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

//! What a run's work cost the hub (and Redis): CPU time and memory read from
//! `/proc` at the edges of a measured window, turned into units of work per
//! CPU-second and CPU-µs per unit.
//!
//! The hub, Redis and the benchmark share the machine, so wall-clock rates
//! say more about the machine than about the hub; CPU-seconds per unit of
//! work do not depend on who else is running. The bench's own CPU is read too,
//! only to show whether it was the bottleneck.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::latency::round3;
use crate::proc::{Process, Usage};

/// The processes a run measures.
#[derive(Debug, Clone)]
pub struct Meter {
    /// The hub nodes (`--hub-pid`, one or several); without one there are no
    /// cost figures. Memory figures are the first one's.
    hubs: Vec<Process>,
    /// The `redis-server`s (`--redis-pid`: one, or a cluster's nodes), when
    /// the hub uses Redis.
    redis: Vec<Process>,
    /// This benchmark.
    bench: Process,
}

/// One reading of every measured process.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When it was taken.
    at: Instant,
    /// The hubs' usage: CPU summed, RSS of the first.
    pub hub: Option<Usage>,
    /// Each hub's CPU time, by pid.
    hubs: Vec<(u32, Duration)>,
    /// Each Redis server's CPU time, by pid.
    redis: Vec<(u32, Duration)>,
    /// The bench's usage.
    bench: Usage,
}

/// CPU time spent between two snapshots.
#[derive(Debug, Clone)]
pub struct Spent {
    /// Wall time between them.
    pub wall: Duration,
    /// The hubs' CPU time, when measured.
    pub hub: Option<Duration>,
    /// Each hub's CPU time, by pid (several hub nodes).
    pub hub_each: Vec<(u32, Duration)>,
    /// Redis's CPU time (all servers), when measured.
    pub redis: Option<Duration>,
    /// Each Redis server's CPU time, by pid (a cluster: one per node).
    pub redis_each: Vec<(u32, Duration)>,
    /// The bench's own CPU time.
    pub bench: Duration,
}

/// What a unit of work is called in reports: `delivery` / `deliveries`.
#[derive(Debug, Clone, Copy)]
pub struct Unit {
    /// Singular, for "µs per …" and JSON keys.
    pub one: &'static str,
    /// Plural, for "… per CPU-second".
    pub many: &'static str,
}

impl Meter {
    /// Measures the hubs `hub_pids` and the Redis servers `redis_pids`.
    ///
    /// # Errors
    /// A given pid names no running process.
    pub fn new(hub_pids: &[u32], redis_pids: &[u32]) -> Result<Self> {
        let open = |pids: &[u32], flag: &str| -> Result<Vec<Process>> {
            pids.iter()
                .map(|pid| {
                    Process::new(*pid).with_context(|| format!("{flag} {pid}: cannot read /proc"))
                })
                .collect()
        };
        let hubs = open(hub_pids, "--hub-pid")?;
        if hubs.is_empty() {
            eprintln!("warning: no --hub-pid: the hub's CPU and memory are not measured");
        }
        Ok(Self {
            hubs,
            redis: open(redis_pids, "--redis-pid")?,
            bench: Process::new(std::process::id())?,
        })
    }

    /// The (first) hub, if measured.
    pub fn hub(&self) -> Option<&Process> {
        self.hubs.first()
    }

    /// Reads every measured process now.
    ///
    /// # Errors
    /// A measured process has exited.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let mut hub: Option<Usage> = None;
        let mut hubs = Vec::with_capacity(self.hubs.len());
        for process in &self.hubs {
            let usage = process.usage().context("the hub is gone")?;
            hubs.push((process.pid(), usage.cpu));
            hub = Some(match hub {
                None => usage,
                Some(sum) => Usage {
                    rss: sum.rss,
                    cpu: sum.cpu + usage.cpu,
                },
            });
        }
        let redis = self
            .redis
            .iter()
            .map(|p| Ok((p.pid(), p.usage().context("redis-server is gone")?.cpu)))
            .collect::<Result<_>>()?;
        Ok(Snapshot {
            at: Instant::now(),
            hub,
            hubs,
            redis,
            bench: self.bench.usage()?,
        })
    }

    /// The (first) hub's RSS now, if measured and readable.
    pub fn hub_rss(&self) -> Option<u64> {
        self.hubs.first()?.usage().ok().map(|u| u.rss)
    }
}

impl Snapshot {
    /// What was spent from this snapshot until `end`.
    pub fn until(&self, end: &Snapshot) -> Spent {
        let cpu = |a: Option<Usage>, b: Option<Usage>| Some(b?.cpu.saturating_sub(a?.cpu));
        let each = |a: &[(u32, Duration)], b: &[(u32, Duration)]| -> Vec<(u32, Duration)> {
            a.iter()
                .zip(b)
                .map(|((pid, before), (_, after))| (*pid, after.saturating_sub(*before)))
                .collect()
        };
        let redis_each = each(&self.redis, &end.redis);
        Spent {
            wall: end.at.saturating_duration_since(self.at),
            hub: cpu(self.hub, end.hub),
            hub_each: each(&self.hubs, &end.hubs),
            redis: (!redis_each.is_empty()).then(|| redis_each.iter().map(|(_, cpu)| *cpu).sum()),
            redis_each,
            bench: end.bench.cpu.saturating_sub(self.bench.cpu),
        }
    }
}

impl Spent {
    /// Hub plus Redis CPU time (the hub's alone without Redis).
    pub fn combined(&self) -> Option<Duration> {
        Some(self.hub? + self.redis.unwrap_or_default())
    }

    /// One line per measured process: `count` units per CPU-second and µs each.
    pub fn lines(&self, unit: Unit, count: u64) -> Vec<String> {
        let line = |who: &str, cpu: Option<Duration>| {
            cpu.map(|cpu| {
                let (per_s, us) = per_cpu(count, cpu);
                format!(
                    "{who} CPU {:.3} s: {} {} per CPU-second, {us:.2} µs per {}",
                    cpu.as_secs_f64(),
                    thousands(per_s),
                    unit.many,
                    unit.one
                )
            })
        };
        let mut lines: Vec<String> = [line("hub", self.hub), line("redis", self.redis)]
            .into_iter()
            .flatten()
            .collect();
        if self.redis.is_some() {
            lines.extend(line("hub+redis", self.combined()));
        }
        let each = |who: &str, each: &[(u32, Duration)]| {
            let each: Vec<String> = each
                .iter()
                .map(|(pid, cpu)| format!("{pid}: {:.3} s", cpu.as_secs_f64()))
                .collect();
            format!("{who} CPU per process: {}", each.join(", "))
        };
        if self.hub_each.len() > 1 {
            lines.push(each("hub", &self.hub_each));
        }
        if self.redis_each.len() > 1 {
            lines.push(each("redis", &self.redis_each));
        }
        lines
    }

    /// `<many>_per_{hub_,redis_,}cpu_s` and `{hub_,redis_,}us_per_<one>`.
    pub fn json(&self, unit: Unit, count: u64) -> Map<String, Value> {
        let mut out = Map::new();
        for (who, cpu) in [
            ("hub_", self.hub),
            ("redis_", self.redis),
            ("", self.combined()),
        ] {
            let Some(cpu) = cpu else { continue };
            let (per_s, us) = per_cpu(count, cpu);
            out.insert(
                format!("{}_per_{who}cpu_s", unit.many),
                json!(per_s.round()),
            );
            out.insert(format!("{who}us_per_{}", unit.one), json!(round3(us)));
        }
        out
    }

    /// The CPU seconds themselves, as JSON.
    pub fn cpu_json(&self) -> Value {
        let secs = |d: Option<Duration>| d.map(|d| round3(d.as_secs_f64()));
        json!({
            "wall_s": round3(self.wall.as_secs_f64()),
            "hub_cpu_s": secs(self.hub),
            "redis_cpu_s": secs(self.redis),
            "hub_cpu_s_by_pid": by_pid(&self.hub_each),
            "redis_cpu_s_by_pid": by_pid(&self.redis_each),
            "bench_cpu_s": secs(Some(self.bench)),
        })
    }
}

/// `{"<pid>": cpu_s, …}`.
fn by_pid(each: &[(u32, Duration)]) -> Map<String, Value> {
    each.iter()
        .map(|(pid, cpu)| (pid.to_string(), json!(round3(cpu.as_secs_f64()))))
        .collect()
}

/// Units per CPU-second and CPU-µs per unit (infinite / 0 when no tick was spent).
pub fn per_cpu(count: u64, cpu: Duration) -> (f64, f64) {
    let secs = cpu.as_secs_f64();
    let per_s = if secs > 0.0 {
        count as f64 / secs
    } else {
        f64::INFINITY
    };
    (per_s, secs * 1e6 / count.max(1) as f64)
}

/// `1234567.8` → `1,234,568`.
pub fn thousands(x: f64) -> String {
    if !x.is_finite() {
        return "∞".into();
    }
    let digits = format!("{:.0}", x.round());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `bytes` in MiB with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cpu_is_the_inverse_of_us_per_unit() {
        let (per_s, us) = per_cpu(200_000, Duration::from_secs(1));
        assert_eq!(per_s, 200_000.0);
        assert!((us - 5.0).abs() < 1e-9);
    }

    #[test]
    fn spent_reports_hub_redis_and_both() {
        let spent = Spent {
            wall: Duration::from_secs(10),
            hub: Some(Duration::from_secs(2)),
            redis: Some(Duration::from_secs(1)),
            hub_each: vec![(2, Duration::from_secs(2))],
            redis_each: vec![(1, Duration::from_secs(1))],
            bench: Duration::from_secs(1),
        };
        let unit = Unit {
            one: "delivery",
            many: "deliveries",
        };
        let json = spent.json(unit, 300_000);
        assert_eq!(json["deliveries_per_hub_cpu_s"], json!(150_000.0));
        assert_eq!(json["deliveries_per_cpu_s"], json!(100_000.0));
        assert_eq!(json["us_per_delivery"], json!(10.0));
        assert_eq!(spent.lines(unit, 300_000).len(), 3);
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
    }
}

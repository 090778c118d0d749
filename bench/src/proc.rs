//! Another process's resident memory and CPU time, read from `/proc`, and
//! the calling thread's own CPU time.
//!
//! Linux only. RSS comes from `/proc/PID/status` (`VmRSS`), CPU time from
//! `/proc/PID/stat` (user + system ticks, converted with `_SC_CLK_TCK`; one
//! tick is 10 ms, so measure windows of seconds, not milliseconds).

use std::io;
use std::time::Duration;

use nix::unistd::{SysconfVar, sysconf};

/// One reading of a process's resource use.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// Resident set size, in bytes.
    pub rss: u64,
    /// User plus system CPU time consumed since the process started.
    pub cpu: Duration,
}

/// A running process whose usage can be sampled.
#[derive(Debug, Clone)]
pub struct Process {
    /// The process id.
    pid: u32,
    /// Length of one clock tick of `/proc/PID/stat`.
    tick: Duration,
}

impl Process {
    /// The process `pid`, which must exist now.
    ///
    /// # Errors
    /// There is no such process (or `/proc` is not readable).
    pub fn new(pid: u32) -> io::Result<Self> {
        let process = Self {
            pid,
            tick: clock_tick(),
        };
        process.usage()?;
        Ok(process)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Its memory and CPU time now.
    ///
    /// # Errors
    /// The process has exited, or a `/proc` file has an unexpected shape.
    pub fn usage(&self) -> io::Result<Usage> {
        Ok(Usage {
            rss: self.rss()?,
            cpu: self.cpu()?,
        })
    }

    /// Its soft limit on open files, if `/proc/PID/limits` says.
    pub fn max_open_files(&self) -> Option<u64> {
        let limits = std::fs::read_to_string(self.path("limits")).ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse().ok()
    }

    fn rss(&self) -> io::Result<u64> {
        let status = std::fs::read_to_string(self.path("status"))?;
        let kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| malformed("status", "no VmRSS"))?;
        Ok(kib * 1024)
    }

    fn cpu(&self) -> io::Result<Duration> {
        cpu_of(&self.path("stat"), self.tick)
    }

    fn path(&self, file: &str) -> String {
        format!("/proc/{}/{file}", self.pid)
    }
}

/// User plus system CPU time of the calling thread (not its process), from
/// `/proc/thread-self/stat`.
///
/// # Errors
/// `/proc` is not mounted or the file has an unexpected shape.
pub fn thread_cpu() -> io::Result<Duration> {
    cpu_of("/proc/thread-self/stat", clock_tick())
}

/// User plus system time from a `stat` file of `/proc` (a process's or a thread's).
fn cpu_of(path: &str, tick: Duration) -> io::Result<Duration> {
    let stat = std::fs::read_to_string(path)?;
    // The command name (field 2) may hold spaces and parentheses: the
    // fields after it start at the last ')', with field 3 (state) first.
    let after_name = stat
        .rsplit_once(')')
        .ok_or_else(|| malformed("stat", "no ')'"))?
        .1;
    let mut fields = after_name.split_whitespace().skip(11); // to field 14
    let mut ticks = || -> io::Result<u32> {
        fields
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| malformed("stat", "no utime/stime"))
    };
    let (utime, stime) = (ticks()?, ticks()?);
    Ok(tick * utime + tick * stime)
}

/// One `/proc/PID/stat` tick: `1 / sysconf(_SC_CLK_TCK)`, 100 Hz if unknown
/// (the value on every common Linux build).
fn clock_tick() -> Duration {
    let hz = match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(hz)) if hz > 0 => hz as u64,
        _ => 100,
    };
    Duration::from_nanos(1_000_000_000 / hz)
}

fn malformed(file: &str, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("/proc/PID/{file}: {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_usage() {
        let me = Process::new(std::process::id()).unwrap();
        let usage = me.usage().unwrap();
        assert!(usage.rss > 0);
        assert!(me.max_open_files().unwrap() > 0);
    }

    #[test]
    fn reads_its_own_thread_cpu() {
        let before = thread_cpu().unwrap();
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(50) {}
        assert!(thread_cpu().unwrap() > before);
    }
}

//! Where the benchmark's connections go (the hub's address and paths) and
//! where they come from (a range of loopback source addresses), and the
//! file-descriptor limits that decide how many fit.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::str::FromStr;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use tokio::net::TcpSocket;
use tokio::net::TcpStream;

use crate::proc::Process;

/// File descriptors kept spare beyond one per connection.
const SPARE_FDS: u64 = 100;

/// The hub, from a base URL such as `http://127.0.0.1:8099`.
#[derive(Debug, Clone)]
pub struct Hub {
    /// The resolved IPv4 address (the source addresses are IPv4).
    pub addr: SocketAddrV4,
    /// `host[:port]` as given: the `Host` header and the WebSocket URL.
    pub authority: String,
    /// A path prefix without the trailing `/` (usually empty).
    pub prefix: String,
}

impl Hub {
    /// Parses and resolves an `http://` base URL. A `ws://host[:port]/ws`
    /// URL (what `fanout --url` used to take) names the same hub.
    ///
    /// # Errors
    /// The URL is not `http://host[:port][/prefix]`, or the host has no IPv4 address.
    pub async fn resolve(url: &str) -> Result<Self> {
        let rest = match (url.strip_prefix("http://"), url.strip_prefix("ws://")) {
            (Some(rest), _) => rest,
            (None, Some(rest)) => rest.strip_suffix("/ws").unwrap_or(rest),
            (None, None) => bail!("--url {url}: expected http://host[:port]"),
        };
        let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let with_port = if authority.contains(':') {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let addr = tokio::net::lookup_host(&with_port)
            .await
            .with_context(|| format!("resolving {authority}"))?
            .find_map(|addr| match addr {
                SocketAddr::V4(v4) => Some(v4),
                SocketAddr::V6(_) => None,
            })
            .with_context(|| format!("{authority} has no IPv4 address"))?;
        Ok(Self {
            addr,
            authority: authority.to_string(),
            prefix: prefix.trim_end_matches('/').to_string(),
        })
    }

    /// Opens a TCP connection (`TCP_NODELAY`) to the hub from `source` (any free port).
    ///
    /// # Errors
    /// The source address cannot be bound or the hub refuses the connection.
    pub async fn connect_from(&self, source: Ipv4Addr) -> Result<TcpStream> {
        let socket = TcpSocket::new_v4()?;
        socket
            .bind(SocketAddr::new(source.into(), 0))
            .with_context(|| format!("binding {source}:0"))?;
        let stream = socket.connect(self.addr.into()).await?;
        // As workers' HTTP clients (reqwest) and browsers do: small frames go
        // out at once, so latency is not Nagle's.
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// The WebSocket endpoint, `ws://authority/prefix/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}{}/ws", self.authority, self.path_prefix())
    }

    /// The path of `execution`'s Server-Sent Events stream.
    pub fn sse_path(&self, execution: &str) -> String {
        let prefix = self.path_prefix();
        format!("{prefix}/api/v1/executions/{execution}/stream")
    }

    /// The path of `execution`'s events (`POST` publishes one).
    pub fn events_path(&self, execution: &str) -> String {
        let prefix = self.path_prefix();
        format!("{prefix}/api/v1/executions/{execution}/events")
    }

    /// The path of the health endpoint.
    pub fn health_path(&self) -> String {
        format!("{}/health", self.path_prefix())
    }

    fn path_prefix(&self) -> String {
        if self.prefix.is_empty() {
            String::new()
        } else {
            format!("/{}", self.prefix)
        }
    }
}

/// Raises this process's soft open-file limit to the hard one and checks that
/// `connections` fit under it.
///
/// # Errors
/// The limit cannot be raised, or is still too low for `connections`.
pub fn raise_fd_limit(connections: usize) -> Result<u64> {
    let limit = rlimit::increase_nofile_limit(u64::MAX).context("raising RLIMIT_NOFILE")?;
    let needed = connections as u64 + SPARE_FDS;
    if needed > limit {
        bail!(
            "{connections} connections need {needed} file descriptors (one per connection \
             plus {SPARE_FDS} spare), but this process may open at most {limit} (the hard \
             RLIMIT_NOFILE); use fewer connections or raise the hard limit"
        );
    }
    Ok(limit)
}

/// The hub needs one descriptor per connection too; say so before it fails.
pub fn warn_if_hub_fd_limit_low(process: &Process, connections: usize) {
    match process.max_open_files() {
        Some(limit) if limit < connections as u64 + SPARE_FDS => eprintln!(
            "warning: the hub may open only {limit} files (soft RLIMIT_NOFILE); \
             {connections} connections will not fit (start it after `ulimit -n 20000`)"
        ),
        _ => {}
    }
}

/// Source addresses to spread connections over: loopback has only ~28k
/// ephemeral ports per source address, so 20k+ connections need several.
#[derive(Debug, Clone)]
pub struct SourceIps {
    /// First address of the range.
    first: Ipv4Addr,
    /// How many consecutive addresses, at least 1.
    count: u32,
}

impl SourceIps {
    /// The address for connection `i`, round-robin over the range.
    pub fn pick(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.first) + (i as u32 % self.count))
    }

    /// How many addresses are in the range.
    pub fn count(&self) -> u32 {
        self.count
    }
}

impl std::fmt::Display for SourceIps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.count {
            1 => write!(f, "{}", self.first),
            n => write!(f, "{}-{}", self.first, self.pick(n as usize - 1)),
        }
    }
}

impl FromStr for SourceIps {
    type Err = String;

    /// `A` or `A-B` (inclusive, A ≤ B), IPv4.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parse = |s: &str| {
            Ipv4Addr::from_str(s.trim()).map_err(|e| format!("{s:?} is not an IPv4 address: {e}"))
        };
        let (first, last) = match text.split_once('-') {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => (parse(text)?, parse(text)?),
        };
        let span = u32::from(last)
            .checked_sub(u32::from(first))
            .ok_or_else(|| format!("range end {last} is below its start {first}"))?;
        let count = span
            .checked_add(1)
            .ok_or_else(|| "range too large".to_string())?;
        Ok(Self { first, count })
    }
}

/// How events are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Via {
    /// `POST /api/v1/executions/{id}/events`, one request at a time per
    /// keep-alive connection (what workers do).
    Http,
    /// WebSocket `publish` ops on kept connections (`fanout`: up to
    /// `--window` unacknowledged per connection; `publish`: one).
    Ws,
}

impl Via {
    /// The flag value, for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Ws => "ws",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_range_is_inclusive_and_round_robin() {
        let ips: SourceIps = "127.0.0.2-127.0.0.9".parse().unwrap();
        assert_eq!(ips.count(), 8);
        assert_eq!(ips.pick(0), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(ips.pick(7), Ipv4Addr::new(127, 0, 0, 9));
        assert_eq!(ips.pick(8), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(ips.to_string(), "127.0.0.2-127.0.0.9");
        assert!("127.0.0.9-127.0.0.2".parse::<SourceIps>().is_err());
        assert_eq!("127.0.0.1".parse::<SourceIps>().unwrap().count(), 1);
    }
}

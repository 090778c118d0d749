//! Helpers shared by the end-to-end tests: real processes, real sockets.
//!
//! `TestHub::spawn` starts the real `exechub` binary on a free port (it logs
//! the bound address; we wait for that line instead of sleeping) and stops it
//! on drop. Clients for HTTP, WebSocket and SSE wrap real connections and put
//! a timeout on every wait, so a broken hub fails a test instead of hanging it.

// Each test binary uses a different part of the helpers.
#![allow(dead_code, unused_imports, missing_docs)]

pub mod faults;
pub mod nats;
pub mod redis;
pub mod sse;
pub mod webhook;
pub mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub use exechub_testkit::cluster;
pub use nats::TestNats;
pub use redis::TestRedis;
pub use sse::SseClient;
pub use ws::WsClient;

/// Median and 90th percentile of `samples` (sorts them).
pub fn median_p90(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.9))
}

/// Upper bound for any single wait in a test.
pub const WAIT: Duration = Duration::from_secs(20);

/// Flags for a hub whose clients may queue many frames but only 64 KiB, and
/// are closed 300 ms after they stop reading: a stalled client is found fast.
pub const SMALL_BYTE_BOUND: [&str; 6] = [
    "--client-queue",
    "100000",
    "--client-queue-bytes",
    "65536",
    "--slow-client-timeout-ms",
    "300",
];

/// Awaits `future` for at most [`WAIT`].
pub async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> Result<T> {
    tokio::time::timeout(WAIT, future)
        .await
        .with_context(|| format!("timed out waiting for {what}"))
}

/// The hub binary: `EXECHUB_BIN`, or built once with the cargo running the tests.
pub fn hub_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("EXECHUB_BIN") {
            return PathBuf::from(bin);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "--quiet", "-p", "exechub", "--bin", "exechub"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the exechub binary failed");
        let exe = std::env::current_exe().expect("test binary path");
        // target/<profile>/deps/<test> → target/<profile>/exechub
        let dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("target dir");
        dir.join("exechub")
    })
    .clone()
}

/// A running `exechub` process.
pub struct TestHub {
    child: Child,
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    logs: Arc<Mutex<String>>,
}

impl TestHub {
    /// Starts a hub with default settings plus `args`.
    pub async fn spawn(args: &[&str]) -> Result<Self> {
        Self::spawn_with_log_level(args, "info").await
    }

    /// Starts a hub with `RUST_LOG` set to `level`.
    pub async fn spawn_with_log_level(args: &[&str], level: &str) -> Result<Self> {
        let mut child = Command::new(hub_binary())
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", level)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting exechub")?;
        let stderr = child.stderr.take().context("stderr")?;
        let logs = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(drain_logs(stderr, Arc::clone(&logs), addr_tx));
        let addr = within("the hub's listening line", addr_rx)
            .await?
            .context("hub exited before listening")?;
        let http = reqwest::Client::builder().timeout(WAIT).build()?;
        Ok(Self {
            child,
            addr,
            http,
            logs,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn events_url(&self, execution_id: &str) -> String {
        self.url(&format!("/api/v1/executions/{execution_id}/events"))
    }

    /// Publishes over HTTP and returns the seq; fails on anything but 202.
    pub async fn publish(&self, execution_id: &str, event_type: &str, data: Value) -> Result<u64> {
        let body = json!({ "event_type": event_type, "data": data });
        let response = self
            .http
            .post(self.events_url(execution_id))
            .json(&body)
            .send()
            .await?;
        if response.status() != 202 {
            bail!(
                "publish answered {}: {}",
                response.status(),
                response.text().await?
            );
        }
        let accepted: Value = response.json().await?;
        accepted["seq"].as_u64().context("202 body has a seq")
    }

    /// `GET /health` as JSON (whatever its status).
    pub async fn health(&self) -> Result<Value> {
        Ok(self
            .http
            .get(self.url("/health"))
            .send()
            .await?
            .json()
            .await?)
    }

    /// Stored events' seqs after `after`.
    pub async fn history(&self, execution_id: &str, after: u64) -> Result<Value> {
        let url = format!(
            "{}?after={after}&limit=10000",
            self.events_url(execution_id)
        );
        Ok(self
            .http
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    pub async fn ws(&self) -> Result<WsClient> {
        WsClient::connect(&format!("ws://{}/ws", self.addr)).await
    }

    pub async fn sse(
        &self,
        execution_id: &str,
        query: &str,
        last_event_id: Option<u64>,
    ) -> Result<SseClient> {
        let url = self.url(&format!("/api/v1/executions/{execution_id}/stream{query}"));
        SseClient::connect(&self.http, &url, last_event_id).await
    }

    /// Sends SIGTERM, as a process manager would.
    pub fn terminate(&self) -> Result<()> {
        let pid = self.child.id().context("hub already exited")?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid)?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        Ok(())
    }

    /// Kills the process outright (SIGKILL), as a crash would.
    pub async fn kill(&mut self) -> Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    pub async fn wait(&mut self) -> Result<ExitStatus> {
        within("the hub to exit", self.child.wait())
            .await?
            .context("waiting for the hub")
    }

    /// The hub's process id.
    pub fn pid(&self) -> Result<u32> {
        self.child.id().context("hub already exited")
    }

    /// The hub's resident memory (`VmRSS`), in bytes.
    pub fn rss(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?))?;
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .context("VmRSS in /proc/<pid>/status")?;
        Ok(kib * 1024)
    }

    /// Polls `/health` until `ready` holds for it (or fails after [`WAIT`]).
    pub async fn health_until(&self, what: &str, ready: impl Fn(&Value) -> bool) -> Result<Value> {
        within(what, async {
            loop {
                if let Ok(health) = self.health().await
                    && ready(&health)
                {
                    return health;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }

    /// Everything the hub logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

async fn drain_logs(
    stderr: tokio::process::ChildStderr,
    logs: Arc<Mutex<String>>,
    addr_tx: tokio::sync::oneshot::Sender<SocketAddr>,
) {
    let mut addr_tx = Some(addr_tx);
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(addr) = line.split("listening on http://").nth(1) {
            // The address ends at a space (text logs) or a quote (JSON logs).
            let addr = addr
                .split(|c: char| c.is_whitespace() || c == '"')
                .next()
                .and_then(|a| a.parse().ok());
            if let (Some(tx), Some(addr)) = (addr_tx.take(), addr) {
                let _ = tx.send(addr);
            }
        }
        if let Ok(mut logs) = logs.lock() {
            logs.push_str(&line);
            logs.push('\n');
        }
    }
}

/// Stops a server process with SIGTERM (so it shuts down cleanly, keeping
/// its data) and waits for it to exit.
pub async fn terminate(mut child: Child, what: &str) -> Result<()> {
    let pid = child
        .id()
        .with_context(|| format!("{what} already exited"))?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid)?),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    within(&format!("{what} to exit"), child.wait()).await??;
    Ok(())
}

/// A unique execution id per test, so tests sharing a hub never collide.
pub fn execution_id(name: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{name}-{}-{n}", std::process::id())
}

/// Asserts `seqs` is exactly `from..=to`: in order, no gap, no duplicate.
pub fn assert_contiguous(seqs: &[u64], from: u64, to: u64) {
    let expected: Vec<u64> = (from..=to).collect();
    if seqs != expected.as_slice() {
        let dupes = seqs.windows(2).filter(|w| w[0] >= w[1]).count();
        panic!(
            "expected seqs {from}..={to} ({} of them), got {} (first {:?}, last {:?}, {dupes} out of order/duplicate)",
            expected.len(),
            seqs.len(),
            seqs.first(),
            seqs.last()
        );
    }
}

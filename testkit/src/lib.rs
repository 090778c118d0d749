//! What exechub's test suites share, so that each exists once: a real
//! `redis-server` on a free loopback port ([`TestRedis`]), a real 6-node
//! Redis Cluster ([`cluster::TestCluster`]), and bearer tokens minted by the
//! hub's own `exechub token` ([`mint_token`]). The store conformance suite
//! (`hub/tests`) and the end-to-end tests (`tests/`) both depend on it, as
//! redis-rs's suites depend on its `redis-test` crate.

pub mod cluster;
pub mod redis;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

pub use redis::TestRedis;

/// The longest any wait here may take before it fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Runs `future`, failing with "timed out waiting for `what`" after [`PATIENCE`].
///
/// # Errors
/// The time-out.
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout(PATIENCE, future)
        .await
        .with_context(|| format!("timed out waiting for {what}"))
}

/// A port that was free a moment ago (redis-server cannot bind port 0 and report it).
///
/// # Errors
/// When no loopback port can be bound.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A token signed with `secret` by `hub token --secret <secret> <args>`
/// (e.g. `["--scope", "publish"]`), as an operator mints one.
///
/// # Errors
/// When the command fails; its stderr says why.
pub fn mint_token(hub: &Path, secret: &str, args: &[&str]) -> Result<String> {
    let output = std::process::Command::new(hub)
        .args(["token", "--secret", secret])
        .args(args)
        .output()
        .with_context(|| format!("running {}", hub.display()))?;
    ensure!(
        output.status.success(),
        "exechub token failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

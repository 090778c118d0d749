//! A real `redis-server` on a free loopback port, stopped (and its data
//! directory removed) on drop. It can be stopped and started again on the
//! same port with its data, to test outages.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

use super::within;

pub struct TestRedis {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

impl TestRedis {
    /// Starts redis-server with append-only persistence, so a restart keeps the data.
    pub async fn spawn() -> Result<Self> {
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!("exechub-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut redis = Self {
            child: None,
            port,
            dir,
        };
        redis.start().await?;
        Ok(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Sends `signal` to the server: `SIGSTOP` stalls it (connections stay
    /// open, nothing is answered), `SIGCONT` lets it go on.
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> Result<()> {
        let child = self.child.as_ref().context("redis-server is stopped")?;
        let pid = child.id().context("redis-server exited")?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(i32::try_from(pid)?), signal)?;
        Ok(())
    }

    /// A plain client, to check what the hub wrote.
    pub fn client(&self) -> Result<redis::Connection> {
        Ok(redis::Client::open(self.url())?.get_connection()?)
    }

    /// (Re)starts the server on the same port and data directory and waits until it answers.
    pub async fn start(&mut self) -> Result<()> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("redis-server not found: install it with `apt-get install redis-server`")?;
        self.child = Some(child);
        within("redis-server to answer PING", async {
            loop {
                let ping = redis::Client::open(self.url())?
                    .get_connection_with_timeout(Duration::from_millis(200))
                    .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
                if ping.is_ok() {
                    return anyhow::Ok(());
                }
                tokio::time::sleep(Duration::from_millis(20)).await; // poll interval
            }
        })
        .await?
    }

    /// Stops the server gracefully (its append-only file keeps every write).
    pub async fn stop(&mut self) -> Result<()> {
        let Some(child) = self.child.take() else {
            bail!("redis is not running")
        };
        super::terminate(child, "redis-server").await
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port that was free a moment ago (redis-server cannot bind port 0 and report it).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Publisher progress, watched by a test: events acknowledged, and 503s seen.
#[derive(Debug, Default, Clone, Copy)]
pub struct Progress {
    pub acked: u64,
    pub refused: u32,
}

/// POSTs event `n` with idempotency key `n-<n>` to the first of `urls` that
/// answers 202, retrying every 50 ms (as a worker would) through 503s, which
/// must carry `Retry-After`, and dead nodes.
pub async fn publish_until_accepted(
    http: &reqwest::Client,
    urls: &[String],
    n: u64,
    progress: &tokio::sync::watch::Sender<Progress>,
) -> Result<u64> {
    let body = serde_json::json!({ "event_type": "tick", "data": { "n": n } });
    within("a publish to be accepted", async {
        loop {
            for url in urls {
                let request = http.post(url).header("Idempotency-Key", format!("n-{n}"));
                match request.json(&body).send().await {
                    Ok(response) if response.status() == 202 => {
                        let accepted: serde_json::Value = response.json().await?;
                        progress.send_modify(|p| p.acked += 1);
                        return accepted["seq"].as_u64().context("seq");
                    }
                    Ok(response) if response.status() == 503 => {
                        anyhow::ensure!(response.headers().contains_key("retry-after"));
                        progress.send_modify(|p| p.refused += 1);
                    }
                    Ok(response) => anyhow::bail!("publish answered {}", response.status()),
                    Err(_) => {} // node down: try the next one
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await; // retry interval
        }
    })
    .await?
}

//! A real `redis-server` on a free loopback port, stopped (and its data
//! directory removed) on drop. It can be stopped and started again on the
//! same port with its data, to test outages.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

use crate::{free_port, within};

/// A `redis-server` with append-only persistence (`appendfsync always`),
/// so [`TestRedis::stop`] and [`TestRedis::start`] keep its data.
pub struct TestRedis {
    child: Option<Child>,
    /// The port it listens on (kept across restarts).
    pub port: u16,
    dir: PathBuf,
}

impl TestRedis {
    /// Starts redis-server with append-only persistence, so a restart keeps the data.
    ///
    /// # Errors
    /// When it cannot be started or does not answer.
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

    /// The server's URL.
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
    ///
    /// # Errors
    /// When it cannot connect.
    pub fn client(&self) -> Result<redis::Connection> {
        Ok(redis::Client::open(self.url())?.get_connection()?)
    }

    /// A plain async connection, to write what the hub would not.
    ///
    /// # Errors
    /// When it cannot connect.
    pub async fn connection(&self) -> Result<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(self.url())?;
        Ok(client.get_multiplexed_async_connection().await?)
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
        terminate(child).await
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

/// Stops `child` with SIGTERM (a graceful shutdown) and waits for it.
async fn terminate(mut child: Child) -> Result<()> {
    let pid = child.id().context("redis-server already exited")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid)?),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    within("redis-server to exit", child.wait()).await??;
    Ok(())
}

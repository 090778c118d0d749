//! A real `nats-server` on a free loopback port, stopped on drop. It can be
//! stopped and started again on the same port, to test outages; with
//! JetStream its store lives in a temporary directory removed on drop.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use super::redis::free_port;
use super::within;

pub struct TestNats {
    child: Option<Child>,
    pub port: u16,
    /// JetStream store directory, when JetStream is enabled.
    jetstream_dir: Option<PathBuf>,
}

impl TestNats {
    /// Starts a core NATS server.
    pub async fn spawn() -> Result<Self> {
        Self::spawn_with(None).await
    }

    /// Starts a server with JetStream enabled.
    pub async fn spawn_jetstream() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "exechub-nats-{}-{}",
            std::process::id(),
            free_port()?
        ));
        std::fs::create_dir_all(&dir)?;
        Self::spawn_with(Some(dir)).await
    }

    async fn spawn_with(jetstream_dir: Option<PathBuf>) -> Result<Self> {
        let mut nats = Self {
            child: None,
            port: free_port()?,
            jetstream_dir,
        };
        nats.start().await?;
        Ok(nats)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// A client of the test's own, to subscribe or inspect streams.
    pub async fn client(&self) -> Result<async_nats::Client> {
        within("a NATS client to connect", async_nats::connect(self.url()))
            .await?
            .context("connecting to nats-server")
    }

    /// (Re)starts the server on the same port and waits until it greets clients.
    pub async fn start(&mut self) -> Result<()> {
        let mut command = Command::new("nats-server");
        command.args(["-a", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(dir) = &self.jetstream_dir {
            command.arg("-js").arg("-sd").arg(dir);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("nats-server not found: install it with `apt-get install nats-server`")?;
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        within("nats-server to greet a client", async {
            loop {
                if greets(&addr).await {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await; // poll interval
            }
        })
        .await
    }

    /// Stops the server (SIGTERM: it closes every client connection).
    pub async fn stop(&mut self) -> Result<()> {
        let Some(child) = self.child.take() else {
            bail!("nats-server is not running")
        };
        super::terminate(child, "nats-server").await
    }
}

/// Whether a NATS server at `addr` accepts a connection and sends its `INFO` line.
async fn greets(addr: &str) -> bool {
    let Ok(Ok(stream)) =
        tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await
    else {
        return false;
    };
    let mut line = String::new();
    let mut reader = BufReader::new(stream);
    let read = reader.read_line(&mut line);
    matches!(
        tokio::time::timeout(Duration::from_millis(500), read).await,
        Ok(Ok(_))
    ) && line.starts_with("INFO ")
}

impl Drop for TestNats {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        if let Some(dir) = &self.jetstream_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

//! Redis for the end-to-end tests: the shared [`TestRedis`] (from
//! `exechub-testkit`), and a publisher that retries through an outage.

use std::time::Duration;

use anyhow::{Context, Result};

pub use exechub_testkit::{TestRedis, free_port};

use super::within;

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

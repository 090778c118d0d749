//! Process-level behaviour: history TTL and graceful shutdown.

mod helpers;

use std::time::{Duration, Instant};

use anyhow::Result;
use exechub_protocol::close;
use helpers::ws::Received;
use helpers::{TestHub, execution_id, within};
use serde_json::json;

#[tokio::test]
async fn history_expires_event_ttl_after_the_last_event() -> Result<()> {
    let hub = TestHub::spawn(&["--event-ttl", "2"]).await?;
    let id = execution_id("ttl");
    let published = Instant::now();
    hub.publish(&id, "only", json!({})).await?;
    assert_eq!(hub.history(&id, 0).await?["last_seq"], 1);
    within("the history to expire", async {
        loop {
            if hub.history(&id, 0).await?["last_seq"] == 0 {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await; // polling interval, not a wait for readiness
        }
    })
    .await??;
    assert!(
        published.elapsed() >= Duration::from_secs(2),
        "expired early: {:?}",
        published.elapsed()
    );
    // A new history starts over at seq 1.
    assert_eq!(hub.publish(&id, "again", json!({})).await?, 1);
    Ok(())
}

#[tokio::test]
async fn sigterm_closes_sockets_with_going_away_and_exits_zero() -> Result<()> {
    let mut hub = TestHub::spawn(&[]).await?;
    let id = execution_id("shutdown");
    let mut ws = hub.ws().await?;
    ws.subscribe(&id, None).await?;
    let mut sse = hub.sse(&id, "", None).await?;
    hub.terminate()?;
    match ws.next().await? {
        Received::Closed(Some(frame)) => assert_eq!(u16::from(frame.code), close::GOING_AWAY),
        other => anyhow::bail!("expected a close frame, got {other:?}"),
    }
    assert!(sse.next_message().await?.is_none(), "SSE stream ends");
    let status = hub.wait().await?;
    assert!(status.success(), "exit status {status:?}");
    assert!(hub.logs().contains("shutting down"));
    Ok(())
}

//! Server-Sent Events: live delivery and resuming with `Last-Event-ID`.

mod helpers;

use anyhow::Result;
use helpers::{SseClient, TestHub, execution_id};
use serde_json::json;

#[tokio::test]
async fn sse_resumes_after_last_event_id() -> Result<()> {
    let hub = TestHub::spawn(&[]).await?;
    let id = execution_id("sse-resume");
    for i in 1..=5 {
        hub.publish(&id, "log", json!({ "i": i })).await?;
    }
    let mut stream = hub.sse(&id, "", Some(3)).await?;
    assert_eq!(stream.next_event().await?.seq, 4);
    assert_eq!(stream.next_event().await?.seq, 5);
    hub.publish(&id, "log", json!({ "i": 6 })).await?;
    let live = stream.next_event().await?;
    assert_eq!((live.seq, live.data["i"].as_u64()), (6, Some(6)));

    // `Last-Event-ID` (sent by EventSource on reconnect) wins over the initial `?after`.
    let mut resumed = hub.sse(&id, "?after=1", Some(5)).await?;
    assert_eq!(resumed.next_event().await?.seq, 6);
    let mut from_query = hub.sse(&id, "?after=1", None).await?;
    assert_eq!(from_query.next_event().await?.seq, 2);
    Ok(())
}

#[tokio::test]
async fn sse_without_position_delivers_only_new_events() -> Result<()> {
    let hub = TestHub::spawn(&[]).await?;
    let id = execution_id("sse-live");
    hub.publish(&id, "old", json!({})).await?;
    let mut stream = hub.sse(&id, "", None).await?;
    hub.publish(&id, "new", json!({})).await?;
    let event = stream.next_event().await?;
    assert_eq!((event.seq, event.event_type.as_str()), (2, "new"));
    Ok(())
}

#[tokio::test]
async fn sse_reports_a_position_that_no_longer_exists() -> Result<()> {
    let hub = TestHub::spawn(&["--max-events-per-execution", "3"]).await?;
    let id = execution_id("sse-lost");
    for _ in 0..6 {
        hub.publish(&id, "log", json!({})).await?;
    }
    let mut stream = hub.sse(&id, "?after=1", None).await?;
    let notice = stream.next_message().await?.expect("a message");
    assert_eq!(notice.event.as_deref(), Some("history_lost"));
    let lost: serde_json::Value = serde_json::from_str(&notice.data)?;
    assert_eq!(
        (&lost["after"], &lost["resume_after"], &lost["reason"]),
        (&json!(1), &json!(3), &json!("trimmed"))
    );
    assert!(
        lost["epoch"]
            .as_str()
            .is_some_and(exechub_protocol::is_epoch)
    );
    assert_eq!(stream.next_event().await?.seq, 4);
    Ok(())
}

#[tokio::test]
async fn sse_rejects_a_bad_last_event_id() -> Result<()> {
    let hub = TestHub::spawn(&[]).await?;
    let url = hub.url(&format!(
        "/api/v1/executions/{}/stream",
        execution_id("sse-bad")
    ));
    let response = hub
        .http
        .get(url)
        .header("Last-Event-ID", "abc")
        .send()
        .await?;
    assert_eq!(response.status(), 422);
    let body: serde_json::Value = response.json().await?;
    assert_eq!(body["detail"][0]["loc"], json!(["header", "last-event-id"]));
    Ok(())
}

/// Streams that open their connection are written straight to their sockets:
/// one whose client stops reading fills its byte bound and is closed as a
/// slow consumer, while one that reads gets every event in order.
#[tokio::test]
async fn a_stalled_stream_is_closed_while_a_reading_one_gets_everything() -> Result<()> {
    let hub = TestHub::spawn(&helpers::SMALL_BYTE_BOUND).await?;
    let id = execution_id("sse-stalled");
    let url = hub.url(&format!("/api/v1/executions/{id}/stream"));
    // A client each, so each stream opens its own connection.
    let stalled = SseClient::connect(&reqwest::Client::new(), &url, None::<u64>).await?;
    let mut reader = SseClient::connect(&reqwest::Client::new(), &url, None::<u64>).await?;
    const EVENTS: u64 = 1000;
    let reading = tokio::spawn(async move {
        let mut seqs = Vec::new();
        while (seqs.len() as u64) < EVENTS {
            seqs.push(reader.next_event().await?.seq);
        }
        anyhow::Ok((reader, seqs))
    });
    // Enough to fill both kernel socket buffers, then the byte bound.
    let padding = "y".repeat(32 * 1024);
    for n in 0..EVENTS {
        hub.publish(&id, "big", json!({ "n": n, "pad": padding }))
            .await?;
    }
    let (_reader, seqs) = reading.await??;
    helpers::assert_contiguous(&seqs, 1, EVENTS);
    hub.health_until("the stalled stream to be closed", |h| {
        h["connections"]["sse"] == 1
    })
    .await?;
    drop(stalled);
    Ok(())
}

//! Exact positions: a history that restarts, a resume past the head, an
//! SSE id of another epoch, and items in Redis that are not the hub's — each
//! ends with the subscriber getting everything that exists after its
//! position, in order, or a typed `history_lost` and then what exists. In
//! memory and Redis modes (and the restarted history on a Redis Cluster),
//! over WebSocket and SSE.

mod helpers;

use anyhow::{Context, Result, ensure};
use exechub_protocol::{LostReason, ServerMsg};
use helpers::{SseClient, TestHub, TestRedis, execution_id};
use redis::Commands;
use serde_json::{Value, json};

/// Waits (polling the history, never sleeping blind) until `id`'s history expired.
async fn expired(hub: &TestHub, id: &str) -> Result<()> {
    helpers::within("the history to expire", async {
        loop {
            if hub.history(id, 0).await?["last_seq"] == 0 {
                return anyhow::Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await?
}

async fn publish_n(hub: &TestHub, id: &str, range: std::ops::RangeInclusive<u64>) -> Result<()> {
    for n in range {
        hub.publish(id, "tick", json!({ "n": n })).await?;
    }
    Ok(())
}

/// The `n` values of the next `count` events on a WebSocket.
async fn ws_ns(client: &mut helpers::WsClient, count: usize) -> Result<Vec<(u64, u64)>> {
    let mut seen = Vec::new();
    for _ in 0..count {
        let event = client.next_event().await?;
        seen.push((event.seq, event.data["n"].as_u64().context("n")?));
    }
    Ok(seen)
}

async fn ws_restart(hub: &TestHub) -> Result<()> {
    let id = execution_id("restart-ws");
    let mut client = hub.ws().await?;
    client.subscribe(&id, Some(0)).await?;
    publish_n(hub, &id, 1..=3).await?;
    ensure!(ws_ns(&mut client, 3).await? == [(1, 1), (2, 2), (3, 3)]);
    expired(hub, &id).await?;
    publish_n(hub, &id, 11..=14).await?;
    match client.next_msg().await? {
        ServerMsg::HistoryLost {
            after,
            resume_after,
            reason,
            epoch,
            ..
        } => {
            ensure!((after, resume_after) == (3, 0), "{after} {resume_after}");
            ensure!(reason == LostReason::Expired, "{reason:?}");
            ensure!(epoch.is_some());
        }
        other => anyhow::bail!("expected history_lost, got {other:?}"),
    }
    let again = ws_ns(&mut client, 4).await?;
    ensure!(again == [(1, 11), (2, 12), (3, 13), (4, 14)], "{again:?}");
    Ok(())
}

async fn sse_restart(hub: &TestHub) -> Result<()> {
    let id = execution_id("restart-sse");
    let mut stream = hub.sse(&id, "", None).await?;
    publish_n(hub, &id, 1..=3).await?;
    for seq in 1..=3 {
        ensure!(stream.next_event().await?.seq == seq);
    }
    expired(hub, &id).await?;
    publish_n(hub, &id, 11..=14).await?;
    let notice = stream.next_message().await?.context("a message")?;
    ensure!(
        notice.event.as_deref() == Some("history_lost"),
        "{notice:?}"
    );
    let lost: Value = serde_json::from_str(&notice.data)?;
    ensure!(lost["reason"] == "expired" && lost["after"] == 3, "{lost}");
    for (seq, n) in [(1, 11), (2, 12), (3, 13), (4, 14)] {
        let event = stream.next_event().await?;
        ensure!(
            (event.seq, event.data["n"].as_u64()) == (seq, Some(n)),
            "{event:?}"
        );
    }
    Ok(())
}

/// Issue case 1: a history expires while subscribers stay connected; the new
/// history's events are announced with `history_lost` (expired), never skipped.
#[tokio::test]
async fn a_restarted_history_is_reported_not_skipped_in_memory() -> Result<()> {
    let hub = TestHub::spawn(&["--event-ttl", "1"]).await?;
    ws_restart(&hub).await?;
    sse_restart(&hub).await
}

#[tokio::test]
async fn a_restarted_history_is_reported_not_skipped_in_redis() -> Result<()> {
    let redis = TestRedis::spawn().await?;
    let hub = TestHub::spawn(&["--event-ttl", "1", "--redis-url", &redis.url()]).await?;
    ws_restart(&hub).await?;
    sse_restart(&hub).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_history_is_reported_not_skipped_on_a_redis_cluster() -> Result<()> {
    let cluster = helpers::cluster::TestCluster::spawn().await?;
    let hub = TestHub::spawn(&["--event-ttl", "1", "--redis-cluster", &cluster.seeds()]).await?;
    ws_restart(&hub).await?;
    sse_restart(&hub).await
}

/// Issue case 2: a position past the head (what an `EventSource` sends after
/// a memory hub restarted) gets `history_lost` (reset) and then, at once,
/// everything that exists.
#[tokio::test]
async fn a_position_past_the_head_is_reset_and_delivered_at_once() -> Result<()> {
    let hub = TestHub::spawn(&[]).await?;
    let id = execution_id("ahead");
    publish_n(&hub, &id, 1..=3).await?;
    for after in ["10", "18446744073709551615"] {
        let mut stream = hub.sse(&id, &format!("?after={after}"), None).await?;
        let notice = stream.next_message().await?.context("a message")?;
        let lost: Value = serde_json::from_str(&notice.data)?;
        ensure!(
            lost["reason"] == "reset" && lost["resume_after"] == 0,
            "{lost}"
        );
        for seq in 1..=3 {
            ensure!(stream.next_event().await?.seq == seq);
        }
    }
    let mut client = hub.ws().await?;
    client.subscribe(&id, Some(10)).await?;
    ensure!(matches!(
        client.next_msg().await?,
        ServerMsg::HistoryLost {
            reason: LostReason::Reset,
            ..
        }
    ));
    ensure!(ws_ns(&mut client, 3).await? == [(1, 1), (2, 2), (3, 3)]);
    Ok(())
}

/// An SSE `Last-Event-ID` of another epoch resumes into the current one
/// through `history_lost`; one of the current epoch resumes exactly.
#[tokio::test]
async fn sse_ids_carry_the_epoch_and_resume_exactly() -> Result<()> {
    let hub = TestHub::spawn(&[]).await?;
    let id = execution_id("sse-epoch");
    publish_n(&hub, &id, 1..=5).await?;
    let epoch = hub.history(&id, 0).await?["epoch"]
        .as_str()
        .context("history pages carry the epoch")?
        .to_owned();
    let url = hub.url(&format!("/api/v1/executions/{id}/stream"));
    let mut exact = SseClient::connect(&hub.http, &url, Some(format!("{epoch}-3"))).await?;
    ensure!(exact.next_event().await?.seq == 4);
    let mut other = SseClient::connect(&hub.http, &url, Some("0123456789abcdef-3")).await?;
    let notice = other.next_message().await?.context("a message")?;
    let lost: Value = serde_json::from_str(&notice.data)?;
    ensure!(
        lost["reason"] == "reset" && lost["epoch"] == epoch.as_str(),
        "{lost}"
    );
    ensure!(other.next_event().await?.seq == 1);
    Ok(())
}

/// Issue case 4: an item in the list that is not the hub's (written by the
/// replaced service, or by hand) is skipped: history answers 200 and
/// subscribers get the hub's events.
#[tokio::test]
async fn foreign_items_in_redis_are_skipped() -> Result<()> {
    let redis = TestRedis::spawn().await?;
    let hub = TestHub::spawn(&["--redis-url", &redis.url()]).await?;
    let id = execution_id("mix");
    publish_n(&hub, &id, 1..=2).await?;
    let key = format!("execution:{id}:events");
    let _: () = redis
        .client()?
        .rpush(&key, r#"{"event_type":"x","data":{}}"#)?;
    publish_n(&hub, &id, 3..=4).await?;
    let page = hub.history(&id, 0).await?;
    let seqs: Vec<u64> = page["events"]
        .as_array()
        .context("events")?
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    ensure!(seqs == [1, 2, 3, 4], "{page}");
    let mut client = hub.ws().await?;
    client.subscribe(&id, Some(1)).await?;
    ensure!(ws_ns(&mut client, 3).await? == [(2, 2), (3, 3), (4, 4)]);
    // With the foreign item first in the list, too.
    let _: () = redis.client()?.lpush(&key, "not json at all")?;
    let page = hub.history(&id, 2).await?;
    ensure!(page["events"].as_array().map(Vec::len) == Some(2), "{page}");
    Ok(())
}

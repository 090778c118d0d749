//! Batch publish: many events in one request, stored atomically with
//! consecutive seqs, validated as a whole, idempotent, delivered in order —
//! over HTTP and WebSocket, on the embedded store and across Redis nodes.

mod helpers;

use anyhow::{Context, Result, ensure};
use exechub_protocol::ServerMsg;
use helpers::{TestHub, TestRedis, assert_contiguous, execution_id};
use serde_json::{Value, json};

fn batch(from: u64, count: u64) -> Value {
    let events: Vec<Value> = (from..from + count)
        .map(|n| json!({ "event_type": "log", "data": { "n": n } }))
        .collect();
    json!({ "events": events })
}

async fn post_batch(
    hub: &TestHub,
    id: &str,
    body: &Value,
    key: Option<&str>,
) -> Result<reqwest::Response> {
    let mut request = hub
        .http
        .post(format!("{}/batch", hub.events_url(id)))
        .json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    Ok(request.send().await?)
}

async fn stored_ns(hub: &TestHub, id: &str) -> Result<Vec<(u64, u64)>> {
    let page = hub.history(id, 0).await?;
    page["events"]
        .as_array()
        .context("events")?
        .iter()
        .map(|e| {
            Ok((
                e["seq"].as_u64().context("seq")?,
                e["data"]["n"].as_u64().context("n")?,
            ))
        })
        .collect()
}

#[tokio::test]
async fn a_batch_is_stored_with_consecutive_seqs_and_delivered_in_order() -> Result<()> {
    let hub = TestHub::spawn(&[]).await?;
    let id = execution_id("batch");
    let mut subscriber = hub.ws().await?;
    subscriber.subscribe(&id, None).await?;
    hub.publish(&id, "first", json!({ "n": 0 })).await?;
    let response = post_batch(&hub, &id, &batch(1, 100), None).await?;
    ensure!(response.status() == 202, "status {}", response.status());
    let accepted: Value = response.json().await?;
    ensure!(
        (
            &accepted["first_seq"],
            &accepted["last_seq"],
            &accepted["count"]
        ) == (&json!(2), &json!(101), &json!(100)),
        "{accepted}"
    );
    let expected: Vec<(u64, u64)> = (1..=101).map(|seq| (seq, seq - 1)).collect();
    ensure!(stored_ns(&hub, &id).await? == expected);
    let seqs = subscriber.events_until(101).await?;
    assert_contiguous(&seqs, 1, 101);
    Ok(())
}

#[tokio::test]
async fn an_invalid_event_rejects_the_whole_batch_with_its_location() -> Result<()> {
    let hub = TestHub::spawn(&["--max-batch-events", "10"]).await?;
    let id = execution_id("batch-bad");
    let body = json!({ "events": [
        { "event_type": "ok", "data": {} },
        { "event_type": "bad", "data": [] },
    ]});
    let response = post_batch(&hub, &id, &body, None).await?;
    ensure!(response.status() == 422, "status {}", response.status());
    let problems: Value = response.json().await?;
    ensure!(
        problems["detail"][0]["loc"] == json!(["body", "events", 1, "data"]),
        "{problems}"
    );
    ensure!(
        hub.history(&id, 0).await?["last_seq"] == 0,
        "something was stored"
    );
    let too_many = post_batch(&hub, &id, &batch(0, 11), None).await?;
    ensure!(too_many.status() == 422);
    let problems: Value = too_many.json().await?;
    ensure!(problems["detail"][0]["type"] == "too_long", "{problems}");
    Ok(())
}

#[tokio::test]
async fn an_oversize_batch_body_is_413() -> Result<()> {
    let hub = TestHub::spawn(&["--max-batch-bytes", "2000"]).await?;
    let response = post_batch(&hub, &execution_id("batch-big"), &batch(0, 200), None).await?;
    ensure!(response.status() == 413, "status {}", response.status());
    Ok(())
}

#[tokio::test]
async fn a_batch_retried_with_its_key_stores_nothing_new() -> Result<()> {
    let hub = TestHub::spawn(&[]).await?;
    let id = execution_id("batch-idem");
    let first = post_batch(&hub, &id, &batch(0, 5), Some("job-9")).await?;
    let first: Value = first.json().await?;
    let retry = post_batch(&hub, &id, &batch(0, 5), Some("job-9")).await?;
    ensure!(retry.headers()["idempotent-replayed"] == "true");
    let retry: Value = retry.json().await?;
    ensure!(first == retry, "{first} vs {retry}");
    ensure!(hub.history(&id, 0).await?["last_seq"] == 5);
    Ok(())
}

#[tokio::test]
async fn a_websocket_publish_with_events_is_acked_with_both_seqs() -> Result<()> {
    let hub = TestHub::spawn(&[]).await?;
    let id = execution_id("batch-ws");
    let mut client = hub.ws().await?;
    client.subscribe(&id, None).await?;
    let mut request = batch(1, 3);
    request["op"] = json!("publish");
    request["execution_id"] = json!(id);
    client.request(request).await?;
    let mut acked = false;
    let mut seqs = Vec::new();
    while !acked || seqs.len() < 3 {
        match client.next_msg().await? {
            ServerMsg::Ack { seq, first_seq, .. } => {
                ensure!((first_seq, seq) == (Some(1), 3), "{first_seq:?} {seq}");
                acked = true;
            }
            ServerMsg::Event { event, .. } => seqs.push(event.seq),
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }
    assert_contiguous(&seqs, 1, 3);
    Ok(())
}

#[tokio::test]
async fn a_batch_reaches_subscribers_on_another_node_in_order() -> Result<()> {
    let redis = TestRedis::spawn().await?;
    let a = TestHub::spawn(&["--redis-url", &redis.url()]).await?;
    let b = TestHub::spawn(&["--redis-url", &redis.url()]).await?;
    let id = execution_id("batch-redis");
    let mut subscriber = b.ws().await?;
    subscriber.subscribe(&id, None).await?;
    for round in 0..3 {
        let response = post_batch(&a, &id, &batch(round * 100, 100), None).await?;
        ensure!(response.status() == 202, "status {}", response.status());
    }
    // Each live event is whole: its own seq, id, type and data (node b
    // rebuilds them from the batch's pub/sub message).
    for seq in 1..=300 {
        let event = subscriber.next_event().await?;
        ensure!(
            (
                event.seq,
                event.execution_id.as_str(),
                event.event_type.as_str()
            ) == (seq, id.as_str(), "log"),
            "event {seq}: {event:?}"
        );
        ensure!(
            event.data.get("n") == Some(&json!(seq - 1)),
            "event {seq}: {event:?}"
        );
    }
    let expected: Vec<(u64, u64)> = (1..=300).map(|seq| (seq, seq - 1)).collect();
    ensure!(stored_ns(&a, &id).await? == expected);
    Ok(())
}

//! WebSocket delivery: multiplexed subscriptions, publish, replay-then-live,
//! malformed frames, and slow consumers.

mod helpers;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Result, bail};
use exechub_protocol::{ErrorCode, RequestId, ServerMsg, close};
use helpers::ws::Received;
use helpers::{TestHub, assert_contiguous, execution_id, within};
use serde_json::json;

#[tokio::test]
async fn ws_subscriber_receives_events_published_over_http() -> Result<()> {
    let hub = TestHub::spawn(&[]).await?;
    let (a, b) = (execution_id("ws-a"), execution_id("ws-b"));
    let mut ws = hub.ws().await?;
    ws.subscribe(&a, None).await?;
    ws.subscribe(&b, None).await?;
    hub.publish(&a, "status_changed", json!({ "status": "running" }))
        .await?;
    hub.publish(&b, "log", json!({ "line": "hello" })).await?;
    let mut seen = [ws.next_event().await?, ws.next_event().await?];
    seen.sort_by(|x, y| x.execution_id.cmp(&y.execution_id));
    assert_eq!(
        (seen[0].execution_id.as_str(), seen[0].seq),
        (a.as_str(), 1)
    );
    assert_eq!(seen[0].data["status"], "running");
    assert_eq!(
        (seen[1].execution_id.as_str(), seen[1].event_type.as_str()),
        (b.as_str(), "log")
    );
    Ok(())
}

/// `--worker-threads 1`: the whole hub on one thread, including in-place
/// writes from the publisher's context, still delivers everything in order.
#[tokio::test]
async fn a_hub_on_one_worker_thread_delivers_every_event_in_order() -> Result<()> {
    let hub = TestHub::spawn(&["--worker-threads", "1"]).await?;
    let id = execution_id("one-thread");
    let mut subscribers = Vec::new();
    for _ in 0..3 {
        let mut ws = hub.ws().await?;
        ws.subscribe(&id, None).await?;
        subscribers.push(ws);
    }
    for n in 0..50 {
        hub.publish(&id, "log", json!({ "n": n })).await?;
    }
    for ws in &mut subscribers {
        assert_contiguous(&ws.events_until(50).await?, 1, 50);
    }
    Ok(())
}

#[tokio::test]
async fn ws_publish_is_acked_and_seen_by_an_sse_subscriber() -> Result<()> {
    let hub = TestHub::spawn(&[]).await?;
    let id = execution_id("ws-pub");
    let mut sse = hub.sse(&id, "", None).await?;
    let mut ws = hub.ws().await?;
    assert_eq!(
        ws.publish(&id, "tool_started", json!({ "tool": "ls" }))
            .await?,
        1
    );
    assert_eq!(
        ws.publish(&id, "tool_finished", json!({ "ok": true }))
            .await?,
        2
    );
    let first = sse.next_event().await?;
    assert_eq!((first.seq, first.event_type.as_str()), (1, "tool_started"));
    assert_eq!(sse.next_event().await?.data["ok"], true);

    let id_str =
        json!({ "op": "publish", "id": "p-1", "execution_id": id, "event_type": "x", "data": {} });
    ws.send_text(&id_str.to_string()).await?;
    match ws.next_msg().await? {
        ServerMsg::Ack {
            id: Some(RequestId::Str(rid)),
            seq: 3,
            ..
        } if rid == "p-1" => Ok(()),
        other => bail!("expected ack for p-1, got {other:?}"),
    }
}

/// Publishes sent without waiting for their acks (the hub has several in
/// flight per connection) are stored, answered and delivered in the order
/// they were sent.
#[tokio::test]
async fn pipelined_publishes_keep_their_order() -> Result<()> {
    let hub = TestHub::spawn(&[]).await?;
    let id = execution_id("pipelined");
    let mut subscriber = hub.ws().await?;
    subscriber.subscribe(&id, None).await?;
    let mut publisher = hub.ws().await?;
    let events = publisher.publish_pipelined(&id, 200).await?;
    for seq in 1..=events {
        let event = subscriber.next_event().await?;
        assert_eq!((event.seq, &event.data["n"]), (seq, &json!(seq)));
    }
    Ok(())
}

#[tokio::test]
async fn ws_publish_errors_carry_the_same_detail_as_a_422() -> Result<()> {
    let hub = TestHub::spawn(&[]).await?;
    let id = execution_id("ws-invalid");
    let mut ws = hub.ws().await?;
    let bad = json!({ "op": "publish", "execution_id": id, "event_type": 5, "data": [] });
    ws.request(bad).await?;
    let ServerMsg::Error {
        code,
        detail: Some(detail),
        ..
    } = ws.next_msg().await?
    else {
        bail!("expected error")
    };
    assert_eq!(code, ErrorCode::InvalidRequest);
    let http = hub
        .http
        .post(hub.events_url(&id))
        .header("content-type", "application/json")
        .body(r#"{"event_type":5,"data":[]}"#)
        .send()
        .await?;
    let http: serde_json::Value = http.json().await?;
    assert_eq!(serde_json::to_value(&detail)?, http["detail"]);
    assert_eq!(hub.history(&id, 0).await?["last_seq"], 0);
    Ok(())
}

/// Subscribes with `after` while publishers are mid-stream, many times: the
/// subscriber must see exactly after+1..=N, in order, whatever the interleaving.
#[tokio::test]
async fn replay_then_live_has_no_gap_under_concurrent_publish() -> Result<()> {
    const ROUNDS: u64 = 25;
    const TOTAL: u64 = 300;
    let hub = Arc::new(TestHub::spawn(&[]).await?);
    for round in 0..ROUNDS {
        let id = execution_id("replay");
        let published = Arc::new(AtomicU64::new(0));
        let (progress_tx, mut progress) = tokio::sync::watch::channel(0u64);
        let publishers: Vec<_> = (0..3)
            .map(|_| {
                let (hub, id, published, progress_tx) = (
                    hub.clone(),
                    id.clone(),
                    published.clone(),
                    progress_tx.clone(),
                );
                tokio::spawn(async move {
                    while published.fetch_add(1, Ordering::SeqCst) < TOTAL {
                        let seq = hub.publish(&id, "tick", json!({ "round": round })).await?;
                        progress_tx.send_modify(|max| *max = (*max).max(seq));
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        // Join mid-stream, at a different point each round.
        let join_at = 20 + round * 7;
        within(
            "publishers to make progress",
            progress.wait_for(|n| *n >= join_at),
        )
        .await??;
        let after = join_at / 2;
        let mut ws = hub.ws().await?;
        ws.subscribe(&id, Some(after)).await?;
        let seqs = ws.events_until(TOTAL).await?;
        assert_contiguous(&seqs, after + 1, TOTAL);
        for publisher in publishers {
            publisher.await??;
        }
    }
    Ok(())
}

#[tokio::test]
async fn unsubscribe_stops_delivery() -> Result<()> {
    let hub = TestHub::spawn(&[]).await?;
    let id = execution_id("unsub");
    let mut ws = hub.ws().await?;
    ws.subscribe(&id, None).await?;
    hub.publish(&id, "a", json!({})).await?;
    assert_eq!(ws.next_event().await?.seq, 1);
    ws.request(json!({ "op": "unsubscribe", "execution_id": id }))
        .await?;
    assert!(matches!(
        ws.next_msg().await?,
        ServerMsg::Unsubscribed { .. }
    ));
    hub.publish(&id, "b", json!({})).await?;
    // Had the first subscription survived, seq 2 would arrive before seq 3.
    ws.subscribe(&id, Some(2)).await?;
    hub.publish(&id, "c", json!({})).await?;
    assert_eq!(ws.next_event().await?.seq, 3);
    ws.request(json!({ "op": "unsubscribe", "execution_id": "never-subscribed" }))
        .await?;
    let msg = ws.next_msg().await?;
    assert!(
        matches!(
            msg,
            ServerMsg::Error {
                code: ErrorCode::NotSubscribed,
                ..
            }
        ),
        "{msg:?}"
    );
    Ok(())
}

#[tokio::test]
async fn malformed_frames_get_errors_and_the_connection_stays_usable() -> Result<()> {
    let hub = TestHub::spawn(&[]).await?;
    let id = execution_id("malformed");
    let mut ws = hub.ws().await?;
    let cases = [
        ("not json", ErrorCode::BadFrame, None),
        ("[1,2]", ErrorCode::BadFrame, None),
        (r#"{"id":9}"#, ErrorCode::BadFrame, Some(RequestId::Num(9))),
        (
            r#"{"op":"fly","id":"x"}"#,
            ErrorCode::UnknownOp,
            Some(RequestId::Str("x".into())),
        ),
        (
            r#"{"op":"subscribe","id":3,"execution_id":""}"#,
            ErrorCode::InvalidRequest,
            Some(RequestId::Num(3)),
        ),
        (
            r#"{"op":"subscribe","id":4,"execution_id":"e","after":-1}"#,
            ErrorCode::InvalidRequest,
            Some(RequestId::Num(4)),
        ),
    ];
    for (frame, expected, expected_id) in cases {
        ws.send_text(frame).await?;
        match ws.next_msg().await? {
            ServerMsg::Error { code, id, .. } => {
                assert_eq!((code, id), (expected, expected_id), "{frame}")
            }
            other => bail!("{frame}: expected error, got {other:?}"),
        }
    }
    ws.send_binary(b"\x00\x01").await?;
    assert!(matches!(
        ws.next_msg().await?,
        ServerMsg::Error {
            code: ErrorCode::BadFrame,
            ..
        }
    ));
    ws.request(json!({ "op": "ping" })).await?;
    assert!(matches!(
        ws.next_msg().await?,
        ServerMsg::Pong { id: Some(_) }
    ));
    assert_eq!(
        ws.publish(&id, "still", json!({ "usable": true })).await?,
        1
    );
    ws.subscribe(&id, Some(0)).await?;
    assert_eq!(ws.next_event().await?.data["usable"], true);
    ws.request(json!({ "op": "subscribe", "execution_id": id }))
        .await?;
    assert!(matches!(
        ws.next_msg().await?,
        ServerMsg::Error {
            code: ErrorCode::AlreadySubscribed,
            ..
        }
    ));
    Ok(())
}

/// One subscriber never reads; the other must still get all 10,000 events,
/// and the stalled one is disconnected as a slow consumer.
#[tokio::test]
async fn slow_subscriber_is_disconnected_while_a_fast_one_gets_everything() -> Result<()> {
    const EVENTS: u64 = 10_000;
    let hub = TestHub::spawn(&["--client-queue", "256", "--slow-client-timeout-ms", "500"]).await?;
    let id = execution_id("slow");
    let mut slow = hub.ws().await?;
    slow.subscribe(&id, None).await?;
    let mut fast = hub.ws().await?;
    fast.subscribe(&id, None).await?;
    let reader = tokio::spawn(async move { fast.events_until(EVENTS).await });

    // 4 KiB per event: 40 MB in all, far beyond what socket buffers absorb.
    let padding = "p".repeat(4096);
    let mut publisher = hub.ws().await?;
    for batch in 0..EVENTS / 100 {
        for i in 0..100 {
            let n = batch * 100 + i;
            publisher.request(json!({ "op": "publish", "execution_id": id, "event_type": "tick", "data": { "n": n, "pad": padding } })).await?;
        }
        for _ in 0..100 {
            if !matches!(publisher.next_msg().await?, ServerMsg::Ack { .. }) {
                bail!("publish not acked");
            }
        }
    }
    let seqs = reader.await??;
    assert_contiguous(&seqs, 1, EVENTS);

    // The hub decided to drop the stalled client, and said why.
    let logged = format!("code={}", close::SLOW_CONSUMER);
    within("the hub to close the slow subscriber", async {
        while !hub.logs().contains(&logged) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await; // poll interval
        }
    })
    .await?;
    // The stalled client finds some events, then the end of the connection:
    // the 4001 close frame when it reads within the hub's close grace period,
    // or a reset after it (a client that never reads cannot be told anything).
    let mut received = 0u64;
    loop {
        match slow.next().await {
            Ok(Received::Msg(ServerMsg::Event { .. })) => received += 1,
            Ok(Received::Msg(other)) => bail!("unexpected {other:?}"),
            Ok(Received::Closed(frame)) => {
                let code = frame.map(|frame| u16::from(frame.code));
                assert!(
                    matches!(code, Some(close::SLOW_CONSUMER) | None),
                    "closed with {code:?}"
                );
                break;
            }
            Err(error) => {
                assert!(error.to_string().contains("reset"), "{error}");
                break;
            }
        }
    }
    assert!(received < EVENTS, "the stalled subscriber got everything");
    Ok(())
}

/// An event with more subscribers than are written in place from the
/// publisher's context (`feeds::WRITE_IN_PLACE`, 128): the first ones get
/// their frames written at once, the others through their connections' tasks
/// — every subscriber gets every event once, in order, while publishes go on.
#[tokio::test]
async fn a_large_fan_out_reaches_every_subscriber_in_order() -> Result<()> {
    const SUBSCRIBERS: usize = 300;
    const EVENTS: u64 = 50;
    let hub = TestHub::spawn(&[]).await?;
    let id = execution_id("large-fan-out");
    let mut readers = Vec::with_capacity(SUBSCRIBERS);
    for _ in 0..SUBSCRIBERS {
        let mut ws = hub.ws().await?;
        ws.subscribe(&id, None).await?;
        readers.push(tokio::spawn(async move { ws.events_until(EVENTS).await }));
    }
    for n in 0..EVENTS {
        hub.publish(&id, "tick", json!({ "n": n })).await?;
    }
    for reader in readers {
        assert_contiguous(&reader.await??, 1, EVENTS);
    }
    Ok(())
}

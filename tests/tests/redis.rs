//! Redis persistence and multi-node fan-out, against real redis-server and hub processes.

mod helpers;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use exechub_protocol::{ErrorCode, RequestId, ServerMsg, close};
use helpers::redis::{Progress, publish_until_accepted};
use helpers::ws::Received;
use helpers::{TestHub, TestRedis, assert_contiguous, execution_id, within};
use redis::Commands;
use serde_json::{Value, json};
use tokio::sync::watch;

async fn node(redis: &TestRedis) -> Result<TestHub> {
    TestHub::spawn(&["--redis-url", &redis.url()]).await
}

fn stored_seqs(redis: &TestRedis, id: &str) -> Result<Vec<u64>> {
    let items: Vec<String> = redis
        .client()?
        .lrange(format!("execution:{id}:events"), 0, -1)?;
    items
        .iter()
        .map(|item| {
            let event: Value = serde_json::from_str(item)?;
            event["seq"].as_u64().context("stored item has a seq")
        })
        .collect()
}

/// Publishes events 0..total through `urls` in order, returning the acknowledged seqs.
fn spawn_publisher(
    http: reqwest::Client,
    urls: Vec<String>,
    total: u64,
) -> (
    tokio::task::JoinHandle<Result<Vec<u64>>>,
    watch::Receiver<Progress>,
) {
    let (progress_tx, progress) = watch::channel(Progress::default());
    let task = tokio::spawn(async move {
        let mut acked = Vec::new();
        for n in 0..total {
            acked.push(publish_until_accepted(&http, &urls, n, &progress_tx).await?);
        }
        Ok(acked)
    });
    (task, progress)
}

#[tokio::test]
async fn events_live_in_the_seed_list_with_a_ttl() -> Result<()> {
    let redis = TestRedis::spawn().await?;
    let hub = node(&redis).await?;
    let id = execution_id("seed-key");
    hub.publish(&id, "tool_started", json!({ "tool": "grep" }))
        .await?;
    hub.publish(&id, "log", json!({ "line": "x" })).await?;
    let mut client = redis.client()?;
    let items: Vec<String> = client.lrange(format!("execution:{id}:events"), 0, -1)?;
    assert_eq!(items.len(), 2);
    let first: Value = serde_json::from_str(&items[0])?;
    assert_eq!(
        (first["seq"].as_u64(), first["event_type"].as_str()),
        (Some(1), Some("tool_started"))
    );
    assert_eq!(first["data"], json!({ "tool": "grep" }));
    assert!(first["timestamp"].is_string());
    let ttl: i64 = client.ttl(format!("execution:{id}:events"))?;
    // One second of slack: TTLs are refreshed with the summary, at least once a second.
    assert!((3590..=3601).contains(&ttl), "TTL {ttl}");
    let health: Value = hub.health().await?;
    assert_eq!(
        (
            health["status"].as_str(),
            health["store"]["backend"].as_str()
        ),
        (Some("ok"), Some("redis"))
    );
    Ok(())
}

/// Concurrent appends go to Redis in groups (one script call for many), yet
/// each event gets its own answer: a key of the wrong type refuses only its
/// own execution's events, an ended execution answers 409, a retried
/// idempotency key its original seq, and every other execution gets
/// contiguous seqs.
#[tokio::test]
async fn grouped_appends_answer_each_event_on_its_own() -> Result<()> {
    const TASKS: usize = 16;
    const ROUNDS: usize = 40;
    let redis = TestRedis::spawn().await?;
    let hub = Arc::new(node(&redis).await?);
    let prefix = execution_id("group");
    let broken = format!("{prefix}-broken");
    redis
        .client()?
        .set::<_, _, ()>(format!("execution:{broken}:events"), "not a list")?;
    let ended = format!("{prefix}-ended");
    hub.publish(&ended, "execution_completed", json!({}))
        .await?;
    let calls_before = evalsha_calls(&redis)?;
    let http = reqwest::Client::new();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (hub, http, prefix) = (hub.clone(), http.clone(), prefix.clone());
            tokio::spawn(async move {
                // (execution, status, seq) of every publish, retries included.
                let mut answers = Vec::new();
                for round in 0..ROUNDS {
                    let target = match (t + round) % 10 {
                        8 => format!("{prefix}-broken"),
                        9 => format!("{prefix}-ended"),
                        n => format!("{prefix}-{n}"),
                    };
                    let key = format!("{t}-{round}");
                    // Every fourth publish is sent twice with its key.
                    let sends = if round % 4 == 0 { 2 } else { 1 };
                    for _ in 0..sends {
                        let response = http
                            .post(hub.events_url(&target))
                            .header("Idempotency-Key", &key)
                            .json(&json!({ "event_type": "tick", "data": { "t": t, "round": round } }))
                            .send()
                            .await?;
                        let status = response.status().as_u16();
                        let body: Value = response.json().await.unwrap_or(Value::Null);
                        answers.push((target.clone(), key.clone(), status, body["seq"].as_u64()));
                    }
                }
                anyhow::Ok(answers)
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.extend(task.await??);
    }
    let mut seqs: std::collections::HashMap<String, Vec<u64>> = Default::default();
    let mut by_key: std::collections::HashMap<String, u64> = Default::default();
    for (target, key, status, seq) in &answers {
        if *target == broken {
            assert_eq!(
                *status, 500,
                "{target}: a list of the wrong type is refused"
            );
        } else if *target == ended {
            assert_eq!(*status, 409, "{target}: an ended execution takes nothing");
        } else {
            assert_eq!(*status, 202, "{target}");
            let seq = seq.context("202 has a seq")?;
            match by_key.insert(format!("{target}/{key}"), seq) {
                // The retry of an idempotent publish: the original seq.
                Some(first) => assert_eq!(first, seq, "{target}/{key} replayed"),
                None => seqs.entry(target.clone()).or_default().push(seq),
            }
        }
    }
    assert_eq!(seqs.len(), 8);
    for (target, mut stored) in seqs {
        stored.sort_unstable();
        let n = stored.len() as u64;
        assert_contiguous(&stored, 1, n);
        assert_contiguous(&stored_seqs(&redis, &target)?, 1, n);
    }
    // Fewer script calls than publishes: they were grouped.
    let calls = evalsha_calls(&redis)? - calls_before;
    assert!(
        calls < answers.len() as u64,
        "{calls} script calls for {} publishes",
        answers.len()
    );
    Ok(())
}

/// `EVALSHA` calls Redis has served so far.
fn evalsha_calls(redis: &TestRedis) -> Result<u64> {
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut redis.client()?)?;
    let line = stats
        .lines()
        .find(|line| line.starts_with("cmdstat_evalsha:"))
        .unwrap_or("cmdstat_evalsha:calls=0,");
    let calls = line
        .split(['=', ','])
        .nth(1)
        .context("calls field")?
        .parse()?;
    Ok(calls)
}

/// Publishes pipelined on one WebSocket go through the grouped appends in
/// the order sent: stored, acknowledged and delivered (across nodes) in it.
#[tokio::test]
async fn pipelined_websocket_publishes_are_stored_in_the_order_sent() -> Result<()> {
    let redis = TestRedis::spawn().await?;
    let (a, b) = (node(&redis).await?, node(&redis).await?);
    let id = execution_id("pipelined");
    let mut subscriber = b.ws().await?;
    subscriber.subscribe(&id, None).await?;
    let mut publisher = a.ws().await?;
    let events = publisher.publish_pipelined(&id, 300).await?;
    let stored: Vec<String> = redis
        .client()?
        .lrange(format!("execution:{id}:events"), 0, -1)?;
    assert_eq!(stored.len() as u64, events);
    for (k, item) in (1..).zip(&stored) {
        let event: Value = serde_json::from_str(item)?;
        assert_eq!((&event["seq"], &event["data"]["n"]), (&json!(k), &json!(k)));
    }
    for seq in 1..=events {
        let event = subscriber.next_event().await?;
        assert_eq!((event.seq, &event.data["n"]), (seq, &json!(seq)));
    }
    Ok(())
}

/// A Redis that lost the append scripts (`SCRIPT FLUSH`, or a restart):
/// an append alone on its way is made again once the hub has loaded them;
/// appends with later ones already on their way fail as unavailable rather
/// than land behind those. What is stored keeps the order sent.
#[tokio::test]
async fn appends_after_a_script_flush_are_retried_or_fail_but_never_out_of_order() -> Result<()> {
    let redis = TestRedis::spawn().await?;
    let hub = node(&redis).await?;
    let id = execution_id("flushed");
    let flush = || -> Result<()> {
        redis::cmd("SCRIPT")
            .arg("FLUSH")
            .exec(&mut redis.client()?)?;
        Ok(())
    };
    let mut ws = hub.ws().await?;
    assert_eq!(ws.publish(&id, "log", json!({ "n": 0 })).await?, 1);
    flush()?;
    // Alone on its way: loaded and made again, not refused.
    assert_eq!(ws.publish(&id, "log", json!({ "n": 1 })).await?, 2);
    flush()?;
    let mut sent = Vec::new();
    for n in 2..=51 {
        let frame =
            json!({ "op": "publish", "execution_id": id, "event_type": "log", "data": { "n": n } });
        sent.push(ws.request(frame).await?);
    }
    let (mut refused, mut acked) = (0, Vec::new());
    for id in sent {
        match ws.next_msg().await? {
            ServerMsg::Error {
                code: ErrorCode::Unavailable,
                id: Some(RequestId::Num(n)),
                ..
            } if n == id && acked.is_empty() => refused += 1,
            ServerMsg::Ack {
                id: Some(RequestId::Num(n)),
                seq,
                ..
            } if n == id => acked.push(seq),
            other => {
                bail!("publish {id}: expected an ack, or unavailable before any ack; got {other:?}")
            }
        }
    }
    assert_contiguous(&acked, 3, 52 - refused);
    // Stored in the order sent: the refused ones are simply missing.
    let stored: Vec<String> = redis
        .client()?
        .lrange(format!("execution:{id}:events"), 0, -1)?;
    let ns: Vec<u64> = stored
        .iter()
        .map(|item| -> Result<u64> {
            let event: Value = serde_json::from_str(item)?;
            event["data"]["n"]
                .as_u64()
                .context("stored event has its n")
        })
        .collect::<Result<_>>()?;
    let expected: Vec<u64> = [0, 1].into_iter().chain(refused + 2..=51).collect();
    assert_eq!(ns, expected);
    Ok(())
}

/// Publishes on their way when the hub shuts down are answered before its
/// close frame. With Redis stalled, a `ping` sent after five publishes is
/// answered while they wait (they are pipelined); the hub is told to stop,
/// Redis goes on, and the client gets the five acks, in order, then 1001.
#[tokio::test]
async fn publishes_in_flight_at_shutdown_are_answered_before_the_close() -> Result<()> {
    use nix::sys::signal::Signal;
    let redis = TestRedis::spawn().await?;
    let hub = node(&redis).await?;
    let id = execution_id("shutdown");
    let mut ws = hub.ws().await?;
    assert_eq!(ws.publish(&id, "log", json!({ "n": 0 })).await?, 1);
    redis.signal(Signal::SIGSTOP)?;
    let mut sent = Vec::new();
    for n in 1..=5 {
        let frame =
            json!({ "op": "publish", "execution_id": id, "event_type": "log", "data": { "n": n } });
        sent.push(ws.request(frame).await?);
    }
    ws.request(json!({ "op": "ping" })).await?;
    let pong = ws.next_msg().await;
    hub.terminate()?;
    within("the hub's shutdown", async {
        while !hub.logs().contains("shutting down") {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await?;
    redis.signal(Signal::SIGCONT)?;
    assert!(matches!(pong?, ServerMsg::Pong { .. }), "the ping's answer");
    for (n, id) in (2..).zip(sent) {
        assert_eq!(ws.ack(id).await?, n, "the seq of ack {id}");
    }
    match ws.next().await? {
        Received::Closed(Some(frame)) => assert_eq!(u16::from(frame.code), close::GOING_AWAY),
        other => bail!("expected the close, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn concurrent_publishers_on_two_nodes_get_unique_contiguous_seqs() -> Result<()> {
    let redis = TestRedis::spawn().await?;
    let nodes = Arc::new([node(&redis).await?, node(&redis).await?]);
    let id = execution_id("two-nodes");
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let (nodes, id) = (nodes.clone(), id.clone());
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..50 {
                    seqs.push(
                        nodes[t % 2]
                            .publish(&id, "tick", json!({ "t": t, "i": i }))
                            .await?,
                    );
                }
                anyhow::Ok(seqs)
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.extend(task.await??);
    }
    seqs.sort_unstable();
    assert_contiguous(&seqs, 1, 400);
    assert_contiguous(&stored_seqs(&redis, &id)?, 1, 400);
    Ok(())
}

#[tokio::test]
async fn subscriber_on_one_node_gets_events_published_on_the_other_exactly_once_in_order()
-> Result<()> {
    let redis = TestRedis::spawn().await?;
    let (a, b) = (node(&redis).await?, node(&redis).await?);
    let id = execution_id("cross-node");
    let mut ws = a.ws().await?;
    ws.subscribe(&id, None).await?;
    let mut sse = a.sse(&id, "", None).await?;
    for i in 0..100 {
        let publisher = if i % 3 == 0 { &a } else { &b };
        publisher.publish(&id, "tick", json!({ "i": i })).await?;
    }
    assert_contiguous(&ws.events_until(100).await?, 1, 100);
    for seq in 1..=100 {
        assert_eq!(sse.next_event().await?.seq, seq);
    }
    // Nothing more: the next message is the answer to a ping.
    ws.request(json!({ "op": "ping" })).await?;
    assert!(matches!(
        ws.next_msg().await?,
        exechub_protocol::ServerMsg::Pong { .. }
    ));
    Ok(())
}

#[tokio::test]
async fn replay_then_live_across_nodes_under_concurrent_publishing() -> Result<()> {
    const ROUNDS: u64 = 12;
    const TOTAL: u64 = 200;
    let redis = TestRedis::spawn().await?;
    let (a, b) = (node(&redis).await?, Arc::new(node(&redis).await?));
    for round in 0..ROUNDS {
        let id = execution_id("replay-nodes");
        let published = Arc::new(AtomicU64::new(0));
        let (progress_tx, mut progress) = watch::channel(0u64);
        let publishers: Vec<_> = (0..3)
            .map(|_| {
                let (b, id, published, progress_tx) = (
                    b.clone(),
                    id.clone(),
                    published.clone(),
                    progress_tx.clone(),
                );
                tokio::spawn(async move {
                    while published.fetch_add(1, Ordering::SeqCst) < TOTAL {
                        let seq = b.publish(&id, "tick", json!({})).await?;
                        progress_tx.send_modify(|max| *max = (*max).max(seq));
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        let join_at = 10 + round * 11;
        within(
            "publishers to make progress",
            progress.wait_for(|n| *n >= join_at),
        )
        .await??;
        let mut ws = a.ws().await?;
        ws.subscribe(&id, Some(join_at / 2)).await?;
        assert_contiguous(&ws.events_until(TOTAL).await?, join_at / 2 + 1, TOTAL);
        for publisher in publishers {
            publisher.await??;
        }
    }
    Ok(())
}

#[tokio::test]
async fn idempotent_retry_on_another_node_returns_the_original_seq() -> Result<()> {
    let redis = TestRedis::spawn().await?;
    let (a, b) = (node(&redis).await?, node(&redis).await?);
    let id = execution_id("idem");
    let body = json!({ "event_type": "tool_finished", "data": { "ok": true } });
    let mut answers = Vec::new();
    for hub in [&a, &b] {
        let response = hub
            .http
            .post(hub.events_url(&id))
            .header("Idempotency-Key", "job-7")
            .json(&body)
            .send()
            .await?;
        assert_eq!(response.status(), 202);
        let replayed = response.headers().get("idempotent-replayed").cloned();
        answers.push((replayed, response.json::<Value>().await?));
    }
    assert_eq!(answers[0].1, answers[1].1, "same seq and timestamp");
    assert_eq!(
        answers[1].0.as_ref().map(|h| h.as_bytes()),
        Some(&b"true"[..])
    );
    assert_eq!(stored_seqs(&redis, &id)?, vec![1]);
    Ok(())
}

/// Redis goes away mid-stream and comes back with its data: publishes answer
/// 503 meanwhile, and the subscriber ends with every acknowledged event once.
#[tokio::test]
async fn redis_restart_mid_stream_loses_nothing_acknowledged() -> Result<()> {
    const TOTAL: u64 = 200;
    let mut redis = TestRedis::spawn().await?;
    let (a, b) = (node(&redis).await?, node(&redis).await?);
    let id = execution_id("outage");
    let mut ws = a.ws().await?;
    ws.subscribe(&id, Some(0)).await?;

    let (publisher, mut progress) = spawn_publisher(b.http.clone(), vec![b.events_url(&id)], TOTAL);
    within("first publishes", progress.wait_for(|p| p.acked >= 50)).await??;
    redis.stop().await?;
    within(
        "a publish refused with 503",
        progress.wait_for(|p| p.refused > 0),
    )
    .await??;
    let health = b.http.get(b.url("/health")).send().await?;
    assert_eq!(health.status(), 503);
    assert_eq!(health.json::<Value>().await?["status"], "degraded");
    redis.start().await?;

    let mut acked = publisher.await??;
    acked.sort_unstable();
    assert_contiguous(&acked, 1, TOTAL);
    assert_contiguous(&ws.events_until(TOTAL).await?, 1, TOTAL);
    assert_contiguous(&stored_seqs(&redis, &id)?, 1, TOTAL);
    Ok(())
}

/// A node dies with SIGKILL while publishers and a subscriber use it: the
/// subscriber resumes on the other node from its last seq and, in the end,
/// has seen every acknowledged event exactly once, in order.
#[tokio::test]
async fn killed_node_loses_nothing_and_clients_resume_on_another() -> Result<()> {
    const TOTAL: u64 = 200;
    let redis = TestRedis::spawn().await?;
    let (mut a, b) = (node(&redis).await?, node(&redis).await?);
    let id = execution_id("kill-9");
    let mut ws = a.ws().await?;
    ws.subscribe(&id, Some(0)).await?;

    let urls = vec![a.events_url(&id), b.events_url(&id)];
    let (publisher, mut progress) = spawn_publisher(b.http.clone(), urls, TOTAL);
    within("first publishes", progress.wait_for(|p| p.acked >= 60)).await??;
    let mut seen = Vec::new();
    while seen.len() < 30 {
        seen.push(ws.next_event().await?.seq);
    }
    a.kill().await?;
    // Drain whatever the dead node managed to send, then resume on the other.
    loop {
        match ws.next().await {
            Ok(Received::Msg(exechub_protocol::ServerMsg::Event { event, .. })) => {
                seen.push(event.seq)
            }
            Ok(Received::Msg(other)) => bail!("unexpected {other:?}"),
            Ok(Received::Closed(_)) | Err(_) => break,
        }
    }
    let last = *seen.last().context("saw events")?;
    let mut resumed = b.ws().await?;
    resumed.subscribe(&id, Some(last)).await?;
    let mut acked = publisher.await??;
    acked.sort_unstable();
    assert_contiguous(&acked, 1, TOTAL);
    seen.extend(resumed.events_until(TOTAL).await?);
    assert_contiguous(&seen, 1, TOTAL);
    Ok(())
}

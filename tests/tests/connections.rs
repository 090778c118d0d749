//! Connections end, stay cheap and stay bounded: churn of killed clients,
//! silent (half-open) clients, every configured bound, oversize frames, and
//! shutdown with clients that stopped reading. Real binary, real sockets.

mod helpers;

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use exechub_protocol::{ErrorCode, ServerMsg};
use futures_util::future::try_join_all;
use helpers::ws::Received;
use helpers::{TestHub, execution_id};
use serde_json::json;

/// Waits until the hub holds no connection and no subscription.
async fn drained(hub: &TestHub) -> Result<()> {
    hub.health_until("connections and subscriptions back to 0", |h| {
        h["connections"]["websocket"] == 0
            && h["connections"]["sse"] == 0
            && h["subscriptions"] == 0
            && h["subscribed_executions"] == 0
    })
    .await?;
    Ok(())
}

/// Runs `rounds` rounds of `round` on `hub`: after each the hub must hold no
/// connection or subscription, and the RSS peak of the last `warm_up` rounds
/// must be within 10 % of the peak of the first `warm_up`. Peaks, because
/// the RSS moves by a megabyte or two either way from one round to the next
/// (the allocator takes pages while it settles, and returns some): a leak
/// raises the later peak; the allocator's steps and returns do not.
async fn churn<F, R>(hub: &TestHub, rounds: usize, warm_up: usize, mut round: F) -> Result<()>
where
    F: FnMut(usize) -> R,
    R: Future<Output = Result<()>>,
{
    let mut rss = Vec::with_capacity(rounds);
    for n in 0..rounds {
        round(n).await.with_context(|| format!("round {n}"))?;
        drained(hub).await.with_context(|| format!("round {n}"))?;
        rss.push(hub.rss()?);
    }
    let peak = |rounds: &[u64]| rounds.iter().copied().max().unwrap_or(0);
    let (settled, last) = (peak(&rss[..warm_up]), peak(&rss[rounds - warm_up..]));
    ensure!(
        last * 10 <= settled * 11,
        "RSS grew from {settled} to {last} bytes (per round: {rss:?})"
    );
    Ok(())
}

/// 25 rounds of 500 clients that subscribe, receive an event, and vanish
/// without a close frame (half with RST, as a killed process; half with FIN):
/// every round the hub returns to zero, and memory does not grow with rounds
/// (the peak of the last five rounds is within 10 % of the first five's: a
/// leak of 400 bytes per client, 4 MB over the 20 rounds between, fails it).
#[tokio::test]
async fn churn_of_vanishing_clients_returns_to_zero_and_memory_stays_flat() -> Result<()> {
    const CLIENTS: usize = 500;
    let hub = TestHub::spawn(&[]).await?;
    let id = execution_id("churn");
    churn(&hub, 25, 5, |round| {
        let (hub, id) = (&hub, &id);
        async move {
            let clients = try_join_all((0..CLIENTS).map(|_| async {
                let mut client = hub.ws().await?;
                client.subscribe(id, None).await?;
                anyhow::Ok(client)
            }))
            .await?;
            hub.publish(id, "tick", json!({ "round": round })).await?;
            for (i, mut client) in clients.into_iter().enumerate() {
                client.next_event().await?;
                client.abandon(i % 2 == 0)?;
            }
            Ok(())
        }
    })
    .await
}

/// The same churn for SSE streams that open their connection (written to
/// their sockets directly): 12 rounds of 200 streams that get an event and
/// vanish (half with RST, half with FIN) — every round the hub returns to
/// zero, and memory does not grow with rounds (the peak of the last four
/// rounds is within 10 % of the first four's).
#[tokio::test]
async fn churn_of_vanishing_sse_streams_returns_to_zero_and_memory_stays_flat() -> Result<()> {
    const STREAMS: usize = 200;
    let hub = TestHub::spawn(&[]).await?;
    let id = execution_id("sse-churn");
    churn(&hub, 12, 4, |round| {
        let (hub, id) = (&hub, &id);
        async move {
            let streams = try_join_all((0..STREAMS).map(|_| open_stream(hub, id))).await?;
            hub.publish(id, "tick", json!({ "round": round })).await?;
            for (i, mut stream) in streams.into_iter().enumerate() {
                read_until(&mut stream, b"\"round\"").await?;
                if i % 2 == 0 {
                    stream.set_zero_linger()?;
                }
            }
            Ok(())
        }
    })
    .await
}

/// A stream request on a connection of its own (served directly), read
/// until the hub says it is subscribed.
async fn open_stream(hub: &TestHub, id: &str) -> Result<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut socket = tokio::net::TcpStream::connect(hub.addr).await?;
    let request = format!("GET /api/v1/executions/{id}/stream HTTP/1.1\r\nHost: hub\r\n\r\n");
    socket.write_all(request.as_bytes()).await?;
    read_until(&mut socket, b": subscribed").await?;
    Ok(socket)
}

/// Reads from `socket` until `needle` arrived (within the helpers' wait).
async fn read_until(socket: &mut tokio::net::TcpStream, needle: &[u8]) -> Result<()> {
    use tokio::io::AsyncReadExt;
    helpers::within("an SSE stream's bytes", async {
        let (mut seen, mut buf) = (Vec::new(), [0_u8; 4096]);
        loop {
            let n = socket.read(&mut buf).await?;
            ensure!(n > 0, "the stream ended");
            seen.extend_from_slice(&buf[..n]);
            if seen.windows(needle.len()).any(|w| w == needle) {
                return Ok(());
            }
        }
    })
    .await?
}

/// A client that stops reading (and so stops answering pings) is closed
/// within ping interval + ping timeout; one that answers is kept.
#[tokio::test]
async fn a_client_that_stops_answering_pings_is_closed_in_time() -> Result<()> {
    let hub = TestHub::spawn(&["--ping-interval", "300ms", "--ping-timeout", "300ms"]).await?;
    let mut answering = hub.ws().await?;
    let mut silent = hub.ws().await?;
    silent.subscribe(&execution_id("silent"), None).await?;
    let started = Instant::now();
    // Only `answering` is read from (tungstenite answers pings while reading).
    let reader = tokio::spawn(async move {
        let outcome = answering.next().await;
        (answering, outcome)
    });
    hub.health_until("the silent client to be closed", |h| {
        h["connections"]["websocket"] == 1
    })
    .await?;
    let elapsed = started.elapsed();
    ensure!(
        elapsed < Duration::from_millis(600 + 700),
        "closed after {elapsed:?}, allowed 600 ms + slack"
    );
    ensure!(hub.logs().contains("code=4003"), "no 4003 close logged");
    // Three more intervals later the answering client is still there.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    ensure!(!reader.is_finished(), "the answering client was closed");
    let health = hub.health().await?;
    ensure!(health["connections"]["websocket"] == 1, "{health}");
    drop(silent);
    Ok(())
}

/// At `--max-connections`, WebSocket upgrades and SSE streams are refused
/// with 503 and `Retry-After`; open connections keep working; a freed slot
/// is usable again.
#[tokio::test]
async fn connection_limit_refuses_with_503_and_keeps_serving() -> Result<()> {
    let hub = TestHub::spawn(&["--max-connections", "2"]).await?;
    let id = execution_id("limit");
    let mut first = hub.ws().await?;
    first.subscribe(&id, None).await?;
    let second = hub.ws().await?;
    let refused = tokio_tungstenite::connect_async(format!("ws://{}/ws", hub.addr)).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            ensure!(response.status() == 503, "status {}", response.status());
            ensure!(response.headers().contains_key("retry-after"));
        }
        other => anyhow::bail!("expected a 503 refusal, got {other:?}"),
    }
    let stream = hub
        .http
        .get(hub.url(&format!("/api/v1/executions/{id}/stream")))
        .send()
        .await?;
    ensure!(stream.status() == 503, "SSE status {}", stream.status());
    let body: serde_json::Value = stream.json().await?;
    ensure!(body["code"] == "busy", "{body}");
    hub.publish(&id, "still", json!({})).await?;
    ensure!(first.next_event().await?.seq == 1);
    second.close().await?;
    hub.health_until("a slot to free", |h| h["connections"]["websocket"] == 1)
        .await?;
    let mut third = hub.ws().await?;
    third.subscribe(&id, Some(0)).await?;
    ensure!(third.next_event().await?.seq == 1);
    let health = hub.health().await?;
    ensure!(health["connections"]["refused"] == 2, "{health}");
    Ok(())
}

/// At `--max-total-subscriptions`, a WebSocket subscribe is refused with
/// `too_many_subscriptions` (the connection stays usable) and an SSE stream
/// with 503.
#[tokio::test]
async fn node_subscription_limit_refuses_and_keeps_the_connection() -> Result<()> {
    let hub = TestHub::spawn(&["--max-total-subscriptions", "2"]).await?;
    let mut client = hub.ws().await?;
    client.subscribe(&execution_id("a"), None).await?;
    let mut other = hub.ws().await?;
    other.subscribe(&execution_id("b"), None).await?;
    client
        .request(json!({ "op": "subscribe", "execution_id": execution_id("c") }))
        .await?;
    match client.next_msg().await? {
        ServerMsg::Error { code, .. } => ensure!(code == ErrorCode::TooManySubscriptions),
        other => anyhow::bail!("expected an error, got {other:?}"),
    }
    let stream = hub
        .http
        .get(hub.url(&format!("/api/v1/executions/{}/stream", execution_id("d"))))
        .send()
        .await?;
    ensure!(stream.status() == 503, "SSE status {}", stream.status());
    ensure!(client.publish(&execution_id("a"), "ok", json!({})).await? == 1);
    Ok(())
}

/// The embedded store's memory bound evicts the least recently updated
/// execution; its subscriber is told (`history_lost`, reason `reset`) and
/// then follows the execution's new history without a gap.
#[tokio::test]
async fn memory_bound_evicts_and_the_subscriber_is_told() -> Result<()> {
    let hub = TestHub::spawn(&["--memory-max-bytes", "40000"]).await?;
    let watched = execution_id("evicted");
    let mut client = hub.ws().await?;
    client.subscribe(&watched, Some(0)).await?;
    hub.publish(&watched, "first", json!({})).await?;
    ensure!(client.next_event().await?.seq == 1);
    let padding = "x".repeat(1000);
    for n in 0..60 {
        let other = format!("{watched}-other-{n}");
        hub.publish(&other, "fill", json!({ "pad": padding }))
            .await?;
    }
    match client.next_msg().await? {
        ServerMsg::HistoryLost { after, reason, .. } => {
            ensure!(after == 1, "after {after}");
            ensure!(reason == exechub_protocol::LostReason::Reset, "{reason:?}");
        }
        other => anyhow::bail!("expected history_lost, got {other:?}"),
    }
    hub.publish(&watched, "again", json!({})).await?;
    let event = client.next_event().await?;
    ensure!(event.seq == 1 && event.event_type == "again", "{event:?}");
    Ok(())
}

/// A client that stops reading while events are large fills its byte bound
/// and is closed as a slow consumer (4001); a reading client gets everything.
#[tokio::test]
async fn queued_bytes_bound_closes_a_stalled_client() -> Result<()> {
    let hub = TestHub::spawn(&helpers::SMALL_BYTE_BOUND).await?;
    let id = execution_id("bytes");
    let mut stalled = hub.ws().await?;
    stalled.subscribe(&id, None).await?;
    let mut reader = hub.ws().await?;
    reader.subscribe(&id, None).await?;
    // Enough to fill both kernel socket buffers, then the byte bound.
    let padding = "y".repeat(32 * 1024);
    const EVENTS: u64 = 1000;
    let reading = tokio::spawn(async move {
        let seqs = reader.events_until(EVENTS).await;
        (reader, seqs)
    });
    for n in 0..EVENTS {
        hub.publish(&id, "big", json!({ "n": n, "pad": padding }))
            .await?;
    }
    // The reader stays connected until the end of the test.
    let (_reader, seqs) = reading.await?;
    let seqs = seqs?;
    helpers::assert_contiguous(&seqs, 1, EVENTS);
    hub.health_until("the stalled client to be closed", |h| {
        h["connections"]["websocket"] == 1
    })
    .await
    .with_context(|| hub.logs())?;
    ensure!(hub.logs().contains("code=4001"), "no 4001 close logged");
    drop(stalled);
    Ok(())
}

/// A frame over the size limit is answered with close 1009 and ends the session.
#[tokio::test]
async fn oversize_frame_is_closed_with_1009() -> Result<()> {
    let hub = TestHub::spawn(&["--max-event-bytes", "1000", "--max-batch-bytes", "1000"]).await?;
    let mut client = hub.ws().await?;
    client.send_text(&"z".repeat(200 * 1024)).await?;
    match client.next().await? {
        Received::Closed(Some(frame)) => {
            ensure!(u16::from(frame.code) == 1009, "close code {}", frame.code)
        }
        other => anyhow::bail!("expected close 1009, got {other:?}"),
    }
    drained(&hub).await
}

/// SIGTERM while clients have stopped reading (full socket buffers, WS and
/// SSE): the hub exits 0 within `--shutdown-timeout`.
#[tokio::test]
async fn shutdown_does_not_wait_for_clients_that_stopped_reading() -> Result<()> {
    let mut hub = TestHub::spawn(&["--shutdown-timeout", "2"]).await?;
    let id = execution_id("stuck");
    let mut ws = hub.ws().await?;
    ws.subscribe(&id, None).await?;
    let _sse = hub
        .http
        .get(hub.url(&format!("/api/v1/executions/{id}/stream")))
        .send()
        .await?;
    let padding = "w".repeat(64 * 1024);
    for n in 0..100 {
        hub.publish(&id, "big", json!({ "n": n, "pad": padding }))
            .await?;
    }
    let started = Instant::now();
    hub.terminate()?;
    let status = hub.wait().await?;
    let elapsed = started.elapsed();
    ensure!(status.success(), "exit status {status}");
    ensure!(
        elapsed < Duration::from_secs(4),
        "took {elapsed:?} with a 2 s timeout"
    );
    drop(ws);
    Ok(())
}

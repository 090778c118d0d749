//! `exechub-bench fanout`: publish throughput and publish-to-delivery
//! latency (HdrHistogram) over real WebSockets.
//!
//! Subscribers connect first (one socket each, all on one execution), then
//! publishers send events whose data carries the send time; every subscriber
//! records how long each event took to reach it and checks it saw every seq
//! once, in order. Everything runs on this machine, so one clock serves both ends.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Args;
use exechub_protocol::ServerMsg;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::ws::{expect_subscribed, subscribe_frame};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Settings of `exechub-bench fanout`.
#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    /// The hub's WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// Subscriber connections.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Publisher connections.
    #[arg(long, default_value_t = 2)]
    publishers: usize,
    /// Events in total.
    #[arg(long, default_value_t = 20_000)]
    events: u64,
    /// Bytes of padding in each event's data.
    #[arg(long, default_value_t = 200)]
    payload: usize,
    /// Publishes each publisher keeps in flight (pipelining).
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

/// Wall-clock microseconds: the send time carried in each event.
fn micros_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Connects the subscribers, runs the publishers and prints the report.
///
/// # Errors
/// A connection or subscription failed, a publish was refused, a subscriber
/// saw a gap or a reordering, or the run took longer than `--timeout`.
pub async fn run(args: FanoutArgs) -> Result<()> {
    let execution = format!("bench-{}", micros_now());
    let mut subscribers = Vec::new();
    for _ in 0..args.subscribers {
        let mut socket = connect(&args.url).await?;
        socket.send(subscribe_frame(&execution)).await?;
        expect_subscribed(&mut socket).await?;
        subscribers.push(tokio::spawn(subscribe_loop(socket, args.events)));
    }
    let started = Instant::now();
    let per_publisher = args.events.div_ceil(args.publishers as u64);
    let mut publishers = Vec::new();
    for p in 0..args.publishers as u64 {
        let count = per_publisher.min(args.events.saturating_sub(p * per_publisher));
        let socket = connect(&args.url).await?;
        publishers.push(tokio::spawn(publish_loop(
            socket,
            execution.clone(),
            count,
            args.clone(),
        )));
    }
    let deadline = Duration::from_secs(args.timeout);
    let mut acks = Histogram::<u64>::new(3)?;
    for publisher in publishers {
        acks.add(
            tokio::time::timeout(deadline, publisher)
                .await
                .context("publishers timed out")???,
        )?;
    }
    let published_in = started.elapsed();
    let mut latency = Histogram::<u64>::new(3)?;
    for subscriber in subscribers {
        latency.add(
            tokio::time::timeout(deadline, subscriber)
                .await
                .context("subscribers timed out")???,
        )?;
    }
    let delivered_in = started.elapsed();
    report(&args, published_in, delivered_in, &acks, &latency);
    Ok(())
}

/// Opens a WebSocket to `url`.
async fn connect(url: &str) -> Result<Socket> {
    Ok(tokio_tungstenite::connect_async(url)
        .await
        .with_context(|| format!("connecting to {url}"))?
        .0)
}

/// Publishes `count` events with `window` in flight; returns ack round-trip times (µs).
async fn publish_loop(
    mut socket: Socket,
    execution: String,
    count: u64,
    args: FanoutArgs,
) -> Result<Histogram<u64>> {
    let pad = "x".repeat(args.payload);
    let mut acks = Histogram::<u64>::new(3)?;
    let mut sent_at = std::collections::HashMap::new();
    let (mut sent, mut acked) = (0u64, 0u64);
    while acked < count {
        while sent < count && sent - acked < args.window as u64 {
            sent += 1;
            let data = json!({ "sent_us": micros_now(), "pad": pad });
            let frame = json!({ "op": "publish", "id": sent, "execution_id": execution, "event_type": "bench", "data": data });
            sent_at.insert(sent, Instant::now());
            socket.send(Message::text(frame.to_string())).await?;
        }
        let Some(frame) = socket.next().await else {
            bail!("publisher connection closed")
        };
        if let Message::Text(text) = frame? {
            match serde_json::from_str(text.as_str())? {
                ServerMsg::Ack {
                    id: Some(exechub_protocol::RequestId::Num(id)),
                    ..
                } => {
                    acked += 1;
                    if let Some(at) = sent_at.remove(&id) {
                        acks.record(at.elapsed().as_micros() as u64)?;
                    }
                }
                ServerMsg::Error { message, .. } => bail!("publish refused: {message}"),
                _ => {}
            }
        }
    }
    Ok(acks)
}

/// Reads until seq `events`, checking order, and returns delivery latencies (µs).
async fn subscribe_loop(mut socket: Socket, events: u64) -> Result<Histogram<u64>> {
    let mut latency = Histogram::<u64>::new(3)?;
    let mut last = 0;
    while last < events {
        let Some(frame) = socket.next().await else {
            bail!("subscriber closed at seq {last}")
        };
        let Message::Text(text) = frame? else {
            continue;
        };
        if let ServerMsg::Event { event, .. } = serde_json::from_str(text.as_str())? {
            if event.seq != last + 1 {
                bail!("subscriber expected seq {} and got {}", last + 1, event.seq);
            }
            last = event.seq;
            let sent = event
                .data
                .get("sent_us")
                .and_then(|v| v.as_u64())
                .unwrap_or(0);
            latency.record(micros_now().saturating_sub(sent))?;
        }
    }
    Ok(latency)
}

#[allow(clippy::print_stdout)]
fn report(
    args: &FanoutArgs,
    published_in: Duration,
    delivered_in: Duration,
    acks: &Histogram<u64>,
    latency: &Histogram<u64>,
) {
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "{} events ({} B padding) from {} publishers (window {}) to {} subscribers",
        args.events, args.payload, args.publishers, args.window, args.subscribers
    );
    println!(
        "publish: {:.0} events/s; ack round trip p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        args.events as f64 / published_in.as_secs_f64(),
        ms(acks.value_at_quantile(0.5)),
        ms(acks.value_at_quantile(0.99)),
        ms(acks.max())
    );
    println!(
        "delivery: {} deliveries in {:.2} s ({:.0}/s), every subscriber saw every seq once, in order",
        latency.len(),
        delivered_in.as_secs_f64(),
        latency.len() as f64 / delivered_in.as_secs_f64()
    );
    println!(
        "publish-to-delivery latency: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(latency.value_at_quantile(0.5)),
        ms(latency.value_at_quantile(0.9)),
        ms(latency.value_at_quantile(0.99)),
        ms(latency.max())
    );
}

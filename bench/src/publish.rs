//! `exechub-bench publish`: what a publish costs the hub (and Redis), over
//! keep-alive HTTP/1.1 connections as workers publish, or over WebSockets
//! (`--publish-via ws`, as `fanout` takes it).
//!
//! `--requests` requests go over `--connections` connections, one in flight
//! on each, round-robin over `--executions` executions: POSTs, or `publish`
//! frames each answered by an `ack`. With `--batch N` each request carries N
//! events (to `…/events/batch`, or as the frame's `events`). The hub's CPU
//! time is read from `/proc` from the first request to the last answer.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use clap::Args;
use exechub_protocol::ServerMsg;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::cost::{Meter, Spent, Unit, mib, thousands};
use crate::http::{HttpConn, Response};
use crate::latency::{Latencies, Quantiles, micros_now, round3};
use crate::target::{Hub, SourceIps, Via, raise_fd_limit};
use crate::ws::{Socket, handshake};

/// Bytes of `data` that are not padding: `{"pad":"` + `"}`.
const DATA_OVERHEAD: usize = 10;

const EVENT: Unit = Unit {
    one: "event",
    many: "events",
};
const REQUEST: Unit = Unit {
    one: "request",
    many: "requests",
};

/// Settings of `exechub-bench publish`.
#[derive(Debug, Clone, Args)]
pub struct PublishArgs {
    /// The hub's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8099")]
    url: String,
    /// Requests in total.
    #[arg(long, default_value_t = 20_000)]
    requests: u64,
    /// Keep-alive connections, one request in flight on each.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Executions published to, round-robin.
    #[arg(long, default_value_t = 100)]
    executions: u64,
    /// Bytes of each event's `data` (at least 10).
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// Events per request: above 1, POST `…/events/batch` (or a `publish`
    /// frame with `events`).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// HTTP POSTs or WebSocket `publish` frames.
    #[arg(long, value_enum, default_value_t = Via::Http)]
    publish_via: Via,
    /// Over WebSocket: publishes sent ahead of their acks on each connection
    /// (HTTP has one request in flight per connection).
    #[arg(long, default_value_t = 1)]
    window: usize,
    /// The hub's process id, whose CPU and memory are measured; several
    /// (comma-separated) for several hub nodes: CPU summed, memory of the first.
    #[arg(long, value_delimiter = ',')]
    hub_pid: Vec<u32>,
    /// `redis-server`'s process id, when the hub uses Redis; a cluster's
    /// nodes comma-separated: CPU summed and reported per server.
    #[arg(long, value_delimiter = ',')]
    redis_pid: Vec<u32>,
    /// Loopback source addresses (`A` or `A-B`), used round-robin.
    #[arg(long, default_value = "127.0.0.2-127.0.0.9")]
    source_ips: SourceIps,
}

/// What every connection shares: the requests, the request counter.
struct Shared {
    /// One request per execution: the path to POST to, or the whole frame.
    targets: Vec<Utf8Bytes>,
    /// The POST body (the same for every request; empty over WebSocket).
    body: Vec<u8>,
    /// Events per request.
    batch: usize,
    /// Requests to send.
    requests: u64,
    /// WebSocket publishes sent ahead of their acks, per connection.
    window: usize,
    /// Requests claimed so far.
    next: AtomicU64,
    /// Request round trips.
    latencies: Latencies,
}

/// Runs the publish benchmark and prints its report.
///
/// # Errors
/// Setup failed, a connection failed, or the hub answered anything but `202`
/// (a `404` from `…/events/batch` says the hub has no batch endpoint).
pub async fn run(args: PublishArgs) -> Result<()> {
    if args.window > 1 && args.publish_via == Via::Http {
        bail!("--window needs --publish-via ws: HTTP has one request in flight per connection");
    }
    raise_fd_limit(args.connections)?;
    let hub = Hub::resolve(&args.url).await?;
    let meter = Meter::new(&args.hub_pid, &args.redis_pid)?;
    let shared = Arc::new(shared(&args, &hub));
    let mut conns = Vec::with_capacity(args.connections);
    for c in 0..args.connections.max(1) {
        let stream = hub.connect_from(args.source_ips.pick(c)).await?;
        conns.push(match args.publish_via {
            Via::Http => Conn::Http(HttpConn::new(stream, &hub.authority)),
            Via::Ws => Conn::Ws(Box::new(handshake(&hub, stream).await?)),
        });
    }
    let rss_before = meter.hub_rss();
    let start = meter.snapshot()?;
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|conn| tokio::spawn(publish_loop(conn, shared.clone())))
        .collect();
    let mut first_error = None;
    for task in tasks {
        if let Err(error) = task.await.context("connection task panicked")? {
            first_error.get_or_insert(error);
        }
    }
    let end = meter.snapshot()?;
    if let Some(error) = first_error {
        return Err(error);
    }
    let report = Report {
        args: &args,
        spent: start.until(&end),
        latency: shared.latencies.quantiles(),
        rss_before,
        rss_after: meter.hub_rss(),
    };
    report.print();
    Ok(())
}

fn shared(args: &PublishArgs, hub: &Hub) -> Shared {
    let run_id = format!("publish-{}-{}", std::process::id(), micros_now());
    let batch = args.batch.max(1);
    let pad = "x".repeat(args.payload.saturating_sub(DATA_OVERHEAD));
    let event = format!(r#"{{"event_type":"bench","data":{{"pad":"{pad}"}}}}"#);
    let body = if batch > 1 {
        format!(r#"{{"events":[{}]}}"#, vec![event; batch].join(","))
    } else {
        event
    };
    let targets = (0..args.executions.max(1)).map(|e| {
        let execution = format!("{run_id}-{e}");
        match args.publish_via {
            Via::Http if batch > 1 => format!("{}/batch", hub.events_path(&execution)),
            Via::Http => hub.events_path(&execution),
            // The frame is the body's fields after `op` and `execution_id`.
            Via::Ws => format!(
                r#"{{"op":"publish","execution_id":"{execution}",{}"#,
                &body[1..]
            ),
        }
    });
    Shared {
        targets: targets.map(Utf8Bytes::from).collect(),
        body: match args.publish_via {
            Via::Http => body.into_bytes(),
            Via::Ws => Vec::new(),
        },
        batch,
        requests: args.requests,
        window: args.window.max(1),
        next: AtomicU64::new(0),
        latencies: Latencies::new(),
    }
}

/// A publisher's connection.
enum Conn {
    Http(HttpConn<TcpStream>),
    Ws(Box<Socket>),
}

/// Claims requests until none are left, sending each and checking its answer.
async fn publish_loop(conn: Conn, shared: Arc<Shared>) -> Result<()> {
    match conn {
        Conn::Http(mut http) => loop {
            let Some(target) = claim(&shared) else {
                return Ok(());
            };
            let sent = Instant::now();
            let response = http.post_json(target.as_str(), &shared.body).await?;
            shared.latencies.record_since(sent);
            check(target.as_str(), &response, shared.batch)?;
        },
        Conn::Ws(mut socket) => {
            // Send times of the publishes awaiting their acks, oldest first
            // (the hub answers a connection's publishes in order).
            let mut waiting = VecDeque::with_capacity(shared.window);
            loop {
                while waiting.len() < shared.window {
                    let Some(target) = claim(&shared) else {
                        break;
                    };
                    socket.feed(Message::Text(target.clone())).await?;
                    waiting.push_back(Instant::now());
                }
                let Some(sent) = waiting.pop_front() else {
                    return Ok(());
                };
                socket.flush().await?;
                let answer = next_answer(&mut socket).await?;
                shared.latencies.record_since(sent);
                check_ack(answer, shared.batch)?;
            }
        }
    }
}

/// The next request to send, if any is left.
fn claim(shared: &Shared) -> Option<&Utf8Bytes> {
    let k = shared.next.fetch_add(1, Ordering::Relaxed);
    (k < shared.requests).then(|| &shared.targets[(k % shared.targets.len() as u64) as usize])
}

/// The next message the hub sends on `socket` (pings and pongs skipped).
async fn next_answer(socket: &mut Socket) -> Result<ServerMsg> {
    while let Some(frame) = socket.next().await {
        match frame? {
            Message::Text(text) => {
                return serde_json::from_str(text.as_str())
                    .with_context(|| format!("answer is not a server message: {text}"));
            }
            Message::Close(close) => bail!("the hub closed the connection: {close:?}"),
            _ => {}
        }
    }
    bail!("the hub closed the connection")
}

/// An `ack`, and for a batch one whose seqs span exactly `batch` events.
fn check_ack(answer: ServerMsg, batch: usize) -> Result<()> {
    match answer {
        ServerMsg::Ack { seq, first_seq, .. } if batch > 1 => match first_seq {
            Some(first) if seq + 1 == first + batch as u64 => Ok(()),
            Some(first) => bail!("a batch of {batch} was stored as seqs {first}..={seq}"),
            None => bail!("a batch's ack lacks first_seq"),
        },
        ServerMsg::Ack { .. } => Ok(()),
        other => bail!("publish answered {other:?}"),
    }
}

/// A `202`, and for a batch one whose seqs span exactly `batch` events.
fn check(path: &str, response: &Response, batch: usize) -> Result<()> {
    if response.status == 404 && batch > 1 {
        bail!(
            "POST {path} answered 404: this hub has no batch endpoint \
             (POST /api/v1/executions/{{id}}/events/batch); run without --batch"
        );
    }
    if response.status != 202 {
        bail!(
            "POST {path} answered {}: {}",
            response.status,
            response.snippet()
        );
    }
    if batch > 1 {
        let body: Value = serde_json::from_slice(&response.body)
            .with_context(|| format!("batch answer is not JSON: {}", response.snippet()))?;
        let seq = |key: &str| body.get(key).and_then(Value::as_u64);
        let (Some(first), Some(last)) = (seq("first_seq"), seq("last_seq")) else {
            bail!(
                "batch answer lacks first_seq/last_seq: {}",
                response.snippet()
            );
        };
        if last + 1 != first + batch as u64 {
            bail!("a batch of {batch} was stored as seqs {first}..={last}");
        }
    }
    Ok(())
}

/// The publish run's figures.
struct Report<'a> {
    args: &'a PublishArgs,
    spent: Spent,
    latency: Quantiles,
    rss_before: Option<u64>,
    rss_after: Option<u64>,
}

impl Report<'_> {
    fn events(&self) -> u64 {
        self.args.requests * self.args.batch.max(1) as u64
    }

    #[allow(clippy::print_stdout)]
    fn print(&self) {
        let (a, wall) = (self.args, self.spent.wall.as_secs_f64());
        println!(
            "publish: {} requests × {} events ({}-byte data) over {} {} connections ({} in flight each) to {} executions",
            a.requests,
            a.batch.max(1),
            a.payload,
            a.connections,
            a.publish_via.name(),
            a.window.max(1),
            a.executions
        );
        println!(
            "{} events in {wall:.2} s: {}/s, {} requests/s; round trip {}",
            self.events(),
            thousands(self.events() as f64 / wall),
            thousands(a.requests as f64 / wall),
            self.latency.line()
        );
        for line in self.spent.lines(EVENT, self.events()) {
            println!("{line}");
        }
        if a.batch > 1 {
            for line in self.spent.lines(REQUEST, a.requests) {
                println!("{line}");
            }
        }
        if let (Some(before), Some(after)) = (self.rss_before, self.rss_after) {
            println!("hub RSS: {} before, {} after", mib(before), mib(after));
        }
        println!(
            "bench CPU {:.3} s over the {wall:.2} s window",
            self.spent.bench.as_secs_f64()
        );
        println!("{}", self.json());
    }

    fn json(&self) -> Value {
        let a = self.args;
        let wall = self.spent.wall.as_secs_f64();
        let mut out = json!({
            "mode": "publish",
            "publish_via": a.publish_via.name(),
            "window": a.window.max(1),
            "requests": a.requests,
            "batch": a.batch.max(1),
            "events": self.events(),
            "connections": a.connections,
            "executions": a.executions,
            "payload": a.payload,
            "requests_per_s": (a.requests as f64 / wall).round(),
            "events_per_s": (self.events() as f64 / wall).round(),
            "latency": self.latency.json(),
            "window": self.spent.cpu_json(),
            "rss_before": self.rss_before,
            "rss_after": self.rss_after,
        });
        if let Value::Object(map) = &mut out {
            map.extend(self.spent.json(EVENT, self.events()));
            if a.batch > 1 {
                map.extend(self.spent.json(REQUEST, a.requests));
            }
            map.insert("wall_s".into(), json!(round3(wall)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args_via(batch: usize, transport: Via) -> PublishArgs {
        PublishArgs {
            publish_via: transport,
            ..args(batch)
        }
    }

    fn args(batch: usize) -> PublishArgs {
        PublishArgs {
            url: "http://127.0.0.1:1".into(),
            requests: 10,
            connections: 1,
            executions: 3,
            payload: 100,
            batch,
            publish_via: Via::Http,
            window: 1,
            hub_pid: Vec::new(),
            redis_pid: Vec::new(),
            source_ips: "127.0.0.1".parse().unwrap(),
        }
    }

    fn hub() -> Hub {
        Hub {
            addr: "127.0.0.1:1".parse().unwrap(),
            authority: "127.0.0.1:1".into(),
            prefix: String::new(),
        }
    }

    #[test]
    fn single_event_body_has_payload_bytes_of_data() {
        let shared = shared(&args(1), &hub());
        let body: Value = serde_json::from_slice(&shared.body).unwrap();
        assert_eq!(body["event_type"], "bench");
        assert_eq!(body["data"].to_string().len(), 100);
        assert!(shared.targets[2].as_str().ends_with("-2/events"));
    }

    #[test]
    fn batch_posts_n_events_to_the_batch_path() {
        let shared = shared(&args(5), &hub());
        let body: Value = serde_json::from_slice(&shared.body).unwrap();
        assert_eq!(body["events"].as_array().unwrap().len(), 5);
        assert!(shared.targets[0].as_str().ends_with("/events/batch"));
    }

    #[test]
    fn websocket_frames_are_publish_ops_of_the_same_events() {
        use exechub_protocol::ClientMsg;
        let one = shared(&args_via(1, Via::Ws), &hub());
        assert!(one.body.is_empty());
        match ClientMsg::decode(one.targets[2].as_str()) {
            Ok(ClientMsg::Publish {
                execution_id,
                event,
                ..
            }) => {
                assert!(execution_id.ends_with("-2"));
                assert_eq!(event.event_type, "bench");
                assert_eq!(serde_json::to_string(&event.data).unwrap().len(), 100);
            }
            other => panic!("not a publish: {other:?}"),
        }
        let batch = shared(&args_via(5, Via::Ws), &hub());
        match ClientMsg::decode(batch.targets[0].as_str()) {
            Ok(ClientMsg::PublishBatch { events, .. }) => assert_eq!(events.len(), 5),
            other => panic!("not a batch publish: {other:?}"),
        }
    }

    #[test]
    fn acks_are_checked() {
        let ack = |seq, first_seq| ServerMsg::Ack {
            id: None,
            execution_id: "e".into(),
            seq,
            first_seq,
            timestamp: String::new(),
        };
        assert!(check_ack(ack(3, None), 1).is_ok());
        assert!(check_ack(ack(10, Some(6)), 5).is_ok());
        assert!(check_ack(ack(10, Some(6)), 4).is_err());
        assert!(check_ack(ack(10, None), 5).is_err());
        assert!(check_ack(ServerMsg::Pong { id: None }, 1).is_err());
    }

    #[test]
    fn batch_answers_are_checked() {
        let answer = |status, body: &str| Response {
            status,
            body: body.as_bytes().to_vec(),
        };
        let ok = answer(202, r#"{"first_seq":6,"last_seq":10}"#);
        assert!(check("/p", &ok, 5).is_ok());
        assert!(check("/p", &ok, 4).is_err());
        let missing = check("/p", &answer(404, ""), 5).unwrap_err();
        assert!(missing.to_string().contains("no batch endpoint"));
        assert!(check("/p", &answer(503, "busy"), 1).is_err());
    }
}

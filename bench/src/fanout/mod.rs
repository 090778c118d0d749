//! `exechub-bench fanout`: what a delivery and a publish cost the hub, and
//! how long an event takes from publisher to subscriber, over real sockets.
//!
//! Subscribers connect first (one WebSocket each, spread evenly over the
//! executions and over several loopback source addresses). Then publishers
//! send each execution its events, at a fixed total rate or as fast as they
//! can, each carrying its send time. Every subscriber checks it saw every seq
//! once, in order, and records publish-to-delivery latency. The hub's (and
//! Redis's) CPU time is read from `/proc` over the publish window only: from
//! the first publish until the last event was delivered.
//!
//! - [`plan`]: presets (`--shape`) and flags resolved into one plan.
//! - [`subscriber`]: one subscriber's checks.
//! - [`publisher`]: one publisher connection, over HTTP or WebSocket.
//! - [`report`]: the figures, as text and as one JSON line, and the verdict.

mod plan;
mod publisher;
mod report;
mod subscriber;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use futures_util::{StreamExt, stream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use self::plan::{Plan, Shape};
use self::publisher::{Job, Published};
use self::report::{Memory, Report, Totals};
use self::subscriber::Tally;
use crate::cost::Meter;
use crate::health;
use crate::http::HttpConn;
use crate::latency::{Latencies, micros_now};
use crate::target::{Hub, SourceIps, Via, raise_fd_limit, warn_if_hub_fd_limit_low};
use crate::ws::{Socket, handshake};

/// How often the hub's RSS is sampled during the publish window.
const RSS_EVERY: Duration = Duration::from_millis(100);
/// How long the hub gets to report every connection gone after the run.
const CLOSE_LIMIT: Duration = Duration::from_secs(30);

/// Settings of `exechub-bench fanout`. Unset numbers come from `--shape`.
#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    /// The hub's base URL (`ws://host:port/ws` is accepted too).
    #[arg(long, default_value = "http://127.0.0.1:8099")]
    url: String,
    /// Another hub node for the publishers (subscribers stay on `--url`),
    /// so every delivery crosses Redis from one node to the other.
    #[arg(long)]
    publish_url: Option<String>,
    /// More hub nodes for subscribers (comma-separated): each execution's
    /// subscribers take turns over `--url` and these, so every event goes
    /// from Redis to each of them.
    #[arg(long, value_delimiter = ',')]
    subscribe_url: Vec<String>,
    /// A preset scenario; flags given explicitly override its numbers.
    #[arg(long, value_enum, default_value_t = Shape::Issue)]
    shape: Shape,
    /// Subscriber connections, spread evenly over the executions.
    #[arg(long)]
    subscribers: Option<usize>,
    /// Executions.
    #[arg(long)]
    executions: Option<usize>,
    /// Events per second in total, spread over the executions; 0 publishes
    /// `--events` as fast as the publishers can.
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds of publishing at `--rate`.
    #[arg(long)]
    duration: Option<f64>,
    /// Events in total when `--rate 0`.
    #[arg(long, default_value_t = 20_000)]
    events: u64,
    /// Bytes of each event's `data` (at least 37: the send time and the padding key).
    #[arg(long)]
    payload: Option<usize>,
    /// How events are published.
    #[arg(long, value_enum, default_value_t = Via::Http)]
    publish_via: Via,
    /// Publisher connections (default 16 over HTTP, 4 over WebSocket; at most
    /// one per execution, each execution has one publisher).
    #[arg(long)]
    publishers: Option<usize>,
    /// Unacknowledged publishes per WebSocket publisher.
    #[arg(long, default_value_t = 32)]
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
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds subscribers wait for missing events after the last publish.
    #[arg(long, default_value_t = 10)]
    drain_timeout: u64,
    /// Give up connecting, or publishing past the schedule, after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

impl FanoutArgs {
    fn plan(&self) -> Plan {
        let preset = self.shape.preset();
        let preset = plan::Preset {
            subscribers: self.subscribers.unwrap_or(preset.subscribers),
            executions: self.executions.unwrap_or(preset.executions),
            rate: self.rate.unwrap_or(preset.rate),
            duration: self.duration.unwrap_or(preset.duration),
            payload: self.payload.unwrap_or(preset.payload),
        };
        Plan::new(
            preset,
            self.events,
            self.publishers,
            self.publish_via,
            self.window,
        )
    }
}

/// A subscriber task: its tally, and its socket if still open.
type SubscriberTask = JoinHandle<(Tally, Option<Socket>)>;

/// A connected publisher.
enum Publisher {
    Http(HttpConn<tokio::net::TcpStream>),
    Ws(Box<Socket>),
}

/// Runs the fan-out benchmark and prints its report.
///
/// # Errors
/// Setup failed (file limit, no such process, bad URL), a connection or a
/// publish failed, or a subscriber lost, duplicated or reordered an event.
pub async fn run(args: FanoutArgs) -> Result<()> {
    let plan = args.plan();
    let sockets = plan.preset.subscribers + plan.publishers;
    raise_fd_limit(sockets)?;
    let hub = Hub::resolve(&args.url).await?;
    let mut subscriber_hubs = vec![hub.clone()];
    for url in &args.subscribe_url {
        subscriber_hubs.push(Hub::resolve(url).await?);
    }
    let publish_hub = match &args.publish_url {
        Some(url) => Hub::resolve(url).await?,
        None => hub.clone(),
    };
    let meter = Meter::new(&args.hub_pid, &args.redis_pid)?;
    if let Some(process) = meter.hub() {
        warn_if_hub_fd_limit_low(process, sockets);
    }
    let run_id = format!("bench-{}-{}", std::process::id(), micros_now());
    let executions: Vec<String> = (0..plan.preset.executions)
        .map(|e| format!("{run_id}-{e}"))
        .collect();
    let mut memory = Memory {
        before: meter.hub_rss(),
        ..Memory::default()
    };
    let latencies = Latencies::new();
    let (stop, stopped) = watch::channel(false);
    let connecting = Instant::now();
    let subscribers = tokio::time::timeout(
        Duration::from_secs(args.timeout),
        connect_subscribers(
            &args,
            &plan,
            &subscriber_hubs,
            &executions,
            &latencies,
            &stopped,
        ),
    )
    .await
    .context("connecting subscribers timed out")??;
    let connect_time = connecting.elapsed();
    memory.subscribed = meter.hub_rss();
    let publishers = connect_publishers(&args, &plan, &publish_hub).await?;
    eprintln!(
        "{} subscribers and {} publishers connected in {:.2} s; publishing",
        subscribers.len(),
        publishers.len(),
        connect_time.as_secs_f64()
    );

    let (window_over, window_open) = watch::channel(false);
    let peak = tokio::spawn(sample_peak_rss(meter.clone(), window_open));
    let acks = Latencies::new();
    let start = meter.snapshot()?;
    let started = Instant::now();
    let published = publish(&args, &plan, &publish_hub, &executions, publishers, &acks).await;
    let publish_time = started.elapsed();
    let published = match published {
        Ok(published) => published,
        Err(error) => {
            stop.send_replace(true);
            join_subscribers(subscribers).await;
            return Err(error);
        }
    };
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(args.drain_timeout)).await;
        stop.send_replace(true);
        stop
    });
    let (totals, sockets) = join_subscribers(subscribers).await;
    let end = meter.snapshot()?;
    stopper.abort();
    window_over.send_replace(true);
    memory.peak = peak.await.ok().flatten();
    drop(sockets);
    if let Err(error) = health::wait_for_zero(&hub, std::time::Instant::now(), CLOSE_LIMIT).await {
        eprintln!("warning: /health after closing: {error:#}");
    }
    memory.after = meter.hub_rss();

    let report = Report {
        connections: plan.preset.subscribers,
        plan,
        connect_time,
        window: start.until(&end),
        published: published.events,
        publish_time,
        behind: published.behind,
        acks: acks.quantiles(),
        latency: latencies.quantiles(),
        totals,
        memory,
    };
    report.print();
    report.verdict()
}

/// Connects and subscribes every subscriber, `--concurrency` at a time, and
/// starts each one reading as soon as it is subscribed.
///
/// # Errors
/// A subscriber failed to connect or subscribe.
async fn connect_subscribers(
    args: &FanoutArgs,
    plan: &Plan,
    hubs: &[Hub],
    executions: &[String],
    latencies: &Latencies,
    stopped: &watch::Receiver<bool>,
) -> Result<Vec<SubscriberTask>> {
    let mut attempts = stream::iter(0..plan.preset.subscribers)
        .map(|i| {
            let execution = &executions[i % executions.len()];
            // An execution's subscribers take turns over the hubs.
            let hub = &hubs[(i / executions.len()) % hubs.len()];
            subscriber::open(hub, args.source_ips.pick(i), execution)
        })
        .buffer_unordered(args.concurrency.max(1));
    let mut tasks = Vec::with_capacity(plan.preset.subscribers);
    while let Some(attempt) = attempts.next().await {
        let (socket, after) = attempt.context("subscriber")?;
        tasks.push(tokio::spawn(subscriber::run(
            socket,
            after,
            plan.per_execution,
            latencies.clone(),
            stopped.clone(),
        )));
    }
    Ok(tasks)
}

/// Opens the publisher connections (before the measured window starts).
///
/// # Errors
/// A connection or WebSocket handshake failed.
async fn connect_publishers(args: &FanoutArgs, plan: &Plan, hub: &Hub) -> Result<Vec<Publisher>> {
    let mut publishers = Vec::with_capacity(plan.publishers);
    for p in 0..plan.publishers {
        let source = args.source_ips.pick(plan.preset.subscribers + p);
        let stream = hub.connect_from(source).await.context("publisher")?;
        publishers.push(match plan.via {
            Via::Http => Publisher::Http(HttpConn::new(stream, &hub.authority)),
            Via::Ws => Publisher::Ws(Box::new(handshake(hub, stream).await?)),
        });
    }
    Ok(publishers)
}

/// Runs every publisher to the end of its schedule; returns the events
/// accepted and the furthest any fell behind.
///
/// # Errors
/// A publisher failed, or publishing ran `--timeout` seconds past the schedule.
async fn publish(
    args: &FanoutArgs,
    plan: &Plan,
    hub: &Hub,
    executions: &[String],
    publishers: Vec<Publisher>,
    acks: &Latencies,
) -> Result<Published> {
    let start = Instant::now();
    let pad: Arc<str> = plan.pad().into();
    let mut tasks = Vec::with_capacity(publishers.len());
    for (p, publisher) in publishers.into_iter().enumerate() {
        let owned: Vec<String> = plan
            .owned_by(p)
            .into_iter()
            .map(|e| executions[e].clone())
            .collect();
        let job = Job {
            interval: plan.interval(owned.len()),
            executions: owned,
            per_execution: plan.per_execution,
            start: start + plan.offset(p),
            pad: pad.clone(),
            acks: acks.clone(),
        };
        tasks.push(match publisher {
            Publisher::Http(conn) => {
                let paths = job.executions.iter().map(|e| hub.events_path(e)).collect();
                tokio::spawn(publisher::over_http(conn, paths, job))
            }
            Publisher::Ws(socket) => tokio::spawn(publisher::over_ws(*socket, job, plan.window)),
        });
    }
    let limit = Duration::from_secs_f64(plan.preset.duration) + Duration::from_secs(args.timeout);
    let mut total = Published::default();
    for task in tasks {
        let done = tokio::time::timeout_at(start + limit, task)
            .await
            .context("publishers timed out")?
            .context("publisher panicked")??;
        total.events += done.events;
        total.behind = total.behind.max(done.behind);
    }
    Ok(total)
}

/// Waits for every subscriber (each ends complete, stopped or failed) and
/// sums their tallies; returns the sockets still open, to close after measuring.
async fn join_subscribers(tasks: Vec<SubscriberTask>) -> (Totals, Vec<Socket>) {
    let mut totals = Totals::default();
    let mut sockets = Vec::with_capacity(tasks.len());
    for task in tasks {
        match task.await {
            Ok((tally, socket)) => {
                totals.add(&tally);
                sockets.extend(socket);
            }
            Err(error) => {
                totals.troubled += 1;
                totals
                    .first_trouble
                    .get_or_insert(format!("subscriber task: {error}"));
            }
        }
    }
    (totals, sockets)
}

/// The highest hub RSS seen until `window_over` turns true.
async fn sample_peak_rss(meter: Meter, mut window_over: watch::Receiver<bool>) -> Option<u64> {
    let mut peak = meter.hub_rss();
    loop {
        tokio::select! {
            _ = window_over.wait_for(|&over| over) => return peak.max(meter.hub_rss()),
            () = tokio::time::sleep(RSS_EVERY) => peak = peak.max(meter.hub_rss()),
        }
    }
}

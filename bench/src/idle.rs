//! `exechub-bench idle`: what an idle connection costs the hub, and whether it
//! gives the cost back when the connection ends.
//!
//! Opens N connections (WebSocket or SSE), each subscribed to its own
//! execution, spread over several loopback source addresses so that more than
//! one address's ~28k ephemeral ports are available. It samples the hub's RSS
//! and CPU time from `/proc` before connecting, once all are subscribed, and
//! after an idle period; then it closes everything and polls `/health` until
//! the hub says nothing is open. Only the hub is measured, never the bench.
//!
//! - [`conn`]: one connection's open / hold / close.
//! - [`report`]: the figures, as text and as one JSON line.
//!
//! The hub's address and the source range come from [`crate::target`], its
//! own counts from [`crate::health`].

mod conn;
mod report;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use futures_util::{StreamExt, stream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use self::conn::{CloseMode, Outcome, Transport};
use self::report::{Report, Tally};
use crate::health;
use crate::proc::Process;
use crate::target::{Hub, SourceIps, raise_fd_limit, warn_if_hub_fd_limit_low};

/// How long the hub gets to report every connection gone after the close.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// How long closing our side may take (a clean close waits for echoes).
const CLOSE_LIMIT: Duration = Duration::from_secs(10);

/// Settings of `exechub-bench idle`.
#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    /// The hub's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8099")]
    url: String,
    /// Transport of the idle connections.
    #[arg(long, value_enum, default_value_t = Transport::Ws)]
    transport: Transport,
    /// Connections to open, each subscribed to its own execution.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// The hub's process id, whose memory and CPU are measured.
    #[arg(long)]
    hub_pid: u32,
    /// Loopback source addresses (`A` or `A-B`), used round-robin.
    #[arg(long, default_value = "127.0.0.2-127.0.0.9")]
    source_ips: SourceIps,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds of idleness measured once all connections are subscribed.
    #[arg(long, default_value_t = 5)]
    settle_secs: u64,
    /// Give up connecting after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// How to end the connections after the idle period.
    #[arg(long, value_enum, default_value_t = CloseMode::Clean)]
    close: CloseMode,
}

/// Runs the idle benchmark and prints its report.
///
/// # Errors
/// Setup failed (file limit too low for `--connections`, no such hub process,
/// bad URL), connecting took longer than `--timeout`, or the verdict is bad:
/// a connection failed or was lost, or `/health` did not return to 0.
pub async fn run(args: IdleArgs) -> Result<()> {
    let fd_limit = raise_fd_limit(args.connections)?;
    let hub = Hub::resolve(&args.url).await?;
    let process = Process::new(args.hub_pid)
        .with_context(|| format!("--hub-pid {}: cannot read /proc", args.hub_pid))?;
    warn_if_hub_fd_limit_low(&process, args.connections);
    eprintln!(
        "idle {}: {} connections to {} from {} ({} addresses), {} in flight; fd limit {fd_limit}",
        args.transport.name(),
        args.connections,
        args.url,
        args.source_ips,
        args.source_ips.count(),
        args.concurrency
    );
    let mut report = Report::new(args.transport, args.close, args.connections);
    report.before = process.usage()?;
    let (close_tx, close_rx) = watch::channel(false);
    let started = Instant::now();
    let (tasks, tally) = tokio::time::timeout(
        Duration::from_secs(args.timeout),
        open_all(&args, &hub, close_rx),
    )
    .await
    .with_context(|| format!("connecting took longer than --timeout {} s", args.timeout))?;
    report.connect_time = started.elapsed();
    report.subscribed = process.usage()?;
    report.tally = tally;
    if report.tally.connected == 0 {
        bail!("no connection succeeded: {}", report.tally.first_error());
    }
    report.health_connected = Some(health::counts(&hub).await?);
    settle(&mut report, &process, args.settle_secs).await?;
    close_tx.send_replace(true);
    let closing = Instant::now();
    close_all(tasks, &mut report.tally).await;
    let (drain, counts) = health::wait_for_zero(&hub, closing, DRAIN_LIMIT).await?;
    report.drain = drain;
    report.health_after = Some(counts);
    report.after = process.usage()?;
    report.print();
    report.verdict()
}

/// Opens every connection, `--concurrency` at a time, and starts holding each
/// as soon as it is subscribed.
async fn open_all(
    args: &IdleArgs,
    hub: &Hub,
    close: watch::Receiver<bool>,
) -> (JoinSet<Outcome>, Tally) {
    let run = std::process::id();
    let mut attempts = stream::iter(0..args.connections)
        .map(|i| {
            let execution = format!("idle-{run}-{i}");
            let source = args.source_ips.pick(i);
            async move { conn::open(hub, args.transport, source, &execution).await }
        })
        .buffer_unordered(args.concurrency.max(1));
    let (mut tasks, mut tally) = (JoinSet::new(), Tally::default());
    let tenth = (args.connections / 10).max(1);
    while let Some(attempt) = attempts.next().await {
        match attempt {
            Ok(conn) => {
                tasks.spawn(conn::hold(conn, close.clone(), args.close));
                tally.connected += 1;
            }
            Err(error) => tally.fail(format!("{error:#}")),
        }
        let done = tally.connected + tally.failed;
        if done % tenth == 0 {
            eprintln!("  {done}/{}: {} failed", args.connections, tally.failed);
        }
    }
    (tasks, tally)
}

/// Lets the connections sit idle for `secs` and samples the hub after.
async fn settle(report: &mut Report, process: &Process, secs: u64) -> Result<()> {
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    report.settled = process.usage()?;
    report.settle_time = start.elapsed();
    Ok(())
}

/// Waits for every held connection to finish closing (or gives up after
/// [`CLOSE_LIMIT`], dropping the rest) and counts how each ended.
async fn close_all(mut tasks: JoinSet<Outcome>, tally: &mut Tally) {
    let deadline = tokio::time::Instant::now() + CLOSE_LIMIT;
    while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, tasks.join_next()).await {
        match joined {
            Ok(outcome) => tally.count(outcome),
            Err(error) => tally.count(Outcome::Lost(format!("task: {error}"))),
        }
    }
    tally.stuck = tasks.len();
    tasks.shutdown().await;
}

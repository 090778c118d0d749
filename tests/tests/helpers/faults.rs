//! Fault injection and measurement for the fault suite (`tests/faults.rs`):
//! killing our own server processes outright, a webhook receiver that can
//! die and come back on its port, paced publishers that retry through
//! outages, resuming WebSocket subscribers, a CPU sampler, and the figures.

use std::collections::HashSet;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use exechub_protocol::ServerMsg;
use futures_util::StreamExt;
use serde_json::{Value, json};

pub use super::redis::{Progress, publish_until_accepted};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::redis::free_port;
use super::ws::WsClient;
use super::{TestHub, assert_contiguous, within};

/// Prints one figure as `FIGURE <name>: <value>`, the line docs/reliability.md's table is built from.
pub fn figure(name: &str, value: impl std::fmt::Display) {
    eprintln!("FIGURE {name}: {value}");
}

/// Milliseconds with one decimal, for figures.
pub fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

/// The `q` quantile (0..=1) of `samples` (sorts them).
pub fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * q).round() as usize]
}

/// Serializes the scenarios of one test binary: each one loads the machine
/// and measures, so two at once would spoil each other's figures.
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// A uniform fraction in `[0, 1)` for backoff jitter (splitmix64; no crate needed).
pub struct Jitter(u64);

impl Jitter {
    pub fn seeded(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) as f64 / (u64::MAX as f64 + 1.0)
    }
}

// ---------------------------------------------------------------- processes

/// SIGKILLs the child of this test process whose command line names
/// `program` and `port` (tokio's `Child` only kills what it still owns, and
/// the helpers' server handles only stop gracefully), then waits until the
/// port refuses connections.
pub async fn kill_child_on_port(program: &str, port: u16) -> Result<()> {
    let pid = child_on_port(program, port)?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid)?),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    within(&format!("{program} to stop listening"), async {
        while TcpStream::connect(("127.0.0.1", port)).is_ok() {
            tokio::time::sleep(Duration::from_millis(5)).await; // poll interval
        }
    })
    .await
}

/// The pid of our child `program` listening on `port`, from `/proc`.
fn child_on_port(program: &str, port: u16) -> Result<u32> {
    let me = std::process::id();
    let port = port.to_string();
    for entry in std::fs::read_dir("/proc")? {
        let Some(pid) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let (Ok(stat), Ok(cmdline)) = (
            std::fs::read_to_string(format!("/proc/{pid}/stat")),
            std::fs::read(format!("/proc/{pid}/cmdline")),
        ) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        // redis-server rewrites its title to `redis-server 127.0.0.1:<port>`.
        let mut words = cmdline.split(['\0', ' ', ':']);
        if parent(&stat) == Some(me) && cmdline.contains(program) && words.any(|w| w == port) {
            return Ok(pid);
        }
    }
    bail!("no child process {program} on port {port}")
}

/// The parent pid in a `/proc/<pid>/stat` line (the field after the state).
fn parent(stat: &str) -> Option<u32> {
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time (user + system) a process has used, from `/proc/<pid>/stat`.
/// Linux reports it in clock ticks of `USER_HZ`, which is 100 on every
/// architecture it runs on.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').context("stat has a comm")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the comm: state is field 3, utime 14 and stime 15 (man 5 proc).
    let ticks = |i: usize| -> Result<u64> { Ok(fields.get(i - 3).context("field")?.parse()?) };
    Ok(Duration::from_millis((ticks(14)? + ticks(15)?) * 10))
}

/// A process's CPU load over a window, as fractions of one core.
#[derive(Debug, Clone, Copy)]
pub struct CpuLoad {
    /// The highest load of any one sampling interval.
    pub peak: f64,
    /// CPU time used over the whole window.
    pub used: Duration,
    /// Wall time of the window.
    pub wall: Duration,
}

/// Samples a process's CPU time at a fixed interval until [`CpuSampler::finish`].
pub struct CpuSampler {
    every: Duration,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Vec<(Instant, Duration)>>,
}

impl CpuSampler {
    pub fn start(pid: u32, every: Duration) -> Self {
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = &mut stopped => break,
                }
                match cpu_time(pid) {
                    Ok(used) => samples.push((Instant::now(), used)),
                    Err(_) => break,
                }
            }
            if let Ok(used) = cpu_time(pid) {
                samples.push((Instant::now(), used));
            }
            samples
        });
        Self { every, stop, task }
    }

    /// Stops sampling and sums up.
    pub async fn finish(self) -> Result<CpuLoad> {
        let _ = self.stop.send(());
        let samples = self.task.await?;
        ensure!(samples.len() >= 2, "too few CPU samples");
        let peak = peak_load(&samples, self.every);
        let (first, last) = (samples[0], samples[samples.len() - 1]);
        Ok(CpuLoad {
            peak,
            used: last.1 - first.1,
            wall: last.0 - first.0,
        })
    }
}

/// The highest load over any window of at least `every` between samples
/// (a busy runtime may take samples late and close together; CPU time moves
/// in 10 ms ticks, so shorter windows would exaggerate).
fn peak_load(samples: &[(Instant, Duration)], every: Duration) -> f64 {
    let mut peak = 0.0_f64;
    for (i, (start, used)) in samples.iter().enumerate() {
        let later = samples[i + 1..]
            .iter()
            .find(|(at, _)| *at - *start >= every);
        if let Some((end, total)) = later {
            peak = peak.max((*total - *used).as_secs_f64() / (*end - *start).as_secs_f64());
        }
    }
    peak
}

// ---------------------------------------------------------------- webhook

/// One request the receiver got: which event, and when.
#[derive(Debug, Clone)]
pub struct Hook {
    pub execution_id: String,
    pub seq: u64,
    pub at: Instant,
}

/// A webhook receiver that answers 200 and can be killed and restarted on
/// the same port. It runs on a thread with its own runtime, so killing it
/// drops every connection at once, as a crashed process would.
pub struct Webhook {
    pub port: u16,
    seen_tx: mpsc::UnboundedSender<Hook>,
    seen: mpsc::UnboundedReceiver<Hook>,
    server: Option<(oneshot::Sender<()>, std::thread::JoinHandle<()>)>,
}

impl Webhook {
    pub fn spawn() -> Result<Self> {
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let mut webhook = Self {
            port: free_port()?,
            seen_tx,
            seen,
            server: None,
        };
        webhook.start()?;
        Ok(webhook)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks/exechub", self.port)
    }

    /// (Re)starts it on its port; it accepts connections when this returns.
    pub fn start(&mut self) -> Result<()> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", self.port))?;
        listener.set_nonblocking(true)?;
        let (stop, stopped) = oneshot::channel();
        let seen = self.seen_tx.clone();
        let thread = std::thread::spawn(move || serve_until(listener, seen, stopped));
        self.server = Some((stop, thread));
        Ok(())
    }

    /// Kills it: the listener and every open connection close at once.
    pub async fn kill(&mut self) -> Result<()> {
        let (stop, thread) = self.server.take().context("the receiver is not running")?;
        let _ = stop.send(());
        tokio::task::spawn_blocking(move || thread.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the receiver thread panicked"))
    }

    /// The next request, waiting at most [`super::WAIT`].
    pub async fn next(&mut self) -> Result<Hook> {
        within("a webhook request", self.seen.recv())
            .await?
            .context("receiver gone")
    }

    /// A request that already arrived, if any (does not wait).
    pub fn try_next(&mut self) -> Option<Hook> {
        self.seen.try_recv().ok()
    }
}

fn serve_until(
    listener: std::net::TcpListener,
    seen: mpsc::UnboundedSender<Hook>,
    stopped: oneshot::Receiver<()>,
) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    runtime.block_on(async move {
        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
            return;
        };
        let app = Router::new().fallback(record).with_state(seen);
        tokio::select! {
            _ = axum::serve(listener, app) => {}
            _ = stopped => {}
        }
    });
    // Dropping the runtime here drops every connection task and its socket.
}

async fn record(State(seen): State<mpsc::UnboundedSender<Hook>>, body: Bytes) -> StatusCode {
    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let hook = Hook {
        execution_id: event["execution_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        seq: event["seq"].as_u64().unwrap_or_default(),
        at: Instant::now(),
    };
    let _ = seen.send(hook);
    StatusCode::OK
}

// ---------------------------------------------------------------- publishing

/// One acknowledged event: its seq, when it was due, when it was acknowledged.
#[derive(Debug, Clone, Copy)]
pub struct Published {
    pub seq: u64,
    pub due: Instant,
    pub acked: Instant,
}

/// Publishes events 0..total, event `n` due at start + n × `period` (late
/// ones are sent at once, as a worker drains what queued up during an
/// outage), each retried through `urls` until accepted.
pub fn spawn_paced_publisher(
    http: reqwest::Client,
    urls: Vec<String>,
    period: Duration,
    total: u64,
) -> (
    JoinHandle<Result<Vec<Published>>>,
    watch::Receiver<Progress>,
) {
    let (progress_tx, progress) = watch::channel(Progress::default());
    let task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut published = Vec::with_capacity(total as usize);
        for n in 0..total {
            let due = ticks.tick().await.into_std();
            let seq = publish_until_accepted(&http, &urls, n, &progress_tx).await?;
            published.push(Published {
                seq,
                due,
                acked: Instant::now(),
            });
        }
        Ok(published)
    });
    (task, progress)
}

// ---------------------------------------------------------------- subscribing

/// Opens `count` WebSocket subscribers from seq 0, subscriber `i` on
/// `nodes[i % 2]` and execution `ids[(i / 2) % ids.len()]`, so every
/// execution has subscribers on both nodes. Returns `(i, connection)`.
pub async fn subscribers(
    nodes: [&TestHub; 2],
    ids: &[String],
    count: usize,
) -> Result<Vec<(usize, WsClient)>> {
    let urls = nodes.map(|node| format!("ws://{}/ws", node.addr));
    futures_util::stream::iter(0..count)
        .map(|i| {
            let (url, id) = (&urls[i % 2], &ids[(i / 2) % ids.len()]);
            async move {
                let mut ws = WsClient::connect(url).await?;
                subscribe_from(&mut ws, id, 0, None).await?;
                anyhow::Ok((i, ws))
            }
        })
        .buffer_unordered(16) // a few handshakes at a time, as clients trickle in
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Waits until every publisher's progress satisfies `done`.
pub async fn all_publishers(
    progress: &mut [watch::Receiver<Progress>],
    what: &str,
    done: impl Fn(&Progress) -> bool + Copy,
) -> Result<()> {
    for p in progress {
        within(what, p.wait_for(done)).await??;
    }
    Ok(())
}

/// Awaits the publishers and checks each acknowledged `1..=total`, once each.
pub async fn acknowledged(
    publishers: Vec<JoinHandle<Result<Vec<Published>>>>,
    total: u64,
) -> Result<Vec<Vec<Published>>> {
    let mut all = Vec::new();
    for publisher in publishers {
        let published = publisher.await??;
        let seqs: Vec<u64> = published.iter().map(|p| p.seq).collect();
        assert_contiguous(&seqs, 1, total);
        all.push(published);
    }
    Ok(all)
}

/// Sums the subscribers' loss, duplicates and disorder, and prints them.
pub fn tally(scenario: &str, delivered: &[(usize, Delivered)], total: u64) -> Tally {
    let sum = delivered
        .iter()
        .map(|(_, d)| Tally::of(&d.seqs, total))
        .fold(Tally::default(), Tally::add);
    figure(&format!("{scenario}_lost"), sum.lost);
    figure(&format!("{scenario}_duplicated"), sum.duplicated);
    figure(&format!("{scenario}_out_of_order"), sum.out_of_order);
    sum
}

/// How long after `restarted` every subscriber had every event that was due
/// by then (acknowledged before the kill, or queued by its publisher during
/// the outage and acknowledged after the restart).
pub fn caught_up_after(
    published: &[Vec<Published>],
    delivered: &[(usize, Delivered)],
    restarted: Instant,
) -> Result<Duration> {
    let mut latest = restarted;
    for (i, d) in delivered {
        let execution = &published[(i / 2) % published.len()];
        let last_due = execution
            .iter()
            .filter(|p| p.due <= restarted)
            .map(|p| p.seq)
            .max()
            .context("events due before the restart")?;
        latest = latest.max(d.arrival(last_due).context("the backlog arrived")?);
    }
    Ok(latest - restarted)
}

/// What one subscriber received: each event's seq and arrival, in order.
#[derive(Debug, Default, Clone)]
pub struct Delivered {
    pub seqs: Vec<u64>,
    pub at: Vec<Instant>,
    /// When it was subscribed again after losing its node (if it did).
    pub resubscribed: Option<Instant>,
}

impl Delivered {
    pub fn push(&mut self, seq: u64) {
        self.seqs.push(seq);
        self.at.push(Instant::now());
    }

    /// When `seq` arrived (its first delivery).
    pub fn arrival(&self, seq: u64) -> Option<Instant> {
        let index = self.seqs.iter().position(|s| *s == seq)?;
        Some(self.at[index])
    }
}

/// How far deliveries are from `1..=total` each exactly once, in order.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
}

impl Tally {
    pub fn of(seqs: &[u64], total: u64) -> Self {
        let distinct: HashSet<u64> = seqs.iter().copied().collect();
        Self {
            lost: (1..=total).filter(|s| !distinct.contains(s)).count() as u64,
            duplicated: (seqs.len() - distinct.len()) as u64,
            out_of_order: seqs.windows(2).filter(|w| w[1] < w[0]).count() as u64,
        }
    }

    pub fn add(self, other: Self) -> Self {
        Self {
            lost: self.lost + other.lost,
            duplicated: self.duplicated + other.duplicated,
            out_of_order: self.out_of_order + other.out_of_order,
        }
    }
}

/// Subscribes `ws` to `execution_id` from a position (`after`, in `epoch`)
/// and waits for `subscribed`.
pub async fn subscribe_from(
    ws: &mut WsClient,
    execution_id: &str,
    after: u64,
    epoch: Option<&str>,
) -> Result<()> {
    let mut request = json!({ "op": "subscribe", "execution_id": execution_id, "after": after });
    if let Some(epoch) = epoch {
        request["epoch"] = json!(epoch);
    }
    ws.request(request).await?;
    match ws.next_msg().await? {
        ServerMsg::Subscribed { .. } => Ok(()),
        other => bail!("expected subscribed, got {other:?}"),
    }
}

/// Reads a subscribed connection until the event with seq `total`; any frame
/// but an event (a `history_lost`, an error, a close) fails.
pub async fn deliveries(mut ws: WsClient, total: u64) -> Result<Delivered> {
    let mut delivered = Delivered::default();
    loop {
        match ws.next_msg().await? {
            ServerMsg::Event { event, .. } => {
                delivered.push(event.seq);
                if event.seq >= total {
                    return Ok(delivered);
                }
            }
            other => bail!("expected an event, got {other:?}"),
        }
    }
}

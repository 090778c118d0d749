//! One publisher connection: publishes its executions' events round-robin on
//! a fixed schedule (or as fast as it can), each carrying its send time.
//!
//! Over HTTP a connection has one request in flight, as a worker's keep-alive
//! client would; over WebSocket up to `--window` publishes await their `ack`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use exechub_protocol::{RequestId, ServerMsg};
use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::http::HttpConn;
use crate::latency::{Latencies, micros_now};
use crate::ws::Socket;

/// What one publisher sends, and when.
#[derive(Debug, Clone)]
pub struct Job {
    /// Its executions, published to round-robin.
    pub executions: Vec<String>,
    /// Events each of them gets.
    pub per_execution: u64,
    /// When publish `k` is due: `start + k × interval` (`None`: at once).
    pub start: Instant,
    /// Time between publishes.
    pub interval: Option<Duration>,
    /// Padding for each event's `data`.
    pub pad: Arc<str>,
    /// Round trips (request to `202`, or `publish` to `ack`) are recorded here.
    pub acks: Latencies,
}

/// How one publisher fared.
#[derive(Debug, Clone, Copy, Default)]
pub struct Published {
    /// Events accepted by the hub.
    pub events: u64,
    /// The furthest a publish fell behind its schedule.
    pub behind: Duration,
}

impl Job {
    fn total(&self) -> u64 {
        self.per_execution * self.executions.len() as u64
    }

    /// The execution of publish `k`.
    fn execution(&self, k: u64) -> &str {
        &self.executions[(k % self.executions.len() as u64) as usize]
    }

    /// Waits until publish `k` is due; returns how late it is.
    async fn wait_for(&self, k: u64) -> Duration {
        let Some(interval) = self.interval else {
            return Duration::ZERO;
        };
        let due = self.start + interval.mul_f64(k as f64);
        tokio::time::sleep_until(due).await;
        Instant::now().saturating_duration_since(due)
    }

    /// The `data` object of the next event: send time now, then padding.
    fn data(&self) -> String {
        format!(r#"{{"sent_us":{},"pad":"{}"}}"#, micros_now(), self.pad)
    }
}

/// Publishes `job` with `POST …/events`, one request at a time.
///
/// # Errors
/// The connection failed or the hub answered anything but `202`.
pub async fn over_http(
    mut conn: HttpConn<TcpStream>,
    paths: Vec<String>,
    job: Job,
) -> Result<Published> {
    let mut published = Published::default();
    for k in 0..job.total() {
        published.behind = published.behind.max(job.wait_for(k).await);
        let index = (k % paths.len() as u64) as usize;
        let body = format!(r#"{{"event_type":"bench","data":{}}}"#, job.data());
        let sent = Instant::now();
        let response = conn.post_json(&paths[index], body.as_bytes()).await?;
        if response.status != 202 {
            bail!(
                "POST {} answered {}: {}",
                paths[index],
                response.status,
                response.snippet()
            );
        }
        job.acks.record_since(sent);
        published.events += 1;
    }
    Ok(published)
}

/// Publishes `job` with WebSocket `publish` ops, `window` unacknowledged at most.
///
/// # Errors
/// The socket failed or closed, or the hub refused a publish.
pub async fn over_ws(socket: Socket, job: Job, window: usize) -> Result<Published> {
    let (mut sink, stream) = socket.split();
    let credit = Arc::new(Semaphore::new(window));
    let in_flight = Arc::new(Mutex::new(HashMap::new()));
    let reader = tokio::spawn(read_acks(
        stream,
        job.total(),
        credit.clone(),
        in_flight.clone(),
        job.acks.clone(),
    ));
    let mut published = Published::default();
    for k in 0..job.total() {
        published.behind = published.behind.max(job.wait_for(k).await);
        // A closed semaphore means the reader failed: its error is the one to report.
        let Ok(permit) = credit.acquire().await else {
            break;
        };
        permit.forget();
        let frame = format!(
            r#"{{"op":"publish","id":{k},"execution_id":"{}","event_type":"bench","data":{}}}"#,
            job.execution(k),
            job.data()
        );
        lock(&in_flight).insert(k, Instant::now());
        sink.send(Message::text(frame)).await?;
    }
    published.events = reader.await.context("ack reader panicked")??;
    Ok(published)
}

/// Reads `count` acks, returning a window credit and recording the round trip
/// of each; closes `credit` if it fails so that the sender stops.
async fn read_acks(
    mut stream: SplitStream<Socket>,
    count: u64,
    credit: Arc<Semaphore>,
    in_flight: Arc<Mutex<HashMap<u64, Instant>>>,
    acks: Latencies,
) -> Result<u64> {
    let result = async {
        let mut acked = 0;
        while acked < count {
            let Some(frame) = stream.next().await else {
                bail!("publisher connection closed after {acked} acks");
            };
            let Message::Text(text) = frame? else {
                continue;
            };
            match serde_json::from_str(text.as_str())? {
                ServerMsg::Ack {
                    id: Some(RequestId::Num(id)),
                    ..
                } => {
                    acked += 1;
                    credit.add_permits(1);
                    if let Some(sent) = lock(&in_flight).remove(&id) {
                        acks.record_since(sent);
                    }
                }
                ServerMsg::Error { message, .. } => bail!("publish refused: {message}"),
                _ => {}
            }
        }
        Ok(acked)
    }
    .await;
    if result.is_err() {
        credit.close();
    }
    result
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

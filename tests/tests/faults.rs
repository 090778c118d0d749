//! The fault suite: real processes killed and restarted under load, each
//! scenario reporting its figures (`FIGURE <name>: <value>` on stderr, run
//! with `--nocapture`) and asserting them. The table in docs/reliability.md
//! comes from these lines. Loads are sized for a 2-core machine running a
//! debug build of the hub beside Redis, NATS and the test itself; the
//! scenarios take turns so that one's load does not spoil another's figures.

mod helpers;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use exechub_protocol::backoff::Backoff;
use exechub_protocol::{ServerMsg, close};
use helpers::faults::{
    CpuSampler, Delivered, Jitter, Tally, Webhook, acknowledged, all_publishers, caught_up_after,
    deliveries, figure, kill_child_on_port, ms, one_at_a_time, quantile, spawn_paced_publisher,
    subscribe_from, subscribers, tally,
};
use helpers::ws::{Received, WsClient};
use helpers::{SseClient, TestHub, TestNats, TestRedis, assert_contiguous, execution_id, within};
use serde_json::{Value, json};
use tokio::sync::mpsc;

async fn node(redis: &TestRedis) -> Result<TestHub> {
    TestHub::spawn(&["--redis-url", &redis.url()]).await
}

// ---------------------------------------------------------------- 1. Redis

/// Redis is SIGKILLed mid-stream (4 publishers, 200 events/s, 200 WebSocket
/// subscribers on two nodes) and restarted on its port with its append-only
/// file: every acknowledged event reaches every subscriber of its execution
/// exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_stream_loses_and_duplicates_nothing_acknowledged() -> Result<()> {
    const EXECUTIONS: usize = 4;
    const SUBSCRIBERS: usize = 200;
    const TOTAL: u64 = 300; // per execution: 6 s at 50 events/s each
    const PERIOD: Duration = Duration::from_millis(20);
    let _turn = one_at_a_time().await;
    let mut redis = TestRedis::spawn().await?;
    let (a, b) = (node(&redis).await?, node(&redis).await?);
    let ids: Vec<String> = (0..EXECUTIONS)
        .map(|_| execution_id("redis-kill"))
        .collect();
    let readers: Vec<_> = subscribers([&a, &b], &ids, SUBSCRIBERS)
        .await?
        .into_iter()
        .map(|(i, ws)| (i, tokio::spawn(deliveries(ws, TOTAL))))
        .collect();
    let (publishers, mut progress): (Vec<_>, Vec<_>) = (0..EXECUTIONS)
        .map(|j| {
            let nodes = if j % 2 == 0 { [&a, &b] } else { [&b, &a] };
            let urls = nodes.map(|n| n.events_url(&ids[j])).to_vec();
            spawn_paced_publisher(a.http.clone(), urls, PERIOD, TOTAL)
        })
        .unzip();

    all_publishers(&mut progress, "first publishes", |p| p.acked >= 75).await?;
    let killed = Instant::now();
    kill_child_on_port("redis-server", redis.port).await?;
    // About a second down: each publisher retries both nodes every 50 ms.
    all_publishers(&mut progress, "40 503s for every publisher", |p| {
        p.refused >= 40
    })
    .await?;
    redis.start().await?;
    let restarted = Instant::now();
    let refused: u32 = progress.iter().map(|p| p.borrow().refused).sum();

    let published = acknowledged(publishers, TOTAL).await?;
    let mut delivered = Vec::new();
    for (i, reader) in readers {
        delivered.push((i, reader.await??));
    }
    figure("redis_outage", ms(restarted - killed));
    figure("redis_publishes_refused_503", refused);
    let sum = tally("redis", &delivered, TOTAL);
    let first = delivered
        .iter()
        .filter_map(|(_, d)| d.at.iter().find(|at| **at >= restarted))
        .min()
        .context("deliveries after the restart")?;
    figure("redis_restart_to_first_delivery", ms(*first - restarted));
    let caught_up = caught_up_after(&published, &delivered, restarted)?;
    figure("redis_restart_to_backlog_delivered", ms(caught_up));
    assert_eq!(sum, Tally::default(), "every subscriber: 1..={TOTAL} once");
    assert!(
        caught_up < Duration::from_secs(10),
        "recovery took {caught_up:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------- 2. a node

/// The browser client's reconnect policy (`exechub-client`'s defaults).
const RECONNECT: Backoff = Backoff {
    first: Duration::from_millis(250),
    max: Duration::from_secs(10),
};

/// A hub node with many subscribers is SIGKILLed while publishing goes on:
/// its subscribers reconnect to the surviving node with the browser client's
/// backoff and jitter, resume from their position, and lose nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_node_subscribers_resume_on_the_survivor_without_loss() -> Result<()> {
    const EXECUTIONS: usize = 10;
    const SUBSCRIBERS: usize = 2_000;
    const TOTAL: u64 = 40; // per execution: 10 s at 4 events/s each
    const PERIOD: Duration = Duration::from_millis(250);
    let _turn = one_at_a_time().await;
    let redis = TestRedis::spawn().await?;
    let (mut a, b) = (node(&redis).await?, node(&redis).await?);
    let ids: Vec<String> = (0..EXECUTIONS).map(|_| execution_id("node-kill")).collect();
    let survivor = format!("ws://{}/ws", b.addr);
    let (resubscribed_tx, mut resubscribed) = mpsc::unbounded_channel();
    let mut readers = Vec::new();
    for (i, ws) in subscribers([&a, &b], &ids, SUBSCRIBERS).await? {
        let reader = if i % 2 == 0 {
            let id = ids[(i / 2) % EXECUTIONS].clone();
            let resume = Resume {
                survivor: survivor.clone(),
                execution_id: id,
                seed: i as u64,
                resubscribed: resubscribed_tx.clone(),
            };
            tokio::spawn(resuming(ws, resume, TOTAL))
        } else {
            tokio::spawn(deliveries(ws, TOTAL))
        };
        readers.push((i, reader));
    }
    let (publishers, mut progress): (Vec<_>, Vec<_>) = (0..EXECUTIONS)
        .map(|j| {
            let nodes = if j % 2 == 0 { [&a, &b] } else { [&b, &a] };
            let urls = nodes.map(|n| n.events_url(&ids[j])).to_vec();
            spawn_paced_publisher(b.http.clone(), urls, PERIOD, TOTAL)
        })
        .unzip();

    all_publishers(&mut progress, "first publishes", |p| p.acked >= 12).await?;
    let cpu = CpuSampler::start(b.pid()?, Duration::from_millis(100));
    let own_cpu = CpuSampler::start(std::process::id(), Duration::from_millis(100));
    let killed = Instant::now();
    a.kill().await?;
    let mut storm = Vec::with_capacity(SUBSCRIBERS / 2);
    let mut failed_attempts = 0;
    for _ in 0..SUBSCRIBERS / 2 {
        let (at, failed) = within("every subscriber to resubscribe", resubscribed.recv())
            .await?
            .context("a subscriber gave up")?;
        storm.push(at - killed);
        failed_attempts += failed;
    }
    let load = cpu.finish().await?;
    let own = own_cpu.finish().await?;
    let last = quantile(&mut storm, 1.0);

    acknowledged(publishers, TOTAL).await?;
    let mut delivered = Vec::new();
    for (i, reader) in readers {
        delivered.push((i, reader.await??));
    }
    figure("node_kill_subscribers", SUBSCRIBERS);
    figure("node_kill_resubscribed", SUBSCRIBERS / 2);
    let sum = tally("node_kill", &delivered, TOTAL);
    figure(
        "node_kill_storm",
        format!(
            "{} (resubscribed: p50 {}, p90 {}; {failed_attempts} failed attempts)",
            ms(last),
            ms(quantile(&mut storm, 0.5)),
            ms(quantile(&mut storm, 0.9))
        ),
    );
    figure(
        "node_kill_survivor_peak_cpu",
        format!("{:.0}% of one core (100 ms windows)", load.peak * 100.0),
    );
    figure(
        "node_kill_survivor_cpu_during_storm",
        format!("{} over {}", ms(load.used), ms(load.wall)),
    );
    figure(
        "node_kill_test_process_peak_cpu",
        format!(
            "{:.0}% of one core (its clients share the 2 cores)",
            own.peak * 100.0
        ),
    );
    assert_eq!(sum, Tally::default(), "every subscriber: 1..={TOTAL} once");
    assert!(last < Duration::from_secs(15), "storm {last:?}");
    Ok(())
}

/// Where a subscriber of the killed node goes, and whom it tells.
struct Resume {
    survivor: String,
    execution_id: String,
    seed: u64,
    /// When it resubscribed, and after how many failed attempts.
    resubscribed: mpsc::UnboundedSender<(Instant, u32)>,
}

/// Reads events until seq `total`; when the node dies, resubscribes on the
/// survivor after the last position seen (seq and epoch), once.
async fn resuming(mut ws: WsClient, resume: Resume, total: u64) -> Result<Delivered> {
    let mut delivered = Delivered::default();
    let mut epoch: Option<String> = None;
    loop {
        match ws.next().await {
            Ok(Received::Msg(ServerMsg::Event { epoch: e, event })) => {
                if e.is_some() {
                    epoch = e;
                }
                delivered.push(event.seq);
                if event.seq >= total {
                    return Ok(delivered);
                }
            }
            Ok(Received::Msg(other)) => bail!("expected an event, got {other:?}"),
            Ok(Received::Closed(_)) | Err(_) if delivered.resubscribed.is_none() => {
                let after = delivered.seqs.last().copied().unwrap_or(0);
                let (resumed, failed) = reconnect(&resume, after, epoch.as_deref()).await?;
                ws = resumed;
                let now = Instant::now();
                delivered.resubscribed = Some(now);
                let _ = resume.resubscribed.send((now, failed));
            }
            Ok(Received::Closed(frame)) => bail!("the survivor closed: {frame:?}"),
            Err(error) => return Err(error),
        }
    }
}

/// As the browser client: wait a jittered, doubling delay before each
/// attempt, until one connects and resubscribes; also returns how many
/// attempts failed.
async fn reconnect(resume: &Resume, after: u64, epoch: Option<&str>) -> Result<(WsClient, u32)> {
    let mut attempts = RECONNECT.attempts();
    let mut jitter = Jitter::seeded(resume.seed);
    within("a reconnection", async {
        for failed in 0.. {
            tokio::time::sleep(attempts.next_delay(jitter.next())).await;
            let Ok(mut ws) = WsClient::connect(&resume.survivor).await else {
                continue;
            };
            if subscribe_from(&mut ws, &resume.execution_id, after, epoch)
                .await
                .is_ok()
            {
                return Ok((ws, failed));
            }
        }
        bail!("out of attempts")
    })
    .await?
}

// ---------------------------------------------------------------- 3. providers

/// NATS (JetStream, SIGKILLed) and the webhook receiver (killed) go away and
/// come back: publishing does not slow down or fail meanwhile, and both get
/// the whole backlog afterwards, once each, in seq order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_killed_and_restarted_keep_publishing_fast_and_get_the_backlog_in_order()
-> Result<()> {
    const WARM_UP: u64 = 20;
    const PHASE: u64 = 200;
    let _turn = one_at_a_time().await;
    let mut nats = TestNats::spawn_jetstream().await?;
    let jetstream = async_nats::jetstream::new(nats.client().await?);
    jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: "EXECUTIONS".into(),
            subjects: vec!["executions.>".into()],
            ..Default::default()
        })
        .await?;
    let mut webhook = Webhook::spawn()?;
    let hook_url = webhook.url();
    // Enough attempts to outlast the outage (the default, 5, gives up after ~3 s).
    let args = [
        "--nats-url",
        &nats.url(),
        "--nats-jetstream",
        "--webhook",
        &hook_url,
        "--webhook-max-attempts",
        "30",
    ];
    let hub = TestHub::spawn(&args).await?;
    nats_health(&hub, "the hub to connect to NATS", |p| p["ok"] == true).await?;
    let id = execution_id("providers-down");

    let mut next = 0;
    timed_publishes(&hub, &id, &mut next, WARM_UP).await?;
    let mut before = timed_publishes(&hub, &id, &mut next, PHASE).await?;
    let delivered_before = next;
    nats_health(&hub, "NATS to have every event", |p| {
        p["delivered"] == delivered_before
    })
    .await?;
    for _ in 0..delivered_before {
        webhook.next().await?;
    }

    kill_child_on_port("nats-server", nats.port).await?;
    webhook.kill().await?;
    nats_health(&hub, "the hub to see NATS down", |p| p["ok"] == false).await?;
    let mut during = timed_publishes(&hub, &id, &mut next, PHASE).await?;
    let last_down = next;

    nats.start().await?;
    webhook.start()?;
    let restarted = Instant::now();
    let nats_caught_up = tokio::spawn(nats_delivered_at(hub.url("/health"), last_down));
    let mut after = timed_publishes(&hub, &id, &mut next, PHASE).await?;
    let total = next;

    let mut hooked = Vec::new();
    let mut webhook_caught_up = None;
    for _ in delivered_before..total {
        let hook = webhook.next().await?;
        ensure!(hook.execution_id == id, "{hook:?}");
        if hook.seq == last_down {
            webhook_caught_up = Some(hook.at);
        }
        hooked.push(hook.seq);
    }
    assert_contiguous(&hooked, delivered_before + 1, total);
    let nats_caught_up = nats_caught_up.await??;
    nats_health(&hub, "NATS to have every event", |p| {
        p["delivered"] == total
    })
    .await?;
    assert_stream_in_order(&nats, &id, total).await?;

    for (phase, samples) in [
        ("before", &mut before),
        ("during", &mut during),
        ("after", &mut after),
    ] {
        figure(
            &format!("providers_publish_{phase}_outage"),
            format!(
                "p50 {}, p99 {} ({PHASE} publishes)",
                ms(quantile(samples, 0.5)),
                ms(quantile(samples, 0.99))
            ),
        );
    }
    let webhook_caught_up = webhook_caught_up.context("the last down-period event")?;
    figure(
        "providers_webhook_backlog_delivered",
        ms(webhook_caught_up - restarted),
    );
    figure(
        "providers_nats_backlog_delivered",
        ms(nats_caught_up - restarted),
    );
    ensure!(webhook.try_next().is_none(), "an extra webhook request");
    figure(
        "providers_down_period_events_delivered",
        format!(
            "{0}/{0} to the webhook and to JetStream, once each, in seq order",
            last_down - delivered_before
        ),
    );
    let bound = quantile(&mut before, 0.99) * 5 + Duration::from_millis(20);
    let p99 = quantile(&mut during, 0.99);
    assert!(p99 <= bound, "p99 during the outage {p99:?} > {bound:?}");
    Ok(())
}

/// Publishes `count` events numbered from `*next`, returning each one's latency.
async fn timed_publishes(
    hub: &TestHub,
    id: &str,
    next: &mut u64,
    count: u64,
) -> Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let started = Instant::now();
        let seq = hub.publish(id, "tick", json!({ "n": *next })).await?;
        samples.push(started.elapsed());
        *next += 1;
        ensure!(seq == *next, "seq {seq}, expected {next}");
    }
    Ok(samples)
}

/// Polls `/health` until the NATS provider satisfies `done`.
async fn nats_health(hub: &TestHub, what: &str, done: impl Fn(&Value) -> bool) -> Result<()> {
    hub.health_until(what, |health| {
        health["providers"]
            .as_array()
            .and_then(|all| all.iter().find(|p| p["kind"] == "nats"))
            .is_some_and(&done)
    })
    .await?;
    Ok(())
}

/// When NATS's `delivered` count at `health_url` first reached `count`.
async fn nats_delivered_at(health_url: String, count: u64) -> Result<Instant> {
    let http = reqwest::Client::new();
    within("NATS to get the backlog", async {
        loop {
            let health: Value = http.get(&health_url).send().await?.json().await?;
            let nats = health["providers"]
                .as_array()
                .and_then(|all| all.iter().find(|p| p["kind"] == "nats"));
            if nats.and_then(|p| p["delivered"].as_u64()) >= Some(count) {
                return anyhow::Ok(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(10)).await; // poll interval
        }
    })
    .await?
}

/// The JetStream stream holds exactly events `1..=total` of `id`, in seq order.
async fn assert_stream_in_order(nats: &TestNats, id: &str, total: u64) -> Result<()> {
    let jetstream = async_nats::jetstream::new(nats.client().await?);
    let mut stream = jetstream.get_stream("EXECUTIONS").await?;
    assert_eq!(
        stream.info().await?.state.messages,
        total,
        "one message per event"
    );
    for n in 1..=total {
        let message = stream.get_raw_message(n).await?;
        let event: Value = serde_json::from_slice(&message.payload)?;
        assert_eq!(
            (event["execution_id"].as_str(), event["seq"].as_u64()),
            (Some(id), Some(n))
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- 4. tokens

const SECRET: &str = "faults-secret-5d21";

/// A token with `exp` already past but inside the hub's 5 s leeway ends on
/// every transport within 1.5 s of `exp + 5`: HTTP answers 401
/// `token_expired`, SSE sends `event: error` and ends, WebSocket closes 4002.
/// Sockets are opened at two points of the wall clock's second (0.1 and 0.8),
/// since the hub counts token time in whole seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_end_every_transport_within_1_5_s_of_the_leeway() -> Result<()> {
    let _turn = one_at_a_time().await;
    let hub = TestHub::spawn(&["--jwt-secret", SECRET]).await?;
    for phase in [100, 800] {
        let exp = at_phase(Duration::from_millis(phase)).await? - 3;
        let token = token_expiring_at(exp)?;
        let (http, sse, ws) = tokio::try_join!(
            http_refused_at(&hub, &token),
            sse_ended_at(&hub, &token),
            ws_closed_at(&hub, &token)
        )?;
        for (transport, at) in [("http", http), ("sse", sse), ("websocket", ws)] {
            let lag = at - (exp + 5) as f64;
            figure(
                &format!("token_expiry_{transport}_lag_at_phase_0.{}", phase / 100),
                format!("{:.0} ms", lag * 1000.0),
            );
            assert!(
                lag >= -0.01,
                "{transport} acted {lag} s before the leeway ended"
            );
            assert!(
                lag <= 1.5,
                "{transport} acted {lag} s after the leeway ended"
            );
        }
    }
    Ok(())
}

/// Waits until the wall clock is `phase` into a second; returns that second.
async fn at_phase(phase: Duration) -> Result<u64> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
    let into = Duration::from_nanos(u64::from(now.subsec_nanos()));
    let wait = if into <= phase {
        phase - into
    } else {
        Duration::from_secs(1) + phase - into
    };
    tokio::time::sleep(wait).await; // to a point of the wall clock, not for readiness
    Ok(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())
}

/// Unix time in seconds, with its fraction.
fn wall_clock() -> Result<f64> {
    Ok(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64())
}

fn token_expiring_at(exp: u64) -> Result<String> {
    let claims = json!({ "sub": "t", "exp": exp, "scope": ["publish", "subscribe"] });
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes())?;
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &key,
    )?)
}

/// Reads a history with `token` every 10 ms until it is refused; when that was.
async fn http_refused_at(hub: &TestHub, token: &str) -> Result<f64> {
    let url = hub.events_url(&execution_id("expiry-http"));
    within("HTTP to refuse the token", async {
        loop {
            let response = hub.http.get(&url).bearer_auth(token).send().await?;
            let at = wall_clock()?;
            match response.status().as_u16() {
                200 => {}
                401 => {
                    let body: Value = response.json().await?;
                    ensure!(body["code"] == "token_expired", "{body}");
                    return Ok(at);
                }
                other => bail!("history answered {other}"),
            }
            tokio::time::sleep(Duration::from_millis(10)).await; // poll interval
        }
    })
    .await?
}

/// Opens a stream with `token`; when its final `token_expired` error came.
async fn sse_ended_at(hub: &TestHub, token: &str) -> Result<f64> {
    let id = execution_id("expiry-sse");
    let url = hub.url(&format!(
        "/api/v1/executions/{id}/stream?access_token={token}"
    ));
    let mut stream = SseClient::connect(&hub.http, &url, None::<u64>).await?;
    let notice = stream.next_message().await?.context("a final message")?;
    let at = wall_clock()?;
    ensure!(
        notice.event.as_deref() == Some("error") && notice.data.contains("token_expired"),
        "{notice:?}"
    );
    ensure!(stream.next_message().await?.is_none(), "the stream went on");
    Ok(at)
}

/// Opens a WebSocket with `token`; when it was closed with 4002.
async fn ws_closed_at(hub: &TestHub, token: &str) -> Result<f64> {
    let mut ws = WsClient::connect(&format!("ws://{}/ws?access_token={token}", hub.addr)).await?;
    match ws.next().await? {
        Received::Closed(Some(frame)) if u16::from(frame.code) == close::TOKEN_EXPIRED => {
            wall_clock()
        }
        other => bail!("expected close 4002, got {other:?}"),
    }
}

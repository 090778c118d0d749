//! Providers: HTTP webhooks and NATS, against a real hub, an in-test webhook
//! receiver and real nats-server processes.

mod helpers;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use futures_util::StreamExt;
use helpers::webhook::{Answer, Receiver, Request, verify};
use helpers::{TestHub, TestNats, assert_contiguous, execution_id, median_p90, within};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const SECRET: &str = "whsec_test_secret";

/// How the hub shows the webhook `url` of the receiver at `addr`: its origin
/// and 8 hex digits of a SHA-256 of the URL, never the path.
fn displayed(addr: std::net::SocketAddr, url: &str) -> String {
    let digest = Sha256::digest(url.as_bytes());
    let hash: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("http://{addr}/…#{hash}")
}

/// This hub's `/health` entry for the provider of `kind`.
async fn provider(hub: &TestHub, kind: &str) -> Result<Value> {
    let health: Value = hub
        .http
        .get(hub.url("/health"))
        .send()
        .await?
        .json()
        .await?;
    let providers = health["providers"].as_array().context("providers array")?;
    providers
        .iter()
        .find(|p| p["kind"] == kind)
        .cloned()
        .with_context(|| format!("no {kind} provider in {health}"))
}

/// Polls `/health` until the provider of `kind` satisfies `done`.
async fn wait_for_provider(
    hub: &TestHub,
    kind: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Result<Value> {
    within(what, async {
        loop {
            let health = provider(hub, kind).await?;
            if done(&health) {
                return Ok(health);
            }
            tokio::time::sleep(Duration::from_millis(20)).await; // poll interval
        }
    })
    .await?
}

async fn webhook_hub(receiver_url: &str, extra: &[&str]) -> Result<TestHub> {
    let mut args = vec!["--webhook", receiver_url, "--webhook-secret", SECRET];
    args.extend_from_slice(extra);
    TestHub::spawn(&args).await
}

/// Whether `msg_id` is `<id>:<epoch>:<seq>` with an epoch as the hub mints them.
fn is_event_id(msg_id: &str, id: &str, seq: u64) -> bool {
    msg_id
        .strip_prefix(&format!("{id}:"))
        .and_then(|rest| rest.strip_suffix(&format!(":{seq}")))
        .is_some_and(exechub_protocol::is_epoch)
}

/// Asserts a webhook request is signed, carries `<id>:<epoch>:<seq>`, and is the stored event.
fn assert_signed_event(request: &Request, id: &str) -> Result<u64> {
    verify(SECRET, request)?;
    let seq = request.seq()?;
    let event = request.json()?;
    ensure!(event["execution_id"] == id, "wrong execution in {event}");
    let header = request
        .header("x-exechub-idempotency-id")
        .unwrap_or_default();
    ensure!(
        is_event_id(header, id, seq),
        "idempotency id {header:?}, expected {id}:<epoch>:{seq}"
    );
    ensure!(request.header("content-type") == Some("application/json"));
    Ok(seq)
}

#[tokio::test]
async fn webhook_events_arrive_signed_verifiable_and_in_seq_order() -> Result<()> {
    let mut receiver = Receiver::accepting().await?;
    let hub = webhook_hub(&receiver.url(), &[]).await?;
    let (busy, quiet) = (execution_id("hook-busy"), execution_id("hook-quiet"));
    // Four concurrent publishers on one execution: the receiver must still see seq order.
    let publishers: Vec<_> = (0..4)
        .map(|p| {
            let (http, url) = (hub.http.clone(), hub.events_url(&busy));
            tokio::spawn(async move {
                for n in 0..25 {
                    let body = json!({ "event_type": "tick", "data": { "p": p, "n": n } });
                    let response = http.post(&url).json(&body).send().await?;
                    ensure!(
                        response.status() == 202,
                        "publish answered {}",
                        response.status()
                    );
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for n in 0..10 {
        hub.publish(&quiet, "log", json!({ "n": n })).await?;
    }
    for publisher in publishers {
        publisher.await??;
    }
    let mut seqs: HashMap<String, Vec<u64>> = HashMap::new();
    let mut bodies: HashMap<(String, u64), Value> = HashMap::new();
    for request in receiver.take(110).await? {
        let id = request.json()?["execution_id"]
            .as_str()
            .context("id")?
            .to_owned();
        let seq = assert_signed_event(&request, &id)?;
        ensure!(request.header("x-exechub-attempt") == Some("1"));
        seqs.entry(id.clone()).or_default().push(seq);
        bodies.insert((id, seq), request.json()?);
    }
    assert_contiguous(&seqs[&busy], 1, 100);
    assert_contiguous(&seqs[&quiet], 1, 10);
    // Each body is exactly the stored event.
    for id in [&busy, &quiet] {
        for stored in hub.history(id, 0).await?["events"]
            .as_array()
            .context("events")?
        {
            let seq = stored["seq"].as_u64().context("seq")?;
            assert_eq!(bodies[&(id.clone(), seq)], *stored);
        }
    }
    let health = wait_for_provider(&hub, "webhook", "delivered = 110", |p| {
        p["delivered"] == 110
    })
    .await?;
    assert_eq!(health["ok"], true);
    assert_eq!(health["name"], displayed(receiver.addr, &receiver.url()));
    assert_eq!(
        (health["retried"].as_u64(), health["dropped"].as_u64()),
        (Some(0), Some(0))
    );
    Ok(())
}

/// A replay may retry an append whose answer (and offer) was lost, so it is
/// offered again — as stored, with the same idempotency id, for the receiver
/// to de-duplicate (providers are at-least-once).
#[tokio::test]
async fn idempotent_replay_is_offered_again_with_the_same_id() -> Result<()> {
    let mut receiver = Receiver::accepting().await?;
    let hub = webhook_hub(&receiver.url(), &[]).await?;
    let id = execution_id("hook-replay");
    for _ in 0..2 {
        let response = hub
            .http
            .post(hub.events_url(&id))
            .header("Idempotency-Key", "job-1")
            .json(&json!({ "event_type": "started", "data": {} }))
            .send()
            .await?;
        assert_eq!(response.status(), 202);
    }
    hub.publish(&id, "finished", json!({})).await?;
    let requests = receiver.take(3).await?;
    let seqs: Vec<u64> = requests.iter().map(Request::seq).collect::<Result<_>>()?;
    assert_eq!(seqs, [1, 1, 2]);
    let ids: Vec<_> = requests
        .iter()
        .map(|r| r.header("x-exechub-idempotency-id"))
        .collect();
    assert_eq!(ids[0], ids[1]);
    assert_ne!(ids[1], ids[2]);
    assert_eq!(requests[0].json()?, requests[1].json()?);
    wait_for_provider(&hub, "webhook", "delivered = 3", |p| p["delivered"] == 3).await?;
    Ok(())
}

#[tokio::test]
async fn websocket_publishes_reach_every_provider() -> Result<()> {
    let mut receiver = Receiver::accepting().await?;
    let nats = TestNats::spawn().await?;
    let client = nats.client().await?;
    let id = execution_id("ws-providers");
    let mut subscriber = client.subscribe(format!("executions.{id}.events")).await?;
    client.flush().await?;
    let args = ["--webhook", &receiver.url(), "--nats-url", &nats.url()];
    let hub = TestHub::spawn(&args).await?;
    let mut ws = hub.ws().await?;
    for n in 1..=3 {
        assert_eq!(ws.publish(&id, "log", json!({ "n": n })).await?, n);
    }
    let hooked: Vec<u64> = receiver
        .take(3)
        .await?
        .iter()
        .map(Request::seq)
        .collect::<Result<_>>()?;
    assert_eq!(hooked, [1, 2, 3]);
    let published: Vec<Value> = receive_nats(&mut subscriber, 3)
        .await?
        .into_iter()
        .map(|(_, _, event)| event["seq"].clone())
        .collect();
    assert_eq!(published, [1, 2, 3]);
    let health: Value = hub
        .http
        .get(hub.url("/health"))
        .send()
        .await?
        .json()
        .await?;
    let kinds: Vec<&Value> = health["providers"]
        .as_array()
        .context("providers")?
        .iter()
        .map(|p| &p["kind"])
        .collect();
    assert_eq!(kinds, ["webhook", "nats"]);
    Ok(())
}

#[tokio::test]
async fn webhook_answering_500_twice_gets_the_event_once_accepted_with_the_same_idempotency_id()
-> Result<()> {
    let failures = vec![Answer::Status(500, None), Answer::Status(500, None)];
    let mut receiver = Receiver::scripted(failures, Answer::Status(200, None)).await?;
    let hub = webhook_hub(&receiver.url(), &[]).await?;
    let id = execution_id("hook-retry");
    hub.publish(&id, "log", json!({ "line": "hello" })).await?;
    let attempts = receiver.take(3).await?;
    for (n, request) in attempts.iter().enumerate() {
        assert_eq!(assert_signed_event(request, &id)?, 1);
        assert_eq!(
            request.header("x-exechub-attempt"),
            Some((n + 1).to_string().as_str())
        );
        assert_eq!(
            request.body, attempts[0].body,
            "the body changed between attempts"
        );
    }
    // Backoff: the retries did not come back-to-back.
    assert!(attempts[1].at - attempts[0].at >= Duration::from_millis(90));
    let health =
        wait_for_provider(&hub, "webhook", "delivered = 1", |p| p["delivered"] == 1).await?;
    assert_eq!(
        (health["retried"].as_u64(), health["failed"].as_u64()),
        (Some(2), Some(0))
    );
    assert_eq!(health["ok"], true);
    // The next event goes through at the first attempt, and event 1 is not sent again.
    hub.publish(&id, "log", json!({ "line": "again" })).await?;
    let next = receiver.next().await?;
    assert_eq!(assert_signed_event(&next, &id)?, 2);
    assert_eq!(next.header("x-exechub-attempt"), Some("1"));
    wait_for_provider(&hub, "webhook", "delivered = 2", |p| p["delivered"] == 2).await?;
    assert!(receiver.try_next().is_none(), "an extra delivery arrived");
    Ok(())
}

#[tokio::test]
async fn webhook_client_errors_are_not_retried_and_429_waits_for_retry_after() -> Result<()> {
    let script = vec![Answer::Status(400, None), Answer::Status(429, Some(1))];
    let mut receiver = Receiver::scripted(script, Answer::Status(204, None)).await?;
    let hub = webhook_hub(&receiver.url(), &[]).await?;
    let id = execution_id("hook-4xx");
    hub.publish(&id, "rejected", json!({})).await?;
    hub.publish(&id, "throttled", json!({})).await?;
    let requests = receiver.take(3).await?;
    let seqs: Vec<u64> = requests.iter().map(Request::seq).collect::<Result<_>>()?;
    assert_eq!(seqs, [1, 2, 2], "a 400 is final; a 429 is retried");
    let waited = requests[2].at - requests[1].at;
    assert!(
        waited >= Duration::from_millis(950),
        "Retry-After: 1 honoured, waited {waited:?}"
    );
    let health =
        wait_for_provider(&hub, "webhook", "delivered = 1", |p| p["delivered"] == 1).await?;
    assert_eq!(
        (health["failed"].as_u64(), health["retried"].as_u64()),
        (Some(1), Some(1))
    );
    Ok(())
}

/// Services put a webhook's secret in its path (Slack's
/// `/services/T…/B…/<secret>`) and NATS URLs may carry a password: neither the
/// open `/health` nor the logs (the hub's own at debug) may show them, also
/// when deliveries are retried and fail.
#[tokio::test]
async fn secrets_in_provider_urls_never_reach_health_or_logs() -> Result<()> {
    const PATH_SECRET: &str = "xoxPATHSECRET42";
    const NATS_PASSWORD: &str = "natsPASSWORD42";
    let mut receiver =
        Receiver::scripted(vec![Answer::Status(500, None)], Answer::Status(200, None)).await?;
    let hooked = format!(
        "http://{}/services/T0/B0/{PATH_SECRET}?token={PATH_SECRET}",
        receiver.addr
    );
    let down_port = helpers::redis::free_port()?;
    let down = format!("http://127.0.0.1:{down_port}/services/T1/B1/{PATH_SECRET}");
    let nats = TestNats::spawn().await?;
    let nats_url = format!(
        "nats://exechub:{NATS_PASSWORD}@{}",
        nats.url().trim_start_matches("nats://")
    );
    let args = [
        "--webhook",
        &hooked,
        "--webhook",
        &down,
        "--webhook-max-attempts",
        "2",
        "--nats-url",
        &nats_url,
    ];
    let hub = TestHub::spawn_with_log_level(&args, "info,exechub=debug").await?;
    hub.publish(&execution_id("secret-urls"), "log", json!({}))
        .await?;
    receiver.take(2).await?; // a 500, then the retry accepted
    let health = hub
        .health_until("every provider settled", |health| {
            let settled = |p: &Value| p["delivered"] == 1 || p["failed"] == 1;
            health["providers"]
                .as_array()
                .is_some_and(|all| all.len() == 3 && all.iter().all(settled))
        })
        .await?;
    let names: Vec<&Value> = health["providers"]
        .as_array()
        .context("providers")?
        .iter()
        .map(|p| &p["name"])
        .collect();
    let down_shown = format!("http://127.0.0.1:{down_port}/…#");
    assert_eq!(names[0], &displayed(receiver.addr, &hooked));
    assert!(
        names[1]
            .as_str()
            .is_some_and(|n| n.starts_with(&down_shown)),
        "{health}"
    );
    assert_eq!(names[2], &nats.url());
    let logs = hub.logs();
    ensure!(
        logs.contains("retrying"),
        "debug logs were captured:\n{logs}"
    );
    ensure!(
        logs.contains("delivery failed"),
        "the failure was logged:\n{logs}"
    );
    for secret in [PATH_SECRET, "services", NATS_PASSWORD] {
        ensure!(!health.to_string().contains(secret), "{secret} in {health}");
        ensure!(!logs.contains(secret), "{secret} in the logs:\n{logs}");
    }
    Ok(())
}

/// Publishes to `hub` once and returns how long the 202 took.
async fn timed_publish(hub: &TestHub, id: &str, n: u64) -> Result<Duration> {
    let started = Instant::now();
    hub.publish(id, "tick", json!({ "n": n })).await?;
    Ok(started.elapsed())
}

#[tokio::test]
async fn publishing_is_not_slowed_by_a_hung_or_down_webhook() -> Result<()> {
    let hung = Receiver::scripted(Vec::new(), Answer::Hang).await?;
    let down = format!("http://127.0.0.1:{}/hook", helpers::redis::free_port()?);
    let small_queue = ["--provider-queue", "50"];
    let hubs = [
        ("no webhook", TestHub::spawn(&[]).await?),
        (
            "hung webhook",
            webhook_hub(&hung.url(), &small_queue).await?,
        ),
        ("down webhook", webhook_hub(&down, &small_queue).await?),
    ];
    let id = execution_id("latency");
    const WARM_UP: u64 = 20;
    const SAMPLES: u64 = 200;
    let mut samples = vec![Vec::new(); hubs.len()];
    // Interleaved, so every hub is measured under the same machine load.
    for n in 0..WARM_UP + SAMPLES {
        for ((_, hub), samples) in hubs.iter().zip(&mut samples) {
            let took = timed_publish(hub, &id, n).await?;
            if n >= WARM_UP {
                samples.push(took);
            }
        }
    }
    let figures: Vec<_> = samples.iter_mut().map(|s| median_p90(s)).collect();
    for ((name, _), (median, p90)) in hubs.iter().zip(&figures) {
        eprintln!(
            "publish latency, {name}: median {median:?}, p90 {p90:?} over {SAMPLES} publishes"
        );
    }
    let (baseline, _) = figures[0];
    for ((name, _), (median, _)) in hubs.iter().zip(&figures).skip(1) {
        let allowed = baseline * 3 + Duration::from_millis(5);
        assert!(
            *median <= allowed,
            "{name}: median {median:?} > {allowed:?} (baseline {baseline:?})"
        );
    }
    // The queues stayed bounded: the oldest events were dropped and counted.
    for (_, hub) in &hubs[1..] {
        let health = provider(hub, "webhook").await?;
        eprintln!("{health}");
        assert!(
            health["queue_depth"].as_u64().context("depth")? <= 50,
            "{health}"
        );
        assert!(
            health["dropped"].as_u64().context("dropped")? >= 100,
            "{health}"
        );
    }
    wait_for_provider(
        &hubs[2].1,
        "webhook",
        "the down webhook to be reported",
        |p| p["ok"] == false,
    )
    .await?;
    Ok(())
}

/// Collects NATS messages until `n` arrived: (subject, Nats-Msg-Id, event).
async fn receive_nats(
    subscriber: &mut async_nats::Subscriber,
    n: usize,
) -> Result<Vec<(String, String, Value)>> {
    let mut received = Vec::with_capacity(n);
    while received.len() < n {
        let message = within("a NATS message", subscriber.next())
            .await?
            .context("subscription ended")?;
        let msg_id = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.to_string())
            .unwrap_or_default();
        let event: Value = serde_json::from_slice(&message.payload)?;
        received.push((message.subject.to_string(), msg_id, event));
    }
    Ok(received)
}

#[tokio::test]
async fn nats_subscriber_receives_every_event_in_order() -> Result<()> {
    let nats = TestNats::spawn().await?;
    let client = nats.client().await?;
    let mut subscriber = client.subscribe("executions.>").await?;
    client.flush().await?; // the server has the subscription before anything is published
    let hub = TestHub::spawn(&["--nats-url", &nats.url()]).await?;
    let plain = execution_id("nats-plain");
    // Dots, spaces and wildcards cannot appear in a subject token: they are escaped.
    let odd = format!("build.42 step*1>{}", execution_id("x"));
    for n in 0..50 {
        hub.publish(&plain, "tick", json!({ "n": n })).await?;
        if n % 2 == 0 {
            hub.publish(&odd, "tick", json!({ "n": n })).await?;
        }
    }
    let mut seqs: HashMap<String, Vec<u64>> = HashMap::new();
    for (subject, msg_id, event) in receive_nats(&mut subscriber, 75).await? {
        let id = event["execution_id"].as_str().context("id")?.to_owned();
        let seq = event["seq"].as_u64().context("seq")?;
        let expected_subject = if id == plain {
            format!("executions.{plain}.events")
        } else {
            let suffix = odd.trim_start_matches("build.42 step*1>");
            format!("executions.build%2E42%20step%2A1%3E{suffix}.events")
        };
        assert_eq!(subject, expected_subject);
        assert!(is_event_id(&msg_id, &id, seq), "{msg_id}");
        seqs.entry(id).or_default().push(seq);
    }
    assert_contiguous(&seqs[&plain], 1, 50);
    assert_contiguous(&seqs[&odd], 1, 25);
    let health =
        wait_for_provider(&hub, "nats", "delivered = 75", |p| p["delivered"] == 75).await?;
    assert_eq!(health["ok"], true);
    Ok(())
}

#[tokio::test]
async fn nats_restart_keeps_publish_fast_and_delivers_events_after_reconnect() -> Result<()> {
    let mut nats = TestNats::spawn().await?;
    let hub = TestHub::spawn(&["--nats-url", &nats.url()]).await?;
    wait_for_provider(&hub, "nats", "the hub to connect to NATS", |p| {
        p["ok"] == true
    })
    .await?;
    let id = execution_id("nats-restart");
    let mut up = Vec::new();
    for n in 0..50 {
        up.push(timed_publish(&hub, &id, n).await?);
    }
    nats.stop().await?;
    wait_for_provider(&hub, "nats", "the hub to see NATS down", |p| {
        p["ok"] == false
    })
    .await?;
    let mut down = Vec::new();
    for n in 50..100 {
        down.push(timed_publish(&hub, &id, n).await?);
    }
    let ((up_median, _), (down_median, down_p90)) = (median_p90(&mut up), median_p90(&mut down));
    eprintln!(
        "publish latency: NATS up median {up_median:?}; NATS down median {down_median:?}, p90 {down_p90:?}"
    );
    assert!(down_median <= up_median * 3 + Duration::from_millis(5));
    let waiting = provider(&hub, "nats").await?;
    assert!(waiting["queue_depth"].as_u64() > Some(0), "{waiting}");

    nats.start().await?;
    wait_for_provider(&hub, "nats", "the hub to reconnect", |p| p["ok"] == true).await?;
    let client = nats.client().await?;
    let mut subscriber = client.subscribe(format!("executions.{id}.events")).await?;
    client.flush().await?;
    // Core NATS is at-most-once and this subscriber joined after the restart:
    // wait until an event of ours comes through (the backlog drained ahead of
    // it), then everything published after that must arrive, in order.
    let mut seqs = Vec::new();
    let mut probe = 100;
    'through: loop {
        let seq = hub.publish(&id, "probe", json!({ "n": probe })).await?;
        probe += 1;
        let wait = tokio::time::timeout(Duration::from_millis(500), async {
            loop {
                let (_, _, event) = receive_nats(&mut subscriber, 1).await?.remove(0);
                let got = event["seq"].as_u64().context("seq")?;
                seqs.push(got);
                if got == seq {
                    return anyhow::Ok(());
                }
            }
        });
        if wait.await.is_ok() {
            break 'through;
        }
        anyhow::ensure!(probe < 150, "no event reached the subscriber: {seqs:?}");
    }
    let start = seqs.last().copied().context("a probe arrived")?;
    for n in 0..20 {
        hub.publish(&id, "tick", json!({ "n": 200 + n })).await?;
    }
    let mut after = Vec::new();
    while after.last() != Some(&(start + 20)) {
        let (_, _, event) = receive_nats(&mut subscriber, 1).await?.remove(0);
        after.push(event["seq"].as_u64().context("seq")?);
    }
    assert_contiguous(&after, start + 1, start + 20);
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "out of order: {seqs:?}"
    );
    // Nothing accepted while NATS was down was dropped: all of it went out after the restart.
    let published = start + 20;
    let health = wait_for_provider(&hub, "nats", "every event delivered", |p| {
        p["delivered"].as_u64() == Some(published)
    })
    .await?;
    assert_eq!(
        (health["dropped"].as_u64(), health["queue_depth"].as_u64()),
        (Some(0), Some(0))
    );
    Ok(())
}

#[tokio::test]
async fn nats_jetstream_stores_every_event_with_acknowledgement() -> Result<()> {
    let nats = TestNats::spawn_jetstream().await?;
    let jetstream = async_nats::jetstream::new(nats.client().await?);
    let mut stream = jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: "EXECUTIONS".into(),
            subjects: vec!["executions.>".into()],
            ..Default::default()
        })
        .await?;
    let hub = TestHub::spawn(&["--nats-url", &nats.url(), "--nats-jetstream"]).await?;
    let id = execution_id("nats-js");
    for n in 0..30 {
        hub.publish(&id, "tick", json!({ "n": n })).await?;
    }
    let health =
        wait_for_provider(&hub, "nats", "30 acknowledged", |p| p["delivered"] == 30).await?;
    assert_eq!(health["failed"], 0);
    assert_eq!(stream.info().await?.state.messages, 30);
    for seq in 1..=30 {
        let message = stream.get_raw_message(seq).await?;
        let event: Value = serde_json::from_slice(&message.payload)?;
        assert_eq!(event["seq"], seq, "stream order is seq order");
        assert_eq!(message.subject.as_str(), format!("executions.{id}.events"));
    }
    Ok(())
}

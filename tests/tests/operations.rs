//! Operations: `/metrics` and `/metrics.json` against real traffic, the
//! metrics token, request ids on every response and in JSON logs, and the
//! W3C `traceparent` of a publish reaching a webhook and NATS.

mod helpers;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use futures_util::StreamExt;
use helpers::webhook::Receiver;
use helpers::{SseClient, TestHub, TestNats, execution_id, within};
use serde_json::{Value, json};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The value of the sample `name` whose labels include every `labels` pair.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .find(|(key, _)| {
            let (metric, rest) = key.split_once('{').unwrap_or((key, ""));
            metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|(_, value)| value.parse().ok())
}

async fn scrape(hub: &TestHub) -> Result<String> {
    let response = hub.http.get(hub.url("/metrics")).send().await?;
    ensure!(
        response.status() == 200,
        "/metrics answered {}",
        response.status()
    );
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    ensure!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    Ok(response.text().await?)
}

/// Scrapes until `ready` holds for the text.
async fn scrape_until(hub: &TestHub, what: &str, ready: impl Fn(&str) -> bool) -> Result<String> {
    within(what, async {
        loop {
            if let Ok(text) = scrape(hub).await
                && ready(&text)
            {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test]
async fn metrics_count_connections_publishes_deliveries_and_closes() -> Result<()> {
    let hub = TestHub::spawn(&[]).await?;
    let id = execution_id("metrics");
    let mut ws = hub.ws().await?;
    ws.subscribe(&id, Some(0)).await?;
    let url = hub.url(&format!("/api/v1/executions/{id}/stream?after=0"));
    let mut sse = SseClient::connect(&hub.http, &url, None::<String>).await?;
    for n in 0..5 {
        hub.publish(&id, "log", json!({ "n": n })).await?;
    }
    let invalid = hub
        .http
        .post(hub.events_url(&id))
        .json(&json!({ "data": [] }))
        .send()
        .await?;
    assert_eq!(invalid.status(), 422);
    let mut publisher = hub.ws().await?;
    publisher.publish(&id, "log", json!({ "n": 5 })).await?;
    for _ in 0..6 {
        ws.next_event().await?;
        sse.next_event().await?;
    }
    let text = scrape(&hub).await?;
    let http = |result| {
        sample(
            &text,
            "exechub_publishes_total",
            &[("transport", "http"), ("result", result)],
        )
    };
    assert_eq!(http("accepted"), Some(5.0));
    assert_eq!(http("invalid"), Some(1.0));
    let ws_accepted = [("transport", "websocket"), ("result", "accepted")];
    assert_eq!(
        sample(&text, "exechub_publishes_total", &ws_accepted),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "exechub_events_published_total", &[]),
        Some(6.0)
    );
    for transport in ["websocket", "sse"] {
        let labels = [("transport", transport)];
        assert_eq!(
            sample(&text, "exechub_deliveries_total", &labels),
            Some(6.0)
        );
        assert_eq!(
            sample(&text, "exechub_connections_opened_total", &labels),
            Some(if transport == "sse" { 1.0 } else { 2.0 })
        );
    }
    assert_eq!(
        sample(&text, "exechub_connections", &[("transport", "websocket")]),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "exechub_connections", &[("transport", "sse")]),
        Some(1.0)
    );
    assert_eq!(sample(&text, "exechub_subscriptions", &[]), Some(2.0));
    assert_eq!(
        sample(&text, "exechub_subscribed_executions", &[]),
        Some(1.0)
    );
    let append = [("backend", "memory"), ("operation", "append")];
    let appends = sample(
        &text,
        "exechub_store_operation_duration_seconds_count",
        &append,
    );
    assert_eq!(appends, Some(6.0));
    assert!(
        sample(
            &text,
            "exechub_store_operation_duration_seconds_bucket",
            &[("le", "+Inf")]
        )
        .is_some()
    );
    assert!(text.contains("# TYPE exechub_publish_to_send_seconds histogram"));
    ws.close().await?;
    drop(sse);
    let closed = scrape_until(&hub, "the closes to be counted", |text| {
        let ws_closed = [("transport", "websocket"), ("reason", "client_closed")];
        let sse_closed = [("transport", "sse"), ("reason", "client_gone")];
        sample(text, "exechub_connections_closed_total", &ws_closed) == Some(1.0)
            && sample(text, "exechub_connections_closed_total", &sse_closed) == Some(1.0)
    })
    .await?;
    assert_eq!(
        sample(&closed, "exechub_connections", &[("transport", "sse")]),
        Some(0.0)
    );
    Ok(())
}

#[tokio::test]
async fn metrics_need_the_token_when_one_is_set() -> Result<()> {
    let hub = TestHub::spawn(&["--metrics-token", "m3trics"]).await?;
    for path in ["/metrics", "/metrics.json"] {
        let bare = hub.http.get(hub.url(path)).send().await?;
        assert_eq!(bare.status(), 401, "{path} without a token");
        assert!(bare.headers().contains_key("www-authenticate"));
        let wrong = hub
            .http
            .get(hub.url(path))
            .bearer_auth("m3trics-not")
            .send()
            .await?;
        assert_eq!(wrong.status(), 401, "{path} with a wrong token");
        let right = hub
            .http
            .get(hub.url(path))
            .bearer_auth("m3trics")
            .send()
            .await?;
        assert_eq!(right.status(), 200, "{path} with the token");
    }
    Ok(())
}

#[tokio::test]
async fn metrics_json_lists_the_busiest_executions_first() -> Result<()> {
    let hub = TestHub::spawn(&[]).await?;
    let hot = execution_id("hot");
    let snapshot = within("the hot execution on top", async {
        loop {
            for n in 0..20 {
                hub.publish(&hot, "log", json!({ "n": n })).await?;
            }
            hub.publish(&execution_id("cold"), "log", json!({})).await?;
            let snapshot: Value = hub
                .http
                .get(hub.url("/metrics.json"))
                .send()
                .await?
                .json()
                .await?;
            if snapshot["top_executions"][0]["execution_id"] == json!(hot) {
                return anyhow::Ok(snapshot);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await??;
    assert!(
        snapshot["top_executions"][0]["rate"]
            .as_f64()
            .unwrap_or_default()
            > 0.0
    );
    assert!(
        snapshot["totals"]["exechub_events_published_total"]
            .as_f64()
            .unwrap_or_default()
            >= 21.0
    );
    assert_eq!(snapshot["health"]["store"]["backend"], "memory");
    Ok(())
}

#[tokio::test]
async fn every_response_carries_a_request_id_that_json_logs_carry_too() -> Result<()> {
    let args = ["--log-format", "json"];
    let hub = TestHub::spawn_with_log_level(&args, "info,exechub::request=debug").await?;
    let id = execution_id("request-ids");
    let given = hub
        .http
        .post(hub.events_url(&id))
        .header("x-request-id", "req-given-42")
        .json(&json!({ "event_type": "log", "data": {} }))
        .send()
        .await?;
    assert_eq!(given.headers()["x-request-id"], "req-given-42");
    let generated = hub.http.get(hub.url("/health")).send().await?;
    let generated = generated.headers()["x-request-id"].to_str()?.to_owned();
    assert!(generated.len() == 16 && generated.bytes().all(|b| b.is_ascii_hexdigit()));
    let unusable = "x".repeat(200);
    let replaced = hub
        .http
        .get(hub.url("/nowhere"))
        .header("x-request-id", &unusable)
        .send()
        .await?;
    assert_eq!(replaced.status(), 404);
    assert_ne!(replaced.headers()["x-request-id"], unusable.as_str());
    // A stream opening its connection is answered outside the router, with an id too.
    let stream = hub
        .http
        .get(hub.url(&format!("/api/v1/executions/{id}/stream")))
        .header("x-request-id", "req-stream-7")
        .send()
        .await?;
    assert_eq!(stream.headers()["x-request-id"], "req-stream-7");
    drop(stream);
    let line = within("a log line of the request", async {
        loop {
            let found = hub
                .logs()
                .lines()
                .find(|l| l.contains("req-given-42"))
                .map(str::to_owned);
            if let Some(line) = found {
                return line;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await?;
    let parsed: Value = serde_json::from_str(&line).with_context(|| format!("not JSON: {line}"))?;
    for field in ["timestamp", "level", "target"] {
        assert!(parsed.get(field).is_some(), "no {field} in {line}");
    }
    let span = parsed["spans"]
        .as_array()
        .and_then(|spans| spans.iter().find(|s| s["name"] == "request"))
        .context("the request span")?;
    assert_eq!(span["request_id"], "req-given-42");
    // The request's last line (written after the handler read the path)
    // names the execution too.
    let last = hub
        .logs()
        .lines()
        .rfind(|l| l.contains("req-given-42"))
        .map(str::to_owned)
        .context("the request's lines")?;
    let last: Value = serde_json::from_str(&last)?;
    let span = last["spans"]
        .as_array()
        .and_then(|spans| spans.iter().find(|s| s["name"] == "request"))
        .context("the request span")?;
    assert_eq!(span["execution_id"], json!(id), "{last}");
    // A WebSocket connection's lines carry its conn_id: one closed for an
    // oversized frame (over the 4 MiB batch limit) logs the close.
    let mut ws = hub.ws().await?;
    let _ = ws.send_text(&"x".repeat(5 << 20)).await;
    let closing = within("the connection's close line", async {
        loop {
            let found = hub
                .logs()
                .lines()
                .find(|l| l.contains("closing WebSocket"))
                .map(str::to_owned);
            if let Some(line) = found {
                return line;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await?;
    let closing: Value = serde_json::from_str(&closing)?;
    assert!(
        closing["conn_id"].as_u64().is_some_and(|n| n >= 1),
        "{closing}"
    );
    for line in hub.logs().lines() {
        serde_json::from_str::<Value>(line).with_context(|| format!("not JSON: {line}"))?;
    }
    Ok(())
}

#[tokio::test]
async fn a_publishs_traceparent_reaches_webhooks_and_nats() -> Result<()> {
    let mut receiver = Receiver::accepting().await?;
    let nats = TestNats::spawn().await?;
    let client = nats.client().await?;
    let id = execution_id("traced");
    let mut subscriber = client.subscribe(format!("executions.{id}.events")).await?;
    client.flush().await?;
    let hub = TestHub::spawn(&["--webhook", &receiver.url(), "--nats-url", &nats.url()]).await?;
    let publish = |path: String, body: Value| {
        hub.http
            .post(hub.url(&path))
            .header("traceparent", TRACEPARENT)
            .json(&body)
            .send()
    };
    let single = publish(
        format!("/api/v1/executions/{id}/events"),
        json!({ "event_type": "a", "data": {} }),
    );
    assert_eq!(single.await?.status(), 202);
    let events = json!({ "events": [{ "event_type": "b", "data": {} }] });
    let batch = publish(format!("/api/v1/executions/{id}/events/batch"), events);
    assert_eq!(batch.await?.status(), 202);
    let untraced = hub.publish(&id, "c", json!({})).await?;
    assert_eq!(untraced, 3);
    for request in receiver.take(3).await? {
        let expected = (request.seq()? < 3).then_some(TRACEPARENT);
        assert_eq!(
            request.header("traceparent"),
            expected,
            "webhook seq {}",
            request.seq()?
        );
    }
    for seq in 1..=3 {
        let message = within("a NATS message", subscriber.next())
            .await?
            .context("subscription ended")?;
        let traceparent = message
            .headers
            .as_ref()
            .and_then(|h| h.get("traceparent"))
            .map(|v| v.to_string());
        let expected = (seq < 3).then(|| TRACEPARENT.to_owned());
        assert_eq!(traceparent, expected, "NATS seq {seq}");
    }
    Ok(())
}

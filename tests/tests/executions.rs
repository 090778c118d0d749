//! Executions that finish, against the real binary: the terminal event ends
//! an execution on every node sharing a Redis, later publishes are refused
//! (409, WebSocket `execution_ended`), subscribers are told (`ended`, SSE
//! `end` and 204 on reconnect), the summary and result long-poll answer on
//! any node, and the list of executions (HTTP and `subscribe_executions`)
//! follows changes made on other nodes, within the caller's grants. The
//! multi-node cases run on one Redis and on a Redis Cluster.

mod helpers;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use exechub_protocol::{ErrorCode, ExecutionSummary, ServerMsg};
use helpers::cluster::TestCluster;
use helpers::{TestHub, TestRedis, execution_id, hub_binary, within};
use serde_json::{Value, json};

const SECRET: &str = "executions-test-secret";

/// What two hub nodes share: one Redis, or a Redis Cluster.
enum Shared {
    Redis(TestRedis),
    Cluster(TestCluster),
}

impl Shared {
    async fn redis() -> Result<Self> {
        Ok(Self::Redis(TestRedis::spawn().await?))
    }

    async fn cluster() -> Result<Self> {
        Ok(Self::Cluster(TestCluster::spawn().await?))
    }
}

/// Two hub nodes sharing `shared`.
async fn pair(shared: &Shared) -> Result<(TestHub, TestHub)> {
    let args = match shared {
        Shared::Redis(redis) => vec!["--redis-url".to_owned(), redis.url()],
        Shared::Cluster(cluster) => vec!["--redis-cluster".to_owned(), cluster.seeds()],
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Ok((TestHub::spawn(&args).await?, TestHub::spawn(&args).await?))
}

/// Each case on one Redis (`<case>_on_redis`) and on a cluster (`<case>_on_cluster`).
macro_rules! on_both {
    ($($case:ident),+) => {
        mod on_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() -> anyhow::Result<()> {
                    super::$case(super::Shared::redis().await?).await
                }
            )+
        }
        mod on_cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() -> anyhow::Result<()> {
                    super::$case(super::Shared::cluster().await?).await
                }
            )+
        }
    };
}

on_both!(
    the_terminal_event_ends_the_execution_on_every_node,
    a_result_request_waits_for_the_end_on_another_node,
    the_list_of_executions_follows_changes_on_other_nodes
);

/// `POST …/events` answering anything; returns (status, body).
async fn post(
    hub: &TestHub,
    id: &str,
    event_type: &str,
    key: Option<&str>,
) -> Result<(u16, Value)> {
    let mut request = reqwest::Client::new()
        .post(hub.events_url(id))
        .json(&json!({ "event_type": event_type, "data": { "result": "ok" } }));
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await?;
    Ok((response.status().as_u16(), response.json().await?))
}

async fn get(hub: &TestHub, path: &str, token: Option<&str>) -> Result<(u16, Value)> {
    let mut request = reqwest::Client::new().get(hub.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// The execution ids of a list answer, in order.
fn ids_of(body: &Value) -> Result<Vec<&str>> {
    Ok(body["executions"]
        .as_array()
        .context("executions")?
        .iter()
        .filter_map(|s| s["execution_id"].as_str())
        .collect())
}

fn summary(value: Value) -> Result<ExecutionSummary> {
    Ok(serde_json::from_value(value)?)
}

async fn the_terminal_event_ends_the_execution_on_every_node(shared: Shared) -> Result<()> {
    let (a, b) = pair(&shared).await?;
    let id = execution_id("ends");
    let mut ws = b.ws().await?;
    ws.subscribe(&id, Some(0)).await?;
    let mut sse = b.sse(&id, "?after=0", None).await?;

    a.publish(&id, "tool_started", json!({ "tool": "grep" }))
        .await?;
    let (status, _) = post(&a, &id, "execution_completed", Some("end-1")).await?;
    assert_eq!(status, 202);

    // WebSocket: both events, then `ended`; the subscription is over.
    assert_eq!(ws.next_event().await?.seq, 1);
    let last = ws.next_event().await?;
    assert_eq!(
        (last.seq, last.event_type.as_str()),
        (2, "execution_completed")
    );
    match ws.next_msg().await? {
        ServerMsg::Ended {
            execution_id,
            status,
            seq,
        } => assert_eq!(
            (execution_id.as_str(), status.as_str(), seq),
            (id.as_str(), "completed", 2)
        ),
        other => bail!("expected ended, got {other:?}"),
    }
    // SSE: both events, `end`, then the stream closes.
    assert_eq!(sse.next_event().await?.seq, 1);
    assert_eq!(sse.next_event().await?.seq, 2);
    let end = sse.next_message().await?.context("an end message")?;
    assert_eq!(end.event.as_deref(), Some("end"));
    let end: Value = serde_json::from_str(&end.data)?;
    assert_eq!(
        (end["status"].as_str(), end["seq"].as_u64()),
        (Some("completed"), Some(2))
    );
    assert!(
        sse.next_message().await?.is_none(),
        "the stream ends after `end`"
    );
    // EventSource's reconnect is answered 204, so it stops.
    let reconnect = reqwest::Client::new()
        .get(b.url(&format!("/api/v1/executions/{id}/stream")))
        .header("Last-Event-ID", "2")
        .send()
        .await?;
    assert_eq!(reconnect.status().as_u16(), 204);

    // Both nodes refuse more events; a retry of the terminal event is still 202.
    for hub in [&a, &b] {
        let (status, body) = post(hub, &id, "log", None).await?;
        assert_eq!(
            (status, body["code"].as_str()),
            (409, Some("execution_ended")),
            "{body}"
        );
        let (status, body) = post(hub, &id, "execution_completed", Some("end-1")).await?;
        assert_eq!((status, body["seq"].as_u64()), (202, Some(2)));
    }
    ws.request(json!({ "op": "publish", "execution_id": id, "event_type": "log", "data": {} }))
        .await?;
    match ws.next_msg().await? {
        ServerMsg::Error { code, .. } => assert_eq!(code, ErrorCode::ExecutionEnded),
        other => bail!("expected the publish to be refused, got {other:?}"),
    }

    // The summary, from either node.
    for hub in [&a, &b] {
        let (status, body) = get(hub, &format!("/api/v1/executions/{id}"), None).await?;
        assert_eq!(status, 200);
        let summary = summary(body)?;
        assert_eq!(
            (summary.status.as_str(), summary.ended, summary.last_seq),
            ("completed", true, 2)
        );
        let last = summary.final_event.context("final event")?;
        assert_eq!(last.data["result"], "ok");
    }
    let (status, body) = get(&a, "/api/v1/executions/no-such-execution", None).await?;
    assert_eq!(
        (status, body["detail"].as_str(), body["code"].as_str()),
        (404, Some("Execution not found"), Some("not_found"))
    );
    Ok(())
}

async fn a_result_request_waits_for_the_end_on_another_node(shared: Shared) -> Result<()> {
    let (a, b) = pair(&shared).await?;
    let id = execution_id("result");
    a.publish(&id, "step", json!({})).await?;
    // The wait runs out first: 200 with the running summary.
    let (status, body) = get(&b, &format!("/api/v1/executions/{id}/result?wait=1"), None).await?;
    assert_eq!((status, body["status"].as_str()), (200, Some("running")));
    // A long wait answers as soon as the end arrives on the other node.
    let path = format!("/api/v1/executions/{id}/result?wait=30");
    let waiting = tokio::spawn({
        let url = b.url(&path);
        async move {
            let response = reqwest::get(url).await?;
            anyhow::Ok((response.status().as_u16(), response.json::<Value>().await?))
        }
    });
    // Whether the request arrives before or after the end, it answers with it.
    a.publish(&id, "execution_failed", json!({ "error": "boom" }))
        .await?;
    let ended_at = Instant::now();
    let (status, body) = within("the result", waiting).await???;
    let waited = ended_at.elapsed();
    assert_eq!(status, 200);
    let summary = summary(body)?;
    assert_eq!((summary.status.as_str(), summary.ended), ("failed", true));
    assert!(
        waited < Duration::from_secs(5),
        "answered {waited:?} after the end"
    );
    let (status, _) = get(&b, "/api/v1/executions/never-seen/result?wait=1", None).await?;
    assert_eq!(status, 404);
    let (status, _) = get(&b, &format!("/api/v1/executions/{id}/result?wait=61"), None).await?;
    assert_eq!(status, 422);
    Ok(())
}

async fn the_list_of_executions_follows_changes_on_other_nodes(shared: Shared) -> Result<()> {
    let (a, b) = pair(&shared).await?;
    let done = execution_id("list-done");
    let running = execution_id("list-running");
    a.publish(&done, "step", json!({})).await?;
    a.publish(&done, "execution_completed", json!({})).await?;
    a.publish(&running, "step", json!({})).await?;

    let (status, body) = get(&b, "/api/v1/executions?status=running", None).await?;
    assert_eq!(status, 200);
    let ids = ids_of(&body)?;
    assert!(
        ids.contains(&running.as_str()) && !ids.contains(&done.as_str()),
        "{ids:?}"
    );
    // Pages by cursor, newest first.
    let (_, first) = get(&b, "/api/v1/executions?limit=1", None).await?;
    assert_eq!(
        first["executions"][0]["execution_id"].as_str(),
        Some(running.as_str())
    );
    let cursor = first["next_cursor"].as_str().context("a next cursor")?;
    let (_, second) = get(
        &b,
        &format!("/api/v1/executions?limit=1&cursor={cursor}"),
        None,
    )
    .await?;
    assert_eq!(
        second["executions"][0]["execution_id"].as_str(),
        Some(done.as_str())
    );
    let (status, _) = get(&b, "/api/v1/executions?status=bogus", None).await?;
    assert_eq!(status, 422);

    // A follower on node b hears of node a's changes.
    let mut ws = b.ws().await?;
    ws.request(json!({ "op": "subscribe_executions", "status": "all" }))
        .await?;
    match ws.next_msg().await? {
        ServerMsg::Executions { executions, .. } => {
            assert_eq!(
                executions.first().map(|s| s.execution_id.as_str()),
                Some(running.as_str())
            );
        }
        other => bail!("expected the executions snapshot, got {other:?}"),
    }
    let fresh = execution_id("list-fresh");
    a.publish(&fresh, "step", json!({})).await?;
    a.publish(&fresh, "execution_cancelled", json!({})).await?;
    let mut statuses = Vec::new();
    while statuses.last().map(String::as_str) != Some("cancelled") {
        match ws.next_msg().await? {
            ServerMsg::Execution { execution } if execution.execution_id == fresh => {
                statuses.push(execution.status);
            }
            ServerMsg::Execution { .. } => {}
            other => bail!("expected execution changes, got {other:?}"),
        }
    }
    assert!(statuses.len() <= 2, "{statuses:?}");
    Ok(())
}

#[tokio::test]
async fn lists_and_summaries_respect_grants() -> Result<()> {
    let hub = TestHub::spawn(&["--jwt-secret", SECRET]).await?;
    let token = |executions: &[&str]| -> Result<String> {
        let mut command = std::process::Command::new(hub_binary());
        command.args([
            "token",
            "--secret",
            SECRET,
            "--scope",
            "publish",
            "--scope",
            "subscribe",
        ]);
        for execution in executions {
            command.args(["--execution", execution]);
        }
        let output = command.output()?;
        Ok(String::from_utf8(output.stdout)?.trim().to_owned())
    };
    let everything = token(&[])?;
    let team_a = token(&["team-a-*"])?;
    for id in ["team-a-1", "team-b-1"] {
        let response = reqwest::Client::new()
            .post(hub.events_url(id))
            .bearer_auth(&everything)
            .json(&json!({ "event_type": "step", "data": {} }))
            .send()
            .await?;
        assert_eq!(response.status().as_u16(), 202);
    }
    let (_, body) = get(&hub, "/api/v1/executions", Some(&team_a)).await?;
    let ids = ids_of(&body)?;
    assert_eq!(ids, vec!["team-a-1"]);
    let (status, _) = get(&hub, "/api/v1/executions/team-b-1", Some(&team_a)).await?;
    assert_eq!(status, 403);
    let (status, _) = get(&hub, "/api/v1/executions", None).await?;
    assert_eq!(status, 401);
    Ok(())
}

#[tokio::test]
async fn an_ended_executions_final_state_outlives_its_events() -> Result<()> {
    let hub = TestHub::spawn(&["--event-ttl", "1"]).await?;
    let id = execution_id("outlives");
    hub.publish(&id, "step", json!({})).await?;
    hub.publish(&id, "execution_completed", json!({ "answer": 42 }))
        .await?;
    let deadline = Instant::now() + helpers::WAIT;
    let page = loop {
        let page = hub.history(&id, 0).await?;
        if page["events"].as_array().is_some_and(Vec::is_empty) {
            break page;
        }
        if Instant::now() > deadline {
            bail!("events did not expire: {page}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        page["history_lost"]["reason"].as_str(),
        Some("expired"),
        "{page}"
    );
    assert_eq!(page["history_lost"]["last_seq"].as_u64(), Some(2));
    let (status, body) = get(&hub, &format!("/api/v1/executions/{id}"), None).await?;
    assert_eq!(status, 200);
    let summary = summary(body)?;
    assert_eq!((summary.status.as_str(), summary.events), ("completed", 0));
    assert_eq!(
        summary.final_event.map(|e| e.data["answer"].clone()),
        Some(json!(42))
    );
    // A subscriber still learns how it ended.
    let mut ws = hub.ws().await?;
    ws.subscribe(&id, Some(0)).await?;
    match ws.next_msg().await? {
        ServerMsg::Ended { status, seq, .. } => {
            assert_eq!((status.as_str(), seq), ("completed", 2))
        }
        other => bail!("expected ended, got {other:?}"),
    }
    let (status, body) = post(&hub, &id, "log", None).await?;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("execution_ended"))
    );
    Ok(())
}

/// Followers of the list leave nothing behind, however their connections
/// end: killed (reset), closed cleanly, or silent until the ping timeout.
#[tokio::test]
async fn followers_of_the_list_are_released_when_clients_leave() -> Result<()> {
    let hub = TestHub::spawn(&["--ping-interval", "1s", "--ping-timeout", "1s"]).await?;
    hub.publish(&execution_id("followed"), "step", json!({}))
        .await?;
    let mut clients = Vec::new();
    for _ in 0..30 {
        let mut ws = hub.ws().await?;
        ws.request(json!({ "op": "subscribe_executions" })).await?;
        match ws.next_msg().await? {
            ServerMsg::Executions { .. } => clients.push(ws),
            other => bail!("expected the snapshot, got {other:?}"),
        }
    }
    hub.health_until("30 followers", |h| h["executions_followers"] == 30)
        .await?;
    let mut silent = Vec::new();
    for (i, ws) in clients.into_iter().enumerate() {
        match i % 3 {
            0 => ws.abandon(true)?,
            1 => ws.close().await?,
            // Neither read nor answer pings: closed by the ping timeout.
            _ => silent.push(ws),
        }
    }
    let health = hub
        .health_until("every follower released", |h| {
            h["executions_followers"] == 0 && h["connections"]["websocket"] == 0
        })
        .await?;
    assert_eq!(health["subscriptions"], 0, "{health}");
    // A change after they left reaches nobody and costs nothing.
    hub.publish(&execution_id("after"), "step", json!({}))
        .await?;
    drop(silent);
    Ok(())
}

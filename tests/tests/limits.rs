//! Abuse limits per client: the publish rate (HTTP 429 with `Retry-After`,
//! WebSocket `rate_limited`) and subscriptions per token — refused before
//! anything is stored, while other clients keep being served.

mod helpers;

use anyhow::{Context, Result, bail, ensure};
use exechub_protocol::{ErrorCode, ServerMsg};
use helpers::{TestHub, WsClient, execution_id, hub_binary};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const SECRET: &str = "limits-test-secret";

fn token() -> Result<String> {
    let scopes = ["--scope", "publish", "--scope", "subscribe"];
    exechub_testkit::mint_token(&hub_binary(), SECRET, &scopes)
}

async fn ws_with(hub: &TestHub, token: &str) -> Result<WsClient> {
    let mut request = format!("ws://{}/ws", hub.addr).into_client_request()?;
    let bearer = HeaderValue::from_str(&format!("Bearer {token}"))?;
    request.headers_mut().insert("authorization", bearer);
    WsClient::connect_request(request)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}

#[tokio::test]
async fn publishing_past_the_rate_is_refused_with_429_and_nothing_is_stored() -> Result<()> {
    let hub = TestHub::spawn(&["--publish-rate", "1", "--publish-burst", "5"]).await?;
    let id = execution_id("rate");
    // One keep-alive HTTP connection is one client while auth is off.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()?;
    let post = |body: Value| http.post(hub.events_url(&id)).json(&body).send();
    for n in 0..5 {
        let response = post(json!({ "event_type": "t", "data": { "n": n } })).await?;
        ensure!(
            response.status() == 202,
            "publish {n}: {}",
            response.status()
        );
    }
    let refused = post(json!({ "event_type": "t", "data": {} })).await?;
    ensure!(refused.status() == 429, "status {}", refused.status());
    let retry_after: u64 = refused.headers()["retry-after"].to_str()?.parse()?;
    ensure!(retry_after >= 1, "Retry-After {retry_after}");
    let body: Value = refused.json().await?;
    ensure!(body["code"] == "rate_limited", "{body}");
    ensure!(
        hub.history(&id, 0).await?["last_seq"] == 5,
        "a refused publish was stored"
    );
    // Another client (its own connection) is not affected.
    let mut other = hub.ws().await?;
    ensure!(other.publish(&id, "other", json!({})).await? == 6);
    // Over the WebSocket: an error frame, the connection stays usable.
    for _ in 0..5 {
        other.publish(&id, "burst", json!({})).await.ok();
    }
    other
        .request(json!({ "op": "publish", "execution_id": id, "event_type": "t", "data": {} }))
        .await?;
    match other.next_msg().await? {
        ServerMsg::Error { code, message, .. } => {
            ensure!(code == ErrorCode::RateLimited, "{code:?}");
            ensure!(message.contains("retry in"), "{message}");
        }
        other => bail!("expected rate_limited, got {other:?}"),
    }
    other.request(json!({ "op": "ping" })).await?;
    ensure!(matches!(other.next_msg().await?, ServerMsg::Pong { .. }));
    Ok(())
}

#[tokio::test]
async fn a_token_holds_at_most_its_subscriptions_across_connections() -> Result<()> {
    let hub =
        TestHub::spawn(&["--jwt-secret", SECRET, "--max-subscriptions-per-token", "2"]).await?;
    let token = token()?;
    let mut first = ws_with(&hub, &token).await?;
    first.subscribe(&execution_id("a"), None).await?;
    let mut second = ws_with(&hub, &token).await?;
    second.subscribe(&execution_id("b"), None).await?;
    second
        .request(json!({ "op": "subscribe", "execution_id": execution_id("c") }))
        .await?;
    match second.next_msg().await? {
        ServerMsg::Error { code, .. } => ensure!(code == ErrorCode::TooManySubscriptions),
        other => bail!("expected too_many_subscriptions, got {other:?}"),
    }
    let stream = hub
        .http
        .get(hub.url(&format!(
            "/api/v1/executions/{}/stream?access_token={token}",
            execution_id("d")
        )))
        .send()
        .await?;
    ensure!(stream.status() == 429, "SSE status {}", stream.status());
    // Freeing one (the connection ends) makes room again.
    drop(first);
    hub.health_until("the first connection to end", |h| {
        h["connections"]["websocket"] == 1
    })
    .await
    .context("first connection")?;
    second.subscribe(&execution_id("e"), None).await?;
    Ok(())
}

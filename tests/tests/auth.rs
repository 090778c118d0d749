//! Bearer JWT auth on every transport, against the real binary; tokens come
//! from the hub's own `exechub token` command, or are crafted for edge cases.

mod helpers;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use exechub_protocol::{ErrorCode, ServerMsg, close};
use helpers::ws::{Received, WsClient};
use helpers::{TestHub, execution_id, hub_binary};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const SECRET: &str = "test-secret-8c1f0e";

async fn secured(extra: &[&str]) -> Result<TestHub> {
    let mut args = vec!["--jwt-secret", SECRET];
    args.extend_from_slice(extra);
    TestHub::spawn(&args).await
}

/// `exechub token --secret … <args>`.
fn token(secret: &str, args: &[&str]) -> Result<String> {
    exechub_testkit::mint_token(&hub_binary(), secret, args)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A token with an explicit `exp`, for expiry cases the CLI cannot make.
fn token_expiring_at(exp: u64) -> Result<String> {
    signed(&json!({ "sub": "t", "exp": exp, "scope": ["publish", "subscribe"] }))
}

/// `claims` signed with [`SECRET`], for shapes the CLI cannot make.
fn signed(claims: &Value) -> Result<String> {
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes())?;
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        claims,
        &key,
    )?)
}

/// A publisher's token valid for an hour, with `extra` claims added.
fn publisher_with(extra: &Value) -> Result<String> {
    let mut claims = json!({ "sub": "t", "exp": now() + 3600, "scope": ["publish"] });
    if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
        claims.extend(extra.clone());
    }
    signed(&claims)
}

/// Publishes one event to `hub` with `token`: the status and the body.
async fn publish_with(hub: &TestHub, token: &str) -> Result<(u16, Value)> {
    let response = hub
        .http
        .post(hub.events_url(&execution_id("claims")))
        .bearer_auth(token)
        .json(&json!({ "event_type": "x", "data": {} }))
        .send()
        .await?;
    Ok((response.status().as_u16(), response.json().await?))
}

/// One token case: (name, token, expected status — 0 when allowed, expected `code`).
type Case = (&'static str, Option<String>, u16, &'static str);

/// The token cases every transport must answer the same way.
fn cases(id_prefix: &str, action: &str) -> Result<Vec<Case>> {
    let other = if action == "publish" {
        "subscribe"
    } else {
        "publish"
    };
    let prefix = format!("{id_prefix}*");
    Ok(vec![
        ("no token", None, 401, "missing_token"),
        ("garbage", Some("not.a.jwt".into()), 401, "malformed_token"),
        (
            "wrong signature",
            Some(token("another-secret", &["--scope", action])?),
            401,
            "bad_signature",
        ),
        (
            "expired",
            Some(token_expiring_at(now() - 3600)?),
            401,
            "token_expired",
        ),
        (
            "wrong scope",
            Some(token(SECRET, &["--scope", other])?),
            403,
            "forbidden",
        ),
        (
            "execution not granted",
            Some(token(
                SECRET,
                &["--scope", action, "--execution", "elsewhere-*"],
            )?),
            403,
            "forbidden",
        ),
        (
            "prefix grant",
            Some(token(SECRET, &["--scope", action, "--execution", &prefix])?),
            0,
            "",
        ),
    ])
}

async fn check_refusal(
    response: reqwest::Response,
    name: &str,
    status: u16,
    code: &str,
) -> Result<()> {
    assert_eq!(response.status().as_u16(), status, "{name}");
    if status == 401 {
        let challenge = response
            .headers()
            .get("www-authenticate")
            .context("WWW-Authenticate")?;
        assert!(challenge.to_str()?.starts_with("Bearer"), "{name}");
    }
    let body: Value = response.json().await?;
    assert_eq!(body["code"], code, "{name}: {body}");
    Ok(())
}

#[tokio::test]
async fn http_publish_and_history_answer_401_or_403_exactly() -> Result<()> {
    let hub = secured(&[]).await?;
    let id = execution_id("granted");
    let body = json!({ "event_type": "x", "data": {} });
    for (name, token, status, code) in cases("granted-", "publish")? {
        let mut request = hub.http.post(hub.events_url(&id)).json(&body);
        if let Some(token) = &token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        if status == 0 {
            assert_eq!(response.status(), 202, "{name}");
        } else {
            check_refusal(response, name, status, code).await?;
        }
    }
    for (name, token, status, code) in cases("granted-", "subscribe")? {
        let mut request = hub.http.get(hub.events_url(&id));
        if let Some(token) = &token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        if status == 0 {
            assert_eq!(response.status(), 200, "{name}");
            assert_eq!(response.json::<Value>().await?["last_seq"], 1);
        } else {
            check_refusal(response, name, status, code).await?;
        }
    }
    // A refusal reads the same whether or not the execution exists.
    let outsider = token(
        SECRET,
        &["--scope", "subscribe", "--execution", "elsewhere-*"],
    )?;
    let mut bodies = Vec::new();
    for target in [id.as_str(), "granted-never-published"] {
        let response = hub
            .http
            .get(hub.events_url(target))
            .bearer_auth(&outsider)
            .send()
            .await?;
        bodies.push((response.status(), response.text().await?));
    }
    assert_eq!(bodies[0], bodies[1]);
    // /health stays open and says auth is on.
    let health: Value = hub.health().await?;
    assert_eq!(health["auth"], "jwt");
    Ok(())
}

/// Identity providers often issue `aud` as an array (RFC 7519 §4.1.3).
#[tokio::test]
async fn an_audience_array_is_accepted_when_it_contains_the_hub() -> Result<()> {
    let hub = secured(&["--jwt-audience", "exechub"]).await?;
    let listed = publisher_with(&json!({ "aud": ["dashboard", "exechub"] }))?;
    assert_eq!(publish_with(&hub, &listed).await?.0, 202);
    let elsewhere = publisher_with(&json!({ "aud": ["dashboard", "billing"] }))?;
    let (status, body) = publish_with(&hub, &elsewhere).await?;
    assert_eq!(
        (status, &body["code"]),
        (401, &json!("invalid_token")),
        "{body}"
    );
    // Without --jwt-audience, any audience is fine.
    let open = secured(&[]).await?;
    assert_eq!(publish_with(&open, &elsewhere).await?.0, 202);
    Ok(())
}

#[tokio::test]
async fn a_token_used_before_its_nbf_is_refused_as_not_yet_valid() -> Result<()> {
    let hub = secured(&[]).await?;
    let early = publisher_with(&json!({ "nbf": now() + 600 }))?;
    let (status, body) = publish_with(&hub, &early).await?;
    assert_eq!(
        (status, &body["code"]),
        (401, &json!("invalid_token")),
        "{body}"
    );
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("not yet valid"), "{body}");
    // Within the leeway, as for `exp`.
    let started = publisher_with(&json!({ "nbf": now() + 2 }))?;
    assert_eq!(publish_with(&hub, &started).await?.0, 202);
    Ok(())
}

#[tokio::test]
async fn sse_takes_the_header_or_access_token_and_answers_like_http() -> Result<()> {
    let hub = secured(&[]).await?;
    let id = execution_id("sse-granted");
    let url = hub.url(&format!("/api/v1/executions/{id}/stream?after=0"));
    for (name, token, status, code) in cases("sse-granted-", "subscribe")? {
        let response = match &token {
            Some(token) => {
                hub.http
                    .get(format!("{url}&access_token={token}"))
                    .send()
                    .await?
            }
            None => hub.http.get(&url).send().await?,
        };
        if status == 0 {
            assert_eq!(response.status(), 200, "{name}");
        } else {
            check_refusal(response, name, status, code).await?;
        }
    }
    let reader = token(
        SECRET,
        &["--scope", "subscribe", "--execution", "sse-granted-*"],
    )?;
    let response = hub.http.get(&url).bearer_auth(&reader).send().await?;
    assert_eq!(response.status(), 200, "Authorization header works too");
    Ok(())
}

async fn ws_connect(
    hub: &TestHub,
    token: Option<&str>,
    origin: Option<&str>,
) -> Result<WsClient, u16> {
    let url = match token {
        Some(token) => format!("ws://{}/ws?access_token={token}", hub.addr),
        None => format!("ws://{}/ws", hub.addr),
    };
    let mut request = url.into_client_request().map_err(|_| 0u16)?;
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", HeaderValue::from_str(origin).map_err(|_| 0u16)?);
    }
    WsClient::connect_request(request)
        .await
        .map_err(|error| match error {
            tokio_tungstenite::tungstenite::Error::Http(response) => response.status().as_u16(),
            _ => 0,
        })
}

#[tokio::test]
async fn websocket_checks_the_token_at_upgrade_and_every_operation() -> Result<()> {
    let hub = secured(&[]).await?;
    for (name, token, status, _) in cases("ws-granted-", "subscribe")? {
        let result = ws_connect(&hub, token.as_deref(), None).await;
        match status {
            401 => assert_eq!(result.err(), Some(401), "{name}"),
            // Scope and grants are checked per operation, once connected.
            _ => assert!(result.is_ok(), "{name}"),
        }
    }
    let reader = token(
        SECRET,
        &["--scope", "subscribe", "--execution", "ws-granted-*"],
    )?;
    let mut ws = ws_connect(&hub, Some(&reader), None)
        .await
        .map_err(|s| anyhow::anyhow!("status {s}"))?;
    ws.subscribe("ws-granted-1", None).await?;
    ws.request(json!({ "op": "subscribe", "execution_id": "elsewhere-1" }))
        .await?;
    assert!(matches!(
        ws.next_msg().await?,
        ServerMsg::Error {
            code: ErrorCode::Forbidden,
            ..
        }
    ));
    let publish =
        json!({ "op": "publish", "execution_id": "ws-granted-1", "event_type": "x", "data": {} });
    ws.request(publish).await?;
    assert!(matches!(
        ws.next_msg().await?,
        ServerMsg::Error {
            code: ErrorCode::Forbidden,
            ..
        }
    ));
    ws.request(json!({ "op": "ping" })).await?;
    assert!(
        matches!(ws.next_msg().await?, ServerMsg::Pong { .. }),
        "still usable"
    );
    Ok(())
}

#[tokio::test]
async fn token_refresh_keeps_a_websocket_open_past_expiry_and_without_it_closes() -> Result<()> {
    let hub = secured(&[]).await?;
    // Expired 3 s ago, accepted within the 5 s leeway: the hub ends it ~2 s from now.
    let expiring = token_expiring_at(now() - 3)?;
    let mut lapsing = ws_connect(&hub, Some(&expiring), None)
        .await
        .map_err(|s| anyhow::anyhow!("status {s}"))?;
    let mut refreshed = ws_connect(&hub, Some(&expiring), None)
        .await
        .map_err(|s| anyhow::anyhow!("status {s}"))?;
    let fresh = token(
        SECRET,
        &["--scope", "subscribe", "--scope", "publish", "--ttl", "1h"],
    )?;
    refreshed
        .request(json!({ "op": "auth", "token": fresh }))
        .await?;
    assert!(
        matches!(refreshed.next_msg().await?, ServerMsg::Authenticated { expires_at, .. } if expires_at > now() + 3000)
    );

    match lapsing.next().await? {
        Received::Closed(Some(frame)) => assert_eq!(u16::from(frame.code), close::TOKEN_EXPIRED),
        other => bail!("expected close 4002, got {other:?}"),
    }
    // The refreshed connection outlives the first token: it still answers.
    tokio::time::sleep(Duration::from_secs(1)).await; // past the moment `lapsing` was closed
    refreshed.request(json!({ "op": "ping" })).await?;
    assert!(matches!(
        refreshed.next_msg().await?,
        ServerMsg::Pong { .. }
    ));
    refreshed
        .request(json!({ "op": "auth", "token": "garbage" }))
        .await?;
    assert!(matches!(
        refreshed.next_msg().await?,
        ServerMsg::Error {
            code: ErrorCode::Unauthorized,
            ..
        }
    ));
    Ok(())
}

#[tokio::test]
async fn an_unlisted_origin_is_refused_before_upgrade() -> Result<()> {
    let hub = TestHub::spawn(&["--allowed-origin", "https://app.example.com"]).await?;
    assert_eq!(
        ws_connect(&hub, None, Some("https://evil.example.com"))
            .await
            .err(),
        Some(403)
    );
    assert!(
        ws_connect(&hub, None, Some("https://app.example.com"))
            .await
            .is_ok()
    );
    assert!(
        ws_connect(&hub, None, None).await.is_ok(),
        "non-browser clients send no Origin"
    );
    Ok(())
}

#[tokio::test]
async fn no_secret_or_token_reaches_the_logs() -> Result<()> {
    let hub = TestHub::spawn_with_log_level(&["--jwt-secret", SECRET], "debug").await?;
    let good = token(SECRET, &["--scope", "subscribe", "--scope", "publish"])?;
    let forged = token("another-secret", &["--scope", "publish"])?;
    let id = execution_id("logs");
    for token in [&good, &forged] {
        let _ = hub
            .http
            .post(hub.events_url(&id))
            .bearer_auth(token)
            .json(&json!({"event_type": "x", "data": {}}))
            .send()
            .await?;
        let _ = hub
            .http
            .get(format!("{}?access_token={token}", hub.events_url(&id)))
            .send()
            .await?;
        let _ = ws_connect(&hub, Some(token), None).await;
    }
    let mut ws = ws_connect(&hub, Some(&good), None)
        .await
        .map_err(|s| anyhow::anyhow!("status {s}"))?;
    ws.request(json!({ "op": "auth", "token": forged })).await?;
    ws.next_msg().await?;
    let logs = hub.logs();
    assert!(
        logs.contains("GET") || logs.contains("request"),
        "debug logs were captured"
    );
    for secret in [SECRET, good.as_str(), forged.as_str()] {
        assert!(
            !logs.contains(secret),
            "a secret or token appears in the logs"
        );
    }
    Ok(())
}

#[tokio::test]
async fn auth_off_is_announced_and_dev_tokens_are_for_loopback_only() -> Result<()> {
    let open = TestHub::spawn(&[]).await?;
    assert!(open.logs().contains("authentication is OFF"));
    let health: Value = open.health().await?;
    assert_eq!(health["auth"], "off");
    assert_eq!(
        open.http.get(open.url("/dev/token")).send().await?.status(),
        404
    );

    let dev = secured(&["--dev-token"]).await?;
    let issued: Value = dev
        .http
        .get(dev.url("/dev/token"))
        .send()
        .await?
        .json()
        .await?;
    let token = issued["token"].as_str().context("a token")?;
    let response = dev
        .http
        .post(dev.events_url("dev-1"))
        .bearer_auth(token)
        .json(&json!({"event_type": "x", "data": {}}))
        .send()
        .await?;
    assert_eq!(response.status(), 202);

    let refused = std::process::Command::new(hub_binary())
        .args([
            "--listen",
            "0.0.0.0:0",
            "--jwt-secret",
            SECRET,
            "--dev-token",
        ])
        .output()?;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--dev-token"));
    Ok(())
}

/// An SSE stream ends when its token does: a final `event: error` with
/// `token_expired`, then the end of the stream (EventSource reconnects with
/// a fresh token). Events published after that moment are not delivered.
#[tokio::test]
async fn an_sse_stream_ends_when_its_token_expires() -> Result<()> {
    let hub = secured(&[]).await?;
    let id = execution_id("sse-expiry");
    // Expired 3 s ago, accepted within the 5 s leeway: the hub ends it ~2 s from now.
    let expiring = token_expiring_at(now() - 3)?;
    let url = hub.url(&format!(
        "/api/v1/executions/{id}/stream?access_token={expiring}"
    ));
    let mut stream = helpers::SseClient::connect(&hub.http, &url, None::<u64>).await?;
    let notice = stream.next_message().await?.context("a final message")?;
    assert_eq!(notice.event.as_deref(), Some("error"), "{notice:?}");
    assert!(notice.data.contains("token_expired"), "{notice:?}");
    assert!(stream.next_message().await?.is_none(), "the stream goes on");
    Ok(())
}

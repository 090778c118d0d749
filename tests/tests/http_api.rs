//! The HTTP API of the replaced service over a real socket: publish and
//! history, health, CORS. Validation and status rules are tested in-process
//! against the router (`hub/tests/http_validation.rs`).

mod helpers;

use anyhow::Result;
use helpers::{TestHub, execution_id};
use serde_json::{Value, json};

async fn post_raw(
    hub: &TestHub,
    path: &str,
    body: impl Into<reqwest::Body>,
) -> Result<(u16, Value)> {
    let response = hub
        .http
        .post(hub.url(path))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await?))
}

#[tokio::test]
async fn publish_answers_202_with_consecutive_seqs_and_history_keeps_order() -> Result<()> {
    let hub = TestHub::spawn(&[]).await?;
    let id = execution_id("order");
    let body = json!({ "event_type": "tool_started", "data": { "tool": "grep" }, "timestamp": "2026-01-01T00:00:00Z" });
    let (status, accepted) = post_raw(
        &hub,
        &format!("/api/v1/executions/{id}/events"),
        body.to_string(),
    )
    .await?;
    assert_eq!(status, 202);
    assert_eq!(accepted["seq"], 1);
    assert_eq!(accepted["execution_id"], id.as_str());
    assert_eq!(accepted["timestamp"], "2026-01-01T00:00:00Z");
    for i in 2..=20 {
        assert_eq!(hub.publish(&id, "log", json!({ "line": i })).await?, i);
    }
    let page = hub.history(&id, 0).await?;
    let events = page["events"].as_array().expect("events array");
    let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    helpers::assert_contiguous(&seqs, 1, 20);
    assert_eq!(events[0]["data"], json!({ "tool": "grep" }));
    assert_eq!(events[4]["data"]["line"], 5);
    assert_eq!(
        (page["last_seq"].as_u64(), page["oldest_seq"].as_u64()),
        (Some(20), Some(1))
    );
    // Server-stamped timestamps are RFC 3339 UTC with milliseconds.
    let stamped = events[1]["timestamp"].as_str().expect("timestamp");
    assert!(stamped.ends_with('Z') && stamped.len() == 24, "{stamped}");

    let tail = hub
        .http
        .get(format!("{}?after=17&limit=2", hub.events_url(&id)))
        .send()
        .await?
        .json::<Value>()
        .await?;
    let seqs: Vec<u64> = tail["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert_eq!(seqs, vec![18, 19]);
    Ok(())
}

#[tokio::test]
async fn health_names_the_store() -> Result<()> {
    let hub = TestHub::spawn(&[]).await?;
    let health: Value = hub.health().await?;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["store"]["backend"], "memory");
    Ok(())
}

/// CORS is an allowlist (`--cors-origin`), empty by default, and the
/// development token is never shared with another origin.
#[tokio::test]
async fn cors_answers_only_listed_origins_and_never_for_the_dev_token() -> Result<()> {
    let acao = |response: &reqwest::Response| {
        response
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap_or_default().to_owned())
    };
    let closed = TestHub::spawn(&[]).await?;
    let response = closed
        .http
        .get(closed.url("/health"))
        .header("origin", "https://evil.example")
        .send()
        .await?;
    assert_eq!(acao(&response), None);
    let open = TestHub::spawn(&[
        "--cors-origin",
        "https://app.example",
        "--jwt-secret",
        "s3cret-for-tests",
        "--dev-token",
    ])
    .await?;
    for (origin, expected) in [
        (
            "https://app.example",
            Some("https://app.example".to_owned()),
        ),
        ("https://evil.example", None),
    ] {
        let response = open
            .http
            .get(open.url("/health"))
            .header("origin", origin)
            .send()
            .await?;
        assert_eq!(acao(&response), expected, "{origin}");
        let stream = open
            .http
            .get(open.url("/api/v1/executions/cors/stream"))
            .header("origin", origin)
            .send()
            .await?;
        assert_eq!(acao(&stream), expected, "stream for {origin}");
    }
    let token = open
        .http
        .get(open.url("/dev/token"))
        .header("origin", "https://app.example")
        .send()
        .await?;
    assert_eq!(token.status(), 200);
    assert_eq!(
        acao(&token),
        None,
        "the dev token must not be readable cross-origin"
    );
    Ok(())
}

/// `exechub --help` never prints environment values: they may be secrets.
#[test]
fn help_hides_environment_values() -> Result<()> {
    let output = std::process::Command::new(helpers::hub_binary())
        .arg("--help")
        .env("EXECHUB_REDIS_URL", "redis://:hunter2@127.0.0.1:6379")
        .env("EXECHUB_WEBHOOK_SECRET", "whsec_hunter3")
        .output()?;
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout)?;
    assert!(help.contains("EXECHUB_REDIS_URL"), "the variable is named");
    assert!(
        !help.contains("hunter2") && !help.contains("hunter3"),
        "{help}"
    );
    Ok(())
}

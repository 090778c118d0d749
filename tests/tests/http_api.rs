//! The HTTP API of the replaced service: publish, validation errors, history, health.

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
async fn every_validation_problem_gets_fastapi_422_body() -> Result<()> {
    let hub = TestHub::spawn(&[]).await?;
    let path = format!("/api/v1/executions/{}/events", execution_id("invalid"));
    let cases: Vec<(&str, Value)> = vec![
        (
            r#"{"data":{}}"#,
            json!([{"loc":["body","event_type"],"msg":"Field required","type":"missing"}]),
        ),
        (
            r#"{"event_type":"x"}"#,
            json!([{"loc":["body","data"],"msg":"Field required","type":"missing"}]),
        ),
        (
            r#"{"event_type":7,"data":{}}"#,
            json!([{"loc":["body","event_type"],"msg":"Input should be a valid string","type":"string_type"}]),
        ),
        (
            r#"{"event_type":"x","data":[1]}"#,
            json!([{"loc":["body","data"],"msg":"Input should be a valid dictionary","type":"dict_type"}]),
        ),
        (
            r#"{"event_type":"x","data":{},"timestamp":12}"#,
            json!([{"loc":["body","timestamp"],"msg":"Input should be a valid string","type":"string_type"}]),
        ),
        (
            r#"{}"#,
            json!([
                {"loc":["body","event_type"],"msg":"Field required","type":"missing"},
                {"loc":["body","data"],"msg":"Field required","type":"missing"}
            ]),
        ),
        (
            r#"[1,2]"#,
            json!([{"loc":["body"],"msg":"Input should be a valid dictionary or object to extract fields from","type":"model_attributes_type"}]),
        ),
        (
            "",
            json!([{"loc":["body"],"msg":"Field required","type":"missing"}]),
        ),
    ];
    for (body, detail) in cases {
        let (status, answer) = post_raw(&hub, &path, body).await?;
        assert_eq!(status, 422, "{body}");
        assert_eq!(answer, json!({ "detail": detail }), "{body}");
    }
    // Malformed JSON and non-JSON: a json_invalid entry pointing at the offending byte.
    for (body, offset) in [(r#"{"event_type": "x", "data": {"#, 29), ("hello", 0)] {
        let (status, answer) = post_raw(&hub, &path, body).await?;
        assert_eq!(status, 422, "{body}");
        let entry = &answer["detail"][0];
        assert_eq!(
            (entry["type"].as_str(), entry["msg"].as_str()),
            (Some("json_invalid"), Some("JSON decode error"))
        );
        assert_eq!(entry["loc"], json!(["body", offset]), "{body}");
        assert_eq!(answer["detail"].as_array().map(Vec::len), Some(1));
    }
    let history = hub
        .http
        .get(hub.url(&path))
        .send()
        .await?
        .json::<Value>()
        .await?;
    assert_eq!(history["last_seq"], 0, "nothing invalid was stored");
    Ok(())
}

#[tokio::test]
async fn invalid_execution_ids_are_422_at_the_path() -> Result<()> {
    let hub = TestHub::spawn(&[]).await?;
    let body = r#"{"event_type":"x","data":{}}"#;
    let long = "x".repeat(257);
    for path in [
        "/api/v1/executions//events",
        "/api/v1/executions/a%07b/events",
        &format!("/api/v1/executions/{long}/events"),
    ] {
        let (status, answer) = post_raw(&hub, path, body).await?;
        assert_eq!(status, 422, "{path}");
        assert_eq!(
            answer["detail"][0]["loc"],
            json!(["path", "execution_id"]),
            "{path}"
        );
    }
    let ok = format!("/api/v1/executions/{}/events", "y".repeat(256));
    assert_eq!(post_raw(&hub, &ok, body).await?.0, 202);
    Ok(())
}

#[tokio::test]
async fn oversized_body_is_413_and_not_stored() -> Result<()> {
    let hub = TestHub::spawn(&["--max-event-bytes", "1024"]).await?;
    let id = execution_id("big");
    let body = json!({ "event_type": "x", "data": { "blob": "z".repeat(2000) } }).to_string();
    let (status, answer) = post_raw(&hub, &format!("/api/v1/executions/{id}/events"), body).await?;
    assert_eq!(status, 413);
    assert!(
        answer["detail"]
            .as_str()
            .is_some_and(|d| d.contains("1024")),
        "{answer}"
    );
    assert_eq!(answer["code"], "payload_too_large", "{answer}");
    assert_eq!(hub.history(&id, 0).await?["last_seq"], 0);
    assert_eq!(hub.publish(&id, "small", json!({})).await?, 1);
    Ok(())
}

#[tokio::test]
async fn history_rejects_bad_query_parameters() -> Result<()> {
    let hub = TestHub::spawn(&[]).await?;
    let url = hub.events_url(&execution_id("query"));
    for (query, loc) in [
        ("?after=-1", "after"),
        ("?limit=abc", "limit"),
        ("?limit=100000", "limit"),
    ] {
        let response = hub.http.get(format!("{url}{query}")).send().await?;
        assert_eq!(response.status(), 422, "{query}");
        let answer: Value = response.json().await?;
        assert_eq!(answer["detail"][0]["loc"], json!(["query", loc]), "{query}");
    }
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

/// As the replaced FastAPI service: a body not declared JSON (a form, text,
/// or no type — what any web page can send without a CORS preflight) is not
/// parsed (422 `model_attributes_type` at `["body"]`), and a UTF-8 byte
/// order mark before the JSON is accepted.
#[tokio::test]
async fn only_json_bodies_publish_and_a_bom_is_accepted() -> Result<()> {
    let hub = TestHub::spawn(&[]).await?;
    let id = execution_id("ctype");
    let body = r#"{"event_type":"t","data":{}}"#;
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut request = hub.http.post(hub.events_url(&id)).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await?;
        assert_eq!(response.status(), 422, "{content_type:?}");
        let problem: Value = response.json().await?;
        assert_eq!(problem["detail"][0]["type"], "model_attributes_type");
        assert_eq!(problem["detail"][0]["loc"], json!(["body"]));
    }
    let with_bom = [b"\xEF\xBB\xBF".as_slice(), body.as_bytes()].concat();
    let (status, _) = post_raw(&hub, &format!("/api/v1/executions/{id}/events"), with_bom).await?;
    assert_eq!(status, 202);
    let (status, _) = post_raw(&hub, &format!("/api/v1/executions/{id}/events"), body).await?;
    assert_eq!(status, 202);
    let charset = hub
        .http
        .post(hub.events_url(&id))
        .header("content-type", "application/json; charset=utf-8")
        .body(body)
        .send()
        .await?;
    assert_eq!(charset.status(), 202);
    assert_eq!(hub.history(&id, 0).await?["last_seq"], 3);
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

/// Ids with `{` or `}` could leave their Redis hash slot or name the hub's
/// own keys: they are refused, on HTTP and WebSocket alike.
#[tokio::test]
async fn execution_ids_with_braces_are_refused() -> Result<()> {
    let hub = TestHub::spawn(&[]).await?;
    let (status, problem) = post_raw(
        &hub,
        "/api/v1/executions/x%7Bevents%7D/events",
        r#"{"event_type":"t","data":{}}"#,
    )
    .await?;
    assert_eq!(status, 422);
    assert_eq!(problem["detail"][0]["loc"], json!(["path", "execution_id"]));
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

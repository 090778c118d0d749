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

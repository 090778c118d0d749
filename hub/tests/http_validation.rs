//! The HTTP API's validation and status rules, in-process: the hub's router
//! built once per case and called with `tower::ServiceExt::oneshot`, as
//! axum's testing example does. Nothing here crosses a socket; what does
//! (publishing, streaming, several nodes) is tested end to end in `tests/`.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use clap::Parser;
use exechub::AppState;
use exechub::config::Cli;
use serde_json::{Value, json};
use tower::ServiceExt;

/// A hub (embedded store) started with `args`, as its router.
async fn hub(args: &[&str]) -> Router {
    let argv = ["exechub", "--listen", "127.0.0.1:0"]
        .into_iter()
        .chain(args.iter().copied());
    let config = Cli::parse_from(argv).config;
    let state = AppState::new(config).await.expect("the hub starts");
    exechub::transport::router(state)
}

/// The answer to `request`: its status and its JSON body (`null` when empty).
async fn send(router: &Router, request: Request<Body>) -> (u16, Value) {
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("the body reads");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, body)
}

/// `POST path` with `body`, declared as `content_type` (none: no header).
async fn post_as(
    router: &Router,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> (u16, Value) {
    let mut request = Request::post(path);
    if let Some(content_type) = content_type {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    send(router, request.body(body.into()).expect("a request")).await
}

/// `POST path` with a JSON body.
async fn post(router: &Router, path: &str, body: impl Into<Body>) -> (u16, Value) {
    post_as(router, path, Some("application/json"), body).await
}

/// `GET path`.
async fn get(router: &Router, path: &str) -> (u16, Value) {
    send(
        router,
        Request::get(path).body(Body::empty()).expect("a request"),
    )
    .await
}

/// The stored history's last seq of `id`.
async fn last_seq(router: &Router, id: &str) -> Value {
    get(router, &format!("/api/v1/executions/{id}/events?after=0"))
        .await
        .1["last_seq"]
        .clone()
}

#[tokio::test]
async fn every_validation_problem_gets_fastapi_422_body() {
    let hub = hub(&[]).await;
    let path = "/api/v1/executions/invalid/events";
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
        let (status, answer) = post(&hub, path, body).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(answer, json!({ "detail": detail }), "{body}");
    }
    // Malformed JSON and non-JSON: a json_invalid entry pointing at the offending byte.
    for (body, offset) in [(r#"{"event_type": "x", "data": {"#, 29), ("hello", 0)] {
        let (status, answer) = post(&hub, path, body).await;
        assert_eq!(status, 422, "{body}");
        let entry = &answer["detail"][0];
        assert_eq!(
            (entry["type"].as_str(), entry["msg"].as_str()),
            (Some("json_invalid"), Some("JSON decode error"))
        );
        assert_eq!(entry["loc"], json!(["body", offset]), "{body}");
        assert_eq!(answer["detail"].as_array().map(Vec::len), Some(1));
    }
    assert_eq!(
        last_seq(&hub, "invalid").await,
        0,
        "nothing invalid was stored"
    );
}

#[tokio::test]
async fn invalid_execution_ids_are_422_at_the_path() {
    let hub = hub(&[]).await;
    let body = r#"{"event_type":"x","data":{}}"#;
    let long = "x".repeat(257);
    for path in [
        "/api/v1/executions//events",
        "/api/v1/executions/a%07b/events",
        &format!("/api/v1/executions/{long}/events"),
        // `{` and `}` could leave a Redis hash slot or name the hub's own keys.
        "/api/v1/executions/x%7Bevents%7D/events",
    ] {
        let (status, answer) = post(&hub, path, body).await;
        assert_eq!(status, 422, "{path}");
        assert_eq!(
            answer["detail"][0]["loc"],
            json!(["path", "execution_id"]),
            "{path}"
        );
    }
    let ok = format!("/api/v1/executions/{}/events", "y".repeat(256));
    assert_eq!(post(&hub, &ok, body).await.0, 202);
}

#[tokio::test]
async fn oversized_body_is_413_with_its_code_and_not_stored() {
    let hub = hub(&["--max-event-bytes", "1024"]).await;
    let body = json!({ "event_type": "x", "data": { "blob": "z".repeat(2000) } }).to_string();
    let (status, answer) = post(&hub, "/api/v1/executions/big/events", body).await;
    assert_eq!(status, 413);
    let detail = answer["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("1024"), "{answer}");
    assert_eq!(answer["code"], "payload_too_large", "{answer}");
    assert_eq!(last_seq(&hub, "big").await, 0);
    let small = r#"{"event_type":"small","data":{}}"#;
    assert_eq!(
        post(&hub, "/api/v1/executions/big/events", small).await.1["seq"],
        1
    );
}

#[tokio::test]
async fn history_rejects_bad_query_parameters() {
    let hub = hub(&[]).await;
    for (query, loc) in [
        ("?after=-1", "after"),
        ("?limit=abc", "limit"),
        ("?limit=100000", "limit"),
    ] {
        let (status, answer) = get(&hub, &format!("/api/v1/executions/query/events{query}")).await;
        assert_eq!(status, 422, "{query}");
        assert_eq!(answer["detail"][0]["loc"], json!(["query", loc]), "{query}");
    }
}

#[tokio::test]
async fn an_unknown_execution_is_404_with_its_code() {
    let hub = hub(&[]).await;
    let (status, answer) = get(&hub, "/api/v1/executions/nobody").await;
    assert_eq!(
        (status, &answer["code"]),
        (404, &json!("not_found")),
        "{answer}"
    );
}

/// As the replaced FastAPI service: a body not declared JSON (a form, text,
/// or no type — what any web page can send without a CORS preflight) is not
/// parsed (422 `model_attributes_type` at `["body"]`), and a UTF-8 byte
/// order mark before the JSON is accepted.
#[tokio::test]
async fn only_json_bodies_publish_and_a_bom_is_accepted() {
    let hub = hub(&[]).await;
    let path = "/api/v1/executions/ctype/events";
    let body = r#"{"event_type":"t","data":{}}"#;
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let (status, problem) = post_as(&hub, path, content_type, body).await;
        assert_eq!(status, 422, "{content_type:?}");
        assert_eq!(problem["detail"][0]["type"], "model_attributes_type");
        assert_eq!(problem["detail"][0]["loc"], json!(["body"]));
    }
    let with_bom = [b"\xEF\xBB\xBF".as_slice(), body.as_bytes()].concat();
    assert_eq!(post(&hub, path, with_bom).await.0, 202);
    assert_eq!(post(&hub, path, body).await.0, 202);
    let charset = Some("application/json; charset=utf-8");
    assert_eq!(post_as(&hub, path, charset, body).await.0, 202);
    assert_eq!(last_seq(&hub, "ctype").await, 3);
}

//! `GET /openapi.json`: the OpenAPI 3.1 document of every HTTP route,
//! generated from the handlers' annotations and the wire types of
//! `exechub-protocol` (its `openapi` feature), never written by hand.
//!
//! `POST /api/v1/executions/{execution_id}/events` keeps the replaced
//! service's names: its body is `StreamingEventRequest` and its 422 is
//! `HTTPValidationError` of `ValidationError`s.

use std::sync::OnceLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "exechub",
        description = "Real-time event hub for executions: publish events over HTTP, read history, follow them live over SSE or WebSocket. The WebSocket protocol is described in docs/protocol.md.",
    ),
    paths(
        super::http::publish,
        super::http::publish_batch,
        super::http::history,
        super::sse::stream,
        super::ws::upgrade,
        super::executions::list,
        super::executions::summary,
        super::executions::result,
        super::http::health,
        super::http::dev_token,
        crate::metrics::scrape::metrics,
        crate::metrics::scrape::metrics_json,
        openapi_json,
        super::status::page,
    ),
    components(schemas(exechub_protocol::ErrorBody, exechub_protocol::ErrorCode, super::http::DevToken, exechub_protocol::StatusFilter)),
    modifiers(&BearerAuth),
    tags(
        (name = "executions", description = "Publish, history and live streams"),
        (name = "operations", description = "Health, metrics, this document and the operator page"),
    )
)]
pub struct ApiDoc;

/// Adds the `BearerAuth` scheme (JWTs, when the hub runs with a key).
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".to_owned());
        scheme.description = Some(
            "A JWT signed with the hub's key (--jwt-secret or --jwt-public-key); \
             not needed when the hub runs without one"
                .to_owned(),
        );
        components.add_security_scheme("BearerAuth", SecurityScheme::Http(scheme));
    }
}

/// The document, as JSON, built once.
pub fn document() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let mut doc = ApiDoc::openapi();
        doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
        doc.to_json().unwrap_or_default()
    })
}

/// `GET /openapi.json`: this document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
pub async fn openapi_json() -> Response {
    let json = [(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    )];
    (json, document()).into_response()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    /// Every `.route("…")` path in the transport sources.
    fn routes() -> Vec<String> {
        let sources = [include_str!("mod.rs")];
        let mut paths = Vec::new();
        for source in sources {
            for piece in source.split(".route(").skip(1) {
                let Some(rest) = piece.trim_start().strip_prefix('"') else {
                    continue;
                };
                if let Some((path, _)) = rest.split_once('"') {
                    paths.push(path.to_owned());
                }
            }
        }
        paths
    }

    #[test]
    fn the_document_is_openapi_3_1_and_lists_every_route() {
        let doc: Value = serde_json::from_str(super::document()).expect("JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().expect("paths");
        let routes = routes();
        assert!(routes.len() >= 8, "routes found: {routes:?}");
        for route in routes {
            // The empty-id routes only answer 422 for `{execution_id}` = "".
            if route.contains("//") {
                continue;
            }
            assert!(paths.contains_key(&route), "{route} is not documented");
        }
        let scheme = &doc["components"]["securitySchemes"]["BearerAuth"];
        assert_eq!(scheme["scheme"], "bearer");
    }

    #[test]
    fn publish_keeps_the_replaced_services_schemas() {
        let doc: Value = serde_json::from_str(super::document()).expect("JSON");
        let post = &doc["paths"]["/api/v1/executions/{execution_id}/events"]["post"];
        let body = &post["requestBody"]["content"]["application/json"]["schema"]["$ref"];
        assert_eq!(body, "#/components/schemas/StreamingEventRequest");
        let invalid = &post["responses"]["422"]["content"]["application/json"]["schema"]["$ref"];
        assert_eq!(invalid, "#/components/schemas/HTTPValidationError");
        let schemas = &doc["components"]["schemas"];
        let request = &schemas["StreamingEventRequest"];
        assert_eq!(
            request["required"],
            serde_json::json!(["event_type", "data"])
        );
        assert_eq!(request["properties"]["data"]["type"], "object");
        let error = &schemas["ValidationError"];
        assert_eq!(error["required"], serde_json::json!(["loc", "msg", "type"]));
        assert!(error["properties"].get("ctx").is_none());
        let detail = &schemas["HTTPValidationError"]["properties"]["detail"]["items"]["$ref"];
        assert_eq!(detail, "#/components/schemas/ValidationError");
        for status in ["202", "401", "403", "413", "422", "429", "503"] {
            assert!(post["responses"].get(status).is_some(), "no {status}");
        }
    }
}

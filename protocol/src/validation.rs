//! FastAPI's `HTTPValidationError` body, so existing clients keep parsing our 422s.

use serde::{Deserialize, Serialize};

/// One element of an error location: a field name or an index / byte offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum Loc {
    /// A position, e.g. the byte offset of a JSON syntax error.
    Index(u64),
    /// A field or section name, e.g. `"body"`, `"event_type"`.
    Key(String),
}

impl From<&str> for Loc {
    fn from(key: &str) -> Self {
        Loc::Key(key.to_owned())
    }
}

/// One problem with a request, as FastAPI (pydantic v2) reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    schema(title = "ValidationError")
)]
pub struct ValidationError {
    /// Where the problem is, e.g. `["body", "event_type"]`.
    pub loc: Vec<Loc>,
    /// Human-readable message, e.g. `"Field required"`.
    pub msg: String,
    /// Machine-readable kind, e.g. `"missing"`, `"string_type"`, `"json_invalid"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Extra context, e.g. the JSON parser's message for `json_invalid`.
    // Not in the replaced service's schema, which the document reproduces exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub ctx: Option<serde_json::Value>,
}

impl ValidationError {
    /// A problem at `loc` with the given kind and message.
    pub fn new(loc: Vec<Loc>, kind: &str, msg: &str) -> Self {
        Self {
            loc,
            msg: msg.to_owned(),
            kind: kind.to_owned(),
            ctx: None,
        }
    }

    /// A problem with a field of the request body.
    pub fn body_field(field: &str, kind: &str, msg: &str) -> Self {
        Self::new(vec!["body".into(), field.into()], kind, msg)
    }
}

/// The 422 body: `{"detail": [ValidationError, …]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = HTTPValidationError, title = "HTTPValidationError"))]
pub struct HttpValidationError {
    /// Every problem found, one entry each.
    pub detail: Vec<ValidationError>,
}

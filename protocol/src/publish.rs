//! The publish request and its validation.
//!
//! Validation mirrors FastAPI/pydantic v2 so that a 422 from exechub is the
//! same body the replaced API returned: every problem is reported (not just the
//! first), each with a `loc` that points at the offending field.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::EventData;
use crate::names::field;
use crate::validation::{Loc, ValidationError};

/// Longest accepted execution id, in bytes.
pub const MAX_EXECUTION_ID_BYTES: usize = 256;

/// Longest accepted idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;

/// Body of `POST /api/v1/executions/{execution_id}/events` (`StreamingEventRequest`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = StreamingEventRequest, title = "StreamingEventRequest", description = "Request to publish a streaming event to Redis for real-time UI updates"))]
pub struct PublishRequest {
    /// What happened, e.g. `tool_started`.
    pub event_type: String,
    /// Free-form payload; must be a JSON object.
    #[cfg_attr(feature = "openapi", schema(value_type = Object, additional_properties = true))]
    pub data: EventData,
    /// RFC 3339 time; when absent or null the hub stamps the arrival time.
    #[serde(default)]
    pub timestamp: Option<String>,
}

impl PublishRequest {
    /// Parses and validates a request body.
    ///
    /// # Errors
    /// Every problem found, in FastAPI's format: an empty body, malformed JSON,
    /// a body that is not an object, missing fields and fields of the wrong type.
    pub fn from_slice(body: &[u8]) -> Result<Self, Vec<ValidationError>> {
        Self::from_fields(body_object(body)?)
    }

    /// Validates the fields of an already parsed JSON object (a WebSocket
    /// `publish` frame carries them next to `op` and `id`, which are ignored).
    ///
    /// # Errors
    /// One entry per missing or mistyped field, as [`publish_problems`] lists them.
    pub fn from_fields(mut fields: EventData) -> Result<Self, Vec<ValidationError>> {
        let event_type = fields.remove(field::EVENT_TYPE);
        let data = fields.remove(field::DATA);
        let timestamp = fields.remove(field::TIMESTAMP);
        let errors = publish_problems(
            FieldType::of(event_type.as_ref()),
            FieldType::of(data.as_ref()),
            FieldType::of(timestamp.as_ref()),
        );
        let timestamp = match timestamp {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        match (event_type, data) {
            (Some(Value::String(event_type)), Some(Value::Object(data))) if errors.is_empty() => {
                Ok(Self {
                    event_type,
                    data,
                    timestamp,
                })
            }
            _ => Err(errors),
        }
    }
}

/// Body of `POST /api/v1/executions/{execution_id}/events/batch`:
/// `{"events": [StreamingEventRequest, …]}`, stored atomically with
/// consecutive seqs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = StreamingEventBatchRequest, title = "StreamingEventBatchRequest"))]
pub struct BatchRequest {
    /// The events, in the order they are stored.
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 1000))]
    pub events: Vec<PublishRequest>,
}

impl BatchRequest {
    /// Parses and validates a batch body holding 1 to `max_events` events.
    ///
    /// # Errors
    /// Every problem found, as for a single publish, with `loc` pointing into
    /// the batch: `["body", "events", i, "event_type"]`.
    pub fn from_slice(body: &[u8], max_events: usize) -> Result<Self, Vec<ValidationError>> {
        Self::from_value(body_object(body)?.remove(field::EVENTS), max_events)
    }

    /// Validates the `events` field of a parsed body or WebSocket frame.
    ///
    /// # Errors
    /// As [`BatchRequest::from_slice`].
    pub fn from_value(
        events: Option<Value>,
        max_events: usize,
    ) -> Result<Self, Vec<ValidationError>> {
        let loc = || vec![Loc::from("body"), Loc::from(field::EVENTS)];
        let items = match events {
            Some(Value::Array(items)) => items,
            None => {
                return Err(vec![ValidationError::new(
                    loc(),
                    "missing",
                    "Field required",
                )]);
            }
            Some(_) => {
                return Err(vec![ValidationError::new(
                    loc(),
                    "list_type",
                    "Input should be a valid list",
                )]);
            }
        };
        if let Some(problem) = batch_length_problem(items.len(), max_events) {
            return Err(vec![problem]);
        }
        let mut events = Vec::with_capacity(items.len());
        let mut errors = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let at = |mut problem: ValidationError| {
                let rest = problem.loc.split_off(1);
                problem.loc = loc();
                problem.loc.push(Loc::Index(i as u64));
                problem.loc.extend(rest);
                problem
            };
            match item {
                Value::Object(fields) => match PublishRequest::from_fields(fields) {
                    Ok(event) => events.push(event),
                    Err(problems) => errors.extend(problems.into_iter().map(at)),
                },
                _ => errors.push(at(not_an_object())),
            }
        }
        if errors.is_empty() {
            Ok(Self { events })
        } else {
            Err(errors)
        }
    }
}

/// What is wrong with a batch of `n` events, if anything: none, or more than `max`.
fn batch_length_problem(n: usize, max: usize) -> Option<ValidationError> {
    let loc = vec![Loc::from("body"), Loc::from(field::EVENTS)];
    if n == 0 {
        let msg = "List should have at least 1 item after validation, not 0";
        return Some(ValidationError::new(loc, "too_short", msg));
    }
    let msg = format!("List should have at most {max} items after validation, not {n}");
    (n > max).then(|| ValidationError::new(loc, "too_long", &msg))
}

/// The JSON type of a request field: all that publish validation looks at.
///
/// Clients that hold a publish in another form than a JSON map (the browser
/// client has JavaScript values) classify its fields and ask
/// [`publish_problems`], so they report exactly what the hub would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// The field is not there.
    Absent,
    /// `null`.
    Null,
    /// A string.
    String,
    /// An object (not an array).
    Object,
    /// A number, boolean or array.
    Other,
}

impl FieldType {
    /// The type of a parsed JSON field, `None` when absent.
    pub fn of(value: Option<&Value>) -> Self {
        match value {
            None => Self::Absent,
            Some(Value::Null) => Self::Null,
            Some(Value::String(_)) => Self::String,
            Some(Value::Object(_)) => Self::Object,
            Some(_) => Self::Other,
        }
    }
}

/// Every problem of a publish whose fields have these types, one entry per
/// field in FastAPI's order; empty when the publish is valid.
pub fn publish_problems(
    event_type: FieldType,
    data: FieldType,
    timestamp: FieldType,
) -> Vec<ValidationError> {
    let mut errors = Vec::new();
    match event_type {
        FieldType::String => {}
        FieldType::Absent => errors.push(missing(field::EVENT_TYPE)),
        _ => errors.push(string_type(field::EVENT_TYPE)),
    }
    match data {
        FieldType::Object => {}
        FieldType::Absent => errors.push(missing(field::DATA)),
        _ => errors.push(ValidationError::body_field(
            field::DATA,
            "dict_type",
            "Input should be a valid dictionary",
        )),
    }
    match timestamp {
        FieldType::Absent | FieldType::Null | FieldType::String => {}
        _ => errors.push(string_type(field::TIMESTAMP)),
    }
    errors
}

/// Checks an idempotency key (HTTP `Idempotency-Key` header or WebSocket
/// `idempotency_key`): one rule for both, 1 to [`MAX_IDEMPOTENCY_KEY_BYTES`]
/// visible ASCII characters (it becomes part of a store key).
pub fn is_idempotency_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_IDEMPOTENCY_KEY_BYTES
        && key.bytes().all(|b| b.is_ascii_graphic())
}

/// Checks an execution id taken from a URL path or a WebSocket frame.
///
/// # Errors
/// A `["path", "execution_id"]` error when the id is empty, longer than
/// [`MAX_EXECUTION_ID_BYTES`], contains control characters, or contains `{`
/// or `}` (Redis hash-tag delimiters: an id with them could move its keys
/// out of their slot or name the hub's own keys).
pub fn validate_execution_id(id: &str) -> Result<(), ValidationError> {
    let problem = if id.is_empty() {
        Some((
            "string_too_short",
            "String should have at least 1 character",
        ))
    } else if id.len() > MAX_EXECUTION_ID_BYTES {
        Some(("string_too_long", "String should have at most 256 bytes"))
    } else if id.chars().any(char::is_control) {
        Some((
            "value_error",
            "Value error, must not contain control characters",
        ))
    } else if id.contains(['{', '}']) {
        Some(("value_error", "Value error, must not contain '{' or '}'"))
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some((kind, msg)) => Err(ValidationError::new(
            vec!["path".into(), "execution_id".into()],
            kind,
            msg,
        )),
    }
}

/// The JSON object a request body holds: an empty body is `missing`,
/// malformed JSON `json_invalid` (with its offset), anything but an object
/// `model_attributes_type` — as FastAPI reports them.
fn body_object(body: &[u8]) -> Result<EventData, Vec<ValidationError>> {
    let body = strip_bom(body);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(vec![ValidationError::new(
            vec!["body".into()],
            "missing",
            "Field required",
        )]);
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err(vec![not_an_object()]),
        Err(err) => Err(vec![json_invalid(body, &err)]),
    }
}

/// A body that starts with a UTF-8 byte order mark is read without it, as
/// Python's `json.loads` (FastAPI) does.
fn strip_bom(body: &[u8]) -> &[u8] {
    body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body)
}

/// The 422 entry for a body that is not JSON at all (a `Content-Type` other
/// than JSON): FastAPI does not parse it, and the model sees no object.
pub fn body_not_json() -> ValidationError {
    not_an_object()
}

fn missing(field: &str) -> ValidationError {
    ValidationError::body_field(field, "missing", "Field required")
}

fn string_type(field: &str) -> ValidationError {
    ValidationError::body_field(field, "string_type", "Input should be a valid string")
}

fn not_an_object() -> ValidationError {
    ValidationError::new(
        vec!["body".into()],
        "model_attributes_type",
        "Input should be a valid dictionary or object to extract fields from",
    )
}

fn json_invalid(body: &[u8], err: &serde_json::Error) -> ValidationError {
    let mut error = ValidationError::new(
        vec!["body".into(), Loc::Index(byte_offset(body, err))],
        "json_invalid",
        "JSON decode error",
    );
    error.ctx = Some(serde_json::json!({ "error": err.to_string() }));
    error
}

/// serde_json reports line/column (1-based); FastAPI (Python's `json`) reports
/// a position in the body, which at end of input is the body's length.
fn byte_offset(body: &[u8], err: &serde_json::Error) -> u64 {
    if err.is_eof() {
        return body.len() as u64;
    }
    let line_start: usize = body
        .split(|b| *b == b'\n')
        .take(err.line().saturating_sub(1))
        .map(|line| line.len() + 1)
        .sum();
    (line_start + err.column().saturating_sub(1)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(body: &str) -> Vec<(Vec<Loc>, String)> {
        PublishRequest::from_slice(body.as_bytes())
            .expect_err("invalid")
            .into_iter()
            .map(|e| (e.loc, e.kind))
            .collect()
    }

    #[test]
    fn accepts_a_valid_body_and_ignores_unknown_fields() {
        let req = PublishRequest::from_slice(br#"{"event_type":"x","data":{"a":1},"extra":true}"#)
            .expect("valid");
        assert_eq!(req.event_type, "x");
        assert_eq!(req.timestamp, None);
    }

    #[test]
    fn reports_every_problem_with_its_location() {
        let found = kinds(r#"{"event_type":5,"timestamp":7}"#);
        assert_eq!(
            found,
            vec![
                (
                    vec!["body".into(), "event_type".into()],
                    "string_type".into()
                ),
                (vec!["body".into(), "data".into()], "missing".into()),
                (
                    vec!["body".into(), "timestamp".into()],
                    "string_type".into()
                ),
            ]
        );
    }

    #[test]
    fn null_is_a_wrong_type_except_for_the_timestamp() {
        use FieldType::{Null, Object};
        let kinds = |problems: Vec<ValidationError>| -> Vec<String> {
            problems.into_iter().map(|e| e.kind).collect()
        };
        assert_eq!(kinds(publish_problems(Null, Object, Null)), ["string_type"]);
        assert_eq!(
            kinds(publish_problems(FieldType::String, Null, Null)),
            ["dict_type"]
        );
        assert!(publish_problems(FieldType::String, Object, Null).is_empty());
    }

    #[test]
    fn problems_by_type_match_the_parsed_checks() {
        let values = [
            None,
            Some(Value::Null),
            Some(Value::from("s")),
            Some(serde_json::json!({})),
            Some(Value::from(1)),
            Some(serde_json::json!([])),
        ];
        for event_type in &values {
            for data in &values {
                for timestamp in &values {
                    let mut fields = EventData::new();
                    let named = [
                        (field::EVENT_TYPE, event_type),
                        (field::DATA, data),
                        (field::TIMESTAMP, timestamp),
                    ];
                    for (name, value) in named {
                        if let Some(value) = value {
                            fields.insert(name.into(), value.clone());
                        }
                    }
                    let by_type = publish_problems(
                        FieldType::of(event_type.as_ref()),
                        FieldType::of(data.as_ref()),
                        FieldType::of(timestamp.as_ref()),
                    );
                    match PublishRequest::from_fields(fields) {
                        Ok(_) => assert!(by_type.is_empty()),
                        Err(parsed) => {
                            assert!(!parsed.is_empty());
                            assert_eq!(parsed, by_type);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn malformed_json_points_at_the_offset() {
        let found = kinds("{\n \"event_type\": }");
        assert_eq!(found[0].0, vec![Loc::from("body"), Loc::Index(17)]);
        assert_eq!(found[0].1, "json_invalid");
    }

    #[test]
    fn batches_report_problems_inside_events_and_bound_their_length() {
        let body = br#"{"events":[{"event_type":"a","data":{}},{"event_type":1,"data":[]},7]}"#;
        let problems = BatchRequest::from_slice(body, 10).expect_err("invalid");
        let locs: Vec<Vec<Loc>> = problems.into_iter().map(|e| e.loc).collect();
        let at = |i: u64, rest: Option<&str>| {
            let mut loc = vec![Loc::from("body"), Loc::from("events"), Loc::Index(i)];
            loc.extend(rest.map(Loc::from));
            loc
        };
        assert_eq!(
            locs,
            vec![at(1, Some("event_type")), at(1, Some("data")), at(2, None)]
        );
        let ok = br#"{"events":[{"event_type":"a","data":{}},{"event_type":"b","data":{"x":1}}]}"#;
        assert_eq!(
            BatchRequest::from_slice(ok, 10)
                .expect("valid")
                .events
                .len(),
            2
        );
        let too_long = BatchRequest::from_slice(ok, 1).expect_err("too long");
        assert_eq!(too_long[0].kind, "too_long");
        let empty = BatchRequest::from_slice(br#"{"events":[]}"#, 1).expect_err("empty");
        assert_eq!(empty[0].kind, "too_short");
        let missing = BatchRequest::from_slice(b"{}", 1).expect_err("missing");
        assert_eq!(missing[0].kind, "missing");
    }

    #[test]
    fn execution_ids_are_bounded_and_printable() {
        assert!(validate_execution_id("exec-1").is_ok());
        assert!(validate_execution_id("").is_err());
        assert!(validate_execution_id("a\u{7}b").is_err());
        assert!(validate_execution_id(&"x".repeat(257)).is_err());
        assert!(validate_execution_id(&"x".repeat(256)).is_ok());
        assert!(validate_execution_id("a{b").is_err());
        assert!(validate_execution_id("x:events}:seq").is_err());
        assert!(is_idempotency_key("job-1:retry"));
        assert!(!is_idempotency_key("has space"));
        assert!(!is_idempotency_key(""));
        assert!(!is_idempotency_key("é"));
    }
}

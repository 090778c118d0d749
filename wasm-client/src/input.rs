//! What the application asks to publish, checked with the hub's own rules
//! before anything is sent: each event's fields become the JSON object the
//! hub would receive, and `exechub-protocol` validates it
//! (`PublishRequest::from_fields`, `BatchRequest::from_value`), so a bad
//! publish fails locally with the very `detail` a 422 would carry.

use exechub_protocol::names::field;
use exechub_protocol::{BatchRequest, EventData, PublishRequest};
use js_sys::{Array, Reflect};
use serde_json::Value;
use wasm_bindgen::{JsCast, JsValue};

use crate::error::ClientError;
use crate::wire::from_js;

/// One event's fields as the application gave them; `None` when absent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFields {
    /// `eventType`.
    pub event_type: Option<Value>,
    /// `data`.
    pub data: Option<Value>,
    /// `timestamp`.
    pub timestamp: Option<Value>,
}

impl EventFields {
    /// The object the hub would receive, under the wire's names.
    pub fn into_wire(self) -> Value {
        let mut fields = EventData::new();
        let named = [
            (field::EVENT_TYPE, self.event_type),
            (field::DATA, self.data),
            (field::TIMESTAMP, self.timestamp),
        ];
        for (name, value) in named {
            if let Some(value) = value {
                fields.insert(name.to_owned(), value);
            }
        }
        Value::Object(fields)
    }
}

/// One event, validated as the hub validates a publish.
///
/// # Errors
/// `invalid_request` with every problem, located as in a 422.
pub fn event(fields: EventFields) -> Result<PublishRequest, ClientError> {
    let Value::Object(fields) = fields.into_wire() else {
        unreachable!("into_wire makes an object")
    };
    PublishRequest::from_fields(fields).map_err(ClientError::invalid)
}

/// A batch, validated as the hub validates one: `events` is the list of
/// wire objects (or whatever the application passed instead of a list).
/// The hub's own maximum length (`--max-batch-events`) is left to the hub.
///
/// # Errors
/// `invalid_request` with every problem, `loc` pointing into the batch.
pub fn batch(events: Value) -> Result<Vec<PublishRequest>, ClientError> {
    BatchRequest::from_value(Some(events), usize::MAX)
        .map(|batch| batch.events)
        .map_err(ClientError::invalid)
}

/// A JavaScript value as JSON, e.g. an event's `data`.
///
/// # Errors
/// [`ClientError::InvalidArgument`] for what JSON cannot hold (a function, a
/// symbol, a `BigInt` beyond 64 bits).
pub fn json(value: JsValue, what: &str) -> Result<Value, ClientError> {
    from_js(value, what)
}

/// The wire object for a JavaScript `NewEvent` (`{eventType, data,
/// timestamp?}`); a value that is not an object is passed on as it is, for
/// the hub's rules to refuse.
///
/// # Errors
/// As [`json`].
pub fn event_from_js(event: JsValue) -> Result<Value, ClientError> {
    if !event.is_object() || Array::is_array(&event) {
        return json(event, "event");
    }
    let field = |name: &str| -> Result<Option<Value>, ClientError> {
        let value = Reflect::get(&event, &JsValue::from_str(name)).unwrap_or_default();
        match value.is_undefined() {
            true => Ok(None),
            false => json(value, name).map(Some),
        }
    };
    let fields = EventFields {
        event_type: field("eventType")?,
        data: field("data")?,
        timestamp: field("timestamp")?,
    };
    Ok(fields.into_wire())
}

/// The wire list for a JavaScript `NewEvent[]`; anything else is passed on
/// as it is, for the hub's rules to refuse.
///
/// # Errors
/// As [`json`].
pub fn events_from_js(events: JsValue) -> Result<Value, ClientError> {
    match events.dyn_into::<Array>() {
        Ok(list) => list
            .iter()
            .map(event_from_js)
            .collect::<Result<_, _>>()
            .map(Value::Array),
        Err(other) => json(other, "events"),
    }
}

#[cfg(test)]
mod tests {
    use exechub_protocol::{Loc, ValidationError};
    use serde_json::json;

    use super::*;

    fn detail(error: ClientError) -> Vec<ValidationError> {
        match error {
            ClientError::Hub {
                detail: Some(detail),
                ..
            } => detail,
            other => panic!("not invalid_request: {other:?}"),
        }
    }

    #[test]
    fn an_event_fails_locally_exactly_as_the_hub_would_refuse_it() {
        let fields = EventFields {
            event_type: Some(json!(5)),
            data: Some(json!([1, 2])),
            timestamp: None,
        };
        let local = detail(event(fields).expect_err("invalid"));
        let hub = PublishRequest::from_slice(br#"{"event_type":5,"data":[1,2]}"#)
            .expect_err("the hub refuses it too");
        assert_eq!(local, hub);
        let missing = detail(event(EventFields::default()).expect_err("empty"));
        assert_eq!(missing.len(), 2);
    }

    #[test]
    fn a_valid_event_keeps_its_payload_and_timestamp() {
        let fields = EventFields {
            event_type: Some(json!("tool_started")),
            data: Some(json!({"tool": "grep", "n": [1, 2.5, null]})),
            timestamp: Some(json!("2026-11-28T14:03:07Z")),
        };
        let request = event(fields).expect("valid");
        assert_eq!(request.data["n"], json!([1, 2.5, null]));
        assert_eq!(request.timestamp.as_deref(), Some("2026-11-28T14:03:07Z"));
    }

    #[test]
    fn a_batch_is_checked_whole_with_each_problem_located_in_it() {
        let good = EventFields {
            event_type: Some(json!("a")),
            data: Some(json!({})),
            timestamp: None,
        };
        let bad = EventFields {
            data: Some(json!("text")),
            ..good.clone()
        };
        let events = json!([good.clone().into_wire(), bad.into_wire(), 7]);
        let problems = detail(batch(events).expect_err("invalid"));
        let locs: Vec<Vec<Loc>> = problems.into_iter().map(|p| p.loc).collect();
        let at = |i: u64, rest: Option<&str>| {
            let mut loc = vec![Loc::from("body"), Loc::from("events"), Loc::Index(i)];
            loc.extend(rest.map(Loc::from));
            loc
        };
        assert_eq!(locs, [at(1, Some("data")), at(2, None)]);
        assert_eq!(batch(json!([good.into_wire()])).expect("valid").len(), 1);
        let kind = |events| detail(batch(events).expect_err("invalid"))[0].kind.clone();
        assert_eq!(kind(json!([])), "too_short");
        assert_eq!(kind(json!({"not": "a list"})), "list_type");
    }

    #[test]
    fn batches_of_any_length_are_left_to_the_hubs_limit() {
        let one = EventFields {
            event_type: Some(json!("a")),
            data: Some(json!({})),
            timestamp: None,
        };
        let many = Value::Array(vec![one.into_wire(); 5000]);
        assert_eq!(batch(many).expect("the hub decides").len(), 5000);
    }
}

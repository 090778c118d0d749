//! Publish bodies, read the quick way when they allow it.
//!
//! Most publishes are well-formed. For them the hub reads `event_type` and
//! `timestamp` and keeps `data` as the bytes it came as (without the
//! whitespace between tokens), instead of building a JSON tree and writing
//! it out again: in a batch of 100 events that tree was most of the hub's
//! CPU. Anything the quick reader does not take — malformed JSON, a field of
//! the wrong type, a duplicate field, a `\u` escape or a number beyond a
//! double's range in `data`, a byte order mark, a batch of the wrong size —
//! goes the validating way
//! ([`PublishRequest::from_slice`], [`BatchRequest::from_slice`]), which
//! reports every problem as FastAPI would. So what is accepted, and every
//! error, is the same either way; `data` keeps the publisher's key order and
//! number spelling on the quick way (the validating way writes keys sorted).

use std::borrow::Cow;

use exechub_protocol::{BatchRequest, PublishRequest, ValidationError};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Arrival, NewBatch, NewEvent, now_rfc3339};

/// A publish read without a tree: `data` is the raw JSON object it came as.
#[derive(Deserialize)]
pub struct RawPublish<'a> {
    #[serde(borrow)]
    event_type: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default)]
    timestamp: Option<String>,
}

impl RawPublish<'_> {
    /// Whether `data` can be kept as it came: an object, without `\u`
    /// escapes (the validating way decodes them, and refuses lone
    /// surrogates) and without numbers too large for a double (which the
    /// validating way refuses).
    fn plain(&self) -> bool {
        let data = self.data.get().as_bytes();
        data.starts_with(b"{") && plain_tokens(data)
    }

    fn encode(&self, execution_id: String, timestamp: String) -> NewEvent {
        let data = self.data.get().as_bytes();
        let mut tail = Vec::with_capacity(
            64 + execution_id.len() + self.event_type.len() + timestamp.len() + data.len(),
        );
        // Writing a string to a Vec cannot fail. The fields are in the order
        // `NewEvent::encode` writes them.
        tail.extend_from_slice(br#","execution_id":"#);
        let _ = serde_json::to_writer(&mut tail, &execution_id);
        tail.extend_from_slice(br#","event_type":"#);
        let _ = serde_json::to_writer(&mut tail, &*self.event_type);
        tail.extend_from_slice(br#","timestamp":"#);
        let _ = serde_json::to_writer(&mut tail, &timestamp);
        tail.extend_from_slice(br#","data":"#);
        minify_into(&mut tail, data);
        tail.push(b'}');
        NewEvent::from_parts(execution_id, timestamp, tail)
    }
}

#[derive(Deserialize)]
struct RawBatch<'a> {
    #[serde(borrow)]
    events: Vec<RawPublish<'a>>,
}

/// A validated single publish.
pub enum PublishBody<'a> {
    /// Read the quick way.
    Raw(Box<RawPublish<'a>>),
    /// Read the validating way.
    Parsed(PublishRequest),
}

impl<'a> PublishBody<'a> {
    /// Reads and validates a publish body.
    ///
    /// # Errors
    /// Every problem, as [`PublishRequest::from_slice`] reports them.
    pub fn read(body: &'a [u8]) -> Result<Self, Vec<ValidationError>> {
        match serde_json::from_slice::<RawPublish<'a>>(body) {
            Ok(raw) if raw.plain() => Ok(Self::Raw(Box::new(raw))),
            _ => PublishRequest::from_slice(body).map(Self::Parsed),
        }
    }

    /// The event, stamped with the current time when it has no timestamp.
    pub fn encode(&self, execution_id: String) -> NewEvent {
        match self {
            Self::Raw(raw) => {
                let timestamp = raw.timestamp.clone().unwrap_or_else(now_rfc3339);
                raw.encode(execution_id, timestamp)
            }
            Self::Parsed(request) => NewEvent::encode(execution_id, request),
        }
    }
}

/// A validated batch publish.
pub enum BatchBody<'a> {
    /// Read the quick way.
    Raw(Vec<RawPublish<'a>>),
    /// Read the validating way.
    Parsed(BatchRequest),
}

impl<'a> BatchBody<'a> {
    /// Reads and validates a batch body of 1 to `max_events` events.
    ///
    /// # Errors
    /// Every problem, as [`BatchRequest::from_slice`] reports them.
    pub fn read(body: &'a [u8], max_events: usize) -> Result<Self, Vec<ValidationError>> {
        match serde_json::from_slice::<RawBatch<'a>>(body) {
            Ok(RawBatch { events })
                if (1..=max_events).contains(&events.len())
                    && events.iter().all(RawPublish::plain) =>
            {
                Ok(Self::Raw(events))
            }
            _ => BatchRequest::from_slice(body, max_events).map(Self::Parsed),
        }
    }

    /// How many events the batch holds.
    pub fn len(&self) -> usize {
        match self {
            Self::Raw(events) => events.len(),
            Self::Parsed(batch) => batch.events.len(),
        }
    }

    /// Whether the batch is empty (never, once read).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The events, in order; those without a timestamp share the batch's
    /// arrival time.
    pub fn encode(&self, execution_id: String) -> NewBatch {
        match self {
            Self::Raw(events) => {
                let mut arrival = Arrival::default();
                let events = events
                    .iter()
                    .map(|raw| {
                        raw.encode(execution_id.clone(), arrival.stamp(raw.timestamp.as_ref()))
                    })
                    .collect();
                NewBatch::from_events(execution_id, events)
            }
            Self::Parsed(batch) => NewBatch::encode(execution_id, &batch.events),
        }
    }
}

/// Whether valid JSON `json` has no `\u` escape and no number beyond a
/// double's range.
fn plain_tokens(json: &[u8]) -> bool {
    let (mut in_string, mut escaped) = (false, false);
    let mut i = 0;
    while let Some(&byte) = json.get(i) {
        i += 1;
        if in_string {
            if escaped {
                if byte == b'u' {
                    return false;
                }
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
        } else if byte == b'"' {
            in_string = true;
        } else if byte == b'-' || byte.is_ascii_digit() {
            let start = i - 1;
            while json
                .get(i)
                .is_some_and(|b| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
            {
                i += 1;
            }
            let number = &json[start..i];
            // Only a long mantissa or an exponent can leave a double's range.
            let large = number.len() > 15 || number.iter().any(|b| matches!(b, b'e' | b'E'));
            let fits = || {
                std::str::from_utf8(number)
                    .ok()
                    .and_then(|text| text.parse::<f64>().ok())
                    .is_some_and(f64::is_finite)
            };
            if large && !fits() {
                return false;
            }
        }
    }
    true
}

/// Appends `json` (valid JSON) without the whitespace between its tokens,
/// so a stored event is one line, as the validating way writes it.
fn minify_into(out: &mut Vec<u8>, json: &[u8]) {
    let (mut in_string, mut escaped) = (false, false);
    for &byte in json {
        if in_string {
            out.push(byte);
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
        } else if !matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
            in_string = byte == b'"';
            out.push(byte);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn stored(event: &NewEvent) -> Value {
        let mut json = br#"{"seq":1"#.to_vec();
        json.extend_from_slice(event.tail());
        serde_json::from_slice(&json).expect("the tail completes a JSON object")
    }

    #[test]
    fn both_ways_store_the_same_event() {
        let bodies: [&[u8]; 5] = [
            br#"{"event_type":"log","data":{"line":"hi","n":3},"timestamp":"2026-01-01T00:00:00Z"}"#,
            b"{ \"data\" : {\n  \"b\": [1, 2, {\"c\": null}],\n  \"a\": \"x y\\\"z\\\\\"\n}, \"event_type\": \"t\\n\\\"q\\\"\", \"extra\": 1, \"timestamp\": \"2026-01-01T00:00:00Z\" }",
            br#"{"event_type":"t","data":{},"timestamp":"2026-01-01T00:00:00Z"}"#,
            br#"{"event_type":"t","data":{"s":"\u00e9"},"timestamp":"2026-01-01T00:00:00Z"}"#,
            br#"{"event_type":"t","data":{"a":1},"data":{"b":2},"timestamp":"2026-01-01T00:00:00Z"}"#,
        ];
        for body in &bodies[..3] {
            assert!(matches!(PublishBody::read(body), Ok(PublishBody::Raw(_))));
        }
        for body in bodies {
            let quick = PublishBody::read(body).map(|b| b.encode("e".into()));
            let request = PublishRequest::from_slice(body);
            let slow = request.as_ref().map(|r| NewEvent::encode("e".into(), r));
            match (quick, slow) {
                (Ok(quick), Ok(slow)) => {
                    assert_eq!(
                        stored(&quick),
                        stored(&slow),
                        "{}",
                        String::from_utf8_lossy(body)
                    );
                    assert!(!quick.tail().contains(&b'\n'));
                }
                (Err(quick), Err(slow)) => assert_eq!(&quick, slow),
                (quick, slow) => panic!("{quick:?} vs {slow:?}"),
            }
        }
    }

    #[test]
    fn what_the_quick_way_refuses_gets_the_validating_ways_errors() {
        let bodies: [&[u8]; 9] = [
            b"",
            b"[]",
            br#"{"event_type":1,"data":[]}"#,
            br#"{"event_type":"t","data":{"s":"\ud800"}}"#,
            br#"{"event_type":"t","data":{"x":[1e400]}}"#,
            br#"{"event_type":"t","data":{"x":-1000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000}}"#,
            br#"{"event_type":"t","data":{"x":1e-400,"y":12345678901234567890,"z":-2.5E+3}}"#,
            b"\xEF\xBB\xBF{\"event_type\":\"t\",\"data\":{}}",
            br#"{"event_type":"t","data":{}} x"#,
        ];
        for body in bodies {
            let quick = PublishBody::read(body).map(|b| b.encode("e".into()).tail().clone());
            let slow = PublishRequest::from_slice(body)
                .map(|r| NewEvent::encode("e".into(), &r).tail().clone());
            match (quick, slow) {
                (Ok(_), Ok(_)) => {}
                (quick, slow) => assert_eq!(quick, slow, "{}", String::from_utf8_lossy(body)),
            }
        }
    }

    #[test]
    fn a_batch_is_read_quickly_only_within_its_size() {
        let batch = |n: usize| {
            let events = vec![r#"{"event_type":"t","data":{"n":1}}"#; n].join(",");
            format!(r#"{{"events":[{events}]}}"#).into_bytes()
        };
        assert!(matches!(
            BatchBody::read(&batch(3), 3),
            Ok(BatchBody::Raw(_))
        ));
        assert!(BatchBody::read(&batch(4), 3).is_err());
        assert!(BatchBody::read(&batch(0), 3).is_err());
        let encoded = BatchBody::read(&batch(3), 3)
            .expect("valid")
            .encode("e".into());
        let stamps: Vec<&str> = encoded.events().iter().map(NewEvent::timestamp).collect();
        assert!(stamps.windows(2).all(|w| w[0] == w[1]), "{stamps:?}");
    }

    #[test]
    fn minifying_keeps_strings_whole() {
        let mut out = Vec::new();
        minify_into(
            &mut out,
            b"{ \"a b\" : [ 1 ,\t\"\\\" }\" ],\r\n\"c\":\"\\\\\" }",
        );
        assert_eq!(out, br#"{"a b":[1,"\" }"],"c":"\\"}"#);
    }
}

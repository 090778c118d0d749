//! Publish bodies, read the quick way when they allow it.
//!
//! Most publishes are well-formed. For them the hub reads `event_type` and
//! `timestamp` and keeps `data` as the bytes it came as (without the
//! whitespace between tokens), instead of building a JSON tree and writing
//! it out again: in a batch of 100 events that tree was most of the hub's
//! CPU. Anything the quick reader does not take goes the validating way
//! ([`PublishRequest::from_slice`], [`BatchRequest::from_slice`]), which
//! reports every problem as FastAPI would: malformed JSON or UTF-8, a body
//! or event that is not an object, a field of the wrong type, a duplicate
//! field, a byte order mark, a batch of the wrong size, and — anywhere in
//! the body — a `\u` escape, a number beyond a double's range or nesting
//! deeper than 100. So what is accepted, and every error, is the same either
//! way (the fuzz target `publish_body` checks it); `data` keeps the
//! publisher's key order and number spelling on the quick way (the
//! validating way writes keys sorted).

use std::borrow::Cow;
use std::fmt;

use exechub_protocol::{BatchRequest, PublishRequest, ValidationError};
use serde::Deserialize;
use serde::de::{self, Deserializer, Error as _, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::clock::now_rfc3339;
use crate::event::{Arrival, NewBatch, NewEvent};

/// A publish read without a tree: `data` is the raw JSON object it came as.
/// Read from a JSON object only (a derived `Deserialize` would also take an
/// array of the fields, which the validating way refuses).
pub struct RawPublish<'a> {
    event_type: Cow<'a, str>,
    data: &'a RawValue,
    timestamp: Option<String>,
}

impl<'de> Deserialize<'de> for RawPublish<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(PublishFields)
    }
}

/// Reads the fields of a [`RawPublish`]; others are skipped, a repeated one
/// is an error (the validating way decides about it).
struct PublishFields;

impl<'de> Visitor<'de> for PublishFields {
    type Value = RawPublish<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a publish object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut fields = EventFields::default();
        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            if !fields.take(&key, &mut map)? {
                map.next_value::<IgnoredAny>()?;
            }
        }
        fields
            .finish()
            .ok_or_else(|| M::Error::custom("`event_type` or `data` missing"))
    }
}

/// An event's fields (`event_type`, `data`, `timestamp`) as a map's keys
/// come: shared by the body's reader and the WebSocket frame's
/// ([`super::frame`]), whose other keys are its own.
#[derive(Default)]
pub(super) struct EventFields<'a> {
    event_type: Option<Cow<'a, str>>,
    data: Option<&'a RawValue>,
    timestamp: Option<Option<String>>,
}

impl<'de> EventFields<'de> {
    /// Reads the value of `key` when it is an event field (a repeated one is
    /// an error); `false` for any other key, whose value is left unread.
    pub(super) fn take<M: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut M,
    ) -> Result<bool, M::Error> {
        match key {
            "event_type" if self.event_type.is_none() => {
                self.event_type = Some(map.next_value::<Text<'de>>()?.0);
            }
            "data" if self.data.is_none() => self.data = Some(map.next_value()?),
            "timestamp" if self.timestamp.is_none() => self.timestamp = Some(map.next_value()?),
            "event_type" | "data" | "timestamp" => {
                return Err(M::Error::custom(format_args!("duplicate field `{key}`")));
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Whether any event field came.
    pub(super) fn any(&self) -> bool {
        self.event_type.is_some() || self.data.is_some() || self.timestamp.is_some()
    }

    /// The event, when both `event_type` and `data` came.
    pub(super) fn finish(self) -> Option<RawPublish<'de>> {
        Some(RawPublish {
            event_type: self.event_type?,
            data: self.data?,
            timestamp: self.timestamp.flatten(),
        })
    }
}

/// A JSON string, borrowed from the input when it has no escapes.
pub(super) struct Text<'a>(pub(super) Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(text)))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(text.to_owned())))
            }
            fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(text)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

impl RawPublish<'_> {
    /// Whether `data` is an object (the body as a whole passed [`plain_tokens`]).
    pub(super) fn plain(&self) -> bool {
        self.data.get().starts_with('{')
    }

    fn encode(&self, execution_id: String, timestamp: String) -> NewEvent {
        let data = self.data.get().as_bytes();
        NewEvent::from_fields(
            execution_id,
            &self.event_type,
            timestamp,
            data.len(),
            |out| {
                minify_into(out, data);
            },
        )
    }
}

/// A batch read without a tree: its `events`, each a [`RawPublish`].
struct RawBatch<'a> {
    events: Vec<RawPublish<'a>>,
}

impl<'de> Deserialize<'de> for RawBatch<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BatchFields;
        impl<'de> Visitor<'de> for BatchFields {
            type Value = RawBatch<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a batch object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut events = None;
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    match (&*key, &events) {
                        ("events", None) => events = Some(map.next_value()?),
                        ("events", Some(_)) => return Err(M::Error::duplicate_field("events")),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                let events = events.ok_or_else(|| M::Error::missing_field("events"))?;
                Ok(RawBatch { events })
            }
        }
        deserializer.deserialize_map(BatchFields)
    }
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
        match quick::<RawPublish<'a>>(body) {
            Some(raw) if raw.plain() => Ok(Self::Raw(Box::new(raw))),
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
        match quick::<RawBatch<'a>>(body) {
            Some(RawBatch { events })
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

/// `body` read the quick way, if it can be: UTF-8 throughout (the quick
/// parse does not check the strings it skips; the validating way refuses
/// invalid UTF-8 anywhere) and [`plain_tokens`].
pub(super) fn quick<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Option<T> {
    let text = std::str::from_utf8(body).ok()?;
    if !plain_tokens(body) {
        return None;
    }
    serde_json::from_str(text).ok()
}

/// A body nested deeper than this goes the validating way, which refuses
/// one nested beyond serde_json's recursion limit (128).
const MAX_QUICK_DEPTH: usize = 100;

/// Whether a body may be read the quick way: no `\u` escape (the validating
/// way decodes them, and refuses lone surrogates), no number beyond a
/// double's range and no nesting deeper than [`MAX_QUICK_DEPTH`] (both of
/// which the validating way refuses, in any field, even one it ignores).
/// Malformed JSON passes here and fails the quick parse.
fn plain_tokens(json: &[u8]) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&byte) = json.get(i) {
        i += 1;
        match byte {
            b'"' => match string_end(json, i) {
                Some((_, true)) => return false,
                Some((end, false)) => i = end,
                // Malformed: the quick parse refuses it.
                None => return true,
            },
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_QUICK_DEPTH {
                    return false;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'-' | b'0'..=b'9' => {
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
            _ => {}
        }
    }
    true
}

/// Where the JSON string whose contents start at `json[start]` ends (just
/// past its closing quote), and whether it holds a `\u` escape; `None` when
/// it runs to the end of the input. Only `\` and `"` matter inside a
/// string, so the scan jumps from one to the next (`memchr`), not byte by byte.
fn string_end(json: &[u8], mut start: usize) -> Option<(usize, bool)> {
    let mut unicode = false;
    loop {
        let rest = json.get(start..)?;
        let at = memchr::memchr2(b'"', b'\\', rest)?;
        start += at + 1;
        if rest[at] == b'"' {
            return Some((start, unicode));
        }
        // An escape: the next byte is escaped (`u` starts a code point).
        unicode |= *json.get(start)? == b'u';
        start += 1;
    }
}

/// Appends `json` (valid JSON) without the whitespace between its tokens,
/// so a stored event is one line, as the validating way writes it.
fn minify_into(out: &mut Vec<u8>, json: &[u8]) {
    let mut i = 0;
    while let Some(&byte) = json.get(i) {
        if byte == b'"' {
            // A string is copied whole.
            let end = string_end(json, i + 1).map_or(json.len(), |(end, _)| end);
            out.extend_from_slice(&json[i..end]);
            i = end;
        } else {
            if !matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
                out.push(byte);
            }
            i += 1;
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
        // Nested past serde_json's recursion limit (valid JSON otherwise).
        let deep = format!(
            r#"{{"event_type":"t","data":{{"x":{}{}}}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(
            !PublishBody::read(deep.as_bytes()).is_ok_and(|b| matches!(b, PublishBody::Raw(_)))
        );
        let bodies: [&[u8]; 12] = [
            b"",
            b"[]",
            br#"["t",{"a":1}]"#,
            br#"{"events":[["t",{"a":1}]]}"#,
            br#"{"event_type":1,"data":[]}"#,
            br#"{"event_type":"t","data":{"s":"\ud800"}}"#,
            br#"{"event_type":"t","data":{"x":[1e400]}}"#,
            deep.as_bytes(),
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
        for body in [
            &br#"{"events":[["t",{"n":1}]]}"#[..],
            br#"[[{"event_type":"t","data":{}}]]"#,
        ] {
            let quick = BatchBody::read(body, 3).err();
            let slow = BatchRequest::from_slice(body, 3).err();
            assert!(quick.is_some() && quick == slow, "{quick:?} vs {slow:?}");
        }
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

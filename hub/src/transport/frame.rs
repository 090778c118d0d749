//! WebSocket `publish` frames, read the quick way when they allow it.
//!
//! The same idea as [`super::body`], for the frames workers publish with
//! over a WebSocket: a well-formed `publish` (one event, or a batch in
//! `events`) is read without a JSON tree, its `data` kept as sent. Anything
//! else — another op, a field of the wrong type, a duplicate field, an
//! invalid execution id or idempotency key, and whatever the body's quick
//! reader refuses — reads as `None`, and the frame goes to
//! [`ClientMsg::decode_limited`](exechub_protocol::ClientMsg::decode_limited),
//! which decides and reports every problem. So what is accepted, and every
//! answer, is the same either way (the fuzz target `ws_frame` checks it).

use std::fmt;

use exechub_protocol::ws::MAX_REQUEST_ID_BYTES;
use exechub_protocol::{RequestId, is_idempotency_key, validate_execution_id};
use serde::Deserialize;
use serde::de::{self, Deserializer, Error as _, IgnoredAny, MapAccess, Visitor};

use super::body::{BatchBody, EventFields, PublishBody, RawPublish, Text, quick};

/// A `publish` frame read the quick way.
pub struct PublishFrame<'a> {
    /// The request id, echoed in the answer.
    pub id: Option<RequestId>,
    /// The execution published to (valid).
    pub execution_id: String,
    /// The publisher's idempotency key (valid), if any.
    pub idempotency_key: Option<String>,
    /// The event, or the batch.
    pub events: FrameEvents<'a>,
}

/// What a `publish` frame carries.
pub enum FrameEvents<'a> {
    /// One event (`event_type`, `data`, `timestamp`).
    One(PublishBody<'a>),
    /// A batch (`events`).
    Batch(BatchBody<'a>),
}

impl FrameEvents<'_> {
    /// How many events.
    pub fn len(&self) -> usize {
        match self {
            Self::One(_) => 1,
            Self::Batch(batch) => batch.len(),
        }
    }

    /// Whether there are none (never, once read).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<'a> PublishFrame<'a> {
    /// `text` read as a valid `publish` of at most `max_events` events, or
    /// `None`: then [`ClientMsg::decode_limited`](exechub_protocol::ClientMsg::decode_limited)
    /// reads it (another op, or a frame to refuse or to read the validating way).
    pub fn read(text: &'a str, max_events: usize) -> Option<Self> {
        let fields = quick::<FrameFields<'a>>(text.as_bytes())?;
        let events = match (fields.events, fields.event) {
            (Some(events), None)
                if (1..=max_events).contains(&events.len())
                    && events.iter().all(RawPublish::plain) =>
            {
                FrameEvents::Batch(BatchBody::Raw(events))
            }
            (None, Some(Some(event))) if event.plain() => {
                FrameEvents::One(PublishBody::Raw(Box::new(event)))
            }
            _ => return None,
        };
        Some(Self {
            id: fields.id,
            execution_id: fields.execution_id,
            idempotency_key: fields.idempotency_key,
            events,
        })
    }
}

/// The fields of a `publish` frame, each valid: a frame with anything else
/// to say about them fails to read (and goes the validating way).
struct FrameFields<'a> {
    id: Option<RequestId>,
    execution_id: String,
    idempotency_key: Option<String>,
    /// `events`, for a batch.
    events: Option<Vec<RawPublish<'a>>>,
    /// For one event: `None` when it has no event field, `Some(None)` when
    /// it lacks `event_type` or `data`.
    event: Option<Option<RawPublish<'a>>>,
}

impl<'de> Deserialize<'de> for FrameFields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FrameVisitor)
    }
}

struct FrameVisitor;

impl<'de> Visitor<'de> for FrameVisitor {
    type Value = FrameFields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a publish frame")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut op = None;
        let mut id = None;
        let mut execution_id = None;
        let mut idempotency_key = None;
        let mut events = None;
        let mut event = EventFields::default();
        let taken = |key: &str| M::Error::custom(format_args!("duplicate or invalid `{key}`"));
        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            match &*key {
                "op" if op.is_none() => {
                    let value = map.next_value::<Text<'de>>()?.0;
                    // Other frames (subscribe, ping…) stop here when `op` comes
                    // first, as clients send it: they go the validating way.
                    if value != "publish" {
                        return Err(M::Error::custom("not a publish"));
                    }
                    op = Some(value);
                }
                "id" if id.is_none() => id = Some(map.next_value::<FrameId>()?.0),
                "execution_id" if execution_id.is_none() => {
                    let value = map.next_value::<Text<'de>>()?.0;
                    validate_execution_id(&value).map_err(|_| taken("execution_id"))?;
                    execution_id = Some(value.into_owned());
                }
                "idempotency_key" if idempotency_key.is_none() => {
                    let value = map.next_value::<Option<Text<'de>>>()?;
                    if value
                        .as_ref()
                        .is_some_and(|key| !is_idempotency_key(&key.0))
                    {
                        return Err(taken("idempotency_key"));
                    }
                    idempotency_key = Some(value.map(|key| key.0.into_owned()));
                }
                "events" if events.is_none() => events = Some(map.next_value()?),
                "op" | "id" | "execution_id" | "idempotency_key" | "events" => {
                    return Err(taken(&key));
                }
                other => {
                    if !event.take(other, &mut map)? {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
        }
        if op.as_deref() != Some("publish") {
            return Err(M::Error::custom("not a publish"));
        }
        Ok(FrameFields {
            id: id.flatten(),
            execution_id: execution_id.ok_or_else(|| M::Error::missing_field("execution_id"))?,
            idempotency_key: idempotency_key.flatten(),
            events,
            event: event.any().then(|| event.finish()),
        })
    }
}

/// A frame's `id`: `null`, a string of at most [`MAX_REQUEST_ID_BYTES`], or
/// a non-negative integer.
struct FrameId(Option<RequestId>);

impl<'de> Deserialize<'de> for FrameId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl<'de> Visitor<'de> for IdVisitor {
            type Value = FrameId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a request id")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(FrameId(None))
            }
            fn visit_u64<E: de::Error>(self, id: u64) -> Result<Self::Value, E> {
                Ok(FrameId(Some(RequestId::Num(id))))
            }
            fn visit_str<E: de::Error>(self, id: &str) -> Result<Self::Value, E> {
                if id.len() > MAX_REQUEST_ID_BYTES {
                    return Err(E::custom("request id too long"));
                }
                Ok(FrameId(Some(RequestId::Str(id.to_owned()))))
            }
        }
        deserializer.deserialize_any(IdVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::NewEvent;
    use exechub_protocol::ClientMsg;
    use serde_json::Value;

    fn stored(event: &NewEvent) -> Value {
        let mut json = br#"{"seq":1"#.to_vec();
        json.extend_from_slice(event.tail());
        serde_json::from_slice(&json).expect("a stored event is JSON")
    }

    #[test]
    fn a_publish_reads_as_the_validating_way_reads_it() {
        let frames = [
            r#"{"op":"publish","id":7,"execution_id":"e-1","event_type":"log","data":{"b":1,"a":[true,null]},"timestamp":"2026-01-01T00:00:00Z"}"#,
            r#"{"execution_id":"e","data":{ "x" : "y\"z" },"idempotency_key":"k-1","event_type":"t","op":"publish","id":"req","extra":[1,2]}"#,
            r#"{"op":"publish","id":null,"execution_id":"e","event_type":"t","data":{},"timestamp":null,"idempotency_key":null}"#,
        ];
        for text in frames {
            let quick = PublishFrame::read(text, 10).expect("read the quick way");
            let Ok(ClientMsg::Publish {
                id,
                execution_id,
                event,
                idempotency_key,
            }) = ClientMsg::decode_limited(text, 10)
            else {
                panic!("the validating way refuses {text}");
            };
            assert_eq!(
                (&quick.id, &quick.execution_id, &quick.idempotency_key),
                (&id, &execution_id, &idempotency_key)
            );
            let FrameEvents::One(body) = quick.events else {
                panic!("not one event: {text}");
            };
            let (quick, slow) = (
                body.encode(execution_id.clone()),
                NewEvent::encode(execution_id, &event),
            );
            if event.timestamp.is_some() {
                assert_eq!(stored(&quick), stored(&slow), "{text}");
            } else {
                assert_eq!(stored(&quick)["data"], stored(&slow)["data"], "{text}");
            }
        }
    }

    #[test]
    fn a_batch_reads_within_its_size() {
        let text = r#"{"op":"publish","execution_id":"e","events":[{"event_type":"a","data":{}},{"event_type":"b","data":{"n":2}}]}"#;
        let frame = PublishFrame::read(text, 2).expect("read the quick way");
        assert_eq!(frame.events.len(), 2);
        assert!(matches!(frame.events, FrameEvents::Batch(_)));
        assert!(PublishFrame::read(text, 1).is_none());
    }

    #[test]
    fn anything_else_goes_the_validating_way() {
        let frames = [
            // Other ops, or none.
            r#"{"op":"subscribe","execution_id":"e"}"#,
            r#"{"execution_id":"e","event_type":"t","data":{}}"#,
            // Problems the validating way reports.
            r#"{"op":"publish","execution_id":"e","event_type":"t","data":[]}"#,
            r#"{"op":"publish","execution_id":"","event_type":"t","data":{}}"#,
            r#"{"op":"publish","execution_id":"e","event_type":"t","data":{},"idempotency_key":""}"#,
            r#"{"op":"publish","execution_id":"e","event_type":7,"data":{}}"#,
            r#"{"op":"publish","id":-1,"execution_id":"e","event_type":"t","data":{}}"#,
            r#"{"op":"publish","id":1.5,"execution_id":"e","event_type":"t","data":{}}"#,
            r#"{"op":"publish","execution_id":"e","events":[]}"#,
            // What the validating way reads otherwise: the last of a repeated
            // field, an escape decoded, a batch beside event fields.
            r#"{"op":"publish","op":"publish","execution_id":"e","event_type":"t","data":{}}"#,
            r#"{"op":"publish","execution_id":"e","event_type":"\u0074","data":{}}"#,
            r#"{"op":"publish","execution_id":"e","event_type":"t","data":{},"events":[{"event_type":"t","data":{}}]}"#,
            "not json",
        ];
        for text in frames {
            assert!(
                PublishFrame::read(text, 10).is_none(),
                "read quickly: {text}"
            );
        }
        let long_id = format!(
            r#"{{"op":"publish","id":"{}","execution_id":"e","event_type":"t","data":{{}}}}"#,
            "i".repeat(MAX_REQUEST_ID_BYTES + 1)
        );
        assert!(PublishFrame::read(&long_id, 10).is_none());
    }
}

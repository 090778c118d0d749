//! Events as the hub handles them: serialized once, shared by every subscriber.
//!
//! A publish is encoded into JSON exactly once, before the store assigns its
//! seq (the seq is spliced in front, so the store never re-serializes). The
//! per-transport frames (WebSocket text, SSE message) are built lazily, once
//! per event, and shared by reference count with every subscriber.
//!
//! A seq is a position within one *history* of an execution; when a history
//! ends (expiry, eviction, a restart of the embedded store) and a new one
//! starts at seq 1, the new one has another [`Epoch`]. Every event carries the
//! epoch it belongs to, so a position is always `(epoch, seq)`.

use std::fmt;
use std::sync::{Arc, OnceLock};

use crate::clock::{now_rfc3339, random_u64};
use crate::telemetry::TraceParent;

use bytes::{BufMut, Bytes, BytesMut};
use exechub_protocol::PublishRequest;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// The identity of one history of an execution: a short token (ASCII
/// letters and digits) fixed when the history is created.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Epoch(Arc<str>);

impl Epoch {
    /// An epoch from its text, if it is one the protocol accepts.
    pub fn parse(text: &str) -> Option<Self> {
        exechub_protocol::is_epoch(text).then(|| Self(Arc::from(text)))
    }

    /// A new epoch: 16 hex digits from `prefix` (high 32 bits) and a random low half.
    pub fn mint(prefix: u32) -> Self {
        let low = random_u64() as u32;
        Self(Arc::from(format!("{prefix:08x}{low:08x}")))
    }

    /// A new fully random epoch.
    pub fn random() -> Self {
        Self(Arc::from(format!("{:016x}", random_u64())))
    }

    /// The epoch's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Epoch({})", self.0)
    }
}

/// An accepted event: its position and its JSON, plus frames derived from it once.
#[derive(Clone, Debug)]
pub struct SharedEvent(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    seq: u64,
    epoch: Epoch,
    json: Bytes,
    /// When this node had the event (see [`SharedEvent::accepted`]).
    accepted: u64,
    ws_frame: OnceLock<Utf8Bytes>,
    sse_frame: OnceLock<Bytes>,
    /// The status this event ends its execution with, if it is terminal.
    ending: OnceLock<Option<Arc<str>>>,
}

impl SharedEvent {
    /// Wraps the stored JSON of the event at `seq` of history `epoch`.
    pub fn new(epoch: Epoch, seq: u64, json: Bytes) -> Self {
        Self(Arc::new(Inner {
            seq,
            epoch,
            json,
            accepted: crate::clock::monotonic(),
            ws_frame: OnceLock::new(),
            sse_frame: OnceLock::new(),
            ending: OnceLock::new(),
        }))
    }

    /// The status this event ends its execution with under `lifecycle`
    /// (`None`: not a terminal event); worked out once per event.
    pub fn ending(&self, lifecycle: &crate::lifecycle::Lifecycle) -> Option<&str> {
        self.0
            .ending
            .get_or_init(|| {
                event_type_of(&self.0.json).and_then(|event_type| lifecycle.ending(&event_type))
            })
            .as_deref()
    }

    /// The event's position in its history.
    pub fn seq(&self) -> u64 {
        self.0.seq
    }

    /// The history the event belongs to.
    pub fn epoch(&self) -> &Epoch {
        &self.0.epoch
    }

    /// When this node got the event ([`crate::clock::monotonic`] time): its
    /// append, or its arrival from another node; for publish-to-send latency.
    pub fn accepted(&self) -> u64 {
        self.0.accepted
    }

    /// The event as stored: a JSON object (`exechub_protocol::Event`).
    pub fn json(&self) -> &Bytes {
        &self.0.json
    }

    /// The WebSocket frame `{"type":"event","epoch":…,"event":…}`, built on first use.
    pub fn ws_frame(&self) -> Utf8Bytes {
        self.0
            .ws_frame
            .get_or_init(|| {
                let json = String::from_utf8_lossy(&self.0.json);
                let epoch = &self.0.epoch;
                Utf8Bytes::from(format!(
                    r#"{{"type":"event","epoch":"{epoch}","event":{json}}}"#
                ))
            })
            .clone()
    }

    /// The SSE message `id: <epoch>-<seq>\ndata: <json>\n\n`, built on first use.
    pub fn sse_frame(&self) -> Bytes {
        self.0
            .sse_frame
            .get_or_init(|| {
                let mut buf = BytesMut::with_capacity(self.0.json.len() + 48);
                let id = format!("id: {}-{}\ndata: ", self.0.epoch, self.0.seq);
                buf.put_slice(id.as_bytes());
                buf.put_slice(&self.0.json);
                buf.put_slice(b"\n\n");
                buf.freeze()
            })
            .clone()
    }
}

/// The `event_type` of an event's JSON (stored, or a publish's encoded
/// tail): found by its key (the hub writes it before `data`, and a key
/// cannot occur unescaped inside a string); only a value with escapes is
/// decoded, and only that string.
pub fn event_type_of(json: &[u8]) -> Option<std::borrow::Cow<'_, str>> {
    const KEY: &[u8] = br#""event_type":""#;
    let start = memchr::memmem::find(json, KEY)? + KEY.len();
    let rest = &json[start..];
    let end = memchr::memchr2(b'"', b'\\', rest)?;
    if rest[end] == b'"' {
        return std::str::from_utf8(&rest[..end]).ok().map(Into::into);
    }
    // From the value's opening quote: the first value of a stream is read
    // without looking at what follows it.
    let value = &json[start - 1..];
    serde_json::Deserializer::from_slice(value)
        .into_iter::<String>()
        .next()?
        .ok()
        .map(Into::into)
}

/// A validated publish, encoded but not yet numbered.
#[derive(Debug, Clone)]
pub struct NewEvent {
    execution_id: String,
    /// Set when this event ends its execution: the status it ends it with.
    ending: Option<Arc<str>>,
    timestamp: String,
    idempotency_key: Option<String>,
    /// The publish's W3C `traceparent`, handed on to the providers.
    traceparent: Option<Arc<TraceParent>>,
    /// Everything after the seq: `,"execution_id":…,"data":{…}}`.
    tail: Bytes,
}

impl NewEvent {
    /// Encodes a validated request, stamping the current time when it has none.
    pub fn encode(execution_id: String, request: &PublishRequest) -> Self {
        let timestamp = request.timestamp.clone().unwrap_or_else(now_rfc3339);
        Self::encode_stamped(execution_id, request, timestamp)
    }

    /// An event from its fields; `data` writes the `data` object's JSON
    /// (about `data_len` bytes). The one place the tail's layout is written.
    pub(crate) fn from_fields(
        execution_id: String,
        event_type: &str,
        timestamp: String,
        data_len: usize,
        data: impl FnOnce(&mut Vec<u8>),
    ) -> Self {
        let mut tail = Vec::with_capacity(
            64 + execution_id.len() + event_type.len() + timestamp.len() + data_len,
        );
        // Writing a string to a Vec cannot fail.
        tail.extend_from_slice(br#","execution_id":"#);
        let _ = serde_json::to_writer(&mut tail, &execution_id);
        tail.extend_from_slice(br#","event_type":"#);
        let _ = serde_json::to_writer(&mut tail, event_type);
        tail.extend_from_slice(br#","timestamp":"#);
        let _ = serde_json::to_writer(&mut tail, &timestamp);
        tail.extend_from_slice(br#","data":"#);
        data(&mut tail);
        tail.push(b'}');
        Self {
            execution_id,
            ending: None,
            timestamp,
            idempotency_key: None,
            traceparent: None,
            tail: tail.into(),
        }
    }

    /// Encodes a validated request with `timestamp` (its own, or the arrival time).
    fn encode_stamped(execution_id: String, request: &PublishRequest, timestamp: String) -> Self {
        Self::from_fields(execution_id, &request.event_type, timestamp, 64, |out| {
            // Serializing a JSON map to a Vec cannot fail.
            let _ = serde_json::to_writer(out, &request.data);
        })
    }

    /// The event's type.
    pub fn event_type(&self) -> std::borrow::Cow<'_, str> {
        // Read back from the encoded tail rather than kept twice.
        event_type_of(&self.tail).unwrap_or_default()
    }

    /// Marks the event as its execution's terminal event, ending it with `status`.
    pub fn ending_with(mut self, status: Option<Arc<str>>) -> Self {
        self.ending = status;
        self
    }

    /// The status this event ends its execution with, when it is terminal.
    pub fn ending(&self) -> Option<&str> {
        self.ending.as_deref()
    }

    /// Marks the event with a publisher's idempotency key: a retry with the
    /// same key returns the original seq instead of appending again.
    pub fn with_idempotency_key(mut self, key: Option<String>) -> Self {
        self.idempotency_key = key;
        self
    }

    /// The publisher's idempotency key, if any.
    pub fn idempotency_key(&self) -> Option<&str> {
        self.idempotency_key.as_deref()
    }

    /// Carries the publish's W3C `traceparent` to the providers.
    pub fn with_traceparent(mut self, traceparent: Option<Arc<TraceParent>>) -> Self {
        self.traceparent = traceparent;
        self
    }

    /// The publish's W3C `traceparent`, if it had one.
    pub fn traceparent(&self) -> Option<&Arc<TraceParent>> {
        self.traceparent.as_ref()
    }

    /// The execution the event is for.
    pub fn execution_id(&self) -> &str {
        &self.execution_id
    }

    /// The event's timestamp.
    pub fn timestamp(&self) -> &str {
        &self.timestamp
    }

    /// The JSON after the seq; stores that splice the seq themselves (Redis) use it.
    pub fn tail(&self) -> &Bytes {
        &self.tail
    }

    /// The complete event once its position is known.
    pub fn numbered(&self, epoch: Epoch, seq: u64) -> SharedEvent {
        SharedEvent::new(epoch, seq, splice_seq(seq, &self.tail))
    }
}

/// A validated batch of publishes to one execution, stored atomically with
/// consecutive seqs.
#[derive(Debug, Clone)]
pub struct NewBatch {
    execution_id: String,
    idempotency_key: Option<String>,
    traceparent: Option<Arc<TraceParent>>,
    events: Vec<NewEvent>,
}

/// A batch's arrival time, formatted once: the events of one batch without
/// a timestamp of their own share it.
#[derive(Default)]
pub(crate) struct Arrival(Option<String>);

impl Arrival {
    /// `own`, or the batch's arrival time.
    pub(crate) fn stamp(&mut self, own: Option<&String>) -> String {
        match own {
            Some(timestamp) => timestamp.clone(),
            None => self.0.get_or_insert_with(now_rfc3339).clone(),
        }
    }
}

impl NewBatch {
    /// Encodes every request of a validated batch, in order.
    pub fn encode(execution_id: String, requests: &[PublishRequest]) -> Self {
        let mut arrival = Arrival::default();
        let events = requests
            .iter()
            .map(|request| {
                let timestamp = arrival.stamp(request.timestamp.as_ref());
                NewEvent::encode_stamped(execution_id.clone(), request, timestamp)
            })
            .collect();
        Self::from_events(execution_id, events)
    }

    /// A batch of encoded events, in order.
    pub(crate) fn from_events(execution_id: String, events: Vec<NewEvent>) -> Self {
        Self {
            execution_id,
            idempotency_key: None,
            traceparent: None,
            events,
        }
    }

    /// Carries the publish's W3C `traceparent` to the providers (for every event).
    pub fn with_traceparent(mut self, traceparent: Option<Arc<TraceParent>>) -> Self {
        self.traceparent = traceparent;
        self
    }

    /// The publish's W3C `traceparent`, if it had one.
    pub fn traceparent(&self) -> Option<&Arc<TraceParent>> {
        self.traceparent.as_ref()
    }

    /// Marks the batch with a publisher's idempotency key (one for the whole batch).
    pub fn with_idempotency_key(mut self, key: Option<String>) -> Self {
        self.idempotency_key = key;
        self
    }

    /// The execution the events are for.
    pub fn execution_id(&self) -> &str {
        &self.execution_id
    }

    /// The publisher's idempotency key, if any.
    pub fn idempotency_key(&self) -> Option<&str> {
        self.idempotency_key.as_deref()
    }

    /// The events, in order (never empty: validation requires one).
    pub fn events(&self) -> &[NewEvent] {
        &self.events
    }

    /// The events, to mark terminal ones.
    pub fn events_mut(&mut self) -> &mut [NewEvent] {
        &mut self.events
    }
}

/// The seq of a stored event JSON, read from its `{"seq":N,` prefix (the hub
/// always writes `seq` first), without parsing the rest.
pub fn seq_of(json: &[u8]) -> Option<u64> {
    let digits = json.strip_prefix(br#"{"seq":"#)?;
    let end = digits.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

/// `{"seq":<seq>` followed by the encoded tail.
pub fn splice_seq(seq: u64, tail: &[u8]) -> Bytes {
    use std::fmt::Write;
    const HEAD: &[u8] = br#"{"seq":"#;
    let mut json = BytesMut::with_capacity(HEAD.len() + 20 + tail.len());
    json.put_slice(HEAD);
    // Writing to a BytesMut cannot fail.
    let _ = write!(json, "{seq}");
    json.put_slice(tail);
    json.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use exechub_protocol::Event;

    #[test]
    fn numbered_event_is_the_protocol_event() {
        let request = PublishRequest::from_slice(br#"{"event_type":"log","data":{"line":"a\nb"}}"#)
            .expect("valid");
        let epoch = Epoch::parse("ab12").expect("epoch");
        let event = NewEvent::encode("exec-1".into(), &request).numbered(epoch, 42);
        let decoded: Event = serde_json::from_slice(event.json()).expect("valid JSON");
        assert_eq!(decoded.seq, 42);
        assert_eq!(decoded.execution_id, "exec-1");
        assert_eq!(decoded.data["line"], "a\nb");
        assert_eq!(decoded.timestamp.len(), "2026-11-28T14:03:07.123Z".len());
        let sse = event.sse_frame();
        assert!(sse.starts_with(b"id: ab12-42\ndata: {"));
        assert_eq!(sse.iter().filter(|b| **b == b'\n').count(), 3);
        let ws: serde_json::Value = serde_json::from_str(event.ws_frame().as_str()).expect("JSON");
        assert_eq!(
            (&ws["event"]["seq"], &ws["epoch"]),
            (&42.into(), &"ab12".into())
        );
        assert_eq!(seq_of(event.json()), Some(42));
        assert_eq!(event_type_of(event.json()).as_deref(), Some("log"));
        // Escapes are decoded; a key-like text inside a string is not the key.
        let escaped =
            br#"{"seq":1,"execution_id":"a\"event_type\":\"x","event_type":"t\u00e9","data":{}}"#;
        assert_eq!(event_type_of(escaped).as_deref(), Some("t\u{e9}"));
        assert_eq!(event_type_of(br#"{"seq":1}"#), None);
        // A publish's tail (not a JSON document by itself) reads back too.
        let quoted =
            PublishRequest::from_slice(br#"{"event_type":"say \"hi\"","data":{}}"#).expect("valid");
        let quoted = NewEvent::encode("exec-1".into(), &quoted);
        assert_eq!(quoted.event_type(), "say \"hi\"");
        assert_eq!(NewEvent::encode("e".into(), &request).event_type(), "log");
        assert_eq!(seq_of(b"{\"seq\":x}"), None);
    }
}

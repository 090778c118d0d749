//! The client's bookkeeping and codec, free of JavaScript so it runs in host
//! `#[test]`s: where each subscription stands, which events to deliver,
//! reconnect delays (the protocol's backoff) and when to give up, the numbers
//! JavaScript hands over, and the client frames, validated with the hub's
//! rules and written by hand.
//!
//! Frames are written here rather than with serde because serde_json and the
//! buffering of tagged and flattened enums made up most of the download; the
//! tests decode every frame with the hub's own decoder to keep them honest.

use std::time::Duration;

use exechub_protocol::backoff::{Attempts, Backoff};
use exechub_protocol::names::{field, op};
use exechub_protocol::{FieldType, ValidationError, close, publish_problems};

/// Where one subscription stands: a position `(epoch, seq)` in its
/// execution's history. A seq means nothing without the history it belongs
/// to: an expired or dropped history starts again at seq 1 under a new epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The history `last` belongs to; `None` until the hub named one (a bare
    /// `after` names none, and a fresh execution has no history yet).
    epoch: Option<String>,
    /// Highest seq delivered (or confirmed as the starting point); `None`
    /// until the hub confirmed a live-only subscription.
    last: Option<u64>,
}

/// What to do with an incoming event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it to the application.
    Deliver,
    /// Already delivered (a replay after reconnecting overlaps what was seen).
    Duplicate,
    /// Of another history than the position's, with no `history_lost`
    /// announcing it: the hub always sends one first, so this is never
    /// delivered (its seq says nothing about what was seen).
    OtherEpoch,
}

impl Position {
    /// A new subscription: after `after`, or live-only when `None`.
    pub fn new(after: Option<u64>) -> Self {
        Self {
            epoch: None,
            last: after,
        }
    }

    /// The `after` to send when (re)subscribing.
    pub fn resume_after(&self) -> Option<u64> {
        self.last
    }

    /// The epoch `last` belongs to, when the hub named one.
    pub fn epoch(&self) -> Option<&str> {
        self.epoch.as_deref()
    }

    /// The highest seq delivered or confirmed.
    pub fn last(&self) -> Option<u64> {
        self.last
    }

    /// The hub confirmed the subscription (`subscribed`), starting after
    /// `(epoch, after)`.
    pub fn confirmed(&mut self, after: u64, epoch: Option<String>) {
        // A resubscription confirms what we asked for; only a live-only
        // subscription learns its starting point here, and a bare `after`
        // its epoch.
        if self.last.is_none() {
            self.last = Some(after);
        }
        self.epoch = self.epoch.take().or(epoch);
    }

    /// Decides about event `seq` of history `epoch` (an `event` frame) and,
    /// when it is delivered, moves past it.
    pub fn accept(&mut self, epoch: Option<&str>, seq: u64) -> Verdict {
        let other = matches!((self.epoch(), epoch), (Some(ours), Some(theirs)) if ours != theirs);
        match self.last {
            // With nothing delivered in our history yet (`last` 0), any
            // history is adopted, as the hub does (it announces none then).
            Some(last) if other && last > 0 => Verdict::OtherEpoch,
            Some(last) if !other && seq <= last => Verdict::Duplicate,
            _ => {
                self.last = Some(seq);
                if let Some(epoch) = epoch {
                    self.epoch = Some(epoch.to_owned());
                }
                Verdict::Deliver
            }
        }
    }

    /// The hub said (`history_lost`) that delivery continues after
    /// `(epoch, resume_after)`: events before it are gone, or its history
    /// replaced the position's.
    pub fn lost(&mut self, resume_after: u64, epoch: Option<String>) {
        self.last = Some(resume_after);
        self.epoch = epoch;
    }
}

/// Reconnect delays by the protocol's rule ([`exechub_protocol::backoff`]):
/// a ceiling of `first` doubling per failed attempt up to `max`, each delay
/// drawn from the ceiling's upper half. The caller passes the random fraction
/// (`Math.random()`), so the delays are plain host-testable Rust.
pub fn reconnect_delays(first: Duration, max: Duration) -> Attempts {
    Backoff { first, max }.attempts()
}

/// Largest integer a JavaScript number holds exactly (`Number.MAX_SAFE_INTEGER`).
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// A JavaScript number as a seq, id or count: a whole number from 0 to
/// `Number.MAX_SAFE_INTEGER`, else `None`.
pub fn whole_number(n: f64) -> Option<u64> {
    ((0.0..=MAX_SAFE_INTEGER).contains(&n) && n.fract() == 0.0).then_some(n as u64)
}

/// Whether to reconnect after the socket closed with `code`. A normal close
/// (1000) was not asked for by this client, so it reconnects; otherwise the
/// hub's ranges decide (4500–4999 and protocol errors: stop).
pub fn reconnects_after(code: u16) -> bool {
    code == 1000 || close::should_reconnect(code)
}

/// Appends `n` in decimal.
pub fn push_decimal(out: &mut String, n: u64) {
    if n >= 10 {
        push_decimal(out, n / 10);
    }
    out.push(char::from(b'0' + (n % 10) as u8));
}

/// Appends `text` as a JSON string.
fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                out.push_str("\\u00");
                for digit in [u32::from(c) >> 4, u32::from(c) & 0xf] {
                    out.extend(char::from_digit(digit, 16));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A JSON object, written one field at a time.
struct JsonObject(String);

impl JsonObject {
    fn new() -> Self {
        Self(String::from("{"))
    }

    fn key(mut self, key: &str) -> Self {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        push_json_string(&mut self.0, key);
        self.0.push(':');
        self
    }

    fn string(self, key: &str, value: &str) -> Self {
        let mut object = self.key(key);
        push_json_string(&mut object.0, value);
        object
    }

    fn number(self, key: &str, value: u64) -> Self {
        let mut object = self.key(key);
        push_decimal(&mut object.0, value);
        object
    }

    /// A field whose value is already JSON text.
    fn json(self, key: &str, json: &str) -> Self {
        let mut object = self.key(key);
        object.0.push_str(json);
        object
    }

    fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// A publish that passed the hub's validation, its payload already JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    event_type: String,
    /// The payload, a JSON object, as the browser's `JSON.stringify` wrote it.
    data: String,
    timestamp: Option<String>,
}

impl Publish {
    /// Validates a publish with the hub's rules (`PublishRequest::from_fields`
    /// reports the same problems): `data` is the payload's JSON text when it
    /// is an object, else the type it has.
    ///
    /// # Errors
    /// Every problem, as a 422 would list them.
    pub fn new(
        event_type: String,
        data: Result<String, FieldType>,
        timestamp: Option<String>,
    ) -> Result<Self, Vec<ValidationError>> {
        let data_type = data.as_ref().err().copied().unwrap_or(FieldType::Object);
        let timestamp_type = match timestamp {
            Some(_) => FieldType::String,
            None => FieldType::Absent,
        };
        let problems = publish_problems(FieldType::String, data_type, timestamp_type);
        match data {
            Ok(data) if problems.is_empty() => Ok(Self {
                event_type,
                data,
                timestamp,
            }),
            _ => Err(problems),
        }
    }

    fn write_fields(&self, object: JsonObject) -> JsonObject {
        let object = object
            .string(field::EVENT_TYPE, &self.event_type)
            .json(field::DATA, &self.data);
        match &self.timestamp {
            Some(timestamp) => object.string(field::TIMESTAMP, timestamp),
            None => object,
        }
    }
}

/// The `subscribe` frame: after `(epoch, after)`, each when known.
pub fn subscribe_frame(
    id: u64,
    execution_id: &str,
    after: Option<u64>,
    epoch: Option<&str>,
) -> String {
    let frame = request(op::SUBSCRIBE, id).string(field::EXECUTION_ID, execution_id);
    let frame = match after {
        Some(after) => frame.number(field::AFTER, after),
        None => frame,
    };
    match epoch {
        Some(epoch) => frame.string(field::EPOCH, epoch),
        None => frame,
    }
    .finish()
}

/// The `subscribe` frame that (re)subscribes from `position`.
pub fn resubscribe_frame(id: u64, execution_id: &str, position: &Position) -> String {
    subscribe_frame(id, execution_id, position.last, position.epoch())
}

/// The `auth` frame, carrying a fresh token.
pub fn auth_frame(id: u64, token: &str) -> String {
    request(op::AUTH, id).string(field::TOKEN, token).finish()
}

/// The `unsubscribe` frame.
pub fn unsubscribe_frame(id: u64, execution_id: &str) -> String {
    request(op::UNSUBSCRIBE, id)
        .string(field::EXECUTION_ID, execution_id)
        .finish()
}

/// The `publish` frame.
pub fn publish_frame(id: u64, execution_id: &str, publish: &Publish) -> String {
    let frame = request(op::PUBLISH, id).string(field::EXECUTION_ID, execution_id);
    publish.write_fields(frame).finish()
}

/// The body of `POST …/events`.
pub fn publish_body(publish: &Publish) -> String {
    publish.write_fields(JsonObject::new()).finish()
}

fn request(op: &str, id: u64) -> JsonObject {
    JsonObject::new()
        .string(field::OP, op)
        .number(field::ID, id)
}

#[cfg(test)]
mod tests {
    use exechub_protocol::{ClientMsg, PublishRequest, RequestId};

    use super::*;

    const E1: Option<&str> = Some("9f2c41d07a3b5e11");
    const E2: Option<&str> = Some("5d0e2b7c91aa4f30");

    fn epoch(epoch: Option<&str>) -> Option<String> {
        epoch.map(Into::into)
    }

    #[test]
    fn replays_after_reconnect_never_deliver_twice_or_backwards() {
        let mut position = Position::new(Some(3));
        assert_eq!(position.accept(E1, 3), Verdict::Duplicate);
        assert_eq!(position.accept(E1, 4), Verdict::Deliver);
        assert_eq!(position.resume_after(), Some(4));
        // Reconnected: the hub replays from 4, some of it already seen.
        position.confirmed(4, epoch(E1));
        assert_eq!(position.accept(E1, 4), Verdict::Duplicate);
        assert_eq!(position.accept(E1, 5), Verdict::Deliver);
    }

    #[test]
    fn live_only_learns_its_start_from_the_hub() {
        let mut position = Position::new(None);
        assert_eq!(position.resume_after(), None);
        position.confirmed(10, epoch(E1));
        assert_eq!((position.resume_after(), position.epoch()), (Some(10), E1));
        position.confirmed(2, None); // a later confirmation never moves it back
        assert_eq!((position.last(), position.epoch()), (Some(10), E1));
        position.lost(40, epoch(E1));
        assert_eq!(position.accept(E1, 41), Verdict::Deliver);
    }

    #[test]
    fn every_frame_kind_moves_the_position() {
        // `subscribed` names the history a bare `after` (or a live-only start) is in …
        let mut position = Position::new(Some(2));
        position.confirmed(2, epoch(E1));
        assert_eq!((position.epoch(), position.last()), (E1, Some(2)));
        // … an `event` frame moves the seq within it …
        assert_eq!(position.accept(E1, 3), Verdict::Deliver);
        assert_eq!((position.epoch(), position.last()), (E1, Some(3)));
        // … and `history_lost` moves both.
        position.lost(0, epoch(E2));
        assert_eq!((position.epoch(), position.last()), (E2, Some(0)));
        // A fresh execution has no history: the first event's epoch is adopted.
        let mut fresh = Position::new(None);
        fresh.confirmed(0, None);
        assert_eq!(fresh.accept(E1, 1), Verdict::Deliver);
        assert_eq!((fresh.epoch(), fresh.last()), (E1, Some(1)));
    }

    #[test]
    fn a_new_history_is_delivered_from_seq_1_after_history_lost() {
        let mut position = Position::new(Some(0));
        for seq in 1..=3 {
            assert_eq!(position.accept(E1, seq), Verdict::Deliver);
        }
        // Unannounced, the new history's events are not delivered …
        assert_eq!(position.accept(E2, 1), Verdict::OtherEpoch);
        assert_eq!(position.accept(E2, 4), Verdict::OtherEpoch);
        // … announced, its seq 1 is not mistaken for a duplicate of the old 1.
        position.lost(0, epoch(E2));
        for seq in 1..=3 {
            assert_eq!(position.accept(E2, seq), Verdict::Deliver);
        }
        // Nor does a leftover of the old history get through.
        assert_eq!(position.accept(E1, 4), Verdict::OtherEpoch);
        assert_eq!((position.epoch(), position.last()), (E2, Some(3)));
    }

    #[test]
    fn duplicates_within_an_epoch_are_dropped() {
        let mut position = Position::new(Some(0));
        assert_eq!(position.accept(E1, 1), Verdict::Deliver);
        assert_eq!(position.accept(E1, 2), Verdict::Deliver);
        assert_eq!(position.accept(E1, 2), Verdict::Duplicate);
        assert_eq!(position.accept(E1, 1), Verdict::Duplicate);
        // A hub that names no epoch is taken to mean the same history.
        assert_eq!(position.accept(None, 2), Verdict::Duplicate);
        assert_eq!(position.accept(None, 3), Verdict::Deliver);
        assert_eq!((position.epoch(), position.last()), (E1, Some(3)));
    }

    #[test]
    fn trimmed_history_continues_in_the_same_epoch() {
        let mut position = Position::new(Some(0));
        assert_eq!(position.accept(E1, 1), Verdict::Deliver);
        position.lost(7, epoch(E1));
        assert_eq!(position.accept(E1, 7), Verdict::Duplicate);
        assert_eq!(position.accept(E1, 8), Verdict::Deliver);
    }

    #[test]
    fn the_resubscribe_frame_carries_the_position() {
        let mut position = Position::new(None);
        position.confirmed(4, epoch(E1));
        assert_eq!(position.accept(E1, 5), Verdict::Deliver);
        assert_eq!(
            decoded(&resubscribe_frame(9, "e", &position)),
            ClientMsg::Subscribe {
                id: Some(RequestId::Num(9)),
                execution_id: "e".into(),
                after: Some(5),
                epoch: epoch(E1),
            }
        );
        position.lost(0, epoch(E2));
        let frame = resubscribe_frame(10, "e", &position);
        assert_eq!(
            frame,
            r#"{"op":"subscribe","id":10,"execution_id":"e","after":0,"epoch":"5d0e2b7c91aa4f30"}"#
        );
        // Before the hub named a history, only the seq is sent.
        let bare = resubscribe_frame(11, "e", &Position::new(Some(2)));
        assert!(matches!(
            decoded(&bare),
            ClientMsg::Subscribe {
                after: Some(2),
                epoch: None,
                ..
            }
        ));
    }

    #[test]
    fn reconnect_delays_grow_to_the_cap_with_jitter_and_reset() {
        let mut delays = reconnect_delays(Duration::from_millis(100), Duration::from_secs(2));
        let top: Vec<u128> = (0..7).map(|_| delays.next_delay(1.0).as_millis()).collect();
        assert_eq!(top, vec![100, 200, 400, 800, 1600, 2000, 2000]);
        // Equal jitter: never under half the ceiling.
        assert_eq!(delays.next_delay(0.0), Duration::from_millis(1000));
        delays.reset();
        assert_eq!(delays.next_delay(1.0), Duration::from_millis(100));
        // The second ceiling (200 ms) at its floor.
        assert_eq!(delays.next_delay(0.0), Duration::from_millis(100));
    }

    #[test]
    fn numbers_from_javascript_are_whole_and_exact() {
        assert_eq!(whole_number(0.0), Some(0));
        assert_eq!(whole_number(42.0), Some(42));
        assert_eq!(whole_number(MAX_SAFE_INTEGER), Some(9_007_199_254_740_991));
        for bad in [-1.0, 1.5, MAX_SAFE_INTEGER + 2.0, f64::NAN, f64::INFINITY] {
            assert_eq!(whole_number(bad), None, "{bad}");
        }
    }

    #[test]
    fn stops_only_when_the_hub_says_so() {
        for code in [1000, 1001, 1006, 1011, 4001, 4499] {
            assert!(reconnects_after(code), "{code}");
        }
        for code in [1002, 1008, 4500, 4999] {
            assert!(!reconnects_after(code), "{code}");
        }
    }

    fn decoded(frame: &str) -> ClientMsg {
        ClientMsg::decode(frame).expect("the hub decodes the frame")
    }

    fn publish(data: &str, timestamp: Option<&str>) -> Publish {
        Publish::new(
            "tool_started".into(),
            Ok(data.into()),
            timestamp.map(Into::into),
        )
        .expect("valid")
    }

    #[test]
    fn subscription_frames_decode_as_the_hub_reads_them() {
        let awkward = "exec \"42\" \\ é";
        assert_eq!(
            decoded(&subscribe_frame(7, awkward, Some(3), None)),
            ClientMsg::Subscribe {
                id: Some(RequestId::Num(7)),
                execution_id: awkward.into(),
                after: Some(3),
                epoch: None,
            }
        );
        assert_eq!(
            decoded(&subscribe_frame(8, awkward, Some(3), E1)),
            ClientMsg::Subscribe {
                id: Some(RequestId::Num(8)),
                execution_id: awkward.into(),
                after: Some(3),
                epoch: epoch(E1),
            }
        );
        assert_eq!(
            decoded(&subscribe_frame(u64::MAX, "e", None, None)),
            ClientMsg::Subscribe {
                id: Some(RequestId::Num(u64::MAX)),
                execution_id: "e".into(),
                after: None,
                epoch: None,
            }
        );
        assert_eq!(
            decoded(&unsubscribe_frame(0, "e")),
            ClientMsg::Unsubscribe {
                id: Some(RequestId::Num(0)),
                execution_id: "e".into(),
            }
        );
    }

    #[test]
    fn publish_frames_and_bodies_decode_as_the_hub_reads_them() {
        let data = r#"{"tool":"grep","n":[1,2.5,null]}"#;
        let body = format!(r#"{{"event_type":"tool_started","data":{data},"timestamp":"t"}}"#);
        let request = PublishRequest::from_slice(body.as_bytes()).expect("valid");
        assert_eq!(
            decoded(&publish_frame(2, "e", &publish(data, Some("t")))),
            ClientMsg::Publish {
                id: Some(RequestId::Num(2)),
                execution_id: "e".into(),
                event: request.clone(),
                idempotency_key: None,
            }
        );
        let http = publish_body(&publish(data, Some("t")));
        assert_eq!(PublishRequest::from_slice(http.as_bytes()), Ok(request));
        let untimed = publish_body(&publish("{}", None));
        assert_eq!(untimed, r#"{"event_type":"tool_started","data":{}}"#);
        let control = "a\u{1}\n\t\"b\\";
        let event = Publish::new(control.into(), Ok("{}".into()), None).expect("valid");
        let request = PublishRequest::from_slice(publish_body(&event).as_bytes()).expect("JSON");
        assert_eq!(request.event_type, control);
    }

    #[test]
    fn publishes_are_checked_with_the_hubs_rules() {
        let problems = Publish::new("t".into(), Err(FieldType::Other), None).expect_err("array");
        let hub = PublishRequest::from_slice(br#"{"event_type":"t","data":[1,2]}"#)
            .expect_err("the hub refuses it too");
        assert_eq!(problems, hub);
        let problems = Publish::new("t".into(), Err(FieldType::Null), None).expect_err("null");
        assert_eq!(problems[0].kind, "dict_type");
    }
}

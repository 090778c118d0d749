//! WebSocket frames (`ClientMsg::decode`) and HTTP publish bodies
//! (`PublishRequest::from_slice`, `BatchRequest::from_slice`).

use exechub::event::{NewBatch, NewEvent};
use exechub::transport::body::{BatchBody, PublishBody};
use exechub::transport::frame::{FrameEvents, PublishFrame};
use exechub_protocol::ws::MAX_BATCH_EVENTS;
use exechub_protocol::{BatchRequest, ClientMsg, PublishRequest};
use serde_json::Value;

/// Field names and values of frames and bodies.
pub const WORDS: &[&str] = &[
    "\"op\"",
    "\"id\"",
    "\"execution_id\"",
    "\"after\"",
    "\"epoch\"",
    "\"event_type\"",
    "\"data\"",
    "\"timestamp\"",
    "\"events\"",
    "\"idempotency_key\"",
    "\"token\"",
    "\"subscribe\"",
    "\"unsubscribe\"",
    "\"publish\"",
    "\"ping\"",
    "\"auth\"",
    "\"0123456789abcdef\"",
    "\"2026-01-01T00:00:00.000Z\"",
    "op",
    "events",
    "execution_id",
    "null",
    "true",
    "{}",
    "[]",
    ":",
    ",",
];

/// The longest error message a frame may be answered with: answers never
/// grow with what the client sent (an echoed op is cut at 64 characters,
/// which may be 256 bytes).
const MAX_MESSAGE: usize = 512;

/// Decodes `input` as a text frame, with the default batch limit and a tiny one.
pub fn ws_frame(input: &[u8]) -> String {
    // Text frames are UTF-8 (the WebSocket layer checks); keep the rest of a bad one.
    let text = String::from_utf8_lossy(input);
    let limit = usize::from(input.last().copied().unwrap_or(0) % 4);
    quick_frame_matches_validating(&text, limit);
    let quick = quick_frame_matches_validating(&text, MAX_BATCH_EVENTS);
    let decoded = ClientMsg::decode(&text);
    if ClientMsg::decode_limited(&text, limit).is_ok() {
        assert!(
            decoded.is_ok(),
            "accepted with at most {limit} events, refused with {MAX_BATCH_EVENTS}"
        );
    }
    match decoded {
        Ok(msg) => {
            let encoded = serde_json::to_string(&msg).expect("a decoded frame serializes");
            let again = ClientMsg::decode(&encoded).expect("a re-encoded frame decodes");
            assert!(same(&msg, &again), "re-decoding {encoded} gave {again:?}");
            // Read quickly or not: an outcome of its own, to explore both.
            format!("ok:{}:{quick}", op(&msg))
        }
        Err(error) => {
            assert!(
                error.message.len() <= MAX_MESSAGE,
                "a {}-byte error message",
                error.message.len()
            );
            let code = serde_json::to_string(&error.code).unwrap_or_default();
            let detail = error.detail.as_deref().map(super::problems);
            format!("err:{code}:{}", detail.unwrap_or_default())
        }
    }
}

/// Whether `a` and `b` serialize alike, floats compared to within 2 ulp:
/// serde_json (without its `float_roundtrip` feature) may read back a float
/// it wrote 1 ulp off, which is not what these targets look for.
fn same<T: serde::Serialize>(a: &T, b: &T) -> bool {
    match (serde_json::to_value(a), serde_json::to_value(b)) {
        (Ok(a), Ok(b)) => alike(&a, &b),
        _ => false,
    }
}

fn alike(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            x == y || (x - y).abs() <= 2.0 * f64::EPSILON * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| alike(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| alike(v, w)))
        }
        _ => a == b,
    }
}

fn op(msg: &ClientMsg) -> &'static str {
    match msg {
        ClientMsg::Subscribe { after, epoch, .. } => match (after, epoch) {
            (None, _) => "subscribe",
            (Some(_), None) => "subscribe-after",
            (Some(_), Some(_)) => "subscribe-after-epoch",
        },
        ClientMsg::Unsubscribe { .. } => "unsubscribe",
        ClientMsg::Publish { .. } => "publish",
        ClientMsg::PublishBatch { .. } => "publish-batch",
        ClientMsg::Ping { .. } => "ping",
        ClientMsg::Auth { .. } => "auth",
        ClientMsg::SubscribeExecutions { .. } => "subscribe-executions",
        ClientMsg::UnsubscribeExecutions { .. } => "unsubscribe-executions",
    }
}

/// The event the hub would store for `event` (seq 1), as a JSON value,
/// without its timestamp (one stamped on arrival differs between two reads).
fn stored(event: &NewEvent) -> Value {
    let mut json = br#"{"seq":1"#.to_vec();
    json.extend_from_slice(event.tail());
    assert!(!json.contains(&b'\n'), "a stored event spans lines");
    let mut value: Value = serde_json::from_slice(&json).expect("a stored event is JSON");
    value["timestamp"] = Value::Null;
    value
}

/// The hub's quick frame reader (`PublishFrame`) must read only frames
/// the validating way accepts as that publish, with the same id, execution,
/// idempotency key and stored events (it leaves the rest to that way).
/// Returns whether it read the frame.
fn quick_frame_matches_validating(text: &str, limit: usize) -> bool {
    let Some(frame) = PublishFrame::read(text, limit) else {
        return false;
    };
    let PublishFrame {
        id,
        execution_id,
        idempotency_key,
        events,
    } = frame;
    let quick_fields = (id, execution_id.clone(), idempotency_key);
    let (quick, slow, fields) = match (events, ClientMsg::decode_limited(text, limit)) {
        (
            FrameEvents::One(body),
            Ok(ClientMsg::Publish {
                id,
                execution_id,
                event,
                idempotency_key,
            }),
        ) => (
            stored(&body.encode(execution_id.clone())),
            stored(&NewEvent::encode(execution_id.clone(), &event)),
            (id, execution_id, idempotency_key),
        ),
        (
            FrameEvents::Batch(body),
            Ok(ClientMsg::PublishBatch {
                id,
                execution_id,
                events,
                idempotency_key,
            }),
        ) => {
            let values =
                |batch: &NewBatch| Value::Array(batch.events().iter().map(stored).collect());
            (
                values(&body.encode(execution_id.clone())),
                values(&NewBatch::encode(execution_id.clone(), &events)),
                (id, execution_id, idempotency_key),
            )
        }
        (_, other) => {
            panic!("the quick frame reader took what the validating way reads as {other:?}")
        }
    };
    assert_eq!(quick_fields, fields, "the quick frame reader's fields");
    assert!(
        alike(&quick, &slow),
        "the quick frame reader stored {quick} for {slow}"
    );
    true
}

/// The hub's quick reader (`PublishBody`, `BatchBody`) must accept and
/// refuse exactly what the validating one does, with the same errors, and
/// store the same JSON value.
fn quick_matches_validating(input: &[u8], max: usize) {
    let slow = PublishRequest::from_slice(input);
    match (PublishBody::read(input), &slow) {
        (Ok(quick), Ok(request)) => {
            let quick = stored(&quick.encode("e".to_owned()));
            let slow = stored(&NewEvent::encode("e".to_owned(), request));
            // A number past a double's precision may round differently: the
            // validating way parses it, the quick way keeps its digits.
            assert!(
                alike(&quick, &slow),
                "the quick reader stored {quick} for {slow}"
            );
        }
        (Err(quick), Err(slow)) => assert_eq!(&quick, slow, "other errors"),
        (quick, _) => panic!("the quick reader disagrees: {}", quick.is_ok()),
    }
    let slow = BatchRequest::from_slice(input, max);
    match (BatchBody::read(input, max), &slow) {
        (Ok(quick), Ok(batch)) => {
            let quick = quick.encode("e".to_owned());
            let slow = NewBatch::encode("e".to_owned(), &batch.events);
            let values =
                |batch: &NewBatch| Value::Array(batch.events().iter().map(stored).collect());
            let (quick, slow) = (values(&quick), values(&slow));
            assert!(
                alike(&quick, &slow),
                "the quick reader stored {quick} for {slow}"
            );
        }
        (Err(quick), Err(slow)) => assert_eq!(&quick, slow, "other batch errors"),
        (quick, _) => panic!("the quick batch reader disagrees: {}", quick.is_ok()),
    }
}

/// Validates `input` as a publish body and as a batch body.
pub fn publish_body(input: &[u8]) -> String {
    let max = match input.last().copied().unwrap_or(0) % 4 {
        0 => MAX_BATCH_EVENTS,
        n => usize::from(n),
    };
    quick_matches_validating(input, max);
    let single = match PublishRequest::from_slice(input) {
        Ok(request) => {
            let encoded = serde_json::to_vec(&request).expect("a request serializes");
            let again = PublishRequest::from_slice(&encoded).expect("a re-encoded body reads");
            assert!(
                same(&request, &again),
                "re-reading a valid body gave {again:?}"
            );
            "ok".to_owned()
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "refused without a reason");
            super::problems(&errors)
        }
    };
    let batch = match BatchRequest::from_slice(input, max) {
        Ok(batch) => {
            let n = batch.events.len();
            assert!(
                (1..=max).contains(&n),
                "a batch of {n} accepted, limit {max}"
            );
            "ok".to_owned()
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "batch refused without a reason");
            super::problems(&errors)
        }
    };
    format!("{single}|{batch}")
}

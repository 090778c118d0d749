//! The client in real headless Chromium against a real hub.
//!
//! `scripts/test.sh` starts an `exechub` process and compiles these tests with
//! `EXECHUB_TEST_URL` pointing at it (e.g. `http://127.0.0.1:41234`), and a
//! second one with `--event-ttl 1` at `EXECHUB_TEST_URL_SHORT_TTL`, whose
//! histories expire a second after their last event.

#![cfg(target_arch = "wasm32")]
#![allow(missing_docs)]

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use exechub_client::{ExechubClient, history, publish_batch_http, publish_http};
use js_sys::{Array, Reflect};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

mod support;

use support::*;

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
async fn receives_events_published_over_http_as_typed_objects() {
    let client = connected().await;
    let id = execution_id("receive");
    let collector = Collector::new();
    let _subscription = client
        .subscribe(id.clone(), collector.handler(), None)
        .expect("subscribe");
    // Delivery starts once the hub confirmed; publishes after that must arrive.
    until("the subscription to be confirmed", || {
        _subscription.last_seq().is_some()
    })
    .await;
    for n in 1..=3 {
        publish_over_http(&id, n).await;
    }
    until("three events", || collector.events.borrow().len() == 3).await;
    assert_eq!(collector.seqs(), vec![1.0, 2.0, 3.0]);
    let first = collector.events.borrow()[0].clone();
    assert_eq!(get(&first, "executionId"), JsValue::from(id.as_str()));
    assert_eq!(get(&first, "eventType"), "tick");
    assert_eq!(get(&get(&first, "data"), "n").as_f64(), Some(1.0));
    assert!(get(&first, "timestamp").is_string());
    client.close();
}

#[wasm_bindgen_test]
async fn publish_resolves_with_the_seq_and_history_reads_it_back() {
    let client = connected().await;
    let id = execution_id("publish");
    for expected in 1..=3 {
        let promise = client.publish(
            id.clone(),
            "log".into(),
            data(r#"{"line":"hi"}"#).unchecked_into(),
            None,
        );
        let seq = JsFuture::from(js_sys::Promise::from(JsValue::from(promise)))
            .await
            .expect("acked");
        assert_eq!(seq.as_f64(), Some(f64::from(expected)));
    }
    let options = data(r#"{"after":1,"limit":1}"#).unchecked_into();
    let promise = history(hub().into(), id.clone(), Some(options));
    let page = JsFuture::from(js_sys::Promise::from(JsValue::from(promise)))
        .await
        .expect("history");
    assert_eq!(get(&page, "lastSeq").as_f64(), Some(3.0));
    let events: Array = get(&page, "events").unchecked_into();
    assert_eq!(events.length(), 1);
    assert_eq!(get(&events.get(0), "seq").as_f64(), Some(2.0));
    client.close();
}

#[wasm_bindgen_test]
async fn subscribing_with_after_replays_then_continues_live() {
    let client = connected().await;
    let id = execution_id("after");
    for n in 1..=5 {
        publish_over_http(&id, n).await;
    }
    let collector = Collector::new();
    let options = data(r#"{"after":2}"#).unchecked_into();
    let _subscription = client
        .subscribe(id.clone(), collector.handler(), Some(options))
        .expect("subscribe");
    until("the replay", || collector.events.borrow().len() == 3).await;
    publish_over_http(&id, 6).await;
    until("the live event", || collector.events.borrow().len() == 4).await;
    assert_eq!(collector.seqs(), vec![3.0, 4.0, 5.0, 6.0]);
    client.close();
}

#[wasm_bindgen_test]
async fn unsubscribe_stops_delivery() {
    let client = connected().await;
    let (a, b) = (execution_id("unsub-a"), execution_id("unsub-b"));
    let (on_a, on_b) = (Collector::new(), Collector::new());
    let sub_a = client
        .subscribe(
            a.clone(),
            on_a.handler(),
            Some(data(r#"{"after":0}"#).unchecked_into()),
        )
        .expect("a");
    let _sub_b = client
        .subscribe(
            b.clone(),
            on_b.handler(),
            Some(data(r#"{"after":0}"#).unchecked_into()),
        )
        .expect("b");
    publish_over_http(&a, 1).await;
    until("a's first event", || on_a.events.borrow().len() == 1).await;
    sub_a.unsubscribe();
    publish_over_http(&a, 2).await;
    publish_over_http(&b, 1).await;
    until("b's event", || on_b.events.borrow().len() == 1).await;
    assert_eq!(on_a.seqs(), vec![1.0], "nothing after unsubscribe");
    client.close();
}

#[wasm_bindgen_test]
async fn bad_input_rejects_with_a_typed_error_carrying_the_422_detail() {
    let client = connected().await;
    let id = execution_id("invalid");
    let promise = client.publish(id.clone(), "x".into(), data("[1,2]").unchecked_into(), None);
    let error = JsFuture::from(js_sys::Promise::from(JsValue::from(promise)))
        .await
        .expect_err("rejected");
    assert!(error.is_instance_of::<js_sys::Error>());
    assert_eq!(get(&error, "name"), "ExechubError");
    assert_eq!(get(&error, "code"), "invalid_request");
    let detail: Array = get(&error, "detail").unchecked_into();
    assert_eq!(
        js_sys::JSON::stringify(&get(&detail.get(0), "loc"))
            .ok()
            .map(String::from),
        Some(r#"["body","data"]"#.into())
    );

    // The hub's own 422 over HTTP: an empty execution id.
    let promise = publish_http(
        hub().into(),
        String::new(),
        "x".into(),
        data("{}").unchecked_into(),
        None,
    );
    let error = JsFuture::from(js_sys::Promise::from(JsValue::from(promise)))
        .await
        .expect_err("422");
    assert_eq!(
        (get(&error, "code"), get(&error, "status").as_f64()),
        (JsValue::from("invalid_request"), Some(422.0))
    );
    let detail: Array = get(&error, "detail").unchecked_into();
    assert_eq!(
        js_sys::JSON::stringify(&get(&detail.get(0), "loc"))
            .ok()
            .map(String::from),
        Some(r#"["path","execution_id"]"#.into())
    );
    client.close();
}

#[wasm_bindgen_test]
async fn close_rejects_further_publishes_and_reports_the_state() {
    let client = connected().await;
    client.close();
    assert_eq!(JsValue::from(client.state()), "closed");
    let promise = client.publish("x".into(), "y".into(), data("{}").unchecked_into(), None);
    let error = JsFuture::from(js_sys::Promise::from(JsValue::from(promise)))
        .await
        .expect_err("closed");
    assert_eq!(get(&error, "code"), "closed");
}

/// The `lastSeq` of an execution's history page.
async fn last_seq(hub: &str, id: &str) -> f64 {
    let promise = history(hub.into(), id.into(), None);
    let page = JsFuture::from(js_sys::Promise::from(JsValue::from(promise)))
        .await
        .expect("history");
    get(&page, "lastSeq").as_f64().expect("lastSeq")
}

#[wasm_bindgen_test]
async fn resumes_across_a_reset() {
    let hub = short_ttl_hub();
    let client = connected_to(hub).await;
    let id = execution_id("reset");
    // Events and `history_lost` in one log, to check their order.
    let log = Rc::new(RefCell::new(Vec::<String>::new()));
    let (on_event, on_lost) = (Rc::clone(&log), Rc::clone(&log));
    let on_event = Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
        let seq = get(&event, "seq").as_f64().unwrap_or(-1.0);
        on_event.borrow_mut().push(format!("event {seq}"));
    });
    let on_lost = Closure::<dyn FnMut(JsValue)>::new(move |lost: JsValue| {
        let [reason, after, resume_after, epoch] =
            ["reason", "after", "resumeAfter", "epoch"].map(|key| get(&lost, key));
        // The new history's epoch, or none while it has not started yet.
        let epoch_ok = epoch.is_string() || epoch.is_undefined();
        on_lost.borrow_mut().push(format!(
            "lost {:?} {:?} {:?} epoch ok: {epoch_ok}",
            reason.as_string(),
            after.as_f64(),
            resume_after.as_f64(),
        ));
    });
    let options = js_sys::Object::new();
    Reflect::set(&options, &"onHistoryLost".into(), on_lost.as_ref()).expect("options");
    let subscription = client
        .subscribe(
            id.clone(),
            on_event.as_ref().clone().unchecked_into(),
            Some(options.unchecked_into()),
        )
        .expect("subscribe");
    until("the subscription to be confirmed", || {
        subscription.last_seq().is_some()
    })
    .await;
    for n in 1..=3 {
        publish_to(hub, &id, n).await;
    }
    until("three events", || log.borrow().len() == 3).await;

    // The history expires a second after its last event; the next publish
    // starts a new one at seq 1.
    let mut expired = false;
    for _ in 0..400 {
        if last_seq(hub, &id).await == 0.0 {
            expired = true;
            break;
        }
        gloo_timers::future::sleep(Duration::from_millis(25)).await;
    }
    assert!(expired, "timed out waiting for the history to expire");
    for n in 1..=3 {
        assert_eq!(publish_to(hub, &id, n).await, f64::from(n));
    }
    until("the new history's events", || log.borrow().len() == 7).await;
    assert_eq!(
        *log.borrow(),
        [
            "event 1",
            "event 2",
            "event 3",
            "lost Some(\"expired\") Some(3.0) Some(0.0) epoch ok: true",
            "event 1",
            "event 2",
            "event 3",
        ]
    );
    assert_eq!(subscription.last_seq(), Some(3.0));
    client.close();
}

#[wasm_bindgen_test]
async fn a_batch_over_the_socket_is_stored_in_order_and_delivered_as_such() {
    let client = connected().await;
    let id = execution_id("batch");
    let collector = Collector::new();
    let subscription = client
        .subscribe(id.clone(), collector.handler(), None)
        .expect("subscribe");
    until("the subscription to be confirmed", || {
        subscription.last_seq().is_some()
    })
    .await;
    let stored = settled(client.publish_batch(id.clone(), batch(1, 3).unchecked_into(), None))
        .await
        .expect("stored");
    let seqs = ["firstSeq", "lastSeq", "count"].map(|key| get(&stored, key).as_f64());
    assert_eq!(seqs, [Some(1.0), Some(3.0), Some(3.0)]);
    let options = data(r#"{"idempotencyKey":"batch-over-http"}"#).unchecked_into();
    let stored = settled(publish_batch_http(
        hub().into(),
        id.clone(),
        batch(4, 2).unchecked_into(),
        Some(options),
    ))
    .await
    .expect("stored over HTTP");
    assert_eq!(get(&stored, "firstSeq").as_f64(), Some(4.0));
    until("five events", || collector.events.borrow().len() == 5).await;
    assert_eq!(collector.seqs(), vec![1.0, 2.0, 3.0, 4.0, 5.0]);
    let n: Vec<f64> = collector
        .events
        .borrow()
        .iter()
        .filter_map(|event| get(&get(event, "data"), "n").as_f64())
        .collect();
    assert_eq!(
        n,
        vec![1.0, 2.0, 3.0, 4.0, 5.0],
        "data reaches JavaScript as objects"
    );
    client.close();
}

#[wasm_bindgen_test]
async fn a_bad_event_in_a_batch_rejects_it_whole_with_its_location() {
    let client = connected().await;
    let id = execution_id("bad-batch");
    let events = data(r#"[{"eventType":"a","data":{}},{"eventType":"b","data":[1]}]"#);
    let error = settled(client.publish_batch(id.clone(), events.unchecked_into(), None))
        .await
        .expect_err("rejected");
    assert_eq!(get(&error, "code"), "invalid_request");
    let detail: Array = get(&error, "detail").unchecked_into();
    assert_eq!(
        js_sys::JSON::stringify(&get(&detail.get(0), "loc"))
            .ok()
            .map(String::from),
        Some(r#"["body","events",1,"data"]"#.into())
    );
    assert_eq!(last_seq(hub(), &id).await, 0.0, "nothing was stored");
    client.close();
}

#[wasm_bindgen_test]
async fn freeing_the_client_closes_its_socket_and_stops_reconnecting() {
    let states = Rc::new(RefCell::new(Vec::<String>::new()));
    let sink = Rc::clone(&states);
    let on_state = Closure::<dyn FnMut(JsValue)>::new(move |state: JsValue| {
        sink.borrow_mut()
            .push(state.as_string().unwrap_or_default());
    });
    let options = js_sys::Object::new();
    Reflect::set(&options, &"onStateChange".into(), on_state.as_ref()).expect("options");
    let client =
        ExechubClient::new(&ws_url(hub()), Some(options.unchecked_into())).expect("client");
    until("the connection to open", || {
        states.borrow().last().map(String::as_str) == Some("open")
    })
    .await;
    let open = open_websockets().await;
    drop(client); // what `free()` and `Symbol.dispose` do
    assert_eq!(*states.borrow(), ["connecting", "open", "closed"]);
    for _ in 0..400 {
        if open_websockets().await < open {
            break;
        }
        gloo_timers::future::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        open_websockets().await < open,
        "the hub saw the socket close"
    );
    gloo_timers::future::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        states.borrow().len(),
        3,
        "no reconnect after the client was freed"
    );
}

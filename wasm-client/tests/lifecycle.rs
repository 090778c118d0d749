//! Executions as wholes, in real headless Chromium against a real hub
//! (`scripts/test.sh` compiles the hub's URL in): a subscription ends with
//! its execution, a publish after the end is refused with a typed error, and
//! the summary, result and list say how it ended, over HTTP and live.

#![cfg(target_arch = "wasm32")]
#![allow(missing_docs)]

mod support;

use std::cell::RefCell;
use std::rc::Rc;

use exechub_client::publish_http;
use js_sys::Array;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_test::*;

use support::*;

wasm_bindgen_test_configure!(run_in_browser);

/// Publishes `event_type` with `data` over HTTP: the seq, or the error.
async fn publish_event(id: &str, event_type: &str, json: &str) -> Result<JsValue, JsValue> {
    let data = data(json).unchecked_into();
    settled(publish_http(
        hub().into(),
        id.into(),
        event_type.into(),
        data,
        None,
    ))
    .await
}

/// `onEnd`'s calls: `(status, finalEvent)` each.
type Ends = Rc<RefCell<Vec<(JsValue, JsValue)>>>;

fn on_end(ends: &Ends) -> Closure<dyn FnMut(JsValue, JsValue)> {
    let ends = Rc::clone(ends);
    Closure::new(move |status, event| ends.borrow_mut().push((status, event)))
}

fn options_with_end(on_end: &Closure<dyn FnMut(JsValue, JsValue)>) -> JsValue {
    let options = data(r#"{"after":0}"#);
    js_sys::Reflect::set(&options, &"onEnd".into(), on_end.as_ref()).expect("set onEnd");
    options
}

#[wasm_bindgen_test]
async fn a_subscription_ends_once_with_its_final_event_and_is_not_resumed() {
    let client = connected().await;
    let id = execution_id("ends");
    publish_over_http(&id, 1).await;
    let (collector, ends) = (Collector::new(), Ends::default());
    let end = on_end(&ends);
    let subscription = client
        .subscribe(
            id.clone(),
            collector.handler(),
            Some(options_with_end(&end).unchecked_into()),
        )
        .expect("subscribe");
    until("the replay", || collector.events.borrow().len() == 1).await;
    publish_event(&id, "execution_completed", r#"{"result":"ok"}"#)
        .await
        .expect("published");
    until("onEnd", || !ends.borrow().is_empty()).await;
    assert_eq!(collector.seqs(), vec![1.0, 2.0]);
    let (status, final_event) = ends.borrow()[0].clone();
    assert_eq!(status, "completed");
    assert_eq!(get(&final_event, "seq").as_f64(), Some(2.0));
    assert_eq!(get(&final_event, "eventType"), "execution_completed");
    assert_eq!(get(&get(&final_event, "data"), "result"), "ok");
    // Over: the client holds no position for it any more.
    assert_eq!(subscription.last_seq(), None);

    // Subscribing to an ended execution replays it and ends again, once.
    let (again, ends_again) = (Collector::new(), Ends::default());
    let end_again = on_end(&ends_again);
    let options = options_with_end(&end_again).unchecked_into();
    let _again = client
        .subscribe(id.clone(), again.handler(), Some(options))
        .expect("subscribe");
    until("onEnd after the replay", || !ends_again.borrow().is_empty()).await;
    assert_eq!(again.seqs(), vec![1.0, 2.0]);
    assert_eq!(
        ends.borrow().len(),
        1,
        "the first subscription was told once"
    );
    client.close();
}

#[wasm_bindgen_test]
async fn a_publish_after_the_end_is_refused_with_execution_ended() {
    let client = connected().await;
    let id = execution_id("refused");
    publish_event(&id, "execution_failed", r#"{"error":"boom"}"#)
        .await
        .expect("published");
    let error = publish_event(&id, "log", "{}")
        .await
        .expect_err("refused over HTTP");
    assert_eq!(get(&error, "code"), "execution_ended");
    assert_eq!(get(&error, "status").as_f64(), Some(409.0));
    assert_eq!(get(&error, "name"), "ExechubError");
    let promise = client.publish(id.clone(), "log".into(), data("{}").unchecked_into(), None);
    let error = settled(promise).await.expect_err("refused over the socket");
    assert_eq!(get(&error, "code"), "execution_ended");
    client.close();
}

#[wasm_bindgen_test]
async fn summary_result_and_list_say_how_an_execution_ended() {
    let client = connected().await;
    let id = execution_id("summary");
    let unknown = settled(client.get_execution(id.clone()))
        .await
        .expect("answered");
    assert!(unknown.is_null(), "an unknown execution is null");
    publish_over_http(&id, 1).await;
    let running = settled(client.get_execution(id.clone()))
        .await
        .expect("summary");
    assert_eq!(get(&running, "status"), "running");
    assert_eq!(get(&running, "ended"), false);
    assert!(get(&running, "final").is_null());
    // A result that waits is answered by the end.
    let waiting = client.result(id.clone(), Some(data(r#"{"wait":20}"#).unchecked_into()));
    publish_event(&id, "execution_cancelled", r#"{"by":"user"}"#)
        .await
        .expect("published");
    let result = settled(waiting).await.expect("result");
    assert_eq!(get(&result, "status"), "cancelled");
    assert_eq!(get(&result, "ended"), true);
    assert_eq!(get(&get(&result, "final"), "seq").as_f64(), Some(2.0));
    assert!(get(&result, "endedAt").is_string());
    let options = data(r#"{"status":"ended","limit":200}"#).unchecked_into();
    let list = settled(client.list_executions(Some(options)))
        .await
        .expect("list");
    let executions: Array = get(&list, "executions").unchecked_into();
    let ids: Vec<JsValue> = executions.iter().map(|s| get(&s, "executionId")).collect();
    assert!(
        ids.contains(&JsValue::from(id.as_str())),
        "{id} is listed as ended"
    );
    assert!(executions.iter().all(|s| get(&s, "ended") == true));
    client.close();
}

#[wasm_bindgen_test]
async fn the_list_of_executions_is_followed_live() {
    let client = connected().await;
    let id = execution_id("listed");
    let (snapshots, changes) = (Rc::new(RefCell::new(0)), Rc::new(RefCell::new(Vec::new())));
    let counted = Rc::clone(&snapshots);
    let on_snapshot = Closure::<dyn FnMut(JsValue)>::new(move |list: JsValue| {
        assert!(list.is_array());
        *counted.borrow_mut() += 1;
    });
    let seen = Rc::clone(&changes);
    let on_change =
        Closure::<dyn FnMut(JsValue)>::new(move |summary| seen.borrow_mut().push(summary));
    let options = data("{}");
    js_sys::Reflect::set(&options, &"onChange".into(), on_change.as_ref()).expect("set");
    let list = client
        .subscribe_executions(
            on_snapshot.as_ref().clone().unchecked_into(),
            Some(options.unchecked_into()),
        )
        .expect("subscribed");
    until("the snapshot", || *snapshots.borrow() == 1).await;
    let status_of = |wanted: &'static str| {
        let changes = Rc::clone(&changes);
        let id = id.clone();
        move || {
            changes
                .borrow()
                .iter()
                .any(|s| get(s, "executionId") == id.as_str() && get(s, "status") == wanted)
        }
    };
    publish_over_http(&id, 1).await;
    until("the new execution, running", status_of("running")).await;
    publish_event(&id, "execution_completed", "{}")
        .await
        .expect("published");
    until("its end", status_of("completed")).await;
    list.unsubscribe();
    let before = changes.borrow().len();
    publish_over_http(&execution_id("unlisted"), 1).await;
    // The list stopped: a new execution is not reported (a publish to an
    // execution still followed would be, so the wait below is not idle).
    let late = execution_id("late");
    let probe = Collector::new();
    let _probe = client
        .subscribe(late.clone(), probe.handler(), None)
        .expect("subscribe");
    until("the probe to be confirmed", || _probe.last_seq().is_some()).await;
    publish_over_http(&late, 1).await;
    until("the probe event", || probe.events.borrow().len() == 1).await;
    assert_eq!(changes.borrow().len(), before, "nothing after unsubscribe");
    client.close();
}

/// The handle dropped as the garbage collector drops it (`drop` is what its
/// finalizer runs): the client keeps delivering while its subscription
/// lives, then closes its socket once the execution ended.
#[wasm_bindgen_test]
async fn a_client_whose_handle_is_gone_delivers_until_its_subscription_ends_then_closes() {
    let client = connected().await;
    let open = open_websockets().await;
    let id = execution_id("handle-gone");
    let (collector, ends) = (Collector::new(), Ends::default());
    let end = on_end(&ends);
    let options = Some(options_with_end(&end).unchecked_into());
    let subscription = client
        .subscribe(id.clone(), collector.handler(), options)
        .expect("subscribe");
    drop(client);
    for n in 1..=3 {
        publish_over_http(&id, n).await;
    }
    until("three events", || collector.events.borrow().len() == 3).await;
    assert_eq!(
        subscription.last_seq(),
        Some(3.0),
        "the handle still reads it"
    );
    assert_eq!(open_websockets().await, open, "its socket is still open");
    publish_event(&id, "execution_completed", "{}")
        .await
        .expect("published");
    until("onEnd", || !ends.borrow().is_empty()).await;
    assert_eq!(collector.seqs(), vec![1.0, 2.0, 3.0, 4.0]);
    for _ in 0..400 {
        if open_websockets().await < open {
            break;
        }
        gloo_timers::future::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(open_websockets().await < open, "then it closed its socket");
    assert_eq!(subscription.last_seq(), None, "and let its state go");
}

//! The subscription logic against the embedded store, over a real outbox:
//! decisions as values ([`reconcile`]), then whole subscriptions.

use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use exechub_protocol::{LostReason, PublishRequest};

use super::*;
use crate::event::NewEvent;
use crate::feeds::Feeds;
use crate::outbox::Limits;
use crate::store::StoreConfig;
use crate::store::memory::MemoryStore;

fn epoch(text: &str) -> Epoch {
    Epoch::parse(text).expect("epoch")
}

fn page(epoch_text: Option<&str>, oldest: Option<u64>, last: u64) -> Page {
    Page {
        events: Vec::new(),
        last_seq: last,
        oldest_seq: oldest,
        epoch: epoch_text.map(epoch),
        ended: None,
    }
}

fn store(ttl: Duration, max_events: u64) -> (Arc<dyn EventStore>, Arc<Feeds>) {
    let feeds = Feeds::new();
    let config = StoreConfig {
        ttl,
        max_events,
        idempotency_window: Duration::from_secs(60),
        max_bytes: usize::MAX,
        final_state_ttl: Duration::from_secs(60),
        after_end: crate::lifecycle::AfterEnd::Final,
        max_listed: 1000,
    };
    (MemoryStore::new(config, feeds.clone()), feeds)
}

#[test]
fn same_epoch_continues_or_reports_trimming() {
    let (store, _) = store(Duration::from_secs(60), 10);
    let e = epoch("aa");
    let level = reconcile(Some(&e), 3, &page(Some("aa"), Some(1), 5), &*store);
    assert_eq!(level, Reconciled::LEVEL);
    let trimmed = reconcile(Some(&e), 3, &page(Some("aa"), Some(8), 9), &*store);
    assert_eq!(trimmed.lost, Some((LostReason::Trimmed, 7)));
    assert!(!trimmed.reread);
}

#[test]
fn another_epoch_is_lost_and_read_again_from_its_start() {
    let (store, _) = store(Duration::from_secs(60), 10);
    let old = epoch("0123456789abcdef");
    let moved = reconcile(Some(&old), 3, &page(Some("bb"), Some(1), 4), &*store);
    assert_eq!(moved.lost, Some((LostReason::Reset, 0)));
    assert!(moved.reread);
    let gone = reconcile(Some(&old), 3, &page(None, None, 0), &*store);
    assert_eq!(
        (gone.lost, gone.reread),
        (Some((LostReason::Reset, 0)), false)
    );
}

#[test]
fn a_bare_seq_past_the_head_is_a_reset_not_a_stall() {
    let (store, _) = store(Duration::from_secs(60), 10);
    let ahead = reconcile(None, 10, &page(Some("cc"), Some(1), 3), &*store);
    assert_eq!(
        (ahead.lost, ahead.reread),
        (Some((LostReason::Reset, 0)), true)
    );
    let max = reconcile(None, u64::MAX, &page(Some("cc"), Some(1), 3), &*store);
    assert_eq!(max.lost, Some((LostReason::Reset, 0)));
    let within = reconcile(None, 2, &page(Some("cc"), Some(1), 3), &*store);
    assert_eq!(within, Reconciled::LEVEL);
    let nothing_yet = reconcile(
        Some(&epoch("dd")),
        0,
        &page(Some("cc"), Some(1), 3),
        &*store,
    );
    assert_eq!(nothing_yet, Reconciled::LEVEL);
}

/// Frames as text, for assertions.
struct Texts;

impl Encoder for Texts {
    type Frame = Bytes;
    const FAILURE_ENDS_CONNECTION: bool = true;
    const END_ENDS_CONNECTION: bool = true;

    fn encode(&self, item: Item<'_>) -> Bytes {
        Bytes::from(match item {
            Item::Subscribed { after, .. } => format!("subscribed {after}"),
            Item::Event(event) => format!("event {}", event.seq()),
            Item::Lost {
                after,
                resume_after,
                reason,
                ..
            } => format!("lost {after} {resume_after} {}", reason.as_str()),
            Item::Ended { status, seq } => format!("ended {status} {seq}"),
            Item::Failed(_) => "failed".into(),
        })
    }
}

async fn publish(store: &Arc<dyn EventStore>, n: u32) {
    let body = format!(r#"{{"event_type":"t","data":{{"n":{n}}}}}"#);
    let request = PublishRequest::from_slice(body.as_bytes()).expect("valid");
    store
        .append(NewEvent::encode("x".into(), &request))
        .await
        .expect("append");
}

async fn next(outbox: &Outbox<Bytes>) -> String {
    let popped = tokio::time::timeout(Duration::from_secs(5), poll_fn(|cx| outbox.poll_pop(cx)))
        .await
        .expect("a frame in time")
        .expect("open");
    String::from_utf8(popped.to_vec()).expect("utf8")
}

fn subscribe(
    store: &Arc<dyn EventStore>,
    feeds: &Arc<Feeds>,
    after: Option<u64>,
    limits: Limits,
) -> (Subscription<Texts>, Arc<Outbox<Bytes>>) {
    let outbox = Arc::new(Outbox::new(limits));
    let start = Start {
        after,
        epoch: None,
        slow_timeout: Duration::from_secs(5),
        node_limit: 100,
        lifecycle: Arc::new(crate::lifecycle::Lifecycle::new(
            &["execution_completed".into()],
            crate::lifecycle::AfterEnd::Final,
        )),
    };
    let sub = Subscription::start(
        store,
        feeds,
        &Arc::from("x"),
        Arc::clone(&outbox),
        Texts,
        start,
    )
    .expect("under the limit");
    (sub, outbox)
}

const ROOMY: Limits = Limits {
    frames: 1000,
    bytes: 1 << 20,
};

#[tokio::test(start_paused = true)]
async fn a_history_that_restarts_is_reported_then_delivered_from_its_start() {
    let (store, feeds) = store(Duration::from_secs(2), 100);
    let (_sub, outbox) = subscribe(&store, &feeds, Some(0), ROOMY);
    assert_eq!(next(&outbox).await, "subscribed 0");
    for n in 1..=3 {
        publish(&store, n).await;
    }
    for seq in 1..=3 {
        assert_eq!(next(&outbox).await, format!("event {seq}"));
    }
    tokio::time::advance(Duration::from_secs(3)).await;
    for n in 11..=14 {
        publish(&store, n).await;
    }
    assert_eq!(next(&outbox).await, "lost 3 0 expired");
    for seq in 1..=4 {
        assert_eq!(next(&outbox).await, format!("event {seq}"));
    }
}

#[tokio::test]
async fn resuming_past_the_head_reports_and_delivers_what_exists_at_once() {
    let (store, feeds) = store(Duration::from_secs(60), 100);
    for n in 1..=3 {
        publish(&store, n).await;
    }
    let (_sub, outbox) = subscribe(&store, &feeds, Some(10), ROOMY);
    assert_eq!(next(&outbox).await, "subscribed 10");
    assert_eq!(next(&outbox).await, "lost 10 0 reset");
    for seq in 1..=3 {
        assert_eq!(next(&outbox).await, format!("event {seq}"));
    }
}

#[tokio::test]
async fn a_full_queue_falls_back_to_the_store_without_gaps() {
    let (store, feeds) = store(Duration::from_secs(60), 1000);
    let tight = Limits {
        frames: 4,
        bytes: 1 << 20,
    };
    let (_sub, outbox) = subscribe(&store, &feeds, None, tight);
    assert_eq!(next(&outbox).await, "subscribed 0");
    for n in 1..=50 {
        publish(&store, n).await;
    }
    for seq in 1..=50 {
        assert_eq!(next(&outbox).await, format!("event {seq}"));
    }
}

#[tokio::test]
async fn nothing_follows_the_end_of_a_subscription() {
    let (store, feeds) = store(Duration::from_secs(60), 100);
    let (sub, outbox) = subscribe(&store, &feeds, Some(0), ROOMY);
    assert_eq!(next(&outbox).await, "subscribed 0");
    publish(&store, 1).await;
    drop(sub);
    publish(&store, 2).await;
    assert_eq!(next(&outbox).await, "event 1");
    assert!(outbox.is_empty());
    assert_eq!((feeds.active(), feeds.subscriptions()), (0, 0));
}

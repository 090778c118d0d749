//! One conformance suite for every `EventStore`: each case is written once and
//! runs against the embedded `MemoryStore` (`memory::<case>`), against
//! `RedisStore` on a real `redis-server` started by the test (`redis::<case>`)
//! and on a real 6-node Redis Cluster (`cluster::<case>`, sharded pub/sub,
//! appends acknowledged by a replica).
//! The cases pin down what the hub relies on: contiguous seqs per history,
//! range reads, trimming, expiry into a new epoch, idempotent appends and a
//! live feed in seq order. A few cases only one backend can express follow.

mod support;

use std::sync::Arc;
use std::time::Duration;

use exechub::event::Epoch;
use exechub::event::{NewBatch, NewEvent};
use exechub::feeds::Feeds;
use exechub::store::memory::MemoryStore;
use exechub::store::{Change, EventStore, Listed, Receipt, StoreConfig, StoreError};
use exechub_protocol::{Event, LostReason, PublishRequest};

use support::{
    Fixture, Seen, append, append_n, config, eventually, execution_id, follow, range, seqs,
};

/// Runs each case on both stores, each with its own store (and Redis server).
macro_rules! conformance {
    ($($(#[$meta:meta])* $case:ident with $config:expr;)+) => {
        mod memory {
            use super::*;
            $(
                $(#[$meta])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let fixture = Fixture::memory($config);
                    super::$case(Arc::clone(&fixture.store), Arc::clone(&fixture.feeds)).await;
                }
            )+
        }

        mod redis {
            use super::*;
            $(
                $(#[$meta])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let fixture = Fixture::redis($config).await;
                    super::$case(Arc::clone(&fixture.store), Arc::clone(&fixture.feeds)).await;
                }
            )+
        }

        mod cluster {
            use super::*;
            $(
                $(#[$meta])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let fixture = Fixture::cluster($config).await;
                    super::$case(Arc::clone(&fixture.store), Arc::clone(&fixture.feeds)).await;
                }
            )+
        }
    };
}

conformance! {
    seqs_are_contiguous_per_execution_and_independent_across_executions with config();
    concurrent_appends_get_unique_contiguous_seqs_in_one_epoch with config();
    range_returns_events_after_a_seq_in_order_up_to_the_limit with config();
    unknown_execution_reads_as_an_empty_page_without_epoch with config();
    retention_cap_keeps_only_the_newest_events with StoreConfig { max_events: 3, ..config() };
    expired_history_restarts_at_seq_one_in_a_new_epoch
        with StoreConfig { ttl: Duration::from_secs(1), ..config() };
    idempotent_retry_returns_the_original_position_and_stores_nothing with config();
    live_feed_offers_every_append_once_in_seq_order with config();
    terminal_event_ends_the_execution_and_refuses_later_appends with config();
    final_state_outlives_the_events
        with StoreConfig { ttl: Duration::from_secs(1), ..config() };
    ended_batch_and_publish_after_end_when_allowed
        with StoreConfig { after_end: exechub::lifecycle::AfterEnd::Open, ..config() };
    list_of_executions_is_newest_first_and_pages_by_cursor with config();
}

/// Asserts every receipt names the same history; returns it.
fn one_epoch(receipts: &[Receipt]) -> Epoch {
    let epoch = receipts[0].epoch.clone();
    let others: Vec<_> = receipts.iter().filter(|r| r.epoch != epoch).collect();
    assert!(
        others.is_empty(),
        "receipts outside epoch {epoch}: {others:?}"
    );
    epoch
}

async fn seqs_are_contiguous_per_execution_and_independent_across_executions(
    store: Arc<dyn EventStore>,
    _feeds: Arc<Feeds>,
) {
    let (a, b) = (execution_id("contiguous-a"), execution_id("contiguous-b"));
    let (mut on_a, mut on_b) = (Vec::new(), Vec::new());
    for i in 0..5 {
        on_a.push(append(&*store, &a, None).await);
        if i % 2 == 0 {
            on_b.push(append(&*store, &b, None).await);
        }
    }
    let seqs_of = |receipts: &[Receipt]| receipts.iter().map(|r| r.seq).collect::<Vec<_>>();
    assert_eq!(seqs_of(&on_a), [1, 2, 3, 4, 5]);
    assert_eq!(seqs_of(&on_b), [1, 2, 3]);
    assert!(on_a.iter().chain(&on_b).all(|r| !r.duplicate));
    one_epoch(&on_a);
    one_epoch(&on_b);
}

async fn concurrent_appends_get_unique_contiguous_seqs_in_one_epoch(
    store: Arc<dyn EventStore>,
    _feeds: Arc<Feeds>,
) {
    let id = execution_id("concurrent");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (store, id) = (Arc::clone(&store), id.clone());
            tokio::spawn(async move { append_n(&*store, &id, 25).await })
        })
        .collect();
    let mut receipts = Vec::new();
    for task in tasks {
        let mine = task.await.expect("an append task panicked");
        // One task's appends are sequential, so its seqs must rise.
        assert!(mine.windows(2).all(|w| w[0].seq < w[1].seq), "{mine:?}");
        receipts.extend(mine);
    }
    let epoch = one_epoch(&receipts);
    let mut assigned: Vec<u64> = receipts.iter().map(|r| r.seq).collect();
    assigned.sort_unstable();
    let expected: Vec<u64> = (1..=200).collect();
    assert_eq!(assigned, expected, "seqs are not exactly 1..=200");
    let page = range(&*store, &id, 0, 1_000).await;
    assert_eq!(seqs(&page), expected);
    assert_eq!(page.epoch, Some(epoch));
}

async fn range_returns_events_after_a_seq_in_order_up_to_the_limit(
    store: Arc<dyn EventStore>,
    _feeds: Arc<Feeds>,
) {
    let id = execution_id("range");
    let epoch = one_epoch(&append_n(&*store, &id, 10).await);
    let page = range(&*store, &id, 3, 4).await;
    assert_eq!(seqs(&page), [4, 5, 6, 7]);
    assert_eq!(
        (page.last_seq, page.oldest_seq, page.epoch.as_ref()),
        (10, Some(1), Some(&epoch))
    );
    let whole = range(&*store, &id, 0, 100).await;
    assert_eq!(seqs(&whole), (1..=10).collect::<Vec<_>>());
    for event in &whole.events {
        assert_eq!(event.epoch(), &epoch);
        let decoded: Event = serde_json::from_slice(event.json()).expect("stored JSON is an Event");
        assert_eq!(
            (
                decoded.seq,
                decoded.execution_id.as_str(),
                decoded.event_type.as_str()
            ),
            (event.seq(), id.as_str(), "t")
        );
    }
    assert_eq!(seqs(&range(&*store, &id, 8, 100).await), [9, 10]);
    let past_head = range(&*store, &id, 10, 100).await;
    assert!(past_head.events.is_empty());
    assert_eq!((past_head.last_seq, past_head.epoch), (10, Some(epoch)));
    assert!(range(&*store, &id, 0, 0).await.events.is_empty());
}

async fn unknown_execution_reads_as_an_empty_page_without_epoch(
    store: Arc<dyn EventStore>,
    _feeds: Arc<Feeds>,
) {
    append(&*store, &execution_id("known"), None).await;
    let page = range(&*store, &execution_id("unknown"), 0, 10).await;
    assert!(page.events.is_empty());
    assert_eq!(
        (page.last_seq, page.oldest_seq, page.epoch),
        (0, None, None)
    );
}

async fn retention_cap_keeps_only_the_newest_events(
    store: Arc<dyn EventStore>,
    _feeds: Arc<Feeds>,
) {
    let id = execution_id("trim");
    let epoch = one_epoch(&append_n(&*store, &id, 5).await);
    let page = range(&*store, &id, 0, 10).await;
    assert_eq!(seqs(&page), [3, 4, 5]);
    assert_eq!(
        (page.oldest_seq, page.last_seq, page.epoch),
        (Some(3), 5, Some(epoch))
    );
    assert_eq!(seqs(&range(&*store, &id, 1, 10).await), [3, 4, 5]);
    assert_eq!(seqs(&range(&*store, &id, 3, 10).await), [4, 5]);
}

async fn expired_history_restarts_at_seq_one_in_a_new_epoch(
    store: Arc<dyn EventStore>,
    _feeds: Arc<Feeds>,
) {
    let id = execution_id("ttl");
    let old = one_epoch(&append_n(&*store, &id, 2).await);
    let expired = eventually("the 1 s history to expire", async || {
        let page = range(&*store, &id, 0, 10).await;
        (page.last_seq == 0).then_some(page)
    })
    .await;
    assert!(expired.events.is_empty());
    assert_eq!((expired.oldest_seq, expired.epoch), (None, None));
    let next = append(&*store, &id, None).await;
    assert_eq!(next.seq, 1, "a new history starts at seq 1");
    assert_ne!(next.epoch, old, "a new history has a new epoch");
    assert_eq!(store.lost_reason(&old), LostReason::Expired);
}

async fn idempotent_retry_returns_the_original_position_and_stores_nothing(
    store: Arc<dyn EventStore>,
    feeds: Arc<Feeds>,
) {
    let id = execution_id("idempotent");
    let follower = follow(&*store, &feeds, &id).await;
    let first = append(&*store, &id, Some("k1")).await;
    let retry = append(&*store, &id, Some("k1")).await;
    assert!(!first.duplicate);
    assert_eq!(
        (retry.seq, &retry.epoch, &retry.timestamp, retry.duplicate),
        (1, &first.epoch, &first.timestamp, true)
    );
    let page = range(&*store, &id, 0, 10).await;
    assert_eq!((seqs(&page), page.last_seq), (vec![1], 1));
    let other = append(&*store, &id, Some("k2")).await;
    assert_eq!((other.seq, other.duplicate), (2, false));
    // The retry was not announced either: it would have come before seq 2.
    let seen = follower.recorder.wait_for(2).await;
    let expected = [Seen::event(&first.epoch, 1), Seen::event(&first.epoch, 2)];
    assert_eq!(seen, expected);
}

async fn live_feed_offers_every_append_once_in_seq_order(
    store: Arc<dyn EventStore>,
    feeds: Arc<Feeds>,
) {
    let id = execution_id("live");
    let follower = follow(&*store, &feeds, &id).await;
    let epoch = one_epoch(&append_n(&*store, &id, 50).await);
    let seen = follower.recorder.wait_for(50).await;
    let expected: Vec<Seen> = (1..=50).map(|seq| Seen::event(&epoch, seq)).collect();
    assert_eq!(seen, expected);
}

/// A terminal event of type `execution_<status>`, with `data.result`.
fn terminal(execution_id: &str, status: &str, key: Option<&str>) -> NewEvent {
    let body = format!(r#"{{"event_type":"execution_{status}","data":{{"result":42}}}}"#);
    let request = PublishRequest::from_slice(body.as_bytes()).expect("valid");
    NewEvent::encode(execution_id.to_owned(), &request)
        .with_idempotency_key(key.map(str::to_owned))
        .ending_with(Some(Arc::from(status)))
}

async fn terminal_event_ends_the_execution_and_refuses_later_appends(
    store: Arc<dyn EventStore>,
    _feeds: Arc<Feeds>,
) {
    let id = execution_id("end");
    let started = append(&*store, &id, None).await;
    assert_eq!(started.change, Change::Started);
    let running = store.summary(&id).await.expect("summary").expect("known");
    assert_eq!((running.status.as_str(), running.ended), ("running", false));
    let end = store
        .append(terminal(&id, "failed", Some("end-key")))
        .await
        .expect("the terminal event is stored");
    assert_eq!((end.seq, end.change), (2, Change::Ended));
    let refused = store.append(support::event(&id, None)).await;
    assert!(
        matches!(&refused, Err(StoreError::Ended { status }) if status == "failed"),
        "{refused:?}"
    );
    // A retry of the stored terminal event is still answered with its seq.
    let retry = store
        .append(terminal(&id, "failed", Some("end-key")))
        .await
        .expect("an idempotent replay after the end is answered");
    assert_eq!((retry.seq, retry.duplicate), (2, true));
    let summary = store.summary(&id).await.expect("summary").expect("known");
    assert_eq!(
        (
            summary.status.as_str(),
            summary.ended,
            summary.first_seq,
            summary.last_seq,
            summary.events
        ),
        ("failed", true, 1, 2, 2)
    );
    assert!(summary.ended_at.is_some());
    let last = summary
        .final_event
        .expect("the terminal event is the final result");
    assert_eq!((last.seq, last.data["result"].as_u64()), (2, Some(42)));
    let page = range(&*store, &id, 0, 10).await;
    let ended = page
        .ended
        .clone()
        .expect("a page says where the execution ended");
    assert_eq!(
        (ended.status.as_str(), ended.seq, seqs(&page)),
        ("failed", 2, vec![1, 2])
    );
    assert!(
        store
            .summary(&execution_id("unknown"))
            .await
            .expect("summary")
            .is_none()
    );
}

async fn final_state_outlives_the_events(store: Arc<dyn EventStore>, _feeds: Arc<Feeds>) {
    let id = execution_id("final");
    append(&*store, &id, None).await;
    store
        .append(terminal(&id, "completed", None))
        .await
        .expect("stored");
    let expired = eventually("the 1 s events to expire", async || {
        let page = range(&*store, &id, 0, 10).await;
        (page.epoch.is_none()).then_some(page)
    })
    .await;
    assert!(expired.events.is_empty());
    assert_eq!(expired.ended.map(|e| e.seq), Some(2));
    let summary = store.summary(&id).await.expect("summary").expect("kept");
    assert_eq!(
        (
            summary.status.as_str(),
            summary.events,
            summary.last_seq,
            summary.epoch
        ),
        ("completed", 0, 2, None)
    );
    assert!(summary.final_event.is_some());
    // Still ended: a new history does not start.
    let refused = store.append(support::event(&id, None)).await;
    assert!(
        matches!(refused, Err(StoreError::Ended { .. })),
        "{refused:?}"
    );
}

async fn ended_batch_and_publish_after_end_when_allowed(
    store: Arc<dyn EventStore>,
    _feeds: Arc<Feeds>,
) {
    let id = execution_id("batch-end");
    let request = PublishRequest::from_slice(br#"{"event_type":"log","data":{}}"#).expect("valid");
    let mut batch = NewBatch::encode(id.clone(), &[request.clone(), request]);
    let last = batch.events_mut().last_mut().expect("two events");
    *last = last.clone().ending_with(Some(Arc::from("completed")));
    let receipt = store.append_batch(batch).await.expect("stored");
    assert_eq!(
        (receipt.first_seq, receipt.last_seq, receipt.change),
        (1, 2, Change::Ended)
    );
    // This store takes events after the end; the execution stays ended.
    let after = append(&*store, &id, None).await;
    assert_eq!(after.seq, 3);
    let summary = store.summary(&id).await.expect("summary").expect("known");
    assert_eq!(
        (
            summary.status.as_str(),
            summary.last_seq,
            summary.final_event.map(|e| e.seq)
        ),
        ("completed", 3, Some(2))
    );
}

async fn list_of_executions_is_newest_first_and_pages_by_cursor(
    store: Arc<dyn EventStore>,
    _feeds: Arc<Feeds>,
) {
    let ids: Vec<String> = (0..5).map(|_| execution_id("list")).collect();
    for id in &ids {
        append(&*store, id, None).await;
        // Distinct update times, so the order is by time, not by id.
        let before = store
            .summary(id)
            .await
            .expect("summary")
            .expect("known")
            .updated_at;
        eventually("the clock to move on", async || {
            (exechub::clock::now_rfc3339() > before).then_some(())
        })
        .await;
    }
    let first = store.recent(None, 3).await.expect("list");
    let names = |listed: &[Listed]| -> Vec<String> {
        listed
            .iter()
            .map(|l| l.summary.execution_id.clone())
            .collect()
    };
    let newest: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(names(&first), newest[..3].to_vec());
    let cursor = first.last().map(|l| l.cursor.clone()).expect("a cursor");
    let rest = store.recent(Some(&cursor), 10).await.expect("list");
    assert_eq!(names(&rest), newest[3..].to_vec());
    // An update moves an execution to the head once it is announced (the
    // start and the end are announced at once).
    store
        .append(terminal(&ids[0], "completed", None))
        .await
        .expect("stored");
    let head = store.recent(None, 1).await.expect("list");
    assert_eq!(names(&head), vec![ids[0].clone()]);
    assert!(head[0].summary.ended);
}

// Items in the list that the hub did not write can only exist in Redis (the
// replaced service, or an operator, writes the same key); the memory store
// holds nothing but its own events, so this case is Redis-only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_range_skips_list_items_that_are_not_the_hubs() {
    use ::redis::AsyncCommands;

    let fixture = Fixture::redis(config()).await;
    let store = &*fixture.store;
    let id = execution_id("foreign");
    let epoch = one_epoch(&append_n(store, &id, 2).await);
    let key = format!("execution:{id}:events");
    let redis = fixture
        .redis
        .as_ref()
        .expect("a Redis fixture has a server");
    let mut raw = redis
        .connection()
        .await
        .expect("connects to the test redis-server");
    let _: i64 = raw
        .rpush(&key, r#"{"event_type":"x","data":{}}"#)
        .await
        .expect("RPUSH a foreign item");
    let _: i64 = raw.lpush(&key, "not json").await.expect("LPUSH not json");
    append_n(store, &id, 2).await;

    let whole = range(store, &id, 0, 100).await;
    assert_eq!(seqs(&whole), [1, 2, 3, 4]);
    assert_eq!(
        (whole.last_seq, whole.oldest_seq, whole.epoch),
        (4, Some(1), Some(epoch))
    );
    assert_eq!(seqs(&range(store, &id, 2, 100).await), [3, 4]);
    for limit in 1..=5 {
        assert_eq!(
            page_through(store, &id, limit).await,
            [1, 2, 3, 4],
            "limit {limit}"
        );
    }
}

/// Reads a whole history page by page, `limit` at a time, checking each page.
async fn page_through(store: &dyn EventStore, id: &str, limit: usize) -> Vec<u64> {
    let mut read = Vec::new();
    let mut after = 0;
    for _ in 0..100 {
        let page = range(store, id, after, limit).await;
        assert!(
            page.events.len() <= limit,
            "page after {after} exceeds {limit}"
        );
        match page.events.last() {
            Some(last) => after = last.seq(),
            None => break,
        }
        read.extend(seqs(&page));
    }
    read
}

// Only the embedded store has a byte bound of its own; Redis relies on the
// server's `maxmemory`, which is its operator's setting.
#[tokio::test]
async fn memory_bound_evicts_the_least_recently_updated_history_and_tells_its_subscribers() {
    let base = execution_id("bound");
    let [a, b, c, d] = ["a", "b", "c", "d"].map(|name| format!("{base}-{name}"));
    let (history, event) = memory_costs(&format!("{base}-p")).await;
    assert!(
        event < history,
        "an event ({event} B) must cost less than a history ({history} B)"
    );
    let feeds = Feeds::new();
    // Four one-event histories fit exactly; a fifth event does not.
    let bound = StoreConfig {
        max_bytes: 4 * history,
        ..config()
    };
    let store: Arc<dyn EventStore> = MemoryStore::new(bound, feeds.clone());
    let (on_a, on_b) = (
        follow(&*store, &feeds, &a).await,
        follow(&*store, &feeds, &b).await,
    );
    let epoch_a = append(&*store, &a, None).await.epoch;
    let epoch_b = append(&*store, &b, None).await.epoch;
    append(&*store, &c, None).await;
    append(&*store, &a, None).await; // a is now more recent than b and c
    append(&*store, &d, None).await;

    let gone = range(&*store, &b, 0, 10).await;
    assert_eq!(
        (gone.last_seq, gone.epoch),
        (0, None),
        "b should be evicted"
    );
    for kept in [&a, &c, &d] {
        assert!(
            range(&*store, kept, 0, 10).await.epoch.is_some(),
            "{kept} should be kept"
        );
    }
    let head = Seen::Head {
        epoch: None,
        seq: 0,
    };
    assert_eq!(on_b.recorder.seen(), [Seen::event(&epoch_b, 1), head]);
    assert_eq!(
        on_a.recorder.seen(),
        [Seen::event(&epoch_a, 1), Seen::event(&epoch_a, 2)]
    );
    assert_eq!(store.lost_reason(&epoch_b), LostReason::Reset);
}

/// What one single-event history and one more event of `id` cost against
/// `max_bytes` (ids of the same length cost the same).
async fn memory_costs(id: &str) -> (usize, usize) {
    let store = MemoryStore::new(config(), Feeds::new());
    append(&*store, id, None).await;
    let history = store.bytes();
    append(&*store, id, None).await;
    (history, store.bytes() - history)
}

//! Fixtures for the store conformance suite: stores built in memory, on a
//! real `redis-server` or on a real Redis Cluster (both from
//! `exechub-testkit`), a recorder of what the live feed offers, and waits
//! that poll with a bound.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use exechub::event::{Epoch, NewEvent};
use exechub::feeds::{Feeds, Live, Membership, Subscriber};
use exechub::store::memory::MemoryStore;
use exechub::store::redis::{RedisSetup, RedisStore, RedisTarget};
use exechub::store::{EventStore, Page, Receipt, StoreConfig, Watch};
use exechub_protocol::PublishRequest;
use tokio_util::sync::{CancellationToken, DropGuard};

pub use exechub_testkit::{TestRedis, cluster};

/// The longest any wait in the suite may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(5);
/// How often a wait checks its condition again.
const POLL: Duration = Duration::from_millis(10);

/// Roomy settings; each case overrides what it exercises.
pub fn config() -> StoreConfig {
    StoreConfig {
        ttl: Duration::from_secs(60),
        max_events: 1_000,
        idempotency_window: Duration::from_secs(60),
        max_bytes: usize::MAX,
        final_state_ttl: Duration::from_secs(60),
        after_end: exechub::lifecycle::AfterEnd::Final,
        max_listed: 1_000,
    }
}

/// An execution id no other case uses.
pub fn execution_id(case: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{case}-{}-{n}", std::process::id())
}

/// A store under test and the feeds it announces appends to.
pub struct Fixture {
    pub store: Arc<dyn EventStore>,
    pub feeds: Arc<Feeds>,
    /// Stops the Redis store's pub/sub bridge before its server goes away.
    _shutdown: Option<DropGuard>,
    /// The server behind a Redis store; dropped last.
    pub redis: Option<TestRedis>,
    /// The cluster behind a Redis Cluster store; dropped last.
    _cluster: Option<cluster::TestCluster>,
}

impl Fixture {
    /// The embedded store.
    pub fn memory(config: StoreConfig) -> Self {
        let feeds = Feeds::new();
        Self {
            store: MemoryStore::new(config, feeds.clone()),
            feeds,
            _shutdown: None,
            redis: None,
            _cluster: None,
        }
    }

    /// The Redis store, on a server of its own.
    pub async fn redis(config: StoreConfig) -> Self {
        let redis = TestRedis::spawn()
            .await
            .expect("redis-server starts (install it with `apt-get install redis-server`)");
        let feeds = Feeds::new();
        let shutdown = CancellationToken::new();
        let store = RedisStore::connect(&redis.url(), config, feeds.clone(), shutdown.clone())
            .await
            .expect("RedisStore connects to the test redis-server");
        Self {
            store,
            feeds,
            _shutdown: Some(shutdown.drop_guard()),
            redis: Some(redis),
            _cluster: None,
        }
    }

    /// The Redis store on a Redis Cluster of its own (3 masters, 3
    /// replicas): like a server per case, so cluster-wide keys (the list of
    /// executions) hold only the case's executions.
    pub async fn cluster(config: StoreConfig) -> Self {
        let cluster = cluster::TestCluster::spawn()
            .await
            .expect("a Redis Cluster starts (redis-server and redis-cli ≥ 7)");
        let feeds = Feeds::new();
        let shutdown = CancellationToken::new();
        let setup = RedisSetup {
            target: RedisTarget::Cluster(cluster.urls()),
            wait_replicas: 1,
        };
        let store = RedisStore::open(&setup, config, feeds.clone(), shutdown.clone())
            .await
            .expect("RedisStore connects to the test cluster");
        Self {
            store,
            feeds,
            _shutdown: Some(shutdown.drop_guard()),
            redis: None,
            _cluster: Some(cluster),
        }
    }
}

/// A publish of `{"event_type":"t","data":{"n":1}}` to `execution_id`.
pub fn event(execution_id: &str, idempotency_key: Option<&str>) -> NewEvent {
    let request = PublishRequest::from_slice(br#"{"event_type":"t","data":{"n":1}}"#)
        .expect("the test publish is valid");
    NewEvent::encode(execution_id.to_owned(), &request)
        .with_idempotency_key(idempotency_key.map(str::to_owned))
}

/// Appends one event, failing the test if the store refuses it.
pub async fn append(store: &dyn EventStore, execution_id: &str, key: Option<&str>) -> Receipt {
    store
        .append(event(execution_id, key))
        .await
        .expect("the store takes the append")
}

/// Appends `count` events one after the other.
pub async fn append_n(store: &dyn EventStore, execution_id: &str, count: usize) -> Vec<Receipt> {
    let mut receipts = Vec::with_capacity(count);
    for _ in 0..count {
        receipts.push(append(store, execution_id, None).await);
    }
    receipts
}

/// Reads a range, failing the test if the store cannot.
pub async fn range(store: &dyn EventStore, execution_id: &str, after: u64, limit: usize) -> Page {
    store
        .range(execution_id, after, limit)
        .await
        .expect("the store serves the range")
}

/// The seqs of a page's events, in page order.
pub fn seqs(page: &Page) -> Vec<u64> {
    page.events.iter().map(|event| event.seq()).collect()
}

/// Polls `probe` until it yields a value, failing the test after [`PATIENCE`].
pub async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let poll = async {
        loop {
            if let Some(value) = probe().await {
                return value;
            }
            tokio::time::sleep(POLL).await;
        }
    };
    tokio::time::timeout(PATIENCE, poll)
        .await
        .unwrap_or_else(|_| panic!("timed out after {PATIENCE:?} waiting for {what}"))
}

/// One item a live feed offered, with the epoch as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Event { epoch: String, seq: u64 },
    Head { epoch: Option<String>, seq: u64 },
}

impl Seen {
    /// The event at `seq` of history `epoch`.
    pub fn event(epoch: &Epoch, seq: u64) -> Self {
        Self::Event {
            epoch: epoch.to_string(),
            seq,
        }
    }
}

/// A subscriber that records everything it is offered.
#[derive(Default)]
pub struct Recorder(Mutex<Vec<Seen>>);

impl Subscriber for Recorder {
    fn offer(&self, live: Live<'_>, _: bool) {
        let seen = match live {
            Live::Event(event) => Seen::event(event.epoch(), event.seq()),
            Live::Head { epoch, seq } => Seen::Head {
                epoch: epoch.map(Epoch::to_string),
                seq,
            },
        };
        self.lock().push(seen);
    }
}

impl Recorder {
    /// Everything offered so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.lock().clone()
    }

    /// Waits until at least `count` items were offered; returns them all.
    pub async fn wait_for(&self, count: usize) -> Vec<Seen> {
        let what = format!("{count} live items");
        eventually(&what, async || {
            let seen = self.seen();
            (seen.len() >= count).then_some(seen)
        })
        .await
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Seen>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A recorder on an execution's live feed, fed by the store's watch.
pub struct Follower {
    pub recorder: Arc<Recorder>,
    _membership: Membership,
    _watch: Watch,
}

/// Follows `execution_id`'s live feed; returns once appends made from now on
/// are sure to be offered (for Redis: the pub/sub channel is subscribed).
pub async fn follow(store: &dyn EventStore, feeds: &Arc<Feeds>, execution_id: &str) -> Follower {
    let recorder = Arc::new(Recorder::default());
    let membership = feeds
        .join(&Arc::from(execution_id), recorder.clone(), usize::MAX)
        .expect("no subscription limit");
    let mut watch = store.watch(execution_id);
    tokio::time::timeout(PATIENCE, watch.confirmed())
        .await
        .expect("the store confirms the watch");
    Follower {
        recorder,
        _membership: membership,
        _watch: watch,
    }
}

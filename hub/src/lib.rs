//! exechub: a real-time event hub for executions.
//!
//! The data path, top to bottom: a [`transport`] (HTTP, SSE, WebSocket) parses
//! a request and hands it on; a WebSocket connection is a [`session`]; each
//! subscription ([`subscription`]) replays history from the [`store`] and then
//! follows the execution's live feed ([`feeds`]), merged by position
//! `(epoch, seq)` so nothing is skipped or repeated, or a typed `history_lost`
//! says what is gone. Stores (embedded memory, or Redis shared by many hub
//! nodes) assign positions and announce every append to the live feeds through
//! one small interface; they know nothing of subscriptions. Each event is
//! serialized once and its frames shared by every subscriber ([`event`]); each
//! connection has one bounded [`outbox`], filled without waiting by
//! publishers and drained by the connection's own task, so a slow client is
//! closed (and resumes) instead of slowing anyone down. Every publish goes
//! through [`publish`], which also feeds the optional [`providers`] (webhooks,
//! NATS) after the store has the event.
//!
//! Also: [`config`] (flags and environment), [`error`] (the one mapping of
//! failures to HTTP statuses and WebSocket codes), [`auth`], [`retry`] (the
//! one backoff policy), [`clock`] (clocks and ids, a leaf every layer uses).

pub mod auth;
pub mod clock;
pub mod config;
pub mod directory;
pub mod error;
pub mod event;
pub mod feeds;
pub mod lifecycle;
pub mod limits;
pub mod metrics;
pub mod outbox;
pub mod providers;
pub mod publish;
pub mod retry;
pub mod secret;
pub mod session;
pub mod store;
pub mod subscription;
pub mod telemetry;
pub mod transport;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;

use crate::auth::{Auth, AuthSetupError, Origins};

use crate::feeds::Feeds;
use crate::providers::{ProviderError, Providers};
use crate::publish::Publisher;
use crate::store::memory::MemoryStore;
use crate::store::redis::RedisStore;
use crate::store::{EventStore, StoreError};

/// Everything a request handler needs: a reference-counted [`Hub`], so a
/// clone (one per connection) is one pointer.
#[derive(Clone)]
pub struct AppState(Arc<Hub>);

impl std::ops::Deref for AppState {
    type Target = Hub;

    fn deref(&self) -> &Hub {
        &self.0
    }
}

/// The hub's shared parts.
pub struct Hub {
    /// Where events are stored and announced.
    pub store: Arc<dyn EventStore>,
    /// The one way to publish: appends to the store, then feeds the providers.
    pub publisher: Arc<Publisher>,
    /// Local live feeds: who follows which execution on this node.
    pub feeds: Arc<Feeds>,
    /// Which events end an execution.
    pub lifecycle: Arc<lifecycle::Lifecycle>,
    /// Who follows the list of executions (and waits for results) on this node.
    pub directory: Arc<directory::Directory>,
    /// Publish rate per client.
    pub publish_limit: limits::PublishLimiter,
    /// Subscriptions per token.
    pub token_subscriptions: Arc<limits::TokenSubscriptions>,
    /// The configuration the hub started with.
    pub config: Arc<Config>,
    /// Cancelled when the hub shuts down; long-lived connections watch it.
    pub shutdown: CancellationToken,
    /// Tracks WebSocket sessions so shutdown can wait for their close frames.
    pub sessions: TaskTracker,
    /// Open connection counts.
    pub stats: Arc<Stats>,
    /// Token verification (off when no key is configured).
    pub auth: Auth,
    /// Origins allowed to open WebSockets.
    pub origins: Origins,
}

/// Open connection counters, reported by `/health`, and the bound on them.
#[derive(Debug)]
pub struct Stats {
    websockets: AtomicUsize,
    sse_streams: AtomicUsize,
    /// WebSockets and SSE streams allowed at once.
    limit: usize,
    /// Connections refused at the limit.
    refused: AtomicUsize,
}

impl Stats {
    /// Counters for a hub that allows `limit` connections at once.
    pub fn new(limit: usize) -> Self {
        Self {
            websockets: AtomicUsize::new(0),
            sse_streams: AtomicUsize::new(0),
            limit,
            refused: AtomicUsize::new(0),
        }
    }

    /// Counts an open WebSocket until the guard drops; `None` at the limit.
    pub fn websocket(self: &Arc<Self>) -> Option<ConnectionGuard> {
        let guard = self.admit(|s| &s.websockets)?;
        metrics::handles().opened_ws.increment(1);
        Some(guard)
    }

    /// Counts an open SSE stream until the guard drops; `None` at the limit.
    pub fn sse_stream(self: &Arc<Self>) -> Option<ConnectionGuard> {
        let guard = self.admit(|s| &s.sse_streams)?;
        metrics::handles().opened_sse.increment(1);
        Some(guard)
    }

    /// Connections refused at the limit so far.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::Relaxed)
    }

    /// The connection limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    fn admit(self: &Arc<Self>, counter: fn(&Stats) -> &AtomicUsize) -> Option<ConnectionGuard> {
        let guard = ConnectionGuard::new(Arc::clone(self), counter);
        let (websockets, sse) = self.open();
        if websockets + sse > self.limit {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(guard)
    }

    /// (open WebSockets, open SSE streams).
    pub fn open(&self) -> (usize, usize) {
        (
            self.websockets.load(Ordering::Relaxed),
            self.sse_streams.load(Ordering::Relaxed),
        )
    }
}

/// Decrements a [`Stats`] counter on drop.
pub struct ConnectionGuard {
    stats: Arc<Stats>,
    counter: fn(&Stats) -> &AtomicUsize,
}

impl ConnectionGuard {
    fn new(stats: Arc<Stats>, counter: fn(&Stats) -> &AtomicUsize) -> Self {
        counter(&stats).fetch_add(1, Ordering::Relaxed);
        Self { stats, counter }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        (self.counter)(&self.stats).fetch_sub(1, Ordering::Relaxed);
    }
}

impl AppState {
    /// Builds the state for `config`: the store it selects, the providers it
    /// configures, empty registries.
    ///
    /// # Errors
    /// [`StartError`] when the configured Redis cannot be reached, a
    /// provider's or the auth configuration is unusable, or `--dev-token` is
    /// asked for outside development.
    pub async fn new(config: Config) -> Result<Self, StartError> {
        let auth = config.auth()?;
        if config.dev_token && (config.jwt_secret.is_none() || !config.listen.ip().is_loopback()) {
            return Err(StartError::DevToken);
        }
        let shutdown = CancellationToken::new();
        metrics::start(&config, &shutdown);
        let feeds = Feeds::new();
        let store: Arc<dyn EventStore> = match config.redis() {
            Some(redis) => {
                RedisStore::open(&redis, config.store(), feeds.clone(), shutdown.clone()).await?
            }
            None => {
                let memory = MemoryStore::new(config.store(), feeds.clone());
                memory.spawn_sweeper(shutdown.clone());
                memory
            }
        };
        let backend = if config.redis_url.is_some() {
            "redis"
        } else {
            "memory"
        };
        let store = metrics::store::MeteredStore::wrap(store, backend);
        let stats = Arc::new(Stats::new(config.connection_limit(open_files_limit())));
        let providers = Providers::start(config.providers(), &shutdown).await?;
        let lifecycle = lifecycle::Lifecycle::new(&config.terminal_event_types, config.after_end());
        let directory = directory::Directory::spawn(Arc::clone(&store), shutdown.clone());
        Ok(Self(Arc::new(Hub {
            publisher: Arc::new(Publisher::new(
                Arc::clone(&store),
                providers,
                lifecycle.clone(),
                Arc::clone(&directory),
            )),
            store,
            lifecycle: Arc::new(lifecycle),
            directory,
            feeds,
            publish_limit: limits::PublishLimiter::new(config.publish_rate, config.publish_burst),
            token_subscriptions: limits::TokenSubscriptions::new(
                config.max_subscriptions_per_token,
            ),
            auth,
            origins: config.origins(),
            config: Arc::new(config),
            shutdown,
            sessions: TaskTracker::new(),
            stats,
        })))
    }
}

/// Why the hub could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The store could not be set up (e.g. Redis unreachable).
    #[error("cannot start the event store: {0}")]
    Store(#[from] StoreError),
    /// A provider could not be set up (bad configuration).
    #[error("cannot start the providers: {0}")]
    Provider(#[from] ProviderError),
    /// The auth configuration is unusable.
    #[error(transparent)]
    Auth(#[from] AuthSetupError),
    /// `--dev-token` was asked for where it is not allowed.
    #[error(
        "--dev-token needs --jwt-secret and a loopback --listen address (it is for development only)"
    )]
    DevToken,
}

/// Serves the hub on `listener` until `shutdown` completes, then closes every
/// connection (WebSockets with 1001 "going away", SSE streams ended) and
/// returns — after `--shutdown-timeout` at the latest, whatever the clients
/// do: a client that stopped reading cannot hold the process.
///
/// # Errors
/// An I/O error from the listener.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let token = state.shutdown.clone();
    let grace = state.config.shutdown_timeout();
    let connections = TaskTracker::new();
    let router = transport::router(state.clone());
    let accept = transport::listener::serve(
        listener,
        state.clone(),
        router,
        token.clone(),
        connections.clone(),
    );
    tokio::select! {
        () = accept => {}
        () = shutdown => {}
        () = token.cancelled() => {}
    }
    tracing::info!("shutting down: closing connections");
    token.cancel();
    connections.close();
    state.sessions.close();
    let closed = async {
        connections.wait().await;
        state.sessions.wait().await;
    };
    if tokio::time::timeout(grace, closed).await.is_err() {
        tracing::warn!("connections still open after {grace:?}; stopping without them");
    }
    Ok(())
}

/// The process's open-file limit, raised to its hard maximum first: every
/// connection is a descriptor, and the default soft limit (often 1024) would
/// refuse connections long before memory runs out.
pub fn open_files_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(error) => {
            tracing::warn!(%error, "cannot read or raise the open-file limit");
            1024
        }
    }
}

impl AppState {
    /// A fresh development token (subscribe and publish everywhere, 12 hours),
    /// when the hub runs with `--dev-token`.
    pub fn dev_token(&self) -> Option<String> {
        let secret = self
            .config
            .jwt_secret
            .as_ref()
            .filter(|_| self.config.dev_token)?;
        let everything = vec!["publish".into(), "subscribe".into()];
        let claims = auth::Claims {
            iss: self.config.jwt_issuer.clone(),
            aud: self.config.jwt_audience.clone(),
            ..auth::Claims::issue("dev", 12 * 3600, everything, None)
        };
        auth::mint(secret, &claims).ok()
    }
}

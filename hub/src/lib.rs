//! exechub: a real-time event hub for executions.
//!
//! Workers publish events about an execution (HTTP `POST` or a WebSocket
//! `publish`); the [`store`] assigns each one the next per-execution `seq`,
//! keeps it, and announces it on the [`broker`]'s live feed, where every local
//! subscriber (WebSocket or SSE) shares the one serialized copy. A subscriber
//! that asks to resume after a seq gets history first, then live events, merged
//! by seq so nothing is skipped or repeated ([`broker::follow`]). Transports in
//! [`transport`] only parse and hand off; a WebSocket connection's loop lives in
//! [`session`]. All queues are bounded: a client that cannot keep up is
//! disconnected with a close code and resumes, instead of slowing anyone down.
//! Every publish goes through [`publish`], which also feeds the optional
//! [`providers`] (webhooks, NATS) after the store has the event, through
//! bounded queues that never hold a publish up.
//!
//! Modules: [`config`] (flags and environment), [`error`] (the one mapping of
//! failures to HTTP statuses and WebSocket codes), [`event`] (serialize-once
//! events), [`store`], [`broker`], [`publish`], [`providers`], [`transport`],
//! [`session`].

pub mod auth;
pub mod broker;
pub mod config;
pub mod error;
pub mod event;
pub mod providers;
pub mod publish;
pub mod session;
pub mod store;
pub mod transport;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;

use crate::auth::{Auth, AuthSetupError, Origins};

use crate::broker::Topics;
use crate::providers::{ProviderError, Providers};
use crate::publish::Publisher;
use crate::store::memory::MemoryStore;
use crate::store::redis::RedisStore;
use crate::store::{EventStore, StoreError};

/// Everything a request handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Where events are stored and announced.
    pub store: Arc<dyn EventStore>,
    /// The one way to publish: appends to the store, then feeds the providers.
    pub publisher: Arc<Publisher>,
    /// Local live feeds, for `/health` counts.
    pub topics: Arc<Topics>,
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

/// Open connection counters, reported by `/health`.
#[derive(Debug, Default)]
pub struct Stats {
    websockets: AtomicUsize,
    sse_streams: AtomicUsize,
}

impl Stats {
    /// Counts an open WebSocket until the guard drops.
    pub fn websocket(self: &Arc<Self>) -> ConnectionGuard {
        ConnectionGuard::new(Arc::clone(self), |s| &s.websockets)
    }

    /// Counts an open SSE stream until the guard drops.
    pub fn sse_stream(self: &Arc<Self>) -> ConnectionGuard {
        ConnectionGuard::new(Arc::clone(self), |s| &s.sse_streams)
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
        let topics = Topics::new(config.subscriber_buffer);
        let store: Arc<dyn EventStore> = match &config.redis_url {
            Some(url) => {
                RedisStore::connect(url, config.store(), Arc::clone(&topics), shutdown.clone())
                    .await?
            }
            None => {
                let memory = MemoryStore::new(config.store(), Arc::clone(&topics));
                memory.spawn_sweeper(shutdown.clone());
                memory
            }
        };
        let providers = Providers::start(config.providers(), &shutdown).await?;
        Ok(Self {
            publisher: Arc::new(Publisher::new(Arc::clone(&store), providers)),
            store,
            topics,
            auth,
            origins: config.origins(),
            config: Arc::new(config),
            shutdown,
            sessions: TaskTracker::new(),
            stats: Arc::default(),
        })
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
/// connection (WebSockets with 1001 "going away") and returns.
///
/// # Errors
/// An I/O error from the listener.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let token = state.shutdown.clone();
    let sessions = state.sessions.clone();
    let grace = state.config.shutdown_timeout();
    let app = transport::router(state);
    let stop = token.clone();
    let signalled = async move {
        tokio::select! {
            () = shutdown => {}
            () = stop.cancelled() => {}
        }
        tracing::info!("shutting down: closing connections");
        stop.cancel();
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(signalled)
        .await?;
    sessions.close();
    if tokio::time::timeout(grace, sessions.wait()).await.is_err() {
        tracing::warn!("some WebSocket sessions did not close within {grace:?}");
    }
    Ok(())
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

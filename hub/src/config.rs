//! Command-line and environment configuration: the only place that reads the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::auth::{Auth, AuthSetupError, Origins, Secret};

/// The command line: serve (the default), or a subcommand.
#[derive(Debug, Parser)]
#[command(name = "exechub", version, about, long_about = None, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// A tool instead of the server.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Server settings.
    #[command(flatten)]
    pub config: Config,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a signed HS256 token, for development and tests.
    Token(TokenArgs),
}

/// `exechub token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The HS256 secret the hub verifies with.
    #[arg(long, env = "EXECHUB_JWT_SECRET", hide_env_values = true)]
    pub secret: Secret,
    /// A permission to grant (repeatable).
    #[arg(long = "scope", value_parser = ["publish", "subscribe"], required = true)]
    pub scopes: Vec<String>,
    /// An execution id, or a prefix ending in `*`, to limit the token to (repeatable; default all).
    #[arg(long = "execution")]
    pub executions: Vec<String>,
    /// Lifetime: seconds, or a number with s, m, h or d (e.g. `1h`).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
    /// The `sub` claim.
    #[arg(long, default_value = "dev")]
    pub sub: String,
    /// The `iss` claim.
    #[arg(long)]
    pub issuer: Option<String>,
    /// The `aud` claim.
    #[arg(long)]
    pub audience: Option<String>,
}

/// `90`, `90s`, `500ms`, `15m`, `1h`, `2d`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 90s, 15m or 1h"))?;
    if unit == "ms" {
        return Ok(Duration::from_millis(n));
    }
    let seconds = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("unknown unit in `{text}`; use ms, s, m, h or d")),
    };
    Ok(Duration::from_secs(seconds))
}

use crate::providers::{ProvidersConfig, nats, webhook};

/// exechub: a real-time event hub for executions.
///
/// Every flag can also be set through the environment variable named in its help.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port (the bound address is logged).
    #[arg(long, env = "EXECHUB_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Threads running the hub's tasks; 0: one per CPU core. Fewer threads
    /// than cores spend less CPU per event (fewer cross-thread wake-ups) at
    /// some latency; worth it on a machine shared with Redis (bench/RESULTS.md,
    /// "Worker threads: one against two", has both figures).
    #[arg(long, env = "EXECHUB_WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,

    /// Seconds an execution's history is kept after its last event.
    #[arg(long, env = "EXECHUB_EVENT_TTL", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub event_ttl: u64,

    /// Event types that end an execution (comma-separated); the event's `data` is
    /// its final result and later publishes are refused with 409. Empty: executions never end.
    #[arg(
        long,
        env = "EXECHUB_TERMINAL_EVENT_TYPES",
        value_delimiter = ',',
        default_value = "execution_completed,execution_failed,execution_cancelled,execution_timed_out"
    )]
    pub terminal_event_types: Vec<String>,

    /// How long an ended execution's summary (status, final result) is kept
    /// after its events expire, e.g. `7d`, `12h`.
    #[arg(long, env = "EXECHUB_FINAL_STATE_TTL", default_value = "7d", value_parser = parse_duration)]
    pub final_state_ttl: Duration,

    /// Accept publishes to an execution after its terminal event (they are
    /// stored and delivered; the execution stays ended).
    #[arg(long, env = "EXECHUB_ALLOW_PUBLISH_AFTER_END")]
    pub allow_publish_after_end: bool,

    /// Executions the recent-executions list keeps (most recently updated first).
    #[arg(long, env = "EXECHUB_MAX_LISTED_EXECUTIONS", default_value_t = 10_000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_listed_executions: usize,

    /// Largest accepted event body (HTTP) or publish frame (WebSocket), in bytes.
    #[arg(long, env = "EXECHUB_MAX_EVENT_BYTES", default_value_t = 1024 * 1024)]
    pub max_event_bytes: usize,

    /// Events one batch publish may carry (HTTP `…/events/batch`, WebSocket `publish` with `events`).
    #[arg(long, env = "EXECHUB_MAX_BATCH_EVENTS", default_value_t = 1000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_batch_events: usize,

    /// Largest accepted batch body (HTTP) or batch frame (WebSocket), in bytes.
    #[arg(long, env = "EXECHUB_MAX_BATCH_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_batch_bytes: usize,

    /// Events retained per execution; the oldest are trimmed beyond this.
    #[arg(long, env = "EXECHUB_MAX_EVENTS_PER_EXECUTION", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_events_per_execution: u64,

    /// Frames queued per connection (WebSocket or SSE) before it counts as slow.
    #[arg(long, env = "EXECHUB_CLIENT_QUEUE", default_value_t = 1024)]
    pub client_queue: usize,

    /// Bytes queued per connection before it counts as slow.
    #[arg(long, env = "EXECHUB_CLIENT_QUEUE_BYTES", default_value_t = 1024 * 1024)]
    pub client_queue_bytes: usize,

    /// Open WebSocket connections and SSE streams allowed in total; beyond it
    /// new ones are refused with 503 and `Retry-After`. Default: what the
    /// process's open-file limit allows, less a reserve.
    #[arg(long, env = "EXECHUB_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Events per second one client may publish (a client is its token, or
    /// its connection when auth is off); 0 disables the limit. Beyond it:
    /// HTTP 429 with `Retry-After`, WebSocket error `rate_limited`.
    #[arg(long, env = "EXECHUB_PUBLISH_RATE", default_value_t = 10_000)]
    pub publish_rate: u64,

    /// Events one client may publish in a burst above `--publish-rate`.
    #[arg(long, env = "EXECHUB_PUBLISH_BURST", default_value_t = 20_000)]
    pub publish_burst: u64,

    /// Subscriptions one token may hold across all its connections (auth on).
    #[arg(
        long,
        env = "EXECHUB_MAX_SUBSCRIPTIONS_PER_TOKEN",
        default_value_t = 10_000
    )]
    pub max_subscriptions_per_token: usize,

    /// Subscriptions this node holds in total (all connections, WebSocket and SSE).
    #[arg(
        long,
        env = "EXECHUB_MAX_TOTAL_SUBSCRIPTIONS",
        default_value_t = 100_000
    )]
    pub max_total_subscriptions: usize,

    /// Bytes the embedded store may hold; beyond it the least recently updated
    /// executions are evicted (their subscribers get `history_lost`).
    #[arg(long, env = "EXECHUB_MEMORY_MAX_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub memory_max_bytes: usize,

    /// How long a WebSocket may be silent before the hub pings it (e.g. `25s`, `500ms`).
    #[arg(long, env = "EXECHUB_PING_INTERVAL", default_value = "25s", value_parser = parse_duration)]
    pub ping_interval: Duration,

    /// How long after a ping a silent WebSocket is closed (4003).
    #[arg(long, env = "EXECHUB_PING_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub ping_timeout: Duration,

    /// Milliseconds a live event may wait for room in a full client queue
    /// before that client is disconnected as a slow consumer.
    #[arg(long, env = "EXECHUB_SLOW_CLIENT_TIMEOUT_MS", default_value_t = 2000)]
    pub slow_client_timeout_ms: u64,

    /// Subscriptions allowed on one WebSocket connection.
    #[arg(long, env = "EXECHUB_MAX_SUBSCRIPTIONS", default_value_t = 1000)]
    pub max_subscriptions: usize,

    /// Seconds between SSE keep-alive comments.
    #[arg(long, env = "EXECHUB_SSE_KEEPALIVE", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    pub sse_keepalive: u64,

    /// Seconds to wait for open connections to close on shutdown.
    #[arg(long, env = "EXECHUB_SHUTDOWN_TIMEOUT", default_value_t = 10)]
    pub shutdown_timeout: u64,

    /// Redis URL (e.g. `redis://127.0.0.1:6379`): store events in Redis and fan
    /// out across hub nodes. Without it the hub uses its embedded store.
    /// `REDIS_URL` is also accepted.
    #[arg(long, env = "EXECHUB_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Redis Cluster seed nodes, comma-separated (e.g.
    /// `redis://10.0.0.1:7000,redis://10.0.0.2:7000`): store events in a
    /// Redis Cluster (Redis ≥ 7) and fan out with sharded pub/sub. Not with
    /// `--redis-url`.
    #[arg(
        long,
        env = "EXECHUB_REDIS_CLUSTER",
        value_delimiter = ',',
        conflicts_with = "redis_url"
    )]
    pub redis_cluster: Vec<String>,

    /// Replicas that must acknowledge each append (Redis `WAIT`, up to 1 s)
    /// before the publish is acknowledged, so an acknowledged event survives
    /// a failover. 0 acknowledges once the master has it.
    #[arg(long, env = "EXECHUB_REDIS_WAIT_REPLICAS", default_value_t = 0)]
    pub redis_wait_replicas: u32,

    /// Seconds an idempotency key is remembered (a retry within it returns the original seq).
    #[arg(long, env = "EXECHUB_IDEMPOTENCY_WINDOW", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub idempotency_window: u64,

    /// HS256 secret: require bearer JWTs signed with it on every API and socket.
    #[arg(long, env = "EXECHUB_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// PEM public key (RSA for RS256, EC P-256 for ES256): require JWTs it verifies.
    #[arg(long, env = "EXECHUB_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,

    /// Required `iss` claim.
    #[arg(long, env = "EXECHUB_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim.
    #[arg(long, env = "EXECHUB_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Page origin allowed to open WebSockets (repeatable; env: comma-separated). Default: any.
    #[arg(
        long = "allowed-origin",
        env = "EXECHUB_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Page origin allowed to call the HTTP API from a browser (CORS;
    /// repeatable; env: comma-separated; `*` for any). Default: none, i.e.
    /// same-origin pages only. `/dev/token` is never shared with other origins.
    #[arg(
        long = "cors-origin",
        env = "EXECHUB_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,

    /// Development only: print a token that allows everything and serve fresh
    /// ones at `/dev/token` for the demo. Refused unless `--listen` is a
    /// loopback address and `--jwt-secret` is set; deliberately has no
    /// environment variable, so a stray variable cannot turn it on.
    #[arg(long)]
    pub dev_token: bool,

    /// Directory of static files served at `/` (the web demo). Defaults to
    /// `web-demo/dist` when it has been built (`scripts/build-web.sh`).
    #[arg(long, env = "EXECHUB_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,

    /// Webhook URL that every accepted event is POSTed to; repeat the flag for
    /// several (the environment variable takes a comma-separated list).
    #[arg(long = "webhook", env = "EXECHUB_WEBHOOK", value_delimiter = ',', value_parser = webhook::parse_url)]
    pub webhooks: Vec<reqwest::Url>,

    /// Secret that signs webhook requests (`X-Exechub-Signature`); without it they are unsigned.
    #[arg(long, env = "EXECHUB_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<Secret>,

    /// Milliseconds one webhook attempt may take (connect, send, answer).
    #[arg(long, env = "EXECHUB_WEBHOOK_TIMEOUT_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_timeout_ms: u64,

    /// Attempts per event and webhook URL before the event is skipped for that URL.
    #[arg(long, env = "EXECHUB_WEBHOOK_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub webhook_max_attempts: u32,

    /// NATS server URL (e.g. `nats://127.0.0.1:4222`): publish every accepted event to NATS.
    #[arg(long, env = "EXECHUB_NATS_URL")]
    pub nats_url: Option<String>,

    /// First subject token(s) for NATS: events go to `<prefix>.<execution_id>.events`.
    #[arg(long, env = "EXECHUB_NATS_SUBJECT_PREFIX", default_value = "executions", value_parser = nats::parse_subject_prefix)]
    pub nats_subject_prefix: String,

    /// Publish to NATS through JetStream, waiting for each acknowledgement
    /// (a stream must capture the subjects).
    #[arg(long, env = "EXECHUB_NATS_JETSTREAM", value_parser = clap::builder::BoolishValueParser::new())]
    pub nats_jetstream: bool,

    /// Events each provider (every webhook URL, NATS) may queue; when full, the oldest are dropped.
    #[arg(long, env = "EXECHUB_PROVIDER_QUEUE", default_value_t = 10_000)]
    pub provider_queue: usize,

    /// Bytes of events each provider may queue; when full, the oldest are dropped.
    #[arg(long, env = "EXECHUB_PROVIDER_QUEUE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub provider_queue_bytes: usize,

    /// Logs and metrics (`--log-format`, `--metrics-token`).
    #[command(flatten)]
    pub operations: crate::telemetry::OperationsConfig,
}

impl Config {
    /// History time-to-live.
    pub fn event_ttl(&self) -> Duration {
        Duration::from_secs(self.event_ttl)
    }

    /// Slow-consumer timeout.
    pub fn slow_client_timeout(&self) -> Duration {
        Duration::from_millis(self.slow_client_timeout_ms)
    }

    /// Shutdown grace period.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout)
    }

    /// Parses the command line and environment, including the conventional `REDIS_URL`.
    pub fn from_env() -> Cli {
        use clap::{CommandFactory, FromArgMatches};
        // `--help` never shows environment values: they may be secrets
        // (`EXECHUB_REDIS_URL=redis://:password@…`).
        let command = Cli::command().mut_args(|arg| arg.hide_env_values(true));
        let mut cli =
            Cli::from_arg_matches(&command.get_matches()).unwrap_or_else(|error| error.exit());
        if cli.config.redis_url.is_none() && cli.config.redis_cluster.is_empty() {
            cli.config.redis_url = std::env::var("REDIS_URL")
                .ok()
                .filter(|url| !url.is_empty());
        }
        cli
    }

    /// How tokens are verified (off when no key is configured).
    ///
    /// # Errors
    /// [`AuthSetupError`] for an unreadable or unsupported key, or two keys.
    pub fn auth(&self) -> Result<Auth, AuthSetupError> {
        let (issuer, audience) = (self.jwt_issuer.as_deref(), self.jwt_audience.as_deref());
        match (&self.jwt_secret, &self.jwt_public_key) {
            (Some(_), Some(_)) => Err(AuthSetupError::Both),
            (Some(secret), None) => Auth::hs256(secret, issuer, audience),
            (None, Some(path)) => Auth::public_key(path, issuer, audience),
            (None, None) => Ok(Auth::off()),
        }
    }

    /// The WebSocket origin allowlist.
    pub fn origins(&self) -> Origins {
        Origins::new(&self.allowed_origins)
    }

    /// The directory served at `/`: `--static-dir`, or the built demo when present.
    pub fn static_dir(&self) -> Option<PathBuf> {
        self.static_dir.clone().or_else(|| {
            let built = PathBuf::from("web-demo/dist");
            built.join("index.html").is_file().then_some(built)
        })
    }

    /// Where the Redis store connects, when Redis is configured.
    pub fn redis(&self) -> Option<crate::store::redis::RedisSetup> {
        use crate::store::redis::{RedisSetup, RedisTarget};
        let target = match (&self.redis_url, self.redis_cluster.as_slice()) {
            (Some(url), _) => RedisTarget::Single(url.clone()),
            (None, []) => return None,
            (None, nodes) => RedisTarget::Cluster(nodes.to_vec()),
        };
        Some(RedisSetup {
            target,
            wait_replicas: self.redis_wait_replicas,
        })
    }

    /// Whether the terminal event is the last one (`--allow-publish-after-end`):
    /// the one place the flag is read.
    pub fn after_end(&self) -> crate::lifecycle::AfterEnd {
        crate::lifecycle::AfterEnd::from_flag(self.allow_publish_after_end)
    }

    /// Settings for the store.
    pub fn store(&self) -> crate::store::StoreConfig {
        crate::store::StoreConfig {
            ttl: self.event_ttl(),
            max_events: self.max_events_per_execution,
            idempotency_window: Duration::from_secs(self.idempotency_window),
            max_bytes: self.memory_max_bytes,
            final_state_ttl: self.final_state_ttl,
            after_end: self.after_end(),
            max_listed: self.max_listed_executions,
        }
    }

    /// What one connection may have queued.
    pub fn outbox_limits(&self) -> crate::outbox::Limits {
        crate::outbox::Limits {
            frames: self.client_queue,
            bytes: self.client_queue_bytes,
        }
    }

    /// Connections allowed: `--max-connections`, or what `open_files` (the
    /// process's descriptor limit) leaves after a reserve for Redis, NATS,
    /// webhooks and the listener.
    pub fn connection_limit(&self, open_files: u64) -> usize {
        const RESERVE: u64 = 256;
        self.max_connections.unwrap_or_else(|| {
            usize::try_from(open_files.saturating_sub(RESERVE).max(64)).unwrap_or(usize::MAX)
        })
    }

    /// Which providers to run, and their settings.
    pub fn providers(&self) -> ProvidersConfig {
        ProvidersConfig {
            queue: crate::providers::QueueLimits {
                events: self.provider_queue,
                bytes: self.provider_queue_bytes,
            },
            webhook: webhook::WebhookConfig {
                urls: self.webhooks.clone(),
                secret: self.webhook_secret.clone(),
                timeout: Duration::from_millis(self.webhook_timeout_ms),
                max_attempts: self.webhook_max_attempts,
            },
            nats: self.nats_url.clone().map(|url| nats::NatsConfig {
                url,
                subject_prefix: self.nats_subject_prefix.clone(),
                jetstream: self.nats_jetstream,
            }),
        }
    }
}

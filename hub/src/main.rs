//! The `exechub` binary: parse configuration, start logging, bind, serve.

use anyhow::Context;
use exechub::config::{Command, TokenArgs};
use exechub::{AppState, Config, auth};
use tokio::net::TcpListener;

/// mimalloc instead of glibc's malloc. A request allocates and frees dozens of
/// small buffers, often on different worker threads; glibc's arena locks and
/// consolidation cost ~15% of the hub's CPU per publish, mimalloc about a
/// third of that. The price: ~0.5 KB more RSS per idle connection and ~8 MB
/// at start (bench/RESULTS.md has both measurements).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Config::from_env();
    if let Some(Command::Token(args)) = cli.command {
        return print_token(&args);
    }
    let config = cli.config;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if config.worker_threads > 0 {
        runtime.worker_threads(config.worker_threads);
    }
    let runtime = runtime.build().context("cannot start the runtime")?;
    runtime.block_on(serve(config))
}

/// Runs the hub until a shutdown signal.
async fn serve(config: Config) -> anyhow::Result<()> {
    exechub::telemetry::init_logging(config.operations.log_format);
    let listen = config.listen;
    let state = AppState::new(config).await?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr().context("no local address")?;
    announce(&state, addr).await;
    exechub::run(listener, state, shutdown_signal())
        .await
        .context("server failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// Logs how the hub is set up; the last line tells tests the bound address.
async fn announce(state: &AppState, addr: std::net::SocketAddr) {
    if !state.auth.enabled() {
        tracing::warn!(
            "authentication is OFF: anyone who reaches this port can publish and subscribe (set --jwt-secret or --jwt-public-key)"
        );
    }
    if !state.origins.restricted() {
        tracing::info!(
            "WebSocket connections are accepted from any Origin (set --allowed-origin to restrict)"
        );
    }
    if let Some(token) = state.dev_token() {
        // Printed on stdout, never logged: this is the development convenience `--dev-token` asks for.
        #[allow(clippy::print_stdout)]
        {
            println!("development token (publish + subscribe on every execution, 12 h):\n{token}");
        }
    }
    if let Some(dir) = state.config.static_dir() {
        tracing::info!(dir = %dir.display(), "serving static files at /");
    }
    let health = state.store.health().await;
    tracing::info!(store = health.backend, "exechub listening on http://{addr}");
}

/// `exechub token …`: prints a signed token.
fn print_token(args: &TokenArgs) -> anyhow::Result<()> {
    let executions = (!args.executions.is_empty()).then(|| args.executions.clone());
    let claims = auth::Claims {
        iss: args.issuer.clone(),
        aud: args.audience.clone(),
        ..auth::Claims::issue(
            &args.sub,
            args.ttl.as_secs(),
            args.scopes.clone(),
            executions,
        )
    };
    let token = auth::mint(&args.secret, &claims).map_err(anyhow::Error::msg)?;
    #[allow(clippy::print_stdout)]
    {
        println!("{token}");
    }
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

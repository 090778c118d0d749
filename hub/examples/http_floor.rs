//! The floor of a single-event HTTP publish on this machine: the hub's HTTP
//! stack (a multi-thread tokio runtime, hyper's HTTP/1.1 connection with
//! `TCP_NODELAY`, an axum route with `Path` and `Bytes` extractors,
//! mimalloc) around a handler that stores nothing and answers `202` with a
//! receipt of the hub's shape. What it costs per request is what any hub
//! built on these crates pays before validating, storing or fanning out.
//!
//! ```sh
//! cargo build --release -p exechub --example http_floor -p exechub-bench
//! ./target/release/examples/http_floor 127.0.0.1:8097 & FLOOR=$!
//! ./target/release/exechub-bench publish --url http://127.0.0.1:8097 --hub-pid $FLOOR \
//!     --requests 100000 --connections 32 --executions 100
//! kill $FLOOR
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Seqs handed out, so the receipt changes from one answer to the next.
static SEQ: AtomicU64 = AtomicU64::new(0);

fn main() -> std::io::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8097".into());
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(&listen))
}

async fn serve(listen: &str) -> std::io::Result<()> {
    let router = Router::new().route("/api/v1/executions/{execution_id}/events", post(publish));
    let listener = TcpListener::bind(listen).await?;
    eprintln!("http_floor listening on http://{listen}");
    loop {
        let (socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let http = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(socket), service)
                .with_upgrades();
            // A client that goes away ends its connection; nothing to report.
            let _ = http.await;
        });
    }
}

/// Reads the body (the extractor collects it) and answers as the hub's
/// publish does, storing nothing.
async fn publish(Path(execution_id): Path<String>, _body: Bytes) -> impl IntoResponse {
    let seq = SEQ.fetch_add(1, Ordering::Relaxed) + 1;
    let receipt = serde_json::json!({
        "status": "accepted",
        "execution_id": execution_id,
        "seq": seq,
        "timestamp": "2026-11-30T08:00:00.000Z",
    });
    (
        StatusCode::ACCEPTED,
        [(header::CONTENT_TYPE, "application/json")],
        receipt.to_string(),
    )
}

//! The accept loop: every connection is served by hyper with the axum router,
//! except a connection whose first request opens a Server-Sent Events stream,
//! which is served directly (`sse::serve_direct`).
//!
//! Why the exception: a streaming response held by hyper keeps the HTTP
//! connection's read and write buffers (about 24 KiB) for as long as the
//! stream lives, which would make an idle SSE subscriber several times more
//! expensive than a WebSocket. The first request is recognised by peeking at
//! the socket (`sse::stream_request`: nothing is consumed unless it is a
//! complete stream request);
//! anything else — including a stream request later on a kept-alive
//! connection, which the router's SSE route serves — goes to hyper unchanged.

use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::sse::{serve_direct, stream_request};
use crate::AppState;
use crate::limits::ClientKey;
use tower::ServiceExt;

/// Pause after an accept error (e.g. out of file descriptors) before retrying.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts until `shutdown`, serving each connection in a task tracked by `connections`.
pub async fn serve(
    listener: TcpListener,
    app: AppState,
    router: Router,
    shutdown: CancellationToken,
    connections: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((socket, _)) => {
                let task = connection(app.clone(), router.clone(), socket, shutdown.clone());
                connections.spawn(task);
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

async fn connection(
    app: AppState,
    router: Router,
    mut socket: TcpStream,
    shutdown: CancellationToken,
) {
    // Small frames (events, pings) go out at once.
    let _ = socket.set_nodelay(true);
    let head = tokio::select! {
        () = shutdown.cancelled() => return,
        head = stream_request(&mut socket) => head,
    };
    match head {
        Some(head) => serve_direct(app, socket, head).await,
        // Boxed: an idle stream's task should not reserve room for hyper's state.
        None => Box::pin(serve_http(router, socket, shutdown)).await,
    }
}

/// Serves HTTP/1.1 (and WebSocket upgrades) on `socket` with the router.
async fn serve_http(router: Router, socket: TcpStream, shutdown: CancellationToken) {
    // Requests on one connection count as one client when auth is off.
    let client = ClientKey::connection();
    let router = router.map_request(move |mut request: axum::http::Request<_>| {
        request.extensions_mut().insert(client);
        request
    });
    let service = TowerToHyperService::new(router);
    let http = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(socket), service)
        .with_upgrades();
    tokio::pin!(http);
    tokio::select! {
        _ = http.as_mut() => {}
        () = shutdown.cancelled() => {
            http.as_mut().graceful_shutdown();
            let _ = http.await;
        }
    }
}

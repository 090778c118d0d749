//! `GET /api/v1/executions/{execution_id}/stream`: one execution as Server-Sent Events.
//!
//! Each event is one SSE message whose `id:` is `<epoch>-<seq>` and whose data
//! is the event JSON, so `EventSource` resumes exactly through `Last-Event-ID`
//! (a plain numeric id is still accepted and taken to be in the current
//! epoch). The stream opens with the comment `: subscribed` once the live feed
//! is in place, preceded by the `id:` of the starting position; comments also
//! keep idle connections alive, which is also how a vanished client is
//! noticed (the write fails). The stream ends with `event: error` when the
//! token expires (`token_expired`), the client falls behind
//! (`slow_consumer`) or the store fails; `EventSource` then reconnects.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use exechub_protocol::{ErrorCode, Loc, ValidationError};
use futures_util::stream;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tokio_util::sync::WaitForCancellationFutureOwned;

mod head;

pub(crate) use head::stream_request;

use super::http::{authorize, client_of, execution_id, query_u64};
use crate::auth::Action;
use crate::error::ApiError;
use crate::event::Epoch;
use crate::limits::TokenSlot;
use crate::metrics::Transport;
use crate::outbox::{Closing, Outbox};
use crate::session::{expiry_timer, until};
use crate::subscription::{Encoder, Item, Start, Subscription};
use crate::{AppState, ConnectionGuard};
use head::Head;

/// Opens the stream, resuming after `Last-Event-ID` (set by `EventSource` on
/// reconnect) or else `?after=N` (with `&epoch=E` when known); without
/// either, only new events are sent. This is the route for a stream request
/// that arrives on a connection already used for other requests; the first
/// request of a connection is served by `serve_direct`.
#[utoipa::path(get, path = "/api/v1/executions/{execution_id}/stream", tag = "executions",
    params(("execution_id" = String, Path, min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f{}]+$", description = "The execution: 1 to 256 bytes of UTF-8, without control characters, `{` or `}`"),
        ("after" = Option<u64>, Query, format = "uint64", maximum = 18446744073709551615_u64, description = "Replay events after this seq first"),
        ("epoch" = Option<String>, Query, description = "The history `after` belongs to"),
        ("access_token" = Option<String>, Query, description = "The token (EventSource cannot set headers)"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event (`<epoch>-<seq>` or a seq)")),
    security((), ("BearerAuth" = [])),
    responses(
        (status = 200, description = "Server-Sent Events: one `data:` message per event, `id: <epoch>-<seq>`; `event: end` after the terminal event", content_type = "text/event-stream", body = String),
        (status = 204, description = "The execution has ended and the client has everything up to its terminal event (EventSource stops)"),
        (status = 401, description = "No token, or an invalid one (when the hub requires tokens)", body = exechub_protocol::ErrorBody),
        (status = 403, description = "The token does not allow this execution", body = exechub_protocol::ErrorBody),
        (status = 422, description = "Validation Error", body = exechub_protocol::HttpValidationError),
        (status = 429, description = "The token holds its maximum of subscriptions", body = exechub_protocol::ErrorBody),
        (status = 503, description = "At the connection or subscription limit", body = exechub_protocol::ErrorBody,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
    ))]
pub async fn stream(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let execution_id = execution_id(path);
    if let Ok(id) = &execution_id {
        resumes_past_the_end(&app, id, &headers).await?;
    }
    let (stream, expires_at) = open(&app, execution_id, &query, &headers)?;
    let body = Body::from_stream(sse_body(app, stream, expires_at));
    Ok((response_headers(), body).into_response())
}

fn response_headers() -> [(header::HeaderName, HeaderValue); 3] {
    [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        ),
    ]
}

/// Checks a stream request and starts its subscription: what both ways of
/// serving a stream share. Returns the stream and when its token expires.
///
/// # Errors
/// The refusal to answer with (401/403/422/503).
pub(crate) fn open(
    app: &AppState,
    execution_id: Result<String, ValidationError>,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<(Stream, u64), ApiError> {
    let token = query.get("access_token");
    let (grant, execution_id) = authorize(app, headers, token, execution_id, Action::Subscribe)?;
    let (after, epoch) = match last_event_id(headers)? {
        Some(position) => position,
        None if query.contains_key("after") => (
            Some(query_u64(query, "after", 0, u64::MAX)?),
            query_epoch(query)?,
        ),
        None => (None, None),
    };
    let slot = match app.auth.enabled() {
        true => Some(
            app.token_subscriptions
                .take(client_of(app, headers, token, None))?,
        ),
        false => None,
    };
    let counted = app.stats.sse_stream().ok_or(ApiError::Busy("connection"))?;
    let outbox = Arc::new(Outbox::new(app.config.outbox_limits()));
    let start = Start {
        after,
        epoch,
        slow_timeout: app.config.slow_client_timeout(),
        node_limit: app.config.max_total_subscriptions,
        lifecycle: Arc::clone(&app.lifecycle),
    };
    let execution_id: Arc<str> = Arc::from(execution_id);
    let encoder = SseEncoder {
        execution_id: Arc::clone(&execution_id),
    };
    let subscription = Subscription::start(
        &app.store,
        &app.feeds,
        &execution_id,
        Arc::clone(&outbox),
        encoder,
        start,
    )
    .map_err(|_| ApiError::Busy("subscription"))?;
    let stream = Stream {
        outbox,
        ending: "client_gone",
        _subscription: subscription,
        _counted: counted,
        _slot: slot,
    };
    Ok((stream, grant.expires_at))
}

/// Refuses (204) a reconnect whose `Last-Event-ID` is at or past the end of
/// an ended execution, or of one whose events are gone: the stream already
/// said `end`, and `EventSource` stops reconnecting on a 204. Only a
/// reconnect (with `Last-Event-ID`) costs this extra read.
///
/// # Errors
/// [`ApiError::StreamEnded`], or the store's failure.
async fn resumes_past_the_end(
    app: &AppState,
    execution_id: &str,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let Ok(Some((Some(after), _))) = last_event_id(headers) else {
        return Ok(());
    };
    let page = app.store.range(execution_id, u64::MAX, 0).await?;
    match page.ended {
        Some(end) if after >= end.seq || page.epoch.is_none() => Err(ApiError::StreamEnded),
        _ => Ok(()),
    }
}

/// What one open stream holds; everything is released when it is dropped
/// (the response ended, or the client is gone).
pub(crate) struct Stream {
    outbox: Arc<Outbox<Bytes>>,
    /// Why it ended, for `exechub_connections_closed_total` (until known: the client left).
    ending: &'static str,
    _subscription: Subscription<SseEncoder>,
    _counted: ConnectionGuard,
    _slot: Option<TokenSlot>,
}

impl Stream {
    /// The outbox's next step. Drained by this stream, it gives the next
    /// frame to write; writing its socket itself (a direct stream), it gives
    /// nothing until it closes. Either way, its closing ends the stream.
    fn poll_outbox(&mut self, cx: &mut Context<'_>) -> Poll<Next> {
        let closing = if self.outbox.writes_socket() {
            ready!(self.outbox.poll_send(cx))
        } else {
            match ready!(self.outbox.poll_pop(cx)) {
                Ok(frame) => return Poll::Ready(Next::Frame(frame)),
                Err(closing) => closing,
            }
        };
        Poll::Ready(match closing {
            Closing::SlowConsumer => {
                self.ending = "slow_consumer";
                Next::Last(error_frame(ErrorCode::SlowConsumer.as_str()))
            }
            Closing::Done => {
                self.ending = "done";
                Next::End
            }
            Closing::Gone => {
                self.ending = "client_gone";
                Next::End
            }
        })
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        crate::metrics::closed(Transport::Sse, self.ending);
    }
}

/// Encodes subscription items as SSE messages.
struct SseEncoder {
    execution_id: Arc<str>,
}

impl Encoder for SseEncoder {
    type Frame = Bytes;
    const FAILURE_ENDS_CONNECTION: bool = true;
    const END_ENDS_CONNECTION: bool = true;

    fn encode(&self, item: Item<'_>) -> Bytes {
        match item {
            Item::Event(event) => event.sse_frame(),
            Item::Subscribed { after, epoch } => match epoch {
                // An `id:` without data moves `Last-Event-ID` without an event.
                Some(epoch) => Bytes::from(format!(
                    "id: {epoch}-{after}\nretry: 1000\n: subscribed\n\n"
                )),
                None => Bytes::from_static(b"retry: 1000\n: subscribed\n\n"),
            },
            Item::Lost {
                after,
                resume_after,
                reason,
                epoch,
            } => {
                let data = json!({
                    "after": after,
                    "resume_after": resume_after,
                    "reason": reason,
                    "epoch": epoch.map(Epoch::as_str),
                });
                let id = match epoch {
                    Some(epoch) => format!("id: {epoch}-{resume_after}\n"),
                    None => format!("id: {resume_after}\n"),
                };
                Bytes::from(format!("event: history_lost\n{id}data: {data}\n\n"))
            }
            Item::Ended { status, seq } => {
                let data = json!({
                    "execution_id": &*self.execution_id,
                    "status": status,
                    "seq": seq,
                });
                Bytes::from(format!("event: end\ndata: {data}\n\n"))
            }
            Item::Failed(error) => error_frame(crate::error::ws_store_error(error).0.as_str()),
        }
    }

    fn queued(&self, item: Item<'_>) {
        match item {
            Item::Event(_) => crate::metrics::handles().deliveries_sse.add(1),
            Item::Lost { reason, .. } => crate::metrics::history_lost(Transport::Sse, reason),
            _ => {}
        }
    }
}

fn error_frame(code: &str) -> Bytes {
    Bytes::from(format!("event: error\ndata: {{\"code\":\"{code}\"}}\n\n"))
}

/// What a stream sends next.
enum Next {
    Frame(Bytes),
    /// Send this, then end.
    Last(Bytes),
    End,
}

/// Frames from the subscription, interleaved with keep-alives, until the
/// stream ends, the token expires or the hub shuts down.
struct Pump {
    stream: Stream,
    keepalive: tokio::time::Interval,
    expiry: Option<Pin<Box<Sleep>>>,
    /// Registered once with the shared token (its waiter list is shared by
    /// every connection), not once per frame.
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl Pump {
    fn new(app: &AppState, stream: Stream, expires_at: u64) -> Self {
        let period = Duration::from_secs(app.config.sse_keepalive);
        let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            stream,
            keepalive,
            expiry: expiry_timer(expires_at),
            shutdown: Box::pin(app.shutdown.clone().cancelled_owned()),
        }
    }

    /// Cancel-safe: nothing is taken from the outbox unless it is returned.
    async fn next(&mut self) -> Next {
        tokio::select! {
            biased;
            () = self.shutdown.as_mut() => {
                self.stream.ending = "shutdown";
                Next::End
            }
            () = until(&mut self.expiry) => {
                self.stream.ending = "token_expired";
                Next::Last(error_frame(ErrorCode::TokenExpired.as_str()))
            }
            next = poll_fn(|cx| self.stream.poll_outbox(cx)) => next,
            _ = self.keepalive.tick() => Next::Frame(Bytes::from_static(b": keep-alive\n\n")),
        }
    }
}

/// The stream as a response body (see [`stream()`]).
fn sse_body(
    app: AppState,
    stream: Stream,
    expires_at: u64,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send {
    let pump = Some(Pump::new(&app, stream, expires_at));
    stream::unfold(pump, |pump| async move {
        let mut pump = pump?;
        match pump.next().await {
            Next::Frame(frame) => Some((Ok(frame), Some(pump))),
            Next::Last(frame) => Some((Ok(frame), None)),
            Next::End => None,
        }
    })
}

/// The response head of a stream served on its own connection.
const DIRECT_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
cache-control: no-cache\r\nx-accel-buffering: no\r\nconnection: close\r\n";

/// Serves a stream request that opened its connection: checks it as the
/// route does, then writes the response and its frames straight to the
/// socket, and closes it when the stream ends. Nothing but the subscription,
/// its queue and this task stays allocated while the stream is idle — no
/// HTTP connection buffers — which is what keeps an idle stream cheap.
pub(crate) async fn serve_direct(app: AppState, socket: TcpStream, request: Head) {
    let request_id = crate::telemetry::request_id_of(&request.headers);
    if let Ok(id) = &request.execution_id
        && let Err(refusal) = resumes_past_the_end(&app, id, &request.headers).await
    {
        return Box::pin(write_refusal(&socket, refusal, &request_id)).await;
    }
    let execution_id = request.execution_id.as_deref().unwrap_or_default();
    let span = tracing::info_span!("request", method = "GET", path = "stream", request_id = %request_id, execution_id);
    let opened =
        span.in_scope(|| open(&app, request.execution_id, &request.query, &request.headers));
    let (stream, expires_at) = match opened {
        Ok(opened) => opened,
        Err(refusal) => return Box::pin(write_refusal(&socket, refusal, &request_id)).await,
    };
    // The same CORS answer the router's layer gives.
    let origin = request
        .headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok());
    let cors = match origin {
        Some(origin) if super::cors_allows(&app.config.cors_origins, origin) => {
            format!("access-control-allow-origin: {origin}\r\nvary: origin\r\n")
        }
        _ => String::new(),
    };
    let cors = format!("{cors}x-request-id: {request_id}\r\n\r\n");
    if write_all(&socket, DIRECT_HEAD).await.is_err()
        || write_all(&socket, cors.as_bytes()).await.is_err()
    {
        return;
    }
    let pump = Pump::new(&app, stream, expires_at);
    // The stream gets a task of its own, holding only what it needs: the
    // request's parsing and checks above are freed now.
    app.sessions.spawn(pump_direct(socket, pump));
}

/// Runs a direct stream until it ends or the client is gone. Its outbox
/// writes the subscription's frames to the socket itself (`outbox::direct`),
/// from the publisher's context; this task adds keep-alives and the last
/// frame, and finishes writes the socket could not take at once.
async fn pump_direct(socket: TcpStream, mut pump: Pump) {
    let socket = Arc::new(socket);
    pump.stream.outbox.attach(Arc::clone(&socket));
    loop {
        let next = tokio::select! {
            next = pump.next() => next,
            () = client_gone(&socket) => return,
        };
        match next {
            // A keep-alive, in order with the events.
            Next::Frame(frame) => {
                if pump.stream.outbox.push_reply(frame).is_err() {
                    return;
                }
            }
            Next::Last(frame) => {
                // Written if there is room (a slow client's outbox takes nothing
                // more), then flushed for at most the close grace.
                let outbox = &pump.stream.outbox;
                let _ = outbox.push_reply(frame);
                outbox.close(Closing::Done);
                let flushed = poll_fn(|cx| outbox.poll_send(cx));
                let _ = tokio::time::timeout(crate::session::CLOSE_GRACE, flushed).await;
                return;
            }
            Next::End => return,
        }
    }
}

/// Writes `bytes` through a shared reference to the socket.
async fn write_all(socket: &TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        socket.writable().await?;
        match socket.try_write(bytes) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Completes when the client closed its side or the socket failed; anything
/// it sends meanwhile is ignored.
async fn client_gone(socket: &TcpStream) {
    let mut scratch = [0_u8; 64];
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        match socket.try_read(&mut scratch) {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// Answers a refused stream request as the router would, then closes.
async fn write_refusal(socket: &TcpStream, refusal: ApiError, request_id: &str) {
    let response = refusal.into_response();
    let (parts, body) = response.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 64 * 1024).await else {
        return;
    };
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        parts.status.as_u16(),
        parts.status.canonical_reason().unwrap_or("")
    );
    for (name, value) in &parts.headers {
        if let Ok(value) = value.to_str() {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str(&format!(
        "x-request-id: {request_id}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    if write_all(socket, head.as_bytes()).await.is_ok() {
        let _ = write_all(socket, &body).await;
    }
}

/// A position to resume after: a seq, and the epoch it belongs to when known.
type Position = (Option<u64>, Option<Epoch>);

/// `Last-Event-ID`: `<epoch>-<seq>` as this hub sends it, or a bare seq.
fn last_event_id(headers: &HeaderMap) -> Result<Option<Position>, ValidationError> {
    let Some(raw) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let invalid = || {
        ValidationError::new(
            vec![Loc::from("header"), Loc::from("last-event-id")],
            "value_error",
            "Input should be an event id sent by this hub: <epoch>-<seq> or <seq>",
        )
    };
    let text = raw.to_str().map_err(|_| invalid())?.trim();
    let (epoch, seq) = match text.rsplit_once('-') {
        Some((epoch, seq)) => (Some(Epoch::parse(epoch).ok_or_else(invalid)?), seq),
        None => (None, text),
    };
    let seq = seq.parse::<u64>().map_err(|_| invalid())?;
    Ok(Some((Some(seq), epoch)))
}

/// The optional `epoch` query parameter that qualifies `after`.
fn query_epoch(query: &HashMap<String, String>) -> Result<Option<Epoch>, ValidationError> {
    match query.get("epoch") {
        None => Ok(None),
        Some(text) => Epoch::parse(text).map(Some).ok_or_else(|| {
            ValidationError::new(
                vec![Loc::from("query"), Loc::from("epoch")],
                "value_error",
                "Input should be an epoch as sent by this hub",
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            "last-event-id",
            HeaderValue::from_str(value).expect("header"),
        );
        headers
    }

    /// An idle direct stream's task holds little besides its subscription.
    #[tokio::test]
    async fn an_idle_direct_stream_task_is_small() {
        use clap::Parser;
        let cli = crate::config::Cli::try_parse_from(["exechub"]).expect("flags");
        let app = AppState::new(cli.config).await.expect("state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (socket, _) = listener.accept().await.expect("accept");
        let no_query = HashMap::new();
        let (stream, at) = open(&app, Ok("x".into()), &no_query, &HeaderMap::new()).expect("open");
        let task = pump_direct(socket, Pump::new(&app, stream, at));
        let size = std::mem::size_of_val(&task);
        assert!(size < 1024, "an idle stream's task is {size} bytes");
    }

    #[test]
    fn last_event_id_takes_epoch_and_seq_or_a_bare_seq() {
        let (after, epoch) = last_event_id(&header("ab12cd-42"))
            .expect("valid")
            .expect("set");
        assert_eq!(
            (after, epoch.map(|e| e.to_string())),
            (Some(42), Some("ab12cd".into()))
        );
        let (after, epoch) = last_event_id(&header("7")).expect("valid").expect("set");
        assert_eq!((after, epoch), (Some(7), None));
        assert!(last_event_id(&header("x-y")).is_err());
        assert!(last_event_id(&header("ab/c-1")).is_err());
        assert!(last_event_id(&HeaderMap::new()).expect("valid").is_none());
    }
}

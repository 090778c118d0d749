//! `GET /api/v1/executions/{execution_id}/stream`: one execution as Server-Sent Events.
//!
//! Each event is one SSE message whose `id:` is its seq and whose data is the
//! event JSON, so `EventSource` resumes by itself through `Last-Event-ID`.
//! The stream opens with the comment `: subscribed` once the live feed is in
//! place; comments also keep idle connections alive.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use exechub_protocol::{Loc, ValidationError};
use futures_util::stream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::http::{authenticate, execution_id, query_u64};
use crate::AppState;
use crate::auth::Action;
use crate::broker::follow::{FollowEnd, Item, Outbox, follow};
use crate::error::ApiError;

/// Opens the stream, resuming after `Last-Event-ID` (set by `EventSource` on
/// reconnect) or else `?after=N`; without either, only new events are sent.
pub async fn stream(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let grant = authenticate(&app, &headers, query.get("access_token"))?;
    let execution_id = execution_id(path)?;
    grant.check(Action::Subscribe, &execution_id)?;
    let after = match last_event_id(&headers)? {
        Some(seq) => Some(seq),
        None if query.contains_key("after") => Some(query_u64(&query, "after", 0, u64::MAX)?),
        None => None,
    };
    let (queue, frames) = mpsc::channel(app.config.client_queue.max(1));
    let outbox = Outbox {
        queue: queue.clone(),
        encode: Box::new(encode),
        slow_timeout: app.config.slow_client_timeout(),
    };
    let store = app.store.clone();
    tokio::spawn(async move {
        let end = follow(store, execution_id, after, outbox).await;
        if let Some(frame) = end_frame(&end) {
            // Best effort: a slow consumer's queue may have no room left.
            let _ = queue.try_send(frame);
        }
    });
    let body = Body::from_stream(sse_body(app, frames));
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        ),
    ];
    Ok((headers, body).into_response())
}

/// Frames from the follower, interleaved with keep-alives, until shutdown.
fn sse_body(
    app: AppState,
    frames: mpsc::Receiver<Bytes>,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send {
    let period = Duration::from_secs(app.config.sse_keepalive);
    let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = (
        frames,
        keepalive,
        app.shutdown.clone(),
        app.stats.sse_stream(),
    );
    stream::unfold(
        state,
        |(mut frames, mut keepalive, shutdown, guard)| async move {
            let frame = next_frame(&mut frames, &mut keepalive, &shutdown).await?;
            Some((Ok(frame), (frames, keepalive, shutdown, guard)))
        },
    )
}

async fn next_frame(
    frames: &mut mpsc::Receiver<Bytes>,
    keepalive: &mut tokio::time::Interval,
    shutdown: &CancellationToken,
) -> Option<Bytes> {
    tokio::select! {
        biased;
        () = shutdown.cancelled() => None,
        frame = frames.recv() => frame,
        _ = keepalive.tick() => Some(Bytes::from_static(b": keep-alive\n\n")),
    }
}

fn encode(item: Item) -> Bytes {
    match item {
        Item::Event(event) => event.sse_frame(),
        Item::Subscribed { .. } => Bytes::from_static(b"retry: 1000\n: subscribed\n\n"),
        Item::HistoryLost {
            after,
            resume_after,
        } => {
            let data = serde_json::json!({ "after": after, "resume_after": resume_after });
            Bytes::from(format!("event: history_lost\ndata: {data}\n\n"))
        }
    }
}

/// Tells the client why the stream ends, when it ends for a reason it can act on.
fn end_frame(end: &FollowEnd) -> Option<Bytes> {
    let code = match end {
        FollowEnd::Closed => return None,
        FollowEnd::SlowConsumer => "slow_consumer",
        FollowEnd::Store(error) => crate::error::ws_store_error(error).0.as_str(),
    };
    Some(Bytes::from(format!(
        "event: error\ndata: {{\"code\":\"{code}\"}}\n\n"
    )))
}

fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ValidationError> {
    let Some(raw) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let parsed = raw.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok());
    match parsed {
        Some(seq) => Ok(Some(seq)),
        None => Err(ValidationError::new(
            vec![Loc::from("header"), Loc::from("last-event-id")],
            "int_parsing",
            "Input should be a valid integer, unable to parse string as an integer",
        )),
    }
}

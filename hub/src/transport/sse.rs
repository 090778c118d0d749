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
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use exechub_protocol::{Loc, ValidationError};
use futures_util::stream;
use serde_json::json;

use super::http::{authenticate, execution_id, query_u64};
use crate::auth::Action;
use crate::error::ApiError;
use crate::event::Epoch;
use crate::outbox::{Closing, Outbox};
use crate::session::expiry_instant;
use crate::subscription::{Encoder, Item, Start, Subscription};
use crate::{AppState, ConnectionGuard};

/// Opens the stream, resuming after `Last-Event-ID` (set by `EventSource` on
/// reconnect) or else `?after=N` (with `&epoch=E` when known); without
/// either, only new events are sent.
pub async fn stream(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let grant = authenticate(&app, &headers, query.get("access_token"))?;
    let execution_id = execution_id(path)?;
    grant.check(Action::Subscribe, &execution_id)?;
    let (after, epoch) = match last_event_id(&headers)? {
        Some(position) => position,
        None if query.contains_key("after") => (
            Some(query_u64(&query, "after", 0, u64::MAX)?),
            query_epoch(&query)?,
        ),
        None => (None, None),
    };
    let counted = app.stats.sse_stream().ok_or(ApiError::Busy("connection"))?;
    let outbox = Arc::new(Outbox::new(app.config.outbox_limits()));
    let start = Start {
        after,
        epoch,
        slow_timeout: app.config.slow_client_timeout(),
        node_limit: app.config.max_total_subscriptions,
    };
    let subscription = Subscription::start(
        &app.store,
        &app.feeds,
        &Arc::from(execution_id),
        Arc::clone(&outbox),
        SseEncoder,
        start,
    )
    .map_err(|_| ApiError::Busy("subscription"))?;
    let stream = Stream {
        outbox,
        _subscription: subscription,
        _counted: counted,
    };
    let body = Body::from_stream(sse_body(app, stream, grant.expires_at));
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

/// What one open stream holds; everything is released when the body is
/// dropped (the response ended, or the client is gone).
struct Stream {
    outbox: Arc<Outbox<Bytes>>,
    _subscription: Subscription<SseEncoder>,
    _counted: ConnectionGuard,
}

/// Encodes subscription items as SSE messages.
struct SseEncoder;

impl Encoder for SseEncoder {
    type Frame = Bytes;
    const FAILURE_ENDS_CONNECTION: bool = true;

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
            Item::Failed(error) => error_frame(crate::error::ws_store_error(error).0.as_str()),
        }
    }
}

fn error_frame(code: &str) -> Bytes {
    Bytes::from(format!("event: error\ndata: {{\"code\":\"{code}\"}}\n\n"))
}

/// What the body yields next.
enum Next {
    Frame(Bytes),
    /// Send this, then end.
    Last(Bytes),
    End,
}

/// Frames from the subscription, interleaved with keep-alives, until the
/// stream ends, the token expires or the hub shuts down.
fn sse_body(
    app: AppState,
    stream: Stream,
    expires_at: u64,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send {
    let period = Duration::from_secs(app.config.sse_keepalive);
    let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let expiry = Box::pin(tokio::time::sleep_until(expiry_instant(expires_at)));
    let state = Some((stream, keepalive, expiry, app.shutdown.clone()));
    stream::unfold(state, |state| async move {
        let (stream, mut keepalive, mut expiry, shutdown) = state?;
        let next = tokio::select! {
            biased;
            () = shutdown.cancelled() => Next::End,
            () = expiry.as_mut() => Next::Last(error_frame("token_expired")),
            popped = poll_fn(|cx| stream.outbox.poll_pop(cx)) => match popped {
                Ok(frame) => Next::Frame(frame),
                Err(Closing::SlowConsumer) => Next::Last(error_frame("slow_consumer")),
                Err(Closing::Done) => Next::End,
            },
            _ = keepalive.tick() => Next::Frame(Bytes::from_static(b": keep-alive\n\n")),
        };
        match next {
            Next::Frame(frame) => Some((Ok(frame), Some((stream, keepalive, expiry, shutdown)))),
            Next::Last(frame) => Some((Ok(frame), None)),
            Next::End => None,
        }
    })
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

//! The one layer every routed HTTP request goes through: it settles the
//! request's id, runs the handler inside the request's span, echoes the id
//! on the response and logs server errors.
//!
//! One layer (a hand-written future, no boxing) instead of a stack of
//! request-id, sanitizing and tracing middlewares: on the publish path the
//! stack cost about a sixth of the hub's CPU per request (bench/RESULTS.md).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::http::{HeaderName, HeaderValue, Request, Response};
use tower::{Layer, Service};
use tracing::Span;

use super::{REQUEST_ID, fresh_request_id, http_span, is_request_id};

/// Gives every request an id — the client's `x-request-id` when it is short
/// visible ASCII, a fresh one otherwise (an unusable one is replaced) — and
/// a span ([`http_span`]) the handler runs in; the response carries the id.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestLayer;

impl<S> Layer<S> for RequestLayer {
    type Service = RequestContext<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestContext { inner }
    }
}

/// The service [`RequestLayer`] wraps around the router.
#[derive(Debug, Clone)]
pub struct RequestContext<S> {
    inner: S,
}

impl<S, B, R> Service<Request<B>> for RequestContext<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let name = HeaderName::from_static(REQUEST_ID);
        let given = request
            .headers()
            .get(&name)
            .filter(|value| is_request_id(value.as_bytes()))
            .cloned();
        let id = match given {
            Some(id) => id,
            None => {
                // Hex digits: always a valid header value.
                let id = HeaderValue::try_from(fresh_request_id())
                    .unwrap_or_else(|_| HeaderValue::from_static("0"));
                request.headers_mut().insert(name, id.clone());
                id
            }
        };
        let span = http_span(&request);
        let future = span.in_scope(|| self.inner.call(request));
        ResponseFuture {
            future,
            span,
            id: Some(id),
            started: Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The handler's response, in the request's span, with the id added.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
        span: Span,
        id: Option<HeaderValue>,
        started: Instant,
    }
}

impl<F, R, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let mut response = ready!(this.future.poll(cx))?;
        if let Some(id) = this.id.take() {
            response
                .headers_mut()
                .insert(HeaderName::from_static(REQUEST_ID), id);
        }
        let status = response.status().as_u16();
        let latency_us = u64::try_from(this.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        // A stable target, so `RUST_LOG=info,exechub::request=debug` gives a line per request.
        if response.status().is_server_error() {
            tracing::error!(target: "exechub::request", status, latency_us, "request failed");
        } else {
            tracing::debug!(target: "exechub::request", status, latency_us, "request finished");
        }
        Poll::Ready(Ok(response))
    }
}

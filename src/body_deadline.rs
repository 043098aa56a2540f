//! The request-body deadline: a whole request body must arrive within `server.body_timeout` of
//! the request head.
//!
//! Guards against slow-body attacks (a client that announces a body and then trickles it, or
//! stops, holding a connection, a buffer and an upstream request open): the body is cut when the
//! deadline passes, the request is answered 408 (or, if it was already being streamed to the
//! upstream, the upstream request is abandoned), and the audit record says `body_timeout`. A
//! timer is only armed when the body is actually waited for, so a body that arrives with its
//! head costs nothing.
//!
//! It also marks every other failure of the request body (a malformed chunk, a client that
//! hung up mid-body) as the client's, so the answer is a 400, never a 502 that would blame the
//! upstream.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use tokio::time::Sleep;

use crate::error::caused_by;
use crate::request_id::RequestContext;
use crate::stage::Next;

/// The error that ends a request body that did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within server.body_timeout")]
pub struct BodyTimeout;

/// The error that ends a request body the client sent malformed or did not finish.
#[derive(Debug, thiserror::Error)]
#[error("the request body could not be read")]
pub struct MalformedBody(#[source] axum::Error);

/// Whether `error` (or one of its sources) is a [`BodyTimeout`].
pub fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    caused_by::<BodyTimeout>(error)
}

/// Whether `error` (or one of its sources) is a [`MalformedBody`].
pub fn is_malformed_body(error: &(dyn std::error::Error + 'static)) -> bool {
    caused_by::<MalformedBody>(error)
}

/// Layer: puts the deadline on the request body.
pub async fn enforce(body_timeout: Duration, request: Request, next: Next) -> Response {
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let started = request
        .extensions()
        .get::<RequestContext>()
        .map_or_else(Instant::now, |c| c.started);
    let deadline = tokio::time::Instant::from_std(started + body_timeout);
    next.run(request.map(|inner| {
        Body::new(DeadlineBody {
            inner,
            deadline,
            timer: None,
        })
    }))
    .await
}

struct DeadlineBody {
    inner: Body,
    deadline: tokio::time::Instant,
    timer: Option<Pin<Box<Sleep>>>,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(axum::Error::new(MalformedBody(e))))),
            Poll::Ready(frame) => Poll::Ready(frame),
            Poll::Pending => {
                let deadline = this.deadline;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(BodyTimeout)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

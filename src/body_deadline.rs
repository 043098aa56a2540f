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
//!
//! And it keeps refusals clean for HTTP/1.1 clients: when a stage refuses a request (401, 403,
//! 429, 503…) without reading its small body (at most [`DRAIN_LIMIT`] bytes by `Content-Length`), the body
//! comes back here and is read and discarded, for at most [`DRAIN_WAIT`] and within the
//! deadline, before the refusal is sent. The connection then stays open for the client's next
//! request; without it, the HTTP/1.1 server would close a connection with an unread body, and a
//! client still sending that body could be reset before it reads the refusal. A body that cannot be
//! drained in time gets its refusal with `Connection: close`.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, Version, header};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::time::Sleep;

use crate::error::{GatewayError, caused_by};
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

/// The client's fault behind `error`, when a request body failed on the client's side: a body
/// that did not arrive in time (408) or came malformed or cut (400). Whoever reads the body
/// (validation, or the upstream request) answers with it, never blaming the upstream.
pub fn client_fault(error: &(dyn std::error::Error + 'static)) -> Option<GatewayError> {
    if caused_by::<BodyTimeout>(error) {
        Some(GatewayError::BodyTimeout)
    } else if caused_by::<MalformedBody>(error) {
        Some(GatewayError::BadRequest("malformed_body"))
    } else {
        None
    }
}

/// The largest request body (by its announced length) read and discarded after a refusal.
pub const DRAIN_LIMIT: u64 = 64 * 1024;
/// The longest a refusal waits for the rest of such a body.
pub const DRAIN_WAIT: Duration = Duration::from_secs(1);

/// A request body handed back unread by the stage that dropped it.
type Returned = Arc<Mutex<Option<Body>>>;

/// Layer: puts the deadline on the request body, and drains a small body a refusal left unread.
pub async fn enforce(body_timeout: Duration, request: Request, next: impl Next) -> Response {
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let started = request
        .extensions()
        .get::<RequestContext>()
        .map_or_else(Instant::now, |c| c.started);
    let deadline = tokio::time::Instant::from_std(started + body_timeout);
    // HTTP/2 needs no drain: an unread body costs its stream a reset, not the connection.
    let returned = (request.version() <= Version::HTTP_11
        && request
            .body()
            .size_hint()
            .upper()
            .is_some_and(|upper| upper <= DRAIN_LIMIT))
    .then(Returned::default);
    let mut response = next
        .run(request.map(|inner| {
            Body::new(DeadlineBody {
                inner,
                deadline,
                timer: None,
                failed: false,
                returned: returned.clone(),
            })
        }))
        .await;
    let unread = returned.and_then(|slot| slot.lock().ok()?.take());
    if let Some(body) = unread
        && !response.headers().contains_key(header::CONNECTION)
    {
        let wait = deadline.min(tokio::time::Instant::now() + DRAIN_WAIT);
        let drained = tokio::time::timeout_at(wait, drain(body)).await;
        if !matches!(drained, Ok(true)) {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    response
}

/// Reads `body` to its end, discarding it; false when it fails.
async fn drain(mut body: Body) -> bool {
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            return false;
        }
    }
    true
}

struct DeadlineBody {
    inner: Body,
    deadline: tokio::time::Instant,
    timer: Option<Pin<Box<Sleep>>>,
    /// The body ended in an error: nothing to hand back.
    failed: bool,
    /// Where the body goes when it is dropped unread (small bodies only).
    returned: Option<Returned>,
}

impl Drop for DeadlineBody {
    fn drop(&mut self) {
        if let Some(slot) = self.returned.take()
            && !self.failed
            && !self.inner.is_end_stream()
            && let Ok(mut slot) = slot.lock()
        {
            *slot = Some(std::mem::replace(&mut self.inner, Body::empty()));
        }
    }
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
            Poll::Ready(Some(Err(e))) => {
                this.failed = true;
                Poll::Ready(Some(Err(axum::Error::new(MalformedBody(e)))))
            }
            Poll::Ready(frame) => Poll::Ready(frame),
            Poll::Pending => {
                let deadline = this.deadline;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.failed = true;
                        Poll::Ready(Some(Err(axum::Error::new(BodyTimeout))))
                    }
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

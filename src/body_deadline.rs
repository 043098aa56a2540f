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
//!
//! HTTP/2 refusals go out at once, and the stream's unread body is then read and discarded, up to
//! [`H2_DRAIN_LIMIT`] bytes within [`DRAIN_WAIT`] and the deadline: a stream reset while the
//! client is still sending its body (`RST_STREAM` with `NO_ERROR`, which RFC 9113 section 8.1
//! allows after a complete response) makes common clients (curl, httpx) report a framing error
//! instead of the status. Past the bound the stream is reset so, with `NO_ERROR`.

use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderValue, Version, header};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::time::Sleep;
use tower::{Layer, Service};

use crate::context::{Facts, RequestContext};
use crate::error::GatewayError;
use crate::fault::{BodyTimeout, MalformedBody};
use crate::stage::{Request, Response, StageResult};

/// The largest request body (by its announced length) read and discarded after a refusal.
pub const DRAIN_LIMIT: u64 = 64 * 1024;
/// The longest a refusal waits for the rest of such a body.
pub const DRAIN_WAIT: Duration = Duration::from_secs(1);

/// The most request body read and discarded after an HTTP/2 refusal; past it, the stream is
/// reset. It costs only bandwidth: what is read is dropped frame by frame.
pub const H2_DRAIN_LIMIT: u64 = 4 * 1024 * 1024;

/// A request body handed back unread by the stage that dropped it.
type Returned = Arc<Mutex<Option<Body>>>;

/// Layer: puts the deadline on the request body, and drains a small body a refusal left unread.
#[derive(Debug, Clone, Copy)]
pub struct BodyDeadlineLayer {
    body_timeout: Duration,
}

impl BodyDeadlineLayer {
    /// A whole body must arrive within `body_timeout` of its request head.
    pub fn new(body_timeout: Duration) -> BodyDeadlineLayer {
        BodyDeadlineLayer { body_timeout }
    }
}

impl<S> Layer<S> for BodyDeadlineLayer {
    type Service = BodyDeadline<S>;

    fn layer(&self, inner: S) -> BodyDeadline<S> {
        BodyDeadline {
            body_timeout: self.body_timeout,
            inner,
        }
    }
}

/// The service of [`BodyDeadlineLayer`].
#[derive(Debug, Clone)]
pub struct BodyDeadline<S> {
    body_timeout: Duration,
    inner: S,
}

impl<S> Service<Request> for BodyDeadline<S>
where
    S: Service<Request, Response = Response, Error = GatewayError>,
{
    type Response = Response;
    type Error = GatewayError;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if request.body().is_end_stream() {
            return DeadlineFuture::Inner {
                inner: self.inner.call(request),
                drain: None,
            };
        }
        let context = RequestContext::of(&request);
        let started = context.map_or_else(Instant::now, |c| c.started);
        let facts = context.map(|c| c.facts.clone());
        let deadline = tokio::time::Instant::from_std(started + self.body_timeout);
        // HTTP/1.1: small bodies, drained before the refusal; HTTP/2: any body, drained after it.
        let h2 = request.version() == Version::HTTP_2;
        let returned = (h2
            || request.version() <= Version::HTTP_11
                && request
                    .body()
                    .size_hint()
                    .upper()
                    .is_some_and(|upper| upper <= DRAIN_LIMIT))
        .then(Returned::default);
        let drain = returned.clone().map(|returned| Drain {
            returned,
            deadline,
            facts,
            h2,
        });
        let request = request.map(|inner| {
            Body::new(DeadlineBody {
                inner,
                deadline,
                timer: None,
                failed: false,
                returned,
            })
        });
        DeadlineFuture::Inner {
            inner: self.inner.call(request),
            drain,
        }
    }
}

/// Where an unread small body may come back, and until when it may be drained.
struct Drain {
    returned: Returned,
    deadline: tokio::time::Instant,
    facts: Option<Arc<Facts>>,
    /// An HTTP/2 stream: the answer goes out first, the body is discarded behind it.
    h2: bool,
}

impl Drain {
    /// The drain of a body the answer left unread, if there is one to do.
    fn start(
        self,
        answer: StageResult,
    ) -> ControlFlow<StageResult, BoxFuture<'static, StageResult>> {
        let closes = match &answer {
            Ok(response) => response.headers().contains_key(header::CONNECTION),
            Err(error) => error.closes_connection(),
        };
        let unread = self.returned.lock().ok().and_then(|mut slot| slot.take());
        let wait = self.deadline.min(tokio::time::Instant::now() + DRAIN_WAIT);
        if self.h2 {
            if let Some(body) = unread {
                tokio::spawn(tokio::time::timeout_at(wait, discard(body, H2_DRAIN_LIMIT)));
            }
            return ControlFlow::Break(answer);
        }
        let Some(body) = unread.filter(|_| !closes) else {
            return ControlFlow::Break(answer);
        };
        // Boxed: only a refusal of an unread body drains.
        ControlFlow::Continue(Box::pin(async move {
            let drained = tokio::time::timeout_at(wait, drain(body)).await;
            if matches!(drained, Ok(true)) {
                return answer;
            }
            match answer {
                Ok(mut response) => {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    Ok(response)
                }
                Err(error) => {
                    if let Some(facts) = &self.facts {
                        facts.close_connection();
                    }
                    Err(error)
                }
            }
        }))
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`BodyDeadline`]: the rest of the stack, then, for a small body
    /// the answer left unread, its drain.
    #[project = DeadlineProj]
    #[allow(missing_docs)] // the variants say what their fields are
    pub enum DeadlineFuture<F> {
        /// The rest of the stack answers.
        Inner { #[pin] inner: F, drain: Option<Drain> },
        /// The unread body is drained before the answer goes out.
        Draining { draining: BoxFuture<'static, StageResult> },
    }
}

impl<F: Future<Output = StageResult>> Future for DeadlineFuture<F> {
    type Output = StageResult;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<StageResult> {
        loop {
            match self.as_mut().project() {
                DeadlineProj::Inner { inner, drain } => {
                    let answer = std::task::ready!(inner.poll(cx));
                    let Some(drain) = drain.take() else {
                        return Poll::Ready(answer);
                    };
                    match drain.start(answer) {
                        ControlFlow::Continue(draining) => {
                            self.set(DeadlineFuture::Draining { draining });
                        }
                        ControlFlow::Break(answer) => return Poll::Ready(answer),
                    }
                }
                DeadlineProj::Draining { draining } => return draining.as_mut().poll(cx),
            }
        }
    }
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

/// Reads and drops `body` until its end, an error, or more than `limit` bytes.
async fn discard(mut body: Body, limit: u64) {
    let mut seen = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        seen += frame.data_ref().map_or(0, |data| data.len() as u64);
        if seen > limit {
            return;
        }
    }
}

struct DeadlineBody {
    inner: Body,
    deadline: tokio::time::Instant,
    timer: Option<Pin<Box<Sleep>>>,
    /// The body ended in an error: nothing to hand back.
    failed: bool,
    /// Where the body goes when it is dropped unread (small bodies, or any over HTTP/2).
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::BodyExt;
    use tower::{Layer, ServiceExt};

    use super::BodyDeadlineLayer;
    use crate::error::GatewayError;
    use crate::stage::test_support::request;
    use crate::stage::{Request, Response};

    /// Reads the whole body, answering with the fault a failed read means.
    async fn read_all(request: Request) -> Result<Response, GatewayError> {
        match request.into_body().collect().await {
            Ok(_) => Ok(Response::default()),
            Err(e) => Err(GatewayError::client_fault(&e).unwrap_or(GatewayError::Internal("?"))),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_arriving_is_cut_at_the_deadline() {
        use futures_util::StreamExt;
        // One chunk, then nothing more, ever.
        let chunks = futures_util::stream::once(async {
            Ok::<_, std::io::Error>(http_body::Frame::data(bytes::Bytes::from_static(b"part")))
        })
        .chain(futures_util::stream::pending());
        let mut request = request("POST", "/", "");
        *request.body_mut() = axum::body::Body::new(http_body_util::StreamBody::new(chunks));
        let answer = BodyDeadlineLayer::new(Duration::from_secs(5))
            .layer(tower::service_fn(read_all))
            .oneshot(request)
            .await;
        assert!(matches!(answer, Err(GatewayError::BodyTimeout)));
    }
}

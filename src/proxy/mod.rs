//! Forwarding to the upstream agent with a pooled client, streaming both ways.
//!
//! Guards against a slow or broken upstream taking the gateway down with it: connects and response
//! heads are bounded in time (502/504), a streamed body that falls silent past `idle_timeout` is
//! cut, a 5xx answer is replaced by a sanitised 502 so upstream error bodies never reach clients,
//! and bodies are relayed frame by frame, never buffered whole (an SSE event reaches the client as
//! soon as the upstream sends it).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::uri::{PathAndQuery, Uri};
use http::{HeaderValue, Version, header};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

use crate::config::UpstreamSettings;
use crate::context::RequestContext;
use crate::error::GatewayError;
use crate::fault::{BoxError, UpstreamIdleTimeout};
use crate::headers::{self, Forwarding};
use crate::metrics::Metrics;
use crate::stage::{Request, Response, StageResult};
use crate::tls;

mod pool;

use pool::{Lease, Pool};

/// The upstream agent and the connection pool that reaches it.
#[derive(Debug, Clone)]
pub struct Upstream {
    pool: Arc<Pool>,
    settings: Arc<UpstreamSettings>,
    host: HeaderValue,
    metrics: Arc<Metrics>,
    answered: Arc<AtomicBool>,
    /// One permit per request in flight upstream, held until its response body ends.
    slots: Arc<Semaphore>,
    /// WebSocket handshakes: a client that hands over upgraded connections, never pooled.
    upgrades: UpgradeClient,
}

/// The client of WebSocket handshakes (hyper-util's, which supports upgrades).
type UpgradeClient =
    hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

impl Upstream {
    /// Builds the connection pool (http and https, TLS by rustls with system roots and
    /// `ca_file`). Inside a Tokio runtime it also starts closing idle connections on time.
    pub fn new(settings: &UpstreamSettings, metrics: Arc<Metrics>) -> Result<Upstream, String> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(settings.connect_timeout));
        let tls_config = tls::upstream_client_config(&settings.extra_roots)?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let target = Uri::builder()
            .scheme(settings.scheme.clone())
            .authority(settings.authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|_| "upstream.url is not a valid URL".to_owned())?;
        let upgrades =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build(connector.clone());
        let pool = Pool::new(connector, target, pool::IDLE_TIMEOUT);
        let host = HeaderValue::from_str(settings.authority.as_str())
            .map_err(|_| "upstream.url has a host that is not a valid header value".to_owned())?;
        Ok(Upstream {
            pool,
            settings: Arc::new(settings.clone()),
            host,
            metrics,
            answered: Arc::new(AtomicBool::new(false)),
            slots: Arc::new(Semaphore::new(settings.max_connections)),
            upgrades,
        })
    }

    /// Forwards a WebSocket handshake: on the agent's `101`, its answer's headers and the
    /// upgraded connection; any other answer is a sanitised 502.
    pub async fn open_websocket(
        &self,
        request: Request,
    ) -> Result<(http::HeaderMap, hyper::upgrade::Upgraded), GatewayError> {
        let uri = self
            .upstream_uri(request.uri().path_and_query())
            .map_err(|e| GatewayError::UpstreamUnavailable(e.into()))?;
        let original_host = request.headers().get(header::HOST).cloned();
        let (mut parts, _) = request.into_parts();
        self.prepare_headers(&mut parts, original_host.as_ref())?;
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts
            .headers
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        let base = Uri::builder()
            .scheme(self.settings.scheme.clone())
            .authority(self.settings.authority.clone());
        let absolute = match uri.path_and_query() {
            Some(pq) => base.path_and_query(pq.clone()),
            None => base.path_and_query("/"),
        }
        .build()
        .map_err(|e| GatewayError::UpstreamUnavailable(e.into()))?;
        let mut upstream_request = http::Request::new(Body::empty());
        *upstream_request.method_mut() = http::Method::GET;
        *upstream_request.uri_mut() = absolute;
        *upstream_request.headers_mut() = parts.headers;
        let sent = Instant::now();
        let response = match tokio::time::timeout(
            self.settings.response_header_timeout,
            self.upgrades.request(upstream_request),
        )
        .await
        {
            Err(_) => return Err(GatewayError::UpstreamTimeout),
            Ok(Err(e)) => return Err(GatewayError::UpstreamUnavailable(Box::new(e))),
            Ok(Ok(response)) => response,
        };
        self.metrics
            .upstream_latency
            .observe(sent.elapsed().as_secs_f64());
        self.answered.store(true, Ordering::Relaxed);
        if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            // The agent refused or did not understand: its body and reason stay with it.
            return Err(GatewayError::UpstreamStatus(http::StatusCode::BAD_GATEWAY));
        }
        let answer = response.headers().clone();
        let upgraded = hyper::upgrade::on(response)
            .await
            .map_err(|e| GatewayError::UpstreamUnavailable(Box::new(e)))?;
        Ok((answer, upgraded))
    }

    /// Whether the upstream has answered at least once (readiness).
    pub fn has_answered(&self) -> bool {
        self.answered.load(Ordering::Relaxed)
    }

    /// Sends `GET` to the upstream's base URL; any HTTP answer marks it as having answered. The
    /// probe's connection is not kept.
    pub async fn probe(&self) -> bool {
        let Ok(uri) = self.upstream_uri(None) else {
            return false;
        };
        let mut request = http::Request::new(Body::empty());
        *request.uri_mut() = uri;
        request
            .headers_mut()
            .insert(header::HOST, self.host.clone());
        let answer = tokio::time::timeout(
            self.settings.response_header_timeout,
            self.pool.send(request),
        )
        .await;
        let ok = matches!(answer, Ok(Ok(_)));
        if ok {
            self.answered.store(true, Ordering::Relaxed);
        }
        ok
    }

    /// The origin-form target sent upstream: `upstream.url`'s path, then the request's own.
    fn upstream_uri(&self, path_and_query: Option<&PathAndQuery>) -> Result<Uri, http::Error> {
        let tail = path_and_query.map_or("/", PathAndQuery::as_str);
        let path_and_query = if self.settings.base_path.is_empty() {
            match path_and_query {
                Some(pq) => pq.clone(),
                None => PathAndQuery::from_static("/"),
            }
        } else {
            let mut joined = String::with_capacity(self.settings.base_path.len() + tail.len());
            joined.push_str(&self.settings.base_path);
            joined.push_str(tail);
            PathAndQuery::try_from(joined)?
        };
        Ok(Uri::from(path_and_query))
    }

    /// Rewrites the head of a request bound upstream: hop-by-hop and client-forged headers out,
    /// forwarding and identity headers in. Returns the request's facts.
    fn prepare_headers(
        &self,
        parts: &mut http::request::Parts,
        original_host: Option<&HeaderValue>,
    ) -> Result<Arc<crate::context::Facts>, GatewayError> {
        let Some(context) = parts.extensions.get::<RequestContext>() else {
            return Err(GatewayError::Internal("request context missing"));
        };
        headers::prepare_upstream_request(
            &mut parts.headers,
            Forwarding {
                context,
                original_host,
                upstream_host: &self.host,
                principal: context.principal.as_deref(),
                credential: self.settings.credential.as_ref(),
            },
        );
        Ok(context.facts.clone())
    }

    /// Forwards one request and relays the answer; every failure becomes a sanitised error.
    pub async fn forward(&self, request: Request) -> StageResult {
        let uri = self
            .upstream_uri(request.uri().path_and_query())
            .map_err(|e| GatewayError::UpstreamUnavailable(e.into()))?;
        let original_host = request.headers().get(header::HOST).cloned().or_else(|| {
            let authority = request.uri().authority()?;
            HeaderValue::from_str(authority.as_str()).ok()
        });
        let (parts, body) = request.into_parts();
        let mut parts = parts;
        let facts = self.prepare_headers(&mut parts, original_host.as_ref())?;
        let mut request = Request::from_parts(parts, body);
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_11;
        // A slot for this exchange, or a bounded wait for one: an upstream that stops answering
        // pins at most `max_connections` requests, never an unbounded number.
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => match tokio::time::timeout(
                self.settings.connect_timeout,
                self.slots.clone().acquire_owned(),
            )
            .await
            {
                Ok(Ok(slot)) => slot,
                _ => return Err(GatewayError::Overloaded),
            },
        };

        let sent = Instant::now();
        let answer = tokio::time::timeout(
            self.settings.response_header_timeout,
            self.pool.send(request),
        )
        .await;
        let (mut response, lease) = match answer {
            Err(_) => return Err(GatewayError::UpstreamTimeout),
            Ok(Err(e)) => {
                // The client, not the upstream, may have failed: its body stopped arriving.
                return Err(
                    GatewayError::client_fault(&*e).unwrap_or(GatewayError::UpstreamUnavailable(e))
                );
            }
            Ok(Ok(answer)) => answer,
        };
        self.metrics
            .upstream_latency
            .observe(sent.elapsed().as_secs_f64());
        self.answered.store(true, Ordering::Relaxed);
        let status = response.status();
        if status.is_server_error() {
            // The upstream's error body may hold stack traces or internal names: drop it.
            return Err(GatewayError::UpstreamStatus(status));
        }
        headers::strip_hop_by_hop(response.headers_mut());
        facts.set_upstream_status(status.as_u16());
        let keepalive = self
            .settings
            .sse_keepalive
            .filter(|_| headers::is_event_stream(response.headers()));
        let idle_timeout = self.settings.idle_timeout;
        Ok(response.map(|body| {
            Body::new(UpstreamBody::new(
                body,
                idle_timeout,
                keepalive,
                slot,
                lease,
            ))
        }))
    }
}

/// The innermost service: forwards to the upstream.
#[derive(Debug, Clone)]
pub struct Forward(pub Arc<Upstream>);

impl tower::Service<Request> for Forward {
    type Response = Response;
    type Error = GatewayError;
    /// Boxed: the upstream round trip is the one future every forwarded request allocates.
    type Future = BoxFuture<'static, StageResult>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let upstream = self.0.clone();
        Box::pin(async move { upstream.forward(request).await })
    }
}

/// Relays the upstream body frame by frame, ending it with an error if the upstream falls silent
/// past `idle_timeout`; on an event stream, fills idle gaps with SSE comments.
struct UpstreamBody {
    inner: Incoming,
    timeout: Duration,
    /// Armed the first time the body is waited for (a body that is ready when asked, as most
    /// short answers are, never costs a timer), re-armed after progress.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Whether a frame arrived since the deadline was last armed.
    progressed: bool,
    keepalive: Option<KeepAlive>,
    /// The connection the body arrives on, back to the pool once the body was read to its end.
    lease: Option<Lease>,
    /// Whether the body has ended (its last frame was taken).
    ended: bool,
    /// The upstream slot, given back when the body ends or is dropped.
    _slot: OwnedSemaphorePermit,
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // A body dropped before its end leaves unread bytes on the connection: the lease is
        // dropped with it, which closes the connection.
        if let Some(lease) = self.lease.take()
            && (self.ended || self.inner.is_end_stream())
        {
            lease.release();
        }
    }
}

/// SSE keep-alive state: a `: keep-alive` comment is sent after `interval` of silence, and only
/// between events, so it never lands inside one.
struct KeepAlive {
    interval: Duration,
    timer: Pin<Box<Sleep>>,
    boundary: EventBoundary,
}

/// The SSE comment sent on an idle stream (a line starting with `:` is ignored by clients).
pub const SSE_KEEPALIVE_COMMENT: &[u8] = b": keep-alive\n\n";

/// Tracks whether the bytes relayed so far end between two SSE events (after a blank line).
#[derive(Debug, Clone, Copy)]
struct EventBoundary {
    /// Bytes on the current line so far.
    line_len: usize,
    /// Whether the last complete line was empty (true at the start of the stream).
    last_line_empty: bool,
    /// Whether the previous byte was a CR (so a following LF ends no new line).
    after_cr: bool,
}

impl EventBoundary {
    fn new() -> EventBoundary {
        EventBoundary {
            line_len: 0,
            last_line_empty: true,
            after_cr: false,
        }
    }

    fn feed(&mut self, data: &[u8]) {
        for &b in data {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.last_line_empty = self.line_len == 0;
                    self.line_len = 0;
                    self.after_cr = b == b'\r';
                }
                _ => {
                    self.line_len += 1;
                    self.after_cr = false;
                }
            }
        }
    }

    /// True when the stream sits at the start of a line that follows a blank line.
    fn between_events(&self) -> bool {
        self.line_len == 0 && self.last_line_empty
    }
}

impl UpstreamBody {
    fn new(
        inner: Incoming,
        timeout: Duration,
        keepalive: Option<Duration>,
        slot: OwnedSemaphorePermit,
        lease: Lease,
    ) -> UpstreamBody {
        UpstreamBody {
            _slot: slot,
            lease: Some(lease),
            ended: false,
            inner,
            timeout,
            deadline: None,
            progressed: false,
            keepalive: keepalive.map(|interval| KeepAlive {
                interval,
                timer: Box::pin(tokio::time::sleep(interval)),
                boundary: EventBoundary::new(),
            }),
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.progressed = true;
                this.ended = frame.is_none();
                if let Some(keepalive) = &mut this.keepalive {
                    let now = tokio::time::Instant::now();
                    keepalive.timer.as_mut().reset(now + keepalive.interval);
                    if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref))
                        && let Some(data) = data
                    {
                        keepalive.boundary.feed(data);
                    }
                }
                Poll::Ready(frame.map(|f| f.map_err(BoxError::from)))
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let deadline = match &mut this.deadline {
                    Some(deadline) => {
                        if this.progressed {
                            deadline
                                .as_mut()
                                .reset(tokio::time::Instant::now() + timeout);
                        }
                        deadline
                    }
                    None => this.deadline.insert(Box::pin(tokio::time::sleep(timeout))),
                };
                this.progressed = false;
                if deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(Box::new(UpstreamIdleTimeout))));
                }
                let Some(keepalive) = &mut this.keepalive else {
                    return Poll::Pending;
                };
                if keepalive.timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let next = tokio::time::Instant::now() + keepalive.interval;
                keepalive.timer.as_mut().reset(next);
                // Arm the new deadline with this task's waker.
                let _ = keepalive.timer.as_mut().poll(cx);
                if keepalive.boundary.between_events() {
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                        SSE_KEEPALIVE_COMMENT,
                    )))))
                } else {
                    // Mid-event: a comment here would corrupt the event; wait for its end.
                    Poll::Pending
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.keepalive.is_some() {
            // Keep-alive comments add bytes the upstream did not announce.
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::EventBoundary;

    fn boundary_after(chunks: &[&str]) -> bool {
        let mut b = EventBoundary::new();
        for c in chunks {
            b.feed(c.as_bytes());
        }
        b.between_events()
    }

    #[test]
    fn event_boundaries() {
        assert!(boundary_after(&[]));
        assert!(boundary_after(&["data: a\n\n"]));
        assert!(boundary_after(&["data: a\r\n\r\n"]));
        assert!(boundary_after(&["data: a\r\n", "\r\n"]));
        assert!(boundary_after(&["data: a\r", "\n\r", "\n"]));
        assert!(boundary_after(&["data: a\r\r"]));
        assert!(boundary_after(&["data: a\ndata: b\n\n"]));
        assert!(!boundary_after(&["data: a\n"]));
        assert!(!boundary_after(&["data: a\r\n"]));
        assert!(!boundary_after(&["data: a\n\ndata: b"]));
        assert!(!boundary_after(&["data: a\r"]));
        assert!(!boundary_after(&["data: tw"]));
    }
}

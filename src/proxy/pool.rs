//! Upstream connections kept open between requests (HTTP/1.1 keep-alive).
//!
//! A connection leaves the pool for one exchange and goes back only once its response body has
//! been read to the end, so a half-read answer never meets the next request; a connection whose
//! exchange ended any other way is dropped, which closes it. The most recently used connection is
//! taken first, so under light load the surplus stays idle and is closed after the idle timeout.
//! A request that a reused connection could not even start (the upstream had closed it while it
//! sat idle) is sent again on another connection; one that reached the upstream is never resent.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use axum::body::Body;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tower_service::Service;

use crate::error::BoxError;

/// Idle upstream connections kept open, at most.
pub const MAX_IDLE: usize = 512;
/// How long an upstream connection may sit idle before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Upstream connections not in use, most recently used last.
pub struct Pool {
    connector: HttpsConnector<HttpConnector>,
    /// `scheme://authority/` of the upstream, what the connector dials.
    target: Uri,
    idle: Mutex<Vec<Idle>>,
    idle_timeout: Duration,
}

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

/// A connection on loan for one exchange; [`Lease::release`] gives it back.
pub struct Lease {
    pool: Arc<Pool>,
    sender: SendRequest<Body>,
}

impl Lease {
    /// Puts the connection back for the next request. Call only once the response body has been
    /// read to its end: the connection then either takes a new request or closes on its own.
    pub fn release(self) {
        self.pool.put_back(self.sender);
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("target", &self.target)
            .field("idle", &self.lock().len())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool dialing `target` through `connector`. Inside a Tokio runtime it also starts the task
    /// that closes connections idle for longer than `idle_timeout`.
    pub fn new(
        connector: HttpsConnector<HttpConnector>,
        target: Uri,
        idle_timeout: Duration,
    ) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            connector,
            target,
            idle: Mutex::new(Vec::new()),
            idle_timeout,
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(close_idle(Arc::downgrade(&pool), idle_timeout));
        }
        pool
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Idle>> {
        // The list stays consistent even if a holder panicked: every change is a single push,
        // pop or retain.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `request` (origin-form URI, `Host` set) and returns the response head with the
    /// connection it arrived on.
    pub async fn send(
        self: &Arc<Self>,
        mut request: Request<Body>,
    ) -> Result<(Response<Incoming>, Lease), BoxError> {
        loop {
            let (mut sender, reused) = match self.take_idle() {
                Some(sender) => (sender, true),
                // Boxed: connecting is rare, and its future is large; every exchange would
                // otherwise carry (and copy) its space.
                None => (Box::pin(self.connect()).await?, false),
            };
            // A reused connection may not have finished putting its last exchange away yet;
            // waiting for it fails at once if it closed instead.
            if reused && !sender.is_ready() && sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let lease = Lease {
                        pool: self.clone(),
                        sender,
                    };
                    return Ok((response, lease));
                }
                Err(mut failed) => match failed.take_message() {
                    // Never written: the idle connection had closed under us; try another.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(failed.into_error().into()),
                },
            }
        }
    }

    /// The most recently used idle connection that is still open.
    fn take_idle(&self) -> Option<SendRequest<Body>> {
        let mut idle = self.lock();
        while let Some(entry) = idle.pop() {
            if !entry.sender.is_closed() {
                return Some(entry.sender);
            }
        }
        None
    }

    /// Opens a new connection (TCP, then TLS for an `https` upstream) and starts driving it.
    async fn connect(&self) -> Result<SendRequest<Body>, BoxError> {
        let io = self.connector.clone().call(self.target.clone()).await?;
        let (sender, connection) = http1::handshake(io).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    fn put_back(&self, sender: SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.lock();
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Drops (and so closes) every connection idle since before `now - idle_timeout`, and every
    /// one the upstream has closed.
    fn close_expired(&self, now: Instant) {
        let timeout = self.idle_timeout;
        self.lock().retain(|entry| {
            !entry.sender.is_closed() && now.saturating_duration_since(entry.since) < timeout
        });
    }

    /// Connections sitting idle now.
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.lock().len()
    }
}

/// Closes expired idle connections every `idle_timeout / 4` (at least once a second) until the
/// pool is gone.
async fn close_idle(pool: Weak<Pool>, idle_timeout: Duration) {
    let every = (idle_timeout / 4).max(Duration::from_secs(1));
    loop {
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        pool.close_expired(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// How the test upstream treats a connection after its first answer.
    #[derive(Clone, Copy)]
    enum After {
        KeepOpen,
        Close,
    }

    /// A loopback HTTP/1.1 upstream answering every request with `answer` as its body; returns
    /// its URL and the count of connections it accepted.
    async fn upstream(answer: &'static [u8], after: After) -> (Uri, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    loop {
                        let Ok(n) = stream.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        head.extend_from_slice(&buf[..n]);
                        while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                            head.drain(..end + 4);
                            let reply = format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                                answer.len()
                            );
                            let _ = stream.write_all(reply.as_bytes()).await;
                            let _ = stream.write_all(answer).await;
                            if let After::Close = after {
                                return;
                            }
                        }
                    }
                });
            }
        });
        let uri = format!("http://{addr}/").parse().unwrap();
        (uri, accepted)
    }

    fn pool_for(target: &Uri) -> Arc<Pool> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(crate::tls::upstream_client_config(&[]).unwrap())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Pool::new(connector, target.clone(), IDLE_TIMEOUT)
    }

    fn get(target: &Uri) -> Request<Body> {
        Request::builder()
            .uri("/")
            .header(http::header::HOST, target.authority().unwrap().as_str())
            .body(Body::empty())
            .unwrap()
    }

    /// Sends one GET and reads its body to the end, returning the connection to the pool.
    async fn exchange(pool: &Arc<Pool>, target: &Uri) -> Bytes {
        let (response, lease) = pool.send(get(target)).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        lease.release();
        body
    }

    #[tokio::test]
    async fn a_connection_serves_request_after_request() {
        let (target, accepted) = upstream(b"hello", After::KeepOpen).await;
        let pool = pool_for(&target);
        for _ in 0..5 {
            assert_eq!(exchange(&pool, &target).await, &b"hello"[..]);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn connections_idle_past_the_timeout_are_closed() {
        let (target, accepted) = upstream(b"hello", After::KeepOpen).await;
        let pool = pool_for(&target);
        exchange(&pool, &target).await;
        pool.close_expired(Instant::now() + IDLE_TIMEOUT / 2);
        assert_eq!(pool.idle_count(), 1, "not idle long enough yet");
        pool.close_expired(Instant::now() + IDLE_TIMEOUT);
        assert_eq!(pool.idle_count(), 0);
        exchange(&pool, &target).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_upstream_closing_idle_connections_costs_no_request() {
        let (target, accepted) = upstream(b"hello", After::Close).await;
        let pool = pool_for(&target);
        for _ in 0..5 {
            assert_eq!(exchange(&pool, &target).await, &b"hello"[..]);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn a_response_dropped_before_its_end_closes_its_connection() {
        let (target, accepted) = upstream(&[b'x'; 100_000], After::KeepOpen).await;
        let pool = pool_for(&target);
        let (response, lease) = pool.send(get(&target)).await.unwrap();
        let mut body = response.into_body();
        let first = body.frame().await.unwrap().unwrap();
        assert!(first.is_data());
        // The lease goes with the body, unreleased, as a forwarded body dropped early does.
        drop((body, lease));
        assert_eq!(pool.idle_count(), 0);
        assert_eq!(exchange(&pool, &target).await.len(), 100_000);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }
}

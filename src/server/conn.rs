//! Serving one client connection: TLS handshake, then HTTP/1.1 or HTTP/2 as ALPN chose.
//!
//! Guards against connections that pin resources: the handshake and every request head must
//! complete within `header_timeout` (slow-loris), HTTP/2 streams and header lists are capped, and
//! the connection permit is held until the connection is fully closed.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio_rustls::TlsAcceptor;

use crate::config::ServerSettings;
use crate::context::ConnInfo;
use crate::metrics::Metrics;
use crate::pipeline::Served;

use super::Policies;
use super::framing::{Findings, FramingGuard};
use super::io::WriteDeadline;
use crate::tls::CertStore;

/// HTTP/2 streams a client may have open on one connection.
pub const MAX_CONCURRENT_STREAMS: u32 = 256;
/// HTTP/2 streams a client may reset before the server has accepted them (rapid-reset guard).
pub const MAX_PENDING_RESET_STREAMS: usize = 32;
/// Interval of HTTP/2 keep-alive pings, which also detect dead peers.
pub const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// Per-listener connection settings, shared by every connection.
pub struct ConnSettings {
    tls: Option<Arc<CertStore>>,
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    /// The HTTP/1 parser's buffer: the largest head it reads.
    parse_buffer: usize,
    handshake_timeout: Duration,
    write_timeout: Duration,
    metrics: Arc<Metrics>,
}

impl ConnSettings {
    /// Derives the protocol limits from `[server]`.
    pub fn new(
        server: &ServerSettings,
        certs: Option<Arc<CertStore>>,
        metrics: Arc<Metrics>,
    ) -> ConnSettings {
        // The parser's buffer is larger than the limit so that most oversized heads reach the
        // head-limit layer and get a full problem+json 431; hyper requires at least 8 KiB.
        let parse_buffer = (server.max_header_bytes * 2).max(8192);
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(server.header_timeout)
            .max_buf_size(parse_buffer)
            .keep_alive(true);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            .max_header_list_size(u32::try_from(parse_buffer).unwrap_or(u32::MAX))
            .max_pending_accept_reset_streams(MAX_PENDING_RESET_STREAMS)
            .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
            .keep_alive_timeout(server.header_timeout);
        ConnSettings {
            tls: certs,
            http1,
            http2,
            parse_buffer,
            handshake_timeout: server.header_timeout,
            write_timeout: server.write_timeout,
            metrics,
        }
    }
}

/// Adapts the pipeline to hyper: stamps each request with its connection's facts (and, on
/// HTTP/1.1, the framing rule its head broke, if any) and hands it to the policy in force when it
/// arrives (a reload applies to the next request, even on a keep-alive connection).
#[derive(Clone)]
struct ConnService {
    policies: Policies,
    info: ConnInfo,
    framing: Option<Arc<Findings>>,
}

impl hyper::service::Service<http::Request<Incoming>> for ConnService {
    type Response = Response;
    type Error = Infallible;
    type Future = Served;

    fn call(&self, mut request: http::Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(self.info);
        if let Some(findings) = &self.framing
            && let Some(violation) = findings.next_request()
        {
            request.extensions_mut().insert(violation);
        }
        self.policies.load().pipeline.serve(request.map(Body::new))
    }
}

/// Serves one accepted connection until it closes; `permit` is released when it does.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    settings: Arc<ConnSettings>,
    policies: Policies,
    stop: watch::Receiver<bool>,
    permit: OwnedSemaphorePermit,
) {
    settings.metrics.open_connections.inc();
    let _open = OpenConnection {
        metrics: settings.metrics.clone(),
        _permit: permit,
    };
    let _ = stream.set_nodelay(true);
    match &settings.tls {
        None => {
            let findings = Arc::new(Findings::default());
            let service = ConnService {
                policies,
                info: ConnInfo { peer, tls: false },
                framing: Some(findings.clone()),
            };
            let io = FramingGuard::new(
                WriteDeadline::new(stream, settings.write_timeout),
                settings.parse_buffer,
                findings,
            );
            let conn = settings
                .http1
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            if let Err(e) = until_stopped(conn, stop, |c| c.graceful_shutdown()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        Some(certs) => {
            // The configuration in force now: a rotated certificate serves new handshakes only.
            let acceptor = TlsAcceptor::from(certs.current());
            let tls =
                match tokio::time::timeout(settings.handshake_timeout, acceptor.accept(stream))
                    .await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let info = ConnInfo { peer, tls: true };
            let io = WriteDeadline::new(tls, settings.write_timeout);
            let result = if h2 {
                let service = ConnService {
                    policies,
                    info,
                    framing: None,
                };
                let conn = settings.http2.serve_connection(TokioIo::new(io), service);
                until_stopped(conn, stop, |c| c.graceful_shutdown()).await
            } else {
                let findings = Arc::new(Findings::default());
                let service = ConnService {
                    policies,
                    info,
                    framing: Some(findings.clone()),
                };
                let io = FramingGuard::new(io, settings.parse_buffer, findings);
                // With upgrades: a WebSocket handshake hands the connection to its relay.
                let conn = settings
                    .http1
                    .serve_connection(TokioIo::new(io), service)
                    .with_upgrades();
                until_stopped(conn, stop, |c| c.graceful_shutdown()).await
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
    }
}

/// Drives `conn` to its end; once `stop` turns true, asks it to finish gracefully (`shut`: no
/// new requests, in-flight ones complete) and drives it on.
async fn until_stopped<C, T, E>(
    conn: C,
    mut stop: watch::Receiver<bool>,
    shut: impl FnOnce(Pin<&mut C>),
) -> Result<T, E>
where
    C: Future<Output = Result<T, E>>,
{
    tokio::pin!(conn);
    tokio::select! {
        biased;
        result = &mut conn => return result,
        _ = stop.wait_for(|stopped| *stopped) => {}
    }
    shut(conn.as_mut());
    conn.await
}

struct OpenConnection {
    metrics: Arc<Metrics>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.metrics.open_connections.dec();
    }
}

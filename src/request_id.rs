//! The per-request context: a gateway-generated request id, the client address and the start time.
//!
//! Guards against untraceable requests and forged ids: the id is always made here (a client-sent
//! `x-request-id` is replaced), travels upstream, and names the request in every response, error
//! body and audit record.

use std::net::{IpAddr, SocketAddr};
use std::time::{Instant, SystemTime};

use std::sync::Arc;

use crate::stage::Next;
use axum::extract::Request;
use axum::response::Response;
use http::HeaderMap;
use http::HeaderValue;
use http::header::HeaderName;
use ipnet::IpNet;

use crate::trace::TraceContext;

/// Header carrying the request id, both upstream and back to the client.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Facts about the connection a request arrived on, set by the connection handler.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// The client's socket address.
    pub peer: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
}

/// What every stage may know about the request, in the request extensions.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The gateway-generated id, ready to send as a header.
    pub id: HeaderValue,
    /// The client's address.
    pub client_ip: IpAddr,
    /// Whether the client connected over TLS.
    pub tls: bool,
    /// When the gateway received the request head.
    pub started: Instant,
    /// Wall-clock time of `started`, for the audit record.
    pub received_at: SystemTime,
    /// The request's place in a distributed trace.
    pub trace: TraceContext,
}

impl RequestContext {
    /// The request id as text, or `"unknown"` for a request that never passed [`assign`].
    pub fn id_of<B>(request: &http::Request<B>) -> String {
        request
            .extensions()
            .get::<RequestContext>()
            .and_then(|c| c.id.to_str().ok())
            .unwrap_or("unknown")
            .to_owned()
    }

    /// The request id as text.
    pub fn id_str(&self) -> &str {
        // Made from a UUID's ASCII form, so this is always valid text.
        self.id.to_str().unwrap_or("unknown")
    }
}

/// A fresh request id: a random UUID (v4), hyphenated.
pub fn new_id() -> HeaderValue {
    let mut buf = uuid::Uuid::encode_buffer();
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid-id"))
}

/// Who the client is: the socket peer, or, behind trusted proxies, the address they forwarded.
#[derive(Debug, Clone, Default)]
pub struct ClientAddress {
    trusted: Vec<IpNet>,
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

impl ClientAddress {
    /// Believes `X-Forwarded-For` only from `trusted` proxies.
    pub fn new(trusted: Vec<IpNet>) -> ClientAddress {
        ClientAddress { trusted }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client address: when the peer is a trusted proxy, `X-Forwarded-For` is walked from
    /// the right past trusted hops only; the first untrusted address is the client. Without
    /// trusted proxies a client-sent `X-Forwarded-For` is ignored.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        let hops: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            let hop = hop.trim();
            let Some(ip) = hop
                .parse::<IpAddr>()
                .ok()
                .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
            else {
                break;
            };
            client = ip;
            if !self.is_trusted(ip) {
                break;
            }
        }
        client
    }
}

/// Layer: gives the request its context, id and trace context (the `traceparent` the upstream
/// will see), and echoes the id on the response.
pub async fn assign(
    client_address: Arc<ClientAddress>,
    mut request: Request,
    next: impl Next,
) -> Response {
    let conn = request.extensions().get::<ConnInfo>().copied();
    let context = RequestContext {
        id: new_id(),
        client_ip: conn.map_or(IpAddr::from([0, 0, 0, 0]), |c| {
            client_address.resolve(c.peer.ip(), request.headers())
        }),
        tls: conn.is_some_and(|c| c.tls),
        started: Instant::now(),
        received_at: SystemTime::now(),
        trace: TraceContext::from_headers(request.headers()),
    };
    context.trace.propagate(request.headers_mut());
    let id = context.id.clone();
    request.extensions_mut().insert(context);
    let mut response = next.run(request).await;
    response.headers_mut().insert(X_REQUEST_ID.clone(), id);
    response
}

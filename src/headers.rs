//! Header hygiene in both directions.
//!
//! Guards against spoofing and fingerprinting: on the way in, hop-by-hop headers (and those named
//! in `Connection`), client-sent `x-portcullis-*` identity headers and forwarding headers are
//! removed before ours are set; on the way out, every response, rejections included, gets the
//! security headers and loses `Server` and `X-Powered-By`.

use std::net::IpAddr;
use std::sync::Arc;

use crate::stage::Next;
use axum::extract::Request;
use axum::response::Response;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::auth::Principal;
use crate::config::HeaderSettings;
use crate::request_id::{RequestContext, X_REQUEST_ID};

/// Prefix of the headers only the gateway may set towards the upstream.
pub const GATEWAY_HEADER_PREFIX: &str = "x-portcullis-";

static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static X_POWERED_BY: HeaderName = HeaderName::from_static("x-powered-by");

/// Removes hop-by-hop headers, including every header the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names (cheap comparisons) instead of a hash
    // lookup for each of the nine.
    if !headers
        .keys()
        .any(|name| *name == header::UPGRADE || HOP_BY_HOP.contains(name))
    {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// What the gateway itself tells the upstream about a request.
#[derive(Debug, Clone, Copy)]
pub struct Forwarding<'a> {
    /// The request's context (id, client address, scheme).
    pub context: &'a RequestContext,
    /// The host the client asked for.
    pub original_host: Option<&'a HeaderValue>,
    /// The upstream's own host, sent as `Host`.
    pub upstream_host: &'a HeaderValue,
    /// The authenticated identity, when authentication is on.
    pub principal: Option<&'a Principal>,
    /// The gateway's own credential for the upstream, sent as `Authorization`.
    pub credential: Option<&'a HeaderValue>,
}

/// Prepares the headers of a request about to be forwarded: client-sent identity and forwarding
/// headers are removed before the gateway's own are set.
pub fn prepare_upstream_request(headers: &mut HeaderMap, forwarding: Forwarding<'_>) {
    let context = forwarding.context;
    strip_hop_by_hop(headers);
    let spoofable: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with(GATEWAY_HEADER_PREFIX))
        .cloned()
        .collect();
    for name in spoofable {
        headers.remove(name);
    }
    headers.remove(header::FORWARDED);
    headers.remove(&X_REAL_IP);
    headers.insert(X_REQUEST_ID.clone(), context.id.clone());
    headers.insert(X_FORWARDED_FOR.clone(), ip_header(context.client_ip));
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if context.tls { "https" } else { "http" }),
    );
    match forwarding.original_host {
        Some(host) => headers.insert(X_FORWARDED_HOST.clone(), host.clone()),
        None => headers.remove(&X_FORWARDED_HOST),
    };
    headers.insert(header::HOST, forwarding.upstream_host.clone());
    if let Some(principal) = forwarding.principal {
        for (name, value) in &principal.identity_headers {
            headers.insert(name.clone(), value.clone());
        }
    }
    if let Some(credential) = forwarding.credential {
        headers.insert(header::AUTHORIZATION, credential.clone());
    }
}

fn ip_header(ip: IpAddr) -> HeaderValue {
    // An IP address prints as ASCII digits, dots, colons and hex letters: always a valid value.
    HeaderValue::from_str(&ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// The response headers every answer carries.
#[derive(Debug, Clone)]
pub struct SecurityHeaders {
    settings: HeaderSettings,
}

impl SecurityHeaders {
    /// Wraps the validated `[headers]` settings.
    pub fn new(settings: HeaderSettings) -> Arc<SecurityHeaders> {
        Arc::new(SecurityHeaders { settings })
    }

    /// Sets the security headers (overriding the upstream's) and removes fingerprinting ones.
    pub fn apply(&self, headers: &mut HeaderMap, tls: bool) {
        headers.remove(header::SERVER);
        headers.remove(&X_POWERED_BY);
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match (&self.settings.hsts, tls) {
            (Some(hsts), true) => {
                headers.insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
            }
            _ => {
                headers.remove(header::STRICT_TRANSPORT_SECURITY);
            }
        }
        match &self.settings.content_security_policy {
            Some(csp) => {
                headers.insert(header::CONTENT_SECURITY_POLICY, csp.clone());
            }
            None => {
                headers.remove(header::CONTENT_SECURITY_POLICY);
            }
        }
    }
}

/// Layer: security headers on every response that passes back through it.
pub async fn secure_response(
    security: Arc<SecurityHeaders>,
    request: Request,
    next: Next,
) -> Response {
    let tls = request
        .extensions()
        .get::<RequestContext>()
        .is_some_and(|c| c.tls);
    let mut response = next.run(request).await;
    security.apply(response.headers_mut(), tls);
    response
}

/// Size of a request head as it arrived: request line plus `name: value\r\n` per header.
pub fn head_size<B>(request: &http::Request<B>) -> usize {
    let target = request
        .uri()
        .path_and_query()
        .map_or(1, |pq| pq.as_str().len());
    let line = request.method().as_str().len() + target + 12;
    request.headers().iter().fold(line + 2, |n, (name, value)| {
        n + name.as_str().len() + value.len() + 4
    })
}

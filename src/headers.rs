//! Header hygiene in both directions.
//!
//! Guards against spoofing and fingerprinting: on the way in, hop-by-hop headers (and those named
//! in `Connection`), client-sent `x-portcullis-*` identity headers and forwarding headers are
//! removed before ours are set; on the way out, every response, rejections included, gets the
//! security headers and loses `Server` and `X-Powered-By`.

use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use tower::{Layer, Service};

pub use crate::config::GATEWAY_HEADER_PREFIX;
use crate::config::HeaderSettings;
use crate::context::{Request, Response};
use crate::context::{RequestContext, X_REQUEST_ID};
use crate::principal::Principal;

static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// A per-user limit's state after a request, as the `RateLimit-*` headers report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitState {
    /// The limit in force.
    pub limit: u32,
    /// Requests still admissible in the current window.
    pub remaining: u32,
    /// Seconds until the oldest counted request leaves the window.
    pub reset_secs: u64,
}

impl RateLimitState {
    /// Writes `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`.
    pub fn write(&self, headers: &mut HeaderMap) {
        headers.insert(RATELIMIT_LIMIT.clone(), number_value(self.limit));
        headers.insert(RATELIMIT_REMAINING.clone(), number_value(self.remaining));
        headers.insert(RATELIMIT_RESET.clone(), number_value(self.reset_secs));
    }
}

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
    // One pass over the names (cheap comparisons) finds which of the fixed set are present; most
    // messages carry none, or only `Connection`.
    let mut present = 0u16;
    for name in headers.keys() {
        if !could_be_hop_by_hop(name) {
            continue;
        }
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        } else if name == header::UPGRADE {
            present |= 1 << HOP_BY_HOP.len();
        }
    }
    if present == 0 {
        return;
    }
    if present & 1 != 0 {
        remove_connection_listed(headers);
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if present & (1 << HOP_BY_HOP.len()) != 0 {
        headers.remove(header::UPGRADE);
    }
}

/// Whether `name` has the length of a hop-by-hop name (or of `upgrade`): a cheap test that
/// lets most names skip the comparisons. The unit tests check it against the list.
fn could_be_hop_by_hop(name: &HeaderName) -> bool {
    matches!(name.as_str().len(), 2 | 7 | 10 | 16..=19)
}

/// Removes the headers the `Connection` header names (it stays; the caller removes it).
fn remove_connection_listed(headers: &mut HeaderMap) {
    // Names of the fixed set are skipped (the caller removes those), so `Connection` itself stays
    // put; the usual `keep-alive` or `close` lists nothing else, and nothing is allocated.
    let mut listed: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        let Ok(text) = value.to_str() else {
            continue;
        };
        for token in text.split(',').map(str::trim) {
            let fixed = HOP_BY_HOP
                .iter()
                .any(|h| token.eq_ignore_ascii_case(h.as_str()));
            // A token that is not a valid header name matches nothing.
            if !token.is_empty()
                && !fixed
                && let Ok(name) = HeaderName::from_bytes(token.as_bytes())
            {
                listed.push(name);
            }
        }
    }
    for name in listed {
        headers.remove(name);
    }
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
    // One pass finds what a client sent that must not pass (rarely anything), instead of a
    // lookup for each name.
    let (mut spoofed, mut forwarded, mut real_ip, mut forwarded_host) =
        (false, false, false, false);
    for name in headers.keys() {
        if name.as_str().starts_with(GATEWAY_HEADER_PREFIX) {
            spoofed = true;
        } else if name == header::FORWARDED {
            forwarded = true;
        } else if name == X_REAL_IP {
            real_ip = true;
        } else if name == X_FORWARDED_HOST {
            forwarded_host = true;
        }
    }
    if spoofed {
        let names: Vec<HeaderName> = headers
            .keys()
            .filter(|name| name.as_str().starts_with(GATEWAY_HEADER_PREFIX))
            .cloned()
            .collect();
        for name in names {
            headers.remove(name);
        }
    }
    if forwarded {
        headers.remove(header::FORWARDED);
    }
    if real_ip {
        headers.remove(&X_REAL_IP);
    }
    headers.insert(X_REQUEST_ID.clone(), context.id.clone());
    headers.insert(X_FORWARDED_FOR.clone(), ip_header(context.client_ip));
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if context.tls { "https" } else { "http" }),
    );
    match forwarding.original_host {
        Some(host) => {
            headers.insert(X_FORWARDED_HOST.clone(), host.clone());
        }
        None if forwarded_host => {
            headers.remove(&X_FORWARDED_HOST);
        }
        None => {}
    }
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
    match ip {
        // The common case, printed without the formatting machinery.
        IpAddr::V4(v4) => {
            let mut text = [0u8; 15];
            let len = ipv4_text(v4.octets(), &mut text).unwrap_or(0);
            HeaderValue::from_bytes(&text[..len]).unwrap_or_else(|_| HeaderValue::from_static(""))
        }
        IpAddr::V6(_) => display_value(ip),
    }
}

/// Writes the dotted-quad text of an IPv4 address; returns its length.
fn ipv4_text(octets: [u8; 4], text: &mut [u8; 15]) -> std::io::Result<usize> {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut text[..]);
    let mut digits = itoa::Buffer::new();
    for (i, octet) in octets.into_iter().enumerate() {
        if i > 0 {
            cursor.write_all(b".")?;
        }
        cursor.write_all(digits.format(octet).as_bytes())?;
    }
    Ok(usize::try_from(cursor.position()).unwrap_or(0))
}

/// A header value from an integer, printed by `itoa` on the stack and copied once into the value
/// (`core::fmt` costs several times as much for a number).
pub fn number_value(n: impl itoa::Integer) -> HeaderValue {
    let mut digits = itoa::Buffer::new();
    HeaderValue::from_str(digits.format(n)).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A header value from an address or other short text that prints as visible ASCII.
/// Printed on the stack (at most 48 bytes) and copied once, into the value: one allocation.
/// Longer or invalid text gives an empty value.
pub fn display_value(value: impl std::fmt::Display) -> HeaderValue {
    use std::io::Write;
    let mut text = [0u8; 48];
    let mut cursor = std::io::Cursor::new(&mut text[..]);
    let len = match write!(cursor, "{value}") {
        Ok(()) => usize::try_from(cursor.position()).unwrap_or(0),
        Err(_) => 0,
    };
    HeaderValue::from_bytes(&text[..len]).unwrap_or_else(|_| HeaderValue::from_static(""))
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
        // One pass finds which headers to take away are there (most answers carry one or none)
        // instead of a lookup for each.
        let (mut server, mut powered_by, mut hsts, mut csp) = (false, false, false, false);
        for name in headers.keys() {
            if name == header::SERVER {
                server = true;
            } else if name == X_POWERED_BY {
                powered_by = true;
            } else if name == header::STRICT_TRANSPORT_SECURITY {
                hsts = true;
            } else if name == header::CONTENT_SECURITY_POLICY {
                csp = true;
            }
        }
        if server {
            headers.remove(header::SERVER);
        }
        if powered_by {
            headers.remove(&X_POWERED_BY);
        }
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
            (Some(value), true) => {
                headers.insert(header::STRICT_TRANSPORT_SECURITY, value.clone());
            }
            _ if hsts => {
                headers.remove(header::STRICT_TRANSPORT_SECURITY);
            }
            _ => {}
        }
        match &self.settings.content_security_policy {
            Some(value) => {
                headers.insert(header::CONTENT_SECURITY_POLICY, value.clone());
            }
            None if csp => {
                headers.remove(header::CONTENT_SECURITY_POLICY);
            }
            None => {}
        }
    }
}

/// Layer: security headers and the request's `x-request-id` on every response that passes back
/// through it, the gateway's own refusals included.
#[derive(Debug, Clone)]
pub struct SecurityHeadersLayer {
    security: Arc<SecurityHeaders>,
}

impl SecurityHeadersLayer {
    /// The layer for `security`.
    pub fn new(security: Arc<SecurityHeaders>) -> SecurityHeadersLayer {
        SecurityHeadersLayer { security }
    }
}

impl<S> Layer<S> for SecurityHeadersLayer {
    type Service = SecureResponses<S>;

    fn layer(&self, inner: S) -> SecureResponses<S> {
        SecureResponses {
            security: self.security.clone(),
            inner,
        }
    }
}

/// The service of [`SecurityHeadersLayer`].
#[derive(Debug, Clone)]
pub struct SecureResponses<S> {
    security: Arc<SecurityHeaders>,
    inner: S,
}

impl<S> Service<Request> for SecureResponses<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = SecureResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let context = RequestContext::of(&request);
        let tls = context.is_some_and(|c| c.tls);
        let id = context.map(|c| c.id.clone());
        SecureResponseFuture {
            inner: self.inner.call(request),
            security: self.security.clone(),
            tls,
            id,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`SecureResponses`].
    pub struct SecureResponseFuture<F> {
        #[pin]
        inner: F,
        security: Arc<SecurityHeaders>,
        tls: bool,
        id: Option<HeaderValue>,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for SecureResponseFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(mut response) = std::task::ready!(this.inner.poll(cx));
        let headers = response.headers_mut();
        this.security.apply(headers, *this.tls);
        // The request's id goes back on every answer, unless the agent answered with its own.
        if let Some(id) = this.id.take()
            && !headers.contains_key(&X_REQUEST_ID)
        {
            headers.insert(X_REQUEST_ID.clone(), id);
        }
        Poll::Ready(Ok(response))
    }
}

/// The media type of a message (`Content-Type` without its parameters, trimmed; compare it
/// case-insensitively), or `""` without one.
pub fn media_type(headers: &HeaderMap) -> &str {
    let Some(text) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return "";
    };
    // A header value that is text holds visible ASCII, spaces and tabs only: ASCII trimming is
    // whole.
    let end = memchr::memchr(b';', text.as_bytes()).unwrap_or(text.len());
    text.get(..end).map_or("", str::trim_ascii)
}

/// Whether a message is a server-sent event stream.
pub fn is_event_stream(headers: &HeaderMap) -> bool {
    media_type(headers).eq_ignore_ascii_case("text/event-stream")
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

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderName, HeaderValue};

    use super::{display_value, ip_header, number_value, strip_hop_by_hop};

    #[test]
    fn every_hop_by_hop_name_passes_the_length_test() {
        for name in super::HOP_BY_HOP.iter().chain([&http::header::UPGRADE]) {
            assert!(super::could_be_hop_by_hop(name), "{name}");
        }
        assert!(!super::could_be_hop_by_hop(&http::header::CONTENT_TYPE));
    }

    #[test]
    fn numbers_print_whole() {
        for n in [0, 7, 100_000_000, u64::MAX] {
            assert_eq!(display_value(n), n.to_string().as_str());
            assert_eq!(number_value(n), n.to_string().as_str());
        }
        assert_eq!(number_value(u32::MAX), u32::MAX.to_string().as_str());
    }

    #[test]
    fn addresses_print_whole() {
        for ip in [
            "127.0.0.1",
            "0.0.0.0",
            "10.20.3.100",
            "255.255.255.255",
            "::1",
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
        ] {
            let parsed: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(ip_header(parsed), parsed.to_string().as_str());
        }
    }

    fn stripped(pairs: &[(&str, &str)]) -> Vec<String> {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<String> = headers.keys().map(|n| n.as_str().to_owned()).collect();
        left.sort();
        left
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        assert_eq!(
            stripped(&[
                ("connection", "keep-alive"),
                ("keep-alive", "timeout=5"),
                ("x-a", "1")
            ]),
            ["x-a"]
        );
        assert_eq!(
            stripped(&[("connection", "close, X-Hop"), ("x-hop", "1"), ("x-a", "1")]),
            ["x-a"]
        );
        assert_eq!(
            stripped(&[
                ("connection", "keep-alive"),
                ("connection", "x-second"),
                ("x-second", "1"),
                ("x-a", "1"),
            ]),
            ["x-a"]
        );
        assert_eq!(
            stripped(&[
                ("connection", " TE ,, upgrade"),
                ("te", "trailers"),
                ("upgrade", "h2c"),
                ("transfer-encoding", "chunked"),
                ("proxy-authorization", "Basic eA=="),
                ("x-a", "1"),
            ]),
            ["x-a"]
        );
        assert_eq!(stripped(&[("upgrade", "websocket"), ("x-a", "1")]), ["x-a"]);
        assert_eq!(
            stripped(&[("connection", "Close"), ("close", "1"), ("x-a", "1")]),
            ["x-a"]
        );
        let names: Vec<String> = (0..40).map(|i| format!("x-listed-{i}")).collect();
        let long = names.join(", ");
        assert_eq!(
            stripped(&[("connection", &long), ("x-listed-39", "1"), ("x-z", "1")]),
            ["x-z"]
        );
        // Tokens that are not header names match nothing; the valid ones still go.
        assert_eq!(
            stripped(&[
                ("connection", "bad name, x@y, (), X-Gone"),
                ("x-gone", "1"),
                ("x-a", "1"),
            ]),
            ["x-a"]
        );
        assert_eq!(stripped(&[("x-a", "1"), ("x-b", "2")]), ["x-a", "x-b"]);
    }
}

#[cfg(test)]
mod layer_tests {
    use std::convert::Infallible;

    use tower::{Layer, ServiceExt};

    use super::{SecurityHeaders, SecurityHeadersLayer};
    use crate::config::HeaderSettings;
    use crate::context::{Request, Response, test_request as request};

    #[tokio::test]
    async fn every_response_gets_the_security_headers_and_loses_server() {
        let upstream = tower::service_fn(|_: Request| async {
            let mut response = Response::default();
            response
                .headers_mut()
                .insert("server", "upstream/1.0".parse().unwrap());
            Ok::<_, Infallible>(response)
        });
        let security = SecurityHeaders::new(HeaderSettings {
            hsts: Some("max-age=60".parse().unwrap()),
            content_security_policy: None,
        });
        let response = SecurityHeadersLayer::new(security)
            .layer(upstream)
            .oneshot(request("GET", "/", ""))
            .await
            .unwrap();
        let headers = response.headers();
        assert!(!headers.contains_key("server"));
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["strict-transport-security"], "max-age=60");
    }
}

//! MCP endpoints: the JSON-RPC message of every request, checked before it reaches the server.
//!
//! Guards against an MCP server that is open tool by tool to anyone with a token: the gateway
//! reads each POST's JSON-RPC message (method, id, tool name, protocol version; never the
//! arguments), refuses headers that disagree with the body (2026-07-28 clients), binds session
//! ids to the user they were issued to, hides and refuses tools the caller may not use or whose
//! definition changed since it was pinned, and filters `tools/list` answers, JSON or event
//! stream, event by event. Refusals are JSON-RPC errors carrying the request's `id`, so the MCP
//! SDKs show their reason; a refused tool call is answered with HTTP 200, as an unknown tool,
//! so the client's session survives.
//!
//! The edge of the endpoints (metadata, CORS, `Origin`) is [`edge`]; it answers before
//! authentication.

pub mod edge;
pub mod pins;
pub mod session;
pub mod tools;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::{Bytes, BytesMut};
use futures_util::future::{BoxFuture, Either, Ready, ready};
use http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use http_body::Frame;
use http_body_util::{BodyExt, Limited};
use tower::{Layer, Service};

use crate::config::McpSettings;
use crate::context::{RequestContext, Route};
use crate::error::GatewayError;
use crate::headers::is_event_stream;
use crate::jsonrpc::{Envelope, Kind, NAMED_METHODS};
use crate::llm::usage::event_end;
use crate::metrics::{Metrics, ReasonLabel};
use crate::principal::Principal;
use crate::stage::{Request, Response, StageResult, take_ready};
use pins::Pins;
use session::SessionBinder;
use tools::{Access, ToolPolicy, filter_listing};

/// The session id header (2025-11-25).
pub static MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
/// The protocol version header.
pub static MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
/// The method header (2026-07-28).
pub static MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
/// The name header (2026-07-28): the tool, prompt or resource a request acts on.
pub static MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");

/// The protocol versions of the `initialize` handshake era, whose requests carry no `Mcp-Method`
/// or `Mcp-Name` and no per-request metadata.
pub const HANDSHAKE_VERSIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];

/// Largest `tools/list` JSON answer the gateway reads to filter (an event stream is filtered
/// event by event; this bounds one event too).
pub const MAX_LISTING_BYTES: usize = 8 * 1024 * 1024;

/// The MCP policy, built once from `[mcp]`.
#[derive(Debug)]
pub struct McpPolicy {
    tools: ToolPolicy,
    pins: Option<Arc<Pins>>,
    sessions: Arc<SessionBinder>,
    /// Whether the session key is this process's random one.
    random_key: bool,
    metrics: Arc<Metrics>,
}

impl McpPolicy {
    /// The policy of `settings`; a random session key when none is configured. A reload keeps
    /// the `previous` policy's random key (sessions survive it) and its pins (same file).
    pub fn new(
        settings: &McpSettings,
        metrics: Arc<Metrics>,
        previous: Option<&McpPolicy>,
    ) -> Result<McpPolicy, String> {
        let (sessions, random_key) = match (&settings.session_key, previous) {
            (Some(key), _) => (Arc::new(SessionBinder::new(key.expose())), false),
            (None, Some(p)) if p.random_key => (p.sessions.clone(), true),
            (None, _) => (Arc::new(SessionBinder::random()?), true),
        };
        let pins = match (&settings.pins_file, previous.and_then(|p| p.pins.as_ref())) {
            (None, _) => None,
            (Some(path), Some(pins)) if pins.path() == path => Some(pins.clone()),
            (Some(path), _) => Some(Arc::new(Pins::load(path)?)),
        };
        Ok(McpPolicy {
            tools: ToolPolicy::new(settings.tools.clone()),
            pins,
            sessions,
            random_key,
            metrics,
        })
    }

    /// The tool pins, when `pins_file` is set (for the file watcher).
    pub fn pins(&self) -> Option<&Arc<Pins>> {
        self.pins.as_ref()
    }

    /// The checks of a request from `principal` before it is forwarded; returns whether its
    /// answer is a tool listing to filter.
    fn check(
        &self,
        request: &mut Request,
        principal: Option<&Principal>,
    ) -> Result<bool, GatewayError> {
        if let Some(presented) = request.headers().get(&MCP_SESSION_ID) {
            let user = principal.map_or("", |p| &p.user);
            let upstream_id = presented
                .to_str()
                .ok()
                .and_then(|presented| self.sessions.verify(user, presented))
                .and_then(|id| HeaderValue::from_str(id).ok())
                .ok_or(GatewayError::McpSessionMismatch)?;
            request
                .headers_mut()
                .insert(MCP_SESSION_ID.clone(), upstream_id);
        }
        if request.method() != Method::POST {
            return Ok(false);
        }
        // Validation read the envelope as it read the body.
        let Some(envelope) = RequestContext::of(request).and_then(|c| c.facts.mcp()) else {
            return Err(GatewayError::InvalidRequest("not_jsonrpc"));
        };
        if envelope.kind == Kind::Invalid {
            return Err(GatewayError::InvalidRequest("not_jsonrpc"));
        }
        check_headers(request.headers(), envelope)?;
        match (envelope.method.as_deref(), &envelope.name) {
            (Some("tools/call"), Some(tool)) => {
                match self.tools.access(tool) {
                    Access::Denied => return Err(GatewayError::ToolDenied { tool: tool.clone() }),
                    Access::Scoped(scopes) if !principal.is_some_and(|p| p.has_scopes(scopes)) => {
                        return Err(GatewayError::ToolScopeRequired {
                            scopes: scopes.join(" ").into_boxed_str(),
                        });
                    }
                    _ => {}
                }
                if self.pins.as_ref().is_some_and(|p| p.call_refused(tool)) {
                    return Err(GatewayError::ToolDefinitionChanged { tool: tool.clone() });
                }
                Ok(false)
            }
            (Some("tools/list"), _) => Ok(true),
            _ => Ok(false),
        }
    }

    /// One message of a `tools/list` answer, as the client will receive it: re-written from what
    /// the gateway parsed, the listing filtered, so that no client parser can read anything the
    /// gateway did not judge (a key given twice, text after the JSON). `None` for a message that
    /// is not JSON: it is not passed on.
    fn filter(&self, message: &[u8], principal: Option<&Principal>) -> Option<Vec<u8>> {
        let mut value: serde_json::Value = serde_json::from_slice(message).ok()?;
        if let Some(filtered) =
            filter_listing(&mut value, &self.tools, self.pins.as_deref(), principal)
        {
            for (reason, count) in [
                ("forbidden", filtered.forbidden),
                ("changed", filtered.changed),
            ] {
                if count > 0 {
                    self.metrics
                        .mcp_tools_hidden
                        .get_or_create(&ReasonLabel { reason })
                        .inc_by(count as u64);
                }
            }
            self.metrics
                .mcp_tool_definition_changes
                .inc_by(filtered.newly_changed as u64);
        }
        serde_json::to_vec(&value).ok()
    }
}

/// The headers of a 2026-07-28 request must say what its body says (`MCP-Protocol-Version`,
/// `Mcp-Method`, `Mcp-Name`, each required); in any revision, an `Mcp-Method` or `Mcp-Name` that
/// is sent must agree with the body, since intermediaries route and decide on them.
fn check_headers(headers: &HeaderMap, envelope: &Envelope) -> Result<(), GatewayError> {
    let text = |name: &HeaderName, rule: &'static str| match headers.get(name) {
        None => Ok(None),
        Some(value) => decode_header(value)
            .map(Some)
            .ok_or(GatewayError::McpHeaderMismatch(rule)),
    };
    let version = text(&MCP_PROTOCOL_VERSION, "mcp_protocol_version")?;
    let method = text(&MCP_METHOD, "mcp_method")?;
    let name = text(&MCP_NAME, "mcp_name")?;
    let facts = envelope;
    let modern = envelope.meta_version.is_some()
        || version
            .as_deref()
            .is_some_and(|v| !HANDSHAKE_VERSIONS.contains(&v));
    if modern {
        if version.is_none() || version.as_deref() != envelope.meta_version.as_deref() {
            return Err(GatewayError::McpHeaderMismatch("mcp_protocol_version"));
        }
        if envelope.kind == Kind::Request && method.is_none() {
            return Err(GatewayError::McpHeaderMismatch("mcp_method"));
        }
        let named = facts
            .method
            .as_deref()
            .is_some_and(|m| NAMED_METHODS.contains(&m));
        if envelope.kind == Kind::Request && named && name.is_none() {
            return Err(GatewayError::McpHeaderMismatch("mcp_name"));
        }
    }
    if method.is_some() && method.as_deref() != facts.method.as_deref() {
        return Err(GatewayError::McpHeaderMismatch("mcp_method"));
    }
    if name.is_some() && name.as_deref() != facts.name.as_deref() {
        return Err(GatewayError::McpHeaderMismatch("mcp_name"));
    }
    Ok(())
}

/// A header value as text: plain visible ASCII, or the `=?base64?...?=` form (UTF-8 inside)
/// that 2026-07-28 clients use for anything else. `None` for a value that is neither.
fn decode_header(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    match text
        .strip_prefix("=?base64?")
        .and_then(|t| t.strip_suffix("?="))
    {
        Some(encoded) => String::from_utf8(STANDARD.decode(encoded).ok()?).ok(),
        None => Some(text.to_owned()),
    }
}

/// Layer: the MCP checks of the module documentation, after validation read the body.
#[derive(Debug, Clone)]
pub struct McpLayer {
    policy: Arc<McpPolicy>,
}

impl McpLayer {
    /// The layer for `policy`.
    pub fn new(policy: Arc<McpPolicy>) -> McpLayer {
        McpLayer { policy }
    }
}

impl<S> Layer<S> for McpLayer {
    type Service = Mcp<S>;

    fn layer(&self, inner: S) -> Mcp<S> {
        Mcp {
            policy: self.policy.clone(),
            inner,
        }
    }
}

/// The service of [`McpLayer`].
#[derive(Debug, Clone)]
pub struct Mcp<S> {
    policy: Arc<McpPolicy>,
    inner: S,
}

impl<S> Service<Request> for Mcp<S>
where
    S: Service<Request, Response = Response, Error = GatewayError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = GatewayError;
    type Future = Either<Ready<StageResult>, Either<S::Future, McpFuture<S::Future>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let Some(context) = RequestContext::of(&request) else {
            return Either::Left(ready(Err(GatewayError::Internal(
                "request without context",
            ))));
        };
        if context.route != Route::Mcp {
            return Either::Right(Either::Left(self.inner.call(request)));
        }
        let principal = context.principal.clone();
        let listing = match self.policy.check(&mut request, principal.as_deref()) {
            Ok(listing) => listing,
            Err(refusal) => return Either::Left(ready(Err(refusal))),
        };
        let mut inner = take_ready(&mut self.inner);
        Either::Right(Either::Right(McpFuture::Forwarding {
            inner: inner.call(request),
            answer: Some(Answer {
                policy: self.policy.clone(),
                principal,
                listing,
            }),
        }))
    }
}

/// What the answer to an MCP request needs.
pub struct Answer {
    policy: Arc<McpPolicy>,
    principal: Option<Arc<Principal>>,
    listing: bool,
}

impl Answer {
    fn user(&self) -> &str {
        self.principal.as_deref().map_or("", |p| &p.user)
    }

    /// Binds the session id of the answer to the user, filters a listing; a JSON listing is
    /// read whole first (bounded), an event stream is filtered as it passes.
    fn answer(
        self,
        mut response: Response,
    ) -> Either<StageResult, BoxFuture<'static, StageResult>> {
        if let Some(id) = response.headers().get(&MCP_SESSION_ID) {
            let bound = id
                .to_str()
                .ok()
                .map(|id| self.policy.sessions.bind(self.user(), id))
                .and_then(|bound| HeaderValue::from_str(&bound).ok());
            match bound {
                Some(bound) => {
                    response.headers_mut().insert(MCP_SESSION_ID.clone(), bound);
                }
                // An id no header can carry back is not passed on unbound.
                None => {
                    response.headers_mut().remove(&MCP_SESSION_ID);
                }
            }
        }
        if !self.listing || !response.status().is_success() {
            return Either::Left(Ok(response));
        }
        if is_event_stream(response.headers()) {
            let (mut parts, body) = response.into_parts();
            // Filtering changes the length.
            parts.headers.remove(header::CONTENT_LENGTH);
            let body = Body::new(ListingStream {
                inner: body,
                partial: BytesMut::new(),
                answer: self,
            });
            return Either::Left(Ok(Response::from_parts(parts, body)));
        }
        // Rare (a listing answered as one JSON document): read whole, bounded, then filtered.
        Either::Right(Box::pin(async move {
            let (mut parts, body) = response.into_parts();
            let unreadable =
                |reason: &'static str| GatewayError::UpstreamUnavailable(reason.into());
            let bytes = Limited::new(body, MAX_LISTING_BYTES)
                .collect()
                .await
                .map_err(|_| unreadable("a tools/list answer failed or passed 8 MiB"))?
                .to_bytes();
            let filtered = self
                .policy
                .filter(&bytes, self.principal.as_deref())
                .ok_or_else(|| unreadable("a tools/list answer is not JSON"))?;
            parts.headers.remove(header::CONTENT_LENGTH);
            Ok(Response::from_parts(parts, Body::from(filtered)))
        }))
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Mcp`] for a request on an MCP endpoint.
    #[project = McpProj]
    #[allow(missing_docs)] // the variants say what their fields are
    pub enum McpFuture<F> {
        /// The request is with the rest of the stack.
        Forwarding { #[pin] inner: F, answer: Option<Answer> },
        /// A JSON listing is being read to be filtered.
        Answering { inner: BoxFuture<'static, StageResult> },
    }
}

impl<F: Future<Output = StageResult>> Future for McpFuture<F> {
    type Output = StageResult;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<StageResult> {
        loop {
            match self.as_mut().project() {
                McpProj::Forwarding { inner, answer } => {
                    let response = std::task::ready!(inner.poll(cx))?;
                    let Some(answer) = answer.take() else {
                        return Poll::Ready(Err(GatewayError::Internal("answer taken twice")));
                    };
                    match answer.answer(response) {
                        Either::Left(done) => return Poll::Ready(done),
                        Either::Right(reading) => {
                            self.set(McpFuture::Answering { inner: reading });
                        }
                    }
                }
                McpProj::Answering { inner } => return inner.as_mut().poll(cx),
            }
        }
    }
}

/// A `tools/list` answer streamed as server-sent events, filtered event by event: each event is
/// held only until its blank line arrives (at most [`MAX_LISTING_BYTES`]).
struct ListingStream {
    inner: Body,
    partial: BytesMut,
    answer: Answer,
}

impl ListingStream {
    /// One complete event, its message re-written by [`McpPolicy::filter`]. An event without
    /// data (a comment) passes as it is; one whose data is not JSON is dropped.
    fn event(&self, event: &[u8]) -> Bytes {
        let mut data = Vec::new();
        let mut other = Vec::new();
        for line in event.split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(value) = line.strip_prefix(b"data:") {
                if !data.is_empty() {
                    data.push(b'\n');
                }
                data.extend_from_slice(value.strip_prefix(b" ").unwrap_or(value));
            } else if !line.is_empty() {
                other.push(line);
            }
        }
        if data.is_empty() {
            return Bytes::copy_from_slice(event);
        }
        let Some(message) = self
            .answer
            .policy
            .filter(&data, self.answer.principal.as_deref())
        else {
            return Bytes::new();
        };
        let mut out = BytesMut::with_capacity(message.len() + 64);
        for line in other {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\n");
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&message);
        out.extend_from_slice(b"\n\n");
        out.freeze()
    }
}

impl http_body::Body for ListingStream {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        loop {
            if let Some(end) = event_end(&this.partial) {
                let event = this.partial.split_to(end);
                return Poll::Ready(Some(Ok(Frame::data(this.event(&event)))));
            }
            match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        if this.partial.len() + data.len() > MAX_LISTING_BYTES {
                            return Poll::Ready(Some(Err(axum::Error::new(
                                "an MCP listing event is larger than the gateway reads",
                            ))));
                        }
                        this.partial.extend_from_slice(&data);
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None if this.partial.is_empty() => return Poll::Ready(None),
                // An unterminated last event is judged like any other, never passed unread.
                None => {
                    let rest = this.partial.split();
                    return Poll::Ready(Some(Ok(Frame::data(this.event(&rest)))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue};
    use serde_json::json;

    use super::{check_headers, decode_header};
    use crate::error::GatewayError;
    use crate::jsonrpc::Envelope;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn rule(result: Result<(), GatewayError>) -> Option<&'static str> {
        match result {
            Ok(()) => None,
            Err(GatewayError::McpHeaderMismatch(rule)) => Some(rule),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn modern_requests_need_headers_that_match_the_body() {
        let call = Envelope::parse(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "add", "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}}).to_string().as_bytes());
        let good = [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "add"),
        ];
        assert_eq!(rule(check_headers(&headers(&good), &call)), None);
        let encoded = [good[0], good[1], ("mcp-name", "=?base64?YWRk?=")];
        assert_eq!(rule(check_headers(&headers(&encoded), &call)), None);
        assert_eq!(
            rule(check_headers(&headers(&good[..2]), &call)),
            Some("mcp_name")
        );
        assert_eq!(
            rule(check_headers(&headers(&good[1..]), &call)),
            Some("mcp_protocol_version")
        );
        let lying = [good[0], ("mcp-method", "tools/list"), good[2]];
        assert_eq!(
            rule(check_headers(&headers(&lying), &call)),
            Some("mcp_method")
        );
        let other = [good[0], good[1], ("mcp-name", "=?base64?cm0=?=")];
        assert_eq!(
            rule(check_headers(&headers(&other), &call)),
            Some("mcp_name")
        );
        let version = [("mcp-protocol-version", "2025-11-25"), good[1], good[2]];
        assert_eq!(
            rule(check_headers(&headers(&version), &call)),
            Some("mcp_protocol_version")
        );
    }

    #[test]
    fn legacy_requests_need_no_headers_but_those_sent_must_match() {
        let call = Envelope::parse(
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "add"}})
            .to_string()
            .as_bytes(),
        );
        let legacy = [("mcp-protocol-version", "2025-11-25")];
        assert_eq!(rule(check_headers(&headers(&legacy), &call)), None);
        assert_eq!(rule(check_headers(&HeaderMap::new(), &call)), None);
        assert_eq!(
            rule(check_headers(&headers(&[("mcp-name", "rm")]), &call)),
            Some("mcp_name")
        );
        // A header that claims a modern version for a body without per-request metadata.
        let claims = [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "add"),
        ];
        assert_eq!(
            rule(check_headers(&headers(&claims), &call)),
            Some("mcp_protocol_version")
        );
    }

    #[test]
    fn header_values_decode_from_base64_only_when_valid() {
        let value = |v: &str| decode_header(&HeaderValue::from_str(v).unwrap());
        assert_eq!(
            value("=?base64?SGVsbG8sIOS4lueVjA==?=").as_deref(),
            Some("Hello, 世界")
        );
        assert_eq!(value("plain").as_deref(), Some("plain"));
        assert_eq!(value("=?base64?!!!?="), None);
        assert_eq!(value("=?base64?/w==?="), None, "not UTF-8");
    }
}

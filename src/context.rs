//! The per-request context: one typed value every stage reads and fills, instead of scattered
//! request extensions.
//!
//! Guards against untraceable requests, forged ids and lost facts: the id is always made here (a
//! client-sent `x-request-id` is replaced), travels upstream, and names the request in every
//! response, error body and audit record. What later stages learn (the principal, the buffered
//! body, the decision and its rule, the upstream's status, bytes received) lives in the same
//! context; the part the audit record reports ([`Facts`]) is shared with the audit layer, so a
//! request whose client leaves early is still recorded with what was known.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::HeaderMap;
use http::HeaderValue;
use http::header::HeaderName;
use ipnet::IpNet;
use tower::{Layer, Service};

use crate::jsonrpc::Envelope;
use crate::outcome::{Decision, Outcome};
use crate::principal::Principal;
use crate::trace::TraceContext;

/// A request as the pipeline's stages see it.
pub type Request = http::Request<axum::body::Body>;
/// A response as the pipeline's stages return it.
pub type Response = http::Response<axum::body::Body>;

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

/// The shape of a route's refusals: the one choice the error renderer makes per request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Dialect {
    /// RFC 9457 `application/problem+json`: every route that speaks no protocol of its own.
    #[default]
    Problem,
    /// OpenAI's `{"error": {"message", "type", "code", "param"}}`, which the OpenAI SDKs print.
    OpenAi,
    /// A JSON-RPC 2.0 error response carrying the request's `id`, which the MCP SDKs print.
    JsonRpc,
}

/// What protocol a request's path speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Route {
    /// A path of no known protocol.
    #[default]
    Plain,
    /// An OpenAI-compatible path (`[llm] paths`).
    Llm,
    /// An MCP endpoint (`[mcp] paths`).
    Mcp,
    /// The model list of the OpenAI-compatible API (`models` and `models/{id}` under the first
    /// segment of each `[llm]` path, `/v1/models` for the defaults): refused in OpenAI's shape,
    /// which the SDKs' `models.list()` prints, but none of the `[llm]` checks apply.
    ModelList,
}

impl Route {
    /// How refusals on this route are written.
    pub fn dialect(self) -> Dialect {
        match self {
            Route::Plain => Dialect::Problem,
            Route::Llm | Route::ModelList => Dialect::OpenAi,
            Route::Mcp => Dialect::JsonRpc,
        }
    }
}

/// What a refusal on an MCP endpoint tells an OAuth client (RFC 9728 § 5.1): where the
/// protected resource metadata is, and which scopes to ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpEndpoint {
    /// The metadata URL of this endpoint, when the gateway is the resource server.
    pub resource_metadata: Option<Box<str>>,
    /// `[mcp] scopes_supported`, space-separated; empty when none.
    pub scope: Box<str>,
}

/// Which paths speak which protocol, from `[llm] paths` and `[mcp] paths`.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    llm: Vec<Box<str>>,
    /// `models` under the first segment of each OpenAI-compatible path: [`Route::ModelList`].
    openai_models: Vec<Box<str>>,
    mcp: Vec<(Box<str>, Arc<McpEndpoint>)>,
}

impl Routes {
    /// Routes with these OpenAI-compatible paths.
    pub fn new(llm: &[String]) -> Routes {
        let mut openai_models: Vec<Box<str>> = Vec::new();
        for path in llm {
            // "/v1/chat/completions" -> "/v1/models"; a one-segment path names no API prefix.
            let Some(end) = path.get(1..).and_then(|rest| rest.find('/')) else {
                continue;
            };
            let models = format!("{}models", &path[..end + 2]);
            if !openai_models.iter().any(|p| **p == *models) {
                openai_models.push(models.into());
            }
        }
        Routes {
            llm: llm.iter().map(|p| p.as_str().into()).collect(),
            openai_models,
            mcp: Vec::new(),
        }
    }

    /// Adds MCP endpoints.
    pub fn with_mcp(mut self, endpoints: Vec<(String, McpEndpoint)>) -> Routes {
        self.mcp = endpoints
            .into_iter()
            .map(|(path, endpoint)| (path.into_boxed_str(), Arc::new(endpoint)))
            .collect();
        self
    }

    /// The route of `path` (without the query), and its MCP endpoint when it is one.
    pub fn route(&self, path: &str) -> (Route, Option<&Arc<McpEndpoint>>) {
        if self.llm.iter().any(|p| **p == *path) {
            return (Route::Llm, None);
        }
        if let Some((_, endpoint)) = self.mcp.iter().find(|(p, _)| **p == *path) {
            return (Route::Mcp, Some(endpoint));
        }
        // The OpenAI model list; any other path stays plain, even under `/v1/`: it may be an
        // agent service of any shape.
        let model_list = |p: &str| {
            path.strip_prefix(p)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        if self.openai_models.iter().any(|p| model_list(p)) {
            return (Route::ModelList, None);
        }
        (Route::Plain, None)
    }
}

/// What every stage knows about a request: one value in the request extensions, made by
/// [`ContextLayer`] before any other stage runs. (A clone shares the [`Facts`].)
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
    /// The protocol the request's path speaks.
    pub route: Route,
    /// How refusals on this request's route are written.
    pub dialect: Dialect,
    /// On an MCP endpoint: what its refusals tell an OAuth client.
    pub mcp_endpoint: Option<Arc<McpEndpoint>>,
    /// The authenticated identity, once authentication admitted the request.
    pub principal: Option<Arc<Principal>>,
    /// The request body, when validation read it whole: later stages read it here instead of
    /// reading the body again.
    pub body: Option<Bytes>,
    /// The body's parsed JSON, on routes whose later stages read its fields (OpenAI-compatible
    /// routes): parsed once, by validation.
    pub json: Option<Arc<serde_json::Value>>,
    /// What the audit record reports, shared with the audit layer.
    pub facts: Arc<Facts>,
}

impl RequestContext {
    /// A context for a request from `client_ip`, started now, with a fresh id and trace.
    pub fn new(client_ip: IpAddr, tls: bool, trace: TraceContext) -> RequestContext {
        RequestContext {
            id: new_id(),
            client_ip,
            tls,
            started: Instant::now(),
            received_at: SystemTime::now(),
            trace,
            route: Route::Plain,
            dialect: Dialect::Problem,
            mcp_endpoint: None,
            principal: None,
            body: None,
            json: None,
            facts: Arc::default(),
        }
    }

    /// The context of `request`, if [`ContextLayer`] gave it one.
    pub fn of<B>(request: &http::Request<B>) -> Option<&RequestContext> {
        request.extensions().get::<RequestContext>()
    }

    /// The context of `request`, mutably.
    pub fn of_mut<B>(request: &mut http::Request<B>) -> Option<&mut RequestContext> {
        request.extensions_mut().get_mut::<RequestContext>()
    }

    /// The request id as text.
    pub fn id_str(&self) -> &str {
        // Made from a UUID's ASCII form, so this is always valid text.
        self.id.to_str().unwrap_or("unknown")
    }

    /// Records the authenticated identity, for later stages and the audit record.
    pub fn set_principal(&mut self, principal: Arc<Principal>) {
        self.facts.set_user(&principal.user);
        self.principal = Some(principal);
    }
}

/// What the stages learn about a request that its audit record reports: shared between the
/// request (which may be dropped before it ends) and the audit layer.
#[derive(Debug, Default)]
pub struct Facts {
    bytes_in: AtomicU64,
    /// 0 until the upstream answered.
    upstream_status: AtomicU16,
    user: OnceLock<Arc<str>>,
    /// Set by a refusal or a shadow-mode match; most requests never lock it.
    decided: Mutex<Option<Outcome>>,
    /// The connection must close after the answer (an unread body could not be drained).
    close: AtomicBool,
    /// On OpenAI-compatible routes: the model and the tokens of the exchange.
    llm: Mutex<Option<LlmFacts>>,
    /// What data-loss prevention found: redactions and rule ids.
    dlp: Mutex<DlpFacts>,
    /// On MCP endpoints: the JSON-RPC message's envelope (method, id, tool), once read.
    mcp: OnceLock<Envelope>,
}

/// What the audit record says of data-loss prevention.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DlpFacts {
    /// Values replaced by `[REDACTED:<rule>]`, in the request and the response.
    pub redactions: u64,
    /// The rules that matched (each once), never the matched values.
    pub rules: Vec<&'static str>,
}

/// What the audit record says of an OpenAI-compatible exchange.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LlmFacts {
    /// The model the request named.
    pub model: Option<Box<str>>,
    /// Input tokens, once known.
    pub input_tokens: Option<u64>,
    /// Output tokens, once known.
    pub output_tokens: Option<u64>,
}

impl Facts {
    /// Counts request body bytes received.
    pub fn add_bytes_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
    }

    /// Request body bytes received so far.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }

    /// Records the authenticated user.
    pub fn set_user(&self, user: &Arc<str>) {
        let _ = self.user.set(user.clone());
    }

    /// The authenticated user, if any.
    pub fn user(&self) -> Option<Arc<str>> {
        self.user.get().cloned()
    }

    /// Records the model an OpenAI-compatible request named.
    pub fn set_model(&self, model: Option<&str>) {
        let mut llm = self.llm.lock().unwrap_or_else(PoisonError::into_inner);
        llm.get_or_insert_with(LlmFacts::default).model = model.map(Box::from);
    }

    /// Records the tokens of an OpenAI-compatible exchange.
    pub fn set_tokens(&self, input: u64, output: u64) {
        let mut llm = self.llm.lock().unwrap_or_else(PoisonError::into_inner);
        let facts = llm.get_or_insert_with(LlmFacts::default);
        facts.input_tokens = Some(input);
        facts.output_tokens = Some(output);
    }

    /// The model and tokens, on OpenAI-compatible routes.
    pub fn llm(&self) -> Option<LlmFacts> {
        self.llm
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records data-loss prevention findings.
    pub fn add_dlp(&self, redactions: u64, rules: &[&'static str]) {
        let mut dlp = self.dlp.lock().unwrap_or_else(PoisonError::into_inner);
        dlp.redactions += redactions;
        for rule in rules {
            if !dlp.rules.contains(rule) {
                dlp.rules.push(rule);
            }
        }
    }

    /// The data-loss prevention findings so far.
    pub fn dlp(&self) -> DlpFacts {
        self.dlp
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records what the MCP message is (once; later calls are ignored).
    pub fn set_mcp(&self, mcp: Envelope) {
        let _ = self.mcp.set(mcp);
    }

    /// The MCP message's envelope, on MCP endpoints once the body was read.
    pub fn mcp(&self) -> Option<&Envelope> {
        self.mcp.get()
    }

    /// Marks the connection as one that must close after the answer.
    pub fn close_connection(&self) {
        self.close.store(true, Ordering::Relaxed);
    }

    /// Whether the connection must close after the answer.
    pub fn must_close(&self) -> bool {
        self.close.load(Ordering::Relaxed)
    }

    /// Records the status the upstream answered with.
    pub fn set_upstream_status(&self, status: u16) {
        self.upstream_status.store(status, Ordering::Relaxed);
    }

    /// Records the gateway's own decision (a refusal), replacing any earlier note.
    pub fn decide(&self, outcome: Outcome) {
        if let Some(status) = outcome.upstream_status {
            self.upstream_status.store(status, Ordering::Relaxed);
        }
        *self.decided.lock().unwrap_or_else(PoisonError::into_inner) = Some(outcome);
    }

    /// Records a rule that matched without deciding (shadow mode); a refusal's rule wins.
    pub fn note_rule(&self, rule: std::borrow::Cow<'static, str>) {
        let mut decided = self.decided.lock().unwrap_or_else(PoisonError::into_inner);
        let outcome = decided.get_or_insert_with(Outcome::default);
        if outcome.rule.is_none() {
            outcome.rule = Some(rule);
        }
    }

    /// The outcome as known now: a recorded decision, else `allowed`; with the upstream status.
    pub fn take_outcome(&self) -> Outcome {
        let mut outcome = self
            .decided
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .unwrap_or(Outcome {
                decision: Decision::Allowed,
                ..Outcome::default()
            });
        let status = self.upstream_status.load(Ordering::Relaxed);
        if status != 0 {
            outcome.upstream_status = Some(status);
        }
        outcome
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

/// Layer: gives every request its [`RequestContext`] (id, client address, trace context) and
/// sets the id and the `traceparent` the upstream will see; the first stage of the pipeline.
#[derive(Debug, Clone)]
pub struct ContextLayer {
    client_address: Arc<ClientAddress>,
    routes: Arc<Routes>,
}

impl ContextLayer {
    /// Resolves client addresses with `client_address` (trusted proxies) and routes with
    /// `routes`.
    pub fn new(client_address: Arc<ClientAddress>, routes: Arc<Routes>) -> ContextLayer {
        ContextLayer {
            client_address,
            routes,
        }
    }
}

impl<S> Layer<S> for ContextLayer {
    type Service = ContextService<S>;

    fn layer(&self, inner: S) -> ContextService<S> {
        ContextService {
            client_address: self.client_address.clone(),
            routes: self.routes.clone(),
            inner,
        }
    }
}

/// The service of [`ContextLayer`].
#[derive(Debug, Clone)]
pub struct ContextService<S> {
    client_address: Arc<ClientAddress>,
    routes: Arc<Routes>,
    inner: S,
}

impl<S, B> Service<http::Request<B>> for ContextService<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> S::Future {
        let conn = request.extensions().get::<ConnInfo>().copied();
        let client_ip = conn.map_or(IpAddr::from([0, 0, 0, 0]), |c| {
            self.client_address.resolve(c.peer.ip(), request.headers())
        });
        let mut context = RequestContext::new(
            client_ip,
            conn.is_some_and(|c| c.tls),
            TraceContext::from_headers(request.headers()),
        );
        let (route, endpoint) = self.routes.route(request.uri().path());
        context.route = route;
        context.dialect = route.dialect();
        context.mcp_endpoint = endpoint.cloned();
        context.trace.propagate(request.headers_mut());
        // The client's `x-request-id` is not the request's id: forwarding replaces it with this
        // context's id, which the security headers layer also puts on the response.
        request.extensions_mut().insert(context);
        self.inner.call(request)
    }
}

/// A request with a fresh context, as [`ContextLayer`] would make it: for the layers' unit tests.
#[cfg(test)]
pub(crate) fn test_request(method: &str, uri: &str, body: &'static str) -> Request {
    let mut request = http::Request::builder()
        .method(method)
        .uri(uri)
        .body(axum::body::Body::from(body))
        .unwrap_or_default();
    request.extensions_mut().insert(RequestContext::new(
        IpAddr::from([192, 0, 2, 1]),
        true,
        TraceContext::from_headers(&HeaderMap::new()),
    ));
    request
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tower::{Layer, ServiceExt};

    use super::{
        ClientAddress, ConnInfo, ContextLayer, Dialect, McpEndpoint, RequestContext, Route, Routes,
    };

    #[test]
    fn the_model_list_is_refused_in_openai_dialect_without_the_llm_checks() {
        let paths = [
            "/v1/chat/completions",
            "/v1/embeddings",
            "/custom",
            "/openai/v2/responses",
        ]
        .map(String::from);
        let mcp = McpEndpoint {
            resource_metadata: None,
            scope: "".into(),
        };
        let routes = Routes::new(&paths).with_mcp(vec![("/v1/mcp".to_owned(), mcp)]);
        for (path, route, dialect) in [
            ("/v1/chat/completions", Route::Llm, Dialect::OpenAi),
            ("/v1/models", Route::ModelList, Dialect::OpenAi),
            ("/v1/models/gpt-4o", Route::ModelList, Dialect::OpenAi),
            ("/openai/models", Route::ModelList, Dialect::OpenAi),
            ("/v1/modelsx", Route::Plain, Dialect::Problem),
            ("/v1/agents", Route::Plain, Dialect::Problem),
            ("/openai/files", Route::Plain, Dialect::Problem),
            ("/v1/mcp", Route::Mcp, Dialect::JsonRpc),
            ("/v1", Route::Plain, Dialect::Problem),
            ("/v2/models", Route::Plain, Dialect::Problem),
            ("/custom/x", Route::Plain, Dialect::Problem),
            ("/health", Route::Plain, Dialect::Problem),
        ] {
            let (found, _) = routes.route(path);
            assert_eq!(found, route, "{path}");
            assert_eq!(found.dialect(), dialect, "{path}");
        }
    }

    #[tokio::test]
    async fn every_request_gets_a_fresh_id_and_its_client_address() {
        let seen: Arc<Mutex<Vec<(String, String, bool)>>> = Arc::default();
        let record = seen.clone();
        let inner = tower::service_fn(move |request: http::Request<()>| {
            let context = RequestContext::of(&request).unwrap();
            record.lock().unwrap().push((
                context.id_str().to_owned(),
                context.client_ip.to_string(),
                context.tls,
            ));
            async { Ok::<_, std::convert::Infallible>(()) }
        });
        let trusted = ClientAddress::new(vec!["10.0.0.0/8".parse().unwrap()]);
        let layer = ContextLayer::new(Arc::new(trusted), Arc::default());
        for _ in 0..2 {
            let mut request = http::Request::builder()
                .header("x-request-id", "client-chosen")
                .header("x-forwarded-for", "203.0.113.9, 10.1.1.1")
                .body(())
                .unwrap();
            request.extensions_mut().insert(ConnInfo {
                peer: "10.2.2.2:4000".parse().unwrap(),
                tls: true,
            });
            layer.layer(inner.clone()).oneshot(request).await.unwrap();
        }
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_ne!(seen[0].0, seen[1].0, "ids repeat");
        assert!(seen.iter().all(|(id, ip, tls)| {
            id != "client-chosen" && id.len() == 36 && ip == "203.0.113.9" && *tls
        }));
    }

    #[test]
    fn a_refusal_wins_over_a_shadow_rule_and_the_upstream_status_is_kept() {
        let facts = super::Facts::default();
        facts.note_rule("shadow.rule".into());
        facts.set_upstream_status(201);
        let outcome = facts.take_outcome();
        assert_eq!(outcome.decision, crate::outcome::Decision::Allowed);
        assert_eq!(outcome.rule.as_deref(), Some("shadow.rule"));
        assert_eq!(outcome.upstream_status, Some(201));
    }
}

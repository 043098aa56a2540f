//! THE request path: the one place that orders the layers every request passes through.
//!
//! Read top to bottom, this is the order a request meets them. Cheap rejections come before
//! expensive work; identity comes before per-user quotas; the context, audit and header layers
//! wrap everything so that rejections get them too. Every layer is a `tower` layer; the stages
//! below the error layer refuse with a [`GatewayError`](crate::error::GatewayError) value, which
//! the error layer alone renders.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use futures_util::future::BoxFuture;
use http::header::{self, HeaderName};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;

use crate::audit::{AuditLayer, Auditor, RequireWritable};
use crate::auth::{AuthLayer, Authenticator};
use crate::body_deadline::BodyDeadlineLayer;
use crate::config::cors::CorsSettings;
use crate::context::{ClientAddress, ContextLayer, Routes};
use crate::cors::CorsLayer;
use crate::dlp::{Dlp, DlpLayer};
use crate::error::{CatchPanicLayer, RenderErrorsLayer};
use crate::head_limit::HeadRules;
use crate::headers::{SecurityHeaders, SecurityHeadersLayer};
use crate::llm::budget::Budgets;
use crate::llm::{BudgetLayer, LlmLayer, LlmPolicy};
use crate::mcp::edge::{McpEdge, McpEdgeLayer};
use crate::mcp::{McpLayer, McpPolicy};
use crate::metrics::Metrics;
use crate::proxy::{Forward, Upstream};
use crate::rate_limit::per_ip::FloodGuard;
use crate::rate_limit::{RateLimitLayer, RateLimiter};
use crate::stage::{CheckLayer, Request, Response};
use crate::validate::{ValidationLayer, Validator};
use crate::websocket::{WebSocketLayer, WebSockets};

/// What the stages are built from.
#[derive(Debug, Clone)]
pub struct Stages {
    /// The audit sink and request metrics.
    pub auditor: Arc<Auditor>,
    /// The security headers put on every response.
    pub security_headers: Arc<SecurityHeaders>,
    /// `server.max_header_bytes` and `server.allow_absolute_form`.
    pub head_rules: HeadRules,
    /// `server.body_timeout`.
    pub body_timeout: std::time::Duration,
    /// How the client address is found (trusted proxies).
    pub client_address: Arc<ClientAddress>,
    /// Which paths speak which protocol.
    pub routes: Arc<Routes>,
    /// The per-IP flood guard, when configured.
    pub flood_guard: Option<Arc<FloodGuard>>,
    /// JWT authentication, when configured.
    pub authenticator: Option<Arc<Authenticator>>,
    /// The per-user rate limit, when configured.
    pub rate_limiter: Option<Arc<RateLimiter>>,
    /// Input validation, when configured.
    pub validator: Option<Arc<Validator>>,
    /// Token budgets on OpenAI-compatible routes, when configured.
    pub budgets: Option<Arc<Budgets>>,
    /// The policy of OpenAI-compatible routes, when configured.
    pub llm: Option<Arc<LlmPolicy>>,
    /// Data-loss prevention, when configured.
    pub dlp: Option<Arc<Dlp>>,
    /// WebSocket handshakes and their relay (`[websocket]`; without it upgrades are refused).
    pub websocket: Arc<WebSockets>,
    /// CORS for browser callers, when `[cors]` is configured.
    pub cors: Option<Arc<CorsSettings>>,
    /// The edge of MCP endpoints (metadata, CORS, `Origin`), when `[mcp]` is configured.
    pub mcp_edge: Option<Arc<McpEdge>>,
    /// The MCP policy, when configured.
    pub mcp: Option<Arc<McpPolicy>>,
    /// The metrics the stages count in.
    pub metrics: Arc<Metrics>,
    /// The agent backend.
    pub upstream: Arc<Upstream>,
}

/// Request headers that hold credentials: marked sensitive, so no debug output or HPACK table
/// ever holds their values.
const CREDENTIAL_HEADERS: [HeaderName; 4] = [
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::COOKIE,
    HeaderName::from_static("x-api-key"),
];

/// Assembles the pipeline, outermost layer first.
pub fn build(stages: Stages) -> Pipeline {
    let metrics = stages.metrics;
    let require_writable = stages
        .auditor
        .sink
        .fails_closed()
        .then(|| CheckLayer::new(Arc::new(RequireWritable(stages.auditor.clone()))));
    let mcp_routes = stages.mcp.is_some();
    let stack = ServiceBuilder::new()
        // Every request gets its context (id, client address, trace, route) first: all that
        // follows names it by that id and answers in its route's dialect.
        .layer(ContextLayer::new(stages.client_address, stages.routes))
        // Credentials are marked sensitive before any layer could print a header.
        .layer(SetSensitiveRequestHeadersLayer::from_shared(Arc::new(
            CREDENTIAL_HEADERS,
        )))
        // Audit wraps everything below, so rejections, streams and cut streams each leave a record.
        .layer(AuditLayer::new(stages.auditor))
        // Security headers and the request id on every response, the gateway's own errors
        // included.
        .layer(SecurityHeadersLayer::new(stages.security_headers))
        // A bug below becomes a sanitised 500 that is still audited and carries the headers.
        .layer(CatchPanicLayer)
        // CORS: a preflight is answered (or refused) here, without a token; a listed origin may
        // read every answer below, refusals included.
        .option_layer(stages.cors.map(CorsLayer::new))
        // MCP endpoints' edge: the OAuth metadata and CORS preflights need no token, a foreign
        // Origin is refused before any work, and an allowed one may read every answer below,
        // refusals included.
        .option_layer(stages.mcp_edge.map(McpEdgeLayer::new))
        // Every refusal below is rendered here, once, in the dialect of the request's route.
        .layer(RenderErrorsLayer)
        // A request that cannot be recorded is not served (audit.on_failure = "fail_closed").
        .option_layer(require_writable)
        // Cheapest rejection first: an oversized head costs nothing further; nor does framing
        // the HTTP/1.1 guard (`server::framing`) marked on the raw bytes before parsing.
        .layer(CheckLayer::new(Arc::new(stages.head_rules)))
        // A body must arrive by its deadline, whether validation buffers it or it streams on.
        .layer(BodyDeadlineLayer::new(stages.body_timeout))
        // The per-IP flood guard: cheap, and before any signature check, so a flood of bad
        // tokens costs no verification.
        .option_layer(stages.flood_guard.map(CheckLayer::new))
        // Identity before anything per-user; the token is removed here, never forwarded.
        .option_layer(stages.authenticator.map(AuthLayer::new))
        // (A type break: see `Erase`.)
        .layer(Erase)
        // The per-user limit, keyed by the identity just established, before the body is read
        // (MCP endpoints are counted below, once the message says what it is).
        .option_layer(stages.rate_limiter.clone().map(RateLimitLayer::new))
        // The token budget, per user like the limit, on OpenAI-compatible routes.
        .option_layer(stages.budgets.map(|b| BudgetLayer::new(b, metrics.clone())))
        // Input validation: it buffers the body, the most expensive check, and only for
        // requests every cheaper stage has admitted; on OpenAI-compatible routes it judges by
        // role and leaves the parsed body for the protocol policy.
        .option_layer(stages.validator.map(ValidationLayer::new))
        // Secrets in the validated body are caught before any policy forwards it; answers are
        // redacted on the way back, as they stream.
        .option_layer(stages.dlp.map(DlpLayer::new))
        // (A type break: see `Erase`.)
        .layer(Erase)
        // The protocol policy (the model, the token limit) on the validated body; the answer's
        // tokens are counted on the way back.
        .option_layer(stages.llm.map(LlmLayer::new))
        // The MCP message: headers against body, the session's owner, the tool's rules and
        // pin; tool listings are filtered and session ids bound on the way back.
        .option_layer(stages.mcp.map(McpLayer::new))
        // On MCP endpoints the limit counts the calls that do work (tools/call,
        // resources/read, prompts/get), now that the message is known.
        .option_layer(
            stages
                .rate_limiter
                .filter(|_| mcp_routes)
                .map(RateLimitLayer::for_mcp_calls),
        )
        // A WebSocket handshake that passed every stage is forwarded and its socket relayed
        // with bounds; an upgrade anywhere else is refused.
        .layer(WebSocketLayer::new(stages.websocket))
        // Forwarding to the upstream answers whatever passed every stage.
        .service(Forward(stages.upstream));
    Pipeline(Erase.layer(stack))
}

/// A finished pipeline, its type erased: what a connection serves requests with. Cheap to clone.
#[derive(Clone)]
pub struct Pipeline(Erased<Infallible>);

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pipeline")
    }
}

impl Pipeline {
    /// Runs the pipeline as a future hyper can serve (it never fails).
    pub fn serve(&self, request: Request) -> Served {
        Served(self.0.0.serve(request))
    }
}

/// Erases the type of every layer below it: a service behind a reference-counted trait object,
/// whose future is boxed.
///
/// Each optional stage (`option_layer`) is an `Either` whose future names the future below it
/// twice, so without a break the stack's types double with every optional stage (tens of
/// megabytes of symbol names, gigabytes of debug information). A break costs one boxed future
/// per request; the pipeline puts one after every few optional stages.
#[derive(Debug, Clone, Copy, Default)]
struct Erase;

impl<S, E> Layer<S> for Erase
where
    S: Service<Request, Response = Response, Error = E> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    E: Send + 'static,
{
    type Service = Erased<E>;

    fn layer(&self, inner: S) -> Erased<E> {
        Erased(Arc::new(inner))
    }
}

/// The layers below an [`Erase`]: cloning one costs a reference count.
struct Erased<E>(Arc<dyn Serve<E>>);

impl<E> Clone for Erased<E> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<E: 'static> Service<Request> for Erased<E> {
    type Response = Response;
    type Error = E;
    type Future = BoxFuture<'static, Result<Response, E>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), E>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        self.0.serve(request)
    }
}

/// A run of layers behind a trait object: one boxed future per request.
trait Serve<E>: Send + Sync + 'static {
    fn serve(&self, request: Request) -> BoxFuture<'static, Result<Response, E>>;
}

impl<S, E> Serve<E> for S
where
    S: Service<Request, Response = Response, Error = E> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    E: Send + 'static,
{
    fn serve(&self, request: Request) -> BoxFuture<'static, Result<Response, E>> {
        // A clone per request (reference counts only), as tower's contract wants a service
        // that was made ready; every layer of the stack is always ready, so the first poll
        // answers, and the wait that would follow otherwise is never taken.
        let mut service = self.clone();
        let mut cx = Context::from_waker(Waker::noop());
        match service.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => Box::pin(service.call(request)),
            Poll::Ready(Err(error)) => Box::pin(std::future::ready(Err(error))),
            Poll::Pending => Box::pin(service.oneshot(request)),
        }
    }
}

/// A pipeline answer as a `Result` (hyper's service contract); it is always `Ok`.
pub struct Served(BoxFuture<'static, Result<Response, Infallible>>);

impl Future for Served {
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

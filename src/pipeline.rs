//! THE request path: the one place that orders the layers every request passes through.
//!
//! Read top to bottom, this is the order a request meets them. Cheap rejections come before
//! expensive work; identity comes before per-user quotas; the id, audit and header layers wrap
//! everything so that rejections get them too.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::Request;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::Response;
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

use crate::audit::{self, Auditor};
use crate::auth::{self, Authenticator};
use crate::headers::{self, SecurityHeaders};
use crate::proxy::{self, Upstream};
use crate::rate_limit::per_ip::{self, FloodGuard};
use crate::rate_limit::{self, RateLimiter};
use crate::request_id::ClientAddress;
use crate::validate::{self, Validator};
use crate::{error, head_limit, request_id};

/// The finished, type-erased request pipeline.
pub type Pipeline = BoxCloneSyncService<Request, Response, Infallible>;

/// What the stages are built from.
#[derive(Debug, Clone)]
pub struct Stages {
    /// The audit sink and request metrics.
    pub auditor: Arc<Auditor>,
    /// The security headers put on every response.
    pub security_headers: Arc<SecurityHeaders>,
    /// `server.max_header_bytes`.
    pub max_header_bytes: usize,
    /// How the client address is found (trusted proxies).
    pub client_address: Arc<ClientAddress>,
    /// The per-IP flood guard, when configured.
    pub flood_guard: Option<Arc<FloodGuard>>,
    /// JWT authentication, when configured.
    pub authenticator: Option<Arc<Authenticator>>,
    /// The per-user rate limit, when configured.
    pub rate_limiter: Option<Arc<RateLimiter>>,
    /// Input validation, when configured.
    pub validator: Option<Arc<Validator>>,
    /// The agent backend.
    pub upstream: Arc<Upstream>,
}

/// Assembles the pipeline, outermost layer first.
pub fn build(stages: Stages) -> Pipeline {
    let stack = ServiceBuilder::new()
        // Every request gets its id and context (and its client address) first: all that
        // follows names it by that id.
        .layer(from_fn_with_state(
            stages.client_address,
            request_id::assign,
        ))
        // Audit wraps everything below, so rejections, streams and cut streams each leave a record.
        .layer(from_fn_with_state(stages.auditor, audit::observe))
        // Security headers on every response, the gateway's own errors included.
        .layer(from_fn_with_state(
            stages.security_headers,
            headers::secure_response,
        ))
        // A bug below becomes a sanitised 500 that is still audited and carries the headers.
        .layer(from_fn(error::catch_panic))
        // Cheapest rejection first: an oversized head costs nothing further.
        .layer(from_fn_with_state(
            stages.max_header_bytes,
            head_limit::enforce,
        ))
        // The per-IP flood guard: cheap, and before any signature check, so a flood of bad
        // tokens costs no verification.
        .option_layer(
            stages
                .flood_guard
                .map(|guard| from_fn_with_state(guard, per_ip::guard)),
        )
        // Identity before anything per-user; the token is removed here, never forwarded.
        .option_layer(
            stages
                .authenticator
                .map(|auth| from_fn_with_state(auth, auth::authenticate)),
        )
        // The per-user limit, keyed by the identity just established, before the body is read.
        .option_layer(
            stages
                .rate_limiter
                .map(|limiter| from_fn_with_state(limiter, rate_limit::enforce)),
        )
        // Input validation last: it buffers the body, the most expensive check, and only for
        // requests every cheaper stage has admitted.
        .option_layer(
            stages
                .validator
                .map(|validator| from_fn_with_state(validator, validate::validate)),
        )
        .service(proxy::service(stages.upstream));
    BoxCloneSyncService::new(stack)
}

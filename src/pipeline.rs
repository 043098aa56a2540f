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
    /// JWT authentication, when configured.
    pub authenticator: Option<Arc<Authenticator>>,
    /// The agent backend.
    pub upstream: Arc<Upstream>,
}

/// Assembles the pipeline, outermost layer first.
pub fn build(stages: Stages) -> Pipeline {
    let stack = ServiceBuilder::new()
        // Every request gets its id and context first: all that follows names it by that id.
        .layer(from_fn(request_id::assign))
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
        // (The per-IP flood guard goes here: cheap, and before any signature check.)
        // Identity before anything per-user; the token is removed here, never forwarded.
        .option_layer(
            stages
                .authenticator
                .map(|auth| from_fn_with_state(auth, auth::authenticate)),
        )
        // (Per-user rate limit, then input validation, go here.)
        .service(proxy::service(stages.upstream));
    BoxCloneSyncService::new(stack)
}

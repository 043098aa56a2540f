//! THE request path: the one place that orders the layers every request passes through.
//!
//! Read top to bottom, this is the order a request meets them. Cheap rejections come before
//! expensive work; identity comes before per-user quotas; the id, audit and header layers wrap
//! everything so that rejections get them too.

use std::sync::Arc;

use crate::audit::{self, Auditor};
use crate::auth::{self, Authenticator};
use crate::chain;
use crate::head_limit::HeadRules;
use crate::headers::{self, SecurityHeaders};
use crate::proxy::{self, Upstream};
use crate::rate_limit::per_ip::{self, FloodGuard};
use crate::rate_limit::{self, RateLimiter};
use crate::request_id::ClientAddress;
pub use crate::stage::Pipeline;
use crate::stage::{optional, stage};
use crate::validate::{self, Validator};
use crate::{body_deadline, error, head_limit, request_id};

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

/// Assembles the pipeline, outermost stage first.
pub fn build(stages: Stages) -> Pipeline {
    let require_writable = stages
        .auditor
        .sink
        .fails_closed()
        .then(|| stages.auditor.clone());
    Pipeline::new(chain!(
        // Every request gets its id and context (and its client address) first: all that
        // follows names it by that id.
        stage(stages.client_address, request_id::assign),
        // Audit wraps everything below, so rejections, streams and cut streams each leave a record.
        stage(stages.auditor, audit::observe),
        // Security headers on every response, the gateway's own errors included.
        stage(stages.security_headers, headers::secure_response),
        // A bug below becomes a sanitised 500 that is still audited and carries the headers.
        stage((), error::catch_panic),
        // A request that cannot be recorded is not served (audit.on_failure = "fail_closed").
        optional(require_writable, audit::require_writable),
        // Cheapest rejection first: an oversized head costs nothing further; nor does framing
        // the HTTP/1.1 guard (`server::framing`) marked on the raw bytes before parsing.
        stage(stages.head_rules, head_limit::enforce),
        // A body must arrive by its deadline, whether validation buffers it or it streams on.
        stage(stages.body_timeout, body_deadline::enforce),
        // The per-IP flood guard: cheap, and before any signature check, so a flood of bad
        // tokens costs no verification.
        optional(stages.flood_guard, per_ip::guard),
        // Identity before anything per-user; the token is removed here, never forwarded.
        optional(stages.authenticator, auth::authenticate),
        // The per-user limit, keyed by the identity just established, before the body is read.
        optional(stages.rate_limiter, rate_limit::enforce),
        // Input validation last: it buffers the body, the most expensive check, and only for
        // requests every cheaper stage has admitted.
        optional(stages.validator, validate::validate),
        // Forwarding to the upstream answers whatever passed every stage.
        => proxy::Forward(stages.upstream)
    ))
}

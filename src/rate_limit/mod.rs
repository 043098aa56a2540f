//! Per-user rate limiting: a true sliding window, in memory or shared through Redis.
//!
//! Guards against one user spending the agent backend's budget: no user is admitted more than
//! `requests` times in any interval of length `window` (see [`window`] for the exact guarantee),
//! across all replicas when the Redis backend is used. Every forwarded response carries
//! `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`; a refusal is a 429 with an
//! accurate `Retry-After` and never reaches the upstream.

pub mod memory;
pub mod per_ip;
pub mod redis;
pub mod window;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::{BoxFuture, Either, Ready, ready};
use tower::{Layer, Service};

use crate::config::{FailureMode, RateLimitBackend, RateLimitSettings};
use crate::context::{RequestContext, Route};
use crate::error::GatewayError;
use crate::headers::RateLimitState;
use crate::metrics::Metrics;
use crate::principal::Principal;
use crate::stage::{Request, Response, StageResult, take_ready};
use memory::{Limit, MemoryStore, Overflow};
use redis::RedisStore;
use window::Verdict;

/// How long after a Redis failure the limiter stays on its fallback before trying Redis again.
pub const REDIS_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// One limit class: the default, or an override for a claim value.
#[derive(Debug, Clone)]
struct Class {
    matches: Option<(String, String)>,
    limit: Limit,
}

struct Shared {
    store: RedisStore,
    mode: FailureMode,
    in_outage: AtomicBool,
    retry_at_ms: AtomicU64,
}

/// What the limiter says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Forward it; the verdict fills the headers.
    Admit(Verdict),
    /// Refuse it with 429.
    Refuse(Verdict),
    /// Refuse it: the tracked-user cap is reached (429 with this `Retry-After`).
    CapReached(u64),
    /// Refuse it: Redis is unreachable and `failure_mode = "closed"` (503).
    Unavailable,
}

/// The per-user limiter.
pub struct RateLimiter {
    default: Limit,
    classes: Vec<Class>,
    local: MemoryStore,
    shared: Option<Shared>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("classes", &self.classes)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// Builds the stores from the validated `[rate_limit]`; `None` when no per-user limit is set.
    pub fn new(
        settings: &RateLimitSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Option<RateLimiter>, String> {
        let Some(default) = settings.default else {
            return Ok(None);
        };
        let mut classes = vec![Class {
            matches: None,
            limit: default,
        }];
        classes.extend(settings.overrides.iter().map(|o| Class {
            matches: Some((o.claim.clone(), o.value.clone())),
            limit: o.limit,
        }));
        let limits: Vec<Limit> = classes.iter().map(|c| c.limit).collect();
        let shared = match &settings.backend {
            RateLimitBackend::Memory => None,
            RateLimitBackend::Redis {
                url,
                topology,
                timeout,
                failure_mode,
            } => Some(Shared {
                store: RedisStore::new(url, topology, *timeout)?,
                mode: *failure_mode,
                in_outage: AtomicBool::new(false),
                retry_at_ms: AtomicU64::new(0),
            }),
        };
        metrics.rate_limit_backend_up.set(1);
        Ok(Some(RateLimiter {
            default,
            classes,
            local: MemoryStore::new(&limits, settings.max_tracked_users),
            shared,
            metrics,
        }))
    }

    /// The limit class of a principal: the first override whose claim has the value, else 0.
    pub fn class_of(&self, principal: Option<&Principal>) -> usize {
        let Some(principal) = principal else {
            return 0;
        };
        self.classes
            .iter()
            .position(|c| {
                c.matches.as_ref().is_some_and(|(claim, value)| {
                    principal
                        .claims
                        .iter()
                        .any(|(k, v)| k == claim && v == value)
                })
            })
            .unwrap_or(0)
    }

    /// Decides one request for `user` in `class`.
    pub async fn check(&self, class: usize, user: &Arc<str>) -> Check {
        if let Some(shared) = self.redis_due() {
            let limit = self.classes.get(class).map_or(self.default, |c| c.limit);
            match shared.store.decide(&redis::key(class, user), limit).await {
                Ok(verdict) => {
                    if shared.in_outage.swap(false, Ordering::Relaxed) {
                        self.metrics.rate_limit_backend_up.set(1);
                        tracing::info!("Redis answers again; rate limits are shared again");
                    }
                    return self.count(to_check(verdict));
                }
                Err(e) => {
                    self.metrics.rate_limit_redis_errors.inc();
                    shared.retry_at_ms.store(
                        self.local.now_ms() + REDIS_RETRY_INTERVAL.as_millis() as u64,
                        Ordering::Relaxed,
                    );
                    if !shared.in_outage.swap(true, Ordering::Relaxed) {
                        self.metrics.rate_limit_backend_up.set(0);
                        self.metrics.rate_limit_redis_outages.inc();
                        tracing::warn!(
                            error = %e,
                            failure_mode = shared.mode.as_str(),
                            "Redis is unreachable; rate limiting falls back until it answers"
                        );
                    }
                }
            }
        }
        self.check_without_redis(class, user)
    }

    /// The shared store, when this request should ask it: Redis is configured, and not in an
    /// outage whose retry time is still ahead.
    fn redis_due(&self) -> Option<&Shared> {
        let shared = self.shared.as_ref()?;
        let due = !shared.in_outage.load(Ordering::Relaxed)
            || self.local.now_ms() >= shared.retry_at_ms.load(Ordering::Relaxed);
        due.then_some(shared)
    }

    /// Decides in memory: the only store, or the fallback while Redis is unreachable.
    fn check_without_redis(&self, class: usize, user: &Arc<str>) -> Check {
        if let Some(shared) = &self.shared {
            self.metrics.rate_limit_fallback_decisions.inc();
            match shared.mode {
                FailureMode::Closed => return Check::Unavailable,
                FailureMode::Open => {
                    // Admitted whatever the local estimate says; the estimate fills the headers.
                    return match self.local_check(class, user) {
                        Check::Admit(v) | Check::Refuse(v) => Check::Admit(Verdict {
                            admitted: true,
                            retry_after_secs: 0,
                            ..v
                        }),
                        Check::CapReached(_) | Check::Unavailable => Check::Admit(Verdict {
                            admitted: true,
                            limit: self.default.requests,
                            remaining: self.default.requests,
                            reset_secs: 1,
                            retry_after_secs: 0,
                        }),
                    };
                }
                FailureMode::Local => {}
            }
        }
        let check = self.local_check(class, user);
        self.count(check)
    }

    fn local_check(&self, class: usize, user: &Arc<str>) -> Check {
        match self.local.decide(class, user) {
            Ok(verdict) => to_check(verdict),
            Err(Overflow::TrackedUsersCap) => Check::CapReached(self.local.cap_retry_after(class)),
        }
    }

    fn count(&self, check: Check) -> Check {
        let result = if matches!(check, Check::Admit(_)) {
            "admitted"
        } else {
            "refused"
        };
        self.metrics.rate_limit_decision(result);
        check
    }

    /// Ready unless Redis is down and `failure_mode = "closed"`.
    pub fn is_ready(&self) -> bool {
        self.shared
            .as_ref()
            .is_none_or(|s| s.mode != FailureMode::Closed || !s.in_outage.load(Ordering::Relaxed))
    }

    /// Drops idle users (memory store); called periodically.
    pub fn prune(&self) {
        self.local.prune();
        self.metrics
            .rate_limit_tracked_users
            .set(i64::try_from(self.local.tracked()).unwrap_or(i64::MAX));
    }
}

fn to_check(verdict: Verdict) -> Check {
    if verdict.admitted {
        Check::Admit(verdict)
    } else {
        Check::Refuse(verdict)
    }
}

fn state(verdict: &Verdict) -> RateLimitState {
    RateLimitState {
        limit: verdict.limit,
        remaining: verdict.remaining,
        reset_secs: verdict.reset_secs,
    }
}

/// What a decision means for the request: pass it on with these headers for its answer, or
/// refuse it.
fn decided(check: Check) -> Result<RateLimitState, GatewayError> {
    match check {
        Check::Admit(verdict) => Ok(state(&verdict)),
        Check::Refuse(verdict) => Err(GatewayError::RateLimited {
            retry_after: verdict.retry_after_secs,
            rule: "user_limit",
            state: Some(state(&verdict)),
        }),
        Check::CapReached(retry_after) => Err(GatewayError::RateLimited {
            retry_after,
            rule: "tracked_users_cap",
            state: None,
        }),
        Check::Unavailable => Err(GatewayError::LimiterUnavailable),
    }
}

/// Layer: the per-user limit. Keyed by the authenticated user; without authentication (or on a
/// public path) by the client address. Admitted answers carry the `RateLimit-*` headers.
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    limiter: Arc<RateLimiter>,
    counts: Counts,
}

/// Which requests a [`RateLimitLayer`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counts {
    /// Every request but those to MCP endpoints, before the body is read.
    AllButMcp,
    /// On MCP endpoints, once the JSON-RPC message is known: `tools/call`, `resources/read`
    /// and `prompts/get` (the calls that do work), not the handshake, notifications, listings,
    /// the event stream or session ends.
    McpCalls,
}

/// The MCP methods the limit counts.
pub const COUNTED_MCP_METHODS: [&str; 3] = ["tools/call", "resources/read", "prompts/get"];

impl RateLimitLayer {
    /// The layer for `limiter`: counts every request except those to MCP endpoints.
    pub fn new(limiter: Arc<RateLimiter>) -> RateLimitLayer {
        RateLimitLayer {
            limiter,
            counts: Counts::AllButMcp,
        }
    }

    /// The layer for `limiter` that counts the calls of [`COUNTED_MCP_METHODS`] on MCP
    /// endpoints (placed after the MCP stage, which reads the message).
    pub fn for_mcp_calls(limiter: Arc<RateLimiter>) -> RateLimitLayer {
        RateLimitLayer {
            limiter,
            counts: Counts::McpCalls,
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            limiter: self.limiter.clone(),
            counts: self.counts,
            inner,
        }
    }
}

/// The service of [`RateLimitLayer`].
#[derive(Debug, Clone)]
pub struct RateLimit<S> {
    limiter: Arc<RateLimiter>,
    counts: Counts,
    inner: S,
}

impl<S> Service<Request> for RateLimit<S>
where
    S: Service<Request, Response = Response, Error = GatewayError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = GatewayError;
    type Future = Either<
        Ready<StageResult>,
        Either<WithRateHeaders<S::Future>, BoxFuture<'static, StageResult>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let context = RequestContext::of(&request);
        let mcp = context.is_some_and(|c| c.route == Route::Mcp);
        let counted = match self.counts {
            Counts::AllButMcp => !mcp,
            Counts::McpCalls => {
                mcp && context
                    .and_then(|c| c.facts.mcp())
                    .and_then(|m| m.method.as_deref())
                    .is_some_and(|m| COUNTED_MCP_METHODS.contains(&m))
            }
        };
        if !counted {
            return Either::Right(Either::Left(WithRateHeaders {
                inner: self.inner.call(request),
                state: None,
            }));
        }
        let principal = context.and_then(|c| c.principal.as_deref());
        let key: Arc<str> = match (principal, context) {
            (Some(p), _) => p.user.clone(),
            (None, Some(c)) => Arc::from(c.client_ip.to_string()),
            (None, None) => Arc::from("unknown"),
        };
        let class = self.limiter.class_of(principal);
        if self.limiter.redis_due().is_none() {
            return match decided(self.limiter.check_without_redis(class, &key)) {
                Ok(state) => Either::Right(Either::Left(WithRateHeaders {
                    inner: self.inner.call(request),
                    state: Some(state),
                })),
                Err(refusal) => Either::Left(ready(Err(refusal))),
            };
        }
        // Boxed: the Redis round trip.
        let limiter = self.limiter.clone();
        let mut inner = take_ready(&mut self.inner);
        Either::Right(Either::Right(Box::pin(async move {
            let state = decided(limiter.check(class, &key).await)?;
            WithRateHeaders {
                inner: inner.call(request),
                state: Some(state),
            }
            .await
        })))
    }
}

pin_project_lite::pin_project! {
    /// The response future of an admitted request: its answer gets the `RateLimit-*` headers.
    pub struct WithRateHeaders<F> {
        #[pin]
        inner: F,
        state: Option<RateLimitState>,
    }
}

impl<F: Future<Output = StageResult>> Future for WithRateHeaders<F> {
    type Output = StageResult;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<StageResult> {
        let this = self.project();
        let mut response = std::task::ready!(this.inner.poll(cx))?;
        if let Some(state) = this.state {
            state.write(response.headers_mut());
        }
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tower::{Layer, ServiceExt};

    use super::{RateLimitLayer, RateLimiter};
    use crate::config::{RateLimitBackend, RateLimitSettings};
    use crate::error::GatewayError;
    use crate::metrics::Metrics;
    use crate::rate_limit::memory::Limit;
    use crate::stage::test_support::{recording, request};

    #[tokio::test]
    async fn admitted_answers_carry_the_headers_and_the_next_request_is_refused() {
        let settings = RateLimitSettings {
            default: Some(Limit {
                requests: 2,
                window: Duration::from_secs(60),
            }),
            overrides: Vec::new(),
            backend: RateLimitBackend::Memory,
            max_tracked_users: 100,
            per_ip: None,
        };
        let limiter = RateLimiter::new(&settings, Arc::new(Metrics::new()))
            .unwrap()
            .unwrap();
        let layer = RateLimitLayer::new(Arc::new(limiter));
        let (inner, seen) = recording("ok");
        for remaining in ["1", "0"] {
            let response = layer
                .layer(inner.clone())
                .oneshot(request("GET", "/", ""))
                .await
                .unwrap();
            assert_eq!(response.headers()["ratelimit-limit"], "2");
            assert_eq!(response.headers()["ratelimit-remaining"], remaining);
        }
        let refused = layer.layer(inner).oneshot(request("GET", "/", "")).await;
        let Err(GatewayError::RateLimited {
            retry_after, state, ..
        }) = refused
        else {
            panic!("the third request was not refused");
        };
        assert!(retry_after >= 1);
        assert_eq!(state.map(|s| s.remaining), Some(0));
        assert_eq!(seen.lock().unwrap().len(), 2);
    }
}

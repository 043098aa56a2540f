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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::stage::Next;
use axum::extract::Request;
use axum::response::Response;
use http::HeaderName;

use crate::auth::Principal;
use crate::config::{FailureMode, RateLimitBackend, RateLimitSettings};
use crate::error::GatewayError;
use crate::headers::number_value;
use crate::metrics::Metrics;
use crate::request_id::RequestContext;
use memory::{Limit, MemoryStore, Overflow};
use redis::RedisStore;
use window::Verdict;

/// How long after a Redis failure the limiter stays on its fallback before trying Redis again.
pub const REDIS_RETRY_INTERVAL: Duration = Duration::from_secs(1);

static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

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
                timeout,
                failure_mode,
            } => Some(Shared {
                store: RedisStore::new(url, *timeout)?,
                mode: *failure_mode,
                in_outage: AtomicBool::new(false),
                retry_at_ms: AtomicU64::new(0),
            }),
        };
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
        if let Some(shared) = &self.shared {
            let now = self.local.now_ms();
            if !shared.in_outage.load(Ordering::Relaxed)
                || now >= shared.retry_at_ms.load(Ordering::Relaxed)
            {
                let limit = self.classes.get(class).map_or(self.default, |c| c.limit);
                // Boxed: in memory-only mode every request would otherwise carry (and copy) the
                // Redis round trip's space.
                let decided = Box::pin(shared.store.decide(&redis::key(class, user), limit)).await;
                match decided {
                    Ok(verdict) => {
                        if shared.in_outage.swap(false, Ordering::Relaxed) {
                            tracing::info!("Redis answers again; rate limits are shared again");
                        }
                        return self.count(to_check(verdict));
                    }
                    Err(e) => {
                        self.metrics.rate_limit_redis_errors.inc();
                        shared.retry_at_ms.store(
                            now + REDIS_RETRY_INTERVAL.as_millis() as u64,
                            Ordering::Relaxed,
                        );
                        if !shared.in_outage.swap(true, Ordering::Relaxed) {
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

fn set_headers(response: &mut Response, verdict: &Verdict) {
    let headers = response.headers_mut();
    headers.insert(RATELIMIT_LIMIT.clone(), number_value(verdict.limit));
    headers.insert(RATELIMIT_REMAINING.clone(), number_value(verdict.remaining));
    headers.insert(RATELIMIT_RESET.clone(), number_value(verdict.reset_secs));
}

/// Layer: the per-user limit. Keyed by the authenticated user; without authentication (or on a
/// public path) by the client address.
pub async fn enforce(limiter: Arc<RateLimiter>, request: Request, next: impl Next) -> Response {
    let principal = request.extensions().get::<Arc<Principal>>().cloned();
    let key: Arc<str> = match &principal {
        Some(p) => p.user.clone(),
        None => request.extensions().get::<RequestContext>().map_or_else(
            || Arc::from("unknown"),
            |c| Arc::from(c.client_ip.to_string()),
        ),
    };
    let class = limiter.class_of(principal.as_deref());
    // A reference-counted clone of the id, made text only on a refusal.
    let context_id = request
        .extensions()
        .get::<RequestContext>()
        .map(|c| c.id.clone());
    let id = || {
        context_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown")
            .to_owned()
    };
    match limiter.check(class, &key).await {
        Check::Admit(verdict) => {
            let mut response = next.run(request).await;
            set_headers(&mut response, &verdict);
            response
        }
        Check::Refuse(verdict) => {
            let mut response = GatewayError::RateLimited {
                retry_after: verdict.retry_after_secs,
                rule: "user_limit",
            }
            .into_response(&id());
            set_headers(&mut response, &verdict);
            response
        }
        Check::CapReached(retry_after) => GatewayError::RateLimited {
            retry_after,
            rule: "tracked_users_cap",
        }
        .into_response(&id()),
        Check::Unavailable => GatewayError::LimiterUnavailable.into_response(&id()),
    }
}

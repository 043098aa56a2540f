//! The per-IP flood guard: GCRA (governor) keyed by client address, before authentication.
//!
//! Guards against floods that would otherwise reach the expensive stages: a client sending bad
//! tokens as fast as it can is cut here, so the flood costs no signature verification. Keyed
//! state is pruned periodically, so many addresses cannot grow memory without bound.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::window::ceil_secs;
use crate::context::RequestContext;
use crate::error::GatewayError;
use crate::stage::{Check, Request};

/// GCRA per client address.
pub struct FloodGuard {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

impl std::fmt::Debug for FloodGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FloodGuard")
            .field("tracked", &self.limiter.len())
            .finish_non_exhaustive()
    }
}

impl FloodGuard {
    /// `requests_per_second` sustained, `burst` at once.
    pub fn new(requests_per_second: NonZeroU32, burst: NonZeroU32) -> FloodGuard {
        FloodGuard {
            limiter: RateLimiter::keyed(Quota::per_second(requests_per_second).allow_burst(burst)),
            clock: DefaultClock::default(),
        }
    }

    /// `Ok` to admit, or the seconds until this address may send again (at least 1).
    pub fn admit(&self, ip: IpAddr) -> Result<(), u64> {
        self.limiter.check_key(&ip).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            ceil_secs(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX))
        })
    }

    /// Forgets addresses whose state has fully recovered.
    pub fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.limiter.len()
    }
}

/// Check: 429 `ip_rate_limited` for an address over its rate.
impl Check for FloodGuard {
    fn check(&self, request: &mut Request) -> Result<(), GatewayError> {
        let Some(context) = RequestContext::of(request) else {
            return Ok(());
        };
        self.admit(context.client_ip)
            .map_err(|retry_after| GatewayError::IpRateLimited { retry_after })
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::sync::Arc;

    use tower::{Layer, ServiceExt};

    use super::FloodGuard;
    use crate::error::GatewayError;
    use crate::stage::CheckLayer;
    use crate::stage::test_support::{recording, request};

    #[tokio::test]
    async fn an_address_past_its_burst_is_refused_with_a_retry_time() {
        let guard = Arc::new(FloodGuard::new(
            NonZeroU32::new(1).unwrap(),
            NonZeroU32::new(2).unwrap(),
        ));
        let (inner, seen) = recording("ok");
        let layer = CheckLayer::new(guard);
        for _ in 0..2 {
            let admitted = layer
                .layer(inner.clone())
                .oneshot(request("GET", "/", ""))
                .await;
            assert_eq!(admitted.unwrap().status(), 200);
        }
        let refused = layer.layer(inner).oneshot(request("GET", "/", "")).await;
        assert!(matches!(
            refused,
            Err(GatewayError::IpRateLimited { retry_after: 1 })
        ));
        assert_eq!(seen.lock().unwrap().len(), 2);
    }
}

//! Validation of `[rate_limit]` and `[server] trusted_proxies`.

use std::num::NonZeroU32;
use std::time::Duration;

use ipnet::IpNet;

use super::raw::{RawRateLimit, RawServer};
use super::{ConfigError, Locator};
use crate::secret::Secret;

/// One limit: `requests` per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Requests admitted in any window.
    pub requests: u32,
    /// Window length.
    pub window: Duration,
}

/// Default window of the per-user limit.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// Default per-call Redis timeout.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(50);
/// Default cap on users tracked in memory.
pub const DEFAULT_MAX_TRACKED_USERS: usize = 1_000_000;
/// Shortest accepted window.
pub const MIN_WINDOW: Duration = Duration::from_secs(1);

/// What the limiter does while Redis is unreachable or slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// Each replica limits on its own, in memory, until Redis answers again (the default).
    Local,
    /// Admit.
    Open,
    /// Refuse with 503.
    Closed,
}

impl FailureMode {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureMode::Local => "local",
            FailureMode::Open => "open",
            FailureMode::Closed => "closed",
        }
    }
}

/// How the configured URLs reach Redis (`redis_mode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTopology {
    /// One server (or a proxy in front of several): one URL.
    Standalone,
    /// A Redis Cluster: the URLs of some of its nodes (the rest are discovered); a node that
    /// fails over is followed.
    Cluster,
    /// A master watched by Redis Sentinel: the sentinels' URLs and the master's name; after a
    /// failover the sentinels are asked again for the new master. The first URL's credentials
    /// and TLS are also used for the master.
    Sentinel {
        /// The master's name (`sentinel monitor <name> ...`).
        master: String,
    },
}

/// Where per-user counts live.
#[derive(Debug, Clone, PartialEq)]
pub enum RateLimitBackend {
    /// In this process.
    Memory,
    /// In Redis, shared by every replica.
    Redis {
        /// The URL, or comma-separated URLs (a secret: it may carry a password).
        url: Secret,
        /// How the URLs reach Redis.
        topology: RedisTopology,
        /// Per-call timeout.
        timeout: Duration,
        /// Behaviour while Redis is unreachable.
        failure_mode: FailureMode,
    },
}

/// A per-user limit for users whose token has `claim = value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// The claim.
    pub claim: String,
    /// Its value.
    pub value: String,
    /// The limit.
    pub limit: Limit,
}

/// The per-IP flood guard.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PerIpSettings {
    /// Sustained requests per second from one address.
    pub requests_per_second: NonZeroU32,
    /// Requests one address may send at once.
    pub burst: NonZeroU32,
}

/// Validated `[rate_limit]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitSettings {
    /// The per-user limit; `None` when only the per-IP guard is configured.
    pub default: Option<Limit>,
    /// Limits by claim value, first match wins.
    pub overrides: Vec<Override>,
    /// Where counts live.
    pub backend: RateLimitBackend,
    /// Most users tracked in memory.
    pub max_tracked_users: usize,
    /// The per-IP flood guard.
    pub per_ip: Option<PerIpSettings>,
}

fn limit(
    requests: u64,
    window: Duration,
    key: &str,
    at: &Locator<'_>,
) -> Result<Limit, ConfigError> {
    let requests = u32::try_from(requests)
        .ok()
        .filter(|r| *r > 0)
        .ok_or_else(|| at.error(key, "must be between 1 and 4294967295"))?;
    if window < MIN_WINDOW {
        return Err(at.error(key, "window must be at least 1s"));
    }
    Ok(Limit { requests, window })
}

pub(super) fn validate(
    raw: &RawRateLimit,
    at: &Locator<'_>,
) -> Result<RateLimitSettings, ConfigError> {
    let window = raw.window.unwrap_or(DEFAULT_WINDOW);
    let default = match raw.requests {
        None => None,
        Some(requests) => Some(limit(requests, window, "rate_limit.requests", at)?),
    };
    let mut overrides = Vec::with_capacity(raw.overrides.len());
    for (i, o) in raw.overrides.iter().enumerate() {
        let key = format!("rate_limit.overrides[{i}].requests");
        if default.is_none() {
            return Err(at.error(&key, "overrides need a default: set rate_limit.requests"));
        }
        overrides.push(Override {
            claim: o.claim.clone(),
            value: o.value.clone(),
            limit: limit(o.requests, o.window, &key, at)?,
        });
    }
    let failure_mode = match raw.failure_mode.as_deref() {
        None | Some("local") => FailureMode::Local,
        Some("open") => FailureMode::Open,
        Some("closed") => FailureMode::Closed,
        Some(_) => {
            return Err(at.error(
                "rate_limit.failure_mode",
                "must be \"local\", \"open\" or \"closed\"",
            ));
        }
    };
    let backend = match raw.backend.as_deref() {
        None | Some("memory") => RateLimitBackend::Memory,
        Some("redis") => {
            let url = Secret::from_env_or_file(
                raw.redis_url_env.as_deref(),
                raw.redis_url_file.as_deref(),
            )
            .map_err(|m| at.error("rate_limit.redis_url_env", m))?;
            let timeout = raw.redis_timeout.unwrap_or(DEFAULT_REDIS_TIMEOUT);
            if timeout.is_zero() {
                return Err(at.error("rate_limit.redis_timeout", "must be longer than zero"));
            }
            let topology = match (raw.redis_mode.as_deref(), &raw.redis_sentinel_master) {
                (None | Some("standalone"), None) => RedisTopology::Standalone,
                (Some("cluster"), None) => RedisTopology::Cluster,
                (Some("sentinel"), Some(master)) if !master.is_empty() => RedisTopology::Sentinel {
                    master: master.clone(),
                },
                (Some("sentinel"), _) => {
                    return Err(at.error(
                        "rate_limit.redis_sentinel_master",
                        "names the master the sentinels watch; required with redis_mode = \"sentinel\"",
                    ));
                }
                (None | Some("standalone" | "cluster"), Some(_)) => {
                    return Err(at.error(
                        "rate_limit.redis_sentinel_master",
                        "is only used with redis_mode = \"sentinel\"",
                    ));
                }
                (Some(_), _) => {
                    return Err(at.error(
                        "rate_limit.redis_mode",
                        "must be \"standalone\", \"cluster\" or \"sentinel\"",
                    ));
                }
            };
            RateLimitBackend::Redis {
                url,
                topology,
                timeout,
                failure_mode,
            }
        }
        Some(_) => return Err(at.error("rate_limit.backend", "must be \"memory\" or \"redis\"")),
    };
    let max_tracked_users = match raw.max_tracked_users {
        None => DEFAULT_MAX_TRACKED_USERS,
        Some(0) => return Err(at.error("rate_limit.max_tracked_users", "must be at least 1")),
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
    };
    let per_ip = match &raw.per_ip {
        None => None,
        Some(p) => {
            let rps = p
                .requests_per_second
                .and_then(|n| u32::try_from(n).ok())
                .and_then(NonZeroU32::new)
                .ok_or_else(|| {
                    at.error(
                        "rate_limit.per_ip.requests_per_second",
                        "must be at least 1",
                    )
                })?;
            let burst = match p.burst {
                None => rps,
                Some(b) => u32::try_from(b)
                    .ok()
                    .and_then(NonZeroU32::new)
                    .ok_or_else(|| at.error("rate_limit.per_ip.burst", "must be at least 1"))?,
            };
            Some(PerIpSettings {
                requests_per_second: rps,
                burst,
            })
        }
    };
    Ok(RateLimitSettings {
        default,
        overrides,
        backend,
        max_tracked_users,
        per_ip,
    })
}

pub(super) fn trusted_proxies(
    raw: &RawServer,
    at: &Locator<'_>,
) -> Result<Vec<IpNet>, ConfigError> {
    raw.trusted_proxies
        .iter()
        .map(|text| {
            text.parse::<IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| {
                    at.error(
                        "server.trusted_proxies",
                        "lists something that is not a CIDR such as 10.0.0.0/8",
                    )
                })
        })
        .collect()
}

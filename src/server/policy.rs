//! The running policy: everything a configuration builds that requests use, as one value that a
//! reload swaps whole.
//!
//! Guards against a reload that drops requests or forgets state: requests in flight keep the
//! policy they started with (they hold its pipeline), new requests load the new one; the per-user
//! limiter, the per-IP guard and the upstream connection pool are carried over when their
//! settings did not change, and a fetched JWK set is carried over while the new store fetches.

use std::sync::Arc;

use crate::api_keys::ApiKeys;
use crate::audit::otlp::SpanExport;
use crate::audit::{AuditSink, Auditor};
use crate::auth::Authenticator;
use crate::auth::jwks::KeyStore;
use crate::config::{Config, McpSettings, RateLimitBackend, RateLimitSettings};
use crate::context::{ClientAddress, McpEndpoint, Routes};
use crate::dlp::Dlp;
use crate::headers::SecurityHeaders;
use crate::llm::LlmPolicy;
use crate::llm::budget::Budgets;
use crate::mcp::McpPolicy;
use crate::mcp::edge::{McpEdge, WELL_KNOWN_PRM};
use crate::metrics::Metrics;
use crate::pipeline::{self, Pipeline, Stages};
use crate::proxy::Upstream;
use crate::rate_limit::RateLimiter;
use crate::rate_limit::per_ip::FloodGuard;
use crate::revocation::Revocations;
use crate::validate::Validator;
use crate::validate::classifier::Classifier;

use super::StartError;
use super::conn::ConnSettings;
use crate::tls::CertStore;

/// What every policy shares and no reload replaces.
#[derive(Debug)]
pub struct Shared {
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// The audit writer.
    pub audit: AuditSink,
    /// The TLS configuration in force, when the listener speaks TLS.
    pub certs: Option<Arc<CertStore>>,
    /// OTLP span export, when configured (a restart applies `[tracing]` changes).
    pub spans: Option<Arc<SpanExport>>,
    /// Held by a reload from validation to swap, so two reloads never interleave.
    pub reload_lock: tokio::sync::Mutex<()>,
    /// The open WebSockets, which outlive reloads.
    pub sockets: Arc<crate::websocket::Sockets>,
}

/// One configuration's runtime objects.
pub struct Policy {
    /// The configuration it was built from.
    pub config: Arc<Config>,
    /// The request pipeline.
    pub pipeline: Pipeline,
    /// Protocol settings for new connections.
    pub conn: Arc<ConnSettings>,
    /// The upstream client.
    pub upstream: Arc<Upstream>,
    /// The authentication keys, when authentication is on.
    pub keys: Option<Arc<KeyStore>>,
    /// The per-user limiter.
    pub rate_limiter: Option<Arc<RateLimiter>>,
    /// The per-IP flood guard.
    pub flood_guard: Option<Arc<FloodGuard>>,
    /// The token budgets of the OpenAI-compatible routes.
    pub budgets: Option<Arc<Budgets>>,
    /// The revocation list, when one is configured.
    pub revocations: Option<Arc<Revocations>>,
    /// The API keys, when configured.
    pub api_keys: Option<Arc<ApiKeys>>,
    /// The MCP policy, when `[mcp]` is configured.
    pub mcp: Option<Arc<McpPolicy>>,
    /// Background work owned by this policy (key refresh, upstream probe); stopped with it.
    tasks: Vec<tokio::task::AbortHandle>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy").finish_non_exhaustive()
    }
}

impl Drop for Policy {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Policy {
    /// Builds the runtime objects for `config`, reusing what `previous` holds where the settings
    /// are unchanged. Must run inside the async runtime (it starts background tasks).
    pub fn build(
        config: Config,
        shared: &Shared,
        previous: Option<&Policy>,
    ) -> Result<Policy, StartError> {
        let metrics = &shared.metrics;
        let upstream = match previous {
            Some(p) if p.config.upstream == config.upstream => p.upstream.clone(),
            _ => Arc::new(
                Upstream::new(&config.upstream, metrics.clone()).map_err(StartError::Upstream)?,
            ),
        };
        let authenticator = match &config.auth {
            Some(settings) => Some(Arc::new(
                Authenticator::new(settings, metrics.clone())
                    .map_err(StartError::Auth)?
                    .with_mcp_resource(
                        config
                            .mcp
                            .as_ref()
                            .and_then(|m| m.resource.as_ref())
                            .map(|r| r.uri.as_str()),
                    ),
            )),
            None => None,
        };
        let keys = authenticator.as_ref().map(|a| a.key_store());
        let revocations = authenticator.as_ref().and_then(|a| a.revocations());
        let api_keys = authenticator.as_ref().and_then(|a| a.api_keys());
        if let (Some(keys), Some(old)) = (&keys, previous.and_then(|p| p.keys.as_ref())) {
            keys.inherit(old);
        }
        let previous_limits = previous.and_then(|p| p.config.rate_limit.as_ref());
        let (rate_limiter, flood_guard) = match &config.rate_limit {
            None => (None, None),
            Some(settings) => {
                let rate_limiter = match previous {
                    Some(p) if same_user_limits(previous_limits, settings) => {
                        p.rate_limiter.clone()
                    }
                    _ => RateLimiter::new(settings, metrics.clone())
                        .map_err(StartError::RateLimit)?
                        .map(Arc::new),
                };
                let flood_guard = match previous {
                    Some(p) if previous_limits.map(|l| l.per_ip) == Some(settings.per_ip) => {
                        p.flood_guard.clone()
                    }
                    _ => settings
                        .per_ip
                        .map(|p| Arc::new(FloodGuard::new(p.requests_per_second, p.burst))),
                };
                (rate_limiter, flood_guard)
            }
        };
        let backend = config
            .rate_limit
            .as_ref()
            .map_or(RateLimitBackend::Memory, |l| l.backend.clone());
        let budgets = match config.llm.as_ref().and_then(|l| l.budget.as_ref()) {
            None => None,
            Some(settings) => match previous {
                // Spent budgets survive a reload that keeps the same budgets in the same store.
                Some(p)
                    if p.config.llm.as_ref().and_then(|l| l.budget.as_ref()) == Some(settings)
                        && p.config.rate_limit.as_ref().map(|l| &l.backend)
                            == config.rate_limit.as_ref().map(|l| &l.backend) =>
                {
                    p.budgets.clone()
                }
                _ => Some(Arc::new(
                    Budgets::new(settings, &backend).map_err(StartError::RateLimit)?,
                )),
            },
        };
        let llm = config
            .llm
            .clone()
            .map(|settings| Arc::new(LlmPolicy::new(settings, budgets.clone(), metrics.clone())));
        let llm_roles = config.llm.as_ref().map(|l| l.scan_roles);
        let dlp = match &config.dlp {
            None => None,
            Some(settings) => Some(Arc::new(
                Dlp::new(settings.clone(), metrics.clone()).map_err(StartError::Dlp)?,
            )),
        };
        let keep_view = dlp.is_some();
        let mcp = match &config.mcp {
            None => None,
            Some(settings) => Some(Arc::new(
                McpPolicy::new(
                    settings,
                    metrics.clone(),
                    previous.and_then(|p| p.mcp.as_deref()),
                )
                .map_err(StartError::Mcp)?,
            )),
        };
        let mcp_edge = config.mcp.as_ref().map(|s| Arc::new(McpEdge::new(s)));
        let classifier = match config
            .validation
            .as_ref()
            .and_then(|v| v.classifier.clone())
        {
            None => None,
            Some(settings) => Some(Arc::new(
                Classifier::new(settings, metrics.clone()).map_err(StartError::Classifier)?,
            )),
        };
        let pipeline = pipeline::build(Stages {
            auditor: Arc::new(Auditor {
                sink: shared.audit.clone(),
                metrics: metrics.clone(),
                spans: shared.spans.clone(),
            }),
            security_headers: SecurityHeaders::new(config.headers.clone()),
            head_rules: crate::head_limit::HeadRules {
                max_header_bytes: config.server.max_header_bytes,
                allow_absolute_form: config.server.allow_absolute_form,
            },
            body_timeout: config.server.body_timeout,
            client_address: Arc::new(ClientAddress::new(config.server.trusted_proxies.clone())),
            routes: Arc::new(
                Routes::new(config.llm.as_ref().map_or(&[][..], |l| &l.paths[..]))
                    .with_mcp(config.mcp.as_ref().map(mcp_endpoints).unwrap_or_default()),
            ),
            flood_guard: flood_guard.clone(),
            authenticator,
            rate_limiter: rate_limiter.clone(),
            validator: config.validation.clone().map(|settings| {
                let mut validator = Validator::new(settings, metrics.clone());
                if let Some(classifier) = classifier {
                    validator = validator.with_classifier(classifier);
                }
                if let Some(roles) = llm_roles {
                    validator = validator.with_llm_roles(roles);
                }
                if keep_view {
                    validator = validator.with_json_view();
                }
                Arc::new(validator)
            }),
            budgets: budgets.clone(),
            llm,
            dlp,
            mcp_edge,
            cors: config.cors.clone().map(Arc::new),
            websocket: Arc::new(crate::websocket::WebSockets {
                settings: config.websocket.clone(),
                sockets: shared.sockets.clone(),
                upstream: upstream.clone(),
                metrics: metrics.clone(),
                cors: config.cors.clone().map(Arc::new),
            }),
            mcp: mcp.clone(),
            metrics: metrics.clone(),
            upstream: upstream.clone(),
        });
        let conn = Arc::new(ConnSettings::new(
            &config.server,
            shared.certs.clone(),
            metrics.clone(),
        ));
        let mut tasks = Vec::new();
        if !upstream.has_answered() {
            tasks.push(tokio::spawn(probe_upstream(upstream.clone())).abort_handle());
        }
        if let Some(keys) = &keys {
            tasks.push(tokio::spawn(keys.clone().refresh_forever()).abort_handle());
        }
        Ok(Policy {
            config: Arc::new(config),
            pipeline,
            conn,
            upstream,
            keys,
            rate_limiter,
            flood_guard,
            budgets,
            revocations,
            api_keys,
            mcp,
            tasks,
        })
    }
}

/// Each MCP endpoint with what its refusals tell an OAuth client.
fn mcp_endpoints(settings: &McpSettings) -> Vec<(String, McpEndpoint)> {
    settings
        .paths
        .iter()
        .map(|path| {
            let endpoint = McpEndpoint {
                resource_metadata: settings
                    .resource
                    .as_ref()
                    .map(|r| format!("{}{WELL_KNOWN_PRM}{path}", r.origin).into_boxed_str()),
                scope: settings.scopes_supported.join(" ").into_boxed_str(),
            };
            (path.clone(), endpoint)
        })
        .collect()
}

/// Whether the per-user limiter's state can carry over: the same limits in the same store.
fn same_user_limits(previous: Option<&RateLimitSettings>, next: &RateLimitSettings) -> bool {
    previous.is_some_and(|p| {
        p.default == next.default
            && p.overrides == next.overrides
            && p.backend == next.backend
            && p.max_tracked_users == next.max_tracked_users
    })
}

/// Probes the upstream until it answers once, so that readiness does not wait for real traffic.
async fn probe_upstream(upstream: Arc<Upstream>) {
    while !upstream.has_answered() && !upstream.probe().await {
        tokio::time::sleep(super::UPSTREAM_PROBE_INTERVAL).await;
    }
}

//! Prometheus metrics, served on the admin listener.
//!
//! Guards against flying blind: every request is counted by decision and status, its latency and
//! the upstream's latency go into histograms, and open connections and bytes are tracked, so an
//! attack or an upstream fault shows on a dashboard before it shows in a complaint.

use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

/// Registers `metric` under `name` and hands it back, so it can be both exposed and updated.
fn register<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// Content type of the `/metrics` answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of the request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The audit decision.
    pub decision: &'static str,
    /// The HTTP status sent to the client.
    pub status: u16,
}

/// All gateway metrics and the registry that exposes them.
pub struct Metrics {
    registry: Registry,
    /// Requests by decision and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Time from request head to the end of the response body.
    pub request_latency: Histogram,
    /// Time from forwarding to the upstream's response head.
    pub upstream_latency: Histogram,
    /// Client connections open now.
    pub open_connections: Gauge,
    /// Request body bytes received from clients.
    pub bytes_in: Counter<u64, AtomicU64>,
    /// Response body bytes sent to clients.
    pub bytes_out: Counter<u64, AtomicU64>,
    /// Audit records that waited for room in the audit queue (back-pressure).
    pub audit_queue_full: Counter<u64, AtomicU64>,
    /// Audit records that could not be written.
    pub audit_write_errors: Counter<u64, AtomicU64>,
    /// Audit records dropped because the queue was full (`on_overflow = "drop"`).
    pub audit_dropped: Counter<u64, AtomicU64>,
    /// Audit records waiting for the writer, as the writer last found them.
    pub audit_queue_depth: Gauge,
    /// 1 while the audit output can be written, 0 while it fails.
    pub audit_writable: Gauge,
    /// Token verifications (signature and claims), by result.
    pub verifications: Family<ResultLabel, Counter>,
    /// Requests whose token was served from the verified-token cache.
    pub token_cache_hits: Counter<u64, AtomicU64>,
    /// Requests whose token was not in the cache.
    pub token_cache_misses: Counter<u64, AtomicU64>,
    /// Tokens evicted from the full cache.
    pub token_cache_evictions: Counter<u64, AtomicU64>,
    /// JWK set fetches, by result.
    pub jwks_fetches: Family<ResultLabel, Counter>,
    /// Per-user rate-limit decisions, by result.
    pub rate_limit_decisions: Family<ResultLabel, Counter>,
    /// Redis calls that failed or timed out.
    pub rate_limit_redis_errors: Counter<u64, AtomicU64>,
    /// 1 while the rate limiter's store answers (always, in memory), 0 during a Redis outage.
    pub rate_limit_backend_up: Gauge,
    /// WebSockets open now.
    pub websocket_open: Gauge,
    /// WebSockets closed, by how they ended.
    pub websocket_closed: Family<EndLabel, Counter>,
    /// WebSocket messages relayed, both directions.
    pub websocket_messages: Counter<u64, AtomicU64>,
    /// Redis outages (a first failure after a success).
    pub rate_limit_redis_outages: Counter<u64, AtomicU64>,
    /// Decisions made by the failure mode instead of Redis.
    pub rate_limit_fallback_decisions: Counter<u64, AtomicU64>,
    /// Users tracked by the in-memory limiter (at the last pruning).
    pub rate_limit_tracked_users: Gauge,
    /// Validation rule matches, by rule and action.
    pub validation_matches: Family<MatchLabels, Counter>,
    /// Classifier verdicts, by result (`clean`, `flagged`, `cached`, `error`, `timeout`).
    pub classifier_calls: Family<ResultLabel, Counter>,
    /// Configuration reloads, by result.
    pub config_reloads: Family<ResultLabel, Counter>,
    /// Configuration reloads refused (invalid file or unusable settings).
    pub config_reload_failures: Counter<u64, AtomicU64>,
    /// Certificate file rotations, by result.
    pub tls_reloads: Family<ResultLabel, Counter>,
    /// When the serving certificate expires, in seconds since the Unix epoch.
    pub tls_certificate_expiry: Gauge,
    /// Revocation list reloads, by result.
    pub revocation_reloads: Family<ResultLabel, Counter>,
    /// Tokens reported (or estimated) on OpenAI-compatible routes, by model and kind.
    pub llm_tokens: Family<TokenLabels, Counter>,
    /// Requests refused because the user's token budget was spent.
    pub llm_budget_refusals: Counter<u64, AtomicU64>,
    /// Data-loss prevention findings, by rule, direction and action.
    pub dlp_findings: Family<DlpLabels, Counter>,
    /// Answers not scanned because they arrived compressed.
    pub dlp_unscanned: Counter<u64, AtomicU64>,
    /// MCP tool definitions seen changed since they were pinned.
    pub mcp_tool_definition_changes: Counter<u64, AtomicU64>,
    /// MCP tools left out of listings, by reason (`forbidden`, `changed`).
    pub mcp_tools_hidden: Family<ReasonLabel, Counter>,
    /// The label sets counted on almost every request, each looked up in its family once.
    hot: HotCounters,
}

/// The label of a closed WebSocket: how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndLabel {
    /// `closed`, `idle_timeout`, `message_too_big`, `client_closed` or `upstream_closed`.
    pub end: &'static str,
}

/// Labels of the data-loss prevention counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DlpLabels {
    /// The rule id.
    pub rule: &'static str,
    /// `request` or `response`.
    pub direction: &'static str,
    /// `block`, `redact` or `shadow`.
    pub action: &'static str,
}

/// Labels of the token counter: no user label, so its cardinality is the number of models.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// The model the request named (`unknown` without one).
    pub model: String,
    /// `input` or `output`.
    pub kind: &'static str,
}

/// Counters of label sets that nearly every request increments. A family lookup hashes the labels
/// and takes the family's lock; a counter taken from the family once shares its value and costs
/// one atomic add. Each is taken on first use, so a label set appears in the exposition only once
/// it has been counted, as with the lookup.
#[derive(Default)]
struct HotCounters {
    allowed_ok: OnceLock<Counter>,
    rate_limit_admitted: OnceLock<Counter>,
}

/// The family's counter for `labels`, taken from the family on first use.
fn hot<'a, S>(cell: &'a OnceLock<Counter>, family: &Family<S, Counter>, labels: S) -> &'a Counter
where
    S: Clone + std::hash::Hash + Eq,
{
    cell.get_or_init(|| family.get_or_create(&labels).clone())
}

/// Labels of the validation match counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MatchLabels {
    /// The rule id.
    pub rule: String,
    /// `block` or `log`.
    pub action: &'static str,
}

/// A `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why.
    pub reason: &'static str,
}

/// A `result` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok`, `refused`, `error`.
    pub result: &'static str,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric under the `portcullis` prefix, with the series of
    /// every fixed label value at 0, so that rates and alerts see a series before its first
    /// event (Prometheus drops a family with no series from the exposition).
    pub fn new() -> Metrics {
        let metrics = Self::registered();
        let results: [(&Family<ResultLabel, Counter>, &[&'static str]); 7] = [
            (&metrics.verifications, &["ok", "refused"]),
            (&metrics.jwks_fetches, &["ok", "error"]),
            (&metrics.rate_limit_decisions, &["admitted", "refused"]),
            (&metrics.config_reloads, &["ok", "failed"]),
            (&metrics.tls_reloads, &["ok", "failed"]),
            (&metrics.revocation_reloads, &["ok", "failed"]),
            (
                &metrics.classifier_calls,
                &["clean", "flagged", "cached", "error", "timeout"],
            ),
        ];
        for (family, values) in results {
            for &result in values {
                let _ = family.get_or_create(&ResultLabel { result });
            }
        }
        for reason in ["forbidden", "changed"] {
            let _ = metrics
                .mcp_tools_hidden
                .get_or_create(&ReasonLabel { reason });
        }
        metrics
    }

    fn registered() -> Metrics {
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("portcullis");
        // 100 µs to ~105 s: gateway rejections are sub-millisecond, agent streams take minutes.
        let latency_buckets = || exponential_buckets(0.0001, 2.0, 21);
        Metrics {
            requests: register(
                registry,
                "requests",
                "Requests by audit decision and status",
                Family::<RequestLabels, Counter>::default(),
            ),
            request_latency: register(
                registry,
                "request_duration_seconds",
                "Time from request head to the end of the response",
                Histogram::new(latency_buckets()),
            ),
            upstream_latency: register(
                registry,
                "upstream_response_header_seconds",
                "Time from forwarding to the upstream response head",
                Histogram::new(latency_buckets()),
            ),
            open_connections: register(
                registry,
                "open_connections",
                "Client connections open now",
                Gauge::default(),
            ),
            bytes_in: register(
                registry,
                "request_body_bytes",
                "Request body bytes received",
                Counter::default(),
            ),
            bytes_out: register(
                registry,
                "response_body_bytes",
                "Response body bytes sent",
                Counter::default(),
            ),
            audit_queue_full: register(
                registry,
                "audit_queue_full",
                "Audit records that waited for room in the audit queue",
                Counter::default(),
            ),
            audit_write_errors: register(
                registry,
                "audit_write_errors",
                "Audit records that could not be written",
                Counter::default(),
            ),
            audit_dropped: register(
                registry,
                "audit_dropped",
                "Audit records dropped because the audit queue was full",
                Counter::default(),
            ),
            audit_writable: {
                let writable = Gauge::default();
                writable.set(1);
                register(
                    registry,
                    "audit_writable",
                    "1 while the audit output can be written, 0 while writes fail",
                    writable,
                )
            },
            audit_queue_depth: register(
                registry,
                "audit_queue_depth",
                "Audit records waiting for the writer",
                Gauge::default(),
            ),
            verifications: register(
                registry,
                "token_verifications",
                "Token signature and claim verifications, by result",
                Family::<ResultLabel, Counter>::default(),
            ),
            token_cache_hits: register(
                registry,
                "token_cache_hits",
                "Tokens served from the verified-token cache",
                Counter::default(),
            ),
            token_cache_misses: register(
                registry,
                "token_cache_misses",
                "Tokens not found in the verified-token cache",
                Counter::default(),
            ),
            token_cache_evictions: register(
                registry,
                "token_cache_evictions",
                "Tokens evicted from the full verified-token cache",
                Counter::default(),
            ),
            jwks_fetches: register(
                registry,
                "jwks_fetches",
                "JWK set fetches, by result",
                Family::<ResultLabel, Counter>::default(),
            ),
            llm_tokens: register(
                registry,
                "llm_tokens",
                "Tokens reported by the upstream (or estimated for a cut stream), by model and kind",
                Family::<TokenLabels, Counter>::default(),
            ),
            dlp_findings: register(
                registry,
                "dlp_findings",
                "Data-loss prevention findings, by rule, direction and action",
                Family::<DlpLabels, Counter>::default(),
            ),
            mcp_tool_definition_changes: register(
                registry,
                "mcp_tool_definition_changes",
                "MCP tool definitions that changed since they were pinned (each change once)",
                Counter::default(),
            ),
            mcp_tools_hidden: register(
                registry,
                "mcp_tools_hidden",
                "MCP tools left out of tools/list answers, by reason",
                Family::<ReasonLabel, Counter>::default(),
            ),
            dlp_unscanned: register(
                registry,
                "dlp_unscanned",
                "Answers not scanned for data-loss prevention because they arrived compressed",
                Counter::default(),
            ),
            llm_budget_refusals: register(
                registry,
                "llm_budget_refusals",
                "Requests refused because the user's token budget was spent",
                Counter::default(),
            ),
            rate_limit_decisions: register(
                registry,
                "rate_limit_decisions",
                "Per-user rate-limit decisions, by result",
                Family::<ResultLabel, Counter>::default(),
            ),
            rate_limit_redis_errors: register(
                registry,
                "rate_limit_redis_errors",
                "Redis calls that failed or timed out",
                Counter::default(),
            ),
            rate_limit_redis_outages: register(
                registry,
                "rate_limit_redis_outages",
                "Redis outages: a first failure after a success",
                Counter::default(),
            ),
            websocket_open: register(
                registry,
                "websocket_open",
                "WebSockets open now",
                Gauge::default(),
            ),
            websocket_closed: register(
                registry,
                "websocket_closed",
                "WebSockets closed, by end (a close code, idle_timeout, message_too_big, client_closed, upstream_closed)",
                Family::<EndLabel, Counter>::default(),
            ),
            websocket_messages: register(
                registry,
                "websocket_messages",
                "WebSocket messages relayed, both directions",
                Counter::default(),
            ),
            rate_limit_backend_up: register(
                registry,
                "rate_limit_backend_up",
                "1 while the rate limiter's store answers (always with the in-memory backend), 0 during a Redis outage",
                Gauge::default(),
            ),
            rate_limit_fallback_decisions: register(
                registry,
                "rate_limit_fallback_decisions",
                "Rate-limit decisions made by the failure mode instead of Redis",
                Counter::default(),
            ),
            rate_limit_tracked_users: register(
                registry,
                "rate_limit_tracked_users",
                "Users tracked by the in-memory limiter",
                Gauge::default(),
            ),
            validation_matches: register(
                registry,
                "validation_matches",
                "Validation rule matches, by rule and action",
                Family::<MatchLabels, Counter>::default(),
            ),
            classifier_calls: register(
                registry,
                "validation_classifier_calls",
                "Prompt-injection classifier verdicts, by result (clean, flagged, cached, error, timeout)",
                Family::<ResultLabel, Counter>::default(),
            ),
            config_reloads: register(
                registry,
                "config_reloads",
                "Configuration reloads, by result",
                Family::<ResultLabel, Counter>::default(),
            ),
            config_reload_failures: register(
                registry,
                "config_reload_failures",
                "Configuration reloads refused; the running configuration stayed",
                Counter::default(),
            ),
            tls_reloads: register(
                registry,
                "tls_certificate_reloads",
                "Certificate file rotations picked up, by result",
                Family::<ResultLabel, Counter>::default(),
            ),
            tls_certificate_expiry: register(
                registry,
                "tls_certificate_expiry_timestamp_seconds",
                "When the serving certificate expires (notAfter), in Unix seconds",
                Gauge::default(),
            ),
            revocation_reloads: register(
                registry,
                "revocation_list_reloads",
                "Revocation list file reloads, by result",
                Family::<ResultLabel, Counter>::default(),
            ),
            hot: HotCounters::default(),
            registry: root,
        }
    }

    /// Counts a revocation list reload by result (`ok`, `failed`).
    pub fn revocation_reload(&self, result: &'static str) {
        self.revocation_reloads
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Counts a configuration reload by result (`ok`, `failed`).
    pub fn config_reload(&self, result: &'static str) {
        self.config_reloads
            .get_or_create(&ResultLabel { result })
            .inc();
        if result == "failed" {
            self.config_reload_failures.inc();
        }
    }

    /// Counts a certificate rotation by result (`ok`, `failed`).
    pub fn tls_reload(&self, result: &'static str) {
        self.tls_reloads
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Records a finished request.
    pub fn observe_request(
        &self,
        decision: &'static str,
        status: u16,
        latency: Duration,
        bytes_in: u64,
        bytes_out: u64,
    ) {
        let labels = RequestLabels { decision, status };
        if decision == "allowed" && status == 200 {
            hot(&self.hot.allowed_ok, &self.requests, labels).inc();
        } else {
            self.requests.get_or_create(&labels).inc();
        }
        self.request_latency.observe(latency.as_secs_f64());
        self.bytes_in.inc_by(bytes_in);
        self.bytes_out.inc_by(bytes_out);
    }

    /// Counts a data-loss prevention finding.
    pub fn dlp_finding(&self, rule: &'static str, direction: &'static str, action: &'static str) {
        self.dlp_findings
            .get_or_create(&DlpLabels {
                rule,
                direction,
                action,
            })
            .inc();
    }

    /// Counts one token verification.
    pub fn verification(&self, result: &'static str) {
        self.verifications
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Counts one per-user rate-limit decision.
    pub fn rate_limit_decision(&self, result: &'static str) {
        let labels = ResultLabel { result };
        if result == "admitted" {
            hot(
                &self.hot.rate_limit_admitted,
                &self.rate_limit_decisions,
                labels,
            )
            .inc();
        } else {
            self.rate_limit_decisions.get_or_create(&labels).inc();
        }
    }

    /// Counts one validation rule match.
    pub fn validation_match(&self, rule: &str, action: &'static str) {
        self.validation_matches
            .get_or_create(&MatchLabels {
                rule: rule.to_owned(),
                action,
            })
            .inc();
    }

    /// Counts one classifier verdict by result.
    pub fn classifier_call(&self, result: &'static str) {
        self.classifier_calls
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Counts one JWK set fetch.
    pub fn jwks_fetch(&self, result: &'static str) {
        self.jwks_fetches
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Counts a closed WebSocket by how it ended.
    pub fn websocket_closed(&self, end: &'static str) {
        self.websocket_closed.get_or_create(&EndLabel { end }).inc();
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Metrics;

    #[test]
    fn hot_label_sets_count_in_their_family() {
        let metrics = Metrics::new();
        let text = metrics.encode();
        assert!(!text.contains(r#"decision="allowed""#), "{text}");
        // Fixed label values start at 0 (rates and alerts need the series before its first event).
        assert!(
            text.contains(r#"portcullis_rate_limit_decisions_total{result="admitted"} 0"#),
            "{text}"
        );
        for _ in 0..2 {
            metrics.observe_request("allowed", 200, Duration::from_millis(1), 10, 20);
            metrics.rate_limit_decision("admitted");
        }
        metrics.observe_request("allowed", 201, Duration::from_millis(1), 10, 20);
        metrics.observe_request("blocked", 400, Duration::from_millis(1), 10, 20);
        metrics.rate_limit_decision("refused");
        let text = metrics.encode();
        for line in [
            r#"portcullis_requests_total{decision="allowed",status="200"} 2"#,
            r#"portcullis_requests_total{decision="allowed",status="201"} 1"#,
            r#"portcullis_requests_total{decision="blocked",status="400"} 1"#,
            r#"portcullis_rate_limit_decisions_total{result="admitted"} 2"#,
            r#"portcullis_rate_limit_decisions_total{result="refused"} 1"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
    }
}

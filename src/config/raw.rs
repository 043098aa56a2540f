//! The serde mirror of the TOML file.
//!
//! Every struct denies unknown fields, so a misspelt key is an error with its line instead of a
//! setting silently ignored. Nothing here is checked beyond its type: [`super::Config`] validates.

use std::time::Duration;

use serde::Deserialize;

/// The whole configuration file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[server]`: the client-facing listener.
    #[serde(default)]
    pub server: RawServer,
    /// `[admin]`: health, readiness and metrics; absent means no admin listener.
    pub admin: Option<RawAdmin>,
    /// `[metrics]`: a listener serving only `/metrics`, for scrapers outside the host.
    pub metrics: Option<RawMetrics>,
    /// `[upstream]`: the agent backend.
    pub upstream: RawUpstream,
    /// `[auth]`: JWT authentication.
    pub auth: Option<RawAuth>,
    /// `[rate_limit]`: per-user and per-IP limits.
    pub rate_limit: Option<RawRateLimit>,
    /// `[validation]`: request body checks.
    pub validation: Option<RawValidation>,
    /// `[headers]`: security headers added to every response.
    #[serde(default)]
    pub headers: RawHeaders,
    /// `[audit]`: the per-request audit log.
    #[serde(default)]
    pub audit: RawAudit,
    /// `[tracing]`: OTLP span export (builds with the `otlp` feature).
    pub tracing: Option<RawTracing>,
    /// `[llm]`: OpenAI-compatible routes.
    pub llm: Option<RawLlm>,
    /// `[dlp]`: secrets and personal data in requests and responses.
    pub dlp: Option<RawDlp>,
    /// `[mcp]`: MCP (Model Context Protocol) endpoints.
    pub mcp: Option<RawMcp>,
    /// `[cors]`: browser origins allowed to call.
    pub cors: Option<super::cors::RawCors>,
    /// `[websocket]`: WebSocket pass-through.
    pub websocket: Option<super::websocket::RawWebSocket>,
}

/// `[mcp]`; parsed and checked for shape.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMcp {
    /// MCP endpoint paths (exact, without the query).
    pub paths: Option<Vec<String>>,
    /// This server's canonical URI (RFC 9728 `resource`).
    pub resource: Option<String>,
    /// Authorization servers named in the protected resource metadata.
    #[serde(default)]
    pub authorization_servers: Vec<String>,
    /// Scopes named in the metadata and in the 401 challenge.
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    /// Origins a browser-based client may call from.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Where pinned tool definitions are kept.
    pub pins_file: Option<String>,
    /// Environment variable holding the session-binding key.
    pub session_key_env: Option<String>,
    /// File holding the session-binding key.
    pub session_key_file: Option<String>,
    /// Per-tool rules; the first match wins.
    #[serde(default)]
    pub tools: Vec<RawMcpTool>,
}

/// `[[mcp.tools]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMcpTool {
    /// An exact tool name or a glob.
    pub name: String,
    /// Scopes needed to see and call the tool.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// `allow` (the default) or `deny`.
    pub action: Option<String>,
}

/// `[dlp]`; parsed and checked for shape.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDlp {
    /// `block`, `redact` or `shadow`: what a secret in a request body does.
    pub request_action: Option<String>,
    /// `redact` or `shadow`: what a finding in a response does.
    pub response_action: Option<String>,
    /// `secrets`, `pii`.
    pub detectors: Option<Vec<String>>,
    /// One canary string a line.
    pub canaries_file: Option<String>,
}

/// `[llm]`: OpenAI-compatible routes; parsed and checked for shape.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLlm {
    /// Paths (without the query) handled as OpenAI-compatible routes.
    pub paths: Option<Vec<String>>,
    /// Roles whose text the injection rules judge.
    pub scan_roles: Option<Vec<String>>,
    /// Models a request may name; empty: any.
    #[serde(default)]
    pub allowed_models: Vec<String>,
    /// Largest token limit a request may ask for; 0: no cap.
    #[serde(default)]
    pub max_output_tokens: u64,
    /// `[llm.budget]`: tokens per user per window.
    pub budget: Option<RawBudget>,
}

/// `[llm.budget]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    /// Tokens (input + output) per user per window.
    pub tokens: u64,
    /// The window.
    #[serde(with = "super::duration")]
    pub window: Duration,
    /// Budgets for users with a claim value.
    #[serde(default)]
    pub overrides: Vec<RawBudgetOverride>,
}

/// `[[llm.budget.overrides]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudgetOverride {
    /// The claim to match.
    pub claim: String,
    /// The value it must have.
    pub value: String,
    /// Tokens per window for matching users.
    pub tokens: u64,
    /// Window length for matching users (default: the budget's).
    #[serde(default, with = "super::duration::option")]
    pub window: Option<Duration>,
}

/// `[tracing]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTracing {
    /// OTLP/HTTP traces endpoint, e.g. `http://127.0.0.1:4318/v1/traces`.
    pub otlp_endpoint: String,
    /// `service.name` of the exported spans.
    pub service_name: Option<String>,
    /// How often queued spans are exported.
    #[serde(default, with = "super::duration::option")]
    pub export_interval: Option<Duration>,
}

/// `[server]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Socket address to listen on.
    pub listen: Option<String>,
    /// Largest accepted request head (request line and headers), in bytes.
    pub max_header_bytes: Option<u64>,
    /// Serve HTTP/1.1 requests whose target is in absolute form (`GET https://host/path`).
    pub allow_absolute_form: Option<bool>,
    /// Time allowed for the TLS handshake and for each complete request head.
    #[serde(default, with = "super::duration::option")]
    pub header_timeout: Option<Duration>,
    /// Most client connections served at once.
    pub max_connections: Option<u64>,
    /// Length of the kernel's queue of connections not yet accepted.
    pub listen_backlog: Option<u32>,
    /// Time allowed for a whole request body to arrive, counted from the request head.
    #[serde(default, with = "super::duration::option")]
    pub body_timeout: Option<Duration>,
    /// Longest a response write may wait for a client that does not read.
    #[serde(default, with = "super::duration::option")]
    pub write_timeout: Option<Duration>,
    /// How long in-flight requests may run after a shutdown signal.
    #[serde(default, with = "super::duration::option")]
    pub shutdown_grace: Option<Duration>,
    /// Proxies (CIDRs) whose `X-Forwarded-For` is believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Format of the operational logs on stderr: `text` (the default) or `json`.
    pub log_format: Option<LogFormat>,
    /// `[server.tls]`; absent means plain HTTP.
    pub tls: Option<RawTls>,
}

/// Format of the operational logs (`[server] log_format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event; coloured only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// `[server.tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain, leaf first.
    pub cert_file: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// PEM bundle of CAs; present means clients must present a certificate (mTLS).
    pub client_ca_file: Option<String>,
    /// How often the certificate and key files are checked for a rotation.
    #[serde(default, with = "super::duration::option")]
    pub watch_interval: Option<Duration>,
}

/// `[admin]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Socket address of the admin listener.
    pub listen: Option<String>,
}

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// Socket address of the metrics-only listener.
    pub listen: String,
}

/// `[upstream]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// Base URL of the agent backend, `http` or `https`.
    pub url: String,
    /// Time allowed to open a connection to the upstream.
    #[serde(default, with = "super::duration::option")]
    pub connect_timeout: Option<Duration>,
    /// Most requests (and so connections) in flight to the upstream at once.
    pub max_connections: Option<u64>,
    /// Time allowed until the upstream's response head arrives.
    #[serde(default, with = "super::duration::option")]
    pub response_header_timeout: Option<Duration>,
    /// Longest silence allowed between two body chunks of a streamed response.
    #[serde(default, with = "super::duration::option")]
    pub idle_timeout: Option<Duration>,
    /// Interval of `: keep-alive` comments on an idle SSE response; `0s` turns them off.
    #[serde(default, with = "super::duration::option")]
    pub sse_keepalive: Option<Duration>,
    /// Extra PEM CA bundle trusted for an `https` upstream, besides the system roots.
    pub ca_file: Option<String>,
    /// Environment variable holding the gateway's own credential for the upstream.
    pub auth_header_env: Option<String>,
    /// File holding the gateway's own credential for the upstream.
    pub auth_header_file: Option<String>,
}

/// `[auth]`: parsed and checked for shape; enforced by the authentication stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// Required `iss` claim.
    pub issuer: Option<String>,
    /// Accepted `aud` values.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Allow-list of signature algorithms.
    #[serde(default)]
    pub algorithms: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(default, with = "super::duration::option")]
    pub leeway: Option<Duration>,
    /// Claim naming the user.
    pub user_claim: Option<String>,
    /// Scopes every token must carry.
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// HTTPS URL of a JWK set.
    pub jwks_url: Option<String>,
    /// HTTPS issuer URL of an OpenID provider, whose discovery document names the JWK set.
    pub oidc_issuer: Option<String>,
    /// Path of a JWK set file.
    pub jwks_file: Option<String>,
    /// File listing revoked token ids and subjects (`jti <id>` / `sub <subject>` lines).
    pub revocation_file: Option<String>,
    /// How often `jwks_url` is fetched again.
    #[serde(default, with = "super::duration::option")]
    pub jwks_refresh: Option<Duration>,
    /// Extra PEM CA bundle trusted when fetching `jwks_url`, besides the system roots.
    pub jwks_ca_file: Option<String>,
    /// Shared-secret keys, each read from the environment or a file.
    #[serde(default)]
    pub hmac_keys: Vec<RawHmacKey>,
    /// Claims forwarded upstream: claim name to header name.
    #[serde(default)]
    pub forward_claims: std::collections::BTreeMap<String, String>,
    /// Header carrying the raw token instead of `Authorization`.
    pub token_header: Option<String>,
    /// Cookie carrying the token instead of `Authorization`.
    pub token_cookie: Option<String>,
    /// Exact paths that need no token.
    #[serde(default)]
    pub public_paths: Vec<String>,
    /// Most verified tokens kept in the cache.
    pub cache_capacity: Option<u64>,
    /// Longest time a verified token is served from the cache.
    #[serde(default, with = "super::duration::option")]
    pub cache_max_ttl: Option<Duration>,
    /// `[auth.api_keys]`: API keys accepted beside (or instead of) JWTs.
    pub api_keys: Option<RawApiKeys>,
}

/// `[auth.api_keys]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKeys {
    /// File of `sha256:<hex> <user> [scope ...]` lines.
    pub file: String,
}

/// `[[auth.hmac_keys]]`: the secret itself is never in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHmacKey {
    /// Key id matched against the token's `kid` header.
    pub kid: String,
    /// Environment variable holding the secret.
    pub secret_env: Option<String>,
    /// File holding the secret.
    pub secret_file: Option<String>,
    /// Present only to refuse it with a clear message: secrets never go in the file.
    pub secret: Option<toml::Value>,
}

/// `[rate_limit]`: parsed and checked for shape; enforced by the rate-limit stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// Requests admitted per user in any window.
    pub requests: Option<u64>,
    /// Length of the sliding window.
    #[serde(default, with = "super::duration::option")]
    pub window: Option<Duration>,
    /// `memory` or `redis`.
    pub backend: Option<String>,
    /// Environment variable holding the Redis URL.
    pub redis_url_env: Option<String>,
    /// File holding the Redis URL.
    pub redis_url_file: Option<String>,
    /// Per-call Redis timeout.
    #[serde(default, with = "super::duration::option")]
    pub redis_timeout: Option<Duration>,
    /// `standalone`, `cluster` or `sentinel`: how the URL(s) reach Redis.
    pub redis_mode: Option<String>,
    /// With `redis_mode = "sentinel"`: the name of the master the sentinels watch.
    pub redis_sentinel_master: Option<String>,
    /// `local`, `open` or `closed`: what to do while Redis is unreachable.
    pub failure_mode: Option<String>,
    /// Most users tracked at once in memory.
    pub max_tracked_users: Option<u64>,
    /// Limits for users whose token carries a claim value.
    #[serde(default)]
    pub overrides: Vec<RawOverride>,
    /// `[rate_limit.per_ip]`: the flood guard in front of authentication.
    pub per_ip: Option<RawPerIp>,
}

/// `[[rate_limit.overrides]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOverride {
    /// The claim to match.
    pub claim: String,
    /// The value it must have.
    pub value: String,
    /// Requests admitted in any window for matching users.
    pub requests: u64,
    /// Window length for matching users.
    #[serde(with = "super::duration")]
    pub window: Duration,
}

/// `[rate_limit.per_ip]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPerIp {
    /// Sustained requests per second from one address.
    pub requests_per_second: Option<u64>,
    /// Requests one address may send at once above the sustained rate.
    pub burst: Option<u64>,
}

/// `[validation]`: parsed and checked for shape; enforced by the validation stage.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawValidation {
    /// Largest accepted request body.
    pub max_body_bytes: Option<u64>,
    /// Most request-body bytes buffered for validation at once, across all requests.
    pub max_buffered_bytes: Option<u64>,
    /// Most characters of text in a JSON body.
    pub max_input_chars: Option<u64>,
    /// `block` or `log`.
    pub action: Option<String>,
    /// Rules added to the built-in set: a literal string, `"re:<regex>"`, or a table.
    #[serde(default)]
    pub extra_patterns: Vec<RawPattern>,
    /// Deepest JSON nesting accepted.
    pub max_json_depth: Option<u64>,
    /// Built-in rule ids switched off.
    #[serde(default)]
    pub disabled_rules: Vec<String>,
    /// Per-rule actions: rule id to `block` or `log`.
    #[serde(default)]
    pub rule_actions: std::collections::BTreeMap<String, String>,
    /// Media types accepted besides JSON (their bodies skip the JSON, length and rule checks).
    #[serde(default)]
    pub allowed_content_types: Vec<String>,
    /// `[validation.classifier]`: a prompt-injection model judging what the rules passed.
    pub classifier: Option<RawClassifier>,
}

/// `[validation.classifier]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClassifier {
    /// The classification endpoint (`http` or `https`).
    pub url: String,
    /// Score at or above which a text is flagged.
    pub threshold: Option<f64>,
    /// Deadline for one request's texts.
    #[serde(default, with = "super::duration::option")]
    pub timeout: Option<Duration>,
    /// `open` or `closed`.
    pub failure_mode: Option<String>,
    /// Characters per text sent (longer texts are sent in several windows).
    pub max_chars: Option<u64>,
    /// Verdicts cached.
    pub cache_entries: Option<u64>,
    /// Labels whose score counts.
    pub labels: Option<Vec<String>>,
}

/// An `extra_patterns` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawPattern {
    /// A literal, or a regex when written `"re:<regex>"`; its id is `custom.<position>`.
    Text(String),
    /// A rule with its own id.
    Rule(RawRule),
}

/// An `extra_patterns` table entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// The rule's id.
    pub id: String,
    /// A literal to match (in normalised text).
    pub literal: Option<String>,
    /// A regular expression to match (over normalised, lower-case text).
    pub regex: Option<String>,
    /// `block` or `log`.
    pub action: Option<String>,
}

/// `[headers]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaders {
    /// `Strict-Transport-Security` value; empty turns it off.
    pub hsts: Option<String>,
    /// `Content-Security-Policy` value; empty turns it off.
    pub content_security_policy: Option<String>,
}

/// `[audit]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// `stdout` or a file path (JSON lines, appended).
    pub output: Option<String>,
    /// `block` or `drop`: what a request does when the audit queue is full.
    pub on_overflow: Option<String>,
    /// Most records waiting for the writer.
    pub queue_capacity: Option<u64>,
    /// Chain every record to the one before it by SHA-256 (`seq`, `prev_hash`).
    pub hash_chain: Option<bool>,
    /// `fail_closed` or `fail_open`: what requests get while records cannot be written.
    pub on_failure: Option<String>,
}

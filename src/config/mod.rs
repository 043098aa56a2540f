//! Configuration: one TOML file, parsed into [`raw::RawConfig`] and validated into [`Config`].
//!
//! Guards against a gateway that starts with a setting it does not understand or cannot honour:
//! unknown keys, bad durations, missing certificate files and unusable upstream URLs all stop the
//! process at start-up with one line naming the key and its line, never at the first request.
//! Error messages never repeat a configured value, so a misplaced secret is not echoed to a log.

pub mod auth;
pub mod checklist;
pub mod cors;
pub mod dlp;
pub mod duration;
pub mod llm;
pub mod mcp;
pub mod rate_limit;
pub mod raw;

pub mod validation;
pub mod websocket;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use http::uri::{Authority, Scheme, Uri};
use rustls_pki_types::CertificateDer;

use crate::secret::Secret;
use crate::tls;
pub use auth::{AuthSettings, TokenLocation};
pub use dlp::DlpSettings;
pub use llm::LlmSettings;
pub use mcp::McpSettings;
pub use rate_limit::{FailureMode, Override, PerIpSettings, RateLimitBackend, RateLimitSettings};
pub use raw::LogFormat;
use raw::RawConfig;
pub use validation::ValidationSettings;

/// Prefix of the headers only the gateway may set towards the upstream (identity headers).
pub const GATEWAY_HEADER_PREFIX: &str = "x-portcullis-";

/// Default client listener.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8443";
/// Default admin listener: loopback only.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";
/// Default limit on a request head.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Smallest accepted `max_header_bytes`.
pub const MIN_MAX_HEADER_BYTES: usize = 1024;
/// Largest accepted `max_header_bytes`.
pub const MAX_MAX_HEADER_BYTES: usize = 1024 * 1024;
/// Default time for a TLS handshake and for each request head.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default interval between checks of the certificate and key files for a rotation.
pub const DEFAULT_TLS_WATCH_INTERVAL: Duration = Duration::from_secs(5);
/// Default length of the kernel's accept queue (the kernel caps it at `net.core.somaxconn`).
pub const DEFAULT_LISTEN_BACKLOG: u32 = 4096;
/// Default most requests in flight to the upstream at once.
pub const DEFAULT_UPSTREAM_MAX_CONNECTIONS: usize = 4096;
/// Default time for a whole request body to arrive.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default longest wait of a response write on a client that does not read.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default cap on concurrent client connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default drain time on shutdown.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Default upstream connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default wait for the upstream's response head.
pub const DEFAULT_RESPONSE_HEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// Default longest gap between two chunks of a streamed response.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default interval of SSE keep-alive comments: below the 60 s idle cut of common load balancers.
pub const DEFAULT_SSE_KEEPALIVE: Duration = Duration::from_secs(15);
/// Default `service.name` of exported spans.
pub const DEFAULT_SERVICE_NAME: &str = "portcullis";
/// Default interval of OTLP span exports.
pub const DEFAULT_EXPORT_INTERVAL: Duration = Duration::from_secs(5);
/// Default `Strict-Transport-Security`.
pub const DEFAULT_HSTS: &str = "max-age=63072000; includeSubDomains";
/// Default `Content-Security-Policy`: an agent API serves no active content.
pub const DEFAULT_CSP: &str = "default-src 'none'; frame-ancestors 'none'";
/// Default number of audit records that may wait for the writer.
pub const DEFAULT_AUDIT_QUEUE_CAPACITY: usize = 64 * 1024;
/// Largest accepted `audit.queue_capacity` (the queue's slots are allocated up front).
pub const MAX_AUDIT_QUEUE_CAPACITY: usize = 4 * 1024 * 1024;

/// A configuration that failed to load: where, which key, and what is wrong.
///
/// The message never contains a configured value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the error is about.
    pub file: String,
    /// 1-based line of the offending key, when known.
    pub line: Option<usize>,
    /// Dotted key path, when known (`server.tls.cert_file`).
    pub key: Option<String>,
    /// What is wrong, and what is expected instead.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The validated configuration with its runtime objects built (TLS configs, parsed URLs).
#[derive(Debug, Clone)]
pub struct Config {
    /// The client-facing listener.
    pub server: ServerSettings,
    /// The admin listener, when configured.
    pub admin: Option<AdminSettings>,
    /// The metrics-only listener, when configured.
    pub metrics: Option<MetricsSettings>,
    /// The agent backend.
    pub upstream: UpstreamSettings,
    /// JWT authentication, when configured.
    pub auth: Option<AuthSettings>,
    /// Rate limits, when configured.
    pub rate_limit: Option<RateLimitSettings>,
    /// Input validation, when configured.
    pub validation: Option<ValidationSettings>,
    /// Security headers added to every response.
    pub headers: HeaderSettings,
    /// Where audit records go.
    pub audit: AuditSettings,
    /// OTLP span export, when configured.
    pub tracing: Option<TracingSettings>,
    /// OpenAI-compatible routes, when configured.
    pub llm: Option<LlmSettings>,
    /// Data-loss prevention, when configured.
    pub dlp: Option<DlpSettings>,
    /// MCP endpoints, when configured.
    pub mcp: Option<McpSettings>,
    /// CORS for browser callers, when configured.
    pub cors: Option<cors::CorsSettings>,
    /// WebSocket pass-through, when configured.
    pub websocket: Option<websocket::WebSocketSettings>,
}

/// Validated `[tracing]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracingSettings {
    /// The OTLP/HTTP traces endpoint (`http`).
    pub otlp_endpoint: Uri,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// How often queued spans are exported.
    pub export_interval: Duration,
}

/// Validated `[server]`.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Client listener address.
    pub listen: SocketAddr,
    /// Largest request head accepted; larger gets 431.
    pub max_header_bytes: usize,
    /// Whether HTTP/1.1 absolute-form targets are served (else 400).
    pub allow_absolute_form: bool,
    /// Deadline for the TLS handshake and for each request head.
    pub header_timeout: Duration,
    /// Concurrent connections; further ones wait in the accept backlog.
    pub max_connections: usize,
    /// Length of the kernel's accept queue.
    pub listen_backlog: u32,
    /// Time allowed for a whole request body, from the request head.
    pub body_timeout: Duration,
    /// Longest a response write may wait for a client that does not read.
    pub write_timeout: Duration,
    /// Drain time after SIGTERM/SIGINT.
    pub shutdown_grace: Duration,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// TLS, or `None` for plain HTTP.
    pub tls: Option<TlsSettings>,
    /// Format of the operational logs.
    pub log_format: LogFormat,
}

/// Validated `[server.tls]`, with the rustls configuration built.
#[derive(Clone)]
pub struct TlsSettings {
    /// The rustls server configuration (TLS 1.2 and 1.3, ALPN h2 and http/1.1).
    pub server_config: Arc<rustls::ServerConfig>,
    /// Whether clients must present a certificate.
    pub client_auth: bool,
    /// The files the configuration was built from, watched for rotation (`None` for a
    /// certificate made in memory).
    pub files: Option<tls::TlsFiles>,
    /// How often the certificate and key files are checked for a change.
    pub watch_interval: Duration,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("client_auth", &self.client_auth)
            .finish_non_exhaustive()
    }
}

/// Validated `[admin]`.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// Admin listener address.
    pub listen: SocketAddr,
}

/// Validated `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Address of the listener that serves `GET /metrics` and nothing else.
    pub listen: SocketAddr,
}

/// Validated `[upstream]`.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSettings {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// Host and port of the upstream; also sent as its `Host`.
    pub authority: Authority,
    /// Path prefix put before every forwarded path, without a trailing slash.
    pub base_path: String,
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// Most requests in flight to the upstream at once (each holds one connection).
    pub max_connections: usize,
    /// Time allowed until the response head.
    pub response_header_timeout: Duration,
    /// Longest silence between two body chunks.
    pub idle_timeout: Duration,
    /// Interval of SSE keep-alive comments on an idle event stream; `None` when off.
    pub sse_keepalive: Option<Duration>,
    /// Extra trusted CAs for an `https` upstream.
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// `Authorization` value the gateway sends upstream (its own credential); marked sensitive.
    pub credential: Option<HeaderValue>,
}

/// Validated `[headers]`.
#[derive(Debug, Clone)]
pub struct HeaderSettings {
    /// `Strict-Transport-Security`, sent only when TLS is on.
    pub hsts: Option<HeaderValue>,
    /// `Content-Security-Policy`.
    pub content_security_policy: Option<HeaderValue>,
}

/// Validated `[audit]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    /// Where records go.
    pub output: AuditOutput,
    /// What a request does when the queue is full.
    pub on_overflow: OnOverflow,
    /// Most records waiting for the writer.
    pub queue_capacity: usize,
    /// Whether every record carries `seq` and the SHA-256 of the line before it (`prev_hash`).
    pub hash_chain: bool,
    /// What requests get while records cannot be written.
    pub on_failure: OnFailure,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            output: AuditOutput::Stdout,
            on_overflow: OnOverflow::Block,
            queue_capacity: DEFAULT_AUDIT_QUEUE_CAPACITY,
            hash_chain: false,
            on_failure: OnFailure::FailClosed,
        }
    }
}

/// `audit.on_failure`: what happens while the audit output cannot be written (disk full, an
/// I/O error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// New requests get 503 (`audit_unavailable`) until records can be written again; records
    /// already queued wait and are written then. For deployments where an unaudited request must
    /// not happen.
    FailClosed,
    /// Requests are served; records that cannot be written are counted (metric and the next
    /// written record's `dropped_before`).
    FailOpen,
}

/// `audit.output`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditOutput {
    /// JSON lines on standard output.
    Stdout,
    /// JSON lines appended to a file.
    File(PathBuf),
}

/// `audit.on_overflow`: what happens to a record when the audit queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnOverflow {
    /// The request waits for room (back-pressure); no record is lost.
    Block,
    /// The record is dropped, counted in `portcullis_audit_dropped_total` and reported in the
    /// next written record's `dropped_before`; the request does not wait.
    Drop,
}

impl Config {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let source = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            line: None,
            key: None,
            message: format!("cannot read the config file ({})", e.kind()),
        })?;
        Self::from_toml(&source, &file)
    }

    /// Parses and validates TOML text; `file` names it in errors.
    pub fn from_toml(source: &str, file: &str) -> Result<Config, ConfigError> {
        let raw = parse_raw(source, file)?;
        let locate = Locator { source, file };
        Config::validate(raw, &locate)
    }

    fn validate(raw: RawConfig, at: &Locator<'_>) -> Result<Config, ConfigError> {
        let server = validate_server(&raw, at)?;
        let admin = match &raw.admin {
            None => None,
            Some(admin) => Some(AdminSettings {
                listen: parse_addr(
                    admin.listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN),
                    "admin.listen",
                    at,
                )?,
            }),
        };
        let metrics = match &raw.metrics {
            None => None,
            Some(m) => {
                let listen = parse_addr(&m.listen, "metrics.listen", at)?;
                let taken = [Some(server.listen), admin.as_ref().map(|a| a.listen)];
                if taken.contains(&Some(listen)) && listen.port() != 0 {
                    return Err(at.error(
                        "metrics.listen",
                        "must differ from server.listen and admin.listen",
                    ));
                }
                Some(MetricsSettings { listen })
            }
        };
        let upstream = validate_upstream(&raw, at)?;
        let headers = HeaderSettings {
            hsts: header_value(
                raw.headers.hsts.as_deref(),
                DEFAULT_HSTS,
                "headers.hsts",
                at,
            )?,
            content_security_policy: header_value(
                raw.headers.content_security_policy.as_deref(),
                DEFAULT_CSP,
                "headers.content_security_policy",
                at,
            )?,
        };
        let audit = validate_audit(&raw, at)?;
        let rate_limit = match &raw.rate_limit {
            None => None,
            Some(raw_limit) => Some(rate_limit::validate(raw_limit, at)?),
        };
        let llm = match &raw.llm {
            None => None,
            Some(raw_llm) => {
                if raw.validation.is_none() {
                    return Err(at.error(
                        "llm",
                        "[llm] needs [validation]: the model policy and role-aware checks read the \
                         validated body (an empty [validation] section takes the defaults)",
                    ));
                }
                Some(llm::validate(raw_llm, at)?)
            }
        };
        let dlp = match &raw.dlp {
            None => None,
            Some(raw_dlp) => {
                if raw.validation.is_none() {
                    return Err(at.error(
                        "dlp",
                        "[dlp] needs [validation]: request bodies are scanned as validation \
                         reads them (an empty [validation] section takes the defaults)",
                    ));
                }
                Some(dlp::validate(raw_dlp, at)?)
            }
        };
        let websocket = match &raw.websocket {
            None => None,
            Some(raw_ws) => Some(websocket::validate(raw_ws, at)?),
        };
        let cors = match &raw.cors {
            None => None,
            Some(raw_cors) => Some(cors::validate(raw_cors, at)?),
        };
        let mcp = match &raw.mcp {
            None => None,
            Some(raw_mcp) => {
                if raw.validation.is_none() {
                    return Err(at.error(
                        "mcp",
                        "[mcp] needs [validation]: each JSON-RPC message is read from the \
                         validated body (an empty [validation] section takes the defaults)",
                    ));
                }
                let settings = mcp::validate(raw_mcp, at)?;
                let llm_paths = llm.iter().flat_map(|l| &l.paths);
                if let Some(both) = llm_paths.clone().find(|p| settings.paths.contains(p)) {
                    return Err(at.error(
                        "mcp.paths",
                        format!("{both:?} is also an [llm] path: a path speaks one protocol"),
                    ));
                }
                Some(settings)
            }
        };
        let auth = match &raw.auth {
            None => None,
            Some(raw_auth) => {
                let mut settings = auth::validate(raw_auth, at)?;
                // Claims that limit and budget overrides look at travel with the principal.
                let limit_claims = rate_limit
                    .iter()
                    .flat_map(|l| &l.overrides)
                    .map(|o| &o.claim);
                let budget_claims = llm
                    .iter()
                    .filter_map(|l| l.budget.as_ref())
                    .flat_map(|b| &b.overrides)
                    .map(|o| &o.claim);
                for claim in limit_claims.chain(budget_claims) {
                    if !settings.retained_claims.contains(claim) {
                        settings.retained_claims.push(claim.clone());
                    }
                }
                Some(settings)
            }
        };
        let validation = match &raw.validation {
            None => None,
            Some(raw_validation) => Some(validation::validate(raw_validation, at)?),
        };
        Ok(Config {
            server,
            admin,
            metrics,
            upstream,
            auth,
            rate_limit,
            validation,
            headers,
            audit,
            tracing: validate_tracing(&raw, at)?,
            llm,
            dlp,
            mcp,
            cors,
            websocket,
        })
    }
}

fn validate_audit(raw: &RawConfig, at: &Locator<'_>) -> Result<AuditSettings, ConfigError> {
    let a = &raw.audit;
    let output = match a.output.as_deref() {
        None | Some("stdout") => AuditOutput::Stdout,
        Some("") => return Err(at.error("audit.output", "must be \"stdout\" or a file path")),
        Some(path) => AuditOutput::File(PathBuf::from(path)),
    };
    let on_overflow = match a.on_overflow.as_deref() {
        None | Some("block") => OnOverflow::Block,
        Some("drop") => OnOverflow::Drop,
        Some(_) => return Err(at.error("audit.on_overflow", "must be \"block\" or \"drop\"")),
    };
    let queue_capacity = match a.queue_capacity {
        None => DEFAULT_AUDIT_QUEUE_CAPACITY,
        Some(n) => match usize::try_from(n) {
            Ok(n) if (1..=MAX_AUDIT_QUEUE_CAPACITY).contains(&n) => n,
            _ => {
                return Err(at.error(
                    "audit.queue_capacity",
                    format!("must be between 1 and {MAX_AUDIT_QUEUE_CAPACITY}"),
                ));
            }
        },
    };
    let on_failure = match a.on_failure.as_deref() {
        None | Some("fail_closed") => OnFailure::FailClosed,
        Some("fail_open") => OnFailure::FailOpen,
        Some(_) => {
            return Err(at.error(
                "audit.on_failure",
                "must be \"fail_closed\" or \"fail_open\"",
            ));
        }
    };
    Ok(AuditSettings {
        output,
        on_overflow,
        queue_capacity,
        hash_chain: a.hash_chain.unwrap_or(false),
        on_failure,
    })
}

fn validate_tracing(
    raw: &RawConfig,
    at: &Locator<'_>,
) -> Result<Option<TracingSettings>, ConfigError> {
    let Some(t) = &raw.tracing else {
        return Ok(None);
    };
    if !cfg!(feature = "otlp") {
        return Err(at.error(
            "tracing.otlp_endpoint",
            "this build has no OTLP export; build with `cargo build --release --features otlp`",
        ));
    }
    let otlp_endpoint: Uri = t
        .otlp_endpoint
        .parse()
        .ok()
        .filter(|u: &Uri| u.scheme() == Some(&Scheme::HTTP) && u.authority().is_some())
        .ok_or_else(|| {
            at.error(
                "tracing.otlp_endpoint",
                "must be an http:// URL, e.g. \"http://127.0.0.1:4318/v1/traces\" (a local collector)",
            )
        })?;
    Ok(Some(TracingSettings {
        otlp_endpoint,
        service_name: t
            .service_name
            .clone()
            .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned()),
        export_interval: positive(
            t.export_interval,
            DEFAULT_EXPORT_INTERVAL,
            "tracing.export_interval",
            at,
        )?,
    }))
}

fn validate_server(raw: &RawConfig, at: &Locator<'_>) -> Result<ServerSettings, ConfigError> {
    let s = &raw.server;
    let listen = parse_addr(
        s.listen.as_deref().unwrap_or(DEFAULT_LISTEN),
        "server.listen",
        at,
    )?;
    let max_header_bytes = match s.max_header_bytes {
        None => DEFAULT_MAX_HEADER_BYTES,
        Some(n) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            if !(MIN_MAX_HEADER_BYTES..=MAX_MAX_HEADER_BYTES).contains(&n) {
                return Err(at.error(
                    "server.max_header_bytes",
                    format!("must be between {MIN_MAX_HEADER_BYTES} and {MAX_MAX_HEADER_BYTES}"),
                ));
            }
            n
        }
    };
    let header_timeout = positive(
        s.header_timeout,
        DEFAULT_HEADER_TIMEOUT,
        "server.header_timeout",
        at,
    )?;
    let max_connections = match s.max_connections {
        None => DEFAULT_MAX_CONNECTIONS,
        Some(0) => return Err(at.error("server.max_connections", "must be at least 1")),
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX).min(1 << 24),
    };
    let shutdown_grace = s.shutdown_grace.unwrap_or(DEFAULT_SHUTDOWN_GRACE);
    let body_timeout = positive(
        s.body_timeout,
        DEFAULT_BODY_TIMEOUT,
        "server.body_timeout",
        at,
    )?;
    let write_timeout = positive(
        s.write_timeout,
        DEFAULT_WRITE_TIMEOUT,
        "server.write_timeout",
        at,
    )?;
    let trusted_proxies = rate_limit::trusted_proxies(s, at)?;
    let tls = match &s.tls {
        None => None,
        Some(t) => {
            let certs = tls::read_certs(Path::new(&t.cert_file))
                .map_err(|m| at.error("server.tls.cert_file", m))?;
            let key = tls::read_key(Path::new(&t.key_file))
                .map_err(|m| at.error("server.tls.key_file", m))?;
            let client_roots = match &t.client_ca_file {
                None => None,
                Some(path) => Some(
                    tls::read_certs(Path::new(path))
                        .map_err(|m| at.error("server.tls.client_ca_file", m))?,
                ),
            };
            let client_auth = client_roots.is_some();
            let server_config = tls::server_config(certs, key, client_roots)
                .map_err(|m| at.error("server.tls", m))?;
            let watch_interval = positive(
                t.watch_interval,
                DEFAULT_TLS_WATCH_INTERVAL,
                "server.tls.watch_interval",
                at,
            )?;
            Some(TlsSettings {
                server_config,
                client_auth,
                files: Some(tls::TlsFiles {
                    cert: PathBuf::from(&t.cert_file),
                    key: PathBuf::from(&t.key_file),
                    client_ca: t.client_ca_file.as_ref().map(PathBuf::from),
                }),
                watch_interval,
            })
        }
    };
    Ok(ServerSettings {
        listen,
        max_header_bytes,
        allow_absolute_form: s.allow_absolute_form.unwrap_or(false),
        header_timeout,
        max_connections,
        listen_backlog: match s.listen_backlog {
            None => DEFAULT_LISTEN_BACKLOG,
            Some(0) => return Err(at.error("server.listen_backlog", "must be at least 1")),
            Some(n) => n,
        },
        body_timeout,
        write_timeout,
        shutdown_grace,
        trusted_proxies,
        tls,
        log_format: s.log_format.unwrap_or_default(),
    })
}

fn validate_upstream(raw: &RawConfig, at: &Locator<'_>) -> Result<UpstreamSettings, ConfigError> {
    let u = &raw.upstream;
    let key = "upstream.url";
    let uri: Uri = u.url.parse().map_err(|_| {
        at.error(
            key,
            "is not a valid URL (expected e.g. \"http://127.0.0.1:8080\")",
        )
    })?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::HTTP,
        Some("https") => Scheme::HTTPS,
        _ => return Err(at.error(key, "must start with http:// or https://")),
    };
    let Some(authority) = uri.authority().cloned() else {
        return Err(at.error(key, "must name a host"));
    };
    if authority.as_str().contains('@') {
        return Err(at.error(
            key,
            "must not carry credentials; the upstream URL is not a place for secrets",
        ));
    }
    if authority.host().is_empty() {
        return Err(at.error(key, "must name a host"));
    }
    if uri.query().is_some() {
        return Err(at.error(key, "must not have a query string"));
    }
    let base_path = uri.path().trim_end_matches('/').to_owned();
    let extra_roots = match &u.ca_file {
        None => Vec::new(),
        Some(path) => {
            tls::read_certs(Path::new(path)).map_err(|m| at.error("upstream.ca_file", m))?
        }
    };
    let credential = match (&u.auth_header_env, &u.auth_header_file) {
        (None, None) => None,
        (env, file) => {
            // Errors name the key the operator actually wrote.
            let key = if env.is_some() {
                "upstream.auth_header_env"
            } else {
                "upstream.auth_header_file"
            };
            let secret = Secret::from_env_or_file(env.as_deref(), file.as_deref())
                .map_err(|m| at.error(key, m))?;
            let mut value = b"Bearer ".to_vec();
            value.extend_from_slice(secret.expose());
            let mut value = HeaderValue::from_bytes(&value).map_err(|_| {
                at.error(key, "the credential has characters a header cannot carry")
            })?;
            value.set_sensitive(true);
            Some(value)
        }
    };
    Ok(UpstreamSettings {
        credential,
        scheme,
        authority,
        base_path,
        max_connections: match u.max_connections {
            None => DEFAULT_UPSTREAM_MAX_CONNECTIONS,
            Some(0) => return Err(at.error("upstream.max_connections", "must be at least 1")),
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX).min(1 << 24),
        },
        connect_timeout: positive(
            u.connect_timeout,
            DEFAULT_CONNECT_TIMEOUT,
            "upstream.connect_timeout",
            at,
        )?,
        response_header_timeout: positive(
            u.response_header_timeout,
            DEFAULT_RESPONSE_HEADER_TIMEOUT,
            "upstream.response_header_timeout",
            at,
        )?,
        sse_keepalive: match u.sse_keepalive {
            None => Some(DEFAULT_SSE_KEEPALIVE),
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
        },
        idle_timeout: positive(
            u.idle_timeout,
            DEFAULT_IDLE_TIMEOUT,
            "upstream.idle_timeout",
            at,
        )?,
        extra_roots,
    })
}

fn positive(
    value: Option<Duration>,
    default: Duration,
    key: &str,
    at: &Locator<'_>,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(d) if d.is_zero() => Err(at.error(key, "must be longer than zero")),
        Some(d) => Ok(d),
    }
}

fn parse_addr(text: &str, key: &str, at: &Locator<'_>) -> Result<SocketAddr, ConfigError> {
    text.parse()
        .map_err(|_| at.error(key, "must be an IP address and port, e.g. \"0.0.0.0:8443\""))
}

fn header_value(
    value: Option<&str>,
    default: &str,
    key: &str,
    at: &Locator<'_>,
) -> Result<Option<HeaderValue>, ConfigError> {
    match value.unwrap_or(default) {
        "" => Ok(None),
        v => HeaderValue::from_str(v)
            .map(Some)
            .map_err(|_| at.error(key, "is not a valid header value")),
    }
}

/// The injection rules and the scanned chat roles of the config `source`, reading only
/// `[validation]` and `[llm]` (for `check-rules`, which needs neither the rest of the file nor its
/// certificates and secrets). A config without `[validation]` gets the default rules.
pub fn detection_of(
    source: &str,
    file: &str,
) -> Result<(ValidationSettings, llm::Roles), ConfigError> {
    let table: toml::Table = toml::from_str(source).map_err(|e| ConfigError {
        file: file.to_owned(),
        line: e.span().map(|s| line_of(source, s.start)),
        key: None,
        message: format!("not valid TOML: {}", redact_values(e.message())),
    })?;
    fn section<T: serde::de::DeserializeOwned>(
        table: &toml::Table,
        name: &str,
        file: &str,
    ) -> Result<Option<T>, ConfigError> {
        table
            .get(name)
            .cloned()
            .map(|value| {
                serde_path_to_error::deserialize(value).map_err(|e| {
                    let path = e.path().to_string();
                    ConfigError {
                        file: file.to_owned(),
                        line: None,
                        key: Some(if path == "." || path.is_empty() {
                            name.to_owned()
                        } else {
                            format!("{name}.{path}")
                        }),
                        message: redact_values(e.into_inner().message()),
                    }
                })
            })
            .transpose()
    }
    let at = Locator { source, file };
    let raw_validation: raw::RawValidation =
        section(&table, "validation", file)?.unwrap_or_default();
    let validation = validation::validate(&raw_validation, &at)?;
    let roles = match section::<raw::RawLlm>(&table, "llm", file)? {
        Some(raw_llm) => llm::validate(&raw_llm, &at)?.scan_roles,
        None => llm::Roles::of(&llm::DEFAULT_SCAN_ROLES),
    };
    Ok((validation, roles))
}

/// Parses TOML into the raw mirror, turning serde errors into located, value-free messages.
pub fn parse_raw(source: &str, file: &str) -> Result<RawConfig, ConfigError> {
    let de = toml::Deserializer::parse(source).map_err(|e| ConfigError {
        file: file.to_owned(),
        line: e.span().map(|s| line_of(source, s.start)),
        key: None,
        message: format!("not valid TOML: {}", redact_values(e.message())),
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        ConfigError {
            file: file.to_owned(),
            line: inner.span().map(|s| line_of(source, s.start)),
            key: (path != "." && !path.is_empty()).then_some(path),
            message: redact_values(inner.message()),
        }
    })
}

/// Removes double-quoted values from a parser message, so that an error never echoes a value.
fn redact_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut in_quotes = false;
    for c in message.chars() {
        if c == '"' {
            in_quotes = !in_quotes;
            if !in_quotes {
                out.push_str("value");
            }
            continue;
        }
        if !in_quotes {
            out.push(c);
        }
    }
    out.replace("string value", "string").trim_end().to_owned()
}

fn line_of(source: &str, offset: usize) -> usize {
    let offset = offset.min(source.len());
    source.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Finds the line of a dotted key in the source, for errors found after parsing.
struct Locator<'a> {
    source: &'a str,
    file: &'a str,
}

impl Locator<'_> {
    fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            line: self.line_of_key(key),
            key: Some(key.to_owned()),
            message: message.into(),
        }
    }

    fn line_of_key(&self, key: &str) -> Option<usize> {
        // `auth.hmac_keys[1].kid`: the leaf `kid` under the second `[[auth.hmac_keys]]`.
        let (table, leaf) = key.rsplit_once('.').unwrap_or(("", key));
        let (table, index) = match table.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (table, None),
        };
        let mut current = String::new();
        let mut occurrence = 0usize;
        let mut table_line = None;
        for (i, line) in self.source.lines().enumerate() {
            let line = line.trim();
            if let Some(header) = line.strip_prefix('[') {
                let array = header.starts_with('[');
                current = header
                    .trim_start_matches('[')
                    .split(']')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_owned();
                if current == table && array {
                    occurrence += 1;
                }
                if current == key {
                    table_line = Some(i + 1);
                }
                continue;
            }
            let in_table = current == table && index.is_none_or(|n| occurrence == n + 1);
            if in_table {
                let name = line.split('=').next().unwrap_or("").trim();
                if name == leaf && line.contains('=') {
                    return Some(i + 1);
                }
            }
        }
        table_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_drops_quoted_values() {
        assert_eq!(
            redact_values("invalid value: string \"hunter2\", expected a duration"),
            "invalid value: string, expected a duration"
        );
    }

    #[test]
    fn locator_finds_keys_in_tables() {
        let src = "[server]\nlisten = \"x\"\n\n[server.tls]\ncert_file = \"a\"\n";
        let at = Locator {
            source: src,
            file: "f",
        };
        assert_eq!(at.line_of_key("server.listen"), Some(2));
        assert_eq!(at.line_of_key("server.tls.cert_file"), Some(5));
        assert_eq!(at.line_of_key("server.tls"), Some(4));
        let src = "[[auth.hmac_keys]]\nkid = \"a\"\n[[auth.hmac_keys]]\nkid = \"b\"\n";
        let at = Locator {
            source: src,
            file: "f",
        };
        assert_eq!(at.line_of_key("auth.hmac_keys[1].kid"), Some(4));
        assert_eq!(at.line_of_key("auth.hmac_keys[0].kid"), Some(2));
    }
}

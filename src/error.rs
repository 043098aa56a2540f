//! Gateway-made errors and the one place that turns them into responses.
//!
//! Guards against leaking internals: every rejection becomes an RFC 9457 `application/problem+json`
//! body with a fixed title and detail and the request id, never a library message, a path, a stack
//! trace or an upstream body. The full cause goes once to the operational log (stderr).

use std::any::Any;
use std::borrow::Cow;
use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use futures_util::FutureExt;
use futures_util::future::CatchUnwind;
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use serde_json::value::RawValue;
use tower::{Layer, Service};

use crate::context::{Dialect, Facts, McpEndpoint, RequestContext};
use crate::context::{Request, Response};
use crate::detect::rules::{CODE_INJECTION, OBFUSCATION, PROMPT_INJECTION, SCRIPT_INJECTION};
use crate::fault::{BodyTimeout, ErrorChain, MalformedBody, caused_by};
use crate::headers::{RateLimitState, number_value};
use crate::outcome::{Decision, Outcome, Refusal};

pub use crate::fault::BoxError;

/// What a stage inside the error layer answers: a response, or a refusal still to be rendered.
pub type StageResult = Result<Response, GatewayError>;

/// Media type of every error body the gateway writes.
pub const PROBLEM_JSON: HeaderValue = HeaderValue::from_static("application/problem+json");

/// Every reason the gateway answers a request itself instead of with the upstream's answer.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No acceptable token: 401 with `WWW-Authenticate`.
    #[error("authentication failed: {0:?}")]
    Unauthenticated(Refusal),
    /// The token lacks a required scope: 403 with `error="insufficient_scope"`.
    #[error("insufficient scope")]
    Forbidden,
    /// The user exceeded the per-user limit: 429 with `Retry-After` (and the `RateLimit-*`
    /// headers when the limit's state is known).
    #[error("rate limited ({rule})")]
    RateLimited {
        /// Seconds until a request would be admitted.
        retry_after: u64,
        /// `user_limit` or `tracked_users_cap`.
        rule: &'static str,
        /// The limit's state, for the `RateLimit-*` headers.
        state: Option<RateLimitState>,
    },
    /// The client address exceeded the per-IP flood guard: 429 with `Retry-After`.
    #[error("per-IP rate limited")]
    IpRateLimited {
        /// Seconds until a request would be admitted.
        retry_after: u64,
    },
    /// The shared limiter is unreachable and `failure_mode = "closed"`: 503.
    #[error("rate limiter unavailable")]
    LimiterUnavailable,
    /// The injection classifier could not judge the request and its `failure_mode` is
    /// `closed`: 503 with `Retry-After`.
    #[error("injection classifier unavailable")]
    ClassifierUnavailable,
    /// The body is larger than `validation.max_body_bytes`: 413.
    #[error("body too large")]
    BodyTooLarge,
    /// The request's framing is ambiguous or unsupported, or its body is malformed: 400, and the
    /// connection is closed.
    #[error("bad request ({0})")]
    BadRequest(&'static str),
    /// A WebSocket upgrade on a path that does not take one, or a malformed handshake: 400, and
    /// the connection is closed, like [`GatewayError::BadRequest`] (whose decision it shares).
    #[error("websocket upgrade refused ({0})")]
    WebSocketRefused(&'static str),
    /// The audit log cannot be written and `audit.on_failure = "fail_closed"`: 503.
    #[error("audit log unavailable")]
    AuditUnavailable,
    /// The body did not arrive within `server.body_timeout`: 408.
    #[error("request body timed out")]
    BodyTimeout,
    /// Too many request bodies are being buffered at once (`validation.max_buffered_bytes`):
    /// 503 with `Retry-After`.
    #[error("request buffer budget exhausted")]
    Overloaded,
    /// The body is not JSON (nor an allowed media type): 415.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// The body is not well-formed JSON, too deeply nested, or empty: 400.
    #[error("invalid JSON ({0})")]
    InvalidJson(&'static str),
    /// The body holds more text than `validation.max_input_chars`: 400.
    #[error("input too long")]
    InputTooLong,
    /// A blocking rule matched: 400 naming the category, never the pattern.
    #[error("injection detected ({rule})")]
    InjectionDetected {
        /// The rule id (for the audit record).
        rule: String,
        /// The category named to the client.
        category: &'static str,
    },
    /// The request head (request line and headers) is larger than `server.max_header_bytes`: 431.
    #[error("request head of {0} bytes exceeds server.max_header_bytes")]
    HeaderTooLarge(usize),
    /// The upstream could not be reached or broke the connection before answering: 502.
    #[error("upstream unreachable")]
    UpstreamUnavailable(#[source] BoxError),
    /// The upstream's response head did not arrive within `upstream.response_header_timeout`: 504.
    #[error("upstream response head timed out")]
    UpstreamTimeout,
    /// The upstream answered with a 5xx status; its body is dropped: 502.
    #[error("upstream answered with status {0}")]
    UpstreamStatus(StatusCode),
    /// The request names a model outside `[llm] allowed_models`: 403.
    #[error("model not allowed")]
    ModelNotAllowed,
    /// The request breaks the route's protocol policy (a token limit above
    /// `[llm] max_output_tokens`): 400, naming the reason in the audit rule.
    #[error("invalid request ({0})")]
    InvalidRequest(&'static str),
    /// The user's token budget is spent: 429 with `Retry-After` (the end of the window).
    #[error("token budget exceeded")]
    BudgetExceeded {
        /// Seconds until the budget's window ends.
        retry_after: u64,
    },
    /// A secret was found in the request body and `[dlp] request_action = "block"`: 400,
    /// naming the detector in the audit rule, never the value.
    #[error("secret detected ({rule})")]
    SecretDetected {
        /// The detector's rule id.
        rule: &'static str,
    },
    /// An MCP request's `Mcp-*` headers disagree with its body, or one its revision requires is
    /// missing: 400 with JSON-RPC error -32020 (HeaderMismatch); the rule names the header.
    #[error("MCP header mismatch ({0})")]
    McpHeaderMismatch(&'static str),
    /// The request's `Origin` is not in `[mcp] allowed_origins`: 403.
    #[error("origin not allowed")]
    OriginForbidden,
    /// A `tools/call` of a tool whose scopes the token lacks: 403 with a step-up challenge
    /// naming them.
    #[error("tool needs scopes")]
    ToolScopeRequired {
        /// The tool's scopes, space-separated.
        scopes: Box<str>,
    },
    /// A `tools/call` of a tool nobody may call: answered as an unknown tool (HTTP 200 and a
    /// JSON-RPC error), so the client's session survives.
    #[error("tool denied")]
    ToolDenied {
        /// The tool's name, as the client sent it.
        tool: Box<str>,
    },
    /// A `tools/call` of a tool whose definition changed since it was pinned: HTTP 200 and a
    /// JSON-RPC error, as for a denied tool.
    #[error("tool definition changed")]
    ToolDefinitionChanged {
        /// The tool's name.
        tool: Box<str>,
    },
    /// An `Mcp-Session-Id` this gateway did not bind to the caller: 404, as for an expired
    /// session, so the client starts a new one.
    #[error("MCP session not bound to the caller")]
    McpSessionMismatch,
    /// A bug in the gateway (a caught panic or a missing request context): 500.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    status: u16,
    detail: &'a str,
    request_id: &'a str,
}

impl GatewayError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            GatewayError::Forbidden => StatusCode::FORBIDDEN,
            GatewayError::RateLimited { .. } | GatewayError::IpRateLimited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            GatewayError::LimiterUnavailable | GatewayError::ClassifierUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            GatewayError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            GatewayError::AuditUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::BadRequest(_) | GatewayError::WebSocketRefused(_) => {
                StatusCode::BAD_REQUEST
            }
            GatewayError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            GatewayError::InvalidJson(_)
            | GatewayError::InputTooLong
            | GatewayError::InjectionDetected { .. } => StatusCode::BAD_REQUEST,
            GatewayError::HeaderTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            GatewayError::UpstreamUnavailable(_) | GatewayError::UpstreamStatus(_) => {
                StatusCode::BAD_GATEWAY
            }
            GatewayError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            GatewayError::ModelNotAllowed => StatusCode::FORBIDDEN,
            GatewayError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            GatewayError::BudgetExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::SecretDetected { .. } => StatusCode::BAD_REQUEST,
            GatewayError::McpHeaderMismatch(_) => StatusCode::BAD_REQUEST,
            GatewayError::OriginForbidden | GatewayError::ToolScopeRequired { .. } => {
                StatusCode::FORBIDDEN
            }
            GatewayError::ToolDenied { .. } | GatewayError::ToolDefinitionChanged { .. } => {
                StatusCode::OK
            }
            GatewayError::McpSessionMismatch => StatusCode::NOT_FOUND,
        }
    }

    /// The audit decision recorded for this error.
    pub fn decision(&self) -> Decision {
        match self {
            GatewayError::Unauthenticated(Refusal::Missing) => Decision::AuthMissing,
            GatewayError::Unauthenticated(Refusal::Expired) => Decision::AuthExpired,
            GatewayError::Unauthenticated(Refusal::Invalid(_)) => Decision::AuthInvalid,
            GatewayError::Unauthenticated(Refusal::Revoked) => Decision::AuthRevoked,
            GatewayError::Forbidden => Decision::Forbidden,
            GatewayError::RateLimited { .. } => Decision::RateLimited,
            GatewayError::IpRateLimited { .. } => Decision::IpRateLimited,
            GatewayError::LimiterUnavailable => Decision::LimiterUnavailable,
            GatewayError::ClassifierUnavailable => Decision::ClassifierUnavailable,
            GatewayError::BodyTooLarge => Decision::BodyTooLarge,
            GatewayError::BodyTimeout => Decision::BodyTimeout,
            GatewayError::AuditUnavailable => Decision::AuditUnavailable,
            GatewayError::BadRequest(_) | GatewayError::WebSocketRefused(_) => Decision::BadRequest,
            GatewayError::Overloaded => Decision::Overloaded,
            GatewayError::UnsupportedMediaType => Decision::UnsupportedMediaType,
            GatewayError::InvalidJson(_) => Decision::InvalidJson,
            GatewayError::InputTooLong => Decision::InputTooLong,
            GatewayError::InjectionDetected { .. } => Decision::InjectionDetected,
            GatewayError::HeaderTooLarge(_) => Decision::HeaderTooLarge,
            GatewayError::UpstreamUnavailable(_) | GatewayError::UpstreamStatus(_) => {
                Decision::UpstreamError
            }
            GatewayError::UpstreamTimeout => Decision::UpstreamTimeout,
            GatewayError::Internal(_) => Decision::InternalError,
            GatewayError::ModelNotAllowed => Decision::ModelNotAllowed,
            GatewayError::InvalidRequest(_) => Decision::InvalidRequest,
            GatewayError::BudgetExceeded { .. } => Decision::BudgetExceeded,
            GatewayError::SecretDetected { .. } => Decision::SecretDetected,
            GatewayError::McpHeaderMismatch(_) => Decision::McpHeaderMismatch,
            GatewayError::OriginForbidden => Decision::OriginForbidden,
            GatewayError::ToolScopeRequired { .. } | GatewayError::ToolDenied { .. } => {
                Decision::ToolForbidden
            }
            GatewayError::ToolDefinitionChanged { .. } => Decision::ToolDefinitionChanged,
            GatewayError::McpSessionMismatch => Decision::McpSessionMismatch,
        }
    }

    /// The reason class recorded as the audit record's `rule`.
    pub fn rule(&self) -> Option<Cow<'static, str>> {
        if let GatewayError::InjectionDetected { rule, .. } = self {
            return Some(Cow::Owned(rule.clone()));
        }
        self.static_rule().map(Cow::Borrowed)
    }

    fn static_rule(&self) -> Option<&'static str> {
        match self {
            GatewayError::InvalidJson(reason) => Some(reason),
            GatewayError::BadRequest(reason) | GatewayError::WebSocketRefused(reason) => {
                Some(reason)
            }
            GatewayError::Unauthenticated(Refusal::Missing) => Some("token_missing"),
            GatewayError::Unauthenticated(Refusal::Expired) => Some("token_expired"),
            GatewayError::Unauthenticated(Refusal::Invalid(reason)) => Some(reason),
            GatewayError::Unauthenticated(Refusal::Revoked) => Some("token_revoked"),
            GatewayError::Forbidden => Some("missing_scope"),
            GatewayError::RateLimited { rule, .. } => Some(rule),
            GatewayError::IpRateLimited { .. } => Some("per_ip"),
            GatewayError::LimiterUnavailable => Some("redis_unavailable"),
            GatewayError::InvalidRequest(reason) => Some(reason),
            GatewayError::BudgetExceeded { .. } => Some("token_budget"),
            GatewayError::SecretDetected { rule } => Some(rule),
            GatewayError::McpHeaderMismatch(header) => Some(header),
            GatewayError::ToolScopeRequired { .. } => Some("missing_scope"),
            GatewayError::ToolDenied { .. } => Some("denied"),
            _ => None,
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750), for authentication errors; on an MCP
    /// endpoint it also says where the protected resource metadata is (RFC 9728 § 5.1) and
    /// which scopes to ask for.
    fn challenge(&self, endpoint: Option<&McpEndpoint>) -> Option<HeaderValue> {
        let Some(endpoint) = endpoint else {
            return Some(HeaderValue::from_static(match self {
                GatewayError::Unauthenticated(Refusal::Missing) => r#"Bearer realm="portcullis""#,
                GatewayError::Unauthenticated(_) => {
                    r#"Bearer realm="portcullis", error="invalid_token""#
                }
                GatewayError::Forbidden | GatewayError::ToolScopeRequired { .. } => {
                    r#"Bearer realm="portcullis", error="insufficient_scope""#
                }
                _ => return None,
            }));
        };
        let (error, scope) = match self {
            GatewayError::Unauthenticated(Refusal::Missing) => (None, &*endpoint.scope),
            GatewayError::Unauthenticated(_) => (Some("invalid_token"), &*endpoint.scope),
            GatewayError::Forbidden => (Some("insufficient_scope"), &*endpoint.scope),
            GatewayError::ToolScopeRequired { scopes } => (Some("insufficient_scope"), &**scopes),
            _ => return None,
        };
        let mut parts = Vec::with_capacity(3);
        if let Some(error) = error {
            parts.push(format!("error=\"{error}\""));
        }
        if !scope.is_empty() {
            parts.push(format!("scope=\"{scope}\""));
        }
        if let Some(url) = &endpoint.resource_metadata {
            parts.push(format!("resource_metadata=\"{url}\""));
        }
        let text = if parts.is_empty() {
            "Bearer".to_owned()
        } else {
            format!("Bearer {}", parts.join(", "))
        };
        // Scopes and the URL were checked to be header-safe when the config was loaded.
        HeaderValue::from_str(&text).ok()
    }

    /// `(type, title, detail)`: fixed texts, so nothing internal can reach the client.
    fn texts(&self) -> (&'static str, &'static str, &'static str) {
        match self {
            GatewayError::Unauthenticated(Refusal::Missing) => (
                "urn:portcullis:problem:unauthenticated",
                "Unauthorized",
                "A bearer token is required.",
            ),
            GatewayError::Unauthenticated(_) => (
                "urn:portcullis:problem:invalid-token",
                "Unauthorized",
                "The bearer token is not valid.",
            ),
            GatewayError::Forbidden => (
                "urn:portcullis:problem:insufficient-scope",
                "Forbidden",
                "The bearer token does not grant the scope this service requires.",
            ),
            GatewayError::RateLimited { .. } | GatewayError::IpRateLimited { .. } => (
                "urn:portcullis:problem:rate-limited",
                "Too Many Requests",
                "The request rate limit was reached; retry after the time in Retry-After.",
            ),
            GatewayError::LimiterUnavailable => (
                "urn:portcullis:problem:limiter-unavailable",
                "Service Unavailable",
                "The rate limiter is unavailable; retry later.",
            ),
            GatewayError::ClassifierUnavailable => (
                "urn:portcullis:problem:classifier-unavailable",
                "Service Unavailable",
                "The gateway cannot check this request's content right now; retry later.",
            ),
            GatewayError::AuditUnavailable => (
                "urn:portcullis:problem:audit-unavailable",
                "Service Unavailable",
                "The gateway cannot record requests right now; retry later.",
            ),
            GatewayError::WebSocketRefused(_) => (
                "urn:portcullis:problem:bad-request",
                "Bad Request",
                "WebSocket upgrades are not accepted on this path, or the handshake is malformed.",
            ),
            GatewayError::BadRequest(_) => (
                "urn:portcullis:problem:bad-request",
                "Bad Request",
                "The request's framing or body is malformed or ambiguous.",
            ),
            GatewayError::BodyTimeout => (
                "urn:portcullis:problem:body-timeout",
                "Request Timeout",
                "The request body did not arrive in time.",
            ),
            GatewayError::Overloaded => (
                "urn:portcullis:problem:overloaded",
                "Service Unavailable",
                "The gateway is busy; retry after the time in Retry-After.",
            ),
            GatewayError::BodyTooLarge => (
                "urn:portcullis:problem:body-too-large",
                "Content Too Large",
                "The request body is larger than this gateway accepts.",
            ),
            GatewayError::UnsupportedMediaType => (
                "urn:portcullis:problem:unsupported-media-type",
                "Unsupported Media Type",
                "The request body must be JSON (application/json).",
            ),
            GatewayError::InvalidJson(_) => (
                "urn:portcullis:problem:invalid-json",
                "Bad Request",
                "The request body is not well-formed JSON within the nesting limit.",
            ),
            GatewayError::InputTooLong => (
                "urn:portcullis:problem:input-too-long",
                "Bad Request",
                "The request holds more text than this gateway accepts.",
            ),
            GatewayError::InjectionDetected { category, .. } => (
                "urn:portcullis:problem:injection-detected",
                "Bad Request",
                match *category {
                    PROMPT_INJECTION => "The request was refused: it contains a prompt injection.",
                    SCRIPT_INJECTION => "The request was refused: it contains a script injection.",
                    CODE_INJECTION => "The request was refused: it contains a code injection.",
                    OBFUSCATION => "The request was refused: it contains obfuscated input.",
                    _ => "The request was refused: it contains disallowed content.",
                },
            ),
            GatewayError::HeaderTooLarge(_) => (
                "urn:portcullis:problem:header-too-large",
                "Request Header Fields Too Large",
                "The request line and headers are larger than this gateway accepts.",
            ),
            GatewayError::UpstreamUnavailable(_) | GatewayError::UpstreamStatus(_) => (
                "urn:portcullis:problem:bad-gateway",
                "Bad Gateway",
                "The agent service could not complete the request.",
            ),
            GatewayError::UpstreamTimeout => (
                "urn:portcullis:problem:gateway-timeout",
                "Gateway Timeout",
                "The agent service did not answer in time.",
            ),
            GatewayError::Internal(_) => (
                "urn:portcullis:problem:internal",
                "Internal Server Error",
                "The gateway could not process the request.",
            ),
            GatewayError::ModelNotAllowed => (
                "urn:portcullis:problem:model-not-allowed",
                "Forbidden",
                "The model named in the request is not allowed by this gateway.",
            ),
            GatewayError::InvalidRequest(reason) => (
                "urn:portcullis:problem:invalid-request",
                "Bad Request",
                match *reason {
                    MAX_OUTPUT_TOKENS => {
                        "The request asks for more output tokens than this gateway allows."
                    }
                    _ => "The request is not valid for this API.",
                },
            ),
            GatewayError::SecretDetected { .. } => (
                "urn:portcullis:problem:secret-detected",
                "Bad Request",
                "The request was refused: it contains a secret (a key, token or password).",
            ),
            GatewayError::BudgetExceeded { .. } => (
                "urn:portcullis:problem:budget-exceeded",
                "Too Many Requests",
                "The token budget for this user is spent; retry after the time in Retry-After.",
            ),
            GatewayError::McpHeaderMismatch(_) => (
                "urn:portcullis:problem:mcp-header-mismatch",
                "Bad Request",
                "The request's MCP headers (MCP-Protocol-Version, Mcp-Method, Mcp-Name) are \
                 missing or do not match its body.",
            ),
            GatewayError::OriginForbidden => (
                "urn:portcullis:problem:origin-forbidden",
                "Forbidden",
                "Requests from this Origin are not allowed.",
            ),
            GatewayError::ToolScopeRequired { .. } => (
                "urn:portcullis:problem:tool-forbidden",
                "Forbidden",
                "The bearer token does not grant the scopes this tool requires.",
            ),
            GatewayError::ToolDenied { .. } => (
                "urn:portcullis:problem:tool-forbidden",
                "Forbidden",
                "Unknown tool.",
            ),
            GatewayError::ToolDefinitionChanged { .. } => (
                "urn:portcullis:problem:tool-definition-changed",
                "Forbidden",
                "The tool's definition changed since it was approved; it is unavailable until \
                 an operator approves the new definition.",
            ),
            GatewayError::McpSessionMismatch => (
                "urn:portcullis:problem:session-not-found",
                "Not Found",
                "Session not found; start a new session.",
            ),
        }
    }

    /// The client's fault behind `error`, when a request body failed on the client's side: a
    /// body that did not arrive in time (408) or came malformed or cut (400). Whoever reads the
    /// body (validation, or the upstream request) answers with it, never blaming the upstream.
    pub fn client_fault(error: &(dyn std::error::Error + 'static)) -> Option<GatewayError> {
        if caused_by::<BodyTimeout>(error) {
            Some(GatewayError::BodyTimeout)
        } else if caused_by::<MalformedBody>(error) {
            Some(GatewayError::BadRequest("malformed_body"))
        } else {
            None
        }
    }

    /// Whether the connection must close after this refusal: the rest of the body may still be
    /// on its way, or its end is unknowable.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            GatewayError::BodyTimeout
                | GatewayError::BadRequest(_)
                | GatewayError::WebSocketRefused(_)
        )
    }
}

/// Turns a refusal into the response the client receives: THE one place that does.
///
/// The body is written in the route's `dialect` (today RFC 9457 problem+json) with fixed texts
/// and the request id; the status and headers (`WWW-Authenticate`, `Retry-After`, `RateLimit-*`,
/// `Connection: close`) follow from the error. The decision, its rule and (when it will be logged)
/// the internal cause go to `facts`, for the audit record and the operational log line.
pub fn render(
    error: GatewayError,
    dialect: Dialect,
    request_id: &str,
    facts: Option<&Facts>,
    endpoint: Option<&McpEndpoint>,
) -> Response {
    let status = error.status();
    let mut response = match dialect {
        Dialect::Problem => problem_response(&error, status, request_id),
        Dialect::OpenAi => openai_response(&error, status),
        Dialect::JsonRpc => {
            let id = facts.and_then(Facts::mcp).and_then(|m| m.id.as_deref());
            jsonrpc_response(&error, status, request_id, id)
        }
    };
    let headers = response.headers_mut();
    match &error {
        GatewayError::RateLimited {
            retry_after, state, ..
        } => {
            headers.insert(header::RETRY_AFTER, number_value(*retry_after));
            if let Some(state) = state {
                state.write(headers);
            }
        }
        GatewayError::IpRateLimited { retry_after }
        | GatewayError::BudgetExceeded { retry_after } => {
            headers.insert(header::RETRY_AFTER, number_value(*retry_after));
        }
        GatewayError::Overloaded
        | GatewayError::AuditUnavailable
        | GatewayError::ClassifierUnavailable => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    if error.closes_connection() || facts.is_some_and(Facts::must_close) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some(challenge) = error.challenge(endpoint) {
        headers.insert(header::WWW_AUTHENTICATE, challenge);
    }
    if let Some(facts) = facts {
        // The cause is logged by the audit layer, which knows the request's trace id; it is only
        // formatted when it will be logged.
        let cause = (status.is_server_error() || tracing::enabled!(tracing::Level::DEBUG))
            .then(|| ErrorChain(&error).to_string().into_boxed_str());
        facts.decide(Outcome {
            decision: error.decision(),
            rule: error.rule(),
            upstream_status: match &error {
                GatewayError::UpstreamStatus(s) => Some(s.as_u16()),
                _ => None,
            },
            cause,
        });
    }
    response
}

/// The RFC 9457 body: fixed type, title and detail, the status and the request id.
fn problem_response(error: &GatewayError, status: StatusCode, request_id: &str) -> Response {
    let (kind, title, detail) = error.texts();
    let problem = Problem {
        kind,
        title,
        status: status.as_u16(),
        detail,
        request_id,
    };
    json_response(&problem, status, PROBLEM_JSON)
}

/// A refusal's body as JSON of `media_type`. Serialising strings and integers cannot fail; an
/// empty body is the fallback that still carries the status and headers.
fn json_response(body: &impl Serialize, status: StatusCode, media_type: HeaderValue) -> Response {
    let body = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, media_type);
    response
}

/// `application/json`.
const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// The rule of a request whose token limit is above `[llm] max_output_tokens`.
pub const MAX_OUTPUT_TOKENS: &str = "max_output_tokens";

#[derive(Serialize)]
struct OpenAiError<'a> {
    error: OpenAiErrorBody<'a>,
}

#[derive(Serialize)]
struct OpenAiErrorBody<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    code: &'a str,
    param: Option<&'a str>,
}

/// OpenAI's error body: the SDKs build their exception text from `error.message`. The message
/// is the same fixed sentence problem+json sends as `detail`; `code` is the audit decision.
fn openai_response(error: &GatewayError, status: StatusCode) -> Response {
    let kind = match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        500.. => "api_error",
        _ => "invalid_request_error",
    };
    let (_, _, detail) = error.texts();
    let body = OpenAiError {
        error: OpenAiErrorBody {
            message: detail,
            kind,
            code: error.decision().as_str(),
            param: None,
        },
    };
    json_response(&body, status, JSON)
}

/// JSON-RPC error codes (JSON-RPC 2.0 § 5.1; MCP 2026-07-28 for -32020).
mod jsonrpc_code {
    pub const PARSE_ERROR: i32 = -32700;
    pub const INVALID_REQUEST: i32 = -32600;
    pub const INVALID_PARAMS: i32 = -32602;
    pub const INTERNAL_ERROR: i32 = -32603;
    pub const HEADER_MISMATCH: i32 = -32020;
}

/// A JSON-RPC error response: `{"jsonrpc":"2.0","id":...,"error":{"code","message","data"}}`.
/// The message is the same fixed sentence problem+json sends as `detail`; `data` names the
/// decision and the request id. `id` is the request's, when its body was read (it is left out
/// when unknown, as JSON-RPC allows for an unreadable request).
fn jsonrpc_response(
    error: &GatewayError,
    status: StatusCode,
    request_id: &str,
    id: Option<&str>,
) -> Response {
    use jsonrpc_code::*;
    let code = match error {
        GatewayError::McpHeaderMismatch(_) => HEADER_MISMATCH,
        GatewayError::ToolDenied { .. } | GatewayError::ToolDefinitionChanged { .. } => {
            INVALID_PARAMS
        }
        GatewayError::InvalidJson(_) => PARSE_ERROR,
        _ if status.is_server_error() => INTERNAL_ERROR,
        _ => INVALID_REQUEST,
    };
    let (_, _, detail) = error.texts();
    let message: Cow<'_, str> = match error {
        // What the MCP SDK servers answer for a tool they do not have.
        GatewayError::ToolDenied { tool } => format!("Unknown tool: {tool}").into(),
        GatewayError::ToolDefinitionChanged { tool } => format!(
            "Tool {tool} is unavailable: its definition changed since it was approved; an \
             operator must approve the new definition."
        )
        .into(),
        _ => detail.into(),
    };
    let body = JsonRpcError {
        jsonrpc: "2.0",
        // The id was read from the request's JSON as a string or a number, and is written back
        // as the same JSON text.
        id: id.and_then(|id| serde_json::from_str::<&RawValue>(id).ok()),
        error: JsonRpcErrorBody {
            code,
            message: &message,
            data: JsonRpcErrorData {
                decision: error.decision().as_str(),
                request_id,
            },
        },
    };
    json_response(&body, status, JSON)
}

#[derive(Serialize)]
struct JsonRpcError<'a> {
    jsonrpc: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a RawValue>,
    error: JsonRpcErrorBody<'a>,
}

#[derive(Serialize)]
struct JsonRpcErrorBody<'a> {
    code: i32,
    message: &'a str,
    data: JsonRpcErrorData<'a>,
}

#[derive(Serialize)]
struct JsonRpcErrorData<'a> {
    decision: &'a str,
    request_id: &'a str,
}

/// Renders `error` for `request` as [`RenderErrorsLayer`] would: for a stage that sits above
/// that layer (answering before the stages below run).
pub fn refuse(request: &Request, error: GatewayError) -> Response {
    RenderWith::of(request).render(error)
}

/// Layer: renders the refusals of every stage below it ([`render`]), in the dialect of the
/// request's route; above it the stack only sees responses.
#[derive(Debug, Clone, Copy, Default)]
pub struct RenderErrorsLayer;

impl<S> Layer<S> for RenderErrorsLayer {
    type Service = RenderErrors<S>;

    fn layer(&self, inner: S) -> RenderErrors<S> {
        RenderErrors { inner }
    }
}

/// The service of [`RenderErrorsLayer`].
#[derive(Debug, Clone)]
pub struct RenderErrors<S> {
    inner: S,
}

/// What a refusal is rendered with, taken from the context before the request moves on.
struct RenderWith {
    id: Option<HeaderValue>,
    dialect: Dialect,
    facts: Option<Arc<Facts>>,
    endpoint: Option<Arc<McpEndpoint>>,
}

impl RenderWith {
    fn of(request: &Request) -> RenderWith {
        match RequestContext::of(request) {
            Some(c) => RenderWith {
                id: Some(c.id.clone()),
                dialect: c.dialect,
                facts: Some(c.facts.clone()),
                endpoint: c.mcp_endpoint.clone(),
            },
            None => RenderWith {
                id: None,
                dialect: Dialect::Problem,
                facts: None,
                endpoint: None,
            },
        }
    }

    fn render(&self, error: GatewayError) -> Response {
        let id = self
            .id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown");
        render(
            error,
            self.dialect,
            id,
            self.facts.as_deref(),
            self.endpoint.as_deref(),
        )
    }
}

impl<S> Service<Request> for RenderErrors<S>
where
    S: Service<Request, Response = Response, Error = GatewayError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = RenderFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Every stage of ours is always ready; a stage that is not ready yet is waited for.
        match self.inner.poll_ready(cx) {
            Poll::Ready(_) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let with = RenderWith::of(&request);
        RenderFuture {
            inner: self.inner.call(request),
            with,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`RenderErrors`].
    pub struct RenderFuture<F> {
        #[pin]
        inner: F,
        with: RenderWith,
    }
}

impl<F: Future<Output = StageResult>> Future for RenderFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.poll(cx) {
            Poll::Ready(Ok(response)) => Poll::Ready(Ok(response)),
            Poll::Ready(Err(error)) => Poll::Ready(Ok(this.with.render(error))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Layer: turns a panic anywhere below into a sanitised 500, instead of a dropped connection.
///
/// tower-http's `CatchPanicLayer` does the same job but its handler never sees the request, so
/// its 500 could not carry the request id or be recorded as `internal_error`; and it boxes every
/// response body. This one renders the 500 through [`render`] like every other refusal.
#[derive(Debug, Clone, Copy, Default)]
pub struct CatchPanicLayer;

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;

    fn layer(&self, inner: S) -> CatchPanic<S> {
        CatchPanic { inner }
    }
}

/// The service of [`CatchPanicLayer`].
#[derive(Debug, Clone)]
pub struct CatchPanic<S> {
    inner: S,
}

impl<S> Service<Request> for CatchPanic<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = CatchPanicFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let with = RenderWith::of(&request);
        CatchPanicFuture {
            inner: AssertUnwindSafe(self.inner.call(request)).catch_unwind(),
            with,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`CatchPanic`].
    pub struct CatchPanicFuture<F> {
        #[pin]
        inner: CatchUnwind<AssertUnwindSafe<F>>,
        with: RenderWith,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for CatchPanicFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.poll(cx) {
            Poll::Ready(Ok(answer)) => Poll::Ready(answer),
            Poll::Ready(Err(payload)) => {
                let request_id = this
                    .with
                    .id
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("unknown");
                tracing::error!(
                    request_id,
                    panic = panic_message(&*payload),
                    "request handler panicked"
                );
                Poll::Ready(Ok(this.with.render(GatewayError::Internal("panic"))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::BodyExt;
    use tower::{Layer, Service, ServiceExt};

    use super::{CatchPanicLayer, GatewayError, RenderErrorsLayer};
    use crate::context::{Request, RequestContext, Response, test_request as request};
    use crate::outcome::{Decision, Refusal};

    async fn json_of(response: Response) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn a_refusal_is_rendered_once_with_the_request_id_and_recorded() {
        let refuse = tower::service_fn(|_: Request| async {
            Err::<Response, _>(GatewayError::Unauthenticated(Refusal::Expired))
        });
        let mut service = RenderErrorsLayer.layer(refuse);
        let request = request("GET", "/", "");
        let context = RequestContext::of(&request).unwrap();
        let (id, facts) = (context.id_str().to_owned(), context.facts.clone());
        let response = service.ready().await.unwrap().call(request).await.unwrap();
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        assert!(response.headers().contains_key("www-authenticate"));
        let body = json_of(response).await;
        assert_eq!(body["request_id"], id.as_str());
        assert_eq!(body["status"], 401);
        let outcome = facts.take_outcome();
        assert_eq!(outcome.decision, Decision::AuthExpired);
        assert_eq!(outcome.rule.as_deref(), Some("token_expired"));
    }

    #[tokio::test]
    async fn a_rate_limit_refusal_carries_its_headers() {
        let refuse = tower::service_fn(|_: Request| async {
            Err::<Response, _>(GatewayError::RateLimited {
                retry_after: 7,
                rule: "user_limit",
                state: Some(crate::headers::RateLimitState {
                    limit: 5,
                    remaining: 0,
                    reset_secs: 9,
                }),
            })
        });
        let response = RenderErrorsLayer
            .layer(refuse)
            .oneshot(request("POST", "/", ""))
            .await
            .unwrap();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "7");
        assert_eq!(response.headers()["ratelimit-limit"], "5");
        assert_eq!(response.headers()["ratelimit-remaining"], "0");
        assert_eq!(response.headers()["ratelimit-reset"], "9");
    }

    #[tokio::test]
    async fn a_panic_below_becomes_a_sanitised_500() {
        let panics = tower::service_fn(|request: Request| async move {
            if request.uri().path() == "/boom" {
                panic!("secret internal detail");
            }
            Ok::<Response, Infallible>(Response::default())
        });
        let mut service = CatchPanicLayer.layer(panics);
        let boom = request("GET", "/boom", "");
        let facts = RequestContext::of(&boom).unwrap().facts.clone();
        let response = service.ready().await.unwrap().call(boom).await.unwrap();
        assert_eq!(response.status(), 500);
        let body = json_of(response).await.to_string();
        assert!(!body.contains("secret"), "{body}");
        assert_eq!(facts.take_outcome().decision, Decision::InternalError);
        let fine = service
            .ready()
            .await
            .unwrap()
            .call(request("GET", "/", ""))
            .await
            .unwrap();
        assert_eq!(fine.status(), 200);
    }
}

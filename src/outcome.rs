//! The shared vocabulary of outcomes: what the gateway decided about a request, why a token was
//! refused, how a response stream ended.
//!
//! A leaf of the module graph: the stages produce these values, the error renderer and the audit
//! record read them, and nothing here depends on either.

use std::borrow::Cow;

/// What the gateway decided about a request: the audit record's `decision`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Forwarded, and the upstream's answer relayed.
    #[default]
    Allowed,
    /// The upstream was unreachable or answered 5xx.
    UpstreamError,
    /// The upstream did not answer within `response_header_timeout`.
    UpstreamTimeout,
    /// No token: 401.
    AuthMissing,
    /// A token that is not acceptable: 401.
    AuthInvalid,
    /// An expired token: 401.
    AuthExpired,
    /// A valid token whose id or subject is revoked: 401.
    AuthRevoked,
    /// A valid token without the required scopes: 403.
    Forbidden,
    /// The user exceeded the per-user limit: 429.
    RateLimited,
    /// The client address exceeded the per-IP flood guard: 429.
    IpRateLimited,
    /// The shared limiter was unreachable with `failure_mode = "closed"`: 503.
    LimiterUnavailable,
    /// The injection classifier could not judge, with `failure_mode = "closed"`: 503.
    ClassifierUnavailable,
    /// The body exceeded `max_body_bytes`: 413.
    BodyTooLarge,
    /// The body did not arrive within `server.body_timeout`: 408.
    BodyTimeout,
    /// The audit log could not be written and `on_failure = "fail_closed"`: 503.
    AuditUnavailable,
    /// An unsupported transfer coding, a malformed body, or `CONNECT`: 400.
    BadRequest,
    /// The request-buffer budget (`max_buffered_bytes`) was exhausted: 503.
    Overloaded,
    /// The body is not JSON: 415.
    UnsupportedMediaType,
    /// The body is not well-formed JSON (or too deep, or empty): 400.
    InvalidJson,
    /// The body holds too much text: 400.
    InputTooLong,
    /// An injection rule matched: 400.
    InjectionDetected,
    /// The request head exceeded `max_header_bytes`.
    HeaderTooLarge,
    /// A gateway bug was caught and answered with 500.
    InternalError,
    /// The request names a model outside `[llm] allowed_models`: 403.
    ModelNotAllowed,
    /// The request breaks the route's protocol policy: 400.
    InvalidRequest,
    /// The user's token budget is spent: 429.
    BudgetExceeded,
    /// A secret was found in the request body: 400.
    SecretDetected,
    /// An MCP request's `Mcp-*` headers disagree with its body, or a required one is missing.
    McpHeaderMismatch,
    /// The request's `Origin` is not in `[mcp] allowed_origins`.
    OriginForbidden,
    /// The caller may not use the MCP tool it called.
    ToolForbidden,
    /// An MCP session id issued to another user (or not by this gateway).
    McpSessionMismatch,
    /// The MCP tool's definition changed since it was pinned, and is not approved yet.
    ToolDefinitionChanged,
}

impl Decision {
    /// The stable name written to the audit log and used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::UpstreamError => "upstream_error",
            Decision::UpstreamTimeout => "upstream_timeout",
            Decision::AuthMissing => "auth_missing",
            Decision::AuthInvalid => "auth_invalid",
            Decision::AuthExpired => "auth_expired",
            Decision::AuthRevoked => "auth_revoked",
            Decision::Forbidden => "forbidden",
            Decision::RateLimited => "rate_limited",
            Decision::IpRateLimited => "ip_rate_limited",
            Decision::LimiterUnavailable => "limiter_unavailable",
            Decision::ClassifierUnavailable => "classifier_unavailable",
            Decision::BodyTooLarge => "body_too_large",
            Decision::BodyTimeout => "body_timeout",
            Decision::AuditUnavailable => "audit_unavailable",
            Decision::BadRequest => "bad_request",
            Decision::Overloaded => "overloaded",
            Decision::UnsupportedMediaType => "unsupported_media_type",
            Decision::InvalidJson => "invalid_json",
            Decision::InputTooLong => "input_too_long",
            Decision::InjectionDetected => "injection_detected",
            Decision::HeaderTooLarge => "header_too_large",
            Decision::InternalError => "internal_error",
            Decision::ModelNotAllowed => "model_not_allowed",
            Decision::InvalidRequest => "invalid_request",
            Decision::BudgetExceeded => "budget_exceeded",
            Decision::SecretDetected => "secret_detected",
            Decision::McpHeaderMismatch => "mcp_header_mismatch",
            Decision::OriginForbidden => "origin_forbidden",
            Decision::ToolForbidden => "tool_forbidden",
            Decision::McpSessionMismatch => "mcp_session_mismatch",
            Decision::ToolDefinitionChanged => "tool_definition_changed",
        }
    }
}

/// How the response stream ended: the audit record's `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The whole response reached the client.
    Complete,
    /// The client went away before the response ended.
    ClientClosed,
    /// The upstream fell silent longer than `idle_timeout`; the stream was cut.
    UpstreamIdleTimeout,
    /// The upstream broke the stream; it was cut.
    UpstreamAborted,
    /// A WebSocket closed with this code, sent by either side (written as the code).
    SocketClosed(u16),
    /// A WebSocket carried no frame for `idle_timeout`; closed with 1001.
    SocketIdleTimeout,
    /// A WebSocket message was larger than `max_message_bytes`; closed with 1009.
    SocketMessageTooBig,
    /// The upstream's side of a WebSocket went away without a close frame.
    SocketUpstreamClosed,
}

impl StreamEnd {
    /// The stable name written to the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamEnd::Complete => "complete",
            StreamEnd::ClientClosed => "client_closed",
            StreamEnd::UpstreamIdleTimeout => "upstream_idle_timeout",
            StreamEnd::UpstreamAborted => "upstream_aborted",
            StreamEnd::SocketClosed(_) => "closed",
            StreamEnd::SocketIdleTimeout => "idle_timeout",
            StreamEnd::SocketMessageTooBig => "message_too_big",
            StreamEnd::SocketUpstreamClosed => "upstream_closed",
        }
    }
}

/// Why a token was refused: the audit record's `rule`. Never contains the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No token where one was expected: `auth_missing`.
    Missing,
    /// The token is expired: `auth_expired`.
    Expired,
    /// Any other reason the token is not acceptable: `auth_invalid`, with the reason class.
    Invalid(&'static str),
    /// A valid token whose id or subject is on the revocation list: `auth_revoked`.
    Revoked,
}

/// What the stages decided about a request, reported by its audit record.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The decision.
    pub decision: Decision,
    /// The rule that decided (or, in shadow mode, matched), when one did.
    pub rule: Option<Cow<'static, str>>,
    /// The status the upstream really answered with.
    pub upstream_status: Option<u16>,
    /// The internal cause of a gateway error, for the operational log only (never sent).
    pub cause: Option<Box<str>>,
}

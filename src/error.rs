//! Gateway-made errors and the one place that turns them into responses.
//!
//! Guards against leaking internals: every rejection becomes an RFC 9457 `application/problem+json`
//! body with a fixed title and detail and the request id, never a library message, a path, a stack
//! trace or an upstream body. The full cause goes once to the operational log (stderr).

use std::any::Any;
use std::borrow::Cow;
use std::panic::AssertUnwindSafe;

use crate::stage::Next;
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use futures_util::FutureExt;
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

use crate::audit::{Decision, Outcome};
use crate::auth::jwt::Refusal;
use crate::headers::number_value;
use crate::request_id::RequestContext;

/// A boxed error from a library, kept for the operational log only.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
    /// The user exceeded the per-user limit: 429 with `Retry-After`.
    #[error("rate limited ({rule})")]
    RateLimited {
        /// Seconds until a request would be admitted.
        retry_after: u64,
        /// `user_limit` or `tracked_users_cap`.
        rule: &'static str,
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
    /// The body is larger than `validation.max_body_bytes`: 413.
    #[error("body too large")]
    BodyTooLarge,
    /// The request's framing is ambiguous or unsupported, or its body is malformed: 400, and the
    /// connection is closed.
    #[error("bad request ({0})")]
    BadRequest(&'static str),
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
            GatewayError::LimiterUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            GatewayError::AuditUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
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
            GatewayError::BodyTooLarge => Decision::BodyTooLarge,
            GatewayError::BodyTimeout => Decision::BodyTimeout,
            GatewayError::AuditUnavailable => Decision::AuditUnavailable,
            GatewayError::BadRequest(_) => Decision::BadRequest,
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
            GatewayError::BadRequest(reason) => Some(reason),
            GatewayError::Unauthenticated(Refusal::Missing) => Some("token_missing"),
            GatewayError::Unauthenticated(Refusal::Expired) => Some("token_expired"),
            GatewayError::Unauthenticated(Refusal::Invalid(reason)) => Some(reason),
            GatewayError::Unauthenticated(Refusal::Revoked) => Some("token_revoked"),
            GatewayError::Forbidden => Some("missing_scope"),
            GatewayError::RateLimited { rule, .. } => Some(rule),
            GatewayError::IpRateLimited { .. } => Some("per_ip"),
            GatewayError::LimiterUnavailable => Some("redis_unavailable"),
            _ => None,
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750), for authentication errors.
    fn challenge(&self) -> Option<HeaderValue> {
        Some(HeaderValue::from_static(match self {
            GatewayError::Unauthenticated(Refusal::Missing) => r#"Bearer realm="portcullis""#,
            GatewayError::Unauthenticated(_) => {
                r#"Bearer realm="portcullis", error="invalid_token""#
            }
            GatewayError::Forbidden => r#"Bearer realm="portcullis", error="insufficient_scope""#,
            _ => return None,
        }))
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
            GatewayError::AuditUnavailable => (
                "urn:portcullis:problem:audit-unavailable",
                "Service Unavailable",
                "The gateway cannot record requests right now; retry later.",
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
                    crate::validate::rules::PROMPT_INJECTION => {
                        "The request was refused: it contains a prompt injection."
                    }
                    crate::validate::rules::SCRIPT_INJECTION => {
                        "The request was refused: it contains a script injection."
                    }
                    crate::validate::rules::CODE_INJECTION => {
                        "The request was refused: it contains a code injection."
                    }
                    crate::validate::rules::OBFUSCATION => {
                        "The request was refused: it contains obfuscated input."
                    }
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
        }
    }

    /// Builds the sanitised problem+json response.
    ///
    /// The response carries an [`Outcome`] extension so the audit record gets the decision, and
    /// the operational log the cause (once, with the request and trace ids).
    pub fn into_response(self, request_id: &str) -> Response {
        let status = self.status();
        // The cause is logged by the audit layer, which knows the request's trace id; it is only
        // formatted when it will be logged.
        let cause = (status.is_server_error() || tracing::enabled!(tracing::Level::DEBUG))
            .then(|| ErrorChain(&self).to_string().into_boxed_str());
        let (kind, title, detail) = self.texts();
        let problem = Problem {
            kind,
            title,
            status: status.as_u16(),
            detail,
            request_id,
        };
        // Serialising a struct of strings and an integer cannot fail; an empty body is the
        // fallback that still carries the status and headers.
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, PROBLEM_JSON);
        if let GatewayError::RateLimited { retry_after, .. }
        | GatewayError::IpRateLimited { retry_after } = &self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, number_value(*retry_after));
        }
        if let GatewayError::Overloaded | GatewayError::AuditUnavailable = &self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let GatewayError::BodyTimeout | GatewayError::BadRequest(_) = &self {
            // The rest of the body may still be on its way, or its end is unknowable: this
            // connection cannot be reused.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(challenge) = self.challenge() {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        let upstream_status = match &self {
            GatewayError::UpstreamStatus(s) => Some(s.as_u16()),
            _ => None,
        };
        response.extensions_mut().insert(Outcome {
            decision: self.decision(),
            rule: self.rule(),
            upstream_status,
            cause,
            ..Outcome::default()
        });
        response
    }
}

/// Whether `error` or one of its sources is an `E`: how the layers recognise a cause (an idle
/// upstream, a late or malformed request body) through the wrapping of hyper and axum.
pub fn caused_by<E: std::error::Error + 'static>(
    error: &(dyn std::error::Error + 'static),
) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if e.is::<E>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Displays an error with all its sources: `a: b: c`.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// Layer: turns a panic anywhere below into a sanitised 500, instead of a dropped connection.
pub async fn catch_panic((): (), request: Request, next: impl Next) -> Response {
    let request_id = RequestContext::id_of(&request);
    match AssertUnwindSafe(next.run(request)).catch_unwind().await {
        Ok(response) => response,
        Err(payload) => {
            tracing::error!(request_id = %request_id, panic = panic_message(&*payload), "request handler panicked");
            GatewayError::Internal("panic").into_response(&request_id)
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

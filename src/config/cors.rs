//! `[cors]`: which browser origins may call the gateway, validated into ready header values.
//!
//! Guards against a CORS policy that opens more than it says: `*` together with credentials is
//! refused (browsers ignore it, and a gateway echoing every origin instead would hand any site the
//! user's cookies); origins are compared as `scheme://host[:port]` in lower case; header and
//! method lists must be valid tokens.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use serde::Deserialize;

use super::{ConfigError, Locator};

/// Default `max_age`: how long a browser may cache a preflight answer.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(600);
/// Methods allowed when `allowed_methods` is not given.
const DEFAULT_METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "OPTIONS"];

/// `[cors]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    /// Origins (`scheme://host[:port]`) allowed to call, or `["*"]` for any.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Request headers a browser may send (answered to preflights).
    #[serde(default)]
    pub allowed_headers: Vec<String>,
    /// Methods a browser may use (default GET, POST, PUT, DELETE, OPTIONS).
    pub allowed_methods: Option<Vec<String>>,
    /// Response headers the page may read besides the CORS-safelisted ones.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// Whether the browser may send cookies and read answers to credentialed requests.
    pub allow_credentials: Option<bool>,
    /// How long a browser may cache a preflight answer.
    #[serde(default, with = "super::duration::option")]
    pub max_age: Option<Duration>,
}

/// Which origins may call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origins {
    /// Any origin (`*`; never with credentials).
    Any,
    /// These, as `scheme://host[:port]` in lower case.
    List(Vec<String>),
}

/// Validated `[cors]`, with the header values preflight answers carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsSettings {
    /// Who may call.
    pub origins: Origins,
    /// `Access-Control-Allow-Headers`, lower case, comma-separated (`None`: empty list).
    pub allow_headers: Option<HeaderValue>,
    /// The allowed header names, to check a preflight's `Access-Control-Request-Headers`.
    pub allowed_headers: Vec<HeaderName>,
    /// `Access-Control-Allow-Methods`.
    pub allow_methods: HeaderValue,
    /// The allowed methods, to check a preflight's `Access-Control-Request-Method`.
    pub allowed_methods: Vec<Method>,
    /// `Access-Control-Expose-Headers`, when any.
    pub expose_headers: Option<HeaderValue>,
    /// `Access-Control-Allow-Credentials: true`.
    pub credentials: bool,
    /// `Access-Control-Max-Age`, in seconds.
    pub max_age: HeaderValue,
}

impl CorsSettings {
    /// Whether `origin` (as the browser sent it) may call.
    pub fn allows(&self, origin: &str) -> bool {
        match &self.origins {
            Origins::Any => true,
            Origins::List(list) => list.iter().any(|o| o.eq_ignore_ascii_case(origin)),
        }
    }
}

/// Validates `[cors]`.
pub(super) fn validate(raw: &RawCors, at: &Locator<'_>) -> Result<CorsSettings, ConfigError> {
    let credentials = raw.allow_credentials.unwrap_or(false);
    let origins = if raw.allowed_origins.iter().any(|o| o == "*") {
        if raw.allowed_origins.len() > 1 {
            return Err(at.error(
                "cors.allowed_origins",
                "\"*\" stands alone: it already allows every origin",
            ));
        }
        if credentials {
            return Err(at.error(
                "cors.allowed_origins",
                "\"*\" cannot be used with allow_credentials = true: list the origins that may \
                 send the user's credentials",
            ));
        }
        Origins::Any
    } else {
        if raw.allowed_origins.is_empty() {
            return Err(at.error(
                "cors.allowed_origins",
                "lists no origin, e.g. [\"https://app.example.com\"]",
            ));
        }
        let mut list = Vec::with_capacity(raw.allowed_origins.len());
        for origin in &raw.allowed_origins {
            match super::mcp::http_origin(origin) {
                Some(normal) if normal.len() == origin.trim_end_matches('/').len() => {
                    list.push(normal);
                }
                _ => {
                    return Err(at.error(
                        "cors.allowed_origins",
                        format!("{origin:?} is not an origin: scheme://host[:port], no path"),
                    ));
                }
            }
        }
        Origins::List(list)
    };
    let mut allowed_headers = Vec::with_capacity(raw.allowed_headers.len());
    for name in &raw.allowed_headers {
        let header =
            HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes()).map_err(|_| {
                at.error(
                    "cors.allowed_headers",
                    format!("{name:?} is not a header name"),
                )
            })?;
        allowed_headers.push(header);
    }
    let methods: Vec<String> = raw
        .allowed_methods
        .clone()
        .unwrap_or_else(|| DEFAULT_METHODS.iter().map(|m| (*m).to_owned()).collect());
    let mut allowed_methods = Vec::with_capacity(methods.len());
    for name in &methods {
        let method = Method::from_bytes(name.trim().to_ascii_uppercase().as_bytes())
            .map_err(|_| at.error("cors.allowed_methods", format!("{name:?} is not a method")))?;
        allowed_methods.push(method);
    }
    let mut expose = Vec::with_capacity(raw.expose_headers.len());
    for name in &raw.expose_headers {
        let header =
            HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes()).map_err(|_| {
                at.error(
                    "cors.expose_headers",
                    format!("{name:?} is not a header name"),
                )
            })?;
        expose.push(header);
    }
    let joined = |names: Vec<&str>| -> Option<HeaderValue> {
        (!names.is_empty())
            .then(|| HeaderValue::from_str(&names.join(", ")).ok())
            .flatten()
    };
    let max_age = raw.max_age.unwrap_or(DEFAULT_MAX_AGE);
    Ok(CorsSettings {
        origins,
        allow_headers: joined(allowed_headers.iter().map(HeaderName::as_str).collect()),
        allow_methods: joined(allowed_methods.iter().map(Method::as_str).collect())
            .unwrap_or(HeaderValue::from_static("GET")),
        allowed_headers,
        allowed_methods,
        expose_headers: joined(expose.iter().map(HeaderName::as_str).collect()),
        credentials,
        max_age: HeaderValue::from(max_age.as_secs()),
    })
}

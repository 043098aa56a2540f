//! The authenticated identity, as it travels in the request context.
//!
//! A leaf of the module graph: authentication makes a [`Principal`], and every later stage (and
//! the audit record) reads it from the [`RequestContext`](crate::context::RequestContext).

use std::sync::Arc;

use http::{HeaderName, HeaderValue};

/// Header naming the user to the upstream.
pub static X_PORTCULLIS_USER: HeaderName = HeaderName::from_static("x-portcullis-user");
/// Header listing the user's scopes to the upstream.
pub static X_PORTCULLIS_SCOPES: HeaderName = HeaderName::from_static("x-portcullis-scopes");

/// Who made the request, established from a verified token.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The user: the configured `user_claim`.
    pub user: Arc<str>,
    /// Scopes from `scope` (space-separated) or `scp` (array).
    pub scopes: Vec<String>,
    /// Headers that carry the identity upstream: user, scopes and forwarded claims, ready to send.
    pub identity_headers: Vec<(HeaderName, HeaderValue)>,
    /// Claims later stages look at (rate-limit overrides), as text.
    pub claims: Vec<(String, String)>,
    /// The `sub` claim, checked against the revocation list.
    pub subject: Option<Box<str>>,
    /// The `jti` claim, checked against the revocation list.
    pub token_id: Option<Box<str>>,
    /// The token's `aud` values (RFC 8707 audience binding); `None` for an API key, which the
    /// gateway itself issued.
    pub audiences: Option<Box<[Box<str>]>>,
}

impl Principal {
    /// Whether every scope in `required` was granted.
    pub fn has_scopes(&self, required: &[String]) -> bool {
        required.iter().all(|r| self.scopes.iter().any(|s| s == r))
    }

    /// Whether the credential was issued for `resource`: a token naming it in `aud`, or an API
    /// key (issued by this gateway, for it alone).
    pub fn issued_for(&self, resource: &str) -> bool {
        self.audiences
            .as_ref()
            .is_none_or(|auds| auds.iter().any(|a| **a == *resource))
    }
}

//! Validation of `[auth]` into [`AuthSettings`], with its keys loaded.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Uri};
use jsonwebtoken::Algorithm;

use super::GATEWAY_HEADER_PREFIX;
use super::raw::RawAuth;
use super::{ConfigError, Locator};
use crate::api_keys::ApiKeyList;
use crate::keys::{VerifyingKey, hmac_key, keys_from_jwks};
use crate::revocation::RevokedList;
use crate::secret::Secret;
use crate::tls;
use rustls_pki_types::CertificateDer;

/// Where the remote JWK set is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// `jwks_url`: the set itself.
    Url(Uri),
    /// `oidc_issuer`: the provider's discovery document, fetched first on every refresh, whose
    /// `issuer` must equal `issuer` exactly and whose `jwks_uri` (HTTPS) names the set.
    Discovery {
        /// The issuer as configured.
        issuer: String,
        /// `<issuer>/.well-known/openid-configuration`.
        configuration: Uri,
    },
}

impl JwksSource {
    /// The first URL fetched: the set's, or the discovery document's.
    pub fn first_url(&self) -> &Uri {
        match self {
            JwksSource::Url(uri) => uri,
            JwksSource::Discovery { configuration, .. } => configuration,
        }
    }
}

/// The discovery document's URL for `issuer` (OpenID Connect Discovery 1.0 §4: a terminating
/// `/` is removed before `/.well-known/openid-configuration` is appended).
pub fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

/// Where and how often to fetch the remote JWK set.
#[derive(Debug, Clone)]
pub struct RemoteJwksSettings {
    /// Where the set is found.
    pub source: JwksSource,
    /// Refresh interval.
    pub refresh: Duration,
    /// Extra CAs trusted for the fetch, besides the system roots.
    pub extra_roots: Vec<CertificateDer<'static>>,
}

/// Default clock skew tolerated on `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// Largest accepted `leeway`.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);
/// Default claim naming the user.
pub const DEFAULT_USER_CLAIM: &str = "sub";
/// Default interval between JWKS fetches.
pub const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(600);
/// Shortest accepted `jwks_refresh`.
pub const MIN_JWKS_REFRESH: Duration = Duration::from_secs(1);
/// Default bound on cached verified tokens.
pub const DEFAULT_CACHE_CAPACITY: usize = 100_000;
/// Default cap on how long a verified token is served from the cache.
pub const DEFAULT_CACHE_MAX_TTL: Duration = Duration::from_secs(300);

/// Where the token is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenLocation {
    /// `Authorization: Bearer <token>` (the default).
    Authorization,
    /// A header holding the raw token (an identity-aware load balancer's assertion header).
    Header(HeaderName),
    /// A cookie holding the token.
    Cookie(String),
}

/// Validated `[auth]`, keys loaded.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// The algorithm allow-list.
    pub algorithms: Vec<Algorithm>,
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Accepted `aud` values; empty means `aud` is not checked.
    pub audiences: Vec<String>,
    /// Clock skew tolerated.
    pub leeway: Duration,
    /// Claim naming the user.
    pub user_claim: String,
    /// Scopes every token must carry.
    pub required_scopes: Vec<String>,
    /// The revocation list file, watched for changes.
    pub revocation_file: Option<PathBuf>,
    /// Keys from `jwks_file` and `hmac_keys`.
    pub static_keys: Vec<Arc<VerifyingKey>>,
    /// The remote JWK set.
    pub jwks_url: Option<RemoteJwksSettings>,
    /// Claims forwarded upstream, as (claim, header).
    pub forward_claims: Vec<(String, HeaderName)>,
    /// Where the token is read from.
    pub token_location: TokenLocation,
    /// Exact paths that need no token.
    pub public_paths: Vec<String>,
    /// Most verified tokens cached.
    pub cache_capacity: usize,
    /// Longest time a verified token is served from the cache.
    pub cache_max_ttl: Duration,
    /// Claims kept with the principal for later stages (rate-limit overrides).
    pub retained_claims: Vec<String>,
    /// The API keys file (`[auth.api_keys] file`), when API keys are accepted.
    pub api_keys: Option<PathBuf>,
}

pub(super) fn validate(raw: &RawAuth, at: &Locator<'_>) -> Result<AuthSettings, ConfigError> {
    let api_keys = match &raw.api_keys {
        None => None,
        Some(keys) => {
            let path = PathBuf::from(&keys.file);
            ApiKeyList::read(&path).map_err(|m| at.error("auth.api_keys.file", m))?;
            Some(path)
        }
    };
    if raw.algorithms.is_empty() && api_keys.is_none() {
        return Err(at.error(
            "auth.algorithms",
            "must list at least one algorithm, e.g. [\"ES256\"]",
        ));
    }
    let mut algorithms = Vec::with_capacity(raw.algorithms.len());
    for name in &raw.algorithms {
        let alg = Algorithm::from_str(name).map_err(|_| {
            at.error(
                "auth.algorithms",
                "lists an unknown algorithm; use HS256/384/512, RS256/384/512, PS256/384/512, ES256/384 or EdDSA",
            )
        })?;
        if !algorithms.contains(&alg) {
            algorithms.push(alg);
        }
    }
    let leeway = raw.leeway.unwrap_or(DEFAULT_LEEWAY);
    if leeway > MAX_LEEWAY {
        return Err(at.error("auth.leeway", "must be at most 5m"));
    }

    let mut static_keys = Vec::new();
    if let Some(path) = &raw.jwks_file {
        let json = std::fs::read(path).map_err(|e| {
            at.error(
                "auth.jwks_file",
                format!("cannot read {path} ({})", e.kind()),
            )
        })?;
        let (keys, _) =
            keys_from_jwks(&json, &algorithms).map_err(|m| at.error("auth.jwks_file", m))?;
        if keys.is_empty() {
            return Err(at.error(
                "auth.jwks_file",
                "holds no signing key usable with auth.algorithms",
            ));
        }
        static_keys.extend(keys);
    }
    for (i, key) in raw.hmac_keys.iter().enumerate() {
        let at_key = |leaf: &str| format!("auth.hmac_keys[{i}].{leaf}");
        if key.secret.is_some() {
            return Err(at.error(
                &at_key("secret"),
                "secrets never go in the config file: use secret_env or secret_file",
            ));
        }
        let secret =
            Secret::from_env_or_file(key.secret_env.as_deref(), key.secret_file.as_deref())
                .map_err(|m| {
                    let written = if key.secret_env.is_some() {
                        "secret_env"
                    } else {
                        "secret_file"
                    };
                    at.error(&at_key(written), m)
                })?;
        let built =
            hmac_key(&key.kid, &secret, &algorithms).map_err(|m| at.error(&at_key("kid"), m))?;
        static_keys.push(Arc::new(built));
    }
    let https_url = |key: &str, url: &str| -> Result<Uri, ConfigError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| at.error(key, "is not a valid URL"))?;
        if uri.scheme_str() != Some("https") || uri.host().is_none() {
            return Err(at.error(key, "must be an https:// URL"));
        }
        Ok(uri)
    };
    let source = match (&raw.jwks_url, &raw.oidc_issuer) {
        (None, None) => None,
        (Some(url), None) => Some(JwksSource::Url(https_url("auth.jwks_url", url)?)),
        (None, Some(issuer)) => {
            let parsed = https_url("auth.oidc_issuer", issuer)?;
            if parsed.query().is_some() {
                return Err(at.error("auth.oidc_issuer", "must not have a query"));
            }
            if raw.issuer.as_ref().is_some_and(|i| i != issuer) {
                return Err(at.error(
                    "auth.issuer",
                    "must equal auth.oidc_issuer when both are set (or leave it out: the \
                     discovered issuer is required in iss)",
                ));
            }
            let configuration = discovery_url(issuer)
                .parse()
                .map_err(|_| at.error("auth.oidc_issuer", "is not a valid URL"))?;
            Some(JwksSource::Discovery {
                issuer: issuer.clone(),
                configuration,
            })
        }
        (Some(_), Some(_)) => {
            return Err(at.error(
                "auth.oidc_issuer",
                "give jwks_url or oidc_issuer, not both (discovery finds the JWK set's URL)",
            ));
        }
    };
    let jwks_url = match source {
        None => None,
        Some(source) => {
            let refresh = raw.jwks_refresh.unwrap_or(DEFAULT_JWKS_REFRESH);
            if refresh < MIN_JWKS_REFRESH {
                return Err(at.error("auth.jwks_refresh", "must be at least 1s"));
            }
            let extra_roots = match &raw.jwks_ca_file {
                None => Vec::new(),
                Some(path) => tls::read_certs(Path::new(path))
                    .map_err(|m| at.error("auth.jwks_ca_file", m))?,
            };
            Some(RemoteJwksSettings {
                source,
                refresh,
                extra_roots,
            })
        }
    };
    if !algorithms.is_empty() && static_keys.is_empty() && jwks_url.is_none() {
        return Err(at.error(
            "auth",
            "needs a key source: oidc_issuer, jwks_url, jwks_file or [[auth.hmac_keys]]",
        ));
    }
    if algorithms.is_empty()
        && (!static_keys.is_empty() || jwks_url.is_some() || !raw.hmac_keys.is_empty())
    {
        return Err(at.error(
            "auth.algorithms",
            "must list the algorithms of the configured keys, e.g. [\"ES256\"]",
        ));
    }

    let mut forward_claims = Vec::with_capacity(raw.forward_claims.len());
    for (claim, header) in &raw.forward_claims {
        let name = HeaderName::from_str(header).map_err(|_| {
            at.error(
                "auth.forward_claims",
                "maps a claim to an invalid header name",
            )
        })?;
        if !name.as_str().starts_with(GATEWAY_HEADER_PREFIX) {
            return Err(at.error(
                "auth.forward_claims",
                "header names must start with x-portcullis-, the prefix clients cannot forge",
            ));
        }
        forward_claims.push((claim.clone(), name));
    }
    let token_location = match (&raw.token_header, &raw.token_cookie) {
        (None, None) => TokenLocation::Authorization,
        (Some(h), None) => TokenLocation::Header(
            HeaderName::from_str(h)
                .map_err(|_| at.error("auth.token_header", "is not a valid header name"))?,
        ),
        (None, Some(c)) if !c.is_empty() && !c.contains([';', '=', ' ']) => {
            TokenLocation::Cookie(c.clone())
        }
        (None, Some(_)) => return Err(at.error("auth.token_cookie", "is not a valid cookie name")),
        (Some(_), Some(_)) => {
            return Err(at.error(
                "auth.token_cookie",
                "give token_header or token_cookie, not both",
            ));
        }
    };
    for path in &raw.public_paths {
        if !path.starts_with('/') {
            return Err(at.error("auth.public_paths", "paths must start with /"));
        }
    }
    let cache_capacity = match raw.cache_capacity {
        None => DEFAULT_CACHE_CAPACITY,
        Some(n) => usize::try_from(n)
            .unwrap_or(usize::MAX)
            .clamp(1, 10_000_000),
    };
    let revocation_file = match &raw.revocation_file {
        None => None,
        Some(path) => {
            let path = PathBuf::from(path);
            RevokedList::read(&path).map_err(|m| at.error("auth.revocation_file", m))?;
            Some(path)
        }
    };
    Ok(AuthSettings {
        algorithms,
        // With discovery, tokens must carry the discovered issuer even when `issuer` is left out.
        issuer: raw.issuer.clone().or_else(|| raw.oidc_issuer.clone()),
        audiences: raw.audiences.clone(),
        leeway,
        user_claim: raw
            .user_claim
            .clone()
            .unwrap_or_else(|| DEFAULT_USER_CLAIM.to_owned()),
        required_scopes: raw.required_scopes.clone(),
        static_keys,
        jwks_url,
        forward_claims,
        token_location,
        public_paths: raw.public_paths.clone(),
        cache_capacity,
        cache_max_ttl: raw.cache_max_ttl.unwrap_or(DEFAULT_CACHE_MAX_TTL),
        retained_claims: Vec::new(),
        api_keys,
        revocation_file,
    })
}

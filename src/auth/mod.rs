//! JWT authentication: the layer that turns a bearer token into a [`Principal`].
//!
//! Guards against unauthenticated and impersonating requests: every request (but the configured
//! public paths) must carry a token that verifies against a key in force, satisfies the policy and
//! grants the required scopes; the token is removed before forwarding, and the upstream learns the
//! identity only through `x-portcullis-*` headers the gateway alone sets. Verified tokens are cached
//! so a repeat request skips the signature check.

pub mod cache;
pub mod jwks;
pub mod jwt;
pub mod keys;
pub mod mint;
pub mod principal;
pub mod revocation;

use std::sync::Arc;

use crate::stage::Next;
use axum::extract::Request;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, header};

use crate::audit::{Outcome, Tally};
use crate::config::{AuthSettings, TokenLocation};
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::request_id::RequestContext;
use cache::TokenCache;
use jwks::KeyStore;
use jwt::{Failure, MAX_TOKEN_BYTES, Policy, Refusal};
pub use principal::Principal;
use revocation::Revocations;

/// Everything the authentication stage needs, built once from `[auth]`.
#[derive(Debug)]
pub struct Authenticator {
    keys: Arc<KeyStore>,
    policy: Policy,
    cache: TokenCache,
    location: TokenLocation,
    required_scopes: Vec<String>,
    public_paths: Vec<String>,
    revocations: Option<Arc<Revocations>>,
    metrics: Arc<Metrics>,
}

impl Authenticator {
    /// Builds the key store, policy and cache.
    pub fn new(settings: &AuthSettings, metrics: Arc<Metrics>) -> Result<Authenticator, String> {
        let keys = KeyStore::new(
            settings.static_keys.clone(),
            settings.jwks_url.clone(),
            settings.algorithms.clone(),
            metrics.clone(),
        )?;
        let policy = Policy::new(
            &settings.algorithms,
            settings.issuer.as_deref(),
            &settings.audiences,
            settings.leeway.as_secs(),
            &settings.user_claim,
            settings.forward_claims.clone(),
            settings.retained_claims.clone(),
        );
        Ok(Authenticator {
            keys: Arc::new(keys),
            policy,
            cache: TokenCache::new(
                settings.cache_capacity,
                settings.cache_max_ttl.as_secs(),
                metrics.token_cache_evictions.clone(),
            ),
            location: settings.token_location.clone(),
            required_scopes: settings.required_scopes.clone(),
            public_paths: settings.public_paths.clone(),
            revocations: match &settings.revocation_file {
                None => None,
                Some(path) => Some(Arc::new(Revocations::load(path)?)),
            },
            metrics,
        })
    }

    /// The key store (for readiness and the refresh task).
    pub fn key_store(&self) -> Arc<KeyStore> {
        self.keys.clone()
    }

    /// The revocation list, when one is configured (for the file watcher).
    pub fn revocations(&self) -> Option<Arc<Revocations>> {
        self.revocations.clone()
    }

    /// Verifies a token (from the cache when it was verified before) and refuses it when its id
    /// or subject is revoked; the revocation check runs on every request, cached or not.
    pub async fn verify(&self, token: &str) -> Result<Arc<Principal>, Refusal> {
        let principal = self.verify_signed(token).await?;
        if self
            .revocations
            .as_ref()
            .is_some_and(|r| r.refuses(&principal))
        {
            return Err(Refusal::Revoked);
        }
        Ok(principal)
    }

    async fn verify_signed(&self, token: &str) -> Result<Arc<Principal>, Refusal> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Refusal::Invalid("token_too_large"));
        }
        let now = mint::unix_now();
        let digest = TokenCache::digest(token);
        {
            let keys = self.keys.keys();
            if let Some(principal) = self.cache.get(&digest, now, &keys) {
                self.metrics.token_cache_hits.inc();
                return Ok(principal);
            }
        }
        self.metrics.token_cache_misses.inc();
        let first = jwt::verify(token, &self.keys.keys(), &self.policy);
        let result = match first {
            Err(Failure::UnknownKid) => {
                // Boxed: rare, and a cache hit would otherwise carry (and copy) its space.
                Box::pin(self.keys.refetch_for_unknown_kid()).await;
                jwt::verify(token, &self.keys.keys(), &self.policy)
            }
            other => other,
        };
        match result {
            Ok(verified) => {
                self.metrics.verification("ok");
                self.cache.insert(
                    digest,
                    verified.principal.clone(),
                    verified.expires_at,
                    now,
                    verified.kid,
                    verified.key_fingerprint,
                );
                Ok(verified.principal)
            }
            Err(Failure::UnknownKid) => {
                self.metrics.verification("refused");
                Err(Refusal::Invalid("unknown_kid"))
            }
            Err(Failure::Refused(refusal)) => {
                self.metrics.verification("refused");
                Err(refusal)
            }
        }
    }
}

/// Layer: 401 without a valid token, 403 without the required scopes; on success the request
/// carries the [`Principal`] and no longer carries the token.
pub async fn authenticate(
    auth: Arc<Authenticator>,
    mut request: Request,
    next: impl Next,
) -> Response {
    if auth.public_paths.iter().any(|p| p == request.uri().path()) {
        remove_credentials(request.headers_mut(), &auth.location);
        return next.run(request).await;
    }
    let verdict = match extract_token(request.headers(), &auth.location) {
        Ok(token) => auth.verify(token).await,
        Err(refusal) => Err(refusal),
    };
    let principal = match verdict {
        Ok(principal) => principal,
        Err(refusal) => {
            let id = RequestContext::id_of(&request);
            return GatewayError::Unauthenticated(refusal).into_response(&id);
        }
    };
    if !principal.has_scopes(&auth.required_scopes) {
        let id = RequestContext::id_of(&request);
        let mut response = GatewayError::Forbidden.into_response(&id);
        with_user(&mut response, &principal);
        return response;
    }
    remove_credentials(request.headers_mut(), &auth.location);
    if let Some(tally) = request.extensions().get::<Arc<Tally>>() {
        tally.set_user(&principal.user);
    }
    request.extensions_mut().insert(principal.clone());
    let mut response = next.run(request).await;
    with_user(&mut response, &principal);
    response
}

fn with_user(response: &mut Response, principal: &Principal) {
    match response.extensions_mut().get_mut::<Outcome>() {
        Some(outcome) => outcome.user = Some(principal.user.clone()),
        None => {
            response.extensions_mut().insert(Outcome {
                user: Some(principal.user.clone()),
                ..Outcome::default()
            });
        }
    }
}

/// Finds the token where `[auth]` says it is. Two candidates are refused, not chosen between.
fn extract_token<'a>(headers: &'a HeaderMap, location: &TokenLocation) -> Result<&'a str, Refusal> {
    let token: &[u8] = match location {
        TokenLocation::Authorization => {
            let value = single(headers, &header::AUTHORIZATION)?;
            let (scheme, rest) = split_scheme(value);
            if !scheme.eq_ignore_ascii_case(b"bearer") {
                return Err(Refusal::Invalid("not_bearer"));
            }
            rest.trim_ascii()
        }
        TokenLocation::Header(name) => {
            let value = single(headers, name)?;
            match split_scheme(value) {
                (scheme, rest) if scheme.eq_ignore_ascii_case(b"bearer") => rest.trim_ascii(),
                _ => value.trim_ascii(),
            }
        }
        TokenLocation::Cookie(name) => {
            let mut found = headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.trim().as_bytes());
            match (found.next(), found.next()) {
                (None, _) => return Err(Refusal::Missing),
                (Some(_), Some(_)) => return Err(Refusal::Invalid("duplicate_token")),
                (Some(v), None) => v,
            }
        }
    };
    if token.is_empty() {
        return Err(Refusal::Invalid("empty_token"));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Refusal::Invalid("token_too_large"));
    }
    // One table lookup a byte; what passes is ASCII, so it is also valid text.
    if !token.iter().all(|&b| TOKEN_BYTE[usize::from(b)]) {
        return Err(Refusal::Invalid("malformed"));
    }
    std::str::from_utf8(token).map_err(|_| Refusal::Invalid("malformed"))
}

/// The bytes a token may hold: base64url, the JWS separator `.`, and `=` padding.
static TOKEN_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'=');
        b += 1;
    }
    table
};

/// `scheme rest` split at the first space (the whole value and nothing when there is none).
fn split_scheme(value: &[u8]) -> (&[u8], &[u8]) {
    match memchr::memchr(b' ', value) {
        Some(at) => (
            value.get(..at).unwrap_or_default(),
            value.get(at + 1..).unwrap_or_default(),
        ),
        None => (value, &[]),
    }
}

fn single<'a>(headers: &'a HeaderMap, name: &header::HeaderName) -> Result<&'a [u8], Refusal> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Err(Refusal::Missing),
        (Some(_), Some(_)) => Err(Refusal::Invalid("duplicate_header")),
        (Some(v), None) => Ok(v.as_bytes()),
    }
}

/// Removes the client's credential so it never reaches the upstream.
fn remove_credentials(headers: &mut HeaderMap, location: &TokenLocation) {
    headers.remove(header::AUTHORIZATION);
    match location {
        TokenLocation::Authorization => {}
        TokenLocation::Header(name) => {
            headers.remove(name);
        }
        TokenLocation::Cookie(name) => {
            let kept: Vec<String> = headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .map(str::trim)
                .filter(|pair| pair.split_once('=').is_none_or(|(n, _)| n != name))
                .map(str::to_owned)
                .collect();
            headers.remove(header::COOKIE);
            if !kept.is_empty()
                && let Ok(value) = HeaderValue::from_str(&kept.join("; "))
            {
                headers.insert(header::COOKIE, value);
            }
        }
    }
}

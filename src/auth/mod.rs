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
pub mod mint;

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{BoxFuture, Either, Ready, ready};
use http::{HeaderMap, HeaderValue, header};
use tower::{Layer, Service};

use crate::api_keys::ApiKeys;
use crate::config::{AuthSettings, TokenLocation};
use crate::context::{RequestContext, Route};
use crate::error::GatewayError;
use crate::metrics::Metrics;
pub use crate::principal::Principal;
use crate::revocation::Revocations;
use crate::stage::{Request, Response, StageResult, take_ready};
use cache::TokenCache;
use jwks::KeyStore;
use jwt::{Failure, MAX_TOKEN_BYTES, Policy, Refusal};

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
    /// Whether JWTs are accepted (`algorithms` is set).
    jwt: bool,
    /// API keys, when `[auth.api_keys]` is set.
    api_keys: Option<Arc<ApiKeys>>,
    /// `[mcp] resource`: the audience a token must name on MCP endpoints (RFC 8707).
    mcp_resource: Option<Box<str>>,
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
            jwt: !settings.algorithms.is_empty(),
            api_keys: match &settings.api_keys {
                None => None,
                Some(path) => Some(Arc::new(ApiKeys::load(path)?)),
            },
            mcp_resource: None,
            metrics,
        })
    }

    /// On MCP endpoints, admits only tokens issued for `resource` (in their `aud`): a token
    /// meant for another service is not accepted here, even when signed by a trusted issuer.
    pub fn with_mcp_resource(mut self, resource: Option<&str>) -> Authenticator {
        self.mcp_resource = resource.map(Box::from);
        self
    }

    /// The key store (for readiness and the refresh task).
    pub fn key_store(&self) -> Arc<KeyStore> {
        self.keys.clone()
    }

    /// The revocation list, when one is configured (for the file watcher).
    pub fn revocations(&self) -> Option<Arc<Revocations>> {
        self.revocations.clone()
    }

    /// The API keys, when configured (for the file watcher).
    pub fn api_keys(&self) -> Option<Arc<ApiKeys>> {
        self.api_keys.clone()
    }

    /// Finds the request's credential: an API key in `x-api-key`, a bearer credential that is
    /// not a JWT (when API keys are configured), or a JWT where `[auth]` says it is.
    fn credential<'a>(&self, headers: &'a HeaderMap) -> Result<Credential<'a>, Refusal> {
        let Some(_) = &self.api_keys else {
            return extract_token(headers, &self.location).map(Credential::Jwt);
        };
        if headers.contains_key(&X_API_KEY) {
            if headers.contains_key(header::AUTHORIZATION) {
                return Err(Refusal::Invalid("duplicate_token"));
            }
            return extract_token(headers, &TokenLocation::Header(X_API_KEY.clone()))
                .map(Credential::ApiKey);
        }
        let token = extract_token(headers, &self.location)?;
        let jwt_shaped = token.bytes().filter(|b| *b == b'.').count() == 2;
        Ok(if self.jwt && jwt_shaped {
            Credential::Jwt(token)
        } else {
            Credential::ApiKey(token)
        })
    }

    /// The principal of an API key in force, unless revoked.
    fn verify_api_key(&self, key: &str) -> Result<Arc<Principal>, Refusal> {
        let principal = self
            .api_keys
            .as_ref()
            .and_then(|keys| keys.lookup(key))
            .ok_or(Refusal::Invalid("unknown_api_key"))?;
        self.unless_revoked(principal)
    }

    /// Verifies a token (from the cache when it was verified before) and refuses it when its id
    /// or subject is revoked; the revocation check runs on every request, cached or not. A token
    /// signed by a key id the key set lacks waits for one refetch of the key set.
    pub async fn verify(&self, token: &str) -> Result<Arc<Principal>, Refusal> {
        match self.verify_now(token) {
            Attempt::Done(result) => result,
            Attempt::UnknownKid => self.verify_after_refetch(token).await,
        }
    }

    /// Verifies a token with the keys in force now, without waiting.
    fn verify_now(&self, token: &str) -> Attempt {
        if token.len() > MAX_TOKEN_BYTES {
            return Attempt::Done(Err(Refusal::Invalid("token_too_large")));
        }
        let now = mint::unix_now();
        let digest = TokenCache::digest(token);
        {
            let keys = self.keys.keys();
            if let Some(principal) = self.cache.get(&digest, now, &keys) {
                self.metrics.token_cache_hits.inc();
                return Attempt::Done(self.unless_revoked(principal));
            }
        }
        self.metrics.token_cache_misses.inc();
        match jwt::verify(token, &self.keys.keys(), &self.policy) {
            Err(Failure::UnknownKid) => Attempt::UnknownKid,
            result => Attempt::Done(self.settle(result, digest, now)),
        }
    }

    /// The rare path: refetches the key set for an unknown key id, then verifies once more.
    async fn verify_after_refetch(&self, token: &str) -> Result<Arc<Principal>, Refusal> {
        self.keys.refetch_for_unknown_kid().await;
        let result = jwt::verify(token, &self.keys.keys(), &self.policy);
        self.settle(result, TokenCache::digest(token), mint::unix_now())
    }

    /// Counts, caches and checks against the revocation list a verification's result.
    fn settle(
        &self,
        result: Result<jwt::Verified, Failure>,
        digest: cache::TokenDigest,
        now: u64,
    ) -> Result<Arc<Principal>, Refusal> {
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
                self.unless_revoked(verified.principal)
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

    fn unless_revoked(&self, principal: Arc<Principal>) -> Result<Arc<Principal>, Refusal> {
        if self
            .revocations
            .as_ref()
            .is_some_and(|r| r.refuses(&principal))
        {
            return Err(Refusal::Revoked);
        }
        Ok(principal)
    }

    /// Admits a request whose token gave `verdict`: 401 or 403, or the request without its
    /// credential and with its principal in the context.
    fn admit(
        &self,
        request: &mut Request,
        verdict: Result<Arc<Principal>, Refusal>,
    ) -> Result<(), GatewayError> {
        let principal = verdict.map_err(GatewayError::Unauthenticated)?;
        let context = RequestContext::of_mut(request);
        if let (Some(resource), Some(context)) = (&self.mcp_resource, context.as_ref())
            && context.route == Route::Mcp
            && !principal.issued_for(resource)
        {
            context.facts.set_user(&principal.user);
            return Err(GatewayError::Unauthenticated(Refusal::Invalid(
                "wrong_audience",
            )));
        }
        if !principal.has_scopes(&self.required_scopes) {
            if let Some(context) = context {
                context.facts.set_user(&principal.user);
            }
            return Err(GatewayError::Forbidden);
        }
        if let Some(context) = context {
            context.set_principal(principal);
        }
        remove_credentials(
            request.headers_mut(),
            &self.location,
            self.api_keys.is_some(),
        );
        Ok(())
    }
}

/// A credential as presented.
enum Credential<'a> {
    /// A JWT.
    Jwt(&'a str),
    /// An API key.
    ApiKey(&'a str),
}

/// The header the Anthropic SDK sends its key in.
static X_API_KEY: http::HeaderName = http::HeaderName::from_static("x-api-key");

/// A verification with the keys in force now.
enum Attempt {
    /// Decided: the principal, or why the token is refused.
    Done(Result<Arc<Principal>, Refusal>),
    /// The token names a key id the key set lacks: a refetch may find it.
    UnknownKid,
}

/// Layer: 401 without a valid token, 403 without the required scopes; on success the request
/// carries the [`Principal`] in its context and no longer carries the token.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
}

impl AuthLayer {
    /// The layer for `auth`.
    pub fn new(auth: Arc<Authenticator>) -> AuthLayer {
        AuthLayer { auth }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Authenticate<S> {
        Authenticate {
            auth: self.auth.clone(),
            inner,
        }
    }
}

/// The service of [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct Authenticate<S> {
    auth: Arc<Authenticator>,
    inner: S,
}

impl<S> Service<Request> for Authenticate<S>
where
    S: Service<Request, Response = Response, Error = GatewayError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = GatewayError;
    type Future = Either<Ready<StageResult>, Either<S::Future, BoxFuture<'static, StageResult>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let auth = &self.auth;
        if auth.public_paths.iter().any(|p| p == request.uri().path()) {
            remove_credentials(
                request.headers_mut(),
                &auth.location,
                auth.api_keys.is_some(),
            );
            return Either::Right(Either::Left(self.inner.call(request)));
        }
        let attempt = match auth.credential(request.headers()) {
            Ok(Credential::Jwt(token)) => match auth.verify_now(token) {
                Attempt::Done(verdict) => Ok(verdict),
                Attempt::UnknownKid => Err(token.to_owned()),
            },
            Ok(Credential::ApiKey(key)) => Ok(auth.verify_api_key(key)),
            Err(refusal) => Ok(Err(refusal)),
        };
        match attempt {
            Ok(verdict) => match auth.admit(&mut request, verdict) {
                Ok(()) => Either::Right(Either::Left(self.inner.call(request))),
                Err(refusal) => Either::Left(ready(Err(refusal))),
            },
            Err(token) => {
                // Boxed: a key rotation's first tokens only.
                let auth = auth.clone();
                let mut inner = take_ready(&mut self.inner);
                Either::Right(Either::Right(Box::pin(async move {
                    let verdict = auth.verify_after_refetch(&token).await;
                    auth.admit(&mut request, verdict)?;
                    inner.call(request).await
                })))
            }
        }
    }
}

/// Finds the token where `[auth]` says it is. Two candidates are refused, not chosen between.
fn extract_token<'a>(headers: &'a HeaderMap, location: &TokenLocation) -> Result<&'a str, Refusal> {
    let token: &[u8] = match location {
        TokenLocation::Authorization => {
            let subprotocol = subprotocol_token(headers)?;
            match (single(headers, &header::AUTHORIZATION), subprotocol) {
                // A browser's WebSocket cannot set headers: its token rides in the offered
                // subprotocols.
                (Err(Refusal::Missing), Some(token)) => token,
                (Err(refusal), _) => return Err(refusal),
                (Ok(_), Some(_)) => return Err(Refusal::Invalid("duplicate_token")),
                (Ok(value), None) => {
                    let (scheme, rest) = split_scheme(value);
                    if !scheme.eq_ignore_ascii_case(b"bearer") {
                        return Err(Refusal::Invalid("not_bearer"));
                    }
                    rest.trim_ascii()
                }
            }
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
    // What passes is ASCII, so it is also valid text.
    if !token_bytes(token) {
        return Err(Refusal::Invalid("malformed"));
    }
    std::str::from_utf8(token).map_err(|_| Refusal::Invalid("malformed"))
}

/// The prefix of the `Sec-WebSocket-Protocol` entry that carries a token.
pub const SUBPROTOCOL_TOKEN_PREFIX: &str = "portcullis.bearer.";

/// The token of a `portcullis.bearer.<token>` entry among the offered WebSocket subprotocols;
/// two such entries are refused.
fn subprotocol_token(headers: &HeaderMap) -> Result<Option<&[u8]>, Refusal> {
    let mut found = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|entry| entry.trim().strip_prefix(SUBPROTOCOL_TOKEN_PREFIX));
    match (found.next(), found.next()) {
        (None, _) => Ok(None),
        (Some(_), Some(_)) => Err(Refusal::Invalid("duplicate_token")),
        (Some(token), None) => Ok(Some(token.as_bytes())),
    }
}

/// Removes `portcullis.bearer.*` entries from the offered subprotocols (the header goes when
/// nothing else is offered), so the token is never forwarded.
pub fn remove_subprotocol_token(headers: &mut HeaderMap) {
    if !headers.contains_key(header::SEC_WEBSOCKET_PROTOCOL) {
        return;
    }
    let kept: Vec<String> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|entry| !entry.is_empty() && !entry.starts_with(SUBPROTOCOL_TOKEN_PREFIX))
        .map(str::to_owned)
        .collect();
    headers.remove(header::SEC_WEBSOCKET_PROTOCOL);
    if !kept.is_empty()
        && let Ok(value) = HeaderValue::from_str(&kept.join(", "))
    {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, value);
    }
}

/// Whether every byte of `token` is one a token may hold: base64url, the JWS separator `.`,
/// and `=` padding. A fold without an early exit, of comparisons only, which the compiler turns
/// into vector instructions (a table lookup a byte, or `all`, stays a byte at a time: about 5
/// instructions a byte of a 400-byte token, on every request).
fn token_bytes(token: &[u8]) -> bool {
    token.iter().fold(true, |ok, &c| {
        let letter = (c | 0x20).wrapping_sub(b'a') < 26;
        let digit = c.wrapping_sub(b'0') < 10;
        ok & (letter | digit | (c == b'-') | (c == b'_') | (c == b'.') | (c == b'='))
    })
}

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
fn remove_credentials(headers: &mut HeaderMap, location: &TokenLocation, api_keys: bool) {
    headers.remove(header::AUTHORIZATION);
    remove_subprotocol_token(headers);
    if api_keys {
        headers.remove(&X_API_KEY);
    }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use jsonwebtoken::{Algorithm, EncodingKey};
    use tower::{Layer, ServiceExt};

    use super::{AuthLayer, Authenticator};
    use crate::config::auth::{DEFAULT_CACHE_CAPACITY, DEFAULT_CACHE_MAX_TTL, DEFAULT_LEEWAY};
    use crate::config::{AuthSettings, TokenLocation};
    use crate::context::RequestContext;
    use crate::error::GatewayError;
    use crate::metrics::Metrics;
    use crate::outcome::Refusal;
    use crate::secret::Secret;
    use crate::stage::test_support::{recording, request};

    const SECRET: &[u8] = b"a test secret of thirty-two bytes!!";

    fn layer(required_scopes: &[&str]) -> AuthLayer {
        let secret = Secret::from_bytes(SECRET.to_vec()).unwrap();
        let key = crate::keys::hmac_key("k1", &secret, &[Algorithm::HS256]).unwrap();
        let settings = AuthSettings {
            algorithms: vec![Algorithm::HS256],
            issuer: None,
            audiences: Vec::new(),
            leeway: DEFAULT_LEEWAY,
            user_claim: "sub".to_owned(),
            required_scopes: required_scopes.iter().map(|s| (*s).to_owned()).collect(),
            static_keys: vec![Arc::new(key)],
            jwks_url: None,
            forward_claims: Vec::new(),
            token_location: TokenLocation::Authorization,
            public_paths: vec!["/public".to_owned()],
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            cache_max_ttl: DEFAULT_CACHE_MAX_TTL,
            retained_claims: Vec::new(),
            api_keys: None,
            revocation_file: None,
        };
        AuthLayer::new(Arc::new(
            Authenticator::new(&settings, Arc::new(Metrics::new())).unwrap(),
        ))
    }

    fn token(scopes: &[&str]) -> String {
        super::mint::mint(
            &EncodingKey::from_secret(SECRET),
            &super::mint::TokenRequest {
                algorithm: Algorithm::HS256,
                kid: Some("k1".to_owned()),
                subject: "alice".to_owned(),
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                ttl: Duration::from_secs(60),
                issuer: None,
                audience: None,
            },
        )
        .unwrap()
    }

    fn with_token(path: &str, token: &str) -> crate::stage::Request {
        let mut request = request("GET", path, "");
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    }

    #[test]
    fn token_bytes_are_base64url_dots_and_padding() {
        for byte in 0..=255u8 {
            let allowed = byte.is_ascii_alphanumeric() || b"-_.=".contains(&byte);
            // Alone, and at every position of a long token (the vectorised body and its tail).
            assert_eq!(super::token_bytes(&[byte]), allowed, "byte {byte}");
            for at in [0, 17, 31, 32, 399] {
                let mut token = b"eyJhbGciOiJFUzI1NiJ9.".repeat(20);
                token[at] = byte;
                assert_eq!(super::token_bytes(&token), allowed, "byte {byte} at {at}");
            }
        }
        assert!(super::token_bytes(b""));
    }
    #[tokio::test]
    async fn a_valid_token_becomes_the_principal_and_never_travels_on() {
        let (inner, seen) = recording("ok");
        let checked = tower::service_fn(move |request: crate::stage::Request| {
            let user = RequestContext::of(&request)
                .and_then(|c| c.principal.as_ref())
                .map(|p| p.user.to_string());
            assert_eq!(user.as_deref(), Some("alice"));
            inner.clone().oneshot(request)
        });
        let response = layer(&["agent:use"])
            .layer(checked)
            .oneshot(with_token("/x", &token(&["agent:use"])))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            seen.lock().unwrap()[0]
                .headers
                .get("authorization")
                .is_none()
        );
    }

    #[tokio::test]
    async fn each_refusal_is_its_error_and_nothing_goes_on() {
        let (inner, seen) = recording("ok");
        let layer = layer(&["agent:use"]);
        let missing = layer
            .layer(inner.clone())
            .oneshot(request("GET", "/x", ""))
            .await;
        assert!(matches!(
            missing,
            Err(GatewayError::Unauthenticated(Refusal::Missing))
        ));
        let forged = format!("{}x", token(&["agent:use"]));
        let forged = layer
            .layer(inner.clone())
            .oneshot(with_token("/x", &forged))
            .await;
        assert!(matches!(
            forged,
            Err(GatewayError::Unauthenticated(Refusal::Invalid(_)))
        ));
        let scopeless = layer
            .layer(inner.clone())
            .oneshot(with_token("/x", &token(&[])))
            .await;
        assert!(matches!(scopeless, Err(GatewayError::Forbidden)));
        assert!(seen.lock().unwrap().is_empty());
        // A public path needs no token, and loses any it carries.
        let public = layer
            .layer(inner)
            .oneshot(with_token("/public", "whatever"))
            .await
            .unwrap();
        assert_eq!(public.status(), 200);
        assert!(
            seen.lock().unwrap()[0]
                .headers
                .get("authorization")
                .is_none()
        );
    }
}

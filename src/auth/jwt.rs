//! Verifying one JWT: structure, header, key, signature, claims.
//!
//! Guards against the known JWT attacks: `alg: none` and algorithms outside the allow-list are
//! refused before any key is touched; a key is only used with its own algorithms (no RSA-as-HMAC
//! confusion); `jku`, `x5u`, `jwk` and `x5c` headers are never used to find keys; an unknown `crit`
//! extension is refused; `exp` is required, and `nbf`, `iss` and `aud` are enforced with `leeway`.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use crate::keys::{KeySet, Lookup, VerifyingKey};
use crate::principal::{Principal, X_PORTCULLIS_SCOPES, X_PORTCULLIS_USER};

/// Tokens longer than this are refused without being parsed.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

pub use crate::outcome::Refusal;

/// The verification outcome before the cache: a refusal, or a key id the key set lacks.
#[derive(Debug)]
pub enum Failure {
    /// The token is refused.
    Refused(Refusal),
    /// The token names a key id the key set does not have (a refetch may find it).
    UnknownKid,
}

/// A verified token.
#[derive(Debug)]
pub struct Verified {
    /// The identity it carries.
    pub principal: Arc<Principal>,
    /// Its `exp`, seconds since the epoch.
    pub expires_at: u64,
    /// The key id that verified it.
    pub kid: Option<String>,
    /// The fingerprint of the key that verified it.
    pub key_fingerprint: [u8; 32],
}

/// What a token must satisfy, built once from `[auth]`.
#[derive(Debug)]
pub struct Policy {
    allowed: Vec<Algorithm>,
    validations: HashMap<Algorithm, Validation>,
    user_claim: String,
    forward_claims: Vec<(String, HeaderName)>,
    retained_claims: Vec<String>,
}

impl Policy {
    /// Builds the per-algorithm validations.
    pub fn new(
        allowed: &[Algorithm],
        issuer: Option<&str>,
        audiences: &[String],
        leeway_secs: u64,
        user_claim: &str,
        forward_claims: Vec<(String, HeaderName)>,
        retained_claims: Vec<String>,
    ) -> Policy {
        let validations = allowed
            .iter()
            .map(|alg| {
                let mut v = Validation::new(*alg);
                v.leeway = leeway_secs;
                v.validate_exp = true;
                v.validate_nbf = true;
                let mut required = vec!["exp"];
                if let Some(iss) = issuer {
                    v.set_issuer(&[iss]);
                    required.push("iss");
                }
                if audiences.is_empty() {
                    v.validate_aud = false;
                } else {
                    v.set_audience(audiences);
                    required.push("aud");
                }
                v.set_required_spec_claims(&required);
                (*alg, v)
            })
            .collect();
        Policy {
            allowed: allowed.to_vec(),
            validations,
            user_claim: user_claim.to_owned(),
            forward_claims,
            retained_claims,
        }
    }
}

/// Verifies `token` against `keys` under `policy`.
pub fn verify(token: &str, keys: &KeySet, policy: &Policy) -> Result<Verified, Failure> {
    let refuse = |reason| Err(Failure::Refused(Refusal::Invalid(reason)));
    if token.len() > MAX_TOKEN_BYTES {
        return refuse("token_too_large");
    }
    if token.split('.').count() != 3 {
        return refuse("malformed");
    }
    // An unknown `alg` (including every casing of "none") fails to parse here.
    let Ok(header) = jsonwebtoken::decode_header(token) else {
        return refuse("malformed_header");
    };
    if header.crit.is_some() {
        return refuse("unsupported_crit");
    }
    if !policy.allowed.contains(&header.alg) {
        return refuse("algorithm_not_allowed");
    }
    let key: Arc<VerifyingKey> = match keys.find(header.kid.as_deref(), header.alg) {
        Lookup::Found(key) => key,
        Lookup::UnknownKid => return Err(Failure::UnknownKid),
        Lookup::NoKeyFor => return refuse("no_key_for_token"),
    };
    if !key.algorithms.contains(&header.alg) {
        return refuse("algorithm_key_mismatch");
    }
    let Some(validation) = policy.validations.get(&header.alg) else {
        return refuse("algorithm_not_allowed");
    };
    let claims = match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation) {
        Ok(data) => data.claims,
        Err(e) => {
            return Err(Failure::Refused(match e.kind() {
                ErrorKind::ExpiredSignature => Refusal::Expired,
                ErrorKind::ImmatureSignature => Refusal::Invalid("not_yet_valid"),
                ErrorKind::InvalidIssuer => Refusal::Invalid("wrong_issuer"),
                ErrorKind::InvalidAudience => Refusal::Invalid("wrong_audience"),
                ErrorKind::MissingRequiredClaim(_) => Refusal::Invalid("missing_claim"),
                ErrorKind::InvalidSignature => Refusal::Invalid("bad_signature"),
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    Refusal::Invalid("algorithm_not_allowed")
                }
                _ => Refusal::Invalid("malformed"),
            }));
        }
    };
    let Some(expires_at) = claims.get("exp").and_then(Value::as_u64) else {
        return refuse("missing_claim");
    };
    let principal =
        principal_from(&claims, policy).map_err(|r| Failure::Refused(Refusal::Invalid(r)))?;
    Ok(Verified {
        principal: Arc::new(principal),
        expires_at,
        kid: key.kid.clone(),
        key_fingerprint: key.fingerprint,
    })
}

fn principal_from(claims: &Map<String, Value>, policy: &Policy) -> Result<Principal, &'static str> {
    let user: Arc<str> = match claims.get(&policy.user_claim) {
        Some(Value::String(s)) if !s.is_empty() => s.as_str().into(),
        Some(Value::Number(n)) => n.to_string().into(),
        _ => return Err("missing_user_claim"),
    };
    let scopes: Vec<String> = match (claims.get("scope"), claims.get("scp")) {
        (Some(Value::String(s)), _) => s.split_whitespace().map(str::to_owned).collect(),
        (_, Some(Value::Array(a))) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        (_, Some(Value::String(s))) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    };
    let mut identity_headers = Vec::with_capacity(2 + policy.forward_claims.len());
    identity_headers.push((X_PORTCULLIS_USER.clone(), header_value(&user)?));
    if !scopes.is_empty() {
        identity_headers.push((
            X_PORTCULLIS_SCOPES.clone(),
            header_value(&scopes.join(" "))?,
        ));
    }
    for (claim, header) in &policy.forward_claims {
        let text = match claims.get(claim) {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        identity_headers.push((header.clone(), header_value(&text)?));
    }
    let retained = policy
        .retained_claims
        .iter()
        .filter_map(|name| {
            let text = match claims.get(name)? {
                Value::String(s) => s.clone(),
                Value::Null => return None,
                other => other.to_string(),
            };
            Some((name.clone(), text))
        })
        .collect();
    let text_claim = |name: &str| match claims.get(name) {
        Some(Value::String(s)) => Some(s.as_str().into()),
        _ => None,
    };
    Ok(Principal {
        user,
        scopes,
        identity_headers,
        claims: retained,
        subject: text_claim("sub"),
        token_id: text_claim("jti"),
        audiences: Some(match claims.get("aud") {
            Some(Value::String(s)) => Box::new([s.as_str().into()]),
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(Box::from).collect(),
            _ => Box::new([]),
        }),
    })
}

/// A claim value as a header value (UTF-8 bytes pass as they are); control characters, which
/// could split or forge headers, refuse it.
fn header_value(text: &str) -> Result<HeaderValue, &'static str> {
    if text.chars().any(char::is_control) {
        return Err("claim_not_forwardable");
    }
    HeaderValue::from_bytes(text.as_bytes()).map_err(|_| "claim_not_forwardable")
}

//! Verification keys and the key set tokens are checked against.
//!
//! Guards against key confusion: every key carries the algorithms it may verify, decided by its
//! own type (an RSA key never verifies an HMAC token, an HMAC secret never a signature), narrowed
//! by the configured allow-list. Symmetric keys are never taken from a JWK set, and keys meant for
//! encryption are ignored.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use sha2::{Digest, Sha256};

use crate::secret::Secret;

/// The RSA algorithms an RSA key without an `alg` may verify.
const RSA_FAMILY: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
/// The HMAC algorithms a shared secret may verify.
const HMAC_FAMILY: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
/// Shortest accepted HMAC secret (RFC 7518 §3.2: at least the hash size; 32 bytes for HS256).
pub const MIN_HMAC_SECRET_BYTES: usize = 32;

/// One key and what it may verify.
pub struct VerifyingKey {
    /// The key id tokens name in their `kid` header.
    pub kid: Option<String>,
    /// The key material.
    pub key: DecodingKey,
    /// Algorithms this key may verify: its own type's, within the allow-list.
    pub algorithms: Vec<Algorithm>,
    /// SHA-256 of the key material: stable across refreshes, changes when the key does.
    pub fingerprint: [u8; 32],
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// The result of looking a token's key up.
#[derive(Debug)]
pub enum Lookup {
    /// The key to verify with.
    Found(Arc<VerifyingKey>),
    /// The token names a key id the set does not have.
    UnknownKid,
    /// The token names no key id and no single key fits its algorithm.
    NoKeyFor,
}

/// All keys in force, by key id.
#[derive(Debug, Default)]
pub struct KeySet {
    by_kid: HashMap<String, Arc<VerifyingKey>>,
    without_kid: Vec<Arc<VerifyingKey>>,
}

impl KeySet {
    /// Builds a set; when two keys share a key id, the first one wins.
    pub fn new(keys: impl IntoIterator<Item = Arc<VerifyingKey>>) -> KeySet {
        let mut set = KeySet::default();
        for key in keys {
            match &key.kid {
                Some(kid) => {
                    if set.by_kid.contains_key(kid) {
                        tracing::warn!(kid, "two keys share one key id; keeping the first");
                    } else {
                        set.by_kid.insert(kid.clone(), key);
                    }
                }
                None => set.without_kid.push(key),
            }
        }
        set
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.by_kid.len() + self.without_kid.len()
    }

    /// Whether the set has no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Finds the key for a token's `kid` and `alg`. Without a `kid`, a key is used only when it is
    /// the one key that may verify `alg`: keys are never tried one after another.
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Lookup {
        match kid {
            Some(kid) => match self.by_kid.get(kid) {
                Some(key) => Lookup::Found(key.clone()),
                None => Lookup::UnknownKid,
            },
            None => {
                let mut fitting = self
                    .without_kid
                    .iter()
                    .chain(self.by_kid.values())
                    .filter(|k| k.algorithms.contains(&alg));
                match (fitting.next(), fitting.next()) {
                    (Some(key), None) => Lookup::Found(key.clone()),
                    _ => Lookup::NoKeyFor,
                }
            }
        }
    }

    /// Whether the key that verified a cached token is still in force, unchanged.
    pub fn still_has(&self, kid: Option<&str>, fingerprint: &[u8; 32]) -> bool {
        match kid {
            Some(kid) => self
                .by_kid
                .get(kid)
                .is_some_and(|k| &k.fingerprint == fingerprint),
            None => self
                .without_kid
                .iter()
                .chain(self.by_kid.values())
                .any(|k| &k.fingerprint == fingerprint),
        }
    }
}

/// Builds the key for an HMAC secret, allowed the HS algorithms of the allow-list.
pub fn hmac_key(kid: &str, secret: &Secret, allowed: &[Algorithm]) -> Result<VerifyingKey, String> {
    if secret.len() < MIN_HMAC_SECRET_BYTES {
        return Err(format!(
            "the secret is shorter than {MIN_HMAC_SECRET_BYTES} bytes, too weak for HMAC"
        ));
    }
    let algorithms = intersect(&HMAC_FAMILY, allowed);
    if algorithms.is_empty() {
        return Err("auth.algorithms allows no HS256/HS384/HS512 for this HMAC key".to_owned());
    }
    Ok(VerifyingKey {
        kid: Some(kid.to_owned()),
        key: DecodingKey::from_secret(secret.expose()),
        algorithms,
        fingerprint: Sha256::new()
            .chain_update(b"oct:")
            .chain_update(kid.as_bytes())
            .chain_update(secret.expose())
            .finalize()
            .into(),
    })
}

/// Parses a JWK set and keeps the usable verification keys; returns how many were skipped.
pub fn keys_from_jwks(
    json: &[u8],
    allowed: &[Algorithm],
) -> Result<(Vec<Arc<VerifyingKey>>, usize), String> {
    let set: JwkSet =
        serde_json::from_slice(json).map_err(|_| "not a valid JWK set document".to_owned())?;
    let mut keys = Vec::with_capacity(set.keys.len());
    let mut skipped = 0;
    for jwk in &set.keys {
        match key_from_jwk(jwk, allowed) {
            Some(key) => keys.push(Arc::new(key)),
            None => skipped += 1,
        }
    }
    Ok((keys, skipped))
}

fn key_from_jwk(jwk: &Jwk, allowed: &[Algorithm]) -> Option<VerifyingKey> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let by_type: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::RSA(_) => RSA_FAMILY.to_vec(),
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            vec![Algorithm::EdDSA]
        }
        // Shared secrets do not belong in a published key set; other types are not signing keys.
        _ => return None,
    };
    let own = match jwk.common.key_algorithm {
        None => by_type,
        Some(declared) => {
            let declared = Algorithm::from_str(&declared.to_string()).ok()?;
            if !by_type.contains(&declared) {
                return None;
            }
            vec![declared]
        }
    };
    let algorithms = intersect(&own, allowed);
    if algorithms.is_empty() {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    let material = serde_json::to_vec(&jwk.algorithm).ok()?;
    Some(VerifyingKey {
        kid: jwk.common.key_id.clone(),
        key,
        algorithms,
        fingerprint: Sha256::digest(&material).into(),
    })
}

fn intersect(own: &[Algorithm], allowed: &[Algorithm]) -> Vec<Algorithm> {
    own.iter()
        .copied()
        .filter(|a| allowed.contains(a))
        .collect()
}

//! Minting tokens for local testing: `portcullis token` and dev mode. Never used on a request path.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, AlgorithmFamily, EncodingKey, Header};
use serde_json::{Map, Value, json};

/// What to put in a test token.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// Signature algorithm.
    pub algorithm: Algorithm,
    /// `kid` header.
    pub kid: Option<String>,
    /// `sub` claim.
    pub subject: String,
    /// `scope` claim (space-separated); omitted when empty.
    pub scopes: Vec<String>,
    /// Lifetime from now.
    pub ttl: Duration,
    /// `iss` claim.
    pub issuer: Option<String>,
    /// `aud` claim.
    pub audience: Option<String>,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Signs a token for `request` with `key`.
pub fn mint(key: &EncodingKey, request: &TokenRequest) -> Result<String, String> {
    let now = unix_now();
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(request.subject));
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(now + request.ttl.as_secs()));
    if !request.scopes.is_empty() {
        claims.insert("scope".into(), json!(request.scopes.join(" ")));
    }
    if let Some(iss) = &request.issuer {
        claims.insert("iss".into(), json!(iss));
    }
    if let Some(aud) = &request.audience {
        claims.insert("aud".into(), json!(aud));
    }
    let mut header = Header::new(request.algorithm);
    header.kid = request.kid.clone();
    jsonwebtoken::encode(&header, &Value::Object(claims), key)
        .map_err(|e| format!("cannot sign ({e})"))
}

/// Reads a signing key: a PEM private key for RSA, EC and EdDSA, the raw secret for HMAC.
pub fn signing_key_from_file(path: &Path, algorithm: Algorithm) -> Result<EncodingKey, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read {} ({})", path.display(), e.kind()))?;
    let key = match algorithm.family() {
        AlgorithmFamily::Hmac => {
            let secret = crate::secret::Secret::from_bytes(bytes)
                .ok_or_else(|| format!("{} is empty", path.display()))?;
            Ok(EncodingKey::from_secret(secret.expose()))
        }
        AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(&bytes),
        AlgorithmFamily::Ec => EncodingKey::from_ec_pem(&bytes),
        AlgorithmFamily::Ed => EncodingKey::from_ed_pem(&bytes),
    };
    key.map_err(|_| {
        format!(
            "{} is not a PEM private key for {algorithm:?}",
            path.display()
        )
    })
}

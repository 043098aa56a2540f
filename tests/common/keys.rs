//! Signing keys made at test time (ES256, RS256, PS256, EdDSA, HS256) and token forging helpers.

use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

pub const ISSUER: &str = "https://issuer.test/";
pub const AUDIENCE: &str = "agent-api";

/// A key pair (or secret) able to sign tokens, with its public JWK.
pub struct TestKey {
    pub alg: Algorithm,
    pub kid: String,
    pub encoding: EncodingKey,
    /// The public JWK (`None` for HMAC).
    pub jwk: Option<Value>,
    /// PEM of the public key (RSA only: used to forge key-confusion tokens).
    pub public_pem: Option<String>,
    /// PEM of the private key (written to files for `portcullis token`).
    pub private_pem: Option<String>,
    /// The raw secret (HMAC only).
    pub secret: Option<Vec<u8>>,
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// One RSA key for the whole test run: generating 2048-bit keys is slow.
static RSA: LazyLock<aws_lc_rs::rsa::KeyPair> =
    LazyLock::new(|| aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap());

impl TestKey {
    pub fn es256(kid: &str) -> TestKey {
        let pkcs8 = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .unwrap()
            .to_pkcs8v1()
            .unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let point = pair.public_key().as_ref();
        TestKey {
            alg: Algorithm::ES256,
            kid: kid.to_owned(),
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk: Some(
                json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
                             "x": b64(&point[1..33]), "y": b64(&point[33..65])}),
            ),
            public_pem: None,
            private_pem: Some(pem("PRIVATE KEY", pkcs8.as_ref())),
            secret: None,
        }
    }

    fn rsa(kid: &str, alg: Algorithm) -> TestKey {
        let pkcs8 = RSA.as_der().unwrap();
        let private_pem = pem("PRIVATE KEY", pkcs8.as_ref());
        let public = RSA.public_key();
        let spki = public.as_der().unwrap();
        TestKey {
            alg,
            kid: kid.to_owned(),
            encoding: EncodingKey::from_rsa_pem(private_pem.as_bytes()).unwrap(),
            jwk: Some(json!({"kty": "RSA", "kid": kid, "use": "sig",
                             "n": b64(public.modulus().big_endian_without_leading_zero()),
                             "e": b64(public.exponent().big_endian_without_leading_zero())})),
            public_pem: Some(pem("PUBLIC KEY", spki.as_ref())),
            private_pem: Some(private_pem),
            secret: None,
        }
    }

    pub fn rs256(kid: &str) -> TestKey {
        Self::rsa(kid, Algorithm::RS256)
    }

    pub fn ps256(kid: &str) -> TestKey {
        Self::rsa(kid, Algorithm::PS256)
    }

    pub fn eddsa(kid: &str) -> TestKey {
        let pkcs8 = Ed25519KeyPair::generate().unwrap().to_pkcs8().unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        TestKey {
            alg: Algorithm::EdDSA,
            kid: kid.to_owned(),
            encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
            jwk: Some(
                json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig",
                             "x": b64(pair.public_key().as_ref())}),
            ),
            public_pem: None,
            private_pem: Some(pem("PRIVATE KEY", pkcs8.as_ref())),
            secret: None,
        }
    }

    pub fn hs256(kid: &str) -> TestKey {
        // Secrets are text (as written to files and environment variables): 32 random bytes, hex.
        let mut random = [0u8; 32];
        SystemRandom::new().fill(&mut random).unwrap();
        let secret: Vec<u8> = random
            .iter()
            .flat_map(|b| format!("{b:02x}").into_bytes())
            .collect();
        TestKey {
            alg: Algorithm::HS256,
            kid: kid.to_owned(),
            encoding: EncodingKey::from_secret(&secret),
            jwk: None,
            public_pem: None,
            private_pem: None,
            secret: Some(secret),
        }
    }

    pub fn header(&self) -> Header {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        header
    }

    /// Signs `claims` with this key's algorithm and kid.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with(&self.header(), claims)
    }

    pub fn sign_with(&self, header: &Header, claims: &Value) -> String {
        jsonwebtoken::encode(header, claims, &self.encoding).unwrap()
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims that satisfy the test policy: issuer, audience, an hour of life.
pub fn claims(sub: &str) -> Value {
    json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": now(), "exp": now() + 3600})
}

/// A JWK set document holding the public keys.
pub fn jwks(keys: &[&TestKey]) -> String {
    json!({"keys": keys.iter().filter_map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

/// Builds a token from raw JSON header and claims and a raw signature segment.
pub fn forge(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        signature
    )
}

/// HMAC-SHA256 of `message` with `secret`, base64url: for forged HS256 tokens.
pub fn hs256_signature(secret: &[u8], message: &str) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    b64(aws_lc_rs::hmac::sign(&key, message.as_bytes()).as_ref())
}

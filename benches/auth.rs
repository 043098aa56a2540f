//! Token verification cost per algorithm, uncached (signature and claims) and cached.
//!
//! Run with `cargo bench --bench auth`. Keys are generated at run time.

// A benchmark: setup failures abort the run with their reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis::auth::Authenticator;
use portcullis::auth::jwt::{Policy, verify};
use portcullis::config::{AuthSettings, TokenLocation};
use portcullis::keys::{KeySet, hmac_key, keys_from_jwks};
use portcullis::metrics::Metrics;
use portcullis::secret::Secret;
use serde_json::json;

const ALGORITHMS: [Algorithm; 5] = [
    Algorithm::ES256,
    Algorithm::RS256,
    Algorithm::PS256,
    Algorithm::EdDSA,
    Algorithm::HS256,
];

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Signing keys for every algorithm and the JWK set / HMAC secret that verify them.
struct Fixture {
    signers: Vec<(Algorithm, EncodingKey)>,
    jwks: String,
    secret: Secret,
}

fn fixture() -> Fixture {
    let ec = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("P-256 key");
    let ec_pkcs8 = ec.to_pkcs8v1().expect("PKCS#8");
    let point = ec.public_key().as_ref().to_vec();
    let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("RSA key");
    let rsa_pem = format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        STANDARD.encode(rsa.as_der().expect("PKCS#8").as_ref()),
        label = "PRIVATE KEY",
    );
    let ed_pkcs8 = Ed25519KeyPair::generate()
        .expect("Ed25519 key")
        .to_pkcs8()
        .expect("PKCS#8");
    let ed = Ed25519KeyPair::from_pkcs8(ed_pkcs8.as_ref()).expect("Ed25519 key");
    let secret = vec![7u8; 32];
    let public = rsa.public_key();
    let jwks = json!({"keys": [
        {"kty": "EC", "crv": "P-256", "kid": "ES256", "x": b64(&point[1..33]), "y": b64(&point[33..65])},
        {"kty": "RSA", "kid": "RS256", "alg": "RS256",
         "n": b64(public.modulus().big_endian_without_leading_zero()),
         "e": b64(public.exponent().big_endian_without_leading_zero())},
        {"kty": "RSA", "kid": "PS256", "alg": "PS256",
         "n": b64(public.modulus().big_endian_without_leading_zero()),
         "e": b64(public.exponent().big_endian_without_leading_zero())},
        {"kty": "OKP", "crv": "Ed25519", "kid": "EdDSA", "x": b64(ed.public_key().as_ref())},
    ]})
    .to_string();
    Fixture {
        signers: vec![
            (
                Algorithm::ES256,
                EncodingKey::from_ec_der(ec_pkcs8.as_ref()),
            ),
            (
                Algorithm::RS256,
                EncodingKey::from_rsa_pem(rsa_pem.as_bytes()).expect("RSA PEM"),
            ),
            (
                Algorithm::PS256,
                EncodingKey::from_rsa_pem(rsa_pem.as_bytes()).expect("RSA PEM"),
            ),
            (
                Algorithm::EdDSA,
                EncodingKey::from_ed_der(ed_pkcs8.as_ref()),
            ),
            (Algorithm::HS256, EncodingKey::from_secret(&secret)),
        ],
        jwks,
        secret: Secret::from_bytes(secret).expect("secret"),
    }
}

fn token(signer: &EncodingKey, alg: Algorithm, sub: &str) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(format!("{alg:?}"));
    let now = jsonwebtoken::get_current_timestamp();
    let claims = json!({"sub": sub, "iss": "https://issuer.test/", "aud": "agent-api",
                        "scope": "agent:use", "iat": now, "exp": now + 3600});
    jsonwebtoken::encode(&header, &claims, signer).expect("token")
}

fn bench_verification(c: &mut Criterion) {
    let f = fixture();
    let (mut keys, _) = keys_from_jwks(f.jwks.as_bytes(), &ALGORITHMS).expect("JWK set");
    keys.push(Arc::new(
        hmac_key("HS256", &f.secret, &ALGORITHMS).expect("HMAC key"),
    ));
    let set = KeySet::new(keys.iter().cloned());
    let policy = Policy::new(
        &ALGORITHMS,
        Some("https://issuer.test/"),
        &["agent-api".to_owned()],
        30,
        "sub",
        Vec::new(),
        Vec::new(),
    );

    let mut group = c.benchmark_group("verify_uncached");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(3));
    for (alg, signer) in &f.signers {
        let t = token(signer, *alg, "bench-user");
        group.bench_function(format!("{alg:?}"), |b| {
            b.iter(|| verify(black_box(&t), &set, &policy).is_ok())
        });
    }
    group.finish();

    let settings = AuthSettings {
        algorithms: ALGORITHMS.to_vec(),
        issuer: Some("https://issuer.test/".to_owned()),
        audiences: vec!["agent-api".to_owned()],
        leeway: Duration::from_secs(30),
        user_claim: "sub".to_owned(),
        required_scopes: Vec::new(),
        static_keys: keys,
        jwks_url: None,
        forward_claims: Vec::new(),
        token_location: TokenLocation::Authorization,
        public_paths: Vec::new(),
        cache_capacity: 100_000,
        cache_max_ttl: Duration::from_secs(300),
        retained_claims: Vec::new(),
        api_keys: None,
        revocation_file: None,
    };
    let auth = Authenticator::new(&settings, Arc::new(Metrics::new())).expect("authenticator");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("verify_cached");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(3));
    for (alg, signer) in &f.signers {
        let t = token(signer, *alg, "cached-user");
        runtime.block_on(auth.verify(&t)).expect("verifies");
        group.bench_function(format!("{alg:?}"), |b| {
            b.iter(|| runtime.block_on(auth.verify(black_box(&t))).is_ok())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_verification);
criterion_main!(benches);

//! Authentication: every algorithm, the known JWT attacks, scopes, the cache, JWKS over HTTPS.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use jsonwebtoken::{Algorithm, Header};
use serde_json::{Value, json};

use crate::common::jwks_server::JwksServer;
use crate::common::keys::{self, AUDIENCE, ISSUER, TestKey, claims, forge, hs256_signature, now};
use crate::common::{
    MockUpstream, Options, Reply, TestGateway, TestPki, assert_problem, assert_security_headers,
    wait_until,
};

struct Keys {
    es: TestKey,
    rs: TestKey,
    ps: TestKey,
    ed: TestKey,
    hs: TestKey,
}

struct Setup {
    gateway: TestGateway,
    upstream: MockUpstream,
    keys: Keys,
    _dir: tempfile::TempDir,
}

/// A gateway accepting ES256, RS256, PS256 and EdDSA from a JWKS file and HS256 from a secret
/// file; `auth_extra` adds lines to `[auth]`, `rest` adds sections after it.
async fn setup(auth_extra: &str, rest: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys {
        es: TestKey::es256("es-1"),
        rs: TestKey::rs256("rs-1"),
        ps: TestKey::ps256("ps-1"),
        ed: TestKey::eddsa("ed-1"),
        hs: TestKey::hs256("hs-1"),
    };
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, keys::jwks(&[&keys.es, &keys.rs, &keys.ps, &keys.ed])).unwrap();
    let secret = dir.path().join("hmac.secret");
    std::fs::write(&secret, keys.hs.secret.as_ref().unwrap()).unwrap();
    let extra = format!(
        "[auth]\nissuer = \"{ISSUER}\"\naudiences = [\"{AUDIENCE}\"]\n\
         algorithms = [\"ES256\", \"RS256\", \"PS256\", \"EdDSA\", \"HS256\"]\n{leeway}\
         jwks_file = \"{}\"\n{auth_extra}\n\n[[auth.hmac_keys]]\nkid = \"hs-1\"\nsecret_file = \"{}\"\n\n{rest}\n",
        jwks.display(),
        secret.display(),
        leeway = if auth_extra.contains("leeway") {
            ""
        } else {
            "leeway = \"5s\"\n"
        },
    );
    let upstream = MockUpstream::start().await;
    let gateway = TestGateway::start_with(
        &upstream.url(),
        Options {
            extra,
            ..Options::default()
        },
    )
    .await;
    Setup {
        gateway,
        upstream,
        keys,
        _dir: dir,
    }
}

async fn call(gateway: &TestGateway, path: &str, authorization: &[&str]) -> Reply {
    let mut request = Request::get(gateway.url(path));
    for value in authorization {
        request = request.header("authorization", *value);
    }
    gateway
        .client()
        .send_whole(request.body(Full::<Bytes>::default()).unwrap())
        .await
}

async fn with_token(gateway: &TestGateway, path: &str, token: &str) -> Reply {
    call(gateway, path, &[&format!("Bearer {token}")]).await
}

/// 401, the challenge, the audit decision and reason, and nothing forwarded.
async fn assert_refused(s: &Setup, path: &str, reply: &Reply, decision: &str, rule: &str) {
    assert_problem(reply, 401);
    assert_security_headers(reply);
    let challenge = reply.header("www-authenticate").expect("WWW-Authenticate");
    if decision == "auth_missing" {
        assert_eq!(challenge, r#"Bearer realm="portcullis""#);
    } else {
        assert_eq!(
            challenge, r#"Bearer realm="portcullis", error="invalid_token""#,
            "{path}"
        );
    }
    let record = s.gateway.audit_record(&reply.request_id()).await;
    assert_eq!(record["decision"], decision, "{path}: {record}");
    assert_eq!(record["rule"], rule, "{path}: {record}");
    assert!(record["user"].is_null());
    assert!(
        s.upstream.seen_on(path).is_empty(),
        "{path} reached the upstream"
    );
}

#[tokio::test]
async fn accepts_every_configured_algorithm_and_forwards_the_identity_not_the_token() {
    let s = setup("", "").await;
    let k = &s.keys;
    for (key, user) in [
        (&k.es, "es-user"),
        (&k.rs, "rs-user"),
        (&k.ps, "ps-user"),
        (&k.ed, "ed-user"),
        (&k.hs, "hs-user"),
    ] {
        let mut c = claims(user);
        c["scope"] = json!("agent:use tools:read");
        let token = key.sign(&c);
        let path = format!("/alg/{user}");
        let reply = with_token(&s.gateway, &path, &token).await;
        assert_eq!(reply.status, 200, "{:?}: {}", key.alg, reply.text());
        let seen = &s.upstream.seen_on(&path)[0];
        assert_eq!(seen.headers["x-portcullis-user"], user);
        assert_eq!(seen.headers["x-portcullis-scopes"], "agent:use tools:read");
        assert!(
            seen.headers.get("authorization").is_none(),
            "the token is never forwarded"
        );
        let record = s.gateway.audit_record(&reply.request_id()).await;
        assert_eq!(record["user"], user);
        assert_eq!(record["decision"], "allowed");
        let log = std::fs::read_to_string(&s.gateway.audit_path).unwrap();
        assert!(!log.contains(&token), "the token is never in the audit log");
    }
    // The scheme is case-insensitive (RFC 6750).
    let token = k.es.sign(&claims("lower"));
    let reply = call(&s.gateway, "/lower", &[&format!("bearer {token}")]).await;
    assert_eq!(reply.status, 200);
    // Expired two seconds ago, within the five-second leeway.
    let mut c = claims("skewed");
    c["exp"] = json!(now() - 2);
    let reply = with_token(&s.gateway, "/leeway", &k.es.sign(&c)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[tokio::test]
async fn refuses_the_known_attacks_and_forwards_nothing() {
    let s = setup("", "").await;
    let k = &s.keys;
    let valid = k.es.sign(&claims("victim"));
    let parts: Vec<&str> = valid.split('.').collect();
    let (vh, vp, vs) = (parts[0], parts[1], parts[2]);

    // No credential at all.
    let reply = call(&s.gateway, "/missing", &[]).await;
    assert_refused(&s, "/missing", &reply, "auth_missing", "token_missing").await;

    let mut cases: Vec<(&str, Vec<String>, &str, &str)> = vec![
        (
            "empty-bearer",
            vec!["Bearer ".into()],
            "auth_invalid",
            "empty_token",
        ),
        (
            "basic-scheme",
            vec!["Basic dXNlcjpwYXNz".into()],
            "auth_invalid",
            "not_bearer",
        ),
        (
            "not-a-jwt",
            vec!["Bearer abc".into()],
            "auth_invalid",
            "malformed",
        ),
        (
            "four-segments",
            vec![format!("Bearer {valid}.extra")],
            "auth_invalid",
            "malformed",
        ),
        (
            "not-base64url",
            vec!["Bearer e30$.e30.sig".into()],
            "auth_invalid",
            "malformed",
        ),
        (
            "garbage-header",
            vec!["Bearer eyJub3Q.e30.c2ln".into()],
            "auth_invalid",
            "malformed_header",
        ),
        (
            "signature-stripped",
            vec![format!("Bearer {vh}.{vp}.")],
            "auth_invalid",
            "bad_signature",
        ),
        (
            "two-authorization-headers",
            vec![format!("Bearer {valid}"), format!("Bearer {valid}")],
            "auth_invalid",
            "duplicate_header",
        ),
        (
            "oversized",
            vec![format!("Bearer {}", "a".repeat(8 * 1024 + 1))],
            "auth_invalid",
            "token_too_large",
        ),
    ];
    for alg in ["none", "None", "NONE", "nOnE"] {
        let token = forge(&json!({"alg": alg, "typ": "JWT"}), &claims("admin"), "");
        cases.push((
            "alg-none",
            vec![format!("Bearer {token}")],
            "auth_invalid",
            "malformed_header",
        ));
    }
    // Payload tampered: the victim's signature over another subject.
    let admin_payload = forge(&json!({}), &claims("admin"), "");
    let admin_payload = admin_payload.split('.').nth(1).unwrap().to_owned();
    cases.push((
        "payload-tampered",
        vec![format!("Bearer {vh}.{admin_payload}.{vs}")],
        "auth_invalid",
        "bad_signature",
    ));

    let mut expired = claims("late");
    expired["exp"] = json!(now() - 60);
    cases.push((
        "expired",
        vec![format!("Bearer {}", k.es.sign(&expired))],
        "auth_expired",
        "token_expired",
    ));
    let mut early = claims("early");
    early["nbf"] = json!(now() + 60);
    cases.push((
        "not-yet-valid",
        vec![format!("Bearer {}", k.es.sign(&early))],
        "auth_invalid",
        "not_yet_valid",
    ));
    let mut wrong_iss = claims("iss");
    wrong_iss["iss"] = json!("https://evil.test/");
    cases.push((
        "wrong-issuer",
        vec![format!("Bearer {}", k.es.sign(&wrong_iss))],
        "auth_invalid",
        "wrong_issuer",
    ));
    let mut wrong_aud = claims("aud");
    wrong_aud["aud"] = json!("other-api");
    cases.push((
        "wrong-audience",
        vec![format!("Bearer {}", k.rs.sign(&wrong_aud))],
        "auth_invalid",
        "wrong_audience",
    ));
    let mut no_exp = claims("forever");
    no_exp.as_object_mut().unwrap().remove("exp");
    cases.push((
        "missing-exp",
        vec![format!("Bearer {}", k.ed.sign(&no_exp))],
        "auth_invalid",
        "missing_claim",
    ));
    // HS512 is not in the allow-list, even with a known secret.
    let mut hs512 = Header::new(Algorithm::HS512);
    hs512.kid = Some("hs-1".into());
    let token = k.hs.sign_with(&hs512, &claims("hs512"));
    cases.push((
        "algorithm-not-allowed",
        vec![format!("Bearer {token}")],
        "auth_invalid",
        "algorithm_not_allowed",
    ));
    // Key confusion: HS256 "signed" with the RSA public key's PEM, naming the RSA key.
    let header = json!({"alg": "HS256", "kid": "rs-1", "typ": "JWT"});
    let unsigned = forge(&header, &claims("admin"), "");
    let message = unsigned.trim_end_matches('.');
    let signature = hs256_signature(k.rs.public_pem.as_ref().unwrap().as_bytes(), message);
    cases.push((
        "key-confusion",
        vec![format!("Bearer {message}.{signature}")],
        "auth_invalid",
        "algorithm_key_mismatch",
    ));
    // An attacker's own key, offered through every header that could carry or point to it.
    let attacker = TestKey::es256("attacker");
    for (name, field, value) in [
        ("via-jwk", "jwk", attacker.jwk.clone().unwrap()),
        ("via-jku", "jku", json!("https://attacker.test/jwks.json")),
        ("via-x5u", "x5u", json!("https://attacker.test/cert.pem")),
        ("via-x5c", "x5c", json!(["MIIBszCCAVmgAwIBAgIU"])),
    ] {
        // Naming our key id: the signature does not verify with our key.
        let mut header = json!({"alg": "ES256", "kid": "es-1"});
        header[field] = value.clone();
        let token = forge_signed(&attacker, &header, &claims("admin"));
        cases.push((
            name,
            vec![format!("Bearer {token}")],
            "auth_invalid",
            "bad_signature",
        ));
        // Naming the attacker's key id: not a key we know.
        let mut header = json!({"alg": "ES256", "kid": "attacker"});
        header[field] = value;
        let token = forge_signed(&attacker, &header, &claims("admin"));
        cases.push((
            name,
            vec![format!("Bearer {token}")],
            "auth_invalid",
            "unknown_kid",
        ));
    }
    let token = forge_signed(
        &k.es,
        &json!({"alg": "ES256", "kid": "es-1", "crit": ["exp-extension"], "exp-extension": 1}),
        &claims("crit"),
    );
    cases.push((
        "unknown-crit",
        vec![format!("Bearer {token}")],
        "auth_invalid",
        "unsupported_crit",
    ));
    let token = forge_signed(
        &k.es,
        &json!({"alg": "ES256", "kid": "no-such-key"}),
        &claims("kid"),
    );
    cases.push((
        "unknown-kid",
        vec![format!("Bearer {token}")],
        "auth_invalid",
        "unknown_kid",
    ));

    let total = cases.len();
    for (i, (name, values, decision, rule)) in cases.into_iter().enumerate() {
        let path = format!("/attack/{i}-{name}");
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let reply = call(&s.gateway, &path, &refs).await;
        assert_refused(&s, &path, &reply, decision, rule).await;
    }
    println!("attack cases refused: {}", total + 1);
    let forwarded: Vec<String> = s
        .upstream
        .seen()
        .into_iter()
        .map(|r| r.uri)
        .filter(|u| u != "/")
        .collect();
    assert!(
        forwarded.is_empty(),
        "attacks reached the upstream: {forwarded:?}"
    );
}

/// Signs a token whose header is exactly `header` (jsonwebtoken's `Header` cannot carry `crit`
/// extensions or arbitrary members), with `key`'s algorithm.
fn forge_signed(key: &TestKey, header: &Value, claims: &Value) -> String {
    let unsigned = forge(header, claims, "");
    let message = unsigned.trim_end_matches('.');
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key.encoding, key.alg).unwrap();
    format!("{message}.{signature}")
}

#[tokio::test]
async fn required_scopes_give_403_when_missing() {
    let s = setup("required_scopes = [\"agent:use\"]", "").await;
    let k = &s.keys;
    let token = k.es.sign(&claims("no-scope"));
    let reply = with_token(&s.gateway, "/scoped", &token).await;
    assert_problem(&reply, 403);
    assert_eq!(
        reply.header("www-authenticate"),
        Some(r#"Bearer realm="portcullis", error="insufficient_scope""#)
    );
    let record = s.gateway.audit_record(&reply.request_id()).await;
    assert_eq!(record["decision"], "forbidden");
    assert_eq!(record["user"], "no-scope");
    assert!(s.upstream.seen_on("/scoped").is_empty());

    let mut with_scope = claims("scope-string");
    with_scope["scope"] = json!("other agent:use");
    assert_eq!(
        with_token(&s.gateway, "/scope-string", &k.es.sign(&with_scope))
            .await
            .status,
        200
    );
    let mut with_scp = claims("scp-array");
    with_scp["scp"] = json!(["agent:use"]);
    assert_eq!(
        with_token(&s.gateway, "/scp-array", &k.hs.sign(&with_scp))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn verified_tokens_are_cached_until_expiry() {
    let s = setup("leeway = \"0s\"", "").await;
    let token = s.keys.rs.sign(&claims("cached"));
    assert_eq!(with_token(&s.gateway, "/first", &token).await.status, 200);
    assert_eq!(with_token(&s.gateway, "/second", &token).await.status, 200);
    assert_eq!(with_token(&s.gateway, "/third", &token).await.status, 200);
    let ok = r#"portcullis_token_verifications_total{result="ok"}"#;
    assert_eq!(
        s.gateway.metric(ok).await,
        1.0,
        "one signature verification for three requests"
    );
    assert_eq!(
        s.gateway.metric("portcullis_token_cache_hits_total").await,
        2.0
    );
    assert_eq!(
        s.gateway
            .metric("portcullis_token_cache_misses_total")
            .await,
        1.0
    );

    // A cached token is not served past its exp.
    let mut short = claims("short");
    short["exp"] = json!(now() + 2);
    let token = s.keys.es.sign(&short);
    assert_eq!(with_token(&s.gateway, "/short-1", &token).await.status, 200);
    assert_eq!(with_token(&s.gateway, "/short-2", &token).await.status, 200);
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let reply = with_token(&s.gateway, "/short-3", &token).await;
    assert_refused(&s, "/short-3", &reply, "auth_expired", "token_expired").await;
}

#[tokio::test]
async fn the_cache_is_bounded_and_counts_evictions() {
    let s = setup("cache_capacity = 4", "").await;
    for i in 0..20 {
        let token = s.keys.hs.sign(&claims(&format!("user-{i}")));
        assert_eq!(with_token(&s.gateway, "/many", &token).await.status, 200);
    }
    assert!(
        s.gateway
            .metric("portcullis_token_cache_evictions_total")
            .await
            >= 15.0
    );
}

#[tokio::test]
async fn forwards_chosen_claims_and_refuses_unforwardable_ones() {
    let s = setup(
        "[auth.forward_claims]\nemail = \"x-portcullis-email\"\ntenant = \"x-portcullis-tenant\"",
        "",
    )
    .await;
    let mut c = claims("claims-user");
    c["email"] = json!("zoë@example.com");
    c["tenant"] = json!({"id": 42});
    let reply = with_token(&s.gateway, "/claims", &s.keys.es.sign(&c)).await;
    assert_eq!(reply.status, 200);
    let seen = &s.upstream.seen_on("/claims")[0];
    assert_eq!(
        seen.headers["x-portcullis-email"].as_bytes(),
        "zoë@example.com".as_bytes()
    );
    assert_eq!(seen.headers["x-portcullis-tenant"], r#"{"id":42}"#);
    // A forged client header of the same name never survives.
    let mut c = claims("injector");
    c["email"] = json!("a@b.c\r\nx-portcullis-user: admin");
    let reply = with_token(&s.gateway, "/inject", &s.keys.es.sign(&c)).await;
    assert_refused(
        &s,
        "/inject",
        &reply,
        "auth_invalid",
        "claim_not_forwardable",
    )
    .await;
}

#[tokio::test]
async fn token_from_a_header_or_a_cookie() {
    let s = setup("token_header = \"cf-access-jwt-assertion\"", "").await;
    let token = s.keys.es.sign(&claims("iap-user"));
    let request = Request::get(s.gateway.url("/iap"))
        .header("cf-access-jwt-assertion", token.as_str())
        .body(Full::default())
        .unwrap();
    let reply = s.gateway.client().send_whole(request).await;
    assert_eq!(reply.status, 200);
    let seen = &s.upstream.seen_on("/iap")[0];
    assert_eq!(seen.headers["x-portcullis-user"], "iap-user");
    assert!(seen.headers.get("cf-access-jwt-assertion").is_none());

    let s = setup("token_cookie = \"session\"", "").await;
    let token = s.keys.ed.sign(&claims("cookie-user"));
    let request = Request::get(s.gateway.url("/cookie"))
        .header("cookie", format!("theme=dark; session={token}; lang=en"))
        .body(Full::default())
        .unwrap();
    let reply = s.gateway.client().send_whole(request).await;
    assert_eq!(reply.status, 200);
    let seen = &s.upstream.seen_on("/cookie")[0];
    assert_eq!(seen.headers["x-portcullis-user"], "cookie-user");
    assert_eq!(seen.headers["cookie"], "theme=dark; lang=en");
    let reply = call(&s.gateway, "/no-cookie", &[&format!("Bearer {token}")]).await;
    assert_refused(&s, "/no-cookie", &reply, "auth_missing", "token_missing").await;
}

#[tokio::test]
async fn public_paths_need_no_token_and_still_lose_credentials() {
    let s = setup("public_paths = [\"/public/info\"]", "").await;
    let reply = call(&s.gateway, "/public/info", &["Bearer whatever"]).await;
    assert_eq!(reply.status, 200);
    let seen = &s.upstream.seen_on("/public/info")[0];
    assert!(seen.headers.get("authorization").is_none());
    assert!(seen.headers.get("x-portcullis-user").is_none());
    // Only the exact path.
    let reply = call(&s.gateway, "/public/info/more", &[]).await;
    assert_refused(
        &s,
        "/public/info/more",
        &reply,
        "auth_missing",
        "token_missing",
    )
    .await;
}

#[tokio::test]
async fn upstream_credential_replaces_the_client_token() {
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::es256("svc-es");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, keys::jwks(&[&key])).unwrap();
    let credential = dir.path().join("agent-token");
    std::fs::write(&credential, "svc-credential-123\n").unwrap();
    let upstream = MockUpstream::start().await;
    let gateway = TestGateway::start_with(
        &upstream.url(),
        Options {
            upstream: format!("auth_header_file = \"{}\"", credential.display()),
            extra: format!(
                "[auth]\nalgorithms = [\"ES256\"]\njwks_file = \"{}\"\n",
                jwks.display()
            ),
            ..Options::default()
        },
    )
    .await;
    let token = key.sign(&claims("client"));
    let reply = with_token(&gateway, "/svc", &token).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = &upstream.seen_on("/svc")[0];
    assert_eq!(seen.headers["authorization"], "Bearer svc-credential-123");
    assert_eq!(seen.headers["x-portcullis-user"], "client");
    let log = std::fs::read_to_string(&gateway.audit_path).unwrap();
    assert!(!log.contains("svc-credential-123"));
}

#[tokio::test]
async fn jwks_url_rotation_refetch_limit_and_outage() {
    let ca_dir = tempfile::tempdir().unwrap();
    let idp_pki = TestPki::create(ca_dir.path());
    let old = TestKey::es256("2026-old");
    let new = TestKey::es256("2026-new");
    let idp = JwksServer::start(&idp_pki, keys::jwks(&[&old])).await;
    idp.set_down(true);
    let upstream = MockUpstream::start().await;
    let extra = format!(
        "[auth]\nalgorithms = [\"ES256\"]\nissuer = \"{ISSUER}\"\naudiences = [\"{AUDIENCE}\"]\n\
         jwks_url = \"{}\"\njwks_refresh = \"1s\"\njwks_ca_file = \"{}\"\n",
        idp.url(),
        idp_pki.ca_file.display()
    );
    let gateway = TestGateway::start_with(
        &upstream.url(),
        Options {
            extra,
            ..Options::default()
        },
    )
    .await;

    // Not ready while no key set was ever loaded, even though the upstream answers.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(gateway.admin_get("/readyz").await.0, 503);
    idp.set_down(false);
    let g = &gateway;
    wait_until("never ready", || async move {
        g.admin_get("/readyz").await.0 == 200
    })
    .await;
    let old_token = old.sign(&claims("old-key-user"));
    assert_eq!(with_token(&gateway, "/old", &old_token).await.status, 200);

    // Rotation: a token from a key published after the last fetch is accepted after one refetch.
    idp.set_document(keys::jwks(&[&old, &new]));
    let reply = with_token(&gateway, "/new", &new.sign(&claims("new-key-user"))).await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    // A flood of unknown key ids triggers at most one refetch per 30 s.
    let before = idp.fetches();
    let attacker = TestKey::es256("x");
    for i in 0..40 {
        let mut header = attacker.header();
        header.kid = Some(format!("random-{i}"));
        let reply = with_token(
            &gateway,
            "/flood",
            &attacker.sign_with(&header, &claims("flood")),
        )
        .await;
        assert_eq!(reply.status, 401);
    }
    let flood_fetches = idp.fetches() - before;
    // The 1 s periodic refresh may run during the flood; the unknown kids add at most one.
    assert!(
        flood_fetches <= 4,
        "{flood_fetches} fetches for 40 unknown kids"
    );
    println!("JWKS fetches during a flood of 40 unknown kids: {flood_fetches}");

    // The IdP goes down: refreshes fail, the last good keys keep working.
    idp.set_down(true);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        gateway
            .metric(r#"portcullis_jwks_fetches_total{result="error"}"#)
            .await
            >= 1.0
    );
    assert_eq!(
        with_token(&gateway, "/down", &new.sign(&claims("during-outage")))
            .await
            .status,
        200
    );
    assert_eq!(
        gateway.admin_get("/readyz").await.0,
        200,
        "still ready with the last good keys"
    );

    // A key removed from the set no longer verifies, even a token served from the cache.
    idp.set_down(false);
    idp.set_document(keys::jwks(&[&new]));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let reply = with_token(&gateway, "/removed", &old_token).await;
    assert_eq!(reply.status, 401);
    let record = gateway.audit_record(&reply.request_id()).await;
    assert_eq!(record["rule"], "unknown_kid");
    assert!(upstream.seen_on("/removed").is_empty());
}

#[tokio::test]
async fn token_subcommand_mints_tokens_the_gateway_accepts() {
    let s = setup("", "").await;
    let dir = tempfile::tempdir().unwrap();
    for (key, alg) in [
        (&s.keys.es, "ES256"),
        (&s.keys.rs, "RS256"),
        (&s.keys.ed, "EdDSA"),
    ] {
        let key_file = dir.path().join(format!("{alg}.pem"));
        std::fs::write(&key_file, key.private_pem.as_ref().unwrap()).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args([
                "token",
                "--key",
                key_file.to_str().unwrap(),
                "--alg",
                alg,
                "--kid",
                &key.kid,
            ])
            .args(["--sub", "minted", "--scope", "agent:use", "--ttl", "10m"])
            .args(["--iss", ISSUER, "--aud", AUDIENCE])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = String::from_utf8(out.stdout).unwrap();
        let path = format!("/minted/{alg}");
        let reply = with_token(&s.gateway, &path, token.trim()).await;
        assert_eq!(reply.status, 200, "{alg}: {}", reply.text());
        assert_eq!(
            s.upstream.seen_on(&path)[0].headers["x-portcullis-scopes"],
            "agent:use"
        );
    }
    let secret_file = dir.path().join("hmac.secret");
    std::fs::write(&secret_file, s.keys.hs.secret.as_ref().unwrap()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "token",
            "--key",
            secret_file.to_str().unwrap(),
            "--alg",
            "HS256",
            "--kid",
            "hs-1",
        ])
        .args(["--iss", ISSUER, "--aud", AUDIENCE])
        .output()
        .unwrap();
    let token = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        with_token(&s.gateway, "/minted/hs", token.trim())
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_client_leaving_early_is_audited_with_its_user() {
    let s = setup("", "").await;
    let token = s.keys.es.sign(&claims("impatient"));
    let gateway_client = s.gateway.client();
    let url = s.gateway.url("/slow/1500");
    let abandoned = tokio::spawn(async move {
        gateway_client
            .send_whole(
                Request::get(url)
                    .header("authorization", format!("Bearer {token}"))
                    .body(Full::<Bytes>::default())
                    .unwrap(),
            )
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    abandoned.abort();
    let g = &s.gateway;
    wait_until("no audit record", || async move {
        g.audit_records().iter().any(|r| r["path"] == "/slow/1500")
    })
    .await;
    let record = s
        .gateway
        .audit_records()
        .into_iter()
        .find(|r| r["path"] == "/slow/1500")
        .unwrap();
    assert_eq!(record["status"], 499);
    assert_eq!(record["user"], "impatient");
}

/// Reads from `stream` until `count` responses have arrived (by their status lines and
/// `content-length` bodies) or `limit` passes; returns what was read.
async fn read_responses<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    count: usize,
    limit: Duration,
) -> String {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    while String::from_utf8_lossy(&seen).matches("HTTP/1.1 ").count() < count
        || !String::from_utf8_lossy(&seen).ends_with('}')
    {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) | Err(_) => break,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// A client whose POST body follows its head a moment later (as many HTTP clients send it) and
/// is refused for its missing token: the small body is read and discarded before the 401 goes
/// out, so the connection stays open and the client's next request on it is answered too.
/// Without the drain the server would close a connection with an unread body, and the client
/// could be reset while still sending it.
#[tokio::test]
async fn a_refusal_reads_a_late_small_body_and_keeps_the_connection() {
    use tokio::io::AsyncWriteExt;
    let setup = setup("", "").await;
    let mut tls = super::server::raw_tls(&setup.gateway).await;
    let body = r#"{"prompt":"hello"}"#;
    tls.write_all(
        format!(
            "POST /late HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tls.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    tls.write_all(body.as_bytes()).await.unwrap();
    tls.write_all(b"GET /next HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    tls.flush().await.unwrap();
    let text = read_responses(&mut tls, 2, Duration::from_secs(5)).await;
    let statuses: Vec<&str> = text
        .match_indices("HTTP/1.1 ")
        .filter_map(|(at, _)| text.get(at + 9..at + 12))
        .collect();
    assert_eq!(statuses, ["401", "401"], "{text}");
    assert!(
        !text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert!(
        setup.upstream.seen_on("/late").is_empty() && setup.upstream.seen_on("/next").is_empty()
    );
}

/// A refused POST whose announced body never comes: the refusal waits at most
/// `DRAIN_WAIT` (1 s) for it, then goes out with `Connection: close` and the connection closes.
#[tokio::test]
async fn a_refusal_does_not_wait_long_for_a_body_that_never_comes() {
    use tokio::io::AsyncWriteExt;
    let setup = setup("", "").await;
    let mut tls = super::server::raw_tls(&setup.gateway).await;
    let started = std::time::Instant::now();
    tls.write_all(
        b"POST /never HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
          content-length: 100\r\n\r\n",
    )
    .await
    .unwrap();
    tls.flush().await.unwrap();
    let (_, seen) = super::server::wait_closed(&mut tls, Duration::from_secs(5)).await;
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&seen).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 401"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
        "answered after {elapsed:?}"
    );
}

/// Runs curl over HTTP/2 with a body of `size` bytes; returns its exit code and what it printed
/// (`status version`).
async fn curl_h2(setup: &Setup, token: &str, content_type: &str, size: usize) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    std::fs::write(&body, vec![b'x'; size]).unwrap();
    let args = vec![
        "-sS".to_owned(),
        "--http2".to_owned(),
        "--cacert".to_owned(),
        setup.gateway.pki.ca_file.display().to_string(),
        "-o".to_owned(),
        "/dev/null".to_owned(),
        "-w".to_owned(),
        "%{http_code} %{http_version}".to_owned(),
        "-H".to_owned(),
        format!("authorization: Bearer {token}"),
        "-H".to_owned(),
        format!("content-type: {content_type}"),
        "--data-binary".to_owned(),
        format!("@{}", body.display()),
        setup.gateway.url("/v1/upload"),
    ];
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), printed)
}

/// HTTP/2 refusals sent before the body is read (401 bad token, 415 wrong type, 413 announced
/// too large) reach curl whole: the stream's body is read and discarded behind the answer, so the
/// client is not reset while still sending it (curl 7.88 reported `(92) Stream error in the
/// HTTP/2 framing layer` for most tries). Ten tries of each, bodies from 5 B to 2 MiB.
#[tokio::test]
async fn http2_refusals_before_the_body_reach_curl() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("PORTCULLIS_REQUIRE_SDKS").is_err(),
            "PORTCULLIS_REQUIRE_SDKS is set but curl is not installed"
        );
        println!("SKIPPED: curl is not installed");
        return;
    }
    let setup = setup("", "[validation]\n").await;
    let valid = setup.keys.es.sign(&claims("uploader"));
    let cases = [
        ("not-a-token", "application/json", 5, "401"),
        ("not-a-token", "application/json", 1024, "401"),
        ("not-a-token", "application/json", 60 * 1024, "401"),
        ("not-a-token", "application/json", 2 * 1024 * 1024, "401"),
        (valid.as_str(), "text/plain", 5, "415"),
        (valid.as_str(), "text/plain", 1024, "415"),
        (valid.as_str(), "text/plain", 60 * 1024, "415"),
        // The announced size is checked before the type.
        (valid.as_str(), "text/plain", 2 * 1024 * 1024, "413"),
        (valid.as_str(), "application/json", 2 * 1024 * 1024, "413"),
    ];
    for (token, content_type, size, status) in cases {
        for _ in 0..10 {
            let (code, printed) = curl_h2(&setup, token, content_type, size).await;
            assert_eq!(
                (code, printed.as_str()),
                (0, format!("{status} 2").as_str()),
                "{content_type}, {size} bytes"
            );
        }
    }
    assert!(setup.upstream.seen_on("/v1/upload").is_empty());
}

/// The same refusals through an HTTP/2 client library (httpx2 with h2), several on one
/// connection: each status is read, none hangs, and the connection serves the next request.
#[tokio::test]
async fn http2_refusals_before_the_body_reach_an_h2_library() {
    if !crate::common::python::has_module("h2") {
        return;
    }
    let setup = setup("", "").await;
    let sizes = ["5", "1024", "61440", "2097152", "5", "2097152"];
    let mut args = vec![
        setup.gateway.url("/v1/upload"),
        setup.gateway.pki.ca_file.display().to_string(),
        "not-a-token".to_owned(),
    ];
    args.extend(sizes.iter().map(|s| (*s).to_owned()));
    let printed = crate::common::python::run("tests/sdk/h2_upload.py", args).await;
    assert_eq!(printed, ["401/HTTP/2"; 6].join(" "));
    assert!(setup.upstream.seen_on("/v1/upload").is_empty());
}

#[tokio::test]
async fn oidc_discovery_with_a_real_provider_accepts_its_tokens_and_follows_a_key_rotation() {
    let idp_dir = tempfile::tempdir().unwrap();
    let idp_pki = TestPki::create(idp_dir.path());
    let Some(mut idp) = crate::common::oidc::OidcProvider::start(&idp_pki, "2026-12-a") else {
        return;
    };
    let upstream = MockUpstream::start().await;
    // No issuer and no jwks_url: both come from the provider's discovery document.
    let extra = format!(
        "[auth]\nalgorithms = [\"ES256\"]\noidc_issuer = \"{}\"\naudiences = [\"agent-api\"]\n\
         required_scopes = [\"agent:use\"]\nuser_claim = \"client_id\"\n\
         jwks_ca_file = \"{}\"\n",
        idp.issuer(),
        idp_pki.ca_file.display()
    );
    let gateway = TestGateway::start_with(
        &upstream.url(),
        Options {
            extra,
            ..Options::default()
        },
    )
    .await;
    let g = &gateway;
    wait_until("the discovered key set never loaded", || async move {
        g.metric(r#"portcullis_jwks_fetches_total{result="ok"}"#)
            .await
            >= 1.0
    })
    .await;

    // A token the provider issued is accepted, its client id forwarded as the user.
    let first = idp.token();
    let reply = with_token(&gateway, "/oidc-first", &first).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        upstream.seen_on("/oidc-first")[0].headers["x-portcullis-user"],
        "agent"
    );
    // The provider's signature is what counts: the same claims re-signed by another key fail.
    let (head, rest) = first.split_once('.').unwrap();
    let (payload, _) = rest.split_once('.').unwrap();
    let forged = format!("{head}.{payload}.{}", "A".repeat(86));
    assert_problem(&with_token(&gateway, "/oidc-forged", &forged).await, 401);
    assert!(upstream.seen_on("/oidc-forged").is_empty());

    // The provider rotates its key: a token from the new key is accepted after one refetch
    // (discovery document, then key set), and the old key, no longer published, is refused.
    idp.rotate("2026-12-b");
    let second = idp.token();
    assert_ne!(second, first);
    let reply = with_token(&gateway, "/oidc-rotated", &second).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // The old token was verified and cached before; a cached token is served only while its key
    // is still published, so it is refused now.
    assert_problem(&with_token(&gateway, "/oidc-old-key", &first).await, 401);
    assert!(upstream.seen_on("/oidc-old-key").is_empty());
    let audit = std::fs::read_to_string(&gateway.audit_path).unwrap();
    assert!(!audit.contains(&first) && !audit.contains(&second));
}

//! The fuzz harnesses: one function per target, each taking the fuzzer's raw bytes.
//!
//! The libFuzzer binaries in `fuzz_targets/` call these, and so does the root crate's
//! `fuzz_regressions` test (which includes this file by path), so every file kept under
//! `fuzz/seeds/` and `fuzz/regressions/` is replayed by an ordinary `cargo test` without libFuzzer.
//! A harness returns on any input the code under test refuses; it panics only when the code under
//! test panics or a property stated here does not hold. Structured inputs are decoded from the
//! bytes with `arbitrary`, so a replay sees exactly what the fuzzer saw.

// A harness: its setup cannot fail on a correct build, and a failed property must panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::FutureExt;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Map, Value, json};

use portcullis::audit::chain;
use portcullis::auth::Principal;
use portcullis::auth::jwt::{self, Failure, Policy};
use portcullis::config::{Config, HeaderSettings};
use portcullis::context::{Dialect, RequestContext};
use portcullis::detect::normalize::normalize;
use portcullis::detect::rules::{self, Action, RuleOptions, RuleSet};
use portcullis::error::GatewayError;
use portcullis::headers::{self, Forwarding, SecurityHeaders};
use portcullis::keys::{KeySet, hmac_key, keys_from_jwks};
use portcullis::revocation::RevokedList;
use portcullis::secret::Secret;
use portcullis::server::framing::{Findings, Tracker};
use portcullis::validate::body::{BodyProblem, check_json, check_query, scan};

/// `config`: any text as a config file. `Config::from_toml` returns `Ok` or `Err`, never panics.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Paths in a config are read at load time; device files would block or never end. That is an
    // operator's own doing (the file is theirs), not something an input to the gateway can reach.
    if ["/dev", "/proc", "/sys"].iter().any(|p| text.contains(p)) {
        return;
    }
    if let Err(e) = Config::from_toml(text, "fuzz.toml") {
        // The line named exists in the text.
        if let Some(line) = e.line {
            assert!(
                line >= 1 && line <= text.split('\n').count(),
                "line {line} out of range"
            );
        }
        let _ = e.to_string();
    }
}

/// `jwks`: any bytes as a JWK set document. Keys come only from signing types, never HMAC, and
/// only with algorithms of the allow-list.
pub fn jwks(data: &[u8]) {
    const ALLOWED: [Algorithm; 5] = [
        Algorithm::RS256,
        Algorithm::PS384,
        Algorithm::ES256,
        Algorithm::EdDSA,
        Algorithm::HS256,
    ];
    let Ok((keys, _skipped)) = keys_from_jwks(data, &ALLOWED) else {
        return;
    };
    for key in &keys {
        assert!(!key.algorithms.is_empty(), "a key that verifies nothing");
        for alg in &key.algorithms {
            assert!(ALLOWED.contains(alg), "{alg:?} is outside the allow-list");
            assert!(
                *alg != Algorithm::HS256,
                "a shared secret taken from a JWK set"
            );
        }
    }
    let set = KeySet::new(keys.iter().cloned());
    for alg in ALLOWED {
        let _ = set.find(None, alg);
    }
}

/// The HMAC secret the `jwt` target's key set holds.
const SECRET: [u8; 32] = [7; 32];
/// A secret the key set does not hold: tokens signed with it must be refused.
const WRONG_SECRET: [u8; 32] = [8; 32];
/// The issuer and audience the policy requires.
const ISSUER: &str = "https://issuer.test/";
const AUDIENCE: &str = "agent-api";

struct JwtFixture {
    keys: KeySet,
    policy: Policy,
}

fn jwt_fixture() -> &'static JwtFixture {
    static FIXTURE: OnceLock<JwtFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // RS256 is allowed but has no key: a token naming it finds none.
        let allowed = [
            Algorithm::HS256,
            Algorithm::HS384,
            Algorithm::RS256,
            Algorithm::ES256,
        ];
        let secret = Secret::from_bytes(SECRET.to_vec()).expect("secret");
        let key = hmac_key("k1", &secret, &allowed).expect("HMAC key");
        let policy = Policy::new(
            &allowed,
            Some(ISSUER),
            &[AUDIENCE.to_owned()],
            30,
            "sub",
            vec![(
                "tenant".to_owned(),
                HeaderName::from_static("x-portcullis-tenant"),
            )],
            vec!["plan".to_owned()],
        );
        JwtFixture {
            keys: KeySet::new([Arc::new(key)]),
            policy,
        }
    })
}

#[derive(Debug, Arbitrary)]
struct TokenSpec {
    header: HeaderSpec,
    claims: ClaimsSpec,
    signature: SignatureSpec,
    /// Replaces the header JSON with these bytes.
    raw_header: Option<Vec<u8>>,
    /// Replaces the claims JSON with these bytes.
    raw_claims: Option<Vec<u8>>,
}

#[derive(Debug, Arbitrary)]
struct HeaderSpec {
    alg: AlgSpec,
    kid: Option<KidSpec>,
    typ: Option<String>,
    crit: bool,
    /// Headers the gateway must never use to find keys.
    jku: Option<String>,
    extra: Vec<(String, ValueSpec)>,
}

#[derive(Debug, Arbitrary)]
enum AlgSpec {
    Hs256,
    Hs384,
    Hs512,
    Rs256,
    Es256,
    None,
    NoneCased,
    Other(String),
    Missing,
}

#[derive(Debug, Arbitrary)]
enum KidSpec {
    Known,
    Other(String),
    NotAString(i64),
}

#[derive(Debug, Arbitrary)]
struct ClaimsSpec {
    sub: Option<ValueSpec>,
    exp: Option<TimeSpec>,
    nbf: Option<TimeSpec>,
    iat: Option<TimeSpec>,
    iss: Option<ChoiceSpec>,
    aud: Option<AudSpec>,
    scope: Option<ValueSpec>,
    scp: Option<ValueSpec>,
    tenant: Option<ValueSpec>,
    plan: Option<ValueSpec>,
    jti: Option<ValueSpec>,
    extra: Vec<(String, ValueSpec)>,
}

#[derive(Debug, Arbitrary)]
enum TimeSpec {
    Ago(u32),
    FromNow(u32),
    Value(ValueSpec),
}

#[derive(Debug, Arbitrary)]
enum ChoiceSpec {
    Right,
    Value(ValueSpec),
}

#[derive(Debug, Arbitrary)]
enum AudSpec {
    Right,
    RightInList(Vec<String>),
    Value(ValueSpec),
}

#[derive(Debug, Arbitrary)]
enum ValueSpec {
    Str(String),
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
    Null,
    Strings(Vec<String>),
    Object(Vec<(String, String)>),
}

impl ValueSpec {
    fn to_json(&self) -> Value {
        match self {
            ValueSpec::Str(s) => json!(s),
            ValueSpec::Int(n) => json!(n),
            ValueSpec::UInt(n) => json!(n),
            // NaN and infinities have no JSON form: they become null.
            ValueSpec::Float(f) => json!(f),
            ValueSpec::Bool(b) => json!(b),
            ValueSpec::Null => Value::Null,
            ValueSpec::Strings(v) => json!(v),
            ValueSpec::Object(pairs) => {
                Value::Object(pairs.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
            }
        }
    }
}

#[derive(Debug, Arbitrary, PartialEq, Eq)]
enum SignatureSpec {
    /// HMAC with the key set's secret, over the algorithm the header names (HS256 otherwise).
    Right,
    /// HMAC with a secret the key set does not hold.
    WrongKey,
    /// The right signature with one byte changed.
    Flipped(u8),
    Bytes(Vec<u8>),
    Empty,
}

impl TokenSpec {
    fn header_json(&self, now: u64) -> Vec<u8> {
        if let Some(raw) = &self.raw_header {
            return raw.clone();
        }
        let h = &self.header;
        let mut map = Map::new();
        let alg = match &h.alg {
            AlgSpec::Hs256 => Some("HS256".to_owned()),
            AlgSpec::Hs384 => Some("HS384".to_owned()),
            AlgSpec::Hs512 => Some("HS512".to_owned()),
            AlgSpec::Rs256 => Some("RS256".to_owned()),
            AlgSpec::Es256 => Some("ES256".to_owned()),
            AlgSpec::None => Some("none".to_owned()),
            AlgSpec::NoneCased => Some("nOnE".to_owned()),
            AlgSpec::Other(s) => Some(s.clone()),
            AlgSpec::Missing => None,
        };
        if let Some(alg) = alg {
            map.insert("alg".into(), json!(alg));
        }
        match &h.kid {
            None => {}
            Some(KidSpec::Known) => {
                map.insert("kid".into(), json!("k1"));
            }
            Some(KidSpec::Other(s)) => {
                map.insert("kid".into(), json!(s));
            }
            Some(KidSpec::NotAString(n)) => {
                map.insert("kid".into(), json!(n));
            }
        }
        if let Some(typ) = &h.typ {
            map.insert("typ".into(), json!(typ));
        }
        if h.crit {
            map.insert("crit".into(), json!(["exp"]));
        }
        if let Some(jku) = &h.jku {
            map.insert("jku".into(), json!(jku));
        }
        for (k, v) in &h.extra {
            map.entry(k.clone()).or_insert_with(|| v.to_json());
        }
        let _ = now;
        serde_json::to_vec(&Value::Object(map)).expect("JSON")
    }

    fn claims_json(&self, now: u64) -> Vec<u8> {
        if let Some(raw) = &self.raw_claims {
            return raw.clone();
        }
        let c = &self.claims;
        let time = |t: &TimeSpec| match t {
            TimeSpec::Ago(s) => json!(now.saturating_sub(u64::from(*s))),
            TimeSpec::FromNow(s) => json!(now + u64::from(*s)),
            TimeSpec::Value(v) => v.to_json(),
        };
        let mut map = Map::new();
        let mut put = |name: &str, value: Option<Value>| {
            if let Some(value) = value {
                map.insert(name.to_owned(), value);
            }
        };
        put("sub", c.sub.as_ref().map(ValueSpec::to_json));
        put("exp", c.exp.as_ref().map(time));
        put("nbf", c.nbf.as_ref().map(time));
        put("iat", c.iat.as_ref().map(time));
        put(
            "iss",
            c.iss.as_ref().map(|i| match i {
                ChoiceSpec::Right => json!(ISSUER),
                ChoiceSpec::Value(v) => v.to_json(),
            }),
        );
        put(
            "aud",
            c.aud.as_ref().map(|a| match a {
                AudSpec::Right => json!(AUDIENCE),
                AudSpec::RightInList(others) => {
                    let mut all = others.clone();
                    all.push(AUDIENCE.to_owned());
                    json!(all)
                }
                AudSpec::Value(v) => v.to_json(),
            }),
        );
        put("scope", c.scope.as_ref().map(ValueSpec::to_json));
        put("scp", c.scp.as_ref().map(ValueSpec::to_json));
        put("tenant", c.tenant.as_ref().map(ValueSpec::to_json));
        put("plan", c.plan.as_ref().map(ValueSpec::to_json));
        put("jti", c.jti.as_ref().map(ValueSpec::to_json));
        for (k, v) in &c.extra {
            map.entry(k.clone()).or_insert_with(|| v.to_json());
        }
        serde_json::to_vec(&Value::Object(map)).expect("JSON")
    }

    /// The token, and whether it carries the right signature for its header's HMAC algorithm.
    fn build(&self) -> (String, bool) {
        let now = jsonwebtoken::get_current_timestamp();
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(self.header_json(now)),
            URL_SAFE_NO_PAD.encode(self.claims_json(now))
        );
        let alg = match self.header.alg {
            AlgSpec::Hs384 => Algorithm::HS384,
            AlgSpec::Hs512 => Algorithm::HS512,
            _ => Algorithm::HS256,
        };
        let sign = |secret: &[u8]| {
            jsonwebtoken::crypto::sign(
                signing_input.as_bytes(),
                &EncodingKey::from_secret(secret),
                alg,
            )
            .expect("HMAC")
        };
        let (signature, right) = match &self.signature {
            SignatureSpec::Right => (sign(&SECRET), true),
            SignatureSpec::WrongKey => (sign(&WRONG_SECRET), false),
            SignatureSpec::Flipped(at) => {
                let mut raw = URL_SAFE_NO_PAD.decode(sign(&SECRET)).expect("base64");
                let i = usize::from(*at) % raw.len();
                raw[i] ^= 0x01;
                (URL_SAFE_NO_PAD.encode(raw), false)
            }
            SignatureSpec::Bytes(b) => (URL_SAFE_NO_PAD.encode(b), false),
            SignatureSpec::Empty => (String::new(), false),
        };
        (format!("{signing_input}.{signature}"), right)
    }
}

/// `jwt`: a token through [`jwt::verify`] with a fixed HS256/HS384 key and policy. A token is
/// accepted only with the key's own signature, an HMAC algorithm, a future `exp`, the right
/// issuer and audience, and identity headers that cannot split a request.
///
/// Input starting with a zero byte is a [`TokenSpec`] decoded by `arbitrary` from the bytes after
/// it (header and claims JSON, signed right or wrong); any other input is the token text itself.
pub fn jwt(data: &[u8]) {
    let (token, right_signature) = match data.split_first() {
        Some((0, rest)) => {
            let Ok(spec) = TokenSpec::arbitrary_take_rest(Unstructured::new(rest)) else {
                return;
            };
            let (token, right) = spec.build();
            (token, Some(right))
        }
        _ => match std::str::from_utf8(data) {
            Ok(text) => (text.to_owned(), None),
            Err(_) => return,
        },
    };
    let fixture = jwt_fixture();
    let verified = match jwt::verify(&token, &fixture.keys, &fixture.policy) {
        Ok(v) => v,
        Err(Failure::Refused(_) | Failure::UnknownKid) => return,
    };
    if let Some(right) = right_signature {
        assert!(right, "a token without the key's signature was accepted");
    }
    let header = jsonwebtoken::decode_header(&token).expect("an accepted token has a header");
    assert!(
        matches!(header.alg, Algorithm::HS256 | Algorithm::HS384),
        "accepted with {:?}",
        header.alg
    );
    let now = jsonwebtoken::get_current_timestamp();
    // `exp` may be any u64 (the gateway caps the cache lifetime itself): compare without
    // overflowing.
    assert!(
        verified.expires_at.saturating_add(30) >= now,
        "an expired token was accepted"
    );
    let principal = &verified.principal;
    assert!(!principal.user.is_empty(), "an empty user");
    for (name, value) in &principal.identity_headers {
        assert!(
            name.as_str().starts_with("x-portcullis-"),
            "identity header {name}"
        );
        assert!(
            !value.as_bytes().iter().any(|b| b.is_ascii_control()),
            "a control character in {name}"
        );
    }
}

/// The built-in rules, compiled once.
fn builtin_rules() -> &'static RuleSet {
    static RULES: OnceLock<RuleSet> = OnceLock::new();
    RULES.get_or_init(|| RuleSet::new(&RuleOptions::default()).expect("built-in rules"))
}

/// `normalize_and_rules`: any text through the normaliser, the rule matcher, the JSON walk and
/// the query scan. Normalisation is idempotent once settled, and the JSON walk finds what a direct
/// scan of the same string finds.
pub fn normalize_and_rules(data: &[u8]) {
    let rules = builtin_rules();
    let text = String::from_utf8_lossy(data);
    let normalized = normalize(&text);
    if normalized.settled {
        let again = normalize(&normalized.text);
        assert_eq!(
            again.text, normalized.text,
            "settled text changed on a second normalisation"
        );
        assert!(again.settled, "settled text is not settled a second time");
    }
    let _ = rules.scan(&normalized.text);
    let direct = scan(rules, &text).map(|r| (r.id.clone(), r.action));
    // The same text as a JSON string value: the walk must decide as the direct scan does.
    let body = serde_json::to_vec(&json!({ "m": text.as_ref() })).expect("JSON");
    let walked = check_json(&body, rules, 64, usize::MAX);
    match (&direct, &walked) {
        (Some((id, Action::Block)), Err(BodyProblem::Injection(rule))) => {
            assert_eq!(id, &rule.id, "the walk and the scan disagree on the rule");
        }
        (Some((_, Action::Block)), other) => {
            panic!("a blocking match the JSON walk missed: {other:?}")
        }
        (_, Ok(_)) => {}
        (_, Err(problem)) => panic!("a body refused without a blocking match: {problem:?}"),
    }
    // The raw bytes as a body, and the text as a query string.
    let _ = check_json(data, rules, 64, 100_000);
    let _ = check_query(&text, rules);
}

/// `revocation`: any text as a revocation file.
pub fn revocation(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match RevokedList::parse(&text) {
        Ok(list) => assert!(list.len() <= text.lines().count()),
        Err(message) => {
            // The error names a line, never its content.
            assert!(message.starts_with("line "), "{message}");
        }
    }
}

/// A file in the temp dir the harness may write, one per process.
fn scratch(name: &str) -> PathBuf {
    static RUN: AtomicU64 = AtomicU64::new(0);
    let n = RUN.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("portcullis-fuzz-{}-{n}-{name}", std::process::id()))
}

/// `audit_verify`: any bytes as audit files (split into up to three files at `\x1e`) through the
/// chain verifier and the tail recovery.
pub fn audit_verify(data: &[u8]) {
    let parts: Vec<&[u8]> = data.splitn(3, |&b| b == 0x1e).collect();
    let paths: Vec<PathBuf> = (0..parts.len())
        .map(|i| scratch(&format!("audit-{i}.log")))
        .collect();
    for (path, part) in paths.iter().zip(&parts) {
        std::fs::File::create(path)
            .and_then(|mut f| f.write_all(part))
            .expect("scratch file");
    }
    let result = chain::verify(&paths);
    let recovered =
        std::fs::File::open(&paths[paths.len() - 1]).and_then(|mut f| chain::recover(&mut f));
    for path in &paths {
        let _ = std::fs::remove_file(path);
    }
    if let Ok(summary) = result {
        let lines: u64 = parts
            .iter()
            .map(|p| {
                let newlines = p.iter().filter(|&&b| b == b'\n').count();
                let partial = !p.is_empty() && p.last() != Some(&b'\n');
                (newlines + usize::from(partial)) as u64
            })
            .sum();
        assert_eq!(summary.records, lines, "every line is a checked record");
        match (summary.first_seq, summary.last_seq) {
            (Some(first), Some(last)) => assert_eq!(last - first + 1, summary.records),
            (None, None) => assert_eq!(summary.records, 0),
            other => panic!("first and last seq disagree: {other:?}"),
        }
    }
    recovered.expect("reading the tail of a readable file");
}

/// The `problem_and_headers` target's input.
#[derive(Debug, Arbitrary)]
struct ProblemInput {
    request_id: String,
    error: ErrorSpec,
    /// Request headers as they might arrive.
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// Names listed in `Connection`.
    connection: Vec<String>,
    original_host: Option<Vec<u8>>,
    client_ip: IpSpec,
    tls: bool,
    user: Vec<u8>,
    hsts: Option<Vec<u8>>,
    csp: Option<Vec<u8>>,
}

#[derive(Debug, Arbitrary)]
enum IpSpec {
    V4([u8; 4]),
    V6([u8; 16]),
}

#[derive(Debug, Arbitrary)]
enum ErrorSpec {
    Unauthenticated(u8),
    Forbidden,
    RateLimited(u64, bool),
    IpRateLimited(u64),
    LimiterUnavailable,
    BodyTooLarge,
    UnsupportedMediaType,
    InvalidJson(u8),
    InputTooLong,
    Injection { rule: String, category: u8 },
    HeaderTooLarge(usize),
    UpstreamUnavailable(String),
    UpstreamTimeout,
    UpstreamStatus(u16),
    Internal(u8),
}

const REASONS: [&str; 4] = ["truncated", "malformed", "too_deep", "empty_body"];
const CATEGORIES: [&str; 6] = [
    rules::PROMPT_INJECTION,
    rules::SCRIPT_INJECTION,
    rules::CODE_INJECTION,
    rules::OBFUSCATION,
    rules::CUSTOM,
    "something else",
];

impl ErrorSpec {
    /// The error, with `secret` in every place a caller-chosen text can go.
    fn error(&self, secret: Option<&str>) -> GatewayError {
        use portcullis::auth::jwt::Refusal;
        let pick = |n: u8, from: &[&'static str]| from[usize::from(n) % from.len()];
        match self {
            ErrorSpec::Unauthenticated(n) => GatewayError::Unauthenticated(match n % 4 {
                0 => Refusal::Missing,
                1 => Refusal::Expired,
                2 => Refusal::Revoked,
                _ => Refusal::Invalid(pick(*n, &["malformed", "bad_signature"])),
            }),
            ErrorSpec::Forbidden => GatewayError::Forbidden,
            ErrorSpec::RateLimited(s, cap) => GatewayError::RateLimited {
                state: None,
                retry_after: *s,
                rule: if *cap {
                    "tracked_users_cap"
                } else {
                    "user_limit"
                },
            },
            ErrorSpec::IpRateLimited(s) => GatewayError::IpRateLimited { retry_after: *s },
            ErrorSpec::LimiterUnavailable => GatewayError::LimiterUnavailable,
            ErrorSpec::BodyTooLarge => GatewayError::BodyTooLarge,
            ErrorSpec::UnsupportedMediaType => GatewayError::UnsupportedMediaType,
            ErrorSpec::InvalidJson(n) => GatewayError::InvalidJson(pick(*n, &REASONS)),
            ErrorSpec::InputTooLong => GatewayError::InputTooLong,
            ErrorSpec::Injection { rule, category } => GatewayError::InjectionDetected {
                rule: secret.unwrap_or(rule).to_owned(),
                category: pick(*category, &CATEGORIES),
            },
            ErrorSpec::HeaderTooLarge(n) => GatewayError::HeaderTooLarge(*n),
            ErrorSpec::UpstreamUnavailable(message) => GatewayError::UpstreamUnavailable(
                std::io::Error::other(secret.unwrap_or(message).to_owned()).into(),
            ),
            ErrorSpec::UpstreamTimeout => GatewayError::UpstreamTimeout,
            ErrorSpec::UpstreamStatus(code) => GatewayError::UpstreamStatus(
                StatusCode::from_u16(*code).unwrap_or(StatusCode::BAD_GATEWAY),
            ),
            ErrorSpec::Internal(n) => GatewayError::Internal(pick(*n, &["panic", "no_context"])),
        }
    }
}

/// The problem body as JSON, and the response's headers.
fn problem(error: GatewayError, request_id: &str) -> (StatusCode, Map<String, Value>, HeaderMap) {
    let response = portcullis::error::render(error, Dialect::Problem, request_id, None, None);
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .now_or_never()
        .expect("an in-memory body is ready")
        .expect("an in-memory body");
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&bytes) else {
        panic!("the problem body is not a JSON object");
    };
    (parts.status, map, parts.headers)
}

/// `problem_and_headers`: the problem+json writer and the header writers and strippers.
///
/// The problem body is a JSON object of exactly the five RFC 9457 members we send, echoes the
/// request id, and is otherwise independent of any caller-chosen text (rule ids, library error
/// messages). Upstream-bound headers lose hop-by-hop, `Connection`-named, forwarding and
/// client-sent `x-portcullis-*` headers, and carry exactly the gateway's own.
pub fn problem_and_headers(data: &[u8]) {
    let Ok(input) = ProblemInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    // The problem body.
    let (status, body, response_headers) = problem(input.error.error(None), &input.request_id);
    let mut members: Vec<&str> = body.keys().map(String::as_str).collect();
    members.sort_unstable();
    assert_eq!(
        members,
        ["detail", "request_id", "status", "title", "type"],
        "problem members"
    );
    assert_eq!(body["request_id"], json!(input.request_id));
    assert_eq!(body["status"], json!(status.as_u16()));
    assert_eq!(
        response_headers.get(header::CONTENT_TYPE),
        Some(&HeaderValue::from_static("application/problem+json"))
    );
    let (other_status, mut other, other_headers) =
        problem(input.error.error(Some("a fixed text")), &input.request_id);
    let mut body = body;
    body.remove("request_id");
    other.remove("request_id");
    assert_eq!(status, other_status);
    assert_eq!(body, other, "caller-chosen text reached the problem body");
    assert_eq!(
        response_headers, other_headers,
        "caller-chosen text reached the headers"
    );

    // Security headers on the way out.
    let to_value = |v: &Option<Vec<u8>>| v.as_ref().and_then(|b| HeaderValue::from_bytes(b).ok());
    let security = SecurityHeaders::new(HeaderSettings {
        hsts: to_value(&input.hsts),
        content_security_policy: to_value(&input.csp),
    });
    let mut out = build_headers(&input.headers);
    security.apply(&mut out, input.tls);
    assert!(!out.contains_key(header::SERVER) && !out.contains_key("x-powered-by"));
    assert_eq!(out.get_all(header::X_FRAME_OPTIONS).iter().count(), 1);
    assert_eq!(
        out.contains_key(header::STRICT_TRANSPORT_SECURITY),
        input.tls && to_value(&input.hsts).is_some()
    );

    // Request headers on the way in.
    let mut incoming = build_headers(&input.headers);
    let connection = input.connection.join(",");
    if let Ok(value) = HeaderValue::from_str(&connection) {
        incoming.append(header::CONNECTION, value);
    }
    let named: Vec<HeaderName> = incoming
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    let id = HeaderValue::from_str(&input.request_id)
        .unwrap_or_else(|_| HeaderValue::from_static("fallback-id"));
    let client_ip = match input.client_ip {
        IpSpec::V4(b) => IpAddr::from(b),
        IpSpec::V6(b) => IpAddr::from(b),
    };
    // The client's headers may hold any traceparent: joined or replaced, never a panic.
    let mut context = RequestContext::new(
        client_ip,
        input.tls,
        portcullis::trace::TraceContext::from_headers(&incoming),
    );
    context.id = id.clone();
    let mut traced = incoming.clone();
    context.trace.propagate(&mut traced);
    let sent = context.trace.traceparent();
    assert_eq!(sent.len(), 55);
    assert_eq!(traced.get_all("traceparent").iter().count(), 1);
    if context.trace.joined {
        let incoming_trace = incoming
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.get(3..35))
            .unwrap_or_default();
        assert_eq!(incoming_trace, context.trace.trace_id.to_string());
    }
    let original_host = input
        .original_host
        .as_ref()
        .and_then(|b| HeaderValue::from_bytes(b).ok());
    let upstream_host = HeaderValue::from_static("upstream.test:8080");
    let credential = HeaderValue::from_static("Bearer gateway-credential");
    let user_header = HeaderName::from_static("x-portcullis-user");
    let principal = HeaderValue::from_bytes(&input.user)
        .ok()
        .map(|value| Principal {
            user: Arc::from("user"),
            scopes: Vec::new(),
            identity_headers: vec![(user_header.clone(), value)],
            claims: Vec::new(),
            subject: None,
            token_id: None,
            audiences: None,
        });
    let mut forwarded = incoming.clone();
    headers::prepare_upstream_request(
        &mut forwarded,
        Forwarding {
            context: &context,
            original_host: original_host.as_ref(),
            upstream_host: &upstream_host,
            principal: principal.as_ref(),
            credential: Some(&credential),
        },
    );
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "forwarded",
        "x-real-ip",
    ] {
        assert!(!forwarded.contains_key(name), "{name} was forwarded");
    }
    // A header `Connection` names is gone, unless the gateway itself sets it.
    let ours = [
        "x-request-id",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "host",
        "authorization",
        "x-portcullis-user",
    ];
    for name in &named {
        if !ours.contains(&name.as_str()) {
            assert!(!forwarded.contains_key(name), "{name} named in Connection");
        }
    }
    for (name, value) in &forwarded {
        if name.as_str().starts_with("x-portcullis-") {
            let expected = principal.as_ref().map(|p| &p.identity_headers[0]);
            assert_eq!(
                expected.map(|(n, v)| (n, v)),
                Some((name, value)),
                "a client-sent identity header was forwarded"
            );
        }
    }
    let single = |name: &str| {
        let all: Vec<&HeaderValue> = forwarded.get_all(name).iter().collect();
        assert!(all.len() <= 1, "{name} sent {} times", all.len());
        all.first().copied().cloned()
    };
    assert_eq!(single("x-request-id"), Some(id));
    assert_eq!(
        single("x-forwarded-for"),
        HeaderValue::from_str(&client_ip.to_string()).ok()
    );
    assert_eq!(single("host"), Some(upstream_host));
    assert_eq!(single("authorization"), Some(credential));
    assert_eq!(single("x-forwarded-host"), original_host);
    let _ = headers::head_size(&{
        let mut request = http::Request::new(());
        *request.headers_mut() = incoming;
        request
    });
}

fn build_headers(pairs: &[(Vec<u8>, Vec<u8>)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            map.append(name, value);
        }
    }
    map
}

/// `framing`: any bytes as an HTTP/1.1 client's stream through the framing guard's tracker, fed
/// whole and then in pieces cut where the first byte says: the verdict (which request broke
/// which rule, whether the tracker still follows the stream) must not depend on how the bytes
/// arrived.
pub fn framing(data: &[u8]) {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let run = |piece: usize| {
        let findings = Arc::new(Findings::default());
        let mut tracker = Tracker::new(8192, findings.clone());
        for part in stream.chunks(piece.max(1)) {
            tracker.feed(part);
        }
        (findings.violation(), tracker.watching())
    };
    let whole = run(stream.len());
    assert_eq!(run(usize::from(cut)), whole, "pieces of {cut} bytes");
    assert_eq!(run(1), whole, "byte by byte");
}

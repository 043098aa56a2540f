//! CORS (`[cors]`): preflights answered at the edge without a token, answers and refusals
//! readable by listed origins only, the agent's own CORS headers replaced.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::common::keys::{self, AUDIENCE, ISSUER, TestKey, claims};
use crate::common::{MockUpstream, Options, Reply, TestGateway, assert_problem};

const APP: &str = "https://app.acme-corp.io";

struct Setup {
    gateway: TestGateway,
    upstream: MockUpstream,
    key: TestKey,
    _dir: tempfile::TempDir,
}

async fn setup(cors: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::es256("es-1");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, keys::jwks(&[&key])).unwrap();
    let upstream = MockUpstream::start().await;
    let gateway = TestGateway::start_with(
        &upstream.url(),
        Options {
            extra: format!(
                "[auth]\nissuer = \"{ISSUER}\"\naudiences = [\"{AUDIENCE}\"]\n\
                 algorithms = [\"ES256\"]\njwks_file = \"{}\"\n\n[cors]\n{cors}\n",
                jwks.display()
            ),
            ..Options::default()
        },
    )
    .await;
    Setup {
        gateway,
        upstream,
        key,
        _dir: dir,
    }
}

async fn send(s: &Setup, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::builder().method(method).uri(s.gateway.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    s.gateway
        .client()
        .send_whole(request.body(Full::<Bytes>::default()).unwrap())
        .await
}

const LISTED: &str = "allowed_origins = [\"https://app.acme-corp.io\"]\n\
                      allowed_headers = [\"authorization\", \"content-type\"]\nmax_age = \"10m\"";

#[tokio::test]
async fn a_listed_origins_preflight_is_answered_without_a_token_and_not_forwarded() {
    let s = setup(LISTED).await;
    let reply = send(
        &s,
        "OPTIONS",
        "/v1/chat",
        &[
            ("origin", APP),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization, content-type",
            ),
        ],
    )
    .await;
    assert_eq!(reply.status, 204, "{}", reply.text());
    assert_eq!(reply.header("access-control-allow-origin"), Some(APP));
    assert_eq!(
        reply.header("access-control-allow-headers"),
        Some("authorization, content-type")
    );
    assert_eq!(
        reply.header("access-control-allow-methods"),
        Some("GET, POST, PUT, DELETE, OPTIONS")
    );
    assert_eq!(reply.header("access-control-max-age"), Some("600"));
    assert_eq!(reply.header("vary"), Some("origin"));
    assert!(reply.header("access-control-allow-credentials").is_none());
    assert!(
        s.upstream.seen_on("/v1/chat").is_empty(),
        "a preflight is never forwarded"
    );
    let record = s.gateway.audit_record(&reply.request_id()).await;
    assert_eq!(record["status"], 204);

    // Another origin's preflight: refused, nothing a browser could use, nothing forwarded.
    let reply = send(
        &s,
        "OPTIONS",
        "/v1/chat",
        &[
            ("origin", "https://evil.acme-corp.io.attacker.net"),
            ("access-control-request-method", "POST"),
        ],
    )
    .await;
    assert_problem(&reply, 403);
    assert!(reply.header("access-control-allow-origin").is_none());
    let record = s.gateway.audit_record(&reply.request_id()).await;
    assert_eq!(record["decision"], "origin_forbidden");
    assert!(s.upstream.seen_on("/v1/chat").is_empty());

    // An OPTIONS that is not a preflight is an ordinary request: it needs a token.
    let reply = send(&s, "OPTIONS", "/v1/chat", &[("origin", APP)]).await;
    assert_problem(&reply, 401);
    assert_eq!(reply.header("access-control-allow-origin"), Some(APP));
}

#[tokio::test]
async fn listed_origins_read_answers_and_refusals_others_read_nothing() {
    let s = setup(LISTED).await;
    let token = s.key.sign(&claims("browser-user"));
    let bearer = format!("Bearer {token}");

    // A refusal is readable by the page that caused it.
    let reply = send(&s, "GET", "/v1/models", &[("origin", APP)]).await;
    assert_problem(&reply, 401);
    assert_eq!(reply.header("access-control-allow-origin"), Some(APP));
    assert!(reply.headers.get_all("vary").iter().any(|v| v == "origin"));

    // An answer, with the agent's own wider policy replaced by the gateway's.
    let reply = send(
        &s,
        "GET",
        "/upstream-cors",
        &[("origin", APP), ("authorization", &bearer)],
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("access-control-allow-origin"), Some(APP));
    assert!(reply.header("access-control-allow-credentials").is_none());

    // Another origin gets the answer (the gateway is not a browser) but nothing that lets a
    // page read it, not even the agent's `*`.
    let reply = send(
        &s,
        "GET",
        "/upstream-cors",
        &[
            ("origin", "https://elsewhere.example"),
            ("authorization", &bearer),
        ],
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(reply.header("access-control-allow-origin").is_none());
    assert!(reply.header("access-control-allow-credentials").is_none());
    assert_eq!(s.upstream.seen_on("/upstream-cors").len(), 2);
}

#[tokio::test]
async fn credentials_and_any_origin() {
    let s = setup(
        "allowed_origins = [\"https://app.acme-corp.io\"]\nallow_credentials = true\n\
         expose_headers = [\"x-request-id\"]",
    )
    .await;
    let reply = send(&s, "GET", "/v1/models", &[("origin", APP)]).await;
    assert_eq!(
        reply.header("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(
        reply.header("access-control-expose-headers"),
        Some("x-request-id")
    );

    let any = setup("allowed_origins = [\"*\"]").await;
    let reply = send(
        &any,
        "GET",
        "/v1/models",
        &[("origin", "https://anywhere.example")],
    )
    .await;
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));

    // `*` with credentials is refused by check-config (and at start-up).
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::common::TestPki::create(dir.path());
    let text = crate::common::config_text(
        &pki,
        "http://127.0.0.1:8080",
        &dir.path().join("a.log"),
        &Options {
            extra: "[cors]\nallowed_origins = [\"*\"]\nallow_credentials = true\n".into(),
            ..Options::default()
        },
    );
    let path = crate::cases::binary::write_config(dir.path(), &text);
    let (code, out, _) = crate::cases::binary::portcullis(&["check-config", "--config", &path]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("cors.allowed_origins: \"*\" cannot be used with allow_credentials = true"),
        "{out}"
    );
}

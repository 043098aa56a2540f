//! The built binary: check-config, start-up refusal, SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{MockUpstream, Options, TestPki, config_text};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

pub(crate) fn portcullis(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("PORTCULLIS_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub(crate) fn write_config(dir: &std::path::Path, text: &str) -> String {
    let path = dir.join("portcullis.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// A config like the harness's, but listening on a fixed free port (a spawned binary cannot
/// report the port it got).
pub(crate) fn config_on_free_port(
    pki: &TestPki,
    upstream: &str,
    audit: &std::path::Path,
    options: &Options,
) -> (String, u16) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let text = config_text(pki, upstream, audit, options).replace(
        "listen = \"127.0.0.1:0\"\nshutdown_grace",
        &format!("listen = \"127.0.0.1:{port}\"\nshutdown_grace"),
    );
    (text, port)
}

/// Runs the binary with `path` and `envs`, stdout and stderr piped, and waits until it listens.
pub(crate) async fn run_listening(
    path: &str,
    port: u16,
    envs: &[(&str, &str)],
) -> std::process::Child {
    let child = Command::new(BIN)
        .args(["run", "--config", path])
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "binary never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}

#[test]
fn check_config_prints_the_checklist_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path());
    let good = config_text(
        &pki,
        "http://127.0.0.1:8080",
        &dir.path().join("a.log"),
        &Options::default(),
    );
    let path = write_config(dir.path(), &good);

    let (code, out, _) = portcullis(&["check-config", "--config", &path]);
    assert_eq!(code, 0, "{out}");
    for line in [
        "PASS configuration valid",
        "PASS TLS enabled",
        "WARN authentication configured",
        "WARN rate limiting configured",
        "WARN input validation limits set",
        "PASS audit log enabled",
        "WARN audit log tamper-evident",
        "PASS errors sanitised",
        "PASS admin listener only on loopback",
        "PASS no secret written inline in the file",
        "PASS security headers on",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(line)),
            "missing {line:?} in:\n{out}"
        );
    }
    // --strict turns the warnings into a failure.
    let (code, out, _) = portcullis(&["check-config", "--config", &path, "--strict"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("--strict"));

    // Parsed-but-not-enforced sections say so.
    let reference = std::fs::read_to_string("config/portcullis.toml")
        .unwrap()
        .replace("config/tls/cert.pem", &pki.cert_file.display().to_string())
        .replace("config/tls/key.pem", &pki.key_file.display().to_string());
    let path = write_config(dir.path(), &reference);
    let (code, out, _) = portcullis(&["check-config", "--config", &path]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("PASS authentication configured: a valid JWT (ES256) is required"),
        "{out}"
    );
    assert!(
        out.contains(
            "PASS rate limiting configured: 60 requests per 60s per user (in memory); \
             20/s per address, burst 40 before authentication"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "PASS input validation limits set: JSON bodies up to 1048576 bytes, 10000 characters, depth 64"
        ),
        "{out}"
    );
    assert!(
        out.contains("PASS audit log tamper-evident: hash chain on"),
        "{out}"
    );

    // Plain HTTP and a public admin port are warnings.
    let plain = good
        .replace(
            &format!("[server.tls]\ncert_file = \"{}\"", pki.cert_file.display()),
            "[unused]\ncert_file = \"x\"",
        )
        .replace(
            "[admin]\nlisten = \"127.0.0.1:0\"",
            "[admin]\nlisten = \"0.0.0.0:0\"",
        );
    let plain = plain
        .lines()
        .filter(|l| {
            !l.starts_with("[unused]") && !l.starts_with("cert_file") && !l.starts_with("key_file")
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = write_config(dir.path(), &plain);
    let (code, out, _) = portcullis(&["check-config", "--config", &path]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("WARN TLS enabled"), "{out}");
    assert!(
        out.contains("WARN admin listener only on loopback"),
        "{out}"
    );

    // A secret pasted into a value fails the checklist.
    let leaked = good.replace(
        "[audit]",
        "[headers]\ncontent_security_policy = \"Bearer abc.def.ghi\"\n\n[audit]",
    );
    let path = write_config(dir.path(), &leaked);
    let (code, out, _) = portcullis(&["check-config", "--config", &path]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL no secret written inline in the file: headers.content_security_policy"),
        "{out}"
    );
    assert!(
        !out.contains("abc.def.ghi"),
        "the secret itself is not printed"
    );

    // An invalid config exits 1 and names the key.
    let path = write_config(
        dir.path(),
        "[upstream]\nurl = \"http://127.0.0.1:1\"\nretries = 3\n",
    );
    let (code, out, _) = portcullis(&["check-config", "--config", &path]);
    assert_eq!(code, 1);
    assert!(
        out.contains("FAIL configuration valid:")
            && out.contains("line 3")
            && out.contains("retries"),
        "{out}"
    );
}

#[test]
fn run_refuses_a_bad_config_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "[server.tls]\ncert_file = \"missing.pem\"\nkey_file = \"missing.key\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n",
    );
    let (code, _, err) = portcullis(&["run", "--config", &path]);
    assert_eq!(code, 64);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("server.tls.cert_file") && err.contains("line 2"),
        "{err}"
    );

    let (code, _, err) = portcullis(&["--config", "/nonexistent/portcullis.toml"]);
    assert_eq!(code, 64);
    assert!(err.contains("cannot read the config file"), "{err}");
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let upstream = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path());
    let audit = dir.path().join("audit.log");
    let (text, port) = config_on_free_port(&pki, &upstream.url(), &audit, &Options::default());
    let path = write_config(dir.path(), &text);
    let mut child = run_listening(&path, port, &[]).await;
    let client = crate::common::TestClient::new(&pki, false);
    let url = format!("https://localhost:{port}/slow/700");
    let in_flight = tokio::spawn(async move { client.get(&url).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let reply = in_flight.await.unwrap();
    assert_eq!(
        reply.status, 200,
        "in-flight request finished after SIGTERM"
    );
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let log = std::fs::read_to_string(&audit).unwrap();
    assert!(
        log.contains(&reply.request_id()),
        "audit record flushed before exit"
    );
}

#[tokio::test]
async fn healthcheck_probes_the_admin_listener() {
    let upstream = MockUpstream::start().await;
    let gateway = crate::common::TestGateway::start(&upstream.url()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &format!(
            "[admin]\nlisten = \"{}\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n",
            gateway.admin
        ),
    );
    let probe = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            portcullis(&args)
        })
    };
    let (code, _, err) = probe(vec![
        "healthcheck".into(),
        "--live".into(),
        "--config".into(),
        path.clone(),
    ])
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (code, _, _) = probe(vec!["healthcheck".into(), "--config".into(), path.clone()])
            .await
            .unwrap();
        if code == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(gateway);
    let closed = write_config(
        dir.path(),
        "[admin]\nlisten = \"127.0.0.1:1\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n",
    );
    let (code, _, err) = probe(vec!["healthcheck".into(), "--config".into(), closed])
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach the admin listener"), "{err}");
}

/// Sends one HTTP/1.1 request over TLS without verifying the certificate (dev mode's is
/// self-signed) and returns the whole answer.
async fn insecure_request(addr: &str, request: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(TestPki::insecure_client_config());
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn dev_mode_prints_a_url_and_a_token_that_work() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(BIN)
        .arg("dev")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let banner = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap();
            let done = line.contains("Ctrl-C stops");
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    });
    let banner = tokio::time::timeout(Duration::from_secs(20), banner)
        .await
        .unwrap()
        .unwrap();
    let text = banner.join("\n");
    assert!(text.contains("DEV MODE - for local trials only"), "{text}");
    let gateway = banner
        .iter()
        .find_map(|l| l.trim().strip_prefix("gateway     https://"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_owned();
    let token = banner
        .iter()
        .map(|l| l.trim())
        .find(|l| l.starts_with("eyJ") && l.split('.').count() == 3)
        .unwrap()
        .to_owned();
    assert!(text.contains(&format!(
        "curl -k https://{gateway}/v1/chat -H 'authorization: Bearer {token}'"
    )));

    let body = r#"{"messages":[{"role":"user","content":"hello"}]}"#;
    let chat = |auth: String| {
        format!(
            "POST /v1/chat HTTP/1.1\r\nhost: {gateway}\r\n{auth}content-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let answer =
        insecure_request(&gateway, chat(format!("authorization: Bearer {token}\r\n"))).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("You said: hello"), "{answer}");
    let answer = insecure_request(&gateway, chat(String::new())).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("application/problem+json"));

    // The OpenAI SDKs' model list: the demo's one model, and a refusal in OpenAI's shape.
    let models = |auth: String| {
        format!("GET /v1/models HTTP/1.1\r\nhost: {gateway}\r\n{auth}connection: close\r\n\r\n")
    };
    let listed = insecure_request(
        &gateway,
        models(format!("authorization: Bearer {token}\r\n")),
    )
    .await;
    assert!(listed.starts_with("HTTP/1.1 200"), "{listed}");
    assert!(listed.contains("\"id\":\"portcullis-demo\""), "{listed}");
    let refused = insecure_request(&gateway, models(String::new())).await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    assert!(refused.contains("\"code\":\"auth_missing\""), "{refused}");

    // The MCP endpoint, as the banner's curl line calls it: run_shell and delete_repo hidden.
    assert!(text.contains(&format!(
        "curl -k https://{gateway}/mcp -H 'authorization: Bearer {token}'"
    )));
    let mcp = |message: &str| {
        format!(
            "POST /mcp HTTP/1.1\r\nhost: {gateway}\r\nauthorization: Bearer {token}\r\n\
             content-type: application/json\r\naccept: application/json, text/event-stream\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{message}",
            message.len()
        )
    };
    let listed = insecure_request(
        &gateway,
        mcp(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
    )
    .await;
    assert!(listed.starts_with("HTTP/1.1 200"), "{listed}");
    assert!(
        listed.contains("\"echo\"") && listed.contains("\"add\""),
        "{listed}"
    );
    assert!(
        !listed.contains("run_shell") && !listed.contains("delete_repo"),
        "{listed}"
    );
    let denied = insecure_request(
        &gateway,
        mcp(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"run_shell","arguments":{"command":"id"}}}"#),
    )
    .await;
    assert!(denied.starts_with("HTTP/1.1 200"), "{denied}");
    assert!(denied.contains("Unknown tool: run_shell"), "{denied}");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn upstream_credential_from_the_environment_is_sent_and_never_logged() {
    let upstream = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path());
    let options = Options {
        upstream: "auth_header_env = \"PORTCULLIS_TEST_SVC_TOKEN\"".into(),
        ..Options::default()
    };
    let (text, port) = config_on_free_port(
        &pki,
        &upstream.url(),
        &dir.path().join("audit.log"),
        &options,
    );
    let path = write_config(dir.path(), &text);
    let envs = [
        ("PORTCULLIS_TEST_SVC_TOKEN", "env-credential-456"),
        ("PORTCULLIS_LOG", "debug"),
    ];
    let child = run_listening(&path, port, &envs).await;
    let client = crate::common::TestClient::new(&pki, false);
    let reply = client
        .get(&format!("https://localhost:{port}/svc-env"))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        upstream.seen_on("/svc-env")[0].headers["authorization"],
        "Bearer env-credential-456"
    );
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    let audit = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    assert!(logs.contains("portcullis is serving"));
    assert!(!logs.contains("env-credential-456") && !audit.contains("env-credential-456"));
}

#[test]
fn check_config_warns_about_public_paths() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path());
    let auth = "[auth]\nalgorithms = [\"ES256\"]\njwks_url = \"https://idp.test/jwks.json\"\n";
    let options = Options {
        extra: format!("{auth}public_paths = [\"/v1/models\"]\n"),
        ..Options::default()
    };
    let text = config_text(
        &pki,
        "http://127.0.0.1:8080",
        &dir.path().join("a.log"),
        &options,
    );
    let path = write_config(dir.path(), &text);
    let (code, out, _) = portcullis(&["check-config", "--config", &path]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("WARN authentication configured: JWT required, but 1 public path(s) need no token: /v1/models"),
        "{out}"
    );
    let options = Options {
        extra: auth.to_owned(),
        ..Options::default()
    };
    let text = config_text(
        &pki,
        "http://127.0.0.1:8080",
        &dir.path().join("a.log"),
        &options,
    );
    let path = write_config(dir.path(), &text);
    let (_, out, _) = portcullis(&["check-config", "--config", &path]);
    assert!(out.contains("PASS authentication configured"), "{out}");
}

#[test]
fn kubernetes_example_passes_check_config_strict() {
    // The init container runs exactly this on the ConfigMap's config: it must pass as shipped,
    // once the files its Secrets provide exist.
    const SECRETS: &str = "/run/secrets/portcullis/";
    let yaml = std::fs::read_to_string("config/kubernetes/sidecar.yaml").unwrap();
    let toml = crate::common::examples::kubernetes_config_toml(&yaml);
    assert!(toml.contains(SECRETS));
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let auth = dir.path().join("auth");
    std::fs::create_dir_all(&tls).unwrap();
    std::fs::create_dir_all(&auth).unwrap();
    let pki = TestPki::create(&tls);
    std::fs::rename(&pki.cert_file, tls.join("tls.crt")).unwrap();
    std::fs::rename(&pki.key_file, tls.join("tls.key")).unwrap();
    let key = crate::common::keys::TestKey::es256("idp-1");
    std::fs::write(auth.join("jwks.json"), crate::common::keys::jwks(&[&key])).unwrap();
    let redis = dir.path().join("redis");
    std::fs::create_dir_all(&redis).unwrap();
    std::fs::write(redis.join("url"), "redis://:made-at-test-time@redis:6379/").unwrap();
    let text = toml.replace(SECRETS, &format!("{}/", dir.path().display()));

    // As shipped, the identity provider is a placeholder: the strict check (and so the pod's
    // init container) refuses it, naming the key, and for nothing else.
    let path = write_config(dir.path(), &text);
    let (code, out, _) = portcullis(&["check-config", "--strict", "--config", &path]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("auth.issuer names the placeholder host auth.example.com"),
        "{out}"
    );
    assert!(
        out.contains("result: FAIL, 0 failed, 1 warnings (--strict: warnings fail)"),
        "{out}"
    );

    // Filled in, every item passes.
    let filled = text.replace(PLACEHOLDER_ISSUER, FILLED_ISSUER);
    let path = write_config(dir.path(), &filled);
    let (code, out, err) = portcullis(&["check-config", "--strict", "--config", &path]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("result: OK, 0 warnings"), "{out}");
}

/// The identity provider the shipped examples name, to be changed by the operator.
const PLACEHOLDER_ISSUER: &str = "https://auth.example.com/";
/// What an operator puts in its place.
const FILLED_ISSUER: &str = "https://login.acme-corp.io/";

#[test]
fn api_key_new_prints_a_key_and_the_line_that_admits_it() {
    let (code, stdout, stderr) = portcullis(&[
        "api-key",
        "new",
        "--user",
        "reports-bot",
        "--scope",
        "agent:use",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let key = stdout.trim();
    assert!(key.starts_with("pcl_") && key.len() == 47, "{key}");
    let line = stderr.lines().last().unwrap();
    assert!(
        line.starts_with("sha256:") && line.ends_with(" reports-bot agent:use"),
        "{line}"
    );
    assert!(!stderr.contains(key), "the key was printed with its line");
    let list = portcullis::api_keys::ApiKeyList::parse(line).unwrap();
    assert_eq!(list.len(), 1);
    let (_, again, _) = portcullis(&["api-key", "new", "--user", "reports-bot"]);
    assert_ne!(again.trim(), key, "two keys alike");
    // An [auth] with only API keys is a valid config.
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, format!("{line}\n")).unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[upstream]\nurl = \"http://127.0.0.1:9\"\n\n[auth.api_keys]\nfile = \"{}\"\n",
            keys.display()
        ),
    );
    let (code, stdout, stderr) = portcullis(&["check-config", "--config", &config]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    std::fs::write(&keys, "sha256:not-hex reports-bot\n").unwrap();
    let (code, stdout, stderr) = portcullis(&["check-config", "--config", &config]);
    assert_ne!(code, 0);
    assert!(
        (stdout.clone() + &stderr).contains("auth.api_keys.file"),
        "{stdout}{stderr}"
    );
}

#[test]
fn scan_finds_secrets_in_files_without_printing_them_and_the_hook_refuses_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // A key in the AWS format, made now: no such literal sits in the repository.
    let key: String = format!(
        "AKIA{}",
        (0..16)
            .map(|i| char::from(b'A' + ((i * 7 + 3) % 26) as u8))
            .collect::<String>()
    );
    std::fs::create_dir_all(root.join("src")).unwrap();
    std::fs::write(root.join("src/clean.rs"), "fn main() {}\n").unwrap();
    std::fs::write(
        root.join("src/config.py"),
        format!("import os\n\nAWS_KEY = \"{key}\"\n"),
    )
    .unwrap();
    std::fs::create_dir_all(root.join(".git")).unwrap();
    std::fs::write(root.join(".git/leak"), &key).unwrap();
    std::fs::write(
        root.join("image.bin"),
        [b"\x00\x01".as_slice(), key.as_bytes()].concat(),
    )
    .unwrap();
    let (code, stdout, stderr) = portcullis(&["scan", root.to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let expected = format!(
        "{}:3: secret.aws_access_key_id",
        root.join("src/config.py").display()
    );
    assert_eq!(stdout.trim(), expected, "{stdout}");
    assert!(!stdout.contains(&key) && !stderr.contains(&key));
    let (code, _, _) = portcullis(&["scan", root.join("src/clean.rs").to_str().unwrap()]);
    assert_eq!(code, 0);
    let (code, _, stderr) = portcullis(&["scan", root.join("missing").to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");

    // The ready pre-commit hook, in a real repository.
    let repo = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(repo.path())
            .output()
            .unwrap()
    };
    if !git(&["init", "-q"]).status.success() {
        println!("SKIPPED: git is not installed");
        return;
    }
    let hook = std::fs::canonicalize("scripts/pre-commit").unwrap();
    let run_hook = || {
        Command::new(&hook)
            .current_dir(repo.path())
            .env("PORTCULLIS", BIN)
            .output()
            .unwrap()
    };
    std::fs::write(repo.path().join("notes.md"), "nothing to see\n").unwrap();
    git(&["add", "notes.md"]);
    assert!(run_hook().status.success(), "a clean commit was refused");
    std::fs::write(repo.path().join("deploy.env"), format!("KEY={key}\n")).unwrap();
    git(&["add", "deploy.env"]);
    let refused = run_hook();
    assert!(!refused.status.success(), "a secret was committed");
    let said = String::from_utf8_lossy(&refused.stdout).into_owned()
        + &String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("deploy.env:1: secret.aws_access_key_id"),
        "{said}"
    );
    assert!(!said.contains(&key));
}

/// Starts the binary on `options`, stops it with SIGTERM, and returns its stderr.
async fn operational_logs(options: &Options) -> String {
    let upstream = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path());
    let (text, port) = config_on_free_port(
        &pki,
        &upstream.url(),
        &dir.path().join("audit.log"),
        options,
    );
    let path = write_config(dir.path(), &text);
    let mut child = run_listening(&path, port, &[]).await;
    // Read stderr as it comes, and stop the gateway only once it has said it serves (a SIGTERM
    // before its signal handler is in place would end it without a word).
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut logs = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !logs.contains("portcullis is serving") {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("never served: {logs}"));
        logs.push_str(&line);
        logs.push('\n');
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    reader.join().unwrap();
    logs.extend(rx.try_iter().map(|l| l + "\n"));
    logs
}

#[tokio::test]
async fn operational_logs_are_plain_off_a_terminal_and_json_when_configured() {
    // stderr is a pipe here, as under a log collector or the journal: no colour codes, and the
    // start-up line names the admin address plainly.
    let logs = operational_logs(&Options::default()).await;
    assert!(!logs.contains('\u{1b}'), "{logs:?}");
    let serving = logs
        .lines()
        .find(|l| l.contains("portcullis is serving"))
        .unwrap_or_else(|| panic!("{logs}"));
    assert!(serving.contains(" admin=127.0.0.1:"), "{serving}");
    assert!(!serving.contains("Some("), "{serving}");

    let json = Options {
        server: "log_format = \"json\"".into(),
        ..Options::default()
    };
    let logs = operational_logs(&json).await;
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let serving = lines
        .iter()
        .find(|l| l["fields"]["message"] == "portcullis is serving")
        .unwrap_or_else(|| panic!("{logs}"));
    assert_eq!(serving["level"], "INFO");
    assert!(
        serving["fields"]["admin"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{serving}"
    );
}

#[test]
fn help_offers_config_only_where_a_config_is_read() {
    let reads = [
        vec!["run"],
        vec!["check-config"],
        vec!["healthcheck"],
        vec!["mcp-pins"],
        vec!["check-rules"],
    ];
    let ignores = [
        vec!["token"],
        vec!["api-key", "new"],
        vec!["scan"],
        vec!["dev"],
        vec!["audit-verify"],
    ];
    for (command, expected) in reads
        .iter()
        .map(|c| (c, true))
        .chain(ignores.iter().map(|c| (c, false)))
    {
        let mut args = command.clone();
        args.push("--help");
        let (code, out, err) = portcullis(&args);
        assert_eq!(code, 0, "{command:?}: {err}");
        assert_eq!(out.contains("--config"), expected, "{command:?}:\n{out}");
        // The environment variable is named once, by clap.
        assert!(out.matches("PORTCULLIS_CONFIG").count() <= 1, "{out}");
    }
    let (_, out, _) = portcullis(&["check-config", "--help"]);
    assert!(out.contains("[env: PORTCULLIS_CONFIG=]"), "{out}");
}

#[test]
fn check_config_names_the_units_of_a_duration() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path());
    for value in ["\"10\"", "10"] {
        let options = Options {
            server: format!("body_timeout = {value}"),
            ..Options::default()
        };
        let text = config_text(
            &pki,
            "http://127.0.0.1:8080",
            &dir.path().join("a.log"),
            &options,
        );
        let path = write_config(dir.path(), &text);
        let (code, out, _) = portcullis(&["check-config", "--config", &path]);
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains("server.body_timeout:") && out.contains("such as 10s, 500ms, 5m or 1h"),
            "{out}"
        );
    }
}

#[test]
fn check_config_warns_on_placeholders_unbound_tokens_and_broad_public_paths() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path());
    let jwks = dir.path().join("jwks.json");
    let key = crate::common::keys::TestKey::es256("k1");
    std::fs::write(&jwks, crate::common::keys::jwks(&[&key])).unwrap();
    let check = |auth: &str| {
        let options = Options {
            extra: format!(
                "[auth]\nalgorithms = [\"ES256\"]\njwks_file = \"{}\"\n{auth}\n",
                jwks.display()
            ),
            ..Options::default()
        };
        let text = config_text(
            &pki,
            "http://127.0.0.1:8080",
            &dir.path().join("a.log"),
            &options,
        );
        let path = write_config(dir.path(), &text);
        portcullis(&["check-config", "--config", &path]).1
    };

    let bound = "issuer = \"https://login.acme-corp.io/\"\naudiences = [\"agent-api\"]";
    let out = check(bound);
    assert!(out.contains("PASS tokens bound to this gateway"), "{out}");
    assert!(
        out.contains("PASS no placeholder or loopback identity hosts"),
        "{out}"
    );

    let out = check("");
    assert!(
        out.contains("WARN tokens bound to this gateway: [auth] sets neither issuer nor audiences"),
        "{out}"
    );
    let out = check("issuer = \"https://login.acme-corp.io/\"");
    assert!(
        out.contains("WARN tokens bound to this gateway: [auth] audiences is empty"),
        "{out}"
    );

    for (issuer, host) in [
        (
            "https://auth.example.com/",
            "placeholder host auth.example.com",
        ),
        (
            "https://idp.example.org/realms/x",
            "placeholder host idp.example.org",
        ),
        ("http://localhost:8080/", "loopback host localhost"),
        ("https://127.0.0.1/", "loopback host 127.0.0.1"),
    ] {
        let out = check(&format!(
            "issuer = \"{issuer}\"\naudiences = [\"agent-api\"]"
        ));
        assert!(
            out.contains(&format!(
                "WARN no placeholder or loopback identity hosts: auth.issuer names the {host}"
            )),
            "{issuer}: {out}"
        );
    }

    for (public, why) in [
        ("/", "is the root of the whole site"),
        ("/v1/", "ends in / as if it were a prefix"),
        ("/v1/*", "holds a wildcard"),
    ] {
        let out = check(&format!(
            "{bound}\npublic_paths = [\"/healthz\", \"{public}\"]"
        ));
        assert!(
            out.contains(&format!(
                "WARN authentication configured: JWT required, but the public path {public} {why}"
            )),
            "{public}: {out}"
        );
    }
    let out = check(&format!("{bound}\npublic_paths = [\"/healthz\"]"));
    assert!(
        out.contains("WARN authentication configured: JWT required, but 1 public path(s) need no token: /healthz"),
        "{out}"
    );
}

/// `GET path` over HTTP/1.1 to `port` on loopback; returns the status line and the body.
fn plain_get(port: u16, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: scraper\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

#[tokio::test]
async fn metrics_listener_serves_metrics_and_nothing_else_on_any_address() {
    let upstream = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path());
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let options = Options {
        extra: format!("[metrics]\nlisten = \"0.0.0.0:{metrics_port}\"\n"),
        ..Options::default()
    };
    let (text, port) = config_on_free_port(
        &pki,
        &upstream.url(),
        &dir.path().join("audit.log"),
        &options,
    );
    let path = write_config(dir.path(), &text);

    // A non-loopback metrics address passes the checklist (the admin listener stays on loopback).
    let (_, out, _) = portcullis(&["check-config", "--config", &path]);
    assert!(
        out.contains(&format!(
            "PASS metrics listener serves only metrics: [metrics] on 0.0.0.0:{metrics_port}"
        )),
        "{out}"
    );
    assert!(
        out.contains("PASS admin listener only on loopback"),
        "{out}"
    );

    let child = run_listening(&path, port, &[]).await;
    let client = crate::common::TestClient::new(&pki, false);
    let reply = client
        .get(&format!("https://localhost:{port}/counted"))
        .await;
    assert_eq!(reply.status, 200);
    let (status, body) = plain_get(metrics_port, "/metrics");
    assert!(status.contains(" 200 "), "{status}");
    assert!(
        body.lines()
            .any(|l| l.starts_with("portcullis_requests_total{") && l.contains("status=\"200\"")),
        "{body}"
    );
    for other in ["/healthz", "/readyz", "/", "/metrics/../readyz"] {
        let (status, _) = plain_get(metrics_port, other);
        assert!(status.contains(" 404 "), "{other}: {status}");
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(
        logs.contains(&format!("metrics=0.0.0.0:{metrics_port}")),
        "{logs}"
    );
}

// curl runs synchronously here: the mock upstream answers from another worker thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_writes_a_config_that_passes_strict_once_the_identity_provider_is_filled_in() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc/portcullis");
    let etc_str = etc.display().to_string();
    let (code, out, err) = portcullis(&["init", &etc_str]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Next, edit the lines marked CHANGE"), "{out}");
    let config = etc.join("portcullis.toml");
    let config_str = config.display().to_string();
    let (code, _, err) = portcullis(&["init", &etc_str]);
    assert_eq!(code, 1);
    assert!(err.contains("already exists"), "{err}");

    // As written: valid, and refused by --strict for its placeholder identity provider alone.
    let (code, out, _) = portcullis(&["check-config", "--strict", "--config", &config_str]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("PASS configuration valid"), "{out}");
    assert!(
        out.contains("WARN no placeholder or loopback identity hosts: auth.oidc_issuer names the placeholder host idp.example.com"),
        "{out}"
    );
    assert!(out.contains("1 warnings (--strict"), "{out}");
    assert!(out.contains("the certificate is self-signed"), "{out}");

    // The operator fills in the lines marked CHANGE: a real provider (the OpenID provider of
    // the OIDC test when installed), the agent, and (for this test) free ports.
    let upstream = MockUpstream::start().await;
    let idp_dir = tempfile::tempdir().unwrap();
    let idp_pki = TestPki::create(idp_dir.path());
    let idp = crate::common::oidc::OidcProvider::start(&idp_pki, "init-key");
    let issuer = idp
        .as_ref()
        .map_or_else(|| "https://login.acme-corp.io/".to_owned(), |p| p.issuer());
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (port, admin) = (free(), free());
    let mut text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            "oidc_issuer = \"https://idp.example.com/\"",
            &format!(
                "oidc_issuer = \"{issuer}\"\njwks_ca_file = \"{}\"",
                idp_pki.ca_file.display()
            ),
        )
        .replace("http://127.0.0.1:8080", &upstream.url())
        .replace("0.0.0.0:8443", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:9901", &format!("127.0.0.1:{admin}"));
    text = text.replace("# required_scopes", "required_scopes");
    std::fs::write(&config, &text).unwrap();
    if idp.is_some() {
        // A provider on loopback is WARNed about, as it should be in production; the strict
        // check is made with a real-looking host instead.
        let strict = text.replace(&issuer, "https://login.acme-corp.io/");
        let strict_path = etc.join("strict.toml");
        std::fs::write(&strict_path, strict).unwrap();
        let (code, out, _) = portcullis(&[
            "check-config",
            "--strict",
            "--config",
            &strict_path.display().to_string(),
        ]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("result: OK, 0 warnings"), "{out}");
    } else {
        let (code, out, _) = portcullis(&["check-config", "--strict", "--config", &config_str]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("result: OK, 0 warnings"), "{out}");
    }

    // It runs, from another working directory, with the trial certificate.
    let child = run_listening(&config_str, port, &[]).await;
    let curl = |token: Option<&str>| {
        let mut args = vec![
            "-sS".to_owned(),
            "-o".to_owned(),
            "/dev/null".to_owned(),
            "-w".to_owned(),
            "%{http_code}".to_owned(),
            "--cacert".to_owned(),
            etc.join("tls/cert.pem").display().to_string(),
            format!("https://localhost:{port}/from-init"),
        ];
        if let Some(token) = token {
            args.push("-H".to_owned());
            args.push(format!("authorization: Bearer {token}"));
        }
        let out = Command::new("curl").args(&args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(curl(None), "401");
    if let Some(idp) = &idp {
        let token = idp.token();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = curl(Some(&token));
            if status == "200" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "provider token never accepted: {status}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(upstream.seen_on("/from-init").len(), 1);
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let _ = tokio::task::spawn_blocking(move || child.wait_with_output()).await;
}

//! The built binary: check-config, start-up refusal, SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{MockUpstream, Options, TestPki, config_text};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn portcullis(args: &[&str]) -> (i32, String, String) {
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

fn write_config(dir: &std::path::Path, text: &str) -> String {
    let path = dir.join("portcullis.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
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
        out.contains("WARN authentication configured: [auth] parsed but not yet enforced"),
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
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let audit = dir.path().join("audit.log");
    let text = config_text(&pki, &upstream.url(), &audit, &Options::default()).replace(
        "listen = \"127.0.0.1:0\"\nshutdown_grace",
        &format!("listen = \"127.0.0.1:{port}\"\nshutdown_grace"),
    );
    let path = write_config(dir.path(), &text);
    let mut child = Command::new(BIN)
        .args(["run", "--config", &path])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = crate::common::TestClient::new(&pki, false);
    let url = format!("https://localhost:{port}/slow/700");
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "binary never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

//! Reload without a restart: SIGHUP under load, refused configs, carried-over limiter state,
//! rotated keys and certificates (including the symlink swap of a Kubernetes Secret mount).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::binary::run_listening;
use crate::common::keys::{AUDIENCE, ISSUER, TestKey, claims};
use crate::common::{MockUpstream, Options, TestClient, TestGateway, TestPki, config_text};

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

async fn admin_metric(admin: u16, series: &str) -> f64 {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let uri = format!("http://127.0.0.1:{admin}/metrics").parse().unwrap();
    let Ok(response) = client.get(uri).await else {
        return -1.0;
    };
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

async fn wait_for_metric(admin: u16, series: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while admin_metric(admin, series).await != value {
        assert!(Instant::now() < deadline, "{series} never reached {value}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn hangup(child: &std::process::Child) {
    let sent = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// Requests from `tasks` keep-alive clients and one client that opens a new TLS connection for
/// every request, until `stop`; every answer that is not a 200 counts as a failure.
fn steady_load(
    pki: &Arc<TestPki>,
    port: u16,
    tasks: usize,
    stop: &Arc<AtomicBool>,
    sent: &Arc<AtomicU64>,
    failed: &Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..=tasks)
        .map(|task| {
            let (pki, stop, sent, failed) =
                (pki.clone(), stop.clone(), sent.clone(), failed.clone());
            tokio::spawn(async move {
                let url = format!("https://localhost:{port}/load/{task}");
                let mut client = TestClient::new(&pki, false);
                while !stop.load(Ordering::Relaxed) {
                    if task == tasks {
                        client = TestClient::new(&pki, false);
                    }
                    let ok = client.try_get(&url).await.is_ok_and(|r| r.status == 200);
                    sent.fetch_add(1, Ordering::Relaxed);
                    failed.fetch_add(u64::from(!ok), Ordering::Relaxed);
                }
            })
        })
        .collect()
}

#[tokio::test]
async fn sighup_reloads_ten_times_under_load_without_a_failed_request() {
    let upstream = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Arc::new(TestPki::create(dir.path()));
    let audit = dir.path().join("audit.log");
    let (port, admin) = (free_port(), free_port());
    let config = |csp: &str| {
        let options = Options {
            extra: format!("[headers]\ncontent_security_policy = \"{csp}\"\n"),
            ..Options::default()
        };
        config_text(&pki, &upstream.url(), &audit, &options)
            .replacen("127.0.0.1:0", &format!("127.0.0.1:{port}"), 1)
            .replacen("127.0.0.1:0", &format!("127.0.0.1:{admin}"), 1)
    };
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, config("default-src 'none'")).unwrap();
    let mut child = run_listening(&path.display().to_string(), port, &[]).await;
    let first_serial = pki.served_serial(([127, 0, 0, 1], port).into()).await;

    let (stop, sent, failed) = Default::default();
    let load = steady_load(&pki, port, 4, &stop, &sent, &failed);
    let ok_series = "portcullis_config_reloads_total{result=\"ok\"}";
    let failed_series = "portcullis_config_reload_failures_total";
    let probe = TestClient::new(&pki, false);
    let mut reloads_ok = 0.0;
    for round in 0..10 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        match round {
            3 => {
                // A broken file is refused; the running configuration keeps serving.
                std::fs::write(&path, "[server\nlisten = ").unwrap();
                hangup(&child);
                wait_for_metric(admin, failed_series, 1.0).await;
            }
            6 => {
                // A renewed certificate, picked up by the reload, served to new connections.
                pki.reissue(0x6006, &pki.cert_file, &pki.key_file);
                std::fs::write(&path, config("default-src 'none'; sandbox")).unwrap();
                hangup(&child);
                reloads_ok += 1.0;
                wait_for_metric(admin, ok_series, reloads_ok).await;
            }
            _ => {
                let csp = format!("default-src 'none'; report-to r{round}");
                std::fs::write(&path, config(&csp)).unwrap();
                hangup(&child);
                reloads_ok += 1.0;
                wait_for_metric(admin, ok_series, reloads_ok).await;
                let reply = probe
                    .get(&format!("https://localhost:{port}/probe/{round}"))
                    .await;
                assert_eq!(reply.header("content-security-policy"), Some(csp.as_str()));
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let new_serial = pki.served_serial(([127, 0, 0, 1], port).into()).await;
    assert_ne!(new_serial, first_serial);
    assert_eq!(new_serial, TestPki::file_serial(&pki.cert_file));
    assert_eq!(admin_metric(admin, failed_series).await, 1.0);
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!(
        "reload under load: 10 SIGHUPs (9 applied, 1 refused), {sent} requests, {failed} failed"
    );
    assert!(sent > 100, "the load kept running ({sent} requests)");
    assert_eq!(failed, 0, "no request failed during the reloads");

    // logrotate's move-then-signal: SIGUSR1 reopens the audit file at its configured path.
    let rotated = dir.path().join("audit.log.1");
    std::fs::rename(&audit, &rotated).unwrap();
    let sent = Command::new("kill")
        .args(["-USR1", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let id = loop {
        let reply = probe
            .get(&format!("https://localhost:{port}/after-rotation"))
            .await;
        let id = reply.request_id();
        tokio::time::sleep(Duration::from_millis(50)).await;
        if std::fs::read_to_string(&audit).is_ok_and(|log| log.contains(&id)) {
            break id;
        }
        assert!(Instant::now() < deadline, "no new audit file after SIGUSR1");
    };
    let old_log = std::fs::read_to_string(&rotated).unwrap();
    assert!(old_log.lines().count() > 100);
    assert!(!old_log.contains(&id));

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    child.wait().unwrap();
    assert_eq!(
        stderr.matches("configuration reload refused").count(),
        1,
        "one line for the refused reload: {stderr}"
    );
}

#[tokio::test]
async fn an_invalid_reload_is_refused_and_the_running_config_stays() {
    let upstream = MockUpstream::start().await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let broken = Options {
        upstream: "retries = 3".to_owned(),
        ..Options::default()
    };
    assert!(!gateway.reload(&broken).await, "unknown key refused");
    let unbuildable = Options {
        extra: "[auth]\nalgorithms = [\"ES256\"]\n".to_owned(),
        ..Options::default()
    };
    assert!(
        !gateway.reload(&unbuildable).await,
        "auth without keys refused"
    );
    assert_eq!(
        gateway
            .metric("portcullis_config_reload_failures_total")
            .await,
        2.0
    );
    let reply = gateway.client().get(&gateway.url("/still")).await;
    assert_eq!(reply.status, 200, "the running configuration keeps serving");

    let limited = Options {
        extra: "[rate_limit.per_ip]\nrequests_per_second = 1\nburst = 1\n".to_owned(),
        ..Options::default()
    };
    assert!(gateway.reload(&limited).await);
    assert_eq!(
        gateway
            .metric("portcullis_config_reloads_total{result=\"ok\"}")
            .await,
        1.0
    );
    let client = gateway.client();
    assert_eq!(client.get(&gateway.url("/a")).await.status, 200);
    assert_eq!(
        client.get(&gateway.url("/b")).await.status,
        429,
        "the new policy is in force"
    );
}

/// A gateway with HS256 authentication from a secret file and a per-user limit.
fn authenticated(dir: &Path, key: &TestKey, limit: &str) -> Options {
    let secret = dir.join(format!("{}.secret", key.kid));
    std::fs::write(&secret, key.secret.as_ref().unwrap()).unwrap();
    Options {
        extra: format!(
            "[auth]\nissuer = \"{ISSUER}\"\naudiences = [\"{AUDIENCE}\"]\nalgorithms = [\"HS256\"]\n\n\
             [[auth.hmac_keys]]\nkid = \"{}\"\nsecret_file = \"{}\"\n\n[rate_limit]\n{limit}\n",
            key.kid,
            secret.display()
        ),
        ..Options::default()
    }
}

async fn call(gateway: &TestGateway, token: &str) -> u16 {
    gateway
        .client()
        .send_whole(
            Request::get(gateway.url("/limited"))
                .header("authorization", format!("Bearer {token}"))
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await
        .status
        .as_u16()
}

#[tokio::test]
async fn limiter_state_survives_a_reload_unless_the_limits_change() {
    let upstream = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::hs256("hs-1");
    let limits = "requests = 3\nwindow = \"60s\"";
    let options = authenticated(dir.path(), &key, limits);
    let gateway = TestGateway::start_with(&upstream.url(), options.clone()).await;
    let token = key.sign(&claims("reloaded-user"));
    for _ in 0..3 {
        assert_eq!(call(&gateway, &token).await, 200);
    }
    assert_eq!(call(&gateway, &token).await, 429);

    // A reload that changes something else keeps the count: still limited.
    let mut headers_changed = options.clone();
    headers_changed.extra += "\n[headers]\ncontent_security_policy = \"default-src 'self'\"\n";
    assert!(gateway.reload(&headers_changed).await);
    assert_eq!(call(&gateway, &token).await, 429, "count carried over");

    // New limits start new counts.
    let raised = authenticated(dir.path(), &key, "requests = 5\nwindow = \"60s\"");
    assert!(gateway.reload(&raised).await);
    assert_eq!(call(&gateway, &token).await, 200, "new limits, new window");
}

#[tokio::test]
async fn a_reload_rotates_signing_keys() {
    let upstream = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (TestKey::hs256("hs-old"), TestKey::hs256("hs-new"));
    let limits = "requests = 100\nwindow = \"60s\"";
    let options = authenticated(dir.path(), &old, limits);
    let gateway = TestGateway::start_with(&upstream.url(), options).await;
    let (old_token, new_token) = (old.sign(&claims("u")), new.sign(&claims("u")));
    assert_eq!(call(&gateway, &old_token).await, 200);
    assert_eq!(call(&gateway, &new_token).await, 401);

    let rotated = authenticated(dir.path(), &new, limits);
    assert!(gateway.reload(&rotated).await);
    assert_eq!(
        call(&gateway, &new_token).await,
        200,
        "the new key is in force"
    );
    assert_eq!(
        call(&gateway, &old_token).await,
        401,
        "a token of the removed key is refused, even though it was verified and cached"
    );
}

/// Points `link` at `target` atomically, as Kubernetes swaps a Secret's `..data` link.
fn swap_link(link: &Path, target: &str) {
    let staged = link.parent().unwrap().join("..data_tmp");
    let _ = std::fs::remove_file(&staged);
    std::os::unix::fs::symlink(target, &staged).unwrap();
    std::fs::rename(&staged, link).unwrap();
}

/// One request on an already open HTTP/1.1 connection.
async fn status_on(conn: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>) -> u16 {
    let request = Request::get("/kept")
        .header("host", "localhost")
        .body(Full::default())
        .unwrap();
    let response = conn.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    response.into_body().collect().await.unwrap();
    status
}

#[tokio::test]
async fn certificate_files_are_watched_through_a_symlink_swap() {
    let upstream = MockUpstream::start().await;
    let gateway = TestGateway::start_with(
        &upstream.url(),
        Options {
            tls: "watch_interval = \"100ms\"".to_owned(),
            ..Options::default()
        },
    )
    .await;
    let pki = gateway.pki.clone();
    let expiry = gateway
        .metric("portcullis_tls_certificate_expiry_timestamp_seconds")
        .await;
    assert!(expiry > 1.7e9, "expiry published: {expiry}");

    // Turn the files into a Secret-mount layout: cert.pem -> ..data/cert.pem -> ..v1/cert.pem.
    let dir = pki.cert_file.parent().unwrap().to_owned();
    let first = pki.served_serial(gateway.addr).await;
    std::fs::create_dir(dir.join("..v1")).unwrap();
    for name in ["cert.pem", "key.pem"] {
        std::fs::rename(dir.join(name), dir.join("..v1").join(name)).unwrap();
        std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).unwrap();
    }
    swap_link(&dir.join("..data"), "..v1");

    // A connection opened before the rotation.
    let connector = tokio_rustls::TlsConnector::from(pki.client_config(&[b"http/1.1"]));
    let tcp = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let (mut kept, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    assert_eq!(status_on(&mut kept).await, 200);

    std::fs::create_dir(dir.join("..v2")).unwrap();
    pki.reissue(
        0x2002,
        &dir.join("..v2/cert.pem"),
        &dir.join("..v2/key.pem"),
    );
    swap_link(&dir.join("..data"), "..v2");
    let expected = TestPki::file_serial(&dir.join("..v2/cert.pem"));
    crate::common::wait_until("the rotated certificate is served", || async {
        pki.served_serial(gateway.addr).await == expected
    })
    .await;
    assert_ne!(expected, first);
    assert_eq!(
        gateway
            .metric("portcullis_tls_certificate_reloads_total{result=\"ok\"}")
            .await,
        1.0
    );
    assert_eq!(
        status_on(&mut kept).await,
        200,
        "the open connection is undisturbed"
    );

    // A broken certificate is refused and the good one kept.
    std::fs::create_dir(dir.join("..v3")).unwrap();
    std::fs::write(
        dir.join("..v3/cert.pem"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n",
    )
    .unwrap();
    std::fs::copy(dir.join("..v2/key.pem"), dir.join("..v3/key.pem")).unwrap();
    swap_link(&dir.join("..data"), "..v3");
    crate::common::wait_until("the broken certificate is refused", || async {
        gateway
            .metric("portcullis_tls_certificate_reloads_total{result=\"failed\"}")
            .await
            == 1.0
    })
    .await;
    assert_eq!(pki.served_serial(gateway.addr).await, expected);
    let reply = gateway.client().get(&gateway.url("/after")).await;
    assert_eq!(reply.status, 200);
}

async fn call_with(gateway: &TestGateway, token: &str) -> crate::common::Reply {
    gateway
        .client()
        .send_whole(
            Request::get(gateway.url("/revocable"))
                .header("authorization", format!("Bearer {token}"))
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await
}

#[tokio::test]
async fn revoked_tokens_and_subjects_are_refused_even_when_cached() {
    let upstream = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::hs256("hs-1");
    let revoked = dir.path().join("revoked.txt");
    std::fs::write(&revoked, "# nothing revoked yet\n").unwrap();
    let mut options = authenticated(dir.path(), &key, "requests = 1000\nwindow = \"60s\"");
    options.extra = options.extra.replace(
        "[[auth.hmac_keys]]",
        &format!(
            "revocation_file = \"{}\"\n\n[[auth.hmac_keys]]",
            revoked.display()
        ),
    );
    let gateway = TestGateway::start_with(&upstream.url(), options).await;
    let token = |sub: &str, jti: &str| {
        let mut c = claims(sub);
        c["jti"] = jti.into();
        key.sign(&c)
    };
    let (alice, bob, carol) = (
        token("alice", "t-1"),
        token("bob", "t-2"),
        token("carol", "t-3"),
    );
    for t in [&alice, &bob, &carol] {
        assert_eq!(call(&gateway, t).await, 200, "verified and now cached");
    }

    std::fs::write(&revoked, "jti t-1\nsub bob\n").unwrap();
    crate::common::wait_until("the revocation applies", || async {
        call(&gateway, &alice).await == 401
    })
    .await;
    let seen = upstream.seen().len();
    let reply = call_with(&gateway, &bob).await;
    let problem = crate::common::assert_problem(&reply, 401);
    assert_eq!(problem["type"], "urn:portcullis:problem:invalid-token");
    let record = gateway.audit_record(&reply.request_id()).await;
    assert_eq!(record["decision"], "auth_revoked");
    assert_eq!(record["rule"], "token_revoked");
    assert_eq!(call(&gateway, &carol).await, 200, "others unaffected");
    assert_eq!(
        upstream.seen().len(),
        seen + 1,
        "only carol's request was forwarded"
    );

    // A broken list is refused; the list in force stays.
    std::fs::write(&revoked, "user carol\n").unwrap();
    crate::common::wait_until("the broken list is refused", || async {
        gateway
            .metric("portcullis_revocation_list_reloads_total{result=\"failed\"}")
            .await
            == 1.0
    })
    .await;
    assert_eq!(call(&gateway, &alice).await, 401);
    assert_eq!(call(&gateway, &carol).await, 200);

    // Lifting the revocation readmits the token.
    std::fs::write(&revoked, "sub bob\n").unwrap();
    crate::common::wait_until("the revocation is lifted", || async {
        call(&gateway, &alice).await == 200
    })
    .await;
    assert_eq!(call(&gateway, &bob).await, 401);
}

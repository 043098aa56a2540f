//! The listener: slow clients, the connection cap, graceful shutdown, plain HTTP.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::common::{MockUpstream, Options, TestGateway};

/// A raw TLS connection to the gateway speaking HTTP/1.1, for hand-written requests.
pub async fn raw_tls(gateway: &TestGateway) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(gateway.addr).await.unwrap();
    let connector = TlsConnector::from(gateway.pki.client_config(&[b"http/1.1"]));
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// Reads until the peer closes (or errors); returns how long that took and what was read.
pub async fn wait_closed<S: AsyncReadExt + Unpin>(
    stream: &mut S,
    limit: Duration,
) -> (Duration, Vec<u8>) {
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (started.elapsed(), seen),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => panic!("connection still open after {limit:?}"),
        }
    }
}

#[tokio::test]
async fn slow_loris_head_is_cut_off_at_header_timeout() {
    let upstream = MockUpstream::start().await;
    let options = Options {
        server: "header_timeout = \"500ms\"".into(),
        ..Options::default()
    };
    let gateway = TestGateway::start_with(&upstream.url(), options).await;

    // A client that dribbles its request head, one byte every 50 ms, never finishing it.
    let mut tls = raw_tls(&gateway).await;
    let started = Instant::now();
    let dribble = async {
        for byte in b"GET /slow HTTP/1.1\r\nhost: localhost\r\nx-a: "
            .iter()
            .cycle()
        {
            if tls.write_all(&[*byte]).await.is_err() || tls.flush().await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            if started.elapsed() > Duration::from_secs(5) {
                panic!("slow-loris connection was never cut");
            }
        }
    };
    dribble.await;
    let cut_after = started.elapsed();
    assert!(
        cut_after >= Duration::from_millis(400),
        "cut too early: {cut_after:?}"
    );
    assert!(
        cut_after < Duration::from_secs(3),
        "cut too late: {cut_after:?}"
    );

    // A client that connects and never starts the TLS handshake is cut too.
    let mut idle = TcpStream::connect(gateway.addr).await.unwrap();
    let (after, _) = wait_closed(&mut idle, Duration::from_secs(3)).await;
    assert!(
        after >= Duration::from_millis(400),
        "handshake cut too early: {after:?}"
    );

    assert!(upstream.seen_on("/slow").is_empty());
    // An honest client is served.
    assert_eq!(gateway.client().get(&gateway.url("/ok")).await.status, 200);
}

#[tokio::test]
async fn connections_past_max_connections_wait_for_a_slot() {
    let upstream = MockUpstream::start().await;
    let options = Options {
        server: "max_connections = 2".into(),
        ..Options::default()
    };
    let gateway = TestGateway::start_with(&upstream.url(), options).await;
    let first = raw_tls(&gateway).await;
    let _second = raw_tls(&gateway).await;
    // The third connection sits in the accept backlog: its handshake cannot complete yet.
    let third = tokio::spawn({
        let tcp = TcpStream::connect(gateway.addr).await.unwrap();
        let connector = TlsConnector::from(gateway.pki.client_config(&[b"http/1.1"]));
        async move {
            connector
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !third.is_finished(),
        "third connection was served past max_connections"
    );
    drop(first);
    let mut third = tokio::time::timeout(Duration::from_secs(3), third)
        .await
        .expect("third connection is served once a slot frees")
        .unwrap()
        .unwrap();
    third
        .write_all(b"GET /third HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let (_, answer) = wait_closed(&mut third, Duration::from_secs(5)).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_requests_finish() {
    let upstream = MockUpstream::start().await;
    let mut gateway = TestGateway::start(&upstream.url()).await;
    let client = gateway.client();
    let url = gateway.url("/slow/800");
    let in_flight = tokio::spawn(async move { client.get(&url).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let drained = gateway.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The listener is closed: new connections are refused.
    assert!(TcpStream::connect(gateway.addr).await.is_err());
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "slow answer");
    tokio::time::timeout(Duration::from_secs(5), drained)
        .await
        .expect("gateway drained within the grace period")
        .unwrap();
    // The audit log is flushed before serve returns.
    let records = gateway.audit_records();
    assert!(
        records
            .iter()
            .any(|r| r["request_id"] == reply.request_id().as_str() && r["status"] == 200)
    );
}

#[tokio::test]
async fn plain_http_listener_serves_without_hsts() {
    let upstream = MockUpstream::start().await;
    let options = Options {
        plain: true,
        ..Options::default()
    };
    let gateway = TestGateway::start_with(&upstream.url(), options).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let uri = format!("http://{}/v1/chat", gateway.addr);
    let response = client.get(uri.parse().unwrap()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .get("strict-transport-security")
            .is_none()
    );
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let _ = response.into_body().collect().await;
    assert_eq!(
        upstream.seen_on("/v1/chat")[0].headers["x-forwarded-proto"],
        "http"
    );
}

#[tokio::test]
async fn tls_1_2_and_1_3_are_served_with_alpn() {
    let upstream = MockUpstream::start().await;
    let gateway = TestGateway::start(&upstream.url()).await;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(gateway.pki.ca_der.clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let tcp = TcpStream::connect(gateway.addr).await.unwrap();
        let tls = TlsConnector::from(std::sync::Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let (_, session) = tls.get_ref();
        assert_eq!(session.protocol_version(), Some(version.version));
        assert_eq!(session.alpn_protocol(), Some(&b"h2"[..]));
    }
}

#[tokio::test]
async fn client_certificates_are_required_when_a_client_ca_is_set() {
    let upstream = MockUpstream::start().await;
    let ca_dir = tempfile::tempdir().unwrap();
    let client_ca = crate::common::TestPki::create(ca_dir.path());
    let options = Options {
        tls: format!("client_ca_file = \"{}\"", client_ca.ca_file.display()),
        ..Options::default()
    };
    let gateway = TestGateway::start_with(&upstream.url(), options).await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(gateway.pki.ca_der.clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);

    // Without a certificate, no request gets through.
    let anonymous = builder.clone().with_no_client_auth();
    let tcp = TcpStream::connect(gateway.addr).await.unwrap();
    let attempt = async {
        let mut tls = TlsConnector::from(std::sync::Arc::new(anonymous))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await?;
        tls.write_all(b"GET /anonymous HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await?;
        let mut buf = [0u8; 64];
        let n = tls.read(&mut buf).await?;
        Ok::<_, std::io::Error>(n)
    };
    assert!(
        !matches!(attempt.await, Ok(n) if n > 0),
        "anonymous client was answered"
    );

    // With a certificate from the client CA, it does.
    let (chain, key) = client_ca.client_identity();
    let identified = builder.with_client_auth_cert(chain, key).unwrap();
    let tcp = TcpStream::connect(gateway.addr).await.unwrap();
    let mut tls = TlsConnector::from(std::sync::Arc::new(identified))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(b"GET /identified HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let (_, answer) = wait_closed(&mut tls, Duration::from_secs(5)).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    assert!(upstream.seen_on("/anonymous").is_empty());
    assert_eq!(upstream.seen_on("/identified").len(), 1);
}

#[tokio::test]
async fn tls_sessions_resume_across_connections_and_a_certificate_rotation() {
    let upstream = MockUpstream::start().await;
    let gateway = TestGateway::start(&upstream.url()).await;
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(gateway.pki.ca_der.clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        // One client configuration: its session store holds what the server handed out.
        let connector = TlsConnector::from(std::sync::Arc::new(config));
        let mut kinds = Vec::new();
        for round in 0..3 {
            if round == 2 {
                // A reload with a renewed certificate keeps the ticket keys and session cache.
                let pki = &gateway.pki;
                pki.reissue(
                    0x7007 + u64::from(version.version.to_array()[1]),
                    &pki.cert_file,
                    &pki.key_file,
                );
                assert!(gateway.reload(&Options::default()).await);
            }
            let tcp = TcpStream::connect(gateway.addr).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let mut tls = connector.connect(name, tcp).await.unwrap();
            // TLS 1.3 tickets arrive after the handshake: a request round trip collects them.
            tls.write_all(b"GET /resume HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut answer = Vec::new();
            let _ = tls.read_to_end(&mut answer).await;
            assert!(answer.starts_with(b"HTTP/1.1 200"));
            kinds.push(tls.get_ref().1.handshake_kind());
        }
        assert_eq!(
            kinds,
            [
                Some(rustls::HandshakeKind::Full),
                Some(rustls::HandshakeKind::Resumed),
                Some(rustls::HandshakeKind::Resumed)
            ],
            "{version:?}"
        );
    }
}

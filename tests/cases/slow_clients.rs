//! Slow and stalled clients: bodies that trickle past `body_timeout`, clients that never read
//! their response past `write_timeout`, and more bodies at once than `max_buffered_bytes` holds.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::server::{raw_tls, wait_closed};
use crate::common::{MockUpstream, Options, TestGateway, wait_until};

fn with(server: &str, extra: &str) -> Options {
    Options {
        server: server.to_owned(),
        extra: extra.to_owned(),
        ..Options::default()
    }
}

/// Sends a head announcing `length` body bytes and `sent` of them, then stops.
async fn stalled_post(
    gateway: &TestGateway,
    path: &str,
    length: usize,
    sent: usize,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut tls = raw_tls(gateway).await;
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         content-length: {length}\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&vec![b' '; sent]).await.unwrap();
    tls.flush().await.unwrap();
    tls
}

/// The audit record of the request to `path` (written off the request path: waits for it).
async fn record_for(gateway: &TestGateway, path: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(r) = gateway
            .audit_records()
            .into_iter()
            .find(|r| r["path"] == path)
        {
            return r;
        }
        assert!(Instant::now() < deadline, "no audit record for {path}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_trickling_body_is_cut_at_body_timeout() {
    let upstream = MockUpstream::start().await;
    // Once buffered for validation, once streamed straight to the upstream.
    for (extra, path) in [("[validation]\n", "/validated"), ("", "/streamed")] {
        let gateway =
            TestGateway::start_with(&upstream.url(), with("body_timeout = \"500ms\"", extra)).await;
        let started = Instant::now();
        let mut tls = stalled_post(&gateway, path, 100, 10).await;
        let (_, answer) = wait_closed(&mut tls, Duration::from_secs(5)).await;
        let waited = started.elapsed();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
        assert!(
            answer.contains("urn:portcullis:problem:body-timeout"),
            "{answer}"
        );
        assert!(
            waited >= Duration::from_millis(450) && waited < Duration::from_secs(3),
            "{path}: cut after {waited:?}"
        );
        assert!(
            upstream.seen_on(path).is_empty(),
            "{path}: nothing forwarded whole"
        );
        let record = record_for(&gateway, path).await;
        assert_eq!(record["decision"], "body_timeout");
        assert_eq!(record["status"], 408);
    }
}

#[tokio::test]
async fn a_client_that_never_reads_is_dropped_after_write_timeout() {
    let upstream = MockUpstream::start().await;
    let gateway =
        TestGateway::start_with(&upstream.url(), with("write_timeout = \"500ms\"", "")).await;
    let mut tls = raw_tls(&gateway).await;
    tls.write_all(b"GET /endless HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    // Never read: the socket buffers fill, the gateway's writes stall, the deadline passes.
    let started = Instant::now();
    wait_until("the stalled connection is closed", || async {
        gateway.metric("portcullis_open_connections").await == 0.0
    })
    .await;
    let dropped_after = started.elapsed();
    println!("a client that never reads was dropped after {dropped_after:?}");
    let record = record_for(&gateway, "/endless").await;
    assert_eq!(record["end"], "client_closed");
    let sent = record["bytes_out"].as_u64().unwrap();
    assert!(
        sent < 64 * 1024 * 1024,
        "what was relayed is bounded by the socket buffers: {sent} bytes"
    );
    // The client finds its connection closed once it drains what was buffered.
    let mut buf = vec![0u8; 1 << 20];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(tls.read(&mut buf).await, Ok(0) | Err(_)) {
        assert!(Instant::now() < deadline, "the connection is closed");
    }
}

#[tokio::test]
async fn bodies_beyond_max_buffered_bytes_wait_then_get_503() {
    let upstream = MockUpstream::start().await;
    let gateway = TestGateway::start_with(
        &upstream.url(),
        with(
            "",
            "[validation]\nmax_body_bytes = 1000\nmax_buffered_bytes = 2000\n",
        ),
    )
    .await;
    // Two bodies that announce 1000 bytes each and stall hold the whole budget.
    let holders = [
        stalled_post(&gateway, "/hold-a", 1000, 10).await,
        stalled_post(&gateway, "/hold-b", 1000, 10).await,
    ];
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = gateway.client();
    let started = Instant::now();
    let refused = client
        .post_json(
            &gateway.url("/third"),
            &format!("{{\"a\":\"{}\"}}", "x".repeat(900)),
        )
        .await;
    let waited = started.elapsed();
    crate::common::assert_problem(&refused, 503);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(
        waited >= Duration::from_millis(1900),
        "it waited for room first: {waited:?}"
    );
    assert!(upstream.seen_on("/third").is_empty());
    let record = gateway.audit_record(&refused.request_id()).await;
    assert_eq!(record["decision"], "overloaded");

    // A body that fits once a holder finishes gets through: the budget is given back.
    let [mut a, _b] = holders;
    a.write_all(&[b' '; 988]).await.unwrap();
    a.write_all(b"{}").await.unwrap();
    let mut head = [0u8; 12];
    a.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let admitted = client.post_json(&gateway.url("/fourth"), "{\"a\":1}").await;
    assert_eq!(admitted.status, 200);
}

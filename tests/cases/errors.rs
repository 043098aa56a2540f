//! Gateway-made errors: sanitised problem+json, the right status, the right audit decision.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{MockUpstream, Options, TestGateway, assert_problem, assert_security_headers};

#[tokio::test]
async fn upstream_5xx_is_replaced_by_a_sanitised_502() {
    let upstream = MockUpstream::start().await;
    let gateway = TestGateway::start(&upstream.url()).await;
    for code in [500u16, 503] {
        let reply = gateway
            .client()
            .get(&gateway.url(&format!("/status/{code}")))
            .await;
        let problem = assert_problem(&reply, 502);
        assert_security_headers(&reply);
        let body = reply.text();
        for leak in ["Traceback", "/srv/agent", "sk-upstream-secret", "KeyError"] {
            assert!(!body.contains(leak), "upstream body leaked: {body}");
        }
        assert!(reply.header("server").is_none());
        assert_eq!(problem["title"], "Bad Gateway");
        let record = gateway.audit_record(&reply.request_id()).await;
        assert_eq!(record["decision"], "upstream_error");
        assert_eq!(record["status"], 502);
        assert_eq!(record["upstream_status"], code);
    }
    // 4xx answers are the agent's own and pass through.
    let reply = gateway.client().get(&gateway.url("/status/404")).await;
    assert_eq!(reply.status, 404);
}

#[tokio::test]
async fn unreachable_upstream_is_502() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let gateway = TestGateway::start(&format!("http://127.0.0.1:{port}")).await;
    let reply = gateway
        .client()
        .post_json(&gateway.url("/v1/chat"), "{}")
        .await;
    let problem = assert_problem(&reply, 502);
    assert_security_headers(&reply);
    assert!(
        !reply.text().contains(&port.to_string()),
        "no internal address in the body"
    );
    assert!(
        !reply.text().to_lowercase().contains("connect"),
        "no library message: {problem}"
    );
    let record = gateway.audit_record(&reply.request_id()).await;
    assert_eq!(record["decision"], "upstream_error");
    assert_eq!(record["status"], 502);
    assert!(record["upstream_status"].is_null());
}

#[tokio::test]
async fn slow_upstream_is_504() {
    let upstream = MockUpstream::start().await;
    let options = Options {
        upstream: "response_header_timeout = \"300ms\"".into(),
        ..Options::default()
    };
    let gateway = TestGateway::start_with(&upstream.url(), options).await;
    let started = std::time::Instant::now();
    let reply = gateway.client().get(&gateway.url("/slow/3000")).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_problem(&reply, 504);
    assert_security_headers(&reply);
    let record = gateway.audit_record(&reply.request_id()).await;
    assert_eq!(record["decision"], "upstream_timeout");
    assert_eq!(record["status"], 504);
    // A fast enough answer still passes.
    let reply = gateway.client().get(&gateway.url("/slow/10")).await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn oversized_head_is_431_and_not_forwarded() {
    let upstream = MockUpstream::start().await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let client = gateway.client();
    let big = "a".repeat(20 * 1024);
    let reply = client
        .send_whole(
            Request::get(gateway.url("/big"))
                .header("x-big", big.as_str())
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_problem(&reply, 431);
    assert_security_headers(&reply);
    let record = gateway.audit_record(&reply.request_id()).await;
    assert_eq!(record["decision"], "header_too_large");

    // Just under the limit passes.
    let fits = "a".repeat(15 * 1024);
    let reply = client
        .send_whole(
            Request::get(gateway.url("/fits"))
                .header("x-fits", fits.as_str())
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 200);

    // Far past the parser's buffer, the parser itself refuses with 431 and closes.
    let mut tls = crate::cases::server::raw_tls(&gateway).await;
    let huge = format!(
        "GET /huge HTTP/1.1\r\nhost: localhost\r\nx-huge: {}\r\n\r\n",
        "b".repeat(200 * 1024)
    );
    let _ = tls.write_all(huge.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "got: {answer}");

    assert!(upstream.seen_on("/big").is_empty());
    assert!(upstream.seen_on("/huge").is_empty());
    assert_eq!(upstream.seen_on("/fits").len(), 1);
}

#[tokio::test]
async fn silent_stream_is_cut_after_idle_timeout_and_audited() {
    let upstream = MockUpstream::start().await;
    let options = Options {
        upstream: "idle_timeout = \"300ms\"".into(),
        ..Options::default()
    };
    let gateway = TestGateway::start_with(&upstream.url(), options).await;
    let response = gateway.client().open(&gateway.url("/stall")).await;
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, Bytes::from_static(b"data: only\n\n"));
    let rest = tokio::time::timeout(Duration::from_secs(5), body.collect()).await;
    assert!(
        matches!(rest, Ok(Err(_))),
        "the cut stream ends with an error, not a clean end"
    );
    let record = gateway.audit_record(&request_id).await;
    assert_eq!(record["end"], "upstream_idle_timeout");
    assert_eq!(record["bytes_out"], 12);
}

#[tokio::test]
async fn keep_alive_comments_do_not_hold_a_silent_stream_open() {
    let upstream = MockUpstream::start().await;
    let options = Options {
        upstream: "idle_timeout = \"500ms\"\nsse_keepalive = \"100ms\"".into(),
        ..Options::default()
    };
    let gateway = TestGateway::start_with(&upstream.url(), options).await;
    let response = gateway.client().open(&gateway.url("/stall")).await;
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let mut body = response.into_body();
    let mut received = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match body.frame().await {
                Some(Ok(frame)) => received.extend_from_slice(frame.data_ref().unwrap()),
                Some(Err(_)) => return "cut",
                None => return "clean end",
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(ended, "cut", "idle_timeout still ends a silent stream");
    let text = String::from_utf8(received).unwrap();
    let keepalives = text.matches(": keep-alive\n\n").count();
    assert!(
        (3..=5).contains(&keepalives),
        "{keepalives} keep-alives in 500 ms: {text:?}"
    );
    let record = gateway.audit_record(&request_id).await;
    assert_eq!(record["end"], "upstream_idle_timeout");
    assert_eq!(record["bytes_out"], text.len());
}

#[tokio::test]
async fn an_upstream_killed_under_load_gives_502s_cut_streams_and_then_recovers() {
    let upstream = MockUpstream::start().await;
    let addr = upstream.addr;
    let gateway = TestGateway::start(&upstream.url()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Mutex::new(std::collections::BTreeMap::<String, u64>::new()));
    let load: Vec<_> = (0..4)
        .map(|i| {
            let (client, stop, counts) = (gateway.client(), stop.clone(), counts.clone());
            let url = gateway.url(&format!("/slow/20?task={i}"));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let outcome = match client.try_get(&url).await {
                        Ok(reply) => reply.status.as_u16().to_string(),
                        Err(e) => format!("client error: {e}"),
                    };
                    *counts.lock().unwrap().entry(outcome).or_default() += 1;
                }
            })
        })
        .collect();
    // A stream that will be cut mid-way.
    let stream = gateway.client().open(&gateway.url("/sse-paused/400")).await;
    let stream_id = stream.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let mut body = stream.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, Bytes::from_static(b"data: one\n\n"));

    tokio::time::sleep(Duration::from_millis(200)).await;
    upstream.kill();
    let ended = tokio::time::timeout(Duration::from_secs(5), body.collect()).await;
    assert!(
        matches!(ended, Ok(Err(_))),
        "the cut stream ends promptly, as an error, not as a clean end"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let down = gateway.client().get(&gateway.url("/while-down")).await;
    crate::common::assert_problem(&down, 502);

    let restarted = MockUpstream::start_on(addr).await;
    let started = Instant::now();
    crate::common::wait_until("requests succeed again", || async {
        gateway
            .client()
            .get(&gateway.url("/recovered"))
            .await
            .status
            == 200
    })
    .await;
    let recovery = started.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let counts = counts.lock().unwrap().clone();
    println!("upstream killed under load: {counts:?}; recovered {recovery:?} after restart");
    assert!(
        counts.keys().all(|k| k == "200" || k == "502"),
        "{counts:?}"
    );
    assert!(counts.get("502").is_some_and(|n| *n > 0), "{counts:?}");
    assert!(counts.get("200").is_some_and(|n| *n > 0), "{counts:?}");
    let record = gateway.audit_record(&stream_id).await;
    assert_eq!(record["end"], "upstream_aborted");
    assert_eq!(record["status"], 200);
    drop(restarted);
}

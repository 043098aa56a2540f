//! Forwarding: headers both ways, HTTP/2, streaming.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};

use crate::common::{MockUpstream, TestGateway, assert_security_headers};

#[tokio::test]
async fn proxies_both_ways_with_header_hygiene() {
    let upstream = MockUpstream::start().await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let client = gateway.client();
    let request = Request::post(gateway.url("/v1/chat?model=small"))
        .header("content-type", "application/json")
        .header("x-portcullis-user", "forged-admin")
        .header("x-portcullis-scopes", "admin")
        .header("x-request-id", "client-chosen-id")
        .header("x-forwarded-for", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6")
        .header("connection", "x-client-hop")
        .header("x-client-hop", "should-not-pass")
        .header("x-custom", "passes")
        .body(Full::new(Bytes::from_static(br#"{"messages":[]}"#)))
        .unwrap();
    let reply = client.send_whole(request).await;

    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["path"], "/v1/chat");
    assert_eq!(reply.json()["body_len"], 15);
    assert_security_headers(&reply);
    assert_eq!(reply.header("x-agent"), Some("kept"));
    assert!(
        reply.header("x-upstream-hop").is_none(),
        "header named in Connection is hop-by-hop"
    );
    let request_id = reply.request_id();
    assert_ne!(request_id, "client-chosen-id");

    let seen = upstream.seen_on("/v1/chat");
    assert_eq!(seen.len(), 1);
    let forwarded = &seen[0];
    assert_eq!(forwarded.uri, "/v1/chat?model=small");
    assert_eq!(forwarded.body.as_ref(), br#"{"messages":[]}"#);
    let h = &forwarded.headers;
    assert!(h.get("x-portcullis-user").is_none());
    assert!(h.get("x-portcullis-scopes").is_none());
    assert!(h.get("x-client-hop").is_none());
    assert!(h.get("forwarded").is_none());
    assert_eq!(h["x-request-id"], request_id.as_str());
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(
        h["x-forwarded-host"],
        format!("localhost:{}", gateway.addr.port()).as_str()
    );
    assert_eq!(h["host"], upstream.addr.to_string().as_str());
    assert_eq!(h["x-custom"], "passes");

    let record = gateway.audit_record(&request_id).await;
    assert_eq!(record["decision"], "allowed");
    assert_eq!(record["status"], 200);
    assert_eq!(record["upstream_status"], 200);
    assert_eq!(record["method"], "POST");
    assert_eq!(record["path"], "/v1/chat");
    assert_eq!(record["client_ip"], "127.0.0.1");
    assert_eq!(record["bytes_in"], 15);
    assert_eq!(record["bytes_out"], reply.body.len());
    assert_eq!(record["end"], "complete");
    assert!(record["latency_ms"].as_f64().is_some());
    assert!(record["ts"].as_str().is_some_and(|t| t.ends_with('Z')));
    for key in ["user", "rule"] {
        assert!(record.get(key).is_some(), "record has {key}");
    }
    let line = std::fs::read_to_string(&gateway.audit_path).unwrap();
    assert!(
        !line.contains("model=small"),
        "query strings stay out of the audit log"
    );
}

#[tokio::test]
async fn serves_http2_over_tls() {
    let upstream = MockUpstream::start().await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let client = gateway.h2_client();
    let reply = client
        .post_json(&gateway.url("/v1/chat"), r#"{"a":1}"#)
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.version, http::Version::HTTP_2);
    assert_eq!(reply.json()["body_len"], 7);
    assert_security_headers(&reply);
    let seen = upstream.seen_on("/v1/chat");
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].headers["x-forwarded-host"],
        format!("localhost:{}", gateway.addr.port()).as_str()
    );
    let record = gateway.audit_record(&reply.request_id()).await;
    assert_eq!(record["decision"], "allowed");
}

#[tokio::test]
async fn sse_first_event_arrives_before_the_upstream_finishes() {
    for h2 in [false, true] {
        let upstream = MockUpstream::start().await;
        let gateway = TestGateway::start(&upstream.url()).await;
        let client = if h2 {
            gateway.h2_client()
        } else {
            gateway.client()
        };
        let started = Instant::now();
        let response = client.open(&gateway.url("/sse")).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let request_id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let mut body = response.into_body();
        // The upstream holds the rest of the stream until the first event is seen here: a
        // gateway that buffered the stream would never deliver it.
        let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("first event arrives while the upstream stream is still open")
            .unwrap()
            .unwrap();
        let time_to_first_event = started.elapsed();
        assert_eq!(
            first.into_data().unwrap(),
            Bytes::from_static(b"data: first\n\n")
        );
        upstream.release_sse();
        let rest = tokio::time::timeout(Duration::from_secs(5), body.collect())
            .await
            .unwrap()
            .unwrap()
            .to_bytes();
        assert_eq!(rest, Bytes::from_static(b"data: second\n\ndata: third\n\n"));
        println!("SSE time to first event through the gateway (h2={h2}): {time_to_first_event:?}");
        let record = gateway.audit_record(&request_id).await;
        assert_eq!(record["end"], "complete");
        assert_eq!(record["bytes_out"], 40);
    }
}

#[tokio::test]
async fn upstream_base_path_prefixes_forwarded_paths() {
    let upstream = MockUpstream::start().await;
    let gateway = TestGateway::start(&format!("{}/agent/", upstream.url())).await;
    let reply = gateway.client().get(&gateway.url("/v1/models?x=1")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        upstream.seen_on("/agent/v1/models")[0].uri,
        "/agent/v1/models?x=1"
    );
}

#[tokio::test]
async fn https_upstream_with_an_extra_ca_file() {
    let upstream_dir = tempfile::tempdir().unwrap();
    let upstream_pki = crate::common::TestPki::create(upstream_dir.path());
    let upstream = MockUpstream::start_tls(&upstream_pki).await;
    let options = crate::common::Options {
        upstream: format!("ca_file = \"{}\"", upstream_pki.ca_file.display()),
        ..Default::default()
    };
    let gateway = TestGateway::start_with(&upstream.tls_url(), options).await;
    let reply = gateway.client().get(&gateway.url("/over-tls")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(upstream.seen_on("/over-tls").len(), 1);

    // Without the extra CA the upstream's certificate is not trusted: 502, nothing forwarded.
    let untrusted = TestGateway::start(&upstream.tls_url()).await;
    let reply = untrusted.client().get(&untrusted.url("/untrusted")).await;
    crate::common::assert_problem(&reply, 502);
    assert!(upstream.seen_on("/untrusted").is_empty());
}

#[tokio::test]
async fn upstream_connections_are_pooled() {
    let upstream = MockUpstream::start().await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let client = gateway.client();
    for _ in 0..5 {
        assert_eq!(client.get(&gateway.url("/pooled")).await.status, 200);
    }
    let peers: std::collections::HashSet<_> =
        upstream.seen_on("/pooled").iter().map(|r| r.peer).collect();
    assert_eq!(
        peers.len(),
        1,
        "five sequential requests share one upstream connection"
    );
}

#[tokio::test]
async fn a_stream_left_half_read_never_carries_the_next_request() {
    let upstream = MockUpstream::start().await;
    let gateway = TestGateway::start(&upstream.url()).await;
    // One event, then the upstream holds the stream open: its connection has an unfinished
    // response on it when the client walks away.
    let response = gateway.client().open(&gateway.url("/stall")).await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("first event")
        .unwrap()
        .unwrap();
    assert_eq!(
        first.into_data().unwrap(),
        Bytes::from_static(b"data: only\n\n")
    );
    drop(body);
    for _ in 0..3 {
        let reply = gateway.client().get(&gateway.url("/after")).await;
        assert_eq!(reply.status, 200);
        assert!(
            reply.text().contains("\"path\":\"/after\""),
            "{}",
            reply.text()
        );
    }
    let stalled = upstream.seen_on("/stall")[0].peer;
    let after: std::collections::HashSet<_> =
        upstream.seen_on("/after").iter().map(|r| r.peer).collect();
    assert!(
        !after.contains(&stalled),
        "the half-read connection went back to the pool"
    );
    assert_eq!(
        after.len(),
        1,
        "the later requests share one fresh connection"
    );
}

#[tokio::test]
async fn request_body_streams_to_the_upstream() {
    let upstream = MockUpstream::start().await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::convert::Infallible>>(4);
    let body = http_body_util::StreamBody::new(tokio_stream_from(rx));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*gateway.pki.client_config(&[])).clone())
        .https_only()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, http_body_util::StreamBody<_>>(connector);
    let request = Request::post(gateway.url("/upload"))
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    let pending = tokio::spawn(client.request(request));
    tx.send(Ok(http_body::Frame::data(Bytes::from_static(
        b"[\"first\"",
    ))))
    .await
    .unwrap();
    // The second chunk is only sent once the upstream has the first: a gateway that buffered
    // the whole request body would wait forever here.
    tokio::time::timeout(Duration::from_secs(5), upstream.first_chunk_received())
        .await
        .expect("first chunk reached the upstream while the client was still sending");
    tx.send(Ok(http_body::Frame::data(Bytes::from_static(
        b",\"second\"]",
    ))))
    .await
    .unwrap();
    drop(tx);
    let response = pending.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        upstream.seen_on("/upload")[0].body.as_ref(),
        b"[\"first\",\"second\"]"
    );
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn client_leaving_early_is_audited() {
    let upstream = MockUpstream::start().await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let client = gateway.client();
    let url = gateway.url("/slow/1500");
    let abandoned = tokio::spawn(async move { client.get(&url).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    abandoned.abort();
    let deadline = Instant::now() + Duration::from_secs(5);
    let record = loop {
        if let Some(r) = gateway
            .audit_records()
            .into_iter()
            .find(|r| r["path"] == "/slow/1500")
        {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "no audit record for the abandoned request"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(record["status"], 499);
    assert_eq!(record["end"], "client_closed");
}

#[tokio::test]
async fn idle_event_streams_get_keep_alives_between_events_only() {
    let upstream = MockUpstream::start().await;
    let options = crate::common::Options {
        upstream: "sse_keepalive = \"200ms\"".into(),
        ..crate::common::Options::default()
    };
    let gateway = TestGateway::start_with(&upstream.url(), options).await;
    // Pauses of 4x the interval: after events (three of them, the last before the end) and once
    // in the middle of an event.
    let reply = gateway.client().get(&gateway.url("/sse-paused/800")).await;
    assert_eq!(reply.status, 200);
    let text = reply.text();
    assert_eq!(
        text.replace(": keep-alive\n\n", ""),
        "data: one\n\ndata: two\n\ndata: three\n\n",
        "the stream arrives whole"
    );
    assert!(
        text.contains("data: two\n\n"),
        "no keep-alive inside an event: {text:?}"
    );
    let keepalives = text.matches(": keep-alive\n\n").count();
    assert!(
        (6..=10).contains(&keepalives),
        "keep-alives fill the pauses after events ({keepalives}): {text:?}"
    );
    for (at, _) in text.match_indices(": keep-alive") {
        assert!(
            text[..at].ends_with("\n\n"),
            "keep-alive only between events: {text:?}"
        );
    }
    // The pause after the event's first half produced none: they all sit after "one" and "two".
    let after_one = text.find("data: tw").unwrap();
    let after_two = text.find("data: three").unwrap();
    let first_pause = text[..after_one].matches(": keep-alive").count();
    let last_pause = text[after_one..after_two].matches(": keep-alive").count();
    assert!(first_pause >= 2 && last_pause >= 2, "{text:?}");

    // A JSON answer never gets them.
    let plain = gateway.client().get(&gateway.url("/json")).await;
    assert!(!plain.text().contains("keep-alive"));
}

#[tokio::test]
async fn requests_in_flight_upstream_are_bounded_by_max_connections() {
    let upstream = MockUpstream::start().await;
    let options = crate::common::Options {
        upstream: "max_connections = 2\nconnect_timeout = \"300ms\"".into(),
        ..crate::common::Options::default()
    };
    let gateway = TestGateway::start_with(&upstream.url(), options).await;
    let slow: Vec<_> = (0..2)
        .map(|i| {
            let client = gateway.client();
            let url = gateway.url(&format!("/slow/1500?n={i}"));
            tokio::spawn(async move { client.get(&url).await.status })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let refused = gateway.client().get(&gateway.url("/third")).await;
    crate::common::assert_problem(&refused, 503);
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "it waited for a slot first"
    );
    assert!(upstream.seen_on("/third").is_empty());
    let record = gateway.audit_record(&refused.request_id()).await;
    assert_eq!(record["decision"], "overloaded");
    for task in slow {
        assert_eq!(task.await.unwrap(), 200);
    }
    // The slots come back when the responses end.
    let after = gateway.client().get(&gateway.url("/after")).await;
    assert_eq!(after.status, 200);
}

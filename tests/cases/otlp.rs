//! OTLP span export (built with `--features otlp`): one span per request reaches a collector,
//! with the trace id, the gateway's span id (the upstream's parent) and the caller's span as
//! parent.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::common::{MockUpstream, Options, TestGateway, wait_until};

/// A collector that keeps every OTLP/HTTP body it receives.
async fn collector() -> (String, Arc<Mutex<Vec<Bytes>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let kept = kept.clone();
            async move {
                kept.lock().unwrap().push(body);
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/v1/traces"), bodies)
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn each_request_exports_a_span_in_its_trace() {
    let (endpoint, bodies) = collector().await;
    let upstream = MockUpstream::start().await;
    let gateway = TestGateway::start_with(
        &upstream.url(),
        Options {
            extra: format!(
                "[tracing]\notlp_endpoint = \"{endpoint}\"\nservice_name = \"gateway-under-test\"\n\
                 export_interval = \"100ms\"\n"
            ),
            ..Options::default()
        },
    )
    .await;
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let reply = gateway
        .client()
        .send_whole(
            Request::get(gateway.url("/spanned"))
                .header("traceparent", caller)
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 200);
    let sent = upstream.seen_on("/spanned")[0].headers["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    let gateway_span = hex(sent.split('-').nth(2).unwrap());
    let trace_id = hex("4bf92f3577b34da6a3ce929d0e0e4736");
    let caller_span = hex("00f067aa0ba902b7");
    wait_until("the span reaches the collector", || async {
        bodies
            .lock()
            .unwrap()
            .iter()
            .any(|b| contains(b, &trace_id) && contains(b, &gateway_span))
    })
    .await;
    let all: Vec<u8> = bodies.lock().unwrap().concat();
    assert!(
        contains(&all, &caller_span),
        "the caller's span is the parent"
    );
    for text in [
        "gateway-under-test",
        "GET /spanned",
        "allowed",
        &reply.request_id(),
    ] {
        assert!(contains(&all, text.as_bytes()), "{text} in the span");
    }
    assert!(!contains(&all, b"authorization"));
}

//! W3C trace context: joined or started, passed upstream with the gateway's span, written to the
//! audit record and to the operational log.

use std::process::Command;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use super::binary::{config_on_free_port, run_listening, write_config};
use crate::common::{MockUpstream, Options, TestClient, TestGateway, TestPki};

const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn traced(url: &str, traceparent: Option<&str>) -> Request<Full<Bytes>> {
    let mut request = Request::get(url).header("tracestate", "vendor=abc");
    if let Some(tp) = traceparent {
        request = request.header("traceparent", tp);
    }
    request.body(Full::default()).unwrap()
}

/// `(trace id, parent id, flags)` of a traceparent.
fn parts(traceparent: &str) -> (String, String, String) {
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(fields.len(), 4, "{traceparent}");
    assert_eq!(fields[0], "00");
    (fields[1].into(), fields[2].into(), fields[3].into())
}

#[tokio::test]
async fn an_incoming_trace_is_joined_with_a_new_span() {
    let upstream = MockUpstream::start().await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let reply = gateway
        .client()
        .send_whole(traced(&gateway.url("/traced"), Some(CALLER)))
        .await;
    assert_eq!(reply.status, 200);
    let seen = &upstream.seen_on("/traced")[0].headers;
    let (trace, parent, flags) = parts(seen["traceparent"].to_str().unwrap());
    assert_eq!(trace, TRACE_ID, "the caller's trace continues");
    assert_ne!(
        parent, "00f067aa0ba902b7",
        "the gateway's own span is the parent"
    );
    assert_eq!(parent.len(), 16);
    assert_eq!(flags, "01");
    assert_eq!(
        seen["tracestate"], "vendor=abc",
        "tracestate travels with its trace"
    );
    let record = gateway.audit_record(&reply.request_id()).await;
    assert_eq!(record["trace_id"], TRACE_ID);
}

#[tokio::test]
async fn a_missing_or_malformed_trace_is_replaced_by_a_new_one() {
    let upstream = MockUpstream::start().await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let client = gateway.client();
    let mut trace_ids = Vec::new();
    for (path, incoming) in [
        ("/none", None),
        (
            "/upper",
            Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01"),
        ),
        (
            "/zero",
            Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        ),
        ("/junk", Some("00-xyz")),
    ] {
        let reply = client
            .send_whole(traced(&gateway.url(path), incoming))
            .await;
        assert_eq!(reply.status, 200);
        let seen = &upstream.seen_on(path)[0].headers;
        let (trace, parent, _) = parts(seen["traceparent"].to_str().unwrap());
        assert_eq!(trace.len(), 32);
        assert_ne!(trace, TRACE_ID, "{path}: not the refused caller's trace");
        assert!(
            trace
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_ne!(trace, "0".repeat(32));
        assert_ne!(parent, "0".repeat(16));
        assert!(
            seen.get("tracestate").is_none(),
            "{path}: a tracestate without a valid traceparent is dropped"
        );
        let record = gateway.audit_record(&reply.request_id()).await;
        assert_eq!(record["trace_id"], trace.as_str());
        trace_ids.push(trace);
    }
    trace_ids.sort();
    trace_ids.dedup();
    assert_eq!(trace_ids.len(), 4, "every new trace has its own id");
}

#[tokio::test]
async fn the_operational_log_names_the_trace_of_a_failed_request() {
    let upstream = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path());
    let (text, port) = config_on_free_port(
        &pki,
        &upstream.url(),
        &dir.path().join("audit.log"),
        &Options::default(),
    );
    let path = write_config(dir.path(), &text);
    let child = run_listening(&path, port, &[]).await;
    let reply = TestClient::new(&pki, false)
        .send_whole(traced(
            &format!("https://localhost:{port}/status/500"),
            Some(CALLER),
        ))
        .await;
    assert_eq!(reply.status, 502);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    let line = logs
        .lines()
        .find(|l| l.contains("request failed"))
        .unwrap_or_else(|| panic!("no log line for the failed request: {logs}"));
    assert!(line.contains(&reply.request_id()), "{line}");
    assert!(line.contains(TRACE_ID), "{line}");
    assert!(
        !line.contains("OPENAI_API_KEY"),
        "the upstream body never reaches the log"
    );
}

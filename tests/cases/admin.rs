//! The admin listener: health, readiness, metrics.

use std::time::{Duration, Instant};

use crate::common::{MockUpstream, TestGateway};

#[tokio::test]
async fn readiness_waits_for_the_upstream_and_health_does_not() {
    let placeholder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_addr = placeholder.local_addr().unwrap();
    drop(placeholder);
    let gateway = TestGateway::start(&format!("http://{upstream_addr}")).await;

    assert_eq!(gateway.admin_get("/healthz").await.0, 200);
    let (status, _) = gateway.admin_get("/readyz").await;
    assert_eq!(status, 503, "not ready before the upstream ever answered");

    let _upstream = MockUpstream::start_on(upstream_addr).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if gateway.admin_get("/readyz").await.0 == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn metrics_count_requests_by_decision_and_status() {
    let upstream = MockUpstream::start().await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let client = gateway.client();
    assert_eq!(client.get(&gateway.url("/a")).await.status, 200);
    assert_eq!(client.get(&gateway.url("/status/500")).await.status, 502);
    // Metrics are observed when each response ends; give the second a moment to finish.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, text) = gateway.admin_get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        text.contains(r#"portcullis_requests_total{decision="allowed",status="200"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"portcullis_requests_total{decision="upstream_error",status="502"} 1"#)
    );
    assert!(text.contains("portcullis_request_duration_seconds_count 2"));
    assert!(text.contains("portcullis_upstream_response_header_seconds_count"));
    assert!(text.contains("portcullis_open_connections"));
    assert!(text.contains("portcullis_response_body_bytes_total"));
    assert!(text.contains("portcullis_request_body_bytes_total"));
    // The admin port is not the client port, and the client port does not serve /metrics.
    assert_ne!(gateway.admin, gateway.addr);
    let via_client = client.get(&gateway.url("/metrics")).await;
    assert!(!via_client.text().contains("portcullis_requests_total"));
}

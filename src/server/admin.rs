//! The admin listener: liveness, readiness and Prometheus metrics on their own port.
//!
//! Guards against exposing operational data to clients: these endpoints never share the client
//! listener, and the default admin address is loopback only.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use http::{StatusCode, header};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::{self, Metrics};
use crate::server::Policies;

/// What the admin endpoints read.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The metrics to expose.
    pub metrics: Arc<Metrics>,
    /// The policy in force: its upstream, keys and limiter decide readiness.
    pub policies: Policies,
    /// The audit log, which must be writable under `on_failure = "fail_closed"`.
    pub audit: crate::audit::AuditSink,
}

/// The admin routes: `GET /healthz`, `GET /readyz`, `GET /metrics`.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(state)
}

/// The metrics-only routes (`[metrics] listen`): `GET /metrics`; every other path is 404, so a
/// scraper allowed in from the network reaches neither readiness nor anything added later.
pub fn metrics_router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(render_only_metrics))
        .with_state(metrics)
}

/// Serves `router` on `listener` until `stop` turns true; `name` names it in the error log.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    name: &'static str,
    mut stop: watch::Receiver<bool>,
) {
    let shutdown = async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, listener = name, "admin listener failed");
    }
}

/// 200 while the process runs.
async fn healthz() -> &'static str {
    "ok\n"
}

/// 200 once config and certificates are loaded (true once serving), a key set has loaded (when
/// authentication uses a JWKS URL) and the upstream has answered at least once; 503 before.
async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.audit.refuses_requests() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the audit log cannot be written (on_failure = fail_closed)\n",
        );
    }
    let state = state.policies.load();
    if state.keys.as_ref().is_some_and(|k| !k.is_ready()) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the JWK set to load\n",
        )
    } else if state.rate_limiter.as_ref().is_some_and(|l| !l.is_ready()) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "rate limiter unavailable (Redis down, failure_mode = closed)\n",
        )
    } else if state.upstream.has_answered() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the upstream to answer\n",
        )
    }
}

async fn render_metrics(State(state): State<AdminState>) -> impl IntoResponse {
    render_only_metrics(State(state.metrics)).await
}

async fn render_only_metrics(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics.encode(),
    )
}

/// How long `portcullis healthcheck` waits for an answer.
pub const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// GETs `path` on the admin listener at `addr`: `Ok(true)` for a 200 answer.
pub async fn probe(addr: std::net::SocketAddr, path: &str) -> Result<bool, String> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<axum::body::Body>();
    let uri: http::Uri = format!("http://{addr}{path}")
        .parse()
        .map_err(|_| "invalid admin address".to_owned())?;
    match tokio::time::timeout(PROBE_TIMEOUT, client.get(uri)).await {
        Ok(Ok(response)) => Ok(response.status() == StatusCode::OK),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".to_owned()),
    }
}

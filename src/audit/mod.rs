//! The audit log: one JSON line per request, written when its response has fully ended.
//!
//! Guards against requests that leave no trace and against logs that leak: the record is
//! completed when the response stream ends (or is cut), carries the gateway's decision and the
//! upstream's real status, and never holds a token, an `Authorization` header, a query string or a
//! body. Records are written off the request path by a writer thread behind a bounded queue
//! ([`AuditSink`]); with `hash_chain` each line also carries the SHA-256 of the line before it, so
//! an edited, deleted or reordered line is found by `portcullis audit-verify` ([`chain`]).

pub mod chain;
mod line;
pub mod otlp;
mod writer;

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderValue, Method};
use http_body::{Body as _, Frame, SizeHint};
use tower::{Layer, Service};

use crate::context::{Facts, RequestContext};
use crate::error::GatewayError;
use crate::fault::{UpstreamIdleTimeout, caused_by};
use crate::metrics::Metrics;
pub use crate::outcome::{Decision, Outcome, StreamEnd};
use crate::stage::{Check, Request, Response};
use crate::trace::{TraceContext, TraceId};
use otlp::SpanExport;
pub use writer::{AuditSink, WRITER_POLL_INTERVAL};

/// One audit line.
#[derive(Debug)]
pub struct AuditRecord {
    /// When the request head arrived (RFC 3339, UTC, milliseconds).
    pub ts: SystemTime,
    /// The gateway-generated request id.
    pub request_id: HeaderValue,
    /// The W3C trace id (the caller's, or a new one).
    pub trace_id: TraceId,
    /// The client's address.
    pub client_ip: IpAddr,
    /// The authenticated user, once authentication is configured.
    pub user: Option<Arc<str>>,
    /// The request method.
    pub method: Method,
    /// The request path, without the query string (which may hold credentials).
    pub path: String,
    /// The status sent to the client (499 when the client left before the response head).
    pub status: u16,
    /// The gateway's decision.
    pub decision: Decision,
    /// The rule that decided.
    pub rule: Option<Cow<'static, str>>,
    /// Time from the request head to the end of the response, in milliseconds.
    pub latency_ms: f64,
    /// The upstream's real status.
    pub upstream_status: Option<u16>,
    /// Request body bytes received.
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// How the response stream ended.
    pub end: StreamEnd,
    /// The model an OpenAI-compatible request named (null elsewhere).
    pub model: Option<Box<str>>,
    /// Input tokens of an OpenAI-compatible exchange, as reported or estimated (null elsewhere
    /// and where unknown).
    pub input_tokens: Option<u64>,
    /// Output tokens, likewise.
    pub output_tokens: Option<u64>,
    /// Values data-loss prevention replaced, in the request and the response.
    pub redactions: u64,
    /// The data-loss prevention rules that matched, never the values.
    pub dlp_rules: Vec<&'static str>,
    /// The JSON-RPC method of an MCP request (null elsewhere).
    pub mcp_method: Option<Box<str>>,
    /// The tool (or prompt name, or resource URI) an MCP request acts on; never its arguments.
    pub mcp_tool: Option<Box<str>>,
    /// WebSocket messages from the client (null for other requests).
    pub messages_in: Option<u64>,
    /// WebSocket messages to the client (null for other requests).
    pub messages_out: Option<u64>,
}

/// What a WebSocket carried, reported by its relay when it closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketSummary {
    /// Message payload bytes from the client.
    pub bytes_in: u64,
    /// Message payload bytes to the client.
    pub bytes_out: u64,
    /// Messages from the client.
    pub messages_in: u64,
    /// Messages to the client.
    pub messages_out: u64,
    /// How it ended.
    pub end: StreamEnd,
}

/// Put in a `101 Switching Protocols` response's extensions by the WebSocket relay: the record
/// of that request is written when the socket closes, with what the socket carried, its whole
/// lifetime as `latency_ms`. A relay that never reports (a dropped sender) leaves the record
/// ended `client_closed`.
#[derive(Debug, Clone)]
pub struct SocketAudit(
    Arc<std::sync::Mutex<Option<tokio::sync::oneshot::Receiver<SocketSummary>>>>,
);

impl SocketAudit {
    /// The audit side of the relay's report.
    pub fn new(summary: tokio::sync::oneshot::Receiver<SocketSummary>) -> SocketAudit {
        SocketAudit(Arc::new(std::sync::Mutex::new(Some(summary))))
    }

    fn take(&self) -> Option<tokio::sync::oneshot::Receiver<SocketSummary>> {
        self.0.lock().ok()?.take()
    }
}

/// What the audit layer needs: the sink and the metrics fed from the same finished record.
#[derive(Debug, Clone)]
pub struct Auditor {
    /// Where records go.
    pub sink: AuditSink,
    /// Request metrics, observed at the same moment as the record.
    pub metrics: Arc<Metrics>,
    /// OTLP span export, fed from the same finished record.
    pub spans: Option<Arc<SpanExport>>,
}

/// A record waiting for its response to end; writes itself when dropped.
struct PendingRecord {
    auditor: Arc<Auditor>,
    started: Instant,
    record: Option<AuditRecord>,
    facts: Arc<Facts>,
    trace: Option<TraceContext>,
}

impl PendingRecord {
    /// Completes and queues the record; later calls do nothing.
    fn write(&mut self) {
        let Some(mut record) = self.record.take() else {
            return;
        };
        let latency = self.started.elapsed();
        record.latency_ms = (latency.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
        record.bytes_in = self.facts.bytes_in();
        if record.user.is_none() {
            record.user = self.facts.user();
        }
        let dlp = self.facts.dlp();
        record.redactions = dlp.redactions;
        record.dlp_rules = dlp.rules;
        if let Some(llm) = self.facts.llm() {
            record.model = llm.model;
            record.input_tokens = llm.input_tokens;
            record.output_tokens = llm.output_tokens;
        }
        if let Some(mcp) = self.facts.mcp() {
            record.mcp_method = mcp.method.clone();
            record.mcp_tool = mcp.name.clone();
        }
        self.auditor.metrics.observe_request(
            record.decision.as_str(),
            record.status,
            latency,
            record.bytes_in,
            record.bytes_out,
        );
        if let (Some(spans), Some(trace)) = (&self.auditor.spans, &self.trace) {
            spans.export(&record, trace, SystemTime::now());
        }
        if record.decision == Decision::AuditUnavailable {
            // The log is failing: this record must not make the request wait on it.
            self.auditor.sink.record_or_drop(record);
        } else {
            self.auditor.sink.record(record);
        }
    }
}

impl Drop for PendingRecord {
    fn drop(&mut self) {
        self.write();
    }
}

/// Check: with `audit.on_failure = "fail_closed"`, refuses requests (503) while the audit log
/// cannot be written: a request that cannot be recorded is not served.
#[derive(Debug)]
pub struct RequireWritable(pub Arc<Auditor>);

impl Check for RequireWritable {
    fn check(&self, _: &mut Request) -> Result<(), GatewayError> {
        if self.0.sink.refuses_requests() {
            return Err(GatewayError::AuditUnavailable);
        }
        Ok(())
    }
}

/// The operational log line of a gateway error, with the ids that find it in the audit log.
fn log_cause(status: http::StatusCode, record: &AuditRecord, cause: &str) {
    let request_id = record.request_id.to_str().unwrap_or("invalid");
    let decision = record.decision.as_str();
    if status.is_server_error() {
        tracing::warn!(request_id, trace_id = %record.trace_id, decision, error = cause, "request failed");
    } else {
        tracing::debug!(request_id, trace_id = %record.trace_id, decision, error = cause, "request rejected");
    }
}

/// Layer: wraps everything below so that every request, rejected or forwarded, streamed or cut,
/// leaves exactly one record.
#[derive(Debug, Clone)]
pub struct AuditLayer {
    auditor: Arc<Auditor>,
}

impl AuditLayer {
    /// The layer writing to `auditor`.
    pub fn new(auditor: Arc<Auditor>) -> AuditLayer {
        AuditLayer { auditor }
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = Audited<S>;

    fn layer(&self, inner: S) -> Audited<S> {
        Audited {
            auditor: self.auditor.clone(),
            inner,
        }
    }
}

/// The service of [`AuditLayer`].
#[derive(Debug, Clone)]
pub struct Audited<S> {
    auditor: Arc<Auditor>,
    inner: S,
}

impl<S> Service<Request> for Audited<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = AuditFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let (started, received_at, request_id, client_ip, trace, facts) =
            match RequestContext::of(&request) {
                Some(c) => (
                    c.started,
                    c.received_at,
                    c.id.clone(),
                    c.client_ip,
                    Some(c.trace),
                    c.facts.clone(),
                ),
                None => (
                    Instant::now(),
                    SystemTime::now(),
                    HeaderValue::from_static("unknown"),
                    IpAddr::from([0, 0, 0, 0]),
                    None,
                    Arc::default(),
                ),
            };
        let pending = PendingRecord {
            auditor: self.auditor.clone(),
            started,
            facts: facts.clone(),
            trace,
            record: Some(AuditRecord {
                ts: received_at,
                request_id,
                trace_id: trace.map_or(TraceId([0; 16]), |t| t.trace_id),
                client_ip,
                user: None,
                method: request.method().clone(),
                path: request.uri().path().to_owned(),
                // Until a response exists, the client is the one who left.
                status: 499,
                decision: Decision::Allowed,
                rule: None,
                latency_ms: 0.0,
                upstream_status: None,
                bytes_in: 0,
                bytes_out: 0,
                end: StreamEnd::ClientClosed,
                model: None,
                input_tokens: None,
                output_tokens: None,
                redactions: 0,
                dlp_rules: Vec::new(),
                mcp_method: None,
                mcp_tool: None,
                messages_in: None,
                messages_out: None,
            }),
        };
        let request = request.map(|body| {
            Body::new(CountedBody {
                inner: body,
                facts: facts.clone(),
            })
        });
        AuditFuture {
            inner: self.inner.call(request),
            pending: Some(pending),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Audited`]: fills the record from the response head and hands it
    /// to the response body, which completes it when the stream ends.
    pub struct AuditFuture<F> {
        #[pin]
        inner: F,
        pending: Option<PendingRecord>,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for AuditFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = std::task::ready!(this.inner.poll(cx));
        let Some(mut pending) = this.pending.take() else {
            return Poll::Ready(Ok(response));
        };
        let status = response.status();
        let outcome = pending.facts.take_outcome();
        if let Some(record) = pending.record.as_mut() {
            record.status = status.as_u16();
            record.decision = outcome.decision;
            record.rule = outcome.rule;
            record.upstream_status = outcome.upstream_status;
            if let Some(cause) = outcome.cause {
                log_cause(status, record, &cause);
            }
        }
        let mut response = response;
        if status == http::StatusCode::SWITCHING_PROTOCOLS
            && let Some(summary) = response
                .extensions_mut()
                .remove::<SocketAudit>()
                .and_then(|s| s.take())
        {
            tokio::spawn(async move {
                let mut pending = pending;
                if let Some(record) = pending.record.as_mut() {
                    match summary.await {
                        Ok(summary) => {
                            record.bytes_out = summary.bytes_out;
                            record.messages_in = Some(summary.messages_in);
                            record.messages_out = Some(summary.messages_out);
                            record.end = summary.end;
                            pending.facts.add_bytes_in(summary.bytes_in);
                        }
                        Err(_) => record.end = StreamEnd::ClientClosed,
                    }
                }
                pending.write();
            });
            return Poll::Ready(Ok(response));
        }
        Poll::Ready(Ok(response.map(|body| {
            Body::new(AuditedBody {
                inner: body,
                pending,
            })
        })))
    }
}

/// Counts request body bytes as they stream to the upstream.
struct CountedBody {
    inner: Body,
    facts: Arc<Facts>,
}

impl http_body::Body for CountedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.facts.add_bytes_in(data.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
/// Counts response bytes and completes the record when the stream ends, fails or is dropped.
struct AuditedBody {
    inner: Body,
    pending: PendingRecord,
}

impl http_body::Body for AuditedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let Some(record) = this.pending.record.as_mut() else {
            return polled;
        };
        let end = match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    record.bytes_out += data.len() as u64;
                }
                None
            }
            Poll::Ready(Some(Err(e))) if caused_by::<UpstreamIdleTimeout>(e) => {
                Some(StreamEnd::UpstreamIdleTimeout)
            }
            Poll::Ready(Some(Err(_))) => Some(StreamEnd::UpstreamAborted),
            Poll::Ready(None) => Some(StreamEnd::Complete),
            Poll::Pending => None,
        };
        if let Some(end) = end {
            record.end = end;
            this.pending.write();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for AuditedBody {
    fn drop(&mut self) {
        // A body with nothing to send (HEAD, 204, 304) may be dropped unpolled: that is complete.
        if self.inner.is_end_stream()
            && let Some(record) = self.pending.record.as_mut()
        {
            record.end = StreamEnd::Complete;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::time::Duration;

    use http_body_util::BodyExt;
    use tower::{Layer, ServiceExt};

    use super::{AuditLayer, AuditSink, Auditor};
    use crate::config::{AuditOutput, AuditSettings};
    use crate::context::{RequestContext, Response, test_request as request};
    use crate::metrics::Metrics;
    use crate::outcome::Decision;

    #[tokio::test]
    async fn one_record_per_request_written_when_the_body_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let metrics = Arc::new(Metrics::new());
        let settings = AuditSettings {
            output: AuditOutput::File(path.clone()),
            ..AuditSettings::default()
        };
        let sink = AuditSink::start(&settings, metrics.clone()).unwrap();
        let auditor = Arc::new(Auditor {
            sink: sink.clone(),
            metrics,
            spans: None,
        });
        // The rest of the stack: records a decision in the facts, answers with a body.
        let inner = tower::service_fn(|request: crate::stage::Request| async move {
            if let Some(context) = RequestContext::of(&request) {
                context.facts.set_upstream_status(201);
                context.facts.note_rule("shadow.rule".into());
            }
            Ok::<_, Infallible>(Response::new(axum::body::Body::from("twelve bytes")))
        });
        let incoming = request("POST", "/v1/x?token=secret", "four");
        let id = RequestContext::of(&incoming).unwrap().id_str().to_owned();
        let response = AuditLayer::new(auditor)
            .layer(inner)
            .oneshot(incoming)
            .await
            .unwrap();
        assert!(
            std::fs::read_to_string(&path)
                .unwrap_or_default()
                .is_empty(),
            "written before the body ended"
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), 12);
        assert!(sink.flush(Duration::from_secs(5)));
        let text = std::fs::read_to_string(&path).unwrap();
        let record: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(record["request_id"], id);
        assert_eq!(
            record["path"], "/v1/x",
            "the query string is never recorded"
        );
        assert_eq!(record["decision"], Decision::Allowed.as_str());
        assert_eq!(record["rule"], "shadow.rule");
        assert_eq!(record["upstream_status"], 201);
        assert_eq!(record["bytes_out"], 12);
        assert_eq!(record["end"], "complete");
    }
}

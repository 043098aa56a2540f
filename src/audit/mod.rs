//! The audit log: one JSON line per request, written when its response has fully ended.
//!
//! Guards against requests that leave no trace and against logs that leak: the record is
//! completed when the response stream ends (or is cut), carries the gateway's decision and the
//! upstream's real status, and never holds a token, an `Authorization` header, a query string or a
//! body. Records are written off the request path by a writer thread behind a bounded queue
//! ([`AuditSink`]); with `hash_chain` each line also carries the SHA-256 of the line before it, so
//! an edited, deleted or reordered line is found by `portcullis audit-verify` ([`chain`]).

pub mod chain;
mod writer;

use std::borrow::Cow;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use crate::stage::Next;
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, Method};
use http_body::{Body as _, Frame, SizeHint};
use serde::{Serialize, Serializer};

use crate::metrics::Metrics;
use crate::otlp::SpanExport;
use crate::proxy::UpstreamIdleTimeout;
use crate::request_id::RequestContext;
use crate::trace::{TraceContext, TraceId};
pub use writer::{AuditSink, WRITER_POLL_INTERVAL};

/// What the gateway decided about a request: the audit record's `decision`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Forwarded, and the upstream's answer relayed.
    #[default]
    Allowed,
    /// The upstream was unreachable or answered 5xx.
    UpstreamError,
    /// The upstream did not answer within `response_header_timeout`.
    UpstreamTimeout,
    /// No token: 401.
    AuthMissing,
    /// A token that is not acceptable: 401.
    AuthInvalid,
    /// An expired token: 401.
    AuthExpired,
    /// A valid token whose id or subject is revoked: 401.
    AuthRevoked,
    /// A valid token without the required scopes: 403.
    Forbidden,
    /// The user exceeded the per-user limit: 429.
    RateLimited,
    /// The client address exceeded the per-IP flood guard: 429.
    IpRateLimited,
    /// The shared limiter was unreachable with `failure_mode = "closed"`: 503.
    LimiterUnavailable,
    /// The body exceeded `max_body_bytes`: 413.
    BodyTooLarge,
    /// The body did not arrive within `server.body_timeout`: 408.
    BodyTimeout,
    /// The audit log could not be written and `on_failure = "fail_closed"`: 503.
    AuditUnavailable,
    /// An unsupported transfer coding, a malformed body, or `CONNECT`: 400.
    BadRequest,
    /// The request-buffer budget (`max_buffered_bytes`) was exhausted: 503.
    Overloaded,
    /// The body is not JSON: 415.
    UnsupportedMediaType,
    /// The body is not well-formed JSON (or too deep, or empty): 400.
    InvalidJson,
    /// The body holds too much text: 400.
    InputTooLong,
    /// An injection rule matched: 400.
    InjectionDetected,
    /// The request head exceeded `max_header_bytes`.
    HeaderTooLarge,
    /// A gateway bug was caught and answered with 500.
    InternalError,
}

impl Decision {
    /// The stable name written to the audit log and used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::UpstreamError => "upstream_error",
            Decision::UpstreamTimeout => "upstream_timeout",
            Decision::AuthMissing => "auth_missing",
            Decision::AuthInvalid => "auth_invalid",
            Decision::AuthExpired => "auth_expired",
            Decision::AuthRevoked => "auth_revoked",
            Decision::Forbidden => "forbidden",
            Decision::RateLimited => "rate_limited",
            Decision::IpRateLimited => "ip_rate_limited",
            Decision::LimiterUnavailable => "limiter_unavailable",
            Decision::BodyTooLarge => "body_too_large",
            Decision::BodyTimeout => "body_timeout",
            Decision::AuditUnavailable => "audit_unavailable",
            Decision::BadRequest => "bad_request",
            Decision::Overloaded => "overloaded",
            Decision::UnsupportedMediaType => "unsupported_media_type",
            Decision::InvalidJson => "invalid_json",
            Decision::InputTooLong => "input_too_long",
            Decision::InjectionDetected => "injection_detected",
            Decision::HeaderTooLarge => "header_too_large",
            Decision::InternalError => "internal_error",
        }
    }
}

/// What the stages learned about a request, carried up to the audit layer in response extensions.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The decision.
    pub decision: Decision,
    /// The rule that decided, when one did.
    pub rule: Option<Cow<'static, str>>,
    /// The status the upstream really answered with.
    pub upstream_status: Option<u16>,
    /// The authenticated user.
    pub user: Option<Arc<str>>,
    /// The internal cause of a gateway error, for the operational log only (never sent).
    pub cause: Option<Box<str>>,
}

/// How the response stream ended: the audit record's `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The whole response reached the client.
    Complete,
    /// The client went away before the response ended.
    ClientClosed,
    /// The upstream fell silent longer than `idle_timeout`; the stream was cut.
    UpstreamIdleTimeout,
    /// The upstream broke the stream; it was cut.
    UpstreamAborted,
}

impl StreamEnd {
    fn as_str(self) -> &'static str {
        match self {
            StreamEnd::Complete => "complete",
            StreamEnd::ClientClosed => "client_closed",
            StreamEnd::UpstreamIdleTimeout => "upstream_idle_timeout",
            StreamEnd::UpstreamAborted => "upstream_aborted",
        }
    }
}

/// One audit line.
#[derive(Debug, Serialize)]
pub struct AuditRecord {
    /// When the request head arrived (RFC 3339, UTC, milliseconds).
    #[serde(serialize_with = "rfc3339")]
    pub ts: SystemTime,
    /// The gateway-generated request id.
    #[serde(serialize_with = "header_text")]
    pub request_id: HeaderValue,
    /// The W3C trace id (the caller's, or a new one).
    pub trace_id: TraceId,
    /// The client's address.
    pub client_ip: IpAddr,
    /// The authenticated user, once authentication is configured.
    pub user: Option<Arc<str>>,
    /// The request method.
    #[serde(serialize_with = "method_text")]
    pub method: Method,
    /// The request path, without the query string (which may hold credentials).
    pub path: String,
    /// The status sent to the client (499 when the client left before the response head).
    pub status: u16,
    /// The gateway's decision.
    #[serde(serialize_with = "decision_text")]
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
    #[serde(serialize_with = "end_text")]
    pub end: StreamEnd,
}

fn rfc3339<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}
fn header_text<S: Serializer>(v: &HeaderValue, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.to_str().unwrap_or("invalid"))
}
fn method_text<S: Serializer>(m: &Method, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(m.as_str())
}
fn decision_text<S: Serializer>(d: &Decision, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(d.as_str())
}
fn end_text<S: Serializer>(e: &StreamEnd, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(e.as_str())
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

/// What later stages tell the audit record while the request is still on its way, so that even
/// a request whose client leaves early is recorded with what was known: bytes received and the
/// authenticated user. Travels in the request extensions.
#[derive(Debug, Default)]
pub struct Tally {
    bytes_in: AtomicU64,
    user: OnceLock<Arc<str>>,
}

impl Tally {
    /// Records the authenticated user.
    pub fn set_user(&self, user: &Arc<str>) {
        let _ = self.user.set(user.clone());
    }
}

/// A record waiting for its response to end; writes itself when dropped.
struct PendingRecord {
    auditor: Arc<Auditor>,
    started: Instant,
    record: Option<AuditRecord>,
    tally: Arc<Tally>,
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
        record.bytes_in = self.tally.bytes_in.load(Ordering::Relaxed);
        if record.user.is_none() {
            record.user = self.tally.user.get().cloned();
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

/// Layer: with `audit.on_failure = "fail_closed"`, refuses requests (503) while the audit log
/// cannot be written: a request that cannot be recorded is not served.
pub async fn require_writable(
    auditor: Arc<Auditor>,
    request: Request,
    next: impl Next,
) -> Response {
    if auditor.sink.refuses_requests() {
        let id = RequestContext::id_of(&request);
        return crate::error::GatewayError::AuditUnavailable.into_response(&id);
    }
    next.run(request).await
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
pub async fn observe(auditor: Arc<Auditor>, request: Request, next: impl Next) -> Response {
    let (context_started, received_at, request_id, client_ip, trace_id) =
        match request.extensions().get::<RequestContext>() {
            Some(c) => (
                c.started,
                c.received_at,
                c.id.clone(),
                c.client_ip,
                c.trace.trace_id,
            ),
            None => (
                Instant::now(),
                SystemTime::now(),
                HeaderValue::from_static("unknown"),
                IpAddr::from([0, 0, 0, 0]),
                TraceId([0; 16]),
            ),
        };
    let tally = Arc::new(Tally::default());
    let trace = request
        .extensions()
        .get::<RequestContext>()
        .map(|c| c.trace);
    let mut pending = PendingRecord {
        auditor,
        started: context_started,
        tally: tally.clone(),
        trace,
        record: Some(AuditRecord {
            ts: received_at,
            request_id,
            trace_id,
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
        }),
    };
    let mut request = request.map(|body| {
        Body::new(CountedBody {
            inner: body,
            tally: tally.clone(),
        })
    });
    request.extensions_mut().insert(tally);
    let mut response = next.run(request).await;
    let status = response.status();
    if let Some(record) = pending.record.as_mut() {
        record.status = status.as_u16();
        if let Some(outcome) = response.extensions_mut().get_mut::<Outcome>() {
            record.decision = outcome.decision;
            record.rule = outcome.rule.clone();
            record.upstream_status = outcome.upstream_status;
            record.user = outcome.user.clone();
            if let Some(cause) = outcome.cause.take() {
                log_cause(status, record, &cause);
            }
        }
    }
    response.map(|body| {
        Body::new(AuditedBody {
            inner: body,
            pending,
        })
    })
}

/// Counts request body bytes as they stream to the upstream.
struct CountedBody {
    inner: Body,
    tally: Arc<Tally>,
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
            self.tally
                .bytes_in
                .fetch_add(data.len() as u64, Ordering::Relaxed);
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
            Poll::Ready(Some(Err(e))) if crate::error::caused_by::<UpstreamIdleTimeout>(e) => {
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

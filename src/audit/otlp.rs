//! Optional OTLP export: one OpenTelemetry span per request, built from its finished audit record
//! (cargo feature `otlp`, off by default; `[tracing] otlp_endpoint`).
//!
//! Guards against a tracing backend slowing or breaking the request path: spans are handed to
//! the SDK's batch processor, which exports from its own thread over OTLP/HTTP (protobuf) and
//! drops spans rather than block when its queue is full. The span carries the same trace id and
//! span id the upstream saw in `traceparent`, so the gateway appears in the trace as the
//! upstream's parent. It holds no token, query string or body: the method, path, status,
//! decision and request id only.

#[cfg(feature = "otlp")]
mod export {
    use std::cell::Cell;
    use std::time::{Duration, SystemTime};

    use opentelemetry::trace::{
        Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags,
        TraceId, TraceState, Tracer as _, TracerProvider as _,
    };
    use opentelemetry::{Context, KeyValue};
    use opentelemetry_otlp::{Protocol, WithExportConfig as _};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::{
        BatchConfigBuilder, BatchSpanProcessor, IdGenerator, SdkTracer, SdkTracerProvider,
    };

    use crate::audit::AuditRecord;
    use crate::config::TracingSettings;
    use crate::trace::TraceContext;

    thread_local! {
        /// The ids of the span being built on this thread: the SDK asks its id generator for
        /// them, and the gateway already chose them (the upstream has seen them).
        static NEXT_IDS: Cell<([u8; 16], [u8; 8])> = const { Cell::new(([0; 16], [0; 8])) };
    }

    /// Hands the SDK the ids the gateway chose.
    #[derive(Debug)]
    struct ChosenIds;

    impl IdGenerator for ChosenIds {
        fn new_trace_id(&self) -> TraceId {
            TraceId::from_bytes(NEXT_IDS.with(|ids| ids.get().0))
        }

        fn new_span_id(&self) -> SpanId {
            SpanId::from_bytes(NEXT_IDS.with(|ids| ids.get().1))
        }
    }

    /// The span exporter.
    pub struct SpanExport {
        provider: SdkTracerProvider,
        tracer: SdkTracer,
    }

    impl std::fmt::Debug for SpanExport {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("SpanExport").finish_non_exhaustive()
        }
    }

    impl SpanExport {
        /// Builds the exporter and its batch processor.
        pub fn new(settings: &TracingSettings) -> Result<SpanExport, String> {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(settings.otlp_endpoint.to_string())
                .with_timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| format!("cannot build the OTLP exporter ({e})"))?;
            let processor = BatchSpanProcessor::builder(exporter)
                .with_batch_config(
                    BatchConfigBuilder::default()
                        .with_scheduled_delay(settings.export_interval)
                        .build(),
                )
                .build();
            let provider = SdkTracerProvider::builder()
                .with_span_processor(processor)
                .with_id_generator(ChosenIds)
                .with_resource(
                    Resource::builder()
                        .with_service_name(settings.service_name.clone())
                        .build(),
                )
                .build();
            let tracer = provider.tracer("portcullis");
            Ok(SpanExport { provider, tracer })
        }

        /// Queues the span of a finished request.
        pub fn export(&self, record: &AuditRecord, trace: &TraceContext, end: SystemTime) {
            NEXT_IDS.with(|ids| ids.set((trace.trace_id.0, trace.span_id)));
            let parent = match trace.parent_id {
                Some(parent) => Context::new().with_remote_span_context(SpanContext::new(
                    TraceId::from_bytes(trace.trace_id.0),
                    SpanId::from_bytes(parent),
                    TraceFlags::new(trace.flags),
                    true,
                    TraceState::default(),
                )),
                None => Context::new(),
            };
            let builder = self
                .tracer
                .span_builder(format!("{} {}", record.method, record.path))
                .with_kind(SpanKind::Server)
                .with_start_time(record.ts)
                .with_attributes([
                    KeyValue::new("http.request.method", record.method.to_string()),
                    KeyValue::new("url.path", record.path.clone()),
                    KeyValue::new("http.response.status_code", i64::from(record.status)),
                    KeyValue::new("portcullis.decision", record.decision.as_str()),
                    KeyValue::new(
                        "portcullis.request_id",
                        record.request_id.to_str().unwrap_or("invalid").to_owned(),
                    ),
                ]);
            let mut span = self.tracer.build_with_context(builder, &parent);
            if record.status >= 500 {
                span.set_status(Status::error(record.decision.as_str()));
            }
            span.end_with_timestamp(end);
        }

        /// Exports what is queued; called on shutdown.
        pub fn shutdown(&self) {
            if let Err(e) = self.provider.shutdown() {
                tracing::warn!(error = %e, "OTLP span export did not finish");
            }
        }
    }
}

#[cfg(feature = "otlp")]
pub use export::SpanExport;

/// Without the `otlp` feature there is no exporter; `[tracing] otlp_endpoint` is refused when the
/// config loads.
#[cfg(not(feature = "otlp"))]
#[derive(Debug)]
pub enum SpanExport {}

#[cfg(not(feature = "otlp"))]
impl SpanExport {
    /// Never called: no value of this type exists.
    pub fn export(
        &self,
        _: &crate::audit::AuditRecord,
        _: &crate::trace::TraceContext,
        _: std::time::SystemTime,
    ) {
        match *self {}
    }

    /// Never called: no value of this type exists.
    pub fn shutdown(&self) {
        match *self {}
    }
}

/// Whether this build can export spans.
pub const AVAILABLE: bool = cfg!(feature = "otlp");

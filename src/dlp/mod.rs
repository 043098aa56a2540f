//! Data-loss prevention: secrets caught in request bodies, and secrets, personal data and
//! canaries redacted from responses, streams included, without buffering them.
//!
//! Guards against the two leaks an agent gateway sees: a user pasting a cloud key into a prompt
//! that goes to a third-party model (`request_action`: block with 400 `secret_detected`, redact,
//! or record), and an agent sending a secret, a customer's card number or its own system prompt
//! (a canary) back to the client (`response_action`: redact or record). Requests are scanned on
//! the JSON view validation parsed (each string value, decoded); responses as they stream: JSON
//! and `text/*` bodies through one scanner each, event streams event by event, with the text of
//! OpenAI chat deltas (`choices[].delta.content`) and Responses API deltas scanned as one
//! continuous channel per choice, so a secret split across events is still caught (see
//! [`stream`] for the bounded holdback). Every SSE event the client receives stays well-formed and
//! its JSON still parses. Neither the audit log nor any other log ever holds a matched value.

pub mod detect;
pub mod stream;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures_util::future::{Either, Ready, ready};
use http::{HeaderValue, header};
use http_body::{Frame, SizeHint};
use serde_json::Value;
use tower::{Layer, Service};

use crate::config::dlp::{DlpSettings, RequestAction, ResponseAction};
use crate::context::{Facts, RequestContext};
use crate::error::GatewayError;
use crate::headers::media_type;
use crate::llm::usage::event_end;
use crate::metrics::Metrics;
use crate::stage::{Request, Response, StageResult};
use detect::Detectors;
use stream::{JsonState, TextScanner};

/// Most bytes of one SSE event held back while it is incomplete; a longer event is scanned as
/// plain text as it comes.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// The DLP policy, built once from `[dlp]`.
#[derive(Debug)]
pub struct Dlp {
    settings: DlpSettings,
    detectors: Detectors,
    metrics: Arc<Metrics>,
}

impl Dlp {
    /// The detectors `settings` choose.
    pub fn new(settings: DlpSettings, metrics: Arc<Metrics>) -> Result<Dlp, String> {
        let detectors = Detectors::new(settings.pii, &settings.canaries)?;
        Ok(Dlp {
            settings,
            detectors,
            metrics,
        })
    }

    /// The detectors in force (for `portcullis scan` and the benchmarks).
    pub fn detectors(&self) -> &Detectors {
        &self.detectors
    }

    fn count(&self, rules: &[&'static str], direction: &'static str, action: &'static str) {
        for rule in rules {
            self.metrics.dlp_finding(rule, direction, action);
        }
    }

    /// The request check: each string of the body's JSON view (or the text of an allowed
    /// non-JSON body) against the secret detectors.
    fn check_request(&self, request: &mut Request) -> Result<(), GatewayError> {
        let Some(context) = RequestContext::of_mut(request) else {
            return Ok(());
        };
        let action = self.settings.request_action;
        let mut found: Vec<&'static str> = Vec::new();
        let mut rewritten: Option<Vec<u8>> = None;
        if let Some(view) = &context.json {
            // Read first; a copy is made only to redact.
            find_in_strings(&self.detectors, view, &mut found);
            if !found.is_empty() && action == RequestAction::Redact {
                let mut redacted = (**view).clone();
                redact_strings(&self.detectors, &mut redacted, &mut Vec::new(), &[]);
                rewritten = serde_json::to_vec(&redacted).ok();
                context.json = Some(Arc::new(redacted));
            }
        } else if let Some(text) = context
            .body
            .as_ref()
            .and_then(|b| std::str::from_utf8(b).ok())
        {
            let (redacted, findings) = self.detectors.redact(text);
            found.extend(findings.iter().map(|f| f.rule));
            if !found.is_empty() && action == RequestAction::Redact {
                rewritten = Some(redacted.into_bytes());
            }
        }
        if found.is_empty() {
            return Ok(());
        }
        let (name, redactions) = match action {
            RequestAction::Block => ("block", 0),
            RequestAction::Redact => ("redact", found.len() as u64),
            RequestAction::Shadow => ("shadow", 0),
        };
        self.count(&found, "request", name);
        context.facts.add_dlp(redactions, &found);
        if action == RequestAction::Block {
            return Err(GatewayError::SecretDetected { rule: found[0] });
        }
        if let Some(body) = rewritten {
            context.body = Some(Bytes::from(body.clone()));
            request
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            request.headers_mut().remove(header::TRANSFER_ENCODING);
            *request.body_mut() = Body::from(body);
        }
        Ok(())
    }
}

/// The findings in every string of `value` (keys are left alone).
fn find_in_strings(detectors: &Detectors, value: &Value, found: &mut Vec<&'static str>) {
    match value {
        Value::String(text) => found.extend(detectors.find(text).iter().map(|f| f.rule)),
        Value::Array(items) => items
            .iter()
            .for_each(|item| find_in_strings(detectors, item, found)),
        Value::Object(fields) => fields
            .values()
            .for_each(|item| find_in_strings(detectors, item, found)),
        _ => {}
    }
}

/// Replaces every string in `value` (keys are left alone) with its redacted form, except those
/// at `skip` paths; findings go to `found`.
fn redact_strings(
    detectors: &Detectors,
    value: &mut Value,
    found: &mut Vec<&'static str>,
    skip: &[&str],
) {
    match value {
        Value::String(text) => {
            let (redacted, findings) = detectors.redact(text);
            if !findings.is_empty() {
                found.extend(findings.iter().map(|f| f.rule));
                *text = redacted;
            }
        }
        Value::Array(items) => {
            for item in items {
                redact_strings(detectors, item, found, skip);
            }
        }
        Value::Object(fields) => {
            for (key, item) in fields.iter_mut() {
                if !skip.contains(&key.as_str()) {
                    redact_strings(detectors, item, found, skip);
                }
            }
        }
        _ => {}
    }
}

/// Layer: scans request bodies (after validation read them) and redacts responses on the way
/// back.
#[derive(Debug, Clone)]
pub struct DlpLayer {
    dlp: Arc<Dlp>,
}

impl DlpLayer {
    /// The layer for `dlp`.
    pub fn new(dlp: Arc<Dlp>) -> DlpLayer {
        DlpLayer { dlp }
    }
}

impl<S> Layer<S> for DlpLayer {
    type Service = DlpService<S>;

    fn layer(&self, inner: S) -> DlpService<S> {
        DlpService {
            dlp: self.dlp.clone(),
            inner,
        }
    }
}

/// The service of [`DlpLayer`].
#[derive(Debug, Clone)]
pub struct DlpService<S> {
    dlp: Arc<Dlp>,
    inner: S,
}

impl<S> Service<Request> for DlpService<S>
where
    S: Service<Request, Response = Response, Error = GatewayError>,
{
    type Response = Response;
    type Error = GatewayError;
    type Future = Either<Ready<StageResult>, DlpFuture<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        if let Err(refusal) = self.dlp.check_request(&mut request) {
            return Either::Left(ready(Err(refusal)));
        }
        // Scanned answers must arrive uncompressed.
        request.headers_mut().insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        let facts = RequestContext::of(&request).map(|c| c.facts.clone());
        Either::Right(DlpFuture {
            inner: self.inner.call(request),
            dlp: Some(self.dlp.clone()),
            facts,
        })
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`DlpService`]: the answer's body is scanned as it passes.
    pub struct DlpFuture<F> {
        #[pin]
        inner: F,
        dlp: Option<Arc<Dlp>>,
        facts: Option<Arc<Facts>>,
    }
}

impl<F: Future<Output = StageResult>> Future for DlpFuture<F> {
    type Output = StageResult;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<StageResult> {
        let this = self.project();
        let mut response = std::task::ready!(this.inner.poll(cx))?;
        let Some(dlp) = this.dlp.take() else {
            return Poll::Ready(Ok(response));
        };
        let encoded = response
            .headers()
            .get(header::CONTENT_ENCODING)
            .is_some_and(|v| v.as_bytes() != b"identity");
        let media = media_type(response.headers()).to_ascii_lowercase();
        let mode = if encoded {
            None
        } else if media == "text/event-stream" {
            Some(Mode::Events(Box::default()))
        } else if media == "application/json" || media.ends_with("+json") {
            Some(Mode::Json(TextScanner::default(), JsonState::default()))
        } else if media.starts_with("text/") {
            Some(Mode::Text(TextScanner::default()))
        } else {
            None
        };
        let Some(mode) = mode else {
            if encoded {
                dlp.metrics.dlp_unscanned.inc();
            }
            return Poll::Ready(Ok(response));
        };
        // Redaction changes the length.
        response.headers_mut().remove(header::CONTENT_LENGTH);
        let shadow = dlp.settings.response_action == ResponseAction::Shadow;
        Poll::Ready(Ok(response.map(|inner| {
            Body::new(ScannedBody {
                inner,
                dlp,
                facts: this.facts.take(),
                mode,
                carry: Vec::new(),
                found: Vec::new(),
                shadow,
                failed: None,
                ended: false,
            })
        })))
    }
}

/// How an answer's body is read.
enum Mode {
    /// `text/*`: one channel.
    Text(TextScanner),
    /// JSON: one channel, findings inside strings only.
    Json(TextScanner, JsonState),
    /// An event stream.
    Events(Box<EventRedactor>),
}

/// A response body scanned as it passes.
struct ScannedBody {
    inner: Body,
    dlp: Arc<Dlp>,
    facts: Option<Arc<Facts>>,
    mode: Mode,
    /// The bytes of a UTF-8 character split across frames.
    carry: Vec<u8>,
    found: Vec<&'static str>,
    shadow: bool,
    /// An error of the inner body, sent after the held text.
    failed: Option<axum::Error>,
    ended: bool,
}

impl ScannedBody {
    /// Scans a frame's bytes; returns what to send now.
    fn feed(&mut self, data: &[u8]) -> Bytes {
        if let Mode::Events(events) = &mut self.mode {
            return events.feed(&self.dlp.detectors, data, &mut self.found, self.shadow);
        }
        let mut bytes = std::mem::take(&mut self.carry);
        bytes.extend_from_slice(data);
        let valid = match std::str::from_utf8(&bytes) {
            Ok(_) => bytes.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            // Not text after all: what comes is relayed as it is.
            Err(_) => {
                let mut out = BytesMut::from(self.flush().as_ref());
                out.extend_from_slice(&bytes);
                self.mode = Mode::Text(TextScanner::default());
                self.ended = true;
                return out.freeze();
            }
        };
        self.carry = bytes.split_off(valid);
        let text = std::str::from_utf8(&bytes).unwrap_or_default();
        let detectors = &self.dlp.detectors;
        let released = match &mut self.mode {
            Mode::Text(scanner) => scanner.push(detectors, text, &mut self.found),
            Mode::Json(scanner, state) => {
                scanner.push_json(detectors, text, &mut self.found, state)
            }
            Mode::Events(_) => String::new(),
        };
        if self.shadow {
            // Record only: the bytes go on as they came (the scanner's copy is dropped).
            return Bytes::from(bytes);
        }
        Bytes::from(released)
    }

    /// What is held at the end of the body, scanned as final text.
    fn flush(&mut self) -> Bytes {
        let detectors = &self.dlp.detectors;
        let carry = std::mem::take(&mut self.carry);
        let released = match &mut self.mode {
            Mode::Text(scanner) => scanner.finish(detectors, &mut self.found),
            Mode::Json(scanner, state) => scanner.finish_json(detectors, &mut self.found, state),
            Mode::Events(events) => {
                return events.finish(detectors, &mut self.found, self.shadow);
            }
        };
        if self.shadow {
            return Bytes::from(carry);
        }
        let mut out = released.into_bytes();
        out.extend_from_slice(&carry);
        Bytes::from(out)
    }

    fn record(&mut self) {
        if self.found.is_empty() {
            return;
        }
        let action = if self.shadow { "shadow" } else { "redact" };
        self.dlp.count(&self.found, "response", action);
        if let Some(facts) = &self.facts {
            let redactions = if self.shadow {
                0
            } else {
                self.found.len() as u64
            };
            facts.add_dlp(redactions, &self.found);
        }
        self.found.clear();
    }
}

impl Drop for ScannedBody {
    fn drop(&mut self) {
        self.record();
    }
}

impl http_body::Body for ScannedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if let Some(error) = this.failed.take() {
            return Poll::Ready(Some(Err(error)));
        }
        loop {
            if this.ended {
                // Not text: relayed untouched from here on.
                return Pin::new(&mut this.inner).poll_frame(cx);
            }
            match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                None => {
                    let rest = this.flush();
                    this.record();
                    this.ended = true;
                    if rest.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(rest))));
                }
                Some(Err(error)) => {
                    // The held text is scanned and sent before the error ends the body.
                    let rest = this.flush();
                    this.record();
                    if rest.is_empty() {
                        return Poll::Ready(Some(Err(error)));
                    }
                    this.failed = Some(error);
                    return Poll::Ready(Some(Ok(Frame::data(rest))));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let out = this.feed(&data);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Event-stream redaction: events are read whole (held at most [`MAX_EVENT_BYTES`] while
/// incomplete), and the text of OpenAI deltas is scanned as one channel per choice.
#[derive(Default)]
struct EventRedactor {
    partial: Vec<u8>,
    channels: HashMap<String, TextScanner>,
    /// The last chat chunk seen, the template of a chunk that carries held text at the end.
    last_chunk: Option<Value>,
    /// An event too long to hold: its bytes are scanned as plain text as they come.
    overflow: Option<TextScanner>,
}

impl EventRedactor {
    fn feed(
        &mut self,
        detectors: &Detectors,
        data: &[u8],
        found: &mut Vec<&'static str>,
        shadow: bool,
    ) -> Bytes {
        self.partial.extend_from_slice(data);
        let mut out = Vec::new();
        while let Some(end) = event_end(&self.partial) {
            let event: Vec<u8> = self.partial.drain(..end).collect();
            if let Some(mut scanner) = self.overflow.take() {
                let text = String::from_utf8_lossy(&event);
                let released =
                    scanner.push(detectors, &text, found) + &scanner.finish(detectors, found);
                out.extend_from_slice(if shadow { &event } else { released.as_bytes() });
                continue;
            }
            let rewritten = self.event(detectors, &event, found);
            out.extend_from_slice(if shadow { &event } else { &rewritten });
        }
        if self.partial.len() > MAX_EVENT_BYTES || self.overflow.is_some() {
            let scanner = self.overflow.get_or_insert_with(TextScanner::default);
            let held = std::mem::take(&mut self.partial);
            let text = String::from_utf8_lossy(&held);
            let released = scanner.push(detectors, &text, found);
            out.extend_from_slice(if shadow { &held } else { released.as_bytes() });
        }
        Bytes::from(out)
    }

    fn finish(
        &mut self,
        detectors: &Detectors,
        found: &mut Vec<&'static str>,
        shadow: bool,
    ) -> Bytes {
        let mut out = Vec::new();
        let partial = std::mem::take(&mut self.partial);
        if let Some(mut scanner) = self.overflow.take() {
            let text = String::from_utf8_lossy(&partial);
            let released =
                scanner.push(detectors, &text, found) + &scanner.finish(detectors, found);
            out.extend_from_slice(if shadow {
                &partial
            } else {
                released.as_bytes()
            });
        } else if !partial.is_empty() {
            let rewritten = self.event(detectors, &partial, found);
            out.extend_from_slice(if shadow { &partial } else { &rewritten });
        }
        let flushed = self.flush_channels(detectors, found);
        if !shadow {
            out.extend_from_slice(&flushed);
        }
        Bytes::from(out)
    }

    /// One whole event, rewritten.
    fn event(
        &mut self,
        detectors: &Detectors,
        event: &[u8],
        found: &mut Vec<&'static str>,
    ) -> Vec<u8> {
        let text = String::from_utf8_lossy(event);
        let mut other_lines = Vec::new();
        let mut data = String::new();
        let mut has_data = false;
        for line in text.split_inclusive('\n') {
            let bare = line.trim_end_matches(['\r', '\n']);
            if let Some(rest) = bare.strip_prefix("data:") {
                if has_data {
                    data.push('\n');
                }
                data.push_str(rest.strip_prefix(' ').unwrap_or(rest));
                has_data = true;
            } else if !bare.is_empty() {
                other_lines.push(bare.to_owned());
            }
        }
        if !has_data {
            return event.to_vec();
        }
        let mut prefix = Vec::new();
        let new_data = if data == "[DONE]" {
            prefix = self.flush_channels(detectors, found);
            data
        } else {
            match serde_json::from_str::<Value>(&data) {
                Ok(mut value) => {
                    prefix = self.json_event(detectors, &mut value, found);
                    serde_json::to_string(&value).unwrap_or(data)
                }
                Err(_) => detectors_redact(detectors, &data, found),
            }
        };
        let mut out = prefix;
        for line in other_lines {
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        for line in new_data.split('\n') {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
        out
    }

    /// Rewrites a JSON event in place; returns any event to send before it (held text flushed
    /// ahead of a `done` event).
    fn json_event(
        &mut self,
        detectors: &Detectors,
        value: &mut Value,
        found: &mut Vec<&'static str>,
    ) -> Vec<u8> {
        let kind = value.get("type").and_then(Value::as_str).map(str::to_owned);
        if let Some(choices) = value.get_mut("choices").and_then(Value::as_array_mut) {
            for (position, choice) in choices.iter_mut().enumerate() {
                let index = choice
                    .get("index")
                    .and_then(Value::as_u64)
                    .unwrap_or(position as u64);
                let finished = choice.get("finish_reason").is_some_and(|f| !f.is_null());
                let channel = format!("choice:{index}");
                for pointer in ["/delta/content", "/text"] {
                    if let Some(Value::String(text)) = choice.pointer_mut(pointer) {
                        let scanner = self.channels.entry(channel.clone()).or_default();
                        let mut released = scanner.push(detectors, text, found);
                        if finished {
                            released.push_str(&scanner.finish(detectors, found));
                            self.channels.remove(&channel);
                        }
                        *text = released;
                    }
                }
                if finished && let Some(mut scanner) = self.channels.remove(&channel) {
                    let rest = scanner.finish(detectors, found);
                    if !rest.is_empty()
                        && let Some(delta) = choice.get_mut("delta").and_then(Value::as_object_mut)
                    {
                        delta.insert("content".to_owned(), Value::String(rest));
                    }
                }
                redact_strings(detectors, choice, found, &["content", "text"]);
            }
            redact_strings(detectors, value, found, &["choices"]);
            self.last_chunk = Some(value.clone());
            return Vec::new();
        }
        match kind.as_deref() {
            Some("response.output_text.delta") => {
                let channel = responses_channel(value);
                if let Some(Value::String(delta)) = value.get_mut("delta") {
                    let scanner = self.channels.entry(channel).or_default();
                    *delta = scanner.push(detectors, delta, found);
                }
                Vec::new()
            }
            Some("response.output_text.done") => {
                let channel = responses_channel(value);
                let mut before = Vec::new();
                if let Some(mut scanner) = self.channels.remove(&channel) {
                    let rest = scanner.finish(detectors, found);
                    if !rest.is_empty() {
                        let mut delta = value.clone();
                        if let Some(fields) = delta.as_object_mut() {
                            fields.insert(
                                "type".to_owned(),
                                Value::from("response.output_text.delta"),
                            );
                            fields.remove("text");
                            fields.insert("delta".to_owned(), Value::String(rest));
                        }
                        before = sse_event(Some("response.output_text.delta"), &delta);
                    }
                }
                // The whole text was seen in the deltas: its findings are not counted twice.
                let mut again = Vec::new();
                redact_strings(detectors, value, &mut again, &[]);
                before
            }
            _ => {
                redact_strings(detectors, value, found, &[]);
                Vec::new()
            }
        }
    }

    /// Held channel text, sent as chunks of its own (before `[DONE]` or at the end).
    fn flush_channels(&mut self, detectors: &Detectors, found: &mut Vec<&'static str>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut channels: Vec<(String, TextScanner)> = self.channels.drain().collect();
        channels.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, mut scanner) in channels {
            let rest = scanner.finish(detectors, found);
            if rest.is_empty() {
                continue;
            }
            if let Some(index) = name
                .strip_prefix("choice:")
                .and_then(|i| i.parse::<u64>().ok())
            {
                let mut chunk = self
                    .last_chunk
                    .clone()
                    .unwrap_or_else(|| serde_json::json!({"object": "chat.completion.chunk"}));
                if let Some(fields) = chunk.as_object_mut() {
                    fields.remove("usage");
                    fields.insert(
                        "choices".to_owned(),
                        serde_json::json!([{"index": index, "delta": {"content": rest}, "finish_reason": null}]),
                    );
                }
                out.extend_from_slice(&sse_event(None, &chunk));
            } else {
                let delta =
                    serde_json::json!({"type": "response.output_text.delta", "delta": rest});
                out.extend_from_slice(&sse_event(Some("response.output_text.delta"), &delta));
            }
        }
        out
    }
}

fn detectors_redact(detectors: &Detectors, text: &str, found: &mut Vec<&'static str>) -> String {
    let (redacted, findings) = detectors.redact(text);
    found.extend(findings.iter().map(|f| f.rule));
    redacted
}

fn responses_channel(value: &Value) -> String {
    format!(
        "response:{}:{}:{}",
        value.get("item_id").and_then(Value::as_str).unwrap_or(""),
        value
            .get("output_index")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        value
            .get("content_index")
            .and_then(Value::as_u64)
            .unwrap_or(0)
    )
}

fn sse_event(name: Option<&str>, value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(name) = name {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(value.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
    out
}

/// One finding of [`scan_paths`]: where, and which rule (never the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFinding {
    /// The file.
    pub path: std::path::PathBuf,
    /// The line the match starts on (1-based).
    pub line: usize,
    /// The rule id.
    pub rule: &'static str,
}

/// Bytes of a file's start looked at for a NUL byte, which marks it binary (skipped).
const BINARY_PROBE: usize = 8192;

/// Runs the secret detectors over files and directories (recursively, skipping `.git` and
/// binary files). Unreadable paths are errors, named in the result.
pub fn scan_paths(paths: &[std::path::PathBuf]) -> Result<Vec<FileFinding>, String> {
    let detectors = Detectors::new(false, &[])?;
    let mut findings = Vec::new();
    let mut stack: Vec<std::path::PathBuf> = paths.iter().rev().cloned().collect();
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|e| format!("cannot read {} ({})", path.display(), e.kind()))?;
        if meta.is_dir() {
            if path.file_name().is_some_and(|n| n == ".git") {
                continue;
            }
            let mut entries: Vec<std::path::PathBuf> = std::fs::read_dir(&path)
                .map_err(|e| format!("cannot read {} ({})", path.display(), e.kind()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            stack.extend(entries.into_iter().rev());
            continue;
        }
        if !meta.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path)
            .map_err(|e| format!("cannot read {} ({})", path.display(), e.kind()))?;
        if bytes.iter().take(BINARY_PROBE).any(|b| *b == 0) {
            continue;
        }
        let text = String::from_utf8_lossy(&bytes);
        for finding in detectors.find(&text) {
            let line = 1 + text[..finding.start]
                .bytes()
                .filter(|b| *b == b'\n')
                .count();
            findings.push(FileFinding {
                path: path.clone(),
                line,
                rule: finding.rule,
            });
        }
    }
    Ok(findings)
}

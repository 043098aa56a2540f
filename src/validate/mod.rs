//! Input validation: size, media type, JSON shape, text length and injection rules, in that order.
//!
//! Guards against requests that would hurt the agent or its users: oversized and endless bodies
//! (413, decided before reading a byte when Content-Length says so, and the moment a streamed body
//! passes the limit), non-JSON bodies (415), malformed or deeply nested JSON (400), floods of text
//! (400), and injection attempts hidden by encoding (400, naming the category, never the pattern).
//! The decision is made on the whole buffered body; the upstream receives the original bytes.

pub mod body;
pub mod normalize;
pub mod rules;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::stage::Next;
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::{Method, header};
use http_body::Body as _;
use http_body_util::BodyExt;

use crate::audit::Outcome;
use crate::body_deadline;
use crate::config::ValidationSettings;
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::request_id::RequestContext;
use body::{BodyProblem, check_json, check_query};
use rules::{Action, Rule};

/// The validation stage.
#[derive(Debug)]
pub struct Validator {
    settings: ValidationSettings,
    metrics: Arc<Metrics>,
    /// Body bytes that may be buffered at once, in bytes.
    buffer_budget: Arc<Semaphore>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MediaKind {
    Json,
    OtherAllowed,
    Unsupported,
}

impl Validator {
    /// The stage for validated `[validation]` settings.
    pub fn new(settings: ValidationSettings, metrics: Arc<Metrics>) -> Validator {
        let buffer_budget = Arc::new(Semaphore::new(settings.max_buffered_bytes));
        Validator {
            settings,
            metrics,
            buffer_budget,
        }
    }

    fn media_kind(&self, request: &Request) -> MediaKind {
        let Some(value) = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
        else {
            return MediaKind::Unsupported;
        };
        let media = value
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let json = media == "application/json"
            || (media.starts_with("application/") && media.ends_with("+json"));
        if json {
            MediaKind::Json
        } else if self.settings.allowed_content_types.contains(&media) {
            MediaKind::OtherAllowed
        } else {
            MediaKind::Unsupported
        }
    }

    fn matched(&self, rule: &Rule) {
        let action = match rule.action {
            Action::Block => "block",
            Action::Log => "log",
        };
        self.metrics.validation_match(&rule.id, action);
    }
}

fn injection(rule: &Rule) -> GatewayError {
    GatewayError::InjectionDetected {
        rule: rule.id.clone(),
        category: rule.category,
    }
}

/// Layer: the checks of the module documentation, in order; the body is forwarded unchanged.
pub async fn validate(validator: Arc<Validator>, request: Request, next: impl Next) -> Response {
    // The id as a header value: a reference-counted clone, made text only on a refusal.
    let context_id = request
        .extensions()
        .get::<RequestContext>()
        .map(|c| c.id.clone());
    let id = IdText(context_id);
    let mut logged: Option<Rule> = None;
    if let Some(query) = request.uri().query()
        && let Some(rule) = check_query(query, &validator.settings.rules)
    {
        validator.matched(rule);
        if rule.action == Action::Block {
            return injection(rule).into_response(id.text());
        }
        logged = Some(rule.clone());
    }
    let empty = request.body().size_hint().exact() == Some(0);
    let needs_body = matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH
    );
    if empty && !needs_body {
        return forward(request, next, logged).await;
    }
    let max = validator.settings.max_body_bytes;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return GatewayError::BodyTooLarge.into_response(id.text());
    }
    let kind = validator.media_kind(&request);
    if empty {
        return if kind == MediaKind::OtherAllowed {
            forward(request, next, logged).await
        } else {
            GatewayError::InvalidJson("empty_body").into_response(id.text())
        };
    }
    if kind == MediaKind::Unsupported {
        return GatewayError::UnsupportedMediaType.into_response(id.text());
    }
    // Room in the buffer budget for the whole body (the declared length, or the most allowed),
    // held until the body is forwarded; no room within BUFFER_WAIT is a 503, never an OOM.
    let reserve = declared.map_or(max, |n| n as usize).max(1);
    let Some(reserved) = reserve_buffer(&validator.buffer_budget, reserve).await else {
        return GatewayError::Overloaded.into_response(id.text());
    };
    let (parts, body) = request.into_parts();
    let bytes = match read_body(body, max, reserve).await {
        Ok(bytes) => bytes,
        Err(BodyRead::TooLarge) => return GatewayError::BodyTooLarge.into_response(id.text()),
        Err(BodyRead::Failed(e)) => {
            let error = body_deadline::client_fault(&e)
                .unwrap_or(GatewayError::InvalidJson("body_unreadable"));
            return error.into_response(id.text());
        }
    };
    if kind == MediaKind::Json {
        let settings = &validator.settings;
        match check_json(
            &bytes,
            &settings.rules,
            settings.max_json_depth,
            settings.max_input_chars,
        ) {
            Ok(findings) => {
                if let Some(rule) = findings.logged {
                    validator.matched(&rule);
                    logged = logged.or(Some(rule));
                }
            }
            Err(BodyProblem::InvalidJson(reason)) => {
                return GatewayError::InvalidJson(reason).into_response(id.text());
            }
            Err(BodyProblem::TooLong) => {
                return GatewayError::InputTooLong.into_response(id.text());
            }
            Err(BodyProblem::Injection(rule)) => {
                validator.matched(&rule);
                return injection(&rule).into_response(id.text());
            }
        }
    }
    let request = Request::from_parts(
        parts,
        Body::new(BudgetedBody {
            data: Some(bytes),
            reserved: Some(reserved),
        }),
    );
    forward(request, next, logged).await
}

/// A buffered body that gives its room in the buffer budget back once it has been sent on.
struct BudgetedBody {
    data: Option<Bytes>,
    reserved: Option<OwnedSemaphorePermit>,
}

impl http_body::Body for BudgetedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let data = self.data.take();
        self.reserved = None;
        std::task::Poll::Ready(data.map(|d| Ok(http_body::Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

/// Why a body could not be read whole.
enum BodyRead {
    /// It passed `max_body_bytes`.
    TooLarge,
    /// The client's body failed (timed out, malformed, cut).
    Failed(axum::Error),
}

/// Reads a whole body of at most `max` bytes into one buffer sized for `expected` bytes, so a
/// body costs its own size in memory once (collecting chunks and then joining them costs it
/// twice). A body that arrives in one frame is kept as it is, without a copy.
async fn read_body(mut body: Body, max: usize, expected: usize) -> Result<Bytes, BodyRead> {
    let mut first: Option<Bytes> = None;
    let mut joined: Option<bytes::BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(BodyRead::Failed)?.into_data() else {
            continue;
        };
        let held = first.as_ref().map_or(0, Bytes::len) + joined.as_ref().map_or(0, |j| j.len());
        if held + data.len() > max {
            return Err(BodyRead::TooLarge);
        }
        match (&mut first, &mut joined) {
            (None, None) => first = Some(data),
            (Some(_), None) => {
                let mut buffer =
                    bytes::BytesMut::with_capacity(expected.min(max).max(held + data.len()));
                if let Some(head) = first.take() {
                    buffer.extend_from_slice(&head);
                }
                buffer.extend_from_slice(&data);
                joined = Some(buffer);
            }
            (_, Some(buffer)) => buffer.extend_from_slice(&data),
        }
    }
    Ok(match (first, joined) {
        (_, Some(buffer)) => buffer.freeze(),
        (Some(only), None) => only,
        (None, None) => Bytes::new(),
    })
}

/// How long a request waits for room in the buffer budget before it is refused with 503.
pub const BUFFER_WAIT: Duration = Duration::from_secs(2);

/// Takes `bytes` of the buffer budget, waiting up to [`BUFFER_WAIT`].
async fn reserve_buffer(budget: &Arc<Semaphore>, bytes: usize) -> Option<OwnedSemaphorePermit> {
    let units = u32::try_from(bytes).unwrap_or(u32::MAX);
    if let Ok(permit) = budget.clone().try_acquire_many_owned(units) {
        return Some(permit);
    }
    tokio::time::timeout(BUFFER_WAIT, budget.clone().acquire_many_owned(units))
        .await
        .ok()
        .and_then(Result::ok)
}

/// The request id, as text only when an error needs it.
struct IdText(Option<http::HeaderValue>);

impl IdText {
    fn text(&self) -> &str {
        self.0
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown")
    }
}

/// Forwards; a shadow-mode match goes into the audit record's `rule`.
async fn forward(request: Request, next: impl Next, logged: Option<Rule>) -> Response {
    let mut response = next.run(request).await;
    if let Some(rule) = logged {
        let rule = Some(Cow::Owned(rule.id));
        match response.extensions_mut().get_mut::<Outcome>() {
            Some(outcome) => outcome.rule = rule,
            None => {
                response.extensions_mut().insert(Outcome {
                    rule,
                    ..Outcome::default()
                });
            }
        }
    }
    response
}

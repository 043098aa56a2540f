//! Input validation: size, media type, JSON shape, text length and injection rules, in that order.
//!
//! Guards against requests that would hurt the agent or its users: oversized and endless bodies
//! (413, decided before reading a byte when Content-Length says so, and the moment a streamed body
//! passes the limit), non-JSON bodies (415), malformed or deeply nested JSON (400), floods of text
//! (400), and injection attempts hidden by encoding (400, naming the category, never the pattern).
//! The decision is made on the whole buffered body; the upstream receives the original bytes.

pub mod body;
pub mod classifier;
pub mod evaluate;

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures_util::future::{BoxFuture, Either, Ready, ready};
use http::{Method, header};
use http_body::Body as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

use crate::config::ValidationSettings;
use crate::config::llm::{DEFAULT_SCAN_ROLES, Roles};
use crate::config::validation::FailureMode;
use crate::context::{RequestContext, Route};
use crate::detect::rules::{Action, Rule};
use crate::error::GatewayError;
use crate::jsonrpc::Envelope;
use crate::metrics::Metrics;
use crate::stage::{Request, Response, StageResult, take_ready};
use body::{BodyProblem, Judge, check_json_collecting, check_json_view_collecting, check_query};
use classifier::{Classifier, Verdict};

/// The validation stage.
#[derive(Debug)]
pub struct Validator {
    settings: ValidationSettings,
    metrics: Arc<Metrics>,
    /// Body bytes that may be buffered at once, in bytes, less the share kept for small bodies.
    buffer_budget: Arc<Semaphore>,
    /// The share of the budget only small bodies (at most [`SMALL_BODY`]) may take: a flood of
    /// large bodies cannot starve them.
    small_budget: Arc<Semaphore>,
    /// The roles judged on OpenAI-compatible routes (`[llm] scan_roles`).
    llm_roles: Roles,
    /// Whether every JSON body's parsed view is kept for later stages (data-loss prevention).
    keep_view: bool,
    /// The classifier hook, judging what the rules left undecided.
    classifier: Option<Arc<Classifier>>,
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
        let total = settings.max_buffered_bytes;
        // An eighth, unless the rest would not hold one body of the largest size.
        let small = (total / SMALL_SHARE).min(total.saturating_sub(settings.max_body_bytes));
        let buffer_budget = Arc::new(Semaphore::new(total - small));
        let small_budget = Arc::new(Semaphore::new(small));
        Validator {
            settings,
            metrics,
            buffer_budget,
            small_budget,
            llm_roles: Roles::of(&DEFAULT_SCAN_ROLES),
            keep_view: false,
            classifier: None,
        }
    }

    /// Sends the texts the rules left undecided to `classifier`.
    pub fn with_classifier(mut self, classifier: Arc<Classifier>) -> Validator {
        self.classifier = Some(classifier);
        self
    }

    /// Keeps every JSON body's parsed view in the request context (parsed once, here), for a
    /// later stage that reads every string (data-loss prevention).
    pub fn with_json_view(mut self) -> Validator {
        self.keep_view = true;
        self
    }

    /// Judges these roles' texts on OpenAI-compatible routes (`[llm] scan_roles`).
    pub fn with_llm_roles(mut self, roles: Roles) -> Validator {
        self.llm_roles = roles;
        self
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

/// What the head alone decides: refuse, pass on without reading, or read the body (of this
/// kind, reserving this much of the buffer budget).
enum HeadVerdict {
    Pass,
    Read { kind: MediaKind, reserve: usize },
}

impl Validator {
    /// The checks the request head allows: the query string, the method, the declared length
    /// and the media type.
    fn check_head(&self, request: &Request) -> Result<HeadVerdict, GatewayError> {
        if let Some(query) = request.uri().query()
            && let Some(rule) = check_query(query, &self.settings.rules)
        {
            self.matched(rule);
            if rule.action == Action::Block {
                return Err(injection(rule));
            }
            note_rule(request, rule);
        }
        let empty = request.body().size_hint().exact() == Some(0);
        let needs_body = matches!(
            *request.method(),
            Method::POST | Method::PUT | Method::PATCH
        );
        if empty && !needs_body {
            return Ok(HeadVerdict::Pass);
        }
        let max = self.settings.max_body_bytes;
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max as u64) {
            return Err(GatewayError::BodyTooLarge);
        }
        let kind = self.media_kind(request);
        if empty {
            return if kind == MediaKind::OtherAllowed {
                Ok(HeadVerdict::Pass)
            } else {
                Err(GatewayError::InvalidJson("empty_body"))
            };
        }
        if kind == MediaKind::Unsupported {
            return Err(GatewayError::UnsupportedMediaType);
        }
        // Room in the buffer budget for the whole body (the declared length, or the most
        // allowed), held until the body is forwarded; no room within BUFFER_WAIT is a 503.
        let reserve = declared.map_or(max, |n| n as usize).max(1);
        Ok(HeadVerdict::Read { kind, reserve })
    }

    /// The checks of the whole body; the request goes on with the body it arrived with, now
    /// also in its context for later stages, with the texts left for the classifier.
    fn check_body(
        &self,
        mut parts: http::request::Parts,
        bytes: Bytes,
        kind: MediaKind,
        reserved: OwnedSemaphorePermit,
    ) -> Result<(Request, Vec<String>), GatewayError> {
        let collect = self.classifier.is_some();
        let mut undecided = Vec::new();
        let route = parts
            .extensions
            .get::<RequestContext>()
            .map_or(Route::Plain, |c| c.route);
        let mut view = None;
        if kind == MediaKind::Json {
            let settings = &self.settings;
            let judge = match route {
                Route::Llm => Some(Judge::Roles(self.llm_roles)),
                _ if self.keep_view => Some(Judge::Everything),
                _ => None,
            };
            let checked = if let Some(judge) = judge {
                check_json_view_collecting(
                    &bytes,
                    &settings.rules,
                    settings.max_json_depth,
                    settings.max_input_chars,
                    judge,
                    collect,
                )
                .map(|(findings, value)| {
                    view = Some(Arc::new(value));
                    findings
                })
            } else {
                check_json_collecting(
                    &bytes,
                    &settings.rules,
                    settings.max_json_depth,
                    settings.max_input_chars,
                    collect,
                )
            };
            if route == Route::Mcp
                && let Some(context) = parts.extensions.get::<RequestContext>()
            {
                // The envelope names the message in the audit record and gives a refusal the
                // request's id; the MCP stage decides on it.
                context.facts.set_mcp(Envelope::parse(&bytes));
            }
            match checked {
                Ok(findings) => {
                    undecided = findings.undecided;
                    if let Some(rule) = findings.logged {
                        self.matched(&rule);
                        if let Some(context) = parts.extensions.get::<RequestContext>() {
                            context.facts.note_rule(Cow::Owned(rule.id));
                        }
                    }
                }
                Err(BodyProblem::InvalidJson(reason)) => {
                    return Err(GatewayError::InvalidJson(reason));
                }
                Err(BodyProblem::TooLong) => return Err(GatewayError::InputTooLong),
                Err(BodyProblem::Injection(rule)) => {
                    self.matched(&rule);
                    return Err(injection(&rule));
                }
            }
        }
        if let Some(context) = parts.extensions.get_mut::<RequestContext>() {
            context.body = Some(bytes.clone());
            context.json = view;
        }
        let request = Request::from_parts(
            parts,
            Body::new(BudgetedBody {
                data: Some(bytes),
                reserved: Some(reserved),
            }),
        );
        Ok((request, undecided))
    }

    /// What the classifier's verdict on a request's texts does to it.
    fn after_verdict(&self, request: &Request, verdict: Verdict) -> Result<(), GatewayError> {
        match verdict {
            Verdict::Clean => Ok(()),
            Verdict::Flagged => {
                let rule = self.settings.rules.classifier();
                self.matched(rule);
                if rule.action == Action::Block {
                    return Err(injection(rule));
                }
                note_rule(request, rule);
                Ok(())
            }
            Verdict::Unavailable => {
                match self.classifier.as_deref().map(Classifier::failure_mode) {
                    Some(FailureMode::Closed) => Err(GatewayError::ClassifierUnavailable),
                    _ => {
                        if let Some(context) = RequestContext::of(request) {
                            context
                                .facts
                                .note_rule(Cow::Borrowed(CLASSIFIER_UNAVAILABLE));
                        }
                        Ok(())
                    }
                }
            }
        }
    }
}

/// The audit `rule` of a request forwarded unjudged because the classifier failed and its
/// `failure_mode` is `open`.
pub const CLASSIFIER_UNAVAILABLE: &str = "classifier_unavailable";

/// Records a shadow-mode match in the request's audit facts.
fn note_rule(request: &Request, rule: &Rule) {
    if let Some(context) = RequestContext::of(request) {
        context.facts.note_rule(Cow::Owned(rule.id.clone()));
    }
}

/// Layer: the checks of the module documentation, in order; the body is forwarded unchanged.
#[derive(Debug, Clone)]
pub struct ValidationLayer {
    validator: Arc<Validator>,
}

impl ValidationLayer {
    /// The layer for `validator`.
    pub fn new(validator: Arc<Validator>) -> ValidationLayer {
        ValidationLayer { validator }
    }
}

impl<S> Layer<S> for ValidationLayer {
    type Service = Validate<S>;

    fn layer(&self, inner: S) -> Validate<S> {
        Validate {
            validator: self.validator.clone(),
            inner,
        }
    }
}

/// The service of [`ValidationLayer`].
#[derive(Debug, Clone)]
pub struct Validate<S> {
    validator: Arc<Validator>,
    inner: S,
}

impl<S> Service<Request> for Validate<S>
where
    S: Service<Request, Response = Response, Error = GatewayError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = GatewayError;
    #[allow(clippy::type_complexity)]
    type Future = Either<
        Ready<StageResult>,
        Either<S::Future, Either<ValidateFuture<S, S::Future>, BoxFuture<'static, StageResult>>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let (kind, reserve) = match self.validator.check_head(&request) {
            Err(refusal) => return Either::Left(ready(Err(refusal))),
            Ok(HeadVerdict::Pass) => return Either::Right(Either::Left(self.inner.call(request))),
            Ok(HeadVerdict::Read { kind, reserve }) => (kind, reserve),
        };
        let validator = self.validator.clone();
        let inner = take_ready(&mut self.inner);
        let units = u32::try_from(reserve).unwrap_or(u32::MAX);
        let (parts, body) = request.into_parts();
        let reader = BodyReader::new(body, validator.settings.max_body_bytes, reserve);
        let small = reserve <= SMALL_BODY;
        let now = validator
            .buffer_budget
            .clone()
            .try_acquire_many_owned(units)
            .or_else(|_| {
                if small {
                    validator.small_budget.clone().try_acquire_many_owned(units)
                } else {
                    Err(tokio::sync::TryAcquireError::NoPermits)
                }
            });
        match now {
            Ok(reserved) => Either::Right(Either::Right(Either::Left(ValidateFuture::Reading {
                reader,
                read: Some(ReadThen {
                    validator,
                    parts,
                    kind,
                    reserved,
                    inner,
                }),
            }))),
            // Boxed: only while the budget is taken (a flood of large bodies).
            Err(_) => Either::Right(Either::Right(Either::Right(Box::pin(async move {
                let shared = validator.buffer_budget.clone().acquire_many_owned(units);
                let kept = validator.small_budget.clone().acquire_many_owned(units);
                let either = async {
                    if small {
                        tokio::select! {
                            permit = shared => permit,
                            permit = kept => permit,
                        }
                    } else {
                        shared.await
                    }
                };
                let reserved = tokio::time::timeout(BUFFER_WAIT, either)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .ok_or(GatewayError::Overloaded)?;
                ValidateFuture::Reading {
                    reader,
                    read: Some(ReadThen {
                        validator,
                        parts,
                        kind,
                        reserved,
                        inner,
                    }),
                }
                .await
            })))),
        }
    }
}

/// What follows the reading of a body: its checks, then the rest of the stack.
pub struct ReadThen<S> {
    validator: Arc<Validator>,
    parts: http::request::Parts,
    kind: MediaKind,
    reserved: OwnedSemaphorePermit,
    inner: S,
}

pin_project_lite::pin_project! {
    /// The response future of [`Validate`] for a request whose body is read: the body arrives,
    /// is checked whole, and the request goes on.
    #[project = ValidateProj]
    #[allow(missing_docs)] // the variants say what their fields are
    pub enum ValidateFuture<S, F> {
        /// The body is arriving.
        Reading { reader: BodyReader, read: Option<ReadThen<S>> },
        /// The classifier is judging the texts the rules left undecided.
        Classifying {
            judged: BoxFuture<'static, Verdict>,
            then: Option<(Arc<Validator>, Request, S)>,
        },
        /// The checked request is with the rest of the stack.
        Forwarding { #[pin] inner: F },
    }
}

impl<S> Future for ValidateFuture<S, S::Future>
where
    S: Service<Request, Response = Response, Error = GatewayError>,
{
    type Output = StageResult;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<StageResult> {
        loop {
            match self.as_mut().project() {
                ValidateProj::Reading { reader, read } => {
                    let bytes = match std::task::ready!(reader.poll_read(cx)) {
                        Ok(bytes) => bytes,
                        Err(BodyRead::TooLarge) => {
                            return Poll::Ready(Err(GatewayError::BodyTooLarge));
                        }
                        Err(BodyRead::Failed(e)) => {
                            let error = GatewayError::client_fault(&e)
                                .unwrap_or(GatewayError::InvalidJson("body_unreadable"));
                            return Poll::Ready(Err(error));
                        }
                    };
                    let Some(then) = read.take() else {
                        return Poll::Ready(Err(GatewayError::Internal("body read twice")));
                    };
                    let ReadThen {
                        validator,
                        parts,
                        kind,
                        reserved,
                        mut inner,
                    } = then;
                    let (request, undecided) =
                        validator.check_body(parts, bytes, kind, reserved)?;
                    match validator.classifier.clone() {
                        Some(classifier) if !undecided.is_empty() => {
                            self.set(ValidateFuture::Classifying {
                                judged: Box::pin(async move { classifier.judge(&undecided).await }),
                                then: Some((validator, request, inner)),
                            });
                        }
                        _ => self.set(ValidateFuture::Forwarding {
                            inner: inner.call(request),
                        }),
                    }
                }
                ValidateProj::Classifying { judged, then } => {
                    let verdict = std::task::ready!(judged.as_mut().poll(cx));
                    let Some((validator, request, mut inner)) = then.take() else {
                        return Poll::Ready(Err(GatewayError::Internal("classified twice")));
                    };
                    validator.after_verdict(&request, verdict)?;
                    self.set(ValidateFuture::Forwarding {
                        inner: inner.call(request),
                    });
                }
                ValidateProj::Forwarding { inner } => return inner.poll(cx),
            }
        }
    }
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
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let data = self.data.take();
        self.reserved = None;
        Poll::Ready(data.map(|d| Ok(http_body::Frame::data(d))))
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
pub struct BodyReader {
    body: Body,
    max: usize,
    expected: usize,
    first: Option<Bytes>,
    joined: Option<BytesMut>,
}

impl BodyReader {
    fn new(body: Body, max: usize, expected: usize) -> BodyReader {
        BodyReader {
            body,
            max,
            expected,
            first: None,
            joined: None,
        }
    }

    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<Bytes, BodyRead>> {
        loop {
            let Some(frame) = std::task::ready!(Pin::new(&mut self.body).poll_frame(cx)) else {
                return Poll::Ready(Ok(match (self.first.take(), self.joined.take()) {
                    (_, Some(buffer)) => buffer.freeze(),
                    (Some(only), None) => only,
                    (None, None) => Bytes::new(),
                }));
            };
            let data = match frame {
                Err(e) => return Poll::Ready(Err(BodyRead::Failed(e))),
                Ok(frame) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue,
                },
            };
            let held = self.first.as_ref().map_or(0, Bytes::len)
                + self.joined.as_ref().map_or(0, |j| j.len());
            if held + data.len() > self.max {
                return Poll::Ready(Err(BodyRead::TooLarge));
            }
            match (&mut self.first, &mut self.joined) {
                (None, None) => self.first = Some(data),
                (Some(_), None) => {
                    let mut buffer =
                        BytesMut::with_capacity(self.expected.min(self.max).max(held + data.len()));
                    if let Some(head) = self.first.take() {
                        buffer.extend_from_slice(&head);
                    }
                    buffer.extend_from_slice(&data);
                    self.joined = Some(buffer);
                }
                (_, Some(buffer)) => buffer.extend_from_slice(&data),
            }
        }
    }
}

/// The largest body (by its announced length) that may use the share of the buffer budget kept
/// for small bodies.
pub const SMALL_BODY: usize = 64 * 1024;

/// The share kept for small bodies: one part in this many of `max_buffered_bytes`.
const SMALL_SHARE: usize = 8;

/// How long a request waits for room in the buffer budget before it is refused with 503.
pub const BUFFER_WAIT: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http_body_util::BodyExt;
    use tower::{Layer, ServiceExt};

    use super::{ValidationLayer, Validator};
    use crate::config::ValidationSettings;
    use crate::context::RequestContext;
    use crate::detect::rules::{RuleOptions, RuleSet};
    use crate::error::GatewayError;
    use crate::metrics::Metrics;
    use crate::stage::test_support::request;
    use crate::stage::{Request, Response};

    fn layer(max_buffered_bytes: usize) -> ValidationLayer {
        let settings = ValidationSettings {
            max_body_bytes: 64,
            max_buffered_bytes,
            max_input_chars: 40,
            max_json_depth: 4,
            rules: Arc::new(RuleSet::new(&RuleOptions::default()).unwrap()),
            allowed_content_types: Vec::new(),
            classifier: None,
        };
        ValidationLayer::new(Arc::new(Validator::new(settings, Arc::new(Metrics::new()))))
    }

    fn json(body: &'static str) -> Request {
        let mut request = request("POST", "/", body);
        request
            .headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        request
    }

    /// Echoes the body it receives, and says whether the context holds the same bytes.
    async fn echo(request: Request) -> Result<Response, GatewayError> {
        let in_context = RequestContext::of(&request)
            .and_then(|c| c.body.clone())
            .unwrap_or_default();
        let bytes = request.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(bytes, in_context, "the context holds another body");
        Ok(Response::new(axum::body::Body::from(bytes)))
    }

    #[tokio::test]
    async fn a_valid_body_goes_on_unchanged_and_is_in_the_context() {
        let response = layer(1024)
            .layer(tower::service_fn(echo))
            .oneshot(json(r#"{"q":"hello"}"#))
            .await
            .unwrap();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], br#"{"q":"hello"}"#);
    }

    #[tokio::test]
    async fn each_body_check_refuses_with_its_error() {
        type Expected = fn(&GatewayError) -> bool;
        let cases: [(Request, Expected); 5] = [
            (json("{"), |e| matches!(e, GatewayError::InvalidJson(_))),
            (json(r#"{"a":[[[[["deep"]]]]]}"#), |e| {
                matches!(e, GatewayError::InvalidJson("too_deep"))
            }),
            (
                json(r#"{"a":"0123456789012345678901234567890123456789x"}"#),
                |e| matches!(e, GatewayError::InputTooLong),
            ),
            (json(r#"{"a":"<script>alert(1)</script>"}"#), |e| {
                matches!(e, GatewayError::InjectionDetected { .. })
            }),
            (request("POST", "/", "plain"), |e| {
                matches!(e, GatewayError::UnsupportedMediaType)
            }),
        ];
        for (request, expected) in cases {
            let refused = layer(1024)
                .layer(tower::service_fn(echo))
                .oneshot(request)
                .await;
            let error = refused.expect_err("refused");
            assert!(expected(&error), "{error:?}");
        }
        let large =
            json(r#"{"a":"0123456789012345678901234567890123456789012345678901234567890"}"#);
        let refused = layer(1024)
            .layer(tower::service_fn(echo))
            .oneshot(large)
            .await;
        assert!(matches!(refused, Err(GatewayError::BodyTooLarge)));
    }

    #[tokio::test(start_paused = true)]
    async fn no_room_in_the_buffer_budget_is_a_503_after_the_wait() {
        // A budget smaller than the body: the wait cannot end with room.
        let refused = layer(4)
            .layer(tower::service_fn(echo))
            .oneshot(json(r#"{"q":"hello"}"#))
            .await;
        assert!(matches!(refused, Err(GatewayError::Overloaded)));
    }
}

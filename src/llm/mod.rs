//! OpenAI-compatible routes: the model policy, token budgets and usage accounting.
//!
//! Guards against cost abuse and unapproved models on the routes `[llm] paths` names: a request
//! for a model outside `allowed_models` is refused (403 `model_not_allowed`), one asking for more
//! than `max_output_tokens` is refused (400 `invalid_request`), a user whose token budget is spent
//! is refused (429 `budget_exceeded`), and the tokens of every answer (JSON or stream) are counted
//! for the audit record, the metrics and the budget. Refusals on these routes are written in
//! OpenAI's error shape, which the OpenAI SDKs print (see [`crate::error::render`]).

pub mod budget;
pub mod request;
pub mod usage;

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use axum::body::Body;
use futures_util::future::{BoxFuture, Either, Ready, ready};
use http::{HeaderValue, header};
use tower::{Layer, Service};

use crate::config::LlmSettings;
use crate::context::{Facts, RequestContext, Route};
use crate::error::{GatewayError, MAX_OUTPUT_TOKENS};
use crate::headers::is_event_stream;
use crate::metrics::{Metrics, TokenLabels};
use crate::stage::{Request, Response, StageResult, take_ready};
use budget::{Account, Budgets};
use request::{LlmRequest, with_usage_requested};
use usage::{Metered, MeteredBody, Settle, Usage, estimate_tokens};

/// Distinct model names counted under their own metric label; later ones count as `other`, so
/// clients naming models cannot grow the metrics without bound.
pub const MAX_MODEL_LABELS: usize = 64;

/// The policy of the OpenAI-compatible routes, built once from `[llm]`.
#[derive(Debug)]
pub struct LlmPolicy {
    settings: LlmSettings,
    budgets: Option<Arc<Budgets>>,
    metrics: Arc<Metrics>,
    model_labels: Mutex<HashSet<String>>,
}

impl LlmPolicy {
    /// The policy of `settings`; `budgets` when `[llm.budget]` is set.
    pub fn new(
        settings: LlmSettings,
        budgets: Option<Arc<Budgets>>,
        metrics: Arc<Metrics>,
    ) -> LlmPolicy {
        LlmPolicy {
            settings,
            budgets,
            metrics,
            model_labels: Mutex::default(),
        }
    }

    /// The token budgets, when configured.
    pub fn budgets(&self) -> Option<Arc<Budgets>> {
        self.budgets.clone()
    }

    /// The model and token-limit checks.
    fn admit(&self, facts: &LlmRequest) -> Result<(), GatewayError> {
        let allowed = &self.settings.allowed_models;
        if !allowed.is_empty()
            && !facts
                .model
                .as_ref()
                .is_some_and(|m| allowed.iter().any(|a| a == m))
        {
            return Err(GatewayError::ModelNotAllowed);
        }
        if let (Some(cap), Some(asked)) = (self.settings.max_output_tokens, facts.max_tokens)
            && asked > cap
        {
            return Err(GatewayError::InvalidRequest(MAX_OUTPUT_TOKENS));
        }
        Ok(())
    }

    fn model_label(&self, model: Option<&str>) -> String {
        let Some(model) = model else {
            return "unknown".to_owned();
        };
        let mut labels = self
            .model_labels
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if labels.contains(model) {
            return model.to_owned();
        }
        if labels.len() < MAX_MODEL_LABELS {
            labels.insert(model.to_owned());
            return model.to_owned();
        }
        "other".to_owned()
    }
}

/// Layer: the token budget check, right after the per-user rate limit and before the body is
/// read, on OpenAI-compatible routes only.
#[derive(Debug, Clone)]
pub struct BudgetLayer {
    budgets: Arc<Budgets>,
    metrics: Arc<Metrics>,
}

impl BudgetLayer {
    /// The layer for `budgets`.
    pub fn new(budgets: Arc<Budgets>, metrics: Arc<Metrics>) -> BudgetLayer {
        BudgetLayer { budgets, metrics }
    }
}

impl<S> Layer<S> for BudgetLayer {
    type Service = BudgetCheck<S>;

    fn layer(&self, inner: S) -> BudgetCheck<S> {
        BudgetCheck {
            budgets: self.budgets.clone(),
            metrics: self.metrics.clone(),
            inner,
        }
    }
}

/// The service of [`BudgetLayer`].
#[derive(Debug, Clone)]
pub struct BudgetCheck<S> {
    budgets: Arc<Budgets>,
    metrics: Arc<Metrics>,
    inner: S,
}

fn account_of(budgets: &Budgets, context: &RequestContext) -> Account {
    budgets.account(context.principal.as_deref(), || {
        Arc::from(context.client_ip.to_string())
    })
}

impl<S> Service<Request> for BudgetCheck<S>
where
    S: Service<Request, Response = Response, Error = GatewayError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = GatewayError;
    type Future = Either<Ready<StageResult>, Either<S::Future, BoxFuture<'static, StageResult>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let Some(context) = RequestContext::of(&request).filter(|c| c.route == Route::Llm) else {
            return Either::Right(Either::Left(self.inner.call(request)));
        };
        let account = account_of(&self.budgets, context);
        if self.budgets.is_local() {
            return match self.budgets.check_local(&account) {
                Ok(()) => Either::Right(Either::Left(self.inner.call(request))),
                Err(refusal) => {
                    self.metrics.llm_budget_refusals.inc();
                    Either::Left(ready(Err(refusal)))
                }
            };
        }
        // Boxed: the Redis round trip.
        let budgets = self.budgets.clone();
        let metrics = self.metrics.clone();
        let mut inner = take_ready(&mut self.inner);
        Either::Right(Either::Right(Box::pin(async move {
            if let Err(refusal) = budgets.check(&account).await {
                if matches!(refusal, GatewayError::BudgetExceeded { .. }) {
                    metrics.llm_budget_refusals.inc();
                }
                return Err(refusal);
            }
            inner.call(request).await
        })))
    }
}

/// Layer: the model policy before forwarding and usage accounting on the answer, on
/// OpenAI-compatible routes only; it reads the body's parsed view that validation made.
#[derive(Debug, Clone)]
pub struct LlmLayer {
    policy: Arc<LlmPolicy>,
}

impl LlmLayer {
    /// The layer for `policy`.
    pub fn new(policy: Arc<LlmPolicy>) -> LlmLayer {
        LlmLayer { policy }
    }
}

impl<S> Layer<S> for LlmLayer {
    type Service = LlmService<S>;

    fn layer(&self, inner: S) -> LlmService<S> {
        LlmService {
            policy: self.policy.clone(),
            inner,
        }
    }
}

/// The service of [`LlmLayer`].
#[derive(Debug, Clone)]
pub struct LlmService<S> {
    policy: Arc<LlmPolicy>,
    inner: S,
}

impl<S> Service<Request> for LlmService<S>
where
    S: Service<Request, Response = Response, Error = GatewayError>,
{
    type Response = Response;
    type Error = GatewayError;
    type Future = Either<Ready<StageResult>, MeteredFuture<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let Some(context) = RequestContext::of(&request).filter(|c| c.route == Route::Llm) else {
            return Either::Right(MeteredFuture {
                inner: self.inner.call(request),
                meter: None,
            });
        };
        let facts = context
            .json
            .as_deref()
            .map(LlmRequest::of)
            .unwrap_or_default();
        if let Err(refusal) = self.policy.admit(&facts) {
            context.facts.set_model(facts.model.as_deref());
            return Either::Left(ready(Err(refusal)));
        }
        context.facts.set_model(facts.model.as_deref());
        let account = self
            .policy
            .budgets
            .as_ref()
            .map(|b| (b.clone(), account_of(b, context)));
        // A budget needs the stream's usage: ask for it when the client did not, and take the
        // chunk out again so the client sees the stream it asked for.
        let ask_usage = account.is_some() && facts.stream && !facts.include_usage;
        let meter = Meter {
            policy: self.policy.clone(),
            facts: context.facts.clone(),
            model: facts.model.clone(),
            account,
            request_chars: context.json.as_deref().map_or(0, request_chars),
            stream: facts.stream,
            strip_usage_chunk: ask_usage,
        };
        if ask_usage && let Some(rewritten) = context.json.as_deref().and_then(with_usage_requested)
        {
            request
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(rewritten.len()));
            request.headers_mut().remove(header::TRANSFER_ENCODING);
            *request.body_mut() = Body::from(rewritten);
        }
        Either::Right(MeteredFuture {
            inner: self.inner.call(request),
            meter: Some(meter),
        })
    }
}

/// Characters of the texts a request carries (for the estimate of a cut stream's input).
fn request_chars(body: &serde_json::Value) -> usize {
    let mut chars = 0;
    request::judged_texts(body, crate::config::llm::Roles::of(&ALL_ROLES), &mut |t| {
        chars += t.chars().count();
    });
    chars
}

const ALL_ROLES: [crate::config::llm::Role; 6] = {
    use crate::config::llm::Role;
    [
        Role::User,
        Role::Tool,
        Role::Function,
        Role::System,
        Role::Developer,
        Role::Assistant,
    ]
};

/// What the answer's accounting needs.
struct Meter {
    policy: Arc<LlmPolicy>,
    facts: Arc<Facts>,
    model: Option<String>,
    account: Option<(Arc<Budgets>, Account)>,
    request_chars: usize,
    stream: bool,
    strip_usage_chunk: bool,
}

impl Settle for Meter {
    fn settle(self: Box<Self>, metered: Metered) {
        let usage = metered.reported.unwrap_or(Usage {
            input: estimate_tokens(self.request_chars),
            output: estimate_tokens(metered.streamed_chars),
        });
        self.facts.set_tokens(usage.input, usage.output);
        let model = self.policy.model_label(self.model.as_deref());
        for (kind, n) in [("input", usage.input), ("output", usage.output)] {
            self.policy
                .metrics
                .llm_tokens
                .get_or_create(&TokenLabels {
                    model: model.clone(),
                    kind,
                })
                .inc_by(n);
        }
        if let Some((budgets, account)) = self.account {
            let total = usage.total();
            if budgets.is_local() {
                // Charged at once, before the user's next request is checked.
                budgets.charge_in_memory(&account, total);
            } else if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { budgets.charge(&account, total).await });
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`LlmService`]: a successful answer's body is metered.
    pub struct MeteredFuture<F> {
        #[pin]
        inner: F,
        meter: Option<Meter>,
    }
}

impl<F: Future<Output = StageResult>> Future for MeteredFuture<F> {
    type Output = StageResult;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<StageResult> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        let Some(meter) = this.meter.take().filter(|_| response.status().is_success()) else {
            return Poll::Ready(Ok(response));
        };
        let stream = meter.stream || is_event_stream(response.headers());
        let strip = meter.strip_usage_chunk;
        Poll::Ready(Ok(response.map(|body| {
            Body::new(MeteredBody::new(body, stream, strip, Box::new(meter)))
        })))
    }
}

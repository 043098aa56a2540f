//! The plumbing that chains the pipeline's stages: each stage is an async function of its state,
//! the request and the rest of the pipeline ([`Next`]).
//!
//! Guards against paying per request for the chain itself: the stages are linked by type, not
//! through boxed trait objects, so a request's whole trip through the pipeline is one future in
//! one allocation, and a stage call costs a reference-count increment for its state. (Boxing
//! each stage's future behind a trait object costs an allocation, a copy of the future and an
//! indirect call per stage and request; a generic middleware adapter that clones the remaining
//! stack into a new boxed service per call costs several allocations per stage.)

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use futures_util::future::Either;

/// A boxed response future.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Response> + Send>>;

/// The rest of the pipeline, as a stage sees it: the stages after it, then the forwarding.
/// Cheap to clone (each stage's state is reference-counted).
pub trait Next: Clone + Send + Sync + 'static {
    /// Runs the rest of the pipeline.
    fn run(self, request: Request) -> impl Future<Output = Response> + Send + 'static;
}

/// A stage linked to what follows it. A stage without state (configured off) passes the request
/// straight on.
#[derive(Clone)]
pub struct Stage<S, F, N> {
    state: Option<S>,
    stage: F,
    next: N,
}

impl<S, F, Fut, N> Next for Stage<S, F, N>
where
    S: Clone + Send + Sync + 'static,
    F: Fn(S, Request, N) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
    N: Next,
{
    fn run(self, request: Request) -> impl Future<Output = Response> + Send + 'static {
        match self.state {
            Some(state) => Either::Left((self.stage)(state, request, self.next)),
            None => Either::Right(self.next.run(request)),
        }
    }
}

/// A stage not yet linked to what follows it; [`chain!`](crate::chain) links them.
pub struct Layer<S, F> {
    state: Option<S>,
    stage: F,
}

impl<S, F> Layer<S, F> {
    /// Puts this stage in front of `next`.
    pub fn link<N>(self, next: N) -> Stage<S, F, N> {
        Stage {
            state: self.state,
            stage: self.stage,
            next,
        }
    }
}

/// Makes a stage from its state and its async function.
pub fn stage<S, F>(state: S, stage: F) -> Layer<S, F> {
    Layer {
        state: Some(state),
        stage,
    }
}

/// Makes a stage that runs only when configured (`state` is `Some`).
pub fn optional<S, F>(state: Option<S>, stage: F) -> Layer<S, F> {
    Layer { state, stage }
}

/// Links stages, outermost first, in front of the innermost handler:
/// `chain!(stage(a, f), optional(b, g), => innermost)`.
#[macro_export]
macro_rules! chain {
    (=> $innermost:expr) => { $innermost };
    ($layer:expr, $($rest:tt)+) => { $layer.link($crate::chain!($($rest)+)) };
}

/// A finished pipeline, its type erased: what a connection serves requests with. Cheap to clone.
#[derive(Clone)]
pub struct Pipeline(Arc<dyn Serve>);

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pipeline")
    }
}

/// A linked pipeline behind a trait object: one boxed future per request.
trait Serve: Send + Sync + 'static {
    fn serve(&self, request: Request) -> ResponseFuture;
}

impl<N: Next> Serve for N {
    fn serve(&self, request: Request) -> ResponseFuture {
        Box::pin(self.clone().run(request))
    }
}

impl Pipeline {
    /// Wraps a linked chain of stages.
    pub fn new(chain: impl Next) -> Pipeline {
        Pipeline(Arc::new(chain))
    }

    /// Runs the pipeline as a future hyper can serve (it never fails).
    pub fn serve(&self, request: Request) -> Served {
        Served(self.0.serve(request))
    }
}

/// A pipeline answer as a `Result` (hyper's service contract); it is always `Ok`.
pub struct Served(ResponseFuture);

impl Future for Served {
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx).map(Ok)
    }
}

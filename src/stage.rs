//! The plumbing that chains the pipeline's stages: each stage is an async function of its state,
//! the request and the rest of the pipeline ([`Next`]).
//!
//! Guards against paying per request for the chain itself: a stage call costs one boxed future
//! and two reference-count increments (its state and the next stage), whatever the depth of the
//! pipeline. (A generic middleware adapter that clones the whole remaining stack into a new boxed
//! service on every call costs several allocations per stage and grows with the depth.)

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::Response;

/// A boxed response future.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Response> + Send>>;

/// Something that answers a request: a stage with the rest of the pipeline, or the proxy.
pub trait Handler: Send + Sync + 'static {
    /// Answers `request`.
    fn handle(&self, request: Request) -> ResponseFuture;
}

/// The rest of the pipeline, as a stage sees it. Cheap to clone.
#[derive(Clone)]
pub struct Next(Arc<dyn Handler>);

impl std::fmt::Debug for Next {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Next")
    }
}

impl Next {
    /// Wraps the innermost handler.
    pub fn new(handler: impl Handler) -> Next {
        Next(Arc::new(handler))
    }

    /// Runs the rest of the pipeline.
    pub fn run(self, request: Request) -> ResponseFuture {
        self.0.handle(request)
    }

    /// Runs the rest of the pipeline as a future hyper can serve (it never fails).
    pub fn serve(&self, request: Request) -> Served {
        Served(self.0.handle(request))
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

struct Stage<S, F> {
    state: S,
    stage: F,
    next: Next,
}

impl<S, F, Fut> Handler for Stage<S, F>
where
    S: Clone + Send + Sync + 'static,
    F: Fn(S, Request, Next) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    fn handle(&self, request: Request) -> ResponseFuture {
        Box::pin((self.stage)(self.state.clone(), request, self.next.clone()))
    }
}

/// A stage not yet linked to what follows it.
pub type Layer = Box<dyn FnOnce(Next) -> Next + Send>;

/// Makes a stage from its state and its async function.
pub fn stage<S, F, Fut>(state: S, stage: F) -> Layer
where
    S: Clone + Send + Sync + 'static,
    F: Fn(S, Request, Next) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    Box::new(move |next| Next::new(Stage { state, stage, next }))
}

/// Links `layers` (outermost first) in front of `innermost`.
pub fn chain(layers: Vec<Layer>, innermost: Next) -> Next {
    layers
        .into_iter()
        .rev()
        .fold(innermost, |next, layer| layer(next))
}

//! What every stage of the pipeline shares: the request and response types, the result a stage
//! returns, and the layer for a check that decides on the request head alone.
//!
//! Guards against paying per request for the plumbing: stages are `tower` layers whose futures
//! are named types (`Either<Ready<..>, S::Future>`, or a pin-projected future where a stage
//! touches the response), so a request's trip through the stack allocates nothing for the stack
//! itself; only rare paths (a JWKS refetch, a Redis round trip, a wait for buffer room) box.
//! A stage refuses by returning a [`GatewayError`] value; the error layer
//! ([`crate::error::RenderErrorsLayer`]) alone turns it into a response.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use tower::{Layer, Service};

pub use crate::context::{Request, Response};
use crate::error::GatewayError;
pub use crate::error::StageResult;

/// A check made on the request head alone (no waiting): the request passes on, or is refused.
pub trait Check: Send + Sync + 'static {
    /// `Ok` to pass the request on (the check may adjust it), `Err` to refuse it.
    fn check(&self, request: &mut Request) -> Result<(), GatewayError>;
}

/// Layer: runs a [`Check`] before the rest of the stack.
#[derive(Debug)]
pub struct CheckLayer<C> {
    check: Arc<C>,
}

impl<C> CheckLayer<C> {
    /// The layer for `check`.
    pub fn new(check: Arc<C>) -> CheckLayer<C> {
        CheckLayer { check }
    }
}

impl<C> Clone for CheckLayer<C> {
    fn clone(&self) -> Self {
        CheckLayer {
            check: self.check.clone(),
        }
    }
}

impl<C, S> Layer<S> for CheckLayer<C> {
    type Service = CheckService<C, S>;

    fn layer(&self, inner: S) -> CheckService<C, S> {
        CheckService {
            check: self.check.clone(),
            inner,
        }
    }
}

/// The service of [`CheckLayer`].
#[derive(Debug)]
pub struct CheckService<C, S> {
    check: Arc<C>,
    inner: S,
}

impl<C, S: Clone> Clone for CheckService<C, S> {
    fn clone(&self) -> Self {
        CheckService {
            check: self.check.clone(),
            inner: self.inner.clone(),
        }
    }
}

impl<C, S> Service<Request> for CheckService<C, S>
where
    C: Check,
    S: Service<Request, Response = Response, Error = GatewayError>,
{
    type Response = Response;
    type Error = GatewayError;
    type Future = Either<Ready<StageResult>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        match self.check.check(&mut request) {
            Ok(()) => Either::Right(self.inner.call(request)),
            Err(refusal) => Either::Left(ready(Err(refusal))),
        }
    }
}

/// Takes the service that was made ready and leaves a clone in its place: what a stage that
/// awaits before calling the rest of the stack does (tower's contract: the ready one is called).
pub fn take_ready<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}

#[cfg(test)]
pub(crate) mod test_support {
    //! A stand-in for the rest of the stack, so each layer is tested on its own.

    use std::sync::{Arc, Mutex};

    use super::{Request, Response, StageResult};
    pub(crate) use crate::context::test_request as request;
    use crate::error::GatewayError;

    /// What the stand-in saw: the requests that reached it.
    pub type Seen = Arc<Mutex<Vec<http::request::Parts>>>;

    /// A service that records each request's head and answers 200 with `body`.
    pub fn recording(
        body: &'static str,
    ) -> (
        impl tower::Service<
            Request,
            Response = Response,
            Error = GatewayError,
            Future = impl Future<Output = StageResult> + Send,
        > + Clone
        + Send
        + 'static,
        Seen,
    ) {
        let seen = Seen::default();
        let record = seen.clone();
        let service = tower::service_fn(move |request: Request| {
            let record = record.clone();
            async move {
                let (parts, _) = request.into_parts();
                if let Ok(mut seen) = record.lock() {
                    seen.push(parts);
                }
                Ok::<_, GatewayError>(Response::new(axum::body::Body::from(body)))
            }
        });
        (service, seen)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tower::{Layer, Service, ServiceExt};

    use super::test_support::{recording, request};
    use super::{Check, CheckLayer, Request};
    use crate::error::GatewayError;

    struct RefuseDeletes;

    impl Check for RefuseDeletes {
        fn check(&self, request: &mut Request) -> Result<(), GatewayError> {
            if request.method() == http::Method::DELETE {
                return Err(GatewayError::Forbidden);
            }
            request
                .headers_mut()
                .insert("x-checked", http::HeaderValue::from_static("1"));
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_check_refuses_without_calling_the_rest_and_passes_its_changes_on() {
        let (inner, seen) = recording("ok");
        let mut service = CheckLayer::new(Arc::new(RefuseDeletes)).layer(inner);
        let refused = service
            .ready()
            .await
            .unwrap()
            .call(request("DELETE", "/x", ""))
            .await;
        assert!(matches!(refused, Err(GatewayError::Forbidden)));
        assert!(seen.lock().unwrap().is_empty(), "a refused request went on");
        let passed = service
            .ready()
            .await
            .unwrap()
            .call(request("GET", "/x", ""))
            .await
            .unwrap();
        assert_eq!(passed.status(), 200);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].headers["x-checked"], "1");
    }
}

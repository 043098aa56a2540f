//! CORS for browser callers (`[cors]`): preflights answered at the edge, and answers, refusals
//! included, readable by the listed origins.
//!
//! Guards against three failures. A preflight must not need a token (browsers never send one)
//! nor reach the agent: it is answered here, 204 with the allowed methods and headers for a listed
//! origin, 403 `origin_forbidden` for any other, before authentication. A page from an unlisted
//! origin must not read answers: only a listed origin gets `Access-Control-Allow-Origin`, and the
//! agent's own `Access-Control-*` headers are removed so that they cannot widen the policy. And a
//! refusal must be readable by the page that caused it, or the user sees a bare network error:
//! this layer sits outside the one that renders refusals.
//!
//! MCP endpoints keep their own CORS and `Origin` check (`[mcp] allowed_origins`,
//! [`crate::mcp::edge`]); this layer leaves them alone. tower-http's `CorsLayer` is not used: it
//! answers a preflight from any origin with 200 and forwards nothing for a refused one, where the
//! gateway answers in the route's error dialect and records the refusal like any other.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use futures_util::future::{Either, Ready, ready};
use http::{HeaderValue, Method, StatusCode, header};
use tower::{Layer, Service};

use crate::config::cors::{CorsSettings, Origins};
use crate::context::{RequestContext, Route};
use crate::error::{GatewayError, refuse};
use crate::stage::{Request, Response};

/// The CORS layer of `[cors]`.
#[derive(Debug, Clone)]
pub struct CorsLayer {
    settings: Arc<CorsSettings>,
}

impl CorsLayer {
    /// The layer for `settings`.
    pub fn new(settings: Arc<CorsSettings>) -> CorsLayer {
        CorsLayer { settings }
    }
}

impl<S> Layer<S> for CorsLayer {
    type Service = CorsService<S>;

    fn layer(&self, inner: S) -> CorsService<S> {
        CorsService {
            settings: self.settings.clone(),
            inner,
        }
    }
}

/// The service of [`CorsLayer`].
#[derive(Debug, Clone)]
pub struct CorsService<S> {
    settings: Arc<CorsSettings>,
    inner: S,
}

impl<S> Service<Request> for CorsService<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, CorsFuture<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if RequestContext::of(&request).is_some_and(|c| c.route == Route::Mcp) {
            return Either::Right(CorsFuture {
                inner: self.inner.call(request),
                cors: None,
            });
        }
        let preflight = request.method() == Method::OPTIONS
            && request
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        let allowed = match request.headers().get(header::ORIGIN) {
            None => None,
            Some(origin) if origin.to_str().is_ok_and(|o| self.settings.allows(o)) => {
                Some(match self.settings.origins {
                    Origins::Any => HeaderValue::from_static("*"),
                    Origins::List(_) => origin.clone(),
                })
            }
            Some(_) if preflight => {
                return Either::Left(ready(Ok(refuse(&request, GatewayError::OriginForbidden))));
            }
            Some(_) => None,
        };
        match allowed {
            Some(origin) if preflight => {
                Either::Left(ready(Ok(preflight_answer(&self.settings, origin))))
            }
            origin => Either::Right(CorsFuture {
                inner: self.inner.call(request),
                cors: Some((self.settings.clone(), origin)),
            }),
        }
    }
}

/// 204 for a listed origin's preflight: its methods, headers and how long to cache this.
fn preflight_answer(settings: &CorsSettings, origin: HeaderValue) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        settings.allow_methods.clone(),
    );
    if let Some(allowed) = &settings.allow_headers {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allowed.clone());
    }
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, settings.max_age.clone());
    allow(headers, settings, origin);
    response
}

/// The headers that let `origin` read an answer.
fn allow(headers: &mut http::HeaderMap, settings: &CorsSettings, origin: HeaderValue) {
    let any = origin.as_bytes() == b"*";
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if settings.credentials {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if !any {
        headers.append(header::VARY, HeaderValue::from_static("origin"));
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`CorsService`]: the agent's CORS headers removed, the gateway's
    /// added for a listed origin (`None`: an MCP endpoint, left to its own edge).
    pub struct CorsFuture<F> {
        #[pin]
        inner: F,
        cors: Option<(Arc<CorsSettings>, Option<HeaderValue>)>,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for CorsFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(mut response) = std::task::ready!(this.inner.poll(cx));
        if let Some((settings, origin)) = this.cors.take() {
            let headers = response.headers_mut();
            for name in [
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                header::ACCESS_CONTROL_ALLOW_METHODS,
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                header::ACCESS_CONTROL_MAX_AGE,
            ] {
                headers.remove(name);
            }
            if let Some(origin) = origin {
                allow(headers, &settings, origin);
                if let Some(expose) = &settings.expose_headers {
                    headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
                }
            }
        }
        Poll::Ready(Ok(response))
    }
}

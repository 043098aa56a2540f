//! The edge of MCP endpoints: protected resource metadata, CORS and the `Origin` check, all
//! answered before any token is asked for.
//!
//! Guards against two failures. A client that follows the MCP authorization spec must find where
//! to log in without a token: the RFC 9728 metadata documents are served here, and every 401 on
//! an MCP endpoint points at them. And a web page must not drive a local or internal MCP server
//! through a user's browser (DNS rebinding, cross-site requests): a request whose `Origin` is
//! not in `[mcp] allowed_origins` is refused with 403 before anything else happens.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use futures_util::future::{Either, Ready, ready};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use tower::{Layer, Service};

use crate::config::McpSettings;
use crate::context::{RequestContext, Route};
use crate::error::{GatewayError, refuse};
use crate::stage::{Request, Response};

/// The well-known path of protected resource metadata (RFC 9728 § 3).
pub const WELL_KNOWN_PRM: &str = "/.well-known/oauth-protected-resource";

/// Headers a browser client may read from an MCP answer.
const EXPOSED: HeaderValue =
    HeaderValue::from_static("mcp-session-id, mcp-protocol-version, www-authenticate");
/// Methods of an MCP endpoint.
const METHODS: HeaderValue = HeaderValue::from_static("GET, POST, DELETE, OPTIONS");
/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: HeaderValue = HeaderValue::from_static("600");

/// What the edge knows: the metadata documents and the allowed origins.
#[derive(Debug)]
pub struct McpEdge {
    /// The metadata document per path it is served at (the root and one per endpoint).
    documents: Vec<(String, Bytes)>,
    allowed_origins: Vec<String>,
}

impl McpEdge {
    /// The edge of `[mcp]`.
    pub fn new(settings: &McpSettings) -> McpEdge {
        let mut documents = Vec::new();
        if let Some(resource) = &settings.resource {
            let mut document = serde_json::json!({
                "resource": resource.uri,
                "authorization_servers": resource.authorization_servers,
                "bearer_methods_supported": ["header"],
            });
            if !settings.scopes_supported.is_empty()
                && let Some(object) = document.as_object_mut()
            {
                object.insert(
                    "scopes_supported".to_owned(),
                    settings.scopes_supported.clone().into(),
                );
            }
            let body = Bytes::from(serde_json::to_vec(&document).unwrap_or_default());
            documents.push((WELL_KNOWN_PRM.to_owned(), body.clone()));
            for path in &settings.paths {
                documents.push((format!("{WELL_KNOWN_PRM}{path}"), body.clone()));
            }
        }
        McpEdge {
            documents,
            allowed_origins: settings.allowed_origins.clone(),
        }
    }

    fn document(&self, path: &str) -> Option<&Bytes> {
        self.documents
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, body)| body)
    }

    /// Whether `origin` may call the MCP endpoints.
    fn allows(&self, origin: &str) -> bool {
        self.allowed_origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(origin))
    }
}

/// Layer: serves the metadata, answers preflights and checks `Origin` on MCP endpoints.
#[derive(Debug, Clone)]
pub struct McpEdgeLayer {
    edge: Arc<McpEdge>,
}

impl McpEdgeLayer {
    /// The layer for `edge`.
    pub fn new(edge: Arc<McpEdge>) -> McpEdgeLayer {
        McpEdgeLayer { edge }
    }
}

impl<S> Layer<S> for McpEdgeLayer {
    type Service = McpEdgeService<S>;

    fn layer(&self, inner: S) -> McpEdgeService<S> {
        McpEdgeService {
            edge: self.edge.clone(),
            inner,
        }
    }
}

/// The service of [`McpEdgeLayer`].
#[derive(Debug, Clone)]
pub struct McpEdgeService<S> {
    edge: Arc<McpEdge>,
    inner: S,
}

impl<S> Service<Request> for McpEdgeService<S>
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
        let path = request.uri().path();
        if let Some(document) = self.edge.document(path) {
            let answer = match *request.method() {
                Method::GET | Method::HEAD => Some(metadata(document.clone())),
                Method::OPTIONS => Some(preflight(
                    HeaderValue::from_static("*"),
                    HeaderValue::from_static("GET, HEAD, OPTIONS"),
                    request.headers(),
                )),
                _ => None,
            };
            if let Some(answer) = answer {
                return Either::Left(ready(Ok(answer)));
            }
        }
        let mcp = RequestContext::of(&request).is_some_and(|c| c.route == Route::Mcp);
        let origin = match request.headers().get(header::ORIGIN) {
            Some(origin) if mcp => origin,
            _ => {
                return Either::Right(CorsFuture {
                    inner: self.inner.call(request),
                    origin: None,
                });
            }
        };
        if !origin.to_str().is_ok_and(|o| self.edge.allows(o)) {
            return Either::Left(ready(Ok(refuse(&request, GatewayError::OriginForbidden))));
        }
        let origin = origin.clone();
        if request.method() == Method::OPTIONS
            && request
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            let mut answer = preflight(origin, METHODS, request.headers());
            answer
                .headers_mut()
                .insert(header::VARY, HeaderValue::from_static("origin"));
            return Either::Left(ready(Ok(answer)));
        }
        Either::Right(CorsFuture {
            inner: self.inner.call(request),
            origin: Some(origin),
        })
    }
}

/// The metadata document: public, cacheable for a while, readable from any origin.
fn metadata(document: Bytes) -> Response {
    let mut response = Response::new(Body::from(document));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

/// A CORS preflight answer (204) for `origin`: the methods, and the request headers asked for
/// (the MCP headers include `Mcp-Param-*` names no fixed list could hold).
fn preflight(origin: HeaderValue, methods: HeaderValue, request: &HeaderMap) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, methods);
    if let Some(asked) = request.get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        && asked
            .as_bytes()
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_, ".contains(b))
    {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, PREFLIGHT_MAX_AGE);
    response
}

pin_project_lite::pin_project! {
    /// The response future of [`McpEdgeService`]: an allowed origin may read the answer.
    pub struct CorsFuture<F> {
        #[pin]
        inner: F,
        origin: Option<HeaderValue>,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for CorsFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(mut response) = std::task::ready!(this.inner.poll(cx));
        if let Some(origin) = this.origin.take() {
            let headers = response.headers_mut();
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSED);
            headers.append(header::VARY, HeaderValue::from_static("origin"));
        }
        Poll::Ready(Ok(response))
    }
}

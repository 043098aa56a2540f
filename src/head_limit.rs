//! Request-head checks: size and framing.
//!
//! Guards against memory and parser abuse through huge request lines and header sets, and
//! against request smuggling: a head over `server.max_header_bytes` is answered 431 before any
//! other work (the HTTP/1 parser's own buffer is a little larger than the limit, so that a
//! moderately oversized head gets the full problem+json answer here; a far larger one is refused
//! by the parser itself with a bare 431). A transfer coding other than a single `chunked` is
//! refused with 400 and its connection closed, so that no proxy in front of the gateway and no
//! upstream behind it can read the bytes differently. So is a request whose head the HTTP/1.1
//! framing guard ([`crate::server::framing`]) found to carry `Content-Length` together with
//! `Transfer-Encoding`, or a line ended by a bare LF: the parser would accept both, and other
//! parsers read them differently. `CONNECT` (an authority-form target) is refused: the gateway is
//! not a forward proxy. Nor is an HTTP/1.1 absolute-form target (`GET https://host/path`),
//! unless `server.allow_absolute_form` is set: clients send it to forward proxies, so at a
//! gateway it comes from scanners probing for an open proxy. (RFC 9112 section 3.2.2 asks servers
//! to accept it; with the setting on, it is served from the configured upstream, its authority
//! ignored.)

use crate::stage::Next;
use axum::extract::Request;
use axum::response::Response;
use http::{Method, Version, header};

use crate::error::GatewayError;
use crate::headers::head_size;
use crate::request_id::RequestContext;
use crate::server::framing::Violation;

/// What the head checks enforce, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct HeadRules {
    /// `server.max_header_bytes`.
    pub max_header_bytes: usize,
    /// `server.allow_absolute_form`.
    pub allow_absolute_form: bool,
}

/// Layer: 431 for a request head larger than the configured limit; 400 for a transfer coding it
/// cannot frame unambiguously, for framing the HTTP/1.1 guard found broken, for `CONNECT`, and for
/// an absolute-form target unless allowed.
pub async fn enforce(rules: HeadRules, request: Request, next: impl Next) -> Response {
    let size = head_size(&request);
    if size > rules.max_header_bytes {
        let id = RequestContext::id_of(&request);
        return GatewayError::HeaderTooLarge(size).into_response(&id);
    }
    if let Err(reason) = check_framing(&request, rules.allow_absolute_form) {
        let id = RequestContext::id_of(&request);
        return GatewayError::BadRequest(reason).into_response(&id);
    }
    next.run(request).await
}

/// The framing rules of the module documentation.
fn check_framing(request: &Request, allow_absolute_form: bool) -> Result<(), &'static str> {
    if let Some(violation) = request.extensions().get::<Violation>() {
        return Err(violation.rule());
    }
    if request.method() == Method::CONNECT {
        return Err("connect_not_allowed");
    }
    // An HTTP/2 request always carries its scheme and authority; only HTTP/1 has target forms.
    if !allow_absolute_form
        && request.version() <= Version::HTTP_11
        && request.uri().scheme().is_some()
    {
        return Err("absolute_form_target");
    }
    let headers = request.headers();
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
    match (codings.next(), codings.next()) {
        (None, _) => Ok(()),
        (Some(_), Some(_)) => Err("unsupported_transfer_encoding"),
        (Some(coding), None)
            if coding
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"chunked") =>
        {
            Ok(())
        }
        (Some(_), None) => Err("unsupported_transfer_encoding"),
    }
}

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
//! parsers read them differently. `CONNECT` is refused: the gateway is not a forward proxy.

use crate::stage::Next;
use axum::extract::Request;
use axum::response::Response;
use http::{Method, header};

use crate::error::GatewayError;
use crate::headers::head_size;
use crate::request_id::RequestContext;
use crate::server::framing::Violation;

/// Layer: 431 for a request head larger than the configured limit; 400 for a transfer coding it
/// cannot frame unambiguously, for framing the HTTP/1.1 guard found broken, and for `CONNECT`.
pub async fn enforce(max_header_bytes: usize, request: Request, next: Next) -> Response {
    let size = head_size(&request);
    if size > max_header_bytes {
        let id = RequestContext::id_of(&request);
        return GatewayError::HeaderTooLarge(size).into_response(&id);
    }
    if let Err(reason) = check_framing(&request) {
        let id = RequestContext::id_of(&request);
        return GatewayError::BadRequest(reason).into_response(&id);
    }
    next.run(request).await
}

/// The framing rules of the module documentation.
fn check_framing(request: &Request) -> Result<(), &'static str> {
    if let Some(violation) = request.extensions().get::<Violation>() {
        return Err(violation.rule());
    }
    if request.method() == Method::CONNECT {
        return Err("connect_not_allowed");
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

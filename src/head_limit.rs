//! The request-head size limit.
//!
//! Guards against memory and parser abuse through huge request lines and header sets: a head over
//! `server.max_header_bytes` is answered 431 before any other work. The HTTP/1 parser's own buffer
//! is a little larger than the limit, so that a moderately oversized head gets the full
//! problem+json answer here; a far larger one is refused by the parser itself with a bare 431.

use crate::stage::Next;
use axum::extract::Request;
use axum::response::Response;

use crate::error::GatewayError;
use crate::headers::head_size;
use crate::request_id::RequestContext;

/// Layer: 431 for a request head larger than the configured limit.
pub async fn enforce(max_header_bytes: usize, request: Request, next: Next) -> Response {
    let size = head_size(&request);
    if size > max_header_bytes {
        let id = RequestContext::id_of(&request);
        return GatewayError::HeaderTooLarge(size).into_response(&id);
    }
    next.run(request).await
}

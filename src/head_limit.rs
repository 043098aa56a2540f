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

use http::{Method, Version, header};

use crate::error::GatewayError;
use crate::headers::head_size;
use crate::stage::{Check, Request};

/// Why a request's framing is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    /// `Content-Length` and `Transfer-Encoding` in one head.
    LengthWithTransferEncoding,
    /// A head line (or an empty line before the head) ended by LF without CR.
    BareLineFeed,
}

impl Violation {
    /// The rule named in the 400 answer and the audit record.
    pub fn rule(self) -> &'static str {
        match self {
            Violation::LengthWithTransferEncoding => "content_length_with_transfer_encoding",
            Violation::BareLineFeed => "bare_lf_line_ending",
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            Violation::LengthWithTransferEncoding => 1,
            Violation::BareLineFeed => 2,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Violation> {
        match code {
            1 => Some(Violation::LengthWithTransferEncoding),
            2 => Some(Violation::BareLineFeed),
            _ => None,
        }
    }
}

/// What the head checks enforce, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct HeadRules {
    /// `server.max_header_bytes`.
    pub max_header_bytes: usize,
    /// `server.allow_absolute_form`.
    pub allow_absolute_form: bool,
}

/// Check: 431 for a request head larger than the configured limit; 400 for a transfer coding
/// it cannot frame unambiguously, for framing the HTTP/1.1 guard found broken, for `CONNECT`, and
/// for an absolute-form target unless allowed.
impl Check for HeadRules {
    fn check(&self, request: &mut Request) -> Result<(), GatewayError> {
        let size = head_size(request);
        if size > self.max_header_bytes {
            return Err(GatewayError::HeaderTooLarge(size));
        }
        check_framing(request, self.allow_absolute_form).map_err(GatewayError::BadRequest)
    }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tower::{Layer, ServiceExt};

    use super::HeadRules;
    use crate::error::GatewayError;
    use crate::stage::CheckLayer;
    use crate::stage::test_support::{recording, request};

    #[tokio::test]
    async fn oversized_heads_connect_and_absolute_targets_are_refused() {
        let rules = Arc::new(HeadRules {
            max_header_bytes: 1024,
            allow_absolute_form: false,
        });
        let (inner, seen) = recording("ok");
        let layer = CheckLayer::new(rules);
        let mut big = request("GET", "/", "");
        big.headers_mut()
            .insert("x-big", "a".repeat(2000).parse().unwrap());
        let refused = layer.layer(inner.clone()).oneshot(big).await;
        assert!(matches!(refused, Err(GatewayError::HeaderTooLarge(n)) if n > 2000));
        let connect = request("CONNECT", "example.com:443", "");
        let refused = layer.layer(inner.clone()).oneshot(connect).await;
        assert!(matches!(
            refused,
            Err(GatewayError::BadRequest("connect_not_allowed"))
        ));
        let absolute = request("GET", "http://example.com/x", "");
        let refused = layer.layer(inner.clone()).oneshot(absolute).await;
        assert!(matches!(
            refused,
            Err(GatewayError::BadRequest("absolute_form_target"))
        ));
        let mut doubled = request("POST", "/", "");
        doubled
            .headers_mut()
            .append("transfer-encoding", "gzip".parse().unwrap());
        let refused = layer.layer(inner.clone()).oneshot(doubled).await;
        assert!(matches!(
            refused,
            Err(GatewayError::BadRequest("unsupported_transfer_encoding"))
        ));
        assert!(seen.lock().unwrap().is_empty());
        let fine = layer.layer(inner).oneshot(request("GET", "/", "")).await;
        assert_eq!(fine.unwrap().status(), 200);
    }
}

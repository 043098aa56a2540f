//! W3C trace context (`traceparent`): joining the caller's distributed trace, or starting one.
//!
//! Guards against requests that cannot be followed across services and against forged or
//! malformed trace headers: a valid incoming `traceparent` is kept (its trace id and flags) and
//! passed to the upstream with the gateway's own span id as the parent; an absent or malformed
//! one is replaced by a new trace (and a `tracestate` that belonged to it is dropped). The trace id
//! is written to the audit record and to the operational log lines of the request.

use std::fmt;

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue};

/// The W3C `traceparent` header.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The W3C `tracestate` header.
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Length of a version-00 `traceparent`: `00-` + 32 hex + `-` + 16 hex + `-` + 2 hex.
const TRACEPARENT_LEN: usize = 55;
/// Flags of a trace the gateway starts: sampled, so tracers downstream record it.
const NEW_TRACE_FLAGS: u8 = 0x01;

/// A 16-byte trace id, printed as 32 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceId(pub [u8; 16]);

impl TraceId {
    /// The 32 lowercase hex digits.
    pub fn hex(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        hex_into(&self.0, &mut out);
        out
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.hex();
        // Hex digits are ASCII.
        f.write_str(std::str::from_utf8(&hex).unwrap_or_default())
    }
}

/// Writes `bytes` as lowercase hex into `out` (twice as long); the per-request path formats
/// ids this way rather than through `fmt`, which costs a call per digit.
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
}

impl serde::Serialize for TraceId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Hex digits are ASCII; `collect_str` would go through `fmt`.
        s.serialize_str(std::str::from_utf8(&self.hex()).unwrap_or_default())
    }
}

/// The request's place in a distributed trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace this request belongs to.
    pub trace_id: TraceId,
    /// The gateway's span: the parent the upstream sees.
    pub span_id: [u8; 8],
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
    /// Whether the trace came from the caller (false: the gateway started it).
    pub joined: bool,
    /// The caller's span, the parent of the gateway's (when the trace was joined).
    pub parent_id: Option<[u8; 8]>,
}

impl TraceContext {
    /// Joins the trace of a valid incoming `traceparent`, or starts a new one.
    pub fn from_headers(headers: &HeaderMap) -> TraceContext {
        let span_id = random_span_id();
        let mut values = headers.get_all(&TRACEPARENT).iter();
        if let (Some(value), None) = (values.next(), values.next())
            && let Some((trace_id, parent_id, flags)) = parse_traceparent(value.as_bytes())
        {
            return TraceContext {
                trace_id,
                span_id,
                flags,
                joined: true,
                parent_id: Some(parent_id),
            };
        }
        TraceContext {
            trace_id: random_trace_id(),
            span_id,
            flags: NEW_TRACE_FLAGS,
            joined: false,
            parent_id: None,
        }
    }

    /// The `traceparent` sent upstream: this trace, with the gateway's span as the parent.
    pub fn traceparent(&self) -> HeaderValue {
        let mut text = [b'-'; TRACEPARENT_LEN];
        text[..2].copy_from_slice(b"00");
        hex_into(&self.trace_id.0, &mut text[3..35]);
        hex_into(&self.span_id, &mut text[36..52]);
        hex_into(&[self.flags], &mut text[53..55]);
        HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// Sets the upstream-bound trace headers on `headers`.
    pub fn propagate(&self, headers: &mut HeaderMap) {
        if !self.joined {
            // A tracestate belongs to the trace whose traceparent was missing or malformed.
            headers.remove(&TRACESTATE);
        }
        headers.insert(TRACEPARENT.clone(), self.traceparent());
    }
}

/// Parses `traceparent` per W3C Trace Context level 1: version `00` exactly 55 characters; a
/// later version at least that long, with a `-` after the flags if longer; version `ff`, all-zero
/// ids and upper-case hex are invalid.
fn parse_traceparent(value: &[u8]) -> Option<(TraceId, [u8; 8], u8)> {
    if value.len() < TRACEPARENT_LEN {
        return None;
    }
    let version = hex_byte(&value[0..2])?;
    if version == 0xff
        || (version == 0 && value.len() != TRACEPARENT_LEN)
        || (value.len() > TRACEPARENT_LEN && value[TRACEPARENT_LEN] != b'-')
        || value[2] != b'-'
        || value[35] != b'-'
        || value[52] != b'-'
    {
        return None;
    }
    let mut trace_id = [0u8; 16];
    for (i, byte) in trace_id.iter_mut().enumerate() {
        *byte = hex_byte(&value[3 + 2 * i..5 + 2 * i])?;
    }
    let mut parent_id = [0u8; 8];
    for (i, byte) in parent_id.iter_mut().enumerate() {
        *byte = hex_byte(&value[36 + 2 * i..38 + 2 * i])?;
    }
    let flags = hex_byte(&value[53..55])?;
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some((TraceId(trace_id), parent_id, flags))
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    Some(digit(pair[0])? << 4 | digit(pair[1])?)
}

fn random_trace_id() -> TraceId {
    let mut id = *uuid::Uuid::new_v4().as_bytes();
    // A v4 UUID fixes a few bits; mixing in a second one makes every bit random.
    for (a, b) in id.iter_mut().zip(uuid::Uuid::new_v4().as_bytes()) {
        *a ^= b.rotate_left(3);
    }
    TraceId(id)
}

fn random_span_id() -> [u8; 8] {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let mut id = [0u8; 8];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = bytes[i] ^ bytes[i + 8];
    }
    if id == [0; 8] {
        id[7] = 1;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn context(values: &[&str]) -> TraceContext {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(&TRACEPARENT, HeaderValue::from_str(v).unwrap());
        }
        TraceContext::from_headers(&headers)
    }

    #[test]
    fn a_valid_traceparent_is_joined_with_a_new_span() {
        let ctx = context(&[VALID]);
        assert!(ctx.joined);
        assert_eq!(ctx.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ctx.flags, 1);
        let sent = ctx.traceparent();
        let sent = sent.to_str().unwrap();
        assert_eq!(sent.len(), 55);
        assert!(sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(!sent.contains("00f067aa0ba902b7"), "a new span id: {sent}");
        assert!(sent.ends_with("-01"));
        assert!(parse_traceparent(sent.as_bytes()).is_some());
    }

    #[test]
    fn malformed_traceparents_start_a_new_trace() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            let ctx = context(&[bad]);
            assert!(!ctx.joined, "{bad:?} refused");
            assert_eq!(ctx.flags, NEW_TRACE_FLAGS);
        }
        assert!(
            !context(&[VALID, VALID]).joined,
            "two headers are ambiguous"
        );
        assert!(!context(&[]).joined);
        // A later version may append fields.
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-abc";
        assert!(context(&[future]).joined);
    }

    #[test]
    fn new_traces_differ() {
        let (a, b) = (context(&[]), context(&[]));
        assert_ne!(a.trace_id, b.trace_id);
        assert_ne!(a.span_id, b.span_id);
    }
}

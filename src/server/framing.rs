//! Strict HTTP/1.1 message framing, checked on the raw bytes before the HTTP parser sees them.
//!
//! Guards against request smuggling through framing that parsers resolve differently. hyper's
//! parser accepts two framings that RFC 9112 permits but that a gateway in front of other parsers
//! should refuse: `Content-Length` together with `Transfer-Encoding` (section 6.1; hyper frames
//! by the chunked coding and drops the length before any stage could see it), and head lines
//! ended by a bare LF (section 2.2). [`FramingGuard`] follows message boundaries on the bytes read
//! from the client, the way hyper frames them: request heads line by line, bodies by
//! `Content-Length` or by chunk sizes. It notes the first request whose head breaks either rule.
//! The connection's service then marks that request with its [`Violation`], and the head checks
//! answer it 400 and close the connection before any other stage runs, so nothing of it is
//! forwarded.
//!
//! Where the guard cannot follow the framing (an invalid length, a chunk-size error, a head
//! larger than the parser's buffer, `CONNECT`), it stops watching that connection: those are
//! refused by the parser or the head checks, which close the connection. The guard adds no
//! allocation per request: it keeps at most [`LINE_KEEP`] bytes of the line being read.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub use crate::head_limit::Violation;

/// Bytes kept of each head line: enough for the longest header name looked at
/// (`transfer-encoding`) and a `Content-Length` value.
pub const LINE_KEEP: usize = 64;

/// What the guard found on one connection, shared with that connection's service.
#[derive(Debug, Default)]
pub struct Findings {
    /// 1-based index of the request whose head broke a rule; 0 while none has.
    violating_request: AtomicU64,
    violation: AtomicU8,
    /// Requests handed to the service so far.
    served: AtomicU64,
}

impl Findings {
    /// Called once for every request the parser hands to the service, in order: the violation,
    /// when this request is the one whose head broke a rule. The guard has always read a head
    /// before the parser hands its request on.
    pub fn next_request(&self) -> Option<Violation> {
        let index = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        if self.violating_request.load(Ordering::Relaxed) != index {
            return None;
        }
        Violation::from_code(self.violation.load(Ordering::Relaxed))
    }

    /// The request (1-based) whose head broke a rule, and the rule, once one has.
    pub fn violation(&self) -> Option<(u64, Violation)> {
        let request = self.violating_request.load(Ordering::Relaxed);
        Violation::from_code(self.violation.load(Ordering::Relaxed)).map(|v| (request, v))
    }

    fn record(&self, request: u64, violation: Violation) {
        self.violation.store(violation.code(), Ordering::Relaxed);
        self.violating_request.store(request, Ordering::Relaxed);
    }
}

/// The client connection of an HTTP/1.1 server, with its incoming framing followed.
pub struct FramingGuard<T> {
    inner: T,
    tracker: Tracker,
}

impl<T> FramingGuard<T> {
    /// Wraps `inner`; a head larger than `max_head` bytes (the parser's own limit, which refuses
    /// it) ends the watch.
    pub fn new(inner: T, max_head: usize, findings: Arc<Findings>) -> FramingGuard<T> {
        FramingGuard {
            inner,
            tracker: Tracker::new(max_head, findings),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for FramingGuard<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled
            && let Some(read) = buf.filled().get(before..)
        {
            self.tracker.feed(read);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FramingGuard<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Follows message boundaries through a client's byte stream.
#[derive(Debug)]
pub struct Tracker {
    state: State,
    /// Request heads read to their end.
    heads: u64,
    max_head: usize,
    findings: Arc<Findings>,
}

#[derive(Debug)]
enum State {
    /// In (or before) a request head.
    Head(Head),
    /// In a body framed by `Content-Length`: bytes left.
    Length(u64),
    /// In a chunked body.
    Chunked(Chunk),
    /// Not watching any more: a rule was broken, or the framing is the parser's to refuse.
    Off,
}

impl Tracker {
    /// A tracker at the start of a connection.
    pub fn new(max_head: usize, findings: Arc<Findings>) -> Tracker {
        Tracker {
            state: State::Head(Head::default()),
            heads: 0,
            max_head,
            findings,
        }
    }

    /// Follows the next bytes read from the client.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let consumed = match &mut self.state {
                State::Off => return,
                State::Length(left) => {
                    let take = usize::try_from(*left).map_or(data.len(), |l| l.min(data.len()));
                    *left -= take as u64;
                    if *left == 0 {
                        self.state = State::Head(Head::default());
                    }
                    take
                }
                State::Chunked(chunk) => {
                    let (consumed, step) = chunk.feed(data);
                    match step {
                        ChunkStep::More => {}
                        ChunkStep::Done => self.state = State::Head(Head::default()),
                        ChunkStep::Lost => self.state = State::Off,
                    }
                    consumed
                }
                State::Head(head) => {
                    let (consumed, step) = head.feed(data, self.max_head);
                    match step {
                        HeadStep::More => {}
                        HeadStep::Broke(violation) => {
                            self.findings.record(self.heads + 1, violation);
                            self.state = State::Off;
                        }
                        HeadStep::Lost => self.state = State::Off,
                        HeadStep::End(body) => {
                            self.heads += 1;
                            self.state = match body {
                                Body::None => State::Head(Head::default()),
                                Body::Length(n) => State::Length(n),
                                Body::Chunked => State::Chunked(Chunk::Size(0)),
                            };
                        }
                    }
                    consumed
                }
            };
            data = data.get(consumed..).unwrap_or_default();
        }
    }

    /// Whether the tracker still follows the stream (for tests).
    pub fn watching(&self) -> bool {
        !matches!(self.state, State::Off)
    }
}

/// What a head says about its body, as far as the guard follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    None,
    Length(u64),
    Chunked,
}

#[derive(Debug)]
enum HeadStep {
    More,
    End(Body),
    Broke(Violation),
    Lost,
}

/// `Content-Length` as read so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Length {
    #[default]
    Absent,
    Value(u64),
    Invalid,
}

/// `Transfer-Encoding` as read so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Coding {
    #[default]
    Absent,
    Chunked,
    Other,
}

#[derive(Debug)]
struct Head {
    /// The current line's first bytes.
    line: [u8; LINE_KEEP],
    kept: usize,
    line_len: usize,
    last_was_cr: bool,
    /// Bytes of the head so far.
    size: usize,
    request_line_seen: bool,
    connect: bool,
    length: Length,
    coding: Coding,
}

impl Default for Head {
    fn default() -> Head {
        Head {
            line: [0; LINE_KEEP],
            kept: 0,
            line_len: 0,
            last_was_cr: false,
            size: 0,
            request_line_seen: false,
            connect: false,
            length: Length::Absent,
            coding: Coding::Absent,
        }
    }
}

impl Head {
    /// Reads up to the end of the current line; returns the bytes consumed and what follows.
    fn feed(&mut self, data: &[u8], max_head: usize) -> (usize, HeadStep) {
        let (segment, ended) = match memchr::memchr(b'\n', data) {
            Some(at) => (data.get(..at).unwrap_or_default(), true),
            None => (data, false),
        };
        let consumed = segment.len() + usize::from(ended);
        self.size += consumed;
        if self.size > max_head {
            return (consumed, HeadStep::Lost);
        }
        let take = (LINE_KEEP - self.kept).min(segment.len());
        if let (Some(to), Some(from)) = (
            self.line.get_mut(self.kept..self.kept + take),
            segment.get(..take),
        ) {
            to.copy_from_slice(from);
            self.kept += take;
        }
        self.line_len += segment.len();
        if let Some(&last) = segment.last() {
            self.last_was_cr = last == b'\r';
        }
        if !ended {
            return (consumed, HeadStep::More);
        }
        let step = self.end_line();
        self.kept = 0;
        self.line_len = 0;
        self.last_was_cr = false;
        (consumed, step)
    }

    /// One line has ended with LF.
    fn end_line(&mut self) -> HeadStep {
        if !self.last_was_cr {
            return HeadStep::Broke(Violation::BareLineFeed);
        }
        let content_len = self.line_len - 1;
        if content_len == 0 {
            if !self.request_line_seen {
                // An empty line before the request line is ignored (RFC 9112 section 2.2).
                self.size = 0;
                return HeadStep::More;
            }
            return self.end_head();
        }
        let truncated = content_len > LINE_KEEP;
        let kept = self.kept.min(content_len);
        let line = self.line.get(..kept).unwrap_or_default();
        if !self.request_line_seen {
            self.request_line_seen = true;
            self.connect = line.starts_with(b"CONNECT ");
            return HeadStep::More;
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            return HeadStep::More;
        };
        let name = line.get(..colon).unwrap_or_default();
        let value = line.get(colon + 1..).unwrap_or_default().trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            self.length = match (truncated, self.length, parse_length(value)) {
                (false, Length::Absent, Some(n)) => Length::Value(n),
                (false, Length::Value(prev), Some(n)) if prev == n => Length::Value(n),
                _ => Length::Invalid,
            };
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.coding = match self.coding {
                Coding::Absent if !truncated && value.eq_ignore_ascii_case(b"chunked") => {
                    Coding::Chunked
                }
                _ => Coding::Other,
            };
        }
        HeadStep::More
    }

    /// The empty line after the header fields.
    fn end_head(&self) -> HeadStep {
        if self.coding != Coding::Absent && self.length != Length::Absent {
            return HeadStep::Broke(Violation::LengthWithTransferEncoding);
        }
        if self.connect {
            return HeadStep::Lost;
        }
        match (self.coding, self.length) {
            (Coding::Chunked, _) => HeadStep::End(Body::Chunked),
            (Coding::Other, _) | (_, Length::Invalid) => HeadStep::Lost,
            (Coding::Absent, Length::Value(0) | Length::Absent) => HeadStep::End(Body::None),
            (Coding::Absent, Length::Value(n)) => HeadStep::End(Body::Length(n)),
        }
    }
}

/// A `Content-Length` value as hyper reads it: digits, or a list of equal digit strings.
fn parse_length(value: &[u8]) -> Option<u64> {
    let mut length = None;
    for part in value.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = std::str::from_utf8(part).ok()?.parse::<u64>().ok()?;
        match length {
            Some(prev) if prev != n => return None,
            _ => length = Some(n),
        }
    }
    length
}

/// Position in a chunked body, state for state as hyper's decoder reads it.
#[derive(Debug, Clone, Copy)]
enum Chunk {
    Size(u64),
    SizeSpace(u64),
    Extension(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    EndCr,
    EndLf,
    Trailer,
    TrailerLf,
}

enum ChunkStep {
    More,
    Done,
    Lost,
}

impl Chunk {
    fn feed(&mut self, data: &[u8]) -> (usize, ChunkStep) {
        if let Chunk::Data(left) = self {
            let take = usize::try_from(*left).map_or(data.len(), |l| l.min(data.len()));
            *left -= take as u64;
            if *left == 0 {
                *self = Chunk::DataCr;
            }
            return (take, ChunkStep::More);
        }
        let Some(&byte) = data.first() else {
            return (0, ChunkStep::More);
        };
        let next = match (*self, byte) {
            (Chunk::Size(size), b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                let digit = match byte {
                    b'0'..=b'9' => byte - b'0',
                    b'a'..=b'f' => byte - b'a' + 10,
                    _ => byte - b'A' + 10,
                };
                match size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(u64::from(digit)))
                {
                    Some(size) => Chunk::Size(size),
                    None => return (1, ChunkStep::Lost),
                }
            }
            (Chunk::Size(size) | Chunk::SizeSpace(size), b'\t' | b' ') => Chunk::SizeSpace(size),
            (Chunk::Size(size) | Chunk::SizeSpace(size) | Chunk::Extension(size), b';') => {
                Chunk::Extension(size)
            }
            (Chunk::Size(size) | Chunk::SizeSpace(size) | Chunk::Extension(size), b'\r') => {
                Chunk::SizeLf(size)
            }
            (Chunk::Extension(_), b'\n') => return (1, ChunkStep::Lost),
            (Chunk::Extension(size), _) => Chunk::Extension(size),
            (Chunk::SizeLf(0), b'\n') => Chunk::EndCr,
            (Chunk::SizeLf(size), b'\n') => Chunk::Data(size),
            (Chunk::DataCr, b'\r') => Chunk::DataLf,
            (Chunk::DataLf, b'\n') => Chunk::Size(0),
            (Chunk::EndCr, b'\r') => Chunk::EndLf,
            (Chunk::Trailer, b'\r') => Chunk::TrailerLf,
            (Chunk::EndCr | Chunk::Trailer, _) => Chunk::Trailer,
            (Chunk::TrailerLf, b'\n') => Chunk::EndCr,
            (Chunk::EndLf, b'\n') => return (1, ChunkStep::Done),
            _ => return (1, ChunkStep::Lost),
        };
        *self = next;
        (1, ChunkStep::More)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `stream` to a tracker in pieces of `piece` bytes; returns the violating request
    /// index and violation, and whether the tracker still watches.
    fn run(stream: &[u8], piece: usize) -> (Option<(u64, Violation)>, bool) {
        let findings = Arc::new(Findings::default());
        let mut tracker = Tracker::new(16 * 1024, findings.clone());
        for part in stream.chunks(piece) {
            tracker.feed(part);
        }
        let index = findings.violating_request.load(Ordering::Relaxed);
        let found =
            Violation::from_code(findings.violation.load(Ordering::Relaxed)).map(|v| (index, v));
        (found, tracker.watching())
    }

    /// Every split of `stream` into equal pieces gives the same verdict.
    fn verdict(stream: &[u8]) -> (Option<(u64, Violation)>, bool) {
        let whole = run(stream, stream.len().max(1));
        for piece in 1..stream.len() {
            assert_eq!(run(stream, piece), whole, "pieces of {piece} bytes");
        }
        whole
    }

    const GET: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";

    #[test]
    fn honest_requests_pass_whatever_their_bodies_hold() {
        let mut stream = Vec::new();
        stream.extend_from_slice(GET);
        stream.extend_from_slice(b"\r\n");
        stream.extend_from_slice(
            b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 19\r\n\r\n{\"a\":\"x\nGET / \r\n\n\"}\r\n",
        );
        stream.extend_from_slice(
            b"POST /c HTTP/1.1\r\nHost: x\r\ntransfer-encoding: Chunked\r\n\r\n\
              4;ext=1\r\na\nb\n\r\n1A \r\nGET / HTTP/1.1\n\nxxxxxxxxxx\r\n0\r\nX-T: y\r\n\r\n",
        );
        stream.extend_from_slice(b"POST /d HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc");
        stream.extend_from_slice(GET);
        assert_eq!(verdict(&stream), (None, true));
    }

    #[test]
    fn length_with_transfer_encoding_is_found_on_its_request() {
        for head in [
            &b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\ncontent-length: 0\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\ncontent-length: junk\r\n\r\n",
        ] {
            let mut stream = GET.to_vec();
            stream.extend_from_slice(head);
            stream.extend_from_slice(b"0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n");
            assert_eq!(
                verdict(&stream),
                (Some((2, Violation::LengthWithTransferEncoding)), false)
            );
        }
    }

    #[test]
    fn bare_lf_is_found_in_any_head_line_and_before_a_head() {
        for bad in [
            &b"GET / HTTP/1.1\nHost: x\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: x\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n\n",
            b"\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            let mut stream = b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n\n\n".to_vec();
            stream.extend_from_slice(bad);
            assert_eq!(
                verdict(&stream),
                (Some((2, Violation::BareLineFeed)), false)
            );
        }
    }

    #[test]
    fn framing_the_parser_refuses_ends_the_watch_without_a_verdict() {
        for head in [
            &b"POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\nhello"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n",
            b"CONNECT x:443 HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(verdict(head), (None, false), "{}", head.escape_ascii());
        }
    }

    #[test]
    fn a_head_past_the_parser_buffer_ends_the_watch() {
        let findings = Arc::new(Findings::default());
        let mut tracker = Tracker::new(64, findings);
        tracker.feed(format!("GET /{} HTTP/1.1\r\n", "a".repeat(100)).as_bytes());
        assert!(!tracker.watching());
    }

    #[test]
    fn the_service_sees_the_violation_on_the_right_request_only() {
        let findings = Arc::new(Findings::default());
        findings.record(2, Violation::BareLineFeed);
        assert_eq!(findings.next_request(), None);
        assert_eq!(findings.next_request(), Some(Violation::BareLineFeed));
        assert_eq!(findings.next_request(), None);
    }
}

//! What an attacker sends, over real TLS against the real gateway: HTTP/1.1 request smuggling and
//! malformed framing, HTTP/2-to-HTTP/1.1 downgrade smuggling, HTTP/2 floods (rapid reset,
//! CONTINUATION, streams past the cap, huge header lists, WINDOW_UPDATE) and connection floods
//! (past `max_connections`, and past the process's file-descriptor limit).
//!
//! Each flood runs while an honest client keeps sending requests, and prints one line
//! (`ABUSE | attack | what the gateway did | honest p50/max | RSS`; run with `--nocapture`). The RSS
//! is that of the test process: the gateway runs in-process, so it is the gateway plus the harness.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::server::raw_tls;
use crate::common::{MockUpstream, Options, TestGateway, wait_until};

// ---------------------------------------------------------------------------------------------
// HTTP/1.1: smuggling and malformed framing
// ---------------------------------------------------------------------------------------------

/// How long a rejected connection may stay open before the test calls it left open.
const CLOSE_DEADLINE: Duration = Duration::from_secs(3);

/// What one raw HTTP/1.1 exchange produced.
#[derive(Debug)]
struct RawAnswer {
    /// The status of the first response, when one arrived.
    status: Option<u16>,
    /// Everything read, decoded lossily.
    text: String,
    /// The gateway closed the connection within [`CLOSE_DEADLINE`].
    closed: bool,
}

impl RawAnswer {
    /// "bare" for hyper's own answer (no body), "problem+json" for the gateway's.
    fn kind(&self) -> &'static str {
        if self
            .text
            .to_ascii_lowercase()
            .contains("content-type: application/problem+json")
        {
            "problem+json"
        } else {
            "bare"
        }
    }
}

/// Sends `request` on a new TLS connection and reads until the gateway closes it (or `limit`
/// passes). Writing runs beside reading, so that a gateway that answers and closes
/// before the whole request is written is still seen answering.
async fn exchange(gateway: &TestGateway, request: &[u8], limit: Duration) -> RawAnswer {
    let (mut read, mut write) = tokio::io::split(raw_tls(gateway).await);
    let request = request.to_vec();
    let writer = tokio::spawn(async move {
        // A failed write means the gateway gave up on the request already: not a test failure.
        let _ = write.write_all(&request).await;
        let _ = write.flush().await;
        // Keep the write half (and so the connection) open until the reader is done.
        std::future::pending::<()>().await;
    });
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    let closed = loop {
        match tokio::time::timeout_at(deadline, read.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    writer.abort();
    let text = String::from_utf8_lossy(&seen).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok());
    RawAnswer {
        status,
        text,
        closed,
    }
}

/// One hand-written request and the answers that are correct for it.
struct Malformed {
    name: &'static str,
    request: Vec<u8>,
    /// The statuses that are a correct refusal.
    expect: &'static [u16],
    /// Why those, in a few words (printed when the case fails).
    why: &'static str,
}

/// `head` with CRLF line ends, then the blank line, then `body`.
fn raw(head: &[&str], body: &str) -> Vec<u8> {
    let mut out = String::new();
    for line in head {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.into_bytes()
}

/// A second request hidden after an empty chunked body: whoever reads by Content-Length instead
/// of chunked framing sees it as the next request on the connection.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nhost: localhost\r\n\r\n";

/// Content-Length and Transfer-Encoding together, in the given order, with the smuggled request
/// after the chunked terminator and Content-Length covering everything.
fn cl_and_te(cl_first: bool) -> Vec<u8> {
    let body = format!("0\r\n\r\n{SMUGGLED}");
    let cl = format!("Content-Length: {}", body.len());
    let te = "Transfer-Encoding: chunked";
    let (first, second) = if cl_first {
        (cl.as_str(), te)
    } else {
        (te, cl.as_str())
    };
    raw(
        &["POST /cl-te HTTP/1.1", "Host: localhost", first, second],
        &body,
    )
}

/// Framing hyper's parser refuses itself, with a bare 4xx and no body (acceptable: the request
/// never reaches the pipeline, so there is nothing to audit or forward), closing the connection.
fn refused_cases() -> Vec<Malformed> {
    vec![
        Malformed {
            name: "two different Content-Length values",
            request: raw(
                &[
                    "POST /two-cl HTTP/1.1",
                    "Host: localhost",
                    "Content-Length: 5",
                    "Content-Length: 6",
                ],
                "hello!",
            ),
            expect: &[400],
            why: "RFC 9112 §6.3: differing lengths are unrecoverable framing, 400",
        },
        Malformed {
            name: "Content-Length list \"5, 6\"",
            request: raw(
                &[
                    "POST /cl-list HTTP/1.1",
                    "Host: localhost",
                    "Content-Length: 5, 6",
                ],
                "hello!",
            ),
            expect: &[400],
            why: "RFC 9110 §8.6: a list of differing values is invalid, 400",
        },
        Malformed {
            name: "Transfer-Encoding: xchunked",
            request: raw(
                &[
                    "POST /xchunked HTTP/1.1",
                    "Host: localhost",
                    "Transfer-Encoding: xchunked",
                ],
                "5\r\nhello\r\n0\r\n\r\n",
            ),
            expect: &[400, 501],
            why: "RFC 9112 §6.3: chunked is not the final coding, 400 (or 501 unknown coding)",
        },
        Malformed {
            name: "Transfer-Encoding with obs-fold",
            request: raw(
                &[
                    "POST /te-fold HTTP/1.1",
                    "Host: localhost",
                    "Transfer-Encoding:",
                    " chunked",
                ],
                "5\r\nhello\r\n0\r\n\r\n",
            ),
            expect: &[400],
            why: "RFC 9112 §5.2: obs-fold outside message/http is rejected with 400",
        },
        Malformed {
            name: "obs-fold in an ordinary header",
            request: raw(
                &[
                    "GET /fold HTTP/1.1",
                    "Host: localhost",
                    "X-Folded: first",
                    " second",
                ],
                "",
            ),
            expect: &[400],
            why: "RFC 9112 §5.2: obs-fold is rejected with 400",
        },
        Malformed {
            name: "NUL byte in a header value",
            request: raw(&["GET /nul HTTP/1.1", "Host: localhost", "X-Nul: a\0b"], ""),
            expect: &[400],
            why: "RFC 9110 §5.5: NUL is never valid in a field value",
        },
        Malformed {
            name: "NUL byte in a header name",
            request: raw(&["GET /nul HTTP/1.1", "Host: localhost", "X-N\0ul: a"], ""),
            expect: &[400],
            why: "RFC 9110 §5.1: a field name is a token",
        },
        Malformed {
            name: "garbage request line",
            request: b"\x01\x02 not http at all\r\n\r\n".to_vec(),
            expect: &[400],
            why: "RFC 9112 §3: not a request-line, 400",
        },
        Malformed {
            name: "100 KiB request target",
            request: raw(
                &[
                    &format!("GET /{} HTTP/1.1", "a".repeat(100 * 1024)),
                    "Host: localhost",
                ],
                "",
            ),
            expect: &[414, 431, 400],
            why: "the head overflows the parser buffer (2 × max_header_bytes): 431 from hyper",
        },
    ]
}

/// Framing hyper's parser would accept (CL+TE, bare LF, TE lists ending in chunked) or only
/// fails once the body is read (invalid chunk sizes): the framing guard, the head checks and the
/// body reader refuse them with a problem+json 400 before anything is forwarded.
fn ambiguous_cases() -> Vec<Malformed> {
    let chunked = |size: &str| {
        raw(
            &[
                "POST /chunk HTTP/1.1",
                "Host: localhost",
                "Transfer-Encoding: chunked",
            ],
            &format!("{size}\r\nhello\r\n0\r\n\r\n"),
        )
    };
    vec![
        Malformed {
            name: "chunk size hex garbage",
            request: chunked("zz"),
            expect: &[400],
            why: "RFC 9112 §7.1: chunk-size is HEXDIG, the body framing is invalid",
        },
        Malformed {
            name: "chunk size negative",
            request: chunked("-5"),
            expect: &[400],
            why: "RFC 9112 §7.1: chunk-size is HEXDIG, the body framing is invalid",
        },
        Malformed {
            name: "chunk size overflow ffffffffffffffffff",
            request: chunked("ffffffffffffffffff"),
            expect: &[400],
            why: "RFC 9112 §7.1: a size past u64 must be refused, not wrapped",
        },
        Malformed {
            name: "Content-Length then Transfer-Encoding: chunked",
            request: cl_and_te(true),
            expect: &[400],
            why: "RFC 9112 §6.1 allows refusing CL+TE; a gateway in front of other parsers should",
        },
        Malformed {
            name: "Transfer-Encoding: chunked then Content-Length",
            request: cl_and_te(false),
            expect: &[400],
            why: "RFC 9112 §6.1 allows refusing CL+TE; a gateway in front of other parsers should",
        },
        Malformed {
            name: "Content-Length: 0 + chunked, smuggled request as the raw body",
            request: raw(
                &[
                    "POST /cl0-te HTTP/1.1",
                    "Host: localhost",
                    "Content-Length: 0",
                    "Transfer-Encoding: chunked",
                ],
                SMUGGLED,
            ),
            expect: &[400],
            why: "CL+TE must be refused; the body is not valid chunked framing either",
        },
        Malformed {
            name: "Content-Length: 0 + chunked, smuggled request inside a chunk",
            request: raw(
                &[
                    "POST /cl0-te HTTP/1.1",
                    "Host: localhost",
                    "Content-Length: 0",
                    "Transfer-Encoding: chunked",
                ],
                &format!("{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n", SMUGGLED.len()),
            ),
            expect: &[400],
            why: "CL+TE must be refused",
        },
        Malformed {
            name: "Transfer-Encoding: gzip, chunked",
            request: raw(
                &[
                    "POST /gzip-chunked HTTP/1.1",
                    "Host: localhost",
                    "Transfer-Encoding: gzip, chunked",
                ],
                "5\r\nhello\r\n0\r\n\r\n",
            ),
            expect: &[501, 400],
            why: "RFC 9112 §6.1: a transfer coding the server does not understand gets 501",
        },
        Malformed {
            name: "Transfer-Encoding: chunked, chunked",
            request: raw(
                &[
                    "POST /chunked-twice HTTP/1.1",
                    "Host: localhost",
                    "Transfer-Encoding: chunked, chunked",
                ],
                "5\r\nhello\r\n0\r\n\r\n",
            ),
            expect: &[400],
            why: "RFC 9112 §6.1: chunked MUST NOT be applied more than once; malformed",
        },
        Malformed {
            name: "bare LF line endings",
            request: b"GET /bare-lf HTTP/1.1\nHost: localhost\n\n".to_vec(),
            expect: &[400],
            why: "RFC 9112 §2.2 allows accepting bare LF; strict parsers refuse it",
        },
    ]
}

/// Starts the gateway and waits for its start-up readiness probe (`GET /`) to reach the upstream,
/// so that the upstream's requests counted afterwards are only those clients caused.
async fn start_settled(upstream: &MockUpstream) -> TestGateway {
    let gateway = TestGateway::start(&upstream.url()).await;
    wait_until("the readiness probe reached the upstream", || {
        let probed = !upstream.seen_on("/").is_empty();
        async move { probed }
    })
    .await;
    gateway
}

/// Sends `case` and asserts the refusal: an expected status, the connection closed, nothing new
/// at the upstream (no `/smuggled` ever), and a normal request on a new connection still served.
async fn assert_refused(gateway: &TestGateway, upstream: &MockUpstream, case: &Malformed) {
    let name = case.name;
    let before = upstream.seen().len();
    let answer = exchange(gateway, &case.request, CLOSE_DEADLINE).await;
    let forwarded: Vec<_> = upstream
        .seen()
        .split_off(before)
        .into_iter()
        .map(|r| format!("{} {} body {:?}", r.method, r.uri, r.body))
        .collect();
    println!(
        "HTTP/1.1 | {name} | status {:?} ({}) | closed: {} | forwarded: {forwarded:?}",
        answer.status,
        answer.kind(),
        answer.closed
    );
    assert!(
        answer.status.is_some_and(|s| case.expect.contains(&s)),
        "{name}: expected one of {:?} ({}); got {:?}; the upstream received {forwarded:?}",
        case.expect,
        case.why,
        answer.text
    );
    assert!(answer.closed, "{name}: connection left open after refusal");
    assert!(
        forwarded.is_empty(),
        "{name}: the upstream received {forwarded:?}"
    );
    assert!(
        upstream.seen_on("/smuggled").is_empty(),
        "{name}: the smuggled request reached the upstream"
    );
    let fresh = exchange(
        gateway,
        b"GET /after HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
        CLOSE_DEADLINE,
    )
    .await;
    assert_eq!(
        fresh.status,
        Some(200),
        "{name}: a normal request on a new connection: {}",
        fresh.text
    );
}

#[tokio::test]
async fn malformed_http1_framing_is_refused_and_the_connection_closed() {
    let upstream = MockUpstream::start().await;
    let gateway = start_settled(&upstream).await;
    for case in refused_cases() {
        assert_refused(&gateway, &upstream, &case).await;
    }
}

#[tokio::test]
async fn ambiguous_http1_framing_is_refused_with_a_problem_and_the_connection_closed() {
    let upstream = MockUpstream::start().await;
    let gateway = start_settled(&upstream).await;
    for case in ambiguous_cases() {
        assert_refused(&gateway, &upstream, &case).await;
    }
}

/// Every status line in a raw HTTP/1.1 answer, in order.
fn statuses(text: &str) -> Vec<u16> {
    text.match_indices("HTTP/1.1 ")
        .filter_map(|(at, _)| text.get(at + 9..at + 12)?.parse().ok())
        .collect()
}

/// The framing guard follows message boundaries through honest requests on one keep-alive
/// connection (a chunked body with an extension and a trailer whose data holds a request line and
/// bare LFs, a Content-Length body holding bare LFs, an empty line between requests) and refuses
/// exactly the request whose head breaks a rule: earlier ones are answered 200 and forwarded, it
/// gets a problem+json 400, the connection closes, and nothing after it (the smuggled request) is
/// forwarded. Its audit record names the rule.
#[tokio::test]
async fn a_framing_violation_mid_connection_refuses_that_request_only() {
    let honest = concat!(
        "POST /one HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n",
        "transfer-encoding: chunked\r\n\r\n",
        "5;ext=1\r\n{\"a\":\r\n",
        "20\r\n\"GET /smuggled HTTP/1.1\\n\\n x\"}\n\r\n",
        "0\r\nx-trailer: y\r\n\r\n",
        "\r\n",
        "POST /two HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n",
        "content-length: 11\r\n\r\n{\"b\":\"\\n\"}\n",
    );
    let violations = [
        (
            "content_length_with_transfer_encoding",
            format!(
                "POST /three HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n\
                 content-length: {}\r\n\r\n0\r\n\r\n{SMUGGLED}",
                5 + SMUGGLED.len()
            ),
        ),
        (
            "bare_lf_line_ending",
            format!("GET /three HTTP/1.1\nhost: localhost\n\n{SMUGGLED}"),
        ),
    ];
    let upstream = MockUpstream::start().await;
    let gateway = start_settled(&upstream).await;
    for (rule, violation) in violations {
        let before = upstream.seen().len();
        let stream = format!("{honest}{violation}");
        let answer = exchange(&gateway, stream.as_bytes(), CLOSE_DEADLINE).await;
        let forwarded: Vec<_> = upstream
            .seen()
            .split_off(before)
            .into_iter()
            .map(|r| {
                format!(
                    "{} {} {}",
                    r.method,
                    r.uri,
                    String::from_utf8_lossy(&r.body)
                )
            })
            .collect();
        println!(
            "HTTP/1.1 | {rule} after 2 honest requests | {:?} | forwarded {forwarded:?}",
            statuses(&answer.text)
        );
        assert_eq!(
            statuses(&answer.text),
            [200, 200, 400],
            "{rule}: {}",
            answer.text
        );
        assert!(
            answer.text.contains("urn:portcullis:problem:bad-request"),
            "{rule}: the 400 is a problem+json: {}",
            answer.text
        );
        assert!(
            answer.closed,
            "{rule}: connection left open after the refusal"
        );
        assert_eq!(
            forwarded,
            [
                "POST /one {\"a\":\"GET /smuggled HTTP/1.1\\n\\n x\"}\n",
                "POST /two {\"b\":\"\\n\"}\n"
            ],
            "{rule}"
        );
        assert!(upstream.seen_on("/three").is_empty() && upstream.seen_on("/smuggled").is_empty());
    }
    wait_until("the refusals are audited", || {
        let log = std::fs::read_to_string(&gateway.audit_path).unwrap_or_default();
        async move {
            log.lines()
                .filter(|line| {
                    line.contains("\"bad_request\"")
                        && (line.contains("content_length_with_transfer_encoding")
                            || line.contains("bare_lf_line_ending"))
                })
                .count()
                == 2
        }
    })
    .await;
}

/// An absolute-form target is what a client sends to a forward proxy; at a gateway it comes from
/// scanners probing for an open proxy. Refused by default (400 `absolute_form_target`),
/// nothing forwarded, the connection closed.
#[tokio::test]
async fn absolute_form_is_refused_by_default() {
    let upstream = MockUpstream::start().await;
    let gateway = start_settled(&upstream).await;
    let case = Malformed {
        name: "absolute-form GET https://evil.example/x",
        request: raw(
            &[
                "GET https://evil.example/x?q=1 HTTP/1.1",
                "Host: evil.example",
            ],
            "",
        ),
        expect: &[400],
        why: "server.allow_absolute_form is off by default",
    };
    assert_refused(&gateway, &upstream, &case).await;
    assert!(upstream.seen_on("/x").is_empty());
}

/// RFC 9112 §3.2.2 asks a server to accept the absolute form; with `allow_absolute_form` it is
/// served, safely: the client's authority is ignored, the upstream is the configured one and gets
/// the configured Host, never `evil.example`; the path and query travel in origin form.
#[tokio::test]
async fn absolute_form_when_allowed_goes_to_the_configured_upstream_with_its_host() {
    let upstream = MockUpstream::start().await;
    let options = Options {
        server: "allow_absolute_form = true".into(),
        ..Options::default()
    };
    let gateway = TestGateway::start_with(&upstream.url(), options).await;
    let answer = exchange(
        &gateway,
        b"GET https://evil.example/x?q=1 HTTP/1.1\r\nHost: evil.example\r\nconnection: close\r\n\r\n",
        CLOSE_DEADLINE,
    )
    .await;
    assert_eq!(answer.status, Some(200), "{}", answer.text);
    let seen = upstream.seen_on("/x");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/x?q=1");
    assert_eq!(seen[0].headers["host"], upstream.addr.to_string());
    println!(
        "HTTP/1.1 | absolute-form https://evil.example/x, allowed | status 200 | upstream Host {:?}, \
         x-forwarded-host {:?}",
        seen[0].headers["host"],
        seen[0].headers.get("x-forwarded-host")
    );
}

/// CONNECT asks the gateway to become a tunnel to a host of the client's choosing; a gateway to
/// one upstream must refuse it and forward nothing.
#[tokio::test]
async fn connect_authority_form_is_refused() {
    let upstream = MockUpstream::start().await;
    let gateway = start_settled(&upstream).await;
    let case = Malformed {
        name: "CONNECT evil.example:443",
        request: raw(
            &[
                "CONNECT evil.example:443 HTTP/1.1",
                "Host: evil.example:443",
            ],
            "",
        ),
        expect: &[400, 405, 501],
        why: "the gateway is not a forward proxy",
    };
    assert_refused(&gateway, &upstream, &case).await;
}

// ---------------------------------------------------------------------------------------------
// HTTP/2: hand-written frames
// ---------------------------------------------------------------------------------------------

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
const PROTOCOL_ERROR: u32 = 0x1;
const FLOW_CONTROL_ERROR: u32 = 0x3;
const REFUSED_STREAM: u32 = 0x7;
const CANCEL: u32 = 0x8;
const COMPRESSION_ERROR: u32 = 0x9;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// An HTTP/2 error code's name (RFC 9113 §7).
fn reason(code: u32) -> String {
    let name = match code {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x2 => "INTERNAL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x7 => "REFUSED_STREAM",
        0x8 => "CANCEL",
        0x9 => "COMPRESSION_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        _ => return format!("0x{code:x}"),
    };
    name.to_owned()
}

/// One frame: 3-byte length, type, flags, 4-byte stream id, payload (RFC 9113 §4.1).
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with a `prefix`-bit prefix, OR-ed into `first` (RFC 7541 §5.1).
fn hpack_int(out: &mut Vec<u8>, first: u8, prefix: u32, value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(first | u8::try_from(value).unwrap());
        return;
    }
    out.push(first | u8::try_from(max).unwrap());
    let mut rest = value - max;
    while rest >= 128 {
        out.push(u8::try_from(rest % 128).unwrap() | 0x80);
        rest /= 128;
    }
    out.push(u8::try_from(rest).unwrap());
}

/// A string literal without Huffman coding (RFC 7541 §5.2).
fn hpack_str(out: &mut Vec<u8>, text: &str) {
    hpack_int(out, 0, 7, text.len());
    out.extend_from_slice(text.as_bytes());
}

/// The header block of `GET https://localhost{path}`, using only static-table entries and
/// literals without indexing, so that every block stands alone (no HPACK state to keep).
fn request_block(path: &str) -> Vec<u8> {
    // :method GET, :scheme https (static indexes 2 and 7).
    let mut block = vec![0x82, 0x87];
    // :path and :authority: literal without indexing, indexed names 4 and 1 (§6.2.2).
    hpack_int(&mut block, 0x00, 4, 4);
    hpack_str(&mut block, path);
    hpack_int(&mut block, 0x00, 4, 1);
    hpack_str(&mut block, "localhost");
    block
}

/// Reads one frame: (type, flags, stream, payload).
async fn read_frame<R: AsyncRead + Unpin>(read: &mut R) -> std::io::Result<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    read.read_exact(&mut head).await?;
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let mut payload = vec![0; len];
    read.read_exact(&mut payload).await?;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    Ok((head[3], head[4], stream, payload))
}

/// What the gateway has sent an attacking HTTP/2 connection so far.
#[derive(Debug, Default, Clone)]
struct H2Seen {
    /// The error code of the GOAWAY, when one came.
    goaway: Option<u32>,
    /// The GOAWAY's last stream id: the highest stream the gateway says it processed.
    last_stream: Option<u32>,
    /// RST_STREAM frames by error code.
    resets: BTreeMap<u32, usize>,
    /// Response HEADERS frames.
    responses: usize,
    /// The gateway closed the connection (or it failed).
    closed: bool,
}

impl H2Seen {
    fn ended(&self) -> bool {
        self.goaway.is_some() || self.closed
    }

    fn resets_of(&self, code: u32) -> usize {
        self.resets.get(&code).copied().unwrap_or(0)
    }

    fn describe(&self) -> String {
        let resets: Vec<_> = self
            .resets
            .iter()
            .map(|(code, n)| format!("{n}×{}", reason(*code)))
            .collect();
        format!(
            "GOAWAY {} (last stream {:?}) / closed {} / RST_STREAM {:?} / responses {}",
            self.goaway.map_or("none".to_owned(), reason),
            self.last_stream,
            self.closed,
            resets,
            self.responses
        )
    }
}

/// A hand-driven HTTP/2 client connection: the handshake done, a task recording what comes back.
struct RawH2 {
    write: WriteHalf<TlsStream<TcpStream>>,
    seen: Arc<Mutex<H2Seen>>,
    reader: tokio::task::JoinHandle<()>,
}

impl RawH2 {
    async fn connect(gateway: &TestGateway) -> RawH2 {
        let tcp = TcpStream::connect(gateway.addr).await.unwrap();
        let mut tls = TlsConnector::from(gateway.pki.client_config(&[b"h2"]))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let mut hello = H2_PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        tls.write_all(&hello).await.unwrap();
        // Acknowledge the server's SETTINGS, as a real client would, before misbehaving.
        loop {
            let (kind, flags, _, _) = read_frame(&mut tls).await.unwrap();
            if kind == SETTINGS && flags & ACK == 0 {
                break;
            }
        }
        tls.write_all(&frame(SETTINGS, ACK, 0, &[])).await.unwrap();
        let (mut read, write) = tokio::io::split(tls);
        let seen = Arc::new(Mutex::new(H2Seen::default()));
        let reader = tokio::spawn({
            let seen = seen.clone();
            async move {
                while let Ok((kind, _, _, payload)) = read_frame(&mut read).await {
                    let mut seen = seen.lock().unwrap();
                    match kind {
                        GOAWAY if payload.len() >= 8 => {
                            let last = u32::from_be_bytes(payload[..4].try_into().unwrap());
                            let code = u32::from_be_bytes(payload[4..8].try_into().unwrap());
                            seen.last_stream = Some(last & 0x7fff_ffff);
                            seen.goaway = Some(code);
                        }
                        RST_STREAM if payload.len() == 4 => {
                            let code = u32::from_be_bytes(payload[..4].try_into().unwrap());
                            *seen.resets.entry(code).or_default() += 1;
                        }
                        HEADERS => seen.responses += 1,
                        _ => {}
                    }
                }
                seen.lock().unwrap().closed = true;
            }
        });
        RawH2 {
            write,
            seen,
            reader,
        }
    }

    /// Writes `bytes`; false once the gateway has closed the connection.
    async fn send(&mut self, bytes: &[u8]) -> bool {
        self.write.write_all(bytes).await.is_ok() && self.write.flush().await.is_ok()
    }

    fn seen(&self) -> H2Seen {
        self.seen.lock().unwrap().clone()
    }

    /// Waits up to `limit` for `done`; returns what was seen either way.
    async fn wait_for(&self, limit: Duration, done: impl Fn(&H2Seen) -> bool) -> H2Seen {
        let deadline = Instant::now() + limit;
        loop {
            let seen = self.seen();
            if done(&seen) || Instant::now() > deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for RawH2 {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The longest an honest request may take while an attack runs. Uncontended, a request through
/// the gateway takes a few milliseconds here; this box has 2 cores shared with the attacker, the
/// mock upstream and the other tests, so scheduling alone can add tens of milliseconds. A second
/// means the attack is starving the gateway, which is what these tests look for, yet it is far
/// from flaky noise.
const HONEST_MAX_LATENCY: Duration = Duration::from_secs(1);

/// Runs `attack` while an honest HTTP/1.1 client, connected before the attack, sends GETs one
/// after another (10 ms apart) on its keep-alive connection. Every honest request must succeed.
async fn under_attack<T: Send + 'static>(
    gateway: &TestGateway,
    attack: impl Future<Output = T> + Send + 'static,
) -> (T, Vec<Duration>) {
    let honest = gateway.client();
    assert_eq!(honest.get(&gateway.url("/honest")).await.status, 200);
    let attack = tokio::spawn(attack);
    let mut latencies = Vec::new();
    while !attack.is_finished() || latencies.len() < 5 {
        let started = Instant::now();
        let reply = honest.try_get(&gateway.url("/honest")).await;
        latencies.push(started.elapsed());
        assert!(
            matches!(&reply, Ok(r) if r.status == 200),
            "honest request during the attack: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (attack.await.unwrap(), latencies)
}

/// The test process's resident set (the gateway runs in-process), in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Prints the attack's report line and asserts the honest client stayed responsive.
fn report(attack: &str, behaviour: &str, latencies: &[Duration]) {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    let p50 = sorted[sorted.len() / 2];
    let max = sorted[sorted.len() - 1];
    println!(
        "ABUSE | {attack} | {behaviour} | honest p50 {:.1} ms, max {:.1} ms ({} requests) | \
         RSS {:.1} MiB (test process, gateway in-process)",
        p50.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        sorted.len(),
        rss_mib()
    );
    assert!(
        max < HONEST_MAX_LATENCY,
        "{attack}: honest client waited {max:?}"
    );
}

/// How long the rapid-reset attacker keeps going, reconnecting whenever it is sent away.
const RAPID_RESET_DURATION: Duration = Duration::from_secs(2);
/// Streams the attacker opens and resets on one connection at most.
const RAPID_RESET_STREAMS: u32 = 10_000;

/// CVE-2023-44487: open a stream and reset it at once, thousands of times, so the server starts
/// work for requests nobody waits for. hyper's guard (`max_pending_accept_reset_streams`, 32)
/// answers GOAWAY; the attacker reconnects and the honest client must not notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_reset_gets_goaway_and_the_honest_client_stays_served() {
    let upstream = MockUpstream::start().await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let gateway = Arc::new(gateway);
    let attack = {
        let gateway = gateway.clone();
        async move {
            let started = Instant::now();
            let block = request_block("/rapid-reset");
            // Per connection: streams written before the gateway was seen ending it, and how.
            let mut connections = Vec::new();
            while started.elapsed() < RAPID_RESET_DURATION {
                let mut attacker = RawH2::connect(&gateway).await;
                let mut stream = 1u32;
                while stream < 2 * RAPID_RESET_STREAMS && !attacker.seen().ended() {
                    let mut batch = Vec::new();
                    for _ in 0..100 {
                        batch.extend(frame(HEADERS, END_HEADERS | END_STREAM, stream, &block));
                        batch.extend(frame(RST_STREAM, 0, stream, &CANCEL.to_be_bytes()));
                        stream += 2;
                    }
                    if !attacker.send(&batch).await {
                        break;
                    }
                }
                let seen = attacker
                    .wait_for(Duration::from_secs(3), H2Seen::ended)
                    .await;
                connections.push((stream / 2, seen));
            }
            connections
        }
    };
    let (connections, latencies) = under_attack(&gateway, attack).await;
    let streams: u32 = connections.iter().map(|(n, _)| n).sum();
    let forwarded = upstream.seen_on("/rapid-reset").len();
    // Streams the gateway processed per connection (the GOAWAY's last stream id, client streams
    // being odd) against what the attacker wrote before it noticed the GOAWAY.
    let processed: Vec<u32> = connections
        .iter()
        .filter_map(|(_, seen)| seen.last_stream.map(|last| last.div_ceil(2)))
        .collect();
    let most = processed.iter().copied().max().unwrap_or(0);
    report(
        "h2 rapid reset (HEADERS+RST_STREAM, reconnecting, 2 s)",
        &format!(
            "{} connections, {streams} streams written; GOAWAY {} on {} of them after at most \
             {most} streams each; {forwarded} requests reached the upstream",
            connections.len(),
            reason(ENHANCE_YOUR_CALM),
            connections
                .iter()
                .filter(|(_, s)| s.goaway == Some(ENHANCE_YOUR_CALM))
                .count(),
        ),
        &latencies,
    );
    for (written, seen) in &connections {
        assert!(
            seen.ended(),
            "a connection took {written} reset streams without GOAWAY: {}",
            seen.describe()
        );
        if let Some(code) = seen.goaway {
            assert_eq!(code, ENHANCE_YOUR_CALM, "{}", seen.describe());
        }
    }
    // hyper allows 32 streams reset before they are accepted; the GOAWAY comes within a batch
    // or two of that, not after the thousands the attacker wrote.
    assert!(most <= 1000, "a connection processed {most} reset streams");
    assert!(
        forwarded < usize::try_from(streams).unwrap() / 100,
        "{forwarded} of {streams} reset requests were forwarded"
    );
}

/// CVE-2024-27316 style: a HEADERS frame without END_HEADERS, then CONTINUATION frames forever.
/// The gateway must stop reading (GOAWAY / close) long before the attacker runs out of frames, in
/// both shapes: big frames (the header list limit) and empty frames (the frame-count limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_continuation_flood_is_cut_off() {
    let upstream = MockUpstream::start().await;
    let gateway = Arc::new(TestGateway::start(&upstream.url()).await);
    for (shape, payload) in [
        ("16 KB frames", {
            let mut field = vec![0x00];
            hpack_str(&mut field, "x-flood");
            hpack_str(&mut field, &"a".repeat(16_000));
            field
        }),
        ("empty frames", Vec::new()),
    ] {
        let attack = {
            let gateway = gateway.clone();
            async move {
                let mut attacker = RawH2::connect(&gateway).await;
                let opened = frame(HEADERS, END_STREAM, 1, &request_block("/continuation"));
                assert!(attacker.send(&opened).await);
                let continuation = frame(CONTINUATION, 0, 1, &payload);
                let mut frames = 0usize;
                while frames < 20_000 && !attacker.seen().ended() {
                    if !attacker.send(&continuation).await {
                        break;
                    }
                    frames += 1;
                }
                let seen = attacker
                    .wait_for(Duration::from_secs(3), H2Seen::ended)
                    .await;
                (frames, frames * continuation.len(), seen)
            }
        };
        let ((frames, bytes, seen), latencies) = under_attack(&gateway, attack).await;
        report(
            &format!("h2 CONTINUATION flood ({shape})"),
            &format!(
                "{} after {frames} frames / {:.1} MiB written by the attacker",
                seen.describe(),
                bytes as f64 / (1024.0 * 1024.0)
            ),
            &latencies,
        );
        assert!(seen.ended(), "{shape}: never cut: {}", seen.describe());
        if let Some(code) = seen.goaway {
            assert!(
                [ENHANCE_YOUR_CALM, COMPRESSION_ERROR].contains(&code),
                "{shape}: {}",
                seen.describe()
            );
        }
        // What the attacker managed to write includes the kernel's socket buffers on both ends
        // (a few MiB on loopback); the gateway itself stops after a few frames.
        assert!(bytes < 16 * 1024 * 1024, "{shape}: {bytes} bytes accepted");
    }
    assert!(upstream.seen_on("/continuation").is_empty());
}

/// More streams than `MAX_CONCURRENT_STREAMS` (256) at once, each a slow request: the excess is
/// refused with REFUSED_STREAM, the first 256 are served, the connection survives.
///
/// The gateway forwards each admitted stream on its own upstream connection (the pool has no cap
/// on connections per host), so one client makes it open about 256 upstream connections at once.
/// With the mock upstream's default backlog of 128 the kernel drops some of those SYNs, and a
/// request that needs a new upstream connection then, the honest one included, waits for the 1 s
/// SYN retransmit. The upstream here gets a backlog of 1024 so that the honest latency measures
/// the gateway; the line printed counts the upstream connections opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_streams_past_the_cap_are_refused() {
    const STREAMS: u32 = 300;
    const CAP: u32 = portcullis::server::conn::MAX_CONCURRENT_STREAMS;
    let upstream = Arc::new(MockUpstream::start_with_backlog(1024).await);
    let gateway = Arc::new(TestGateway::start(&upstream.url()).await);
    let attack = {
        let (gateway, upstream) = (gateway.clone(), upstream.clone());
        async move {
            let mut attacker = RawH2::connect(&gateway).await;
            let block = request_block("/slow/1500");
            let mut batch = Vec::new();
            for i in 0..STREAMS {
                batch.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1 + 2 * i, &block));
            }
            assert!(attacker.send(&batch).await);
            let refused = attacker
                .wait_for(Duration::from_secs(5), |s| {
                    s.resets_of(REFUSED_STREAM) >= usize::try_from(STREAMS - CAP).unwrap()
                        || s.ended()
                })
                .await;
            // Half-way through the upstream's 1.5 s, most admitted streams have reached it (how
            // many depends on how fast the gateway opens upstream connections on this box).
            tokio::time::sleep(Duration::from_millis(700)).await;
            let in_flight = upstream.seen_on("/slow/1500").len();
            let answered = attacker
                .wait_for(Duration::from_secs(5), |s| {
                    s.responses >= usize::try_from(CAP).unwrap() || s.ended()
                })
                .await;
            (refused, in_flight, answered)
        }
    };
    let ((refused, in_flight, answered), latencies) = under_attack(&gateway, attack).await;
    let upstream_connections = upstream
        .seen_on("/slow/1500")
        .iter()
        .map(|r| r.peer)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    report(
        &format!("h2 {STREAMS} concurrent slow streams (cap {CAP})"),
        &format!(
            "{} refused at once; {in_flight} in flight at the upstream after 700 ms, over \
             {upstream_connections} upstream connections; finally {}",
            refused.resets_of(REFUSED_STREAM),
            answered.describe()
        ),
        &latencies,
    );
    assert_eq!(
        refused.resets_of(REFUSED_STREAM),
        usize::try_from(STREAMS - CAP).unwrap(),
        "{}",
        refused.describe()
    );
    assert!(in_flight <= usize::try_from(CAP).unwrap());
    assert_eq!(answered.responses, usize::try_from(CAP).unwrap());
    assert!(!answered.ended(), "{}", answered.describe());
    assert_eq!(
        upstream.seen_on("/slow/1500").len(),
        usize::try_from(CAP).unwrap()
    );
}

/// Header lists over the limits, on one connection with the `h2` client: over
/// `max_header_bytes` (16 KiB) the gateway answers 431 problem+json; over the HTTP/2 header list
/// limit (2 × max_header_bytes) hyper's h2 answers a bare 431 itself. Nothing is forwarded and
/// the connection stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_huge_header_lists_are_refused_with_431() {
    let upstream = MockUpstream::start().await;
    let gateway = Arc::new(TestGateway::start(&upstream.url()).await);
    let attack = {
        let gateway = gateway.clone();
        async move {
            let tcp = TcpStream::connect(gateway.addr).await.unwrap();
            let tls = TlsConnector::from(gateway.pki.client_config(&[b"h2"]))
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap();
            let (mut client, connection) = h2::client::handshake(tls).await.unwrap();
            tokio::spawn(connection);
            let mut outcomes = BTreeMap::<(usize, String), usize>::new();
            for round in 0..40 {
                let kib = if round % 2 == 0 { 24 } else { 48 };
                let mut request = http::Request::get(gateway.url("/huge")).body(()).unwrap();
                for i in 0..kib {
                    request.headers_mut().insert(
                        http::HeaderName::try_from(format!("x-big-{i}")).unwrap(),
                        http::HeaderValue::try_from("a".repeat(1000)).unwrap(),
                    );
                }
                client = client.ready().await.unwrap();
                let (response, _) = client.send_request(request, true).unwrap();
                let outcome = match response.await {
                    Ok(response) => {
                        let status = response.status();
                        let kind = response
                            .headers()
                            .get("content-type")
                            .map_or("bare".to_owned(), |v| v.to_str().unwrap().to_owned());
                        let mut body = response.into_body();
                        while let Some(Ok(chunk)) = body.data().await {
                            let _ = body.flow_control().release_capacity(chunk.len());
                        }
                        format!("{} {kind}", status.as_u16())
                    }
                    Err(e) => format!("error {e}"),
                };
                *outcomes.entry((kib, outcome)).or_default() += 1;
            }
            outcomes
        }
    };
    let (outcomes, latencies) = under_attack(&gateway, attack).await;
    report(
        "h2 huge header lists (20×24 KiB, 20×48 KiB, one connection)",
        &format!("{outcomes:?}"),
        &latencies,
    );
    assert_eq!(
        outcomes.get(&(24, "431 application/problem+json".to_owned())),
        Some(&20),
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.get(&(48, "431 bare".to_owned())),
        Some(&20),
        "{outcomes:?}"
    );
    assert!(upstream.seen_on("/huge").is_empty());
}

/// Thousands of 1-byte WINDOW_UPDATEs cost the gateway nothing worth refusing; one that takes
/// the connection window past 2^31-1 is a FLOW_CONTROL_ERROR and ends the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_window_update_flood_and_overflow() {
    const TINY: usize = 20_000;
    let upstream = MockUpstream::start().await;
    let gateway = Arc::new(TestGateway::start(&upstream.url()).await);
    let attack = {
        let gateway = gateway.clone();
        async move {
            let mut attacker = RawH2::connect(&gateway).await;
            let tiny = frame(WINDOW_UPDATE, 0, 0, &1u32.to_be_bytes());
            let batch: Vec<u8> = tiny.repeat(1000);
            for _ in 0..TINY / 1000 {
                assert!(attacker.send(&batch).await, "closed during the tiny flood");
            }
            // The connection still serves a request after the flood.
            let request = frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                1,
                &request_block("/after-window"),
            );
            assert!(attacker.send(&request).await);
            let after_tiny = attacker
                .wait_for(Duration::from_secs(5), |s| s.responses == 1 || s.ended())
                .await;
            let overflow = frame(WINDOW_UPDATE, 0, 0, &0x7fff_ffffu32.to_be_bytes());
            let _ = attacker.send(&overflow).await;
            let after_overflow = attacker
                .wait_for(Duration::from_secs(3), H2Seen::ended)
                .await;
            (after_tiny, after_overflow)
        }
    };
    let ((after_tiny, after_overflow), latencies) = under_attack(&gateway, attack).await;
    report(
        &format!("h2 WINDOW_UPDATE flood ({TINY}×+1) then +2^31-1"),
        &format!(
            "after the flood: {}; after the overflow: {}",
            after_tiny.describe(),
            after_overflow.describe()
        ),
        &latencies,
    );
    assert_eq!(after_tiny.responses, 1, "{}", after_tiny.describe());
    assert!(!after_tiny.ended(), "{}", after_tiny.describe());
    assert_eq!(
        after_overflow.goaway,
        Some(FLOW_CONTROL_ERROR),
        "{}",
        after_overflow.describe()
    );
    assert_eq!(upstream.seen_on("/after-window").len(), 1);
}

/// One HTTP/2 request that would smuggle a second request past a gateway that downgrades to
/// HTTP/1.1 upstream without checking it.
struct Downgrade {
    name: &'static str,
    method_post: bool,
    path: &'static str,
    extra: &'static [(&'static str, &'static str)],
    data: Option<&'static str>,
    /// Send DATA 200 ms after HEADERS, so the gateway may act on the head alone first.
    data_later: bool,
}

/// RFC 9113 §8.1.1, §8.2.1 and §8.2.2: HTTP/2 requests with connection-specific fields, CR/LF
/// in a field value or the path, uppercase field names, or DATA that disagrees with
/// content-length are malformed; hyper's h2 resets the stream (PROTOCOL_ERROR) or the connection
/// before the gateway sees the request, so nothing of it, and no `/smuggled`, reaches the
/// HTTP/1.1 upstream. When the DATA comes after the head, the head alone is forwarded as the
/// complete request it claims to be and the DATA is discarded.
#[tokio::test]
async fn h2_downgrade_smuggling_is_refused() {
    let upstream = MockUpstream::start().await;
    let gateway = start_settled(&upstream).await;
    let cases = [
        Downgrade {
            name: "transfer-encoding: chunked with a smuggled request in DATA",
            method_post: true,
            path: "/h2-te",
            extra: &[("transfer-encoding", "chunked")],
            data: Some("0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: localhost\r\n\r\n"),
            data_later: false,
        },
        Downgrade {
            name: "connection: keep-alive",
            method_post: false,
            path: "/h2-connection",
            extra: &[("connection", "keep-alive")],
            data: None,
            data_later: false,
        },
        Downgrade {
            name: "CRLF and a request line in a header value",
            method_post: false,
            path: "/h2-crlf",
            extra: &[(
                "x-inject",
                "a\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: localhost",
            )],
            data: None,
            data_later: false,
        },
        Downgrade {
            name: "CRLF and a request line in :path",
            method_post: false,
            path: "/h2-path HTTP/1.1\r\nhost: localhost\r\n\r\nGET /smuggled",
            extra: &[],
            data: None,
            data_later: false,
        },
        Downgrade {
            name: "uppercase header name",
            method_post: false,
            path: "/h2-upper",
            extra: &[("X-Upper", "a")],
            data: None,
            data_later: false,
        },
        Downgrade {
            name: "content-length: 0 with a smuggled request in DATA",
            method_post: true,
            path: "/h2-cl",
            extra: &[("content-length", "0")],
            data: Some("GET /smuggled HTTP/1.1\r\nhost: localhost\r\n\r\n"),
            data_later: false,
        },
        Downgrade {
            name: "content-length: 0, the smuggled request in DATA 200 ms later",
            method_post: true,
            path: "/h2-cl-later",
            extra: &[("content-length", "0")],
            data: Some("GET /smuggled HTTP/1.1\r\nhost: localhost\r\n\r\n"),
            data_later: true,
        },
    ];
    for case in &cases {
        let name = case.name;
        let mut attacker = RawH2::connect(&gateway).await;
        let mut block = request_block(case.path);
        if case.method_post {
            // :method POST is static index 3.
            block[0] = 0x83;
        }
        for (field, value) in case.extra {
            block.push(0x00);
            hpack_str(&mut block, field);
            hpack_str(&mut block, value);
        }
        let mut bytes = match case.data {
            None => frame(HEADERS, END_HEADERS | END_STREAM, 1, &block),
            Some(_) => frame(HEADERS, END_HEADERS, 1, &block),
        };
        if let Some(data) = case.data {
            if case.data_later {
                assert!(attacker.send(&bytes).await, "{name}: could not send");
                tokio::time::sleep(Duration::from_millis(200)).await;
                bytes.clear();
            }
            bytes.extend(frame(DATA, END_STREAM, 1, data.as_bytes()));
        }
        assert!(attacker.send(&bytes).await, "{name}: could not send");
        let seen = attacker
            .wait_for(Duration::from_secs(3), |s| {
                s.responses > 0 || !s.resets.is_empty() || s.ended()
            })
            .await;
        // Let anything forwarded land before looking.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let forwarded: Vec<_> = upstream
            .seen()
            .iter()
            .filter(|r| r.uri != "/")
            .map(|r| format!("{} {}", r.method, r.uri))
            .collect();
        println!(
            "HTTP/2 | {name} | {} | forwarded: {forwarded:?}",
            seen.describe()
        );
        assert!(
            upstream.seen_on("/smuggled").is_empty(),
            "{name}: the smuggled request reached the upstream"
        );
        if case.data_later {
            // The head alone is a complete request (content-length 0): it is forwarded with an
            // empty body and answered, and the late DATA is discarded (RST_STREAM NO_ERROR),
            // never read as anything. The upstream connection carries one framed request.
            let seen_there = upstream.seen_on(case.path);
            assert_eq!(forwarded, [format!("POST {}", case.path)], "{name}");
            assert!(seen_there[0].body.is_empty(), "{name}: {seen_there:?}");
            assert_eq!(seen.responses, 1, "{name}: {}", seen.describe());
            continue;
        }
        assert_eq!(seen.responses, 0, "{name}: answered: {}", seen.describe());
        assert!(
            seen.resets_of(PROTOCOL_ERROR) == 1 || seen.goaway == Some(PROTOCOL_ERROR),
            "{name}: {}",
            seen.describe()
        );
        assert!(forwarded.is_empty(), "{name}: forwarded {forwarded:?}");
    }
    assert_eq!(
        gateway.client().get(&gateway.url("/after")).await.status,
        200
    );
}

// ---------------------------------------------------------------------------------------------
// Connection floods
// ---------------------------------------------------------------------------------------------

/// 500 TCP connections that send nothing and 50 TLS handshakes never finished, against
/// `max_connections = 50`: the honest client accepted before the flood keeps being answered on
/// its keep-alive connection, the gateway never holds more than 50, and once the flood is dropped
/// a new client is served within seconds.
///
/// Past the cap, connections wait in the listen backlog, which is 128 (mio's default, as std's):
/// about 50 + 129 of the 550 connect, the kernel drops the others' SYNs (their connect times out
/// here). The honest client must stay active: a keep-alive connection idle for longer than
/// `header_timeout` is closed by the gateway, and its replacement would queue behind the flood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flood_past_max_connections_leaves_served_clients_served() {
    let upstream = MockUpstream::start().await;
    let options = Options {
        server: "max_connections = 50".into(),
        ..Options::default()
    };
    let gateway = TestGateway::start_with(&upstream.url(), options).await;
    let honest = gateway.client();
    assert_eq!(honest.get(&gateway.url("/before")).await.status, 200);

    // Connect concurrently, so that the flood is in place within a second; a connection the
    // kernel's accept backlog no longer takes is simply not part of it.
    let connect = |handshake: bool| {
        let addr = gateway.addr;
        async move {
            let mut tcp = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr))
                .await
                .ok()?
                .ok()?;
            if handshake {
                // A TLS record header announcing a 16 KiB ClientHello, and one byte of it.
                tcp.write_all(&[0x16, 0x03, 0x01, 0x40, 0x00, 0x01])
                    .await
                    .ok()?;
            }
            Some(tcp)
        }
    };
    let started = Instant::now();
    let idle = futures_util::future::join_all((0..500).map(|_| connect(false))).await;
    let half = futures_util::future::join_all((0..50).map(|_| connect(true))).await;
    let flood: Vec<TcpStream> = idle.into_iter().chain(half).flatten().collect();
    let connected = flood.len();
    let flooded_in = started.elapsed();
    let mut latencies = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let reply = honest.try_get(&gateway.url("/during")).await;
        latencies.push(started.elapsed());
        assert!(
            matches!(&reply, Ok(r) if r.status == 200),
            "honest request during the flood: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let open = gateway.metric("portcullis_open_connections").await;
    assert!(
        connected > 150,
        "the flood did not get past the cap: {connected}"
    );
    drop(flood);
    let recovered = Instant::now();
    let fresh = gateway.client();
    let reply = tokio::time::timeout(Duration::from_secs(5), fresh.get(&gateway.url("/after")))
        .await
        .expect("a new client is served within 5 s of the flood ending");
    assert_eq!(reply.status, 200);
    report(
        "connection flood (500 idle TCP + 50 half TLS handshakes, max_connections 50)",
        &format!(
            "{connected} of 550 connected in {:.1} s (listen backlog 128; the rest time out in \
             SYN retry); {open} open at the gateway during the flood; a new client served \
             {:.0} ms after the flood dropped",
            flooded_in.as_secs_f64(),
            recovered.elapsed().as_secs_f64() * 1e3
        ),
        &latencies,
    );
    assert!(open <= 50.0, "{open} connections open past the cap");
}

/// Descriptor exhaustion in the real binary: its RLIMIT_NOFILE is lowered (util-linux `prlimit
/// --pid`) to a few descriptors above what it holds, then more connections arrive than it can
/// accept. `accept` fails with EMFILE; the binary logs "accept failed; backing off", keeps
/// running, and serves again once the flood's connections close.
#[tokio::test]
async fn descriptor_exhaustion_backs_off_and_recovers() {
    use super::binary::{config_on_free_port, run_listening, write_config};
    use crate::common::{TestClient, TestPki};
    use std::io::BufRead;

    let upstream = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path());
    let audit = dir.path().join("audit.log");
    let (text, port) = config_on_free_port(&pki, &upstream.url(), &audit, &Options::default());
    let path = write_config(dir.path(), &text);
    let mut child = run_listening(&path, port, &[]).await;
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn({
        let log = log.clone();
        move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                log.lock().unwrap().push_str(&line);
                log.lock().unwrap().push('\n');
            }
        }
    });
    let url = format!("https://localhost:{port}/warm");
    assert_eq!(TestClient::new(&pki, false).get(&url).await.status, 200);

    let pid = child.id().to_string();
    let held = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let limit = held + 8;
    let lowered = std::process::Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={limit}:{limit}")])
        .status()
        .unwrap();
    assert!(lowered.success(), "prlimit failed");

    let mut flood = Vec::new();
    for _ in 0..64 {
        flood.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    wait_until("the binary logs the failed accept", || {
        let logged = log.lock().unwrap().contains("accept failed; backing off");
        async move { logged }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the binary exited on EMFILE"
    );
    let backoffs = log
        .lock()
        .unwrap()
        .matches("accept failed; backing off")
        .count();

    drop(flood);
    let started = Instant::now();
    let fresh = TestClient::new(&pki, false);
    let url = format!("https://localhost:{port}/recovered");
    loop {
        match fresh.try_get(&url).await {
            Ok(reply) if reply.status == 200 => break,
            other => assert!(
                started.elapsed() < Duration::from_secs(10),
                "not served after the flood: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "ABUSE | descriptor exhaustion (binary, RLIMIT_NOFILE {limit}, 64 connections) | \
         {backoffs} \"accept failed; backing off\" lines in 300 ms+, still running, served again \
         {:.0} ms after the flood closed | n/a | n/a",
        started.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(upstream.seen_on("/recovered").len(), 1);
    let _ = child.kill();
    let _ = child.wait();
}

/// Large bodies announced and sent slowly by 200 connections from the honest client's own
/// address take the whole shared buffer budget; the honest client's small JSON bodies, sent one
/// after another meanwhile, take the share kept for small bodies and are all answered 200 (before
/// the share, they waited `BUFFER_WAIT` and got 503 `overloaded`).
#[tokio::test]
async fn small_bodies_are_answered_during_a_flood_of_large_slow_ones() {
    let upstream = MockUpstream::start().await;
    let gateway = TestGateway::start_with(
        &upstream.url(),
        Options {
            extra: "[validation]\nmax_body_bytes = 1048576\nmax_buffered_bytes = 16777216\n"
                .to_owned(),
            ..Options::default()
        },
    )
    .await;
    let honest = gateway.client();
    let flooding = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut flood = Vec::new();
    for _ in 0..200 {
        let mut tls = raw_tls(&gateway).await;
        tls.write_all(
            b"POST /flood HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
              content-length: 1048576\r\n\r\n[\"",
        )
        .await
        .unwrap();
        tls.flush().await.unwrap();
        let flooding = flooding.clone();
        flood.push(tokio::spawn(async move {
            // A byte every 100 ms, until the honest client is done.
            while flooding.load(std::sync::atomic::Ordering::Relaxed) {
                if tls.write_all(b"a").await.is_err() || tls.flush().await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    // The shared budget (14 MiB) holds 14 of the announced bodies; the rest wait for room, and
    // give up after `BUFFER_WAIT` (2 s): the honest requests run within that window and past it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut latencies = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let sent = Instant::now();
        let reply = honest
            .post_json(&gateway.url("/honest"), r#"{"q":"small and honest"}"#)
            .await;
        latencies.push(sent.elapsed());
        assert_eq!(reply.status, 200, "honest small body during the flood");
    }
    flooding.store(false, std::sync::atomic::Ordering::Relaxed);
    for task in flood {
        task.abort();
    }
    assert!(upstream.seen_on("/flood").is_empty());
    report(
        "body flood, 200 slow 1 MiB bodies from the same address",
        "small bodies take the share kept for them",
        &latencies,
    );
}

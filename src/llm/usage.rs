//! Token usage read from an OpenAI-compatible answer as it passes, JSON or stream.
//!
//! Guards against spending nobody counts: the tokens the upstream reports (`usage` in a JSON
//! answer; the usage chunk of a chat or completions stream; `response.usage` in the Responses
//! API's `response.completed` event) are read without holding the answer back. A JSON answer is
//! relayed frame by frame while a copy of at most [`MAX_JSON_COPY`] bytes is kept to read its
//! usage at the end. A stream is read event by event; only when the gateway itself asked for the
//! usage chunk (the client did not) is an event held until it is complete, to take that chunk
//! out, and never more than [`MAX_EVENT_HOLD`] bytes of it. A stream that ends without usage is
//! estimated from the text it carried (see [`estimate_tokens`]).

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::{Buf, Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use serde::Deserialize;

/// Most bytes of a JSON answer copied to read its usage; a larger answer is estimated.
pub const MAX_JSON_COPY: usize = 4 * 1024 * 1024;
/// Most bytes of one SSE event held back while the gateway decides whether to take it out; a
/// longer event is released as it comes and kept.
pub const MAX_EVENT_HOLD: usize = 1024 * 1024;

/// Tokens of one exchange.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt (input) tokens.
    pub input: u64,
    /// Completion (output) tokens.
    pub output: u64,
}

impl Usage {
    /// Input and output together.
    pub fn total(self) -> u64 {
        self.input.saturating_add(self.output)
    }
}

/// The estimate for text whose tokens nobody reported: one token per four characters, rounded
/// up (OpenAI's own rule of thumb for English; code and other languages run higher).
pub fn estimate_tokens(chars: usize) -> u64 {
    (chars as u64).div_ceil(4)
}

#[derive(Debug, Default, Deserialize)]
struct UsageJson {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    total_tokens: Option<u64>,
}

impl UsageJson {
    fn usage(&self) -> Usage {
        let input = self.prompt_tokens.or(self.input_tokens).unwrap_or(0);
        let output = self
            .completion_tokens
            .or(self.output_tokens)
            .or_else(|| self.total_tokens.map(|t| t.saturating_sub(input)))
            .unwrap_or(0);
        Usage { input, output }
    }
}

#[derive(Debug, Deserialize)]
struct Answer {
    usage: Option<UsageJson>,
}

/// One streamed event's JSON: a chat or completions chunk, or a Responses API event.
#[derive(Debug, Deserialize)]
struct Event<'a> {
    #[serde(default)]
    usage: Option<UsageJson>,
    #[serde(default, borrow)]
    choices: Option<Vec<Choice<'a>>>,
    #[serde(rename = "type", default, borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    delta: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    response: Option<Answer>,
}

#[derive(Debug, Deserialize)]
struct Choice<'a> {
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    #[serde(default, borrow)]
    text: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    content: Option<std::borrow::Cow<'a, str>>,
}

/// What a finished answer reports: the usage, if the upstream said it, and the characters of
/// streamed text seen (for the estimate).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Metered {
    /// The usage the upstream reported.
    pub reported: Option<Usage>,
    /// Characters of generated text seen in a stream.
    pub streamed_chars: usize,
}

/// Called once when the answer ends, is cut or is dropped.
pub trait Settle: Send + 'static {
    /// Accounts for the answer.
    fn settle(self: Box<Self>, metered: Metered);
}

enum Mode {
    /// A JSON answer: a bounded copy, read at the end.
    Json { copy: Option<BytesMut> },
    /// An event stream, read event by event.
    Stream(Box<EventReader>),
}

/// Reads SSE events as they pass; optionally takes out the usage-only chunk.
struct EventReader {
    /// Bytes of the event being read (all of it when holding back, else its tail only).
    partial: BytesMut,
    /// Whether the usage-only chunk is taken out (the gateway asked for it, the client did not).
    strip_usage_chunk: bool,
    /// The current event outgrew the hold: it is released as it comes and kept whole.
    overflowed: bool,
    metered: Metered,
}

impl EventReader {
    /// Feeds one frame's bytes; returns the bytes to release now.
    fn feed(&mut self, data: Bytes) -> Bytes {
        if !self.strip_usage_chunk {
            // Nothing is ever taken out: release at once, read a copy of whole events.
            self.partial.extend_from_slice(&data);
            while let Some(end) = event_end(&self.partial) {
                let event = self.partial.split_to(end);
                self.read_event(&event);
            }
            self.bound_partial();
            return data;
        }
        self.partial.extend_from_slice(&data);
        let mut release = BytesMut::new();
        while let Some(end) = event_end(&self.partial) {
            let event = self.partial.split_to(end);
            if self.overflowed {
                // Its start is already out: let its end go too.
                self.overflowed = false;
                release.extend_from_slice(&event);
                continue;
            }
            if !self.read_event(&event) {
                release.extend_from_slice(&event);
            }
        }
        if self.overflowed || self.partial.len() > MAX_EVENT_HOLD {
            self.overflowed = true;
            release.extend_from_slice(&self.partial.split());
        }
        release.freeze()
    }

    /// Keeps at most the hold of an incomplete event when only reading a copy.
    fn bound_partial(&mut self) {
        if self.partial.len() > MAX_EVENT_HOLD {
            // An event this long is not one whose usage we read; drop its copy up to its end.
            self.partial.clear();
            self.overflowed = true;
        }
    }

    /// Reads one whole event; true when it is the usage-only chunk (to be taken out).
    fn read_event(&mut self, event: &[u8]) -> bool {
        let mut data = Vec::new();
        for line in event.split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(rest) = line.strip_prefix(b"data:") {
                if !data.is_empty() {
                    data.push(b'\n');
                }
                data.extend_from_slice(rest.strip_prefix(b" ").unwrap_or(rest));
            }
        }
        if data.is_empty() || data == b"[DONE]" {
            return false;
        }
        let Ok(parsed) = serde_json::from_slice::<Event<'_>>(&data) else {
            return false;
        };
        if let Some(choices) = &parsed.choices {
            for choice in choices {
                let text = choice
                    .delta
                    .as_ref()
                    .and_then(|d| d.content.as_deref())
                    .or(choice.text.as_deref());
                self.metered.streamed_chars += text.map_or(0, |t| t.chars().count());
            }
        }
        if parsed.kind.as_deref() == Some("response.output_text.delta") {
            self.metered.streamed_chars += parsed.delta.as_deref().map_or(0, |t| t.chars().count());
        }
        if let Some(usage) = parsed
            .usage
            .as_ref()
            .or_else(|| parsed.response.as_ref().and_then(|r| r.usage.as_ref()))
        {
            self.metered.reported = Some(usage.usage());
        }
        // The chunk `include_usage` adds: no choices, only usage.
        parsed.usage.is_some() && parsed.choices.as_ref().is_some_and(Vec::is_empty)
    }
}

/// Where the first SSE event in `bytes` ends (after its blank line), if it is complete.
pub(crate) fn event_end(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(nl) = memchr::memchr(b'\n', &bytes[at..]) {
        let next = at + nl + 1;
        match bytes.get(next) {
            Some(b'\n') => return Some(next + 1),
            Some(b'\r') if bytes.get(next + 1) == Some(&b'\n') => return Some(next + 2),
            _ => at = next,
        }
    }
    None
}

/// An answer body that meters usage as it passes and settles once at its end.
pub struct MeteredBody {
    inner: Body,
    mode: Mode,
    settle: Option<Box<dyn Settle>>,
}

impl MeteredBody {
    /// Meters `inner`: an event stream when `stream` is set, else a JSON answer.
    pub fn new(
        inner: Body,
        stream: bool,
        strip_usage_chunk: bool,
        settle: Box<dyn Settle>,
    ) -> MeteredBody {
        let mode = if stream {
            Mode::Stream(Box::new(EventReader {
                partial: BytesMut::new(),
                strip_usage_chunk,
                overflowed: false,
                metered: Metered::default(),
            }))
        } else {
            Mode::Json {
                copy: Some(BytesMut::new()),
            }
        };
        MeteredBody {
            inner,
            mode,
            settle: Some(settle),
        }
    }

    fn finish(&mut self) {
        let Some(settle) = self.settle.take() else {
            return;
        };
        let metered = match &mut self.mode {
            Mode::Json { copy } => Metered {
                reported: copy
                    .take()
                    .and_then(|copy| serde_json::from_slice::<Answer>(&copy).ok())
                    .and_then(|answer| answer.usage)
                    .map(|usage| usage.usage()),
                streamed_chars: 0,
            },
            Mode::Stream(reader) => {
                // A last event without its blank line still counts.
                let tail = reader.partial.split();
                if !tail.is_empty() {
                    reader.read_event(&tail);
                }
                reader.metered
            }
        };
        settle.settle(metered);
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        self.finish();
    }
}

impl http_body::Body for MeteredBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        loop {
            let frame = match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                None => {
                    if let Mode::Stream(reader) = &mut this.mode
                        && reader.strip_usage_chunk
                        && !reader.partial.is_empty()
                    {
                        // A held tail with no blank line after it: release it as it is.
                        let tail = reader.partial.split().freeze();
                        reader.read_event(&tail);
                        return Poll::Ready(Some(Ok(Frame::data(tail))));
                    }
                    this.finish();
                    return Poll::Ready(None);
                }
                Some(Err(e)) => {
                    this.finish();
                    return Poll::Ready(Some(Err(e)));
                }
                Some(Ok(frame)) => frame,
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(frame) => return Poll::Ready(Some(Ok(frame))),
            };
            match &mut this.mode {
                Mode::Json { copy } => {
                    if let Some(buffer) = copy {
                        if buffer.len() + data.len() > MAX_JSON_COPY {
                            *copy = None;
                        } else {
                            buffer.extend_from_slice(data.chunk());
                        }
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Mode::Stream(reader) => {
                    let release = reader.feed(data);
                    if !release.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(release))));
                    }
                    // Everything held back (an incomplete event, or the usage chunk taken
                    // out): read on.
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
            && match &self.mode {
                Mode::Stream(reader) => reader.partial.is_empty(),
                Mode::Json { .. } => true,
            }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.mode {
            // Taking an event out changes the length.
            Mode::Stream(reader) if reader.strip_usage_chunk => SizeHint::default(),
            _ => self.inner.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use http_body_util::BodyExt;

    use super::{Metered, MeteredBody, Settle, Usage, estimate_tokens};

    struct Keep(Arc<Mutex<Option<Metered>>>);

    impl Settle for Keep {
        fn settle(self: Box<Self>, metered: Metered) {
            *self.0.lock().unwrap() = Some(metered);
        }
    }

    async fn meter(chunks: Vec<&'static str>, stream: bool, strip: bool) -> (String, Metered) {
        let seen = Arc::new(Mutex::new(None));
        let frames = futures_util::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::io::Error>(http_body::Frame::data(bytes::Bytes::from(c)))),
        );
        let inner = axum::body::Body::new(http_body_util::StreamBody::new(frames));
        let body = MeteredBody::new(inner, stream, strip, Box::new(Keep(seen.clone())));
        let bytes = body.collect().await.unwrap().to_bytes();
        let metered = seen.lock().unwrap().take().unwrap();
        (String::from_utf8(bytes.to_vec()).unwrap(), metered)
    }

    const CHUNK_A: &str = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n";
    const CHUNK_B: &str = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo!\"}}]}\n\n";
    const USAGE: &str = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2,\"total_tokens\":9}}\n\n";
    const DONE: &str = "data: [DONE]\n\n";

    #[tokio::test]
    async fn a_stream_is_read_event_by_event_and_its_usage_chunk_taken_out_when_asked() {
        let split = [CHUNK_A, CHUNK_B, USAGE, DONE].concat();
        let (mid, rest) = split.split_at(30);
        let (mid2, rest) = rest.split_at(70);
        let chunks: Vec<&'static str> = vec![
            Box::leak(mid.to_owned().into_boxed_str()),
            Box::leak(mid2.to_owned().into_boxed_str()),
            Box::leak(rest.to_owned().into_boxed_str()),
        ];
        let (out, metered) = meter(chunks.clone(), true, true).await;
        assert_eq!(out, [CHUNK_A, CHUNK_B, DONE].concat());
        assert_eq!(
            metered.reported,
            Some(Usage {
                input: 7,
                output: 2
            })
        );
        assert_eq!(metered.streamed_chars, 6);
        let (out, metered) = meter(chunks, true, false).await;
        assert_eq!(out, split, "a client that asked for usage gets it");
        assert_eq!(metered.reported.map(Usage::total), Some(9));
    }

    #[tokio::test]
    async fn a_stream_without_usage_is_estimated_and_json_usage_is_read() {
        let (_, metered) = meter(vec![CHUNK_A, CHUNK_B], true, true).await;
        assert_eq!(metered.reported, None);
        assert_eq!(estimate_tokens(metered.streamed_chars), 2);
        let (_, metered) = meter(
            vec![
                "{\"id\":\"x\",\"usage\":{\"input_tokens\":3,",
                "\"output_tokens\":4,\"total_tokens\":7}}",
            ],
            false,
            false,
        )
        .await;
        assert_eq!(
            metered.reported,
            Some(Usage {
                input: 3,
                output: 4
            })
        );
        let responses = "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"abcd\"}\n\nevent: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":5,\"output_tokens\":1,\"total_tokens\":6}}}\n\n";
        let (out, metered) = meter(vec![responses], true, false).await;
        assert_eq!(out, responses);
        assert_eq!(metered.reported.map(Usage::total), Some(6));
        assert_eq!(metered.streamed_chars, 4);
    }
}

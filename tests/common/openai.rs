//! A mock OpenAI-compatible upstream on loopback that records every request and reports usage.
//!
//! Every answer reports fixed usage, so budget accounting can be checked exactly:
//! - `POST /v1/chat/completions`: [`CHAT_USAGE`]; streamed (`"stream": true`) as three content
//!   deltas, then, when `stream_options.include_usage` is set, the usage-only chunk, then
//!   `[DONE]`. The model `cut-stream` streams two deltas and then breaks the connection;
//! - `POST /v1/responses`: [`RESPONSES_USAGE`], or the Responses API's streamed events;
//! - `POST /v1/embeddings` and `POST /v1/completions`: [`EMBEDDINGS_USAGE`] / [`CHAT_USAGE`];
//! - anything else: 200 `{"ok": true}`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// Usage of every chat and legacy completion: (prompt, completion).
pub const CHAT_USAGE: (u64, u64) = (11, 4);
/// Usage of every Responses API answer: (input, output).
pub const RESPONSES_USAGE: (u64, u64) = (20, 6);
/// Usage of every embeddings answer (input only).
pub const EMBEDDINGS_USAGE: u64 = 8;
/// The text every completion streams, in three deltas.
pub const DELTAS: [&str; 3] = ["Hello", ", wor", "ld!"];

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

/// The mock upstream.
pub struct MockOpenAi {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl MockOpenAi {
    pub async fn start() -> MockOpenAi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(seen.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockOpenAi { addr, seen, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for MockOpenAi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(seen): State<Arc<Mutex<Vec<Seen>>>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let path = parts.uri.path().to_owned();
    if parts.method != http::Method::POST {
        // The gateway's readiness probe (GET /) and other reads are not API calls.
        return json_answer(json!({"ok": true}));
    }
    seen.lock().unwrap().push(Seen {
        path: path.clone(),
        headers: parts.headers,
        body: body.clone(),
    });
    let model = body["model"].as_str().unwrap_or("unknown").to_owned();
    let stream = body["stream"] == true;
    // Test instructions in the request: the deltas or content to answer with.
    let deltas: Option<Vec<String>> = body["x_deltas"].as_array().map(|d| {
        d.iter()
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .collect()
    });
    match path.as_str() {
        "/v1/chat/completions" if stream && deltas.is_some() => {
            let usage = body["stream_options"]["include_usage"] == true;
            scripted_stream(
                &model,
                deltas.unwrap_or_default(),
                usage,
                body["x_gap_ms"].as_u64().unwrap_or(5),
            )
        }
        "/v1/chat/completions" if body["x_content"].is_string() => json_answer(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": body["x_content"]}}],
            "usage": usage(CHAT_USAGE),
        })),
        "/v1/text-stream" => {
            let chunks: Vec<String> = body["chunks"]
                .as_array()
                .map(|c| {
                    c.iter()
                        .map(|v| v.as_str().unwrap_or_default().to_owned())
                        .collect()
                })
                .unwrap_or_default();
            let stream =
                futures_util::stream::unfold(chunks.into_iter(), |mut chunks| async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    chunks
                        .next()
                        .map(|c| (Ok::<_, Infallible>(Bytes::from(c)), chunks))
                });
            Response::builder()
                .header("content-type", "text/plain; charset=utf-8")
                .body(Body::from_stream(stream))
                .unwrap()
        }
        "/v1/json-echo" => json_answer(body["answer"].clone()),
        "/v1/chat/completions" | "/v1/completions" if stream => {
            let usage = body["stream_options"]["include_usage"] == true;
            chat_stream(&model, usage, path == "/v1/completions")
        }
        "/v1/chat/completions" => json_answer(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": DELTAS.concat()}}],
            "usage": usage(CHAT_USAGE),
        })),
        "/v1/completions" => json_answer(json!({
            "id": "cmpl-1", "object": "text_completion", "created": 1, "model": model,
            "choices": [{"index": 0, "text": DELTAS.concat(), "finish_reason": "stop"}],
            "usage": usage(CHAT_USAGE),
        })),
        "/v1/responses" if stream => responses_stream(&model, deltas),
        "/v1/responses" => json_answer(responses_object(&model)),
        "/v1/embeddings" => json_answer(json!({
            "object": "list", "model": model,
            "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
            "usage": {"prompt_tokens": EMBEDDINGS_USAGE, "total_tokens": EMBEDDINGS_USAGE},
        })),
        _ => json_answer(json!({"ok": true})),
    }
}

fn usage((prompt, completion): (u64, u64)) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion,
           "total_tokens": prompt + completion})
}

fn responses_object(model: &str) -> Value {
    let (input, output) = RESPONSES_USAGE;
    json!({
        "id": "resp_1", "object": "response", "created_at": 1, "status": "completed",
        "model": model,
        "output": [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": DELTAS.concat(), "annotations": []}]}],
        "usage": {"input_tokens": input, "output_tokens": output, "total_tokens": input + output,
                  "input_tokens_details": {"cached_tokens": 0},
                  "output_tokens_details": {"reasoning_tokens": 0}},
    })
}

fn json_answer(value: Value) -> Response {
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(value.to_string()))
        .unwrap()
}

fn sse(
    events: impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
) -> Response {
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(events))
        .unwrap()
}

fn chat_stream(model: &str, usage_chunk: bool, legacy: bool) -> Response {
    let cut = model == "cut-stream";
    let mut events: Vec<String> = DELTAS
        .iter()
        .take(if cut { 2 } else { 3 })
        .map(|text| {
            let choice = if legacy {
                json!({"index": 0, "text": text, "finish_reason": null})
            } else {
                json!({"index": 0, "delta": {"content": text}, "finish_reason": null})
            };
            let chunk = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk",
                               "created": 1, "model": model, "choices": [choice]});
            format!("data: {chunk}\n\n")
        })
        .collect();
    if !cut {
        if usage_chunk {
            let chunk = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk",
                               "created": 1, "model": model, "choices": [],
                               "usage": usage(CHAT_USAGE)});
            events.push(format!("data: {chunk}\n\n"));
        }
        events.push("data: [DONE]\n\n".to_owned());
    }
    if cut {
        // Two deltas, sent as they come, then the upstream breaks the stream.
        let items = futures_util::stream::unfold(
            events.into_iter().map(Some).chain(std::iter::once(None)),
            |mut items| async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                match items.next()? {
                    Some(event) => Some((Ok(Bytes::from(event)), items)),
                    None => Some((
                        Err(std::io::Error::other("upstream broke the stream")),
                        items,
                    )),
                }
            },
        );
        return Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(items))
            .unwrap();
    }
    let stream = futures_util::stream::unfold(events.into_iter(), |mut events| async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        events.next().map(|event| (Ok(Bytes::from(event)), events))
    });
    sse(stream)
}

/// Streams `deltas` as chat chunks `gap_ms` apart, then the finish chunk, the usage chunk when
/// asked, and `[DONE]`.
fn scripted_stream(model: &str, deltas: Vec<String>, usage_chunk: bool, gap_ms: u64) -> Response {
    let mut events: Vec<String> = deltas
        .iter()
        .map(|text| {
            let chunk = json!({"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1,
                "model": model,
                "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]});
            format!("data: {chunk}\n\n")
        })
        .collect();
    let finish = json!({"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1,
        "model": model, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
    events.push(format!("data: {finish}\n\n"));
    if usage_chunk {
        let chunk = json!({"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1,
            "model": model, "choices": [], "usage": usage(CHAT_USAGE)});
        events.push(format!("data: {chunk}\n\n"));
    }
    events.push("data: [DONE]\n\n".to_owned());
    let stream = futures_util::stream::unfold(events.into_iter(), move |mut events| async move {
        tokio::time::sleep(Duration::from_millis(gap_ms)).await;
        events
            .next()
            .map(|event| (Ok::<_, Infallible>(Bytes::from(event)), events))
    });
    sse(stream)
}

fn responses_stream(model: &str, deltas: Option<Vec<String>>) -> Response {
    let deltas: Vec<String> =
        deltas.unwrap_or_else(|| DELTAS.iter().map(|d| (*d).to_owned()).collect());
    let mut events: Vec<String> = vec![format!(
        "event: response.created\ndata: {}\n\n",
        json!({"type": "response.created", "sequence_number": 0,
               "response": {"id": "resp_1", "object": "response", "created_at": 1,
                            "status": "in_progress", "model": model, "output": []}})
    )];
    for (i, text) in deltas.iter().enumerate() {
        events.push(format!(
            "event: response.output_text.delta\ndata: {}\n\n",
            json!({"type": "response.output_text.delta", "sequence_number": i + 1,
                   "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": text,
                   "logprobs": []})
        ));
    }
    events.push(format!(
        "event: response.output_text.done\ndata: {}\n\n",
        json!({"type": "response.output_text.done", "item_id": "msg_1", "output_index": 0,
               "content_index": 0, "text": deltas.concat()})
    ));
    let mut done = responses_object(model);
    done["output"][0]["content"][0]["text"] = json!(deltas.concat());
    events.push(format!(
        "event: response.completed\ndata: {}\n\n",
        json!({"type": "response.completed", "sequence_number": deltas.len() + 2, "response": done})
    ));
    sse(futures_util::stream::iter(
        events.into_iter().map(|e| Ok(Bytes::from(e))),
    ))
}

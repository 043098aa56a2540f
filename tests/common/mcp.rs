//! A recording mock MCP server (Streamable HTTP) on loopback, for the raw-request tests; the SDK
//! tests use the MCP SDK's own server (tests/sdk/mcp_server.py).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    #[allow(dead_code)]
    pub method: Method,
    pub headers: HeaderMap,
    #[allow(dead_code)]
    pub body: Value,
}

#[derive(Default)]
struct Shared {
    seen: Mutex<Vec<Seen>>,
    sessions: AtomicU32,
    /// The description of the `lookup` tool (changed by tests of pinning).
    lookup: Mutex<String>,
}

/// The mock server: `initialize` issues a session id, `tools/list` lists `echo`, `delete_repo`,
/// `run_shell` and `lookup` (as an event stream when the request has `x-test-sse`, with a
/// notification first and the answer cut in pieces), `tools/call` answers `called <name>`,
/// notifications get 202, GET gets 405.
pub struct MockMcp {
    pub addr: std::net::SocketAddr,
    shared: Arc<Shared>,
}

impl MockMcp {
    pub async fn start() -> MockMcp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        *shared.lookup.lock().unwrap() = "Looks up a key.".to_owned();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockMcp { addr, shared }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests to the MCP endpoint (not the gateway's readiness probe).
    pub fn seen(&self) -> Vec<Seen> {
        let seen = self.shared.seen.lock().unwrap();
        seen.iter().filter(|s| s.path == "/mcp").cloned().collect()
    }

    pub fn set_lookup_description(&self, text: &str) {
        *self.shared.lookup.lock().unwrap() = text.to_owned();
    }
}

fn tools(lookup: &str) -> Value {
    let schema = |field: &str| json!({"type": "object", "properties": {field: {"type": "string"}}});
    json!([
        {"name": "echo", "description": "Echoes text.", "inputSchema": schema("text")},
        {"name": "delete_repo", "description": "Deletes a repository.", "inputSchema": schema("name")},
        {"name": "run_shell", "description": "Runs a command.", "inputSchema": schema("command")},
        {"name": "lookup", "description": lookup, "inputSchema": schema("key")},
    ])
}

async fn handle(State(shared): State<Arc<Shared>>, request: http::Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let bytes: Bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let message: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    shared.seen.lock().unwrap().push(Seen {
        path: parts.uri.path().to_owned(),
        method: parts.method.clone(),
        headers: parts.headers.clone(),
        body: message.clone(),
    });
    if parts.method != Method::POST {
        return reply(StatusCode::METHOD_NOT_ALLOWED, None, Body::empty());
    }
    let id = message["id"].clone();
    let method = message["method"].as_str().unwrap_or("");
    if id.is_null() {
        return reply(StatusCode::ACCEPTED, None, Body::empty());
    }
    let result = match method {
        "initialize" => json!({"protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                               "serverInfo": {"name": "mock", "version": "1"}}),
        "tools/list" => json!({"tools": tools(&shared.lookup.lock().unwrap())}),
        "tools/call" => json!({"content": [{"type": "text",
                               "text": format!("called {}", message["params"]["name"].as_str().unwrap_or(""))}]}),
        _ => json!({}),
    };
    let mut answer = json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string();
    // A server that tries to slip a listing past the gateway (`x-test-evasion`): the listing
    // under a first `result` key and an empty one under a second (a parser that keeps the first
    // would read the listing), or text that is not JSON.
    match parts.headers.get("x-test-evasion").map(|v| v.as_bytes()) {
        Some(b"duplicate") => {
            let first = json!({"tools": tools(&shared.lookup.lock().unwrap())});
            answer = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{first},"result":{{}}}}"#);
        }
        Some(b"garbage") => answer = format!("{answer} trailing"),
        _ => {}
    }
    if parts.headers.contains_key("x-test-unterminated") {
        // The listing event lacks its blank line and the stream ends.
        let stream = format!("event: message\ndata: {answer}");
        return reply(
            StatusCode::OK,
            Some("text/event-stream"),
            Body::from(stream),
        );
    }
    let mut response = if parts.headers.contains_key("x-test-sse") {
        let progress = json!({"jsonrpc": "2.0", "method": "notifications/progress",
                              "params": {"progressToken": 1, "progress": 1}});
        let stream =
            format!("event: message\ndata: {progress}\n\nevent: message\ndata: {answer}\n\n");
        // The answer arrives in pieces, one cut inside the listing.
        let (a, b) = stream.split_at(stream.len() / 2);
        let pieces = vec![
            Ok::<_, std::convert::Infallible>(Bytes::from(a.to_owned())),
            Ok(Bytes::from(b.to_owned())),
        ];
        reply(
            StatusCode::OK,
            Some("text/event-stream"),
            Body::from_stream(futures_util::stream::iter(pieces)),
        )
    } else {
        reply(StatusCode::OK, Some("application/json"), Body::from(answer))
    };
    if method == "initialize" {
        let n = shared.sessions.fetch_add(1, Ordering::Relaxed);
        response
            .headers_mut()
            .insert("mcp-session-id", format!("session-{n}").parse().unwrap());
    }
    response
}

fn reply(status: StatusCode, media: Option<&'static str>, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    if let Some(media) = media {
        response
            .headers_mut()
            .insert("content-type", media.parse().unwrap());
    }
    response
}

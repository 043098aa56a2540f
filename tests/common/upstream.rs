//! A real mock upstream on loopback that records every request it receives.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::TestPki;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    #[allow(dead_code)]
    pub method: Method,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The gateway's end of the connection the request came on (shows connection reuse).
    pub peer: SocketAddr,
}

/// The peer address of the connection a request arrived on.
#[derive(Debug, Clone, Copy)]
struct Peer(SocketAddr);

#[derive(Default)]
struct Shared {
    seen: Mutex<Vec<Recorded>>,
    /// Lets the rest of `/sse` go once the test has seen the first event.
    release_sse: Notify,
    /// Signalled when `/upload` has received its first body chunk.
    first_chunk: Notify,
    /// Every connection's task, so that [`MockUpstream::kill`] can drop them all at once.
    connections: Mutex<Vec<tokio::task::AbortHandle>>,
}

/// The mock upstream. Paths:
/// - `/status/N`: answers status N with a body full of internals;
/// - `/slow/MS`: answers 200 after MS milliseconds;
/// - `/sse`: one event, then waits for [`MockUpstream::release_sse`], then two more;
/// - `/sse-paused/MS`: three events sent in four parts (one mid-event) MS milliseconds apart;
/// - `/stall`: a response head and one chunk, then silence;
/// - `/endless`: a body of 64 KiB chunks that never ends;
/// - anything else: 200 JSON naming the path, with fingerprinting and hop-by-hop headers.
pub struct MockUpstream {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl MockUpstream {
    pub async fn start() -> MockUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, None)
    }

    /// Starts with a listen backlog of `backlog` instead of the default 128 (std's and mio's),
    /// for tests in which the gateway opens hundreds of upstream connections at once: past the
    /// backlog the kernel drops SYNs and the connect waits for the 1 s retransmit.
    pub async fn start_with_backlog(backlog: u32) -> MockUpstream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(([127, 0, 0, 1], 0).into()).unwrap();
        Self::serve(socket.listen(backlog).unwrap(), None)
    }

    /// Starts on a given address (to bring an upstream up where the gateway already points).
    pub async fn start_on(addr: SocketAddr) -> MockUpstream {
        let listener = TcpListener::bind(addr).await.unwrap();
        Self::serve(listener, None)
    }

    /// Starts an HTTPS upstream whose certificate is signed by the test CA.
    pub async fn start_tls(pki: &TestPki) -> MockUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, Some(TlsAcceptor::from(pki.server_config())))
    }

    fn serve(listener: TcpListener, tls: Option<TlsAcceptor>) -> MockUpstream {
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let tracked = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let app = app.clone();
                let tls = tls.clone();
                let connection = tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |mut request: Request<Incoming>| {
                            request.extensions_mut().insert(Peer(peer));
                            app.clone().oneshot(request.map(Body::new))
                        });
                    let http = hyper::server::conn::http1::Builder::new();
                    let _ = match tls {
                        None => http.serve_connection(TokioIo::new(stream), service).await,
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(stream) => {
                                http.serve_connection(TokioIo::new(stream), service).await
                            }
                            Err(_) => return,
                        },
                    };
                });
                tracked
                    .connections
                    .lock()
                    .unwrap()
                    .push(connection.abort_handle());
            }
        });
        MockUpstream { addr, shared, task }
    }

    /// Stops as a crashed process would: the listener closes and every open connection is cut
    /// (responses in flight end abruptly).
    pub fn kill(self) {
        self.task.abort();
        for connection in self.shared.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    pub fn tls_url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// Waits until `/upload` has received its first body chunk.
    pub async fn first_chunk_received(&self) {
        self.shared.first_chunk.notified().await;
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Recorded> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Requests received on `path` (without query).
    pub fn seen_on(&self, path: &str) -> Vec<Recorded> {
        self.seen()
            .into_iter()
            .filter(|r| r.uri.split('?').next() == Some(path))
            .collect()
    }

    pub fn release_sse(&self) {
        self.shared.release_sse.notify_one();
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request<Body>) -> Response {
    let (parts, mut body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let body = if path == "/upload" {
        // Read frame by frame and say when the first arrives: proves the request body streams.
        let mut collected = Vec::new();
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                if collected.is_empty() {
                    shared.first_chunk.notify_one();
                }
                collected.extend_from_slice(data);
            }
        }
        Bytes::from(collected)
    } else {
        body.collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default()
    };
    shared.seen.lock().unwrap().push(Recorded {
        method: parts.method.clone(),
        uri: parts.uri.to_string(),
        headers: parts.headers.clone(),
        body: body.clone(),
        peer: parts
            .extensions
            .get::<Peer>()
            .map_or(([0, 0, 0, 0], 0).into(), |p| p.0),
    });

    if let Some(code) = path.strip_prefix("/status/") {
        let status = StatusCode::from_u16(code.parse().unwrap()).unwrap();
        return Response::builder()
            .status(status)
            .header("server", "secret-upstream/1.0")
            .body(Body::from(
                "Traceback: /srv/agent/app.py line 42: KeyError: OPENAI_API_KEY=sk-upstream-secret",
            ))
            .unwrap();
    }
    if let Some(ms) = path.strip_prefix("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
        return Response::new(Body::from("slow answer"));
    }
    if path == "/sse" {
        let events = futures_util::stream::unfold(0u8, move |i| {
            let shared = shared.clone();
            async move {
                match i {
                    0 => Some((Ok::<_, Infallible>(Bytes::from("data: first\n\n")), 1)),
                    1 => {
                        shared.release_sse.notified().await;
                        Some((Ok(Bytes::from("data: second\n\n")), 2))
                    }
                    2 => Some((Ok(Bytes::from("data: third\n\n")), 3)),
                    _ => None,
                }
            }
        });
        return Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(events))
            .unwrap();
    }
    if let Some(ms) = path.strip_prefix("/sse-paused/") {
        // Three events with pauses of MS between sends, one pause inside the second event.
        let pause = Duration::from_millis(ms.parse().unwrap());
        let parts = ["data: one\n\n", "data: tw", "o\n\n", "data: three\n\n"];
        let events = futures_util::stream::unfold(0usize, move |i| async move {
            if i > 0 {
                tokio::time::sleep(pause).await;
            }
            parts
                .get(i)
                .map(|p| (Ok::<_, Infallible>(Bytes::from_static(p.as_bytes())), i + 1))
        });
        return Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(events))
            .unwrap();
    }
    if path == "/endless" {
        // 64 KiB chunks for as long as someone reads them.
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let chunks = futures_util::stream::repeat_with(move || Ok::<_, Infallible>(chunk.clone()));
        return Response::new(Body::from_stream(chunks));
    }
    if path == "/stall" {
        let events = futures_util::stream::unfold(0u8, |i| async move {
            if i == 0 {
                Some((Ok::<_, Infallible>(Bytes::from("data: only\n\n")), 1))
            } else {
                std::future::pending::<()>().await;
                None
            }
        });
        return Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(events))
            .unwrap();
    }
    let answer = serde_json::json!({"path": path, "body_len": body.len()}).to_string();
    let mut response = Response::new(Body::from(answer));
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("server", HeaderValue::from_static("mock-upstream/1.0"));
    headers.insert("x-powered-by", HeaderValue::from_static("MockFramework"));
    headers.insert("x-upstream-hop", HeaderValue::from_static("1"));
    headers.insert("connection", HeaderValue::from_static("x-upstream-hop"));
    headers.insert("x-agent", HeaderValue::from_static("kept"));
    if path == "/upstream-cors" {
        // An agent with its own, wider CORS policy.
        headers.insert("access-control-allow-origin", HeaderValue::from_static("*"));
        headers.insert(
            "access-control-allow-credentials",
            HeaderValue::from_static("true"),
        );
    }
    response
}

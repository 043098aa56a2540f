//! WebSocket pass-through (`[websocket]`): the handshake is an ordinary request of the pipeline,
//! the socket after it a relay of messages with bounds.
//!
//! Guards against a socket escaping the gateway's rules. The handshake passes every stage above
//! this one (flood guard, authentication, limits, head checks) before anything reaches the agent,
//! and an upgrade anywhere but `[websocket] paths` is refused 400. A user holds at most
//! `max_per_user` open sockets. After the upgrade, messages are relayed one at a time, never more
//! than `max_message_bytes` of one held (a larger one closes both sides with 1009); a socket with
//! no frame in either direction for `idle_timeout` is closed with 1001, as every open socket is at
//! shutdown. Extensions (`permessage-deflate`) are not negotiated, so every byte relayed is one
//! the limits saw. One audit record is written per socket when it closes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use futures_util::future::{BoxFuture, Either};
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version, header};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::sync::{oneshot, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, error::CapacityError};
use tower::{Layer, Service};

use crate::audit::{SocketAudit, SocketSummary, StreamEnd};
use crate::config::websocket::WebSocketSettings;
use crate::context::RequestContext;
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::proxy::Upstream;
use crate::stage::{Request, Response, StageResult};

/// Longest a close frame (or the wait for the other side's reply) may take: a peer that does not
/// read cannot hold a closing relay.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Read buffer of each side's WebSocket codec; a message larger than this grows it as it arrives.
const READ_BUFFER: usize = 8 * 1024;

/// The open sockets of the process, across reloads: counted per user, and told to close at
/// shutdown.
#[derive(Debug)]
pub struct Sockets {
    per_user: Mutex<HashMap<Arc<str>, usize>>,
    open: watch::Sender<usize>,
    stop: watch::Sender<bool>,
}

impl Default for Sockets {
    fn default() -> Self {
        Sockets {
            per_user: Mutex::new(HashMap::new()),
            open: watch::Sender::new(0),
            stop: watch::Sender::new(false),
        }
    }
}

impl Sockets {
    /// Tells every open socket to close with 1001 (going away).
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Completes once no socket is open.
    pub async fn all_closed(&self) {
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|n| *n == 0).await;
    }

    /// Sockets open now.
    pub fn open(&self) -> usize {
        *self.open.borrow()
    }

    /// A slot for one more socket of `user`, unless `max` are open.
    fn admit(self: &Arc<Self>, user: Arc<str>, max: usize) -> Option<Slot> {
        let mut per_user = self.per_user.lock().ok()?;
        let count = per_user.entry(user.clone()).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        self.open.send_modify(|n| *n += 1);
        Some(Slot {
            sockets: self.clone(),
            user,
        })
    }
}

/// One open socket's place in [`Sockets`], given back when dropped.
struct Slot {
    sockets: Arc<Sockets>,
    user: Arc<str>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut per_user) = self.sockets.per_user.lock()
            && let Some(count) = per_user.get_mut(&self.user)
        {
            *count -= 1;
            if *count == 0 {
                per_user.remove(&self.user);
            }
        }
        self.sockets.open.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// What the WebSocket stage needs.
#[derive(Debug)]
pub struct WebSockets {
    /// `[websocket]`, when configured (else every upgrade is refused).
    pub settings: Option<WebSocketSettings>,
    /// The open sockets.
    pub sockets: Arc<Sockets>,
    /// The agent.
    pub upstream: Arc<Upstream>,
    /// Where sockets are counted.
    pub metrics: Arc<Metrics>,
    /// `[cors]`, when configured: a browser's handshake from an unlisted origin is refused
    /// (WebSockets are not subject to CORS, so the browser would not stop the page).
    pub cors: Option<Arc<crate::config::cors::CorsSettings>>,
}

/// Whether `headers` ask to switch to WebSocket (`Upgrade: websocket`).
fn asks_websocket(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
}

/// Layer: WebSocket handshakes go to the relay, everything else to the inner service.
#[derive(Debug, Clone)]
pub struct WebSocketLayer {
    ws: Arc<WebSockets>,
}

impl WebSocketLayer {
    /// The layer for `ws`.
    pub fn new(ws: Arc<WebSockets>) -> WebSocketLayer {
        WebSocketLayer { ws }
    }
}

impl<S> Layer<S> for WebSocketLayer {
    type Service = WebSocketService<S>;

    fn layer(&self, inner: S) -> WebSocketService<S> {
        WebSocketService {
            ws: self.ws.clone(),
            inner,
        }
    }
}

/// The service of [`WebSocketLayer`].
#[derive(Debug, Clone)]
pub struct WebSocketService<S> {
    ws: Arc<WebSockets>,
    inner: S,
}

impl<S> Service<Request> for WebSocketService<S>
where
    S: Service<Request, Response = Response, Error = GatewayError>,
{
    type Response = Response;
    type Error = GatewayError;
    type Future = Either<S::Future, BoxFuture<'static, StageResult>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if !asks_websocket(request.headers()) {
            return Either::Left(self.inner.call(request));
        }
        let ws = self.ws.clone();
        Either::Right(Box::pin(async move { handshake(ws, request).await }))
    }
}

/// Checks a handshake, forwards it, and on the agent's 101 answers 101 and starts the relay.
async fn handshake(ws: Arc<WebSockets>, mut request: Request) -> StageResult {
    let Some(settings) = ws.settings.as_ref() else {
        return Err(GatewayError::WebSocketRefused("websocket_not_enabled"));
    };
    if !settings.paths.iter().any(|p| p == request.uri().path()) {
        return Err(GatewayError::WebSocketRefused("websocket_path"));
    }
    let headers = request.headers();
    let key_ok = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .is_some_and(|k| k.len() == 24);
    let version_ok = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v == "13");
    if request.method() != Method::GET
        || request.version() != Version::HTTP_11
        || !key_ok
        || !version_ok
    {
        return Err(GatewayError::WebSocketRefused("websocket_handshake"));
    }
    if let (Some(cors), Some(origin)) = (&ws.cors, request.headers().get(header::ORIGIN))
        && !origin.to_str().is_ok_and(|o| cors.allows(o))
    {
        return Err(GatewayError::OriginForbidden);
    }
    let Some(on_client) = request.extensions_mut().remove::<OnUpgrade>() else {
        return Err(GatewayError::WebSocketRefused("websocket_handshake"));
    };
    let user: Arc<str> = match RequestContext::of(&request) {
        Some(c) => match c.principal.as_deref() {
            Some(p) => p.user.clone(),
            None => Arc::from(c.client_ip.to_string()),
        },
        None => Arc::from("unknown"),
    };
    let Some(slot) = ws.sockets.admit(user, settings.max_per_user) else {
        return Err(GatewayError::RateLimited {
            retry_after: 1,
            rule: "websocket_sockets",
            state: None,
        });
    };
    let offered = request
        .headers()
        .contains_key(header::SEC_WEBSOCKET_PROTOCOL);
    crate::auth::remove_subprotocol_token(request.headers_mut());
    // Extensions would compress frames past the size limit's eyes: none is negotiated.
    request
        .headers_mut()
        .remove(header::SEC_WEBSOCKET_EXTENSIONS);
    let (answer, on_upstream) = ws.upstream.open_websocket(request).await?;
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Some(accept) = answer.get(header::SEC_WEBSOCKET_ACCEPT) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept.clone());
    }
    if offered
        && let Some(chosen) = answer.get(header::SEC_WEBSOCKET_PROTOCOL)
        && !chosen
            .to_str()
            .is_ok_and(|c| c.starts_with(crate::auth::SUBPROTOCOL_TOKEN_PREFIX))
    {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, chosen.clone());
    }
    let (report, summary) = oneshot::channel();
    response.extensions_mut().insert(SocketAudit::new(summary));
    let relay = Relay {
        max_message_bytes: settings.max_message_bytes,
        idle_timeout: settings.idle_timeout,
        stop: ws.sockets.stop.subscribe(),
        metrics: ws.metrics.clone(),
    };
    let metrics = ws.metrics.clone();
    tokio::spawn(async move {
        let _slot = slot;
        metrics.websocket_open.inc();
        let summary = match on_client.await {
            Ok(client) => relay.run(client, on_upstream).await,
            Err(_) => SocketSummary {
                bytes_in: 0,
                bytes_out: 0,
                messages_in: 0,
                messages_out: 0,
                end: StreamEnd::ClientClosed,
            },
        };
        metrics.websocket_open.dec();
        metrics.websocket_closed(summary.end.as_str());
        let _ = report.send(summary);
    });
    Ok(response)
}

/// The bounds of one socket's relay.
struct Relay {
    max_message_bytes: usize,
    idle_timeout: Duration,
    stop: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
}

/// Which side a message came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Upstream,
}

impl Relay {
    /// Relays messages both ways until either side closes, a bound is crossed, or shutdown.
    async fn run(mut self, client: Upgraded, upstream: Upgraded) -> SocketSummary {
        // Small read buffers (the default 128 KiB each would cost a quarter of a MiB per idle
        // socket) and no write buffering: `send` flushes each message anyway.
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(0)
            .max_message_size(Some(self.max_message_bytes))
            .max_frame_size(Some(self.max_message_bytes));
        let mut client =
            WebSocketStream::from_raw_socket(TokioIo::new(client), Role::Server, Some(config))
                .await;
        let mut upstream =
            WebSocketStream::from_raw_socket(TokioIo::new(upstream), Role::Client, Some(config))
                .await;
        let mut summary = SocketSummary {
            bytes_in: 0,
            bytes_out: 0,
            messages_in: 0,
            messages_out: 0,
            end: StreamEnd::ClientClosed,
        };
        let idle = tokio::time::sleep(self.idle_timeout);
        tokio::pin!(idle);
        loop {
            let (side, next) = tokio::select! {
                biased;
                () = stopped(&mut self.stop) => {
                    close_both(&mut client, &mut upstream, CloseCode::Away).await;
                    summary.end = StreamEnd::SocketClosed(1001);
                    break;
                }
                () = &mut idle => {
                    close_both(&mut client, &mut upstream, CloseCode::Away).await;
                    summary.end = StreamEnd::SocketIdleTimeout;
                    break;
                }
                next = client.next() => (Side::Client, next),
                next = upstream.next() => (Side::Upstream, next),
            };
            idle.as_mut()
                .reset(tokio::time::Instant::now() + self.idle_timeout);
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. }))) => {
                    close_both(&mut client, &mut upstream, CloseCode::Size).await;
                    summary.end = StreamEnd::SocketMessageTooBig;
                    break;
                }
                Some(Err(_)) | None => {
                    // The side went away without a close frame: tell the other one.
                    let (other, end) = match side {
                        Side::Client => (&mut upstream, StreamEnd::ClientClosed),
                        Side::Upstream => (&mut client, StreamEnd::SocketUpstreamClosed),
                    };
                    let _ = tokio::time::timeout(
                        CLOSE_WAIT,
                        other.close(Some(close_frame(CloseCode::Away))),
                    )
                    .await;
                    summary.end = end;
                    break;
                }
            };
            let len = message.len() as u64;
            let counted = matches!(message, Message::Text(_) | Message::Binary(_));
            if let Message::Close(frame) = &message {
                // Relay the close with its code; the sender got its reply from our side.
                let code = frame.as_ref().map_or(1005, |f| u16::from(f.code));
                let (from, other) = match side {
                    Side::Client => (&mut client, &mut upstream),
                    Side::Upstream => (&mut upstream, &mut client),
                };
                // The close reply to the sender is queued by the codec: send it now.
                let _ = tokio::time::timeout(CLOSE_WAIT, from.flush()).await;
                let _ = tokio::time::timeout(CLOSE_WAIT, other.close(frame.clone())).await;
                // Let the other side's close reply arrive, briefly.
                let _ = tokio::time::timeout(CLOSE_WAIT, async {
                    while let Some(Ok(_)) = other.next().await {}
                })
                .await;
                summary.end = StreamEnd::SocketClosed(code);
                break;
            }
            let sent = match side {
                Side::Client => {
                    if counted {
                        summary.messages_in += 1;
                        summary.bytes_in += len;
                    }
                    tokio::time::timeout(self.idle_timeout, upstream.send(message)).await
                }
                Side::Upstream => {
                    if counted {
                        summary.messages_out += 1;
                        summary.bytes_out += len;
                    }
                    tokio::time::timeout(self.idle_timeout, client.send(message)).await
                }
            };
            // A side that stops reading cannot hold the relay: a send that makes no progress
            // for idle_timeout ends the socket as a failed one does.
            if !matches!(sent, Ok(Ok(()))) {
                let (other, end) = match side {
                    Side::Client => (&mut client, StreamEnd::SocketUpstreamClosed),
                    Side::Upstream => (&mut upstream, StreamEnd::ClientClosed),
                };
                let _ = tokio::time::timeout(
                    CLOSE_WAIT,
                    other.close(Some(close_frame(CloseCode::Away))),
                )
                .await;
                summary.end = end;
                break;
            }
        }
        self.metrics
            .websocket_messages
            .inc_by(summary.messages_in + summary.messages_out);
        summary
    }
}

/// Completes once shutdown has begun.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

fn close_frame(code: CloseCode) -> CloseFrame {
    CloseFrame {
        code,
        reason: "".into(),
    }
}

/// Closes both sides with `code`, each bounded in time.
async fn close_both(
    client: &mut WebSocketStream<TokioIo<Upgraded>>,
    upstream: &mut WebSocketStream<TokioIo<Upgraded>>,
    code: CloseCode,
) {
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        let _ = client.close(Some(close_frame(code))).await;
        let _ = upstream.close(Some(close_frame(code))).await;
    })
    .await;
}

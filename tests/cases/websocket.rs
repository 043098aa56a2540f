//! WebSocket pass-through (`[websocket]`): the handshake through the pipeline, the token in a
//! header or a subprotocol, messages relayed both ways with their bounds, one audit record per
//! socket, the per-user cap, and shutdown.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::common::keys::{self, AUDIENCE, ISSUER, TestKey, claims};
use crate::common::websocket::{Socket, WsUpstream, connect};
use crate::common::{Options, TestGateway, wait_until};

struct Setup {
    gateway: TestGateway,
    upstream: WsUpstream,
    key: TestKey,
    _dir: tempfile::TempDir,
}

async fn setup(websocket: Option<&str>) -> Option<Setup> {
    let upstream = WsUpstream::start()?;
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::es256("es-1");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, keys::jwks(&[&key])).unwrap();
    let websocket = websocket
        .map(|w| format!("[websocket]\npaths = [\"/v1/realtime\"]\n{w}\n"))
        .unwrap_or_default();
    let gateway = TestGateway::start_with(
        &upstream.url(),
        Options {
            extra: format!(
                "[auth]\nissuer = \"{ISSUER}\"\naudiences = [\"{AUDIENCE}\"]\n\
                 algorithms = [\"ES256\"]\njwks_file = \"{}\"\n\n{websocket}",
                jwks.display()
            ),
            ..Options::default()
        },
    )
    .await;
    Some(Setup {
        gateway,
        upstream,
        key,
        _dir: dir,
    })
}

impl Setup {
    fn url(&self, path: &str) -> String {
        format!("wss://localhost:{}{path}", self.gateway.addr.port())
    }

    async fn open(&self, user: &str) -> Socket {
        let token = self.key.sign(&claims(user));
        let bearer = format!("Bearer {token}");
        connect(
            &self.gateway.pki,
            &self.url("/v1/realtime"),
            &[("authorization", &bearer)],
        )
        .await
        .unwrap_or_else(|(status, body)| panic!("{status}: {body}"))
        .0
    }
}

/// The next message that is not a ping or pong.
async fn next(socket: &mut Socket) -> Message {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("no message within 10 s")
            .expect("the socket ended")
            .expect("a socket error");
        if !matches!(message, Message::Ping(_) | Message::Pong(_)) {
            return message;
        }
    }
}

fn close_code(message: &Message) -> Option<u16> {
    match message {
        Message::Close(Some(frame)) => Some(u16::from(frame.code)),
        _ => None,
    }
}

#[tokio::test]
async fn handshakes_are_requests_of_the_pipeline() {
    let Some(s) = setup(Some("")).await else {
        return;
    };
    // No token: the usual 401, nothing reaches the agent.
    let (status, body) = connect(&s.gateway.pki, &s.url("/v1/realtime"), &[])
        .await
        .err()
        .unwrap();
    assert_eq!(status, 401, "{body}");
    // An upgrade on another path: 400 bad_request, nothing forwarded.
    let token = s.key.sign(&claims("ws-user"));
    let bearer = format!("Bearer {token}");
    let (status, body) = connect(
        &s.gateway.pki,
        &s.url("/v1/chat"),
        &[("authorization", &bearer)],
    )
    .await
    .err()
    .unwrap();
    assert_eq!(status, 400);
    assert!(
        body.contains("WebSocket upgrades are not accepted on this path"),
        "{body}"
    );
    assert_eq!(s.upstream.opened(), 0);
    let g = &s.gateway;
    wait_until("no bad_request record", || async move {
        let audit = std::fs::read_to_string(&g.audit_path).unwrap();
        audit.contains("\"decision\":\"bad_request\"")
    })
    .await;

    // Without [websocket], every upgrade is refused.
    let Some(off) = setup(None).await else {
        return;
    };
    let token = off.key.sign(&claims("ws-user"));
    let bearer = format!("Bearer {token}");
    let (status, _) = connect(
        &off.gateway.pki,
        &off.url("/v1/realtime"),
        &[("authorization", &bearer)],
    )
    .await
    .err()
    .unwrap();
    assert_eq!(status, 400);
    assert_eq!(off.upstream.opened(), 0);
}

#[tokio::test]
async fn messages_relay_both_ways_and_the_token_never_reaches_the_agent() {
    let Some(s) = setup(Some("max_message_bytes = 2097152")).await else {
        return;
    };
    let token = s.key.sign(&claims("ws-user"));

    // Token in the Authorization header.
    let bearer = format!("Bearer {token}");
    let (mut socket, _) = connect(
        &s.gateway.pki,
        &s.url("/v1/realtime"),
        &[("authorization", &bearer)],
    )
    .await
    .unwrap();
    socket.send(Message::text("hello")).await.unwrap();
    assert_eq!(next(&mut socket).await, Message::text("hello"));
    for size in [1024, 64 * 1024, 1024 * 1024] {
        let payload = vec![b'a' + (size % 26) as u8; size];
        socket.send(Message::binary(payload.clone())).await.unwrap();
        assert_eq!(next(&mut socket).await, Message::binary(payload));
    }
    // Pings pass both ways: the agent's ping reaches the client, the client's pong the agent.
    socket
        .send(Message::text("ping:are-you-there"))
        .await
        .unwrap();
    let mut pinged = false;
    let answer = loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match message {
            Message::Ping(data) => pinged |= &data[..] == b"are-you-there",
            Message::Pong(_) => {}
            other => break other,
        }
    };
    assert!(pinged, "the agent's ping never reached the client");
    assert_eq!(answer, Message::text("pong are-you-there"));
    socket.send(Message::text("headers?")).await.unwrap();
    let Message::Text(seen) = next(&mut socket).await else {
        panic!("no headers")
    };
    let seen: serde_json::Value = serde_json::from_str(&seen).unwrap();
    assert!(seen.get("authorization").is_none(), "{seen}");
    assert_eq!(seen["x-portcullis-user"], "ws-user");
    assert!(seen.get("sec-websocket-extensions").is_none(), "{seen}");
    socket
        .close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "done".into(),
        }))
        .await
        .unwrap();

    // Token in a subprotocol, as a browser sends it: removed before forwarding, never echoed;
    // the agent's choice among the other offers is returned.
    let offer = format!("portcullis.bearer.{token}, realtime-v1");
    let (mut socket, response) = connect(
        &s.gateway.pki,
        &s.url("/v1/realtime"),
        &[("sec-websocket-protocol", &offer)],
    )
    .await
    .unwrap_or_else(|(status, body)| panic!("{status}: {body}"));
    assert_eq!(
        response.headers().get("sec-websocket-protocol").unwrap(),
        "realtime-v1"
    );
    socket.send(Message::text("headers?")).await.unwrap();
    let Message::Text(seen) = next(&mut socket).await else {
        panic!("no headers")
    };
    assert!(
        !seen.contains(&token) && !seen.contains("portcullis.bearer"),
        "{seen}"
    );
    let seen: serde_json::Value = serde_json::from_str(&seen).unwrap();
    assert_eq!(seen["sec-websocket-protocol"], "realtime-v1");
    socket.close(None).await.unwrap();
    let g = &s.gateway;
    wait_until("no socket records", || async move {
        let audit = std::fs::read_to_string(&g.audit_path).unwrap();
        audit.matches("\"status\":101").count() == 2
    })
    .await;
    let audit = std::fs::read_to_string(&s.gateway.audit_path).unwrap();
    assert!(!audit.contains(&token));
    // One record per socket, written at its close: what it carried and how it ended.
    let sockets: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["status"] == 101)
        .collect();
    let first = sockets.iter().find(|r| r["messages_in"] == 6).unwrap();
    assert_eq!(first["decision"], "allowed");
    assert_eq!(first["messages_in"], 6);
    assert_eq!(first["messages_out"], 6);
    assert_eq!(
        first["bytes_in"],
        5 + 1024 + 64 * 1024 + 1024 * 1024 + "ping:are-you-there".len() + 8
    );
    assert_eq!(first["end"], "1000");
    assert!(first["bytes_out"].as_u64().unwrap() > 1024 * 1024);
}

#[tokio::test]
async fn bounds_close_the_socket_with_their_codes() {
    let Some(s) = setup(Some("max_message_bytes = 65536\nmax_per_user = 2")).await else {
        return;
    };
    // A client message over the limit: 1009 to the client.
    let mut socket = s.open("big-client").await;
    socket
        .send(Message::binary(vec![0u8; 70_000]))
        .await
        .unwrap();
    assert_eq!(close_code(&next(&mut socket).await), Some(1009));
    // An agent message over the limit: 1009 too.
    let mut socket = s.open("big-agent").await;
    socket.send(Message::text("send:1:70000")).await.unwrap();
    assert_eq!(close_code(&next(&mut socket).await), Some(1009));
    // A close from the agent is relayed with its code.
    let mut socket = s.open("agent-closes").await;
    socket.send(Message::text("close:4001")).await.unwrap();
    assert_eq!(close_code(&next(&mut socket).await), Some(4001));

    // Two open sockets per user; the third handshake is refused 429.
    let _a = s.open("capped").await;
    let _b = s.open("capped").await;
    let token = s.key.sign(&claims("capped"));
    let bearer = format!("Bearer {token}");
    let (status, _) = connect(
        &s.gateway.pki,
        &s.url("/v1/realtime"),
        &[("authorization", &bearer)],
    )
    .await
    .err()
    .unwrap();
    assert_eq!(status, 429);
    // The open-sockets gauge: the two, once the closed ones above have finished their close.
    let g = &s.gateway;
    wait_until(
        "the gauge never showed the two open sockets",
        || async move { g.metric("portcullis_websocket_open").await == 2.0 },
    )
    .await;
    wait_until("no socket records", || async move {
        let audit = std::fs::read_to_string(&g.audit_path).unwrap();
        ["\"end\":\"message_too_big\"", "\"end\":\"4001\""]
            .iter()
            .all(|end| audit.contains(end))
    })
    .await;
    assert!(
        s.gateway
            .metric(r#"portcullis_websocket_closed_total{end="message_too_big"}"#)
            .await
            >= 2.0
    );
}

#[tokio::test]
async fn an_idle_socket_is_closed_with_1001() {
    let Some(s) = setup(Some("idle_timeout = \"1s\"")).await else {
        return;
    };
    // Traffic keeps it open past the idle time...
    let mut socket = s.open("idle").await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        socket.send(Message::text("still here")).await.unwrap();
        assert_eq!(next(&mut socket).await, Message::text("still here"));
    }
    // ...and nothing in either direction for idle_timeout closes it: 1001.
    let started = std::time::Instant::now();
    assert_eq!(close_code(&next(&mut socket).await), Some(1001));
    assert!(started.elapsed() >= Duration::from_millis(900));
    let g = &s.gateway;
    wait_until("no idle_timeout record", || async move {
        let audit = std::fs::read_to_string(&g.audit_path).unwrap();
        audit.contains("\"end\":\"idle_timeout\"")
    })
    .await;
}

#[tokio::test]
async fn shutdown_closes_open_sockets_with_1001() {
    let Some(s) = setup(Some("")).await else {
        return;
    };
    let mut socket = s.open("shutdown").await;
    socket.send(Message::text("ping?")).await.unwrap();
    assert_eq!(next(&mut socket).await, Message::text("ping?"));
    let mut s = s;
    let stopping = s.gateway.begin_shutdown();
    let message = next(&mut socket).await;
    assert_eq!(close_code(&message), Some(u16::from(CloseCode::Away)));
    // The gateway finishes once the socket is closed, well within shutdown_grace.
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the gateway did not finish")
        .unwrap();
}

#[tokio::test]
async fn the_websockets_library_client_talks_through_the_gateway() {
    let Some(s) = setup(Some("")).await else {
        return;
    };
    let token = s.key.sign(&claims("sdk-user"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/ws_client.py");
    let seen = crate::common::python::run(
        script,
        vec![
            s.url("/v1/realtime"),
            s.gateway.pki.ca_file.display().to_string(),
            token,
        ],
    )
    .await;
    let seen: serde_json::Value = serde_json::from_str(&seen).unwrap();
    assert_eq!(seen["subprotocol"], "realtime-v1", "{seen}");
    assert_eq!(seen["text"], "hello from the sdk", "{seen}");
    assert_eq!(seen["binary_echoed"], true, "{seen}");
    assert_eq!(seen["close"], 1000, "{seen}");
    let g = &s.gateway;
    wait_until("no socket record", || async move {
        let audit = std::fs::read_to_string(&g.audit_path).unwrap();
        audit.contains("\"status\":101") && audit.contains("\"end\":\"1000\"")
    })
    .await;
}

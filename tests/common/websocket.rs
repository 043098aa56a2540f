//! WebSocket peers: the agent (tests/sdk/ws_upstream.py, on Python's `websockets` server) and a
//! client (tokio-tungstenite over rustls, trusting the test CA, HTTP/1.1 by ALPN).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::Response;

use super::TestPki;

/// The WebSocket agent, and the paths of the sockets it accepted.
pub struct WsUpstream {
    pub port: u16,
    child: Child,
    opened: Arc<Mutex<Vec<String>>>,
}

impl WsUpstream {
    /// Starts the agent, or `None` (after saying why) when `websockets` is not installed.
    pub fn start() -> Option<WsUpstream> {
        if !super::python::has_module("websockets") {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/ws_upstream.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "ready");
        let opened = Arc::new(Mutex::new(Vec::new()));
        let seen = opened.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Some(path) = line.strip_prefix("open ") {
                    seen.lock().unwrap().push(path.to_owned());
                }
            }
        });
        Some(WsUpstream {
            port,
            child,
            opened,
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Sockets the agent accepted so far.
    pub fn opened(&self) -> usize {
        self.opened.lock().unwrap().len()
    }
}

impl Drop for WsUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub type Socket = WebSocketStream<TlsStream<TcpStream>>;

/// Opens a WebSocket to `url` (`wss://localhost:PORT/path`) with `headers`; the handshake's
/// answer, or the refusal's status and body.
pub async fn connect(
    pki: &TestPki,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<(Socket, Response<Option<Vec<u8>>>), (u16, String)> {
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        let name =
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    let port: u16 = url
        .split(':')
        .nth(2)
        .and_then(|p| p.split('/').next())
        .unwrap()
        .parse()
        .unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let connector = TlsConnector::from(pki.client_config(&[b"http/1.1"]));
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    match tokio_tungstenite::client_async(request, tls).await {
        Ok((socket, response)) => Ok((socket, response)),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            Err((status, body))
        }
        Err(e) => panic!("handshake failed: {e}"),
    }
}

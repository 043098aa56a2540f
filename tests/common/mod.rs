//! The test harness: the real gateway started from a real config file on loopback ports, with
//! certificates made at test time, a recording mock upstream, a TLS client and audit-log reading.

pub mod classifier;
pub mod examples;
pub mod jwks_server;
pub mod keys;
pub mod mcp;
pub mod oidc;
pub mod openai;
pub mod pki;
pub mod python;
pub mod redis;
pub mod upstream;
pub mod websocket;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use portcullis::audit::AuditSink;
use portcullis::config::Config;
use portcullis::server::{Gateway, Reloader};
use serde_json::Value;
use tokio::sync::oneshot;

pub use pki::TestPki;
pub use upstream::MockUpstream;

/// Extra TOML lines for the config's sections.
#[derive(Default, Clone)]
pub struct Options {
    /// Lines added to `[server]`.
    pub server: String,
    /// Lines added to `[server.tls]`.
    pub tls: String,
    /// Lines added to `[upstream]`.
    pub upstream: String,
    /// Sections appended to the config (e.g. a whole `[auth]` table).
    pub extra: String,
    /// Serve plain HTTP instead of TLS.
    pub plain: bool,
    /// Lines added to `[audit]`.
    pub audit: String,
    /// The audit log to write instead of a fresh one in the gateway's temp dir.
    pub audit_file: Option<PathBuf>,
}

/// A running gateway with its temp dir (config, certificates, audit log).
pub struct TestGateway {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub audit_path: PathBuf,
    pub pki: Arc<TestPki>,
    /// The config file the gateway was started from (and reloads from).
    pub config_path: PathBuf,
    /// Reloads the running gateway, as SIGHUP does.
    pub reloader: Reloader,
    upstream_url: String,
    /// The gateway's audit sink (to reopen or flush the log).
    pub audit_sink: AuditSink,
    /// Holds the config, certificates and audit log until the gateway is dropped.
    _dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestGateway {
    pub async fn start(upstream_url: &str) -> TestGateway {
        Self::start_with(upstream_url, Options::default()).await
    }

    pub async fn start_with(upstream_url: &str, options: Options) -> TestGateway {
        let dir = tempfile::tempdir().unwrap();
        let pki = Arc::new(TestPki::create(dir.path()));
        let audit_path = options
            .audit_file
            .clone()
            .unwrap_or_else(|| dir.path().join("audit.log"));
        let config_path = dir.path().join("portcullis.toml");
        std::fs::write(
            &config_path,
            config_text(&pki, upstream_url, &audit_path, &options),
        )
        .unwrap();
        let config = Config::load(&config_path).unwrap();
        let gateway = Gateway::bind(config).await.unwrap();
        let addr = gateway.local_addr();
        let admin = gateway.admin_addr().unwrap();
        let reloader = gateway.reloader();
        let audit_sink = gateway.audit_sink();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(gateway.serve(async move {
            let _ = rx.await;
        }));
        TestGateway {
            addr,
            admin,
            audit_path,
            pki,
            config_path,
            reloader,
            upstream_url: upstream_url.to_owned(),
            audit_sink,
            _dir: dir,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Rewrites the config file with `options` (same certificates, upstream and audit log) and
    /// reloads it as SIGHUP does; true when the new configuration is in force.
    pub async fn reload(&self, options: &Options) -> bool {
        let text = config_text(&self.pki, &self.upstream_url, &self.audit_path, options);
        std::fs::write(&self.config_path, text).unwrap();
        self.reloader.reload_file(&self.config_path).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{}", self.addr.port(), path)
    }

    /// A client trusting the test CA, HTTP/1.1 only.
    pub fn client(&self) -> TestClient {
        TestClient::new(&self.pki, false)
    }

    /// A client trusting the test CA, HTTP/2 only.
    pub fn h2_client(&self) -> TestClient {
        TestClient::new(&self.pki, true)
    }

    /// Signals shutdown and returns the task that completes when the gateway has drained.
    pub fn begin_shutdown(&mut self) -> tokio::task::JoinHandle<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.take().unwrap()
    }

    /// Every audit record written so far. A line the writer is still in the middle of (no
    /// newline yet) is not a record yet, as for any reader tailing a log file.
    pub fn audit_records(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.audit_path).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .collect()
    }

    /// Waits for the audit record of `request_id` (records are written off the request path).
    pub async fn audit_record(&self, request_id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(record) = self
                .audit_records()
                .into_iter()
                .find(|r| r["request_id"] == request_id)
            {
                return record;
            }
            assert!(
                Instant::now() < deadline,
                "no audit record for {request_id}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The value of a metric line (name with labels, exactly as exposed), 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.admin_get("/metrics").await;
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }

    /// GET on the admin listener.
    pub async fn admin_get(&self, path: &str) -> (StatusCode, String) {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let uri = format!("http://{}{}", self.admin, path);
        let response = client.get(uri.parse().unwrap()).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

pub fn config_text(pki: &TestPki, upstream_url: &str, audit: &Path, options: &Options) -> String {
    let tls = if options.plain {
        String::new()
    } else {
        format!(
            "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n{}\n",
            pki.cert_file.display(),
            pki.key_file.display(),
            options.tls
        )
    };
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"5s\"\n{server}\n{tls}\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [upstream]\nurl = \"{upstream_url}\"\n{upstream}\n\n\
         [audit]\noutput = \"{audit}\"\n{audit_lines}\n\n{extra}\n",
        server = options.server,
        upstream = options.upstream,
        audit = audit.display(),
        audit_lines = options.audit,
        extra = options.extra,
    )
}

/// Polls `check` every 100 ms until it holds; fails the test naming `what` after 10 s.
pub async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An answer read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub version: http::Version,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("body is JSON")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn request_id(&self) -> String {
        self.header("x-request-id")
            .expect("x-request-id present")
            .to_owned()
    }
}

/// A real HTTPS client trusting the test CA; clones share one connection pool.
#[derive(Clone)]
pub struct TestClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl TestClient {
    pub fn new(pki: &TestPki, h2: bool) -> TestClient {
        // hyper-rustls sets ALPN itself from the enabled protocols.
        let config = (*pki.client_config(&[])).clone();
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only();
        let connector = if h2 {
            builder.enable_http2().build()
        } else {
            builder.enable_http1().build()
        };
        let client = Client::builder(TokioExecutor::new())
            .http2_only(h2)
            .build(connector);
        TestClient { client }
    }

    pub async fn send(&self, request: Request<Full<Bytes>>) -> Response<Incoming> {
        tokio::time::timeout(Duration::from_secs(15), self.client.request(request))
            .await
            .expect("gateway answered in time")
            .expect("request reached the gateway")
    }

    pub async fn send_whole(&self, request: Request<Full<Bytes>>) -> Reply {
        let response = self.send(request).await;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
            version: parts.version,
        }
    }

    /// A GET whose failure (connection refused or closed, timeout) is an answer, not a panic.
    pub async fn try_get(&self, url: &str) -> Result<Reply, String> {
        let request = Request::get(url).body(Full::default()).unwrap();
        let response = tokio::time::timeout(Duration::from_secs(15), self.client.request(request))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
            version: parts.version,
        })
    }

    pub async fn get(&self, url: &str) -> Reply {
        self.send_whole(Request::get(url).body(Full::default()).unwrap())
            .await
    }

    /// A GET answered at its head: the body is left to the caller, still arriving (streams).
    pub async fn open(&self, url: &str) -> Response<Incoming> {
        self.send(Request::get(url).body(Full::default()).unwrap())
            .await
    }

    pub async fn post_json(&self, url: &str, body: &str) -> Reply {
        self.send_whole(
            Request::post(url)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_owned())))
                .unwrap(),
        )
        .await
    }
}

/// Asserts a gateway-made problem+json error and returns its body.
pub fn assert_problem(reply: &Reply, status: u16) -> Value {
    assert_eq!(
        reply.status.as_u16(),
        status,
        "status; body: {}",
        reply.text()
    );
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json")
    );
    let problem = reply.json();
    assert_eq!(problem["status"], status);
    assert!(problem["type"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(problem["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(problem["request_id"], reply.request_id());
    problem
}

/// Asserts the security headers every response must carry (TLS listener).
pub fn assert_security_headers(reply: &Reply) {
    assert!(reply.header("x-request-id").is_some_and(|v| v.len() == 36));
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(reply.header("x-frame-options"), Some("DENY"));
    assert_eq!(reply.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(
        reply.header("strict-transport-security"),
        Some("max-age=63072000; includeSubDomains")
    );
    assert_eq!(
        reply.header("content-security-policy"),
        Some("default-src 'none'; frame-ancestors 'none'")
    );
    assert!(reply.header("server").is_none());
    assert!(reply.header("x-powered-by").is_none());
}

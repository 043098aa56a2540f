//! WebSocket relay throughput: messages per second through the gateway and through nginx's
//! WebSocket proxy, in one run, both terminating TLS in front of the same echo agent.
//!
//!   cargo build --release --locked && cargo bench --bench ws_relay
//!
//! The gateway (release build, `[websocket]`, no authentication: nginx does none either) and nginx
//! (1 worker) run pinned to core 0; this process (the echo agent and the clients) should run on
//! the other core: `taskset -c 1 cargo bench --bench ws_relay`. Each of 32 clients sends a message
//! and waits for its echo, for 5 s per round, with 64-byte and 16 KiB messages; the table shows
//! round trips per second (two relayed messages each), p99 and the ratio to nginx.

// A benchmark: setup failures abort the run with their reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const CLIENTS: usize = 32;
const ROUND: Duration = Duration::from_secs(5);
const ROUNDS: usize = 3;
const SIZES: [usize; 2] = [64, 16 * 1024];

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = certificate(dir.path());
    let agent = echo_agent().await;
    let gateway_port = free_port();
    let nginx_port = free_port();
    let mut gateway = start_gateway(dir.path(), gateway_port, agent, &cert, &key);
    let mut nginx = start_nginx(dir.path(), nginx_port, agent, &cert, &key);
    wait_port(gateway_port).await;
    wait_port(nginx_port).await;
    let tls = client_tls();
    println!("{CLIENTS} clients, echo round trips, {ROUNDS} rounds x {ROUND:?}, median round");
    println!(
        "{:<10} {:>7} {:>14} {:>9} {:>12}",
        "target", "size", "round trips/s", "p99 ms", "vs nginx"
    );
    for size in SIZES {
        let mut results = Vec::new();
        for (name, port) in [("nginx", nginx_port), ("portcullis", gateway_port)] {
            let mut rounds = Vec::new();
            for _ in 0..ROUNDS {
                rounds.push(load(port, size, tls.clone()).await);
            }
            rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
            results.push((name, rounds[ROUNDS / 2]));
        }
        let nginx_rate = results[0].1.0;
        for (name, (rate, p99)) in results {
            println!(
                "{name:<10} {size:>7} {rate:>14.0} {:>9.2} {:>11.2}x",
                p99.as_secs_f64() * 1000.0,
                rate / nginx_rate
            );
        }
    }
    let _ = gateway.kill();
    let _ = nginx.kill();
    let _ = gateway.wait();
    let _ = nginx.wait();
}

/// Round trips per second and their p99 over one round of `CLIENTS` sockets.
async fn load(port: u16, size: usize, tls: Arc<rustls::ClientConfig>) -> (f64, Duration) {
    let payload = vec![b'x'; size];
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let payload = payload.clone();
        let tls = tls.clone();
        tasks.push(tokio::spawn(async move {
            let tcp = TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            let _ = tcp.set_nodelay(true);
            let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
            let stream = tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await
                .expect("TLS");
            let request = format!("wss://localhost:{port}/ws")
                .into_client_request()
                .expect("request");
            let (mut socket, _) = tokio_tungstenite::client_async(request, stream)
                .await
                .expect("handshake");
            let mut times = Vec::new();
            let end = Instant::now() + ROUND;
            while Instant::now() < end {
                let sent = Instant::now();
                socket
                    .send(Message::binary(payload.clone()))
                    .await
                    .expect("send");
                loop {
                    match socket.next().await {
                        Some(Ok(Message::Binary(_))) => break,
                        Some(Ok(_)) => continue,
                        other => panic!("socket ended: {other:?}"),
                    }
                }
                times.push(sent.elapsed());
            }
            let _ = socket.close(None).await;
            times
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("client"));
    }
    all.sort();
    let p99 = all
        .get(all.len() * 99 / 100)
        .copied()
        .unwrap_or(Duration::ZERO);
    (all.len() as f64 / ROUND.as_secs_f64(), p99)
}

/// The agent: echoes every message, on plain WebSocket.
async fn echo_agent() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = socket.next().await {
                    if message.is_binary() || message.is_text() {
                        if socket.send(message).await.is_err() {
                            return;
                        }
                    } else if message.is_close() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

async fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, made.cert.pem()).expect("write cert");
    std::fs::write(&key, made.signing_key.serialize_pem()).expect("write key");
    (cert, key)
}

fn client_tls() -> Arc<rustls::ClientConfig> {
    #[derive(Debug)]
    struct AnyCertificate;
    impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _: &rustls_pki_types::CertificateDer<'_>,
            _: &[rustls_pki_types::CertificateDer<'_>],
            _: &rustls_pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls_pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls_pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls_pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    // The bench's own throw-away certificate is the one both servers present.
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AnyCertificate))
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

fn start_gateway(dir: &Path, port: u16, agent: SocketAddr, cert: &Path, key: &Path) -> Child {
    let config = dir.join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[server.tls]\ncert_file = \"{}\"\n\
             key_file = \"{}\"\n[upstream]\nurl = \"http://{agent}\"\n[websocket]\n\
             paths = [\"/ws\"]\nmax_per_user = 1000\n[audit]\noutput = \"{}\"\n",
            cert.display(),
            key.display(),
            dir.join("audit.log").display()
        ),
    )
    .expect("config");
    let binary = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/portcullis");
    Command::new("taskset")
        .arg("-c")
        .arg("0")
        .arg(binary)
        .args(["run", "--config"])
        .arg(&config)
        .env("PORTCULLIS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the release gateway (cargo build --release first)")
}

fn start_nginx(dir: &Path, port: u16, agent: SocketAddr, cert: &Path, key: &Path) -> Child {
    let config = dir.join("nginx.conf");
    let d = dir.display();
    std::fs::write(
        &config,
        format!(
            "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/nginx.err warn;\n\
             events {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n\
             client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {};\n\
             ssl_certificate_key {};\n    ssl_protocols TLSv1.2 TLSv1.3;\n\
             location /ws {{\n      proxy_pass http://{agent};\n      proxy_http_version 1.1;\n\
             proxy_set_header Upgrade $http_upgrade;\n      proxy_set_header Connection \"upgrade\";\n\
             proxy_read_timeout 300s;\n    }}\n  }}\n}}\n",
            cert.display(),
            key.display()
        ),
    )
    .expect("nginx config");
    Command::new("taskset")
        .args(["-c", "0", "nginx", "-c"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx (apt-get install nginx)")
}

//! The floor under the gateway's keep-alive cost: the same libraries (Tokio's single-threaded
//! scheduler, rustls with the gateway's server configuration, hyper's HTTP/1.1 server and client,
//! jemalloc) forwarding requests with nothing else — no checks, no headers, no audit, no limits.
//! The load benchmark runs it as the `floor` target, so a run shows how much of the distance to
//! nginx is the stack's own and how much the gateway's work.
//!
//! Usage: `floor_proxy LISTEN UPSTREAM CERT KEY` (addresses as `127.0.0.1:port`). Each client
//! connection gets its own upstream connection, opened on its first request and kept for the
//! next ones: under keep-alive load that is what a pool hands out.

use std::error::Error;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio_rustls::TlsAcceptor;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

type BoxError = Box<dyn Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, upstream, cert, key] = args.as_slice() else {
        return Err("usage: floor_proxy LISTEN UPSTREAM CERT KEY".into());
    };
    let listen: SocketAddr = listen.parse()?;
    let upstream: SocketAddr = upstream.parse()?;
    let acceptor = TlsAcceptor::from(tls_config(Path::new(cert), Path::new(key))?);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(listen, upstream, acceptor))
}

/// The gateway's TLS settings: ring, AES-128-GCM first, TLS 1.3 and 1.2, one session ticket.
fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, BoxError> {
    use rustls::crypto::ring::cipher_suite as suite;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            suite::TLS13_AES_128_GCM_SHA256,
            suite::TLS13_AES_256_GCM_SHA384,
        ],
        ..rustls::crypto::ring::default_provider()
    };
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.send_tls13_tickets = 1;
    Ok(Arc::new(config))
}

async fn serve(
    listen: SocketAddr,
    upstream: SocketAddr,
    acceptor: TlsAcceptor,
) -> Result<(), BoxError> {
    let listener = TcpListener::bind(listen).await?;
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let sender: Arc<Mutex<Option<SendRequest<Incoming>>>> = Arc::default();
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let sender = sender.clone();
                forward(sender, upstream, request)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

async fn forward(
    sender: Arc<Mutex<Option<SendRequest<Incoming>>>>,
    upstream: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Incoming>, BoxError> {
    let mut slot = sender.lock().await;
    if slot.as_ref().is_none_or(|s| s.is_closed()) {
        let tcp = TcpStream::connect(upstream).await?;
        tcp.set_nodelay(true)?;
        let (send, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(connection);
        *slot = Some(send);
    }
    let Some(send) = slot.as_mut() else {
        return Err(BoxError::from("no upstream connection"));
    };
    send.ready().await?;
    let (mut parts, body) = request.into_parts();
    parts.uri = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .parse()?;
    Ok(send.send_request(Request::from_parts(parts, body)).await?)
}

//! TLS termination with rustls, and certificate rotation without a restart.
//!
//! Guards against downgrade, misconfiguration and expired certificates: only TLS 1.2 and 1.3
//! with rustls' safe cipher suites, ALPN offering h2 and http/1.1, certificate files checked when
//! the config loads, and a [`CertStore`] that picks up renewed files (following the symlink swap
//! Kubernetes uses for Secret mounts) for new handshakes while open connections stay undisturbed.
//! A broken new certificate is refused and the one in force kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use crate::file_stamp::FileStamp;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// ALPN protocol ids offered to clients, preferred first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Reads a PEM certificate chain; the message names what is wrong, never the file's content.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let data = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| format!("{} is not a valid PEM certificate file", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let data = read(path)?;
    PrivateKeyDer::from_pem_slice(&data)
        .map_err(|_| format!("{} holds no usable PEM private key", path.display()))
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {} ({})", path.display(), e.kind()))
}

/// Sessions a TLS 1.2 client can resume from the server-side cache (TLS 1.3 uses tickets).
pub const SESSION_CACHE_SIZE: usize = 4096;

/// TLS session resumption state, shared by every server configuration of the process so that a
/// certificate rotation or a reload does not force every client through a full handshake.
struct Resumption {
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
    cache: Arc<dyn rustls::server::StoresServerSessions>,
}

/// Stateless session tickets (ChaCha20-Poly1305, keys made in memory at start, rotated every
/// 6 hours, the previous key still accepted) and a bounded session-id cache.
fn resumption() -> Result<&'static Resumption, String> {
    static RESUMPTION: OnceLock<Resumption> = OnceLock::new();
    if let Some(r) = RESUMPTION.get() {
        return Ok(r);
    }
    let ticketer = rustls::crypto::ring::Ticketer::new()
        .map_err(|_| "cannot make TLS session ticket keys".to_owned())?;
    Ok(RESUMPTION.get_or_init(|| Resumption {
        ticketer,
        cache: rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_SIZE),
    }))
}

/// The crypto provider used for every TLS context of the gateway.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server's cipher suite preference: AES-128-GCM with SHA-256 first (SHA-256 runs on the
/// CPU's SHA extensions, and AES-128 on AES-NI, so a handshake costs far less than with the
/// SHA-384 suites many clients list first), then AES-256-GCM, then ChaCha20-Poly1305. Every
/// suite is AEAD with forward secrecy; none is weak.
fn server_provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::cipher_suite as suite;
    Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            suite::TLS13_AES_128_GCM_SHA256,
            suite::TLS13_AES_256_GCM_SHA384,
            suite::TLS13_CHACHA20_POLY1305_SHA256,
            suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        ..rustls::crypto::ring::default_provider()
    })
}

/// Builds the server configuration: TLS 1.2 and 1.3, ALPN h2 and http/1.1, optional mTLS.
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_roots: Option<Vec<CertificateDer<'static>>>,
) -> Result<Arc<ServerConfig>, String> {
    let builder = ServerConfig::builder_with_provider(server_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|_| "no usable TLS protocol version".to_owned())?;
    let builder = match client_roots {
        None => builder.with_no_client_auth(),
        Some(roots) => {
            let mut store = RootCertStore::empty();
            for cert in roots {
                store
                    .add(cert)
                    .map_err(|_| "client_ca_file holds an unusable CA certificate".to_owned())?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider())
                .build()
                .map_err(|_| "client_ca_file cannot be used to verify clients".to_owned())?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|_| "the certificate and private key do not form a usable pair".to_owned())?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    config.ignore_client_order = true;
    // One ticket per handshake is enough for the client's next connection (the default two
    // cost a second ticket encryption and record on every connection).
    config.send_tls13_tickets = 1;
    let resumption = resumption()?;
    config.ticketer = resumption.ticketer.clone();
    config.session_storage = resumption.cache.clone();
    Ok(Arc::new(config))
}

/// Builds the client configuration for an `https` upstream: system roots plus `extra_roots`.
pub fn upstream_client_config(
    extra_roots: &[CertificateDer<'static>],
) -> Result<rustls::ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A system store may hold certificates rustls cannot parse; skipping them is what
        // every rustls client does, and the extra CA file below is checked strictly.
        let _ = roots.add(cert);
    }
    for cert in extra_roots {
        roots
            .add(cert.clone())
            .map_err(|_| "upstream.ca_file holds an unusable CA certificate".to_owned())?;
    }
    // ALPN (http/1.1) is set by the connector that uses this configuration.
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|_| "no usable TLS protocol version".to_owned())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The files a TLS configuration is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA bundle for client certificates (mTLS).
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// Reads the files and builds the server configuration.
    pub fn load(&self) -> Result<(Arc<ServerConfig>, Option<SystemTime>), String> {
        let certs = read_certs(&self.cert)?;
        let not_after = certs.first().and_then(not_after);
        let key = read_key(&self.key)?;
        let client_roots = match &self.client_ca {
            None => None,
            Some(path) => Some(read_certs(path)?),
        };
        Ok((server_config(certs, key, client_roots)?, not_after))
    }

    fn leaf_not_after(&self) -> Option<SystemTime> {
        read_certs(&self.cert)
            .ok()
            .and_then(|certs| certs.first().and_then(not_after))
    }

    /// What identifies the files' current content: device, inode, size and modification time of
    /// each, read through symlinks, so a swapped `..data` link counts as a change.
    fn stamp(&self) -> Option<Vec<FileStamp>> {
        std::iter::once(&self.cert)
            .chain(std::iter::once(&self.key))
            .chain(self.client_ca.iter())
            .map(|path| FileStamp::of(path))
            .collect()
    }
}

/// The expiry (`notAfter`) of a DER certificate.
pub fn not_after(cert: &CertificateDer<'_>) -> Option<SystemTime> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let seconds = parsed.validity().not_after.timestamp();
    let seconds = u64::try_from(seconds).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(seconds))
}

/// Whether a DER certificate is self-signed (its issuer is its subject).
pub fn is_self_signed(cert: &CertificateDer<'_>) -> bool {
    x509_parser::parse_x509_certificate(cert.as_ref())
        .is_ok_and(|(_, parsed)| parsed.issuer() == parsed.subject())
}

/// What a rotation check did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The files are as they were.
    Unchanged,
    /// New files were loaded and are in force for new handshakes.
    Loaded,
    /// The files changed but do not form a usable configuration; the old one stays.
    Refused(String),
}

/// The server configuration in force, swappable while connections are being accepted.
pub struct CertStore {
    current: ArcSwap<ServerConfig>,
    source: Mutex<Source>,
}

struct Source {
    files: Option<TlsFiles>,
    /// The stamp of the last content tried, loaded or refused, so a broken file is reported once.
    seen: Option<Vec<FileStamp>>,
    not_after: Option<SystemTime>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore").finish_non_exhaustive()
    }
}

impl CertStore {
    /// A store holding `config`, built from `files` (`None`: made in memory, never rotated).
    pub fn new(config: Arc<ServerConfig>, files: Option<TlsFiles>) -> CertStore {
        CertStore {
            current: ArcSwap::new(config),
            source: Mutex::new(Source {
                seen: files.as_ref().and_then(TlsFiles::stamp),
                not_after: files.as_ref().and_then(TlsFiles::leaf_not_after),
                files,
            }),
        }
    }

    /// The configuration for the next handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// The leaf certificate's expiry, when it could be read.
    pub fn not_after(&self) -> Option<SystemTime> {
        self.source.lock().ok().and_then(|s| s.not_after)
    }

    /// Puts a configuration built by a config reload in force, with the files it came from.
    pub fn replace(&self, config: Arc<ServerConfig>, files: Option<TlsFiles>) {
        if let Ok(mut source) = self.source.lock() {
            source.seen = files.as_ref().and_then(TlsFiles::stamp);
            source.not_after = files.as_ref().and_then(TlsFiles::leaf_not_after);
            source.files = files;
        }
        self.current.store(config);
    }

    /// Reloads the files if they changed since they were last read (`force`: even if not).
    pub fn check(&self, force: bool) -> Rotation {
        let Ok(mut source) = self.source.lock() else {
            return Rotation::Unchanged;
        };
        let Some(files) = source.files.clone() else {
            return Rotation::Unchanged;
        };
        let stamp = files.stamp();
        if !force && stamp == source.seen {
            return Rotation::Unchanged;
        }
        source.seen = stamp;
        match files.load() {
            Ok((config, not_after)) => {
                source.not_after = not_after;
                self.current.store(config);
                Rotation::Loaded
            }
            Err(reason) => Rotation::Refused(reason),
        }
    }
}

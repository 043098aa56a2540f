//! TLS termination with rustls.
//!
//! Guards against downgrade and misconfiguration: only TLS 1.2 and 1.3 with rustls' safe cipher
//! suites, ALPN offering h2 and http/1.1, and certificate files checked when the config loads.

use std::path::Path;
use std::sync::Arc;

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

/// The crypto provider used for every TLS context of the gateway.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the server configuration: TLS 1.2 and 1.3, ALPN h2 and http/1.1, optional mTLS.
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_roots: Option<Vec<CertificateDer<'static>>>,
) -> Result<Arc<ServerConfig>, String> {
    let builder = ServerConfig::builder_with_provider(provider())
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

//! `portcullis init DIR`: the step from dev mode to a production config.
//!
//! Writes a production-shaped `portcullis.toml` (every protection on, absolute paths so that it
//! runs from any working directory and under systemd), a self-signed certificate marked as for
//! trials only, and prints which lines to change. The lines to change are marked `CHANGE` in the
//! file; until the identity provider is filled in, `check-config --strict` refuses the config by
//! naming its placeholder host.
//!
//! Guards against overwriting a deployment: nothing is written when any of the files exists, and
//! the private key is created with mode 0600.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The identity provider the written config names until the operator changes it: a reserved
/// documentation domain, which the checklist WARNs about.
pub const PLACEHOLDER_ISSUER: &str = "https://idp.example.com/";

/// How long the trial certificate is valid.
const CERT_DAYS: i64 = 90;

/// What `init` wrote.
#[derive(Debug)]
pub struct Written {
    /// The config file.
    pub config: PathBuf,
    /// The trial certificate and its key.
    pub cert: PathBuf,
    /// The trial certificate's private key.
    pub key: PathBuf,
}

/// Writes the config and a trial certificate for `names` (DNS names or IP addresses) into `dir`,
/// which is created when missing.
pub fn init(dir: &Path, names: &[String]) -> Result<Written, String> {
    std::fs::create_dir_all(dir.join("tls"))
        .map_err(|e| format!("cannot create {} ({})", dir.display(), e.kind()))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("cannot resolve {} ({})", dir.display(), e.kind()))?;
    let written = Written {
        config: dir.join("portcullis.toml"),
        cert: dir.join("tls/cert.pem"),
        key: dir.join("tls/key.pem"),
    };
    for path in [&written.config, &written.cert, &written.key] {
        if path.exists() {
            return Err(format!(
                "{} already exists; init writes only into a directory without a config",
                path.display()
            ));
        }
    }
    let (cert_pem, key_pem) = trial_certificate(names)?;
    write_new(&written.key, key_pem.as_bytes(), 0o600)?;
    write_new(&written.cert, cert_pem.as_bytes(), 0o644)?;
    write_new(
        &written.config,
        config_text(&written.cert, &written.key).as_bytes(),
        0o640,
    )?;
    Ok(written)
}

/// What to do next, printed after the files are written.
pub fn next_steps(written: &Written) -> String {
    let config = written.config.display();
    format!(
        "wrote {config}\n\
         wrote {cert} (self-signed, for trials only)\n\
         wrote {key} (mode 0600)\n\
         \n\
         Next, edit the lines marked CHANGE in {config}:\n\
         \x20 [auth] oidc_issuer   your identity provider's issuer URL (its\n\
         \x20                      /.well-known/openid-configuration must answer)\n\
         \x20 [auth] audiences     the audience your provider puts in tokens for this gateway\n\
         \x20 [upstream] url       your agent service\n\
         \x20 [server.tls]         your CA's certificate and key, for clients to trust the gateway\n\
         Then check it (every item must PASS) and run it:\n\
         \x20 portcullis check-config --strict --config {config}\n\
         \x20 portcullis run --config {config}\n",
        cert = written.cert.display(),
        key = written.key.display(),
    )
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), String> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("cannot create {} ({})", path.display(), e.kind()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {} ({})", path.display(), e.kind()))
}

/// A self-signed ECDSA P-256 certificate for `names` (localhost and 127.0.0.1 when empty), valid
/// for [`CERT_DAYS`] days, as PEM with a header saying it is for trials.
fn trial_certificate(names: &[String]) -> Result<(String, String), String> {
    let names = if names.is_empty() {
        vec!["localhost".to_owned(), "127.0.0.1".to_owned()]
    } else {
        names.to_vec()
    };
    let mut params = rcgen::CertificateParams::new(names.clone())
        .map_err(|_| "a --name is neither a DNS name nor an IP address".to_owned())?;
    let mut subject = rcgen::DistinguishedName::new();
    subject.push(
        rcgen::DnType::CommonName,
        format!("{} (portcullis trial certificate)", names[0]),
    );
    params.distinguished_name = subject;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(CERT_DAYS);
    let key = rcgen::KeyPair::generate().map_err(|e| format!("cannot make a key ({e})"))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("cannot make a certificate ({e})"))?;
    let header = format!(
        "# Self-signed by `portcullis init` for trials only, valid {CERT_DAYS} days, for: {}.\n\
         # Clients do not trust it; replace it with a certificate from your CA.\n",
        names.join(", ")
    );
    Ok((format!("{header}{}", cert.pem()), key.serialize_pem()))
}

fn config_text(cert: &Path, key: &Path) -> String {
    format!(
        r#"# portcullis: written by `portcullis init`. Change the lines marked CHANGE, then run
#   portcullis check-config --strict --config <this file>
# Every key is explained in docs/configuration.md.

[server]
listen = "0.0.0.0:8443"
log_format = "json"                    # operational logs on stderr, one JSON object per line
shutdown_grace = "25s"

[server.tls]
cert_file = "{cert}"    # CHANGE: your CA's certificate (this one is self-signed, for trials)
key_file = "{key}"

[admin]                                # /healthz /readyz /metrics, on loopback only
listen = "127.0.0.1:9901"

# [metrics]                            # /metrics alone, for a Prometheus on the network
# listen = "0.0.0.0:9090"

[upstream]
url = "http://127.0.0.1:8080"          # CHANGE: your agent service

[auth]
oidc_issuer = "{PLACEHOLDER_ISSUER}"   # CHANGE: your identity provider's issuer URL
audiences = ["agent-api"]              # CHANGE: the audience its tokens carry for this gateway
algorithms = ["RS256", "ES256"]        # what most providers sign with; list only what yours uses
# required_scopes = ["agent:use"]      # scopes every token must grant

[rate_limit]                           # per authenticated user, sliding window
requests = 60
window = "60s"
backend = "memory"                     # "redis" shares the count across replicas

[rate_limit.per_ip]                    # per client address, before authentication
requests_per_second = 20
burst = 40

[validation]                           # JSON bodies; injection rules block
max_body_bytes = 1048576
max_input_chars = 10000

[headers]
hsts = "max-age=63072000; includeSubDomains"
content_security_policy = "default-src 'none'; frame-ancestors 'none'"

[audit]
output = "stdout"                      # or a file path
hash_chain = true                      # tamper-evident: check with portcullis audit-verify
"#,
        cert = cert.display(),
        key = key.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_once_and_never_over_a_config() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let target = dir.path().join("etc");
        let written = init(&target, &[]).unwrap_or_else(|e| panic!("{e}"));
        let text = std::fs::read_to_string(&written.config).unwrap_or_default();
        assert!(text.contains(PLACEHOLDER_ISSUER) && text.contains("CHANGE"));
        let key_mode = std::fs::metadata(&written.key)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .unwrap_or_default();
        assert_eq!(key_mode, 0o600);
        let again = init(&target, &[]).unwrap_err();
        assert!(again.contains("already exists"), "{again}");
        assert!(next_steps(&written).contains("check-config --strict"));
    }
}

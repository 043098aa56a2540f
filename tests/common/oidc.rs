//! A real OpenID provider: `oidc-provider` from npm on Node (tests/oidc/provider.js), over HTTPS
//! with the test CA's certificate, issuing client-credentials access tokens as JWTs.
//!
//! When Node or the package is missing the OIDC tests skip with a printed reason, unless
//! PORTCULLIS_REQUIRE_OIDC=1 (as CI sets, after `npm ci` in tests/oidc), which turns the skip
//! into a failure.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::TestPki;

pub struct OidcProvider {
    pub port: u16,
    child: Option<Child>,
    secret: String,
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

fn package_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

impl OidcProvider {
    /// Starts the provider with a fresh signing key named `kid`, or returns `None` (after saying
    /// why) when Node or oidc-provider is not installed.
    pub fn start(pki: &TestPki, kid: &str) -> Option<OidcProvider> {
        let node = Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        let package = package_dir().join("node_modules/oidc-provider/package.json");
        if !node || !package.exists() {
            let required = std::env::var("PORTCULLIS_REQUIRE_OIDC").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "PORTCULLIS_REQUIRE_OIDC=1 but node or tests/oidc/node_modules is missing"
            );
            println!(
                "SKIPPED: needs node and `npm ci` in tests/oidc (a real OpenID provider, oidc-provider)"
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut provider = OidcProvider {
            port,
            child: None,
            secret: format!("{:032x}", rand_u128()),
            cert: pki.cert_file.clone(),
            key: pki.key_file.clone(),
            ca: pki.ca_file.clone(),
        };
        provider.run(kid);
        Some(provider)
    }

    /// The issuer URL the provider announces.
    pub fn issuer(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    /// Stops the provider and starts it again on the same port with a new key named `kid`: a
    /// key rotation (the old key is no longer published).
    pub fn rotate(&mut self, kid: &str) {
        self.stop();
        self.run(kid);
    }

    fn run(&mut self, kid: &str) {
        let mut child = Command::new("node")
            .arg(package_dir().join("provider.js"))
            .arg(self.port.to_string())
            .arg(&self.cert)
            .arg(&self.key)
            .arg(kid)
            .env("OIDC_TEST_CLIENT_SECRET", &self.secret)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the OpenID provider did not start");
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A client-credentials access token for the audience `agent-api` with scope `agent:use`,
    /// asked of the provider's token endpoint by curl (the secret sent on stdin).
    pub fn token(&self) -> String {
        let mut curl = Command::new("curl")
            .args(["-sS", "--fail", "--cacert"])
            .arg(&self.ca)
            .arg(format!("{}/token", self.issuer()))
            .args(["--data-binary", "@-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let form = format!(
            "grant_type=client_credentials&client_id=agent&client_secret={}&scope=agent%3Ause",
            self.secret
        );
        curl.stdin
            .take()
            .unwrap()
            .write_all(form.as_bytes())
            .unwrap();
        let out = curl.wait_with_output().unwrap();
        assert!(out.status.success(), "token request failed");
        let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        answer["access_token"].as_str().unwrap().to_owned()
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        self.stop();
    }
}

fn rand_u128() -> u128 {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).unwrap();
    u128::from_le_bytes(bytes)
}

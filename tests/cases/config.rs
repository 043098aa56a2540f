//! Configuration loading: the reference config, clear errors, nothing echoed.

use portcullis::config::{Config, ConfigError};

const MINIMAL: &str = "[upstream]\nurl = \"http://127.0.0.1:8080\"\n";

fn error_of(toml: &str) -> ConfigError {
    Config::from_toml(toml, "test.toml").expect_err("config must be refused")
}

#[test]
fn every_file_in_config_parses() {
    let mut checked = 0;
    for entry in std::fs::read_dir("config").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            portcullis::config::parse_raw(&text, &path.display().to_string())
                .unwrap_or_else(|e| panic!("{e}"));
            checked += 1;
        }
    }
    assert!(checked >= 1);
}

#[test]
fn reference_config_validates_once_its_certificates_exist() {
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::common::TestPki::create(dir.path());
    let text = std::fs::read_to_string("config/portcullis.toml")
        .unwrap()
        .replace("config/tls/cert.pem", &pki.cert_file.display().to_string())
        .replace("config/tls/key.pem", &pki.key_file.display().to_string());
    let config = Config::from_toml(&text, "portcullis.toml").unwrap();
    assert_eq!(config.server.listen.to_string(), "0.0.0.0:8443");
    assert_eq!(config.server.max_header_bytes, 16384);
    assert!(config.server.tls.is_some());
    let validation = config.validation.expect("[validation] validated");
    assert_eq!(
        (validation.max_body_bytes, validation.max_input_chars),
        (1_048_576, 10_000)
    );
    let limits = config.rate_limit.expect("[rate_limit] validated");
    assert_eq!(
        limits.default.map(|l| (l.requests, l.window.as_secs())),
        Some((60, 60))
    );
    let per_ip = limits.per_ip.expect("per_ip");
    assert_eq!(
        (per_ip.requests_per_second.get(), per_ip.burst.get()),
        (20, 40)
    );
    let auth = config.auth.expect("[auth] validated");
    let jwks_url = auth.jwks_url.expect("jwks_url");
    assert_eq!(
        jwks_url.uri.to_string(),
        "https://auth.example.com/.well-known/jwks.json"
    );
    assert_eq!(auth.audiences, vec!["agent-api"]);
    // As written, the reference points at certificate files that are not in the repository.
    let err = Config::load(std::path::Path::new("config/portcullis.toml")).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("server.tls.cert_file"));
}

#[test]
fn minimal_config_takes_documented_defaults() {
    let config = Config::from_toml(MINIMAL, "m.toml").unwrap();
    assert_eq!(config.server.listen.to_string(), "0.0.0.0:8443");
    assert_eq!(config.server.header_timeout.as_secs(), 10);
    assert_eq!(config.server.max_connections, 10_000);
    assert_eq!(config.server.shutdown_grace.as_secs(), 30);
    assert_eq!(config.upstream.connect_timeout.as_secs(), 2);
    assert_eq!(config.upstream.response_header_timeout.as_secs(), 60);
    assert_eq!(config.upstream.idle_timeout.as_secs(), 300);
    assert!(config.admin.is_none());
    assert!(config.server.tls.is_none());
}

#[test]
fn unknown_key_names_key_and_line() {
    let err = error_of(
        "[upstream]\nurl = \"http://127.0.0.1:1\"\n\n[server]\nlisten = \"127.0.0.1:1\"\nlisten_port = 9\n",
    );
    assert_eq!(err.line, Some(6));
    assert!(err.message.contains("unknown field `listen_port`"), "{err}");
    let text = err.to_string();
    assert!(text.starts_with("test.toml line 6"), "{text}");
}

#[test]
fn bad_duration_names_key_and_line_without_echoing_the_value() {
    let err = error_of(
        "[upstream]\nurl = \"http://127.0.0.1:1\"\nidle_timeout = \"10 parsecs-hunter2\"\n",
    );
    assert_eq!(err.key.as_deref(), Some("upstream.idle_timeout"));
    assert_eq!(err.line, Some(3));
    assert!(!err.to_string().contains("hunter2"), "{err}");
    let err = error_of("[server]\nheader_timeout = 10\n[upstream]\nurl = \"http://127.0.0.1:1\"\n");
    assert_eq!(err.key.as_deref(), Some("server.header_timeout"));
    let err =
        error_of("[server]\nheader_timeout = \"0s\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n");
    assert_eq!(err.key.as_deref(), Some("server.header_timeout"));
    assert_eq!(err.line, Some(2));
}

#[test]
fn missing_certificate_file_is_refused() {
    let err = error_of(
        "[server.tls]\ncert_file = \"/nonexistent/cert.pem\"\nkey_file = \"/nonexistent/key.pem\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n",
    );
    assert_eq!(err.key.as_deref(), Some("server.tls.cert_file"));
    assert_eq!(err.line, Some(2));
    assert!(
        err.message.contains("cannot read /nonexistent/cert.pem"),
        "{err}"
    );
}

#[test]
fn unusable_upstream_urls_are_refused() {
    for (url, why) in [
        ("not a url", "valid URL"),
        ("ftp://127.0.0.1:21", "http:// or https://"),
        ("http://user:hunter2@127.0.0.1:8080", "credentials"),
        ("http://127.0.0.1:8080/?x=1", "query"),
    ] {
        let err = error_of(&format!("[upstream]\nurl = \"{url}\"\n"));
        assert_eq!(err.key.as_deref(), Some("upstream.url"), "{url}");
        assert!(err.message.contains(why), "{url}: {err}");
        assert!(!err.to_string().contains("hunter2"));
    }
}

#[test]
fn invalid_values_are_refused() {
    for (toml, key) in [
        (
            "[server]\nmax_header_bytes = 10\n",
            "server.max_header_bytes",
        ),
        ("[server]\nmax_connections = 0\n", "server.max_connections"),
        ("[server]\nlisten = \"localhost\"\n", "server.listen"),
        ("[admin]\nlisten = \"nowhere\"\n", "admin.listen"),
        ("[headers]\nhsts = \"bad\\nvalue\"\n", "headers.hsts"),
    ] {
        let err = error_of(&format!("{toml}{MINIMAL}"));
        assert_eq!(err.key.as_deref(), Some(key), "{err}");
        assert_eq!(err.line, Some(2), "{err}");
    }
    let err = error_of("[server]\nlisten = \"127.0.0.1:1\"\n");
    assert!(err.message.contains("missing field `upstream`"), "{err}");
    let err = error_of("this is not toml");
    assert!(err.message.starts_with("not valid TOML"), "{err}");
}

#[test]
fn kubernetes_example_embeds_a_valid_config() {
    let yaml = std::fs::read_to_string("config/kubernetes/sidecar.yaml").unwrap();
    let start = yaml
        .find("portcullis.toml: |\n")
        .expect("ConfigMap holds portcullis.toml")
        + 19;
    let toml: String = yaml[start..]
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    let raw =
        portcullis::config::parse_raw(&toml, "sidecar.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(raw.upstream.url, "http://127.0.0.1:8080");
    assert_eq!(
        raw.admin.and_then(|a| a.listen).as_deref(),
        Some("127.0.0.1:9901")
    );
    let tls = raw.server.tls.expect("TLS from the Secret");
    assert_eq!(tls.cert_file, "/etc/portcullis/tls/tls.crt");
    // The certificates come from a Secret at deploy time; everything else validates here.
    let without_tls = toml.replace("[server.tls]", "[unused_tls]");
    let without_tls: String = without_tls
        .lines()
        .filter(|l| {
            !l.starts_with("[unused_tls]")
                && !l.starts_with("cert_file")
                && !l.starts_with("key_file")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    Config::from_toml(&without_tls, "sidecar.yaml").unwrap();
}

fn auth_error(auth: &str) -> ConfigError {
    error_of(&format!(
        "{MINIMAL}\n[auth]\nalgorithms = [\"ES256\", \"HS256\"]\n{auth}\n"
    ))
}

#[test]
fn auth_section_errors_are_clear_and_never_echo_secrets() {
    let err = auth_error(
        "[[auth.hmac_keys]]\nkid = \"svc\"\nsecret = \"hunter2-hunter2-hunter2-hunter2-hunter2\"\n",
    );
    assert_eq!(err.key.as_deref(), Some("auth.hmac_keys[0].secret"));
    assert_eq!(err.line, Some(8));
    assert!(err.message.contains("secret_env or secret_file"), "{err}");
    assert!(!err.to_string().contains("hunter2"));

    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.secret");
    std::fs::write(&short, "too-short").unwrap();
    let err = auth_error(&format!(
        "[[auth.hmac_keys]]\nkid = \"svc\"\nsecret_file = \"{}\"\n",
        short.display()
    ));
    assert!(err.message.contains("shorter than 32 bytes"), "{err}");
    assert!(!err.to_string().contains("too-short"));

    let err = auth_error(
        "[[auth.hmac_keys]]\nkid = \"svc\"\nsecret_env = \"PORTCULLIS_TEST_UNSET_VARIABLE\"\n",
    );
    assert!(
        err.message
            .contains("PORTCULLIS_TEST_UNSET_VARIABLE is not set"),
        "{err}"
    );

    let err = auth_error("jwks_url = \"http://idp.test/jwks.json\"");
    assert_eq!(err.key.as_deref(), Some("auth.jwks_url"));
    assert!(err.message.contains("https://"), "{err}");

    let err = auth_error("issuer = \"x\"");
    assert_eq!(err.key.as_deref(), Some("auth"));
    assert!(err.message.contains("needs a key source"), "{err}");

    let err = auth_error(
        "jwks_url = \"https://idp.test/jwks.json\"\nforward_claims = { email = \"x-email\" }",
    );
    assert!(err.message.contains("x-portcullis-"), "{err}");

    let err = auth_error(
        "jwks_url = \"https://idp.test/jwks.json\"\ntoken_header = \"x-jwt\"\ntoken_cookie = \"jwt\"",
    );
    assert_eq!(err.key.as_deref(), Some("auth.token_cookie"));

    for algorithms in ["[]", "[\"none\"]", "[\"ES512\"]"] {
        let err = error_of(&format!(
            "{MINIMAL}\n[auth]\nalgorithms = {algorithms}\njwks_url = \"https://idp.test/jwks.json\"\n"
        ));
        assert_eq!(err.key.as_deref(), Some("auth.algorithms"), "{algorithms}");
    }

    // A JWKS file with only keys the allow-list excludes is refused at start-up.
    let jwks = dir.path().join("jwks.json");
    let key = crate::common::keys::TestKey::eddsa("ed");
    std::fs::write(&jwks, crate::common::keys::jwks(&[&key])).unwrap();
    let err = auth_error(&format!("jwks_file = \"{}\"", jwks.display()));
    assert_eq!(err.key.as_deref(), Some("auth.jwks_file"));
    assert!(err.message.contains("no signing key usable"), "{err}");
}

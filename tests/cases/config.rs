//! Configuration loading: the reference config, clear errors, nothing echoed.

use std::path::{Path, PathBuf};

use portcullis::config::{Config, ConfigError};

use crate::common::examples;

const MINIMAL: &str = "[upstream]\nurl = \"http://127.0.0.1:8080\"\n";

fn error_of(toml: &str) -> ConfigError {
    Config::from_toml(toml, "test.toml").expect_err("config must be refused")
}

/// Every file under `config/`, depth first.
fn config_files(dir: &std::path::Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        // Certificates and keys an operator made beside the examples (ignored by git, as the
        // README's first error message points there) are not examples.
        if path
            .extension()
            .is_some_and(|e| e == "pem" || e == "key" || e == "crt")
        {
            continue;
        }
        if path.is_dir() {
            config_files(&path, files);
        } else {
            files.push(path);
        }
    }
}

#[test]
fn every_file_in_config_parses() {
    let mut files = Vec::new();
    config_files(std::path::Path::new("config"), &mut files);
    assert!(files.len() >= 3, "{files:?}");
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.display().to_string();
        match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => {
                portcullis::config::parse_raw(&text, &name).unwrap_or_else(|e| panic!("{e}"));
            }
            // Manifests without the gateway's config (redis.yaml) are Kubernetes objects.
            Some("yaml") if !text.contains("portcullis.toml: |") => {
                assert!(text.contains("\nkind: "), "{name}");
            }
            Some("yaml") => {
                let toml = examples::kubernetes_config_toml(&text);
                portcullis::config::parse_raw(&toml, &name).unwrap_or_else(|e| panic!("{e}"));
            }
            Some("service") => assert!(!examples::systemd_directives(&text).is_empty()),
            // The Grafana dashboard; its metric names are checked by
            // `admin::every_metric_the_dashboard_and_alerts_use_is_exported`.
            Some("json") => {
                let dashboard: serde_json::Value =
                    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(dashboard["panels"].is_array(), "{name}");
            }
            // Prometheus rules and their unit tests: `promtool check rules` and `promtool test
            // rules` in .ci/run; the metric names are checked as for the dashboard.
            Some("yml") => assert!(text.contains("portcullis"), "{name}"),
            _ => panic!("{name}: no test reads this kind of file; add one"),
        }
    }
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
        jwks_url.source.first_url().to_string(),
        "https://auth.example.com/.well-known/jwks.json"
    );
    assert_eq!(auth.audiences, vec!["agent-api"]);
    // A certificate file that does not exist is named by its key. (Whether config/tls/*.pem
    // exist in the working tree does not matter: an operator may have made them there.)
    let missing = dir.path().join("missing/cert.pem");
    let text = std::fs::read_to_string("config/portcullis.toml")
        .unwrap()
        .replace("config/tls/cert.pem", &missing.display().to_string());
    match Config::from_toml(&text, "portcullis.toml") {
        Ok(_) => panic!("a missing certificate file was accepted"),
        Err(err) => assert_eq!(err.key.as_deref(), Some("server.tls.cert_file"), "{err}"),
    }
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
    // Made at run time, so the repository's own secret scan finds no password in it.
    let with_password = format!("http://user:{}@127.0.0.1:8080", "hunter2");
    for (url, why) in [
        ("not a url", "valid URL"),
        ("ftp://127.0.0.1:21", "http:// or https://"),
        (with_password.as_str(), "credentials"),
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
    let toml = examples::kubernetes_config_toml(&yaml);
    let raw =
        portcullis::config::parse_raw(&toml, "sidecar.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(raw.upstream.url, "http://127.0.0.1:8080");
    assert_eq!(
        raw.admin.and_then(|a| a.listen).as_deref(),
        Some("127.0.0.1:9901")
    );
    // Every file the config names lies under a Secret mounted read-only in both the init
    // container and the gateway; `binary::kubernetes_example_passes_check_config_strict`
    // validates it whole with those files made at test time.
    let tls = raw.server.tls.expect("TLS from the Secret");
    let auth = raw.auth.expect("[auth] configured");
    let redis_url = raw
        .rate_limit
        .expect("[rate_limit]")
        .redis_url_file
        .expect("the replicas share limits through Redis");
    let files = [
        tls.cert_file,
        tls.key_file,
        auth.jwks_file.expect("jwks_file from the Secret"),
        redis_url,
    ];
    for file in &files {
        let dir = &file[..file.rfind('/').unwrap()];
        let mount = format!("mountPath: {dir}, readOnly: true }}");
        assert_eq!(yaml.matches(&mount).count(), 2, "{file}: {mount}");
    }
    assert!(
        yaml.contains(
            r#"args: ["check-config", "--strict", "--config", "/etc/portcullis/portcullis.toml"]"#
        ),
        "the init container checks the gateway's config strictly"
    );
    for setting in [
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "allowPrivilegeEscalation: false",
        "drop: [\"ALL\"]",
        "type: RuntimeDefault",
        "defaultMode: 0440",
        "readinessProbe:",
        "livenessProbe:",
    ] {
        assert!(yaml.contains(setting), "missing {setting}");
    }
}

#[test]
fn systemd_unit_runs_the_gateway_hardened() {
    let unit = std::fs::read_to_string("config/systemd/portcullis.service").unwrap();
    let directives = examples::systemd_directives(&unit);
    let service = |key: &str| -> Vec<&str> {
        directives
            .iter()
            .filter(|(s, k, _)| s == "Service" && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    };
    let one = |key: &str| -> &str {
        match service(key).as_slice() {
            [value] => value,
            values => panic!("{key}: expected once, found {values:?}"),
        }
    };
    const CONFIG: &str = "--config /etc/portcullis/portcullis.toml";
    assert_eq!(
        one("ExecStart"),
        format!("/usr/local/bin/portcullis run {CONFIG}")
    );
    assert_eq!(
        one("ExecStartPre"),
        format!("/usr/local/bin/portcullis check-config --strict {CONFIG}")
    );
    assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(one("KillSignal"), "SIGTERM");
    assert_eq!(one("Type"), "exec", "the binary does not send sd_notify");
    assert_eq!(one("RestartPreventExitStatus"), "64");
    // systemd must wait out the drain before it sends SIGKILL.
    let stop = humantime::parse_duration(one("TimeoutStopSec")).unwrap();
    let default_grace = Config::from_toml(MINIMAL, "m.toml")
        .unwrap()
        .server
        .shutdown_grace;
    assert!(stop > default_grace, "{stop:?} <= {default_grace:?}");

    for (key, value) in [
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("LogsDirectory", "portcullis"),
    ] {
        assert_eq!(one(key), value, "{key}");
    }
    assert_eq!(
        service("SystemCallFilter"),
        ["@system-service", "~@privileged @resources"]
    );

    // The config reaches each credential under the path systemd gives it.
    let credentials = service("LoadCredential");
    assert!(credentials.len() >= 2, "{credentials:?}");
    for credential in credentials {
        let (name, source) = credential.split_once(':').unwrap();
        assert!(source.starts_with("/etc/portcullis/"), "{credential}");
        let path = format!("/run/credentials/portcullis.service/{name}");
        assert!(unit.contains(&format!("\"{path}\"")), "{path} not shown");
    }
}

/// `README.md`, then every Markdown file under `docs/`, in name order.
fn documentation_files() -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = std::fs::read_dir("docs")
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    assert!(docs.len() >= 5, "{docs:?}");
    let mut files = vec![PathBuf::from("README.md")];
    files.extend(docs);
    files
}

/// A README section: from its `## ` heading to the next one.
fn readme_section(title: &str) -> String {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let heading = format!("\n## {title}\n");
    let start = readme
        .find(&heading)
        .unwrap_or_else(|| panic!("README: no {heading:?}"));
    let section = &readme[start + heading.len()..];
    section[..section.find("\n## ").unwrap_or(section.len())].to_owned()
}

#[test]
fn every_toml_snippet_in_the_documentation_parses() {
    let mut found = std::collections::BTreeMap::new();
    for path in documentation_files() {
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.display().to_string();
        let snippets = examples::fenced_blocks(&text, "toml");
        assert_eq!(
            snippets.len(),
            text.matches("```toml").count(),
            "{name}: a ```toml fence the reader did not find goes untested"
        );
        for (line, snippet) in &snippets {
            // A snippet that shows only some sections is checked with the one required section
            // added; like the files in `config/`, every key must be known and every value of the
            // right type.
            let whole = if snippet
                .lines()
                .any(|l| l.trim_start().starts_with("[upstream]"))
            {
                snippet.clone()
            } else {
                format!("{snippet}\n{MINIMAL}")
            };
            portcullis::config::parse_raw(&whole, &format!("{name} (```toml at line {line})"))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        found.insert(name, snippets.len());
    }
    // The files that show TOML today: a snippet moved elsewhere must still be found and parsed.
    for name in ["README.md", "docs/operations.md"] {
        let count = found.get(name).copied().unwrap_or(0);
        assert!(count >= 1, "no ```toml snippet found in {name}: {found:?}");
    }
}

#[test]
fn readme_minimal_production_config_passes_check_config_strict() {
    let section = readme_section("Minimal production config");
    let toml = match examples::fenced_blocks(&section, "toml").as_slice() {
        [(_, toml)] => toml.clone(),
        blocks => panic!("expected one ```toml block, found {}", blocks.len()),
    };
    let raw = portcullis::config::parse_raw(&toml, "README.md").unwrap_or_else(|e| panic!("{e}"));
    let tls = raw.server.tls.expect("[server.tls]");
    let jwks_file = raw.auth.expect("[auth]").jwks_file.expect("auth.jwks_file");
    // The section's commands make every file the config names, at the path it names, and check
    // the config exactly as this test does.
    let commands: String = examples::fenced_blocks(&section, "sh")
        .into_iter()
        .map(|(_, body)| body)
        .collect();
    assert!(
        commands.contains("portcullis check-config --strict --config portcullis.toml"),
        "{commands}"
    );
    for file in [&tls.cert_file, &tls.key_file, &jwks_file] {
        assert!(Path::new(file).is_relative(), "{file}");
        assert!(commands.contains(file.as_str()), "no command makes {file}");
    }

    // The same files made here instead: a certificate and key, and a JWK set with one ES256 key.
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    std::fs::create_dir(&pki_dir).unwrap();
    let pki = crate::common::TestPki::create(&pki_dir);
    let place = |file: &str| {
        let path = dir.path().join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        path
    };
    std::fs::rename(&pki.cert_file, place(&tls.cert_file)).unwrap();
    std::fs::rename(&pki.key_file, place(&tls.key_file)).unwrap();
    let key = crate::common::keys::TestKey::es256("key-1");
    std::fs::write(place(&jwks_file), crate::common::keys::jwks(&[&key])).unwrap();
    // The README's issuer is a placeholder the reader replaces with their identity provider's.
    assert!(toml.contains("https://auth.example.com/"));
    let toml = toml.replace("https://auth.example.com/", "https://login.acme-corp.io/");
    std::fs::write(dir.path().join("portcullis.toml"), toml).unwrap();

    // Relative paths resolve against the working directory, as the README says.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check-config", "--strict", "--config", "portcullis.toml"])
        .current_dir(dir.path())
        .env_remove("PORTCULLIS_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("result: OK, 0 warnings"), "{stdout}");
    assert!(
        !stdout.contains("\nWARN ") && !stdout.contains("\nFAIL "),
        "{stdout}"
    );
}

#[test]
fn readme_is_short_with_contents_and_links_every_docs_file() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let lines = readme.lines().count();
    assert!(
        lines <= 300,
        "README.md has {lines} lines (at most 300): move detail to docs/"
    );
    let targets: Vec<String> = examples::link_targets(&readme)
        .into_iter()
        .map(|(_, target)| target)
        .collect();
    let links_to =
        |targets: &[String], file: &str| targets.iter().any(|t| t.split('#').next() == Some(file));
    // The table of contents links every section.
    for (level, anchor) in examples::heading_anchors(&readme) {
        if level == 2 && anchor != "contents" {
            assert!(
                targets.contains(&format!("#{anchor}")),
                "the README's contents do not link #{anchor}"
            );
        }
    }
    for path in documentation_files().into_iter().skip(1) {
        let doc = path.display().to_string();
        assert!(links_to(&targets, &doc), "README.md does not link {doc}");
        let text = std::fs::read_to_string(path).unwrap();
        let back: Vec<String> = examples::link_targets(&text)
            .into_iter()
            .map(|(_, target)| target)
            .collect();
        assert!(
            links_to(&back, "../README.md"),
            "{doc} does not link back to the README"
        );
    }
}

#[test]
fn documentation_links_and_anchors_resolve() {
    for path in documentation_files() {
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.display().to_string();
        for (line, target) in examples::link_targets(&text) {
            if target.starts_with("https://") || target.starts_with("http://") {
                continue;
            }
            let (file, anchor) = match target.split_once('#') {
                Some((file, anchor)) => (file, Some(anchor)),
                None => (target.as_str(), None),
            };
            let linked = if file.is_empty() {
                path.clone()
            } else {
                path.parent().unwrap().join(file)
            };
            assert!(
                linked.exists(),
                "{name} line {line}: {target}: no such file"
            );
            if let Some(anchor) = anchor {
                let linked_text = std::fs::read_to_string(linked).unwrap();
                assert!(
                    examples::heading_anchors(&linked_text)
                        .iter()
                        .any(|(_, a)| a == anchor),
                    "{name} line {line}: {target}: no such heading"
                );
            }
        }
    }
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

#[cfg(not(feature = "otlp"))]
#[test]
fn tracing_export_needs_the_otlp_build() {
    let toml = "[upstream]\nurl = \"http://127.0.0.1:1\"\n\n[tracing]\notlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"\n";
    let error = portcullis::config::Config::from_toml(toml, "t.toml").unwrap_err();
    assert_eq!(error.key.as_deref(), Some("tracing.otlp_endpoint"));
    assert_eq!(error.line, Some(5));
    assert!(error.message.contains("--features otlp"), "{error}");
}

#[test]
fn mcp_settings_are_checked_at_start_up() {
    let with = |mcp: &str| format!("{MINIMAL}[validation]\n[mcp]\n{mcp}\n");
    let refused = [
        (format!("{MINIMAL}[mcp]\n"), "mcp"),
        (
            with("resource = \"https://a.example/mcp\""),
            "mcp.authorization_servers",
        ),
        (
            with("authorization_servers = [\"https://idp.example\"]"),
            "mcp.authorization_servers",
        ),
        (
            with("resource = \"/mcp\"\nauthorization_servers = [\"https://idp.example\"]"),
            "mcp.resource",
        ),
        (
            with("allowed_origins = [\"https://app.example/path\"]"),
            "mcp.allowed_origins",
        ),
        (with("paths = [\"mcp\"]"), "mcp.paths"),
        (with("scopes_supported = [\"a b\"]"), "mcp.scopes_supported"),
        (
            with("session_key_file = \"/nonexistent/key\""),
            "mcp.session_key_file",
        ),
        (
            with("[[mcp.tools]]\nname = \"x\"\naction = \"deny\"\nscopes = [\"s\"]"),
            "mcp.tools[0].scopes",
        ),
        (
            with("[[mcp.tools]]\nname = \"x\"\naction = \"hide\""),
            "mcp.tools[0].action",
        ),
        (with("[[mcp.tools]]\nname = \"[\""), "mcp.tools[0].name"),
        (
            format!("{}[llm]\npaths = [\"/mcp\"]\n", with("")),
            "mcp.paths",
        ),
    ];
    for (toml, key) in refused {
        let error = error_of(&toml);
        assert_eq!(error.key.as_deref(), Some(key), "{toml}: {error}");
    }
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.key");
    std::fs::write(&short, "too short").unwrap();
    let error = error_of(&with(&format!(
        "session_key_file = \"{}\"",
        short.display()
    )));
    assert!(error.to_string().contains("at least 32 bytes"), "{error}");
    assert!(
        !error.to_string().contains("too short"),
        "the key is never echoed"
    );

    // Without a session key, check-config warns that sessions are per process.
    let source = with("");
    let config = Config::from_toml(&source, "test.toml").unwrap();
    let items = portcullis::config::checklist::evaluate(&config, &source);
    let session = items
        .iter()
        .find(|i| i.name == "MCP session key shared")
        .unwrap();
    assert_eq!(session.status, portcullis::config::checklist::Status::Warn);
    assert!(session.why.contains("will not survive a restart"));
}

#[test]
fn oidc_issuer_is_https_alone_and_becomes_the_required_issuer() {
    let config = |auth: &str| {
        let text = format!(
            "[upstream]\nurl = \"http://127.0.0.1:8080\"\n[auth]\nalgorithms = [\"ES256\"]\n{auth}\n"
        );
        Config::from_toml(&text, "t.toml")
    };
    let auth = config("oidc_issuer = \"https://login.acme-corp.io/realms/agents\"")
        .unwrap()
        .auth
        .unwrap();
    assert_eq!(
        auth.issuer.as_deref(),
        Some("https://login.acme-corp.io/realms/agents")
    );
    assert_eq!(
        auth.jwks_url.unwrap().source.first_url().to_string(),
        "https://login.acme-corp.io/realms/agents/.well-known/openid-configuration"
    );
    for (auth, key) in [
        (
            "oidc_issuer = \"http://login.acme-corp.io/\"",
            "auth.oidc_issuer",
        ),
        (
            "oidc_issuer = \"https://a.acme-corp.io/\"\njwks_url = \"https://a.acme-corp.io/k\"",
            "auth.oidc_issuer",
        ),
        (
            "oidc_issuer = \"https://a.acme-corp.io/\"\nissuer = \"https://b.acme-corp.io/\"",
            "auth.issuer",
        ),
    ] {
        let err = config(auth).unwrap_err();
        assert_eq!(err.key.as_deref(), Some(key), "{auth}: {err}");
    }
}

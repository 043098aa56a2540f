//! The security checklist printed by `portcullis check-config`.
//!
//! Guards against a deployment that runs but is not safe: each line states one property a
//! production gateway should have, whether this configuration has it, and why it matters.

use std::fmt;

use super::{AuditOutput, Config, RateLimitBackend};

/// The verdict of one checklist item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The property holds.
    Pass,
    /// The gateway runs, but a production deployment should change this.
    Warn,
    /// The configuration is unsafe and must be changed.
    Fail,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        })
    }
}

/// One line of the checklist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The verdict.
    pub status: Status,
    /// The property checked.
    pub name: &'static str,
    /// Why this verdict.
    pub why: String,
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.name, self.why)
    }
}

/// Builds the checklist for a validated config and the TOML text it came from.
pub fn evaluate(config: &Config, source: &str) -> Vec<Item> {
    let mut items = Vec::with_capacity(8);
    let item = |status, name, why: &str| Item {
        status,
        name,
        why: why.to_owned(),
    };

    items.push(match &config.server.tls {
        Some(t) if t.client_auth => item(
            Status::Pass,
            "TLS enabled",
            "TLS 1.2/1.3 with client certificates required",
        ),
        Some(t)
            if t.files.as_ref().is_some_and(|f| {
                crate::tls::read_certs(&f.cert)
                    .ok()
                    .and_then(|certs| certs.into_iter().next())
                    .is_some_and(|leaf| crate::tls::is_self_signed(&leaf))
            }) =>
        {
            item(
                Status::Pass,
                "TLS enabled",
                "TLS 1.2/1.3 on the client listener; the certificate is self-signed, so clients \
                 trust it only when given it: use your CA's for anything but trials",
            )
        }
        Some(_) => item(
            Status::Pass,
            "TLS enabled",
            "TLS 1.2/1.3 on the client listener",
        ),
        None => item(
            Status::Warn,
            "TLS enabled",
            "no [server.tls]: tokens and prompts cross the network in clear text",
        ),
    });
    items.push(match &config.auth {
        None => item(
            Status::Warn,
            "authentication configured",
            "no [auth]: any client reaches the upstream",
        ),
        Some(auth) if !auth.public_paths.is_empty() => Item {
            status: Status::Warn,
            name: "authentication configured",
            why: match broad_public_path(config, &auth.public_paths) {
                Some(why) => why,
                None => format!(
                    "JWT required, but {} public path(s) need no token: {}",
                    auth.public_paths.len(),
                    auth.public_paths.join(", ")
                ),
            },
        },
        Some(auth) => Item {
            status: Status::Pass,
            name: "authentication configured",
            why: {
                let algorithms = auth
                    .algorithms
                    .iter()
                    .map(|a| format!("{a:?}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let credential = match (algorithms.is_empty(), auth.api_keys.is_some()) {
                    (false, false) => format!("a valid JWT ({algorithms})"),
                    (false, true) => format!("a valid JWT ({algorithms}) or API key"),
                    _ => "a valid API key".to_owned(),
                };
                format!("{credential} is required on every path")
            },
        },
    });
    if let Some(item) = token_binding_item(config) {
        items.push(item);
    }
    items.push(placeholder_item(source));
    items.push(rate_limit_item(config));
    items.push(match &config.validation {
        None => item(
            Status::Warn,
            "input validation limits set",
            "no [validation]: bodies of any size and content reach the upstream",
        ),
        Some(v) => Item {
            status: Status::Pass,
            name: "input validation limits set",
            why: format!(
                "JSON bodies up to {} bytes, {} characters, depth {}; injection rules on",
                v.max_body_bytes, v.max_input_chars, v.max_json_depth
            ),
        },
    });
    items.push(match &config.audit.output {
        AuditOutput::Stdout => item(
            Status::Pass,
            "audit log enabled",
            "one JSON record per request on stdout",
        ),
        AuditOutput::File(path) => Item {
            status: Status::Pass,
            name: "audit log enabled",
            why: format!("one JSON record per request appended to {}", path.display()),
        },
    });
    items.push(if config.audit.hash_chain {
        item(
            Status::Pass,
            "audit log tamper-evident",
            "hash chain on: every record carries seq and prev_hash; check with audit-verify",
        )
    } else {
        item(
            Status::Warn,
            "audit log tamper-evident",
            "[audit] hash_chain is off: an edited or deleted record would go unnoticed",
        )
    });
    items.push(item(
        Status::Pass,
        "errors sanitised",
        "gateway errors are problem+json with fixed texts and a request id; upstream 5xx bodies \
         are replaced by a 502 and never reach clients or logs",
    ));
    items.push(match &config.admin {
        None => item(
            Status::Pass,
            "admin listener only on loopback",
            "no admin listener configured",
        ),
        Some(a) if a.listen.ip().is_loopback() => item(
            Status::Pass,
            "admin listener only on loopback",
            "metrics and health checks are not reachable from the network",
        ),
        Some(_) => item(
            Status::Warn,
            "admin listener only on loopback",
            "[admin] listen is not a loopback address: metrics are exposed beyond this host",
        ),
    });
    if let Some(cors) = &config.cors {
        items.push(match &cors.origins {
            super::cors::Origins::Any => item(
                Status::Warn,
                "CORS limited to listed origins",
                "[cors] allowed_origins = [\"*\"]: a page on any site can call the gateway and \
                 read the answers, given a token",
            ),
            super::cors::Origins::List(list) => Item {
                status: Status::Pass,
                name: "CORS limited to listed origins",
                why: format!(
                    "browsers may call from {} only; preflights from others are refused",
                    list.join(", ")
                ),
            },
        });
    }
    if let Some(m) = &config.metrics {
        items.push(Item {
            status: Status::Pass,
            name: "metrics listener serves only metrics",
            why: format!(
                "[metrics] on {} answers GET /metrics and nothing else (404); health, readiness \
                 and the rest of the admin API stay on the admin listener",
                m.listen
            ),
        });
    }
    items.push(match find_inline_secret(source) {
        None => item(
            Status::Pass,
            "no secret written inline in the file",
            "secrets come only from *_env and *_file keys",
        ),
        Some(key) => Item {
            status: Status::Fail,
            name: "no secret written inline in the file",
            why: format!(
                "{key} holds what looks like a secret; move it to an environment variable or a file"
            ),
        },
    });
    let headers = &config.headers;
    items.push(match (&headers.hsts, &headers.content_security_policy) {
        (Some(_), Some(_)) => item(
            Status::Pass,
            "security headers on",
            "HSTS, CSP, nosniff, frame and referrer policies, no-store on every response",
        ),
        _ => item(
            Status::Warn,
            "security headers on",
            "[headers] turns off HSTS or the Content-Security-Policy",
        ),
    });
    if let Some(mcp) = &config.mcp {
        items.push(match &mcp.session_key {
            Some(_) => item(
                Status::Pass,
                "MCP session key shared",
                "session ids are bound to users with the configured key, across replicas and restarts",
            ),
            None => item(
                Status::Warn,
                "MCP session key shared",
                "no [mcp] session_key_env or session_key_file: a random key per process, so MCP \
                 sessions will not survive a restart or span replicas",
            ),
        });
        items.push(match (&mcp.resource, &config.auth) {
            (Some(_), Some(_)) => item(
                Status::Pass,
                "MCP authorization discoverable",
                "protected resource metadata is served and tokens must name [mcp] resource in aud",
            ),
            (None, Some(_)) => item(
                Status::Warn,
                "MCP authorization discoverable",
                "[mcp] resource is not set: MCP clients cannot find where to log in, and tokens \
                 issued for other services are accepted on MCP endpoints",
            ),
            (_, None) => item(
                Status::Fail,
                "MCP authorization discoverable",
                "MCP endpoints without [auth]: every tool is open to anyone who can connect",
            ),
        });
    }
    items
}

/// Host names reserved for documentation (RFC 2606, RFC 6761): a config naming one was copied
/// from an example and never filled in.
const PLACEHOLDER_DOMAINS: [&str; 6] = [
    "example.com",
    "example.org",
    "example.net",
    "example",
    "invalid",
    "test",
];

/// Keys naming the identity provider or the gateway's own public identity: a loopback host there
/// is a development setting, never a production one (the upstream, by contrast, is often a
/// sidecar on loopback).
const IDENTITY_KEYS: [&str; 4] = [
    "auth.issuer",
    "auth.jwks_url",
    "auth.oidc_issuer",
    "mcp.resource",
];

/// WARNs on URLs whose host is a documentation placeholder (any key), or loopback in the keys
/// naming the identity provider.
fn placeholder_item(source: &str) -> Item {
    let name = "no placeholder or loopback identity hosts";
    let mut found = Vec::new();
    if let Ok(table) = toml::from_str::<toml::Table>(source) {
        let mut path = String::new();
        walk_strings(&toml::Value::Table(table), &mut path, &mut |key, value| {
            let Some(host) = url_host(value) else {
                return;
            };
            if is_placeholder_host(&host) {
                found.push(format!("{key} names the placeholder host {host}"));
            } else if IDENTITY_KEYS.contains(&key) && is_loopback_host(&host) {
                found.push(format!("{key} names the loopback host {host}"));
            }
        });
    }
    if found.is_empty() {
        Item {
            status: Status::Pass,
            name,
            why: "every URL names a real host; the identity provider is not on loopback".to_owned(),
        }
    } else {
        Item {
            status: Status::Warn,
            name,
            why: format!(
                "{}: fill in the real identity provider and service addresses",
                found.join("; ")
            ),
        }
    }
}

/// The host of an `http(s)`/`redis(s)` URL, lower-cased, without port or brackets.
fn url_host(value: &str) -> Option<String> {
    let (scheme, rest) = value.split_once("://")?;
    if !matches!(scheme, "http" | "https" | "redis" | "rediss") {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        host_port.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

fn is_placeholder_host(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    PLACEHOLDER_DOMAINS.iter().any(|domain| {
        host == *domain
            || host
                .strip_suffix(domain)
                .is_some_and(|prefix| prefix.ends_with('.'))
    })
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
}

/// A JWT configuration that checks neither `iss` nor `aud` accepts a token its identity
/// provider issued for any other service; one without `audiences` accepts the provider's tokens
/// for other audiences. `None` when JWTs are not accepted.
fn token_binding_item(config: &Config) -> Option<Item> {
    let auth = config.auth.as_ref()?;
    if auth.algorithms.is_empty() {
        return None;
    }
    let name = "tokens bound to this gateway";
    let mcp_audience = config.mcp.as_ref().is_some_and(|m| m.resource.is_some());
    Some(match (&auth.issuer, auth.audiences.is_empty()) {
        (Some(issuer), false) => Item {
            status: Status::Pass,
            name,
            why: format!(
                "iss must be {issuer} and aud one of {}",
                auth.audiences.join(", ")
            ),
        },
        (None, false) => Item {
            status: Status::Warn,
            name,
            why: "[auth] audiences is set but issuer is not: a key set shared by several                   issuers would let any of them in"
                .to_owned(),
        },
        (Some(_), true) => Item {
            status: Status::Warn,
            name,
            why: if mcp_audience {
                "[auth] audiences is empty: outside the MCP endpoints, a token the identity                  provider issued for any other service is accepted"
            } else {
                "[auth] audiences is empty: a token the identity provider issued for any other                  service is accepted"
            }
            .to_owned(),
        },
        (None, true) => Item {
            status: Status::Warn,
            name,
            why: "[auth] sets neither issuer nor audiences: any token signed by a trusted key is                   accepted, whoever it was issued by and for"
                .to_owned(),
        },
    })
}

/// Names a public path that reaches more than one page: the root, a directory-like path ending
/// in `/`, a wildcard written as if paths were patterns, or a protected route's own path.
fn broad_public_path(config: &Config, public: &[String]) -> Option<String> {
    let routes: Vec<&str> = config
        .llm
        .iter()
        .flat_map(|l| l.paths.iter())
        .chain(config.mcp.iter().flat_map(|m| m.paths.iter()))
        .map(String::as_str)
        .collect();
    public.iter().find_map(|path| {
        let why = if path == "/" {
            "is the root of the whole site"
        } else if path.contains('*') {
            "holds a wildcard (public_paths are exact paths, so it matches only itself; list              the paths one by one)"
        } else if path.ends_with('/') {
            "ends in / as if it were a prefix covering everything below it"
        } else if routes.contains(&path.as_str()) {
            "is an LLM or MCP route: the model or tool endpoint itself needs no token"
        } else {
            return None;
        };
        Some(format!(
            "JWT required, but the public path {path} {why}; public paths should be single \
             pages such as a health check"
        ))
    })
}

fn rate_limit_item(config: &Config) -> Item {
    let name = "rate limiting configured";
    let Some(limits) = &config.rate_limit else {
        return Item {
            status: Status::Warn,
            name,
            why: "no [rate_limit]: one client can spend the upstream's whole budget".to_owned(),
        };
    };
    let per_user = limits.default.map(|l| {
        let store = match &limits.backend {
            RateLimitBackend::Memory => "in memory".to_owned(),
            RateLimitBackend::Redis { failure_mode, .. } => {
                format!(
                    "shared through Redis, failure_mode {}",
                    failure_mode.as_str()
                )
            }
        };
        format!(
            "{} requests per {:?} per user ({store})",
            l.requests, l.window
        )
    });
    let per_ip = limits
        .per_ip
        .map(|p| format!("{}/s per address, burst {}", p.requests_per_second, p.burst));
    let (status, why) = match (per_user, per_ip) {
        (Some(user), Some(ip)) => (Status::Pass, format!("{user}; {ip} before authentication")),
        (Some(user), None) => (
            Status::Warn,
            format!(
                "{user}, but no [rate_limit.per_ip]: floods of bad tokens reach signature checks"
            ),
        ),
        (None, Some(ip)) => (
            Status::Warn,
            format!("{ip}, but no per-user limit (rate_limit.requests)"),
        ),
        (None, None) => (Status::Warn, "[rate_limit] sets no limit".to_owned()),
    };
    Item { status, name, why }
}

/// Returns the dotted key of the first string value that looks like secret material.
///
/// Unknown keys are already errors, so this looks at values: private keys, credentials in URLs,
/// bearer tokens and JWTs pasted where a path or a name belongs.
fn find_inline_secret(source: &str) -> Option<String> {
    let table: toml::Table = toml::from_str(source).ok()?;
    let mut found = None;
    walk_strings(
        &toml::Value::Table(table),
        &mut String::new(),
        &mut |key, value| {
            if found.is_none() && looks_secret(value) {
                found = Some(key.to_owned());
            }
        },
    );
    found
}

/// Calls `visit` with the dotted key and value of every string in `value`.
fn walk_strings(value: &toml::Value, path: &mut String, visit: &mut impl FnMut(&str, &str)) {
    match value {
        toml::Value::String(s) => visit(path, s),
        toml::Value::Table(t) => {
            for (k, v) in t {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                walk_strings(v, path, visit);
                path.truncate(len);
            }
        }
        toml::Value::Array(a) => a.iter().for_each(|v| walk_strings(v, path, visit)),
        _ => {}
    }
}

fn looks_secret(s: &str) -> bool {
    let pem_key = s.contains("PRIVATE KEY-----");
    let bearer = s.len() > 7 && s[..7].eq_ignore_ascii_case("bearer ");
    let jwt = s.starts_with("eyJ") && s.matches('.').count() == 2;
    let url_credentials = s
        .split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or("").contains('@'))
        .unwrap_or(false);
    pem_key || bearer || jwt || url_credentials
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_are_found() {
        assert!(looks_secret(&format!(
            "-----BEGIN {} KEY-----\nabc",
            "PRIVATE"
        )));
        assert!(looks_secret("redis://user:pw@host:6379"));
        assert!(looks_secret("Bearer abc.def"));
        assert!(looks_secret("eyJhbGciOi.eyJzdWIi.c2ln"));
        assert!(!looks_secret(
            "https://auth.example.com/.well-known/jwks.json"
        ));
        assert!(!looks_secret("config/tls/key.pem"));
    }

    #[test]
    fn placeholder_and_loopback_hosts_are_recognised() {
        assert_eq!(
            url_host("https://auth.example.com:8443/x").as_deref(),
            Some("auth.example.com")
        );
        assert_eq!(url_host("redis://u:p@[::1]:6379").as_deref(), Some("::1"));
        assert_eq!(url_host("config/jwks.json"), None);
        for host in ["example.com", "auth.example.org", "idp.test", "x.invalid"] {
            assert!(is_placeholder_host(host), "{host}");
        }
        for host in ["myexample.com", "example.company.io", "idp.corp"] {
            assert!(!is_placeholder_host(host), "{host}");
        }
        for host in ["localhost", "127.0.0.1", "::1", "0.0.0.0", "idp.localhost"] {
            assert!(is_loopback_host(host), "{host}");
        }
        assert!(!is_loopback_host("10.0.0.1"));
    }

    #[test]
    fn inline_secret_is_named_by_key() {
        let src = "[upstream]\nurl = \"http://127.0.0.1:1\"\n[headers]\nhsts = \"Bearer x.y.z\"\n";
        assert_eq!(find_inline_secret(src).as_deref(), Some("headers.hsts"));
    }
}

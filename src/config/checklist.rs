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
            why: format!(
                "JWT required, but {} public path(s) need no token: {}",
                auth.public_paths.len(),
                auth.public_paths.join(", ")
            ),
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
    walk(&toml::Value::Table(table), &mut String::new(), &mut found);
    found
}

fn walk(value: &toml::Value, path: &mut String, found: &mut Option<String>) {
    if found.is_some() {
        return;
    }
    match value {
        toml::Value::String(s) if looks_secret(s) => *found = Some(path.clone()),
        toml::Value::Table(t) => {
            for (k, v) in t {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                walk(v, path, found);
                path.truncate(len);
            }
        }
        toml::Value::Array(a) => a.iter().for_each(|v| walk(v, path, found)),
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
    fn inline_secret_is_named_by_key() {
        let src = "[upstream]\nurl = \"http://127.0.0.1:1\"\n[headers]\nhsts = \"Bearer x.y.z\"\n";
        assert_eq!(find_inline_secret(src).as_deref(), Some("headers.hsts"));
    }
}

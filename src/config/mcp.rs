//! Validation of `[mcp]` into [`McpSettings`].

use std::path::PathBuf;

use globset::{Glob, GlobMatcher};
use http::Uri;

use super::raw::RawMcp;
use super::{ConfigError, Locator};
use crate::secret::Secret;

/// The MCP endpoint when `[mcp] paths` is not set.
pub const DEFAULT_MCP_PATHS: [&str; 1] = ["/mcp"];

/// Shortest accepted session-binding key, in bytes.
pub const MIN_SESSION_KEY_BYTES: usize = 32;

/// Validated `[mcp]`.
#[derive(Debug, Clone)]
pub struct McpSettings {
    /// MCP endpoint paths (exact match, without the query).
    pub paths: Vec<String>,
    /// This server's canonical URI, when the gateway is the OAuth resource server.
    pub resource: Option<Resource>,
    /// Scopes named in the metadata and in the 401 challenge.
    pub scopes_supported: Vec<String>,
    /// Origins a browser-based client may call from: `scheme://host[:port]`, lowercase.
    pub allowed_origins: Vec<String>,
    /// Where pinned tool definitions are kept; `None`: no pinning.
    pub pins_file: Option<PathBuf>,
    /// The key binding session ids to users; `None`: a random key per process.
    pub session_key: Option<Secret>,
    /// Per-tool rules; the first match wins, a tool matching none is open.
    pub tools: Vec<ToolRule>,
}

/// The gateway's identity as an OAuth protected resource (RFC 9728).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// The canonical URI, as configured: the `resource` of the metadata and the audience a
    /// token must carry.
    pub uri: String,
    /// `scheme://authority` of the URI: where the metadata documents are published.
    pub origin: String,
    /// Authorization servers (at least one).
    pub authorization_servers: Vec<String>,
}

/// What a tool rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolAction {
    /// The tool is visible and callable with the rule's scopes.
    Allow,
    /// Nobody sees or calls the tool.
    Deny,
}

/// One `[[mcp.tools]]` rule.
#[derive(Debug, Clone)]
pub struct ToolRule {
    /// The name or glob, as configured.
    pub name: String,
    /// The compiled glob.
    pub matcher: GlobMatcher,
    /// Scopes needed to see and call a matching tool.
    pub scopes: Vec<String>,
    /// What the rule does.
    pub action: ToolAction,
}

impl PartialEq for ToolRule {
    fn eq(&self, other: &ToolRule) -> bool {
        self.name == other.name && self.scopes == other.scopes && self.action == other.action
    }
}

pub(super) fn validate(raw: &RawMcp, at: &Locator<'_>) -> Result<McpSettings, ConfigError> {
    let paths = match &raw.paths {
        None => DEFAULT_MCP_PATHS.iter().map(|p| (*p).to_owned()).collect(),
        Some(paths) => {
            if paths.is_empty() {
                return Err(at.error("mcp.paths", "needs at least one path"));
            }
            if let Some(bad) = paths
                .iter()
                .find(|p| !p.starts_with('/') || p.contains('?') || p.contains('#'))
            {
                return Err(at.error(
                    "mcp.paths",
                    format!("{bad:?} is not a path: paths start with / and have no query"),
                ));
            }
            paths.clone()
        }
    };
    let resource = match &raw.resource {
        None => {
            if !raw.authorization_servers.is_empty() {
                return Err(at.error(
                    "mcp.authorization_servers",
                    "is published only with mcp.resource: set the server's canonical URI too",
                ));
            }
            None
        }
        Some(uri) => {
            let origin = http_origin(uri).ok_or_else(|| {
                at.error(
                    "mcp.resource",
                    "must be an absolute https:// (or http://) URI without a query or fragment",
                )
            })?;
            if raw.authorization_servers.is_empty() {
                return Err(at.error(
                    "mcp.authorization_servers",
                    "is required when mcp.resource is set: clients find where to log in from it",
                ));
            }
            if let Some(bad) = raw
                .authorization_servers
                .iter()
                .find(|s| http_origin(s).is_none())
            {
                return Err(at.error(
                    "mcp.authorization_servers",
                    format!("{bad:?} is not an absolute https:// (or http://) URI"),
                ));
            }
            Some(Resource {
                uri: uri.clone(),
                origin,
                authorization_servers: raw.authorization_servers.clone(),
            })
        }
    };
    if let Some(bad) = raw
        .scopes_supported
        .iter()
        .chain(raw.tools.iter().flat_map(|t| &t.scopes))
        .find(|s| !is_scope_token(s))
    {
        return Err(at.error(
            "mcp.scopes_supported",
            format!(
                "{bad:?} is not a scope: printable ASCII without spaces, quotes or backslashes"
            ),
        ));
    }
    let mut allowed_origins = Vec::with_capacity(raw.allowed_origins.len());
    for origin in &raw.allowed_origins {
        match http_origin(origin) {
            Some(normal) if normal.len() == origin.trim_end_matches('/').len() => {
                allowed_origins.push(normal);
            }
            _ => {
                return Err(at.error(
                    "mcp.allowed_origins",
                    format!("{origin:?} is not an origin: scheme://host[:port], no path"),
                ));
            }
        }
    }
    let session_key = match (&raw.session_key_env, &raw.session_key_file) {
        (None, None) => None,
        (env, file) => {
            let key_name = if env.is_some() {
                "mcp.session_key_env"
            } else {
                "mcp.session_key_file"
            };
            let key = Secret::from_env_or_file(env.as_deref(), file.as_deref())
                .map_err(|e| at.error(key_name, e))?;
            if key.len() < MIN_SESSION_KEY_BYTES {
                return Err(at.error(
                    key_name,
                    format!("the session key must be at least {MIN_SESSION_KEY_BYTES} bytes"),
                ));
            }
            Some(key)
        }
    };
    let mut tools = Vec::with_capacity(raw.tools.len());
    for (i, tool) in raw.tools.iter().enumerate() {
        let key = format!("mcp.tools[{i}].name");
        if tool.name.is_empty() {
            return Err(at.error(&key, "a tool name cannot be empty"));
        }
        let matcher = Glob::new(&tool.name)
            .map_err(|_| at.error(&key, "is neither a tool name nor a valid glob"))?
            .compile_matcher();
        let action = match tool.action.as_deref() {
            None | Some("allow") => ToolAction::Allow,
            Some("deny") => ToolAction::Deny,
            Some(_) => {
                return Err(at.error(
                    &format!("mcp.tools[{i}].action"),
                    "must be \"allow\" or \"deny\"",
                ));
            }
        };
        if action == ToolAction::Deny && !tool.scopes.is_empty() {
            return Err(at.error(
                &format!("mcp.tools[{i}].scopes"),
                "a denied tool is denied to every scope: drop scopes or the deny",
            ));
        }
        tools.push(ToolRule {
            name: tool.name.clone(),
            matcher,
            scopes: tool.scopes.clone(),
            action,
        });
    }
    Ok(McpSettings {
        paths,
        resource,
        scopes_supported: raw.scopes_supported.clone(),
        allowed_origins,
        pins_file: raw.pins_file.as_ref().map(PathBuf::from),
        session_key,
        tools,
    })
}

/// `scheme://authority` (lowercase) of an absolute http(s) URI without query or fragment.
pub(crate) fn http_origin(text: &str) -> Option<String> {
    if text.contains('#') || text.contains('?') {
        return None;
    }
    let uri: Uri = text.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    if scheme != "https" && scheme != "http" {
        return None;
    }
    let authority = uri.authority()?.as_str();
    if authority.contains('@') {
        return None;
    }
    Some(format!("{scheme}://{}", authority.to_ascii_lowercase()))
}

/// An RFC 6749 scope token: printable ASCII but space, `"` and `\`.
fn is_scope_token(scope: &str) -> bool {
    !scope.is_empty()
        && scope
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::{http_origin, is_scope_token};

    #[test]
    fn origins_are_scheme_and_authority_in_lowercase() {
        assert_eq!(
            http_origin("https://Agents.Example.com:8443/mcp").as_deref(),
            Some("https://agents.example.com:8443")
        );
        assert_eq!(http_origin("ftp://x").as_deref(), None);
        assert_eq!(http_origin("https://x/mcp#f").as_deref(), None);
        assert_eq!(http_origin("/mcp").as_deref(), None);
        assert_eq!(http_origin("https://user@x").as_deref(), None);
    }

    #[test]
    fn scopes_are_tokens() {
        assert!(is_scope_token("repo:admin"));
        assert!(!is_scope_token("a b"));
        assert!(!is_scope_token("a\"b"));
        assert!(!is_scope_token(""));
    }
}

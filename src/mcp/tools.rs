//! Per-tool authorization: who may see and call each tool, and the filtering of `tools/list`.
//!
//! Guards against every tool being open to every authenticated caller: `[[mcp.tools]]` rules
//! (first match wins; a tool matching none is open) deny a tool to everyone or require scopes.
//! A tool the caller may not use is absent from the listing it receives, and its call is refused
//! before it reaches the server.

use serde_json::Value;

use super::pins::{Pins, Verdict};
use crate::config::mcp::{ToolAction, ToolRule};
use crate::principal::Principal;

/// What a caller may do with a tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access<'a> {
    /// Anyone admitted may see and call it.
    Open,
    /// Callers holding these scopes may.
    Scoped(&'a [String]),
    /// Nobody may.
    Denied,
}

/// The `[[mcp.tools]]` rules.
#[derive(Debug, Clone, Default)]
pub struct ToolPolicy {
    rules: Vec<ToolRule>,
}

impl ToolPolicy {
    /// The policy of these rules, in order.
    pub fn new(rules: Vec<ToolRule>) -> ToolPolicy {
        ToolPolicy { rules }
    }

    /// The access the first matching rule gives `tool`.
    pub fn access(&self, tool: &str) -> Access<'_> {
        match self.rules.iter().find(|r| r.matcher.is_match(tool)) {
            None => Access::Open,
            Some(rule) if rule.action == ToolAction::Deny => Access::Denied,
            Some(rule) if rule.scopes.is_empty() => Access::Open,
            Some(rule) => Access::Scoped(&rule.scopes),
        }
    }

    /// Whether `principal` (none when the route is not authenticated) may use `tool`.
    pub fn permits(&self, tool: &str, principal: Option<&Principal>) -> bool {
        match self.access(tool) {
            Access::Open => true,
            Access::Scoped(scopes) => principal.is_some_and(|p| p.has_scopes(scopes)),
            Access::Denied => false,
        }
    }
}

/// What filtering a listing did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Filtered {
    /// Tools left out because the caller may not use them.
    pub forbidden: usize,
    /// Tools left out because their definition changed since it was pinned.
    pub changed: usize,
    /// Definitions that changed for the first time (for the metric).
    pub newly_changed: usize,
}

/// Leaves out of a `tools/list` result message the tools `principal` may not use and those
/// whose definition changed since it was pinned (pinning the ones seen for the first time).
/// Returns `None` when the message is not a result carrying a tool list (left as it is).
pub fn filter_listing(
    message: &mut Value,
    policy: &ToolPolicy,
    pins: Option<&Pins>,
    principal: Option<&Principal>,
) -> Option<Filtered> {
    let result = message.get_mut("result")?.as_object_mut()?;
    let tools = result.get_mut("tools")?.as_array_mut()?;
    let mut filtered = Filtered::default();
    tools.retain(|tool| {
        let Some(object) = tool.as_object() else {
            return false;
        };
        let Some(name) = object.get("name").and_then(Value::as_str) else {
            return false;
        };
        if !policy.permits(name, principal) {
            filtered.forbidden += 1;
            return false;
        }
        match pins.map(|p| p.judge(object)) {
            Some((Verdict::Changed, newly)) => {
                filtered.changed += 1;
                filtered.newly_changed += usize::from(newly);
                false
            }
            _ => true,
        }
    });
    // A listing that depends on the caller is not for shared caches (2026-07-28).
    if let Some(scope) = result.get_mut("cacheScope") {
        *scope = Value::from("private");
    }
    Some(filtered)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use globset::Glob;
    use serde_json::json;

    use super::{Access, ToolPolicy, filter_listing};
    use crate::config::mcp::{ToolAction, ToolRule};
    use crate::principal::Principal;

    fn rule(name: &str, scopes: &[&str], action: ToolAction) -> ToolRule {
        ToolRule {
            name: name.to_owned(),
            matcher: Glob::new(name).unwrap().compile_matcher(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            action,
        }
    }

    fn principal(scopes: &[&str]) -> Principal {
        Principal {
            user: Arc::from("alice"),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            identity_headers: Vec::new(),
            claims: Vec::new(),
            subject: None,
            token_id: None,
            audiences: None,
        }
    }

    #[test]
    fn first_match_wins_and_unmatched_tools_are_open() {
        let policy = ToolPolicy::new(vec![
            rule("run_shell", &[], ToolAction::Deny),
            rule("delete_*", &["repo:admin"], ToolAction::Allow),
            rule("delete_all", &[], ToolAction::Deny),
        ]);
        assert_eq!(policy.access("run_shell"), Access::Denied);
        assert!(matches!(policy.access("delete_all"), Access::Scoped(_)));
        assert_eq!(policy.access("echo"), Access::Open);
        let mut listing = json!({"jsonrpc": "2.0", "id": 2, "result": {"tools": [
            {"name": "echo", "inputSchema": {}}, {"name": "run_shell", "inputSchema": {}},
            {"name": "delete_repo", "inputSchema": {}}, "not a tool"
        ], "cacheScope": "public"}});
        let reader = principal(&["repo:read"]);
        let filtered = filter_listing(&mut listing, &policy, None, Some(&reader)).unwrap();
        assert_eq!(filtered.forbidden, 2);
        assert_eq!(
            listing["result"]["tools"],
            json!([{"name": "echo", "inputSchema": {}}])
        );
        assert_eq!(listing["result"]["cacheScope"], "private");
        let admin = principal(&["repo:admin"]);
        assert!(policy.permits("delete_repo", Some(&admin)));
        assert!(!policy.permits("delete_repo", None));
        assert!(filter_listing(&mut json!({"result": {}}), &policy, None, None).is_none());
    }
}

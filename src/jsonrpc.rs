//! The JSON-RPC 2.0 envelope of an MCP message: what the gateway reads of it.
//!
//! A leaf of the module graph: validation reads the envelope of every MCP body it parses (so a
//! refusal can answer with the request's `id`, and the audit record can name the method), and
//! the MCP stage decides on it. Only the method, the id, the tool name (or resource URI) and the
//! protocol version are read; the arguments never are.

use serde_json::Value;

use crate::context::McpFacts;

/// `params._meta` key of the protocol version in per-request metadata (2026-07-28).
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";

/// The methods whose `params.name` (or `params.uri`) names what they act on.
pub const NAMED_METHODS: [&str; 3] = ["tools/call", "resources/read", "prompts/get"];

/// What kind of JSON-RPC message a body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A request: a method and an id.
    Request,
    /// A notification: a method, no id.
    Notification,
    /// A response (a result or an error) to a server's request.
    Response,
    /// Not a JSON-RPC 2.0 message (a batch, or anything else).
    Invalid,
}

/// The envelope of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The kind of message.
    pub kind: Kind,
    /// The method, the id and the name, as the audit record reports them.
    pub facts: McpFacts,
    /// The protocol version in `params._meta` (2026-07-28 requests carry it).
    pub meta_version: Option<Box<str>>,
}

impl Envelope {
    /// Reads the envelope of a parsed body.
    pub fn of(message: &Value) -> Envelope {
        let Some(object) = message.as_object() else {
            return Envelope {
                kind: Kind::Invalid,
                facts: McpFacts::default(),
                meta_version: None,
            };
        };
        let method = object.get("method").and_then(Value::as_str);
        let id = object
            .get("id")
            .filter(|id| id.is_string() || id.is_number())
            .map(|id| id.to_string().into_boxed_str());
        let params = object.get("params");
        let name = method
            .filter(|m| NAMED_METHODS.contains(m))
            .and_then(|m| {
                let key = if m == "resources/read" { "uri" } else { "name" };
                params?.get(key)?.as_str()
            })
            .map(Box::from);
        let meta_version = params
            .and_then(|p| p.get("_meta"))
            .and_then(|m| m.get(META_PROTOCOL_VERSION))
            .and_then(Value::as_str)
            .map(Box::from);
        let versioned = object.get("jsonrpc").and_then(Value::as_str) == Some("2.0");
        let kind = match (versioned, method, &id) {
            (false, _, _) => Kind::Invalid,
            (true, Some(_), Some(_)) => Kind::Request,
            (true, Some(_), None) => Kind::Notification,
            (true, None, Some(_))
                if object.contains_key("result") || object.contains_key("error") =>
            {
                Kind::Response
            }
            _ => Kind::Invalid,
        };
        Envelope {
            kind,
            facts: McpFacts {
                method: method.map(Box::from),
                name,
                id,
            },
            meta_version,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{Envelope, Kind};

    #[test]
    fn reads_method_id_name_and_version_but_never_arguments() {
        let call = Envelope::of(&json!({
            "jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "secret"},
                       "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}
        }));
        assert_eq!(call.kind, Kind::Request);
        assert_eq!(call.facts.method.as_deref(), Some("tools/call"));
        assert_eq!(call.facts.name.as_deref(), Some("echo"));
        assert_eq!(call.facts.id.as_deref(), Some("7"));
        assert_eq!(call.meta_version.as_deref(), Some("2026-07-28"));
        let read = Envelope::of(&json!({
            "jsonrpc": "2.0", "id": "a", "method": "resources/read", "params": {"uri": "file:///x"}
        }));
        assert_eq!(read.facts.name.as_deref(), Some("file:///x"));
        assert_eq!(read.facts.id.as_deref(), Some("\"a\""));
        let note = Envelope::of(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        assert_eq!(note.kind, Kind::Notification);
        let answer = Envelope::of(&json!({"jsonrpc": "2.0", "id": 1, "result": {}}));
        assert_eq!(answer.kind, Kind::Response);
        assert_eq!(
            Envelope::of(&json!([{"jsonrpc": "2.0"}])).kind,
            Kind::Invalid
        );
        assert_eq!(
            Envelope::of(&json!({"id": 1, "method": "x"})).kind,
            Kind::Invalid
        );
        assert_eq!(
            Envelope::of(&json!({"jsonrpc": "2.0", "id": null, "method": "x"})).kind,
            Kind::Notification
        );
    }
}

//! The JSON-RPC 2.0 envelope of an MCP message: what the gateway reads of it.
//!
//! A leaf of the module graph: validation reads the envelope of every MCP body it parses (so a
//! refusal can answer with the request's `id`, and the audit record can name the method), and
//! the MCP stage decides on it. Only the method, the id, the tool name (or resource URI) and the
//! protocol version are read; the arguments never are.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

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

/// The envelope of one message: what the audit record, the MCP stage and a JSON-RPC refusal
/// know of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The kind of message.
    pub kind: Kind,
    /// The method (`tools/call`...); `None` for a response.
    pub method: Option<Box<str>>,
    /// The tool name (`tools/call`), prompt name (`prompts/get`) or resource URI
    /// (`resources/read`); never the arguments.
    pub name: Option<Box<str>>,
    /// The message's `id`, as JSON text (a string or a number), for the error response.
    pub id: Option<Box<str>>,
    /// The protocol version in `params._meta` (2026-07-28 requests carry it).
    pub meta_version: Option<Box<str>>,
}

impl Envelope {
    /// Reads the envelope of a body. Only the fields the gateway reads are parsed (borrowed, no
    /// copy of the rest); a field among them given twice makes the message invalid, so that no
    /// other parser (the server's) can see a different method or tool than the gateway judged.
    pub fn parse(body: &[u8]) -> Envelope {
        let Ok(wire) = serde_json::from_slice::<Wire<'_>>(body) else {
            return Envelope::INVALID;
        };
        let id = match wire.id {
            None => None,
            Some(raw) => {
                let text = raw.get();
                if !text.starts_with(|c: char| c == '"' || c == '-' || c.is_ascii_digit()) {
                    return Envelope::INVALID;
                }
                Some(Box::from(text))
            }
        };
        let method = wire.method.as_deref();
        let params = wire.params.as_ref();
        let name = match method {
            Some("resources/read") => params.and_then(|p| p.uri.as_deref()),
            Some(m) if NAMED_METHODS.contains(&m) => params.and_then(|p| p.name.as_deref()),
            _ => None,
        };
        let kind = match (wire.jsonrpc.as_deref(), method, &id) {
            (Some("2.0"), Some(_), Some(_)) => Kind::Request,
            (Some("2.0"), Some(_), None) => Kind::Notification,
            (Some("2.0"), None, Some(_)) if wire.result.is_some() || wire.error.is_some() => {
                Kind::Response
            }
            _ => Kind::Invalid,
        };
        Envelope {
            kind,
            method: method.map(Box::from),
            name: name.map(Box::from),
            id,
            meta_version: params
                .and_then(|p| p.meta.as_ref())
                .and_then(|m| m.protocol_version.as_deref())
                .map(Box::from),
        }
    }

    const INVALID: Envelope = Envelope {
        kind: Kind::Invalid,
        method: None,
        name: None,
        id: None,
        meta_version: None,
    };
}

/// The fields of a message the gateway reads; the others are skipped unparsed.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    jsonrpc: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    params: Option<Params<'a>>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Params<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    uri: Option<Cow<'a, str>>,
    #[serde(rename = "_meta", borrow, default)]
    meta: Option<Meta<'a>>,
}

#[derive(Deserialize)]
struct Meta<'a> {
    #[serde(rename = "io.modelcontextprotocol/protocolVersion", borrow, default)]
    protocol_version: Option<Cow<'a, str>>,
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::{Envelope, Kind};

    fn of(message: Value) -> Envelope {
        Envelope::parse(message.to_string().as_bytes())
    }

    #[test]
    fn reads_method_id_name_and_version_but_never_arguments() {
        let call = of(json!({
            "jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "secret"},
                       "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}
        }));
        assert_eq!(call.kind, Kind::Request);
        assert_eq!(call.method.as_deref(), Some("tools/call"));
        assert_eq!(call.name.as_deref(), Some("echo"));
        assert_eq!(call.id.as_deref(), Some("7"));
        assert_eq!(call.meta_version.as_deref(), Some("2026-07-28"));
        let read = of(json!({
            "jsonrpc": "2.0", "id": "a", "method": "resources/read", "params": {"uri": "file:///x"}
        }));
        assert_eq!(read.name.as_deref(), Some("file:///x"));
        assert_eq!(read.id.as_deref(), Some("\"a\""));
        let note = of(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        assert_eq!(note.kind, Kind::Notification);
        let answer = of(json!({"jsonrpc": "2.0", "id": 1, "result": {}}));
        assert_eq!(answer.kind, Kind::Response);
        assert_eq!(of(json!([{"jsonrpc": "2.0"}])).kind, Kind::Invalid);
        assert_eq!(of(json!({"id": 1, "method": "x"})).kind, Kind::Invalid);
        assert_eq!(
            of(json!({"jsonrpc": "2.0", "id": null, "method": "x"})).kind,
            Kind::Notification
        );
        let object_id = of(json!({"jsonrpc": "2.0", "id": {"a": 1}, "method": "x"}));
        assert_eq!(object_id.kind, Kind::Invalid);
    }

    #[test]
    fn a_field_the_gateway_reads_given_twice_is_invalid() {
        // A server whose parser keeps the first `name` would run another tool than the one judged.
        let twice = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"run_shell"}}"#;
        assert_eq!(Envelope::parse(twice).kind, Kind::Invalid);
        let method = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call"}"#;
        assert_eq!(Envelope::parse(method).kind, Kind::Invalid);
        assert_eq!(Envelope::parse(b"{not json").kind, Kind::Invalid);
        // Escapes are decoded before the name is judged.
        let escaped =
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"run\u005fshell"}}"#;
        assert_eq!(Envelope::parse(escaped).name.as_deref(), Some("run_shell"));
    }
}

//! One audit line as JSON, written field by field into a reused buffer.
//!
//! The writer thread formats every record of the gateway, so this is written by hand rather than
//! derived: keys are literals (nothing to escape), numbers go through `itoa`, ids and hashes are
//! ASCII already, and only the strings that came from outside (path, user, rule, model, tool) are
//! checked for characters JSON must escape, which serde_json then escapes. The derived
//! serialisation cost about twice as much, most of it in escaping keys and in `#[serde(flatten)]`.
//! The tests parse the lines back and compare every field.

use std::io::{self, Write};
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use super::AuditRecord;
use crate::outcome::StreamEnd;

/// The date and time of the last second a record was written in (`2026-12-07T22:05:44`), so that
/// records of the same second copy it instead of converting the time to a date again.
#[derive(Debug, Default)]
pub struct Timestamps {
    second: Option<u64>,
    text: [u8; 19],
}

impl Timestamps {
    /// Writes `ts` as RFC 3339 in UTC with milliseconds, quoted (what
    /// `humantime::format_rfc3339_millis` prints).
    fn write(&mut self, out: &mut Vec<u8>, ts: SystemTime) -> io::Result<()> {
        let Ok(since) = ts.duration_since(UNIX_EPOCH) else {
            return write!(out, "\"{}\"", humantime::format_rfc3339_millis(ts));
        };
        let second = since.as_secs();
        if self.second != Some(second) {
            let mut text = Vec::with_capacity(20);
            write!(text, "{}", humantime::format_rfc3339_seconds(ts))?;
            // "YYYY-MM-DDTHH:MM:SSZ": keep all but the zone.
            match text.get(..19).and_then(|t| <[u8; 19]>::try_from(t).ok()) {
                Some(date) => self.text = date,
                None => return write!(out, "\"{}\"", humantime::format_rfc3339_millis(ts)),
            }
            self.second = Some(second);
        }
        let millis = since.subsec_millis();
        out.push(b'"');
        out.extend_from_slice(&self.text);
        out.extend_from_slice(&[
            b'.',
            b'0' + (millis / 100) as u8,
            b'0' + (millis / 10 % 10) as u8,
            b'0' + (millis % 10) as u8,
            b'Z',
            b'"',
        ]);
        Ok(())
    }
}

/// Appends the JSON line of `record` (no newline) to `out`: the chain fields first, so a reader
/// sees them before the record, and the count of records dropped before it last.
pub fn write(
    out: &mut Vec<u8>,
    timestamps: &mut Timestamps,
    seq: Option<u64>,
    prev_hash: Option<&[u8; 64]>,
    record: &AuditRecord,
    dropped_before: Option<u64>,
) -> io::Result<()> {
    out.push(b'{');
    if let Some(seq) = seq {
        out.extend_from_slice(b"\"seq\":");
        number(out, seq);
        out.push(b',');
    }
    if let Some(hash) = prev_hash {
        out.extend_from_slice(b"\"prev_hash\":");
        ascii(out, hash);
        out.push(b',');
    }
    out.extend_from_slice(b"\"ts\":");
    timestamps.write(out, record.ts)?;
    out.extend_from_slice(b",\"request_id\":");
    match record.request_id.to_str() {
        Ok(id) => text(out, id)?,
        Err(_) => out.extend_from_slice(b"\"invalid\""),
    }
    out.extend_from_slice(b",\"trace_id\":");
    ascii(out, &record.trace_id.hex());
    out.extend_from_slice(b",\"client_ip\":");
    ip(out, record.client_ip)?;
    out.extend_from_slice(b",\"user\":");
    optional_text(out, record.user.as_deref())?;
    out.extend_from_slice(b",\"method\":");
    text(out, record.method.as_str())?;
    out.extend_from_slice(b",\"path\":");
    text(out, &record.path)?;
    out.extend_from_slice(b",\"status\":");
    number(out, record.status);
    out.extend_from_slice(b",\"decision\":");
    ascii(out, record.decision.as_str().as_bytes());
    out.extend_from_slice(b",\"rule\":");
    optional_text(out, record.rule.as_deref())?;
    out.extend_from_slice(b",\"latency_ms\":");
    serde_json::to_writer(&mut *out, &record.latency_ms)?;
    out.extend_from_slice(b",\"upstream_status\":");
    optional_number(out, record.upstream_status);
    out.extend_from_slice(b",\"bytes_in\":");
    number(out, record.bytes_in);
    out.extend_from_slice(b",\"bytes_out\":");
    number(out, record.bytes_out);
    out.extend_from_slice(b",\"end\":");
    match record.end {
        StreamEnd::SocketClosed(code) => {
            out.push(b'"');
            number(out, code);
            out.push(b'"');
        }
        other => ascii(out, other.as_str().as_bytes()),
    }
    out.extend_from_slice(b",\"model\":");
    optional_text(out, record.model.as_deref())?;
    out.extend_from_slice(b",\"input_tokens\":");
    optional_number(out, record.input_tokens);
    out.extend_from_slice(b",\"output_tokens\":");
    optional_number(out, record.output_tokens);
    out.extend_from_slice(b",\"redactions\":");
    number(out, record.redactions);
    out.extend_from_slice(b",\"dlp_rules\":[");
    for (i, rule) in record.dlp_rules.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        text(out, rule)?;
    }
    out.extend_from_slice(b"],\"mcp_method\":");
    optional_text(out, record.mcp_method.as_deref())?;
    out.extend_from_slice(b",\"mcp_tool\":");
    optional_text(out, record.mcp_tool.as_deref())?;
    out.extend_from_slice(b",\"messages_in\":");
    optional_number(out, record.messages_in);
    out.extend_from_slice(b",\"messages_out\":");
    optional_number(out, record.messages_out);
    if let Some(dropped) = dropped_before {
        out.extend_from_slice(b",\"dropped_before\":");
        number(out, dropped);
    }
    out.push(b'}');
    Ok(())
}

/// A string JSON needs no escape in (printable ASCII without `"` and `\`, or any non-ASCII
/// UTF-8, which JSON carries as it is), quoted.
fn ascii(out: &mut Vec<u8>, text: &[u8]) {
    out.push(b'"');
    out.extend_from_slice(text);
    out.push(b'"');
}

/// A JSON string: copied when nothing in it needs escaping, else escaped by serde_json.
fn text(out: &mut Vec<u8>, text: &str) -> io::Result<()> {
    // A fold without early exit: the compiler vectorises it.
    let plain = text.bytes().fold(true, |plain, b| {
        plain & (b >= 0x20 && b != b'"' && b != b'\\')
    });
    if plain {
        ascii(out, text.as_bytes());
        Ok(())
    } else {
        Ok(serde_json::to_writer(&mut *out, text)?)
    }
}

fn optional_text(out: &mut Vec<u8>, value: Option<&str>) -> io::Result<()> {
    match value {
        Some(value) => text(out, value),
        None => {
            out.extend_from_slice(b"null");
            Ok(())
        }
    }
}

fn number(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn optional_number(out: &mut Vec<u8>, n: Option<impl itoa::Integer>) {
    match n {
        Some(n) => number(out, n),
        None => out.extend_from_slice(b"null"),
    }
}

/// An address as text: IPv4 by its four numbers, IPv6 through `Display` (its `::` shortening).
fn ip(out: &mut Vec<u8>, ip: IpAddr) -> io::Result<()> {
    match ip {
        IpAddr::V4(v4) => {
            out.push(b'"');
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                number(out, octet);
            }
            out.push(b'"');
            Ok(())
        }
        IpAddr::V6(v6) => write!(out, "\"{v6}\""),
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use http::{HeaderValue, Method};
    use serde_json::{Value, json};

    use super::*;
    use crate::outcome::Decision;
    use crate::trace::TraceId;

    fn record() -> AuditRecord {
        AuditRecord {
            ts: SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_681_144_123),
            request_id: HeaderValue::from_static("0b6c1a52-9a43-4a4e-8d7e-5d1f0f7d3c2a"),
            trace_id: TraceId([0xab; 16]),
            client_ip: "203.0.113.9".parse().unwrap(),
            user: Some(Arc::from("alice")),
            method: Method::POST,
            path: "/v1/chat/completions".to_owned(),
            status: 200,
            decision: Decision::Allowed,
            rule: None,
            latency_ms: 1.25,
            upstream_status: Some(200),
            bytes_in: 103,
            bytes_out: 1024,
            end: StreamEnd::Complete,
            model: Some("gpt-4o".into()),
            input_tokens: Some(12),
            output_tokens: None,
            redactions: 0,
            dlp_rules: Vec::new(),
            mcp_method: None,
            mcp_tool: None,
            messages_in: None,
            messages_out: None,
        }
    }

    fn line(
        seq: Option<u64>,
        hash: Option<&[u8; 64]>,
        record: &AuditRecord,
        dropped: Option<u64>,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        write(
            &mut out,
            &mut Timestamps::default(),
            seq,
            hash,
            record,
            dropped,
        )
        .unwrap();
        out
    }

    #[test]
    fn every_field_reads_back_in_order() {
        let hash = [b'f'; 64];
        let text = line(Some(7), Some(&hash), &record(), Some(2));
        let value: Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(
            value,
            json!({
                "seq": 7, "prev_hash": "f".repeat(64), "ts": "2026-12-07T22:05:44.123Z",
                "request_id": "0b6c1a52-9a43-4a4e-8d7e-5d1f0f7d3c2a",
                "trace_id": "ab".repeat(16), "client_ip": "203.0.113.9", "user": "alice",
                "method": "POST", "path": "/v1/chat/completions", "status": 200,
                "decision": "allowed", "rule": null, "latency_ms": 1.25, "upstream_status": 200,
                "bytes_in": 103, "bytes_out": 1024, "end": "complete", "model": "gpt-4o",
                "input_tokens": 12, "output_tokens": null, "redactions": 0, "dlp_rules": [],
                "mcp_method": null, "mcp_tool": null, "messages_in": null, "messages_out": null,
                "dropped_before": 2
            })
        );
        let text = String::from_utf8(text).unwrap();
        let keys = [
            "seq",
            "prev_hash",
            "ts",
            "request_id",
            "trace_id",
            "client_ip",
            "user",
            "method",
            "path",
            "status",
            "decision",
            "rule",
            "latency_ms",
            "upstream_status",
            "bytes_in",
            "bytes_out",
            "end",
            "model",
            "input_tokens",
            "output_tokens",
            "redactions",
            "dlp_rules",
            "mcp_method",
            "mcp_tool",
            "messages_in",
            "messages_out",
            "dropped_before",
        ];
        let at: Vec<usize> = keys
            .iter()
            .map(|k| text.find(&format!("\"{k}\":")).unwrap())
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
    }

    #[test]
    fn chain_and_drop_fields_appear_only_when_set() {
        let text = String::from_utf8(line(None, None, &record(), None)).unwrap();
        assert!(text.starts_with("{\"ts\":\""), "{text}");
        assert!(!text.contains("seq") && !text.contains("prev_hash"));
        assert!(!text.contains("dropped_before") && text.ends_with("\"messages_out\":null}"));
    }

    #[test]
    fn outside_strings_are_escaped_and_every_kind_of_value_reads_back() {
        let mut r = record();
        r.path = "/a\"b\\c\nd\u{1}é".to_owned();
        r.user = Some(Arc::from("ünï \"quoted\""));
        r.rule = Some(Cow::Borrowed("injection.override"));
        r.client_ip = "2001:db8::1".parse().unwrap();
        r.decision = Decision::RateLimited;
        r.end = StreamEnd::SocketClosed(1008);
        r.dlp_rules = vec!["aws_access_key", "email"];
        r.mcp_method = Some("tools/call".into());
        r.mcp_tool = Some("read\tfile".into());
        r.messages_in = Some(3);
        r.messages_out = Some(u64::MAX);
        r.latency_ms = 0.1 + 0.2;
        r.upstream_status = None;
        r.request_id = HeaderValue::from_bytes(b"id\xff").unwrap();
        let value: Value = serde_json::from_slice(&line(None, None, &r, None)).unwrap();
        assert_eq!(value["path"], "/a\"b\\c\nd\u{1}é");
        assert_eq!(value["user"], "ünï \"quoted\"");
        assert_eq!(value["rule"], "injection.override");
        assert_eq!(value["client_ip"], "2001:db8::1");
        assert_eq!(value["decision"], "rate_limited");
        assert_eq!(value["end"], "1008");
        assert_eq!(value["dlp_rules"], json!(["aws_access_key", "email"]));
        assert_eq!(value["mcp_method"], "tools/call");
        assert_eq!(value["mcp_tool"], "read\tfile");
        assert_eq!(value["messages_in"], 3);
        assert_eq!(value["messages_out"], u64::MAX);
        assert_eq!(value["latency_ms"], 0.1 + 0.2);
        assert_eq!(value["upstream_status"], Value::Null);
        assert_eq!(value["request_id"], "invalid");
    }

    #[test]
    fn timestamps_match_humantime_across_seconds_and_days() {
        let mut timestamps = Timestamps::default();
        let start = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_774_399_000);
        // Every 7 ms across a day boundary, then back in time, then far apart.
        let mut times: Vec<SystemTime> = (0..600u64)
            .map(|i| start + Duration::from_millis(i * 7))
            .collect();
        times.extend([
            start,
            SystemTime::UNIX_EPOCH,
            SystemTime::UNIX_EPOCH + Duration::from_micros(999_999),
            start + Duration::from_secs(86_400 * 400) + Duration::from_nanos(5),
        ]);
        for ts in times {
            let mut out = Vec::new();
            timestamps.write(&mut out, ts).unwrap();
            let expected = format!("\"{}\"", humantime::format_rfc3339_millis(ts));
            assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
    }

    #[test]
    fn addresses_read_back_as_std_prints_them() {
        for address in [
            "0.0.0.0",
            "10.200.3.255",
            "255.255.255.255",
            "::1",
            "::ffff:1.2.3.4",
        ] {
            let mut r = record();
            r.client_ip = address.parse().unwrap();
            let value: Value = serde_json::from_slice(&line(None, None, &r, None)).unwrap();
            assert_eq!(value["client_ip"], r.client_ip.to_string());
        }
    }
}

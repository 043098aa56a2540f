//! The extra work of an MCP request: reading the JSON-RPC envelope of a `tools/call` message, passing a non-listing event of a listing's stream, and filtering a `tools/list`
//! answer (parse, judge every tool against the rules and pins, serialise) of 10 and 100 tools.
//!
//! Run with `cargo bench --bench mcp`.

// A benchmark: setup failures abort the run with their reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use globset::Glob;
use portcullis::config::mcp::{ToolAction, ToolRule};
use portcullis::jsonrpc::Envelope;
use portcullis::mcp::pins::Pins;
use portcullis::mcp::tools::{ToolPolicy, filter_listing};
use portcullis::principal::Principal;
use serde_json::{Value, json};

fn listing(tools: usize) -> Vec<u8> {
    let tools: Vec<Value> = (0..tools)
        .map(|i| {
            json!({"name": format!("tool_{i}"), "description": "Does one useful thing with the input it is given.",
                   "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}},
                                   "required": ["text"]}})
        })
        .collect();
    serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 2, "result": {"tools": tools}})).unwrap()
}

fn bench(c: &mut Criterion) {
    let call = serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "Please summarise the quarterly report."},
                   "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}}))
    .unwrap();
    let mut group = c.benchmark_group("mcp");
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("envelope of a tools/call", |b| {
        b.iter(|| black_box(Envelope::parse(black_box(&call))))
    });
    let rules = vec![
        ToolRule {
            name: "tool_1*".to_owned(),
            matcher: Glob::new("tool_1*").unwrap().compile_matcher(),
            scopes: vec!["admin".to_owned()],
            action: ToolAction::Allow,
        },
        ToolRule {
            name: "tool_2".to_owned(),
            matcher: Glob::new("tool_2").unwrap().compile_matcher(),
            scopes: Vec::new(),
            action: ToolAction::Deny,
        },
    ];
    let policy = ToolPolicy::new(rules);
    let principal = Principal {
        user: Arc::from("alice"),
        scopes: vec!["mcp:tools".to_owned()],
        identity_headers: Vec::new(),
        claims: Vec::new(),
        subject: None,
        token_id: None,
        audiences: None,
    };
    // What every other event of a listing's stream costs: parsed, found not to be the listing,
    // written again.
    let progress = serde_json::to_vec(
        &json!({"jsonrpc": "2.0", "method": "notifications/progress",
        "params": {"progressToken": 1, "progress": 1, "message": "listing"}}),
    )
    .unwrap();
    group.bench_function("pass a notification event of a listing stream", |b| {
        b.iter(|| {
            let mut value: Value = serde_json::from_slice(black_box(&progress)).unwrap();
            filter_listing(&mut value, &policy, None, Some(&principal));
            black_box(serde_json::to_vec(&value).unwrap())
        })
    });
    let dir = tempfile::tempdir().unwrap();
    let pins = Pins::load(&dir.path().join("pins.json")).unwrap();
    for tools in [10, 100] {
        let body = listing(tools);
        group.throughput(Throughput::Bytes(body.len() as u64));
        for (label, pins) in [("rules", None), ("rules+pins", Some(&pins))] {
            group.bench_function(format!("filter tools/list of {tools} ({label})"), |b| {
                b.iter(|| {
                    let mut value: Value = serde_json::from_slice(black_box(&body)).unwrap();
                    filter_listing(&mut value, &policy, pins, Some(&principal));
                    black_box(serde_json::to_vec(&value).unwrap())
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! The extra work of an OpenAI-compatible request: the role-aware body check (parse, locate the
//! messages and their roles, judge the scanned ones) against the plain check of the same body,
//! the request facts the policy reads, and reading usage from an answer as it passes.
//!
//! Run with `cargo bench --bench llm`.

// A benchmark: setup failures abort the run with their reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::BodyExt;
use portcullis::config::llm::{DEFAULT_SCAN_ROLES, Roles};
use portcullis::detect::rules::{RuleOptions, RuleSet};
use portcullis::llm::request::LlmRequest;
use portcullis::llm::usage::{Metered, MeteredBody, Settle};
use portcullis::validate::body::{Judge, check_json, check_json_view};

const SENTENCES: [&str; 4] = [
    "Please summarise the quarterly report and list the three biggest risks.",
    "How do I evaluate this integral and why does eval() in JavaScript worry people?",
    "Der Kunde möchte die Lieferung auf nächsten Dienstag verschieben.",
    "Write a polite reminder that the invoice is overdue by fourteen days.",
];

/// A chat body of about `size` bytes: a system prompt, then user and assistant turns. Both
/// checks pass it (a defensive system prompt would stop the plain check at its first string),
/// so both do their whole work.
fn body(size: usize) -> Vec<u8> {
    let mut messages = vec![serde_json::json!({"role": "system",
        "content": "You are a helpful assistant for the sales team. Answer briefly."})];
    let mut len = 0;
    let mut i = 0;
    while len < size {
        let content = SENTENCES[i % SENTENCES.len()].repeat(3);
        len += content.len() + 40;
        messages.push(serde_json::json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": content}));
        i += 1;
    }
    serde_json::to_vec(
        &serde_json::json!({"model": "gpt-test", "stream": true, "messages": messages}),
    )
    .unwrap()
}

fn bench_request(c: &mut Criterion) {
    let rules = RuleSet::new(&RuleOptions::default()).unwrap();
    let roles = Roles::of(&DEFAULT_SCAN_ROLES);
    let mut group = c.benchmark_group("llm_request");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    for (name, size) in [("1KiB", 1024), ("10KiB", 10 * 1024)] {
        let body = body(size);
        assert!(
            check_json(&body, &rules, 64, usize::MAX).is_ok(),
            "both checks pass it"
        );
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(format!("plain_check/{name}"), |b| {
            b.iter(|| check_json(black_box(&body), &rules, 64, usize::MAX).is_ok())
        });
        group.bench_function(format!("role_aware_check/{name}"), |b| {
            b.iter(|| {
                check_json_view(
                    black_box(&body),
                    &rules,
                    64,
                    usize::MAX,
                    Judge::Roles(roles),
                )
                .is_ok()
            })
        });
        let (_, view) =
            check_json_view(&body, &rules, 64, usize::MAX, Judge::Roles(roles)).unwrap();
        group.bench_function(format!("request_facts/{name}"), |b| {
            b.iter(|| LlmRequest::of(black_box(&view)))
        });
    }
    group.finish();
}

struct Discard;

impl Settle for Discard {
    fn settle(self: Box<Self>, metered: Metered) {
        black_box(metered);
    }
}

/// A streamed chat completion of `events` deltas, then the usage chunk and `[DONE]`.
fn stream(events: usize) -> Vec<bytes::Bytes> {
    let mut frames: Vec<bytes::Bytes> = (0..events)
        .map(|i| {
            bytes::Bytes::from(format!(
                "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"token{i} \"}}}}]}}\n\n"
            ))
        })
        .collect();
    frames.push(bytes::Bytes::from_static(
        b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":200,\"total_tokens\":207}}\n\ndata: [DONE]\n\n",
    ));
    frames
}

fn bench_usage(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let frames = stream(200);
    let bytes: usize = frames.iter().map(bytes::Bytes::len).sum();
    let mut group = c.benchmark_group("llm_usage");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Bytes(bytes as u64));
    let body_of = |frames: &Vec<bytes::Bytes>| {
        let frames = frames
            .clone()
            .into_iter()
            .map(|f| Ok::<_, std::io::Error>(http_body::Frame::data(f)));
        axum::body::Body::new(http_body_util::StreamBody::new(futures_util::stream::iter(
            frames,
        )))
    };
    group.bench_function("stream_200_events/relay_only", |b| {
        b.iter(|| runtime.block_on(body_of(&frames).collect()).unwrap())
    });
    for (name, strip) in [("read_usage", false), ("take_usage_chunk_out", true)] {
        group.bench_function(format!("stream_200_events/{name}"), |b| {
            b.iter(|| {
                let body = MeteredBody::new(body_of(&frames), true, strip, Box::new(Discard));
                runtime.block_on(body.collect()).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_request, bench_usage);
criterion_main!(benches);

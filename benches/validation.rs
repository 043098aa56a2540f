//! Validation time for the load benchmark's 103-byte request, 1 KiB, 10 KiB and 1 MiB JSON
//! bodies, and scanner throughput.
//!
//! Run with `cargo bench --bench validation`. Bodies are chat requests of realistic prose (mixed
//! ASCII and some non-ASCII text), so normalisation and both matchers do their full work.

// A benchmark: setup failures abort the run with their reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portcullis::detect::rules::{RuleOptions, RuleSet};
use portcullis::validate::body::check_json;

const SENTENCES: [&str; 6] = [
    "Please summarise the quarterly report and list the three biggest risks.",
    "How do I evaluate this integral and why does eval() in JavaScript worry people?",
    "Der Kunde möchte die Lieferung auf nächsten Dienstag verschieben.",
    "Write a polite reminder that the invoice is overdue by fourteen days.",
    "Explain what the <script> tag does and where it belongs in a page.",
    "请帮我把这段话翻译成英文，谢谢。",
];

/// A chat body of about `size` bytes: messages of prose.
fn body(size: usize) -> Vec<u8> {
    let mut messages = Vec::new();
    let mut len = 0;
    let mut i = 0;
    while len < size {
        let content = SENTENCES[i % SENTENCES.len()].repeat(3);
        len += content.len() + 40;
        messages.push(serde_json::json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": content}));
        i += 1;
    }
    serde_json::to_vec(&serde_json::json!({"model": "agent-1", "messages": messages})).unwrap()
}

fn bench_validation(c: &mut Criterion) {
    let rules = RuleSet::new(&RuleOptions::default()).unwrap();
    let mut group = c.benchmark_group("validate_json");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    // The load benchmark's request (benches/load/run.py), then bodies of prose.
    let request = br#"{"model":"agent-1","messages":[{"role":"user","content":"Summarise the open tickets for today."}]}"#;
    for (name, size) in [
        ("103B", 0),
        ("1KiB", 1024),
        ("10KiB", 10 * 1024),
        ("1MiB", 1024 * 1024),
    ] {
        let body = if size == 0 {
            request.to_vec()
        } else {
            body(size)
        };
        assert!(
            check_json(&body, &rules, 64, usize::MAX).is_ok(),
            "benign body passes"
        );
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| check_json(black_box(&body), &rules, 64, usize::MAX).is_ok())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_validation);
criterion_main!(benches, parts);

fn bench_parts(c: &mut Criterion) {
    use portcullis::detect::normalize::normalize;
    let rules = RuleSet::new(&RuleOptions::default()).unwrap();
    let texts: Vec<String> = SENTENCES.iter().map(|s| s.repeat(3)).collect();
    let normalized: Vec<String> = texts
        .iter()
        .map(|t| normalize(t).text.into_owned())
        .collect();
    let mut group = c.benchmark_group("validate_parts");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(2));
    group.bench_function("normalize_6_strings", |b| {
        b.iter(|| {
            texts
                .iter()
                .map(|t| normalize(black_box(t)).text.len())
                .sum::<usize>()
        })
    });
    group.bench_function("scan_6_strings", |b| {
        b.iter(|| {
            normalized
                .iter()
                .filter(|t| rules.scan(black_box(t)).is_some())
                .count()
        })
    });
    group.finish();
}

criterion_group!(parts, bench_parts);

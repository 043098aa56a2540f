//! Data-loss prevention scanners in MB/s: the detectors over whole text, and the streaming
//! scanner fed in token-sized pieces, on prose, code and JSON (none holding a secret, the
//! common case, and one holding a key).
//!
//! Run with `cargo bench --bench dlp`.

// A benchmark: setup failures abort the run with their reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portcullis::dlp::detect::Detectors;
use portcullis::dlp::stream::TextScanner;

const PROSE: &str = "The quarterly report shows revenue up eleven percent, driven by the new \
    subscription tier. Customer churn fell to 2.1% and support tickets were answered within \
    four hours on average. Next quarter the team plans to expand into two new regions. ";
const CODE: &str = "fn handle(request: Request) -> Result<Response, Error> {\n    let user = \
    request.headers().get(\"x-user\").ok_or(Error::Missing)?;\n    let key = std::env::var(\"API_KEY\")?;\n    \
    Ok(Response::new(format!(\"hello {user}\")))\n}\n";
const JSON: &str = "{\"id\":\"chatcmpl-42\",\"object\":\"chat.completion\",\"model\":\"gpt-4o\",\
    \"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"Here is the summary \
    you asked for: sales grew in every region.\"}}],\"usage\":{\"prompt_tokens\":42,\"total_tokens\":99}},";

fn text_of(unit: &str, size: usize) -> String {
    unit.repeat(size / unit.len() + 1)
}

fn bench(c: &mut Criterion) {
    let secrets = Detectors::new(false, &[]).unwrap();
    let with_pii = Detectors::new(true, &[]).unwrap();
    let mut group = c.benchmark_group("dlp");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    let key = format!("{}{}", "AKIA", "Q7ZK2M4N6P8R0T2V");
    for (name, unit) in [("prose", PROSE), ("code", CODE), ("json", JSON)] {
        let text = text_of(unit, 64 * 1024);
        group.throughput(Throughput::Bytes(text.len() as u64));
        for (detectors_name, detectors) in [("secrets", &secrets), ("secrets+pii", &with_pii)] {
            group.bench_function(format!("{name}/whole/{detectors_name}"), |b| {
                b.iter(|| detectors.find(black_box(&text)).len())
            });
            // Token-sized pieces, as an OpenAI stream delivers them.
            let pieces: Vec<&str> = text.split_inclusive(' ').collect();
            group.bench_function(format!("{name}/stream/{detectors_name}"), |b| {
                b.iter(|| {
                    let mut scanner = TextScanner::default();
                    let mut found = Vec::new();
                    let mut out = 0;
                    for piece in &pieces {
                        out += scanner.push(detectors, piece, &mut found).len();
                    }
                    out + scanner.finish(detectors, &mut found).len()
                })
            });
        }
        let leaky = format!(
            "{} {key} {}",
            &text[..text.len() / 2],
            &text[text.len() / 2..]
        );
        group.bench_function(format!("{name}/whole_with_a_key/secrets"), |b| {
            b.iter(|| secrets.redact(black_box(&leaky)).1.len())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

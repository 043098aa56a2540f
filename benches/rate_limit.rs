//! Per-user rate-limit decision cost: in memory (one thread; two threads on one key and on many
//! keys) and through Redis (when a redis-server is reachable at PORTCULLIS_BENCH_REDIS_URL or
//! can be started locally). Also reports memory per tracked user at 1,000,000 users.
//!
//! Run with `cargo bench --bench rate_limit`.

// A benchmark: setup failures abort the run with their reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::hint::black_box;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis::rate_limit::memory::{Limit, MemoryStore};
use portcullis::rate_limit::redis::{RedisStore, key};
use portcullis::secret::Secret;

const LIMIT: Limit = Limit {
    requests: u32::MAX,
    window: Duration::from_secs(60),
};

fn users(n: usize) -> Vec<Arc<str>> {
    (0..n).map(|i| Arc::from(format!("user-{i:08}"))).collect()
}

fn bench_memory(c: &mut Criterion) {
    let mut group = c.benchmark_group("rate_limit_memory");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(3));

    let store = MemoryStore::new(&[LIMIT], 1_000_000);
    let one: Arc<str> = Arc::from("one-user");
    group.bench_function("one_thread_one_key", |b| {
        b.iter(|| store.decide(0, black_box(&one)).unwrap().admitted)
    });

    let many = users(10_000);
    let mut i = 0;
    group.bench_function("one_thread_many_keys", |b| {
        b.iter(|| {
            i = (i + 1) % many.len();
            store.decide(0, black_box(&many[i])).unwrap().admitted
        })
    });

    // Two threads: the measured one and a competitor hammering the same or other keys.
    for (name, shared) in [
        ("two_threads_one_key", true),
        ("two_threads_many_keys", false),
    ] {
        let store = Arc::new(MemoryStore::new(&[LIMIT], 1_000_000));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let competitor = {
            let (store, stop) = (store.clone(), stop.clone());
            let keys = if shared {
                vec![Arc::from("hot")]
            } else {
                users(10_000)
            };
            std::thread::spawn(move || {
                let mut j = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    j = (j + 1) % keys.len();
                    let _ = store.decide(0, &keys[j]);
                }
            })
        };
        let keys = if shared {
            vec![Arc::from("hot")]
        } else {
            users(10_000)
        };
        let mut k = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                k = (k + 1) % keys.len();
                store.decide(0, black_box(&keys[k])).unwrap().admitted
            })
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        competitor.join().unwrap();
    }
    group.finish();
}

fn bench_redis(c: &mut Criterion) {
    let (url, _server) = match std::env::var("PORTCULLIS_BENCH_REDIS_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let port = 46379;
            let server = Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdout(Stdio::null())
                .spawn();
            let Ok(server) = server else {
                println!("rate_limit_redis: skipped, no redis-server");
                return;
            };
            std::thread::sleep(Duration::from_millis(300));
            (
                format!("redis://127.0.0.1:{port}/"),
                Some(KillOnDrop(server)),
            )
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The connection manager spawns its reconnect task on the runtime it is made in.
    let _entered = runtime.enter();
    let store = RedisStore::new(
        &Secret::from_bytes(url.into_bytes()).unwrap(),
        &portcullis::config::rate_limit::RedisTopology::Standalone,
        Duration::from_secs(1),
    )
    .unwrap();
    let redis_key = key(0, "bench-user");
    runtime
        .block_on(store.decide(&redis_key, LIMIT))
        .expect("redis answers");
    let mut group = c.benchmark_group("rate_limit_redis");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(3));
    group.bench_function("round_trip", |b| {
        b.iter(|| {
            runtime
                .block_on(store.decide(black_box(&redis_key), LIMIT))
                .unwrap()
                .admitted
        })
    });
    group.finish();
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn report_memory_per_user(_: &mut Criterion) {
    const USERS: usize = 1_000_000;
    let names = users(USERS);
    let before = rss_kib();
    let store = MemoryStore::new(&[LIMIT], USERS);
    for name in &names {
        store.decide(0, name).unwrap();
    }
    let after = rss_kib();
    println!(
        "rate_limit_memory: {} users tracked, RSS +{} MiB, {} bytes per user (window state, key, map)",
        store.tracked(),
        (after - before) / 1024,
        (after - before) * 1024 / USERS as u64
    );
}

criterion_group!(benches, bench_memory, bench_redis, report_memory_per_user);
criterion_main!(benches);

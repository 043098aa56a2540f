//! The audit log: completeness under load, drop accounting, reopen for rotation, the hash chain
//! across restarts and files, `audit-verify` on tampered copies, and SIGTERM under load.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use portcullis::config::Config;
use serde_json::Value;

use super::binary::{BIN, config_on_free_port, run_listening, write_config};
use crate::common::{MockUpstream, Options, TestClient, TestGateway, TestPki};

const CHAINED: &str = "hash_chain = true";

fn chained(extra: &str) -> Options {
    Options {
        audit: format!("{CHAINED}\n{extra}"),
        ..Options::default()
    }
}

/// Runs `portcullis audit-verify` on `files`: exit code and stdout.
fn audit_verify(files: &[&Path]) -> (i32, String) {
    let out = Command::new(BIN)
        .arg("audit-verify")
        .args(files)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn records_of(path: &Path) -> Vec<Value> {
    lines_of(path)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Sends `total` GETs from `tasks` concurrent tasks sharing one keep-alive pool; returns the
/// request ids of the answers.
async fn load(client: &TestClient, url: &str, total: usize, tasks: usize) -> Vec<String> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (client, next, url) = (client.clone(), next.clone(), url.to_owned());
        handles.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let reply = client.get(&url).await;
                assert_eq!(reply.status, 200);
                ids.push(reply.request_id());
            }
            ids
        }));
    }
    let mut ids = Vec::with_capacity(total);
    for handle in handles {
        ids.extend(handle.await.unwrap());
    }
    ids
}

/// Stops the gateway and waits for its drain, which flushes the audit log.
async fn stop(gateway: &mut TestGateway) {
    gateway.begin_shutdown().await.unwrap();
}

#[tokio::test]
async fn audit_verify_accepts_the_chain_and_names_the_tampered_line() {
    let upstream = MockUpstream::start().await;
    let mut gateway = TestGateway::start_with(&upstream.url(), chained("")).await;
    let client = gateway.client();
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            client
                .get(&gateway.url(&format!("/r/{i}")))
                .await
                .request_id(),
        );
    }
    let log = gateway.audit_path.clone();
    let dir = tempfile::tempdir().unwrap();
    stop(&mut gateway).await;

    let records = records_of(&log);
    assert_eq!(records.len(), 20);
    let first = &lines_of(&log)[0];
    assert!(
        first.starts_with(&format!(
            "{{\"seq\":1,\"prev_hash\":\"{}\",",
            "0".repeat(64)
        )),
        "seq and prev_hash lead the line: {first}"
    );
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record["seq"], i as u64 + 1);
        assert_eq!(record["request_id"], ids[i].as_str());
        assert!(record.get("dropped_before").is_none());
    }
    let (code, out) = audit_verify(&[&log]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("intact: 20 records, seq 1 to 20 in 1 file(s)"),
        "{out}"
    );

    let tampered = |name: &str, change: &dyn Fn(&mut Vec<String>)| {
        let mut lines = lines_of(&log);
        change(&mut lines);
        let path = dir.path().join(name);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let (code, out) = audit_verify(&[&path]);
        assert_eq!(code, 1, "{name}: {out}");
        for id in &ids {
            assert!(
                !out.contains(id.as_str()),
                "no record content is printed: {out}"
            );
        }
        out
    };
    let out = tampered("edited", &|lines| {
        lines[9] = lines[9].replace("\"status\":200", "\"status\":201");
    });
    assert!(
        out.contains("line 11: prev_hash does not match line 10 (edited, deleted or reordered)"),
        "{out}"
    );
    let out = tampered("deleted", &|lines| {
        lines.remove(9);
    });
    assert!(
        out.contains("line 10: seq jumps from 9 to 11 (a line was deleted or moved)"),
        "{out}"
    );
    let out = tampered("swapped", &|lines| lines.swap(9, 10));
    assert!(out.contains("line 10: seq jumps from 9 to 11"), "{out}");
    let out = tampered("repeated", &|lines| {
        let again = lines[4].clone();
        lines.insert(5, again);
    });
    assert!(
        out.contains("line 6: seq goes from 5 back to 5 (lines reordered or repeated)"),
        "{out}"
    );
    let out = tampered("garbage", &|lines| lines.insert(4, "not json".into()));
    assert!(out.contains("line 5: not a JSON audit record"), "{out}");
    assert!(!out.contains("not json"));
    // An edited seq cannot hide an edit: the next line's prev_hash no longer matches.
    let out = tampered("renumbered", &|lines| {
        lines[2] = lines[2].replace("\"seq\":3,", "\"seq\":3 ,");
    });
    assert!(
        out.contains("line 4: prev_hash does not match line 3"),
        "{out}"
    );

    // Without the oldest lines the chain is intact but says where it starts.
    let mut lines = lines_of(&log);
    lines.drain(..5);
    let tail = dir.path().join("tail");
    std::fs::write(&tail, lines.join("\n") + "\n").unwrap();
    let (code, out) = audit_verify(&[&tail]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("seq 6 to 20") && out.contains("the chain starts at seq 6"),
        "{out}"
    );

    let (code, out) = audit_verify(&[&dir.path().join("missing")]);
    assert_eq!(code, 2, "{out}");
}

#[tokio::test]
async fn audit_chain_continues_across_a_restart() {
    let upstream = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let options = Options {
        audit_file: Some(log.clone()),
        ..chained("")
    };
    let mut ids = Vec::new();
    for (run, requests) in [(0, 7), (1, 5)] {
        let mut gateway = TestGateway::start_with(&upstream.url(), options.clone()).await;
        let client = gateway.client();
        for i in 0..requests {
            let url = gateway.url(&format!("/run{run}/{i}"));
            ids.push(client.get(&url).await.request_id());
        }
        stop(&mut gateway).await;
    }
    let records = records_of(&log);
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=12).collect::<Vec<_>>());
    let logged: Vec<&str> = records
        .iter()
        .map(|r| r["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(logged, ids);
    let (code, out) = audit_verify(&[&log]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("intact: 12 records, seq 1 to 12"), "{out}");
}

#[tokio::test]
async fn audit_reopen_moves_to_a_new_file_and_the_chain_crosses_it() {
    let upstream = MockUpstream::start().await;
    let mut gateway = TestGateway::start_with(&upstream.url(), chained("")).await;
    let client = gateway.client();
    let log = gateway.audit_path.clone();
    let rotated = log.with_extension("log.1");
    let mut before = Vec::new();
    for i in 0..6 {
        before.push(
            client
                .get(&gateway.url(&format!("/a/{i}")))
                .await
                .request_id(),
        );
    }
    crate::common::wait_until("six records written", || async {
        gateway.audit_records().len() == 6
    })
    .await;
    // logrotate's move-then-signal: the writer still holds the moved file until reopened.
    std::fs::rename(&log, &rotated).unwrap();
    gateway.audit_sink.reopen();
    let mut after = Vec::new();
    for i in 0..4 {
        after.push(
            client
                .get(&gateway.url(&format!("/b/{i}")))
                .await
                .request_id(),
        );
    }
    stop(&mut gateway).await;

    let old: Vec<Value> = records_of(&rotated);
    let new: Vec<Value> = records_of(&log);
    let ids = |records: &[Value]| -> Vec<String> {
        records
            .iter()
            .map(|r| r["request_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&old), before, "the moved file keeps the old records");
    assert_eq!(
        ids(&new),
        after,
        "the new file holds the records after reopen"
    );
    assert_eq!(new[0]["seq"], 7);
    let (code, out) = audit_verify(&[&rotated, &log]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("intact: 10 records, seq 1 to 10 in 2 file(s)"),
        "{out}"
    );
    let (code, out) = audit_verify(&[&log, &rotated]);
    assert_eq!(code, 1, "files out of order: {out}");
    let mut edited = lines_of(&rotated);
    edited[5] = edited[5].replace("/a/5", "/a/x");
    std::fs::write(&rotated, edited.join("\n") + "\n").unwrap();
    let (code, out) = audit_verify(&[&rotated, &log]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "{}: line 1: prev_hash does not match the last line (6) of {}",
            log.display(),
            rotated.display()
        )),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_twenty_thousand_requests_leave_twenty_thousand_records() {
    const REQUESTS: usize = 20_000;
    let upstream = MockUpstream::start().await;
    let mut gateway = TestGateway::start_with(&upstream.url(), chained("")).await;
    let client = gateway.client();
    let log = gateway.audit_path.clone();
    let started = Instant::now();
    let ids = load(&client, &gateway.url("/load"), REQUESTS, 32).await;
    let sent_in = started.elapsed();
    stop(&mut gateway).await;
    let flushed_in = started.elapsed();
    println!(
        "{REQUESTS} requests answered in {sent_in:?} ({:.0}/s); all records flushed at {flushed_in:?}",
        REQUESTS as f64 / sent_in.as_secs_f64()
    );
    assert_eq!(ids.len(), REQUESTS);
    let records = records_of(&log);
    assert_eq!(records.len(), REQUESTS);
    let logged: HashSet<&str> = records
        .iter()
        .map(|r| r["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(logged.len(), REQUESTS, "each request id once");
    assert!(ids.iter().all(|id| logged.contains(id.as_str())));
    let (code, out) = audit_verify(&[&log]);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_drop_mode_accounts_for_every_dropped_record() {
    const REQUESTS: usize = 3_000;
    let upstream = MockUpstream::start().await;
    let options = Options {
        audit: "on_overflow = \"drop\"\nqueue_capacity = 1".into(),
        ..Options::default()
    };
    let gateway = TestGateway::start_with(&upstream.url(), options).await;
    let client = gateway.client();
    load(&client, &gateway.url("/burst"), REQUESTS, 32).await;
    let flush = |sink: portcullis::audit::AuditSink| async move {
        tokio::task::spawn_blocking(move || sink.flush(Duration::from_secs(10)))
            .await
            .unwrap()
    };
    assert!(flush(gateway.audit_sink.clone()).await);
    let dropped = gateway.metric("portcullis_audit_dropped_total").await as usize;
    let written = gateway.audit_records().len();
    println!("drop mode, queue of 1: {REQUESTS} sent, {written} written, {dropped} dropped");
    assert!(
        dropped > 0,
        "a queue of 1 overflows under 32 concurrent clients"
    );
    assert_eq!(
        written + dropped,
        REQUESTS,
        "every record written or counted"
    );
    let (_, metrics) = gateway.admin_get("/metrics").await;
    assert!(
        metrics.contains("portcullis_audit_queue_depth "),
        "{metrics}"
    );

    // Drops after the last written record are reported by the next one.
    client.get(&gateway.url("/after")).await;
    assert!(flush(gateway.audit_sink.clone()).await);
    let records = gateway.audit_records();
    assert_eq!(records.len(), written + 1);
    let reported: u64 = records
        .iter()
        .filter_map(|r| r.get("dropped_before").map(|d| d.as_u64().unwrap()))
        .sum();
    assert_eq!(
        reported as usize, dropped,
        "dropped_before adds up to the metric"
    );
    assert!(
        records
            .iter()
            .all(|r| r.get("dropped_before").is_none_or(|d| d.as_u64() > Some(0)))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_sigterm_under_load_keeps_every_answered_request() {
    let upstream = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path());
    let log = dir.path().join("audit.log");
    let (text, port) = config_on_free_port(&pki, &upstream.url(), &log, &chained(""));
    let path = write_config(dir.path(), &text);
    let child = run_listening(&path, port, &[]).await;
    let client = TestClient::new(&pki, false);
    let url = format!("https://localhost:{port}/under-load");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut ids = Vec::new();
            while Instant::now() < deadline {
                match client.try_get(&url).await {
                    Ok(reply) => ids.push(reply.request_id()),
                    Err(_) => break,
                }
            }
            ids
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut answered = Vec::new();
    for task in tasks {
        answered.extend(task.await.unwrap());
    }
    let status = tokio::task::spawn_blocking(move || {
        let mut child = child;
        child.wait()
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(status.code(), Some(0));
    let logged: HashSet<String> = records_of(&log)
        .iter()
        .map(|r| r["request_id"].as_str().unwrap().to_owned())
        .collect();
    println!(
        "SIGTERM under load: {} answered, {} records",
        answered.len(),
        logged.len()
    );
    assert!(answered.len() > 10, "load ran before the signal");
    let missing: Vec<&String> = answered.iter().filter(|id| !logged.contains(*id)).collect();
    assert!(missing.is_empty(), "answered but not audited: {missing:?}");
    let (code, out) = audit_verify(&[&log]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn audit_keys_are_validated_with_key_and_line() {
    let config = |audit: &str| {
        Config::from_toml(
            &format!("[upstream]\nurl = \"http://127.0.0.1:8080\"\n\n[audit]\n{audit}\n"),
            "t.toml",
        )
    };
    let settings = config("").unwrap().audit;
    assert_eq!(settings.queue_capacity, 65_536);
    assert_eq!(settings.on_overflow, portcullis::config::OnOverflow::Block);
    assert!(!settings.hash_chain);
    let settings = config("on_overflow = \"drop\"\nqueue_capacity = 8\nhash_chain = true")
        .unwrap()
        .audit;
    assert_eq!(settings.on_overflow, portcullis::config::OnOverflow::Drop);
    assert_eq!((settings.queue_capacity, settings.hash_chain), (8, true));
    for (text, key, line) in [
        (
            "output = \"stdout\"\non_overflow = \"discard\"",
            "audit.on_overflow",
            6,
        ),
        ("queue_capacity = 0", "audit.queue_capacity", 5),
        ("queue_capacity = 100000000", "audit.queue_capacity", 5),
        ("hash_chain = \"yes\"", "audit.hash_chain", 5),
        ("rotate = true", "audit", 5),
    ] {
        let err = config(text).unwrap_err();
        assert_eq!(err.line, Some(line), "{text}: {err}");
        assert!(
            err.key.as_deref() == Some(key) || err.to_string().contains("rotate"),
            "{text}: {err}"
        );
        assert!(
            !err.to_string().contains("discard"),
            "no value echoed: {err}"
        );
    }
}

/// The reference config documents every `[audit]` key.
#[test]
fn reference_config_documents_the_audit_keys() {
    let text = std::fs::read_to_string("config/portcullis.toml").unwrap();
    for key in ["output", "on_overflow", "queue_capacity", "hash_chain"] {
        assert!(
            text.contains(key),
            "{key} missing from config/portcullis.toml"
        );
    }
}

/// Points `link` at `target` atomically (a full disk is `/dev/full`: every write fails ENOSPC).
fn point(link: &Path, target: &Path) {
    let staged = link.with_extension("staged");
    let _ = std::fs::remove_file(&staged);
    std::os::unix::fs::symlink(target, &staged).unwrap();
    std::fs::rename(&staged, link).unwrap();
}

/// A chained gateway whose audit path leads to `/dev/full` until the test points it at `real`.
struct FullDisk {
    dir: tempfile::TempDir,
    link: std::path::PathBuf,
    real: std::path::PathBuf,
    upstream: MockUpstream,
    gateway: TestGateway,
}

async fn full_disk(on_failure: &str) -> FullDisk {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("audit.log");
    let real = dir.path().join("audit-real.log");
    point(&link, Path::new("/dev/full"));
    let upstream = MockUpstream::start().await;
    let gateway = TestGateway::start_with(
        &upstream.url(),
        Options {
            audit: format!("{CHAINED}\non_failure = \"{on_failure}\""),
            audit_file: Some(link.clone()),
            ..Options::default()
        },
    )
    .await;
    FullDisk {
        dir,
        link,
        real,
        upstream,
        gateway,
    }
}

#[tokio::test]
async fn audit_fail_closed_refuses_requests_while_the_disk_is_full_and_loses_nothing() {
    let FullDisk {
        dir: _dir,
        link,
        real,
        upstream,
        mut gateway,
    } = full_disk("fail_closed").await;
    let client = gateway.client();
    // Served before the writer finds out; its record waits for a writable disk.
    let first = client.get(&gateway.url("/before-full")).await;
    assert_eq!(first.status, 200);
    crate::common::wait_until("the writer reports the failure", || async {
        gateway.metric("portcullis_audit_writable").await == 0.0
    })
    .await;
    let refused = client.get(&gateway.url("/while-full")).await;
    let problem = crate::common::assert_problem(&refused, 503);
    assert_eq!(problem["type"], "urn:portcullis:problem:audit-unavailable");
    assert!(
        upstream.seen_on("/while-full").is_empty(),
        "never served unaudited"
    );
    let (ready, _) = gateway.admin_get("/readyz").await;
    assert_eq!(ready, 503, "not ready while records cannot be written");

    // Space again (the path now leads to a real file): the held records are written, in order.
    point(&link, &real);
    crate::common::wait_until("the writer recovers", || async {
        gateway.metric("portcullis_audit_writable").await == 1.0
    })
    .await;
    let after = client.get(&gateway.url("/after-full")).await;
    assert_eq!(after.status, 200);
    stop(&mut gateway).await;
    let records = records_of(&real);
    let paths: Vec<&str> = records
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"/before-full"), "{paths:?}");
    assert!(paths.contains(&"/after-full"), "{paths:?}");
    let (code, out) = audit_verify(&[&real]);
    assert_eq!(code, 0, "the chain is whole: {out}");
}

#[tokio::test]
async fn audit_fail_open_keeps_serving_and_counts_what_it_could_not_write() {
    let FullDisk {
        dir: _dir,
        link,
        real,
        upstream: _upstream,
        mut gateway,
    } = full_disk("fail_open").await;
    let client = gateway.client();
    for i in 0..20 {
        let reply = client.get(&gateway.url(&format!("/open-{i}"))).await;
        assert_eq!(reply.status, 200, "served while the log fails");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    crate::common::wait_until("the failure is seen", || async {
        gateway.metric("portcullis_audit_writable").await == 0.0
    })
    .await;
    point(&link, &real);
    crate::common::wait_until("the writer recovers", || async {
        gateway.metric("portcullis_audit_writable").await == 1.0
    })
    .await;
    let after = client.get(&gateway.url("/after")).await;
    assert_eq!(after.status, 200);
    stop(&mut gateway).await;
    let records = records_of(&real);
    let written = records
        .iter()
        .filter(|r| r["path"].as_str().unwrap().starts_with("/open-"))
        .count() as u64;
    let reported: u64 = records
        .iter()
        .filter_map(|r| r["dropped_before"].as_u64())
        .sum();
    assert!(reported > 0, "the loss is reported in the log itself");
    assert_eq!(written + reported, 20, "every record is written or counted");
    let (code, out) = audit_verify(&[&real]);
    assert_eq!(code, 0, "nothing lost breaks the chain: {out}");
}

#[tokio::test]
async fn a_deleted_audit_file_is_reopened_and_the_chain_continues() {
    let upstream = MockUpstream::start().await;
    let mut gateway = TestGateway::start_with(&upstream.url(), chained("")).await;
    let client = gateway.client();
    load(&client, &gateway.url("/before"), 20, 2).await;
    gateway.audit_sink.flush(Duration::from_secs(5));
    let before = lines_of(&gateway.audit_path);
    std::fs::remove_file(&gateway.audit_path).unwrap();
    crate::common::wait_until("a new file appears at the path", || async {
        gateway.audit_path.exists()
    })
    .await;
    let ids = load(&client, &gateway.url("/after"), 20, 2).await;
    stop(&mut gateway).await;
    let records = records_of(&gateway.audit_path);
    for id in &ids {
        assert!(records.iter().any(|r| r["request_id"] == id.as_str()));
    }
    // The deleted file's lines, then the new file: one unbroken chain.
    let saved = gateway.audit_path.with_extension("deleted");
    std::fs::write(&saved, before.join("\n") + "\n").unwrap();
    let (code, out) = audit_verify(&[&saved, &gateway.audit_path]);
    assert_eq!(code, 0, "{out}");
}

/// The audit writer thread's voluntary context switches so far (Linux `/proc`).
#[cfg(target_os = "linux")]
fn audit_thread_wakes(pid: u32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    for task in tasks {
        let task = task.unwrap().path();
        let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if name.trim() == "portcullis-audi" {
            let status = std::fs::read_to_string(task.join("status")).unwrap();
            return status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
        }
    }
    panic!("no audit writer thread in process {pid}");
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn an_idle_audit_writer_parks_and_the_next_record_wakes_it() {
    let upstream = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path());
    let log = dir.path().join("audit.log");
    let (text, port) = config_on_free_port(&pki, &upstream.url(), &log, &Options::default());
    let path = write_config(dir.path(), &text);
    let mut child = run_listening(&path, port, &[]).await;
    let pid = child.id();

    // Idle for a second: the writer wakes for its path check (10 a second), not to poll every
    // 5 ms (200 a second).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = audit_thread_wakes(pid);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_wakes = audit_thread_wakes(pid) - before;
    assert!(idle_wakes <= 40, "{idle_wakes} wakes in an idle second");

    // A record sent to the parked writer is written at once, not at the next path check (a
    // writer that only woke every 100 ms would miss the bound three times in a row rarely).
    let client = TestClient::new(&pki, false);
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let reply = client
            .get(&format!("https://localhost:{port}/after-idle-{round}"))
            .await;
        assert_eq!(reply.status, 200);
        let id = reply.request_id();
        let sent = Instant::now();
        while !lines_of(&log).iter().any(|l| l.contains(&id)) {
            assert!(
                sent.elapsed() < Duration::from_secs(5),
                "record never written"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let waited = sent.elapsed();
        assert!(
            waited < Duration::from_millis(80),
            "record written after {waited:?}"
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

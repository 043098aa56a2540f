//! Rate limiting: the per-user sliding window (memory and Redis), the per-IP flood guard, and the
//! client address behind trusted proxies.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::json;

use crate::common::keys::{AUDIENCE, ISSUER, TestKey, claims};
use crate::common::redis::RedisServer;
use crate::common::{MockUpstream, Options, Reply, TestGateway, assert_problem, wait_until};

/// A gateway with HS256 authentication and the given `[rate_limit]` lines (and `[server]` lines).
struct Limited {
    gateway: TestGateway,
    upstream: MockUpstream,
    key: TestKey,
    _dir: tempfile::TempDir,
}

async fn limited(rate_limit: &str, server: &str) -> Limited {
    limited_on(rate_limit, server, None).await
}

async fn limited_on(rate_limit: &str, server: &str, upstream: Option<MockUpstream>) -> Limited {
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::hs256("hs-1");
    let secret = dir.path().join("hmac.secret");
    std::fs::write(&secret, key.secret.as_ref().unwrap()).unwrap();
    let upstream = match upstream {
        Some(u) => u,
        None => MockUpstream::start().await,
    };
    let extra = format!(
        "[auth]\nissuer = \"{ISSUER}\"\naudiences = [\"{AUDIENCE}\"]\nalgorithms = [\"HS256\"]\n\n\
         [[auth.hmac_keys]]\nkid = \"hs-1\"\nsecret_file = \"{}\"\n\n[rate_limit]\n{rate_limit}\n",
        secret.display()
    );
    let gateway = TestGateway::start_with(
        &upstream.url(),
        Options {
            server: server.to_owned(),
            extra,
            ..Options::default()
        },
    )
    .await;
    Limited {
        gateway,
        upstream,
        key,
        _dir: dir,
    }
}

impl Limited {
    fn token(&self, user: &str) -> String {
        self.key.sign(&claims(user))
    }

    async fn call(&self, token: &str, path: &str) -> Reply {
        call(&self.gateway, token, path).await
    }
}

async fn call(gateway: &TestGateway, token: &str, path: &str) -> Reply {
    gateway
        .client()
        .send_whole(
            Request::get(gateway.url(path))
                .header("authorization", format!("Bearer {token}"))
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await
}

fn header_u64(reply: &Reply, name: &str) -> u64 {
    reply
        .header(name)
        .unwrap_or_else(|| panic!("{name} missing"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn limit_reached_gives_429_with_accurate_headers_and_other_users_are_unaffected() {
    let l = limited("requests = 3\nwindow = \"10s\"", "").await;
    let alice = l.token("alice");
    for remaining in [2, 1, 0] {
        let reply = l.call(&alice, "/alice").await;
        assert_eq!(reply.status, 200);
        assert_eq!(header_u64(&reply, "ratelimit-limit"), 3);
        assert_eq!(header_u64(&reply, "ratelimit-remaining"), remaining);
        let reset = header_u64(&reply, "ratelimit-reset");
        assert!((9..=11).contains(&reset), "reset {reset}");
    }
    let refused = l.call(&alice, "/alice-refused").await;
    assert_problem(&refused, 429);
    let retry_after = header_u64(&refused, "retry-after");
    assert!(
        (9..=11).contains(&retry_after),
        "Retry-After {retry_after}: the first request leaves the 10 s window"
    );
    assert_eq!(header_u64(&refused, "ratelimit-remaining"), 0);
    let record = l.gateway.audit_record(&refused.request_id()).await;
    assert_eq!(record["decision"], "rate_limited");
    assert_eq!(record["rule"], "user_limit");
    assert_eq!(record["user"], "alice");
    assert!(l.upstream.seen_on("/alice-refused").is_empty());
    assert_eq!(l.upstream.seen_on("/alice").len(), 3);

    let bob = l.call(&l.token("bob"), "/bob").await;
    assert_eq!(bob.status, 200);
    assert_eq!(header_u64(&bob, "ratelimit-remaining"), 2);
}

#[tokio::test]
async fn the_window_slides_and_admits_again_after_retry_after() {
    let l = limited("requests = 2\nwindow = \"2s\"", "").await;
    let token = l.token("slider");
    assert_eq!(l.call(&token, "/a").await.status, 200);
    assert_eq!(l.call(&token, "/b").await.status, 200);
    let refused = l.call(&token, "/c").await;
    assert_eq!(refused.status, 429);
    let retry_after = header_u64(&refused, "retry-after");
    assert!((1..=3).contains(&retry_after), "{retry_after}");
    // Half a window later: still refused (the window slides, it does not reset).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(l.call(&token, "/d").await.status, 429);
    // Past the window (plus its one-slot granularity): admitted again.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(l.call(&token, "/e").await.status, 200);
}

#[tokio::test]
async fn no_double_burst_across_a_fixed_window_boundary() {
    let l = limited("requests = 4\nwindow = \"2s\"", "").await;
    let token = l.token("burster");
    // Burst just before a 2 s boundary of the wall clock, then again just after it: a fixed
    // window aligned to the clock would admit both bursts, 8 requests within 0.4 s.
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let to_boundary = 2000 - now_ms % 2000;
    let wait = (to_boundary + 2000 - 200) % 2000;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let mut admitted = 0;
    for _ in 0..4 {
        admitted += usize::from(l.call(&token, "/burst").await.status == 200);
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    for _ in 0..4 {
        admitted += usize::from(l.call(&token, "/burst").await.status == 200);
    }
    assert_eq!(admitted, 4, "at most 4 admissions within any 2 s");
}

#[tokio::test]
async fn fifty_concurrent_requests_admit_exactly_the_limit() {
    let l = limited("requests = 5\nwindow = \"60s\"", "").await;
    let token = l.token("racer");
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let client = l.gateway.client();
        let url = l.gateway.url("/race");
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            client
                .send_whole(
                    Request::get(url)
                        .header("authorization", format!("Bearer {token}"))
                        .body(Full::<Bytes>::default())
                        .unwrap(),
                )
                .await
                .status
        }));
    }
    let mut ok = 0;
    let mut limited_count = 0;
    for task in tasks {
        match task.await.unwrap().as_u16() {
            200 => ok += 1,
            429 => limited_count += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((ok, limited_count), (5, 45));
    assert_eq!(l.upstream.seen_on("/race").len(), 5);
}

#[tokio::test]
async fn overrides_by_claim_value() {
    let l = limited(
        "requests = 2\nwindow = \"60s\"\n\n[[rate_limit.overrides]]\nclaim = \"tier\"\nvalue = \"pro\"\nrequests = 5\nwindow = \"60s\"",
        "",
    )
    .await;
    let mut pro = claims("pro-user");
    pro["tier"] = json!("pro");
    let pro = l.key.sign(&pro);
    let mut basic = claims("basic-user");
    basic["tier"] = json!("basic");
    let basic = l.key.sign(&basic);
    let admitted = |token: String| {
        let gateway = &l.gateway;
        async move {
            let mut n = 0;
            for _ in 0..8 {
                n += usize::from(call(gateway, &token, "/tier").await.status == 200);
            }
            n
        }
    };
    assert_eq!(admitted(pro.clone()).await, 5);
    assert_eq!(admitted(basic).await, 2);
    let reply = l.call(&pro, "/tier").await;
    assert_eq!(header_u64(&reply, "ratelimit-limit"), 5);
}

#[tokio::test]
async fn the_tracked_user_cap_holds() {
    let l = limited("requests = 10\nwindow = \"60s\"\nmax_tracked_users = 3", "").await;
    for user in ["u1", "u2", "u3"] {
        assert_eq!(l.call(&l.token(user), "/cap").await.status, 200);
    }
    let refused = l.call(&l.token("u4"), "/cap-refused").await;
    assert_problem(&refused, 429);
    let record = l.gateway.audit_record(&refused.request_id()).await;
    assert_eq!(record["rule"], "tracked_users_cap");
    assert!(l.upstream.seen_on("/cap-refused").is_empty());
    // Tracked users keep their service.
    assert_eq!(l.call(&l.token("u1"), "/cap").await.status, 200);
}

#[tokio::test]
async fn a_flood_from_one_address_is_cut_before_authentication() {
    let l = limited(
        "[rate_limit.per_ip]\nrequests_per_second = 1\nburst = 5",
        "",
    )
    .await;
    // Tokens that parse but whose signature is wrong: each one that gets through costs a
    // signature verification.
    let attacker = TestKey::hs256("hs-1");
    let mut statuses = Vec::new();
    for i in 0..20 {
        let reply = l
            .call(&attacker.sign(&claims(&format!("flood-{i}"))), "/flood")
            .await;
        statuses.push(reply.status.as_u16());
        if reply.status == 429 {
            assert!(header_u64(&reply, "retry-after") >= 1);
            let record = l.gateway.audit_record(&reply.request_id()).await;
            assert_eq!(record["decision"], "ip_rate_limited");
        }
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        15,
        "{statuses:?}"
    );
    let refused = r#"portcullis_token_verifications_total{result="refused"}"#;
    assert_eq!(
        l.gateway.metric(refused).await,
        5.0,
        "only the burst reached verification"
    );
    assert!(l.upstream.seen_on("/flood").is_empty());
}

async fn forwarded_for(gateway: &TestGateway, token: &str, path: &str, xff: &str) -> Reply {
    gateway
        .client()
        .send_whole(
            Request::get(gateway.url(path))
                .header("authorization", format!("Bearer {token}"))
                .header("x-forwarded-for", xff)
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await
}

#[tokio::test]
async fn x_forwarded_for_is_believed_only_from_trusted_proxies() {
    let untrusted = limited(
        "[rate_limit.per_ip]\nrequests_per_second = 1\nburst = 2",
        "",
    )
    .await;
    let token = untrusted.token("xff");
    let reply = forwarded_for(&untrusted.gateway, &token, "/untrusted", "203.0.113.7").await;
    let record = untrusted.gateway.audit_record(&reply.request_id()).await;
    assert_eq!(record["client_ip"], "127.0.0.1");
    assert_eq!(
        untrusted.upstream.seen_on("/untrusted")[0].headers["x-forwarded-for"],
        "127.0.0.1"
    );
    // Spoofed addresses share the real peer's per-IP bucket.
    let mut statuses = Vec::new();
    for i in 0..4 {
        let reply = forwarded_for(
            &untrusted.gateway,
            &token,
            "/spoof",
            &format!("198.51.100.{i}"),
        )
        .await;
        statuses.push(reply.status.as_u16());
    }
    assert_eq!(
        statuses,
        vec![200, 429, 429, 429],
        "one burst slot was used above"
    );

    let trusted = limited(
        "[rate_limit.per_ip]\nrequests_per_second = 1\nburst = 2",
        "trusted_proxies = [\"127.0.0.0/8\", \"10.0.0.0/8\"]",
    )
    .await;
    let token = trusted.token("xff");
    let reply = forwarded_for(
        &trusted.gateway,
        &token,
        "/trusted",
        "198.51.100.1, 10.0.0.5",
    )
    .await;
    let record = trusted.gateway.audit_record(&reply.request_id()).await;
    assert_eq!(
        record["client_ip"], "198.51.100.1",
        "walked right to left past trusted hops"
    );
    assert_eq!(
        trusted.upstream.seen_on("/trusted")[0].headers["x-forwarded-for"],
        "198.51.100.1"
    );
    // A forged leftmost entry is not believed when an untrusted hop stands to its right.
    let reply = forwarded_for(&trusted.gateway, &token, "/forged", "10.9.9.9, 192.0.2.50").await;
    let record = trusted.gateway.audit_record(&reply.request_id()).await;
    assert_eq!(record["client_ip"], "192.0.2.50");
    // Different clients behind the proxy get separate per-IP buckets.
    for i in 0..3 {
        let reply = forwarded_for(
            &trusted.gateway,
            &token,
            "/many",
            &format!("198.51.100.{}", 10 + i),
        )
        .await;
        assert_eq!(reply.status, 200);
    }
}

fn redis_limits(redis: &RedisServer, extra: &str) -> String {
    // A generous timeout: parallel tests on a loaded machine must not look like an outage.
    format!(
        "backend = \"redis\"\nredis_timeout = \"1s\"\nredis_url_file = \"{}\"\n{extra}",
        redis_url_file(redis).display()
    )
}

fn redis_url_file(redis: &RedisServer) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("portcullis-test-redis-{}.url", redis.port));
    std::fs::write(&path, redis.url()).unwrap();
    path
}

#[tokio::test]
async fn two_gateways_on_one_redis_enforce_one_combined_limit() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let limits = redis_limits(&redis, "requests = 4\nwindow = \"60s\"");
    let a = limited(&limits, "").await;
    let upstream_b = MockUpstream::start().await;
    let b = limited_on(&limits, "", Some(upstream_b)).await;
    // Both gateways verify the same user's tokens (each has its own HMAC key, so sign per gateway).
    let (ta, tb) = (a.token("shared-user"), b.token("shared-user"));
    let mut admitted = 0;
    for i in 0..10 {
        let reply = if i % 2 == 0 {
            a.call(&ta, "/shared").await
        } else {
            b.call(&tb, "/shared").await
        };
        admitted += usize::from(reply.status == 200);
    }
    assert_eq!(admitted, 4, "one limit across both replicas");
    assert_eq!(
        a.upstream.seen_on("/shared").len() + b.upstream.seen_on("/shared").len(),
        4
    );
}

#[tokio::test]
async fn redis_outage_follows_failure_mode_local_and_recovers() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let l = limited(
        &redis_limits(
            &redis,
            "requests = 3\nwindow = \"60s\"\nfailure_mode = \"local\"",
        ),
        "",
    )
    .await;
    let token = l.token("local-user");
    assert_eq!(l.call(&token, "/before").await.status, 200);
    redis.stop();
    // Each replica limits on its own: the local window starts empty and admits up to the limit.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(l.call(&token, "/outage").await.status.as_u16());
    }
    assert_eq!(statuses, vec![200, 200, 200, 429, 429]);
    assert_eq!(
        l.gateway
            .metric("portcullis_rate_limit_redis_outages_total")
            .await,
        1.0
    );
    assert_eq!(
        l.gateway.admin_get("/readyz").await.0,
        200,
        "ready in local mode"
    );
    redis.restart();
    // Back on Redis (empty after the restart): the fresh shared window admits again.
    let g = &l.gateway;
    let t = &token;
    wait_until("Redis never used again", || async move {
        call(g, t, "/after").await.status == 200
    })
    .await;
    let fallback = l
        .gateway
        .metric("portcullis_rate_limit_fallback_decisions_total")
        .await;
    assert_eq!(l.call(&token, "/after").await.status, 200);
    assert_eq!(
        l.gateway
            .metric("portcullis_rate_limit_fallback_decisions_total")
            .await,
        fallback,
        "decisions come from Redis again"
    );
}

#[tokio::test]
async fn redis_outage_follows_failure_mode_open_and_closed() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let open = limited(
        &redis_limits(
            &redis,
            "requests = 1\nwindow = \"60s\"\nfailure_mode = \"open\"",
        ),
        "",
    )
    .await;
    let closed = limited(
        &redis_limits(
            &redis,
            "requests = 1\nwindow = \"60s\"\nfailure_mode = \"closed\"",
        ),
        "",
    )
    .await;
    let (to, tc) = (open.token("open-user"), closed.token("closed-user"));
    assert_eq!(open.call(&to, "/o").await.status, 200);
    assert_eq!(open.call(&to, "/o").await.status, 429);
    assert_eq!(closed.call(&tc, "/c").await.status, 200);
    redis.stop();
    for _ in 0..3 {
        assert_eq!(
            open.call(&to, "/open-outage").await.status,
            200,
            "open mode admits"
        );
    }
    let refused = closed.call(&tc, "/closed-outage").await;
    assert_problem(&refused, 503);
    let record = closed.gateway.audit_record(&refused.request_id()).await;
    assert_eq!(record["decision"], "limiter_unavailable");
    assert!(closed.upstream.seen_on("/closed-outage").is_empty());
    assert_eq!(
        closed.gateway.admin_get("/readyz").await.0,
        503,
        "not ready in closed mode"
    );
    assert_eq!(
        open.gateway.admin_get("/readyz").await.0,
        200,
        "ready in open mode"
    );
    redis.restart();
    let (g, t) = (&closed.gateway, &tc);
    wait_until("closed mode never recovered", || async move {
        call(g, t, "/closed-back").await.status == 200
    })
    .await;
    assert_eq!(closed.gateway.admin_get("/readyz").await.0, 200);
}

#[test]
fn redis_url_is_a_secret_and_never_echoed() {
    let err = portcullis::config::Config::from_toml(
        "[upstream]\nurl = \"http://127.0.0.1:1\"\n[rate_limit]\nrequests = 1\nbackend = \"redis\"\nredis_url_env = \"PORTCULLIS_TEST_NO_SUCH_VARIABLE\"\n",
        "t.toml",
    )
    .unwrap_err();
    assert_eq!(err.key.as_deref(), Some("rate_limit.redis_url_env"));
    let err = portcullis::config::Config::from_toml(
        "[upstream]\nurl = \"http://127.0.0.1:1\"\n[rate_limit]\nrequests = 1\nredis_url = \"redis://:hunter2@host/\"\n",
        "t.toml",
    )
    .unwrap_err();
    assert!(err.message.contains("unknown field `redis_url`"), "{err}");
    assert!(!err.to_string().contains("hunter2"));
}

/// Calls `l` for each token in turn for `duration`: the count of each status and the slowest
/// answer.
async fn steady_load(
    l: &Limited,
    tokens: &[String],
    duration: Duration,
) -> (std::collections::BTreeMap<u16, usize>, Duration) {
    let mut statuses = std::collections::BTreeMap::new();
    let mut slowest = Duration::ZERO;
    let end = std::time::Instant::now() + duration;
    let mut i = 0;
    while std::time::Instant::now() < end {
        let started = std::time::Instant::now();
        let reply = l.call(&tokens[i % tokens.len()], "/load").await;
        slowest = slowest.max(started.elapsed());
        *statuses.entry(reply.status.as_u16()).or_insert(0) += 1;
        i += 1;
    }
    (statuses, slowest)
}

fn redis_limits_at(urls: &str, extra: &str) -> String {
    let path = std::env::temp_dir().join(format!(
        "portcullis-test-redis-{}.url",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::write(&path, urls).unwrap();
    format!(
        "backend = \"redis\"\nredis_timeout = \"1s\"\nredis_url_file = \"{}\"\n{extra}",
        path.display()
    )
}

/// The sum of a rate-limit key's slot counts, read through the cluster-aware redis-cli on `port`.
fn counted(port: u16, user: &str) -> u64 {
    crate::common::redis::cli(port, &["-c", "hvals", &format!("portcullis:rl:0:{user}")])
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .sum()
}

// redis-cli runs synchronously: the gateways answer from another worker thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_shares_limits_and_survives_a_master_killed_under_load() {
    let Some(cluster) = tokio::task::spawn_blocking(crate::common::redis::RedisCluster::start)
        .await
        .unwrap()
    else {
        return;
    };
    let limits = redis_limits_at(
        &cluster.urls(),
        "redis_mode = \"cluster\"\nrequests = 100000\nwindow = \"60s\"\nfailure_mode = \"local\"",
    );
    let a = limited(&limits, "").await;
    let b = limited_on(&limits, "", Some(MockUpstream::start().await)).await;

    // Two replicas count one user in one key of the cluster.
    let (ta, tb) = (a.token("shared-user"), b.token("shared-user"));
    for _ in 0..3 {
        assert_eq!(a.call(&ta, "/shared").await.status, 200);
        assert_eq!(b.call(&tb, "/shared").await.status, 200);
    }
    let port = cluster.ports[0];
    let shared = tokio::task::spawn_blocking(move || counted(port, "shared-user"))
        .await
        .unwrap();
    assert_eq!(shared, 6, "both replicas counted in the cluster");

    // Users whose keys spread over the three masters; the master of the first is killed 1 s into
    // 8 s of steady load.
    let users: Vec<String> = (0..24).map(|i| format!("load-user-{i}")).collect();
    let tokens: Vec<String> = users.iter().map(|u| a.token(u)).collect();
    let victim_key = format!("portcullis:rl:0:{}", users[0]);
    let victim = cluster.master_of(&victim_key);
    let mut cluster = cluster;
    let victim_key_for_killer = victim_key.clone();
    let killer = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_secs(1));
        cluster.kill(victim);
        let killed_at = std::time::Instant::now();
        cluster.wait_failover(&victim_key_for_killer, victim);
        (cluster, killed_at.elapsed())
    });
    let (statuses, slowest) = steady_load(&a, &tokens, Duration::from_secs(8)).await;
    let (cluster, failover) = killer.await.unwrap();
    let outages = a
        .gateway
        .metric("portcullis_rate_limit_redis_outages_total")
        .await;
    let fallback = a
        .gateway
        .metric("portcullis_rate_limit_fallback_decisions_total")
        .await;
    println!(
        "Redis Cluster, master {victim} killed under load: statuses {statuses:?}, slowest answer \
         {slowest:?}, slot served by the promoted replica {failover:?} after the kill, {outages} outage(s), {fallback} \
         decisions made locally meanwhile"
    );
    // failure_mode = "local": every request answered by the local window meanwhile, none lost.
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        vec![200],
        "{statuses:?}"
    );
    assert!(slowest < Duration::from_secs(3), "{slowest:?}");

    // After the failover the victim's key is counted in the cluster again, on the promoted node.
    let g = &a.gateway;
    let token = &tokens[0];
    let port = cluster
        .ports
        .iter()
        .copied()
        .find(|&p| p != victim)
        .unwrap();
    let user = users[0].clone();
    let before = tokio::task::spawn_blocking({
        let user = user.clone();
        move || counted(port, &user)
    })
    .await
    .unwrap();
    wait_until("the cluster never counted again", || {
        let user = user.clone();
        async move {
            call(g, token, "/after").await;
            tokio::task::spawn_blocking(move || counted(port, &user))
                .await
                .unwrap()
                > before
        }
    })
    .await;
    assert_eq!(
        a.gateway.metric("portcullis_rate_limit_backend_up").await,
        1.0
    );
    assert_ne!(cluster.master_of(&victim_key), victim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sentinel_follows_a_failover_of_the_master_under_load() {
    use crate::common::redis::{RedisSentinel, SENTINEL_MASTER};
    let Some(sentinel) = tokio::task::spawn_blocking(RedisSentinel::start)
        .await
        .unwrap()
    else {
        return;
    };
    let limits = redis_limits_at(
        &sentinel.urls(),
        &format!(
            "redis_mode = \"sentinel\"\nredis_sentinel_master = \"{SENTINEL_MASTER}\"\n\
             requests = 100000\nwindow = \"60s\"\nfailure_mode = \"local\""
        ),
    );
    let a = limited(&limits, "").await;
    let token = a.token("sentinel-user");
    for _ in 0..3 {
        assert_eq!(a.call(&token, "/before").await.status, 200);
    }
    let master = sentinel.master_port;
    assert_eq!(
        tokio::task::spawn_blocking(move || counted(master, "sentinel-user"))
            .await
            .unwrap(),
        3,
        "counted on the master the sentinels name"
    );

    let tokens: Vec<String> = (0..8).map(|i| a.token(&format!("s-load-{i}"))).collect();
    let mut sentinel = sentinel;
    let killer = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_secs(1));
        sentinel.kill_master();
        let killed_at = std::time::Instant::now();
        let deadline = killed_at + Duration::from_secs(20);
        while sentinel.current_master() != sentinel.replica_port {
            assert!(
                std::time::Instant::now() < deadline,
                "the sentinels never failed over"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        (sentinel, killed_at.elapsed())
    });
    let (statuses, slowest) = steady_load(&a, &tokens, Duration::from_secs(9)).await;
    let (sentinel, failover) = killer.await.unwrap();
    let outages = a
        .gateway
        .metric("portcullis_rate_limit_redis_outages_total")
        .await;
    println!(
        "Redis Sentinel, master killed under load: statuses {statuses:?}, slowest answer \
         {slowest:?}, replica promoted {failover:?} after the kill, {outages} outage(s)"
    );
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        vec![200],
        "{statuses:?}"
    );
    assert!(outages >= 1.0, "the killed master was noticed");

    // The gateway asked the sentinels again and counts on the promoted replica.
    let g = &a.gateway;
    let t = &token;
    let replica = sentinel.replica_port;
    wait_until("never counted on the promoted replica", || async move {
        call(g, t, "/after").await;
        tokio::task::spawn_blocking(move || counted(replica, "sentinel-user"))
            .await
            .unwrap()
            > 3
    })
    .await;
    assert_eq!(
        a.gateway.metric("portcullis_rate_limit_backend_up").await,
        1.0
    );
}

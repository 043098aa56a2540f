#!/usr/bin/env python3
"""Soak: mixed honest and hostile traffic against one release gateway for N minutes.

One gateway with the full pipeline (TLS, per-IP guard, HS256 JWT with a required scope and the
verified-token cache, per-user sliding-window limit, JSON validation with the injection rules, audit
log to a file with the hash chain on) in front of a Python asyncio upstream that answers JSON and
streams SSE events. All traffic comes from 127.0.0.1, which is a trusted proxy here, so every traffic
class sends its own fake client addresses in X-Forwarded-For and the per-IP guard tells them apart:

  honest     20 users (own token, own address), at most 10 requests/s each: JSON chats made of the
             benign texts of tests/corpus/injection.jsonl (expect 200), and one in seven an SSE
             stream of 5 events (expect 200 and all 5 events)
  bad-token  4 addresses sending tokens with a broken signature, expired, signed with another
             secret, `alg: none` and garbage, 20/s each (expect 401)
  flood      one address, 2 connections, 1000 requests/s in all (--flood-rate) with a bad token:
             past the guard's burst, 429; those the guard lets through (at most burst + rate x
             time) get 401
  injection  2 users sending the malicious texts of the corpus (expect 400)
  oversized  one user sending a Content-Length over max_body_bytes and a chunked body that
             passes it, each on a new connection (expect 413)

Every minute: elapsed, gateway RSS, responses by class and status, unexpected statuses and errors
by class, honest chat p50/p99. At the end: RSS over time (minute 2 against the last minute, and the
slope after warm-up), unexpected statuses and errors by class (all must be 0), audit records
against responses received (must be equal) and `portcullis audit-verify` on the audit file.
Exit status 0 when every check holds, 1 otherwise.

Usage: python3 benches/soak.py [--minutes 30] [--no-build]
"""

import argparse
import asyncio
import collections
import json
import os
import random
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

PORT, ADMIN_PORT, UPSTREAM_PORT = 28443, 28901, 28080
MAX_BODY = 65536
PER_IP_RPS, PER_IP_BURST = 50, 100
USER_LIMIT = 3000  # per 60 s; an honest user sends at most 600
HONEST_USERS, HONEST_RATE = 20, 10.0
EXPECTED = {"honest": {200}, "bad-token": {401}, "flood": {429, 401}, "injection": {400}, "oversized": {413}}


class Stats:
    def __init__(self):
        self.status = collections.defaultdict(collections.Counter)   # class -> status -> count
        self.unexpected = collections.defaultdict(collections.Counter)  # class -> "status detail" -> count
        self.errors = collections.defaultdict(collections.Counter)   # class -> error kind -> count
        self.retries = collections.Counter()  # class -> reused keep-alive connections found closed: sent again
        self.responses = 0     # every response received, whatever its class
        self.latency = []      # honest chat latencies (s) this minute

    def record(self, cls, response, ok=True, detail=""):
        self.responses += 1
        self.status[cls][response.status] += 1
        if response.status not in EXPECTED[cls] or not ok:
            self.unexpected[cls][f"{response.status} {detail}".strip()] += 1


def corpus():
    rows = [json.loads(line) for line in open(os.path.join(h.ROOT, "tests/corpus/injection.jsonl"))][1:]
    return [r["text"] for r in rows if r["label"] == "benign"], [r["text"] for r in rows if r["label"] == "malicious"]


def chat(text):
    return json.dumps({"model": "agent-1", "messages": [{"role": "user", "content": text}]}).encode()


async def send(conn, stats, cls, method, path, headers, body=b""):
    """One request on a keep-alive connection; a reused connection the server had already closed is
    opened again and the request sent once more (nothing was read, so nothing was audited)."""
    for attempt in (0, 1):
        reused = conn.writer is not None
        try:
            return await asyncio.wait_for(conn.request(method, path, headers, body), 60)
        except (ConnectionError, asyncio.IncompleteReadError) as e:
            conn.close()
            if reused and attempt == 0 and not getattr(e, "partial", b""):
                stats.retries[cls] += 1
                continue
            stats.errors[cls][type(e).__name__] += 1
        except (OSError, asyncio.TimeoutError, ValueError) as e:
            conn.close()
            stats.errors[cls][type(e).__name__] += 1
        return None


async def paced(rate, stop, step):
    """Runs `step` at most `rate` times a second until `stop` is set."""
    next_at = time.monotonic()
    while not stop.is_set():
        await step()
        next_at = max(next_at + 1 / rate, time.monotonic() - 1)
        delay = next_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


async def honest(i, hs, stats, stop, benign):
    conn, token, ip = h.Conn(PORT, h.client_tls()), hs.token(f"honest-{i}", ttl=86400), f"10.1.0.{i + 1}"
    headers = {"Authorization": f"Bearer {token}", "X-Forwarded-For": ip}

    async def step():
        if random.random() < 1 / 7:
            r = await send(conn, stats, "honest", "GET", "/v1/stream?n=5&gap=20", headers)
            if r:
                events = r.body.count(b"data: ")
                stats.record("honest", r, events == 5, f"sse {events} of 5 events")
        else:
            started = time.monotonic()
            r = await send(conn, stats, "honest", "POST", "/v1/chat",
                           dict(headers, **{"Content-Type": "application/json"}), chat(random.choice(benign)))
            if r:
                stats.latency.append(time.monotonic() - started)
                stats.record("honest", r, detail=r.headers.get("content-type", ""))
    await paced(HONEST_RATE, stop, step)
    conn.close()


def bad_tokens(hs):
    good = hs.token("mallory", ttl=86400)
    other = h.Hs256(tempfile.mkdtemp(prefix="portcullis-soak-other-")).token("mallory", ttl=86400)
    head, claims, _ = good.split(".")
    none_head = h.b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return {
        "bad_signature": h.bad_signature(good),
        "expired": hs.token("mallory", exp=int(time.time()) - 3600),
        "other_secret": other,
        "alg_none": f"{none_head}.{claims}.",
        "garbage": "not-a-jwt-" + os.urandom(12).hex(),
    }


async def bad_token(i, hs, stats, stop):
    conn, tokens = h.Conn(PORT, h.client_tls()), list(bad_tokens(hs).items())
    ip = f"10.2.0.{i + 1}"

    async def step():
        kind, token = random.choice(tokens)
        r = await send(conn, stats, "bad-token", "POST", "/v1/chat",
                       {"Authorization": f"Bearer {token}", "X-Forwarded-For": ip,
                        "Content-Type": "application/json"}, chat("hello"))
        if r:
            stats.record("bad-token", r, detail=kind)
    await paced(20, stop, step)
    conn.close()


async def flood(stats, stop, admitted, rate):
    conn = h.Conn(PORT, h.client_tls())
    headers = {"Authorization": "Bearer flood-garbage", "X-Forwarded-For": "10.9.9.9"}

    async def step():
        r = await send(conn, stats, "flood", "GET", "/v1/chat", headers)
        if r:
            stats.record("flood", r)
            admitted[0] += r.status != 429
    await paced(rate, stop, step)
    conn.close()


async def injection(i, hs, stats, stop, malicious):
    conn, token, ip = h.Conn(PORT, h.client_tls()), hs.token(f"injector-{i}", ttl=86400), f"10.4.0.{i + 1}"

    async def step():
        r = await send(conn, stats, "injection", "POST", "/v1/chat",
                       {"Authorization": f"Bearer {token}", "X-Forwarded-For": ip,
                        "Content-Type": "application/json"}, chat(random.choice(malicious)))
        if r:
            stats.record("injection", r)
    await paced(10, stop, step)
    conn.close()


async def oversized(hs, stats, stop):
    """A declared length over the limit (refused before a byte is read) or a chunked body that passes
    the limit as it streams; each on a new connection, closed after the answer."""
    token = hs.token("uploader", ttl=86400)
    chunk = (b'{"messages":[{"role":"user","content":"' + b"x" * 16000)

    async def step():
        conn = h.Conn(PORT, h.client_tls())
        headers = {"Authorization": f"Bearer {token}", "X-Forwarded-For": "10.5.0.1",
                   "Content-Type": "application/json"}
        chunked = random.random() < 0.5
        try:
            await conn.open()
            if chunked:
                await conn.send_head("POST", "/v1/chat", dict(headers, **{"Transfer-Encoding": "chunked"}))
            else:
                await conn.send_head("POST", "/v1/chat", headers, MAX_BODY * 2)
            await conn.writer.drain()
            reader = asyncio.create_task(conn.read_response())
            sent = 0
            while chunked and not reader.done() and sent < MAX_BODY * 4:
                conn.writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await conn.writer.drain()
                sent += len(chunk)
                await asyncio.sleep(0.01)
            r = await asyncio.wait_for(reader, 30)
            stats.record("oversized", r, detail="chunked" if chunked else "content-length")
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
            stats.errors["oversized"][type(e).__name__] += 1
        finally:
            conn.close()
    await paced(2, stop, step)


def config(hs, audit):
    return hs.auth_config() + f"""
[rate_limit]
requests = {USER_LIMIT}
window = "60s"
[rate_limit.per_ip]
requests_per_second = {PER_IP_RPS}
burst = {PER_IP_BURST}
[validation]
max_body_bytes = {MAX_BODY}
max_input_chars = 10000
[audit]
output = "{audit}"
hash_chain = true
"""


def count_lines(path):
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def fmt(counter):
    return ", ".join(f"{k}:{v}" for k, v in sorted(counter.items(), key=str)) or "-"


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))] * 1000 if values else float("nan")


def slope_kib_per_min(points):
    """Least-squares slope of (seconds, KiB) points, in KiB per minute."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx, my = sum(p[0] for p in points) / n, sum(p[1] for p in points) / n
    var = sum((p[0] - mx) ** 2 for p in points)
    return 60 * sum((p[0] - mx) * (p[1] - my) for p in points) / var if var else 0.0


async def drive(gw, hs, minutes, stats, rss_log, flood_rate):
    benign, malicious = corpus()
    stop = asyncio.Event()
    admitted = [0]
    tasks = [asyncio.create_task(honest(i, hs, stats, stop, benign)) for i in range(HONEST_USERS)]
    tasks += [asyncio.create_task(bad_token(i, hs, stats, stop)) for i in range(4)]
    tasks += [asyncio.create_task(flood(stats, stop, admitted, flood_rate / 2)) for _ in range(2)]
    tasks += [asyncio.create_task(injection(i, hs, stats, stop, malicious)) for i in range(2)]
    tasks.append(asyncio.create_task(oversized(hs, stats, stop)))
    started = time.monotonic()
    last = {cls: collections.Counter() for cls in EXPECTED}
    minute = 0
    while minute < minutes:
        # RSS every 5 s; a report every minute.
        for _ in range(12):
            await asyncio.sleep(5)
            rss_log.append((time.monotonic() - started, gw.rss()[0]))
            if gw.proc.poll() is not None:
                stop.set()
                raise RuntimeError(f"gateway exited: {open(gw.log).read()[-2000:]}")
        minute += 1
        elapsed = time.monotonic() - started
        this_minute = {cls: stats.status[cls] - last[cls] for cls in EXPECTED}
        last = {cls: collections.Counter(stats.status[cls]) for cls in EXPECTED}
        print(f"[{elapsed / 60:5.1f} min] RSS {rss_log[-1][1] / 1024:.1f} MiB, audit lines {count_lines(gw.audit)}, "
              f"responses {stats.responses}, honest chat p50 {pct(stats.latency, 50):.1f} ms "
              f"p99 {pct(stats.latency, 99):.1f} ms, flood let through {admitted[0]}", flush=True)
        stats.latency = []
        for cls in EXPECTED:
            print(f"    {cls:10s} this minute {fmt(this_minute[cls]):28s} total {fmt(stats.status[cls]):28s} "
                  f"unexpected {fmt(stats.unexpected[cls])}  errors {fmt(stats.errors[cls])}", flush=True)
    stop.set()
    await asyncio.gather(*tasks)
    return time.monotonic() - started, admitted[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--flood-rate", type=float, default=1000,
                        help="flood requests/s (20x the per-IP limit; unpaced it fills the disk with audit lines)")
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    if args.minutes < 1:
        sys.exit("--minutes must be at least 1")
    if not args.no_build:
        h.build_release()
    h.raise_nofile()
    tmp = tempfile.mkdtemp(prefix="portcullis-soak-")
    cert, key = h.load.make_cert(tmp)
    hs = h.Hs256(tmp)
    audit = os.path.join(tmp, "audit.log")
    upstream = h.start_upstream(tmp, UPSTREAM_PORT)
    gw = None
    stats, rss_log = Stats(), []
    failures = []
    try:
        gw = h.Gateway(tmp, "soak", PORT, ADMIN_PORT, cert, key, UPSTREAM_PORT, config(hs, audit),
                       server_extra='trusted_proxies = ["127.0.0.1/32"]\nmax_connections = 2000')
        gw.audit = audit
        gw.wait_ready()
        idle = gw.rss()[0]
        print(f"soak: {args.minutes} min against {h.GATEWAY} (pid {gw.pid}), idle RSS {idle / 1024:.1f} MiB; "
              f"work files in {tmp}", flush=True)
        took, admitted = asyncio.run(drive(gw, hs, args.minutes, stats, rss_log, args.flood_rate))
        # Every response has its audit record once the writer drains its queue.
        deadline = time.time() + 15
        while count_lines(audit) < stats.responses and time.time() < deadline:
            time.sleep(0.2)
        metrics = gw.metrics()
    finally:
        if gw:
            gw.stop()
        h.stop(upstream)
    audited = count_lines(audit)

    print(f"\n$ python3 benches/soak.py {' '.join(sys.argv[1:])}")
    print(f"ran {took / 60:.1f} min; idle RSS {idle / 1024:.1f} MiB")
    print("RSS by minute (MiB, mean of the 5 s samples): " + " ".join(
        f"{m + 1}:{mean_rss(rss_log, m) / 1024:.1f}" for m in range(args.minutes)))
    ref_minute = 1 if args.minutes >= 3 else 0  # minute 2, or minute 1 in a run too short for a warm-up
    ref, end = mean_rss(rss_log, ref_minute), mean_rss(rss_log, args.minutes - 1)
    after_warmup = [p for p in rss_log if p[0] >= ref_minute * 60]
    slope = slope_kib_per_min(after_warmup)
    growth = (end - ref) / ref * 100 if ref else 0
    grew = end - ref > 0.05 * ref and slope > 0
    print(f"RSS minute {ref_minute + 1} {ref / 1024:.1f} MiB -> minute {args.minutes} {end / 1024:.1f} MiB "
          f"({growth:+.1f}%), slope after minute {ref_minute} {slope:+.1f} KiB/min, peak (VmHWM) "
          f"{max(p[1] for p in rss_log) / 1024:.1f} MiB: {'GROWING' if grew else 'flat'}")
    if grew:
        failures.append("RSS grows after warm-up")
    print(f"\n{'class':10s} {'responses':>9s}  statuses / unexpected / errors")
    for cls in EXPECTED:
        total = sum(stats.status[cls].values())
        print(f"{cls:10s} {total:>9d}  {fmt(stats.status[cls])} / unexpected {sum(stats.unexpected[cls].values())} "
              f"{fmt(stats.unexpected[cls])} / errors {sum(stats.errors[cls].values())} {fmt(stats.errors[cls])}")
        if stats.unexpected[cls] or stats.errors[cls]:
            failures.append(f"{cls}: unexpected statuses or errors")
        if total == 0:
            failures.append(f"{cls}: no responses")
    allowance = PER_IP_BURST + PER_IP_RPS * took
    print(f"flood: {admitted} requests let through by the guard (401), at most {allowance:.0f} allowed "
          f"(burst {PER_IP_BURST} + {PER_IP_RPS}/s x {took:.0f} s); kept-alive connections sent again after "
          f"a server close: {fmt(stats.retries)}")
    if admitted > allowance:
        failures.append("flood: the per-IP guard let too many through")
    counted = sum(float(v) for v in __import__("re").findall(r"portcullis_requests_total\{[^}]*\} (\S+)", metrics))
    print(f"audit: {audited} records, {stats.responses} responses received, {counted:.0f} in "
          f"portcullis_requests_total: {'equal' if audited == stats.responses else 'DIFFERENT'}")
    if audited != stats.responses:
        failures.append("audit records != responses")
    verify = subprocess.run([h.GATEWAY, "audit-verify", audit], capture_output=True, text=True)
    print(f"audit-verify (exit {verify.returncode}): {verify.stdout.strip()} {verify.stderr.strip()}".strip())
    if verify.returncode != 0:
        failures.append("audit-verify failed")
    print(f"\nresult: {'PASS' if not failures else 'FAIL: ' + '; '.join(failures)}  (work files in {tmp})")
    sys.exit(1 if failures else 0)


def mean_rss(rss_log, minute):
    points = [p[1] for p in rss_log if minute * 60 <= p[0] < (minute + 1) * 60 + 1]
    return sum(points) / len(points) if points else 0


if __name__ == "__main__":
    main()

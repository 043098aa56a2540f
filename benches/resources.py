#!/usr/bin/env python3
"""Resource bounds: the release gateway's RSS under floods that could grow it without limit.

Each scenario runs against a fresh gateway process (release binary, TLS, 1 Tokio worker pinned to
core 0; load generators on core 1) and reports: what was sent, requests/s, RSS before (idle, after
one warm-up request), peak RSS (VmHWM, and the highest 1 s sample), RSS after (load stopped, a few
seconds idle) and the config key that bounds it.

  users-default     N distinct users (distinct `sub`, valid HS256 tokens, each sent once): the
                    per-user limiter tracks every one (`rate_limit.max_tracked_users`, default
                    1000000) and the verified-token cache keeps `auth.cache_capacity` (default 100000)
  users-small-cache the same N tokens with cache_capacity = 1000: the difference is the cache's share
  users-capped      the same N tokens with max_tracked_users = N/10: past the cap new users get 429
                    (rule tracked_users_cap) and the limiter's memory stops growing
  unknown-kid       a flood of ES256 tokens, each with a different unknown `kid`, against a gateway
                    whose keys come from `jwks_url` (a local HTTPS server with its own CA): how often
                    the JWK set server was asked (the refetch is debounced to once per 30 s)
  sse-streams       S concurrent SSE streams held open through the gateway (opened at a steady rate):
                    RSS per open stream = (RSS with all open - RSS idle) / S
  connections       C idle TLS connections (handshake done, no request) opened at a steady rate, held
                    5 s and closed: RSS per connection, and RSS 1, 5 and 10 s after they closed
                    (how much of it the allocator has given back)
  websockets        W idle WebSockets (TLS, token in the handshake) held through the gateway to a
                    WebSocket agent (tests/sdk/ws_upstream.py), then one echo on each: RSS per
                    open socket = (RSS with all open - RSS idle) / W
  bodies            200 clients POST a 1 MiB JSON body each at once, slowly (over ~4 s), with
                    max_buffered_bytes = 16 MiB: excess requests wait 2 s then get 503 `overloaded`
  bodies-unbounded  the same with max_buffered_bytes = 256 MiB, to show what the budget saves

N = 1,000,000 x scale, S = 10,000 x scale, C = 3,000 (--connections) (--scale 0.1 for a quick run; 1 is the full run, about
10-20 minutes on 2 cores, mostly minting and sending a million tokens). --only picks scenarios.

Needs: wrk, nginx, taskset, openssl, python3-cryptography. Usage:
  python3 benches/resources.py [--scale 1] [--only users-default,bodies] [--no-build]
"""

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

PORT, ADMIN_PORT, UPSTREAM_PORT, JWKS_PORT = 29443, 29901, 29080, 29444
SERVER_CORE, CLIENT_CORE = 0, 1
SCENARIOS = ["users-default", "users-small-cache", "users-capped", "unknown-kid", "sse-streams", "connections",
             "websockets", "bodies",
             "bodies-unbounded"]


def mib(kib):
    return f"{kib / 1024:.1f} MiB"


def start_nginx(tmp):
    """A fixed JSON answer on UPSTREAM_PORT: the cheapest upstream, so the gateway is what is measured."""
    answer = h.ANSWER.decode().replace("'", "")
    conf = h.write(os.path.join(tmp, "nginx.conf"), f"""
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx.err warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 10000000;
    client_body_temp_path {tmp}/nginx-body;
    server {{ listen 127.0.0.1:{UPSTREAM_PORT}; default_type application/json;
             location / {{ return 200 '{answer}'; }} }}
}}
""")
    proc = subprocess.Popen(["taskset", "-c", str(SERVER_CORE), "nginx", "-c", conf], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    h.wait_port(UPSTREAM_PORT)
    return proc


def walk_script(tmp, token_file, threads, loop):
    """wrk Lua: each request carries the next token of the file; thread i of n takes lines i, i+n, ...
    Without `loop`, a thread that reaches the end of the file idles (a long `delay()`), so each token
    is sent exactly once; `walk` stops wrk when the gateway has counted them all."""
    return h.write(os.path.join(tmp, f"walk-{os.path.basename(token_file)}.lua"), f"""
local counter = 0
function setup(thread)
    thread:set("id", counter)
    counter = counter + 1
end
local lines, finished
local function open_lines()
    lines = io.lines("{token_file}")
    for _ = 1, id do lines() end
end
function init(args)
    open_lines()
end
local function next_token()
    local token = lines()
    if token == nil then
        if not {str(loop).lower()} then return nil end
        open_lines()
        token = lines()
    end
    for _ = 2, {threads} do lines() end
    return token
end
-- delay() runs before request(): it looks one token ahead, so a finished thread sends nothing more.
-- wrk calls request() once before the run to check it (thread 0's state): that call takes no token.
local pending, started
function delay()
    started = true
    if pending == nil and not finished then
        pending = next_token()
        finished = pending == nil
    end
    if finished then return 3600000 end
    return 0
end
function request()
    if not started then return wrk.format("GET", "/v1/chat/verify-only") end
    local token = pending or next_token()
    pending = nil
    if token == nil then
        return wrk.format("GET", "/v1/chat/never-sent")
    end
    return wrk.format("GET", "/v1/chat", {{["Authorization"] = "Bearer " .. token}})
end
""")


def wrk_cmd(script, seconds, connections=64, threads=1):
    return ["taskset", "-c", str(CLIENT_CORE), "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s",
            "-s", script, f"https://127.0.0.1:{PORT}/"]


def run_wrk(script, seconds, connections=64, threads=1):
    started = time.monotonic()
    out = subprocess.run(wrk_cmd(script, seconds, connections, threads), capture_output=True, text=True).stdout
    took = time.monotonic() - started
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"requests": int(total.group(1)) if total else 0, "seconds": took,
            "non2xx": int(non2xx.group(1)) if non2xx else 0, "errors": errors.group(1) if errors else ""}


def walk(gw, script, count):
    """Sends each token of the file once: wrk runs until the gateway has answered `count` more requests."""
    base = gw.metric("portcullis_requests_total")
    started = time.monotonic()
    proc = subprocess.Popen(wrk_cmd(script, 36000), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    done, progress_at = base, time.monotonic()
    while proc.poll() is None:
        time.sleep(0.25)
        now = gw.metric("portcullis_requests_total")
        if now > done:
            done, progress_at = now, time.monotonic()
        if done - base >= count or time.monotonic() - progress_at > 10:
            break
    took = time.monotonic() - started
    time.sleep(1)  # answers still being written finish before wrk is stopped
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=30)[0]
    errors = re.search(r"Socket errors: (.*)", out)
    return {"requests": int(done - base), "seconds": took, "errors": errors.group(1) if errors else "", "raw": out}


def decisions(gw):
    """requests_total by decision and status, from the metrics."""
    out = {}
    for labels, value in re.findall(r'portcullis_requests_total\{([^}]*)\} (\S+)', gw.metrics()):
        d = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        key = f"{d.get('status')} {d.get('decision')}"
        out[key] = out.get(key, 0) + int(float(value))
    return out


class Result:
    def __init__(self, scenario, sent, rps, before, peak, sampled_peak, after, bound, notes):
        self.scenario, self.sent, self.rps, self.before = scenario, sent, rps, before
        self.peak, self.sampled_peak, self.after, self.bound, self.notes = peak, sampled_peak, after, bound, notes


def idle_rss(gw, settle=2.0):
    time.sleep(settle)
    return gw.rss()[0]


# ---------------------------------------------------------------------------------------------
# Distinct users and tokens.

def users_scenario(tmp, name, hs, token_file, count, auth_extra="", limit_extra="", bound=""):
    nginx = start_nginx(tmp)
    gw = None
    try:
        gw = h.Gateway(tmp, name, PORT, ADMIN_PORT, *tmp_cert(tmp), UPSTREAM_PORT,
                       hs.auth_config(auth_extra) + f"""
[rate_limit]
requests = 10
window = "60s"
{limit_extra}
""", workers=1, core=SERVER_CORE)
        gw.wait_ready()
        warm = asyncio.run(one_request(hs.token("warm-up")))
        before = idle_rss(gw)
        sampler = h.Sampler(gw, 1.0, ("portcullis_rate_limit_tracked_users",))
        sampler.start()
        result = walk(gw, walk_script(tmp, token_file, 1, loop=False), count)
        load_end = time.monotonic()
        time.sleep(5)
        after = gw.rss()[0]
        samples = sampler.stop()
        _, hwm = gw.rss()
        counts = decisions(gw)
        text = gw.metrics()
        tracked_peak = max((s[2].get("portcullis_rate_limit_tracked_users", 0) for s in samples), default=0)
        hits = gw.metric("portcullis_token_cache_hits_total", text=text)
        misses = gw.metric("portcullis_token_cache_misses_total", text=text)
        evictions = gw.metric("portcullis_token_cache_evictions_total", text=text)
        rss_curve = curve(samples, load_end - sampler.started_at)
        notes = [f"warm-up request {warm}; wrk: {result['requests']} requests in {result['seconds']:.0f} s, "
                 f"{result['errors'] or 'no socket errors'}",
                 f"statuses: {fmt_counts(counts)}",
                 f"tracked users peak {tracked_peak:.0f}; token cache hits {hits:.0f}, misses {misses:.0f}, "
                 f"evictions {evictions:.0f}",
                 f"RSS every ~10% of the run (MiB): {rss_curve}"]
        return Result(name, f"{count} distinct users, one valid HS256 token each, sent once",
                      result["requests"] / result["seconds"], before, hwm, sampler.max_rss(), after, bound, notes)
    finally:
        if gw:
            gw.stop()
        h.stop(nginx)


def curve(samples, load_end_s):
    pts = [s for s in samples if s[0] <= load_end_s + 1]
    if not pts:
        return "-"
    step = max(1, len(pts) // 10)
    picked = pts[::step] + ([pts[-1]] if (len(pts) - 1) % step else [])
    return " ".join(f"{s[0]:.0f}s:{s[1] / 1024:.0f}" for s in picked)


def fmt_counts(counts):
    return ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())) or "-"


_CERT = {}


def tmp_cert(tmp):
    if tmp not in _CERT:
        _CERT[tmp] = h.load.make_cert(tmp)
    return _CERT[tmp]


async def one_request(token, path="/v1/chat"):
    conn = h.Conn(PORT, h.client_tls())
    try:
        r = await conn.request("GET", path, {"Authorization": f"Bearer {token}"})
        return r.status
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# Unknown key ids against a JWKS URL.

def unknown_kid(tmp, seconds):
    ca, cert, key = h.make_ca_and_leaf(tmp)
    signer = h.load.Signer(tmp, "ES256")
    jwks = json.dumps({"keys": [signer.jwk]}).encode()
    hits = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(time.monotonic())
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(jwks)))
            self.end_headers()
            self.wfile.write(jwks)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", JWKS_PORT), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # Tokens naming unknown key ids: the signature is never checked, so random bytes do.
    token_file = os.path.join(tmp, "unknown-kid-tokens.txt")
    with open(token_file, "w") as f:
        for i in range(100_000):
            header = h.b64url(json.dumps({"alg": "ES256", "typ": "JWT", "kid": f"rotated-{i}-{random.getrandbits(32)}"}).encode())
            claims = h.b64url(json.dumps({"iss": h.ISSUER, "aud": h.AUDIENCE, "sub": f"u{i}", "scope": h.SCOPE,
                                          "exp": int(time.time()) + 7200}).encode())
            f.write(f"{header}.{claims}.{h.b64url(os.urandom(64))}\n")
    nginx = start_nginx(tmp)
    gw = None
    try:
        gw = h.Gateway(tmp, "unknown-kid", PORT, ADMIN_PORT, *tmp_cert(tmp), UPSTREAM_PORT, f"""
[auth]
issuer = "{h.ISSUER}"
audiences = ["{h.AUDIENCE}"]
algorithms = ["ES256"]
jwks_url = "https://127.0.0.1:{JWKS_PORT}/jwks.json"
jwks_ca_file = "{ca}"
""", workers=1, core=SERVER_CORE)
        gw.wait_ready()
        good = signer.token("good-user", "good-0")
        warm = asyncio.run(one_request(good))
        before = idle_rss(gw)
        hits_at_start = len(hits)
        flood_start = time.monotonic()
        sampler = h.Sampler(gw, 1.0)
        sampler.start()
        holder = {}
        flood = threading.Thread(target=lambda: holder.update(run_wrk(walk_script(tmp, token_file, 1, True), seconds)))
        flood.start()
        time.sleep(seconds / 2)
        during = asyncio.run(one_request(good))  # a good token still gets through mid-flood
        flood.join()
        result = holder
        flood_hits = [t - flood_start for t in hits[hits_at_start:] if t >= flood_start]
        time.sleep(3)
        after = gw.rss()[0]
        sampler.stop()
        _, hwm = gw.rss()
        counts = decisions(gw)
        fetches = gw.metric("portcullis_jwks_fetches_total")
        notes = [f"warm-up with a valid ES256 token {warm}; a valid token mid-flood {during}",
                 f"wrk: {result['requests']} requests in {result['seconds']:.0f} s, non-2xx {result['non2xx']}",
                 f"statuses: {fmt_counts(counts)}",
                 f"JWK set server hit {len(hits)} times in all: {hits_at_start} before the flood (start-up), "
                 f"{len(flood_hits)} during {seconds} s of flood at "
                 f"{', '.join(f'{t:.1f}s' for t in flood_hits) or '-'} "
                 f"(expected at most 1 + {seconds} / 30 with the 30 s debounce, jwks_refresh 10m); "
                 f"portcullis_jwks_fetches_total {fetches:.0f}"]
        return Result("unknown-kid", f"{result['requests']} tokens, each a different unknown kid, {seconds} s",
                      result["requests"] / result["seconds"], before, hwm, sampler.max_rss(), after,
                      "30 s refetch debounce (fixed); no per-kid state", notes)
    finally:
        if gw:
            gw.stop()
        h.stop(nginx)
        server.shutdown()


# ---------------------------------------------------------------------------------------------
# SSE streams held open.

async def open_streams(count, rate, token, hold_s, gw, sampler_box):
    ctx = h.client_tls()
    conns, failures, opened = [], {}, 0

    async def one():
        nonlocal opened
        conn = h.Conn(PORT, ctx)
        try:
            await asyncio.wait_for(conn.open(), 30)
            await conn.send_head("GET", "/v1/hold", {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"})
            await conn.writer.drain()
            head = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), 30)
            if not head.startswith(b"HTTP/1.1 200"):
                failures[head[:12].decode()] = failures.get(head[:12].decode(), 0) + 1
                conn.close()
                return
            await asyncio.wait_for(conn.reader.readuntil(b"\n\n"), 30)  # the first event is through
            opened += 1
            conns.append(conn)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
            failures[type(e).__name__] = failures.get(type(e).__name__, 0) + 1
            conn.close()

    started = time.monotonic()
    tasks = []
    for i in range(count):
        tasks.append(asyncio.create_task(one()))
        delay = started + (i + 1) / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    await asyncio.gather(*tasks)
    ramp = time.monotonic() - started
    # Keep reading (events every 20 s, keep-alive comments) so nothing backs up, while holding.
    async def drain(conn):
        try:
            while await conn.reader.read(4096):
                pass
        except (OSError, asyncio.IncompleteReadError):
            pass
    readers = [asyncio.create_task(drain(c)) for c in conns]
    held, open_gauge = await hold_and_close(conns, hold_s, gw, 0.5)
    for r in readers:
        r.cancel()
    return opened, failures, ramp, held, open_gauge


async def hold_and_close(conns, hold_s, gw, settle):
    """Holds `conns` open for `hold_s`, samples the gateway's RSS and open-connection gauge, then
    closes them and waits `settle` seconds."""
    await asyncio.sleep(hold_s)
    held = gw.rss()[0]
    gauge = gw.metric("portcullis_open_connections")
    for conn in conns:
        conn.close()
    await asyncio.sleep(settle)
    return held, gauge


def sse_streams(tmp, count, rate):
    hs = h.Hs256(tmp)
    upstream = h.start_upstream(tmp, UPSTREAM_PORT)
    gw = None
    try:
        # Each held stream also holds an upstream connection: lift upstream.max_connections too.
        gw = h.Gateway(tmp, "sse-streams", PORT, ADMIN_PORT, *tmp_cert(tmp), UPSTREAM_PORT,
                       "max_connections = 12000\n" + hs.auth_config(),
                       server_extra="max_connections = 12000", workers=1, core=SERVER_CORE)
        gw.wait_ready()
        token = hs.token("streamer")
        warm = asyncio.run(one_request(token, "/v1/stream?n=2&gap=10"))
        before = idle_rss(gw)
        sampler = h.Sampler(gw, 1.0)
        sampler.start()
        os.sched_setaffinity(0, {CLIENT_CORE})
        opened, failures, ramp, held, gauge = asyncio.run(open_streams(count, rate, token, 10, gw, None))
        os.sched_setaffinity(0, {SERVER_CORE, CLIENT_CORE})
        time.sleep(5)
        after = gw.rss()[0]
        sampler.stop()
        _, hwm = gw.rss()
        per_stream = (held - before) * 1024 / max(opened, 1)
        notes = [f"warm-up stream {warm}; {opened} of {count} streams open (first event read) after a "
                 f"{ramp:.0f} s ramp at {rate}/s; failures {failures or 0}; portcullis_open_connections "
                 f"{gauge:.0f} while held",
                 f"RSS with all {opened} open {mib(held)}: {per_stream / 1024:.1f} KiB per stream "
                 f"(TLS + HTTP/1.1 client connection, upstream connection, SSE relay)",
                 f"statuses after close: {fmt_counts(decisions(gw))}"]
        return Result("sse-streams", f"{count} SSE streams held open 10 s (TLS, HTTP/1.1)", opened / ramp, before,
                      hwm, sampler.max_rss(), after, "server.max_connections, upstream.max_connections (12000 here; defaults 10000, 4096)", notes)
    finally:
        if gw:
            gw.stop()
        h.stop(upstream)


# ---------------------------------------------------------------------------------------------
# Idle TLS connections, and the memory given back when they close.

async def hold_idle(count, rate, hold_s, gw):
    ctx = h.client_tls()
    conns, failures = [], 0
    started = time.monotonic()
    for i in range(count):
        conn = h.Conn(PORT, ctx)
        try:
            await conn.open()
            conns.append(conn)
        except OSError:
            failures += 1
        # Paced: `rate` handshakes a second.
        ahead = (i + 1) / rate - (time.monotonic() - started)
        if ahead > 0:
            await asyncio.sleep(ahead)
    ramp = time.monotonic() - started
    held, gauge = await hold_and_close(conns, hold_s, gw, 0.2)
    return len(conns), failures, ramp, held, gauge


def connections(tmp, count, rate):
    upstream = h.start_upstream(tmp, UPSTREAM_PORT)
    gw = None
    try:
        gw = h.Gateway(tmp, "connections", PORT, ADMIN_PORT, *tmp_cert(tmp), UPSTREAM_PORT, "",
                       server_extra="max_connections = 12000", workers=1, core=SERVER_CORE)
        gw.wait_ready()
        before = idle_rss(gw)
        sampler = h.Sampler(gw, 1.0)
        sampler.start()
        os.sched_setaffinity(0, {CLIENT_CORE})
        opened, failures, ramp, held, gauge = asyncio.run(hold_idle(count, rate, 5, gw))
        os.sched_setaffinity(0, {SERVER_CORE, CLIENT_CORE})
        closed = time.monotonic()
        after = {}
        for mark in (1, 5, 10):
            time.sleep(max(0.0, closed + mark - time.monotonic()))
            after[mark] = gw.rss()[0]
        sampler.stop()
        _, hwm = gw.rss()
        per_conn = (held - before) * 1024 / max(opened, 1)
        returned = (held - after[10]) / max(held - before, 1)
        notes = [f"{opened} of {count} connections open after a {ramp:.1f} s ramp at {rate}/s; failures "
                 f"{failures}; portcullis_open_connections {gauge:.0f} while held",
                 f"RSS idle {mib(before)}, with all open {mib(held)}: {per_conn / 1024:.1f} KiB per connection",
                 f"RSS after close: 1 s {mib(after[1])}, 5 s {mib(after[5])}, 10 s {mib(after[10])} "
                 f"({returned:.0%} of the growth given back)"]
        return Result("connections", f"{count} idle TLS connections held 5 s, then closed", opened / ramp,
                      before, hwm, sampler.max_rss(), after[10], "server.max_connections (12000 here; default 10000)",
                      notes)
    finally:
        if gw:
            gw.stop()
        h.stop(upstream)


# ---------------------------------------------------------------------------------------------
# Idle WebSockets.

async def hold_sockets(count, rate, token, gw):
    from websockets.asyncio.client import connect
    ctx = h.client_tls()
    sockets, failures = [], 0
    started = time.monotonic()
    for i in range(count):
        try:
            ws = await connect(f"wss://127.0.0.1:{PORT}/ws", ssl=ctx, compression=None,
                               additional_headers={"authorization": f"Bearer {token}"},
                               ping_interval=None, open_timeout=10)
            sockets.append(ws)
        except Exception:
            failures += 1
        ahead = (i + 1) / rate - (time.monotonic() - started)
        if ahead > 0:
            await asyncio.sleep(ahead)
    ramp = time.monotonic() - started
    await asyncio.sleep(2)
    held = gw.rss()[0]
    gauge = gw.metric("portcullis_websocket_open")
    echoed = 0
    for ws in sockets:
        await ws.send("still here")
        echoed += await ws.recv() == "still here"
    for ws in sockets:
        await ws.close()
    return len(sockets), failures, ramp, held, gauge, echoed


def websockets_scenario(tmp, count, rate):
    hs = h.Hs256(tmp)
    agent = subprocess.Popen(["taskset", "-c", str(CLIENT_CORE), sys.executable,
                              os.path.join(h.ROOT, "tests/sdk/ws_upstream.py"), str(UPSTREAM_PORT)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    gw = None
    try:
        assert agent.stdout.readline().strip() == "ready"
        threading.Thread(target=lambda: [None for _ in agent.stdout], daemon=True).start()
        gw = h.Gateway(tmp, "websockets", PORT, ADMIN_PORT, *tmp_cert(tmp), UPSTREAM_PORT,
                       hs.auth_config() + f'\n[websocket]\npaths = ["/ws"]\nmax_per_user = {count + 10}\n',
                       server_extra="max_connections = 12000", workers=1, core=SERVER_CORE)
        gw.wait_ready()
        token = hs.token("socket-user")
        before = idle_rss(gw)
        sampler = h.Sampler(gw, 1.0)
        sampler.start()
        opened, failures, ramp, held, gauge, echoed = asyncio.run(hold_sockets(count, rate, token, gw))
        time.sleep(3)
        after = gw.rss()[0]
        sampler.stop()
        _, hwm = gw.rss()
        per_socket = (held - before) * 1024 / max(opened, 1)
        notes = [f"{opened} of {count} sockets open after a {ramp:.1f} s ramp at {rate}/s; failures {failures}; "
                 f"portcullis_websocket_open {gauge:.0f} while held; {echoed} echoes answered",
                 f"RSS idle {mib(before)}, with all open {mib(held)}: {per_socket / 1024:.1f} KiB per socket "
                 f"(client TLS connection, upstream connection, two WebSocket codecs, the relay task)",
                 f"RSS 3 s after close {mib(after)}"]
        return Result("websockets", f"{count} idle WebSockets held, one echo each, then closed", opened / ramp,
                      before, hwm, sampler.max_rss(), after, "websocket.max_per_user, server.max_connections",
                      notes)
    finally:
        if gw:
            gw.stop()
        agent.kill()


# ---------------------------------------------------------------------------------------------
# Large bodies from many clients at once.

def chat_body(size):
    """A chat JSON body of exactly `size` bytes of plain prose."""
    prefix, suffix = '{"messages":[{"role":"user","content":"', '"}]}'
    words = "the quarterly report lists open tickets by team and priority for review "
    fill = size - len(prefix) - len(suffix)
    return (prefix + (words * (fill // len(words) + 1))[:fill] + suffix).encode()


async def post_slowly(body, token, seconds, statuses):
    conn = h.Conn(PORT, h.client_tls())
    chunks = 16
    step = len(body) // chunks + 1
    try:
        await conn.open()
        await conn.send_head("POST", "/v1/chat", {"Authorization": f"Bearer {token}",
                                                  "Content-Type": "application/json"}, len(body))
        reader = asyncio.create_task(conn.read_response())
        for i in range(chunks):
            if reader.done():
                break
            conn.writer.write(body[i * step:(i + 1) * step])
            await conn.writer.drain()
            await asyncio.wait([reader], timeout=seconds / chunks)
        r = await asyncio.wait_for(reader, 60)
        key = f"{r.status}"
        if r.status != 200:
            try:
                key += " " + json.loads(r.body).get("title", "")
            except ValueError:
                pass
        statuses[key] = statuses.get(key, 0) + 1
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
        statuses[type(e).__name__] = statuses.get(type(e).__name__, 0) + 1
    finally:
        conn.close()


def bodies(tmp, name, clients, budget):
    hs = h.Hs256(tmp)
    upstream = h.start_upstream(tmp, UPSTREAM_PORT)
    gw = None
    body_bytes = 1048576
    try:
        gw = h.Gateway(tmp, name, PORT, ADMIN_PORT, *tmp_cert(tmp), UPSTREAM_PORT, hs.auth_config() + f"""
[validation]
max_body_bytes = {body_bytes}
max_buffered_bytes = {budget}
max_input_chars = {body_bytes}
""", workers=1, core=SERVER_CORE)
        gw.wait_ready()
        token = hs.token("uploader")
        body = chat_body(body_bytes)
        statuses = {}
        asyncio.run(post_slowly(chat_body(1000), token, 0, statuses))
        warm = dict(statuses)
        statuses.clear()
        before = idle_rss(gw)
        sampler = h.Sampler(gw, 0.2)
        sampler.start()
        os.sched_setaffinity(0, {CLIENT_CORE})
        started = time.monotonic()

        async def all_clients():
            await asyncio.gather(*(post_slowly(body, token, 4, statuses) for _ in range(clients)))
        asyncio.run(all_clients())
        took = time.monotonic() - started
        os.sched_setaffinity(0, {SERVER_CORE, CLIENT_CORE})
        time.sleep(3)
        after = gw.rss()[0]
        sampler.stop()
        _, hwm = gw.rss()
        notes = [f"warm-up {warm}; client statuses: {fmt_counts(statuses)} in {took:.1f} s",
                 f"gateway decisions: {fmt_counts(decisions(gw))}",
                 f"peak above idle {mib(hwm - before)} for a budget of {mib(budget / 1024)}; "
                 f"{clients} x 1 MiB = {clients} MiB offered"]
        return Result(name, f"{clients} clients x 1 MiB JSON POST at once, each sent over ~4 s",
                      clients / took, before, hwm, sampler.max_rss(), after,
                      f"validation.max_buffered_bytes = {budget >> 20} MiB", notes)
    finally:
        if gw:
            gw.stop()
        h.stop(upstream)


# ---------------------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="N = 1,000,000 x scale users, 10,000 x scale streams")
    parser.add_argument("--only", help=f"comma-separated scenarios: {','.join(SCENARIOS)}")
    parser.add_argument("--kid-seconds", type=int, default=30, help="length of the unknown-kid flood")
    parser.add_argument("--stream-rate", type=int, default=500, help="SSE streams opened per second")
    parser.add_argument("--connections", type=int, default=3000, help="idle TLS connections held")
    parser.add_argument("--sockets", type=int, default=1000, help="idle WebSockets held")
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    for tool in ("wrk", "nginx", "taskset", "openssl"):
        if not shutil.which(tool):
            sys.exit(f"resources.py needs {tool}")
    picked = args.only.split(",") if args.only else SCENARIOS
    unknown = set(picked) - set(SCENARIOS)
    if unknown:
        sys.exit(f"unknown scenarios {sorted(unknown)}; pick from {SCENARIOS}")
    if not args.no_build:
        h.build_release()
    nofile = h.raise_nofile()
    users, streams = int(1_000_000 * args.scale), int(10_000 * args.scale)
    started = time.time()
    tmp = tempfile.mkdtemp(prefix="portcullis-resources-")
    results = []
    hs = h.Hs256(tmp)
    token_file = None
    if any(s.startswith("users") for s in picked):
        t0 = time.monotonic()
        token_file = hs.token_file(os.path.join(tmp, "users.txt"), users)
        print(f"minted {users} HS256 tokens in {time.monotonic() - t0:.1f} s", flush=True)
    for name in picked:
        t0 = time.monotonic()
        print(f"--- {name}", flush=True)
        if name == "users-default":
            r = users_scenario(tmp, name, hs, token_file, users,
                               bound="rate_limit.max_tracked_users (1000000), auth.cache_capacity (100000)")
        elif name == "users-small-cache":
            r = users_scenario(tmp, name, hs, token_file, users, auth_extra="cache_capacity = 1000",
                               bound="auth.cache_capacity = 1000")
        elif name == "users-capped":
            cap = max(users // 10, 1)
            r = users_scenario(tmp, name, hs, token_file, users, limit_extra=f"max_tracked_users = {cap}",
                               bound=f"rate_limit.max_tracked_users = {cap}")
        elif name == "unknown-kid":
            r = unknown_kid(tmp, args.kid_seconds)
        elif name == "sse-streams":
            # Each stream holds two descriptors in the gateway (client and upstream connection).
            fit = (nofile - 200) // 2
            if streams > fit:
                print(f"    open-file limit {nofile} (not raisable here) holds {fit} streams, not {streams}: "
                      f"measuring {fit}", flush=True)
            r = sse_streams(tmp, min(streams, fit), args.stream_rate)
        elif name == "connections":
            r = connections(tmp, min(args.connections, nofile - 200), 1000)
        elif name == "websockets":
            r = websockets_scenario(tmp, min(args.sockets, (nofile - 200) // 2), 500)
        elif name == "bodies":
            r = bodies(tmp, name, 200, 16 << 20)
        else:
            r = bodies(tmp, name, 200, 256 << 20)
        results.append(r)
        print(f"    {r.scenario}: took {time.monotonic() - t0:.0f} s; peak {mib(r.peak)}", flush=True)
        for line in r.notes:
            print(f"    {line}", flush=True)

    print(f"\n$ python3 benches/resources.py {' '.join(sys.argv[1:])}")
    print(f"scale {args.scale}: N = {users} users, S = {streams} streams; gateway: 1 Tokio worker on core "
          f"{SERVER_CORE}, load on core {CLIENT_CORE}; open-file limit {nofile}; took {time.time() - started:.0f} s")
    print(f"{'scenario':18s} {'req/s':>8s} {'RSS before':>11s} {'peak (HWM)':>11s} {'peak 1s':>10s} "
          f"{'RSS after':>10s}  sent / bound")
    for r in results:
        print(f"{r.scenario:18s} {r.rps:>8.0f} {mib(r.before):>11s} {mib(r.peak):>11s} {mib(r.sampled_peak):>10s} "
              f"{mib(r.after):>10s}  {r.sent}\n{'':72s}bound: {r.bound}")
    print("(req/s: requests per second sent; for sse-streams streams opened per second, for bodies clients "
          "per second. peak (HWM) is VmHWM, peak 1s the highest 1 s VmRSS sample, RSS after a few idle seconds)")
    for r in results:
        print(f"\n{r.scenario}:")
        for line in r.notes:
            print(f"  {line}")
    print(f"(work files in {tmp})")


if __name__ == "__main__":
    main()

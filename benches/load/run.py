#!/usr/bin/env python3
"""Load benchmark: portcullis against the bare upstream and against peers, in one run.

Targets, all on 127.0.0.1 (--only picks some):
  - upstream            nginx answering a fixed 1 KiB JSON (plain HTTP, the one upstream of every proxy)
  - direct-tls          the same nginx answer straight over TLS: no proxy hop
  - nginx-proxy         "nginx-plain": nginx as a plain TLS reverse proxy in front of the upstream
  - haproxy-tls         HAProxy terminating TLS in front of the upstream, nothing else
  - haproxy-jwt         "HAProxy-JWT": HAProxy doing as much of portcullis' work as it can: TLS, a per-IP
                        stick-table, bearer token, alg == ES256, jwt_verify against the public key
                        (401 otherwise), exp against date(), iss, aud and scope claims, a per-`sub`
                        stick-table limit (429, high enough not to trigger), content type and length
                        checks on the buffered body (it cannot parse JSON), the token removed and
                        identity and request-id headers added, security headers on every answer
  - haproxy-jwt-rs256   the same with RS256 (RSA-2048) tokens
  - floor               examples/floor_proxy.rs: the gateway's libraries (Tokio, rustls with the gateway's
                        TLS settings, hyper's HTTP/1.1 server and client, jemalloc) forwarding with nothing
                        else, the floor under the gateway's cost (keepalive and instructions modes only)
  - portcullis          the gateway: TLS, per-IP guard, ES256 JWT with a required scope and its
                        verified-token cache, per-user rate limit (high enough not to trigger), input
                        validation, security headers, audit log to a file
  - portcullis-llm      portcullis with the request path as an [llm] route: role-aware validation,
                        a model allow-list, a token budget, usage metering of the answer
  - portcullis-dlp      portcullis with [dlp]: the secret detectors on every request body and answer
  - portcullis-mcp      portcullis with the request path as an [mcp] endpoint and a JSON-RPC tools/call
                        body of the same size: the message's envelope, header/body agreement, two
                        tool rules, the call counted by the rate limit
  - portcullis-noval    the same without input validation (to price that stage)
  - portcullis-nolimit  the same without validation and rate limits (to price the limits)
  - portcullis-noauth   the same without rate limits and authentication (to price auth)

Before measuring, every target that checks tokens must answer 401 to a token with a broken
signature and 200 to a good one, with the security headers: the run stops otherwise.

Modes (--mode):
  - keepalive (default)  wrk, HTTP/1.1 keep-alive, 64 connections, a 103-byte JSON POST with a bearer
                         token. Then the latency check: nginx-proxy, haproxy-jwt and portcullis at a
                         constant 50% of nginx-proxy's measured saturation rate (wrk paced by a Lua
                         `delay()` schedule; wrk2 is not packaged, see `paced_script`), p99 compared;
                         5 interleaved rounds of 6 s (or --rounds, if more).
  - close                the same with `Connection: close`: a new TCP and TLS connection per request.
                         wrk keeps the closed connection's TLS session and offers it again, so the
                         run reports how many handshakes nginx (direct-tls) saw resumed, and probes
                         each target with a Python client that offers its last session the same way.
                         Every front negotiates TLS 1.3 (nginx is given `ssl_protocols TLSv1.2
                         TLSv1.3`: Debian 12's nginx 1.22 stops at TLS 1.2 by default, where a
                         resumed handshake skips the key exchange that TLS 1.3 always does).
  - h2                   h2load over TLS with ALPN h2: 64 clients, 10 streams each, the same POST.
  - sse                  a Python SSE upstream replaces nginx; through each front: time from the
                         upstream writing an event to the client reading it (median and p99 over
                         many streams, same monotonic clock on both sides), and events/s of one
                         stream of back-to-back events. `direct` is the upstream without a proxy.
  - instructions         no load: portcullis targets run under valgrind's callgrind (counting off while
                         they start), serve a warm-up batch, then 500 and then 4,500 keep-alive requests
                         (h2load, 4 connections), and the report gives the instructions executed per
                         request (the difference of the two batches: startup and handshakes removed).
                         The machine's load does not move it (+-0.12% between runs of one build), so it
                         can show changes too small for wall-clock rounds: A/B with
                         --only portcullis,portcullis-b and PORTCULLIS_BIN_B. valgrind hides some CPU
                         extensions (SHA among them), so code that uses them counts high.

--tokens N (keepalive and close): every request carries the next of N distinct valid tokens
(distinct `sub` and `jti`), minted at run time with the `cryptography` package. To defeat the
verified-token cache, portcullis then runs with cache_capacity = N/1000, so the cyclic walk through
N tokens finds nothing cached: its metrics line shows verifications vs cache hits.

Servers are pinned to core 0, the load generator to core 1. Each target runs ROUNDS times,
interleaved; the report gives median req/s, p50/p99 latency, peak RSS of the front process(es),
and each target's ratio to direct-tls, to nginx-proxy (nginx-plain) and to haproxy-jwt; then the CPU
time per request on the server core (the front's and the upstream's, user plus system from /proc),
with nginx-plain's over each target's: on a shared machine whose other load moves a round's rate
by tens of percent, this is the steadier comparison (a rate counts the time the core was taken by
others; the CPU time does not).
Run time: about 5 minutes by default, under 2 with --quick (2 s rounds).

Needs: nginx, haproxy, wrk, h2load, openssl (apt-get install -y nginx haproxy wrk nghttp2-client
openssl) and python3-cryptography (apt-get install -y python3-cryptography or pip install cryptography);
--mode instructions also valgrind (apt-get install -y valgrind).
Usage: python3 benches/load/run.py [--quick] [--mode keepalive|close|h2|sse|instructions] [--tokens N]
                                   [--only NAME,...] [--rounds N]
"""

import argparse
import asyncio
import base64
import json
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GATEWAY = os.path.join(ROOT, "target/release/portcullis")
FLOOR = os.path.join(ROOT, "target/release/examples/floor_proxy")
PORTS = {"upstream": 19000, "direct-tls": 19001, "nginx-proxy": 19002, "haproxy-tls": 19003,
         "portcullis": 19004, "portcullis-nolimit": 19005, "portcullis-noauth": 19006,
         "portcullis-noval": 19007, "haproxy-jwt": 19008, "haproxy-jwt-rs256": 19009,
         "portcullis-b": 19010, "portcullis-llm": 19011, "portcullis-dlp": 19012,
         "portcullis-mcp": 19013, "floor": 19014}
ADMIN_PORTS = {"portcullis": 19901, "portcullis-nolimit": 19902, "portcullis-noauth": 19903,
               "portcullis-noval": 19904, "portcullis-b": 19905, "portcullis-llm": 19906,
               "portcullis-dlp": 19907, "portcullis-mcp": 19908}
# For A/B work on the gateway itself: `--only portcullis,portcullis-b` with PORTCULLIS_BIN_B naming
# another build runs both with the full pipeline, interleaved.
GATEWAY_B = os.environ.get("PORTCULLIS_BIN_B", GATEWAY)
ALL_TARGETS = ["direct-tls", "nginx-proxy", "haproxy-tls", "haproxy-jwt", "haproxy-jwt-rs256", "floor",
               "portcullis", "portcullis-llm", "portcullis-dlp", "portcullis-mcp", "portcullis-noval", "portcullis-nolimit",
               "portcullis-noauth"]
DEFAULT_TARGETS = {
    "keepalive": ALL_TARGETS,
    "close": [t for t in ALL_TARGETS if t != "floor"],
    "h2": ["direct-tls", "nginx-proxy", "haproxy-tls", "haproxy-jwt", "portcullis"],
    "sse": ["direct", "nginx-proxy", "haproxy-jwt", "portcullis"],
    "tokens": ["nginx-proxy", "haproxy-jwt", "portcullis"],
    "instructions": ["floor", "portcullis", "portcullis-nolimit", "portcullis-noauth"],
}
CHECKS_TOKENS = {"haproxy-jwt", "haproxy-jwt-rs256", "portcullis", "portcullis-noval", "portcullis-nolimit",
                 "portcullis-b", "portcullis-llm", "portcullis-dlp", "portcullis-mcp"}
PACED_TARGETS = ["nginx-proxy", "haproxy-jwt", "portcullis", "portcullis-b"]
PACED_ROUNDS = 5
NGINX_PLAIN, HAPROXY_JWT = "nginx-proxy", "haproxy-jwt"
ISSUER = "https://issuer.bench/"
AUDIENCE = "agent-api"
SCOPE = "agent:use"
SERVER_CORE = "0"
CLIENT_CORE = "1"
CONNECTIONS = 64
H2_STREAMS = 10

# A realistic agent request: 103 bytes of JSON.
BODY = '{"model":"agent-1","messages":[{"role":"user","content":"Summarise the open tickets for today."}]}'
# The same request as an MCP tool call: 114 bytes of JSON-RPC.
MCP_BODY = ('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"summarise",'
            '"arguments":{"text":"the open tickets for today."}}}')


def body_of(name):
    """The request body a target is measured with."""
    return MCP_BODY if name == "portcullis-mcp" else BODY


# A 1 KiB JSON answer.
ANSWER = json.dumps({"id": "bench", "object": "chat.completion",
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": "x" * 900}}]})[:1024]
SECURITY_HEADERS = {
    "Strict-Transport-Security": "max-age=63072000; includeSubDomains",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def need(tool, package):
    if shutil.which(tool) is None:
        sys.exit(f"benchmark needs {tool}: apt-get install -y {package}")


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def make_cert(tmp):
    key, cert = os.path.join(tmp, "key.pem"), os.path.join(tmp, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    write(os.path.join(tmp, "combined.pem"), open(cert).read() + open(key).read())
    return cert, key


# ---------------------------------------------------------------------------------------------
# Signing keys and tokens, made at run time.

def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Signer:
    """An ES256 or RS256 signing key: its public key as PEM (HAProxy) and as a JWK (portcullis)."""

    def __init__(self, tmp, alg):
        try:
            from cryptography.hazmat.primitives import hashes, serialization
            from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
        except ImportError:
            sys.exit("benchmark needs the cryptography package: apt-get install -y python3-cryptography")
        self.alg, self.kid = alg, f"bench-{alg.lower()}"
        if alg == "ES256":
            self.key = ec.generate_private_key(ec.SECP256R1())
            numbers = self.key.public_key().public_numbers()
            self.jwk = {"kty": "EC", "crv": "P-256", "x": b64url(numbers.x.to_bytes(32, "big")),
                        "y": b64url(numbers.y.to_bytes(32, "big"))}

            def sign(data):  # JWS wants r || s, not DER
                r, s = utils.decode_dss_signature(self.key.sign(data, ec.ECDSA(hashes.SHA256())))
                return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        else:
            self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            numbers = self.key.public_key().public_numbers()
            self.jwk = {"kty": "RSA", "n": b64url(numbers.n.to_bytes(256, "big")), "e": b64url(b"\x01\x00\x01")}

            def sign(data):
                return self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        self.jwk.update(kid=self.kid, alg=alg)
        self.sign = sign
        self.public_pem = write(os.path.join(tmp, f"jwt-{alg.lower()}-pub.pem"), self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode())

    def token(self, sub="bench-user", jti="bench-0"):
        now = int(time.time())
        header = b64url(json.dumps({"alg": self.alg, "typ": "JWT", "kid": self.kid}).encode())
        claims = b64url(json.dumps({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "scope": SCOPE,
                                    "iat": now, "exp": now + 7200, "jti": jti}).encode())
        signing_input = f"{header}.{claims}"
        return f"{signing_input}.{b64url(self.sign(signing_input.encode()))}"


def broken_signature(token):
    """The same token with one signature character changed (in the middle: the last may be padding bits)."""
    head, sig = token.rsplit(".", 1)
    i = len(sig) // 2
    return f"{head}.{sig[:i]}{'A' if sig[i] != 'A' else 'B'}{sig[i + 1:]}"


# ---------------------------------------------------------------------------------------------
# Servers.

def start(cmd, env=None, log=None):
    out = open(log, "w") if log else subprocess.DEVNULL
    return subprocess.Popen(["taskset", "-c", SERVER_CORE] + cmd, env=env, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)


class StartFailed(Exception):
    pass


def wait_port(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise StartFailed(f"nothing listens on {port}")


def nginx_conf(tmp, name, servers, extra=""):
    conf = f"""
worker_processes 1;
daemon off;
pid {tmp}/{name}.pid;
error_log {tmp}/{name}.err warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    # nginx 1.22 (Debian 12) offers only up to TLS 1.2 by default; every other front here offers
    # TLS 1.3, and wrk takes it. Compare at the same protocol.
    ssl_protocols TLSv1.2 TLSv1.3;
    client_body_temp_path {tmp}/{name}-body;
    proxy_temp_path {tmp}/{name}-proxy;
    upstream agent {{ server 127.0.0.1:{PORTS['upstream']}; keepalive 128; }}
    {extra}
    {servers}
}}
"""
    return write(os.path.join(tmp, f"{name}.conf"), conf)


def haproxy_conf(tmp, name, signer=None):
    """HAProxy terminating TLS; with a signer, doing as much of portcullis' request work as it can."""
    rules = ""
    if signer:
        after = "\n".join(f'    http-after-response set-header {h} "{v}"' for h, v in SECURITY_HEADERS.items())
        rules = f"""
    option http-buffer-request
    unique-id-format %{{+X}}o\\ %ci:%cp_%fi:%fp_%Ts_%rt:%pid
    # per-IP guard before any crypto
    http-request track-sc1 src table {name}_per_ip
    http-request deny deny_status 429 if {{ sc_http_req_rate(1,{name}_per_ip) gt 10000000 }}
    # the bearer token, its algorithm, its signature
    http-request set-var(txn.bearer) http_auth_bearer
    http-request deny deny_status 401 unless {{ var(txn.bearer) -m found }}
    http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('$.alg')
    http-request deny deny_status 401 unless {{ var(txn.alg) -m str {signer.alg} }}
    http-request deny deny_status 401 unless {{ var(txn.bearer),jwt_verify(txn.alg,"{signer.public_pem}") -m int 1 }}
    # claims: expiry, issuer, audience, scope
    http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('$.exp','int')
    http-request set-var(txn.now) date()
    http-request deny deny_status 401 unless {{ var(txn.exp),sub(txn.now) -m int gt 0 }}
    http-request deny deny_status 401 unless {{ var(txn.bearer),jwt_payload_query('$.iss') -m str {ISSUER} }}
    http-request deny deny_status 401 unless {{ var(txn.bearer),jwt_payload_query('$.aud') -m str {AUDIENCE} }}
    http-request deny deny_status 403 unless {{ var(txn.bearer),jwt_payload_query('$.scope') -m reg (^|\\ ){SCOPE}(\\ |$) }}
    # per-user limit, keyed by sub
    http-request set-var(txn.sub) var(txn.bearer),jwt_payload_query('$.sub')
    http-request track-sc0 var(txn.sub) table {name}_per_user
    http-request deny deny_status 429 if {{ sc_http_req_rate(0,{name}_per_user) gt 100000000 }}
    # the body: JSON by type and bounded by length (HAProxy cannot parse it)
    http-request deny status 415 content-type text/plain string "JSON only" unless {{ req.hdr(content-type) -m beg application/json }}
    http-request deny deny_status 413 if {{ req.hdr_val(content-length) gt 1048576 }}
    # the credential leaves; identity and request id go upstream
    http-request del-header Authorization
    http-request del-header ^x-portcullis- -m reg
    http-request set-header X-Portcullis-User %[var(txn.sub)]
    http-request set-header X-Request-Id %[unique-id]
{after}
"""
    tables = ""
    if signer:
        tables = f"""
backend {name}_per_ip
    stick-table type ip size 100k expire 10s store http_req_rate(1s)
backend {name}_per_user
    stick-table type string len 64 size 200k expire 60s store http_req_rate(60s)
"""
    return write(os.path.join(tmp, f"{name}.cfg"), f"""
global
    nbthread 1
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    http-reuse always
frontend fe
    bind 127.0.0.1:{PORTS[name]} ssl crt {tmp}/combined.pem alpn h2,http/1.1
{rules}
    default_backend agent
backend agent
    server a 127.0.0.1:{PORTS['upstream']}
{tables}
""")


def portcullis_config(tmp, name, cert, key, auth):
    return write(os.path.join(tmp, f"{name}.toml"), f"""
[server]
listen = "127.0.0.1:{PORTS[name]}"
max_connections = 10000
[server.tls]
cert_file = "{cert}"
key_file = "{key}"
[admin]
listen = "127.0.0.1:{ADMIN_PORTS[name]}"
[upstream]
url = "http://127.0.0.1:{PORTS['upstream']}"
[audit]
output = "{tmp}/{name}-audit.log"
{auth}
""")


def portcullis_env():
    return dict(os.environ, TOKIO_WORKER_THREADS="1", PORTCULLIS_LOG="warn")


def start_portcullis(tmp, name, cert, key, auth):
    cfg = portcullis_config(tmp, name, cert, key, auth)
    binary = GATEWAY_B if name == "portcullis-b" else GATEWAY
    return start([binary, "run", "--config", cfg], env=portcullis_env(), log=os.path.join(tmp, f"{name}.err"))


def write_jwks(tmp, signers):
    """The JWKS file portcullis verifies tokens against: the ES256 signer's public key."""
    return write(os.path.join(tmp, "jwks.json"), json.dumps({"keys": [signers["ES256"].jwk]}))


def portcullis_stages(jwks, cache_capacity):
    """The configuration of each portcullis target: the full pipeline and the stage-off variants."""
    auth = f"""[auth]
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}"]
algorithms = ["ES256"]
required_scopes = ["{SCOPE}"]
jwks_file = "{jwks}"
"""
    if cache_capacity:
        auth += f"cache_capacity = {cache_capacity}\n"
    limits = """[rate_limit]
requests = 100000000
window = "60s"
[rate_limit.per_ip]
requests_per_second = 10000000
burst = 10000000
"""
    validation = """[validation]
max_body_bytes = 1048576
max_input_chars = 10000
"""
    # The benchmark's path as an OpenAI-compatible route: role-aware validation, the model policy,
    # a token budget and usage metering on the answer.
    llm = """[llm]
paths = ["/v1/chat"]
allowed_models = ["agent-1"]
max_output_tokens = 4096
[llm.budget]
tokens = 1000000000000
window = "1d"
"""
    mcp = """[mcp]
paths = ["/v1/chat"]
[[mcp.tools]]
name = "delete_*"
scopes = ["repo:admin"]
[[mcp.tools]]
name = "run_shell"
action = "deny"
"""
    return {"portcullis": auth + limits + validation, "portcullis-b": auth + limits + validation,
            "portcullis-llm": auth + limits + validation + llm,
            # Secrets scanned in every request body and every (JSON) answer.
            "portcullis-dlp": auth + limits + validation + "[dlp]\n",
            # The path as an MCP endpoint: two tool rules the call is judged against.
            "portcullis-mcp": auth + limits + validation + mcp,
            "portcullis-noval": auth + limits, "portcullis-nolimit": auth, "portcullis-noauth": ""}


def start_servers(procs, tmp, cert, key, signers, targets, mode, cache_capacity):
    """Starts the servers into `procs` (so a failure still leaves them to stop)."""
    if mode == "sse":
        procs["upstream"] = start([sys.executable, os.path.abspath(__file__), "--sse-upstream",
                                   str(PORTS["upstream"])], log=os.path.join(tmp, "sse-upstream.err"))
    else:
        answer = ANSWER.replace("'", "")
        # In close mode direct-tls logs whether each handshake resumed a session.
        reuse_format = "log_format reuse '$ssl_session_reused $ssl_protocol';" if mode == "close" else ""
        reuse_log = f"access_log {tmp}/direct-tls-reuse.log reuse buffer=64k;" if mode == "close" else ""
        upstream = nginx_conf(tmp, "upstream", f"""
    server {{ listen 127.0.0.1:{PORTS['upstream']}; default_type application/json;
             location / {{ return 200 '{answer}'; }} }}
    server {{ listen 127.0.0.1:{PORTS['direct-tls']} ssl http2; ssl_certificate {cert}; ssl_certificate_key {key};
             {reuse_log} default_type application/json; location / {{ return 200 '{answer}'; }} }}
""", extra=reuse_format)
        procs["upstream"] = start(["nginx", "-c", upstream])
    if "nginx-proxy" in targets:
        front = nginx_conf(tmp, "front", f"""
    server {{ listen 127.0.0.1:{PORTS['nginx-proxy']} ssl http2; ssl_certificate {cert}; ssl_certificate_key {key};
             location / {{ proxy_pass http://agent; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}
""")
        procs["nginx-proxy"] = start(["nginx", "-c", front])
    for name, signer in [("haproxy-tls", None), ("haproxy-jwt", signers["ES256"]),
                         ("haproxy-jwt-rs256", signers["RS256"])]:
        if name in targets:
            procs[name] = start(["haproxy", "-f", haproxy_conf(tmp, name, signer)],
                                log=os.path.join(tmp, f"{name}.err"))
    if "floor" in targets:
        procs["floor"] = start([FLOOR, f"127.0.0.1:{PORTS['floor']}", f"127.0.0.1:{PORTS['upstream']}", cert, key],
                               log=os.path.join(tmp, "floor.err"))
    jwks = write_jwks(tmp, signers)
    for name, config in portcullis_stages(jwks, cache_capacity).items():
        if name in targets:
            procs[name] = start_portcullis(tmp, name, cert, key, config)
    for name in procs:
        wait_port(PORTS[name])
    if "upstream" in procs and mode != "sse":
        wait_port(PORTS["direct-tls"])
    return procs


def stop_servers(procs):
    for proc in procs.values():
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for proc in procs.values():
        proc.wait(timeout=30)


def peak_rss_kib(proc):
    """Peak RSS of the process group's processes (nginx and haproxy fork workers)."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.getpgid(int(pid)) != proc.pid:
                continue
            with open(f"/proc/{pid}/status") as f:
                m = re.search(r"VmHWM:\s+(\d+) kB", f.read())
                total += int(m.group(1)) if m else 0
        except (OSError, ProcessLookupError):
            pass
    return total


# ---------------------------------------------------------------------------------------------
# Instructions per request (--mode instructions): a count the machine's load barely moves.

INSTRUCTION_RUNS = (500, 4500)


def process_tree(pid):
    """`pid` and every process below it (nginx's workers under its master)."""
    pids, queue = [], [pid]
    while queue:
        p = queue.pop()
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    queue.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return pids


def cpu_seconds(proc):
    """User plus system CPU time of a server's processes (all their threads), in seconds."""
    total = 0
    for p in process_tree(proc.pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def count_instructions(tmp, name, cfg, token, floor_args=()):
    """Instructions the gateway executes per request, counted by callgrind.

    One gateway process runs under callgrind with instrumentation off while it starts (so startup work
    whose length varies, such as clock calibration, is never counted). It is then turned on, the
    gateway serves a warm-up batch (not counted), then INSTRUCTION_RUNS[0] and INSTRUCTION_RUNS[1]
    keep-alive requests (h2load, 4 new connections each time), and the counters are dumped after
    each batch; the difference over the difference in requests removes the handshakes too.
    valgrind hides some CPU extensions (SHA among them), so code that uses them counts high.
    """
    body = write(os.path.join(tmp, f"{name}-body.json"), body_of(name))
    binary = GATEWAY_B if name == "portcullis-b" else GATEWAY
    command = [binary, "run", "--config", cfg] if cfg else [FLOOR, *floor_args]
    out_file = os.path.join(tmp, f"{name}.callgrind")
    log = os.path.join(tmp, f"{name}.callgrind.log")
    proc = start(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out_file}",
                  *command], env=portcullis_env(), log=log)
    totals = []
    try:
        wait_port(PORTS[name], timeout=120)
        control(proc, "--instr=on")
        # A first batch, not counted, does the one-time work: the first token's signature check,
        # lazily built state, the allocator's first pages.
        serve_batch(name, token, body, INSTRUCTION_RUNS[0])
        control(proc, "--zero")
        for part, n in enumerate(INSTRUCTION_RUNS, start=1):
            serve_batch(name, token, body, n)
            control(proc, "--dump")
            totals.append(dumped_total(f"{out_file}.{part}", log))
            print(f"{name} served {n} requests: {totals[-1]} instructions counted", flush=True)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=120)
    return (totals[1] - totals[0]) / (INSTRUCTION_RUNS[1] - INSTRUCTION_RUNS[0])


def serve_batch(name, token, body, n):
    """n keep-alive POSTs on 4 new connections (h2load); every one must get a 2xx."""
    out = subprocess.run(["taskset", "-c", CLIENT_CORE, "h2load", "--h1", "-n", str(n), "-c", "4", "-d", body,
                          "-H", f"authorization: Bearer {token}", "-H", "content-type: application/json",
                          f"https://127.0.0.1:{PORTS[name]}/v1/chat"], capture_output=True, text=True).stdout
    if not re.search(rf"status codes: {n} 2xx", out):
        sys.exit(f"{name}: not every request got a 2xx under valgrind:\n{out}")


def control(proc, option):
    """Runs callgrind_control against the gateway under valgrind (`taskset` execs it: same pid)."""
    result = subprocess.run(["callgrind_control", option, str(proc.pid)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        sys.exit(f"callgrind_control {option} failed: {result.stdout}{result.stderr}")


def dumped_total(path, log, timeout=60):
    """The instruction total of one callgrind dump, once the file is complete."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path):
            totals = re.findall(r"^(?:totals|summary): (\d+)", open(path).read(), re.MULTILINE)
            if totals:
                return int(totals[-1])
        time.sleep(0.2)
    sys.exit(f"callgrind wrote no dump at {path}, see {log}")


def report_instructions(tmp, cert, key, signers, targets, tokens_by_target):
    stages = portcullis_stages(write_jwks(tmp, signers), None)
    counts = {}
    for name in targets:
        if name == "floor":
            floor_args = [f"127.0.0.1:{PORTS['floor']}", f"127.0.0.1:{PORTS['upstream']}", cert, key]
            counts[name] = count_instructions(tmp, name, None, tokens_by_target[name][0], floor_args)
            continue
        cfg = portcullis_config(tmp, name, cert, key, stages[name])
        counts[name] = count_instructions(tmp, name, cfg, tokens_by_target[name][0])
    base = counts.get("portcullis-noauth")
    print(f"\ninstructions per request (callgrind; {INSTRUCTION_RUNS[1]} requests minus {INSTRUCTION_RUNS[0]}):")
    print(f"{'target':19s} {'instructions':>12s} {'vs portcullis-noauth':>21s}")
    for name, count in counts.items():
        extra = f"{count - base:+,.0f}" if base is not None else "-"
        print(f"{name:19s} {count:>12,.0f} {extra:>21s}")


# ---------------------------------------------------------------------------------------------
# Sanity: the token checks really run.

def tls_context(alpn="http/1.1"):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols([alpn])
    return ctx


def post(port, token, path="/v1/chat", tls=True, body=BODY):
    """One POST: (status, headers with lower-case names)."""
    import http.client
    conn = (http.client.HTTPSConnection("127.0.0.1", port, context=tls_context(), timeout=10) if tls
            else http.client.HTTPConnection("127.0.0.1", port, timeout=10))
    conn.request("POST", path, body, {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}


def check_token_targets(targets, tokens_by_target):
    """A broken signature must get 401 and a good token 200 with the security headers."""
    for name in targets:
        if name not in CHECKS_TOKENS:
            continue
        good = tokens_by_target[name][0]
        bad_status, _ = post(PORTS[name], broken_signature(good), body=body_of(name))
        good_status, headers = post(PORTS[name], good, body=body_of(name))
        missing = [h for h in ("Strict-Transport-Security", "X-Content-Type-Options")
                   if h.lower() not in headers]
        if bad_status != 401 or good_status != 200 or missing:
            sys.exit(f"{name}: broken signature got {bad_status} (want 401), good token got {good_status} "
                     f"(want 200), missing headers {missing}: it is not doing the work it is measured for")
        print(f"checked {name}: broken signature 401, good token 200, security headers present")


# ---------------------------------------------------------------------------------------------
# wrk (HTTP/1.1) and h2load (HTTP/2).

def wrk_script(tmp, name, mode, tokens, rate=None):
    """The POST; with several tokens each request carries the next; with a rate, paced."""
    lines = ['wrk.method = "POST"', f"wrk.body = '{body_of(name)}'", 'wrk.headers["Content-Type"] = "application/json"']
    if mode == "close":
        lines.append('wrk.headers["Connection"] = "close"')
    if len(tokens) == 1:
        lines.append(f'wrk.headers["Authorization"] = "Bearer {tokens[0]}"')
    else:
        token_file = write(os.path.join(tmp, f"{name}-tokens.txt"), "\n".join(tokens) + "\n")
        lines.append(f"""
local requests, next_request = {{}}, 0
function init(args)
    for token in io.lines("{token_file}") do
        wrk.headers["Authorization"] = "Bearer " .. token
        requests[#requests + 1] = wrk.format()
    end
end
function request()
    next_request = next_request % #requests + 1
    return requests[next_request]
end""")
    if rate:
        lines.append(paced_script(rate))
    return write(os.path.join(tmp, f"{name}-{mode}{'-paced' if rate else ''}.lua"), "\n".join(lines) + "\n")


def paced_script(rate):
    """A constant request rate for plain wrk (wrk2 is not in Debian).

    Every request claims the next slot of a schedule 1/rate apart and `delay()` holds it until
    then (wrk's timers have millisecond resolution, so requests leave in up-to-1-ms groups). A
    schedule that falls behind by more than 5 ms skips ahead instead of bursting. wrk times a
    request from its send, so this is a fixed-rate test without coordinated-omission correction:
    queueing before the send is not counted, on every target alike.
    """
    return f"""
local ffi = require("ffi")
ffi.cdef[[ typedef struct {{ long sec; long nsec; }} bench_timespec; int clock_gettime(int, bench_timespec *); ]]
local clock = ffi.new("bench_timespec")
local interval_ms, next_slot = {1000.0 / rate}, nil
local function now_ms()
    ffi.C.clock_gettime(1, clock)
    return tonumber(clock.sec) * 1000 + tonumber(clock.nsec) / 1e6
end
function delay()
    local now = now_ms()
    if next_slot == nil or next_slot < now - 5 then next_slot = now end
    next_slot = next_slot + interval_ms
    local wait = next_slot - now
    if wait < 1 then return 0 end
    return math.floor(wait)
end"""


def to_ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(port, script, seconds):
    cmd = ["taskset", "-c", CLIENT_CORE, "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency",
           "-s", script, f"https://127.0.0.1:{port}/v1/chat"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out.stdout)
    if not rps:
        sys.exit(f"wrk failed on port {port}: {out.stdout}{out.stderr}")
    lat = dict((p, to_ms(v, u)) for p, v, u in re.findall(r"\s(50|99)%\s+([\d.]+)(us|ms|s)", out.stdout))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out.stdout)
    socket_errors = re.search(r"Socket errors: (.*)", out.stdout)
    done = re.search(r"(\d+) requests in", out.stdout)
    return {"rps": float(rps.group(1)), "p50": lat.get("50"), "p99": lat.get("99"),
            "requests": int(done.group(1)) if done else 0,
            "non2xx": int(errors.group(1)) if errors else 0,
            "errors": socket_errors.group(1) if socket_errors else ""}


def run_h2load(tmp, port, token, seconds):
    body = write(os.path.join(tmp, "body.json"), BODY)
    log = os.path.join(tmp, "h2load.log")
    cmd = ["taskset", "-c", CLIENT_CORE, "h2load", "-t1", f"-c{CONNECTIONS}", f"-m{H2_STREAMS}",
           f"-D{seconds}", "-d", body, "-H", f"authorization: Bearer {token}",
           "-H", "content-type: application/json", "--log-file", log, f"https://127.0.0.1:{port}/v1/chat"]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    rps = re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out)
    if not rps or "h2" not in (re.search(r"Application protocol: (\S+)", out) or [None, ""])[1]:
        sys.exit(f"h2load failed on port {port} (no HTTP/2?):\n{out}")
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    failed = re.search(r"(\d+) failed, (\d+) errored", out)
    with open(log) as f:
        durations = sorted(int(line.split("\t")[2]) / 1000 for line in f if line.count("\t") == 2)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done", out)
    return {"rps": float(rps.group(1)), "p50": percentile(durations, 50), "p99": percentile(durations, 99),
            "requests": int(done.group(1)) if done else 0,
            "non2xx": sum(int(c) for c in codes.groups()[1:]) if codes else 0,
            "errors": f"{failed.group(1)} failed, {failed.group(2)} errored" if failed and failed.group(1) != "0" else ""}


def percentile(values, p):
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(len(values) * p / 100))]


# ---------------------------------------------------------------------------------------------
# Server-sent events.

def sse_upstream(port):
    """An SSE upstream on one core: `/ttfe` sends one event shortly after the head, `/burst?n=N`
    sends N events back to back; every event carries the monotonic time it was written."""
    async def handle(reader, writer):
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                if length:
                    await reader.readexactly(int(length.group(1)))
                elif re.search(rb"(?i)\r\ntransfer-encoding:\s*chunked", head):
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                        await reader.readexactly(size + 2)
                        if size == 0:
                            break
                path = head.split(b" ", 2)[1]
                count = int(path.split(b"n=")[1]) if b"n=" in path else 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                             b"X-Accel-Buffering: no\r\nTransfer-Encoding: chunked\r\n\r\n")
                await writer.drain()
                if count == 1:
                    await asyncio.sleep(0.005)  # the head is through: time the event alone
                for i in range(count):
                    event = b'data: {"i":%d,"t":%d}\n\n' % (i, time.monotonic_ns())
                    writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
                await writer.drain()
                if re.search(rb"(?i)\r\nconnection:\s*close", head):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        writer.close()

    async def serve():
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
        await server.serve_forever()
    asyncio.run(serve())


def sse_stream(port, tls, token, path):
    """One stream: (ms from the upstream writing the first event to reading it, events, seconds
    from the upstream writing the first event to reading the last)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls:
        sock = tls_context().wrap_socket(sock, server_hostname="localhost")
    sock.sendall((f"POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n"
                  f"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
                  f"Content-Length: {len(BODY)}\r\nConnection: close\r\n\r\n{BODY}").encode())
    head, first_ms, events, carry, first_at, last_at = b"", None, 0, b"", None, None
    while True:
        data = sock.recv(262144)
        now = time.monotonic_ns()
        if not data:
            break
        if first_ms is None:
            head += data
            match = re.search(rb'data: \{"i":0,"t":(\d+)\}\n\n', head)
            if match:
                first_ms, first_at = (now - int(match.group(1))) / 1e6, int(match.group(1))
                if not head.startswith(b"HTTP/1.1 200"):
                    sys.exit(f"SSE on port {port}: {head[:200]!r}")
        events += (carry + data).count(b"\n\n")  # events end in a blank line; chunk framing uses \r\n
        carry, last_at = data[-1:], now
    sock.close()
    if first_ms is None:
        sys.exit(f"SSE on port {port}: no event in {head[:300]!r}")
    return first_ms, events, (last_at - first_at) / 1e9


# ---------------------------------------------------------------------------------------------
# Report.

def ratio(med, n, ref):
    return f"{med[n]['rps'] / med[ref]['rps']:.2f}x" if ref in med and med[ref]["rps"] else "-"


def print_table(title, targets, med, rss):
    print(f"\n{title}")
    print(f"{'target':19s} {'req/s':>9s} {'p50 ms':>7s} {'p99 ms':>7s} {'peak RSS':>9s} "
          f"{'vs direct':>9s} {'vs nginx-plain':>14s} {'vs haproxy-jwt':>14s}")
    for n in targets:
        print(f"{n:19s} {med[n]['rps']:>9.0f} {med[n]['p50']:>7.2f} {med[n]['p99']:>7.2f} "
              f"{rss[n] / 1024:>7.1f}MiB {ratio(med, n, 'direct-tls'):>9s} {ratio(med, n, NGINX_PLAIN):>14s} "
              f"{ratio(med, n, HAPROXY_JWT):>14s}")
    if all("core_us" in med[n] for n in targets):
        base = med.get(NGINX_PLAIN, {}).get("core_us")
        print("\nCPU per request on the server core (medians; the front process, then the upstream nginx "
              "behind it):")
        print(f"{'target':19s} {'front us':>9s} {'upstream us':>12s} {'core us':>8s} {'nginx-plain / this':>19s}")
        for n in targets:
            m = med[n]
            rel = f"{base / m['core_us']:.2f}x" if base and m["core_us"] else "-"
            print(f"{n:19s} {m['front_us']:>9.1f} {m['core_us'] - m['front_us']:>12.1f} {m['core_us']:>8.1f} {rel:>19s}")


def resumption_support(port, token):
    """How many of five reconnects resumed the TLS session, for a client that, like wrk, offers
    the session of its last connection (each connection sends one POST and reads the answer, so
    TLS 1.3 session tickets have arrived)."""
    ctx, session, resumed = tls_context(), None, 0
    for attempt in range(6):
        sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                               server_hostname="localhost", session=session)
        sock.sendall((f"POST /v1/chat HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n"
                      f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n"
                      f"Connection: close\r\n\r\n{BODY}").encode())
        while sock.recv(65536):
            pass
        resumed += attempt > 0 and sock.session_reused
        session, version = sock.session, sock.version()
        sock.close()
    return resumed, version


def measure(args, tmp, targets, procs, tokens_by_target, seconds):
    """Runs the load rounds for keepalive, close and h2; returns the report lines."""
    results = {name: [] for name in targets}
    scripts = {n: wrk_script(tmp, n, args.mode, tokens_by_target[n]) for n in targets if args.mode != "h2"}

    def once(name, secs):
        if args.mode == "h2":
            return run_h2load(tmp, PORTS[name], tokens_by_target[name][0], secs)
        return run_wrk(PORTS[name], scripts[name], secs)

    for name in targets:  # warm-up: fill pools, caches and TLS state
        once(name, 1)
    upstream = procs.get("upstream")
    for round_no in range(args.rounds):
        for name in targets:
            # CPU time per request of the front and of the upstream (both on the server core):
            # steadier than the rate on a shared machine, whose other load slows a round without
            # being charged to it.
            front = procs[name] if name in procs else upstream
            behind = upstream if front is not upstream else None
            before = (cpu_seconds(front), cpu_seconds(behind) if behind else 0.0)
            r = once(name, seconds)
            after = (cpu_seconds(front), cpu_seconds(behind) if behind else 0.0)
            n = max(r["requests"], 1)
            r["front_us"] = (after[0] - before[0]) * 1e6 / n
            r["core_us"] = r["front_us"] + (after[1] - before[1]) * 1e6 / n
            results[name].append(r)
            print(f"round {round_no + 1} {name:19s} {r['rps']:>9.0f} req/s  p50 {r['p50']:.2f} ms"
                  f"  p99 {r['p99']:.2f} ms  CPU {r['front_us']:.1f} + {r['core_us'] - r['front_us']:.1f} us/req"
                  f"  non-2xx {r['non2xx']} {r['errors']}", flush=True)
    med = {n: {k: statistics.median(r[k] for r in results[n]) for k in ("rps", "p50", "p99", "front_us", "core_us")}
           for n in targets}

    paced = {}
    if args.mode == "keepalive" and NGINX_PLAIN in med:
        rate = int(med[NGINX_PLAIN]["rps"] / 2)
        paced_targets = [n for n in PACED_TARGETS if n in targets]
        paced_scripts = {n: wrk_script(tmp, n, args.mode, tokens_by_target[n], rate) for n in paced_targets}
        runs = {n: [] for n in paced_targets}
        # A p99 moves more with this machine's noise than a rate does: more, shorter rounds, so
        # that one noisy stretch sways the median less (5 x 6 s, against 3 x 8 s for the rates).
        paced_rounds, paced_seconds = max(args.rounds, PACED_ROUNDS), max(2, seconds * 3 // 4)
        for round_no in range(paced_rounds):
            for name in paced_targets:
                r = run_wrk(PORTS[name], paced_scripts[name], paced_seconds)
                runs[name].append(r)
                print(f"paced {round_no + 1} {name:19s} {r['rps']:>9.0f} req/s (asked {rate})  p50 {r['p50']:.2f} ms"
                      f"  p99 {r['p99']:.2f} ms  non-2xx {r['non2xx']} {r['errors']}", flush=True)
        medians = {n: {k: statistics.median(r[k] for r in runs[n]) for k in ("rps", "p50", "p99")}
                   for n in paced_targets}
        paced = {"rate": rate, "rounds": paced_rounds, "seconds": paced_seconds, "med": medians}

    resumed = {}
    if args.mode == "close":
        resumed = {n: resumption_support(PORTS[n], tokens_by_target[n][0]) for n in targets}
    rss = {name: peak_rss_kib(procs[name if name in procs else "upstream"]) for name in targets}
    return med, paced, resumed, rss


def report_sse(args, targets, tokens_by_target, procs, streams, burst):
    os.sched_setaffinity(0, {int(CLIENT_CORE)})
    ports = dict(PORTS, direct=PORTS["upstream"])
    first, rates = {n: [] for n in targets}, {n: [] for n in targets}
    for round_no in range(args.rounds):
        for name in targets:
            tls, token = name != "direct", tokens_by_target.get(name, [""])[0]
            firsts = [sse_stream(ports[name], tls, token, "/v1/chat/ttfe")[0] for _ in range(streams // args.rounds)]
            _, events, span = sse_stream(ports[name], tls, token, f"/v1/chat/burst?n={burst}")
            if events != burst:
                sys.exit(f"{name}: {events} of {burst} SSE events arrived")
            first[name] += firsts
            rates[name].append(events / span)
            print(f"round {round_no + 1} {name:19s} first event {statistics.median(firsts):.3f} ms (median), "
                  f"{events / span:.0f} events/s", flush=True)
    rss = {n: peak_rss_kib(procs[n if n != "direct" else "upstream"]) for n in targets}
    print(f"\n{'target':19s} {'first event p50 ms':>19s} {'p99 ms':>8s} {'vs direct p50':>14s} "
          f"{'events/s':>9s} {'peak RSS':>9s}")
    base = statistics.median(first["direct"]) if "direct" in first else None
    for n in targets:
        f = sorted(first[n])
        extra = f"{statistics.median(f) - base:+.3f} ms" if base is not None else "-"
        print(f"{n:19s} {statistics.median(f):>19.3f} {percentile(f, 99):>8.3f} {extra:>14s} "
              f"{statistics.median(rates[n]):>9.0f} {rss[n] / 1024:>7.1f}MiB")
    print(f"(first event: upstream write to client read of the event, {len(first[targets[0]])} streams per "
          f"target, each a new connection; events/s: one stream of {burst} events, median of {args.rounds})")


def targets_of(args):
    default = DEFAULT_TARGETS["tokens" if args.tokens > 1 else args.mode]
    return args.only.split(",") if args.only else default


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s rounds instead of 8 s, fewer SSE streams")
    parser.add_argument("--mode", choices=["keepalive", "close", "h2", "sse", "instructions"], default="keepalive")
    parser.add_argument("--tokens", type=int, default=1,
                        help="N distinct valid tokens, one per request in turn (keepalive and close)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", help="comma-separated targets (default depends on the mode)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (configs, logs, the audit logs of every request)")
    parser.add_argument("--sse-upstream", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sse_upstream:
        return sse_upstream(args.sse_upstream)
    for tool, package in [("nginx", "nginx"), ("haproxy", "haproxy"), ("wrk", "wrk"), ("openssl", "openssl"),
                          ("taskset", "util-linux"), ("h2load", "nghttp2-client")]:
        need(tool, package)
    if args.mode == "instructions":
        need("valgrind", "valgrind")
        if any(not t.startswith("portcullis") and t != "floor" for t in targets_of(args)):
            sys.exit("--mode instructions counts portcullis targets and the floor only")
    if "floor" in targets_of(args) and args.mode not in ("keepalive", "instructions"):
        sys.exit("the floor target speaks HTTP/1.1 keep-alive only (--mode keepalive or instructions)")
    if os.cpu_count() < 2:
        sys.exit("benchmark needs 2 cores: servers on one, the load generator on the other")
    if args.tokens > 1 and args.mode not in ("keepalive", "close"):
        sys.exit("--tokens works with --mode keepalive or close")
    targets = targets_of(args)
    unknown = set(targets) - set(PORTS) - {"direct"}
    if unknown:
        sys.exit(f"unknown targets {sorted(unknown)}")
    subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "portcullis", "--example", "floor_proxy"],
                   cwd=ROOT, check=True)
    seconds = 2 if args.quick else 8
    started = time.time()
    tmp = tempfile.mkdtemp(prefix="portcullis-bench-")
    cert, key = make_cert(tmp)
    signers = {alg: Signer(tmp, alg) for alg in ("ES256", "RS256")}
    tokens_by_target = {}
    for name in targets:
        signer = signers["RS256" if name.endswith("rs256") else "ES256"]
        if args.tokens > 1:
            tokens_by_target[name] = [signer.token(f"bench-user-{i}", f"bench-{i}") for i in range(args.tokens)]
        else:
            tokens_by_target[name] = [signer.token()]
    cache_capacity = max(args.tokens // 1000, 1) if args.tokens > 1 else None
    procs = {}
    try:
        if args.mode == "instructions":
            start_servers(procs, tmp, cert, key, signers, [], args.mode, None)  # the upstream alone
            report_instructions(tmp, cert, key, signers, targets, tokens_by_target)
            stop_servers(procs)
            procs = {}
            finish_work_dir(args, tmp)
            return
        start_servers(procs, tmp, cert, key, signers, targets, args.mode, cache_capacity)
        check_token_targets(targets, tokens_by_target)
        if args.mode == "sse":
            report = None
            report_sse(args, targets, tokens_by_target, procs, 60 if args.quick else 210, 2000 if args.quick else 10000)
        else:
            report = measure(args, tmp, targets, procs, tokens_by_target, seconds)
        if "portcullis" in procs:
            with urllib.request.urlopen(f"http://127.0.0.1:{ADMIN_PORTS['portcullis']}/metrics") as m:
                metrics = m.read().decode()
            time.sleep(0.5)  # the audit writer drains its queue
            audited = sum(1 for _ in open(os.path.join(tmp, "portcullis-audit.log")))
    except StartFailed as e:
        sys.exit(f"{e}: see the .err files in {tmp}")
    finally:
        stop_servers(procs)

    print(f"\n$ python3 benches/load/run.py {' '.join(sys.argv[1:])}")
    tool = {"h2": f"h2load, {CONNECTIONS} clients x {H2_STREAMS} streams", "sse": "Python SSE client"}.get(
        args.mode, f"wrk, {CONNECTIONS} connections")
    print(f"mode={args.mode} tokens={args.tokens} ({tool}) rounds={args.rounds}"
          f"{'' if args.mode == 'sse' else f' x {seconds}s'}, "
          f"servers on core {SERVER_CORE}, client on core {CLIENT_CORE}, took {time.time() - started:.0f} s")
    if report:
        med, paced, resumed, rss = report
        print_table("median of the rounds:", targets, med, rss)
        if paced:
            base = paced["med"].get(NGINX_PLAIN)
            print(f"\nconstant {paced['rate']} req/s (50% of nginx-plain's saturation), paced wrk, "
                  f"median of {paced['rounds']} interleaved rounds of {paced['seconds']} s:")
            print(f"{'target':19s} {'req/s':>9s} {'p50 ms':>7s} {'p99 ms':>7s} {'p99 vs nginx-plain':>19s}")
            for n, m in paced["med"].items():
                extra = f"{m['p99'] - base['p99']:+.2f} ms" if base else "-"
                print(f"{n:19s} {m['rps']:>9.0f} {m['p50']:>7.2f} {m['p99']:>7.2f} {extra:>19s}")
        if resumed:
            reuse_log = os.path.join(tmp, "direct-tls-reuse.log")
            lines = open(reuse_log).read().split() if os.path.exists(reuse_log) else []
            marks, protocols = lines[0::2], sorted(set(lines[1::2]))
            print(f"\nTLS resumption: nginx (direct-tls) saw {marks.count('r')} of {len(marks)} "
                  f"wrk handshakes resume a session ({', '.join(protocols)}; wrk offers the last session "
                  f"again on reconnect); a Python client reusing its last session resumed: "
                  + ", ".join(f"{n} {k}/5 ({v})" for n, (k, v) in resumed.items()))
    if "portcullis" in procs:
        served = sum(int(float(v)) for v in re.findall(r'portcullis_requests_total\{[^}]*\} (\S+)', metrics))
        allowed = sum(int(float(v)) for v in re.findall(
            r'portcullis_requests_total\{decision="allowed",status="200"\} (\S+)', metrics))
        verified = re.search(r'portcullis_token_verifications_total\{result="ok"\} (\S+)', metrics)
        hits = re.search(r'portcullis_token_cache_hits_total (\S+)', metrics)
        print(f"\nportcullis: {served} requests counted in metrics ({allowed} allowed with 200), "
              f"{audited} audit records written, {verified.group(1) if verified else 0} signature "
              f"verifications, {hits.group(1) if hits else 0} cache hits"
              + (f" (cache_capacity {cache_capacity} for {args.tokens} tokens)" if cache_capacity else ""))
    if report:
        med = report[0]
        pairs = [("[llm] route", "portcullis-llm", "portcullis"),
                 ("[mcp] endpoint", "portcullis-mcp", "portcullis"),
                 ("[dlp]", "portcullis-dlp", "portcullis"),
                 ("input validation", "portcullis", "portcullis-noval"),
                 ("rate limits", "portcullis-noval", "portcullis-nolimit"),
                 ("authentication", "portcullis-nolimit", "portcullis-noauth")]
        for stage, on, off in pairs:
            if on in med and off in med:
                print(f"{stage} on vs off: {med[on]['rps'] / med[off]['rps']:.2f}x")
    finish_work_dir(args, tmp)


def finish_work_dir(args, tmp):
    if args.keep:
        print(f"(work files in {tmp})")
    else:
        # The audit logs alone hold every request of the run: hundreds of MB in keep-alive mode.
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

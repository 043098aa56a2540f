#!/usr/bin/env python3
"""Load benchmark: portcullis against the bare upstream and against peers, in one run.

Starts, all on 127.0.0.1:
  - upstream      nginx answering a fixed 1 KiB JSON (plain HTTP, the one upstream of every proxy)
  - direct-tls    the same nginx answer straight over TLS: no proxy hop
  - nginx-proxy   nginx as a plain TLS reverse proxy in front of the upstream
  - haproxy-tls   HAProxy terminating TLS in front of the upstream
  - portcullis    the gateway: TLS, per-IP guard, ES256 JWT authentication, per-user rate limit
                  (high enough not to trigger), input validation, audit log to a file
  - portcullis-noval    the same without input validation (to price that stage)
  - portcullis-nolimit  the same without validation and rate limits (to price the limits)
  - portcullis-noauth   the same without rate limits and authentication (to price auth)

Servers are pinned to core 0 and wrk to core 1 (HTTP/1.1 keep-alive, 64 connections, a 103-byte
JSON POST with a bearer token). Each target runs ROUNDS times, interleaved; the report gives
median req/s, p50/p99 latency, peak RSS of the front process, and ratios.

Needs: nginx, haproxy, wrk, openssl (apt-get install -y nginx haproxy wrk openssl).
Usage: python3 benches/load/run.py [--quick] [--mode keepalive|close] [--only NAME,...]
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PORTS = {"upstream": 19000, "direct-tls": 19001, "nginx-proxy": 19002, "haproxy-tls": 19003,
         "portcullis": 19004, "portcullis-noval": 19007, "portcullis-nolimit": 19005,
         "portcullis-noauth": 19006}
ADMIN_PORTS = {"portcullis": 19901, "portcullis-nolimit": 19902, "portcullis-noauth": 19903,
               "portcullis-noval": 19904}
ISSUER = "https://issuer.bench/"
AUDIENCE = "agent-api"
SERVER_CORE = "0"
CLIENT_CORE = "1"
CONNECTIONS = 64

# A realistic agent request: 103 bytes of JSON.
BODY = '{"model":"agent-1","messages":[{"role":"user","content":"Summarise the open tickets for today."}]}'
# A 1 KiB JSON answer.
ANSWER = json.dumps({"id": "bench", "object": "chat.completion",
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": "x" * 900}}]})[:1024]


def need(tool):
    if shutil.which(tool) is None:
        sys.exit(f"benchmark needs {tool}: apt-get install -y nginx haproxy wrk openssl")


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


def make_jwt(tmp):
    """An ES256 signing key, its JWK set, and a token minted by `portcullis token`."""
    import base64
    sec1, pkcs8 = os.path.join(tmp, "jwt-sec1.pem"), os.path.join(tmp, "jwt-key.pem")
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", sec1], check=True)
    subprocess.run(["openssl", "pkcs8", "-topk8", "-nocrypt", "-in", sec1, "-out", pkcs8], check=True)
    spki = subprocess.run(["openssl", "ec", "-in", sec1, "-pubout", "-outform", "DER"], check=True,
                          capture_output=True).stdout
    point = spki[-64:]  # the uncompressed point's x and y end the SubjectPublicKeyInfo

    def b64(b):
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    jwks = write(os.path.join(tmp, "jwks.json"), json.dumps({"keys": [
        {"kty": "EC", "crv": "P-256", "kid": "bench", "alg": "ES256", "x": b64(point[:32]), "y": b64(point[32:])}]}))
    token = subprocess.run([os.path.join(ROOT, "target/release/portcullis"), "token", "--key", pkcs8, "--alg", "ES256",
                            "--kid", "bench", "--sub", "bench-user", "--scope", "agent:use", "--ttl", "2h",
                            "--iss", ISSUER, "--aud", AUDIENCE], check=True, capture_output=True, text=True).stdout.strip()
    return jwks, token


def nginx_conf(tmp, name, servers):
    conf = f"""
worker_processes 1;
daemon off;
pid {tmp}/{name}.pid;
error_log {tmp}/{name}.err warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {tmp}/{name}-body;
    proxy_temp_path {tmp}/{name}-proxy;
    upstream agent {{ server 127.0.0.1:{PORTS['upstream']}; keepalive 128; }}
    {servers}
}}
"""
    return write(os.path.join(tmp, f"{name}.conf"), conf)


def start(cmd, env=None, log=None):
    out = open(log, "w") if log else subprocess.DEVNULL
    return subprocess.Popen(["taskset", "-c", SERVER_CORE] + cmd, env=env, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)


def wait_port(port, timeout=30):
    import socket
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def start_portcullis(tmp, name, cert, key, auth):
    cfg = write(os.path.join(tmp, f"{name}.toml"), f"""
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
    env = dict(os.environ, TOKIO_WORKER_THREADS="1", PORTCULLIS_LOG="warn")
    return start([os.path.join(ROOT, "target/release/portcullis"), "run", "--config", cfg],
                 env=env, log=os.path.join(tmp, f"{name}.err"))


def start_servers(tmp, cert, key, jwks, only):
    procs = {}
    answer = ANSWER.replace("'", "")
    upstream = nginx_conf(tmp, "upstream", f"""
    server {{ listen 127.0.0.1:{PORTS['upstream']}; default_type application/json;
             location / {{ return 200 '{answer}'; }} }}
    server {{ listen 127.0.0.1:{PORTS['direct-tls']} ssl; ssl_certificate {cert}; ssl_certificate_key {key};
             default_type application/json; location / {{ return 200 '{answer}'; }} }}
""")
    procs["upstream"] = start(["nginx", "-c", upstream])
    if "nginx-proxy" in only:
        front = nginx_conf(tmp, "front", f"""
    server {{ listen 127.0.0.1:{PORTS['nginx-proxy']} ssl; ssl_certificate {cert}; ssl_certificate_key {key};
             location / {{ proxy_pass http://agent; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}
""")
        procs["nginx-proxy"] = start(["nginx", "-c", front])
    if "haproxy-tls" in only:
        cfg = write(os.path.join(tmp, "haproxy.cfg"), f"""
global
    nbthread 1
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    http-reuse always
frontend fe
    bind 127.0.0.1:{PORTS['haproxy-tls']} ssl crt {tmp}/combined.pem
    default_backend agent
backend agent
    server a 127.0.0.1:{PORTS['upstream']}
""")
        procs["haproxy-tls"] = start(["haproxy", "-f", cfg])
    auth = f"""[auth]
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}"]
algorithms = ["ES256"]
required_scopes = ["agent:use"]
jwks_file = "{jwks}"
"""
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
    if "portcullis" in only:
        procs["portcullis"] = start_portcullis(tmp, "portcullis", cert, key, auth + limits + validation)
    if "portcullis-noval" in only:
        procs["portcullis-noval"] = start_portcullis(tmp, "portcullis-noval", cert, key, auth + limits)
    if "portcullis-nolimit" in only:
        procs["portcullis-nolimit"] = start_portcullis(tmp, "portcullis-nolimit", cert, key, auth)
    if "portcullis-noauth" in only:
        procs["portcullis-noauth"] = start_portcullis(tmp, "portcullis-noauth", cert, key, "")
    for name in procs:
        wait_port(PORTS[name])
        if name == "upstream":
            wait_port(PORTS["direct-tls"])
    return procs


def wrk_script(tmp, mode, token):
    headers = 'wrk.headers["Content-Type"] = "application/json"\n'
    headers += f'wrk.headers["Authorization"] = "Bearer {token}"\n'
    if mode == "close":
        headers += 'wrk.headers["Connection"] = "close"\n'
    return write(os.path.join(tmp, "post.lua"), f"wrk.method = \"POST\"\nwrk.body = '{BODY}'\n{headers}")


def to_ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(port, script, seconds):
    cmd = ["taskset", "-c", CLIENT_CORE, "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency",
           "-s", script, f"https://127.0.0.1:{port}/v1/chat"]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict((p, to_ms(v, u)) for p, v, u in re.findall(r"\s(50|99)%\s+([\d.]+)(us|ms|s)", out))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50": lat.get("50"), "p99": lat.get("99"),
            "non2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": socket_errors.group(1) if socket_errors else ""}


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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="3 s per round instead of 10 s")
    parser.add_argument("--mode", choices=["keepalive", "close"], default="keepalive",
                        help="keepalive: reuse connections; close: a new TLS connection per request")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="direct-tls,nginx-proxy,haproxy-tls,portcullis,portcullis-noval,"
                                          "portcullis-nolimit,portcullis-noauth")
    args = parser.parse_args()
    for tool in ["nginx", "haproxy", "wrk", "openssl", "taskset"]:
        need(tool)
    if os.cpu_count() < 2:
        sys.exit("benchmark needs 2 cores: servers on one, the load generator on the other")
    only = args.only.split(",")
    subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "portcullis"], cwd=ROOT, check=True)
    seconds = 3 if args.quick else 10
    tmp = tempfile.mkdtemp(prefix="portcullis-bench-")
    cert, key = make_cert(tmp)
    jwks, token = make_jwt(tmp)
    script = wrk_script(tmp, args.mode, token)
    procs = start_servers(tmp, cert, key, jwks, only)
    results = {name: [] for name in only}
    try:
        for name in only:  # warm-up: fill pools, caches and the TLS session state
            run_wrk(PORTS[name], script, 1)
        for round_no in range(args.rounds):
            for name in only:
                r = run_wrk(PORTS[name], script, seconds)
                results[name].append(r)
                print(f"round {round_no + 1} {name:18s} {r['rps']:>10.0f} req/s  p50 {r['p50']:.2f} ms"
                      f"  p99 {r['p99']:.2f} ms  non-2xx {r['non2xx']} {r['socket_errors']}", flush=True)
        rss = {name: peak_rss_kib(procs[name if name in procs else "upstream"]) for name in only}
        if "portcullis" in only:
            with urllib.request.urlopen(f"http://127.0.0.1:{ADMIN_PORTS['portcullis']}/metrics") as m:
                metrics = m.read().decode()
            audited = sum(1 for _ in open(os.path.join(tmp, "portcullis-audit.log")))
    finally:
        for proc in procs.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in procs.values():
            proc.wait(timeout=30)

    med = {n: {k: statistics.median(r[k] for r in results[n]) for k in ("rps", "p50", "p99")} for n in only}
    print(f"\nmode={args.mode} connections={CONNECTIONS} rounds={args.rounds} x {seconds}s, "
          f"servers on core {SERVER_CORE}, wrk on core {CLIENT_CORE}")
    print(f"{'target':18s} {'req/s':>10s} {'p50 ms':>8s} {'p99 ms':>8s} {'peak RSS':>10s} "
          f"{'vs direct':>10s} {'vs nginx':>9s} {'vs haproxy':>11s}")
    for n in only:
        def ratio(ref):
            return f"{med[n]['rps'] / med[ref]['rps']:.2f}x" if ref in med else "-"
        print(f"{n:18s} {med[n]['rps']:>10.0f} {med[n]['p50']:>8.2f} {med[n]['p99']:>8.2f} "
              f"{rss[n] / 1024:>8.1f}MiB {ratio('direct-tls'):>10s} {ratio('nginx-proxy'):>9s} "
              f"{ratio('haproxy-tls'):>11s}")
    if "portcullis" in only:
        served = sum(int(float(v)) for v in re.findall(r'portcullis_requests_total\{[^}]*\} (\S+)', metrics))
        allowed = sum(int(float(v)) for v in re.findall(r'portcullis_requests_total\{decision="allowed",status="200"\} (\S+)', metrics))
        verified = re.search(r'portcullis_token_verifications_total\{result="ok"\} (\S+)', metrics)
        hits = re.search(r'portcullis_token_cache_hits_total (\S+)', metrics)
        print(f"\nportcullis: {served} requests counted in metrics ({allowed} allowed with 200), "
              f"{audited} audit records written, {verified.group(1) if verified else 0} signature "
              f"verifications, {hits.group(1) if hits else 0} cache hits")
        pairs = [("input validation", "portcullis", "portcullis-noval"),
                 ("rate limits", "portcullis-noval", "portcullis-nolimit"),
                 ("authentication", "portcullis-nolimit", "portcullis-noauth")]
        for stage, on, off in pairs:
            if on in med and off in med:
                print(f"{stage} on vs off: {med[on]['rps'] / med[off]['rps']:.2f}x")
    print(f"(work files in {tmp})")


if __name__ == "__main__":
    main()

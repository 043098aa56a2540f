"""Shared parts of benches/resources.py and benches/soak.py (run by hand, not in CI).

The release gateway started from a written config, its RSS read from /proc, HS256 tokens minted
with hmac (fast enough for a million), a CA and a leaf certificate for a local HTTPS JWKS server,
a small asyncio upstream (JSON answers, SSE streams, streams held open) and a small asyncio
HTTP/1.1 keep-alive client. Certificates and ES256 keys come from benches/load/run.py.

`python3 benches/harness.py upstream PORT` runs the upstream on its own (the scripts start it so).
"""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import resource
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "load"))
import run as load  # noqa: E402  (benches/load/run.py: make_cert, Signer, b64url, write, wait_port)

ROOT = load.ROOT
GATEWAY = load.GATEWAY
ISSUER, AUDIENCE, SCOPE = load.ISSUER, load.AUDIENCE, load.SCOPE
write, b64url, wait_port = load.write, load.b64url, load.wait_port
HMAC_KID = "bench-hs"


def raise_nofile(limit=65536):
    """Raises this process's open-file limit (children inherit it); root may raise the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, max(limit, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def build_release():
    subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "portcullis"], cwd=ROOT, check=True,
                   env=dict(os.environ, CARGO_BUILD_JOBS=os.environ.get("CARGO_BUILD_JOBS", "1")))


# ---------------------------------------------------------------------------------------------
# Tokens.

class Hs256:
    """HS256 tokens: a JSON header and claims joined by string formatting, one HMAC each."""

    def __init__(self, tmp, secret=None):
        self.secret = secret or base64.b64encode(os.urandom(48)).decode()
        self.secret_file = write(os.path.join(tmp, "hmac.secret"), self.secret + "\n")
        self.header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": HMAC_KID}).encode())
        self.key = self.secret.encode()

    def token(self, sub, ttl=7200, exp=None, jti=None):
        now = int(time.time())
        exp = exp if exp is not None else now + ttl
        claims = '{"iss":"%s","aud":"%s","sub":"%s","scope":"%s","iat":%d,"exp":%d,"jti":"%s"}' % (
            ISSUER, AUDIENCE, sub, SCOPE, now, exp, jti or sub)
        signing_input = f"{self.header}.{b64url(claims.encode())}"
        sig = hmac.new(self.key, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{b64url(sig)}"

    def auth_config(self, extra=""):
        return f"""[auth]
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}"]
algorithms = ["HS256"]
required_scopes = ["{SCOPE}"]
{extra}
[[auth.hmac_keys]]
kid = "{HMAC_KID}"
secret_file = "{self.secret_file}"
"""

    def token_file(self, path, count, prefix="user"):
        with open(path, "w") as f:
            for i in range(count):
                f.write(self.token(f"{prefix}-{i}") + "\n")
        return path


def bad_signature(token):
    return load.broken_signature(token)


# ---------------------------------------------------------------------------------------------
# Certificates: a CA and a leaf for 127.0.0.1 (rustls refuses a CA certificate as a server's).

def make_ca_and_leaf(tmp):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import datetime
    import ipaddress

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    ca_file = write(os.path.join(tmp, "jwks-ca.pem"), ca.public_bytes(pem).decode())
    cert_file = write(os.path.join(tmp, "jwks-cert.pem"), leaf.public_bytes(pem).decode())
    key_file = write(os.path.join(tmp, "jwks-key.pem"), leaf_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode())
    return ca_file, cert_file, key_file


# ---------------------------------------------------------------------------------------------
# The gateway.

def proc_status(pid):
    """(VmRSS, VmHWM) in KiB of one process, (0, 0) once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            text = f.read()
    except OSError:
        return 0, 0
    rss = re.search(r"VmRSS:\s+(\d+) kB", text)
    hwm = re.search(r"VmHWM:\s+(\d+) kB", text)
    return int(rss.group(1)) if rss else 0, int(hwm.group(1)) if hwm else 0


class Gateway:
    """The release binary run from a config written into `tmp`; its client and admin ports."""

    def __init__(self, tmp, name, port, admin_port, cert, key, upstream_port, sections,
                 server_extra="", workers=None, core=None):
        self.tmp, self.name, self.port, self.admin_port = tmp, name, port, admin_port
        self.audit = os.path.join(tmp, f"{name}-audit.log")
        self.config = write(os.path.join(tmp, f"{name}.toml"), f"""
[server]
listen = "127.0.0.1:{port}"
{server_extra}
[server.tls]
cert_file = "{cert}"
key_file = "{key}"
[admin]
listen = "127.0.0.1:{admin_port}"
[upstream]
url = "http://127.0.0.1:{upstream_port}"
{sections}
""")
        if "[audit]" not in sections:
            with open(self.config, "a") as f:
                f.write(f'[audit]\noutput = "{self.audit}"\n')
        env = dict(os.environ, PORTCULLIS_LOG="warn")
        if workers:
            env["TOKIO_WORKER_THREADS"] = str(workers)
        cmd = [GATEWAY, "run", "--config", self.config]
        if core is not None:
            cmd = ["taskset", "-c", str(core)] + cmd
        self.log = os.path.join(tmp, f"{name}.err")
        self.proc = subprocess.Popen(cmd, env=env, stdout=open(self.log, "w"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.pid = self.proc.pid  # taskset execs the gateway: same pid

    def wait_ready(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {open(self.log).read()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready in {timeout} s: {open(self.log).read()[-2000:]}")

    def rss(self):
        return proc_status(self.pid)

    def metrics(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def metric(self, name, labels=None, text=None):
        """Sum of the samples of one metric (optionally only those whose labels contain `labels`)."""
        text = text if text is not None else self.metrics()
        total = 0.0
        for line in text.splitlines():
            m = re.match(rf"{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", line)
            if m and (labels is None or labels in (m.group(1) or "")):
                total += float(m.group(2))
        return total

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class Sampler(threading.Thread):
    """Samples the gateway's RSS (and optionally metrics) every `interval` seconds."""

    def __init__(self, gateway, interval=1.0, metrics=()):
        super().__init__(daemon=True)
        self.gateway, self.interval, self.metric_names = gateway, interval, metrics
        self.samples, self.halt = [], threading.Event()
        self.started_at = time.monotonic()

    def run(self):
        while not self.halt.is_set():
            rss, _ = self.gateway.rss()
            values = {}
            if self.metric_names:
                try:
                    text = self.gateway.metrics()
                    values = {n: self.gateway.metric(n, text=text) for n in self.metric_names}
                except OSError:
                    pass
            self.samples.append((time.monotonic() - self.started_at, rss, values))
            self.halt.wait(self.interval)

    def stop(self):
        self.halt.set()
        self.join()
        return self.samples

    def max_rss(self):
        return max((s[1] for s in self.samples), default=0)


def start_upstream(tmp, port, name="upstream"):
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "upstream", str(port)],
                            stdout=open(os.path.join(tmp, f"{name}.err"), "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    wait_port(port)
    return proc


def stop(proc):
    if proc and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# ---------------------------------------------------------------------------------------------
# The upstream: one asyncio process.
#   GET  /v1/stream?n=N&gap=MS   N SSE events, MS apart (default 5 events, 50 ms)
#   GET  /v1/hold                an SSE stream held open: one event, then one every 20 s until closed
#   anything else                the body (if any) read and counted, a small JSON answer

ANSWER = json.dumps({"id": "soak", "object": "chat.completion",
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok " * 40}}]}).encode()


def run_upstream(port):
    async def read_body(reader, head):
        length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        if length:
            n = int(length.group(1))
            while n > 0:
                chunk = await reader.read(min(n, 1 << 20))
                if not chunk:
                    raise ConnectionError
                n -= len(chunk)
        elif re.search(rb"(?i)\r\ntransfer-encoding:\s*chunked", head):
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break

    async def sse(writer, count, gap, hold):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        i = 0
        while hold or i < count:
            event = b'data: {"i":%d}\n\n' % i
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
            i += 1
            await asyncio.sleep(20 if hold else gap)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                await read_body(reader, head)
                target = head.split(b" ", 2)[1].decode()
                path, _, query = target.partition("?")
                params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
                if path.endswith("/stream"):
                    await sse(writer, int(params.get("n", 5)), int(params.get("gap", 50)) / 1000, False)
                elif path.endswith("/hold"):
                    await sse(writer, 0, 0, True)
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                                 % (len(ANSWER), ANSWER))
                    await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        writer.close()

    async def serve():
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096, limit=1 << 16)
        await server.serve_forever()

    raise_nofile()
    asyncio.run(serve())


# ---------------------------------------------------------------------------------------------
# A small HTTP/1.1 keep-alive client over asyncio streams.

def client_tls():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body


class Conn:
    """One keep-alive connection; reopened by `request` when the server closed it."""

    def __init__(self, port, ctx):
        self.port, self.ctx = port, ctx
        self.reader = self.writer = None

    async def open(self):
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, ssl=self.ctx,
                                                                 server_hostname="localhost", limit=1 << 20)

    def close(self):
        if self.writer:
            self.writer.close()
        self.reader = self.writer = None

    async def send_head(self, method, path, headers, length=None):
        if self.writer is None:
            await self.open()
        lines = [f"{method} {path} HTTP/1.1", "Host: localhost"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if length is not None:
            lines.append(f"Content-Length: {length}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    async def read_response(self, on_chunk=None):
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        headers = {}
        for line in head.decode("latin-1").split("\r\n")[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        body = b""
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(chunk[:-2])
                if on_chunk:
                    on_chunk(chunk[:-2])
            body = b"".join(parts)
        if headers.get("connection", "").lower() == "close":
            self.close()
        return Response(status, headers, body)

    async def request(self, method, path, headers, body=b""):
        if self.writer is None:
            await self.open()
        await self.send_head(method, path, headers, len(body) if body or method in ("POST", "PUT") else None)
        if body:
            self.writer.write(body)
        await self.writer.drain()
        return await self.read_response()


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "upstream":
    run_upstream(int(sys.argv[2]))

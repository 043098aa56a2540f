"""Proves the official MCP Python SDK's OAuth client (mcp==2.3.0, mcp.client.auth.OAuthClientProvider)
finds the authorization server from the gateway's 401.

Usage: python3 mcp_oauth_probe.py URL CA_FILE AS_PORT [MODE]
  URL: the MCP endpoint; it answers 401 with WWW-Authenticate: Bearer resource_metadata="..."
       and that protected resource metadata names authorization_servers ["http://127.0.0.1:AS_PORT"]
  CA_FILE: PEM file of the CA to trust, or "-" for plain HTTP
  AS_PORT: this script serves a stub authorization server on http://127.0.0.1:AS_PORT
           (RFC 8414 metadata at /.well-known/oauth-authorization-server, dynamic registration at /register)
  MODE: the client's protocol mode, legacy (default) or 2026-07-28

The redirect handler captures the authorization URL and aborts the flow (no login happens).
The last line printed is one JSON object the Rust tests assert on:
  {"requests": [{"method", "url", "status"}, ...] (every HTTP request the SDK made, in order),
   "authorize": {query parameter: value} of the captured authorization URL}
Exit status 0 only if the authorization URL was captured.
"""

import json
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import anyio
import httpx2
from mcp import Client
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider, TokenStorage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientMetadata

URL, CA_FILE, AS_PORT = sys.argv[1], sys.argv[2], int(sys.argv[3])
MODE = sys.argv[4] if len(sys.argv) > 4 else "legacy"
ISSUER = f"http://127.0.0.1:{AS_PORT}"
AS_METADATA = {
    "issuer": ISSUER,
    "authorization_endpoint": f"{ISSUER}/authorize",
    "token_endpoint": f"{ISSUER}/token",
    "registration_endpoint": f"{ISSUER}/register",
    "response_types_supported": ["code"],
    "grant_types_supported": ["authorization_code", "refresh_token"],
    "code_challenge_methods_supported": ["S256"],
    "token_endpoint_auth_methods_supported": ["none"],
}


class AuthorizationServer(BaseHTTPRequestHandler):
    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/.well-known/oauth-authorization-server":
            self.reply(200, AS_METADATA)
        else:
            self.reply(404, {"error": "not_found"})

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/register":  # RFC 7591: echo the metadata back with a client_id
            self.reply(201, {**json.loads(body), "client_id": "probe-client", "client_id_issued_at": 1700000000})
        else:
            self.reply(404, {"error": "not_found"})

    def log_message(self, *args):
        pass


class MemoryStorage(TokenStorage):
    tokens = client_info = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info):
        self.client_info = client_info


class Aborted(Exception):
    """Raised by the redirect handler: the probe stops before any login."""


requests = []
authorize = {}


async def on_request(request):
    requests.append({"method": request.method, "url": str(request.url), "status": None})


async def on_response(response):
    for entry in reversed(requests):
        if entry["status"] is None and entry["url"] == str(response.request.url):
            entry["status"] = response.status_code
            break


async def on_redirect(url: str) -> None:
    authorize.update(parse_qsl(urlsplit(url).query))
    raise Aborted(url)


async def on_callback() -> AuthorizationCodeResult:
    raise Aborted("no callback expected")


async def main() -> None:
    provider = OAuthClientProvider(
        server_url=URL,
        client_metadata=OAuthClientMetadata(
            client_name="portcullis-oauth-probe",
            redirect_uris=["http://localhost:3030/callback"],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=MemoryStorage(),
        redirect_handler=on_redirect,
        callback_handler=on_callback,
    )
    verify = ssl.create_default_context(cafile=CA_FILE) if CA_FILE != "-" else True
    http = httpx2.AsyncClient(auth=provider, verify=verify, timeout=10,
                              event_hooks={"request": [on_request], "response": [on_response]})
    try:
        with anyio.fail_after(30):
            async with http, Client(streamable_http_client(URL, http_client=http), mode=MODE) as client:
                await client.list_tools()
    except BaseException as exc:  # noqa: BLE001 - Aborted arrives wrapped in exception groups
        if not authorize:
            print(f"probe failed: {exc!r}", file=sys.stderr)


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", AS_PORT), AuthorizationServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    anyio.run(main)
    print(json.dumps({"requests": requests, "authorize": authorize}), flush=True)
    sys.exit(0 if authorize else 1)

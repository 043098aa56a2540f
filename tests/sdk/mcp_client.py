"""The official MCP Python SDK (mcp==2.3.0) as a client of an MCP endpoint (the gateway in tests).

Usage: python3 mcp_client.py URL CA_FILE TOKEN MODE
  MODE: legacy (2025-11-25, initialize + sessions) or 2026-07-28 (stateless, per-request _meta)
  CA_FILE: PEM file of the CA to trust, or "-" for plain HTTP
  TOKEN: sent as "Authorization: Bearer TOKEN" on every request

In one connection: list tools; echo("hello"); run_shell(command="id"); delete_repo(name="x");
echo("again") (proves the connection survived the refusals); lookup(key="k").
The last line printed is one JSON object the Rust tests assert on:
  {"protocol_version", "tools": sorted names, "echo": text, "run_shell", "delete_repo", "echo_after", "lookup"}
where each call is {"is_error": bool, "text": ...} for a result, or
{"raised": class name, "code": JSON-RPC code or null, "message": str} for an exception.
Refusals are data: the exit status is 0 unless something unexpected failed (e.g. no connection).
"""

import json
import ssl
import sys

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

URL, CA_FILE, TOKEN, MODE = sys.argv[1:5]


def outcome(result=None, exc=None):
    if exc is not None:
        code = getattr(exc, "code", None) or getattr(getattr(exc, "error", None), "code", None)
        return {"raised": type(exc).__name__, "code": code, "message": str(exc)}
    text = "".join(c.text for c in result.content if getattr(c, "type", None) == "text")
    return {"is_error": bool(result.is_error), "text": text}


async def call(client, name, arguments):
    try:
        return outcome(await client.call_tool(name, arguments))
    except Exception as exc:  # noqa: BLE001 - a refusal is what some tests expect
        return outcome(exc=exc)


async def main() -> dict:
    verify = ssl.create_default_context(cafile=CA_FILE) if CA_FILE != "-" else True
    http = httpx2.AsyncClient(verify=verify, headers={"Authorization": f"Bearer {TOKEN}"},
                              timeout=httpx2.Timeout(30, read=60))
    # cache=None: always ask the endpoint, never the SDK's (2026-07-28) client-side response cache.
    client = Client(streamable_http_client(URL, http_client=http), mode=MODE, cache=None)
    seen = {}
    with anyio.fail_after(60):
        async with http, client:
            seen["protocol_version"] = client.protocol_version
            seen["tools"] = sorted(t.name for t in (await client.list_tools()).tools)
            echo = await call(client, "echo", {"text": "hello"})
            seen["echo"] = echo["text"] if echo.get("is_error") is False else echo
            seen["run_shell"] = await call(client, "run_shell", {"command": "id"})
            seen["delete_repo"] = await call(client, "delete_repo", {"name": "x"})
            again = await call(client, "echo", {"text": "again"})
            seen["echo_after"] = again["text"] if again.get("is_error") is False else again
            seen["lookup"] = await call(client, "lookup", {"key": "k"})
    return seen


if __name__ == "__main__":
    print(json.dumps(anyio.run(main)), flush=True)

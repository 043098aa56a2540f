"""An MCP server built with the official MCP Python SDK (mcp==2.3.0), the upstream behind the gateway
in the MCP integration tests.

Usage: python3 mcp_server.py PORT [--json-response] [--description-file PATH]

Streamable HTTP on http://127.0.0.1:PORT/mcp. It serves both protocol revisions on one endpoint:
2025-11-25 clients get sessions (Mcp-Session-Id), 2026-07-28 clients are stateless per request.
Responses are SSE unless --json-response is given (then application/json).
Tools: echo(text) -> text, add(a, b) -> a + b, delete_repo(name), run_shell(command), lookup(key).
With --description-file, lookup's description is re-read from PATH on every tools/list, so a test
can change the tool's definition while the server runs (a "rug pull").
Host/Origin checks (DNS-rebinding protection) are off: the gateway in front does them.
Prints "READY" on stdout once listening; exits on SIGTERM.
"""

import argparse
from pathlib import Path

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings

parser = argparse.ArgumentParser()
parser.add_argument("port", type=int)
parser.add_argument("--json-response", action="store_true")
parser.add_argument("--description-file", type=Path)
args = parser.parse_args()


class Server(MCPServer):
    async def list_tools(self):
        # MCPServer's tools/list handler calls this public method on every listing.
        tools = await super().list_tools()
        if args.description_file is None:
            return tools
        text = args.description_file.read_text()
        return [t.model_copy(update={"description": text}) if t.name == "lookup" else t for t in tools]


mcp = Server("portcullis-test-upstream")


@mcp.tool()
def echo(text: str) -> str:
    """Echo the text back."""
    return text


@mcp.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@mcp.tool()
def delete_repo(name: str) -> str:
    """Delete a repository (a fake: nothing is deleted)."""
    return f"deleted {name}"


@mcp.tool()
def run_shell(command: str) -> str:
    """Run a shell command (a fake: nothing is run)."""
    return f"ran {command}"


@mcp.tool()
def lookup(key: str) -> str:
    """Look a key up."""
    return f"value of {key}"


class ReadyServer(uvicorn.Server):
    async def startup(self, sockets=None):
        await super().startup(sockets)  # binds the port, or exits with status 3 if it cannot
        print("READY", flush=True)


if __name__ == "__main__":
    app = mcp.streamable_http_app(
        streamable_http_path="/mcp",
        json_response=args.json_response,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    # uvicorn handles SIGTERM/SIGINT; the short grace period ends open SSE streams promptly.
    config = uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="warning", timeout_graceful_shutdown=1)
    ReadyServer(config).run()

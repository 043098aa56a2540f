"""A WebSocket agent for the gateway's tests, on the `websockets` library's server.

    python3 ws_upstream.py PORT

Prints `ready` once listening, and `open PATH` for every socket it accepts. Echoes every message back. A text message that is a command
does something else:
  `headers?`        answers with JSON: the handshake's headers as the agent received them
  `close:CODE`      closes the socket with CODE
  `send:N:SIZE`     sends N binary messages of SIZE bytes
  `silent`          answers nothing (the socket then goes idle)
  `ping:DATA`       pings the client with DATA and, once the client's pong arrives, sends
                    `pong DATA`
The agent picks the first subprotocol the client offers (as the gateway forwards the offer).
"""
import asyncio
import json
import sys

from websockets.asyncio.server import serve


async def handler(ws):
    print("open", ws.request.path, flush=True)
    async for message in ws:
        if isinstance(message, str) and message == "headers?":
            await ws.send(json.dumps({k.lower(): v for k, v in ws.request.headers.raw_items()}))
        elif isinstance(message, str) and message.startswith("close:"):
            await ws.close(int(message.split(":")[1]))
            return
        elif isinstance(message, str) and message.startswith("send:"):
            _, n, size = message.split(":")
            for _ in range(int(n)):
                await ws.send(b"x" * int(size))
        elif isinstance(message, str) and message == "silent":
            continue
        elif isinstance(message, str) and message.startswith("ping:"):
            data = message.split(":", 1)[1].encode()
            waiter = await ws.ping(data)
            await asyncio.wait_for(waiter, 10)
            await ws.send(f"pong {data.decode()}")
        else:
            await ws.send(message)


def select_subprotocol(connection, subprotocols):
    return subprotocols[0] if subprotocols else None


async def main():
    port = int(sys.argv[1])
    async with serve(handler, "127.0.0.1", port, max_size=None, compression=None,
                     select_subprotocol=select_subprotocol, ping_interval=None):
        print("ready", flush=True)
        await asyncio.Future()


asyncio.run(main())

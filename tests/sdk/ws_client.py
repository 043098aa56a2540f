"""The `websockets` library's client through the gateway, as a Python agent client would use it.

    python3 ws_client.py URL CA_FILE TOKEN

Opens URL with the token in the Authorization header, sends a text and a 100 KiB binary message
and reads their echoes, then closes with 1000. Prints one JSON line with what it saw.
"""
import asyncio
import json
import ssl
import sys

from websockets.asyncio.client import connect


async def main():
    url, ca_file, token = sys.argv[1:4]
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.set_alpn_protocols(["http/1.1"])
    seen = {}
    async with connect(url, ssl=ctx, additional_headers={"authorization": f"Bearer {token}"},
                       subprotocols=["realtime-v1"]) as ws:
        seen["subprotocol"] = ws.subprotocol
        await ws.send("hello from the sdk")
        seen["text"] = await ws.recv()
        payload = bytes(range(256)) * 400
        await ws.send(payload)
        seen["binary_echoed"] = await ws.recv() == payload
        await ws.close(1000, "done")
        seen["close"] = ws.close_code
    print(json.dumps(seen))


asyncio.run(main())

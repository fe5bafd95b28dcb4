#!/usr/bin/env python3
"""Python `websockets` scripted echo server for fullduplex's interop_client.

Usage: .venv/bin/python interop/py_server.py PORT [--compress MODE]   (PORT 0 = pick one)

MODE (permessage-deflate): `off` (default), `takeover` (websockets' default server factory:
context takeover, server_max_window_bits=12, client_max_window_bits=12 when offered) or
`no-takeover` (answers server_no_context_takeover and client_no_context_takeover, 15-bit
windows). With compression websockets compresses every message it sends.

Listens on 127.0.0.1:PORT and prints `listening 127.0.0.1:PORT` when ready. Behaviour
(see interop/README.md):
  * after the handshake: print `EXTENSIONS <Sec-WebSocket-Extensions answered, or none>`
  * text/binary messages are echoed unchanged, except
  * text `fragment-me` -> one text message sent as 3 fragments "frag", "men", "ted"
  * text `ping-me`     -> ping with payload `server-ping`, wait (5 s) for the matching pong,
                          then send text `pong-ok` (or `pong-timeout` if it never came)
  * when the connection ends: print `STATS received=N compressed=M small_wire=W small_plain=P`
    (data messages received, how many of them had RSV1 set, and for the compressed ones under
    1 KiB their bytes on the wire and decompressed), then on a close frame `CLOSE <code> <reason>`;
    websockets echoes the close.
Exits after the first connection ends (0), or after 60 s in any case (exit 2).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

from py_common import MAX_SIZE, MODES, STATS, small_ratio

NAME = "py_server"
HARD_TIMEOUT = 60.0


def out(line: str) -> None:
    print(line, flush=True)


def server_options(mode: str) -> dict:
    if mode == "off":
        return {"compression": None}
    if mode == "takeover":
        return {"compression": "deflate"}  # websockets' default factory
    return {
        "compression": None,
        "extensions": [ServerPerMessageDeflateFactory(
            server_no_context_takeover=True, client_no_context_takeover=True)],
    }


async def handler(ws, done: asyncio.Event) -> None:
    received = 0
    out(f"EXTENSIONS {ws.response.headers.get('Sec-WebSocket-Extensions') or 'none'}")
    try:
        async for msg in ws:
            received += 1
            if msg == "fragment-me":
                await ws.send(["frag", "men", "ted"])
            elif msg == "ping-me":
                waiter = await ws.ping(b"server-ping")
                try:
                    await asyncio.wait_for(waiter, 5)
                except asyncio.TimeoutError:
                    out(f"{NAME}: no pong for server-ping within 5s")
                    await ws.send("pong-timeout")
                else:
                    await ws.send("pong-ok")
            else:
                await ws.send(msg)
    except ConnectionClosed:
        pass
    finally:
        # Without the extension nothing was decoded: every message arrived uncompressed.
        out(f"STATS received={received} compressed={STATS['compressed']} "
            f"small_wire={STATS['small_wire']} small_plain={STATS['small_plain']}")
        rcvd = ws.protocol.close_rcvd
        if rcvd is not None:
            out(f"CLOSE {rcvd.code} {rcvd.reason}")
        else:
            out(f"{NAME}: connection ended without a close frame from the client "
                f"(close_code={ws.close_code})")
        done.set()


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--compress", choices=MODES, default="off", help="permessage-deflate mode")
    args = ap.parse_args()
    done = asyncio.Event()
    async with serve(
        lambda ws: handler(ws, done),
        "127.0.0.1",
        args.port,
        **server_options(args.compress),
        max_size=MAX_SIZE,
        ping_interval=None,
        close_timeout=5,
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        out(f"listening 127.0.0.1:{port}")
        try:
            await asyncio.wait_for(done.wait(), HARD_TIMEOUT)
        except asyncio.TimeoutError:
            out(f"{NAME}: hard timeout of {HARD_TIMEOUT}s reached, exiting")
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

#!/usr/bin/env python3
"""Python `websockets` scripted echo server for fullduplex's interop_client.

Usage: .venv/bin/python interop/py_server.py PORT [--compress]   (PORT 0 = pick one)

Listens on 127.0.0.1:PORT and prints `listening 127.0.0.1:PORT` when ready. Behaviour
(see interop/README.md):
  * text/binary messages are echoed unchanged, except
  * text `fragment-me` -> one text message sent as 3 fragments "frag", "men", "ted"
  * text `ping-me`     -> ping with payload `server-ping`, wait (5 s) for the matching pong,
                          then send text `pong-ok` (or `pong-timeout` if it never came)
  * on a close frame: print `CLOSE <code> <reason>`; websockets echoes the close.
Exits after the first connection ends (0), or after 60 s in any case (exit 2).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

NAME = "py_server"
MAX_SIZE = 64 * 1024 * 1024
HARD_TIMEOUT = 60.0


def out(line: str) -> None:
    print(line, flush=True)


async def handler(ws, done: asyncio.Event) -> None:
    try:
        async for msg in ws:
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
    ap.add_argument("--compress", action="store_true",
                    help="TODO: allow permessage-deflate (off until fullduplex supports it)")
    args = ap.parse_args()
    done = asyncio.Event()
    async with serve(
        lambda ws: handler(ws, done),
        "127.0.0.1",
        args.port,
        compression="deflate" if args.compress else None,
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

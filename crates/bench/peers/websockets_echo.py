"""Echo server on Python `websockets` (asyncio, with its C speedups), for the benchmark runner.

    python websockets_echo.py 127.0.0.1:0

Prints `listening on HOST:PORT`, echoes every message, accepts permessage-deflate when the
client offers it (the library's default), and exits when stdin closes.
"""

import asyncio
import logging
import os
import sys
import threading

import websockets
from websockets.asyncio.server import serve


def exit_on_stdin_eof():
    def watch():
        while sys.stdin.buffer.read1(64):
            pass
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


async def echo(ws):
    async for message in ws:
        await ws.send(message)


async def main(addr):
    host, _, port = addr.rpartition(":")
    async with serve(echo, host, int(port), max_size=None, ping_interval=None) as server:
        sock = next(iter(server.sockets))
        h, p = sock.getsockname()[:2]
        print(f"listening on {h}:{p}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    import websockets.speedups  # noqa: F401  (fail loudly if the C extension is missing)

    # Clients that drop connections without a close frame are expected here.
    logging.getLogger("websockets").setLevel(logging.CRITICAL)
    exit_on_stdin_eof()
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:0"))

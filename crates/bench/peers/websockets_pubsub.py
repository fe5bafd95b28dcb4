"""Python `websockets` pub/sub server for the fan-out benchmark (`fullduplex-bench fanout`).

    python websockets_pubsub.py [--compression] HOST:PORT

The subset of the hub's protocol the generator uses: {"type":"subscribe","topic":T} is
answered {"type":"subscribed","topic":T}; {"type":"publish","topic":T,"data":D} sends
{"type":"message","topic":T,"data":D} to every subscriber of T with `websockets.broadcast`
(which writes to each connection without waiting for it). With --compression it accepts
permessage-deflate (the library's default extension; it compresses for each connection
separately); without, it offers none. asyncio with the C speedups. Prints
`listening on HOST:PORT`; exits when stdin closes.
"""

import asyncio
import json
import logging
import os
import sys
import threading

import websockets
from websockets.asyncio.server import serve

topics = {}


def exit_on_stdin_eof():
    def watch():
        while sys.stdin.buffer.read1(64):
            pass
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


async def handler(ws):
    mine = []
    try:
        async for raw in ws:
            if not isinstance(raw, str):
                continue
            try:
                request = json.loads(raw)
            except ValueError:
                continue
            topic = request.get("topic")
            if not isinstance(topic, str):
                continue
            kind = request.get("type")
            if kind == "subscribe":
                topics.setdefault(topic, set()).add(ws)
                mine.append(topic)
                await ws.send(json.dumps({"type": "subscribed", "topic": topic}, separators=(",", ":")))
            elif kind == "publish":
                subscribers = topics.get(topic)
                if subscribers:
                    text = json.dumps(
                        {"type": "message", "topic": topic, "data": request.get("data")},
                        separators=(",", ":"),
                    )
                    websockets.broadcast(subscribers, text)
    except websockets.ConnectionClosed:
        pass
    finally:
        for topic in mine:
            subscribers = topics.get(topic)
            if subscribers is not None:
                subscribers.discard(ws)
                if not subscribers:
                    del topics[topic]


async def main(addr, compression):
    host, _, port = addr.rpartition(":")
    async with serve(
        handler,
        host,
        int(port),
        max_size=1 << 20,
        ping_interval=None,
        compression="deflate" if compression else None,
        backlog=1024,
    ) as server:
        sock = next(iter(server.sockets))
        h, p = sock.getsockname()[:2]
        print(f"listening on {h}:{p}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    import websockets.speedups  # noqa: F401  (fail loudly if the C extension is missing)

    logging.getLogger("websockets").setLevel(logging.CRITICAL)
    exit_on_stdin_eof()
    args = sys.argv[1:]
    compression = "--compression" in args
    rest = [a for a in args if a != "--compression"]
    asyncio.run(main(rest[0] if rest else "127.0.0.1:0", compression))

#!/usr/bin/env python3
"""Python `websockets` client against fullduplex's echo_server.

Usage: .venv/bin/python interop/py_client.py ws://127.0.0.1:PORT [--compress MODE]

MODE (permessage-deflate): `off` (default), `takeover` (websockets' default offer: context
takeover both ways, client_max_window_bits offered bare) or `no-takeover` (offers
server_no_context_takeover and client_no_context_takeover).

Checks (see interop/README.md): negotiation matches MODE; text, non-ASCII text, binary 0..255,
a 16 MiB binary message (sha256 compared; size: --big-mib), a bulk
phase of 1,000 JSON-like text and 1,000 small binary messages (interleaved, pipelined, every
echo compared in order), a fragmented text message echoed as the concatenation, ping
"interop-ping" answered by a pong with the same payload, close(4000, "bye") answered by a
close frame with code 4000. With compression every data message the echo server sent must
have arrived compressed (RSV1), without it none.
Prints `py_client: ok` and exits 0, or prints the failed check and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys

from websockets.asyncio.client import connect
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

from py_common import MAX_SIZE, MODES, STATS, small_ratio

NAME = "py_client"
STEP_TIMEOUT = 30.0
TOTAL_TIMEOUT = 90.0
BULK = 1000


class CheckFailed(Exception):
    pass


def expect(cond: bool, check: str, detail: str) -> None:
    if not cond:
        raise CheckFailed(f"{check}: {detail}")


def show(v) -> str:
    r = repr(v)
    return r if len(r) <= 120 else r[:117] + "..."


WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
         "juliett", "kilo", "lima", "mike", "november", "oscar", "papa", "héllo", "✓", "naïve"]
USERS = ["alice", "bob", "carol", "dave", "eve"]


def bulk_messages() -> list:
    """1,000 JSON-like texts (~100-300 bytes) and 1,000 small binaries (1-200 bytes),
    interleaved; deterministic, varying content (an LCG)."""
    state = 12345

    def rnd() -> int:
        nonlocal state
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        return state >> 8

    out: list = []
    for i in range(BULK):
        words = " ".join(WORDS[rnd() % len(WORDS)] for _ in range(4 + rnd() % 24))
        tags = ",".join(f'"t{rnd() % 50}"' for _ in range(rnd() % 4))
        out.append(f'{{"seq":{i},"user":"{USERS[rnd() % len(USERS)]}","ts":{1700000000000 + i * 37},'
                   f'"text":"message number {i}: {words}","tags":[{tags}],"ok":{str(i % 3 == 0).lower()}}}')
        n = 1 + rnd() % 200
        if i % 2:  # repetitive
            out.append(bytes((i + k % 7) & 0xFF for k in range(n)))
        else:  # noise
            out.append(bytes(rnd() & 0xFF for _ in range(n)))
    return out


def big_message(mib: int) -> bytes:
    """`mib` MiB of word salad: a ~90 KB pseudo-random block of words and numbers, repeated.
    It compresses like prose (to about a third), and the repeats are farther apart than the
    32 KiB deflate window, so every block costs the compressor real work."""
    state = 4242

    def rnd() -> int:
        nonlocal state
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        return state >> 8

    block = " ".join(f"{WORDS[rnd() % len(WORDS)]}{rnd() % 1000}" for _ in range(10000)).encode()
    n = mib * 1024 * 1024
    return (block * (n // len(block) + 1))[:n]


async def recv(ws, check: str):
    try:
        return await asyncio.wait_for(ws.recv(), STEP_TIMEOUT)
    except asyncio.TimeoutError:
        raise CheckFailed(f"{check}: no message within {STEP_TIMEOUT}s") from None


async def roundtrip(ws, check: str, payload) -> None:
    await ws.send(payload)
    got = await recv(ws, check)
    expect(type(got) is type(payload), check,
           f"sent {type(payload).__name__}, got {type(got).__name__}")
    expect(got == payload, check, f"sent {show(payload)}, got {show(got)}")
    print(f"{NAME}: {check}: ok", flush=True)


def client_options(mode: str) -> dict:
    if mode == "off":
        return {"compression": None}
    if mode == "takeover":
        return {"compression": "deflate"}  # websockets' default factory (memLevel 5)
    return {
        "compression": None,
        "extensions": [ClientPerMessageDeflateFactory(
            server_no_context_takeover=True, client_no_context_takeover=True)],
    }


def check_negotiation(ws, mode: str) -> None:
    header = ws.response.headers.get("Sec-WebSocket-Extensions")
    print(f"{NAME}: mode {mode}, negotiated Sec-WebSocket-Extensions: {header}", flush=True)
    exts = ws.protocol.extensions
    if mode == "off":
        expect(not exts and header is None, "negotiation",
               f"compression off but the server answered {header!r}")
        return
    expect(len(exts) == 1 and exts[0].name == "permessage-deflate", "negotiation",
           f"permessage-deflate not negotiated (extensions {exts}, header {header!r})")
    if mode == "no-takeover":
        ext = exts[0]
        expect(ext.remote_no_context_takeover, "negotiation",
               f"server did not accept server_no_context_takeover ({header!r})")
        expect(ext.local_no_context_takeover, "negotiation",
               "client_no_context_takeover not in effect")


async def bulk(ws) -> None:
    check = "bulk 1000 text + 1000 binary"
    msgs = bulk_messages()
    sizes = [len(m.encode()) for m in msgs if isinstance(m, str)]

    async def sender():
        for m in msgs:
            await ws.send(m)

    task = asyncio.create_task(sender())
    try:
        for k, m in enumerate(msgs):
            got = await recv(ws, f"{check} (#{k})")
            expect(type(got) is type(m), check,
                   f"message #{k}: sent {type(m).__name__}, got {type(got).__name__}")
            expect(got == m, check, f"message #{k}: sent {show(m)}, got {show(got)}")
        await task
    finally:
        task.cancel()
    print(f"{NAME}: {check}: ok (texts {min(sizes)}-{max(sizes)} bytes)", flush=True)


async def session(url: str, mode: str, big_mib: int) -> None:
    async with connect(
        url,
        max_size=MAX_SIZE,
        ping_interval=None,
        close_timeout=10,
        open_timeout=10,
        **client_options(mode),
    ) as ws:
        check_negotiation(ws, mode)
        await roundtrip(ws, "text", "hello")
        await roundtrip(ws, "text non-ascii", "héllo ✓")
        await roundtrip(ws, "binary 0..255", bytes(range(256)))

        check = f"binary {big_mib} MiB"
        big = big_message(big_mib)
        await ws.send(big)
        got = await recv(ws, check)
        expect(isinstance(got, bytes), check, f"got {type(got).__name__}")
        expect(len(got) == len(big), check, f"got {len(got)} bytes, sent {len(big)}")
        expect(hashlib.sha256(got).digest() == hashlib.sha256(big).digest(), check, "sha256 mismatch")
        print(f"{NAME}: {check}: ok", flush=True)

        await bulk(ws)

        parts = ["frag", "men", "ted ✓"]
        await ws.send(parts)  # an iterable of str is sent as one fragmented text message
        got = await recv(ws, "fragmented text")
        expect(got == "".join(parts), "fragmented text",
               f"sent fragments {parts}, got {show(got)}")
        print(f"{NAME}: fragmented text: ok", flush=True)

        # The waiter completes only when a pong with this exact payload arrives.
        pong = await ws.ping(b"interop-ping")
        try:
            await asyncio.wait_for(pong, STEP_TIMEOUT)
        except asyncio.TimeoutError:
            raise CheckFailed(f"ping: no pong with payload b'interop-ping' within {STEP_TIMEOUT}s") from None
        print(f"{NAME}: ping/pong: ok", flush=True)

        await ws.close(4000, "bye")
        rcvd = ws.protocol.close_rcvd
        expect(rcvd is not None, "close", "no close frame received from the server")
        print(f"{NAME}: close: server replied code={rcvd.code} reason={rcvd.reason!r}", flush=True)
        expect(rcvd.code == 4000, "close", f"expected code 4000, got {rcvd.code}")

        # 3 + 1 + 2000 + 1 = 2005 data messages came back; with compression the echo server
        # compresses them all.
        print(f"STATS received={STATS['data']} compressed={STATS['compressed']} "
              f"small_wire={STATS['small_wire']} small_plain={STATS['small_plain']}", flush=True)
        if mode != "off":
            print(f"{NAME}: compressed echoes: {STATS['compressed']}/{STATS['data']}; {small_ratio()}",
                  flush=True)
            expect(STATS["data"] == 2005 and STATS["compressed"] == STATS["data"], "compressed echoes",
                   f"{STATS['compressed']} of {STATS['data']} data messages had RSV1 set "
                   f"(expected all 2005)")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--compress", choices=MODES, default="off", help="permessage-deflate mode")
    ap.add_argument("--big-mib", type=int, default=16, help="size of the big binary message")
    args = ap.parse_args()
    big_mib = max(1, args.big_mib)
    try:
        asyncio.run(asyncio.wait_for(session(args.url, args.compress, big_mib), TOTAL_TIMEOUT))
    except CheckFailed as e:
        print(f"{NAME}: FAILED {e}", flush=True)
        return 1
    except asyncio.TimeoutError:
        print(f"{NAME}: FAILED: session did not finish within {TOTAL_TIMEOUT}s", flush=True)
        return 1
    except Exception as e:  # connection errors, protocol errors
        print(f"{NAME}: FAILED: {type(e).__name__}: {e}", flush=True)
        return 1
    print(f"{NAME}: ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

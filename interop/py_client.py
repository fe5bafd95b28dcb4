#!/usr/bin/env python3
"""Python `websockets` client against fullduplex's echo_server.

Usage: .venv/bin/python interop/py_client.py ws://127.0.0.1:PORT [--compress]

Checks (see interop/README.md): text, non-ASCII text, binary 0..255, a 16 MiB binary
message (sha256 compared), a fragmented text message echoed as the concatenation,
ping "interop-ping" answered by a pong with the same payload, close(4000, "bye")
answered by a close frame with code 4000.
Prints `py_client: ok` and exits 0, or prints the failed check and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys

from websockets.asyncio.client import connect

NAME = "py_client"
MAX_SIZE = 64 * 1024 * 1024
STEP_TIMEOUT = 30.0
TOTAL_TIMEOUT = 90.0


class CheckFailed(Exception):
    pass


def expect(cond: bool, check: str, detail: str) -> None:
    if not cond:
        raise CheckFailed(f"{check}: {detail}")


def show(v) -> str:
    r = repr(v)
    return r if len(r) <= 120 else r[:117] + "..."


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


async def session(url: str, compress: bool) -> None:
    async with connect(
        url,
        # TODO(--compress): default off until fullduplex negotiates permessage-deflate.
        compression="deflate" if compress else None,
        max_size=MAX_SIZE,
        ping_interval=None,
        close_timeout=10,
        open_timeout=10,
    ) as ws:
        await roundtrip(ws, "text", "hello")
        await roundtrip(ws, "text non-ascii", "héllo ✓")
        await roundtrip(ws, "binary 0..255", bytes(range(256)))

        big = bytes(i * 7 % 251 for i in range(256)) * (16 * 1024 * 1024 // 256)
        assert len(big) == 16 * 1024 * 1024
        await ws.send(big)
        got = await recv(ws, "binary 16 MiB")
        expect(isinstance(got, bytes), "binary 16 MiB", f"got {type(got).__name__}")
        expect(len(got) == len(big), "binary 16 MiB", f"got {len(got)} bytes, sent {len(big)}")
        expect(hashlib.sha256(got).digest() == hashlib.sha256(big).digest(),
               "binary 16 MiB", "sha256 mismatch")
        print(f"{NAME}: binary 16 MiB: ok", flush=True)

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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--compress", action="store_true",
                    help="TODO: negotiate permessage-deflate (off until fullduplex supports it)")
    args = ap.parse_args()
    try:
        asyncio.run(asyncio.wait_for(session(args.url, args.compress), TOTAL_TIMEOUT))
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

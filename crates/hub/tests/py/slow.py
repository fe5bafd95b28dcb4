"""A stalled client is closed with 1013 "slow consumer" while three others receive everything;
it reconnects and recovers. The hub runs with --max-queued-bytes 262144, a large history and
no publish rate limit."""

import socket

from hubtest import *

PAYLOAD = "x" * 1000
LIMIT = 30_000  # messages at most (30 MB): far more than the kernel buffers hold


async def reader(ws, progress, index):
    """Reads forever (until cancelled), checking that offsets follow each other."""
    expected = 1
    while True:
        message = await recv(ws, timeout=30)
        check(message["type"] == "message" and message["offset"] == expected,
              f"fast client: expected offset {expected}: {str(message)[:200]}")
        progress[index] = expected
        expected += 1


async def main(addr):
    host, port = addr.rsplit(":", 1)
    # The stalled client: a small receive buffer and a one-message queue, and it never reads.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    # Without compression: its queue fills with the full frames.
    stalled = await connect(ws_url(addr), sock=sock, max_queue=1, ping_interval=None,
                            compression=None)
    await send(stalled, type="subscribe", topic="firehose")
    await expect(stalled, type="subscribed", offset=0)

    fast = [await connect(ws_url(addr), max_queue=None) for _ in range(3)]
    for ws in fast:
        await send(ws, type="subscribe", topic="firehose")
        await expect(ws, type="subscribed", offset=0)
    publisher = await connect(ws_url(addr))

    published = [0]
    progress = [0] * len(fast)
    readers = [asyncio.create_task(reader(ws, progress, i)) for i, ws in enumerate(fast)]
    while published[0] < LIMIT:
        for _ in range(50):
            published[0] += 1
            await send(publisher, type="publish", topic="firehose", data={"n": published[0], "pad": PAYLOAD})
        # The fast clients (all in this one Python process) stay within 300 messages, far
        # less than their socket buffers hold: they are never slow consumers.
        while min(progress) < published[0] - 300:
            await asyncio.sleep(0.002)
        if published[0] % 2000 == 0 and await asyncio.to_thread(metric, addr, "fdx_hub_slow_consumer_disconnects_total"):
            break
    check(metric(addr, "fdx_hub_slow_consumer_disconnects_total") == 1,
          f"no slow-consumer disconnect after {published[0]} messages")
    print(f"slow consumer closed after at most {published[0]} messages", flush=True)

    # The stalled client now reads: messages in order from offset 1, then the 1013 close.
    seen = []
    try:
        while True:
            message = await recv(stalled, timeout=10)
            if message["type"] == "message":
                seen.append(message["offset"])
    except asyncio.TimeoutError:
        fail("the stalled client was not closed")
    except Exception as error:
        rcvd = getattr(error, "rcvd", None)
        check(rcvd is not None and rcvd.code == 1013 and rcvd.reason == "slow consumer",
              f"expected close 1013 'slow consumer', got {error!r}")
    check(seen == list(range(1, len(seen) + 1)), "the stalled client's messages are in order")
    check(len(seen) < published[0], "the stalled client did not get everything")

    # The others receive every message, in order (checked by the readers).
    for _ in range(1000):
        if min(progress) == published[0] or any(task.done() for task in readers):
            break
        await asyncio.sleep(0.01)
    for task in readers:
        if task.done():
            task.result()  # raises what failed
        task.cancel()
    check(progress == [published[0]] * len(fast), f"fast clients: {progress} of {published[0]}")
    check(metric(addr, "fdx_hub_drops_total") >= 1, "the discarded queue counts as drops")

    # It reconnects and recovers what it missed from the history.
    async with connect(ws_url(addr), max_queue=None) as again:
        last = seen[-1] if seen else 0
        await send(again, type="subscribe", topic="firehose", since=last)
        sub = await expect(again, type="subscribed", offset=published[0], recovered=True)
        for offset in range(last + 1, published[0] + 1):
            await expect(again, type="message", offset=offset)

    for ws in fast + [publisher]:
        await ws.close()


run(main)

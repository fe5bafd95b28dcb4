"""Offsets, epochs and recovery after a reconnect. The hub keeps 5 messages per topic."""

from hubtest import *


async def collect(ws, topic, count):
    messages = []
    while len(messages) < count:
        message = await recv(ws)
        check(message["type"] == "message" and message["topic"] == topic, f"{message}")
        messages.append(message)
    return messages


async def main(addr):
    # A client receives 1..3, then disconnects.
    async with connect(ws_url(addr)) as ws:
        await send(ws, type="subscribe", topic="feed")
        sub = await expect(ws, type="subscribed", offset=0, recovered=False)
        epoch = sub["epoch"]
        for n in range(1, 4):
            publish(addr, "feed", {"n": n})
        got = await collect(ws, "feed", 3)
        check([m["offset"] for m in got] == [1, 2, 3], f"{got}")
        last = got[-1]["offset"]

    # 4..6 are published while it is away.
    for n in range(4, 7):
        status, answer = publish(addr, "feed", {"n": n})
        check(status == 200 and answer["offset"] == n, f"{answer}")

    # It comes back with since + epoch: 4..6 replayed in order, then live messages, no duplicate.
    async with connect(ws_url(addr)) as ws:
        await send(ws, type="subscribe", topic="feed", since=last, epoch=epoch)
        sub = await expect(ws, type="subscribed", topic="feed", offset=6, epoch=epoch, recovered=True)
        replayed = await collect(ws, "feed", 3)
        check([(m["offset"], m["data"]["n"]) for m in replayed] == [(4, 4), (5, 5), (6, 6)], f"{replayed}")
        publish(addr, "feed", {"n": 7})
        live = await collect(ws, "feed", 1)
        check(live[0]["offset"] == 7, f"{live}")
        await silent(ws)

    # Up to date: recovered, nothing replayed.
    async with connect(ws_url(addr)) as ws:
        await send(ws, type="subscribe", topic="feed", since=7, epoch=epoch)
        await expect(ws, type="subscribed", offset=7, recovered=True)
        await silent(ws)

    # Too far behind: the history (5 messages: 3..7) no longer holds 2; what it has is sent.
    async with connect(ws_url(addr)) as ws:
        await send(ws, type="subscribe", topic="feed", since=1, epoch=epoch)
        await expect(ws, type="subscribed", offset=7, recovered=False)
        got = await collect(ws, "feed", 5)
        check([m["offset"] for m in got] == [3, 4, 5, 6, 7], f"{got}")
        await silent(ws)

    # Another epoch (as after a restart): all of the history, not recovered.
    async with connect(ws_url(addr)) as ws:
        await send(ws, type="subscribe", topic="feed", since=6, epoch="an-old-epoch")
        await expect(ws, type="subscribed", offset=7, epoch=epoch, recovered=False)
        got = await collect(ws, "feed", 5)
        check([m["offset"] for m in got] == [3, 4, 5, 6, 7], f"{got}")

    # since 0 without epoch: the whole history of a fresh topic, recovered.
    for n in range(1, 3):
        publish(addr, "fresh", n)
    async with connect(ws_url(addr)) as ws:
        await send(ws, type="subscribe", topic="fresh", since=0)
        await expect(ws, type="subscribed", offset=2, recovered=True)
        got = await collect(ws, "fresh", 2)
        check([m["data"] for m in got] == [1, 2], f"{got}")

    # Reconnect while messages keep flowing: the union of before and after is gap-free.
    async with connect(ws_url(addr)) as ws:
        await send(ws, type="subscribe", topic="flow")
        sub = await expect(ws, type="subscribed", offset=0)
        epoch = sub["epoch"]
        stop = asyncio.Event()

        async def publisher():
            n = 0
            while not stop.is_set():
                n += 1
                await asyncio.to_thread(publish, addr, "flow", n)
                await asyncio.sleep(0.005)
            return n

        task = asyncio.create_task(publisher())
        first = await collect(ws, "flow", 3)
    seen = [m["offset"] for m in first]
    await asyncio.sleep(0.02)  # a few more are published while disconnected
    async with connect(ws_url(addr)) as ws:
        await send(ws, type="subscribe", topic="flow", since=seen[-1], epoch=epoch)
        sub = await expect(ws, type="subscribed", recovered=True)
        await asyncio.sleep(0.05)
        stop.set()
        total = await task
        while seen[-1] < total:
            seen.append((await collect(ws, "flow", 1))[0]["offset"])
    check(seen == list(range(1, total + 1)), f"gap or duplicate: {seen}")


run(main)

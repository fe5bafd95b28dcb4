"""Compressed fan-out: subscribers with permessage-deflate (websockets' default offer, and one
asking for a 9-bit server window and client_no_context_takeover) and without it receive the
same data; large messages cost a compressing subscriber fewer bytes; compressed requests are
read; recovery replays compressed frames."""

from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

from hubtest import *


def negotiated(ws):
    return ws.response.headers.get("Sec-WebSocket-Extensions", "")


def feed(n):
    """About 4 KiB of JSON, like a page of a feed."""
    return [{"id": i, "user": f"user{i % 7}", "text": "the quick brown fox " * 3, "n": n}
            for i in range(40)]


async def subscribe(ws, topic, **extra):
    await send(ws, type="subscribe", topic=topic, **extra)
    return await expect(ws, type="subscribed", topic=topic)


async def main(addr):
    plain = await connect(ws_url(addr), compression=None)
    deflated = await connect(ws_url(addr))
    small = await connect(ws_url(addr), compression=None, extensions=[
        ClientPerMessageDeflateFactory(server_max_window_bits=9, client_no_context_takeover=True)])
    check(negotiated(plain) == "", f"plain negotiated {negotiated(plain)!r}")
    for ws in (deflated, small):
        answer = negotiated(ws)
        check("permessage-deflate" in answer and "server_no_context_takeover" in answer
              and "client_no_context_takeover" in answer, f"answer {answer!r}")
    check("server_max_window_bits=9" in negotiated(small), negotiated(small))

    clients = [plain, deflated, small]
    for ws in clients:
        await subscribe(ws, "mixed")

    # Large, small and non-ASCII messages over HTTP; a large one over a compressing
    # WebSocket (its frame compressed by the client, with and without context takeover).
    sent = [feed(1), {"x": 1}, {"text": "héllo wörld ✓ " * 30}, feed(2)]
    for data in sent[:3]:
        status, _ = publish(addr, "mixed", data)
        check(status == 200, f"publish: {status}")
    got = {id(ws): [] for ws in clients}

    async def receive(count):
        for ws in clients:
            while len(got[id(ws)]) < count:
                message = await recv(ws)
                if message["type"] == "message":
                    got[id(ws)].append((message["offset"], message["data"]))

    await send(deflated, type="publish", topic="mixed", data=sent[3], id=1)
    await receive(4)
    # Then one from the client without context takeover (after the first: ordered).
    await send(small, type="publish", topic="mixed", data=feed(3), id=2)
    sent.append(feed(3))
    await receive(5)
    for ws in clients:
        check([d for _, d in got[id(ws)]] == sent, f"{negotiated(ws)!r}: data differs")
        offsets = [o for o, _ in got[id(ws)]]
        check(offsets == [1, 2, 3, 4, 5], f"offsets {offsets}")

    # Bytes on the wire: one large message to a compressing subscriber alone.
    await subscribe(deflated, "solo")
    before = metric(addr, "fdx_hub_bytes_out_total")
    body = feed(4)
    publish(addr, "solo", body)
    message = await expect(deflated, type="message", topic="solo")
    check(message["data"] == body, "solo data differs")
    used = metric(addr, "fdx_hub_bytes_out_total") - before
    size = len(json.dumps(body, separators=(",", ":")))
    check(used * 4 < size, f"{used} bytes on the wire for {size} bytes of JSON")
    print(f"compressed: {size} bytes of JSON in {used} bytes", flush=True)

    # Recovery replays compressed frames.
    last = message["offset"]
    epoch = message.get("epoch")
    await deflated.close()
    missed = [feed(10 + i) for i in range(3)]
    for data in missed:
        publish(addr, "solo", data)
    again = await connect(ws_url(addr))
    reply = await subscribe(again, "solo", since=last, **({"epoch": epoch} if epoch else {}))
    check(reply.get("recovered") is True, f"not recovered: {reply}")
    for data in missed:
        message = await expect(again, type="message", topic="solo")
        check(message["data"] == data, "replayed data differs")

    for ws in (plain, small, again):
        await ws.close()


run(main)

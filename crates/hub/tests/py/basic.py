"""Subscribe, publish over WebSocket and HTTP, unsubscribe, with two clients; the other routes."""

from hubtest import *


async def main(addr):
    status, headers, body = http(addr, "GET", "/")
    check(status == 200 and headers["content-type"].startswith("text/html"), f"/: {status} {headers}")
    check(b"<html" in body.lower(), "the page is HTML")
    check(http(addr, "GET", "/healthz")[0] == 200, "/healthz")
    status, headers, body = http(addr, "GET", "/metrics")
    check(status == 200 and headers["content-type"].startswith("text/plain"), f"/metrics {headers}")
    for name in ["fdx_hub_connections", "fdx_hub_subscriptions", "fdx_hub_messages_in_total",
                 "fdx_hub_messages_out_total", "fdx_hub_bytes_in_total", "fdx_hub_bytes_out_total",
                 "fdx_hub_drops_total", "fdx_hub_slow_consumer_disconnects_total",
                 "fdx_hub_handshake_failures_total"]:
        check(f"\n{name} " in "\n" + body.decode(), f"metric {name} missing")
    check(http(addr, "GET", "/nope")[0] == 404, "unknown path: 404")
    status, headers, _ = http(addr, "GET", "/ws")
    check(status == 426, f"plain GET /ws: {status}")

    async with connect(ws_url(addr)) as alice, connect(ws_url(addr)) as bob:
        # Compressed fan-out: each message compressed once, no context takeover either way.
        extensions = alice.response.headers.get("sec-websocket-extensions") or ""
        check(extensions.startswith("permessage-deflate") and "server_no_context_takeover" in extensions
              and "client_no_context_takeover" in extensions, f"compression answer {extensions!r}")
        await send(alice, type="subscribe", topic="room:1")
        sub = await expect(alice, type="subscribed", topic="room:1", offset=0, recovered=False)
        epoch = sub["epoch"]
        check(isinstance(epoch, str) and epoch, "an epoch")
        await send(bob, type="subscribe", topic="room:1")
        await expect(bob, type="subscribed", topic="room:1", offset=0, epoch=epoch)

        # WebSocket publish reaches both, the publisher included; any JSON value.
        values = [{"text": "hi", "n": [1, 2.5, None, True]}, "a string", 42, None, ["x"]]
        for value in values:
            await send(bob, type="publish", topic="room:1", data=value)
        for ws in (alice, bob):
            for offset, value in enumerate(values, start=1):
                await expect(ws, type="message", topic="room:1", offset=offset, data=value)

        # HTTP publish: 200 with the offset, delivered as data.
        status, answer = publish(addr, "room:1", {"from": "backend", "ünï": "çødé"})
        check(status == 200 and answer["offset"] == 6 and answer["epoch"] == epoch, f"publish: {answer}")
        for ws in (alice, bob):
            await expect(ws, type="message", offset=6, data={"from": "backend", "ünï": "çødé"})

        # Unsubscribe: bob stops receiving.
        await send(bob, type="unsubscribe", topic="room:1")
        await expect(bob, type="unsubscribed", topic="room:1")
        publish(addr, "room:1", "after")
        await expect(alice, type="message", offset=7, data="after")
        await silent(bob)

        # Other topics are separate.
        await send(bob, type="subscribe", topic="other")
        await expect(bob, type="subscribed", topic="other", offset=0)
        publish(addr, "other", 1)
        await expect(bob, type="message", topic="other", offset=1, data=1)
        await silent(alice)
        check(metric(addr, "fdx_hub_connections") == 2, "two connections")
        check(metric(addr, "fdx_hub_subscriptions") == 2, "two subscriptions")

    # Both closed: they no longer count (within a bounded wait for the hub to notice).
    for _ in range(100):
        if metric(addr, "fdx_hub_connections") == 0 and metric(addr, "fdx_hub_subscriptions") == 0:
            break
        await asyncio.sleep(0.02)
    check(metric(addr, "fdx_hub_connections") == 0, "closed connections still counted")
    check(metric(addr, "fdx_hub_subscriptions") == 0, "closed connections' subscriptions still counted")


run(main)

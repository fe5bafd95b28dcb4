"""Every error path: the error message arrives and the connection stays open.

The hub runs with --max-subscriptions 3, --publish-rate 5, --max-message-size 1024, the clock on.
"""

from hubtest import *


async def main(addr):
    async with connect(ws_url(addr)) as ws:
        await ws.send("not json")
        await expect_error(ws, "bad_json")
        await ws.send("[1, 2]")
        await expect_error(ws, "bad_json")
        await ws.send(b"\x00binary")
        await expect_error(ws, "bad_json")
        await ws.send('{"type": "subscribe", "topic": "a"')
        await expect_error(ws, "bad_json")
        await send(ws, topic="a")
        await expect_error(ws, "bad_request")
        await send(ws, type="subscribe")
        await expect_error(ws, "bad_request")
        await send(ws, type="subscribe", topic=5)
        await expect_error(ws, "bad_request")
        await send(ws, type="subscribe", topic="a", since="yesterday")
        await expect_error(ws, "bad_request")
        await send(ws, type="subscribe", topic="a", since=-1)
        await expect_error(ws, "bad_request")
        await send(ws, type="publish", topic="a")
        await expect_error(ws, "bad_request")
        await send(ws, type="dance", topic="a")
        await expect_error(ws, "unknown_type")
        for bad in ["", "a b", "a/b", "é", "x" * 129, "a*"]:
            await send(ws, type="subscribe", topic=bad)
            await expect_error(ws, "invalid_topic")
        await send(ws, type="publish", topic="x" * 129, data=1)
        await expect_error(ws, "invalid_topic")

        # The clock topic is the server's.
        await send(ws, type="publish", topic="clock", data="fake time")
        await expect_error(ws, "forbidden", topic="clock")

        # Subscriptions: duplicates, unknown unsubscribe, the per-connection limit.
        await send(ws, type="subscribe", topic="t1")
        await expect(ws, type="subscribed", topic="t1")
        await send(ws, type="subscribe", topic="t1")
        await expect_error(ws, "already_subscribed", topic="t1")
        await send(ws, type="unsubscribe", topic="never")
        await expect_error(ws, "not_subscribed", topic="never")
        await send(ws, type="subscribe", topic="t2")
        await expect(ws, type="subscribed", topic="t2")
        await send(ws, type="subscribe", topic="clock")
        await expect(ws, type="subscribed", topic="clock")
        await send(ws, type="subscribe", topic="t4")
        await expect_error(ws, "too_many_subscriptions", topic="t4")
        await send(ws, type="unsubscribe", topic="clock")
        # A clock message may already be queued before the unsubscribe answer.
        while (message := await recv(ws))["type"] == "message":
            check(message["topic"] == "clock", f"unexpected {message}")
        check(message == {"type": "unsubscribed", "topic": "clock"}, f"unsubscribed: {message}")

        # Rate limit: 5 per second, burst 5; the sixth in a row is dropped.
        for n in range(6):
            await send(ws, type="publish", topic="t1", data=n)
        seen, errors = [], 0
        for _ in range(6):
            message = await recv(ws)
            if message["type"] == "message":
                seen.append(message["data"])
            else:
                check(message["code"] == "rate_limited", f"{message}")
                errors += 1
        check(seen == [0, 1, 2, 3, 4] and errors == 1, f"rate limit: {seen} {errors}")
        check(metric(addr, "fdx_hub_drops_total") >= 1, "the drop is counted")

        # Still open and working after all that.
        await asyncio.sleep(0.3)
        await send(ws, type="publish", topic="t2", data="still here")
        await expect(ws, type="message", topic="t2", data="still here")

    # Too large a message closes with 1009 (message too big).
    async with connect(ws_url(addr)) as ws:
        await send(ws, type="publish", topic="t1", data="x" * 2000)
        try:
            await recv(ws)
            fail("a message over the limit was accepted")
        except Exception as error:
            code = getattr(getattr(error, "rcvd", None), "code", None)
            check(code == 1009, f"expected close 1009, got {error!r}")

    # HTTP publish errors.
    def post(path, body, headers=None):
        status, _, answer = http(addr, "POST", path, body, headers)
        return status, json.loads(answer) if answer else None
    status, answer = post("/publish/a%20b", "1")
    check(status == 400 and "invalid topic" in answer["error"], f"bad topic: {status} {answer}")
    status, answer = post("/publish/" + "x" * 129, "1")
    check(status == 400 and "invalid topic" in answer["error"], f"long topic: {status} {answer}")
    for body in ["", "{", '{"a":1} trailing', "nope"]:
        status, answer = post("/publish/t1", body)
        check(status == 400 and "JSON" in answer["error"], f"bad body {body!r}: {status} {answer}")
    status, answer = post("/publish/t1", '"' + "x" * 2000 + '"')
    check(status == 413, f"large body: {status}")
    status, answer = post("/publish/clock", '"fake"')
    check(status == 403, f"clock: {status}")
    status, _, _ = http(addr, "GET", "/publish/t1")
    check(status == 405, f"GET /publish: {status}")
    status, _, _ = http(addr, "POST", "/healthz", "x")
    check(status == 405, f"POST /healthz: {status}")
    check(metric(addr, "fdx_hub_client_errors_total") >= 20, "errors are counted")


run(main)

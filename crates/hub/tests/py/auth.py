"""Origin policy, HS256 tokens and the API key. The hub runs with --token-secret s3cret,
--api-key k3y and --allowed-origin https://app.example."""

import base64
import hashlib
import hmac
import time

from websockets.exceptions import InvalidStatus

from hubtest import *

SECRET = b"s3cret"


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(claims, secret=SECRET, alg="HS256"):
    head = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    signature = b64(hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{signature}"


async def refused(url, status, **kwargs):
    try:
        async with connect(url, **kwargs):
            pass
    except InvalidStatus as error:
        check(error.response.status_code == status, f"{url}: {error.response.status_code}, expected {status}")
        return
    fail(f"{url} {kwargs} was accepted")


async def main(addr):
    good = token({"sub": "ann", "exp": int(time.time()) + 600,
                  "subscribe": ["chat", "news.*"], "publish": ["chat"]})

    # No token, bad tokens: 401.
    await refused(ws_url(addr), 401)
    await refused(ws_url(addr, "?token=garbage"), 401)
    await refused(ws_url(addr, "?token=" + token({"subscribe": ["*"]}, secret=b"wrong")), 401)
    await refused(ws_url(addr, "?token=" + token({"subscribe": ["*"], "exp": 1000})), 401)
    await refused(ws_url(addr, "?token=" + token({"subscribe": ["*"]}, alg="none")), 401)

    # A token in the query, the cookie or the Authorization header.
    for url, headers in [(ws_url(addr, "?token=" + good), {}),
                         (ws_url(addr), {"Cookie": "theme=dark; token=" + good}),
                         (ws_url(addr), {"Authorization": "Bearer " + good})]:
        async with connect(url, additional_headers=headers) as ws:
            await send(ws, type="subscribe", topic="news.eu")
            await expect(ws, type="subscribed", topic="news.eu")
            await send(ws, type="subscribe", topic="secret")
            await expect_error(ws, "forbidden", topic="secret")
            await send(ws, type="publish", topic="news.eu", data=1)
            await expect_error(ws, "forbidden", topic="news.eu")
            await send(ws, type="subscribe", topic="chat")
            await expect(ws, type="subscribed", topic="chat")
            await send(ws, type="publish", topic="chat", data="hello")
            await expect(ws, type="message", topic="chat", data="hello")

    # Origin: the hub's own host and the allowed origin pass, others get 403.
    url = ws_url(addr, "?token=" + good)
    async with connect(url, origin=f"http://{addr}"):
        pass
    async with connect(url, origin="https://app.example"):
        pass
    await refused(url, 403, origin="https://evil.example")
    await refused(url, 403, origin="null")
    check(metric(addr, "fdx_hub_handshake_failures_total") >= 7, "refusals are counted")

    # HTTP publish needs the API key.
    status, answer = publish(addr, "chat", "no key")
    check(status == 401 and "API key" in answer["error"], f"no key: {status} {answer}")
    status, answer = publish(addr, "chat", "bad key", {"Authorization": "Bearer nope"})
    check(status == 401, f"bad key: {status}")
    status, answer = publish(addr, "chat", "good key", {"Authorization": "Bearer k3y"})
    check(status == 200 and answer["offset"] >= 1, f"good key: {status} {answer}")
    status, answer = publish(addr, "chat", "x", {"Authorization": "Bearer k3y",
                                                  "Origin": "https://evil.example"})
    check(status == 403, f"cross-site POST: {status}")


run(main)

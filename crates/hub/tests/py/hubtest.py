"""Helpers for the hub's Python client tests: JSON over websockets, HTTP with urllib."""

import asyncio
import json
import sys
import urllib.error
import urllib.request

from websockets.asyncio.client import connect

TIMEOUT = 5


def base(addr):
    return f"http://{addr}"


def ws_url(addr, query=""):
    return f"ws://{addr}/ws{query}"


async def send(ws, **message):
    await ws.send(json.dumps(message))


async def recv(ws, timeout=TIMEOUT):
    """The next JSON message (fails after `timeout` seconds)."""
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def expect(ws, **fields):
    """The next message, checked to have `fields`."""
    message = await recv(ws)
    for key, value in fields.items():
        check(message.get(key) == value, f"expected {key}={value!r} in {message}")
    return message


async def expect_error(ws, code, topic=None):
    message = await expect(ws, type="error", code=code)
    check(isinstance(message.get("message"), str) and message["message"], f"no reason: {message}")
    if topic is not None:
        check(message.get("topic") == topic, f"expected topic {topic!r}: {message}")
    return message


async def silent(ws, seconds=0.3):
    """Checks that nothing arrives for `seconds`."""
    try:
        message = await asyncio.wait_for(ws.recv(), seconds)
    except asyncio.TimeoutError:
        return
    fail(f"unexpected message: {message}")


def http(addr, method, path, body=None, headers=None):
    """(status, headers, body bytes) of one request; errors statuses are returned, not raised."""
    data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(base(addr) + path, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def publish(addr, topic, data, headers=None):
    """POST /publish/TOPIC with JSON `data`: (status, parsed answer)."""
    status, _, body = http(addr, "POST", f"/publish/{topic}", json.dumps(data),
                           {"content-type": "application/json", **(headers or {})})
    return status, json.loads(body)


def metric(addr, name):
    status, _, body = http(addr, "GET", "/metrics")
    check(status == 200, f"/metrics: {status}")
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return int(line.split()[1])
    fail(f"no metric {name}")


def check(condition, what):
    if not condition:
        fail(what)


def fail(what):
    print(f"FAIL: {what}", file=sys.stderr, flush=True)
    sys.exit(1)


def run(main):
    """Runs `main(addr)` with the address from argv, bounded in time."""
    addr = sys.argv[1]
    asyncio.run(asyncio.wait_for(main(addr), 60))
    print("ok", flush=True)



// Unit-level tests without a server: the backoff's bounds, and the client against a scripted
// WebSocket (attempt spacing, getToken, resubscription with since/epoch, deduplication).
import assert from "node:assert/strict";
import { test } from "node:test";
import { Client, DEFAULT_RECONNECT, backoffDelay } from "../dist/index.js";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test("backoffDelay stays within [base * (1 - jitter), base], base capped at maxDelay", () => {
  assert.deepEqual({ ...DEFAULT_RECONNECT }, { minDelay: 250, maxDelay: 10000, factor: 2, jitter: 0.5 });
  for (let attempt = 0; attempt < 40; attempt++) {
    const base = Math.min(10000, 250 * 2 ** attempt);
    for (const r of [0, 0.25, 0.5, 0.999999, 1]) {
      const delay = backoffDelay(attempt, {}, () => r);
      assert.ok(delay <= base && delay >= base * 0.5, `attempt ${attempt}, r ${r}: ${delay}`);
      assert.ok(delay <= 10000 && delay >= 125);
    }
    for (let i = 0; i < 50; i++) {
      const delay = backoffDelay(attempt);
      assert.ok(delay <= base && delay >= base * 0.5);
    }
  }
  assert.equal(backoffDelay(0, {}, () => 0), 250);
  assert.equal(backoffDelay(0, {}, () => 1), 125);
  assert.equal(backoffDelay(3, {}, () => 0), 2000);
  assert.equal(backoffDelay(6, {}, () => 0), 10000);
  assert.equal(backoffDelay(1e6, {}, () => 0), 10000);
  const custom = { minDelay: 100, maxDelay: 1000, factor: 3, jitter: 0 };
  assert.deepEqual([0, 1, 2, 3, 4].map((a) => backoffDelay(a, custom)), [100, 300, 900, 1000, 1000]);
  // Out-of-range settings are clamped, never negative or above maxDelay.
  assert.equal(backoffDelay(-5, { jitter: 0 }), 250);
  assert.equal(backoffDelay(2, { jitter: 7 }, () => 1), 0);
  assert.equal(backoffDelay(2, { jitter: -1 }, () => 1), 1000);
  assert.equal(backoffDelay(2, { minDelay: 500, maxDelay: 100, jitter: 0 }), 500);
  assert.equal(backoffDelay(5, { factor: 0.5, jitter: 0 }), 250);
});

/** A scripted WebSocket: the test opens, feeds and closes each instance. */
function fakeSockets() {
  const sockets = [];
  class FakeSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closedWith = null;
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      this.at = Date.now();
      sockets.push(this);
    }
    send(data) {
      if (this.readyState !== 1) throw new Error("not open");
      this.sent.push(JSON.parse(data));
    }
    close(code, reason) {
      this.closedWith = { code, reason };
      this.readyState = 3;
    }
    // test side
    open() {
      this.readyState = 1;
      this.onopen?.({});
    }
    receive(message) {
      this.onmessage?.({ data: JSON.stringify(message) });
    }
    fail(code = 1006, reason = "") {
      this.readyState = 3;
      this.onerror?.({});
      this.onclose?.({ code, reason });
    }
  }
  return { sockets, FakeSocket };
}

async function waitFor(predicate, what, ms = 3000) {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error("timed out waiting for " + what);
    await sleep(2);
  }
}

test("failed attempts are spaced by the backoff; getToken before each retry; close() stops", async () => {
  const { sockets, FakeSocket } = fakeSockets();
  let tokens = 0;
  const client = new Client("ws://fake/ws?x=1", {
    WebSocket: FakeSocket,
    token: "first",
    getToken: () => `t${++tokens}`,
    reconnect: { minDelay: 20, maxDelay: 100, factor: 2, jitter: 0 },
  });
  const closes = [];
  client.on("close", (info) => closes.push(info));
  const expected = [20, 40, 80, 100, 100];
  await waitFor(() => sockets.length === 1, "the first attempt");
  assert.equal(sockets[0].url, "ws://fake/ws?x=1&token=first");
  for (let i = 0; i < expected.length; i++) {
    sockets[i].fail();
    await waitFor(() => sockets.length === i + 2, `attempt ${i + 2}`);
    const gap = sockets[i + 1].at - sockets[i].at;
    assert.ok(gap >= expected[i] - 2 && gap < expected[i] + 500, `attempt ${i + 2} after ${gap} ms`);
    assert.equal(closes[i].reconnectIn, expected[i]);
    assert.equal(closes[i].wasOpen, false);
    assert.equal(sockets[i + 1].url, `ws://fake/ws?x=1&token=t${i + 1}`, "a fresh token per retry");
  }
  // A connection that opened resets the backoff, and a normal drop keeps the token.
  sockets.at(-1).open();
  assert.equal(client.state, "connected");
  const count = sockets.length;
  sockets.at(-1).fail(1001, "going away");
  await waitFor(() => sockets.length === count + 1, "the reconnect");
  assert.equal(closes.at(-1).reconnectIn, 20);
  assert.equal(sockets.at(-1).url, `ws://fake/ws?x=1&token=t${tokens}`);
  // 4001 (token expired): a new token first.
  sockets.at(-1).open();
  sockets.at(-1).fail(4001, "token expired");
  await waitFor(() => sockets.length === count + 2, "the reconnect after 4001");
  assert.equal(sockets.at(-1).url, `ws://fake/ws?x=1&token=t${tokens}`);
  assert.equal(tokens, expected.length + 1);
  sockets.at(-1).open();
  client.close();
  assert.deepEqual(sockets.at(-1).closedWith, { code: 1000, reason: "client closed" });
  assert.equal(client.state, "disconnected");
  await sleep(150);
  assert.equal(sockets.length, count + 2, "no attempt after close()");
});

test("resubscribes with since and epoch; drops what was delivered; takes gap positions", async () => {
  const { sockets, FakeSocket } = fakeSockets();
  const client = new Client("ws://fake/ws", { WebSocket: FakeSocket, reconnect: { minDelay: 1, jitter: 0 } });
  const states = [];
  client.on("state", (s) => states.push(s));
  const got = [];
  const gaps = [];
  const sub = client.subscribe("t", {
    onMessage: (data, meta) => got.push([meta.offset, data]),
    onGap: (g) => gaps.push(g),
  });
  await waitFor(() => sockets.length === 1, "the first attempt");
  let ws = sockets[0];
  ws.open();
  const first = ws.sent[0];
  assert.deepEqual(first, { type: "subscribe", topic: "t", id: first.id });
  ws.receive({ type: "message", topic: "t", offset: 1, data: "stale" }); // before subscribed: not ours
  ws.receive({ type: "subscribed", topic: "t", offset: 4, epoch: "E", recovered: false, id: first.id });
  ws.receive({ type: "message", topic: "t", offset: 5, data: "a" });
  ws.receive({ type: "message", topic: "t", offset: 5, data: "a again" });
  ws.receive({ type: "message", topic: "t", offset: 6, data: "b" });
  assert.deepEqual(got, [[5, "a"], [6, "b"]]);
  assert.deepEqual(gaps, [], "no since sent: recovered:false is no gap");

  ws.fail();
  await waitFor(() => sockets.length === 2, "the reconnect");
  const old = ws;
  ws = sockets[1];
  ws.open();
  const again = ws.sent[0];
  assert.deepEqual(again, { type: "subscribe", topic: "t", id: again.id, since: 6, epoch: "E" });
  assert.ok(again.id > first.id, "increasing ids");
  old.receive({ type: "message", topic: "t", offset: 7, data: "from the old socket" });
  ws.receive({ type: "subscribed", topic: "t", offset: 8, epoch: "E", recovered: true, id: again.id });
  ws.receive({ type: "message", topic: "t", offset: 6, data: "b" });
  ws.receive({ type: "message", topic: "t", offset: 7, data: "c" });
  ws.receive({ type: "message", topic: "t", offset: 8, data: "d" });
  ws.receive({ type: "gap", topic: "t", epoch: "E", offset: 12, reason: "history" });
  ws.receive({ type: "message", topic: "t", offset: 11, data: "covered by the gap" });
  ws.receive({ type: "message", topic: "t", offset: 13, data: "e" });
  assert.deepEqual(got.slice(2), [[7, "c"], [8, "d"], [13, "e"]]);
  assert.deepEqual(gaps, [{ topic: "t", epoch: "E", offset: 12, reason: "history" }]);
  assert.equal(sub.offset, 13);

  // An epoch change while disconnected: reported, and the new numbering is delivered.
  ws.fail();
  await waitFor(() => sockets.length === 3, "the second reconnect");
  ws = sockets[2];
  ws.open();
  const third = ws.sent[0];
  assert.equal(third.since, 13);
  ws.receive({ type: "subscribed", topic: "t", offset: 2, epoch: "F", recovered: false, id: third.id });
  ws.receive({ type: "message", topic: "t", offset: 1, data: "new 1" });
  ws.receive({ type: "message", topic: "t", offset: 2, data: "new 2" });
  assert.deepEqual(gaps.at(-1), { topic: "t", epoch: "F", offset: 2, reason: "epoch" });
  assert.deepEqual(got.slice(-2), [[1, "new 1"], [2, "new 2"]]);
  assert.equal(sub.epoch, "F");

  sub.unsubscribe();
  assert.deepEqual(ws.sent.at(-1), { type: "unsubscribe", topic: "t", id: ws.sent.at(-1).id });
  ws.receive({ type: "message", topic: "t", offset: 3, data: "after unsubscribe" });
  assert.equal(got.length, 7);
  client.close();
  assert.deepEqual(states, [
    "connecting", "connected", "disconnected", "connecting", "connected", "disconnected",
    "connecting", "connected", "disconnected",
  ]);
});

test("an attempt that does not open in time is abandoned and retried", async () => {
  const { sockets, FakeSocket } = fakeSockets();
  const client = new Client("ws://fake/ws", {
    WebSocket: FakeSocket,
    connectTimeoutMs: 50,
    reconnect: { minDelay: 10, jitter: 0 },
  });
  await waitFor(() => sockets.length === 2, "a second attempt", 1000);
  assert.ok(sockets[0].closedWith, "the first attempt was closed");
  sockets[1].open();
  assert.equal(client.state, "connected");
  client.close();
});

test("a missing WebSocket implementation is reported", async () => {
  const client = new Client("ws://fake/ws", { WebSocket: undefined });
  const errors = [];
  client.on("error", (e) => errors.push(e));
  await sleep(10);
  if (typeof globalThis.WebSocket === "undefined") {
    assert.equal(errors[0]?.code, "no_websocket");
    assert.equal(client.state, "disconnected");
  }
  client.close();
});

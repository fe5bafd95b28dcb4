// Dropped connections (a TCP proxy between the client and `fdx serve` cuts them): reconnect,
// recovery with `since`, every message exactly once and in order, gaps beyond the history.
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import { Client } from "../dist/index.js";
import {
  WebSocket,
  httpPublish,
  sleep,
  startProxy,
  startServer,
  waitFor,
  waitForState,
  within,
} from "../testing/harness.mjs";

const cleanup = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

async function setup(serverArgs = []) {
  const server = await startServer(serverArgs);
  cleanup.push(() => server.stop());
  const proxy = await startProxy(server.addr);
  cleanup.push(() => proxy.stop().catch(() => {}));
  return { server, proxy };
}

function makeClient(url, options = {}) {
  const client = new Client(url, {
    WebSocket,
    reconnect: { minDelay: 50, maxDelay: 400 },
    requestTimeoutMs: 5_000,
    ...options,
  });
  cleanup.push(() => client.close());
  return client;
}

test("connections dropped mid-stream: every message once, in order, after each reconnect", async () => {
  // A history long enough for the whole run: recovery must be complete each time.
  const { server, proxy } = await setup(["--history-size", "1000"]);
  const client = makeClient(proxy.ws);
  const received = [];
  const gaps = [];
  const subscribed = [];
  client.subscribe("stream", {
    onMessage: (data, meta) => received.push({ data, offset: meta.offset }),
    onGap: (info) => gaps.push(info),
    onSubscribed: (info) => subscribed.push(info),
  });
  let closes = 0;
  client.on("close", () => closes++);
  await waitForState(client, "connected");
  await waitFor(() => subscribed.length === 1, "the first subscribed");

  // A publisher over HTTP (not through the proxy) keeps publishing while the proxy cuts the
  // client off: twice by destroying the connection (the proxy accepts again at once), once by
  // stopping to listen for a while (the reconnect attempts fail, then succeed).
  const total = 300;
  let published = 0;
  const publisher = (async () => {
    while (published < total) {
      const { offset } = await httpPublish(server.http, "stream", { n: published + 1 });
      assert.equal(offset, published + 1);
      published += 1;
      if (published % 10 === 0) await sleep(5);
    }
  })();
  const cutter = (async () => {
    await waitFor(() => published >= 40, "40 published", 20_000);
    proxy.drop();
    await waitFor(() => published >= 100, "100 published", 20_000);
    proxy.drop();
    await waitFor(() => published >= 150, "150 published", 20_000);
    await proxy.stop();
    await sleep(400);
    await proxy.start();
  })();
  await within(Promise.all([publisher, cutter]), 40_000, "publishing and cutting");
  await waitFor(() => received.length >= total, `${total} messages (have ${received.length})`, 20_000);
  await sleep(200);

  assert.equal(received.length, total, "each message exactly once");
  received.forEach((message, i) => {
    assert.equal(message.offset, i + 1, "in offset order");
    assert.deepEqual(message.data, { n: i + 1 });
  });
  assert.deepEqual(gaps, [], "nothing lost: recovery was complete each time");
  assert.ok(closes >= 3, `the connection was cut (${closes} closes)`);
  const resumed = subscribed.filter((s) => s.resumed);
  assert.ok(resumed.length >= 3, "resubscribed with since after each cut");
  assert.ok(resumed.every((s) => s.recovered), "every resubscription recovered");
  assert.ok(proxy.accepted >= 4);
});

test("a second client publishing through the SDK while the subscriber is cut off", async () => {
  const { server, proxy } = await setup();
  const subscriber = makeClient(proxy.ws);
  const publisher = makeClient(server.ws);
  const received = [];
  const sub = subscriber.subscribe("stream2", { onMessage: (data, meta) => received.push([meta.offset, data]) });
  await waitForState(subscriber, "connected");
  await waitFor(() => sub.offset !== null, "subscribed");
  const acks = [];
  for (let i = 1; i <= 60; i++) {
    if (i === 20) proxy.drop();
    if (i === 35) await proxy.stop();
    if (i === 50) await proxy.start();
    acks.push((await within(publisher.publish("stream2", i), 7_000, "publish ack")).offset);
  }
  assert.deepEqual(acks, Array.from({ length: 60 }, (_, i) => i + 1));
  await waitFor(() => received.length >= 60, "60 messages", 15_000);
  await sleep(200);
  assert.deepEqual(received, Array.from({ length: 60 }, (_, i) => [i + 1, i + 1]));
});

test("a gap beyond the history is reported through onGap, then what the history holds follows", async () => {
  const { server, proxy } = await setup(["--history-size", "5"]);
  const client = makeClient(proxy.ws);
  const received = [];
  const gaps = [];
  const sub = client.subscribe("gappy", {
    onMessage: (_data, meta) => received.push(meta.offset),
    onGap: (info) => gaps.push(info),
  });
  await waitForState(client, "connected");
  await waitFor(() => sub.offset !== null, "subscribed");
  for (let i = 0; i < 3; i++) await httpPublish(server.http, "gappy", i);
  await waitFor(() => received.length === 3, "the first 3");
  const epoch = sub.epoch;

  await proxy.stop();
  await waitForState(client, "disconnected");
  for (let i = 0; i < 20; i++) await httpPublish(server.http, "gappy", i);
  await proxy.start();
  await waitForState(client, "connected", 10_000);
  await waitFor(() => received.length === 8, "the messages the history still holds", 10_000);
  await sleep(200);

  assert.equal(gaps.length, 1, JSON.stringify(gaps));
  assert.deepEqual(gaps[0], { topic: "gappy", epoch, offset: 23, reason: "not_recovered" });
  // 4..18 are lost; the history's last 5 (19..23) are delivered, in order, once.
  assert.deepEqual(received, [1, 2, 3, 19, 20, 21, 22, 23]);
  assert.equal(sub.offset, 23);
  await httpPublish(server.http, "gappy", "live");
  await waitFor(() => received.length === 9, "a live message");
  assert.equal(received[8], 24);
});

test("a restarted server (new epoch) is reported as an epoch gap; its messages are delivered", async () => {
  const { server: first, proxy } = await setup();
  const client = makeClient(proxy.ws);
  const received = [];
  const gaps = [];
  const sub = client.subscribe("epochs", {
    onMessage: (_data, meta) => received.push(meta.offset),
    onGap: (info) => gaps.push(info),
  });
  await waitForState(client, "connected");
  await waitFor(() => sub.offset !== null, "subscribed");
  for (let i = 0; i < 5; i++) await httpPublish(first.http, "epochs", i);
  await waitFor(() => received.length === 5, "5 messages");
  const oldEpoch = sub.epoch;

  // Another server behind the same proxy port: the topic's numbering starts again.
  await proxy.stop();
  await first.stop();
  const second = await startServer();
  cleanup.push(() => second.stop());
  await httpPublish(second.http, "epochs", "x");
  await httpPublish(second.http, "epochs", "y");
  proxy.setTarget(second.addr);
  await proxy.start();
  await waitForState(client, "connected", 10_000);
  await waitFor(() => gaps.length === 1, "the epoch gap");
  await waitFor(() => received.length === 7, "the new epoch's messages");
  assert.equal(gaps[0].reason, "epoch");
  assert.notEqual(gaps[0].epoch, oldEpoch);
  assert.equal(gaps[0].offset, 2);
  assert.deepEqual(received, [1, 2, 3, 4, 5, 1, 2]);
  assert.equal(sub.epoch, gaps[0].epoch);
});

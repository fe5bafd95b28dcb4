// Subscribe, acknowledged publish, errors, unsubscribe and close against a real `fdx serve`.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Client, FdxError } from "../dist/index.js";
import { WebSocket, httpPublish, sleep, startServer, waitFor, waitForState, within } from "../testing/harness.mjs";

let server;
const clients = [];
const connect = (options = {}) => {
  const client = new Client(server.ws, { WebSocket, requestTimeoutMs: 5_000, ...options });
  clients.push(client);
  return client;
};

before(async () => {
  server = await startServer();
});
after(async () => {
  for (const client of clients) client.close();
  await server?.stop();
});

test("subscribe, then publish with an acknowledgement; the message arrives once", async () => {
  const client = connect();
  const states = [];
  client.on("state", (s) => states.push(s));
  const received = [];
  const subscribed = [];
  client.subscribe("basic.chat", {
    onMessage: (data, meta) => received.push({ data, meta }),
    onSubscribed: (info) => subscribed.push(info),
  });
  await waitForState(client, "connected");
  await waitFor(() => subscribed.length === 1, "subscribed");
  assert.equal(subscribed[0].offset, 0);
  assert.equal(subscribed[0].resumed, false);

  const ack = await within(client.publish("basic.chat", { text: "hi" }), 7_000, "publish ack");
  assert.equal(ack.offset, 1);
  assert.equal(typeof ack.epoch, "string");
  assert.equal(ack.epoch, subscribed[0].epoch);
  const second = await within(client.publish("basic.chat", [1, 2]), 7_000, "publish ack");
  assert.equal(second.offset, 2);

  await waitFor(() => received.length === 2, "both messages");
  assert.deepEqual(received, [
    { data: { text: "hi" }, meta: { topic: "basic.chat", offset: 1 } },
    { data: [1, 2], meta: { topic: "basic.chat", offset: 2 } },
  ]);
  // Messages published by others (HTTP) arrive too.
  const { offset } = await httpPublish(server.http, "basic.chat", "from http");
  assert.equal(offset, 3);
  await waitFor(() => received.length === 3, "the HTTP message");
  assert.deepEqual(received[2], { data: "from http", meta: { topic: "basic.chat", offset: 3 } });
  await sleep(100);
  assert.equal(received.length, 3);
  assert.deepEqual(states, ["connecting", "connected"]);
});

test("a refused publish rejects with the server's error code", async () => {
  const client = connect();
  await waitForState(client, "connected");
  await assert.rejects(
    within(client.publish("not a topic!", 1), 7_000, "publish error"),
    (error) => error instanceof FdxError && error.code === "invalid_topic",
  );
  // The connection stays usable.
  const ack = await within(client.publish("basic.after-error", 1), 7_000, "publish ack");
  assert.equal(ack.offset, 1);
  assert.equal(client.state, "connected");
});

test("a refused subscription calls onError and is dropped", async () => {
  const client = connect();
  const errors = [];
  const sub = client.subscribe("bad topic", { onError: (e) => errors.push(e) });
  await waitFor(() => errors.length === 1, "the subscription's error");
  assert.equal(errors[0].code, "invalid_topic");
  assert.equal(sub.active, false);
  // The topic can be subscribed again (it is no longer held by the client).
  assert.doesNotThrow(() => client.subscribe("bad topic", { onError: () => {} }).unsubscribe());
});

test("unsubscribe stops the callbacks; one subscription per topic", async () => {
  const client = connect();
  const received = [];
  const sub = client.subscribe("basic.unsub", { onMessage: (data) => received.push(data) });
  assert.throws(() => client.subscribe("basic.unsub"), /already subscribed/);
  await waitForState(client, "connected");
  await waitFor(() => sub.offset !== null, "subscribed");
  await httpPublish(server.http, "basic.unsub", 1);
  await waitFor(() => received.length === 1, "the first message");
  assert.equal(sub.offset, 1);
  sub.unsubscribe();
  assert.equal(sub.active, false);
  await httpPublish(server.http, "basic.unsub", 2);
  await sleep(200);
  assert.deepEqual(received, [1]);
  // Subscribing again works and starts at the latest offset.
  const again = [];
  client.subscribe("basic.unsub", { onMessage: (data) => again.push(data) });
  await waitFor(async () => {
    await httpPublish(server.http, "basic.unsub", "again");
    return again.length > 0;
  }, "a message on the new subscription");
  assert.equal(again[0], "again");
  assert.deepEqual(received, [1]);
});

test("close() closes with 1000 and stops reconnecting; what waits is rejected", async () => {
  const client = connect({ publishQueue: { timeoutMs: 60_000 } });
  const pending = client.publish("basic.close", 1); // queued: still connecting
  const closes = [];
  client.on("close", (info) => closes.push(info));
  client.close();
  await assert.rejects(pending, (e) => e instanceof FdxError && e.code === "closed");
  await assert.rejects(client.publish("basic.close", 2), (e) => e instanceof FdxError && e.code === "closed");
  assert.equal(client.state, "disconnected");
  await sleep(600);
  assert.equal(client.state, "disconnected");
  assert.ok(closes.every((c) => c.reconnectIn === null));
});

test("info() names the client and the transport (asked while connecting, answered once connected)", async () => {
  const client = connect();
  const asked = client.info(); // before the socket opens: sent once connected
  const info = await within(asked, 7_000, "info answer");
  assert.equal(info.transport, "http1");
  assert.equal(typeof info.client, "string");
  assert.ok(info.client.length > 0);
  assert.equal(info.user, null);
  const again = await within(client.info(), 7_000, "second info answer");
  assert.deepEqual(again, info);
});

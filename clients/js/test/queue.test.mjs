// Publishing while disconnected: the bounded queue, its timeout, the flush after the
// reconnect, and a publish whose answer was lost (never sent twice).
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import { Client, FdxError } from "../dist/index.js";
import { WebSocket, sleep, startProxy, startServer, waitFor, waitForState, within } from "../testing/harness.mjs";

const cleanup = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

async function setup(options = {}) {
  const server = await startServer();
  cleanup.push(() => server.stop());
  const proxy = await startProxy(server.addr);
  cleanup.push(() => proxy.stop().catch(() => {}));
  const client = new Client(proxy.ws, {
    WebSocket,
    reconnect: { minDelay: 50, maxDelay: 200 },
    requestTimeoutMs: 5_000,
    ...options,
  });
  cleanup.push(() => client.close());
  // An observer connected directly: sees what was really published.
  const observer = new Client(server.ws, { WebSocket });
  cleanup.push(() => observer.close());
  const seen = [];
  const sub = observer.subscribe("q", { onMessage: (data, meta) => seen.push([meta.offset, data]) });
  await waitForState(client, "connected");
  await waitFor(() => sub.offset !== null, "the observer's subscription");
  return { server, proxy, client, seen };
}

test("while disconnected: bounded queue (full rejects at once), each waits at most timeoutMs", async () => {
  const { proxy, client, seen } = await setup({ publishQueue: { max: 3, timeoutMs: 600 } });
  await proxy.stop();
  await waitForState(client, "disconnected");
  const started = Date.now();
  const queued = [1, 2, 3].map((n) => client.publish("q", n));
  const settled = queued.map((p) => p.then(() => "resolved", (e) => e));
  await assert.rejects(within(client.publish("q", 4), 100, "a full queue"), (e) => e instanceof FdxError && e.code === "queue_full");
  const results = await within(Promise.all(settled), 3_000, "the queue's timeouts");
  const waited = Date.now() - started;
  assert.ok(results.every((e) => e instanceof FdxError && e.code === "timeout"), String(results));
  assert.ok(waited >= 550 && waited < 2_000, `rejected after ${waited} ms`);
  // The queue is empty again: room for more, and nothing of the above is sent later.
  const later = client.publish("q", "later");
  await proxy.start();
  assert.equal((await within(later, 5_000, "the later publish")).offset, 1);
  await waitFor(() => seen.length === 1, "the observer's message");
  await sleep(200);
  assert.deepEqual(seen, [[1, "later"]]);
});

test("publishes queued while disconnected are sent once after the reconnect, in order", async () => {
  const { proxy, client, seen } = await setup({ publishQueue: { max: 10, timeoutMs: 10_000 } });
  await proxy.stop();
  await waitForState(client, "disconnected");
  const acks = [1, 2, 3, 4, 5].map((n) => client.publish("q", n));
  await sleep(300);
  await proxy.start();
  const results = await within(Promise.all(acks), 8_000, "the queued publishes");
  assert.deepEqual(results.map((r) => r.offset), [1, 2, 3, 4, 5]);
  await waitFor(() => seen.length === 5, "5 messages at the observer");
  await sleep(200);
  assert.deepEqual(seen, [1, 2, 3, 4, 5].map((n) => [n, n]));
});

test("a publish sent but not acknowledged before the drop is rejected and never sent again", async () => {
  const { proxy, client, seen } = await setup();
  // The server's answers stop reaching the client: the publish arrives, its answer does not.
  proxy.mute(true);
  const lost = client.publish("q", "once");
  const outcome = lost.then(() => "resolved", (e) => e);
  await waitFor(() => seen.length === 1, "the publish at the observer");
  proxy.drop();
  proxy.mute(false);
  const error = await within(outcome, 3_000, "the unacknowledged publish");
  assert.equal(error.code, "connection_lost");
  await waitForState(client, "connected");
  const next = await within(client.publish("q", "next"), 5_000, "a publish after the reconnect");
  assert.equal(next.offset, 2);
  await waitFor(() => seen.length === 2, "the second message");
  await sleep(300);
  assert.deepEqual(seen, [[1, "once"], [2, "next"]]);
});

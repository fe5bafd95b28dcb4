// Presence: two clients in a topic's presence, the list, join and leave callbacks.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Client } from "../dist/index.js";
import { WebSocket, nowSeconds, signToken, startServer, waitFor, waitForState } from "../testing/harness.mjs";

const SECRET = "presence-secret";
let server;
const clients = [];
const connect = (user) => {
  const token = signToken(SECRET, { sub: user, exp: nowSeconds() + 3600, subscribe: ["*"], publish: ["*"] });
  const client = new Client(server.ws, { WebSocket, token, requestTimeoutMs: 5_000 });
  clients.push(client);
  return client;
};

before(async () => {
  server = await startServer(["--token-secret", SECRET]);
});
after(async () => {
  for (const client of clients) client.close();
  await server?.stop();
});

test("two clients: presence lists both, join and leave reach the other", async () => {
  const ann = connect("ann");
  const bob = connect("bob");
  const annEvents = [];
  const annSub = ann.subscribe("room", {
    presence: true,
    onJoin: (c) => annEvents.push(["join", c.user, c.client]),
    onLeave: (c) => annEvents.push(["leave", c.user, c.client]),
  });
  await waitForState(ann, "connected");
  await waitFor(() => annEvents.length === 1, "ann's own join");
  assert.equal(annEvents[0][1], "ann");
  assert.equal(typeof annEvents[0][2], "string");

  const bobEvents = [];
  bob.subscribe("room", { presence: true, onJoin: (c) => bobEvents.push(["join", c.user]) });
  await waitFor(() => annEvents.length === 2, "bob's join seen by ann");
  assert.deepEqual(annEvents[1].slice(0, 2), ["join", "bob"]);
  await waitFor(() => bobEvents.length === 1, "bob's own join");

  const listed = await ann.presence("room");
  assert.deepEqual(listed.map((c) => c.user).sort(), ["ann", "bob"]);
  assert.ok(listed.every((c) => typeof c.client === "string"));
  assert.deepEqual((await bob.presence("room")).map((c) => c.client).sort(), listed.map((c) => c.client).sort());
  const bobId = annEvents[1][2];

  bob.close();
  await waitFor(() => annEvents.length === 3, "bob's leave seen by ann");
  assert.deepEqual(annEvents[2], ["leave", "bob", bobId]);
  assert.deepEqual((await ann.presence("room")).map((c) => c.user), ["ann"]);

  // A subscription without presence is not listed; unsubscribing leaves the presence.
  const carl = connect("carl");
  carl.subscribe("room");
  await waitForState(carl, "connected");
  assert.deepEqual((await carl.presence("room")).map((c) => c.user), ["ann"]);
  annSub.unsubscribe();
  await waitFor(async () => (await carl.presence("room")).length === 0, "ann gone from presence");
  assert.equal(annEvents.length, 3, "no callbacks after unsubscribe");
});

test("presence() asked while connecting is sent once connected", async () => {
  const dana = connect("dana");
  const listing = dana.presence("empty.room"); // still connecting
  assert.equal(dana.state, "connecting");
  assert.deepEqual(await listing, []);
});

// Tokens (`fdx serve --token-secret`): refresh before expiry, a new token after 4001 and after
// a refused handshake.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Client } from "../dist/index.js";
import {
  WebSocket,
  httpPublish,
  nowSeconds,
  signToken,
  sleep,
  startServer,
  waitFor,
  waitForState,
} from "../testing/harness.mjs";

const SECRET = "sdk-test-secret";
const token = (sub, exp) => signToken(SECRET, { sub, exp, subscribe: ["*"], publish: ["*"] });
let server;
const clients = [];
const connect = (options) => {
  const client = new Client(server.ws, { WebSocket, reconnect: { minDelay: 50, maxDelay: 400 }, ...options });
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

test("the server asks for a refresh; getToken's token keeps the connection past the first exp", async () => {
  const firstExp = nowSeconds() + 3;
  let calls = 0;
  const client = connect({
    token: token("ann", firstExp),
    getToken: async () => {
      calls += 1;
      return token("ann", nowSeconds() + 3600);
    },
  });
  const closes = [];
  const errors = [];
  client.on("close", (info) => closes.push(info));
  client.on("error", (error) => errors.push(error));
  const received = [];
  client.subscribe("tok.chat", { onMessage: (data) => received.push(data) });
  await waitForState(client, "connected");
  await waitFor(() => calls >= 1, 'getToken after {"type":"refresh"}', 8_000);
  // Past the first token's expiry (the server closes unrefreshed connections with 4001 then).
  await waitFor(() => nowSeconds() > firstExp + 1, "the first token's expiry", 8_000);
  await sleep(300);
  assert.equal(client.state, "connected");
  assert.deepEqual(closes, [], "the connection stayed open");
  assert.deepEqual(errors, []);
  await httpPublish(server.http, "tok.chat", "after exp");
  await waitFor(() => received.length === 1, "a message after the first expiry");
  assert.equal(calls, 1);
});

test("a refused refresh ends in 4001; getToken is called before reconnecting, the subscription resumes", async () => {
  const firstExp = nowSeconds() + 2;
  const tokens = [token("bob", nowSeconds() + 3600), token("ann", nowSeconds() + 3600)];
  let calls = 0;
  const client = connect({
    token: token("ann", firstExp),
    getToken: () => tokens[Math.min(calls++, 1)], // bob: refused (another user), then ann
  });
  const closes = [];
  const errors = [];
  client.on("close", (info) => closes.push(info));
  client.on("error", (error) => errors.push(error));
  const received = [];
  const sub = client.subscribe("tok.resume", { onMessage: (_data, meta) => received.push(meta.offset) });
  await waitForState(client, "connected");
  await waitFor(() => sub.offset !== null, "subscribed");
  await httpPublish(server.http, "tok.resume", 1);
  await waitFor(() => errors.some((e) => e.code === "bad_token"), "bad_token for the refused refresh", 8_000);
  await waitFor(() => closes.length >= 1, "the close at expiry", 8_000);
  assert.equal(closes[0].code, 4001);
  await httpPublish(server.http, "tok.resume", 2);
  await waitFor(() => calls === 2 && client.state === "connected", "a new token and a reconnect", 8_000);
  await waitFor(() => received.length === 2, "the message published while disconnected");
  assert.deepEqual(received, [1, 2]);
});

test("an expired token is refused at the handshake; getToken gives one that works", async () => {
  let calls = 0;
  const client = connect({
    token: token("ann", nowSeconds() - 10),
    getToken: async () => {
      calls += 1;
      return token("ann", nowSeconds() + 3600);
    },
  });
  const closes = [];
  client.on("close", (info) => closes.push(info));
  await waitForState(client, "connected", 8_000);
  assert.equal(calls, 1);
  assert.equal(closes.length, 1);
  assert.equal(closes[0].wasOpen, false);
});

test("without a token but with getToken, the first connection asks for one", async () => {
  let calls = 0;
  const client = connect({ getToken: () => (calls++, token("ann", nowSeconds() + 3600)) });
  await waitForState(client, "connected", 8_000);
  assert.equal(calls, 1);
  const who = await client.presence("tok.nobody");
  assert.deepEqual(who, []);
});

// The demo page over HTTPS in headless Chromium, with its WebSocket on HTTP/2 (RFC 8441).
//
//   node interop/browser_h2.mjs --hub https://127.0.0.1:PORT [--out DIR]
//
// The hub runs with a self-signed certificate (`fdx serve --tls-cert ... --tls-key ...`), which
// this browser context is told to accept. Chromium loads the page over HTTP/2 and, since the
// origin's HTTP/2 connection announces SETTINGS_ENABLE_CONNECT_PROTOCOL, opens the page's
// WebSocket as an extended CONNECT stream on it. Checks: the page connects and shows the server
// clock; the server reports the page's transport as `h2` (the `info` answer the page shows, and
// `/metrics`); the page is disconnected by the server API and three messages are published
// while it is away; after the SDK reconnects (again over h2) the page shows each of them exactly
// once, in order. A screenshot goes to DIR. Exit status 0 when everything held.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => {
    if (arg.startsWith("--")) pairs.push([arg.slice(2), all[i + 1]]);
    return pairs;
  }, []),
);
const hub = args.hub;
const outDir = args.out || "target/browser";
const chromiumPath = args.chromium || process.env.CHROMIUM || "/usr/bin/chromium";
if (!hub || !hub.startsWith("https://")) {
  console.error("usage: node browser_h2.mjs --hub https://127.0.0.1:PORT [--out DIR]");
  process.exit(2);
}
// Node's own requests (publish, metrics) to the self-signed hub.
process.env.NODE_TLS_REJECT_UNAUTHORIZED = "0";
const room = "h2test";
const topic = "chat." + room;
const deadline = setTimeout(() => fail("timed out after 90 s"), 90_000);
let browser;

function fail(message) {
  console.error("browser_h2: FAIL: " + message);
  if (browser) browser.close().catch(() => {});
  process.exit(1);
}

function step(message) {
  console.log("browser_h2: " + message);
}

async function request(method, path, body) {
  const response = await fetch(`${hub}${path}`, {
    method,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (response.status !== 200) fail(`${method} ${path} answered ${response.status}: ${text}`);
  return text;
}

async function metric(transport) {
  const text = await request("GET", "/metrics");
  const line = text.split("\n").find((l) => l.startsWith(`fdx_hub_transport_connections{transport="${transport}"} `));
  if (!line) fail(`no transport metric for ${transport}`);
  return Number(line.split(" ")[1]);
}

const texts = (page) => page.$$eval("#messages li:not(.notice) .text", (nodes) => nodes.map((n) => n.textContent));

async function waitFor(page, what, fn, arg) {
  try {
    await page.waitForFunction(fn, arg, { timeout: 20_000 });
  } catch {
    fail(`${what} did not happen; the page shows ${JSON.stringify(await texts(page))}`);
  }
}

mkdirSync(outDir, { recursive: true });
browser = await chromium.launch({
  executablePath: chromiumPath,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
try {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1100, height: 720 } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  await page.goto(`${hub}/?room=${room}`);
  await waitFor(page, "connecting", () => window.fdxDemo && window.fdxDemo.state === "connected");
  await waitFor(page, "the transport answer", () => window.fdxDemo.transport !== undefined);
  const transport = await page.evaluate(() => window.fdxDemo.transport);
  if (transport !== "h2") fail(`the page's WebSocket runs over ${transport}, not h2`);
  const shown = await page.textContent("#transport");
  if (shown !== "HTTP/2 stream") fail(`the page shows transport ${JSON.stringify(shown)}`);
  // Chromium offers permessage-deflate; the hub answers without context takeover, and the
  // messages below arrive compressed once for all subscribers.
  const extensions = await page.evaluate(() => window.fdxDemo.client.socket && window.fdxDemo.client.socket.extensions);
  if (!/permessage-deflate/.test(extensions || "") || !/server_no_context_takeover/.test(extensions)) {
    fail(`the page's WebSocket negotiated ${JSON.stringify(extensions)}, not compression`);
  }
  const h2 = await metric("h2");
  if (h2 !== 1) fail(`/metrics counts ${h2} h2 connections, not 1`);
  await waitFor(page, "the clock", () => /\d/.test(document.getElementById("clock").textContent));
  step("the page came over HTTPS and its WebSocket runs on an HTTP/2 stream (the page and /metrics say h2)");

  // Long enough to be compressed (over the 128-byte threshold).
  const long = "a longer message, compressed once for every subscriber that negotiated it ".repeat(3);
  await request("POST", `/publish/${topic}`, { name: "backend", text: long });
  await waitFor(page, "the long message", (t) => [...document.querySelectorAll("#messages li .text")].some((n) => n.textContent === t), long);
  await request("POST", `/publish/${topic}`, { name: "backend", text: "before" });
  await waitFor(page, "the first message", (t) => [...document.querySelectorAll("#messages li .text")].some((n) => n.textContent === t), "before");

  // Cut the page off (server API, by its client id), publish while it is away. The SDK's
  // first retry is made to wait 3 s (its private backoff options), and the messages are
  // published only once the page has seen the close, so that they surely come while the page
  // is disconnected.
  const { client } = await page.evaluate(() => {
    const sdk = window.fdxDemo.client;
    sdk.reconnectOptions = { ...sdk.reconnectOptions, minDelay: 3000, jitter: 0 };
    return sdk.info();
  });
  await request("POST", "/api/disconnect", { client, code: 4002, reason: "test" });
  await waitFor(page, "the disconnect", () => window.fdxDemo.state !== "connected");
  const missed = ["missed one", "missed two", "missed three"];
  for (const text of missed) await request("POST", `/publish/${topic}`, { name: "backend", text });
  const stateAfter = await page.evaluate(() => window.fdxDemo.state);
  if (stateAfter === "connected") {
    // Reconnected before the publishes ended: the messages came live, not by recovery.
    fail("the page reconnected before the messages were published; the run shows no recovery");
  }
  await waitFor(page, "the reconnect", () => window.fdxDemo.state === "connected" && window.fdxDemo.reconnects >= 1);
  for (const text of missed) {
    await waitFor(page, `the missed message ${text}`, (t) => [...document.querySelectorAll("#messages li .text")].some((n) => n.textContent === t), text);
  }
  const all = await texts(page);
  const expected = [long, "before", ...missed];
  const got = all.filter((t) => expected.includes(t));
  if (JSON.stringify(got) !== JSON.stringify(expected)) fail(`the page shows ${JSON.stringify(got)}, expected ${JSON.stringify(expected)}`);
  await page.evaluate(() => { window.fdxDemo.transport = undefined; });
  const again = await page.evaluate(() => window.fdxDemo.client.info());
  if (again.transport !== "h2") fail(`after the reconnect the WebSocket runs over ${again.transport}`);
  step("disconnected by the server, three messages published meanwhile; after the reconnect (h2 again) each shows once, in order");

  await page.screenshot({ path: join(outDir, "demo-h2.png") });
  if (errors.length) fail("page errors: " + errors.join("; "));
  step("ok");
} catch (error) {
  fail(String(error && error.stack || error));
} finally {
  clearTimeout(deadline);
  await browser.close();
}

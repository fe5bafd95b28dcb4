// The push server's Server-Sent Events fallback in headless Chromium (playwright-core +
// Debian's chromium): a real `EventSource`, its automatic reconnect with `Last-Event-ID`, and a
// new stream resumed with `since`.
//
//   node interop/browser_sse.mjs --hub http://127.0.0.1:PORT [--token JWT] [--user NAME]
//
// With --token the page carries the token as the `token` cookie, and --user (the token's `sub`,
// default "browser") is the user the server API disconnects.
// The page is opened on the hub's own origin (`/healthz`), so the stream is same-origin. Steps:
// 1. an EventSource on two topics gets `subscribed` for both and a message published over HTTP;
// 2. the server API disconnects the stream (`POST /api/disconnect`); while the browser waits to
//    reconnect (`retry:` is at least 1 s), three messages are published; the EventSource
//    reconnects by itself, sending `Last-Event-ID`, and gets `subscribed` with
//    `recovered: true` and exactly the three missed messages, in order, then live ones;
// 3. the page closes the EventSource, a message is published, and a new EventSource with
//    `since=<lastEventId>` gets it.
// Exit status 0 and "browser_sse: ok" when everything held.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => {
    if (arg.startsWith("--")) pairs.push([arg.slice(2), all[i + 1]]);
    return pairs;
  }, []),
);
const hub = args.hub;
const chromiumPath = args.chromium || process.env.CHROMIUM || "/usr/bin/chromium";
if (!hub) {
  console.error("usage: node browser_sse.mjs --hub http://127.0.0.1:PORT");
  process.exit(2);
}
const topics = ["bsse.a", "bsse.b"];
let browser;
const profile = mkdtempSync(join(tmpdir(), "fdx-sse-chromium-"));

async function finish(code, message) {
  if (message) console.error("browser_sse: FAIL: " + message);
  try {
    if (browser) await browser.close();
  } catch {}
  rmSync(profile, { recursive: true, force: true });
  process.exit(code);
}
const deadline = setTimeout(() => finish(1, "timed out after 90 s"), 90_000);

function step(message) {
  console.log("browser_sse: " + message);
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function post(path, body) {
  const response = await fetch(hub + path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  check(response.ok, `POST ${path}: ${response.status} ${text}`);
  return JSON.parse(text);
}

async function waitFor(page, what, predicate, arg) {
  try {
    await page.waitForFunction(predicate, arg, { timeout: 15_000, polling: 20 });
  } catch (error) {
    const seen = await page.evaluate(() => JSON.stringify(window.sse));
    throw new Error(`waiting for ${what}: ${error.message}\nseen: ${seen}`);
  }
}

try {
  const launched = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  browser = launched;
  const page = launched.pages()[0] || (await launched.newPage());
  page.on("console", (message) => step("page: " + message.text()));
  if (args.token) {
    // The stream's token travels as the `token` cookie, which an EventSource sends itself.
    await launched.addCookies([{ name: "token", value: args.token, url: hub }]);
  }
  await page.goto(hub + "/healthz");

  // 1. A stream on two topics.
  await page.evaluate((topics) => {
    window.sse = { events: [], closes: [], opens: 0, errors: 0 };
    window.openStream = (query) => {
      const source = new EventSource("/sse?" + query);
      source.onopen = () => window.sse.opens++;
      source.onerror = () => window.sse.errors++;
      source.onmessage = (event) =>
        window.sse.events.push({ id: event.lastEventId, ...JSON.parse(event.data) });
      source.addEventListener("close", (event) => window.sse.closes.push(JSON.parse(event.data)));
      window.source = source;
    };
    window.openStream(topics.map((t) => "topic=" + encodeURIComponent(t)).join("&"));
  }, topics);
  await waitFor(page, "two subscribed events", () =>
    window.sse.events.filter((e) => e.type === "subscribed").length === 2,
  );
  await post("/publish/bsse.a", { n: 1 });
  await waitFor(page, "message 1", () => window.sse.events.some((e) => e.type === "message"));
  step("stream open, message 1 received");

  // 2. Disconnected by the server; published to while away; the EventSource reconnects.
  const { nodes } = await post("/api/disconnect", { user: args.user || "browser", reason: "test" });
  check(nodes === 1, "disconnect reached " + nodes + " nodes");
  await waitFor(page, "the close event", () => window.sse.closes.length === 1);
  const before = await page.evaluate(() => window.sse.events.length);
  await post("/publish/bsse.a", { n: 2 });
  await post("/publish/bsse.b", { n: 3 });
  await post("/publish/bsse.a", { n: 4 });
  const published = await page.evaluate((before) => window.sse.events.length, before);
  check(published === before, "the stream was still delivering after its close event");
  step("disconnected; published 3 messages while away");
  await waitFor(page, "the reconnect and its replay", () => {
    const messages = window.sse.events.filter((e) => e.type === "message");
    return window.sse.opens === 2 && messages.length >= 4;
  });
  await post("/publish/bsse.b", { n: 5 });
  await waitFor(page, "a live message after the replay", () =>
    window.sse.events.some((e) => e.type === "message" && e.data.n === 5),
  );
  const events = await page.evaluate(() => window.sse.events);
  const afterReconnect = events.slice(before);
  const subscribed = afterReconnect.filter((e) => e.type === "subscribed");
  check(subscribed.length === 2, "subscribed twice after the reconnect: " + JSON.stringify(afterReconnect));
  check(subscribed.every((e) => e.recovered === true), "recovered: " + JSON.stringify(subscribed));
  // The replay comes topic by topic (as each topic is subscribed again), in order within each.
  const ns = (topic) => JSON.stringify(events.filter((e) => e.type === "message" && e.topic === topic).map((e) => e.data.n));
  check(ns("bsse.a") === "[1,2,4]", "bsse.a once each, in order: " + ns("bsse.a"));
  check(ns("bsse.b") === "[3,5]", "bsse.b once each, in order: " + ns("bsse.b"));
  check(!afterReconnect.some((e) => e.type === "gap"), "no gap");
  const close = (await page.evaluate(() => window.sse.closes))[0];
  check(close.code === 4002 && close.reason === "test", "close event: " + JSON.stringify(close));
  step("reconnected with Last-Event-ID: recovered 2, 3, 4 exactly once, then live 5");

  // 3. A new EventSource resumes with `since`.
  const lastId = await page.evaluate(() => {
    window.source.close();
    return window.sse.events[window.sse.events.length - 1].id;
  });
  check(/^[0-9a-f]+:\d+,[0-9a-f]+:\d+$/.test(lastId), "event id format: " + lastId);
  await post("/publish/bsse.a", { n: 6 });
  await page.evaluate(
    ({ topics, lastId }) => {
      window.sse.events = [];
      window.openStream(
        topics.map((t) => "topic=" + encodeURIComponent(t)).join("&") +
          "&since=" +
          encodeURIComponent(lastId),
      );
    },
    { topics, lastId },
  );
  await waitFor(page, "message 6 through since", () =>
    window.sse.events.some((e) => e.type === "message" && e.data.n === 6),
  );
  const resumed = await page.evaluate(() => window.sse.events.filter((e) => e.type === "message"));
  check(resumed.length === 1, "only message 6: " + JSON.stringify(resumed));
  step("a new EventSource with since= got message 6 only");
  clearTimeout(deadline);
  step("ok");
  await finish(0);
} catch (error) {
  await finish(1, error.stack || String(error));
}

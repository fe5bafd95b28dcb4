// The push server's demo page in headless Chromium (playwright-core + Debian's chromium).
//
//   node interop/browser_demo.mjs --fdx PATH --hub http://127.0.0.1:PORT --out DIR
//
// Two pages join the same chat room: page A talks to the hub directly, page B through an
// `fdx inspect` that this script starts (and later kills, by its PID, to drop B's connection).
// Checks: both pages connect and see the server clock; each page's chat message appears on
// both; an HTTP publish appears on both; while B is cut off, three messages are published
// over HTTP, and after B reconnects (backoff, `since`) it shows each of them exactly once,
// in order. The page runs on the client SDK (clients/js, served at /sdk/index.js); its state is
// the SDK's ("connecting", "connected", "disconnected"). Screenshots of both pages go to DIR.
// Exit status 0 when everything held.
import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { chromium } from "playwright-core";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => {
    if (arg.startsWith("--")) pairs.push([arg.slice(2), all[i + 1]]);
    return pairs;
  }, []),
);
const fdx = args.fdx;
const hub = args.hub;
const outDir = args.out || "target/browser";
const chromiumPath = args.chromium || process.env.CHROMIUM || "/usr/bin/chromium";
if (!fdx || !hub) {
  console.error("usage: node browser_demo.mjs --fdx PATH --hub http://127.0.0.1:PORT [--out DIR]");
  process.exit(2);
}
const room = "browsertest";
const topic = "chat." + room;
const deadline = setTimeout(() => fail("timed out after 90 s"), 90_000);
const children = new Set();

function fail(message) {
  console.error("browser_demo: FAIL: " + message);
  for (const child of children) child.kill("SIGKILL");
  process.exit(1);
}

function step(message) {
  console.log("browser_demo: " + message);
}

/** A free loopback port (bound, then released). */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Starts `fdx inspect` on `port` in front of the hub; resolves once it listens. */
function startProxy(port) {
  const upstream = hub.replace(/^http/, "ws");
  const child = spawn(fdx, ["inspect", "--listen", `127.0.0.1:${port}`, "--upstream", upstream, "--quiet"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  children.add(child);
  child.on("exit", () => children.delete(child));
  return new Promise((resolve, reject) => {
    let seen = "";
    child.stdout.on("data", (chunk) => {
      seen += chunk;
      if (seen.includes("listening on")) resolve(child);
    });
    child.once("exit", (code) => reject(new Error(`fdx inspect exited with ${code}: ${seen}`)));
  });
}

async function startProxyWithRetry(port) {
  for (let i = 0; i < 50; i++) {
    try {
      return await startProxy(port);
    } catch (error) {
      if (i === 49) throw error;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

async function publish(data) {
  const response = await fetch(`${hub}/publish/${topic}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(data),
  });
  const body = await response.text();
  if (response.status !== 200) fail(`HTTP publish answered ${response.status}: ${body}`);
  const offset = JSON.parse(body).offset;
  if (typeof offset !== "number") fail(`HTTP publish gave no offset: ${body}`);
  return offset;
}

const texts = (page) => page.$$eval("#messages li:not(.notice) .text", (nodes) => nodes.map((n) => n.textContent));

async function waitForText(page, name, text) {
  try {
    await page.waitForFunction(
      (wanted) => [...document.querySelectorAll("#messages li .text")].some((n) => n.textContent === wanted),
      text,
      { timeout: 15_000 },
    );
  } catch {
    fail(`page ${name} never showed ${JSON.stringify(text)}; it shows ${JSON.stringify(await texts(page))}`);
  }
}

async function waitForState(page, name, state) {
  try {
    // The SDK's state, and the page's badge showing it.
    await page.waitForFunction(
      (s) => window.fdxDemo && window.fdxDemo.state === s && document.getElementById("state").dataset.state === s,
      state,
      { timeout: 20_000 },
    );
  } catch {
    const now = await page.evaluate(() => window.fdxDemo && window.fdxDemo.state);
    fail(`page ${name} never reached state ${state} (it is ${now})`);
  }
}

async function say(page, name, who, text) {
  await page.fill("#name", who);
  await page.fill("#text", text);
  await page.press("#text", "Enter");
}

mkdirSync(outDir, { recursive: true });
const browser = await chromium.launch({
  executablePath: chromiumPath,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
try {
  const proxyPort = await freePort();
  let proxy = await startProxyWithRetry(proxyPort);
  const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  const pageA = await context.newPage();
  const pageB = await context.newPage();
  const errors = [];
  for (const [name, page] of [["A", pageA], ["B", pageB]]) {
    page.on("pageerror", (error) => errors.push(`${name}: ${error.message}`));
  }
  await pageA.goto(`${hub}/?room=${room}`);
  await pageB.goto(`${hub}/?room=${room}&ws=ws://127.0.0.1:${proxyPort}/ws`);
  await waitForState(pageA, "A", "connected");
  await waitForState(pageB, "B", "connected");
  step("both pages connected (B through fdx inspect)");

  for (const [name, page] of [["A", pageA], ["B", pageB]]) {
    try {
      await page.waitForFunction(() => /\d/.test(document.getElementById("clock").textContent), null, {
        timeout: 5_000,
      });
    } catch {
      fail(`page ${name}: the server clock never ticked`);
    }
  }
  step("the server clock ticks on both pages");

  await say(pageA, "A", "alice", "hello from A");
  await waitForText(pageA, "A", "hello from A");
  await waitForText(pageB, "B", "hello from A");
  await say(pageB, "B", "bob", "hi from B");
  await waitForText(pageA, "A", "hi from B");
  await waitForText(pageB, "B", "hi from B");
  step("the pages chat with each other");

  await publish({ name: "backend", text: "published over HTTP" });
  await waitForText(pageA, "A", "published over HTTP");
  await waitForText(pageB, "B", "published over HTTP");
  step("an HTTP publish appears on both pages");

  // Cut B off: its proxy dies; B sees its connection drop and starts retrying.
  proxy.kill("SIGKILL");
  await new Promise((resolve) => proxy.once("exit", resolve));
  try {
    await pageB.waitForFunction(() => window.fdxDemo.state !== "connected", null, { timeout: 10_000 });
  } catch {
    fail("page B did not notice that its connection dropped");
  }
  const missed = ["missed one", "missed two", "missed three"];
  for (const text of missed) await publish({ name: "backend", text });
  for (const text of missed) await waitForText(pageA, "A", text);
  step("B is disconnected; three messages published meanwhile (A has them)");

  proxy = await startProxyWithRetry(proxyPort);
  await waitForState(pageB, "B", "connected");
  for (const text of missed) await waitForText(pageB, "B", text);
  const shownB = await texts(pageB);
  const expected = ["hello from A", "hi from B", "published over HTTP", ...missed];
  if (JSON.stringify(shownB) !== JSON.stringify(expected)) {
    fail(`page B shows ${JSON.stringify(shownB)}, expected exactly ${JSON.stringify(expected)}`);
  }
  const shownA = await texts(pageA);
  if (JSON.stringify(shownA) !== JSON.stringify(expected)) {
    fail(`page A shows ${JSON.stringify(shownA)}, expected exactly ${JSON.stringify(expected)}`);
  }
  const reconnects = await pageB.evaluate(() => window.fdxDemo.reconnects);
  if (reconnects < 1) fail("page B never counted a reconnect");
  step(`B reconnected (${reconnects} attempt(s)) and shows the missed messages once each, in order`);

  await pageA.screenshot({ path: join(outDir, "demo-a.png") });
  await pageB.screenshot({ path: join(outDir, "demo-b.png") });
  if (errors.length) fail("JavaScript errors: " + errors.join("; "));
  step(`screenshots in ${outDir}`);
  proxy.kill("SIGKILL");
} catch (error) {
  fail(error.stack || String(error));
} finally {
  await browser.close().catch(() => {});
}
clearTimeout(deadline);
console.log("browser_demo: ok");
process.exit(0);

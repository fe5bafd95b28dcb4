// Shared pieces of the SDK's tests (kept outside test/ so that `node --test test/` does not
// take this file for a test file): a real `fdx serve`, a TCP proxy that can cut connections,
// HTTP publish, HS256 tokens, polling.
//
// Everything listens on and connects to 127.0.0.1 only, every wait is bounded, and only the
// processes started here are killed (through their ChildProcess objects).
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { once } from "node:events";
import { createConnection, createServer } from "node:net";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";

export { WebSocket };

const here = dirname(fileURLToPath(import.meta.url));
/** The fdx binary: env FDX_BIN, else the workspace's debug build. */
export const FDX_BIN = process.env.FDX_BIN || resolve(here, "../../../target/debug/fdx");

/**
 * Starts `fdx serve --listen 127.0.0.1:0 --no-clock ARGS...` and waits (at most 15 s) for
 * `listening on http://ADDR`. Returns { addr, http, ws, stop() }; `stop` kills it (SIGTERM,
 * then SIGKILL after 3 s) and waits for it to exit.
 */
export async function startServer(args = []) {
  const child = spawn(FDX_BIN, ["serve", "--listen", "127.0.0.1:0", "--no-clock", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  let stderr = "";
  child.stderr.on("data", (chunk) => {
    stderr += chunk;
    if (stderr.length > 20000) stderr = stderr.slice(-10000);
  });
  const addr = await new Promise((resolveAddr, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`fdx serve did not say where it listens within 15 s: ${output} ${stderr}`));
    }, 15_000);
    child.stdout.on("data", (chunk) => {
      output += chunk;
      const match = /listening on http:\/\/(\S+)/.exec(output);
      if (match) {
        clearTimeout(timer);
        resolveAddr(match[1]);
      }
    });
    child.once("error", (error) => {
      clearTimeout(timer);
      reject(new Error(`cannot start ${FDX_BIN}: ${error.message}`));
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`fdx serve exited with ${code}: ${output} ${stderr}`));
    });
  });
  child.stdout.resume();
  const exited = new Promise((r) => child.once("exit", r));
  return {
    addr,
    http: `http://${addr}`,
    ws: `ws://${addr}/ws`,
    get stderr() {
      return stderr;
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 3_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/**
 * A TCP proxy on 127.0.0.1 in front of `target` ("HOST:PORT"). `drop()` destroys every
 * connection through it; `stop()` also stops listening (connections are refused), `start()`
 * listens again on the same port; `mute(true)` stops forwarding what the server sends;
 * `setTarget` sends later connections elsewhere.
 */
export async function startProxy(target) {
  let [host, portText] = target.split(":");
  const sockets = new Set();
  let muted = false;
  let server = null;
  let port = 0;
  let accepted = 0;

  function handle(client) {
    accepted += 1;
    const upstream = createConnection({ host, port: Number(portText) });
    sockets.add(client);
    sockets.add(upstream);
    const kill = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on("error", kill).on("close", kill);
    upstream.on("error", kill).on("close", kill);
    client.on("data", (chunk) => upstream.write(chunk));
    upstream.on("data", (chunk) => {
      if (!muted) client.write(chunk);
    });
  }

  async function listen() {
    server = createServer(handle);
    server.listen(port, "127.0.0.1");
    await once(server, "listening");
    port = /** @type {import("node:net").AddressInfo} */ (server.address()).port;
  }

  function drop() {
    for (const socket of sockets) socket.destroy();
    sockets.clear();
  }

  await listen();
  return {
    get port() {
      return port;
    },
    get ws() {
      return `ws://127.0.0.1:${port}/ws`;
    },
    get accepted() {
      return accepted;
    },
    get connections() {
      return sockets.size / 2;
    },
    drop,
    /** Later connections go to this "HOST:PORT". */
    setTarget(next) {
      [host, portText] = next.split(":");
    },
    mute(on) {
      muted = on;
    },
    async stop() {
      const closed = new Promise((r) => server.close(r));
      drop();
      await closed;
    },
    async start() {
      await listen();
    },
  };
}

/** POST /publish/TOPIC; returns { offset, epoch }. */
export async function httpPublish(base, topic, data) {
  const response = await fetch(`${base}/publish/${topic}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(data),
    signal: AbortSignal.timeout(5_000),
  });
  const body = await response.text();
  if (response.status !== 200) throw new Error(`HTTP publish: ${response.status} ${body}`);
  return JSON.parse(body);
}

const b64url = (value) => Buffer.from(value).toString("base64url");

/** An HS256 JWT signed with `secret`. */
export function signToken(secret, claims) {
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" })) + "." + b64url(JSON.stringify(claims));
  return head + "." + createHmac("sha256", secret).update(head).digest("base64url");
}

export const nowSeconds = () => Math.floor(Date.now() / 1000);
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `predicate` every 10 ms until it is truthy; throws after `timeoutMs`. */
export async function waitFor(predicate, what, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** Resolves with the next `event` of the client (bounded). */
/** @param {(value: any) => boolean} [filter] */
export function nextEvent(client, event, timeoutMs = 10_000, filter = () => true) {
  return new Promise((resolveEvent, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${event} event within ${timeoutMs} ms`));
    }, timeoutMs);
    const off = client.on(event, (value) => {
      if (!filter(value)) return;
      clearTimeout(timer);
      off();
      resolveEvent(value);
    });
  });
}

/** Resolves once the client's state is `state` (bounded). */
export async function waitForState(client, state, timeoutMs = 10_000) {
  if (client.state === state) return;
  await nextEvent(client, "state", timeoutMs, (s) => s === state);
}

/** Rejects after `ms` unless `promise` settles first. */
export function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

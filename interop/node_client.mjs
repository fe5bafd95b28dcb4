#!/usr/bin/env node
// Node `ws` client against fullduplex's echo_server.
//
// Usage: node interop/node_client.mjs ws://127.0.0.1:PORT [--compress]
//
// Same checks as py_client.py (see interop/README.md). Prints `node_client: ok` and exits 0,
// or prints the failed check and exits 1.
import { createHash } from 'node:crypto';
import WebSocket from 'ws';

const NAME = 'node_client';
const MAX_PAYLOAD = 64 * 1024 * 1024;
const STEP_TIMEOUT_MS = 30_000;
const TOTAL_TIMEOUT_MS = 90_000;

const args = process.argv.slice(2);
const url = args.find((a) => !a.startsWith('--'));
// TODO(--compress): off until fullduplex negotiates permessage-deflate.
const compress = args.includes('--compress');
if (!url) {
  console.log(`usage: node_client.mjs ws://HOST:PORT [--compress]`);
  process.exit(2);
}

class CheckFailed extends Error {}

function fail(check, detail) {
  throw new CheckFailed(`${check}: ${detail}`);
}

function show(v) {
  const s = typeof v === 'string' ? JSON.stringify(v) : `<${v.length} bytes ${v.subarray(0, 16).toString('hex')}...>`;
  return s.length > 120 ? s.slice(0, 117) + '...' : s;
}

const sha256 = (b) => createHash('sha256').update(b).digest('hex');

const totalTimer = setTimeout(() => {
  console.log(`${NAME}: FAILED: session did not finish within ${TOTAL_TIMEOUT_MS / 1000}s`);
  process.exit(1);
}, TOTAL_TIMEOUT_MS);

const ws = new WebSocket(url, {
  perMessageDeflate: compress,
  maxPayload: MAX_PAYLOAD,
  handshakeTimeout: 10_000,
});

// Incoming messages and events, consumed in order.
const inbox = [];
let waiter = null;
function push(ev) {
  inbox.push(ev);
  if (waiter) {
    const w = waiter;
    waiter = null;
    w();
  }
}
ws.on('message', (data, isBinary) => push({ kind: 'message', data, isBinary }));
ws.on('pong', (data) => push({ kind: 'pong', data }));
ws.on('close', (code, reason) => push({ kind: 'close', code, reason: reason.toString() }));
ws.on('error', (err) => push({ kind: 'error', err }));

async function next(check, kind) {
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  for (;;) {
    while (inbox.length) {
      const ev = inbox.shift();
      if (ev.kind === kind) return ev;
      if (ev.kind === 'error') fail(check, `connection error: ${ev.err.message}`);
      if (ev.kind === 'close' && kind !== 'close') fail(check, `connection closed (code ${ev.code} ${JSON.stringify(ev.reason)})`);
      if (ev.kind === 'pong' && kind !== 'pong') continue; // unsolicited pong: ignore
      fail(check, `expected ${kind}, got ${ev.kind}`);
    }
    const left = deadline - Date.now();
    if (left <= 0) fail(check, `no ${kind} within ${STEP_TIMEOUT_MS / 1000}s`);
    await new Promise((resolve) => {
      const t = setTimeout(resolve, left);
      waiter = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }
}

function send(data, opts = {}) {
  return new Promise((resolve, reject) => ws.send(data, opts, (err) => (err ? reject(err) : resolve())));
}

async function roundtrip(check, payload) {
  const binary = typeof payload !== 'string';
  await send(payload, { binary });
  const ev = await next(check, 'message');
  if (ev.isBinary !== binary) fail(check, `sent ${binary ? 'binary' : 'text'}, got ${ev.isBinary ? 'binary' : 'text'}`);
  const got = binary ? ev.data : ev.data.toString('utf8');
  const same = binary ? Buffer.compare(got, payload) === 0 : got === payload;
  if (!same) fail(check, `sent ${show(payload)}, got ${show(got)}`);
  console.log(`${NAME}: ${check}: ok`);
}

async function session() {
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  inbox.length = 0;

  await roundtrip('text', 'hello');
  await roundtrip('text non-ascii', 'héllo ✓');
  await roundtrip('binary 0..255', Buffer.from([...Array(256).keys()]));

  const big = Buffer.alloc(16 * 1024 * 1024);
  for (let i = 0; i < big.length; i++) big[i] = (i * 31 + (i >>> 12)) & 0xff;
  await send(big, { binary: true });
  {
    const check = 'binary 16 MiB';
    const ev = await next(check, 'message');
    if (!ev.isBinary) fail(check, 'got a text message');
    if (ev.data.length !== big.length) fail(check, `got ${ev.data.length} bytes, sent ${big.length}`);
    if (sha256(ev.data) !== sha256(big)) fail(check, 'sha256 mismatch');
    console.log(`${NAME}: ${check}: ok`);
  }

  {
    const check = 'fragmented text';
    const parts = ['frag', 'men', 'ted ✓'];
    await send(parts[0], { fin: false });
    await send(parts[1], { fin: false });
    await send(parts[2], { fin: true });
    const ev = await next(check, 'message');
    if (ev.isBinary) fail(check, 'got a binary message');
    const got = ev.data.toString('utf8');
    if (got !== parts.join('')) fail(check, `sent fragments ${JSON.stringify(parts)}, got ${show(got)}`);
    console.log(`${NAME}: ${check}: ok`);
  }

  {
    const check = 'ping/pong';
    ws.ping(Buffer.from('interop-ping'));
    const ev = await next(check, 'pong');
    if (ev.data.toString('latin1') !== 'interop-ping') fail(check, `pong payload ${show(ev.data)}, expected "interop-ping"`);
    console.log(`${NAME}: ${check}: ok`);
  }

  {
    const check = 'close';
    ws.close(4000, 'bye');
    const ev = await next(check, 'close');
    console.log(`${NAME}: close: server replied code=${ev.code} reason=${JSON.stringify(ev.reason)}`);
    if (ev.code !== 4000) fail(check, `expected code 4000, got ${ev.code}${ev.code === 1006 ? ' (no close frame received)' : ''}`);
  }
}

try {
  await session();
  console.log(`${NAME}: ok`);
  clearTimeout(totalTimer);
  process.exit(0);
} catch (e) {
  if (e instanceof CheckFailed) console.log(`${NAME}: FAILED ${e.message}`);
  else console.log(`${NAME}: FAILED: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
}

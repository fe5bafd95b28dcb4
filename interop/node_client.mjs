#!/usr/bin/env node
// Node `ws` client against fullduplex's echo_server.
//
// Usage: node interop/node_client.mjs ws://127.0.0.1:PORT [--compress MODE] [--big-mib N]
//
// MODE (permessage-deflate): `off` (default), `takeover` ({ threshold: 0 }: context takeover,
// every message compressed, not only those of 1 KiB or more) or `no-takeover`
// ({ serverNoContextTakeover: true, clientNoContextTakeover: true, threshold: 0 }).
//
// Same checks as py_client.py (see interop/README.md). Prints `node_client: ok` and exits 0,
// or prints the failed check and exits 1.
import { createHash } from 'node:crypto';
import WebSocket from 'ws';

import { stats } from './node_common.mjs';

const NAME = 'node_client';
const MAX_PAYLOAD = 64 * 1024 * 1024;
const STEP_TIMEOUT_MS = 30_000;
const TOTAL_TIMEOUT_MS = 90_000;

const BULK = 1000;
const MODES = ['off', 'takeover', 'no-takeover'];

function option(args, name, fallback) {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
}
const args = process.argv.slice(2);
const url = args.find((a, i) => !a.startsWith('--') && (i === 0 || !args[i - 1].startsWith('--')));
const mode = option(args, '--compress', 'off');
const bigMiB = Number(option(args, '--big-mib', '16'));
if (!url || !MODES.includes(mode) || !(bigMiB > 0)) {
  console.log(`usage: node_client.mjs ws://HOST:PORT [--compress off|takeover|no-takeover] [--big-mib N]`);
  process.exit(2);
}
const perMessageDeflate = {
  off: false,
  takeover: { threshold: 0 },
  'no-takeover': { serverNoContextTakeover: true, clientNoContextTakeover: true, threshold: 0 },
}[mode];

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

let extensionsHeader = null;
const ws = new WebSocket(url, {
  perMessageDeflate,
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
ws.once('upgrade', (res) => {
  extensionsHeader = res.headers['sec-websocket-extensions'] ?? null;
});
ws.on('message', (data, isBinary) => {
  stats.data++;
  push({ kind: 'message', data, isBinary });
});
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

// 1,000 JSON-like texts (~100-300 bytes) and 1,000 small binaries (1-200 bytes), interleaved;
// deterministic, varying content (an LCG).
const WORDS = ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf', 'hotel', 'india',
  'juliett', 'kilo', 'lima', 'mike', 'november', 'oscar', 'papa', 'héllo', '✓', 'naïve'];
const USERS = ['alice', 'bob', 'carol', 'dave', 'eve'];
function bulkMessages() {
  let state = 54321;
  const rnd = () => {
    state = (Math.imul(state, 1103515245) + 12345) & 0x7fffffff;
    return state >>> 8;
  };
  const out = [];
  for (let i = 0; i < BULK; i++) {
    const words = Array.from({ length: 4 + (rnd() % 24) }, () => WORDS[rnd() % WORDS.length]).join(' ');
    const tags = Array.from({ length: rnd() % 4 }, () => `"t${rnd() % 50}"`).join(',');
    out.push(`{"seq":${i},"user":"${USERS[rnd() % USERS.length]}","ts":${1700000000000 + i * 37},` +
      `"text":"message number ${i}: ${words}","tags":[${tags}],"ok":${i % 3 === 0}}`);
    const n = 1 + (rnd() % 200);
    const b = Buffer.alloc(n);
    for (let k = 0; k < n; k++) b[k] = i % 2 ? (i + (k % 7)) & 0xff : rnd() & 0xff;
    out.push(b);
  }
  return out;
}

// `mib` MiB of word salad: a ~90 KB pseudo-random block of words and numbers, repeated. It
// compresses like prose (to about a third), and the repeats are farther apart than the 32 KiB
// deflate window, so every block costs the compressor real work.
function bigMessage(mib) {
  let state = 4242;
  const rnd = () => {
    state = (Math.imul(state, 1103515245) + 12345) & 0x7fffffff;
    return state >>> 8;
  };
  const block = Buffer.from(Array.from({ length: 10000 }, () => `${WORDS[rnd() % WORDS.length]}${rnd() % 1000}`).join(' '));
  const big = Buffer.alloc(mib * 1024 * 1024);
  for (let off = 0; off < big.length; off += block.length) block.copy(big, off, 0, Math.min(block.length, big.length - off));
  return big;
}

function checkNegotiation() {
  const check = 'negotiation';
  console.log(`${NAME}: mode ${mode}, negotiated Sec-WebSocket-Extensions: ${extensionsHeader}`);
  if (mode === 'off') {
    if (extensionsHeader !== null || ws.extensions !== '') fail(check, `compression off but the server answered ${extensionsHeader}`);
    return;
  }
  if (ws.extensions !== 'permessage-deflate') fail(check, `permessage-deflate not negotiated (ws.extensions ${JSON.stringify(ws.extensions)}, header ${extensionsHeader})`);
  if (mode === 'no-takeover' && !/server_no_context_takeover/.test(extensionsHeader)) {
    fail(check, `server did not accept server_no_context_takeover (${extensionsHeader})`);
  }
}

async function bulk() {
  const check = 'bulk 1000 text + 1000 binary';
  const msgs = bulkMessages();
  // Pipelined: everything is queued at once, echoes are checked in order as they arrive.
  const sent = msgs.map((m) => send(m, { binary: typeof m !== 'string' }));
  for (let k = 0; k < msgs.length; k++) {
    const m = msgs[k];
    const binary = typeof m !== 'string';
    const ev = await next(`${check} (#${k})`, 'message');
    if (ev.isBinary !== binary) fail(check, `message #${k}: sent ${binary ? 'binary' : 'text'}, got ${ev.isBinary ? 'binary' : 'text'}`);
    const got = binary ? ev.data : ev.data.toString('utf8');
    const same = binary ? Buffer.compare(got, m) === 0 : got === m;
    if (!same) fail(check, `message #${k}: sent ${show(m)}, got ${show(got)}`);
  }
  await Promise.all(sent);
  const sizes = msgs.filter((m) => typeof m === 'string').map((m) => Buffer.byteLength(m));
  console.log(`${NAME}: ${check}: ok (texts ${Math.min(...sizes)}-${Math.max(...sizes)} bytes)`);
}

async function session() {
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  inbox.length = 0;
  checkNegotiation();

  await roundtrip('text', 'hello');
  await roundtrip('text non-ascii', 'héllo ✓');
  await roundtrip('binary 0..255', Buffer.from([...Array(256).keys()]));

  const big = bigMessage(bigMiB);
  await send(big, { binary: true });
  {
    const check = `binary ${bigMiB} MiB`;
    const ev = await next(check, 'message');
    if (!ev.isBinary) fail(check, 'got a text message');
    if (ev.data.length !== big.length) fail(check, `got ${ev.data.length} bytes, sent ${big.length}`);
    if (sha256(ev.data) !== sha256(big)) fail(check, 'sha256 mismatch');
    console.log(`${NAME}: ${check}: ok`);
  }

  await bulk();

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

  // 3 + 1 + 2000 + 1 = 2005 data messages came back; with compression the echo server
  // compresses them all.
  console.log(`STATS received=${stats.data} compressed=${stats.compressed} small_wire=${stats.smallWire} small_plain=${stats.smallPlain}`);
  if (mode !== 'off') {
    const check = 'compressed echoes';
    const ratio = stats.smallPlain
      ? `small compressed messages ${stats.smallWire} bytes on the wire for ${stats.smallPlain} (${Math.round((100 * stats.smallWire) / stats.smallPlain)}%)`
      : 'none';
    console.log(`${NAME}: ${check}: ${stats.compressed}/${stats.data}; ${ratio}`);
    if (stats.data !== 2005 || stats.compressed !== stats.data) {
      fail(check, `${stats.compressed} of ${stats.data} data messages were compressed (expected all 2005)`);
    }
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

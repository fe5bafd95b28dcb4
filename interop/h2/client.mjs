#!/usr/bin/env node
// Node's http2 client opens WebSockets over HTTP/2 (RFC 8441, extended CONNECT) against a
// fullduplex server and checks the echo script (see interop/README.md): text, binary of every
// length class, a fragmented message, the server's fragmented reply (`fragment-me`), pings
// both ways (`ping-me`), and the close handshake (code 4000) ending with END_STREAM. Two
// WebSockets run on one HTTP/2 session, interleaved.
//
// Usage: node interop/h2/client.mjs http://127.0.0.1:PORT | https://localhost:PORT
// (TLS certificates are not verified). Prints `h2_client: ok` and exits 0, or the failed check
// and exits 1.
import http2 from 'node:http2';
import { once } from 'node:events';

import { OP, WsStream } from './ws_frames.mjs';

const NAME = 'h2_client';
const url = process.argv[2];
if (!url) {
  console.log('usage: client.mjs http://HOST:PORT | https://HOST:PORT');
  process.exit(2);
}
setTimeout(() => {
  console.log(`${NAME}: FAILED: did not finish within 30 s`);
  process.exit(1);
}, 30_000).unref();

function check(cond, what) {
  if (!cond) throw new Error(what);
}

const session = http2.connect(url, { rejectUnauthorized: false });
session.on('error', (e) => {
  console.log(`${NAME}: FAILED: session error ${e.message}`);
  process.exit(1);
});

async function open(path) {
  const stream = session.request({
    ':method': 'CONNECT',
    ':protocol': 'websocket',
    ':path': path,
    'sec-websocket-version': '13',
    'sec-websocket-protocol': 'chat, superchat',
    origin: 'http://localhost',
  });
  const [headers] = await once(stream, 'response');
  check(headers[':status'] === 200, `status ${headers[':status']}, expected 200`);
  check(!('sec-websocket-accept' in headers), 'no Sec-WebSocket-Accept on HTTP/2');
  check(headers['sec-websocket-protocol'] === 'chat', `subprotocol ${headers['sec-websocket-protocol']}`);
  return new WsStream(stream, 'client');
}

async function expect(ws, type, data, what) {
  const m = await ws.nextData();
  check(m, `${what}: stream ended`);
  check(m.type === type, `${what}: got ${m.type}, expected ${type}`);
  if (data !== undefined) {
    check(Buffer.compare(m.data, Buffer.from(data)) === 0, `${what}: payload differs (${m.data.length} bytes)`);
  }
  return m;
}

async function main() {
  if (!session.remoteSettings || !('enableConnectProtocol' in session.remoteSettings)) {
    await once(session, 'remoteSettings');
  }
  check(session.remoteSettings.enableConnectProtocol === true, 'server announced SETTINGS_ENABLE_CONNECT_PROTOCOL');
  console.log(`${NAME}: SETTINGS_ENABLE_CONNECT_PROTOCOL = 1: ok`);

  const a = await open('/one');
  const b = await open('/two');
  console.log(`${NAME}: two extended CONNECTs answered 200 on one session: ok`);

  a.text('héllo ✓');
  b.text('from b');
  await expect(a, 'text', 'héllo ✓', 'text echo');
  await expect(b, 'text', 'from b', 'text echo on the second stream');
  for (const size of [0, 125, 126, 65535, 65536, 1 << 20]) {
    const payload = Buffer.alloc(size);
    for (let i = 0; i < size; i++) payload[i] = i % 251;
    a.send(OP.BINARY, payload);
    b.send(OP.BINARY, payload);
    await expect(a, 'binary', payload, `binary ${size}`);
    await expect(b, 'binary', payload, `binary ${size} (second stream)`);
  }
  console.log(`${NAME}: text and binary echoes, 0 B to 1 MiB, both streams: ok`);

  a.send(OP.TEXT, Buffer.from('one '), false);
  a.send(OP.CONT, Buffer.from('two '), false);
  a.send(OP.CONT, Buffer.from('three'), true);
  await expect(a, 'text', 'one two three', 'fragmented message');
  a.text('fragment-me');
  const fragmented = await expect(a, 'text', 'fragmented', 'fragmented reply');
  check(fragmented.frames === 3, `fragmented reply in ${fragmented.frames} frames, expected 3`);
  console.log(`${NAME}: fragments both ways: ok`);

  a.send(OP.PING, Buffer.from('client-ping'));
  await expect(a, 'pong', 'client-ping', 'pong');
  a.text('ping-me');
  const ping = await a.next();
  check(ping && ping.type === 'ping', `server ping: got ${ping && ping.type}`);
  await expect(a, 'text', 'pong-ok', 'server ping answered');
  console.log(`${NAME}: pings both ways: ok`);

  for (const [ws, name] of [[a, 'first'], [b, 'second']]) {
    ws.close(4000, 'bye');
    const close = await expect(ws, 'close', undefined, `close echo (${name})`);
    check(close.code === 4000, `close code ${close.code}`);
    ws.stream.end();
    const end = await ws.next();
    check(end === null, `after the close: ${end && end.type}`);
    check(!ws.error, `stream error ${ws.error}`);
  }
  console.log(`${NAME}: close 4000 echoed, END_STREAM both ways: ok`);
  session.close();
}

main().then(
  () => {
    console.log(`${NAME}: ok`);
    process.exit(0);
  },
  (e) => {
    console.log(`${NAME}: FAILED: ${e.message}`);
    process.exit(1);
  },
);

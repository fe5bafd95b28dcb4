#!/usr/bin/env node
// Node's http2 server accepts WebSockets over HTTP/2 (RFC 8441): it announces
// SETTINGS_ENABLE_CONNECT_PROTOCOL, answers an extended CONNECT (`:protocol websocket`,
// `Sec-WebSocket-Version: 13`) with 200 and the first offered subprotocol, and runs the echo
// script of interop/README.md on the stream: every text and binary message comes back,
// `fragment-me` gets `fragmented` in three frames, `ping-me` gets a ping and, once the pong
// arrived, `pong-ok`, `close-me CODE` closes with CODE; a close is echoed and the stream ended
// (END_STREAM). Cleartext HTTP/2 with prior knowledge (h2c); no permessage-deflate.
//
// Usage: node interop/h2/server.mjs PORT   (0 picks a free port; prints `listening on PORT`)
import http2 from 'node:http2';

import { OP, WsStream } from './ws_frames.mjs';

const port = Number(process.argv[2] ?? '0');
const server = http2.createServer({ settings: { enableConnectProtocol: true } });

server.on('stream', (stream, headers) => {
  stream.on('error', () => {});
  if (headers[':method'] !== 'CONNECT' || headers[':protocol'] !== 'websocket') {
    stream.respond({ ':status': 400, 'content-type': 'text/plain' });
    stream.end('not a WebSocket extended CONNECT\n');
    return;
  }
  if (headers['sec-websocket-version'] !== '13') {
    stream.respond({ ':status': 426, 'sec-websocket-version': '13' });
    stream.end();
    return;
  }
  const offered = (headers['sec-websocket-protocol'] ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  stream.respond({ ':status': 200, ...(offered.length ? { 'sec-websocket-protocol': offered[0] } : {}) });
  run(new WsStream(stream, 'server')).catch((e) => console.log(`h2_server: ${e.message}`));
});

async function run(ws) {
  for (;;) {
    const m = await ws.next();
    if (!m) return;
    if (m.type === 'close') {
      if (!ws.closeSent) ws.close(m.code === 1005 ? 1000 : m.code);
      ws.stream.end();
      return;
    }
    if (m.type !== 'text' && m.type !== 'binary') continue;
    const text = m.type === 'text' ? m.data.toString() : null;
    if (text === 'fragment-me') {
      ws.send(OP.TEXT, Buffer.from('frag'), false);
      ws.send(OP.CONT, Buffer.from('ment'), false);
      ws.send(OP.CONT, Buffer.from('ed'), true);
    } else if (text === 'ping-me') {
      ws.send(OP.PING, Buffer.from('server-ping'));
      for (;;) {
        const p = await ws.next();
        if (!p) return;
        if (p.type === 'pong' && p.data.toString() === 'server-ping') break;
      }
      ws.text('pong-ok');
    } else if (text !== null && text.startsWith('close-me ')) {
      ws.close(Number(text.slice(9)) || 1000, 'server bye');
    } else {
      ws.send(m.type === 'text' ? OP.TEXT : OP.BINARY, m.data);
    }
  }
}

server.listen(port, '127.0.0.1', () => console.log(`listening on ${server.address().port}`));

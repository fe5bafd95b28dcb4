#!/usr/bin/env node
// Node `ws` scripted echo server for fullduplex's interop_client.
//
// Usage: node interop/node_server.mjs PORT [--compress MODE]   (PORT 0 = pick one)
//
// MODE (permessage-deflate): `off` (default), `takeover` ({ threshold: 0 }: context takeover,
// every message compressed) or `no-takeover` ({ serverNoContextTakeover: true,
// clientNoContextTakeover: true, threshold: 0 }).
//
// Same behaviour as py_server.py (see interop/README.md): prints `listening 127.0.0.1:PORT`,
// `EXTENSIONS <Sec-WebSocket-Extensions answered, or none>` after the handshake, echoes
// text/binary, `fragment-me` -> "frag"+"men"+"ted" in 3 fragments, `ping-me` -> ping
// `server-ping`, wait for the matching pong (5 s), then `pong-ok`; when the connection ends
// prints `STATS received=N compressed=M small_wire=W small_plain=P` (data messages received,
// how many were compressed, and for the compressed ones under 1 KiB their bytes on the wire
// and decompressed) and, if the client's close frame arrived,
// `CLOSE <code> <reason>` (ws echoes it). Exits after the first connection closes, or after
// 60 s (exit 2).
import { WebSocketServer } from 'ws';

import { stats } from './node_common.mjs';

const NAME = 'node_server';
const MODES = ['off', 'takeover', 'no-takeover'];
const args = process.argv.slice(2);
const portArg = args.find((a, i) => !a.startsWith('--') && (i === 0 || !args[i - 1].startsWith('--')));
const ci = args.indexOf('--compress');
const mode = ci >= 0 ? args[ci + 1] : 'off';
if (portArg === undefined || !MODES.includes(mode)) {
  console.log('usage: node_server.mjs PORT [--compress off|takeover|no-takeover]');
  process.exit(2);
}
const perMessageDeflate = {
  off: false,
  takeover: { threshold: 0 },
  'no-takeover': { serverNoContextTakeover: true, clientNoContextTakeover: true, threshold: 0 },
}[mode];

setTimeout(() => {
  console.log(`${NAME}: hard timeout of 60s reached, exiting`);
  process.exit(2);
}, 60_000);

const wss = new WebSocketServer({
  host: '127.0.0.1',
  port: Number(portArg),
  perMessageDeflate,
  maxPayload: 64 * 1024 * 1024,
});

wss.on('headers', (headers) => {
  const ext = headers.find((h) => /^sec-websocket-extensions:/i.test(h));
  console.log(`EXTENSIONS ${ext ? ext.replace(/^[^:]*:\s*/, '') : 'none'}`);
});
wss.on('listening', () => console.log(`listening 127.0.0.1:${wss.address().port}`));
wss.on('error', (err) => {
  console.log(`${NAME}: server error: ${err.message}`);
  process.exit(2);
});

let served = false;
wss.on('connection', (ws) => {
  if (served) {
    ws.terminate();
    return;
  }
  served = true;
  let pongWaiter = null;
  let received = 0;

  ws.on('message', (data, isBinary) => {
    received++;
    const text = isBinary ? null : data.toString('utf8');
    if (text === 'fragment-me') {
      ws.send('frag', { fin: false });
      ws.send('men', { fin: false });
      ws.send('ted', { fin: true });
    } else if (text === 'ping-me') {
      const timer = setTimeout(() => {
        pongWaiter = null;
        console.log(`${NAME}: no pong for server-ping within 5s`);
        ws.send('pong-timeout');
      }, 5_000);
      pongWaiter = () => {
        clearTimeout(timer);
        ws.send('pong-ok');
      };
      ws.ping(Buffer.from('server-ping'));
    } else {
      ws.send(data, { binary: isBinary });
    }
  });

  ws.on('pong', (data) => {
    if (pongWaiter && data.toString('latin1') === 'server-ping') {
      const w = pongWaiter;
      pongWaiter = null;
      w();
    }
  });

  // ws answers a close frame with a close frame carrying the same code and reason; the
  // 'close' event fires once the connection is closed, with the code/reason received.
  ws.on('close', (code, reason) => {
    console.log(`STATS received=${received} compressed=${stats.compressed} small_wire=${stats.smallWire} small_plain=${stats.smallPlain}`);
    if (code === 1006) {
      console.log(`${NAME}: connection ended without a close frame from the client (1006)`);
    } else {
      console.log(`CLOSE ${code} ${reason.toString()}`);
    }
    wss.close();
    process.exit(0);
  });
  ws.on('error', (err) => console.log(`${NAME}: connection error: ${err.message}`));
});

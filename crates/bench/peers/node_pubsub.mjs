// Node `ws` pub/sub server for the fan-out benchmark (`fullduplex-bench fanout`).
//
//   node node_pubsub.mjs [--compression] HOST:PORT
//
// The subset of the hub's protocol the generator uses: {"type":"subscribe","topic":T} is
// answered {"type":"subscribed","topic":T}; {"type":"publish","topic":T,"data":D} sends
// {"type":"message","topic":T,"data":D} to every subscriber of T with a plain broadcast loop
// (a Map of topic -> Set of sockets, `socket.send` for each: ws has no pub/sub of its own).
// With --compression it negotiates permessage-deflate (ws's perMessageDeflate, threshold
// 128 B like the hub; ws compresses for each socket separately). `ws` is resolved from
// interop/node_modules. Prints `listening on HOST:PORT`; exits when stdin closes.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '../../../interop/package.json'));
const { WebSocketServer } = require('ws');

let compression = false;
let addr = '127.0.0.1:0';
for (const arg of process.argv.slice(2)) {
  if (arg === '--compression') compression = true;
  else addr = arg;
}
const colon = addr.lastIndexOf(':');
const host = addr.slice(0, colon);
const port = Number(addr.slice(colon + 1));

const topics = new Map();

const server = new WebSocketServer({
  host,
  port,
  backlog: 1024,
  maxPayload: 1 << 20,
  clientTracking: false,
  perMessageDeflate: compression ? { threshold: 128 } : false,
});

server.on('connection', (socket) => {
  const mine = [];
  socket.on('message', (raw, isBinary) => {
    if (isBinary) return;
    let request;
    try {
      request = JSON.parse(raw.toString());
    } catch {
      return;
    }
    const topic = request.topic;
    if (typeof topic !== 'string') return;
    if (request.type === 'subscribe') {
      let set = topics.get(topic);
      if (!set) topics.set(topic, (set = new Set()));
      set.add(socket);
      mine.push(topic);
      socket.send(JSON.stringify({ type: 'subscribed', topic }));
    } else if (request.type === 'publish') {
      const set = topics.get(topic);
      if (!set) return;
      const text = JSON.stringify({ type: 'message', topic, data: request.data });
      for (const subscriber of set) subscriber.send(text);
    }
  });
  socket.on('close', () => {
    for (const topic of mine) {
      const set = topics.get(topic);
      if (set) {
        set.delete(socket);
        if (set.size === 0) topics.delete(topic);
      }
    }
  });
  socket.on('error', () => {});
});

server.on('listening', () => {
  const a = server.address();
  process.stdout.write(`listening on ${a.address}:${a.port}\n`);
});

process.stdin.on('data', () => {});
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));

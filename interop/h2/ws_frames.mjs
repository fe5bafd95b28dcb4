// A small WebSocket frame codec (RFC 6455 section 5) for the HTTP/2 interop peers: Node's
// http2 speaks RFC 8441 (extended CONNECT), but `ws` cannot run on an HTTP/2 stream, so
// these scripts write and read frames themselves. No extensions (no permessage-deflate).
import { randomBytes } from 'node:crypto';

export const OP = { CONT: 0, TEXT: 1, BINARY: 2, CLOSE: 8, PING: 9, PONG: 10 };

/** One frame; masked (a client's) when `mask` is true. */
export function encodeFrame(opcode, payload, { fin = true, mask = false } = {}) {
  payload = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
  const len = payload.length;
  const lenBytes = len < 126 ? 0 : len < 65536 ? 2 : 8;
  const head = Buffer.alloc(2 + lenBytes + (mask ? 4 : 0));
  head[0] = (fin ? 0x80 : 0) | opcode;
  head[1] = (mask ? 0x80 : 0) | (len < 126 ? len : len < 65536 ? 126 : 127);
  if (lenBytes === 2) head.writeUInt16BE(len, 2);
  if (lenBytes === 8) head.writeBigUInt64BE(BigInt(len), 2);
  if (!mask) return Buffer.concat([head, payload]);
  const key = randomBytes(4);
  key.copy(head, 2 + lenBytes);
  const masked = Buffer.alloc(len);
  for (let i = 0; i < len; i++) masked[i] = payload[i] ^ key[i & 3];
  return Buffer.concat([head, masked]);
}

export function closePayload(code, reason = '') {
  const b = Buffer.alloc(2 + Buffer.byteLength(reason));
  b.writeUInt16BE(code, 0);
  b.write(reason, 2);
  return b;
}

/**
 * One WebSocket on a duplex stream (an HTTP/2 stream): frames in, messages out.
 * `role` is 'client' (masks what it sends, refuses masked frames) or 'server'.
 * Pings are answered automatically and also reported; `next()` resolves with the next
 * message `{ type: 'text'|'binary'|'ping'|'pong'|'close', data, code?, reason?, frames }`.
 */
export class WsStream {
  constructor(stream, role) {
    this.stream = stream;
    this.role = role;
    this.buf = Buffer.alloc(0);
    this.parts = [];
    this.partOp = 0;
    this.queue = [];
    this.waiters = [];
    this.ended = false;
    this.closeSent = false;
    stream.on('data', (chunk) => this.onData(chunk));
    stream.on('end', () => { this.ended = true; this.wake(); });
    stream.on('close', () => { this.ended = true; this.wake(); });
    stream.on('error', (e) => { this.error = e; this.ended = true; this.wake(); });
  }

  send(opcode, payload, fin = true) {
    this.stream.write(encodeFrame(opcode, payload, { fin, mask: this.role === 'client' }));
  }
  text(s) { this.send(OP.TEXT, Buffer.from(s)); }
  close(code, reason = '') {
    this.closeSent = true;
    this.send(OP.CLOSE, closePayload(code, reason));
  }

  onData(chunk) {
    this.buf = Buffer.concat([this.buf, chunk]);
    for (;;) {
      if (this.buf.length < 2) return;
      const b0 = this.buf[0], b1 = this.buf[1];
      const masked = (b1 & 0x80) !== 0;
      let len = b1 & 0x7f, off = 2;
      if (len === 126) { if (this.buf.length < 4) return; len = this.buf.readUInt16BE(2); off = 4; }
      else if (len === 127) { if (this.buf.length < 10) return; len = Number(this.buf.readBigUInt64BE(2)); off = 10; }
      const keyOff = off;
      if (masked) off += 4;
      if (this.buf.length < off + len) return;
      let payload = Buffer.from(this.buf.subarray(off, off + len));
      if (masked) for (let i = 0; i < len; i++) payload[i] ^= this.buf[keyOff + (i & 3)];
      this.buf = this.buf.subarray(off + len);
      if (masked !== (this.role === 'server')) {
        this.fail(`frame masking wrong for a ${this.role}`);
        return;
      }
      this.onFrame((b0 & 0x80) !== 0, b0 & 0x0f, payload);
    }
  }

  onFrame(fin, op, payload) {
    if (op === OP.PING) {
      this.send(OP.PONG, payload);
      this.push({ type: 'ping', data: payload });
    } else if (op === OP.PONG) {
      this.push({ type: 'pong', data: payload });
    } else if (op === OP.CLOSE) {
      const code = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
      this.push({ type: 'close', code, reason: payload.subarray(2).toString() });
    } else {
      if (op !== OP.CONT) this.partOp = op;
      this.parts.push(payload);
      if (fin) {
        const data = Buffer.concat(this.parts);
        const frames = this.parts.length;
        this.parts = [];
        this.push({ type: this.partOp === OP.TEXT ? 'text' : 'binary', data, frames });
      }
    }
  }

  fail(why) {
    this.error = new Error(why);
    this.close(1002, why.slice(0, 100));
    this.stream.end();
  }

  push(message) { this.queue.push(message); this.wake(); }
  wake() { while (this.waiters.length) this.waiters.shift()(); }

  /** The next message (pings included), or null at the end of the stream. */
  async next() {
    for (;;) {
      if (this.queue.length) return this.queue.shift();
      if (this.ended) return null;
      await new Promise((resolve) => this.waiters.push(resolve));
    }
  }

  /** The next message that is not a ping. */
  async nextData() {
    for (;;) {
      const m = await this.next();
      if (!m || m.type !== 'ping') return m;
    }
  }
}

// Shared by node_client.mjs and node_server.mjs: compressed-message statistics, counted by
// wrapping ws's own PerMessageDeflate class (the same module instance ws uses).
// decompress() is called per frame of a compressed message and `fin` marks its end; for
// messages under 1 KiB the bytes on the wire and decompressed show how well the peer's
// compressor did (context takeover shows here).
import { createRequire } from 'node:module';

const PerMessageDeflate = createRequire(import.meta.url)('./node_modules/ws/lib/permessage-deflate.js');

export const stats = { data: 0, compressed: 0, smallWire: 0, smallPlain: 0 };

{
  // Wire and decompressed bytes of the message being decompressed (it may span frames).
  let wire = 0;
  let plain = 0;
  const decompress = PerMessageDeflate.prototype.decompress;
  PerMessageDeflate.prototype.decompress = function (data, fin, callback) {
    wire += data.length;
    return decompress.call(this, data, fin, (err, buf) => {
      if (!err) {
        plain += buf.length;
        if (fin) {
          stats.compressed++;
          if (plain < 1024) {
            stats.smallWire += wire;
            stats.smallPlain += plain;
          }
          wire = plain = 0;
        }
      }
      callback(err, buf);
    });
  };
}

"""Shared by py_client.py and py_server.py: compression modes, the message size limit, and
frame statistics counted by wrapping websockets' permessage-deflate decoder (it sees every
frame while the extension is active)."""

from __future__ import annotations

from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Opcode

MAX_SIZE = 64 * 1024 * 1024
MODES = ("off", "takeover", "no-takeover")

# Incoming data messages, how many had RSV1 set (were compressed), and for the small
# single-frame compressed ones the bytes on the wire and decompressed (how well the peer's
# compressor did; context takeover shows here).
STATS = {"data": 0, "compressed": 0, "small_wire": 0, "small_plain": 0}
SMALL = 1024  # messages below this size (uncompressed) count towards small_wire/small_plain
_decode = PerMessageDeflate.decode


def _counting_decode(self, frame, *, max_size=None):
    out = _decode(self, frame, max_size=max_size)
    if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
        STATS["data"] += 1
        if frame.rsv1:
            STATS["compressed"] += 1
            if frame.fin and len(out.data) < SMALL:
                STATS["small_wire"] += len(frame.data)
                STATS["small_plain"] += len(out.data)
    return out


def small_ratio() -> str:
    w, p = STATS["small_wire"], STATS["small_plain"]
    return f"small compressed messages {w} bytes on the wire for {p} ({w / p:.0%})" if p else "none"


PerMessageDeflate.decode = _counting_decode

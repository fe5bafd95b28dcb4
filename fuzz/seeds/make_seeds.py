#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/seeds/<target>/. Run from anywhere; idempotent."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
KEY = bytes([0x37, 0xFA, 0x21, 0x3D])


def frame(opcode, payload, fin=True, mask=None):
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    m = 0x80 if mask else 0
    if n < 126:
        head = bytes([b0, m | n])
    elif n < 65536:
        head = bytes([b0, m | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, m | 127]) + struct.pack(">Q", n)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        head += mask
    return head + payload


def stream(mask):
    f = lambda *a, **k: frame(*a, mask=mask, **k)
    return [
        f(0x1, b"Hello"),
        f(0x2, bytes(range(200))),
        f(0x9, b"ping") + f(0x1, "κόσ".encode(), fin=False) + f(0x0, "με".encode()),
        f(0x1, b"frag", fin=False) + f(0xA, b"") + f(0x0, b"ment", fin=False) + f(0x0, b"!"),
        f(0x2, b"x" * 300) + f(0x8, struct.pack(">H", 1000) + b"bye"),
        f(0x1, b"\xce\xba\xe1\xbd\xed\xa0\x80"),  # invalid UTF-8 (surrogate)
        f(0x8, b"\x03"),  # 1-byte close payload
        f(0x2, b"\x00" * 70000)[:20],  # frame over the 64 KiB limit
    ]


def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as fh:
        fh.write(data)


def main():
    # flags, layout (low 3 bits: number of sizes, high 4 bits: close-after chunk, 15 = never)
    variants = [
        (0x00, 0xF0, b""),  # messages, one chunk
        (0x04, 0xF3, b"\x01\x03\x07"),  # echo, small chunks
        (0x05, 0x22, b"\x02\x05"),  # fragments + echo, close after chunk 2
        (0x2E, 0xF1, b"\x01"),  # no auto-pong, echo, ping per chunk, eof, byte by byte
    ]
    command_variants = [
        # fail(1008, 60 characters, cut at 123 bytes) after the first event of chunk 0
        (0x04, 0xF9, bytes([0x10, 0x14, 0x00, 0x00, 60]), b"\x03"),
        # fail(1005) refused before chunk 1, then a keepalive timeout at the end of chunk 2
        (0x05, 0xFA, bytes([0x01, 0xD0, 0, 0, 3, 0x32, 0x02, 0, 0, 0]), b"\x02\x04"),
        # a close-handshake timeout with the echoes still queued (dropped), after close(..)
        (0x0C, 0x09, bytes([0x20, 0x0A, 0, 0, 0]), b"\x04"),
        # fail(3000, "aé€😀a") after everything, then idle timeout; end of stream
        (0x20, 0xF9, bytes([0x0F, 0x81, 0x0B, 0xB8, 5, 0x0F, 0x06, 0, 0, 0]), b"\x07"),
    ]
    for target, mask in (("frame_stream_server", KEY), ("frame_stream_client", None)):
        for i, body in enumerate(stream(mask)):
            for j, (flags, layout, sizes) in enumerate(variants):
                write(target, f"seed-{i}-{j}", bytes([flags, layout]) + sizes + body)
        # Lifecycle commands (layout bit 3): 5 bytes each, W K C0 C1 R (see fuzz/src/lib.rs).
        for i in (0, 2, 3, 4):
            for j, (flags, layout, cmds, sizes) in enumerate(command_variants):
                write(target, f"seed-cmd-{i}-{j}", bytes([flags, layout]) + cmds + sizes + stream(mask)[i])
        everything = b"".join(stream(mask)[:5])
        write(target, "seed-all", bytes([0x04, 0xF2, 0x05, 0x0D]) + everything)
        # At the limits: a 64 KiB frame (the frame limit) then a ping, in 255- and 200-byte
        # reads; a 128 KiB message (the message limit) that one more byte overflows.
        big = frame(0x2, bytes(range(256)) * 256, mask=mask) + frame(0x9, b"p", mask=mask)
        write(target, "limit-frame", bytes([0x04, 0xF2, 0xFF, 0xC8]) + big)
        half = b"a" * (64 << 10)
        over = (
            frame(0x1, half, fin=False, mask=mask)
            + frame(0x0, half, fin=False, mask=mask)
            + frame(0x0, b"a", mask=mask)
        )
        write(target, "limit-message", bytes([0x00, 0xF1, 0x00]) + over)
        write(target, "limit-message-fragments", bytes([0x05, 0xF1, 0xFF]) + over)

    req = (
        b"GET /chat?room=1 HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
        b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\nOrigin: http://example.com\r\nCookie: a=1; b=2\r\n"
    )
    write("handshake_request", "minimal", req + b"\r\n")
    write(
        "handshake_request",
        "protocols-deflate",
        req
        + b"Sec-WebSocket-Protocol: chat, superchat\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10; "
        b'client_max_window_bits, permessage-deflate; client_no_context_takeover, x-foo; a="b"\r\n'
        b"\r\n\x81\x80\x00\x00\x00\x00",
    )
    write("handshake_request", "version-8", req.replace(b"13", b"8") + b"\r\n")
    write("handshake_request", "post", b"POST / HTTP/1.1\r\nHost: h\r\n\r\n")

    resp = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
    )
    write("handshake_response", "minimal", resp + b"\r\n")
    write(
        "handshake_response",
        "protocol-deflate",
        resp
        + b"Sec-WebSocket-Protocol: chat\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10; "
        b"client_max_window_bits=12; server_no_context_takeover\r\n\r\n\x81\x02hi",
    )
    write("handshake_response", "wrong-accept", resp.replace(b"s3p", b"x3p") + b"\r\n")
    write("handshake_response", "forbidden", b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

    hub_seeds()
    reader_seeds()


def reader_seeds():
    """frame_reader: byte 0 (low 3 bits: number of piece sizes, bit 3: use read()), sizes,
    then the stream."""
    rfc = bytes([0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58])
    mixed = (
        rfc
        + frame(0x1, b"frag", fin=False)
        + frame(0x9, b"", mask=KEY)
        + frame(0x0, b"ment")
        + frame(0x2, bytes(range(200)), mask=KEY)
        + frame(0x8, struct.pack(">H", 1000) + b"bye")
    )
    write("frame_reader", "rfc-hello", bytes([0x00]) + rfc)
    write("frame_reader", "mixed-whole", bytes([0x00]) + mixed)
    write("frame_reader", "mixed-pieces", bytes([0x03, 0x01, 0x05, 0x0D]) + mixed)
    write("frame_reader", "mixed-read", bytes([0x0A, 0x03, 0x07]) + mixed)
    # 64-bit length (not minimal, which the reader does not judge), a partial frame at the end.
    long = bytes([0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0x01, 0x2C]) + KEY + bytes(300)
    write("frame_reader", "long-length", bytes([0x02, 0x09, 0x00]) + long + rfc[:6])
    # Errors: a reserved opcode, a length with its top bit set, each after a good frame.
    write("frame_reader", "reserved-opcode", bytes([0x01, 0x03]) + rfc + b"\x83\x00" + rfc)
    huge = bytes([0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0])
    write("frame_reader", "length-top-bit", bytes([0x09, 0x04]) + rfc + huge + rfc)


def hub_seeds():
    """hub_request: client messages; hub_http: method byte, target and headers, body;
    inspect_tap: flags, layout, a stream of frames (masked client->server unless bit 0)."""
    for name, text in [
        ("subscribe", '{"type":"subscribe","topic":"chat","since":4,"epoch":"e","id":7}'),
        ("publish", '{"type":"publish","topic":"chat","data":{"a":[1,2,{"b":null}]},"id":"x"}'),
        ("unsubscribe", '{"type":"unsubscribe","topic":"chat"}'),
        ("presence", '{"type":"presence","topic":"room","id":1}'),
        ("refresh", '{"type":"refresh","token":"a.b.c"}'),
        ("bad", '{"type":"dance","id":[1]}'),
        ("deep", "[" * 70 + "]" * 70),
        ("array", "[]"),
        # The campaign's first finding: an id beyond f64's range is still a JSON number.
        ("id-huge-number", '{"type":"presence","topic":"room","id":88888883E5344444444444444431}'),
    ]:
        write("hub_request", name, text.encode())
    for name, method, head, body in [
        ("index", 0, "/", b""),
        ("healthz", 0, "/healthz", b""),
        ("publish", 1, "/publish?topic=chat\ncontent-type: application/json", b'{"n":1}'),
        ("api-publish", 1, "/api/publish\ncontent-type: application/json",
         b'{"topic":"chat","data":[1,2]}'),
        ("api-history", 1, "/api/history", b'{"topic":"chat","limit":10}'),
        ("history", 0, "/history?topic=chat&since=0", b""),
        ("presence", 0, "/presence?topic=room", b""),
        ("sse", 0, "/sse?topic=chat&topic=news\naccept: text/event-stream", b""),
        ("upgrade", 0, "/ws\nupgrade: websocket\nconnection: Upgrade\nsec-websocket-version: 13"
         "\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==", b""),
        ("metrics", 0, "/metrics", b""),
        ("custom", 8, "BREW\n/coffee", b""),
    ]:
        head = head.replace("\\n", "\n")
        write("hub_http", name, bytes([method]) + head.encode() + b"\n\n" + body)
    frames = (
        frame(0x1, b"Hello", mask=KEY)
        + frame(0x2, bytes(range(200)), fin=False, mask=KEY)
        + frame(0x9, b"ping", mask=KEY)
        + frame(0x0, b"more", mask=KEY)
        + frame(0x8, struct.pack(">H", 1000) + b"bye", mask=KEY)
    )
    write("inspect_tap", "client-plain", bytes([0x18, 0x02, 0x03, 0x00]) + frames)
    unmasked = frame(0x1, b"Hi there") + frame(0x8, struct.pack(">H", 1001))
    write("inspect_tap", "server-plain", bytes([0x09, 0x00]) + unmasked)
    # RFC 7692 7.2.3.1 "Hello" compressed, RSV1 set, then the same in two frames.
    hello = bytes([0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00])
    deflated = bytes([0xC1, len(hello)]) + hello
    split = bytes([0x41, 3]) + hello[:3] + bytes([0x80, 4]) + hello[3:]
    write("inspect_tap", "server-deflate", bytes([0x0B, 0x01, 0x05]) + deflated + split)
    write("inspect_tap", "server-deflate-no-takeover", bytes([0x0F, 0x00]) + deflated + deflated)


if __name__ == "__main__":
    main()

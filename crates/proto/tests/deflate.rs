//! permessage-deflate (RFC 7692): the section 7.2.3 examples byte by byte, round trips,
//! hostile input (deflate bombs, corrupt data), memory use, and negotiation tables.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::BytesMut;
use flate2::{Compress, Compression, FlushCompress};
use fullduplex_proto::deflate::{
    client_accept, client_offer, server_negotiate, Compressor, Decompressor, DeflateConfig,
    DeflateError, DeflateNegotiationError, DeflateParams, DECOMPRESS_STEP,
};
use fullduplex_proto::handshake::{format_extensions, parse_extensions, ExtensionOffer};
use fullduplex_proto::{CloseCode, Role};
use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// A global allocator that counts, per thread, the bytes live and the peak since a reset, so
// that tests running in parallel do not see each other's allocations.

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; only counters change.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        track(layout.size() as isize);
        // SAFETY: the caller upholds `GlobalAlloc`'s contract, which `System` shares.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        track(layout.size() as isize);
        // SAFETY: the caller upholds `GlobalAlloc`'s contract, which `System` shares.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        track(-(layout.size() as isize));
        // SAFETY: the caller upholds `GlobalAlloc`'s contract, which `System` shares.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        track(new_size as isize - layout.size() as isize);
        // SAFETY: the caller upholds `GlobalAlloc`'s contract, which `System` shares.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes live on this thread now.
fn live() -> isize {
    LIVE.with(Cell::get)
}

/// Starts measuring a peak from the current live count.
fn reset_peak() {
    PEAK.with(|peak| peak.set(live()));
}

/// The peak of live bytes since [`reset_peak`].
fn peak() -> isize {
    PEAK.with(Cell::get)
}

// ---------------------------------------------------------------------------------------------
// Helpers.

const HELLO: &[u8] = b"Hello";
/// RFC 7692 section 7.2.3.1: "Hello" in one fixed-Huffman block, sync-flushed, tail removed.
const HELLO_DEFLATED: &[u8] = &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
const MIB: usize = 1 << 20;

fn params(no_context_takeover: bool, bits: u8) -> DeflateParams {
    DeflateParams {
        server_no_context_takeover: no_context_takeover,
        client_no_context_takeover: no_context_takeover,
        server_max_window_bits: bits,
        client_max_window_bits: bits,
    }
}

fn compressor(params: &DeflateParams, role: Role) -> Compressor {
    Compressor::new(params, role, &DeflateConfig::default())
}

fn compress(compressor: &mut Compressor, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    compressor.compress(payload, &mut out).expect("compress");
    out.to_vec()
}

/// Decompresses one message given as frame payloads.
fn decompress_frames(
    decompressor: &mut Decompressor,
    frames: &[&[u8]],
    max: usize,
) -> Result<Vec<u8>, DeflateError> {
    let mut out = BytesMut::new();
    for (i, frame) in frames.iter().enumerate() {
        decompressor.decompress(frame, i + 1 == frames.len(), &mut out, max)?;
    }
    Ok(out.to_vec())
}

fn decompress(decompressor: &mut Decompressor, payload: &[u8]) -> Result<Vec<u8>, DeflateError> {
    decompress_frames(decompressor, &[payload], usize::MAX)
}

fn client_decompressor() -> Decompressor {
    Decompressor::new(&DeflateParams::default(), Role::Client)
}

// ---------------------------------------------------------------------------------------------
// RFC 7692 section 7.2.3: the examples, byte by byte.

/// 7.2.3.1: "Hello" compresses to `f2 48 cd c9 c9 07 00` with a fresh context, in both roles.
#[test]
fn rfc_7_2_3_1_compress_hello() {
    for role in [Role::Client, Role::Server] {
        let mut c = compressor(&DeflateParams::default(), role);
        assert_eq!(compress(&mut c, HELLO), HELLO_DEFLATED, "{role:?}");
    }
}

/// 7.2.3.1: the payload decodes to "Hello", whole or as the 3 + 4 octet fragments of the
/// example (RSV1 on the first frame only is the connection's business).
#[test]
fn rfc_7_2_3_1_decompress_hello_whole_and_fragmented() {
    let mut d = client_decompressor();
    assert_eq!(decompress(&mut d, HELLO_DEFLATED).as_deref(), Ok(HELLO));
    let mut d = client_decompressor();
    let frames: [&[u8]; 2] = [&[0xf2, 0x48, 0xcd], &[0xc9, 0xc9, 0x07, 0x00]];
    assert_eq!(
        decompress_frames(&mut d, &frames, 1024).as_deref(),
        Ok(HELLO)
    );
}

/// 7.2.3.2: with context takeover the second "Hello" refers to the first: `f2 00 11 00 00`.
#[test]
fn rfc_7_2_3_2_sharing_the_window() {
    let mut c = compressor(&DeflateParams::default(), Role::Client);
    assert_eq!(compress(&mut c, HELLO), HELLO_DEFLATED);
    assert_eq!(compress(&mut c, HELLO), [0xf2, 0x00, 0x11, 0x00, 0x00]);

    let mut d = Decompressor::new(&DeflateParams::default(), Role::Server);
    assert_eq!(decompress(&mut d, HELLO_DEFLATED).as_deref(), Ok(HELLO));
    assert_eq!(
        decompress(&mut d, &[0xf2, 0x00, 0x11, 0x00, 0x00]).as_deref(),
        Ok(HELLO)
    );
}

/// 7.2.3.2: with client_no_context_takeover the second message compresses to the same bytes.
#[test]
fn rfc_7_2_3_2_no_context_takeover() {
    let p = DeflateParams {
        client_no_context_takeover: true,
        ..DeflateParams::default()
    };
    let mut c = compressor(&p, Role::Client);
    assert_eq!(compress(&mut c, HELLO), HELLO_DEFLATED);
    assert_eq!(compress(&mut c, HELLO), HELLO_DEFLATED);
    assert!(!c.is_allocated(), "state freed between messages");

    // The server compressor keeps its context under client_no_context_takeover.
    let mut s = compressor(&p, Role::Server);
    compress(&mut s, HELLO);
    assert_eq!(compress(&mut s, HELLO), [0xf2, 0x00, 0x11, 0x00, 0x00]);

    // A decompressor of a peer without context takeover starts afresh each message.
    let mut d = Decompressor::new(&p, Role::Server);
    for _ in 0..3 {
        assert_eq!(decompress(&mut d, HELLO_DEFLATED).as_deref(), Ok(HELLO));
        assert!(!d.is_allocated());
    }
}

/// 7.2.3.3: a DEFLATE block with no compression.
#[test]
fn rfc_7_2_3_3_stored_block() {
    let mut d = client_decompressor();
    let payload = [
        0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
    ];
    assert_eq!(decompress(&mut d, &payload).as_deref(), Ok(HELLO));
    // And the next message still decodes.
    assert_eq!(decompress(&mut d, HELLO_DEFLATED).as_deref(), Ok(HELLO));
}

/// 7.2.3.4: a block with BFINAL set, then an empty stored block's header byte.
#[test]
fn rfc_7_2_3_4_bfinal() {
    let mut d = client_decompressor();
    let payload = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
    assert_eq!(decompress(&mut d, &payload).as_deref(), Ok(HELLO));
    // The stream after the BFINAL block is a new one; later messages decode normally.
    assert_eq!(decompress(&mut d, HELLO_DEFLATED).as_deref(), Ok(HELLO));
    assert_eq!(decompress(&mut d, &payload).as_deref(), Ok(HELLO));
    assert_eq!(decompress(&mut d, HELLO_DEFLATED).as_deref(), Ok(HELLO));
}

/// A peer that ends a message with a BFINAL block and omits the extra `00` octet: the stream is
/// complete, and the appended tail must not leave the inflater inside a stored block.
#[test]
fn bfinal_without_trailing_empty_block() {
    let mut d = client_decompressor();
    let payload = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    assert_eq!(decompress(&mut d, &payload).as_deref(), Ok(HELLO));
    assert_eq!(decompress(&mut d, HELLO_DEFLATED).as_deref(), Ok(HELLO));
    // BFINAL in the middle of a fragmented message, then more data in later frames.
    let frames: [&[u8]; 3] = [&payload, &[0xf2, 0x48, 0xcd], &[0xc9, 0xc9, 0x07, 0x00]];
    assert_eq!(
        decompress_frames(&mut d, &frames, 100).as_deref(),
        Ok(&b"HelloHello"[..])
    );
}

/// 7.2.3.5: two DEFLATE blocks in one message.
#[test]
fn rfc_7_2_3_5_two_blocks() {
    let mut d = client_decompressor();
    let payload = [
        0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
    ];
    assert_eq!(decompress(&mut d, &payload).as_deref(), Ok(HELLO));
}

/// 7.2.3.6: a sync-flushed fragment that keeps its `00 00 ff ff`, then an empty final
/// fragment written as the single octet `00`.
#[test]
fn rfc_7_2_3_6_empty_final_fragment() {
    let mut d = client_decompressor();
    let frames: [&[u8]; 2] = [
        &[
            0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00, 0x00, 0xff, 0xff,
        ],
        &[0x00],
    ];
    assert_eq!(
        decompress_frames(&mut d, &frames, 100).as_deref(),
        Ok(HELLO)
    );
    assert_eq!(decompress(&mut d, HELLO_DEFLATED).as_deref(), Ok(HELLO));

    // Our streaming compressor produces exactly that.
    let mut c = compressor(&DeflateParams::default(), Role::Server);
    let mut first = BytesMut::new();
    c.compress_fragment(HELLO, false, &mut first)
        .expect("compress");
    assert_eq!(&first[..], frames[0]);
    let mut last = BytesMut::new();
    c.compress_fragment(b"", true, &mut last).expect("compress");
    assert_eq!(&last[..], [0x00]);
}

/// An empty message compresses to `00`, with a fresh context and after earlier messages, and
/// decodes to nothing without disturbing the context.
#[test]
fn empty_messages() {
    for no_context_takeover in [false, true] {
        let p = params(no_context_takeover, 15);
        let mut c = compressor(&p, Role::Client);
        let mut d = Decompressor::new(&p, Role::Server);
        for message in [&b""[..], HELLO, b"", b"", HELLO, b"Hello, Hello"] {
            let wire = compress(&mut c, message);
            if message.is_empty() {
                assert_eq!(wire, [0x00]);
            }
            assert_eq!(decompress(&mut d, &wire).as_deref(), Ok(message));
        }
    }
    // A compressed message with no payload bytes at all (not what RFC 7692 produces, but
    // harmless) reads as empty and leaves the context intact.
    let mut d = client_decompressor();
    let mut c = compressor(&DeflateParams::default(), Role::Server);
    assert_eq!(
        decompress(&mut d, &compress(&mut c, HELLO)).as_deref(),
        Ok(HELLO)
    );
    assert_eq!(decompress(&mut d, &[]).as_deref(), Ok(&b""[..]));
    assert_eq!(
        decompress(&mut d, &compress(&mut c, HELLO)).as_deref(),
        Ok(HELLO)
    );
}

/// Streaming compression: parts sent as they come decode to the whole message, and the
/// context carries on into the next message.
#[test]
fn streamed_fragments() {
    let mut c = compressor(&DeflateParams::default(), Role::Client);
    let mut d = Decompressor::new(&DeflateParams::default(), Role::Server);
    let parts: [&[u8]; 4] = [b"{\"a\":", b"", b"[1,2,3,1,2,3]", b"}"];
    for _ in 0..3 {
        let mut out = BytesMut::new();
        for (i, part) in parts.iter().enumerate() {
            let mut frame = BytesMut::new();
            c.compress_fragment(part, i + 1 == parts.len(), &mut frame)
                .expect("compress");
            d.decompress(&frame, i + 1 == parts.len(), &mut out, 1000)
                .expect("decompress");
        }
        assert_eq!(&out[..], b"{\"a\":[1,2,3,1,2,3]}");
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile input.

/// `len` zeros deflated into one message payload (tail removed).
fn zeros_deflated(len: usize) -> Vec<u8> {
    let mut c = compressor(&DeflateParams::default(), Role::Server);
    compress(&mut c, &vec![0u8; len])
}

/// 10 MB of zeros compress to about 10 KB; with a 1 MiB limit decompression stops with
/// TooLarge, the buffer never grows past the limit plus one step, and the peak of memory
/// allocated stays near the limit.
#[test]
fn deflate_bomb_is_bounded() {
    let bomb = zeros_deflated(10_000_000);
    assert!(bomb.len() < 20_000, "{} bytes", bomb.len());

    for frame_size in [bomb.len(), 1024, 7] {
        let mut d = client_decompressor();
        let mut out = BytesMut::new();
        reset_peak();
        let before = live();
        let mut result = Ok(());
        let chunks: Vec<&[u8]> = bomb.chunks(frame_size).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            result = d.decompress(chunk, i + 1 == chunks.len(), &mut out, MIB);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(DeflateError::TooLarge { limit: MIB }));
        // The buffer never grows past the limit.
        assert!(out.capacity() <= MIB, "{}", out.capacity());
        assert!(out.len() <= MIB);
        // Peak memory: the buffer, the inflater (47 KB) and at most one step besides (the
        // list of frames above counts too, 17 KB for 7-byte frames).
        let peak = (peak() - before) as usize;
        assert!(peak < MIB + DECOMPRESS_STEP + 64 * 1024, "peak {peak}");
        assert!(!d.is_allocated(), "state dropped after an error");
    }
}

/// The limit holds exactly: a message of `limit` bytes passes, one more byte fails, also when
/// earlier frames already filled part of the buffer.
#[test]
fn limit_is_exact() {
    let message: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let mut c = compressor(&DeflateParams::default(), Role::Server);
    let wire = compress(&mut c, &message);
    let mut d = client_decompressor();
    let mut out = BytesMut::new();
    assert_eq!(d.decompress(&wire, true, &mut out, message.len()), Ok(()));
    assert_eq!(&out[..], &message[..]);
    assert!(out.capacity() <= message.len() + 1);

    let mut c = compressor(&DeflateParams::default(), Role::Server);
    let wire = compress(&mut c, &message);
    let mut d = client_decompressor();
    let mut out = BytesMut::new();
    assert_eq!(
        d.decompress(&wire, true, &mut out, message.len() - 1),
        Err(DeflateError::TooLarge {
            limit: message.len() - 1
        })
    );

    // Bytes already in the buffer count.
    let mut c = compressor(&DeflateParams::default(), Role::Server);
    let wire = compress(&mut c, HELLO);
    let mut d = client_decompressor();
    let mut out = BytesMut::from(&b"1234"[..]);
    assert_eq!(
        d.decompress(&wire, true, &mut out, 8),
        Err(DeflateError::TooLarge { limit: 8 })
    );
    let mut d = client_decompressor();
    let mut out = BytesMut::from(&b"123"[..]);
    assert_eq!(d.decompress(&wire, true, &mut out, 8), Ok(()));
    assert_eq!(&out[..], b"123Hello");
}

#[test]
fn corrupt_data_fails() {
    let cases: [&[u8]; 4] = [
        // BTYPE = 11 (reserved).
        &[0x06, 0x00],
        // A stored block whose NLEN is not the complement of LEN.
        &[0x00, 0x05, 0x00, 0x00, 0x00, b'H', b'e', b'l', b'l', b'o'],
        // A back-reference before the start of the stream (the second message of RFC 7692
        // section 7.2.3.2 without the first).
        &[0xf2, 0x00, 0x11, 0x00, 0x00],
        &[0xff; 16],
    ];
    for payload in cases {
        let mut d = client_decompressor();
        let result = decompress(&mut d, payload);
        assert!(
            matches!(result, Err(DeflateError::Corrupt(_))),
            "{payload:02x?}: {result:?}"
        );
        assert_eq!(
            result.err().map(|e| e.close_code()),
            Some(CloseCode::INVALID_PAYLOAD)
        );
        // The decompressor can be used again (a new context).
        assert_eq!(decompress(&mut d, HELLO_DEFLATED).as_deref(), Ok(HELLO));
    }
    assert_eq!(
        DeflateError::TooLarge { limit: 1 }.close_code(),
        CloseCode::MESSAGE_TOO_BIG
    );
    assert_eq!(
        DeflateError::Compress(String::new()).close_code(),
        CloseCode::INTERNAL_ERROR
    );
}

// ---------------------------------------------------------------------------------------------
// Memory.

/// Bytes a compressor holds after one message (the output buffer is allocated beforehand and
/// not counted).
fn compressor_state_bytes(p: &DeflateParams) -> isize {
    let mut c = compressor(p, Role::Server);
    let mut out = BytesMut::with_capacity(4096);
    let before = live();
    c.compress(HELLO, &mut out).expect("compress");
    live() - before
}

fn decompressor_state_bytes(p: &DeflateParams) -> isize {
    let mut d = Decompressor::new(p, Role::Client);
    let mut out = BytesMut::with_capacity(4096);
    let before = live();
    d.decompress(HELLO_DEFLATED, true, &mut out, 4096)
        .expect("decompress");
    live() - before
}

/// The figures documented in `deflate::codec` (zlib-rs 0.6, memLevel 8), within 2% so that a
/// patch release of zlib-rs does not break the build: a compressor holds 248,960 bytes plus 4
/// per window byte, a decompressor 47,552 bytes whatever the window.
#[test]
fn memory_per_window_size() {
    for bits in 9u8..=15 {
        let p = params(false, bits);
        let c = compressor_state_bytes(&p);
        let d = decompressor_state_bytes(&p);
        println!("window {bits}: compressor {c} B, decompressor {d} B");
        let near = |got: isize, want: isize| (got - want).abs() <= want / 50;
        let want_c = 248_960 + 4 * (1isize << bits);
        assert!(
            near(c, want_c),
            "window {bits}: compressor {c}, expected {want_c}"
        );
        assert!(near(d, 47_552), "window {bits}: decompressor {d}");
    }
}

/// Nothing is allocated before the first message, and with no context takeover nothing is
/// held between messages.
#[test]
fn state_is_lazy_and_released() {
    let before = live();
    let mut c = compressor(&params(true, 15), Role::Client);
    let mut d = Decompressor::new(&params(true, 15), Role::Server);
    assert_eq!(live(), before);
    assert!(!c.is_allocated() && !d.is_allocated());

    let mut wire = BytesMut::with_capacity(4096);
    let mut message = BytesMut::with_capacity(4096);
    let before = live();
    c.compress(HELLO, &mut wire).expect("compress");
    d.decompress(&wire, true, &mut message, 4096)
        .expect("decompress");
    assert_eq!(live(), before, "all state freed after the message");
    assert!(!c.is_allocated() && !d.is_allocated());

    // With context takeover the state stays.
    let mut c = compressor(&params(false, 15), Role::Client);
    let mut d = Decompressor::new(&params(false, 15), Role::Server);
    wire.clear();
    message.clear();
    c.compress(HELLO, &mut wire).expect("compress");
    d.decompress(&wire, true, &mut message, 4096)
        .expect("decompress");
    assert!(c.is_allocated() && d.is_allocated());
}

// ---------------------------------------------------------------------------------------------
// Round trips.

// ---------------------------------------------------------------------------------------------
// An independent DEFLATE decoder (RFC 1951), written for these tests: it checks our output
// without zlib-rs, and measures how far back each back-reference reaches, which zlib-rs's
// inflater does not check (it keeps a 32 KiB window whatever it is told).

/// Reads bits least significant first, as DEFLATE packs them.
struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl BitReader<'_> {
    fn bits(&mut self, n: u32) -> Result<u32, &'static str> {
        let mut value = 0;
        for i in 0..n {
            let byte = self.data.get(self.pos / 8).ok_or("out of input")?;
            value |= u32::from((byte >> (self.pos % 8)) & 1) << i;
            self.pos += 1;
        }
        Ok(value)
    }

    fn align(&mut self) {
        self.pos = self.pos.div_ceil(8) * 8;
    }
}

/// A canonical Huffman code: how many codes of each length, and the symbols in code order.
struct Huffman {
    counts: [u16; 16],
    symbols: Vec<u16>,
}

impl Huffman {
    fn new(lengths: &[u8]) -> Self {
        let mut counts = [0u16; 16];
        for &len in lengths {
            counts[len as usize] += 1;
        }
        counts[0] = 0;
        let mut symbols = Vec::new();
        for len in 1..16 {
            for (symbol, &l) in lengths.iter().enumerate() {
                if l as usize == len {
                    symbols.push(symbol as u16);
                }
            }
        }
        Huffman { counts, symbols }
    }

    fn decode(&self, bits: &mut BitReader<'_>) -> Result<u16, &'static str> {
        let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
        for len in 1..16 {
            code |= bits.bits(1)? as i32;
            let count = i32::from(self.counts[len]);
            if code - first < count {
                return Ok(self.symbols[(index + code - first) as usize]);
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
        }
        Err("bad code")
    }
}

const LENGTH_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LENGTH_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];

/// Decodes one message payload (the tail is appended here) onto `history`, the output of
/// earlier messages that back-references may reach. Returns the message and the largest
/// distance used.
fn reference_inflate(
    payload: &[u8],
    history: &mut Vec<u8>,
) -> Result<(Vec<u8>, usize), &'static str> {
    let mut input = payload.to_vec();
    input.extend_from_slice(&[0x00, 0x00, 0xff, 0xff]);
    let mut bits = BitReader {
        data: &input,
        pos: 0,
    };
    let start = history.len();
    let mut max_distance = 0;
    while bits.pos < input.len() * 8 {
        if bits.bits(1)? == 1 {
            return Err("BFINAL is never set by our compressor");
        }
        let (lit, dist) = match bits.bits(2)? {
            0 => {
                bits.align();
                let len = bits.bits(16)?;
                if bits.bits(16)? != !len & 0xffff {
                    return Err("stored length");
                }
                for _ in 0..len {
                    history.push(bits.bits(8)? as u8);
                }
                continue;
            }
            1 => {
                let mut lengths = [8u8; 288];
                lengths[144..256].fill(9);
                lengths[256..280].fill(7);
                (Huffman::new(&lengths), Huffman::new(&[5; 30]))
            }
            2 => {
                let hlit = bits.bits(5)? as usize + 257;
                let hdist = bits.bits(5)? as usize + 1;
                let hclen = bits.bits(4)? as usize + 4;
                const ORDER: [usize; 19] = [
                    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
                ];
                let mut code_lengths = [0u8; 19];
                for &i in &ORDER[..hclen] {
                    code_lengths[i] = bits.bits(3)? as u8;
                }
                let code = Huffman::new(&code_lengths);
                let mut lengths = Vec::new();
                while lengths.len() < hlit + hdist {
                    match code.decode(&mut bits)? {
                        symbol @ 0..=15 => lengths.push(symbol as u8),
                        16 => {
                            let last = *lengths.last().ok_or("repeat with nothing")?;
                            let n = 3 + bits.bits(2)?;
                            lengths.extend((0..n).map(|_| last));
                        }
                        17 => lengths.extend((0..3 + bits.bits(3)?).map(|_| 0)),
                        _ => lengths.extend((0..11 + bits.bits(7)?).map(|_| 0)),
                    }
                }
                (
                    Huffman::new(&lengths[..hlit]),
                    Huffman::new(&lengths[hlit..]),
                )
            }
            _ => return Err("reserved block type"),
        };
        loop {
            let symbol = lit.decode(&mut bits)? as usize;
            match symbol {
                0..=255 => history.push(symbol as u8),
                256 => break,
                _ => {
                    let i = symbol - 257;
                    let len = usize::from(*LENGTH_BASE.get(i).ok_or("length code")?)
                        + bits.bits(u32::from(LENGTH_EXTRA[i]))? as usize;
                    let d = dist.decode(&mut bits)? as usize;
                    let distance = usize::from(*DIST_BASE.get(d).ok_or("distance code")?)
                        + bits.bits(u32::from(DIST_EXTRA[d]))? as usize;
                    if distance > history.len() {
                        return Err("distance before the start of the history");
                    }
                    max_distance = max_distance.max(distance);
                    for _ in 0..len {
                        history.push(history[history.len() - distance]);
                    }
                }
            }
        }
    }
    Ok((history[start..].to_vec(), max_distance))
}

/// Decodes a sequence of messages with the reference decoder and checks every back-reference
/// stays within `bits` of window.
struct Reference {
    history: Vec<u8>,
    window: usize,
    no_context_takeover: bool,
}

impl Reference {
    fn new(bits: u8, no_context_takeover: bool) -> Self {
        Reference {
            history: Vec::new(),
            window: 1 << bits,
            no_context_takeover,
        }
    }

    fn inflate(&mut self, payload: &[u8]) -> Vec<u8> {
        if self.no_context_takeover {
            self.history.clear();
        }
        let (message, max_distance) =
            reference_inflate(payload, &mut self.history).expect("reference inflate");
        assert!(
            max_distance <= self.window,
            "distance {max_distance} exceeds the window of {}",
            self.window
        );
        message
    }
}

fn message_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..2000),
        // Compressible: words from a small alphabet, so that back-references appear, some far.
        (proptest::collection::vec(0u8..4, 0..3000), any::<u8>()).prop_map(|(words, salt)| {
            let mut text = Vec::new();
            for w in words {
                text.extend_from_slice(
                    [&b"alpha "[..], b"beta ", b"gamma-delta ", b"\x00\x01\x02"][w as usize],
                );
                text.push(salt);
            }
            text
        }),
        Just(Vec::new()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Each window size and context takeover setting, both directions, many messages split
    /// into frames anywhere; the output is also readable with a window of exactly the
    /// negotiated size.
    #[test]
    fn round_trip(
        bits in 9u8..=15,
        no_context_takeover in any::<bool>(),
        level in 0u32..=9,
        messages in proptest::collection::vec(message_strategy(), 1..12),
        split in 1usize..600,
    ) {
        let p = params(no_context_takeover, bits);
        let config = DeflateConfig::default().with_compression_level(level);
        for (sender, receiver) in [(Role::Client, Role::Server), (Role::Server, Role::Client)] {
            let mut c = Compressor::new(&p, sender, &config);
            let mut d = Decompressor::new(&p, receiver);
            let mut reference = Reference::new(bits, no_context_takeover);
            for message in &messages {
                let mut wire = BytesMut::new();
                c.compress(message, &mut wire).expect("compress");
                let frames: Vec<&[u8]> = if wire.is_empty() { vec![&[][..]] } else { wire.chunks(split).collect() };
                let got = decompress_frames(&mut d, &frames, message.len()).expect("decompress");
                prop_assert_eq!(&got, message);
                prop_assert_eq!(&reference.inflate(&wire), message);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Hostile input never panics, and whatever happens the output stays within the limit.
    #[test]
    fn garbage_never_panics(
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..6),
        max in 0usize..5000,
        no_context_takeover in any::<bool>(),
    ) {
        let mut d = Decompressor::new(&params(no_context_takeover, 15), Role::Client);
        for _ in 0..2 {
            let mut out = BytesMut::new();
            for (i, frame) in frames.iter().enumerate() {
                let result = d.decompress(frame, i + 1 == frames.len(), &mut out, max);
                prop_assert!(out.len() <= max && out.capacity() <= max.max(1));
                if result.is_err() {
                    break;
                }
            }
        }
    }

    /// A message compressed part by part (as it is produced) decodes to the whole, with
    /// context carried across messages, and stays within the window.
    #[test]
    fn streamed_round_trip(
        bits in 9u8..=15,
        no_context_takeover in any::<bool>(),
        messages in proptest::collection::vec(
            (message_strategy(), proptest::collection::vec(0usize..3000, 0..4)),
            1..6,
        ),
    ) {
        let p = params(no_context_takeover, bits);
        let mut c = compressor(&p, Role::Server);
        let mut d = Decompressor::new(&p, Role::Client);
        let mut reference = Reference::new(bits, no_context_takeover);
        for (message, mut cuts) in messages {
            cuts.iter_mut().for_each(|cut| *cut = (*cut).min(message.len()));
            cuts.sort_unstable();
            cuts.push(message.len());
            let mut wire = Vec::new();
            let mut out = BytesMut::new();
            let mut from = 0;
            for (i, &to) in cuts.iter().enumerate() {
                let last = i + 1 == cuts.len();
                let mut frame = BytesMut::new();
                c.compress_fragment(&message[from..to], last, &mut frame).expect("compress");
                prop_assert!(!last || !frame.is_empty());
                d.decompress(&frame, last, &mut out, message.len()).expect("decompress");
                wire.extend_from_slice(&frame);
                from = to;
            }
            prop_assert_eq!(&out[..], &message[..]);
            prop_assert_eq!(&reference.inflate(&wire), &message);
        }
    }
}

/// Our compressor never refers back further than its window: random data repeated at a
/// distance just over the window (within a message and across messages) decodes with a window
/// of exactly the negotiated size.
#[test]
fn window_is_respected() {
    for bits in 9u8..=15 {
        let block = pseudo_random((1 << bits) + 100, u32::from(bits));
        let mut message = block.clone();
        message.extend_from_slice(&block);
        for no_context_takeover in [false, true] {
            let p = params(no_context_takeover, bits);
            let mut c = compressor(&p, Role::Client);
            let mut reference = Reference::new(bits, no_context_takeover);
            for _ in 0..3 {
                let wire = compress(&mut c, &message);
                assert_eq!(reference.inflate(&wire), message, "window {bits}");
            }
        }
    }
}

/// `len` bytes from a xorshift generator.
fn pseudo_random(len: usize, seed: u32) -> Vec<u8> {
    let mut state = 0x9e37_79b9 ^ seed;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

/// Our decompressor reads streams from a peer whose compressor was limited to 8 bits (zlib
/// uses 9; anything up to 15 must decode) and from plain zlib compressors of every size.
#[test]
fn reads_any_peer_window() {
    let message: Vec<u8> = b"the quick brown fox jumps over the lazy dog; ".repeat(400);
    for bits in 9u8..=15 {
        let mut peer = Compress::new_with_window_bits(Compression::best(), false, bits);
        let p = params(false, 8);
        let mut d = Decompressor::new(&p, Role::Server);
        for _ in 0..3 {
            let mut wire = Vec::with_capacity(message.len() + 1024);
            peer.compress_vec(&message, &mut wire, FlushCompress::Sync)
                .expect("peer compress");
            assert!(wire.ends_with(&[0x00, 0x00, 0xff, 0xff]));
            wire.truncate(wire.len() - 4);
            assert_eq!(decompress(&mut d, &wire).as_deref(), Ok(&message[..]));
        }
    }
}

/// Output of the compressor with a caller buffer that already holds data (it appends), and
/// with a large spare capacity (it does not need to grow).
#[test]
fn compress_appends() {
    let mut c = compressor(&DeflateParams::default(), Role::Server);
    let mut out = BytesMut::with_capacity(1 << 20);
    out.extend_from_slice(b"head");
    c.compress(HELLO, &mut out).expect("compress");
    assert_eq!(&out[..4], b"head");
    assert_eq!(&out[4..], HELLO_DEFLATED);
    assert!(out.capacity() >= 1 << 20);
}

#[test]
fn large_incompressible_message() {
    let message = pseudo_random(300_000, 1);
    let mut c = compressor(&DeflateParams::default(), Role::Server);
    let wire = compress(&mut c, &message);
    assert!(wire.len() < message.len() + message.len() / 100);
    let mut d = client_decompressor();
    assert_eq!(decompress(&mut d, &wire).as_deref(), Ok(&message[..]));
}

#[test]
fn threshold() {
    let c = Compressor::new(
        &DeflateParams::default(),
        Role::Client,
        &DeflateConfig::default().with_threshold(10),
    );
    assert_eq!(c.threshold(), 10);
    assert!(!c.should_compress(9));
    assert!(c.should_compress(10));
    assert_eq!(DeflateConfig::default().threshold, 64);
}

// ---------------------------------------------------------------------------------------------
// Negotiation.

fn offers(header: &'static str) -> Vec<ExtensionOffer> {
    let mut headers = HeaderMap::new();
    headers.insert("sec-websocket-extensions", HeaderValue::from_static(header));
    parse_extensions(&headers).expect("valid header")
}

/// Client offers -> server answers (`None`: declined), with the server's resulting window
/// sizes `(server, client)` and context takeover flags `(server, client)`.
#[test]
fn server_negotiation_table() {
    let default = DeflateConfig::default();
    let small = DeflateConfig::default()
        .with_server_max_window_bits(10)
        .with_client_max_window_bits(11);
    let no_ctx = DeflateConfig::default()
        .with_server_no_context_takeover(true)
        .with_client_no_context_takeover(true);
    let eight = DeflateConfig::default()
        .with_server_max_window_bits(8)
        .with_client_max_window_bits(8);

    let (default, small, no_ctx, eight) = (&default, &small, &no_ctx, &eight);
    #[allow(clippy::type_complexity)]
    let rows: Vec<(&str, &DeflateConfig, Option<&str>, (u8, u8), (bool, bool))> = vec![
        // The plain offer.
        ("permessage-deflate", default, Some("permessage-deflate"), (15, 15), (false, false)),
        ("PerMessage-Deflate", default, Some("permessage-deflate"), (15, 15), (false, false)),
        // What browsers send.
        (
            "permessage-deflate; client_max_window_bits",
            default,
            Some("permessage-deflate"),
            (15, 15),
            (false, false),
        ),
        // Flags are echoed.
        (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            default,
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
            (15, 15),
            (true, true),
        ),
        // Our own flags are answered even when not offered.
        (
            "permessage-deflate",
            no_ctx,
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
            (15, 15),
            (true, true),
        ),
        // A server window limit is honoured (and answered).
        (
            "permessage-deflate; server_max_window_bits=10",
            default,
            Some("permessage-deflate; server_max_window_bits=10"),
            (10, 15),
            (false, false),
        ),
        // Quoted values are values.
        (
            "permessage-deflate; server_max_window_bits=\"12\"; client_max_window_bits=\"10\"",
            default,
            Some("permessage-deflate; server_max_window_bits=12"),
            (12, 10),
            (false, false),
        ),
        // Our smaller limits win; the client window is only answered when offered.
        (
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits",
            small,
            Some("permessage-deflate; server_max_window_bits=10; client_max_window_bits=11"),
            (10, 11),
            (false, false),
        ),
        (
            "permessage-deflate; server_max_window_bits=9; client_max_window_bits=10",
            small,
            Some("permessage-deflate; server_max_window_bits=9; client_max_window_bits=10"),
            (9, 10),
            (false, false),
        ),
        (
            "permessage-deflate",
            small,
            Some("permessage-deflate; server_max_window_bits=10"),
            (10, 15),
            (false, false),
        ),
        // A client may be limited to 8 bits (its compressor, not ours).
        (
            "permessage-deflate; client_max_window_bits",
            eight,
            Some("permessage-deflate; server_max_window_bits=9; client_max_window_bits=8"),
            (9, 8),
            (false, false),
        ),
        (
            "permessage-deflate; client_max_window_bits=8",
            default,
            Some("permessage-deflate"),
            (15, 8),
            (false, false),
        ),
        // server_max_window_bits=8 would force our compressor to 8 bits: declined, and the
        // next offer is taken.
        ("permessage-deflate; server_max_window_bits=8", default, None, (0, 0), (false, false)),
        (
            "permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=9",
            default,
            Some("permessage-deflate; server_max_window_bits=9"),
            (9, 15),
            (false, false),
        ),
        // Invalid offers are declined, not fatal; a later valid one is accepted.
        ("permessage-deflate; foo", default, None, (0, 0), (false, false)),
        ("permessage-deflate; foo=1", default, None, (0, 0), (false, false)),
        ("permessage-deflate; server_no_context_takeover=1", default, None, (0, 0), (false, false)),
        ("permessage-deflate; client_no_context_takeover=\"x\"", default, None, (0, 0), (false, false)),
        ("permessage-deflate; server_max_window_bits", default, None, (0, 0), (false, false)),
        ("permessage-deflate; server_max_window_bits=16", default, None, (0, 0), (false, false)),
        ("permessage-deflate; server_max_window_bits=7", default, None, (0, 0), (false, false)),
        ("permessage-deflate; server_max_window_bits=010", default, None, (0, 0), (false, false)),
        ("permessage-deflate; client_max_window_bits=0", default, None, (0, 0), (false, false)),
        ("permessage-deflate; client_max_window_bits=\"16\"", default, None, (0, 0), (false, false)),
        (
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            default,
            None,
            (0, 0),
            (false, false),
        ),
        (
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
            default,
            None,
            (0, 0),
            (false, false),
        ),
        (
            "permessage-deflate; server_max_window_bits=10; SERVER_MAX_WINDOW_BITS=10",
            default,
            None,
            (0, 0),
            (false, false),
        ),
        (
            "permessage-deflate; foo, permessage-deflate; client_no_context_takeover",
            default,
            Some("permessage-deflate; client_no_context_takeover"),
            (15, 15),
            (false, true),
        ),
        // Other extensions are ignored; the first acceptable offer wins.
        ("x-webkit-deflate-frame, deflate-frame", default, None, (0, 0), (false, false)),
        (
            "x-foo; bar, permessage-deflate; server_max_window_bits=11, permessage-deflate",
            default,
            Some("permessage-deflate; server_max_window_bits=11"),
            (11, 15),
            (false, false),
        ),
    ];
    for (header, config, answer, (server_bits, client_bits), (server_nct, client_nct)) in rows {
        let result = server_negotiate(&offers(header), config);
        match answer {
            None => assert_eq!(result, None, "{header}"),
            Some(expected) => {
                let (params, answer) = result.unwrap_or_else(|| panic!("declined: {header}"));
                assert_eq!(format_extensions(&[answer]), expected, "{header}");
                assert_eq!(
                    (params.server_max_window_bits, params.client_max_window_bits),
                    (server_bits, client_bits),
                    "{header}"
                );
                assert_eq!(
                    (
                        params.server_no_context_takeover,
                        params.client_no_context_takeover
                    ),
                    (server_nct, client_nct),
                    "{header}"
                );
            }
        }
    }
}

/// What the client offers for each config.
#[test]
fn client_offer_table() {
    let rows = [
        (
            DeflateConfig::default(),
            "permessage-deflate; client_max_window_bits",
        ),
        (
            DeflateConfig::default()
                .with_server_no_context_takeover(true)
                .with_client_no_context_takeover(true),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             client_max_window_bits",
        ),
        (
            DeflateConfig::default()
                .with_server_max_window_bits(10)
                .with_client_max_window_bits(12),
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits=12",
        ),
        // We may ask for an 8-bit server window, but our own hint is at least 9.
        (
            DeflateConfig::default()
                .with_server_max_window_bits(8)
                .with_client_max_window_bits(8),
            "permessage-deflate; server_max_window_bits=8; client_max_window_bits=9",
        ),
        (
            DeflateConfig::default().with_server_max_window_bits(200),
            "permessage-deflate; server_max_window_bits=15; client_max_window_bits",
        ),
    ];
    for (config, expected) in rows {
        assert_eq!(format_extensions(&[client_offer(&config)]), expected);
    }
}

/// The client's check of the server's answer: accepted cases with the resulting parameters,
/// then rejections.
#[test]
fn client_accept_table() {
    let default = DeflateConfig::default();
    let asks_10 = DeflateConfig::default().with_server_max_window_bits(10);
    let own_11 = DeflateConfig::default().with_client_max_window_bits(11);
    let own_no_ctx = DeflateConfig::default().with_client_no_context_takeover(true);

    let accepted = [
        ("permessage-deflate", &default, params(false, 15)),
        (
            "permessage-deflate; server_no_context_takeover",
            &default,
            DeflateParams {
                server_no_context_takeover: true,
                ..DeflateParams::default()
            },
        ),
        (
            "permessage-deflate; client_no_context_takeover",
            &default,
            DeflateParams {
                client_no_context_takeover: true,
                ..DeflateParams::default()
            },
        ),
        // We announced client_no_context_takeover: we keep to it even unanswered.
        (
            "permessage-deflate",
            &own_no_ctx,
            DeflateParams {
                client_no_context_takeover: true,
                ..DeflateParams::default()
            },
        ),
        // The server may limit its own window without being asked, down to 8.
        (
            "permessage-deflate; server_max_window_bits=8",
            &default,
            DeflateParams {
                server_max_window_bits: 8,
                ..DeflateParams::default()
            },
        ),
        (
            "permessage-deflate; server_max_window_bits=\"10\"",
            &asks_10,
            DeflateParams {
                server_max_window_bits: 10,
                ..DeflateParams::default()
            },
        ),
        (
            "permessage-deflate; server_max_window_bits=9",
            &asks_10,
            DeflateParams {
                server_max_window_bits: 9,
                ..DeflateParams::default()
            },
        ),
        (
            "permessage-deflate; client_max_window_bits=9",
            &default,
            DeflateParams {
                client_max_window_bits: 9,
                ..DeflateParams::default()
            },
        ),
        // Our own smaller window stays.
        (
            "permessage-deflate; client_max_window_bits=13",
            &own_11,
            DeflateParams {
                client_max_window_bits: 11,
                ..DeflateParams::default()
            },
        ),
        (
            "permessage-deflate",
            &own_11,
            DeflateParams {
                client_max_window_bits: 11,
                ..DeflateParams::default()
            },
        ),
        (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=12; client_max_window_bits=10",
            &default,
            DeflateParams {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                server_max_window_bits: 12,
                client_max_window_bits: 10,
            },
        ),
    ];
    for (header, config, expected) in accepted {
        let answer = offers(header).remove(0);
        assert_eq!(client_accept(&answer, config), Ok(expected), "{header}");
    }

    let name = |s: &str| s.to_owned();
    let bits = |n: &str, v: Option<&str>| DeflateNegotiationError::InvalidWindowBits {
        name: n.to_owned(),
        value: v.map(str::to_owned),
    };
    let rejected = [
        (
            "x-foo",
            &default,
            DeflateNegotiationError::WrongExtension(name("x-foo")),
        ),
        (
            "permessage-deflate; foo",
            &default,
            DeflateNegotiationError::UnknownParameter(name("foo")),
        ),
        (
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            &default,
            DeflateNegotiationError::DuplicateParameter(name("server_no_context_takeover")),
        ),
        (
            "permessage-deflate; client_no_context_takeover=true",
            &default,
            DeflateNegotiationError::UnexpectedValue(name("client_no_context_takeover")),
        ),
        (
            "permessage-deflate; server_max_window_bits",
            &default,
            bits("server_max_window_bits", None),
        ),
        (
            "permessage-deflate; server_max_window_bits=16",
            &default,
            bits("server_max_window_bits", Some("16")),
        ),
        // In an answer client_max_window_bits needs a value.
        (
            "permessage-deflate; client_max_window_bits",
            &default,
            bits("client_max_window_bits", None),
        ),
        (
            "permessage-deflate; client_max_window_bits=7",
            &default,
            bits("client_max_window_bits", Some("7")),
        ),
        // Our compressor cannot do 8 bits.
        (
            "permessage-deflate; client_max_window_bits=8",
            &default,
            DeflateNegotiationError::UnsupportedClientWindow,
        ),
        // We asked for at most 10.
        (
            "permessage-deflate; server_max_window_bits=11",
            &asks_10,
            DeflateNegotiationError::ServerWindowTooLarge {
                offered: 10,
                answered: 11,
            },
        ),
        (
            "permessage-deflate",
            &asks_10,
            DeflateNegotiationError::ServerWindowTooLarge {
                offered: 10,
                answered: 15,
            },
        ),
    ];
    for (header, config, expected) in rejected {
        let answer = offers(header).remove(0);
        assert_eq!(client_accept(&answer, config), Err(expected), "{header}");
    }
}

/// Client offer -> server choice -> client check agree on the parameters, and the codecs they
/// build talk to each other, for a grid of configs on both sides.
#[test]
fn negotiation_end_to_end() {
    let configs = [
        DeflateConfig::default(),
        DeflateConfig::default().with_server_no_context_takeover(true),
        DeflateConfig::default().with_client_no_context_takeover(true),
        DeflateConfig::default().with_server_max_window_bits(9),
        DeflateConfig::default().with_client_max_window_bits(9),
        DeflateConfig::default()
            .with_server_max_window_bits(12)
            .with_client_max_window_bits(8),
        DeflateConfig::default().with_server_max_window_bits(8),
    ];
    let message = b"{\"topic\":\"prices\",\"bid\":101.25,\"ask\":101.5}".repeat(5);
    for client_config in &configs {
        for server_config in &configs {
            let offer = client_offer(client_config);
            let Some((server_params, answer)) =
                server_negotiate(std::slice::from_ref(&offer), server_config)
            else {
                // Only when the client asks for an 8-bit server window, which our compressor
                // cannot honour.
                assert_eq!(client_config.server_max_window_bits, Some(8), "{offer:?}");
                continue;
            };
            let client_params = match client_accept(&answer, client_config) {
                Ok(p) => p,
                Err(DeflateNegotiationError::UnsupportedClientWindow) => {
                    // Only when the server insists on an 8-bit client window.
                    assert_eq!(server_config.client_max_window_bits, Some(8));
                    continue;
                }
                Err(e) => panic!("{offer:?} -> {answer:?}: {e}"),
            };
            assert_eq!(
                client_params.server_max_window_bits,
                server_params.server_max_window_bits
            );
            assert!(client_params.client_max_window_bits <= server_params.client_max_window_bits);
            let mut to_server = Compressor::new(&client_params, Role::Client, client_config);
            let mut at_server = Decompressor::new(&server_params, Role::Server);
            let mut to_client = Compressor::new(&server_params, Role::Server, server_config);
            let mut at_client = Decompressor::new(&client_params, Role::Client);
            for _ in 0..3 {
                let wire = compress(&mut to_server, &message);
                assert_eq!(
                    decompress(&mut at_server, &wire).as_deref(),
                    Ok(&message[..])
                );
                let wire = compress(&mut to_client, &message);
                assert_eq!(
                    decompress(&mut at_client, &wire).as_deref(),
                    Ok(&message[..])
                );
            }
        }
    }
}

#[test]
fn params_by_role() {
    let p = DeflateParams {
        server_no_context_takeover: true,
        client_no_context_takeover: false,
        server_max_window_bits: 10,
        client_max_window_bits: 8,
    };
    assert_eq!(p.compressor_window_bits(Role::Server), 10);
    // Never 8 for our own compressor.
    assert_eq!(p.compressor_window_bits(Role::Client), 9);
    assert_eq!(p.decompressor_window_bits(Role::Client), 15);
    assert_eq!(p.decompressor_window_bits(Role::Server), 15);
    assert!(p.compressor_no_context_takeover(Role::Server));
    assert!(!p.compressor_no_context_takeover(Role::Client));
    assert!(p.decompressor_no_context_takeover(Role::Client));
    assert!(!p.decompressor_no_context_takeover(Role::Server));
}

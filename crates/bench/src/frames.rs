//! The load generator's wire format: masked client frames encoded once (with the kit's
//! builder), payloads, and compressed messages. Echoes are read with the kit's
//! [`FrameCounter`](fullduplex_loadgen::FrameCounter).

use flate2::{Compress, Compression, FlushCompress};
use fullduplex_loadgen::frame::masked_frame_with_key;
use fullduplex_proto::frame::OpCode;

/// The mask key of every generated frame (the servers must unmask; its value is irrelevant).
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Opcodes the generator sends.
pub const TEXT: u8 = 1;
/// Binary frames.
pub const BINARY: u8 = 2;
/// Close frames.
pub const CLOSE: u8 = 8;

/// One masked client frame with FIN set; `rsv1` marks a permessage-deflate payload.
///
/// # Panics
///
/// If `opcode` is not one of RFC 6455's (callers pass this module's constants).
pub fn client_frame(opcode: u8, rsv1: bool, payload: &[u8]) -> Vec<u8> {
    let opcode = OpCode::from_u8(opcode).expect("client_frame: an RFC 6455 opcode");
    masked_frame_with_key(opcode, rsv1, payload, MASK)
}

/// A payload of `size` bytes: ASCII text (valid UTF-8) for text messages, every byte value
/// for binary ones.
pub fn payload(size: usize, binary: bool) -> Vec<u8> {
    if binary {
        (0..size).map(|i| (i * 7 + 3) as u8).collect()
    } else {
        (0..size).map(|i| b'a' + (i % 26) as u8).collect()
    }
}

/// A JSON-like text of about `size` bytes (`variant` changes the values, not the shape): what
/// compression sees in practice.
pub fn json_like(size: usize, variant: usize) -> Vec<u8> {
    let names = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"];
    let mut text = String::from("[");
    let mut i = 0usize;
    while text.len() + 120 < size {
        let n = variant * 1_000 + i;
        text.push_str(&format!(
            "{{\"id\":{n},\"user\":\"{}-{}\",\"price\":{}.{:02},\"active\":{},\"tags\":[\"t{}\",\"x\"]}},",
            names[(n * 5) % names.len()],
            (n * 7919) % 10_007,
            (n * 31) % 997,
            n % 100,
            n % 3 == 0,
            n % 17,
        ));
        i += 1;
    }
    text.push_str("{\"end\":true}]");
    while text.len() < size {
        text.push(' ');
    }
    text.into_bytes()
}

/// Compresses one message for permessage-deflate without context takeover: raw deflate,
/// sync-flushed, the trailing `00 00 ff ff` removed (RFC 7692 section 7.2.1).
pub fn deflate_message(data: &[u8]) -> Vec<u8> {
    let mut compress = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    // One call with room to spare compresses and flushes everything.
    compress
        .compress_vec(data, &mut out, FlushCompress::Sync)
        .expect("deflate");
    while out.len() == out.capacity() {
        out.reserve(data.len());
        compress
            .compress_vec(&[], &mut out, FlushCompress::Sync)
            .expect("deflate");
    }
    if out.ends_with(&[0, 0, 0xff, 0xff]) {
        out.truncate(out.len() - 4);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The generator's mask key is RFC 6455's example key: its masked "Hello" (section 5.7).
    #[test]
    fn client_frames_are_masked_with_the_fixed_key() {
        assert_eq!(
            client_frame(TEXT, false, b"Hello"),
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
        let compressed = client_frame(BINARY, true, &payload(300, true));
        assert_eq!(compressed[..4], [0xc2, 0xfe, 0x01, 0x2c]);
        assert_eq!(client_frame(CLOSE, false, &[])[..2], [0x88, 0x80]);
    }

    #[test]
    fn deflated_message_inflates_back() {
        let text = json_like(1024, 3);
        assert_eq!(text.len(), 1024);
        let mut packed = deflate_message(&text);
        packed.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let mut inflate = flate2::Decompress::new(false);
        let mut out = Vec::with_capacity(4096);
        inflate
            .decompress_vec(&packed, &mut out, flate2::FlushDecompress::Sync)
            .unwrap();
        assert_eq!(out, text);
    }
}

//! Frames built ahead of time, with the shortest length encoding (RFC 6455 section 5.2): a
//! load generator's client frames (masked) only need copying while it runs.

use fullduplex_proto::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
use fullduplex_proto::mask::apply_mask;

/// A random masking key. A zero key is still a valid mask: failing to get randomness from the
/// OS must not stop a run, so it gives zeros.
pub fn random_key() -> [u8; 4] {
    let mut key = [0u8; 4];
    let _ = getrandom::fill(&mut key);
    key
}

/// One final frame of `opcode` carrying `payload`: masked with `mask` when given (a
/// client's frame), unmasked otherwise (a server's); `compressed` sets RSV1 (a
/// permessage-deflate payload).
pub fn encode_frame(
    opcode: OpCode,
    compressed: bool,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> Vec<u8> {
    let mut header = FrameHeader::new(opcode, payload.len() as u64);
    header.rsv1 = compressed;
    header.mask = mask;
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = header.encode(&mut head);
    let mut frame = Vec::with_capacity(n + payload.len());
    frame.extend_from_slice(&head[..n]);
    frame.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut frame[n..], key, 0);
    }
    frame
}

/// One final client frame of `opcode` carrying `payload`, masked with `key`; `compressed`
/// sets RSV1 (a permessage-deflate payload).
pub fn masked_frame_with_key(
    opcode: OpCode,
    compressed: bool,
    payload: &[u8],
    key: [u8; 4],
) -> Vec<u8> {
    encode_frame(opcode, compressed, payload, Some(key))
}

/// One final, uncompressed client frame for `payload`, masked with a [`random_key`].
pub fn masked_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    masked_frame_with_key(opcode, false, payload, random_key())
}

/// A masked close frame with code 1000 (normal closure) and no reason.
pub fn close_frame() -> Vec<u8> {
    masked_frame(OpCode::Close, &1000u16.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frame of RFC 6455 section 5.7: a masked "Hello".
    #[test]
    fn rfc_example_masked_hello() {
        let frame = masked_frame_with_key(OpCode::Text, false, b"Hello", [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(
            frame,
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
    }

    #[test]
    fn lengths_use_the_shortest_encoding_and_rsv1_marks_compression() {
        let key = [1, 2, 3, 4];
        for (size, header_len) in [(0, 6), (125, 6), (126, 8), (65_535, 8), (65_536, 14)] {
            let payload = vec![b'x'; size];
            let frame = masked_frame_with_key(OpCode::Binary, size == 126, &payload, key);
            assert_eq!(frame.len(), header_len + size, "size {size}");
            let (header, len) = FrameHeader::parse(&frame).unwrap().unwrap();
            assert_eq!((len, header.payload_len), (header_len, size as u64));
            assert_eq!(header.rsv1, size == 126);
            assert!(header.fin);
            let mut body = frame[len..].to_vec();
            apply_mask(&mut body, key, 0);
            assert_eq!(body, payload);
        }
        assert_eq!(
            encode_frame(OpCode::Pong, false, b"hi", None),
            [0x8a, 0x02, b'h', b'i']
        );
        let close = close_frame();
        let (header, len) = FrameHeader::parse(&close).unwrap().unwrap();
        assert_eq!(header.opcode, OpCode::Close);
        let mut code = close[len..].to_vec();
        apply_mask(&mut code, header.mask.unwrap(), 0);
        assert_eq!(code, 1000u16.to_be_bytes());
    }
}

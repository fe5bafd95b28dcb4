//! Tagged messages built once: payloads that carry a per-message tag, their client frames
//! masked ahead of time with random keys ([`FrameSet`]), and what a correct echo of each must
//! look like ([`Expected`]).

use fullduplex_proto::frame::OpCode;
use fullduplex_proto::mask::apply_mask;

use crate::frame::masked_frame_with_key;

/// How many distinct messages a connection cycles through (each with its own tag).
pub const DISTINCT: usize = 64;
/// How many bytes at each end of an echo are compared.
const CHECKED: usize = 8;

/// What the payloads look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A repeating ASCII pattern (valid as text and as binary).
    Plain,
    /// JSON-like text, which compresses the way real traffic does.
    Json,
}

/// The 8 ASCII bytes that tag message `index` (`A`-`P`, one per nibble).
fn tag(index: usize) -> [u8; 8] {
    let mut tag = [0u8; 8];
    for (i, byte) in tag.iter_mut().enumerate() {
        *byte = b'A' + ((index >> (4 * i)) & 0xf) as u8;
    }
    tag
}

/// The payload of message `index` (of [`DISTINCT`]): `size` ASCII bytes, starting with its tag
/// (cut to `size`) for [`Style::Plain`], or with `{"seq":"TAG",...` for [`Style::Json`].
pub fn payload(index: usize, size: usize, style: Style) -> Vec<u8> {
    let tag = tag(index);
    let mut out = Vec::with_capacity(size + 128);
    match style {
        Style::Plain => {
            out.extend_from_slice(&tag);
            const PATTERN: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
            while out.len() < size {
                let want = (size - out.len()).min(PATTERN.len());
                out.extend_from_slice(&PATTERN[..want]);
            }
        }
        Style::Json => {
            out.extend_from_slice(b"{\"seq\":\"");
            out.extend_from_slice(&tag);
            out.extend_from_slice(b"\",\"items\":[");
            let mut id = 0u64;
            while out.len() < size {
                let item = format!(
                    "{{\"id\":{id},\"name\":\"item-{id}\",\"price\":{}.{:02},\"tags\":[\"alpha\",\"beta\"],\"in_stock\":{}}},",
                    10 + id * 7 % 90,
                    id * 13 % 100,
                    id % 3 != 0
                );
                out.extend_from_slice(item.as_bytes());
                id += 1;
            }
        }
    }
    out.truncate(size);
    out
}

/// Frames masked ahead of time: `DISTINCT + pipeline` frames back to back, so that any run of
/// up to `pipeline` consecutive messages (starting at any of the first `DISTINCT`) is one
/// contiguous slice, written with one call.
#[derive(Debug)]
pub struct FrameSet {
    bytes: Vec<u8>,
    frame_len: usize,
}

impl FrameSet {
    /// Builds the frames for messages of `size` bytes with up to `pipeline` in a batch.
    pub fn new(opcode: OpCode, size: usize, pipeline: usize, style: Style) -> FrameSet {
        let count = DISTINCT + pipeline;
        let mut keys = vec![0u8; 4 * count];
        let _ = getrandom::fill(&mut keys);
        let payloads: Vec<Vec<u8>> = (0..DISTINCT).map(|j| payload(j, size, style)).collect();
        let mut bytes = Vec::new();
        let mut frame_len = 0;
        for k in 0..count {
            let key = [
                keys[4 * k],
                keys[4 * k + 1],
                keys[4 * k + 2],
                keys[4 * k + 3],
            ];
            let frame = masked_frame_with_key(opcode, false, &payloads[k % DISTINCT], key);
            frame_len = frame.len();
            if bytes.is_empty() {
                bytes.reserve_exact(frame_len * count);
            }
            bytes.extend_from_slice(&frame);
        }
        FrameSet { bytes, frame_len }
    }

    /// The length of one frame (header and payload).
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// The bytes of frames `first..first + count`, skipping `skip` bytes of the first.
    /// `first < DISTINCT` and `count <= pipeline`.
    pub fn bytes(&self, first: usize, count: usize, skip: usize) -> &[u8] {
        let start = first * self.frame_len + skip;
        let end = (first + count) * self.frame_len;
        &self.bytes[start..end]
    }
}

/// What a correct echo of each message looks like: its length and the bytes at both ends.
#[derive(Debug)]
pub struct Expected {
    /// The payload length.
    pub size: u64,
    /// Text or binary.
    pub opcode: OpCode,
    heads: Vec<[u8; CHECKED]>,
    tails: Vec<[u8; CHECKED]>,
    /// How many bytes are compared at each end (8, or less for short messages).
    checked: usize,
}

impl Expected {
    /// The expectations for [`DISTINCT`] messages of `size` bytes.
    pub fn new(opcode: OpCode, size: usize, style: Style) -> Expected {
        let checked = size.min(CHECKED);
        let mut heads = Vec::with_capacity(DISTINCT);
        let mut tails = Vec::with_capacity(DISTINCT);
        for j in 0..DISTINCT {
            let payload = payload(j, size, style);
            let mut head = [0u8; CHECKED];
            head[..checked].copy_from_slice(&payload[..checked]);
            let mut tail = [0u8; CHECKED];
            tail[..checked].copy_from_slice(&payload[size - checked..]);
            heads.push(head);
            tails.push(tail);
        }
        Expected {
            size: size as u64,
            opcode,
            heads,
            tails,
            checked,
        }
    }

    /// Checks `chunk`, the bytes at `offset..` of the echo of message `index`. With `mask`
    /// (a masked echo), `mask_offset` is the position of `chunk` in its frame's payload.
    pub fn check(
        &self,
        index: usize,
        offset: u64,
        chunk: &[u8],
        mask: Option<[u8; 4]>,
        mask_offset: u64,
    ) -> bool {
        let checked = self.checked as u64;
        let end = offset + chunk.len() as u64;
        if offset < checked {
            let to = end.min(checked);
            let expected = &self.heads[index][offset as usize..to as usize];
            let got = &chunk[..(to - offset) as usize];
            if !same(got, expected, mask, mask_offset) {
                return false;
            }
        }
        let tail_start = self.size - checked;
        if end > tail_start {
            let from = offset.max(tail_start);
            let expected =
                &self.tails[index][(from - tail_start) as usize..(end - tail_start) as usize];
            let skip = (from - offset) as usize;
            let got = &chunk[skip..];
            if !same(got, expected, mask, mask_offset + skip as u64) {
                return false;
            }
        }
        true
    }
}

/// `got` (at most 8 bytes, masked with `mask` from `mask_offset` if given) equals `expected`.
fn same(got: &[u8], expected: &[u8], mask: Option<[u8; 4]>, mask_offset: u64) -> bool {
    match mask {
        None => got == expected,
        Some(key) => {
            let mut plain = [0u8; CHECKED];
            let plain = &mut plain[..got.len()];
            plain.copy_from_slice(got);
            apply_mask(plain, key, (mask_offset % 4) as usize);
            plain == expected
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fullduplex_proto::frame::FrameHeader;

    #[test]
    fn payloads_have_the_size_and_are_ascii() {
        for size in [0, 1, 7, 8, 9, 16, 100, 5000] {
            for style in [Style::Plain, Style::Json] {
                let p = payload(3, size, style);
                assert_eq!(p.len(), size);
                assert!(p.is_ascii());
            }
        }
        assert_ne!(payload(1, 16, Style::Plain), payload(2, 16, Style::Plain));
    }

    #[test]
    fn frames_are_masked_payloads_back_to_back() {
        let set = FrameSet::new(OpCode::Binary, 16, 4, Style::Plain);
        assert_eq!(set.frame_len(), 2 + 4 + 16);
        let all = set.bytes(DISTINCT - 1, 4, 0);
        assert_eq!(all.len(), 4 * set.frame_len());
        let (header, len) = FrameHeader::parse(all).unwrap().unwrap();
        assert_eq!(header.payload_len, 16);
        let mut body = all[len..len + 16].to_vec();
        apply_mask(&mut body, header.mask.unwrap(), 0);
        assert_eq!(body, payload(DISTINCT - 1, 16, Style::Plain));
        // The next frame is message 0 again.
        let next = &all[set.frame_len()..];
        let (header, len) = FrameHeader::parse(next).unwrap().unwrap();
        let mut body = next[len..len + 16].to_vec();
        apply_mask(&mut body, header.mask.unwrap(), 0);
        assert_eq!(body, payload(0, 16, Style::Plain));
        assert_eq!(set.bytes(0, 1, 5).len(), set.frame_len() - 5);
    }

    #[test]
    fn check_accepts_the_payload_in_any_pieces_and_rejects_changes() {
        for size in [1usize, 5, 8, 12, 16, 40] {
            let expected = Expected::new(OpCode::Text, size, Style::Plain);
            let p = payload(7, size, Style::Plain);
            for cut in 0..=size {
                assert!(expected.check(7, 0, &p[..cut], None, 0));
                assert!(expected.check(7, cut as u64, &p[cut..], None, 0));
            }
            assert!(!expected.check(8, 0, &p, None, 0), "size {size}");
            let mut bad = p.clone();
            bad[size - 1] ^= 1;
            assert!(!expected.check(7, 0, &bad, None, 0));
            // Masked: split anywhere, with the mask phase following the frame offset.
            let key = [1, 2, 3, 4];
            let mut masked = p.clone();
            apply_mask(&mut masked, key, 0);
            for cut in 0..=size {
                assert!(expected.check(7, 0, &masked[..cut], Some(key), 0));
                assert!(expected.check(7, cut as u64, &masked[cut..], Some(key), cut as u64));
            }
        }
    }
}

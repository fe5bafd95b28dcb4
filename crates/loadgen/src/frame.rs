//! Frames built ahead of time, with the shortest length encoding (RFC 6455 section 5.2): a
//! load generator's client frames (masked) only need copying while it runs. And whole frames
//! read back ([`FrameAssembler`]), for the generators that look into each frame's payload.

use fullduplex_proto::frame::{
    FrameError, FrameHeader, FrameItem, FrameReader, OpCode, MAX_HEADER_LEN,
};
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

/// A whole frame from a [`FrameAssembler`]: its header and its unmasked payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The header, as on the wire (its `mask` tells whether the payload was masked).
    pub header: FrameHeader,
    /// The payload, unmasked: borrowed from the input when the frame arrived whole and
    /// unmasked in one piece, else from the assembler's buffer.
    pub payload: &'a [u8],
}

/// Why a [`FrameAssembler`] stopped. It yields nothing more after one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AssembleError {
    /// A header the core's reader cannot parse (a reserved opcode, a 64-bit length with its
    /// top bit set).
    #[error("invalid frame header: {0}")]
    Frame(#[from] FrameError),
    /// A frame announcing more payload than the assembler's limit.
    #[error("frame of {len} bytes, over the limit of {limit}")]
    TooLarge {
        /// The payload length the header announced.
        len: u64,
        /// The assembler's limit.
        limit: u64,
    },
}

/// Whole frames (header and unmasked payload) out of a byte stream that arrives in pieces,
/// on the core's [`FrameReader`], for load generators that read what a server sends: a frame
/// that arrives whole and unmasked in one piece is lent out of the input without copying;
/// one split across pieces (or masked) is gathered, unmasked, in a buffer of the assembler.
///
/// Like the core's reader it makes no protocol decisions (RSV bits, masking, control-frame
/// rules are the caller's); it only refuses a frame whose announced payload is over the
/// caller's limit, before buffering any of it.
///
/// ```
/// use fullduplex_loadgen::frame::{encode_frame, FrameAssembler};
/// use fullduplex_proto::frame::OpCode;
/// let wire = encode_frame(OpCode::Text, false, b"Hello", Some([0x37, 0xfa, 0x21, 0x3d]));
/// let mut frames = FrameAssembler::new(1 << 20);
/// let (mut first, mut second) = (&wire[..4], &wire[4..]);
/// assert_eq!(frames.next_frame(&mut first), Ok(None));
/// let frame = frames.next_frame(&mut second).unwrap().unwrap();
/// assert_eq!((frame.header.opcode, frame.payload), (OpCode::Text, &b"Hello"[..]));
/// ```
#[derive(Debug, Clone)]
pub struct FrameAssembler {
    reader: FrameReader,
    limit: u64,
    /// The header of the frame whose payload is passing.
    header: Option<FrameHeader>,
    /// That frame's payload so far, unmasked, when it is not lent from the input.
    payload: Vec<u8>,
    error: Option<AssembleError>,
}

impl FrameAssembler {
    /// An assembler at the start of a stream, refusing frames of more than `limit` payload
    /// bytes.
    pub fn new(limit: u64) -> FrameAssembler {
        FrameAssembler {
            reader: FrameReader::new(),
            limit,
            header: None,
            payload: Vec::new(),
            error: None,
        }
    }

    /// The largest payload accepted.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Reads from the front of `input` (the next bytes of the stream) up to the end of the
    /// next frame and returns that frame, leaving `input` at the bytes after it; `Ok(None)`
    /// once all of `input` is consumed without completing a frame (the part read is kept).
    ///
    /// # Errors
    ///
    /// [`AssembleError`] for an unparsable header or a frame over the limit, this time and
    /// every later time.
    pub fn next_frame<'s, 'a: 's>(
        &'s mut self,
        input: &mut &'a [u8],
    ) -> Result<Option<Frame<'s>>, AssembleError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        loop {
            // A frame without payload ends with an empty chunk, which needs no input.
            let frame_ends_empty =
                self.reader.current_header().is_some() && self.reader.payload_remaining() == 0;
            if input.is_empty() && !frame_ends_empty {
                return Ok(None);
            }
            let data: &'a [u8] = input;
            let (used, item) = match self.reader.read(data) {
                Ok(read) => read,
                Err(error) => return Err(self.fail(error.into())),
            };
            *input = &data[used..];
            match item {
                None => {}
                Some(FrameItem::Header(header)) => {
                    if header.payload_len > self.limit {
                        return Err(self.fail(AssembleError::TooLarge {
                            len: header.payload_len,
                            limit: self.limit,
                        }));
                    }
                    self.header = Some(header);
                    self.payload.clear();
                }
                Some(FrameItem::Payload(chunk)) => {
                    let Some(header) = self.header else {
                        continue;
                    };
                    if chunk.is_last && chunk.offset == 0 && chunk.mask.is_none() {
                        self.header = None;
                        return Ok(Some(Frame {
                            header,
                            payload: chunk.data,
                        }));
                    }
                    chunk.unmask_into(&mut self.payload);
                    if chunk.is_last {
                        self.header = None;
                        return Ok(Some(Frame {
                            header,
                            payload: &self.payload,
                        }));
                    }
                }
            }
        }
    }

    /// True between frames: no part of a frame is held.
    pub fn is_at_frame_boundary(&self) -> bool {
        self.reader.is_at_frame_boundary()
    }

    /// Stops the assembler with `error`, and returns it.
    fn fail(&mut self, error: AssembleError) -> AssembleError {
        self.error = Some(error);
        self.header = None;
        self.payload = Vec::new();
        error
    }
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

    /// The frames in `pieces`, fed one after the other: headers and payloads, and whether
    /// each payload was lent from the input.
    fn assemble(
        frames: &mut FrameAssembler,
        pieces: &[&[u8]],
    ) -> Result<Vec<(FrameHeader, Vec<u8>, bool)>, AssembleError> {
        let mut out = Vec::new();
        for piece in pieces {
            let mut input: &[u8] = piece;
            while let Some(frame) = frames.next_frame(&mut input)? {
                let lent = piece.as_ptr_range().contains(&frame.payload.as_ptr());
                out.push((frame.header, frame.payload.to_vec(), lent));
            }
            assert!(input.is_empty());
        }
        Ok(out)
    }

    #[test]
    fn assembles_frames_split_at_every_offset_masked_or_not() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for (i, size) in [0usize, 1, 5, 125, 126, 300, 70_000]
            .into_iter()
            .enumerate()
        {
            let payload: Vec<u8> = (0..size).map(|b| (b * 7 + i) as u8).collect();
            let mask = (i % 2 == 1).then_some(key);
            stream.extend(encode_frame(OpCode::Binary, i == 4, &payload, mask));
            expected.push((payload, mask));
        }
        stream.extend(encode_frame(
            OpCode::Close,
            false,
            &1001u16.to_be_bytes(),
            None,
        ));
        expected.push((1001u16.to_be_bytes().to_vec(), None));
        for step in [1, 2, 3, 7, 13, 1000, stream.len()] {
            let pieces: Vec<&[u8]> = stream.chunks(step).collect();
            let mut frames = FrameAssembler::new(1 << 20);
            let got = assemble(&mut frames, &pieces).unwrap();
            assert_eq!(got.len(), expected.len(), "step {step}");
            for ((header, payload, _), (want, mask)) in got.iter().zip(&expected) {
                assert_eq!(payload, want, "step {step}");
                assert_eq!(header.mask, *mask);
                assert_eq!(header.payload_len, want.len() as u64);
            }
            assert!(got[4].0.rsv1 && !got[3].0.rsv1);
            assert_eq!(got[7].0.opcode, OpCode::Close);
            assert!(frames.is_at_frame_boundary());
        }
    }

    #[test]
    fn whole_unmasked_frames_are_lent_from_the_input() {
        let mut stream = encode_frame(OpCode::Text, false, b"one", None);
        stream.extend(encode_frame(
            OpCode::Text,
            false,
            b"two",
            Some([1, 2, 3, 4]),
        ));
        stream.extend(encode_frame(OpCode::Binary, false, &[5; 300], None));
        let mut frames = FrameAssembler::new(1 << 20);
        let got = assemble(
            &mut frames,
            &[&stream[..stream.len() - 1], &stream[stream.len() - 1..]],
        )
        .unwrap();
        let lent: Vec<bool> = got.iter().map(|(_, _, lent)| *lent).collect();
        // Whole and unmasked: lent; masked: unmasked into the buffer; split: gathered.
        assert_eq!(lent, [true, false, false]);
        assert_eq!(got[1].1, b"two");
        assert_eq!(got[2].1, [5; 300]);
    }

    #[test]
    fn leaves_the_bytes_after_a_frame_in_the_input() {
        let mut stream = encode_frame(OpCode::Text, false, b"first", None);
        stream.extend(encode_frame(OpCode::Ping, false, b"", None));
        stream.extend_from_slice(&[0x81]);
        let mut frames = FrameAssembler::new(16);
        let mut input: &[u8] = &stream;
        let frame = frames.next_frame(&mut input).unwrap().unwrap();
        assert_eq!(frame.payload, b"first");
        assert_eq!(input.len(), 3);
        let frame = frames.next_frame(&mut input).unwrap().unwrap();
        assert_eq!(
            (frame.header.opcode, frame.payload),
            (OpCode::Ping, &[][..])
        );
        assert_eq!(frames.next_frame(&mut input), Ok(None));
        assert!(input.is_empty());
        assert!(!frames.is_at_frame_boundary());
    }

    #[test]
    fn a_payload_over_the_limit_stops_the_assembler() {
        let mut frames = FrameAssembler::new(100);
        assert_eq!(frames.limit(), 100);
        let ok = encode_frame(OpCode::Binary, false, &[1; 100], None);
        let big = encode_frame(OpCode::Binary, false, &[1; 101], Some([1, 2, 3, 4]));
        let stream = [ok.clone(), big, ok].concat();
        let mut input: &[u8] = &stream;
        assert!(frames.next_frame(&mut input).unwrap().is_some());
        let error = AssembleError::TooLarge {
            len: 101,
            limit: 100,
        };
        assert_eq!(frames.next_frame(&mut input), Err(error));
        let mut more: &[u8] = &stream[..102];
        assert_eq!(frames.next_frame(&mut more), Err(error), "stays stopped");
        // 2^62 bytes announced: refused from the header alone, nothing allocated.
        let mut huge = vec![0x82, 127];
        huge.extend_from_slice(&(1u64 << 62).to_be_bytes());
        let mut input: &[u8] = &huge;
        assert_eq!(
            FrameAssembler::new(4 << 20).next_frame(&mut input),
            Err(AssembleError::TooLarge {
                len: 1 << 62,
                limit: 4 << 20
            })
        );
    }

    #[test]
    fn unparsable_headers_are_the_cores_errors() {
        for (wire, error) in [
            (vec![0x83, 0], FrameError::ReservedOpcode(3)),
            (
                vec![0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0],
                FrameError::LengthTooLarge,
            ),
        ] {
            let mut frames = FrameAssembler::new(1 << 20);
            let mut input: &[u8] = &wire;
            assert_eq!(
                frames.next_frame(&mut input),
                Err(AssembleError::Frame(error))
            );
        }
    }
}

//! [`FrameReader`]: frames out of a byte stream that arrives in pieces, without copying.

use super::{FrameError, FrameHeader, MAX_HEADER_LEN};

/// An incremental, sans-I/O frame reader: feed it the bytes of a stream as they arrive, in
/// pieces of any size, and it yields each frame's header and then its payload as borrowed
/// chunks of the fed bytes.
///
/// It makes no protocol decisions: RSV bits, masking by role, control-frame rules, the order
/// of data frames and every size limit are left to the caller. The only errors are headers
/// that cannot be parsed at all ([`FrameError`]: a reserved opcode, which [`FrameHeader`]
/// cannot represent, or a 64-bit length with its top bit set); after one, the reader yields
/// nothing more. It allocates nothing: a header split across pieces is gathered in a
/// 14-byte array, and payload chunks are slices of the input.
///
/// Every frame yields one [`FrameItem::Header`] and then at least one
/// [`FrameItem::Payload`] chunk, the last with [`PayloadChunk::is_last`] set (a frame
/// without payload yields one empty chunk). Chunks are still masked as on the wire; each
/// carries its offset in the frame's payload, which is what
/// [`PayloadChunk::unmask_into`] (or [`apply_mask`](crate::mask::apply_mask)) needs.
///
/// The core's [`Connection`](crate::Connection) parses headers with the same
/// [`FrameHeader::parse`], in its own loop over its receive buffer (which unmasks in place).
///
/// ```
/// use fullduplex_proto::frame::{FrameItem, FrameReader, OpCode};
/// // RFC 6455 section 5.7: a masked "Hello", arriving in two reads.
/// let wire = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
/// let mut reader = FrameReader::new();
/// let mut text = Vec::new();
/// for read in [&wire[..4], &wire[4..]] {
///     for item in reader.feed(read) {
///         match item.unwrap() {
///             FrameItem::Header(header) => assert_eq!(header.opcode, OpCode::Text),
///             FrameItem::Payload(chunk) => chunk.unmask_into(&mut text),
///         }
///     }
/// }
/// assert_eq!(text, b"Hello");
/// assert!(reader.is_at_frame_boundary());
/// ```
#[derive(Debug, Clone, Default)]
pub struct FrameReader {
    /// Header bytes gathered so far, when a header arrived split.
    head: [u8; MAX_HEADER_LEN],
    head_len: u8,
    /// The frame whose payload is passing, and how many payload bytes have passed.
    frame: Option<(FrameHeader, u64)>,
    error: Option<FrameError>,
}

/// What a [`FrameReader`] yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameItem<'a> {
    /// A frame starts; its payload chunks follow.
    Header(FrameHeader),
    /// A piece of the current frame's payload.
    Payload(PayloadChunk<'a>),
}

/// A piece of a frame's payload, borrowed from the bytes fed to the [`FrameReader`], masked
/// as it was on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadChunk<'a> {
    /// The bytes.
    pub data: &'a [u8],
    /// Where `data` starts in the frame's payload.
    pub offset: u64,
    /// The frame's masking key (from its header).
    pub mask: Option<[u8; 4]>,
    /// The frame's payload ends with this chunk.
    pub is_last: bool,
}

impl PayloadChunk<'_> {
    /// Appends the chunk to `dst`, unmasked.
    pub fn unmask_into(&self, dst: &mut Vec<u8>) {
        match self.mask {
            Some(key) => crate::mask::extend_unmasked(dst, self.data, key, self.offset),
            None => dst.extend_from_slice(self.data),
        }
    }
}

impl FrameReader {
    /// A reader at the start of a stream.
    pub fn new() -> FrameReader {
        FrameReader::default()
    }

    /// The items in `input`, the next bytes of the stream. Every byte of `input` is consumed
    /// by the time the iterator is done (or dropped: what it did not yield is skipped, except
    /// for header bytes, which are kept). A frame may start in one call and end in a later one.
    pub fn feed<'r, 'a>(&'r mut self, input: &'a [u8]) -> FrameItems<'r, 'a> {
        FrameItems {
            reader: self,
            input,
        }
    }

    /// Reads the next item from the front of `input`, and returns it with the number of bytes
    /// of `input` it consumed. `Ok((n, None))`: the `n` bytes (all of `input`) were part of a
    /// header that is not complete yet, or `input` was empty.
    ///
    /// # Errors
    ///
    /// The [`FrameError`] of a header that cannot be parsed, this time and every later time.
    pub fn read<'a>(
        &mut self,
        input: &'a [u8],
    ) -> Result<(usize, Option<FrameItem<'a>>), FrameError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        if let Some((header, seen)) = self.frame {
            let left = header.payload_len - seen;
            let take = usize::try_from(left).map_or(input.len(), |left| left.min(input.len()));
            if take == 0 && left > 0 {
                return Ok((0, None));
            }
            let is_last = take as u64 == left;
            self.frame = (!is_last).then_some((header, seen + take as u64));
            let chunk = PayloadChunk {
                data: &input[..take],
                offset: seen,
                mask: header.mask,
                is_last,
            };
            return Ok((take, Some(FrameItem::Payload(chunk))));
        }
        let had = usize::from(self.head_len);
        let parsed = if had == 0 {
            FrameHeader::parse(input)
        } else {
            let take = (MAX_HEADER_LEN - had).min(input.len());
            self.head[had..had + take].copy_from_slice(&input[..take]);
            FrameHeader::parse(&self.head[..had + take])
        };
        match parsed {
            Ok(Some((header, header_len))) => {
                self.head_len = 0;
                self.frame = Some((header, 0));
                Ok((header_len - had, Some(FrameItem::Header(header))))
            }
            Ok(None) => {
                // Fewer than MAX_HEADER_LEN bytes in all, or parse would have succeeded.
                let take = input.len().min(MAX_HEADER_LEN - had);
                if had == 0 {
                    self.head[..take].copy_from_slice(&input[..take]);
                }
                self.head_len = (had + take) as u8;
                Ok((take, None))
            }
            Err(error) => {
                self.error = Some(error);
                Err(error)
            }
        }
    }

    /// True between frames (no header bytes and no payload pending): a frame of one's own
    /// can be inserted into the stream here.
    pub fn is_at_frame_boundary(&self) -> bool {
        self.frame.is_none() && self.head_len == 0 && self.error.is_none()
    }

    /// The header of the frame whose payload is passing, if any.
    pub fn current_header(&self) -> Option<&FrameHeader> {
        self.frame.as_ref().map(|(header, _)| header)
    }

    /// The payload bytes of the current frame still to come (0 between frames).
    pub fn payload_remaining(&self) -> u64 {
        self.frame
            .map_or(0, |(header, seen)| header.payload_len - seen)
    }

    /// The error that stopped the reader, if one did.
    pub fn error(&self) -> Option<FrameError> {
        self.error
    }
}

/// The items of one [`FrameReader::feed`] call.
#[derive(Debug)]
pub struct FrameItems<'r, 'a> {
    reader: &'r mut FrameReader,
    input: &'a [u8],
}

impl<'a> FrameItems<'_, 'a> {
    /// The bytes not consumed yet.
    pub fn remaining(&self) -> &'a [u8] {
        self.input
    }
}

impl<'a> Iterator for FrameItems<'_, 'a> {
    type Item = Result<FrameItem<'a>, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            // A frame's last (or only, empty) chunk needs no input.
            let at_empty_frame_end =
                self.reader.frame.is_some() && self.reader.payload_remaining() == 0;
            if self.input.is_empty() && !at_empty_frame_end {
                return None;
            }
            match self.reader.read(self.input) {
                Ok((used, item)) => {
                    self.input = &self.input[used..];
                    if item.is_some() {
                        return item.map(Ok);
                    }
                }
                Err(error) => {
                    self.input = &[];
                    return Some(Err(error));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::OpCode;

    fn frame(opcode: OpCode, fin: bool, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut header = FrameHeader::new(opcode, payload.len() as u64);
        header.fin = fin;
        header.mask = mask;
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut head);
        let mut out = head[..n].to_vec();
        let start = out.len();
        out.extend_from_slice(payload);
        if let Some(key) = mask {
            crate::mask::apply_mask(&mut out[start..], key, 0);
        }
        out
    }

    /// Headers and unmasked payloads of `pieces`, fed one after the other.
    fn read_all(pieces: &[&[u8]]) -> (Vec<(FrameHeader, Vec<u8>)>, FrameReader) {
        let mut reader = FrameReader::new();
        let mut frames: Vec<(FrameHeader, Vec<u8>)> = Vec::new();
        let mut open = false;
        for piece in pieces {
            for item in reader.feed(piece) {
                match item.unwrap() {
                    FrameItem::Header(header) => {
                        assert!(!open, "a header inside a frame");
                        open = true;
                        frames.push((header, Vec::new()));
                    }
                    FrameItem::Payload(chunk) => {
                        assert!(open, "a chunk outside a frame");
                        let (_, payload) = frames.last_mut().unwrap();
                        assert_eq!(chunk.offset, payload.len() as u64);
                        chunk.unmask_into(payload);
                        open = !chunk.is_last;
                    }
                }
            }
        }
        (frames, reader)
    }

    #[test]
    fn frames_split_at_every_byte_come_out_the_same() {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        let key = Some([1, 2, 3, 4]);
        for (i, len) in [0usize, 1, 5, 125, 126, 300, 70_000]
            .into_iter()
            .enumerate()
        {
            let payload: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
            let mask = if i % 2 == 0 { key } else { None };
            stream.extend(frame(OpCode::Binary, i % 3 != 0, &payload, mask));
            expected.push(payload);
        }
        stream.extend(frame(OpCode::Ping, true, b"", None));
        expected.push(Vec::new());
        for step in [1, 2, 3, 7, 13, 1000, stream.len()] {
            let pieces: Vec<&[u8]> = stream.chunks(step).collect();
            let (frames, reader) = read_all(&pieces);
            let payloads: Vec<Vec<u8>> = frames.into_iter().map(|(_, p)| p).collect();
            assert_eq!(payloads, expected, "step {step}");
            assert!(reader.is_at_frame_boundary());
        }
    }

    #[test]
    fn an_empty_frame_yields_its_header_and_one_empty_last_chunk() {
        let wire = frame(OpCode::Close, true, b"", Some([9, 9, 9, 9]));
        let mut reader = FrameReader::new();
        let items: Vec<_> = reader.feed(&wire).map(Result::unwrap).collect();
        assert_eq!(items.len(), 2);
        assert!(matches!(items[0], FrameItem::Header(h) if h.opcode == OpCode::Close));
        assert!(matches!(
            items[1],
            FrameItem::Payload(PayloadChunk {
                data: [],
                offset: 0,
                is_last: true,
                ..
            })
        ));
        assert!(reader.is_at_frame_boundary());
    }

    #[test]
    fn reports_position_between_reads() {
        let wire = frame(OpCode::Text, true, b"hello", None);
        let mut reader = FrameReader::new();
        assert_eq!(reader.feed(&wire[..1]).count(), 0);
        assert!(!reader.is_at_frame_boundary());
        let items: Vec<_> = reader.feed(&wire[1..4]).map(Result::unwrap).collect();
        assert_eq!(items.len(), 2);
        assert_eq!(reader.current_header().map(|h| h.payload_len), Some(5));
        assert_eq!(reader.payload_remaining(), 3);
        assert_eq!(reader.feed(&wire[4..]).count(), 1);
        assert!(reader.is_at_frame_boundary());
    }

    #[test]
    fn makes_no_protocol_decisions() {
        // RSV bits, a fragmented ping, an oversized control frame, a continuation with no
        // message: all read as they are.
        let mut wire = vec![0x70 | 0x09, 126, 0, 200];
        wire.extend(std::iter::repeat_n(0u8, 200));
        wire.extend([0x00, 0x00]);
        let (frames, _) = read_all(&[&wire]);
        assert_eq!(frames.len(), 2);
        assert!(frames[0].0.rsv1 && frames[0].0.rsv2 && frames[0].0.rsv3);
        assert!(!frames[0].0.fin);
        assert_eq!(frames[0].1.len(), 200);
        assert_eq!(frames[1].0.opcode, OpCode::Continuation);
    }

    #[test]
    fn an_unparsable_header_stops_the_reader() {
        let mut reader = FrameReader::new();
        let wire = [0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3];
        assert_eq!(reader.feed(&wire[..5]).count(), 0);
        let items: Vec<_> = reader.feed(&wire[5..]).collect();
        assert_eq!(items, vec![Err(FrameError::LengthTooLarge)]);
        assert_eq!(reader.error(), Some(FrameError::LengthTooLarge));
        assert_eq!(
            reader.feed(&[0x81, 0]).count(),
            1,
            "the error again, nothing else"
        );
        let mut reserved = FrameReader::new();
        assert_eq!(
            reserved.read(&[0x83, 0]),
            Err(FrameError::ReservedOpcode(3))
        );
    }

    #[test]
    fn read_consumes_header_bytes_one_call_at_a_time() {
        let wire = frame(OpCode::Binary, true, &[7; 300], None);
        let mut reader = FrameReader::new();
        assert_eq!(reader.read(&wire[..1]), Ok((1, None)));
        assert_eq!(reader.read(&wire[1..3]), Ok((2, None)));
        let (used, item) = reader.read(&wire[3..]).unwrap();
        assert_eq!(used, 1);
        assert!(matches!(item, Some(FrameItem::Header(h)) if h.payload_len == 300));
        let (used, item) = reader.read(&wire[4..]).unwrap();
        assert_eq!(used, 300);
        assert!(matches!(item, Some(FrameItem::Payload(c)) if c.is_last && c.data == [7; 300]));
    }
}

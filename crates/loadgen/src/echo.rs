//! Reading an echo server's answers as they stream past, with the core's
//! [`FrameReader`]: payloads are never buffered, so messages of any size run through a small
//! read buffer.
//!
//! * [`EchoParser`] checks every echo cheaply against the [`Expected`] tagged messages
//!   (opcode, length, both ends), answers pings and reports the close frame (`fdx bench`).
//! * [`FrameCounter`] only reports each frame's opcode, FIN bit and length, for a generator
//!   that counts echoes and checks their lengths itself (`fullduplex-bench load`).

use fullduplex_proto::frame::{FrameError, FrameHeader, FrameItem, FrameReader, OpCode};

use crate::frame::masked_frame;
use crate::message::{Expected, DISTINCT};

/// Why the stream of echoes stopped being acceptable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The frame header is invalid.
    #[error("invalid frame from the server: {0}")]
    Frame(#[from] FrameError),
    /// RSV bits set without a negotiated extension.
    #[error("frame from the server with RSV bits set")]
    Reserved,
    /// A data frame that does not fit the message being received.
    #[error("unexpected {0:?} frame from the server")]
    UnexpectedOpcode(OpCode),
    /// A fragmented control frame or one with more than 125 bytes.
    #[error("invalid control frame from the server")]
    BadControl,
    /// The echo is longer or shorter than the message.
    #[error("echo of the wrong length")]
    WrongLength,
    /// The echo's bytes differ from the message's.
    #[error("echo with the wrong content")]
    WrongContent,
    /// More echoes than messages sent.
    #[error("an echo of a message that was not sent")]
    Unsolicited,
    /// The server sent a close frame.
    #[error("the server closed the connection{}", code.map(|c| format!(" with {c}")).unwrap_or_default())]
    Closed {
        /// The close code, if the frame carried one.
        code: Option<u16>,
    },
}

/// Checks the echoes of [`Expected`] messages, in order; see the module documentation.
#[derive(Debug, Default)]
pub struct EchoParser {
    reader: FrameReader,
    /// The header of the frame whose payload is passing.
    frame: Option<FrameHeader>,
    /// Inside a (possibly fragmented) echo.
    in_message: bool,
    /// Bytes of the current echo seen so far.
    offset: u64,
    /// Complete echoes so far: the next echo is of message `received % DISTINCT`.
    received: u64,
    /// The payload of the control frame being received, unmasked.
    control: Vec<u8>,
    /// Frames to send back (pongs), masked.
    pub replies: Vec<u8>,
    /// Skip data frames without checking them (draining after the run).
    skip_data: bool,
}

impl EchoParser {
    /// A parser at the start of the stream.
    pub fn new() -> EchoParser {
        EchoParser::default()
    }

    /// From now on, data frames are skipped unchecked: only the close frame matters.
    pub fn drain(&mut self) {
        self.skip_data = true;
    }

    /// Reads `data`, the next bytes from the server, and returns how many echoes it completed.
    ///
    /// # Errors
    ///
    /// The first [`ParseError`] in `data`: an invalid frame, a wrong echo or the server's close
    /// frame. The stream is not acceptable after it.
    pub fn feed(&mut self, expected: &Expected, mut data: &[u8]) -> Result<usize, ParseError> {
        let mut echoes = 0;
        loop {
            // A frame without payload ends with an empty chunk, which needs no input.
            let frame_ends_empty =
                self.reader.current_header().is_some() && self.reader.payload_remaining() == 0;
            if data.is_empty() && !frame_ends_empty {
                return Ok(echoes);
            }
            let (used, item) = self.reader.read(data)?;
            data = &data[used..];
            match item {
                None => {}
                Some(FrameItem::Header(header)) => self.start_frame(header, expected)?,
                Some(FrameItem::Payload(chunk)) => {
                    let Some(header) = self.frame else {
                        continue;
                    };
                    if header.opcode.is_control() {
                        chunk.unmask_into(&mut self.control);
                    } else if !self.skip_data {
                        let index = (self.received % DISTINCT as u64) as usize;
                        if !expected.check(index, self.offset, chunk.data, chunk.mask, chunk.offset)
                        {
                            return Err(ParseError::WrongContent);
                        }
                        self.offset += chunk.data.len() as u64;
                    }
                    if chunk.is_last {
                        echoes += self.end_frame(header, expected)?;
                    }
                }
            }
        }
    }

    /// Checks a new frame's header against what may come.
    fn start_frame(&mut self, header: FrameHeader, expected: &Expected) -> Result<(), ParseError> {
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(ParseError::Reserved);
        }
        let opcode = header.opcode;
        if opcode.is_control() {
            if !header.fin || header.payload_len > 125 {
                return Err(ParseError::BadControl);
            }
            self.control.clear();
        } else if !self.skip_data {
            match opcode {
                OpCode::Continuation if self.in_message => {}
                OpCode::Text | OpCode::Binary => {
                    if self.in_message || opcode != expected.opcode {
                        return Err(ParseError::UnexpectedOpcode(opcode));
                    }
                    self.in_message = true;
                    self.offset = 0;
                }
                _ => return Err(ParseError::UnexpectedOpcode(opcode)),
            }
            if header.payload_len > expected.size - self.offset {
                return Err(ParseError::WrongLength);
            }
        }
        self.frame = Some(header);
        Ok(())
    }

    /// A frame's payload is complete; returns 1 if it completed an echo.
    fn end_frame(&mut self, header: FrameHeader, expected: &Expected) -> Result<usize, ParseError> {
        self.frame = None;
        if header.opcode.is_control() {
            return match header.opcode {
                OpCode::Ping => {
                    self.replies
                        .extend_from_slice(&masked_frame(OpCode::Pong, &self.control));
                    Ok(0)
                }
                OpCode::Close => {
                    let code = match self.control[..] {
                        [a, b, ..] => Some(u16::from_be_bytes([a, b])),
                        _ => None,
                    };
                    Err(ParseError::Closed { code })
                }
                _ => Ok(0),
            };
        }
        if self.skip_data || !header.fin {
            return Ok(0);
        }
        self.in_message = false;
        if self.offset != expected.size {
            return Err(ParseError::WrongLength);
        }
        self.received += 1;
        Ok(1)
    }
}

/// A frame a [`FrameCounter`] saw end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoFrame {
    /// The opcode.
    pub opcode: OpCode,
    /// FIN.
    pub fin: bool,
    /// The payload length.
    pub len: u64,
}

/// Why a [`FrameCounter`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CountError {
    /// The frame header is invalid.
    #[error("invalid frame from the server: {0}")]
    Frame(#[from] FrameError),
    /// RSV2 or RSV3 set (RSV1 is permessage-deflate's, and allowed).
    #[error("frame from the server with RSV2 or RSV3 set")]
    Reserved,
}

/// Reports the frames in a byte stream, skipping their payloads: an echo server's answers,
/// or, from a plain TCP echo, the generator's own masked frames.
#[derive(Debug, Default)]
pub struct FrameCounter {
    reader: FrameReader,
    /// The header of the frame whose payload is passing.
    frame: Option<FrameHeader>,
}

impl FrameCounter {
    /// A counter at the start of the stream.
    pub fn new() -> FrameCounter {
        FrameCounter::default()
    }

    /// Reads `data`, the next bytes of the stream, and calls `on_frame` for every frame that
    /// ends in it.
    ///
    /// # Errors
    ///
    /// [`CountError`] for an unparsable header or RSV2/RSV3; the stream is not acceptable
    /// after it.
    pub fn feed(
        &mut self,
        data: &[u8],
        mut on_frame: impl FnMut(EchoFrame),
    ) -> Result<(), CountError> {
        let FrameCounter { reader, frame } = self;
        for item in reader.feed(data) {
            match item? {
                FrameItem::Header(header) => {
                    if header.rsv2 || header.rsv3 {
                        return Err(CountError::Reserved);
                    }
                    *frame = Some(header);
                }
                FrameItem::Payload(chunk) if chunk.is_last => {
                    if let Some(header) = frame.take() {
                        on_frame(EchoFrame {
                            opcode: header.opcode,
                            fin: header.fin,
                            len: header.payload_len,
                        });
                    }
                }
                FrameItem::Payload(_) => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::masked_frame_with_key;
    use crate::message::{payload, Style};
    use fullduplex_proto::mask::apply_mask;

    /// A server frame: unmasked unless `mask` is given; `fin` false leaves FIN clear.
    fn frame(opcode: OpCode, fin: bool, body: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut frame = crate::frame::encode_frame(opcode, false, body, mask);
        if !fin {
            frame[0] &= 0x7f;
        }
        frame
    }

    fn echoes(size: usize, count: usize, mask: Option<[u8; 4]>) -> Vec<u8> {
        (0..count)
            .flat_map(|j| frame(OpCode::Binary, true, &payload(j, size, Style::Plain), mask))
            .collect()
    }

    #[test]
    fn counts_echoes_split_at_any_byte() {
        for size in [0, 3, 16, 200, 70_000] {
            let expected = Expected::new(OpCode::Binary, size, Style::Plain);
            for mask in [None, Some([9, 8, 7, 6])] {
                let stream = echoes(size, 3, mask);
                let step = (stream.len() / 97).max(1);
                for cut in (0..=stream.len()).step_by(step) {
                    let mut parser = EchoParser::new();
                    let a = parser.feed(&expected, &stream[..cut]).unwrap();
                    let b = parser.feed(&expected, &stream[cut..]).unwrap();
                    assert_eq!(a + b, 3, "size {size} cut {cut}");
                }
                // Byte by byte.
                let mut parser = EchoParser::new();
                let total: usize = stream
                    .iter()
                    .map(|b| parser.feed(&expected, std::slice::from_ref(b)).unwrap())
                    .sum();
                assert_eq!(total, 3);
            }
        }
    }

    #[test]
    fn fragmented_echo_is_one_message() {
        let expected = Expected::new(OpCode::Text, 20, Style::Plain);
        let body = payload(0, 20, Style::Plain);
        let mut stream = frame(OpCode::Text, false, &body[..5], None);
        stream.extend(frame(OpCode::Ping, true, b"hi", None));
        stream.extend(frame(OpCode::Continuation, false, &body[5..5], None));
        stream.extend(frame(OpCode::Continuation, true, &body[5..], None));
        let mut parser = EchoParser::new();
        assert_eq!(parser.feed(&expected, &stream).unwrap(), 1);
        // The ping was answered with a masked pong carrying its payload.
        let (pong, len) = FrameHeader::parse(&parser.replies).unwrap().unwrap();
        assert_eq!(pong.opcode, OpCode::Pong);
        let mut data = parser.replies[len..].to_vec();
        apply_mask(&mut data, pong.mask.unwrap(), 0);
        assert_eq!(data, b"hi");
    }

    #[test]
    fn wrong_echoes_fail() {
        let expected = Expected::new(OpCode::Binary, 16, Style::Plain);
        let good = payload(0, 16, Style::Plain);
        let feed = |stream: Vec<u8>| EchoParser::new().feed(&expected, &stream);
        assert!(matches!(
            feed(frame(OpCode::Text, true, &good, None)),
            Err(ParseError::UnexpectedOpcode(OpCode::Text))
        ));
        assert!(matches!(
            feed(frame(OpCode::Binary, true, &good[..15], None)),
            Err(ParseError::WrongLength)
        ));
        assert!(matches!(
            feed(frame(
                OpCode::Binary,
                true,
                &[good.clone(), vec![0]].concat(),
                None
            )),
            Err(ParseError::WrongLength)
        ));
        assert!(matches!(
            feed(frame(
                OpCode::Binary,
                true,
                &payload(1, 16, Style::Plain),
                None
            )),
            Err(ParseError::WrongContent)
        ));
        assert!(matches!(
            feed(frame(OpCode::Continuation, true, &good, None)),
            Err(ParseError::UnexpectedOpcode(OpCode::Continuation))
        ));
        assert!(matches!(
            feed(vec![0x82 | 0x40, 0]),
            Err(ParseError::Reserved)
        ));
        assert!(matches!(feed(vec![0x83, 0]), Err(ParseError::Frame(_))));
        assert!(matches!(
            feed(frame(OpCode::Ping, true, &[0; 126], None)),
            Err(ParseError::BadControl)
        ));
    }

    #[test]
    fn close_is_reported_and_draining_skips_data() {
        let expected = Expected::new(OpCode::Binary, 16, Style::Plain);
        let mut stream = frame(OpCode::Binary, true, b"anything at all", None);
        stream.extend(frame(OpCode::Close, true, &1001u16.to_be_bytes(), None));
        let mut parser = EchoParser::new();
        parser.drain();
        assert!(matches!(
            parser.feed(&expected, &stream),
            Err(ParseError::Closed { code: Some(1001) })
        ));
        let mut parser = EchoParser::new();
        assert!(matches!(
            parser.feed(&expected, &frame(OpCode::Close, true, &[], None)),
            Err(ParseError::Closed { code: None })
        ));
    }

    #[test]
    fn counter_reports_frames_split_at_every_offset() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let mut stream = Vec::new();
        for size in [0usize, 5, 125, 126, 300, 70_000] {
            stream.extend(masked_frame_with_key(
                OpCode::Binary,
                false,
                &vec![7; size],
                key,
            ));
        }
        stream.extend(frame(OpCode::Text, false, b"abc", None));
        stream.extend(frame(OpCode::Close, true, &[], None));
        for step in [1, 2, 3, 7, 1000, stream.len()] {
            let mut counter = FrameCounter::new();
            let mut frames = Vec::new();
            for piece in stream.chunks(step) {
                counter.feed(piece, |f| frames.push(f)).unwrap();
            }
            let lens: Vec<u64> = frames.iter().map(|f| f.len).collect();
            assert_eq!(lens, [0, 5, 125, 126, 300, 70_000, 3, 0], "step {step}");
            assert_eq!(
                frames[6],
                EchoFrame {
                    opcode: OpCode::Text,
                    fin: false,
                    len: 3
                }
            );
            assert_eq!(frames[7].opcode, OpCode::Close);
        }
    }

    #[test]
    fn counter_allows_rsv1_and_refuses_rsv2_rsv3_and_bad_headers() {
        let mut compressed = frame(OpCode::Binary, true, b"xy", None);
        compressed[0] |= 0x40;
        let mut seen = 0;
        FrameCounter::new()
            .feed(&compressed, |_| seen += 1)
            .unwrap();
        assert_eq!(seen, 1);
        for first in [0x82 | 0x20, 0x82 | 0x10] {
            assert_eq!(
                FrameCounter::new().feed(&[first, 0], |_| {}),
                Err(CountError::Reserved)
            );
        }
        assert!(matches!(
            FrameCounter::new().feed(&[0x83, 0], |_| {}),
            Err(CountError::Frame(_))
        ));
    }
}

//! A streaming reader of the server's frames on the raw path: counts complete echoes and checks
//! them cheaply (opcode, length, both ends), answers pings, reports the close frame.
//!
//! It never buffers a payload: bytes are checked as they pass, so messages of any size run
//! through a small read buffer. Only control payloads (at most 125 bytes) are collected.

use fullduplex::proto::frame::{FrameError, FrameHeader, OpCode, MAX_HEADER_LEN};
use fullduplex::proto::mask::apply_mask;

use super::frames::{masked_frame, Expected, DISTINCT};

/// Why the stream of echoes stopped being acceptable.
#[derive(Debug, thiserror::Error)]
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

/// Where the reader stands in the byte stream.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Between frames (part of a header may be stashed).
    Header,
    /// Inside a frame's payload.
    Payload {
        opcode: OpCode,
        fin: bool,
        mask: Option<[u8; 4]>,
        /// Payload bytes still to come.
        remaining: u64,
        /// Payload bytes seen so far (the mask phase).
        pos: u64,
    },
}

/// The reader; see the module documentation.
#[derive(Debug)]
pub struct EchoParser {
    state: State,
    /// A header split across reads.
    head: [u8; MAX_HEADER_LEN],
    head_len: usize,
    /// Inside a (possibly fragmented) echo.
    in_message: bool,
    /// Bytes of the current echo seen so far.
    offset: u64,
    /// Complete echoes so far: the next echo is of message `received % DISTINCT`.
    received: u64,
    /// The payload of the control frame being received.
    control: Vec<u8>,
    /// Frames to send back (pongs), masked.
    pub replies: Vec<u8>,
    /// Skip data frames without checking them (draining after the run).
    skip_data: bool,
}

impl EchoParser {
    /// A reader at the start of the stream.
    pub fn new() -> EchoParser {
        EchoParser {
            state: State::Header,
            head: [0; MAX_HEADER_LEN],
            head_len: 0,
            in_message: false,
            offset: 0,
            received: 0,
            control: Vec::new(),
            replies: Vec::new(),
            skip_data: false,
        }
    }

    /// From now on, data frames are skipped unchecked: only the close frame matters.
    pub fn drain(&mut self) {
        self.skip_data = true;
    }

    /// Reads `data`, returns how many echoes it completed.
    pub fn feed(&mut self, expected: &Expected, mut data: &[u8]) -> Result<usize, ParseError> {
        let mut echoes = 0;
        while !data.is_empty() {
            match self.state {
                State::Header => {
                    let (header, used) = if self.head_len == 0 {
                        match FrameHeader::parse(data)? {
                            Some(parsed) => parsed,
                            None => {
                                let n = data.len().min(MAX_HEADER_LEN);
                                self.head[..n].copy_from_slice(&data[..n]);
                                self.head_len = n;
                                return Ok(echoes);
                            }
                        }
                    } else {
                        let old = self.head_len;
                        let take = (MAX_HEADER_LEN - old).min(data.len());
                        self.head[old..old + take].copy_from_slice(&data[..take]);
                        match FrameHeader::parse(&self.head[..old + take])? {
                            Some((header, len)) => {
                                self.head_len = 0;
                                (header, len - old)
                            }
                            None => {
                                self.head_len = old + take;
                                data = &data[take..];
                                continue;
                            }
                        }
                    };
                    data = &data[used..];
                    echoes += self.start_frame(header, expected)?;
                }
                State::Payload {
                    opcode,
                    fin,
                    mask,
                    remaining,
                    pos,
                } => {
                    let n = remaining.min(data.len() as u64) as usize;
                    let (chunk, rest) = data.split_at(n);
                    data = rest;
                    if opcode.is_control() {
                        self.control.extend_from_slice(chunk);
                    } else if !self.skip_data {
                        let index = (self.received % DISTINCT as u64) as usize;
                        if !expected.check(index, self.offset, chunk, mask, pos) {
                            return Err(ParseError::WrongContent);
                        }
                        self.offset += n as u64;
                    }
                    let remaining = remaining - n as u64;
                    self.state = State::Payload {
                        opcode,
                        fin,
                        mask,
                        remaining,
                        pos: pos + n as u64,
                    };
                    if remaining == 0 {
                        echoes += self.end_frame(expected)?;
                    }
                }
            }
        }
        Ok(echoes)
    }

    /// Checks a new frame's header against what may come; returns 1 if an empty frame
    /// completed an echo.
    fn start_frame(
        &mut self,
        header: FrameHeader,
        expected: &Expected,
    ) -> Result<usize, ParseError> {
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
        self.state = State::Payload {
            opcode,
            fin: header.fin,
            mask: header.mask,
            remaining: header.payload_len,
            pos: 0,
        };
        if header.payload_len == 0 {
            return self.end_frame(expected);
        }
        Ok(0)
    }

    /// A frame's payload is complete; returns 1 if it completed an echo.
    fn end_frame(&mut self, expected: &Expected) -> Result<usize, ParseError> {
        let State::Payload {
            opcode, fin, mask, ..
        } = self.state
        else {
            return Ok(0);
        };
        self.state = State::Header;
        if opcode.is_control() {
            if let Some(key) = mask {
                apply_mask(&mut self.control, key, 0);
            }
            return match opcode {
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
        if self.skip_data || !fin {
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

impl Default for EchoParser {
    fn default() -> Self {
        EchoParser::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::frames::{payload, Style};

    /// A server frame: unmasked unless `mask` is given.
    fn frame(opcode: OpCode, fin: bool, body: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut header = FrameHeader::new(opcode, body.len() as u64);
        header.fin = fin;
        header.mask = mask;
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut head);
        let mut out = head[..n].to_vec();
        let start = out.len();
        out.extend_from_slice(body);
        if let Some(key) = mask {
            apply_mask(&mut out[start..], key, 0);
        }
        out
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
}

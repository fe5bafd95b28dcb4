//! The load generator's wire format: masked client frames encoded once, and a parser that
//! counts the echoed frames without copying their payloads.

use flate2::{Compress, Compression, FlushCompress};

/// The mask key of every generated frame (the servers must unmask; its value is irrelevant).
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Opcodes the generator sends.
pub const TEXT: u8 = 1;
/// Binary frames.
pub const BINARY: u8 = 2;
/// Close frames.
pub const CLOSE: u8 = 8;

/// One masked client frame with FIN set; `rsv1` marks a permessage-deflate payload.
pub fn client_frame(opcode: u8, rsv1: bool, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(0x80 | (u8::from(rsv1) << 6) | opcode);
    match payload.len() {
        n @ 0..=125 => frame.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&MASK);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    frame
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

/// A frame the parser completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoFrame {
    /// The opcode.
    pub opcode: u8,
    /// FIN.
    pub fin: bool,
    /// The payload length.
    pub len: u64,
}

/// Parses frames from the bytes read, skipping payloads (an echo server's answers, or, from
/// the TCP floor, our own masked frames).
#[derive(Debug, Default)]
pub struct EchoParser {
    header: [u8; 14],
    header_len: usize,
    /// Payload bytes of the current frame still to skip.
    skip: u64,
    current: Option<EchoFrame>,
}

/// The server sent something that is not a frame the generator expects.
#[derive(Debug)]
pub struct BadFrame;

impl EchoParser {
    /// Feeds `data`; calls `on_frame` for every frame that completes in it.
    pub fn feed(
        &mut self,
        mut data: &[u8],
        mut on_frame: impl FnMut(EchoFrame),
    ) -> Result<(), BadFrame> {
        while !data.is_empty() {
            if let Some(frame) = self.current {
                let n = (self.skip.min(data.len() as u64)) as usize;
                self.skip -= n as u64;
                data = &data[n..];
                if self.skip == 0 {
                    self.current = None;
                    on_frame(frame);
                }
                continue;
            }
            // Collect the header, then the payload.
            let needed = self.needed_header_len();
            let take = (needed - self.header_len).min(data.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&data[..take]);
            self.header_len += take;
            data = &data[take..];
            if self.header_len < self.needed_header_len() {
                continue;
            }
            let frame = self.parse_header()?;
            self.header_len = 0;
            if frame.len == 0 {
                on_frame(frame);
            } else {
                self.skip = frame.len;
                self.current = Some(frame);
            }
        }
        Ok(())
    }

    fn needed_header_len(&self) -> usize {
        if self.header_len < 2 {
            return 2;
        }
        let masked = self.header[1] & 0x80 != 0;
        let extended = match self.header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        2 + extended + if masked { 4 } else { 0 }
    }

    fn parse_header(&self) -> Result<EchoFrame, BadFrame> {
        let h = &self.header;
        let len = match h[1] & 0x7f {
            126 => u16::from_be_bytes([h[2], h[3]]) as u64,
            127 => u64::from_be_bytes(h[2..10].try_into().map_err(|_| BadFrame)?),
            n => n as u64,
        };
        if h[0] & 0x30 != 0 {
            return Err(BadFrame);
        }
        Ok(EchoFrame {
            opcode: h[0] & 0x0f,
            fin: h[0] & 0x80 != 0,
            len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_counts_frames_split_at_every_offset() {
        let mut stream = Vec::new();
        for size in [0usize, 5, 125, 126, 300, 70_000] {
            stream.extend(client_frame(BINARY, false, &payload(size, true)));
        }
        for step in [1, 2, 3, 7, 1000, stream.len()] {
            let mut parser = EchoParser::default();
            let mut lens = Vec::new();
            for piece in stream.chunks(step) {
                parser.feed(piece, |f| lens.push(f.len)).unwrap();
            }
            assert_eq!(lens, [0, 5, 125, 126, 300, 70_000], "step {step}");
        }
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

//! Watching one direction of a WebSocket byte stream without changing it.
//!
//! The inspecting relay (`fdx inspect`) forwards bytes exactly as they arrive; a [`FrameTap`]
//! looks at the same bytes on the way through and turns them into [`FrameRecord`]s: one per
//! frame, with the header bits, the payload (unmasked, inflated when permessage-deflate is in
//! use, cut at a limit) and the close code. It never holds more than one frame's logged
//! prefix, whatever the frame size. Frames are read with the core's [`FrameReader`], which
//! hands out each payload in the pieces it arrived in, with their offset for unmasking.

use bytes::BytesMut;
use fullduplex::proto::deflate::{Decompressor, DeflateParams};
use fullduplex::proto::frame::{FrameHeader, FrameItem, FrameReader, OpCode};
use fullduplex::proto::mask::apply_mask;
use fullduplex::Role;

/// Compressed input is inflated in pieces of at most this many bytes, so that one piece
/// inflates to at most about 1 MiB (DEFLATE's ratio is bounded by about 1032:1) before the
/// logged prefix is cut back to the limit.
const INFLATE_PIECE: usize = 1024;

/// The largest valid control frame payload (RFC 6455 section 5.5): a close frame's whole
/// payload is kept up to this, for its code and reason.
const MAX_CONTROL_PAYLOAD: usize = 125;

/// Which way the bytes flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client (browser) to the upstream server: masked frames.
    ClientToServer,
    /// From the upstream server to the client: unmasked frames.
    ServerToClient,
}

impl Direction {
    /// `client->server` or `server->client`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ClientToServer => "client->server",
            Direction::ServerToClient => "server->client",
        }
    }

    /// The role of the endpoint that receives (and would inflate) these frames.
    fn receiver(self) -> Role {
        match self {
            Direction::ClientToServer => Role::Server,
            Direction::ServerToClient => Role::Client,
        }
    }
}

/// One frame as seen on the wire, ready to be logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameRecord {
    /// The header as sent (FIN, RSV bits, opcode, mask key, wire payload length).
    pub header: FrameHeader,
    /// For data frames: whether the message this frame belongs to is compressed (RSV1 on its
    /// first frame).
    pub compressed: bool,
    /// The kind of message a continuation frame belongs to (`Text` or `Binary`); the opcode
    /// itself for other frames.
    pub message_kind: OpCode,
    /// The payload bytes this frame contributes: unmasked and, for a compressed message,
    /// inflated. Cut at the limit.
    pub payload: Vec<u8>,
    /// The full length of that payload (after inflating), of which `payload` is a prefix.
    pub payload_len: u64,
    /// For a close frame with a body: the code and the reason (lossy UTF-8).
    pub close: Option<(u16, String)>,
    /// Why the payload could not be inflated, when it could not.
    pub inflate_error: Option<String>,
}

impl FrameRecord {
    /// Whether `payload` is only a prefix of the frame's payload.
    pub fn truncated(&self) -> bool {
        (self.payload.len() as u64) < self.payload_len
    }
}

/// A frame whose payload is passing through.
#[derive(Debug)]
struct PendingFrame {
    record: FrameRecord,
    /// Inflated output of the current piece, reused.
    scratch: BytesMut,
    /// The unmasked copy of a compressed chunk, reused.
    unmasked: Vec<u8>,
}

/// Observes one direction of a connection, frame by frame. See the module docs.
#[derive(Debug)]
pub struct FrameTap {
    direction: Direction,
    /// Splits the stream into headers and payload pieces. After an unparsable header (a
    /// reserved opcode or length) it stops: bytes still pass through, but nothing more is
    /// parsed.
    reader: FrameReader,
    /// The frame whose payload is passing.
    frame: Option<Box<PendingFrame>>,
    max_payload: usize,
    /// Present when permessage-deflate was negotiated.
    inflater: Option<Decompressor>,
    /// The data message in progress: its kind and whether it is compressed.
    message: Option<(OpCode, bool)>,
    close_seen: bool,
    lost_reason: Option<String>,
}

impl FrameTap {
    /// A tap for `direction` that keeps at most `max_payload` bytes of each frame's payload,
    /// and inflates compressed messages when `deflate` holds the negotiated parameters.
    pub fn new(direction: Direction, max_payload: usize, deflate: Option<&DeflateParams>) -> Self {
        FrameTap {
            direction,
            reader: FrameReader::new(),
            frame: None,
            max_payload,
            inflater: deflate.map(|params| Decompressor::new(params, direction.receiver())),
            message: None,
            close_seen: false,
            lost_reason: None,
        }
    }

    /// The direction this tap watches.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// True between frames: a frame of our own (a close) can be inserted here without
    /// corrupting the stream.
    pub fn at_frame_boundary(&self) -> bool {
        self.reader.is_at_frame_boundary()
    }

    /// Whether a close frame has passed.
    pub fn close_seen(&self) -> bool {
        self.close_seen
    }

    /// Why parsing stopped, if it did (the bytes are still forwarded).
    pub fn lost_reason(&self) -> Option<&str> {
        self.lost_reason.as_deref()
    }

    /// Looks at the next `bytes` of the stream and appends a record for every frame that
    /// ends inside them.
    pub fn observe(&mut self, mut bytes: &[u8], records: &mut Vec<FrameRecord>) {
        if self.lost_reason.is_some() {
            return;
        }
        loop {
            // A frame without payload ends with an empty piece, which needs no input.
            let frame_ends_empty =
                self.reader.current_header().is_some() && self.reader.payload_remaining() == 0;
            if bytes.is_empty() && !frame_ends_empty {
                return;
            }
            match self.reader.read(bytes) {
                Ok((used, item)) => {
                    bytes = &bytes[used..];
                    match item {
                        None => {}
                        Some(FrameItem::Header(header)) => self.start_frame(header),
                        Some(FrameItem::Payload(chunk)) => {
                            self.payload_chunk(chunk.data, chunk.offset, chunk.is_last);
                            if chunk.is_last {
                                self.finish_frame(records);
                            }
                        }
                    }
                }
                Err(error) => {
                    self.lost_reason = Some(format!("unparsable frame header: {error}"));
                    self.frame = None;
                    return;
                }
            }
        }
    }

    /// A header is complete: start the frame (its payload pieces follow, at least one).
    fn start_frame(&mut self, header: FrameHeader) {
        let (message_kind, compressed) = match header.opcode {
            OpCode::Text | OpCode::Binary => {
                let compressed = header.rsv1;
                self.message = (!header.fin).then_some((header.opcode, compressed));
                (header.opcode, compressed)
            }
            OpCode::Continuation => {
                let (kind, compressed) = self.message.unwrap_or((OpCode::Continuation, false));
                if header.fin {
                    self.message = None;
                }
                (kind, compressed)
            }
            control => (control, false),
        };
        let payload_len = if compressed { 0 } else { header.payload_len };
        self.frame = Some(Box::new(PendingFrame {
            record: FrameRecord {
                header,
                compressed,
                message_kind,
                payload: Vec::new(),
                payload_len,
                close: None,
                inflate_error: None,
            },
            scratch: BytesMut::new(),
            unmasked: Vec::new(),
        }));
    }

    /// Payload bytes `chunk`, starting `offset` bytes into the frame's payload; `last` says
    /// the frame's payload ends with it.
    fn payload_chunk(&mut self, chunk: &[u8], offset: u64, last: bool) {
        let Some(frame) = self.frame.as_mut() else {
            return;
        };
        let header = frame.record.header;
        // Control frames are at most 125 bytes: keep all of a close frame for its code (but
        // no more than that, whatever length an invalid one announces: the relay must not
        // hold a peer's gigabyte "close frame"; found by fuzz/fuzz_targets/inspect_tap.rs).
        let limit = if header.opcode == OpCode::Close {
            self.max_payload.max(MAX_CONTROL_PAYLOAD)
        } else {
            self.max_payload
        };
        if !frame.record.compressed || self.inflater.is_none() {
            if frame.record.compressed {
                frame.record.inflate_error =
                    Some("compressed, but permessage-deflate was not negotiated".into());
                frame.record.payload_len = header.payload_len;
            }
            // Only the part that is kept needs unmasking.
            let room = limit
                .saturating_sub(frame.record.payload.len())
                .min(chunk.len());
            let start = frame.record.payload.len();
            frame.record.payload.extend_from_slice(&chunk[..room]);
            if let Some(key) = header.mask {
                apply_mask(
                    &mut frame.record.payload[start..],
                    key,
                    (offset % 4) as usize,
                );
            }
            return;
        }
        let Some(inflater) = self.inflater.as_mut() else {
            return;
        };
        if frame.record.inflate_error.is_some() {
            return;
        }
        let message_ends = last && header.fin;
        let mut plain = std::mem::take(&mut frame.unmasked);
        plain.clear();
        plain.extend_from_slice(chunk);
        if let Some(key) = header.mask {
            apply_mask(&mut plain, key, (offset % 4) as usize);
        }
        let result = if plain.is_empty() {
            // Still feed the end of the message: the inflater appends the 00 00 ff ff tail.
            match message_ends {
                true => inflate_piece(inflater, &[], true, frame, limit),
                false => Ok(()),
            }
        } else {
            let pieces = plain.len().div_ceil(INFLATE_PIECE);
            plain
                .chunks(INFLATE_PIECE)
                .enumerate()
                .try_for_each(|(i, piece)| {
                    let final_piece = message_ends && i + 1 == pieces;
                    inflate_piece(inflater, piece, final_piece, frame, limit)
                })
        };
        if let Err(error) = result {
            frame.record.inflate_error = Some(error);
        }
        frame.unmasked = plain;
    }

    /// The frame's last payload byte has passed: emit its record.
    fn finish_frame(&mut self, records: &mut Vec<FrameRecord>) {
        let Some(frame) = self.frame.take() else {
            return;
        };
        let mut record = frame.record;
        if record.header.opcode == OpCode::Close {
            self.close_seen = true;
            if record.payload.len() >= 2 {
                let code = u16::from_be_bytes([record.payload[0], record.payload[1]]);
                let reason = String::from_utf8_lossy(&record.payload[2..]).into_owned();
                record.close = Some((code, reason));
            }
        }
        records.push(record);
    }
}

/// Inflates one piece of a compressed payload; keeps the first `limit` bytes of the output
/// and counts all of it.
fn inflate_piece(
    inflater: &mut Decompressor,
    piece: &[u8],
    message_ends: bool,
    frame: &mut PendingFrame,
    limit: usize,
) -> Result<(), String> {
    frame.scratch.clear();
    inflater
        .decompress(piece, message_ends, &mut frame.scratch, usize::MAX)
        .map_err(|e| format!("cannot inflate: {e}"))?;
    frame.record.payload_len += frame.scratch.len() as u64;
    keep_prefix(&mut frame.record.payload, &frame.scratch, limit);
    Ok(())
}

/// Appends as much of `bytes` to `kept` as fits in `limit` bytes.
fn keep_prefix(kept: &mut Vec<u8>, bytes: &[u8], limit: usize) {
    let room = limit.saturating_sub(kept.len());
    kept.extend_from_slice(&bytes[..room.min(bytes.len())]);
}

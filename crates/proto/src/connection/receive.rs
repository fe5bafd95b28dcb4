//! Receiving: bytes in, events out. Frames are parsed with [`FrameHeader::parse`] and checked
//! against the role and the limits, unmasked in place, and assembled into messages; pings are
//! answered and a close is echoed here.

use bytes::{Buf, Bytes, BytesMut};

use super::{Connection, Event, Fragment, Outbox, Role, INFLATE_SLICE, LARGE_FRAME, PONG_BACKLOG};
use crate::borrowed::{EventRef, FragmentRef, MessageRef};
use crate::close::CloseFrame;
use crate::config::ReceiveMode;
use crate::deflate::Progress;
use crate::error::ProtocolError;
use crate::frame::{FrameHeader, OpCode};
use crate::mask::apply_mask;
use crate::message::{DataKind, Message};
use crate::out::COPY_THRESHOLD;
use crate::utf8::{self, Utf8Bytes, Utf8Validator};

/// How much room joining a large frame reserves at once, at most, before its bytes arrive.
const JOIN_RESERVE: usize = 1 << 20;

/// The frame being received: its header is parsed, validated and removed from the receive
/// buffer, which now starts with the payload; the payload may be partial. Kept small: it is
/// part of every connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct IncomingFrame {
    /// Payload bytes not yet delivered (those in the buffer and those still to come).
    payload_len: usize,
    /// Payload bytes at the front of the buffer already unmasked (and, for uncompressed text,
    /// validated) in place.
    processed: usize,
    opcode: OpCode,
    fin: bool,
    /// The masking key, rotated so that it starts at the first payload byte in the buffer
    /// (pieces delivered in [`ReceiveMode::Streaming`] are gone from it).
    mask: Option<[u8; 4]>,
    /// A data frame longer than [`LARGE_FRAME`]: its pieces leave the receive buffer as they
    /// arrive (joined into the message in [`ReceiveMode::Messages`]).
    piecewise: bool,
}

/// The data message being received.
#[derive(Debug)]
pub(super) struct IncomingMessage {
    kind: DataKind,
    mode: ReceiveMode,
    /// Payload bytes received so far (as on the wire), counted against the message limit.
    size: usize,
    frames: usize,
    /// RSV1 was set on the first frame: the payload is permessage-deflate data.
    compressed: bool,
    /// Inflated bytes already delivered as fragments (Fragments mode, compressed messages).
    delivered: usize,
    /// Fragments joined so far (Messages mode, multi-frame messages), or inflated bytes.
    joined: BytesMut,
    utf8: Utf8Validator,
    /// A piece of it was delivered (Fragments and Streaming modes).
    started: bool,
    /// Inflating paused at [`INFLATE_SLICE`]: the rest of the frame's compressed payload (or
    /// piece's, in Streaming mode) waits here for the next call.
    inflating: Option<PendingInflate>,
}

/// Compressed input whose inflating paused, and where it came from.
#[derive(Debug)]
struct PendingInflate {
    input: Bytes,
    fin: bool,
    frame_end: bool,
}

impl Connection {
    /// How many more bytes the frame being received needs (0 when unknown). A shell may use it
    /// to size its next read; it is bounded by the frame limit.
    #[inline]
    pub fn read_hint(&self) -> usize {
        match self.frame {
            Some(frame) if frame.piecewise => frame
                .payload_len
                .saturating_sub(self.recv.len())
                .min(LARGE_FRAME),
            Some(frame) => frame.payload_len.saturating_sub(self.recv.len()),
            None => 0,
        }
    }

    /// True when the last [`next_event`](Connection::next_event) (or
    /// [`next_event_with`](Connection::next_event_with)) returned `Ok(None)` not for want of
    /// bytes but because it stopped inflating a compressed message after [`INFLATE_SLICE`]
    /// bytes: call it again before waiting for the transport (a shell that serves many
    /// connections lets the others run first). Waiting for bytes instead could wait forever:
    /// the rest of the message may already be here.
    #[inline]
    pub fn has_pending_work(&self) -> bool {
        self.message
            .as_ref()
            .is_some_and(|message| message.inflating.is_some())
    }

    /// The next event, `Ok(None)` when more bytes are needed (or the connection is closed).
    ///
    /// On a protocol violation the connection fails: a close frame with the error's code is
    /// queued, the error is returned once, and later calls return `Ok(None)`.
    #[inline]
    pub fn next_event(&mut self) -> Result<Option<Event>, ProtocolError> {
        // No bytes and no end of stream: nothing can come out (every event is parsed from the
        // receive buffer, or is the end of stream). The usual answer when a shell polls on
        // waking up, before it reads.
        if self.recv.is_empty() && !self.eof && !self.has_pending_work() {
            return Ok(None);
        }
        self.parse_event()
    }

    #[inline]
    fn parse_event(&mut self) -> Result<Option<Event>, ProtocolError> {
        if self.failed || self.close_received {
            return Ok(None);
        }
        match self.parse_next() {
            Ok(Some(event)) => Ok(Some(event)),
            Ok(None) if self.eof && !self.has_pending_work() => {
                self.failed = true;
                self.aborted = true;
                Err(ProtocolError::UnexpectedEof)
            }
            Ok(None) => Ok(None),
            Err(error) => {
                self.fail_on(&error);
                Err(error)
            }
        }
    }

    /// The next event, lent to `f` rather than handed out: a message that arrived whole is
    /// borrowed where it was unmasked and validated in the receive buffer, with no reference
    /// count to take and release, and `f` may queue replies through the [`Outbox`] meanwhile.
    /// Returns what `f` returned, `Ok(None)` when more bytes are needed, and fails as
    /// [`next_event`](Connection::next_event) does.
    ///
    /// Messages of [`COPY_THRESHOLD`] bytes or more, and those that did not arrive whole in
    /// one frame, are split off the buffer as for `next_event` and lent from there: a
    /// server that sends such a message (or a part of it) back through the outbox queues
    /// it by reference, not as a copy.
    ///
    /// ```
    /// use fullduplex_proto::{Config, Connection, EventRef, Message, MessageRef, Role};
    /// let mut client = Connection::new(Role::Client, Config::default());
    /// let mut server = Connection::new(Role::Server, Config::default());
    /// client.send(Message::text("hello")).unwrap();
    /// server.recv_buf().extend_from_slice(&client.take_output());
    /// let length = server.next_event_with(|event, _out| match event {
    ///     EventRef::Message(MessageRef::Text(text)) => text.len(),
    ///     _ => 0,
    /// });
    /// assert_eq!(length, Ok(Some(5)));
    /// assert_eq!(server.next_event_with(|_, _| ()), Ok(None)); // needs more bytes
    /// ```
    #[inline]
    pub fn next_event_with<R>(
        &mut self,
        f: impl FnOnce(EventRef<'_>, &mut Outbox<'_>) -> R,
    ) -> Result<Option<R>, ProtocolError> {
        if self.recv.is_empty() && !self.eof && !self.has_pending_work() {
            return Ok(None);
        }
        if self.frame.is_none() && !self.failed && !self.close_received {
            // A header that is short or invalid is left to the general path, which reports it.
            if let Ok(Some((header, header_len))) = FrameHeader::parse(&self.recv).map(|parsed| {
                parsed.filter(|(header, _)| header.payload_len < COPY_THRESHOLD as u64)
            }) {
                match self.whole_frame(&header, header_len) {
                    Ok(Some(kind)) => {
                        let frame_len = header_len + header.payload_len as usize;
                        return self.lend_whole_message(kind, header_len, frame_len, f);
                    }
                    Ok(None) => {}
                    Err(error) => {
                        self.fail_on(&error);
                        return Err(error);
                    }
                }
            }
        }
        match self.parse_event()? {
            Some(event) => {
                let shared = match &event {
                    Event::Message(Message::Text(text)) => Some(text.as_bytes()),
                    Event::Message(Message::Binary(data)) => Some(data),
                    _ => None,
                };
                Ok(Some(f(
                    event.borrowed(),
                    &mut Outbox::lending(self, shared),
                )))
            }
            None => Ok(None),
        }
    }

    /// Lends the message that [`whole_frame`](Self::whole_frame) checked and unmasked at the
    /// front of the receive buffer, then drops its frame from the buffer. The buffer is moved
    /// out while `f` runs, so that `f` can use the rest of the connection.
    fn lend_whole_message<R>(
        &mut self,
        kind: DataKind,
        header_len: usize,
        frame_len: usize,
        f: impl FnOnce(EventRef<'_>, &mut Outbox<'_>) -> R,
    ) -> Result<Option<R>, ProtocolError> {
        let mut recv = std::mem::take(&mut self.recv);
        let payload = &recv[header_len..frame_len];
        let message = match kind {
            DataKind::Binary => MessageRef::Binary(payload),
            DataKind::Text => match utf8::validate_str(payload) {
                Ok(text) => MessageRef::Text(text),
                Err(_) => {
                    self.recv = recv;
                    let error = ProtocolError::InvalidUtf8;
                    self.fail_on(&error);
                    return Err(error);
                }
            },
        };
        let event = if self.config.receive_mode == ReceiveMode::Streaming {
            EventRef::Fragment(FragmentRef {
                kind,
                payload,
                is_first: true,
                is_last: true,
            })
        } else {
            EventRef::Message(message)
        };
        let result = f(event, &mut Outbox::new(self));
        recv.advance(frame_len);
        self.recv = recv;
        Ok(Some(result))
    }

    fn parse_next(&mut self) -> Result<Option<Event>, ProtocolError> {
        if self.has_pending_work() {
            // One slice per call: the call that paused did one already.
            if let Some(event) = self.resume_inflate()? {
                return Ok(Some(event));
            }
            if self.has_pending_work() {
                return Ok(None);
            }
        }
        loop {
            let mut frame = match self.frame {
                Some(frame) => frame,
                None => {
                    let Some((header, header_len)) = FrameHeader::parse(&self.recv)? else {
                        return Ok(None);
                    };
                    if let Some(event) = self.whole_message(&header, header_len)? {
                        return Ok(Some(event));
                    }
                    let payload_len = self.check_header(&header)?;
                    self.recv.advance(header_len);
                    IncomingFrame {
                        payload_len,
                        processed: 0,
                        opcode: header.opcode,
                        fin: header.fin,
                        mask: header.mask,
                        piecewise: self.is_piecewise(header.opcode, payload_len),
                    }
                }
            };
            let available = self.recv.len().min(frame.payload_len);
            if available > frame.processed {
                let chunk = &mut self.recv[frame.processed..available];
                if let Some(key) = frame.mask {
                    apply_mask(chunk, key, frame.processed);
                }
                if !frame.opcode.is_control() {
                    if let Some(message) = &mut self.message {
                        // Compressed text is validated after inflating, in on_data_frame.
                        if message.kind == DataKind::Text && !message.compressed {
                            message
                                .utf8
                                .feed(chunk)
                                .map_err(|_| ProtocolError::InvalidUtf8)?;
                        }
                    }
                }
                frame.processed = available;
            }
            if available < frame.payload_len {
                if frame.processed > 0 && frame.piecewise {
                    // Deliver (or, for a whole message, join) what arrived of the frame now,
                    // and forget it.
                    let piece = self.recv.split_to(frame.processed).freeze();
                    frame.payload_len -= piece.len();
                    frame.processed = 0;
                    if let Some(key) = &mut frame.mask {
                        key.rotate_left(piece.len() % 4);
                    }
                    self.frame = Some(frame);
                    if let Some(event) = self.on_data(frame.fin, false, piece)? {
                        return Ok(Some(event));
                    }
                    if self.has_pending_work() {
                        return Ok(None);
                    }
                    continue;
                }
                self.frame = Some(frame);
                return Ok(None);
            }
            self.frame = None;
            let payload = self.recv.split_to(frame.payload_len).freeze();
            if let Some(event) = self.on_frame(frame.opcode, frame.fin, payload)? {
                return Ok(Some(event));
            }
            if self.has_pending_work() {
                return Ok(None);
            }
        }
    }

    /// The frame's payload leaves the receive buffer piece by piece as it arrives: a data frame
    /// of a message received in [`ReceiveMode::Streaming`] (each piece is delivered), or one
    /// longer than [`LARGE_FRAME`] in [`ReceiveMode::Messages`] (each piece is joined into the
    /// message).
    fn is_piecewise(&self, opcode: OpCode, payload_len: usize) -> bool {
        !opcode.is_control()
            && self
                .message
                .as_ref()
                .is_some_and(|message| match message.mode {
                    ReceiveMode::Streaming => true,
                    ReceiveMode::Messages => payload_len > LARGE_FRAME,
                    ReceiveMode::Fragments => false,
                })
    }

    /// The common case, short-cut: an unfragmented, uncompressed text or binary message whose
    /// whole frame is already in the receive buffer, in [`ReceiveMode::Messages`] (or
    /// [`ReceiveMode::Streaming`], as one piece that is both first and last). It is checked
    /// exactly as [`check_header`](Self::check_header) and the incremental path would check it
    /// (reserved bits, masking by role, frame and message limits, UTF-8), but delivered
    /// without the bookkeeping of partial frames and messages. `Ok(None)`: not this case, take
    /// the general path.
    #[inline]
    fn whole_message(
        &mut self,
        header: &FrameHeader,
        header_len: usize,
    ) -> Result<Option<Event>, ProtocolError> {
        let Some(kind) = self.whole_frame(header, header_len)? else {
            return Ok(None);
        };
        let payload_len = header.payload_len as usize;
        if kind == DataKind::Text {
            utf8::validate(&self.recv[header_len..header_len + payload_len])
                .map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        // One split for header and payload, then the header is skipped in the frozen view
        // (cheaper than advancing the receive buffer past the header first).
        let mut payload = self.recv.split_to(header_len + payload_len).freeze();
        payload.advance(header_len);
        if self.config.receive_mode == ReceiveMode::Streaming {
            return Ok(Some(Event::Fragment(Fragment {
                kind,
                payload,
                is_first: true,
                is_last: true,
            })));
        }
        Ok(Some(Event::Message(match kind {
            DataKind::Text => Message::Text(Utf8Bytes::from_validated(payload)),
            DataKind::Binary => Message::Binary(payload),
        })))
    }

    /// The checks of [`whole_message`](Self::whole_message), and the unmasking in place: the
    /// payload is `header.payload_len` bytes after the header at the front of the receive
    /// buffer. Text is not validated yet. `Ok(None)`: not the common case.
    #[inline]
    fn whole_frame(
        &mut self,
        header: &FrameHeader,
        header_len: usize,
    ) -> Result<Option<DataKind>, ProtocolError> {
        let kind = match header.opcode {
            OpCode::Text => DataKind::Text,
            OpCode::Binary => DataKind::Binary,
            _ => return Ok(None),
        };
        if !header.fin
            || header.rsv1
            || self.message.is_some()
            || self.config.receive_mode == ReceiveMode::Fragments
            || header.payload_len > (self.recv.len() - header_len) as u64
        {
            return Ok(None);
        }
        if header.rsv2 || header.rsv3 {
            return Err(ProtocolError::ReservedBits);
        }
        match (self.role, header.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        // At most the buffer's length: it fits a usize.
        let payload_len = header.payload_len as usize;
        if payload_len > self.config.max_frame_size {
            return Err(ProtocolError::FrameTooLarge {
                size: header.payload_len,
                limit: self.config.max_frame_size,
            });
        }
        if payload_len > self.config.max_message_size {
            return Err(ProtocolError::MessageTooLarge {
                limit: self.config.max_message_size,
            });
        }
        if let Some(key) = header.mask {
            apply_mask(&mut self.recv[header_len..header_len + payload_len], key, 0);
        }
        Ok(Some(kind))
    }

    /// Validates a header against the role, the message in progress and the limits, and starts
    /// a message on its first data frame. Returns the payload length.
    fn check_header(&mut self, header: &FrameHeader) -> Result<usize, ProtocolError> {
        // RSV1 is permessage-deflate's "compressed" bit, allowed on the first frame of a data
        // message once negotiated (RFC 7692 section 6); everything else is reserved.
        let rsv1_allowed =
            self.deflate.is_some() && matches!(header.opcode, OpCode::Text | OpCode::Binary);
        if (header.rsv1 && !rsv1_allowed) || header.rsv2 || header.rsv3 {
            return Err(ProtocolError::ReservedBits);
        }
        match (self.role, header.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        let opcode = header.opcode;
        if opcode.is_control() {
            if !header.fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if header.payload_len > 125 {
                return Err(ProtocolError::ControlFrameTooLarge);
            }
            return Ok(header.payload_len as usize);
        }
        if header.payload_len > self.config.max_frame_size as u64 {
            return Err(ProtocolError::FrameTooLarge {
                size: header.payload_len,
                limit: self.config.max_frame_size,
            });
        }
        // Bounded by max_frame_size, which is a usize.
        let payload_len = header.payload_len as usize;
        let kind = match (opcode, &self.message) {
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Continuation, Some(message)) => message.kind,
            (_, Some(_)) => return Err(ProtocolError::ExpectedContinuation),
            (OpCode::Text, None) => DataKind::Text,
            (_, None) => DataKind::Binary,
        };
        let size_so_far = self.message.as_ref().map_or(0, |m| m.size);
        if size_so_far.saturating_add(payload_len) > self.config.max_message_size {
            return Err(ProtocolError::MessageTooLarge {
                limit: self.config.max_message_size,
            });
        }
        if self.message.is_none() {
            self.message = Some(message_pool::take(IncomingMessage {
                kind,
                mode: self.config.receive_mode,
                size: 0,
                frames: 0,
                compressed: header.rsv1,
                delivered: 0,
                joined: BytesMut::new(),
                utf8: Utf8Validator::new(),
                started: false,
                inflating: None,
            }));
        }
        Ok(payload_len)
    }

    fn on_frame(
        &mut self,
        opcode: OpCode,
        fin: bool,
        payload: Bytes,
    ) -> Result<Option<Event>, ProtocolError> {
        match opcode {
            OpCode::Ping => {
                // Section 5.5.2: "MUST send a Pong frame in response, unless it already
                // received a Close frame" - so also while our own close is in flight.
                if self.config.auto_pong {
                    if self.out.len() >= PONG_BACKLOG {
                        // Replaces the pong for an earlier ping that is still held back.
                        self.pending_pong = Some(Box::new(payload.clone()));
                    } else {
                        self.queue_frame(FrameHeader::new(OpCode::Pong, payload.len() as u64), {
                            payload.clone()
                        });
                    }
                }
                Ok(Some(Event::Message(Message::Ping(payload))))
            }
            OpCode::Pong => Ok(Some(Event::Message(Message::Pong(payload)))),
            OpCode::Close => {
                let frame = CloseFrame::parse(payload)?;
                self.close_received = true;
                if !self.close_sent {
                    // Echo the code (section 5.5.1); the reason is ours to choose: none.
                    let echo = frame.as_ref().map(|f| CloseFrame::new(f.code, ""));
                    self.queue_close(echo.as_ref());
                }
                Ok(Some(Event::Message(Message::Close(frame))))
            }
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                self.on_data(fin, true, payload)
            }
        }
    }

    /// Payload of a data frame: the whole rest of the frame (`frame_end`), or in
    /// [`ReceiveMode::Streaming`] the piece that arrived. `fin` is the frame's FIN bit.
    fn on_data(
        &mut self,
        fin: bool,
        frame_end: bool,
        payload: Bytes,
    ) -> Result<Option<Event>, ProtocolError> {
        let Some(message) = self.message.as_mut() else {
            // check_header started the message; unreachable, but never panic on input.
            return Err(ProtocolError::UnexpectedContinuation);
        };
        let message_end = fin && frame_end;
        message.size += payload.len();
        if frame_end {
            message.frames += 1;
        }
        if message.compressed {
            message.inflating = Some(PendingInflate {
                input: payload,
                fin,
                frame_end,
            });
            return self.resume_inflate();
        }
        self.deliver(Some(payload), message_end, frame_end)
    }

    /// Inflates one slice ([`INFLATE_SLICE`]) of the compressed input waiting in the message,
    /// then delivers as [`deliver`](Self::deliver) does once all of it is inflated.
    fn resume_inflate(&mut self) -> Result<Option<Event>, ProtocolError> {
        let Some(message) = self.message.as_mut() else {
            return Ok(None);
        };
        let Some(pending) = message.inflating.take() else {
            return Ok(None);
        };
        let Some(decompressor) = self.deflate.as_mut().map(|d| &mut d.decompressor) else {
            return Err(ProtocolError::ReservedBits);
        };
        let message_end = pending.fin && pending.frame_end;
        let before = message.joined.len();
        // The inflated size counts against the message limit, checked while inflating: it
        // stops as soon as the limit is crossed.
        let limit = self
            .config
            .max_message_size
            .saturating_sub(message.delivered);
        let progress = decompressor
            .decompress_some(
                &pending.input,
                message_end,
                &mut message.joined,
                limit,
                INFLATE_SLICE,
            )
            .map_err(ProtocolError::Deflate)?;
        if message.kind == DataKind::Text {
            message
                .utf8
                .feed(&message.joined[before..])
                .map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        if let Progress::Paused { consumed } = progress {
            let mut rest = pending;
            rest.input.advance(consumed);
            message.inflating = Some(rest);
            return Ok(None);
        }
        self.deliver(None, message_end, pending.frame_end)
    }

    /// Delivers what arrived of a data message: `data` is the payload of an uncompressed
    /// frame (or piece), `None` for a compressed one (its inflated bytes are in `joined`).
    fn deliver(
        &mut self,
        data: Option<Bytes>,
        message_end: bool,
        frame_end: bool,
    ) -> Result<Option<Event>, ProtocolError> {
        let Some(message) = self.message.as_mut() else {
            return Ok(None);
        };
        if message_end && message.kind == DataKind::Text {
            message
                .utf8
                .finish()
                .map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        let event = match (message.mode, data) {
            (ReceiveMode::Fragments | ReceiveMode::Streaming, data) => {
                let payload = match data {
                    Some(payload) => payload,
                    None => message.joined.split().freeze(),
                };
                // A streamed piece that inflated to nothing is not worth an event; the last
                // one always is, so that the message visibly ends.
                if payload.is_empty() && !message_end && message.mode == ReceiveMode::Streaming {
                    None
                } else {
                    message.delivered += payload.len();
                    let is_first = !message.started;
                    message.started = true;
                    Some(Event::Fragment(Fragment {
                        kind: message.kind,
                        payload,
                        is_first,
                        is_last: message_end,
                    }))
                }
            }
            (ReceiveMode::Messages, data) if message_end => {
                let data = match data {
                    // Nothing joined yet: the message is this payload, uncopied.
                    Some(payload) if message.joined.is_empty() => payload,
                    Some(payload) => {
                        message.joined.extend_from_slice(&payload);
                        std::mem::take(&mut message.joined).freeze()
                    }
                    None => std::mem::take(&mut message.joined).freeze(),
                };
                Some(Event::Message(match message.kind {
                    DataKind::Text => Message::Text(Utf8Bytes::from_validated(data)),
                    DataKind::Binary => Message::Binary(data),
                }))
            }
            (ReceiveMode::Messages, data) => {
                if let Some(payload) = data {
                    if !frame_end && message.joined.is_empty() {
                        // The first piece of a large frame: room for the whole frame as the
                        // header announced it, so that joining copies each byte once, but no
                        // more than `JOIN_RESERVE` ahead of the bytes that came (a peer's
                        // announcement alone must not make us allocate); beyond that the
                        // buffer grows as the bytes arrive.
                        let rest = self.frame.map_or(0, |frame| frame.payload_len);
                        message
                            .joined
                            .reserve((payload.len() + rest).min(JOIN_RESERVE));
                    }
                    message.joined.extend_from_slice(&payload);
                }
                None
            }
        };
        if message_end {
            message_pool::give(self.message.take());
        }
        Ok(event)
    }
}

/// Boxes for the message being received, lent per thread: a connection holds one only while a
/// message arrives in pieces (fragmented, compressed, or larger than a read), and getting one
/// allocates nothing once the thread has received such a message before.
pub(super) mod message_pool {
    use super::IncomingMessage;
    use crate::pool::{Pool, Pooled};
    use std::cell::RefCell;

    /// Boxes kept per thread.
    const MAX_POOLED: usize = 16;

    impl Pooled for Box<IncomingMessage> {
        /// A pooled box's buffer is released first: only the count bounds this pool.
        #[inline]
        fn pooled_bytes(&self) -> usize {
            0
        }
    }

    thread_local! {
        // The boxes themselves are what is reused, so they are pooled boxed.
        static POOL: RefCell<Pool<Box<IncomingMessage>>> =
            const { RefCell::new(Pool::new(MAX_POOLED, usize::MAX)) };
    }

    /// A box holding `message`, from the pool when it has one.
    pub(in crate::connection) fn take(message: IncomingMessage) -> Box<IncomingMessage> {
        match crate::pool::take(&POOL) {
            Some(mut boxed) => {
                *boxed = message;
                boxed
            }
            None => Box::new(message),
        }
    }

    /// Returns a finished message's box to the pool (its buffer is released first).
    pub(in crate::connection) fn give(message: Option<Box<IncomingMessage>>) {
        let Some(mut boxed) = message else { return };
        boxed.joined = bytes::BytesMut::new();
        boxed.inflating = None;
        crate::pool::give(&POOL, boxed);
    }
}

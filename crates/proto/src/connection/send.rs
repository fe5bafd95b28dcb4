//! Sending: messages in, bytes out. Frames are encoded into the output queue (masked for a
//! client, compressed when permessage-deflate is on and worth it), and nothing is queued once a
//! close frame has gone out.

use bytes::{Bytes, BytesMut};
use rand::RngCore;

use super::{Connection, Role};
use crate::borrowed::MessageRef;
use crate::close::CloseFrame;
use crate::error::SendError;
use crate::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
use crate::message::{DataKind, Message};
use crate::out::{COPY_THRESHOLD, ENCODED_COPY_THRESHOLD};
use crate::utf8::Utf8Validator;

/// The fragmented message being sent.
#[derive(Debug)]
pub(super) struct OutgoingMessage {
    kind: DataKind,
    compressed: bool,
    utf8: Utf8Validator,
}

impl Connection {
    /// Queues a message. Text and binary messages are sent as one frame; ping and pong payloads
    /// must be at most 125 bytes; `Message::Close` is [`close`](Connection::close).
    ///
    /// A server queues `Bytes` payloads of at least [`COPY_THRESHOLD`] bytes without copying;
    /// a client copies once, to mask.
    #[inline]
    pub fn send(&mut self, message: Message) -> Result<(), SendError> {
        self.send_message(message, true)
    }

    /// Queues a message without compressing it, even when permessage-deflate is on (for data
    /// that is already compressed, say, or too small to gain).
    pub fn send_uncompressed(&mut self, message: Message) -> Result<(), SendError> {
        self.send_message(message, false)
    }

    /// Queues a copy of a borrowed message, such as one received through
    /// [`next_event_with`](Connection::next_event_with): the payload is copied into the output
    /// next to its header (compressed instead, when permessage-deflate applies to it).
    #[inline]
    pub fn send_ref(&mut self, message: MessageRef<'_>) -> Result<(), SendError> {
        match message {
            MessageRef::Text(text) => self.send_data_slice(OpCode::Text, text.as_bytes()),
            MessageRef::Binary(data) => self.send_data_slice(OpCode::Binary, data),
            MessageRef::Ping(data) => self.send_control(OpCode::Ping, data),
            MessageRef::Pong(data) => self.send_control(OpCode::Pong, data),
            MessageRef::Close(frame) => self.close(frame.cloned()),
        }
    }

    #[inline]
    fn send_message(&mut self, message: Message, may_compress: bool) -> Result<(), SendError> {
        match message {
            Message::Text(text) => self.send_data(OpCode::Text, text.into_bytes(), may_compress),
            Message::Binary(data) => self.send_data(OpCode::Binary, data, may_compress),
            Message::Ping(data) => self.send_control(OpCode::Ping, &data),
            Message::Pong(data) => self.send_control(OpCode::Pong, &data),
            Message::Close(frame) => self.close(frame),
        }
    }

    /// Queues one frame of a fragmented message: the first call starts a message of `kind`,
    /// later calls continue it (with the same `kind`), and `is_last` ends it. Control messages
    /// may be sent in between; other data messages may not. Text fragments may cut a code point
    /// but must add up to valid UTF-8.
    ///
    /// ```
    /// use fullduplex_proto::{Config, Connection, DataKind, Event, Message, Role};
    /// let mut client = Connection::new(Role::Client, Config::default());
    /// let mut server = Connection::new(Role::Server, Config::default());
    /// client.send_fragment(DataKind::Text, "Hel".into(), false).unwrap();
    /// client.send_fragment(DataKind::Text, "lo".into(), true).unwrap();
    /// let bytes = client.take_output();
    /// server.recv_buf().extend_from_slice(&bytes);
    /// assert_eq!(server.next_event().unwrap(), Some(Event::Message(Message::text("Hello"))));
    /// ```
    pub fn send_fragment(
        &mut self,
        kind: DataKind,
        payload: Bytes,
        is_last: bool,
    ) -> Result<(), SendError> {
        if self.is_send_closed() {
            return Err(SendError::Closed);
        }
        let (opcode, compressed, mut utf8) = match &self.sending {
            Some(sending) if sending.kind != kind => return Err(SendError::FragmentInProgress),
            Some(sending) => (
                OpCode::Continuation,
                sending.compressed,
                sending.utf8.clone(),
            ),
            None => (
                match kind {
                    DataKind::Text => OpCode::Text,
                    DataKind::Binary => OpCode::Binary,
                },
                self.deflate.is_some(),
                Utf8Validator::new(),
            ),
        };
        if kind == DataKind::Text {
            let valid = utf8.feed(&payload).is_ok() && (!is_last || utf8.is_complete());
            if !valid {
                // The message stays open as it was: the caller may send a corrected fragment.
                return Err(SendError::InvalidUtf8);
            }
        }
        let payload = match self.deflate.as_mut().filter(|_| compressed) {
            Some(deflate) => {
                let compressor = &mut deflate.compressor;
                let mut out = BytesMut::new();
                compressor
                    .compress_fragment(&payload, is_last, &mut out)
                    .map_err(SendError::Compression)?;
                out.freeze()
            }
            None => payload,
        };
        let mut header = FrameHeader::new(opcode, payload.len() as u64);
        header.fin = is_last;
        header.rsv1 = compressed && opcode != OpCode::Continuation;
        self.queue_frame(header, payload);
        self.sending = (!is_last).then_some(OutgoingMessage {
            kind,
            compressed,
            utf8,
        });
        Ok(())
    }

    /// Queues a frame that was encoded once for many connections (a server's fan-out): the
    /// bytes must be one or more complete, unmasked frames. Clients cannot use this.
    pub fn send_encoded(&mut self, frames: Bytes) -> Result<(), SendError> {
        if self.role == Role::Client {
            return Err(SendError::EncodedFrameFromClient);
        }
        if self.is_send_closed() {
            return Err(SendError::Closed);
        }
        if self.sending.is_some() {
            return Err(SendError::FragmentInProgress);
        }
        if frames.len() < ENCODED_COPY_THRESHOLD {
            self.out.push_copy(&frames);
        } else {
            self.out.push_bytes(frames);
        }
        Ok(())
    }

    /// Starts (or answers) the close handshake. After it no data may be sent. Calling it again
    /// once a close frame is queued does nothing.
    ///
    /// ```
    /// use fullduplex_proto::{CloseCode, CloseFrame, Config, Connection, Role, SendError, State};
    /// let mut server = Connection::new(Role::Server, Config::default());
    /// server.close(Some(CloseFrame::new(CloseCode::NORMAL, "bye"))).unwrap();
    /// assert_eq!(server.state(), State::Closing);
    /// assert_eq!(server.send("late".into()), Err(SendError::Closed));
    /// assert_eq!(server.close(Some(CloseFrame::new(CloseCode(1005), ""))),
    ///            Ok(())); // already closing: ignored
    /// ```
    pub fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), SendError> {
        if self.is_send_closed() {
            return Ok(());
        }
        if let Some(frame) = &frame {
            if !frame.code.is_valid_on_wire() {
                return Err(SendError::InvalidCloseCode(frame.code.0));
            }
        }
        self.queue_close(frame.as_ref());
        Ok(())
    }

    #[inline]
    pub(crate) fn send_data(
        &mut self,
        opcode: OpCode,
        payload: Bytes,
        may_compress: bool,
    ) -> Result<(), SendError> {
        match self.compress_for_send(&payload, may_compress)? {
            Some(compressed) => self.queue_compressed(opcode, compressed),
            None => self.queue_frame(FrameHeader::new(opcode, payload.len() as u64), payload),
        }
        Ok(())
    }

    #[inline]
    pub(crate) fn send_data_slice(
        &mut self,
        opcode: OpCode,
        payload: &[u8],
    ) -> Result<(), SendError> {
        match self.compress_for_send(payload, true)? {
            Some(compressed) => self.queue_compressed(opcode, compressed),
            None => self.queue_slice(FrameHeader::new(opcode, payload.len() as u64), payload),
        }
        Ok(())
    }

    /// Checks that a data message may be sent now, and compresses it when permessage-deflate
    /// is on and the message is worth it (`Ok(None)`: send it as it is).
    #[inline]
    fn compress_for_send(
        &mut self,
        payload: &[u8],
        may_compress: bool,
    ) -> Result<Option<Bytes>, SendError> {
        if self.is_send_closed() {
            return Err(SendError::Closed);
        }
        if self.sending.is_some() {
            return Err(SendError::FragmentInProgress);
        }
        if self.deflate.is_none() || !may_compress {
            return Ok(None);
        }
        self.compress_if_worth_it(payload)
    }

    fn compress_if_worth_it(&mut self, payload: &[u8]) -> Result<Option<Bytes>, SendError> {
        let Some(compressor) = self
            .deflate
            .as_mut()
            .map(|d| &mut d.compressor)
            .filter(|c| c.should_compress(payload.len()))
        else {
            return Ok(None);
        };
        let mut out = BytesMut::new();
        compressor
            .compress(payload, &mut out)
            .map_err(SendError::Compression)?;
        Ok(Some(out.freeze()))
    }

    fn queue_compressed(&mut self, opcode: OpCode, compressed: Bytes) {
        let mut header = FrameHeader::new(opcode, compressed.len() as u64);
        header.rsv1 = true;
        self.queue_frame(header, compressed);
    }

    fn send_control(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), SendError> {
        if self.is_send_closed() {
            return Err(SendError::Closed);
        }
        if payload.len() > 125 {
            return Err(SendError::ControlFrameTooLarge);
        }
        self.queue_slice(FrameHeader::new(opcode, payload.len() as u64), payload);
        Ok(())
    }

    pub(super) fn queue_close(&mut self, frame: Option<&CloseFrame>) {
        let payload = match frame {
            Some(frame) => {
                let mut buf = BytesMut::with_capacity(frame.encoded_len());
                frame.encode(&mut buf);
                buf.freeze()
            }
            None => Bytes::new(),
        };
        // A held-back pong goes out first: nothing may follow the close frame.
        self.release_pending_pong();
        self.close_sent = true;
        self.sending = None;
        self.queue_frame(
            FrameHeader::new(OpCode::Close, payload.len() as u64),
            payload,
        );
    }

    /// Encodes a frame into the output queue, masking it for a client. A server queues a
    /// payload of at least [`COPY_THRESHOLD`] bytes by reference.
    #[inline]
    pub(super) fn queue_frame(&mut self, header: FrameHeader, payload: Bytes) {
        if self.rng.is_some() || payload.len() < COPY_THRESHOLD {
            return self.queue_slice(header, &payload);
        }
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut head);
        self.out.push_copy(&head[..n]);
        self.out.push_bytes(payload);
    }

    /// Encodes a frame into the output queue, header and payload side by side, masking it for
    /// a client.
    #[inline]
    fn queue_slice(&mut self, mut header: FrameHeader, payload: &[u8]) {
        if let Some(rng) = self.rng.as_mut() {
            let mut key = [0u8; 4];
            rng.fill_bytes(&mut key);
            header.mask = Some(key);
        }
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut head);
        self.out.push_frame(&head, n, payload, header.mask);
    }
}

//! The connection state machine: bytes in, events out; messages in, bytes out.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use crate::borrowed::{EventRef, FragmentRef, MessageRef, Outbox};
use crate::close::{CloseCode, CloseFrame};
use crate::config::{Config, ReceiveMode};
use crate::deflate::{Compressor, Decompressor, DeflateParams, Progress};
use crate::error::{ProtocolError, SendError};
use crate::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
use crate::mask::apply_mask;
use crate::message::{DataKind, Message, Utf8Bytes};
use crate::out::{OutQueue, COPY_THRESHOLD, ENCODED_COPY_THRESHOLD};
use crate::utf8::{self, Utf8Validator};

/// Once this much output is waiting, automatic pongs are coalesced: only the pong for the
/// latest ping is kept, and it is queued when the output has drained below this again (RFC 6455
/// section 5.5.3 allows answering only the most recent ping). A peer that sends pings and
/// never reads can then not grow the output without bound, and a shell can keep reading while
/// its writes wait.
pub const PONG_BACKLOG: usize = 16 << 10;

/// Data frames with a longer payload are joined from pieces in [`ReceiveMode::Messages`]: what
/// each read brings is unmasked in the receive buffer and copied out into the message, so the
/// receive buffer stays at most this size and is reused while the frame arrives (a shell's
/// [`read_hint`](Connection::read_hint) is capped at it). Shorter frames, and any frame that is
/// already whole in the buffer, are handed out as slices of the receive buffer without a copy.
///
/// The copy pays for itself: writing each read into a buffer as large as the frame made the
/// kernel's copies go to memory that was not in cache: an echo of 1 MiB messages spent about
/// twice the CPU of one that reads into a 256 KiB buffer and copies (1,123 against 572 µs per
/// message, BENCHMARKS.md).
pub const LARGE_FRAME: usize = 256 << 10;

/// The most output one call of [`Connection::next_event`] (or
/// [`next_event_with`](Connection::next_event_with)) inflates of a compressed message. When a
/// frame inflates to more, the call returns `Ok(None)` with
/// [`has_pending_work`](Connection::has_pending_work) true, and the next call goes on where
/// it stopped: a shell lets other connections run in between (the tokio layer yields to the
/// scheduler), so that one peer's message, however much it inflates to, holds a thread for
/// at most one slice at a time. 256 KiB inflates in about 0.1-0.3 ms.
pub const INFLATE_SLICE: usize = 256 << 10;

/// How much room joining a large frame reserves at once, at most, before its bytes arrive.
const JOIN_RESERVE: usize = 1 << 20;

/// Which end of the connection this is. Servers require masked frames and send unmasked ones;
/// clients the reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The end that sent the HTTP upgrade request.
    Client,
    /// The end that accepted it.
    Server,
}

/// Where the close handshake stands (RFC 6455 section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Messages flow both ways.
    Open,
    /// We sent a close frame and wait for the peer's. Received messages are still delivered.
    Closing,
    /// The close handshake is done, or the connection failed: only the transport is left to
    /// close, as [`Connection::transport`] says (the server closes TCP first; a client waits
    /// for it).
    Closed,
}

/// A timer of the shell that ran out, reported with [`Connection::on_timeout`]. The shell
/// keeps the clock; the core decides what the expiry means for the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Timeout {
    /// No pong came back within the keepalive timeout after a ping: the peer is gone or
    /// stuck. Fails the connection with 1011 (internal error) and aborts the transport.
    Keepalive,
    /// Nothing was received within the idle timeout. Fails the connection with 1001 (going
    /// away) and aborts the transport.
    Idle,
    /// The close handshake did not finish within the close timeout, or, once it is over,
    /// writing the rest or waiting for the peer to close the transport did not. No close
    /// frame is sent; what is still queued is dropped and the transport aborted.
    CloseHandshake,
}

impl Timeout {
    /// The close frame this timeout fails the connection with, if any.
    fn close_frame(self) -> Option<CloseFrame> {
        match self {
            Timeout::Keepalive => Some(CloseFrame::new(
                CloseCode::INTERNAL_ERROR,
                "Keepalive timeout",
            )),
            Timeout::Idle => Some(CloseFrame::new(CloseCode::GOING_AWAY, "Idle timeout")),
            Timeout::CloseHandshake => None,
        }
    }
}

/// What the shell does with the transport, from [`Connection::transport`]. The core orders
/// the end of the connection as RFC 6455 section 7.1.1 asks: after the close handshake (or a
/// failure) the server closes the TCP connection first, and a client waits for it, within the
/// shell's close timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportAction {
    /// Keep reading and writing.
    Open,
    /// The connection is closed and this end is a client: write what is queued, then read
    /// (discarding the bytes) until the server closes the transport, and report that with
    /// [`Connection::recv_eof`] (a read error counts as such). The shell bounds this by its
    /// close timeout and reports the expiry with [`Timeout::CloseHandshake`].
    AwaitClose,
    /// Write what is queued, then close the transport: shut its writing side down (a TCP FIN)
    /// and release it. Bounded by the close timeout as for [`AwaitClose`](Self::AwaitClose).
    Close,
    /// Close the transport without waiting for anything: at most one write of what is queued
    /// (the close frame of a failed connection) and one shut-down attempt that do not wait,
    /// then release it. The peer hung up without a close frame, or a timer ran out.
    Abort,
}

/// A piece of a data message: one frame of it in [`ReceiveMode::Fragments`], what has arrived
/// of it since the last piece in [`ReceiveMode::Streaming`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    /// Text or binary: the kind of the whole message.
    pub kind: DataKind,
    /// This piece's payload (unmasked, inflated). For text, a piece may end inside a code
    /// point; everything delivered so far is valid UTF-8 up to such an unfinished code point,
    /// and the message as a whole has been validated once the last piece is delivered.
    pub payload: Bytes,
    /// The first frame of its message.
    pub is_first: bool,
    /// The last frame of its message.
    pub is_last: bool,
}

/// What the core delivers to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A whole message, or a control message (ping, pong, close).
    Message(Message),
    /// A piece of a data message, in [`ReceiveMode::Fragments`] and
    /// [`ReceiveMode::Streaming`].
    Fragment(Fragment),
}

/// The frame being received: its header is parsed, validated and removed from the receive
/// buffer, which now starts with the payload; the payload may be partial. Kept small: it is
/// part of every connection.
#[derive(Debug, Clone, Copy)]
struct IncomingFrame {
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
struct IncomingMessage {
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

/// permessage-deflate's state: one box, allocated only when the extension was negotiated.
#[derive(Debug)]
struct Deflate {
    compressor: Compressor,
    decompressor: Decompressor,
}

/// The fragmented message being sent.
#[derive(Debug)]
struct OutgoingMessage {
    kind: DataKind,
    compressed: bool,
    utf8: Utf8Validator,
}

/// A WebSocket connection after the opening handshake, without I/O.
///
/// Methods come in three groups, as in `quinn-proto`:
/// * **inputs**: [`recv_buf`](Connection::recv_buf) (append received bytes),
///   [`recv_eof`](Connection::recv_eof), [`on_timeout`](Connection::on_timeout) (a timer
///   of the shell ran out);
/// * **outputs**: [`next_event`](Connection::next_event), [`output`](Connection::output)
///   (bytes to write), [`transport`](Connection::transport) (when to close the transport),
///   [`state`](Connection::state);
/// * **commands**: [`send`](Connection::send), [`send_fragment`](Connection::send_fragment),
///   [`send_encoded`](Connection::send_encoded), [`close`](Connection::close),
///   [`fail`](Connection::fail).
///
/// Parsing never panics on any input: a protocol violation queues a close frame with the right
/// code, is returned once as a [`ProtocolError`], and the connection delivers nothing more.
///
/// ```
/// use fullduplex_proto::{Config, Connection, Event, Message, Role};
/// let mut client = Connection::new(Role::Client, Config::default());
/// let mut server = Connection::new(Role::Server, Config::default());
/// client.send(Message::text("hello")).unwrap();
/// // The shell would write the client's output to the socket; here we move it by hand.
/// let bytes = client.take_output();
/// server.recv_buf().extend_from_slice(&bytes);
/// assert_eq!(server.next_event().unwrap(), Some(Event::Message(Message::text("hello"))));
/// assert_eq!(server.next_event().unwrap(), None); // needs more bytes
/// ```
#[derive(Debug)]
pub struct Connection {
    role: Role,
    config: Config,
    recv: BytesMut,
    out: OutQueue,
    frame: Option<IncomingFrame>,
    /// Boxed (and the box pooled per thread): most messages arrive whole and never need it,
    /// and idle connections should be small.
    message: Option<Box<IncomingMessage>>,
    /// The fragmented message being sent.
    sending: Option<OutgoingMessage>,
    close_sent: bool,
    close_received: bool,
    failed: bool,
    eof: bool,
    /// The transport is to be dropped without waiting ([`TransportAction::Abort`]).
    aborted: bool,
    /// The pong for the latest ping, held back while the output is backed up
    /// ([`PONG_BACKLOG`]).
    pending_pong: Option<Box<Bytes>>,
    /// Mask keys for a client, seeded from [`Config::mask_seed`] or the OS; servers never mask
    /// and carry no generator.
    rng: Option<Box<StdRng>>,
    /// permessage-deflate, once negotiated.
    deflate: Option<Box<Deflate>>,
}

impl Connection {
    /// A connection in the open state.
    pub fn new(role: Role, config: Config) -> Connection {
        let rng = match (role, config.mask_seed) {
            (Role::Client, Some(seed)) => Some(Box::new(StdRng::seed_from_u64(seed.get().into()))),
            (Role::Client, None) => Some(Box::new(StdRng::from_os_rng())),
            (Role::Server, _) => None,
        };
        Connection {
            role,
            config,
            recv: BytesMut::new(),
            out: OutQueue::new(),
            frame: None,
            message: None,
            sending: None,
            close_sent: false,
            close_received: false,
            failed: false,
            eof: false,
            aborted: false,
            pending_pong: None,
            rng,
            deflate: None,
        }
    }

    /// A connection whose receive buffer starts with `leftover`: the bytes that arrived after
    /// the HTTP head in the same read. They belong to the WebSocket stream and are kept.
    pub fn with_leftover(role: Role, config: Config, leftover: BytesMut) -> Connection {
        let mut connection = Connection::new(role, config);
        connection.recv = leftover;
        connection
    }

    /// Turns on permessage-deflate with the parameters the handshake agreed on (see
    /// [`crate::deflate::server_negotiate`] and [`crate::deflate::client_accept`]). From now
    /// on RSV1 marks compressed messages, and messages at least as long as the configured
    /// threshold are sent compressed.
    pub fn enable_deflate(&mut self, params: DeflateParams) {
        let config = self.config.deflate.clone().unwrap_or_default();
        self.deflate = Some(Box::new(Deflate {
            compressor: Compressor::new(&params, self.role, &config),
            decompressor: Decompressor::new(&params, self.role),
        }));
    }

    /// True once permessage-deflate is on.
    pub fn is_deflate_enabled(&self) -> bool {
        self.deflate.is_some()
    }

    /// This end's role.
    #[inline]
    pub fn role(&self) -> Role {
        self.role
    }

    /// The configuration.
    #[inline]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Changes how data messages are delivered, from the next message on.
    pub fn set_receive_mode(&mut self, mode: ReceiveMode) {
        self.config.receive_mode = mode;
    }

    /// Where the close handshake stands.
    #[inline]
    pub fn state(&self) -> State {
        if self.failed || self.close_received {
            State::Closed
        } else if self.close_sent {
            State::Closing
        } else {
            State::Open
        }
    }

    /// True once a close frame has been sent or queued (no more data may be sent).
    #[inline]
    pub fn is_close_sent(&self) -> bool {
        self.close_sent
    }

    /// True once nothing more may be sent: a close frame went out, or the connection failed.
    fn is_send_closed(&self) -> bool {
        self.close_sent || self.failed
    }

    /// True once the peer's close frame has been received.
    pub fn is_close_received(&self) -> bool {
        self.close_received
    }

    // ----- inputs -----

    /// The receive buffer: append bytes read from the transport, then call
    /// [`next_event`](Connection::next_event) until it returns `Ok(None)`.
    #[inline]
    pub fn recv_buf(&mut self) -> &mut BytesMut {
        &mut self.recv
    }

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

    /// The transport reached end of stream.
    pub fn recv_eof(&mut self) {
        self.eof = true;
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

    // ----- outputs -----

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

    /// The bytes waiting to be written, as a read-only view: write them (vectored) and
    /// `advance` by what was written; call `output` again for what is left (a held-back pong
    /// joins the queue here once the queue has drained below [`PONG_BACKLOG`]). Only the
    /// connection's commands queue bytes:
    ///
    /// ```compile_fail
    /// use fullduplex_proto::{Config, Connection, Role};
    /// let mut server = Connection::new(Role::Server, Config::default());
    /// server.close(None).unwrap();
    /// server.output().push_copy(b"\x81\x05after"); // not public: no frame after the close
    /// ```
    #[inline]
    pub fn output(&mut self) -> &mut OutQueue {
        if self.pending_pong.is_some() && self.out.len() < PONG_BACKLOG {
            self.release_pending_pong();
        }
        &mut self.out
    }

    /// Bytes queued and not yet written (a held-back pong included).
    #[inline]
    pub fn output_len(&self) -> usize {
        self.out.len() + self.pending_pong.as_ref().map_or(0, |pong| 2 + pong.len())
    }

    /// Takes all pending output as one contiguous buffer (convenient for tests and simple
    /// shells; it copies).
    pub fn take_output(&mut self) -> Bytes {
        self.release_pending_pong();
        let out = &mut self.out;
        out.copy_to_bytes(out.remaining())
    }

    fn release_pending_pong(&mut self) {
        if let Some(payload) = self.pending_pong.take() {
            self.queue_frame(
                FrameHeader::new(OpCode::Pong, payload.len() as u64),
                *payload,
            );
        }
    }

    // ----- commands -----

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

    /// Fails the connection (RFC 6455 section 7.1.7) for a reason of the application or the
    /// shell, such as a message it cannot handle: queues a close frame with `code` and
    /// `reason` (cut to [`MAX_REASON_LEN`](crate::close::MAX_REASON_LEN) bytes) unless a close
    /// frame was sent already, stops processing input (the message being received is dropped
    /// and [`next_event`](Connection::next_event) returns `Ok(None)` from now on), and moves
    /// the state to [`State::Closed`]. Nothing more may be sent; what is queued (the close
    /// frame last) is still to be written.
    /// Failing a connection that failed or closed already changes nothing.
    ///
    /// # Errors
    ///
    /// [`SendError::InvalidCloseCode`] when `code` may not appear in a close frame (1005,
    /// 1006, 1015, ...); the connection is left as it was.
    ///
    /// ```
    /// use fullduplex_proto::{CloseCode, Config, Connection, Event, Message, Role, State};
    /// let mut client = Connection::new(Role::Client, Config::default());
    /// let mut server = Connection::new(Role::Server, Config::default());
    /// server.fail(CloseCode::POLICY_VIOLATION, "no thanks").unwrap();
    /// assert_eq!(server.state(), State::Closed);
    /// client.recv_buf().extend_from_slice(&server.take_output());
    /// let Some(Event::Message(Message::Close(Some(frame)))) = client.next_event().unwrap() else {
    ///     panic!("expected the close frame");
    /// };
    /// assert_eq!((frame.code, frame.reason.as_str()), (CloseCode::POLICY_VIOLATION, "no thanks"));
    /// ```
    pub fn fail(&mut self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        if !code.is_valid_on_wire() {
            return Err(SendError::InvalidCloseCode(code.0));
        }
        if self.failed || self.close_received {
            return Ok(());
        }
        self.fail_with(&CloseFrame::new(code, reason));
        Ok(())
    }

    /// A timer of the shell ran out: the core fails the connection as the [`Timeout`] says
    /// (a close frame with its code unless one was sent already, no more input processed,
    /// state [`State::Closed`]) and [`transport`](Connection::transport) becomes
    /// [`TransportAction::Abort`]. For [`Timeout::CloseHandshake`] what is still queued is
    /// dropped: the transport will not take it.
    ///
    /// ```
    /// use fullduplex_proto::{Config, Connection, Role, State, Timeout, TransportAction};
    /// let mut server = Connection::new(Role::Server, Config::default());
    /// server.on_timeout(Timeout::Keepalive);
    /// assert_eq!(server.state(), State::Closed);
    /// assert_eq!(server.transport(), TransportAction::Abort);
    /// let close = server.take_output();
    /// assert_eq!(&close[2..4], &1011u16.to_be_bytes()); // a close frame with 1011
    /// ```
    pub fn on_timeout(&mut self, timeout: Timeout) {
        match timeout.close_frame() {
            Some(frame) if !self.failed && !self.close_received => self.fail_with(&frame),
            _ => self.stop_input(),
        }
        if timeout == Timeout::CloseHandshake {
            self.pending_pong = None;
            let queued = self.out.len();
            self.out.advance(queued);
        }
        self.aborted = true;
    }

    /// What the shell does with the transport now (see [`TransportAction`]): keep it open
    /// while the connection is open or closing; once it is closed, a server closes the
    /// transport and a client waits for the server to close it (then closes its end); after
    /// an end of stream without a close frame or a timeout, abort it.
    ///
    /// ```
    /// use fullduplex_proto::{Config, Connection, Role, TransportAction};
    /// let mut client = Connection::new(Role::Client, Config::default());
    /// let mut server = Connection::new(Role::Server, Config::default());
    /// client.close(None).unwrap();
    /// assert_eq!(client.transport(), TransportAction::Open); // waits for the server's close
    /// server.recv_buf().extend_from_slice(&client.take_output());
    /// server.next_event().unwrap(); // the close, echoed
    /// assert_eq!(server.transport(), TransportAction::Close); // the server closes TCP first
    /// client.recv_buf().extend_from_slice(&server.take_output());
    /// client.next_event().unwrap();
    /// assert_eq!(client.transport(), TransportAction::AwaitClose);
    /// client.recv_eof(); // the server closed TCP
    /// assert_eq!(client.transport(), TransportAction::Close);
    /// ```
    #[inline]
    pub fn transport(&self) -> TransportAction {
        if self.aborted {
            TransportAction::Abort
        } else if self.state() != State::Closed {
            TransportAction::Open
        } else if self.role == Role::Server || self.eof {
            TransportAction::Close
        } else {
            TransportAction::AwaitClose
        }
    }

    // ----- receiving -----

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

    /// Fails the connection for the peer's protocol error: its close code, its message as the
    /// reason (none for an unexpected end of stream, whose 1006 is never sent).
    fn fail_on(&mut self, error: &ProtocolError) {
        if *error == ProtocolError::UnexpectedEof {
            self.stop_input();
        } else {
            let reason = error.to_string();
            self.fail_with(&CloseFrame::new(error.close_code(), reason.as_str()));
        }
    }

    /// Queues `frame` unless a close frame was sent already, and stops processing input.
    fn fail_with(&mut self, frame: &CloseFrame) {
        if !self.close_sent {
            self.queue_close(Some(frame));
        }
        self.stop_input();
    }

    /// Nothing more is read: the frame and message being received are dropped.
    fn stop_input(&mut self) {
        self.failed = true;
        self.frame = None;
        message_pool::give(self.message.take());
    }

    // ----- sending -----

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

    fn queue_close(&mut self, frame: Option<&CloseFrame>) {
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
    fn queue_frame(&mut self, header: FrameHeader, payload: Bytes) {
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

/// Encodes one unmasked (server-to-client) frame holding a whole message, for
/// [`Connection::send_encoded`]: encode once, queue the same `Bytes` on many connections.
///
/// ```
/// use fullduplex_proto::connection::encode_server_message;
/// use fullduplex_proto::{Config, Connection, Event, Message, Role};
/// let frame = encode_server_message(&Message::text("news"));
/// let mut server = Connection::new(Role::Server, Config::default());
/// let mut client = Connection::new(Role::Client, Config::default());
/// server.send_encoded(frame).unwrap();
/// client.recv_buf().extend_from_slice(&server.take_output());
/// assert_eq!(client.next_event().unwrap(), Some(Event::Message(Message::text("news"))));
/// ```
pub fn encode_server_message(message: &Message) -> Bytes {
    let (opcode, payload) = match message {
        Message::Text(text) => (OpCode::Text, text.as_bytes().clone()),
        Message::Binary(data) => (OpCode::Binary, data.clone()),
        Message::Ping(data) => (OpCode::Ping, data.clone()),
        Message::Pong(data) => (OpCode::Pong, data.clone()),
        Message::Close(_) => (OpCode::Close, message.clone().into_payload()),
    };
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = FrameHeader::new(opcode, payload.len() as u64).encode(&mut head);
    let mut out = BytesMut::with_capacity(n + payload.len());
    out.put_slice(&head[..n]);
    out.put_slice(&payload);
    out.freeze()
}

/// `frame` (one final, unmasked, uncompressed text or binary frame, as
/// [`encode_server_message`] makes it) with its payload compressed as a permessage-deflate
/// message by `compressor`: RSV1 set, the same opcode. `None` when `frame` is not such a
/// frame, when its payload is under the compressor's threshold, or when compressing does not
/// make it smaller.
///
/// With a compressor that starts every message afresh (no context takeover) the bytes suit
/// every connection that negotiated `server_no_context_takeover` and a server window of at
/// least the compressor's: a server compresses a broadcast once for all such subscribers and
/// queues the result with [`Connection::send_encoded`].
///
/// ```
/// use fullduplex_proto::connection::{deflate_server_frame, encode_server_message};
/// use fullduplex_proto::deflate::{Compressor, DeflateConfig, DeflateParams};
/// use fullduplex_proto::{Config, Connection, Event, Message, Role};
///
/// let params = DeflateParams {
///     server_no_context_takeover: true,
///     ..DeflateParams::default()
/// };
/// let mut compressor = Compressor::new(&params, Role::Server, &DeflateConfig::default());
/// let text = r#"{"type":"message","topic":"news","data":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}"#;
/// let plain = encode_server_message(&Message::text(text));
/// let deflated = deflate_server_frame(&plain, &mut compressor).unwrap();
/// assert!(deflated.len() < plain.len());
///
/// let mut client = Connection::new(Role::Client, Config::default());
/// client.enable_deflate(params);
/// client.recv_buf().extend_from_slice(&deflated);
/// assert_eq!(client.next_event().unwrap(), Some(Event::Message(Message::text(text))));
/// ```
pub fn deflate_server_frame(frame: &[u8], compressor: &mut Compressor) -> Option<Bytes> {
    let (header, head_len) = FrameHeader::parse(frame).ok()??;
    let data = matches!(header.opcode, OpCode::Text | OpCode::Binary);
    let plain = header.fin && !header.rsv1 && !header.rsv2 && !header.rsv3;
    let payload = frame.get(head_len..)?;
    if !data || !plain || header.mask.is_some() || payload.len() as u64 != header.payload_len {
        return None;
    }
    if !compressor.should_compress(payload.len()) {
        return None;
    }
    let mut compressed = BytesMut::with_capacity(payload.len() / 2 + 16);
    compressor.compress(payload, &mut compressed).ok()?;
    let mut head = FrameHeader::new(header.opcode, compressed.len() as u64);
    head.rsv1 = true;
    let mut bytes = [0u8; MAX_HEADER_LEN];
    let n = head.encode(&mut bytes);
    if n + compressed.len() >= frame.len() {
        return None;
    }
    let mut out = BytesMut::with_capacity(n + compressed.len());
    out.put_slice(&bytes[..n]);
    out.put_slice(&compressed);
    Some(out.freeze())
}

/// Boxes for the message being received, lent per thread: a connection holds one only while a
/// message arrives in pieces (fragmented, compressed, or larger than a read), and getting one
/// allocates nothing once the thread has received such a message before.
mod message_pool {
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
    pub(super) fn take(message: IncomingMessage) -> Box<IncomingMessage> {
        match crate::pool::take(&POOL) {
            Some(mut boxed) => {
                *boxed = message;
                boxed
            }
            None => Box::new(message),
        }
    }

    /// Returns a finished message's box to the pool (its buffer is released first).
    pub(super) fn give(message: Option<Box<IncomingMessage>>) {
        let Some(mut boxed) = message else { return };
        boxed.joined = bytes::BytesMut::new();
        boxed.inflating = None;
        crate::pool::give(&POOL, boxed);
    }
}

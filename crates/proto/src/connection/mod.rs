//! The connection state machine: bytes in, events out; messages in, bytes out.
//!
//! One type, [`Connection`], written by job: `receive` turns bytes into events (frames,
//! message assembly, limits, automatic pong and close echo), `send` turns messages into queued
//! bytes, `lifecycle` fails the connection, takes the shell's timeouts and says when to close
//! the transport, `outbox` lends the send side to a handler of a borrowed message, and
//! `encode` builds frames once for many connections.

mod encode;
mod lifecycle;
mod outbox;
mod receive;
mod send;

use bytes::{Buf, Bytes, BytesMut};
use rand::rngs::StdRng;
use rand::SeedableRng;

pub use crate::event::{Event, Fragment};
pub use crate::role::Role;
pub use encode::{deflate_server_frame, encode_server_message};
pub use lifecycle::{Timeout, TransportAction};
pub use outbox::Outbox;

use crate::config::{Config, ReceiveMode};
use crate::deflate::{Compressor, Decompressor, DeflateParams};
use crate::frame::{FrameHeader, OpCode};
use crate::out::OutQueue;
use receive::{IncomingFrame, IncomingMessage};
use send::OutgoingMessage;

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

/// permessage-deflate's state: one box, allocated only when the extension was negotiated.
#[derive(Debug)]
struct Deflate {
    compressor: Compressor,
    decompressor: Decompressor,
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
/// code, is returned once as a [`ProtocolError`](crate::ProtocolError), and the connection delivers nothing more.
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

    /// The receive buffer: append bytes read from the transport, then call
    /// [`next_event`](Connection::next_event) until it returns `Ok(None)`.
    #[inline]
    pub fn recv_buf(&mut self) -> &mut BytesMut {
        &mut self.recv
    }

    /// The transport reached end of stream.
    pub fn recv_eof(&mut self) {
        self.eof = true;
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

    /// Bytes queued and not yet written (a held-back pong included, as it will be written:
    /// with a client's 4-byte masking key).
    #[inline]
    pub fn output_len(&self) -> usize {
        let mask_len = if self.role == Role::Client { 4 } else { 0 };
        self.out.len()
            + self
                .pending_pong
                .as_ref()
                .map_or(0, |pong| 2 + mask_len + pong.len())
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
}

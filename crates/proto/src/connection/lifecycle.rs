//! The end of a connection: failing it ([`Connection::fail`], and on the peer's protocol
//! errors), the shell's timeouts ([`Connection::on_timeout`]), and when to close the transport
//! ([`Connection::transport`]).

use bytes::Buf;

use super::receive::message_pool;
use super::{Connection, Role, State};
use crate::close::{CloseCode, CloseFrame};
use crate::error::{ProtocolError, SendError};

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
#[non_exhaustive]
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

impl Connection {
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

    /// Fails the connection for the peer's protocol error: its close code, its message as the
    /// reason (none for an unexpected end of stream, whose 1006 is never sent).
    pub(super) fn fail_on(&mut self, error: &ProtocolError) {
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
}

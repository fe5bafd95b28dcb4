//! # fullduplex-proto
//!
//! The sans-I/O core of fullduplex: everything RFC 6455 says about bytes, and nothing about
//! sockets, clocks or runtimes.
//!
//! * [`frame`]: frame headers (all three length forms, opcodes, RSV bits, mask key), and
//!   [`FrameReader`](frame::FrameReader), frames out of a stream that arrives in pieces, for
//!   tools that watch or generate traffic.
//! * [`mask`]: XOR masking, a machine word at a time.
//! * [`utf8`]: incremental UTF-8 validation that fails as soon as input can no longer be
//!   valid, and [`Utf8Bytes`], text validated once.
//! * [`close`]: close codes and close frames.
//! * [`message`], [`event`], [`borrowed`]: what the application sends and receives, owned or
//!   lent to a handler.
//! * [`handshake`]: the HTTP/1.1 upgrade, client and server side, on [`http`] types, and the
//!   `Sec-WebSocket-Extensions` values ([`ExtensionOffer`](handshake::ExtensionOffer)) that it
//!   parses and permessage-deflate negotiates with.
//! * [`deflate`]: permessage-deflate (RFC 7692).
//! * [`pool`]: the per-thread buffer pools (receive buffers a shell borrows included).
//! * [`Connection`]: the state machine that turns received bytes into [`Event`]s and messages
//!   into bytes to send, fails the connection, and tells the shell when to close the
//!   transport.
//!
//! A shell (such as the `fullduplex` crate for tokio) reads socket bytes into
//! [`Connection::recv_buf`], pulls events with [`Connection::next_event`], writes
//! [`Connection::output`] to the socket, reports its timers' expiry with
//! [`Connection::on_timeout`], and closes the transport when [`Connection::transport`] says so.
#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod borrowed;
pub mod close;
pub mod config;
pub mod connection;
pub mod deflate;
pub mod error;
pub mod event;
mod extension;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod message;
pub mod out;
pub mod pool;
pub mod role;
pub mod utf8;

pub use borrowed::{EventRef, FragmentRef, MessageRef};
pub use close::{CloseCode, CloseFrame};
pub use config::{Config, ReceiveMode};
pub use connection::{Connection, Outbox, State, Timeout, TransportAction};
pub use error::{ProtocolError, SendError};
pub use event::{Event, Fragment};
pub use frame::{FrameHeader, OpCode};
pub use message::{DataKind, Message};
pub use out::OutQueue;
pub use role::Role;
pub use utf8::Utf8Bytes;

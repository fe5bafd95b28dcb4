//! # fullduplex-proto
//!
//! The sans-I/O core of fullduplex: everything RFC 6455 says about bytes, and nothing about
//! sockets, clocks or runtimes.
//!
//! * [`frame`]: frame headers (all three length forms, opcodes, RSV bits, mask key).
//! * [`mask`]: XOR masking, a machine word at a time.
//! * [`utf8`]: incremental UTF-8 validation that fails as soon as input can no longer be valid.
//! * [`close`]: close codes and close frames.
//! * [`handshake`]: the HTTP/1.1 upgrade, client and server side, on [`http`] types.
//! * [`borrowed`]: received messages lent to a handler instead of handed out, and the
//!   [`Outbox`] it replies through.
//! * [`pool`]: the per-thread buffer pools (receive buffers a shell borrows included).
//! * [`Connection`]: the state machine that turns received bytes into [`Event`]s and messages
//!   into bytes to send.
//!
//! A shell (such as the `fullduplex` crate for tokio) reads socket bytes into
//! [`Connection::recv_buf`], pulls events with [`Connection::next_event`], and writes
//! [`Connection::output`] to the socket.
#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod borrowed;
pub mod close;
pub mod config;
pub mod connection;
pub mod deflate;
pub mod error;
pub mod event;
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

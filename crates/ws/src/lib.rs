//! # fullduplex
//!
//! WebSocket (RFC 6455) for tokio, on the sans-I/O core [`fullduplex_proto`].
//!
//! * Server: [`accept`] and [`accept_with`] (inspect the request: path, Origin, cookies,
//!   subprotocols; accept or reject with any status) over any `AsyncRead + AsyncWrite`.
//! * Client: [`connect`] and [`connect_with`] for `ws://` and `wss://` (rustls), directly or
//!   through a [`tunnel`] via an HTTP `CONNECT` or SOCKS5 proxy (explicit, or from
//!   `https_proxy` & co.).
//! * [`WebSocket`]: `recv`/`send`/`feed`/`flush`/`close`, `Stream` and `Sink`; `recv_many`,
//!   the borrowed fast path; [`split`] halves; [`Fragments`] for messages received piece by
//!   piece; [`PollSocket`] for code that polls connections itself; keepalive, idle, close and
//!   handshake timeouts.
//! * HTTP/2 (RFC 8441, features `hyper` and `http2`): WebSockets as streams of an HTTP/2
//!   connection, accepted in a hyper service or by `http2::serve_connection`, opened by
//!   `connect` over `wss://` when the server offers it, or many on one `http2::Http2Connection`.
//! * [`WebSocketSet`]: many connections driven by one task, for servers that hold tens of
//!   thousands (under 1 KiB per idle connection).
//!
//! ```no_run
//! use fullduplex::Message;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), fullduplex::Error> {
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:9001").await?;
//!     loop {
//!         let (tcp, _) = listener.accept().await?;
//!         tokio::spawn(async move {
//!             let mut ws = fullduplex::accept(tcp).await?;
//!             while let Some(message) = ws.recv().await {
//!                 let message = message?;
//!                 if let Message::Text(_) | Message::Binary(_) = message {
//!                     ws.send(message).await?;
//!                 }
//!             }
//!             Ok::<_, fullduplex::Error>(())
//!         });
//!     }
//! }
//! ```
//!
//! [`split`]: WebSocket::split
#![warn(missing_docs)]

mod client;
mod config;
mod error;
mod fragments;
mod head;
#[cfg(feature = "http2")]
pub mod http2;
#[cfg(feature = "hyper")]
pub mod hyper;
mod poll;
mod server;
pub mod set;
mod socket;
mod split;
mod stream;
mod threads;
mod timers;
#[cfg(feature = "rustls")]
pub mod tls;
pub mod tunnel;

pub use client::{
    client_handshake, connect, connect_stream, connect_with, ClientRequest, IntoClientRequest,
};
pub use config::{Config, Keepalive};
pub use error::{Error, TimeoutKind, UsageError};
pub use fragments::Fragments;
#[cfg(feature = "http2")]
pub use http2::Http2Policy;
pub use poll::PollSocket;
pub use server::{accept, accept_with, Accept, Reject};
pub use set::WebSocketSet;
pub use socket::WebSocket;
pub use split::{ReadHalf, WriteHalf};
pub use stream::MaybeTlsStream;
#[cfg(all(unix, not(target_os = "solaris"), not(target_os = "illumos")))]
pub use threads::reuseport_listener;
pub use threads::SetThreads;

pub use bytes::Bytes;
pub use fullduplex_proto as proto;
pub use fullduplex_proto::handshake::UpgradeRequest;
pub use fullduplex_proto::{
    CloseCode, CloseFrame, DataKind, Event, EventRef, Fragment, FragmentRef, Message, MessageRef,
    Outbox, Role, State, Utf8Bytes,
};

/// The README's examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

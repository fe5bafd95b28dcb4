//! The error type of the tokio layer.

use std::io;

use bytes::Bytes;
use fullduplex_proto::handshake::HandshakeError;
use fullduplex_proto::{ProtocolError, SendError};
use thiserror::Error;

use crate::proxy::ProxyError;

/// Which timer ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    /// TCP connect, TLS and the HTTP upgrade did not finish within the handshake timeout.
    Handshake,
    /// No pong arrived within the keepalive timeout after a ping.
    Keepalive,
    /// Nothing was received for the idle timeout.
    Idle,
    /// The close handshake did not finish within the close timeout.
    Close,
}

/// Everything that can go wrong on a WebSocket connection.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The transport failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The peer broke RFC 6455; the connection was failed with the error's close code.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// The application asked for something the protocol does not allow now.
    #[error("cannot send: {0}")]
    Send(#[from] SendError),
    /// The opening handshake was malformed (either side).
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    /// The server answered the upgrade request with another status than 101. The response
    /// (status, headers and up to 64 KiB of body) says why.
    #[error("server answered {}", .0.status())]
    Http(Box<http::Response<Bytes>>),
    /// The server application rejected the upgrade request with this status.
    #[error("upgrade rejected with {0}")]
    Rejected(http::StatusCode),
    /// A timer ran out.
    #[error("{0:?} timeout")]
    Timeout(TimeoutKind),
    /// The proxy could not be used: bad proxy URL, proxy unreachable, or it refused the
    /// tunnel (an HTTP status such as `407`, a SOCKS5 reply code).
    #[error("proxy: {0}")]
    Proxy(#[from] ProxyError),
    /// The URL could not be used (scheme, host, port).
    #[error("invalid URL: {0}")]
    Url(String),
    /// TLS setup or handshake failed.
    #[cfg(feature = "rustls")]
    #[error("TLS error: {0}")]
    Tls(#[from] rustls::Error),
    /// `recv` was called in fragment mode, where `recv_event` must be used.
    #[error("receive mode is Fragments: use recv_event")]
    FragmentMode,
    /// The connection is closed; nothing more can be sent or received.
    #[error("connection closed")]
    Closed,
    /// A WebSocket over HTTP/2 (RFC 8441) could not be opened or served.
    #[cfg(feature = "http2")]
    #[error("HTTP/2: {0}")]
    Http2(#[from] crate::http2::Http2Error),
}

impl Error {
    /// The HTTP response of a failed client handshake, if that is what this is.
    pub fn http_response(&self) -> Option<&http::Response<Bytes>> {
        match self {
            Error::Http(response) => Some(response),
            _ => None,
        }
    }
}

//! The error type of the tokio layer.

use std::io;

use bytes::Bytes;
use fullduplex_proto::handshake::HandshakeError;
use fullduplex_proto::{ProtocolError, SendError};
use thiserror::Error;

use crate::tunnel::TunnelError;

/// Which timer ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
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

/// Everything that can go wrong on a WebSocket connection, by whose fault: the transport
/// ([`Io`](Error::Io), [`Tls`](Error::Tls), [`Timeout`](Error::Timeout)), the peer
/// ([`Protocol`](Error::Protocol), [`Handshake`](Error::Handshake), [`Http`](Error::Http)),
/// the proxy ([`Tunnel`](Error::Tunnel)), or the application itself ([`Usage`](Error::Usage)).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The transport failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The peer broke RFC 6455; the connection was failed with the error's close code.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
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
    /// The tunnel through a proxy could not be opened: bad proxy URL, proxy unreachable, or
    /// it refused the tunnel (an HTTP status such as `407`, a SOCKS5 reply code). I/O errors
    /// during the exchange with the proxy are [`Error::Io`].
    #[error("proxy tunnel: {0}")]
    Tunnel(TunnelError),
    /// TLS setup or handshake failed.
    #[cfg(feature = "rustls")]
    #[error("TLS error: {0}")]
    Tls(#[from] rustls::Error),
    /// The application used the API in a way it does not allow: a bad URL or header, a
    /// feature that is not compiled in, a send after the close.
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// A WebSocket over HTTP/2 (RFC 8441) could not be opened or served.
    #[cfg(feature = "http2")]
    #[error("HTTP/2: {0}")]
    Http2(#[from] crate::http2::Http2Error),
}

/// A mistake of the application, found before anything went on the wire (or instead of it).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum UsageError {
    /// The URL cannot be connected to: it does not parse, its scheme is not `ws` or `wss`, it
    /// has no host, or its host is not a valid TLS server name.
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// A header added to the request has an invalid name, or a value that is not valid in
    /// an HTTP header.
    #[error("invalid header {name:?}: {reason}")]
    InvalidHeader {
        /// The header's name, as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The subprotocols offered cannot form a `Sec-WebSocket-Protocol` header.
    #[error("invalid subprotocol list {0:?}")]
    InvalidSubprotocol(String),
    /// A `wss://` URL, but the crate was built without its `rustls` feature.
    #[error("wss:// needs the `rustls` feature")]
    TlsFeatureMissing,
    /// The connection sent its close frame, failed or ended: nothing more can be sent.
    #[error("the connection is closing or closed")]
    Closed,
    /// The key names no connection of the set (any more).
    #[error("no connection with this key in the set")]
    UnknownKey,
    /// A message the protocol does not allow (a control payload over 125 bytes, a close code
    /// that may not be sent, a whole message in the middle of a fragmented one, ...).
    #[error("cannot send: {0}")]
    Send(SendError),
    /// A future was polled again after it had completed.
    #[error("polled after completion")]
    PolledAfterCompletion,
}

impl From<TunnelError> for Error {
    /// [`TunnelError::Io`] becomes [`Error::Io`], every other tunnel error
    /// [`Error::Tunnel`].
    fn from(error: TunnelError) -> Error {
        match error {
            TunnelError::Io(error) => Error::Io(error),
            error => Error::Tunnel(error),
        }
    }
}

impl From<SendError> for Error {
    /// [`SendError::Closed`] becomes [`UsageError::Closed`], the same mistake found by the
    /// core; every other send error [`UsageError::Send`].
    fn from(error: SendError) -> Error {
        Error::Usage(match error {
            SendError::Closed => UsageError::Closed,
            error => UsageError::Send(error),
        })
    }
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

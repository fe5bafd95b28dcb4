//! WebSockets over HTTP/2 (RFC 8441, extended CONNECT), both roles.
//!
//! A WebSocket on HTTP/2 is one stream of an HTTP/2 connection: it opens with a
//! `CONNECT` request carrying `:protocol websocket` (allowed once the server announced
//! `SETTINGS_ENABLE_CONNECT_PROTOCOL = 1`), is accepted with `200`, and then carries the same
//! WebSocket frames as a TCP connection would, in the stream's DATA frames. Many WebSockets can
//! share one TCP (and TLS) connection. The application sees the same [`WebSocket`] type.
//!
//! **Clients.** [`crate::connect_with`] uses HTTP/2 on its own for `wss://` when TLS (ALPN)
//! picks `h2` and the server announced RFC 8441, and falls back to HTTP/1.1 on a new
//! connection when it did not ([`Http2Policy::Auto`], the default with this feature); it can be
//! forced ([`Http2Policy::Always`], also for `ws://` as h2c with prior knowledge) or switched
//! off ([`Http2Policy::Never`]) with [`Config::http2`](crate::Config::http2) or
//! [`ClientRequest::http2`](crate::ClientRequest::http2). [`Http2Connection`] is the explicit
//! form: one connection, many WebSockets.
//!
//! **Servers.** [`crate::hyper::upgrade`] accepts extended CONNECTs in a hyper service served
//! with [`server_builder`] (or any hyper HTTP/2 builder with `enable_connect_protocol`).
//! Servers that do not use hyper themselves hand a connection that speaks HTTP/2 (TLS with
//! ALPN `h2`, or a TCP stream that [`is_h2c_preface`] recognises) to [`serve_connection`], with
//! the same [`Accept`](crate::Accept)/[`Reject`](crate::Reject) callback as
//! [`crate::accept_with`].
//!
//! **Closing (RFC 8441 section 6).** The orderly end of the WebSocket's transport is the
//! stream's END_STREAM (sent by `shutdown`, which the close handshake does; read as end of
//! stream), and an abort is RST_STREAM with `CANCEL` (sent when a client's WebSocket is
//! dropped before its close handshake ended; read as a connection reset). Closing a WebSocket
//! never closes the connection under the other streams.
//!
//! **Flow control.** Every stream has its own window ([`STREAM_WINDOW`]), given back as the
//! application reads, and the connection's window ([`CONNECTION_WINDOW`]) is large enough for
//! [`MAX_STREAMS`] full stream windows, so WebSockets that are not read stall only themselves.
//!
//! [`WebSocket`]: crate::WebSocket

mod client;
mod server;
mod stream;

pub(crate) use client::build;
pub use client::Http2Connection;
pub use server::{is_h2c_preface, serve_connection, server_builder, ALPN_H2, PREFACE};
pub use stream::Http2Stream;

/// The ALPN name of HTTP/2 as a byte string.
pub(crate) const H2: &[u8] = b"h2";

/// The ALPN name of HTTP/1.1.
pub(crate) const HTTP11: &[u8] = b"http/1.1";

/// The flow-control window of each stream (each WebSocket), in both roles: 256 KiB. A
/// WebSocket whose application does not read holds at most this much of the peer's data.
pub const STREAM_WINDOW: u32 = 256 << 10;

/// The most concurrent streams (WebSockets) a peer may open on one connection: 100.
pub const MAX_STREAMS: u32 = 100;

/// The connection's flow-control window: [`MAX_STREAMS`] × [`STREAM_WINDOW`] (25 MiB), so
/// that streams whose applications do not read cannot use up the window the others need.
pub const CONNECTION_WINDOW: u32 = MAX_STREAMS * STREAM_WINDOW;

/// A TLS server that refuses every protocol we offered (only `h2`) answers with the
/// `no_application_protocol` alert: that is [`Http2Error::NotNegotiated`].
pub(crate) fn alpn_refused(error: crate::Error) -> crate::Error {
    #[cfg(feature = "rustls")]
    if let crate::Error::Io(io) = &error {
        let refused = io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .is_some_and(|tls| {
                matches!(
                    tls,
                    rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol)
                )
            });
        if refused {
            return crate::Error::Http2(Http2Error::NotNegotiated);
        }
    }
    error
}

/// When [`crate::connect_with`] uses HTTP/2 (RFC 8441) for a WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Http2Policy {
    /// `wss://`: offer `h2` and `http/1.1` by ALPN; use HTTP/2 when the server picks `h2` and
    /// announces RFC 8441, HTTP/1.1 otherwise (on the same connection when it picked
    /// `http/1.1`, on a new one when it picked `h2` without RFC 8441 or reset the WebSocket's
    /// stream). `ws://`: HTTP/1.1. Never fails where HTTP/1.1 would have worked. The default.
    #[default]
    Auto,
    /// HTTP/1.1 only (no ALPN `h2` offered).
    Never,
    /// HTTP/2 only: `wss://` with ALPN `h2`, `ws://` as h2c with prior knowledge; fails with
    /// [`Http2Error`] when the server does not speak HTTP/2 or RFC 8441.
    Always,
}

/// Why a WebSocket over HTTP/2 could not be opened or served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Http2Error {
    /// TLS did not negotiate `h2` (ALPN): the server speaks only HTTP/1.1 there.
    #[error("the server did not agree to HTTP/2 (ALPN)")]
    NotNegotiated,
    /// The server did not announce `SETTINGS_ENABLE_CONNECT_PROTOCOL = 1`: it does not accept
    /// WebSockets over HTTP/2.
    #[error(
        "the server does not support WebSockets over HTTP/2 (no SETTINGS_ENABLE_CONNECT_PROTOCOL)"
    )]
    ConnectProtocolNotEnabled,
    /// The HTTP/2 connection or the WebSocket's stream failed (a stream reset by the server,
    /// a protocol error, the connection closed).
    #[error("{0}")]
    Protocol(#[from] h2::Error),
    /// The server side of a connection failed ([`serve_connection`]).
    #[error("HTTP/2 connection: {0}")]
    Server(::hyper::Error),
}

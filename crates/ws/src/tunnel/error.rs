//! The error type of the tunnel.

use std::io;

use thiserror::Error;

use super::Socks5Reply;

/// What can go wrong with a tunnel through a proxy; [`Error::Tunnel`](crate::Error::Tunnel)
/// wraps it (and [`TunnelError::Io`] becomes [`Error::Io`](crate::Error::Io)).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TunnelError {
    /// The proxy URL could not be parsed.
    #[error("invalid proxy URL: {0}")]
    InvalidUrl(String),
    /// The proxy URL's scheme is not `http`, `socks5` or `socks5h`.
    #[error("unsupported proxy scheme {0:?} (supported: http, socks5, socks5h)")]
    UnsupportedScheme(String),
    /// The target host cannot be sent to a proxy (empty, or characters a host cannot have).
    #[error("invalid target host {0:?}")]
    InvalidTarget(String),
    /// TCP to the proxy failed.
    #[error("cannot connect to proxy {proxy}: {source}")]
    Connect {
        /// The proxy's `host:port`.
        proxy: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The HTTP proxy answered `CONNECT` with a status other than `2xx` (`407`: it wants
    /// credentials, or other ones).
    #[error("CONNECT answered with {0}")]
    Status(http::StatusCode),
    /// The proxy's answer did not follow its protocol.
    #[error("malformed answer: {0}")]
    InvalidResponse(String),
    /// The HTTP proxy's response head exceeded [`MAX_CONNECT_RESPONSE`](super::MAX_CONNECT_RESPONSE) bytes.
    #[error("CONNECT response head larger than {0} bytes")]
    ResponseTooLarge(usize),
    /// The HTTP proxy sent this many bytes after its `2xx` head, before we sent anything
    /// through the tunnel. Neither TLS nor WebSocket servers speak first, so the tunnel is not
    /// trusted.
    #[error("{0} unexpected bytes after the CONNECT response")]
    UnexpectedData(usize),
    /// The SOCKS5 proxy accepts none of the authentication methods offered (no
    /// authentication, and username/password when credentials are given).
    #[error("SOCKS5 proxy accepts none of the offered authentication methods")]
    Socks5NoAcceptableAuth,
    /// The SOCKS5 proxy rejected the username and password.
    #[error("SOCKS5 proxy rejected the username or password")]
    Socks5AuthFailed,
    /// The SOCKS5 proxy could not open the connection to the target.
    #[error("SOCKS5 proxy: {0}")]
    Socks5(Socks5Reply),
    /// A username or password longer than SOCKS5 allows (255 bytes).
    #[error("SOCKS5 username and password are limited to 255 bytes each")]
    CredentialsTooLong,
    /// A target host name longer than SOCKS5 allows (255 bytes).
    #[error("SOCKS5 host names are limited to 255 bytes")]
    HostTooLong,
    /// The connection to the proxy failed during the exchange.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

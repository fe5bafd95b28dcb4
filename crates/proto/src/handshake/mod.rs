//! The HTTP/1.1 upgrade handshake (RFC 6455 section 4), both roles, on [`http`] types.
//!
//! * [`server`]: parse an upgrade request ([`parse_request`]), validate it ([`validate_request`]),
//!   answer it ([`accept_response`] or [`rejection`]) and encode the answer
//!   ([`encode_response_head`] for the 101, [`encode_response`] for a rejection).
//! * [`client`]: fill in a request ([`prepare_request`]), encode it ([`encode_request`]), parse
//!   the answer ([`parse_response`]) and check it ([`validate_response`]).
//! * [`extensions`]: the `Sec-WebSocket-Extensions` grammar (RFC 6455 section 9.1).
//! * [`h2`]: the same handshake as an HTTP/2 extended CONNECT (RFC 8441), both roles
//!   ([`validate_extended_connect`], [`prepare_extended_connect`],
//!   [`validate_extended_connect_response`]).
//!
//! Nothing here performs I/O: parsers take the bytes received so far and say how long the head
//! was, so that the bytes after it (which already belong to the WebSocket stream) are kept by
//! the caller.
//!
//! ```
//! use fullduplex_proto::handshake::{accept_response, parse_request, validate_request};
//!
//! let bytes = b"GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
//!     Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
//!     Sec-WebSocket-Version: 13\r\n\r\n";
//! let (request, head_len) = parse_request(bytes, 8192)?.expect("complete head");
//! assert_eq!(head_len, bytes.len());
//! let upgrade = validate_request(request)?;
//! let response = accept_response(&upgrade, None, None)?;
//! assert_eq!(response.headers()["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
//! # Ok::<(), fullduplex_proto::handshake::HandshakeError>(())
//! ```

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::header::AsHeaderName;
use http::{HeaderMap, StatusCode};
use sha1::{Digest, Sha1};

pub mod client;
pub mod extensions;
pub mod h2;
pub mod server;

mod head;

pub use client::{
    encode_request, offered_extensions, offered_protocols, parse_response, prepare_request,
    request_target, validate_response, Accepted,
};
pub use extensions::{format_extensions, parse_extensions, ExtensionOffer, ExtensionParam};
pub use h2::{
    prepare_extended_connect, validate_extended_connect, validate_extended_connect_response,
};
pub use server::{
    accept_response, encode_response, encode_response_head, parse_request, rejection,
    validate_request, UpgradeRequest,
};

/// The GUID that RFC 6455 section 1.3 appends to `Sec-WebSocket-Key` to compute
/// `Sec-WebSocket-Accept`.
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The only protocol version this crate speaks (`Sec-WebSocket-Version: 13`).
pub const VERSION: &str = "13";

/// How many header lines a request or response head may carry; more is
/// [`HandshakeError::TooManyHeaders`].
pub const MAX_HEADERS: usize = 100;

/// Computes `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64(SHA-1(key ++ [`GUID`])).
///
/// ```
/// use fullduplex_proto::handshake::accept_key;
///
/// assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
/// ```
pub fn accept_key(key: &[u8]) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(GUID.as_bytes());
    STANDARD.encode(sha1.finalize())
}

/// Generates a fresh `Sec-WebSocket-Key`: 16 random bytes, base64-encoded (24 characters).
///
/// ```
/// use fullduplex_proto::handshake::generate_key;
///
/// let key = generate_key();
/// assert_eq!(key.len(), 24);
/// assert_ne!(key, generate_key());
/// ```
///
/// # Panics
///
/// Panics if the operating system cannot provide random bytes.
pub fn generate_key() -> String {
    let mut nonce = [0u8; 16];
    // The OS random source failing is not something a caller could sensibly recover from, and
    // it does not depend on anything a peer sent.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut nonce).expect("the operating system random source failed");
    STANDARD.encode(nonce)
}

/// Whether any line of header `name`, split on commas and trimmed, equals `token`, ignoring
/// ASCII case.
///
/// ```
/// use fullduplex_proto::handshake::header_has_token;
/// use http::header::{HeaderMap, HeaderValue, CONNECTION};
///
/// let mut headers = HeaderMap::new();
/// headers.append(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
/// assert!(header_has_token(&headers, CONNECTION, "upgrade"));
/// assert!(!header_has_token(&headers, CONNECTION, "close"));
/// ```
pub fn header_has_token(headers: &HeaderMap, name: impl AsHeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|line| {
        line.as_bytes()
            .split(|&b| b == b',')
            .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// The non-empty, trimmed, comma-separated items of every line of header `name`, in order.
///
/// Lines that are not visible ASCII are skipped.
pub(crate) fn header_items<'a>(
    headers: &'a HeaderMap,
    name: impl AsHeaderName,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(name)
        .into_iter()
        .filter_map(|line| line.to_str().ok())
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

/// Whether `b` may appear in an HTTP token (RFC 7230 section 3.2.6 `tchar`).
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether `s` is a non-empty HTTP token.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// Why a handshake failed.
///
/// On the server, [`HandshakeError::status`] is the status to answer with and the [`Display`]
/// text is the plain-text reason ([`rejection`] builds that response). On the client, the error
/// says what was wrong with the URL or with the server's answer.
///
/// [`Display`]: std::fmt::Display
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The head (request or status line plus headers) is longer than the configured limit.
    #[error("request header fields too large")]
    HeadTooLarge,
    /// The head carries more than [`MAX_HEADERS`] header lines.
    #[error("too many header fields")]
    TooManyHeaders,
    /// The head is not valid HTTP/1.x; the text says which part.
    #[error("malformed HTTP: {0}")]
    MalformedHttp(&'static str),
    /// The request method is not `GET` (RFC 6455 section 4.1).
    #[error("method must be GET")]
    MethodNotGet,
    /// An HTTP/2 WebSocket request's method is not `CONNECT` (RFC 8441 section 4).
    #[error("method must be CONNECT")]
    MethodNotConnect,
    /// An HTTP/2 CONNECT request has no `:protocol` pseudo-header: it asks for a plain
    /// tunnel, not a WebSocket (RFC 8441 section 4).
    #[error("CONNECT without :protocol: not a WebSocket request")]
    MissingProtocolPseudoHeader,
    /// An HTTP/2 extended CONNECT asks for another protocol than `websocket`.
    #[error("unsupported :protocol {0:?}, only websocket is supported")]
    UnsupportedProtocolPseudoHeader(String),
    /// An HTTP/2 extended CONNECT has no `:authority` (which replaces `Host`).
    #[error("missing :authority")]
    MissingAuthority,
    /// An HTTP/2 extended CONNECT has no `:path` (RFC 8441 section 4).
    #[error("missing :path")]
    MissingPath,
    /// The request is older than HTTP/1.1 (RFC 6455 section 4.1).
    #[error("HTTP/1.1 or later required")]
    HttpVersionTooOld,
    /// The request has no `Host` header.
    #[error("missing Host header")]
    MissingHost,
    /// The request's `Upgrade` header lacks the token `websocket`.
    #[error("Upgrade header must include \"websocket\"")]
    NoUpgradeWebSocket,
    /// The request's `Connection` header lacks the token `upgrade`.
    #[error("Connection header must include \"upgrade\"")]
    NoConnectionUpgrade,
    /// `Sec-WebSocket-Version` is missing or is not exactly `13`.
    #[error("unsupported WebSocket version, only 13 is supported")]
    UnsupportedVersion,
    /// The request has no `Sec-WebSocket-Key`.
    #[error("missing Sec-WebSocket-Key header")]
    MissingKey,
    /// `Sec-WebSocket-Key` is repeated or does not base64-decode to exactly 16 bytes.
    #[error("invalid Sec-WebSocket-Key header")]
    InvalidKey,
    /// `Sec-WebSocket-Protocol` contains something that is not a token.
    #[error("invalid Sec-WebSocket-Protocol header")]
    InvalidProtocols,
    /// `Sec-WebSocket-Extensions` does not follow the grammar of RFC 6455 section 9.1.
    #[error("invalid Sec-WebSocket-Extensions header")]
    InvalidExtensions,
    /// The server application chose a subprotocol the client did not offer.
    #[error("subprotocol {0:?} was not offered by the client")]
    ProtocolNotOffered(String),
    /// A value the application passed for a response header is not a valid header value.
    #[error("invalid response header value")]
    InvalidHeaderValue,
    /// The client URL is not an absolute `ws://` or `wss://` URL with a host.
    #[error("invalid WebSocket URL: {0}")]
    InvalidUrl(&'static str),
    /// The client URL's scheme is neither `ws` nor `wss`.
    #[error("unsupported URL scheme, expected ws or wss")]
    UnsupportedScheme,
    /// The server answered with a status other than `101 Switching Protocols`.
    #[error("unexpected response status {0}")]
    UnexpectedStatus(StatusCode),
    /// The server's response lacks `Upgrade: websocket`.
    #[error("response Upgrade header must be \"websocket\"")]
    ResponseNoUpgradeWebSocket,
    /// The server's response lacks `Connection: upgrade`.
    #[error("response Connection header must include \"upgrade\"")]
    ResponseNoConnectionUpgrade,
    /// The server's `Sec-WebSocket-Accept` is missing or does not match the key we sent.
    #[error("wrong Sec-WebSocket-Accept in response")]
    WrongAccept,
    /// The server selected a subprotocol we did not offer (or more than one).
    #[error("server selected subprotocol {0:?}, which was not offered")]
    UnexpectedProtocol(String),
    /// The server accepted an extension we did not offer.
    #[error("server accepted extension {0:?}, which was not offered")]
    UnexpectedExtension(String),
    /// The server's permessage-deflate answer is not one our offer allows (RFC 7692
    /// section 7.1: the client must fail the connection), or it was answered twice.
    #[error("permessage-deflate negotiation: {0}")]
    Deflate(#[from] crate::deflate::DeflateNegotiationError),
}

impl HandshakeError {
    /// The HTTP status a server answers with for this error.
    ///
    /// 431 for oversized heads, 426 (with `Sec-WebSocket-Version: 13`, see [`rejection`]) when
    /// the request is not a version 13 WebSocket upgrade, 400 for other bad requests, 500 for
    /// mistakes of the server application, and 502 for errors found in a server's response
    /// (which a proxy would pass on).
    ///
    /// ```
    /// use fullduplex_proto::handshake::HandshakeError;
    /// use http::StatusCode;
    ///
    /// assert_eq!(HandshakeError::UnsupportedVersion.status(), StatusCode::UPGRADE_REQUIRED);
    /// assert_eq!(HandshakeError::MissingKey.status(), StatusCode::BAD_REQUEST);
    /// ```
    pub fn status(&self) -> StatusCode {
        match self {
            Self::HeadTooLarge | Self::TooManyHeaders => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            Self::NoUpgradeWebSocket | Self::NoConnectionUpgrade | Self::UnsupportedVersion => {
                StatusCode::UPGRADE_REQUIRED
            }
            Self::MalformedHttp(_)
            | Self::MethodNotGet
            | Self::MethodNotConnect
            | Self::MissingProtocolPseudoHeader
            | Self::UnsupportedProtocolPseudoHeader(_)
            | Self::MissingAuthority
            | Self::MissingPath
            | Self::HttpVersionTooOld
            | Self::MissingHost
            | Self::MissingKey
            | Self::InvalidKey
            | Self::InvalidProtocols
            | Self::InvalidExtensions
            | Self::InvalidUrl(_)
            | Self::UnsupportedScheme => StatusCode::BAD_REQUEST,
            Self::ProtocolNotOffered(_) | Self::InvalidHeaderValue => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Self::UnexpectedStatus(_)
            | Self::Deflate(_)
            | Self::ResponseNoUpgradeWebSocket
            | Self::ResponseNoConnectionUpgrade
            | Self::WrongAccept
            | Self::UnexpectedProtocol(_)
            | Self::UnexpectedExtension(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{HeaderValue, CONNECTION, UPGRADE};

    #[test]
    fn accept_key_vectors() {
        assert_eq!(
            accept_key(b"sN9cRrP/n9NdMgdcy2VJFQ=="),
            "fFBooB7FAkLlXgRSz0BT3v4hq5s="
        );
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn generated_key_is_16_bytes() {
        let key = generate_key();
        assert_eq!(STANDARD.decode(key).map(|k| k.len()), Ok(16));
    }

    #[test]
    fn token_lists() {
        let mut headers = HeaderMap::new();
        headers.append(CONNECTION, HeaderValue::from_static("keep-alive"));
        headers.append(CONNECTION, HeaderValue::from_static(" ,UPGRADE "));
        headers.append(UPGRADE, HeaderValue::from_static("websocketx"));
        assert!(header_has_token(&headers, CONNECTION, "upgrade"));
        assert!(header_has_token(&headers, "connection", "Keep-Alive"));
        assert!(!header_has_token(&headers, UPGRADE, "websocket"));
        assert!(!header_has_token(&headers, "sec-websocket-key", "x"));
        let items: Vec<_> = header_items(&headers, CONNECTION).collect();
        assert_eq!(items, ["keep-alive", "UPGRADE"]);
    }

    #[test]
    fn tokens() {
        assert!(is_token("permessage-deflate"));
        assert!(!is_token(""));
        assert!(!is_token("a b"));
        assert!(!is_token("a\"b"));
    }
}

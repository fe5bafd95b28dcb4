//! The client side of the opening handshake (RFC 6455 section 4.1).
//!
//! 1. [`prepare_request`] fills in a request for a `ws://` or `wss://` URL and returns the key
//!    it generated; [`encode_request`] turns it into bytes.
//! 2. [`parse_response`] the bytes received so far until it returns the response and the head
//!    length; bytes after the head are WebSocket frames.
//! 3. [`validate_response`] checks the answer against the key and what was offered.
//!
//! ```
//! use bytes::BytesMut;
//! use fullduplex_proto::handshake::{
//!     accept_key, encode_request, offered_protocols, parse_response, prepare_request,
//!     validate_response,
//! };
//! use http::Request;
//!
//! let request = Request::get("ws://example.com/chat")
//!     .header("sec-websocket-protocol", "chat")
//!     .body(())?;
//! let (request, key) = prepare_request(request)?;
//! let mut out = BytesMut::new();
//! encode_request(&request, &mut out);
//! assert!(out.starts_with(b"GET /chat HTTP/1.1\r\n"));
//!
//! let answer = format!(
//!     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
//!      Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: chat\r\n\r\n",
//!     accept_key(key.as_bytes())
//! );
//! let (response, _len) = parse_response(answer.as_bytes(), 8192)?.expect("complete");
//! let accepted = validate_response(&response, &key, &offered_protocols(&request), &[])?;
//! assert_eq!(accepted.protocol.as_deref(), Some("chat"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use bytes::{BufMut, BytesMut};
use http::header::{
    HeaderValue, CONNECTION, HOST, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, Version};

use super::extensions::{parse_extensions, ExtensionOffer};
use super::{
    generate_key, head, header_has_token, header_items, HandshakeError, MAX_HEADERS, VERSION,
};

/// Fills in an upgrade request for a `ws://` or `wss://` URL (RFC 6455 section 4.1).
///
/// Adds `Host` if absent (with `:port` only for a non-default port; IPv6 literals keep their
/// brackets), `Upgrade: websocket` and `Connection: Upgrade` unless those already carry the
/// tokens, `Sec-WebSocket-Version: 13`, and a freshly generated `Sec-WebSocket-Key` (replacing
/// any given). Every other header is kept as the caller set it (`Origin`, `Cookie`,
/// `Authorization`, `Sec-WebSocket-Protocol`, `Sec-WebSocket-Extensions`, ...). The version is
/// set to HTTP/1.1 and an empty path becomes `/`. User information in the URL is ignored.
///
/// Returns the request, whose URI stays absolute so the caller knows where to connect, and the
/// key to pass to [`validate_response`].
///
/// ```
/// use fullduplex_proto::handshake::prepare_request;
/// use http::Request;
///
/// let (request, key) = prepare_request(Request::get("ws://[::1]:9001/chat?x=1").body(())?)?;
/// assert_eq!(request.headers()["host"], "[::1]:9001");
/// assert_eq!(request.headers()["sec-websocket-key"], key.as_str());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn prepare_request(mut request: Request<()>) -> Result<(Request<()>, String), HandshakeError> {
    if request.method() != Method::GET {
        return Err(HandshakeError::MethodNotGet);
    }
    let uri = request.uri();
    let default_port = match uri.scheme_str() {
        None => {
            return Err(HandshakeError::InvalidUrl(
                "an absolute ws:// or wss:// URL is required",
            ))
        }
        Some(s) if s.eq_ignore_ascii_case("ws") => 80,
        Some(s) if s.eq_ignore_ascii_case("wss") => 443,
        Some(_) => return Err(HandshakeError::UnsupportedScheme),
    };
    let host = match uri.host() {
        Some(host) if !host.is_empty() => host,
        _ => return Err(HandshakeError::InvalidUrl("the URL has no host")),
    };
    let host = match uri.port_u16() {
        Some(port) if port != default_port => format!("{host}:{port}"),
        _ => host.to_owned(),
    };
    if uri
        .path_and_query()
        .is_none_or(|pq| !pq.as_str().starts_with('/'))
    {
        let target = format!("/{}", uri.path_and_query().map_or("", |pq| pq.as_str()));
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = Some(
            PathAndQuery::try_from(target)
                .map_err(|_| HandshakeError::InvalidUrl("invalid path"))?,
        );
        *request.uri_mut() =
            Uri::from_parts(parts).map_err(|_| HandshakeError::InvalidUrl("invalid path"))?;
    }
    *request.version_mut() = Version::HTTP_11;

    let key = generate_key();
    let headers = request.headers_mut();
    if !headers.contains_key(HOST) {
        let host =
            HeaderValue::try_from(host).map_err(|_| HandshakeError::InvalidUrl("invalid host"))?;
        headers.insert(HOST, host);
    }
    if !header_has_token(headers, UPGRADE, "websocket") {
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    }
    if !header_has_token(headers, CONNECTION, "upgrade") {
        headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    }
    headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static(VERSION));
    let key_value =
        HeaderValue::try_from(key.as_str()).map_err(|_| HandshakeError::InvalidHeaderValue)?;
    headers.insert(SEC_WEBSOCKET_KEY, key_value);
    Ok((request, key))
}

/// The request target for `uri`: path and query, `/` when empty.
///
/// ```
/// use fullduplex_proto::handshake::request_target;
/// use http::Uri;
///
/// assert_eq!(request_target(&Uri::from_static("ws://h/chat?x=1")), "/chat?x=1");
/// assert_eq!(request_target(&Uri::from_static("ws://h")), "/");
/// ```
pub fn request_target(uri: &Uri) -> &str {
    match uri.path_and_query().map(PathAndQuery::as_str) {
        Some(target) if !target.is_empty() => target,
        _ => "/",
    }
}

/// Appends `request` to `out`: `GET <path?query> HTTP/1.1`, the headers, and the empty line.
pub fn encode_request(request: &Request<()>, out: &mut BytesMut) {
    out.put_slice(request.method().as_str().as_bytes());
    out.put_u8(b' ');
    let target = request_target(request.uri());
    if !target.starts_with('/') && target != "*" {
        out.put_u8(b'/');
    }
    out.put_slice(target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    head::write_header_lines(request.headers(), out);
    out.put_slice(b"\r\n");
}

/// Parses a response head from the start of `buf`; the counterpart of
/// [`parse_request`](super::parse_request), with the same `Ok(None)`, length and size rules.
pub fn parse_response(
    buf: &[u8],
    max_head: usize,
) -> Result<Option<(Response<()>, usize)>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut headers);
    let len = match parsed.parse(head::window(buf, max_head)) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return head::partial(buf, max_head).map(|_| None),
        Err(error) => return Err(head::from_httparse(error)),
    };
    let code = parsed
        .code
        .ok_or(HandshakeError::MalformedHttp("missing status"))?;
    let mut response = Response::new(());
    *response.status_mut() =
        StatusCode::from_u16(code).map_err(|_| HandshakeError::MalformedHttp("invalid status"))?;
    *response.version_mut() = head::version(parsed.version)?;
    *response.headers_mut() = head::headers(parsed.headers)?;
    Ok(Some((response, len)))
}

/// What the server agreed to in a valid `101` response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Accepted {
    /// The subprotocol the server selected, one of those offered.
    pub protocol: Option<String>,
    /// The extensions the server accepted, with the parameters it answered, in order.
    pub extensions: Vec<ExtensionOffer>,
}

/// Checks the server's answer (RFC 6455 section 4.1, "the client MUST validate the server's
/// response"): status 101, `Upgrade: websocket`, `Connection: upgrade`, a
/// `Sec-WebSocket-Accept` matching `key`, at most one subprotocol and only one we offered, and
/// only extensions whose names we offered.
///
/// Interpreting the extension parameters (for example permessage-deflate's) is left to the
/// extension.
pub fn validate_response(
    response: &Response<()>,
    key: &str,
    offered_protocols: &[String],
    offered_extensions: &[ExtensionOffer],
) -> Result<Accepted, HandshakeError> {
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(HandshakeError::UnexpectedStatus(response.status()));
    }
    let headers = response.headers();
    if !header_has_token(headers, UPGRADE, "websocket") {
        return Err(HandshakeError::ResponseNoUpgradeWebSocket);
    }
    if !header_has_token(headers, CONNECTION, "upgrade") {
        return Err(HandshakeError::ResponseNoConnectionUpgrade);
    }
    let expected = super::accept_key(key.as_bytes());
    let mut accepts = headers.get_all(SEC_WEBSOCKET_ACCEPT).into_iter();
    match (accepts.next(), accepts.next()) {
        (Some(accept), None) if accept.as_bytes().trim_ascii() == expected.as_bytes() => {}
        _ => return Err(HandshakeError::WrongAccept),
    }
    negotiated(headers, offered_protocols, offered_extensions)
}

/// The subprotocol and extensions a successful answer's headers select, checked against what
/// was offered: at most one subprotocol and only one we offered, only extensions whose names
/// we offered. Shared by [`validate_response`] and the HTTP/2 extended CONNECT check.
pub(super) fn negotiated(
    headers: &http::HeaderMap,
    offered_protocols: &[String],
    offered_extensions: &[ExtensionOffer],
) -> Result<Accepted, HandshakeError> {
    let mut lines = headers.get_all(SEC_WEBSOCKET_PROTOCOL).into_iter();
    let protocol = match (lines.next(), lines.next()) {
        (None, _) => None,
        (Some(line), None) => {
            let text = String::from_utf8_lossy(line.as_bytes());
            let chosen = text.trim();
            if !offered_protocols.iter().any(|p| p == chosen) {
                return Err(HandshakeError::UnexpectedProtocol(chosen.to_owned()));
            }
            Some(chosen.to_owned())
        }
        (Some(line), Some(_)) => {
            let text = String::from_utf8_lossy(line.as_bytes());
            return Err(HandshakeError::UnexpectedProtocol(text.trim().to_owned()));
        }
    };

    let extensions = parse_extensions(headers)?;
    if let Some(extra) = extensions.iter().find(|accepted| {
        !offered_extensions
            .iter()
            .any(|offer| offer.name.eq_ignore_ascii_case(&accepted.name))
    }) {
        return Err(HandshakeError::UnexpectedExtension(extra.name.clone()));
    }
    Ok(Accepted {
        protocol,
        extensions,
    })
}

/// The subprotocols `request` offers, from every `Sec-WebSocket-Protocol` line, in order.
pub fn offered_protocols(request: &Request<()>) -> Vec<String> {
    header_items(request.headers(), SEC_WEBSOCKET_PROTOCOL)
        .map(str::to_owned)
        .collect()
}

/// The extensions `request` offers, from every `Sec-WebSocket-Extensions` line, in order.
pub fn offered_extensions(request: &Request<()>) -> Result<Vec<ExtensionOffer>, HandshakeError> {
    parse_extensions(request.headers())
}

//! WebSockets over HTTP/2 (RFC 8441, "Bootstrapping WebSockets with HTTP/2"), both roles.
//!
//! On HTTP/2 the opening handshake is an *extended CONNECT*: a request with `:method CONNECT`,
//! `:protocol websocket`, `:scheme`, `:path` and `:authority`, sent only once the server has
//! announced `SETTINGS_ENABLE_CONNECT_PROTOCOL = 1`. There is no `Upgrade`, `Connection` or
//! `Sec-WebSocket-Key`; a `2xx` answer (normally `200`) accepts, and the stream then carries
//! the WebSocket frames. `Sec-WebSocket-Version`, `Sec-WebSocket-Protocol`,
//! `Sec-WebSocket-Extensions` and `Origin` mean what they mean on HTTP/1.1, and are checked here
//! by the same code as [`validate_request`](super::validate_request) and
//! [`validate_response`](super::validate_response).
//!
//! `http::Request` has no place for the `:protocol` pseudo-header: the HTTP/2 library carries it
//! as a request extension (`h2::ext::Protocol`, `hyper::ext::Protocol`). The server side takes
//! its value as an argument; the client side leaves setting it to the caller.
//!
//! * Server: [`validate_extended_connect`], then [`accept_response`](super::accept_response)
//!   (which answers `200` for these) or [`rejection`](super::rejection).
//! * Client: [`prepare_extended_connect`], then [`validate_extended_connect_response`].
//!
//! ```
//! use fullduplex_proto::handshake::{
//!     accept_response, prepare_extended_connect, validate_extended_connect,
//!     validate_extended_connect_response,
//! };
//! use http::Request;
//!
//! let request = Request::get("wss://example.com/chat")
//!     .header("sec-websocket-protocol", "chat")
//!     .body(())?;
//! let request = prepare_extended_connect(request)?;
//! assert_eq!(request.method(), "CONNECT");
//! assert_eq!(request.uri(), "https://example.com/chat");
//!
//! let upgrade = validate_extended_connect(request.clone(), Some("websocket"))?;
//! assert_eq!(upgrade.authority(), Some("example.com"));
//! let response = accept_response(&upgrade, Some("chat"), None)?;
//! assert_eq!(response.status(), 200);
//!
//! let accepted = validate_extended_connect_response(&response, &["chat".into()], &[])?;
//! assert_eq!(accepted.protocol.as_deref(), Some("chat"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use http::header::{
    HeaderName, HeaderValue, CONNECTION, HOST, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION,
    TRANSFER_ENCODING, UPGRADE,
};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, Uri, Version};

use super::client::{negotiated, Accepted};
use super::extensions::{parse_extensions, ExtensionOffer};
use super::server::{check_version, protocols, UpgradeRequest};
use super::{HandshakeError, VERSION};

/// The `:protocol` value of a WebSocket extended CONNECT (RFC 8441 section 4).
pub const PROTOCOL: &str = "websocket";

/// Header fields that are connection-specific in HTTP/1.1 and malformed in HTTP/2 (RFC 9113
/// section 8.2.2), plus the HTTP/1.1-only WebSocket key. [`prepare_extended_connect`] drops
/// them.
const HTTP1_ONLY: [&str; 4] = ["keep-alive", "proxy-connection", "te", "http2-settings"];

/// Checks an HTTP/2 extended CONNECT request for a WebSocket (RFC 8441 section 5), given the
/// value of its `:protocol` pseudo-header (`None` when absent).
///
/// In order: method `CONNECT`, HTTP/2 or later, `:protocol` present
/// ([`HandshakeError::MissingProtocolPseudoHeader`]) and equal to `websocket` in any case
/// ([`HandshakeError::UnsupportedProtocolPseudoHeader`]), an `:authority`
/// ([`HandshakeError::MissingAuthority`]), a `:path` ([`HandshakeError::MissingPath`]), then
/// the same checks as over HTTP/1.1: `Sec-WebSocket-Version: 13`, subprotocols that are tokens,
/// extensions that follow RFC 6455 section 9.1. `Sec-WebSocket-Key` is not used on HTTP/2 and
/// is ignored.
///
/// The returned request gets a `Host` header with the `:authority` (unless it has one), so that
/// code written for HTTP/1.1 (an Origin check against `Host`, say) sees the same request.
pub fn validate_extended_connect(
    mut request: Request<()>,
    protocol: Option<&str>,
) -> Result<UpgradeRequest, HandshakeError> {
    if request.method() != Method::CONNECT {
        return Err(HandshakeError::MethodNotConnect);
    }
    if request.version() < Version::HTTP_2 {
        return Err(HandshakeError::MalformedHttp(
            "extended CONNECT needs HTTP/2 or later",
        ));
    }
    match protocol {
        None => return Err(HandshakeError::MissingProtocolPseudoHeader),
        Some(p) if p.eq_ignore_ascii_case(PROTOCOL) => {}
        Some(other) => {
            let shown: String = other.chars().take(64).collect();
            return Err(HandshakeError::UnsupportedProtocolPseudoHeader(shown));
        }
    }
    let authority = match request.uri().authority() {
        Some(authority) if !authority.as_str().is_empty() => authority.as_str().to_owned(),
        _ => return Err(HandshakeError::MissingAuthority),
    };
    if request
        .uri()
        .path_and_query()
        .is_none_or(|pq| pq.as_str().is_empty())
    {
        return Err(HandshakeError::MissingPath);
    }
    check_version(request.headers())?;
    let protocols = protocols(&request)?;
    let extensions = parse_extensions(request.headers())?;
    if !request.headers().contains_key(HOST) {
        let host =
            HeaderValue::try_from(authority).map_err(|_| HandshakeError::MissingAuthority)?;
        request.headers_mut().insert(HOST, host);
    }
    Ok(UpgradeRequest {
        request,
        key: String::new(),
        protocols,
        extensions,
        extended_connect: true,
    })
}

/// Turns a client request for a `ws://` or `wss://` URL into an HTTP/2 extended CONNECT
/// (RFC 8441 section 5): method `CONNECT`, version HTTP/2, URI `https://authority/path?query`
/// (`http` for `ws://`; the HTTP/2 library turns it into `:scheme`, `:authority` and `:path`),
/// `Sec-WebSocket-Version: 13`. Every other header is kept as the caller set it (`Origin`,
/// `Cookie`, `Authorization`, `Sec-WebSocket-Protocol`, `Sec-WebSocket-Extensions`, ...)
/// except those HTTP/2 forbids or does not use: `Host` (the authority replaces it),
/// `Connection`, `Upgrade`, `Keep-Alive`, `Proxy-Connection`, `Transfer-Encoding`, `TE`,
/// `HTTP2-Settings` and `Sec-WebSocket-Key`.
///
/// The caller adds the `:protocol websocket` pseudo-header ([`PROTOCOL`]) in its HTTP/2
/// library's way, and checks the answer with [`validate_extended_connect_response`].
pub fn prepare_extended_connect(request: Request<()>) -> Result<Request<()>, HandshakeError> {
    if request.method() != Method::GET && request.method() != Method::CONNECT {
        return Err(HandshakeError::MethodNotGet);
    }
    let (mut parts, ()) = request.into_parts();
    let uri = &parts.uri;
    let (scheme, default_port) = match uri.scheme_str() {
        None => {
            return Err(HandshakeError::InvalidUrl(
                "an absolute ws:// or wss:// URL is required",
            ))
        }
        Some(s) if s.eq_ignore_ascii_case("ws") || s.eq_ignore_ascii_case("http") => {
            (Scheme::HTTP, 80)
        }
        Some(s) if s.eq_ignore_ascii_case("wss") || s.eq_ignore_ascii_case("https") => {
            (Scheme::HTTPS, 443)
        }
        Some(_) => return Err(HandshakeError::UnsupportedScheme),
    };
    let host = match uri.host() {
        Some(host) if !host.is_empty() => host,
        _ => return Err(HandshakeError::InvalidUrl("the URL has no host")),
    };
    let authority = match uri.port_u16() {
        Some(port) if port != default_port => format!("{host}:{port}"),
        _ => host.to_owned(),
    };
    let authority = Authority::try_from(authority.as_str())
        .map_err(|_| HandshakeError::InvalidUrl("invalid host"))?;
    let target = super::client::request_target(uri);
    let target = if target.starts_with('/') {
        target.to_owned()
    } else {
        format!("/{target}")
    };
    let path = PathAndQuery::try_from(target.as_str())
        .map_err(|_| HandshakeError::InvalidUrl("invalid path"))?;
    parts.uri = Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|_| HandshakeError::InvalidUrl("invalid URL"))?;
    parts.method = Method::CONNECT;
    parts.version = Version::HTTP_2;
    let headers = &mut parts.headers;
    for name in [
        HOST,
        CONNECTION,
        UPGRADE,
        TRANSFER_ENCODING,
        SEC_WEBSOCKET_KEY,
    ] {
        headers.remove(name);
    }
    for name in HTTP1_ONLY {
        headers.remove(HeaderName::from_static(name));
    }
    headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static(VERSION));
    Ok(Request::from_parts(parts, ()))
}

/// Checks the server's answer to an extended CONNECT: a `2xx` status
/// ([`HandshakeError::UnexpectedStatus`] otherwise), then, as over HTTP/1.1, at most one
/// subprotocol and only one we offered, and only extensions whose names we offered.
pub fn validate_extended_connect_response<B>(
    response: &Response<B>,
    offered_protocols: &[String],
    offered_extensions: &[ExtensionOffer],
) -> Result<Accepted, HandshakeError> {
    if !response.status().is_success() {
        return Err(HandshakeError::UnexpectedStatus(response.status()));
    }
    negotiated(response.headers(), offered_protocols, offered_extensions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::{accept_response, rejection};
    use http::StatusCode;

    /// An extended CONNECT as an HTTP/2 library hands it to a server.
    fn connect(uri: &str) -> Request<()> {
        Request::builder()
            .method(Method::CONNECT)
            .uri(uri)
            .version(Version::HTTP_2)
            .header("sec-websocket-version", "13")
            .body(())
            .unwrap_or_default()
    }

    #[test]
    fn rfc8441_section_5_request_is_accepted_with_200() {
        // RFC 8441 section 5.1: the example request.
        let mut request = connect("https://server.example.com/chat");
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("chat, superchat"),
        );
        request.headers_mut().insert(
            "sec-websocket-extensions",
            HeaderValue::from_static("permessage-deflate"),
        );
        request
            .headers_mut()
            .insert("origin", HeaderValue::from_static("http://www.example.com"));
        let upgrade =
            validate_extended_connect(request, Some("websocket")).map_err(|e| e.to_string());
        let Ok(upgrade) = upgrade else {
            panic!("{upgrade:?}");
        };
        assert!(upgrade.is_extended_connect());
        assert_eq!(upgrade.path(), "/chat");
        assert_eq!(upgrade.authority(), Some("server.example.com"));
        assert_eq!(upgrade.header("host"), Some("server.example.com"));
        assert_eq!(upgrade.origin(), Some("http://www.example.com"));
        assert_eq!(upgrade.protocols(), ["chat", "superchat"]);
        assert_eq!(upgrade.extensions().len(), 1);
        assert_eq!(upgrade.key(), "");
        let response = accept_response(&upgrade, Some("chat"), None).map_err(|e| e.to_string());
        let Ok(response) = response else {
            panic!("{response:?}");
        };
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["sec-websocket-protocol"], "chat");
        for absent in ["upgrade", "connection", "sec-websocket-accept"] {
            assert!(!response.headers().contains_key(absent), "{absent}");
        }
    }

    #[test]
    fn bad_extended_connects_get_the_http1_statuses() {
        let cases: [(Request<()>, Option<&str>, HandshakeError); 6] = [
            (
                connect("https://h/"),
                None,
                HandshakeError::MissingProtocolPseudoHeader,
            ),
            (
                connect("https://h/"),
                Some("connect-udp"),
                HandshakeError::UnsupportedProtocolPseudoHeader("connect-udp".into()),
            ),
            (
                connect("/chat"),
                Some("websocket"),
                HandshakeError::MissingAuthority,
            ),
            (
                connect("h:443"),
                Some("websocket"),
                HandshakeError::MissingPath,
            ),
            (
                {
                    let mut r = connect("https://h/");
                    r.headers_mut()
                        .insert("sec-websocket-version", HeaderValue::from_static("8"));
                    r
                },
                Some("websocket"),
                HandshakeError::UnsupportedVersion,
            ),
            (
                {
                    let mut r = connect("https://h/");
                    *r.method_mut() = Method::GET;
                    r
                },
                Some("websocket"),
                HandshakeError::MethodNotConnect,
            ),
        ];
        for (request, protocol, expected) in cases {
            let error = validate_extended_connect(request, protocol).err();
            assert_eq!(error.as_ref(), Some(&expected));
        }
        assert_eq!(
            HandshakeError::MissingProtocolPseudoHeader.status(),
            StatusCode::BAD_REQUEST
        );
        let response = rejection(&HandshakeError::UnsupportedVersion);
        assert_eq!(response.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(response.headers()["sec-websocket-version"], "13");
    }

    #[test]
    fn client_request_becomes_a_connect() {
        let request = Request::get("ws://[::1]:9001/chat?x=1")
            .header("host", "ignored")
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("origin", "http://a")
            .body(())
            .unwrap_or_default();
        let request = prepare_extended_connect(request).map_err(|e| e.to_string());
        let Ok(request) = request else {
            panic!("{request:?}");
        };
        assert_eq!(request.method(), Method::CONNECT);
        assert_eq!(request.version(), Version::HTTP_2);
        assert_eq!(request.uri(), "http://[::1]:9001/chat?x=1");
        assert_eq!(request.headers()["sec-websocket-version"], "13");
        assert_eq!(request.headers()["origin"], "http://a");
        for absent in ["host", "connection", "upgrade", "sec-websocket-key"] {
            assert!(!request.headers().contains_key(absent), "{absent}");
        }
        let wss =
            prepare_extended_connect(Request::get("wss://h:443").body(()).unwrap_or_default());
        assert_eq!(
            wss.map(|r| r.uri().to_string()).ok().as_deref(),
            Some("https://h/")
        );
        let bad = prepare_extended_connect(Request::get("ftp://h/").body(()).unwrap_or_default());
        assert_eq!(bad.err(), Some(HandshakeError::UnsupportedScheme));
    }

    #[test]
    fn answers_are_checked_like_http1() {
        let mut response = Response::new(());
        assert!(validate_extended_connect_response(&response, &[], &[]).is_ok());
        response
            .headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static("mqtt"));
        assert_eq!(
            validate_extended_connect_response(&response, &["chat".into()], &[]).err(),
            Some(HandshakeError::UnexpectedProtocol("mqtt".into()))
        );
        *response.status_mut() = StatusCode::FORBIDDEN;
        assert_eq!(
            validate_extended_connect_response(&response, &[], &[]).err(),
            Some(HandshakeError::UnexpectedStatus(StatusCode::FORBIDDEN))
        );
    }
}

//! The server side of the opening handshake (RFC 6455 section 4.2).
//!
//! 1. [`parse_request`] the bytes received so far until it returns a request and the head
//!    length; keep the bytes after the head, they are WebSocket frames.
//! 2. [`validate_request`] checks that it is a version 13 WebSocket upgrade.
//! 3. The application inspects the [`UpgradeRequest`] (path, `Origin`, cookies, subprotocols)
//!    and answers with [`accept_response`] or with [`rejection`] of some error.
//! 4. [`encode_response`] turns the answer into bytes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use http::header::{
    HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, HOST, ORIGIN,
    SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{Method, Request, Response, StatusCode, Uri, Version};

use super::extensions::{parse_extensions, ExtensionOffer};
use super::{head, header_has_token, header_items, is_token, HandshakeError, MAX_HEADERS, VERSION};

/// Parses a request head from the start of `buf`.
///
/// Returns `Ok(None)` while the head is incomplete and `buf` is no longer than `max_head`;
/// otherwise the request (method, origin-form URI with query, version, every header line) and
/// the length of the head in bytes. Bytes after the head belong to the WebSocket stream.
///
/// A head longer than `max_head` is [`HandshakeError::HeadTooLarge`]; more than
/// [`MAX_HEADERS`] header lines is [`HandshakeError::TooManyHeaders`].
///
/// ```
/// use fullduplex_proto::handshake::parse_request;
///
/// let bytes = b"GET /chat?room=1 HTTP/1.1\r\nHost: example.com\r\n\r\n\x81\x00";
/// assert!(parse_request(&bytes[..20], 4096)?.is_none());
/// let (request, len) = parse_request(bytes, 4096)?.expect("complete");
/// assert_eq!(request.uri(), "/chat?room=1");
/// assert_eq!(&bytes[len..], b"\x81\x00");
/// # Ok::<(), fullduplex_proto::handshake::HandshakeError>(())
/// ```
pub fn parse_request(
    buf: &[u8],
    max_head: usize,
) -> Result<Option<(Request<()>, usize)>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(head::window(buf, max_head)) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return head::partial(buf, max_head).map(|_| None),
        Err(error) => return Err(head::from_httparse(error)),
    };
    let malformed = HandshakeError::MalformedHttp;
    let method = parsed.method.ok_or(malformed("missing method"))?;
    let path = parsed.path.ok_or(malformed("missing request target"))?;
    let mut request = Request::new(());
    *request.method_mut() =
        Method::from_bytes(method.as_bytes()).map_err(|_| malformed("invalid method"))?;
    *request.uri_mut() = Uri::try_from(path).map_err(|_| malformed("invalid request target"))?;
    *request.version_mut() = head::version(parsed.version)?;
    *request.headers_mut() = head::headers(parsed.headers)?;
    Ok(Some((request, len)))
}

/// A request that passed [`validate_request`]: a version 13 WebSocket upgrade.
///
/// Gives the application what it needs to decide: path, query, `Origin`, cookies, any header,
/// and the subprotocols and extensions the client offered.
#[derive(Debug, Clone)]
pub struct UpgradeRequest {
    pub(super) request: Request<()>,
    pub(super) key: String,
    pub(super) protocols: Vec<String>,
    pub(super) extensions: Vec<ExtensionOffer>,
    /// An HTTP/2 extended CONNECT (RFC 8441) rather than an HTTP/1.1 upgrade.
    pub(super) extended_connect: bool,
}

impl UpgradeRequest {
    /// The whole request.
    pub fn request(&self) -> &Request<()> {
        &self.request
    }

    /// The whole request, by value.
    pub fn into_request(self) -> Request<()> {
        self.request
    }

    /// Whether this is an HTTP/2 extended CONNECT (RFC 8441, validated by
    /// [`validate_extended_connect`](super::validate_extended_connect)) rather than an
    /// HTTP/1.1 upgrade. [`accept_response`] answers it with `200` instead of `101`.
    pub fn is_extended_connect(&self) -> bool {
        self.extended_connect
    }

    /// The authority the client addressed: the `Host` header, or on HTTP/2 the `:authority`
    /// pseudo-header (which [`validate_extended_connect`](super::validate_extended_connect)
    /// also copies into a `Host` header, so that Origin checks written against `Host` work
    /// unchanged).
    pub fn authority(&self) -> Option<&str> {
        self.header(HOST.as_str())
            .or_else(|| self.request.uri().authority().map(|a| a.as_str()))
    }

    /// The `Sec-WebSocket-Key`, trimmed. Empty for an HTTP/2 extended CONNECT, which has no
    /// key (RFC 8441 section 5).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The `Sec-WebSocket-Accept` value for this request's key.
    pub fn accept_key(&self) -> String {
        super::accept_key(self.key.as_bytes())
    }

    /// The subprotocols offered in every `Sec-WebSocket-Protocol` line, in order of preference.
    pub fn protocols(&self) -> &[String] {
        &self.protocols
    }

    /// The extensions offered in every `Sec-WebSocket-Extensions` line, in order.
    pub fn extensions(&self) -> &[ExtensionOffer] {
        &self.extensions
    }

    /// The request path, such as `/chat`.
    pub fn path(&self) -> &str {
        self.request.uri().path()
    }

    /// The query string after `?`, if any.
    pub fn query(&self) -> Option<&str> {
        self.request.uri().query()
    }

    /// The `Origin` header, sent by browsers; check it to refuse cross-site connections.
    pub fn origin(&self) -> Option<&str> {
        self.header(ORIGIN.as_str())
    }

    /// The first value of header `name` (any case), if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.request.headers().get(name)?.to_str().ok()
    }

    /// The `name=value` pairs of every `Cookie` header, split on `;` and trimmed. Pairs without
    /// `=` are skipped; values are returned as sent (not unquoted or decoded).
    ///
    /// ```
    /// use fullduplex_proto::handshake::validate_request;
    /// use http::Request;
    ///
    /// let request = Request::get("/")
    ///     .header("host", "h")
    ///     .header("upgrade", "websocket")
    ///     .header("connection", "upgrade")
    ///     .header("sec-websocket-version", "13")
    ///     .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
    ///     .header("cookie", "a=1; b=2")
    ///     .header("cookie", "c=3")
    ///     .body(())?;
    /// let upgrade = validate_request(request)?;
    /// let cookies: Vec<_> = upgrade.cookies().collect();
    /// assert_eq!(cookies, [("a", "1"), ("b", "2"), ("c", "3")]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cookies(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.request
            .headers()
            .get_all(COOKIE)
            .into_iter()
            .filter_map(|line| line.to_str().ok())
            .flat_map(|line| line.split(';'))
            .filter_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                let name = name.trim();
                (!name.is_empty()).then_some((name, value.trim()))
            })
    }
}

/// Checks that `request` is a WebSocket upgrade this crate can accept (RFC 6455 section 4.2.1).
///
/// In order: method `GET`, version HTTP/1.1 or later, a `Host` header, `Upgrade` with the token
/// `websocket` and `Connection` with the token `upgrade` (any case, in comma lists or in several
/// lines), `Sec-WebSocket-Version: 13` (missing counts as unsupported), a single
/// `Sec-WebSocket-Key` that decodes to 16 bytes, subprotocols that are tokens, and extensions
/// that follow RFC 6455 section 9.1.
pub fn validate_request(request: Request<()>) -> Result<UpgradeRequest, HandshakeError> {
    if request.method() != Method::GET {
        return Err(HandshakeError::MethodNotGet);
    }
    if request.version() < Version::HTTP_11 {
        return Err(HandshakeError::HttpVersionTooOld);
    }
    let headers = request.headers();
    if !headers.contains_key(HOST) {
        return Err(HandshakeError::MissingHost);
    }
    if !header_has_token(headers, UPGRADE, "websocket") {
        return Err(HandshakeError::NoUpgradeWebSocket);
    }
    if !header_has_token(headers, CONNECTION, "upgrade") {
        return Err(HandshakeError::NoConnectionUpgrade);
    }
    check_version(headers)?;
    let mut keys = headers.get_all(SEC_WEBSOCKET_KEY).into_iter();
    let key = match (keys.next(), keys.next()) {
        (None, _) => return Err(HandshakeError::MissingKey),
        (Some(key), None) => key.to_str().map_err(|_| HandshakeError::InvalidKey)?.trim(),
        (Some(_), Some(_)) => return Err(HandshakeError::InvalidKey),
    };
    if STANDARD.decode(key).map(|k| k.len()) != Ok(16) {
        return Err(HandshakeError::InvalidKey);
    }
    let key = key.to_owned();
    let protocols = protocols(&request)?;
    let extensions = parse_extensions(request.headers())?;
    Ok(UpgradeRequest {
        request,
        key,
        protocols,
        extensions,
        extended_connect: false,
    })
}

/// `Sec-WebSocket-Version` must be present once and be exactly [`VERSION`].
pub(super) fn check_version(headers: &http::HeaderMap) -> Result<(), HandshakeError> {
    let mut versions = headers.get_all(SEC_WEBSOCKET_VERSION).into_iter();
    match (versions.next(), versions.next()) {
        (Some(version), None) if version.as_bytes().trim_ascii() == VERSION.as_bytes() => Ok(()),
        _ => Err(HandshakeError::UnsupportedVersion),
    }
}

/// The offered subprotocols; each must be a token.
pub(super) fn protocols(request: &Request<()>) -> Result<Vec<String>, HandshakeError> {
    let headers = request.headers();
    if headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .any(|line| line.to_str().is_err())
    {
        return Err(HandshakeError::InvalidProtocols);
    }
    header_items(headers, SEC_WEBSOCKET_PROTOCOL)
        .map(|p| {
            is_token(p)
                .then(|| p.to_owned())
                .ok_or(HandshakeError::InvalidProtocols)
        })
        .collect()
}

/// The `101 Switching Protocols` answer to `upgrade` (RFC 6455 section 4.2.2), naming the chosen
/// subprotocol and the accepted extensions (a formatted `Sec-WebSocket-Extensions` value, see
/// [`format_extensions`](super::format_extensions)) when given.
///
/// For an HTTP/2 extended CONNECT ([`UpgradeRequest::is_extended_connect`]) the answer is
/// `200 OK` with the same subprotocol and extension headers and no `Upgrade`, `Connection` or
/// `Sec-WebSocket-Accept` (RFC 8441 section 5).
///
/// Fails with [`HandshakeError::ProtocolNotOffered`] if `protocol` is not one the client offered
/// and with [`HandshakeError::InvalidHeaderValue`] if a value cannot be a header value.
///
/// ```
/// use fullduplex_proto::handshake::{accept_response, validate_request};
/// use http::Request;
///
/// let request = Request::get("/")
///     .header("host", "h")
///     .header("upgrade", "websocket")
///     .header("connection", "Upgrade")
///     .header("sec-websocket-version", "13")
///     .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
///     .header("sec-websocket-protocol", "chat, superchat")
///     .body(())?;
/// let upgrade = validate_request(request)?;
/// let response = accept_response(&upgrade, Some("chat"), None)?;
/// assert_eq!(response.status(), 101);
/// assert_eq!(response.headers()["sec-websocket-protocol"], "chat");
/// assert!(accept_response(&upgrade, Some("mqtt"), None).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn accept_response(
    upgrade: &UpgradeRequest,
    protocol: Option<&str>,
    extensions: Option<&str>,
) -> Result<Response<()>, HandshakeError> {
    let mut response = Response::new(());
    let headers = response.headers_mut();
    if !upgrade.extended_connect {
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        let accept = HeaderValue::try_from(upgrade.accept_key())
            .map_err(|_| HandshakeError::InvalidHeaderValue)?;
        headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Some(protocol) = protocol {
        if !upgrade.protocols.iter().any(|p| p == protocol) {
            return Err(HandshakeError::ProtocolNotOffered(protocol.to_owned()));
        }
        let value =
            HeaderValue::from_str(protocol).map_err(|_| HandshakeError::InvalidHeaderValue)?;
        headers.insert(SEC_WEBSOCKET_PROTOCOL, value);
    }
    if let Some(extensions) = extensions {
        let value =
            HeaderValue::from_str(extensions).map_err(|_| HandshakeError::InvalidHeaderValue)?;
        headers.insert(SEC_WEBSOCKET_EXTENSIONS, value);
    }
    *response.status_mut() = if upgrade.extended_connect {
        StatusCode::OK
    } else {
        StatusCode::SWITCHING_PROTOCOLS
    };
    Ok(response)
}

/// The HTTP answer that refuses a handshake because of `error`: its
/// [status](HandshakeError::status), `Content-Type: text/plain; charset=utf-8`,
/// `Connection: close`, `Sec-WebSocket-Version: 13` for 426 (RFC 6455 section 4.2.2), and the
/// reason followed by a newline as body.
///
/// ```
/// use fullduplex_proto::handshake::{rejection, HandshakeError};
///
/// let response = rejection(&HandshakeError::UnsupportedVersion);
/// assert_eq!(response.status(), 426);
/// assert_eq!(response.headers()["sec-websocket-version"], "13");
/// ```
pub fn rejection(error: &HandshakeError) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from(format!("{error}\n")));
    let status = error.status();
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    if status == StatusCode::UPGRADE_REQUIRED {
        headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static(VERSION));
    }
    response
}

/// Appends `response` to `out` as HTTP/1.1: the status line with the canonical reason phrase
/// and the headers; for any status but 101 also a `Content-Length` (unless one is set) and the
/// body. The body of a 101 response is never written.
///
/// An [`accept_response`] has no body type to write; encode it with [`encode_response_head`].
///
/// ```
/// use bytes::BytesMut;
/// use fullduplex_proto::handshake::{encode_response, rejection, HandshakeError};
///
/// let mut out = BytesMut::new();
/// encode_response(&rejection(&HandshakeError::MissingHost), &mut out);
/// assert!(out.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
/// assert!(out.ends_with(b"Content-Length: 20\r\n\r\nmissing Host header\n"));
/// ```
pub fn encode_response<B: AsRef<[u8]>>(response: &Response<B>, out: &mut BytesMut) {
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        encode_response_head(response, out);
        return;
    }
    write_status_and_headers(response, out);
    let body = response.body().as_ref();
    if !response.headers().contains_key(CONTENT_LENGTH) {
        out.put_slice(b"Content-Length: ");
        out.put_slice(body.len().to_string().as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
    out.put_slice(body);
}

/// Appends the head of `response` to `out`, ending with the empty line, and nothing else: the
/// way to write the `101` of [`accept_response`], whose body type is `()`.
///
/// ```
/// use bytes::BytesMut;
/// use fullduplex_proto::handshake::{accept_response, encode_response_head, validate_request};
/// use http::Request;
///
/// let request = Request::get("/")
///     .header("host", "h")
///     .header("upgrade", "websocket")
///     .header("connection", "Upgrade")
///     .header("sec-websocket-version", "13")
///     .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
///     .body(())?;
/// let response = accept_response(&validate_request(request)?, None, None)?;
/// let mut out = BytesMut::new();
/// encode_response_head(&response, &mut out);
/// assert_eq!(
///     &out[..],
///     b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
///       Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn encode_response_head<B>(response: &Response<B>, out: &mut BytesMut) {
    write_status_and_headers(response, out);
    out.put_slice(b"\r\n");
}

/// The status line and header lines, without the empty line that ends the head.
fn write_status_and_headers<B>(response: &Response<B>, out: &mut BytesMut) {
    let status = response.status();
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.put_slice(b"\r\n");
    head::write_header_lines(response.headers(), out);
}

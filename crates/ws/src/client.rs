//! The client side: `connect` and `connect_with` for `ws://` and `wss://` URLs.

use bytes::{Bytes, BytesMut};
use fullduplex_proto::deflate::{self, DeflateParams};
use fullduplex_proto::handshake::{self, Accepted, HandshakeError};
use fullduplex_proto::Role;
use http::{HeaderName, HeaderValue, Request, Response, Uri};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::Config;
use crate::error::{Error, TimeoutKind, UsageError};
use crate::head::read_head_piece;
use crate::socket::WebSocket;
use crate::stream::MaybeTlsStream;

/// The most of a non-101 response body kept for the error.
pub(crate) const MAX_ERROR_BODY: usize = 64 << 10;

/// Builds a client upgrade request: URL, Origin, subprotocols, any extra header.
///
/// ```
/// use fullduplex::ClientRequest;
/// let request = ClientRequest::new("wss://example.com/chat?room=1")
///     .origin("https://example.com")
///     .protocol("chat.v2")
///     .header("Cookie", "session=abc")
///     .header("Authorization", "Bearer t0k3n")
///     .build()
///     .unwrap();
/// assert_eq!(request.uri(), "wss://example.com/chat?room=1");
/// assert_eq!(request.headers()["sec-websocket-protocol"], "chat.v2");
/// ```
#[derive(Debug, Clone)]
pub struct ClientRequest {
    url: String,
    headers: Vec<(String, String)>,
    protocols: Vec<String>,
    #[cfg(feature = "http2")]
    http2: Option<crate::http2::Http2Policy>,
}

impl ClientRequest {
    /// A request for a `ws://` or `wss://` URL.
    pub fn new(url: impl Into<String>) -> ClientRequest {
        ClientRequest {
            url: url.into(),
            headers: Vec::new(),
            protocols: Vec::new(),
            #[cfg(feature = "http2")]
            http2: None,
        }
    }

    /// Sets the `Origin` header.
    pub fn origin(self, origin: &str) -> ClientRequest {
        self.header("Origin", origin)
    }

    /// Offers a subprotocol (repeatable; offered in order of preference).
    pub fn protocol(mut self, protocol: &str) -> ClientRequest {
        self.protocols.push(protocol.to_owned());
        self
    }

    /// Adds a header (repeatable).
    pub fn header(mut self, name: &str, value: &str) -> ClientRequest {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Whether [`connect_with`] opens this WebSocket over HTTP/2 (RFC 8441), overriding
    /// [`Config::http2`] for this request (carried as an extension of the built request).
    ///
    /// ```
    /// use fullduplex::{ClientRequest, Http2Policy};
    /// let request = ClientRequest::new("ws://127.0.0.1:9001/").http2(Http2Policy::Always);
    /// let built = request.build().unwrap();
    /// assert_eq!(built.extensions().get::<Http2Policy>(), Some(&Http2Policy::Always));
    /// ```
    #[cfg(feature = "http2")]
    pub fn http2(mut self, policy: crate::http2::Http2Policy) -> ClientRequest {
        self.http2 = Some(policy);
        self
    }

    /// The `http::Request`, before the handshake fields (key, version, ...) are filled in.
    pub fn build(self) -> Result<Request<()>, Error> {
        let uri: Uri = self
            .url
            .parse()
            .map_err(|e| UsageError::InvalidUrl(format!("{}: {e}", self.url)))?;
        let mut request = Request::get(uri)
            .body(())
            .map_err(|e| UsageError::InvalidUrl(e.to_string()))?;
        let headers = request.headers_mut();
        for (name, value) in &self.headers {
            let name =
                HeaderName::try_from(name.as_str()).map_err(|_| UsageError::InvalidHeader {
                    name: name.clone(),
                    reason: "not a valid header name",
                })?;
            let value =
                HeaderValue::try_from(value.as_str()).map_err(|_| UsageError::InvalidHeader {
                    name: name.to_string(),
                    reason: "its value is not a valid header value",
                })?;
            headers.append(name, value);
        }
        if !self.protocols.is_empty() {
            let protocols = self.protocols.join(", ");
            let value = HeaderValue::try_from(protocols.as_str())
                .map_err(|_| UsageError::InvalidSubprotocol(protocols.clone()))?;
            headers.insert(http::header::SEC_WEBSOCKET_PROTOCOL, value);
        }
        #[cfg(feature = "http2")]
        if let Some(policy) = self.http2 {
            request.extensions_mut().insert(policy);
        }
        Ok(request)
    }
}

/// Anything `connect_with` takes as a request: a URL string, a [`Uri`], a [`ClientRequest`]
/// or a complete `http::Request<()>`.
pub trait IntoClientRequest {
    /// The request.
    fn into_client_request(self) -> Result<Request<()>, Error>;
}

impl IntoClientRequest for &str {
    fn into_client_request(self) -> Result<Request<()>, Error> {
        ClientRequest::new(self).build()
    }
}

impl IntoClientRequest for String {
    fn into_client_request(self) -> Result<Request<()>, Error> {
        ClientRequest::new(self).build()
    }
}

impl IntoClientRequest for &String {
    fn into_client_request(self) -> Result<Request<()>, Error> {
        ClientRequest::new(self.as_str()).build()
    }
}

impl IntoClientRequest for Uri {
    fn into_client_request(self) -> Result<Request<()>, Error> {
        Request::get(self)
            .body(())
            .map_err(|e| UsageError::InvalidUrl(e.to_string()).into())
    }
}

impl IntoClientRequest for ClientRequest {
    fn into_client_request(self) -> Result<Request<()>, Error> {
        self.build()
    }
}

impl IntoClientRequest for Request<()> {
    fn into_client_request(self) -> Result<Request<()>, Error> {
        Ok(self)
    }
}

/// Connects to a `ws://` or `wss://` URL with the default configuration.
///
/// Returns the connection and the server's `101` response (its headers, the chosen
/// subprotocol). Any other status is [`Error::Http`], carrying status, headers and body.
///
/// ```no_run
/// # async fn demo() -> Result<(), fullduplex::Error> {
/// let (mut ws, response) = fullduplex::connect("ws://[::1]:9001/chat").await?;
/// println!("{:?}", response.headers());
/// ws.send("hi".into()).await?;
/// ws.close(None).await?;
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`UsageError`](crate::UsageError) for a URL that cannot be used (or `wss://` without
/// the `rustls` feature), [`Error::Io`] when TCP fails, [`Error::Tunnel`] when the proxy refuses
/// or fails, [`Error::Tls`] when TLS fails, [`Error::Http`] when the server answers with
/// another status than `101`, [`Error::Handshake`] when its `101` is not a valid answer,
/// `Error::Http2` (feature `http2`) when HTTP/2 is required and unavailable, [`Error::Timeout`] after
/// [`Config::handshake_timeout`].
///
/// # Cancel safety
///
/// Cancelling drops whatever was opened (the TCP connection, the TLS session); nothing is
/// left behind, and nothing is reusable.
pub async fn connect(
    url: impl IntoClientRequest,
) -> Result<(WebSocket<MaybeTlsStream<TcpStream>>, Response<()>), Error> {
    connect_with(url, Config::default()).await
}

/// Connects with a request (URL, Origin, subprotocols, cookies, `Authorization`, any header)
/// and a configuration. TCP connect, the proxy tunnel ([`Config::tunnel`]), TLS and the upgrade
/// are bounded together by [`Config::handshake_timeout`].
///
/// Through a proxy, TLS and the WebSocket handshake run end to end with the target: the
/// server name checked and the `Host` header are the target's, not the proxy's.
///
/// # Errors
///
/// [`UsageError`](crate::UsageError) for a URL that cannot be used (or `wss://` without
/// the `rustls` feature), [`Error::Io`] when TCP fails, [`Error::Tunnel`] when the proxy refuses
/// or fails, [`Error::Tls`] when TLS fails, [`Error::Http`] when the server answers with
/// another status than `101`, [`Error::Handshake`] when its `101` is not a valid answer,
/// `Error::Http2` (feature `http2`) when HTTP/2 is required and unavailable, [`Error::Timeout`] after
/// [`Config::handshake_timeout`].
///
/// # Cancel safety
///
/// Cancelling drops whatever was opened (the TCP connection, the TLS session); nothing is
/// left behind, and nothing is reusable.
pub async fn connect_with(
    request: impl IntoClientRequest,
    config: Config,
) -> Result<(WebSocket<MaybeTlsStream<TcpStream>>, Response<()>), Error> {
    let request = request.into_client_request()?;
    let timeout = config.handshake_timeout;
    let attempt = async {
        #[cfg(feature = "http2")]
        if let Some(result) = connect_h2(&request, &config).await {
            return result;
        }
        let stream = open_stream(request.uri(), &config).await?;
        client_handshake(stream, request, config.clone()).await
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout(TimeoutKind::Handshake)),
    }
}

/// Opens the transport a `ws://` or `wss://` URL names, without the WebSocket handshake:
/// TCP (directly or through [`Config::tunnel`]), then TLS for `wss://` with [`Config::tls`].
/// Bounded by [`Config::handshake_timeout`].
///
/// This is the first half of [`connect_with`], for programs that speak the upgrade
/// themselves, such as a proxy that forwards a browser's handshake unchanged.
///
/// ```no_run
/// # async fn demo() -> Result<(), fullduplex::Error> {
/// let uri: http::Uri = "wss://example.com/chat".parse().expect("valid URL");
/// let stream = fullduplex::connect_stream(&uri, &fullduplex::Config::default()).await?;
/// # drop(stream); Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::Usage`], [`Error::Io`], [`Error::Tunnel`], [`Error::Tls`] and [`Error::Timeout`] as
/// for [`connect_with`].
///
/// # Cancel safety
///
/// As for [`connect_with`].
pub async fn connect_stream(
    uri: &http::Uri,
    config: &Config,
) -> Result<MaybeTlsStream<TcpStream>, Error> {
    match tokio::time::timeout(config.handshake_timeout, open_stream(uri, config)).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout(TimeoutKind::Handshake)),
    }
}

/// The HTTP/2 part of [`connect_with`]: `None` when the policy says HTTP/1.1 from the start,
/// otherwise the HTTP/2 WebSocket, an error, or (under [`Http2Policy::Auto`]) the HTTP/1.1
/// WebSocket of the fallback.
///
/// [`Http2Policy::Auto`]: crate::http2::Http2Policy::Auto
#[cfg(feature = "http2")]
async fn connect_h2(
    request: &Request<()>,
    config: &Config,
) -> Option<Result<(WebSocket<MaybeTlsStream<TcpStream>>, Response<()>), Error>> {
    use crate::http2::{Http2Connection, Http2Error, Http2Policy, H2, HTTP11};

    let policy = request
        .extensions()
        .get::<Http2Policy>()
        .copied()
        .unwrap_or(config.http2);
    let secure = request
        .uri()
        .scheme_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("wss"));
    let open = |connection: Http2Connection| async move {
        let opened = connection.open_stream(request.clone(), config).await?;
        let stream = MaybeTlsStream::Http2(Box::new(opened.stream));
        let ws = crate::http2::build(stream, config.clone(), opened.protocol, opened.deflate);
        Ok::<_, Error>((ws, opened.response))
    };
    match policy {
        Http2Policy::Never => None,
        Http2Policy::Auto if !secure => None,
        Http2Policy::Always => Some(
            async {
                let uri = request.uri();
                let stream = open_stream_alpn(uri, config, secure.then_some(&[H2][..]))
                    .await
                    .map_err(crate::http2::alpn_refused)?;
                if secure && !stream.is_h2_negotiated() {
                    return Err(Error::Http2(Http2Error::NotNegotiated));
                }
                open(Http2Connection::handshake(stream, config.clone()).await?).await
            }
            .await,
        ),
        _ => Some(
            async {
                let uri = request.uri();
                let stream = open_stream_alpn(uri, config, Some(&[H2, HTTP11])).await?;
                if !stream.is_h2_negotiated() {
                    return client_handshake(stream, request.clone(), config.clone()).await;
                }
                match Http2Connection::handshake(stream, config.clone()).await {
                    Ok(connection) if connection.is_websocket_enabled() => {
                        match open(connection).await {
                            Err(Error::Http2(error)) => {
                                tracing::debug!(%error, "WebSocket over HTTP/2 failed, trying HTTP/1.1");
                            }
                            other => return other,
                        }
                    }
                    Ok(_) => tracing::debug!("HTTP/2 without RFC 8441, trying HTTP/1.1"),
                    Err(error) => {
                        tracing::debug!(%error, "HTTP/2 failed, trying HTTP/1.1");
                    }
                }
                // The server picked h2 but cannot carry the WebSocket there: a new connection
                // that offers only HTTP/1.1.
                let stream = open_stream_alpn(uri, config, Some(&[HTTP11])).await?;
                client_handshake(stream, request.clone(), config.clone()).await
            }
            .await,
        ),
    }
}

/// TCP (or the proxy tunnel) and TLS for `uri`, not bounded in time.
async fn open_stream(uri: &http::Uri, config: &Config) -> Result<MaybeTlsStream<TcpStream>, Error> {
    open_stream_alpn(uri, config, None).await
}

/// [`open_stream`] offering these ALPN protocols for `wss://` (`None`: as [`Config::tls`]
/// says, by default none).
pub(crate) async fn open_stream_alpn(
    uri: &http::Uri,
    config: &Config,
    alpn: Option<&[&[u8]]>,
) -> Result<MaybeTlsStream<TcpStream>, Error> {
    let secure = match uri.scheme_str() {
        Some("ws") => false,
        Some("wss") => true,
        _ => return Err(Error::Handshake(HandshakeError::UnsupportedScheme)),
    };
    let host = uri
        .host()
        .ok_or_else(|| UsageError::InvalidUrl(format!("{uri}: no host")))?;
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    // `Uri::host` keeps the brackets of an IPv6 literal; the resolver wants them off.
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = match config.tunnel.resolve(bare_host, secure)? {
        Some(proxy) => proxy.connect(bare_host, port).await?,
        None => {
            let tcp = TcpStream::connect((bare_host, port)).await?;
            tcp.set_nodelay(true)?;
            tcp
        }
    };
    if secure {
        tls_connect(tcp, bare_host, config, alpn).await
    } else {
        Ok(MaybeTlsStream::Plain(tcp))
    }
}

#[cfg(feature = "rustls")]
async fn tls_connect(
    tcp: TcpStream,
    host: &str,
    config: &Config,
    alpn: Option<&[&[u8]]>,
) -> Result<MaybeTlsStream<TcpStream>, Error> {
    let mut tls_config = match &config.tls {
        Some(tls) => tls.clone(),
        None => crate::tls::default_client_config()?,
    };
    if let Some(alpn) = alpn {
        let mut with_alpn = (*tls_config).clone();
        with_alpn.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        tls_config = std::sync::Arc::new(with_alpn);
    }
    let name = rustls_pki_types::ServerName::try_from(host.to_owned())
        .map_err(|_| UsageError::InvalidUrl(format!("invalid TLS server name {host:?}")))?;
    let connector = tokio_rustls::TlsConnector::from(tls_config);
    let tls = connector.connect(name, tcp).await?;
    Ok(MaybeTlsStream::Rustls(Box::new(tls)))
}

#[cfg(not(feature = "rustls"))]
async fn tls_connect(
    _tcp: TcpStream,
    _host: &str,
    _config: &Config,
    _alpn: Option<&[&[u8]]>,
) -> Result<MaybeTlsStream<TcpStream>, Error> {
    Err(UsageError::TlsFeatureMissing.into())
}

/// Runs the client side of the opening handshake on an established transport (plain TCP,
/// TLS, a proxy tunnel, an in-memory pipe). Not bounded by a timeout: wrap it in one.
///
/// # Errors
///
/// [`Error::Io`] when the transport fails, [`Error::Http`] for another status than `101`,
/// [`Error::Handshake`] for an invalid answer (a wrong `Sec-WebSocket-Accept`, a subprotocol
/// or extension that was not offered).
///
/// # Cancel safety
///
/// Not cancel safe: the transport is left in the middle of the handshake; drop it.
pub async fn client_handshake<S>(
    mut stream: S,
    request: Request<()>,
    config: Config,
) -> Result<(WebSocket<S>, Response<()>), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = request;
    offer_deflate(&mut request, &config)?;
    let (request, key) = handshake::prepare_request(request)?;
    let offered_protocols = handshake::offered_protocols(&request);
    let offered_extensions = handshake::offered_extensions(&request)?;
    let mut out = BytesMut::with_capacity(512);
    handshake::encode_request(&request, &mut out);
    stream.write_all(&out).await?;
    stream.flush().await?;

    let max_head = config.protocol.max_handshake_size;
    let mut buf = BytesMut::with_capacity(1024);
    let (response, head_len) = loop {
        if let Some(parsed) = handshake::parse_response(&buf, max_head)? {
            break parsed;
        }
        read_head_piece(&mut stream, &mut buf, max_head, "the server").await?;
    };
    let mut leftover = buf.split_off(head_len);
    if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        let body = read_error_body(&mut stream, &response, leftover).await;
        let (parts, ()) = response.into_parts();
        return Err(Error::Http(Box::new(Response::from_parts(parts, body))));
    }
    let accepted =
        handshake::validate_response(&response, &key, &offered_protocols, &offered_extensions)?;
    let deflate = negotiated_deflate(&accepted, &config)?;
    // Keep what followed the head: the server may have sent frames right after it.
    let leftover = std::mem::take(&mut leftover);
    let mut ws = WebSocket::from_raw(stream, Role::Client, config, leftover);
    ws.set_protocol(accepted.protocol);
    if let Some(params) = deflate {
        ws.enable_deflate(params);
    }
    Ok((ws, response))
}

/// Offers permessage-deflate (if configured) unless the caller wrote its own extension offers.
pub(crate) fn offer_deflate(request: &mut Request<()>, config: &Config) -> Result<(), Error> {
    if let Some(deflate_config) = &config.protocol.deflate {
        let headers = request.headers_mut();
        if !headers.contains_key(http::header::SEC_WEBSOCKET_EXTENSIONS) {
            let offer = handshake::format_extensions(&[deflate::client_offer(deflate_config)]);
            let value =
                HeaderValue::try_from(offer).map_err(|_| HandshakeError::InvalidHeaderValue)?;
            headers.insert(http::header::SEC_WEBSOCKET_EXTENSIONS, value);
        }
    }
    Ok(())
}

/// The permessage-deflate parameters the server's answer sets, checked against our offer.
pub(crate) fn negotiated_deflate(
    accepted: &Accepted,
    config: &Config,
) -> Result<Option<DeflateParams>, Error> {
    let mut answers = accepted
        .extensions
        .iter()
        .filter(|e| e.name.eq_ignore_ascii_case(deflate::EXTENSION_NAME));
    let Some(answer) = answers.next() else {
        return Ok(None);
    };
    if answers.next().is_some() {
        return Err(HandshakeError::UnexpectedExtension("permessage-deflate, twice".into()).into());
    }
    match &config.protocol.deflate {
        Some(deflate_config) => Ok(Some(
            deflate::client_accept(answer, deflate_config).map_err(HandshakeError::from)?,
        )),
        // Offered by the caller's own header, but we cannot decode it.
        None => Err(HandshakeError::UnexpectedExtension(answer.name.clone()).into()),
    }
}

/// Reads the body of a refusal, as far as `Content-Length` says (or to end of stream), up to
/// [`MAX_ERROR_BODY`] bytes.
async fn read_error_body<S>(stream: &mut S, response: &Response<()>, mut body: BytesMut) -> Bytes
where
    S: AsyncRead + Unpin,
{
    let declared = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    let limit = declared.unwrap_or(MAX_ERROR_BODY).min(MAX_ERROR_BODY);
    while body.len() < limit {
        body.reserve(limit - body.len());
        match stream.read_buf(&mut body).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    body.truncate(limit);
    body.freeze()
}

//! The server side of the opening handshake: `accept` and `accept_with`.

use std::future::Future;

use bytes::{Bytes, BytesMut};
use fullduplex_proto::deflate;
use fullduplex_proto::handshake::{self, HandshakeError, UpgradeRequest};
use fullduplex_proto::Role;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::config::Config;
use crate::error::{Error, TimeoutKind};
use crate::head::read_head_piece;
use crate::socket::WebSocket;

/// The application's yes to an upgrade request: an optional subprotocol and extra response
/// headers (cookies, for instance).
///
/// ```
/// use fullduplex::Accept;
/// let accept = Accept::new().protocol("chat").header("set-cookie", "session=abc");
/// # let _ = accept;
/// ```
#[derive(Debug, Clone)]
pub struct Accept {
    pub(crate) protocol: Option<String>,
    pub(crate) headers: HeaderMap,
    pub(crate) compression: bool,
}

impl Default for Accept {
    fn default() -> Accept {
        Accept {
            protocol: None,
            headers: HeaderMap::new(),
            compression: true,
        }
    }
}

impl Accept {
    /// Accept with no subprotocol and no extra headers.
    pub fn new() -> Accept {
        Accept::default()
    }

    /// Chooses a subprotocol. It must be one the client offered
    /// ([`UpgradeRequest::protocols`]); otherwise the client gets `500` and `accept_with`
    /// returns the error.
    pub fn protocol(mut self, protocol: impl Into<String>) -> Accept {
        self.protocol = Some(protocol.into());
        self
    }

    /// Whether to accept a permessage-deflate offer on this connection (default true, if the
    /// configuration allows compression at all).
    pub fn compression(mut self, on: bool) -> Accept {
        self.compression = on;
        self
    }

    /// Adds a response header. Invalid names or values are skipped (and logged).
    pub fn header(mut self, name: &str, value: &str) -> Accept {
        match (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            (Ok(name), Ok(value)) => {
                self.headers.append(name, value);
            }
            _ => tracing::warn!(name, "skipping invalid response header"),
        }
        self
    }
}

/// The application's no: an HTTP response other than 101.
///
/// ```
/// use fullduplex::Reject;
/// use http::StatusCode;
/// let reject = Reject::new(StatusCode::FORBIDDEN).body("origin not allowed");
/// # let _ = reject;
/// ```
#[derive(Debug, Clone)]
pub struct Reject {
    pub(crate) response: Box<Response<Bytes>>,
}

impl Reject {
    /// A rejection with this status and an empty body.
    pub fn new(status: StatusCode) -> Reject {
        let mut response = Box::new(Response::new(Bytes::new()));
        *response.status_mut() = status;
        Reject { response }
    }

    /// Sets a plain-text body.
    pub fn body(mut self, text: impl Into<String>) -> Reject {
        let text: String = text.into();
        self.response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        *self.response.body_mut() = Bytes::from(text);
        self
    }

    /// Adds a response header. Invalid names or values are skipped.
    pub fn header(mut self, name: &str, value: &str) -> Reject {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            self.response.headers_mut().append(name, value);
        }
        self
    }

    /// A rejection from a complete response.
    pub fn from_response(response: Response<Bytes>) -> Reject {
        Reject {
            response: Box::new(response),
        }
    }
}

/// Accepts a WebSocket upgrade on `stream` with the default configuration, any path, any
/// origin and no subprotocol.
///
/// ```no_run
/// # async fn demo() -> Result<(), fullduplex::Error> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:9001").await?;
/// let (tcp, _) = listener.accept().await?;
/// let mut ws = fullduplex::accept(tcp).await?;
/// while let Some(message) = ws.recv().await {
///     let message = message?;
///     if message.is_text() || message.is_binary() {
///         ws.send(message).await?;
///     }
/// }
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// As [`accept_with`].
///
/// # Cancel safety
///
/// As [`accept_with`].
pub fn accept<S>(stream: S) -> impl Future<Output = Result<WebSocket<S>, Error>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    accept_with(stream, Config::default(), |_| Ok(Accept::new()))
}

/// Accepts a WebSocket upgrade, letting `callback` look at the whole request (path, query,
/// Origin, cookies, any header, offered subprotocols and extensions) and accept it
/// (choosing a subprotocol, adding headers) or reject it with any status.
///
/// Malformed upgrade requests are answered without calling `callback`: `426 Upgrade Required`
/// (with `Sec-WebSocket-Version: 13`) when the request is not a version-13 WebSocket upgrade,
/// `431` when its head exceeds [`fullduplex_proto::Config::max_handshake_size`], `400` with a
/// short reason otherwise. The whole handshake is bounded by [`Config::handshake_timeout`].
///
/// ```no_run
/// use fullduplex::{Accept, Config, Reject};
/// use http::StatusCode;
/// # async fn demo(tcp: tokio::net::TcpStream) -> Result<(), fullduplex::Error> {
/// let ws = fullduplex::accept_with(tcp, Config::default(), |request| {
///     if request.origin() != Some("https://example.com") {
///         return Err(Reject::new(StatusCode::FORBIDDEN).body("bad origin"));
///     }
///     match request.protocols().iter().any(|p| p == "chat") {
///         true => Ok(Accept::new().protocol("chat")),
///         false => Ok(Accept::new()),
///     }
/// })
/// .await?;
/// # Ok(()) }
/// ```
///
/// The handshake's state (request buffer, parsed request, response) lives in a box for the
/// handshake's duration only: a task that awaits `accept_with` and then serves the connection
/// does not carry it for the connection's whole life.
///
/// # Errors
///
/// [`Error::Handshake`] for a malformed request (after answering it), [`Error::Rejected`]
/// when `callback` rejected it (after sending its response), [`Error::Io`] when the transport
/// fails, [`Error::Timeout`] after [`Config::handshake_timeout`].
///
/// # Cancel safety
///
/// Not cancel safe: cancelled in the middle of the handshake, the transport is left inside
/// the HTTP exchange and dropped with the future.
pub fn accept_with<S, F>(
    stream: S,
    config: Config,
    callback: F,
) -> impl Future<Output = Result<WebSocket<S>, Error>>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(&UpgradeRequest) -> Result<Accept, Reject>,
{
    Box::pin(async move {
        let timeout = config.handshake_timeout;
        match tokio::time::timeout(timeout, handshake(stream, config, callback)).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout(TimeoutKind::Handshake)),
        }
    })
}

async fn handshake<S, F>(mut stream: S, config: Config, callback: F) -> Result<WebSocket<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(&UpgradeRequest) -> Result<Accept, Reject>,
{
    let max_head = config.protocol.max_handshake_size;
    let mut buf = BytesMut::with_capacity(1024.min(max_head + 1));
    let (request, head_len) = loop {
        match handshake::parse_request(&buf, max_head) {
            Ok(Some(parsed)) => break parsed,
            Ok(None) => {}
            Err(error) => return Err(reject_malformed(&mut stream, error).await),
        }
        read_head_piece(&mut stream, &mut buf, max_head, "the client").await?;
    };
    let upgrade = match handshake::validate_request(request) {
        Ok(upgrade) => upgrade,
        Err(error) => return Err(reject_malformed(&mut stream, error).await),
    };
    let accept = match callback(&upgrade) {
        Ok(accept) => accept,
        Err(reject) => {
            let status = reject.response.status();
            write_response(&mut stream, &reject.response).await?;
            return Err(Error::Rejected(status));
        }
    };
    let (response, deflate) = match answer(&upgrade, &config, &accept) {
        Ok(answer) => answer,
        Err(error) => {
            let mut failure = Response::new(Bytes::from_static(
                b"server chose a subprotocol the client did not offer\n",
            ));
            *failure.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            write_response(&mut stream, &failure).await?;
            return Err(error.into());
        }
    };
    let mut out = BytesMut::with_capacity(256);
    handshake::encode_response_head(&response, &mut out);
    stream.write_all(&out).await?;
    stream.flush().await?;
    let leftover = buf.split_off(head_len);
    let mut ws = WebSocket::from_raw(stream, Role::Server, config, leftover);
    ws.set_protocol(accept.protocol);
    if let Some(params) = deflate {
        ws.enable_deflate(params);
    }
    Ok(ws)
}

/// The `101` answer to an accepted request: the chosen subprotocol, permessage-deflate (the
/// first acceptable offer, answered within what it allows) and the application's headers.
/// Shared by [`accept_with`] and the hyper integration.
pub(crate) fn answer(
    upgrade: &UpgradeRequest,
    config: &Config,
    accept: &Accept,
) -> Result<(Response<()>, Option<deflate::DeflateParams>), HandshakeError> {
    let deflate = match (&config.protocol.deflate, accept.compression) {
        (Some(deflate_config), true) => {
            deflate::server_negotiate(upgrade.extensions(), deflate_config)
        }
        _ => None,
    };
    let extensions = deflate
        .as_ref()
        .map(|(_, answer)| handshake::format_extensions(std::slice::from_ref(answer)));
    let mut response =
        handshake::accept_response(upgrade, accept.protocol.as_deref(), extensions.as_deref())?;
    for (name, value) in accept.headers.iter() {
        response.headers_mut().append(name, value.clone());
    }
    Ok((response, deflate.map(|(params, _)| params)))
}

/// Answers a malformed request with its status and reason, closes, and returns the error.
async fn reject_malformed<S>(stream: &mut S, error: HandshakeError) -> Error
where
    S: AsyncWrite + Unpin,
{
    let response = handshake::rejection(&error);
    // The request failed; a failure to tell the client so changes nothing.
    let _ = write_response(stream, &response).await;
    error.into()
}

async fn write_response<S>(stream: &mut S, response: &Response<Bytes>) -> Result<(), Error>
where
    S: AsyncWrite + Unpin,
{
    let mut response = response.clone();
    response
        .headers_mut()
        .entry(http::header::CONNECTION)
        .or_insert(HeaderValue::from_static("close"));
    let mut out = BytesMut::with_capacity(256 + response.body().len());
    handshake::encode_response(&response, &mut out);
    stream.write_all(&out).await?;
    stream.flush().await?;
    stream.shutdown().await?;
    Ok(())
}

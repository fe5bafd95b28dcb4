//! hyper 1.x integration: answer a WebSocket upgrade from inside a hyper (or axum) HTTP
//! service, so that the WebSocket shares its port with ordinary HTTP routes.
//!
//! The request is checked by the same handshake code as [`crate::accept_with`]; the service
//! returns the `101` response to hyper, and the [`HyperUpgrade`] future, once hyper has sent
//! it, yields a [`WebSocket`] over the upgraded connection.
//!
//! ```no_run
//! use std::convert::Infallible;
//!
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper::{body::Incoming, Request, Response};
//!
//! async fn service(mut request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
//!     if !fullduplex::hyper::is_upgrade_request(&request) {
//!         return Ok(Response::new(Full::new(Bytes::from("hello over HTTP\n"))));
//!     }
//!     match fullduplex::hyper::upgrade(&mut request) {
//!         Ok((response, upgrade)) => {
//!             tokio::spawn(async move {
//!                 let Ok(mut ws) = upgrade.await else { return };
//!                 while let Some(Ok(message)) = ws.recv().await {
//!                     if message.is_text() || message.is_binary() {
//!                         let _ = ws.send(message).await;
//!                     }
//!                 }
//!             });
//!             Ok(response)
//!         }
//!         Err(error) => Ok(error.into_response()),
//!     }
//! }
//! ```
//!
//! Serve it with `hyper::server::conn::http1::Builder::new().serve_connection(io, service)
//! .with_upgrades()`: without `with_upgrades` hyper never hands the connection over.
//!
//! `upgrade.with_stream::<UpgradedStream>()` yields a WebSocket over the `TcpStream` itself
//! when that connection served `TokioIo<TcpStream>` ([`UpgradedStream::Tcp`]), and over hyper's
//! boxed stream otherwise: an idle connection then keeps no hyper allocation, and reads and
//! writes make no dynamic call.
//!
//! # HTTP/2
//!
//! The same service accepts WebSockets over HTTP/2 (RFC 8441): serve the connection with
//! hyper's `http2::Builder` after calling its `enable_connect_protocol()` (which announces
//! `SETTINGS_ENABLE_CONNECT_PROTOCOL = 1`; with feature `http2`,
//! `fullduplex::http2::server_builder` gives a builder configured for WebSockets, flow-control
//! windows included), or with hyper-util's `auto::Builder` for both versions on one port.
//! [`is_upgrade_request`] then also recognises an extended CONNECT (`:method CONNECT`,
//! `:protocol websocket`), and [`upgrade`] checks it with
//! [`fullduplex_proto::handshake::validate_extended_connect`] and answers `200` (no
//! `Sec-WebSocket-Accept`) instead of `101`. Subprotocols, permessage-deflate and the
//! callback's decision work exactly as over HTTP/1.1; the callback sees the `:authority` as
//! the `Host` header. The future yields the same [`HyperWebSocket`] type, running on the
//! HTTP/2 stream: its orderly end is the stream's END_STREAM, and the stream's flow control
//! applies to it alone, not to other WebSockets on the connection (RFC 8441 section 6).

use std::future::Future;
use std::io::{self, IoSlice};
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use ::hyper::upgrade::{OnUpgrade, Upgraded};
use bytes::{Bytes, BytesMut};
use fullduplex_proto::deflate::DeflateParams;
use fullduplex_proto::handshake::{self, HandshakeError, UpgradeRequest};
use fullduplex_proto::Role;
use http::header::{CONNECTION, UPGRADE};
use http::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::config::Config;
use crate::error::{Error, UsageError};
use crate::server::{answer, Accept, Reject};
use crate::socket::WebSocket;

/// A WebSocket over a connection that hyper upgraded.
pub type HyperWebSocket = WebSocket<TokioIo<Upgraded>>;

/// The stream a [`HyperUpgrade`] builds its [`WebSocket`] on, made from hyper's [`Upgraded`]
/// (see [`HyperUpgrade::with_stream`]).
pub trait FromUpgraded: AsyncRead + AsyncWrite + Unpin + Sized {
    /// The stream, and the bytes hyper read past the request head (the first WebSocket
    /// bytes, which the WebSocket reads before the stream).
    fn from_upgraded(upgraded: Upgraded) -> (Self, Bytes);
}

impl FromUpgraded for TokioIo<Upgraded> {
    /// `Upgraded` replays the bytes it read past the head by itself.
    fn from_upgraded(upgraded: Upgraded) -> (Self, Bytes) {
        (TokioIo::new(upgraded), Bytes::new())
    }
}

/// A server connection's stream after a hyper upgrade: the [`TcpStream`] itself when hyper's
/// HTTP/1.1 connection served `TokioIo<TcpStream>` directly
/// (`hyper::server::conn::http1::Builder`), hyper's boxed [`Upgraded`] otherwise (TLS, an
/// HTTP/2 stream, hyper-util's `auto` connection, which wraps the stream it peeks into).
///
/// The plain socket saves an idle WebSocket hyper's box around the stream and a dynamic call
/// per read and write.
#[derive(Debug)]
pub enum UpgradedStream {
    /// The TCP connection, handed back by hyper.
    Tcp(TcpStream),
    /// Any other upgraded stream (boxed: the enum stays the size of a `TcpStream`).
    Hyper(Box<TokioIo<Upgraded>>),
}

impl FromUpgraded for UpgradedStream {
    fn from_upgraded(upgraded: Upgraded) -> (Self, Bytes) {
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => (UpgradedStream::Tcp(parts.io.into_inner()), parts.read_buf),
            Err(upgraded) => (
                UpgradedStream::Hyper(Box::new(TokioIo::new(upgraded))),
                Bytes::new(),
            ),
        }
    }
}

impl AsyncRead for UpgradedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpgradedStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            UpgradedStream::Hyper(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpgradedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpgradedStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            UpgradedStream::Hyper(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpgradedStream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpgradedStream::Hyper(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpgradedStream::Tcp(s) => s.is_write_vectored(),
            UpgradedStream::Hyper(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpgradedStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            UpgradedStream::Hyper(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpgradedStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            UpgradedStream::Hyper(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Whether `request` asks for a WebSocket: over HTTP/1.1, `Upgrade` has the token `websocket`
/// and `Connection` the token `upgrade` (any case); over HTTP/2, it is an extended CONNECT with
/// `:protocol websocket` (RFC 8441). Use it to route; [`upgrade`] does the full validation.
///
/// ```
/// let request = http::Request::get("/ws")
///     .header("upgrade", "WebSocket")
///     .header("connection", "keep-alive, Upgrade")
///     .body(())
///     .unwrap();
/// assert!(fullduplex::hyper::is_upgrade_request(&request));
/// assert!(!fullduplex::hyper::is_upgrade_request(&http::Request::get("/").body(()).unwrap()));
/// ```
pub fn is_upgrade_request<B>(request: &Request<B>) -> bool {
    if is_h2_connect(request) {
        return protocol_of(request)
            .is_some_and(|p| p.eq_ignore_ascii_case(handshake::h2::PROTOCOL));
    }
    let headers = request.headers();
    handshake::header_has_token(headers, UPGRADE, "websocket")
        && handshake::header_has_token(headers, CONNECTION, "upgrade")
}

/// Whether `request` is a CONNECT on HTTP/2 or later: an extended CONNECT (RFC 8441) if it
/// carries `:protocol`, a tunnel request otherwise.
fn is_h2_connect<B>(request: &Request<B>) -> bool {
    request.method() == Method::CONNECT && request.version() >= Version::HTTP_2
}

/// The `:protocol` pseudo-header hyper's HTTP/2 server put in the request's extensions.
fn protocol_of<B>(request: &Request<B>) -> Option<&str> {
    request
        .extensions()
        .get::<::hyper::ext::Protocol>()
        .map(::hyper::ext::Protocol::as_str)
}

/// Accepts a WebSocket upgrade with the default configuration, no subprotocol and no origin
/// check: returns the `101` response for the service to return, and the future that yields
/// the [`WebSocket`] once hyper has sent it.
///
/// The response body type is any `From<Bytes>` body (`http_body_util::Full<Bytes>`, axum's
/// `Body`, ...). See [`upgrade_with`] for the errors.
pub fn upgrade<B, R>(request: &mut Request<B>) -> Result<(Response<R>, HyperUpgrade), UpgradeError>
where
    R: From<Bytes>,
{
    upgrade_with(request, Config::default(), |_| Ok(Accept::new()))
}

/// Accepts a WebSocket upgrade, letting `callback` look at the request (path, query, Origin,
/// cookies, offered subprotocols) and accept it ([`Accept`]: subprotocol, headers,
/// compression) or refuse it ([`Reject`]: any status and body).
///
/// A CONNECT on HTTP/2 is checked as an extended CONNECT (RFC 8441, see the
/// [module documentation](self)) and accepted with `200`; anything else as an HTTP/1.1
/// upgrade, accepted with `101`.
///
/// Fails with [`UpgradeError::Handshake`] when the request is not a valid version 13 upgrade
/// (the same checks and statuses as [`crate::accept_with`]: 426, 400, ...; on HTTP/2 also 400
/// for a CONNECT without `:protocol`, a `:protocol` other than `websocket`, or no `:path`),
/// [`UpgradeError::Rejected`] when `callback` refuses, and [`UpgradeError::NotUpgradable`]
/// when hyper gave the request no upgrade handle (a request not from a hyper server, or an
/// HTTP/1.1 connection served without `with_upgrades`). [`UpgradeError::into_response`] is the
/// answer to send in each case.
///
/// ```no_run
/// use fullduplex::{Accept, Config, Reject};
/// use http::StatusCode;
/// # fn demo(mut request: http::Request<()>) {
/// let result = fullduplex::hyper::upgrade_with::<_, http_body_util::Full<bytes::Bytes>, _>(
///     &mut request,
///     Config::default(),
///     |upgrade| match upgrade.origin() {
///         Some("https://example.com") | None => Ok(Accept::new()),
///         Some(_) => Err(Reject::new(StatusCode::FORBIDDEN).body("origin not allowed")),
///     },
/// );
/// # let _ = result; }
/// ```
pub fn upgrade_with<B, R, F>(
    request: &mut Request<B>,
    config: Config,
    callback: F,
) -> Result<(Response<R>, HyperUpgrade), UpgradeError>
where
    R: From<Bytes>,
    F: FnOnce(&UpgradeRequest) -> Result<Accept, Reject>,
{
    let upgrade = if is_h2_connect(request) {
        handshake::validate_extended_connect(head_of(request), protocol_of(request))?
    } else {
        handshake::validate_request(head_of(request))?
    };
    let accept = callback(&upgrade).map_err(UpgradeError::Rejected)?;
    if request.extensions().get::<OnUpgrade>().is_none() {
        return Err(UpgradeError::NotUpgradable);
    }
    let (response, deflate) = answer(&upgrade, &config, &accept)?;
    let on_upgrade = ::hyper::upgrade::on(request);
    let (parts, ()) = response.into_parts();
    let future = HyperUpgrade {
        on_upgrade,
        pending: Some(Pending {
            config,
            protocol: accept.protocol,
            deflate,
        }),
        stream: PhantomData,
    };
    Ok((Response::from_parts(parts, R::from(Bytes::new())), future))
}

/// A copy of the request's head (method, URI, version, headers) for the handshake checks.
fn head_of<B>(request: &Request<B>) -> Request<()> {
    let mut head = Request::new(());
    *head.method_mut() = request.method().clone();
    *head.uri_mut() = request.uri().clone();
    *head.version_mut() = request.version();
    *head.headers_mut() = request.headers().clone();
    head
}

/// What the WebSocket is built with once the upgrade completes.
#[derive(Debug)]
struct Pending {
    config: Config,
    protocol: Option<String>,
    deflate: Option<DeflateParams>,
}

/// The future returned by [`upgrade`] and [`upgrade_with`]: resolves to the [`WebSocket`]
/// once hyper has written the `101` (HTTP/1.1) or `200` (HTTP/2) response and handed over the
/// connection or stream. Await it in a spawned task, after returning the response to hyper.
///
/// The WebSocket runs on a stream of type `S`: hyper's [`Upgraded`] by default, or, through
/// [`with_stream`](HyperUpgrade::with_stream), any [`FromUpgraded`] such as
/// [`UpgradedStream`].
#[derive(Debug)]
#[must_use = "the WebSocket only exists once this future is awaited"]
pub struct HyperUpgrade<S = TokioIo<Upgraded>> {
    on_upgrade: OnUpgrade,
    pending: Option<Pending>,
    stream: PhantomData<fn() -> S>,
}

impl<S> HyperUpgrade<S> {
    /// The same upgrade, yielding a WebSocket over `T` (made by [`FromUpgraded`]).
    pub fn with_stream<T: FromUpgraded>(self) -> HyperUpgrade<T> {
        HyperUpgrade {
            on_upgrade: self.on_upgrade,
            pending: self.pending,
            stream: PhantomData,
        }
    }
}

impl<S: FromUpgraded> Future for HyperUpgrade<S> {
    type Output = Result<WebSocket<S>, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        // Checked first: hyper's `OnUpgrade` must not be polled after it resolved.
        if this.pending.is_none() {
            return Poll::Ready(Err(UsageError::PolledAfterCompletion.into()));
        }
        let upgraded = ready!(Pin::new(&mut this.on_upgrade).poll(cx));
        let Some(pending) = this.pending.take() else {
            return Poll::Ready(Err(UsageError::PolledAfterCompletion.into()));
        };
        let upgraded = upgraded.map_err(|error| Error::Io(std::io::Error::other(error)))?;
        let (stream, leftover) = S::from_upgraded(upgraded);
        let mut ws = WebSocket::from_raw(
            stream,
            Role::Server,
            pending.config,
            BytesMut::from(leftover),
        );
        ws.set_protocol(pending.protocol);
        if let Some(params) = pending.deflate {
            ws.enable_deflate(params);
        }
        Poll::Ready(Ok(ws))
    }
}

/// Why [`upgrade_with`] did not accept a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpgradeError {
    /// The request is not a valid WebSocket upgrade (or the application's answer could not
    /// be encoded, a 500).
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    /// The application's callback refused the request.
    #[error("upgrade rejected with {}", .0.response.status())]
    Rejected(Reject),
    /// The request carries no hyper upgrade handle: it did not come from a hyper server
    /// connection (HTTP/1.1 served `with_upgrades`, or HTTP/2).
    #[error("the request cannot be upgraded (not from a hyper server connection)")]
    NotUpgradable,
}

impl UpgradeError {
    /// The status of [`into_response`](UpgradeError::into_response).
    pub fn status(&self) -> StatusCode {
        match self {
            UpgradeError::Handshake(error) => error.status(),
            UpgradeError::Rejected(reject) => reject.response.status(),
            UpgradeError::NotUpgradable => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
        }
    }

    /// The HTTP answer to send: the handshake error's status and reason (with
    /// `Sec-WebSocket-Version: 13` for 426), or the application's rejection as it built it.
    pub fn into_response<R: From<Bytes>>(self) -> Response<R> {
        let response = match self {
            UpgradeError::Handshake(error) => handshake::rejection(&error),
            UpgradeError::Rejected(reject) => *reject.response,
            UpgradeError::NotUpgradable => {
                let mut response = Response::new(Bytes::from_static(
                    b"this connection cannot be upgraded to a WebSocket\n",
                ));
                *response.status_mut() = StatusCode::HTTP_VERSION_NOT_SUPPORTED;
                response
            }
        };
        response.map(R::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade_request() -> Request<()> {
        Request::get("/ws")
            .header("host", "example.com")
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(())
            .unwrap_or_default()
    }

    #[test]
    fn invalid_requests_get_the_handshake_status() {
        let mut request = upgrade_request();
        request.headers_mut().remove("sec-websocket-version");
        let error = upgrade::<_, Bytes>(&mut request).err();
        assert!(matches!(
            error,
            Some(UpgradeError::Handshake(HandshakeError::UnsupportedVersion))
        ));
        let response: Response<Bytes> = error.map(|e| e.into_response()).unwrap_or_default();
        assert_eq!(response.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(response.headers()["sec-websocket-version"], "13");
    }

    #[test]
    fn callback_rejection_is_returned_as_built() {
        let mut request = upgrade_request();
        let result = upgrade_with::<_, Bytes, _>(&mut request, Config::default(), |_| {
            Err(Reject::new(StatusCode::FORBIDDEN).body("no"))
        });
        let error = result.err();
        assert_eq!(
            error.as_ref().map(|e| e.status()),
            Some(StatusCode::FORBIDDEN)
        );
        let response: Response<Bytes> = error.map(|e| e.into_response()).unwrap_or_default();
        assert_eq!(response.body().as_ref(), b"no");
    }

    fn extended_connect(protocol: Option<&'static str>) -> Request<()> {
        let mut request = Request::connect("https://example.com/ws")
            .version(Version::HTTP_2)
            .header("sec-websocket-version", "13")
            .body(())
            .unwrap_or_default();
        if let Some(protocol) = protocol {
            request
                .extensions_mut()
                .insert(::hyper::ext::Protocol::from_static(protocol));
        }
        request
    }

    #[test]
    fn extended_connect_is_recognised_and_validated() {
        assert!(is_upgrade_request(&extended_connect(Some("websocket"))));
        assert!(!is_upgrade_request(&extended_connect(None)));
        assert!(!is_upgrade_request(&extended_connect(Some("connect-udp"))));
        // Valid, but not from a hyper server: no upgrade handle.
        let error = upgrade::<_, Bytes>(&mut extended_connect(Some("websocket"))).err();
        assert!(matches!(error, Some(UpgradeError::NotUpgradable)));
        let error = upgrade::<_, Bytes>(&mut extended_connect(None)).err();
        assert!(matches!(
            error,
            Some(UpgradeError::Handshake(
                HandshakeError::MissingProtocolPseudoHeader
            ))
        ));
        let mut request = extended_connect(Some("websocket"));
        request.headers_mut().remove("sec-websocket-version");
        let error = upgrade::<_, Bytes>(&mut request).err();
        assert_eq!(
            error.map(|e| e.status()),
            Some(StatusCode::UPGRADE_REQUIRED)
        );
    }

    #[test]
    fn request_without_hyper_upgrade_handle() {
        let mut request = upgrade_request();
        let error = upgrade::<_, Bytes>(&mut request).err();
        assert!(matches!(error, Some(UpgradeError::NotUpgradable)));
    }
}

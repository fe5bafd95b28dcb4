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
//! .with_upgrades()`: without `with_upgrades` hyper never hands the connection over. Only
//! HTTP/1.1 upgrades are supported (not HTTP/2 extended CONNECT, RFC 8441).

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use ::hyper::upgrade::{OnUpgrade, Upgraded};
use bytes::{Bytes, BytesMut};
use fullduplex_proto::deflate::DeflateParams;
use fullduplex_proto::handshake::{self, HandshakeError, UpgradeRequest};
use fullduplex_proto::Role;
use http::header::{CONNECTION, UPGRADE};
use http::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::config::Config;
use crate::error::Error;
use crate::server::{answer, Accept, Reject};
use crate::socket::WebSocket;

/// A WebSocket over a connection that hyper upgraded.
pub type HyperWebSocket = WebSocket<TokioIo<Upgraded>>;

/// Whether `request` asks for a WebSocket: `Upgrade` has the token `websocket` and
/// `Connection` the token `upgrade` (any case). Use it to route; [`upgrade`] does the full
/// validation.
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
    let headers = request.headers();
    handshake::header_has_token(headers, UPGRADE, "websocket")
        && handshake::header_has_token(headers, CONNECTION, "upgrade")
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
/// Fails with [`UpgradeError::Handshake`] when the request is not a valid version 13 upgrade
/// (the same checks and statuses as [`crate::accept_with`]: 426, 400, ...),
/// [`UpgradeError::Rejected`] when `callback` refuses, and [`UpgradeError::NotUpgradable`]
/// when hyper gave the request no upgrade handle (HTTP/2, or a request not from a hyper
/// server). [`UpgradeError::into_response`] is the answer to send in each case.
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
    let upgrade = handshake::validate_request(head_of(request))?;
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
/// once hyper has written the `101` response and handed over the connection. Await it in a
/// spawned task, after returning the response to hyper.
#[derive(Debug)]
#[must_use = "the WebSocket only exists once this future is awaited"]
pub struct HyperUpgrade {
    on_upgrade: OnUpgrade,
    pending: Option<Pending>,
}

impl Future for HyperUpgrade {
    type Output = Result<HyperWebSocket, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let upgraded = ready!(Pin::new(&mut this.on_upgrade).poll(cx))
            .map_err(|error| Error::Io(std::io::Error::other(error)))?;
        let Some(pending) = this.pending.take() else {
            return Poll::Ready(Err(Error::Closed));
        };
        // hyper keeps bytes it read past the request head inside `Upgraded` and replays
        // them first, so there is no leftover to pass on here.
        let mut ws = WebSocket::from_raw(
            TokioIo::new(upgraded),
            Role::Server,
            pending.config,
            BytesMut::new(),
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
    /// The request carries no hyper upgrade handle: it did not come from a hyper HTTP/1.1
    /// server connection (HTTP/2 upgrades are not supported).
    #[error("the request cannot be upgraded (not an HTTP/1.1 hyper request)")]
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
                let mut response =
                    Response::new(Bytes::from_static(b"WebSocket upgrades need HTTP/1.1\n"));
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

    #[test]
    fn request_without_hyper_upgrade_handle() {
        let mut request = upgrade_request();
        let error = upgrade::<_, Bytes>(&mut request).err();
        assert!(matches!(error, Some(UpgradeError::NotUpgradable)));
    }
}

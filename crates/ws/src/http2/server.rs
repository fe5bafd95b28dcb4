//! The server side for programs without their own hyper stack: serve one HTTP/2 connection,
//! detect the h2c preface, and the hyper builder settings that suit WebSockets.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ::hyper::body::{Body, Frame, Incoming, SizeHint};
use ::hyper::server::conn::http2;
use ::hyper::service::service_fn;
use ::hyper::Request;
use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::{Http2Error, CONNECTION_WINDOW, MAX_STREAMS, STREAM_WINDOW};
use crate::config::Config;
use crate::error::Error;
use crate::hyper::{upgrade_with, HyperWebSocket};
use crate::server::{Accept, Reject};
use crate::UpgradeRequest;

/// The HTTP/2 connection preface a client sends first (RFC 9113 section 3.4); with h2c "prior
/// knowledge" it opens the TCP stream.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The ALPN protocol name of HTTP/2 over TLS.
pub const ALPN_H2: &[u8] = b"h2";

/// A hyper HTTP/2 server builder set up for WebSockets: `SETTINGS_ENABLE_CONNECT_PROTOCOL = 1`
/// (RFC 8441 section 3), at most [`MAX_STREAMS`] concurrent streams, a stream window of
/// [`STREAM_WINDOW`] and a connection window of [`CONNECTION_WINDOW`] (their product), so
/// that WebSockets whose application does not read can together hold at most the connection
/// window minus one stream window: the other WebSockets of the connection keep their share.
///
/// Use it with [`crate::hyper::upgrade`] in your own service, or let [`serve_connection`] do it.
pub fn server_builder() -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .enable_connect_protocol()
        .max_concurrent_streams(MAX_STREAMS)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW);
    builder
}

/// Serves one HTTP/2 connection (plain TCP after an h2c preface, see [`is_h2c_preface`], or
/// TLS that negotiated [`ALPN_H2`]) whose requests are all WebSocket requests: every extended
/// CONNECT (RFC 8441) is checked like [`crate::accept_with`] checks an HTTP/1.1 upgrade
/// (same statuses), then `callback` accepts it ([`Accept`]: subprotocol, headers,
/// compression) or refuses it ([`Reject`]: any status), and each accepted WebSocket is handed
/// to `handler` in a task of its own. Any other request gets the status the handshake check
/// gives it (a GET without upgrade headers: `426`).
///
/// Returns when the connection is closed by the client or fails; WebSockets still open then
/// end with it. Run it in a task per connection. The connection's streams share it fairly:
/// see [`server_builder`] for the flow-control windows.
///
/// ```no_run
/// use fullduplex::{Accept, Config};
/// # async fn demo(tcp: tokio::net::TcpStream) -> Result<(), fullduplex::Error> {
/// if fullduplex::http2::is_h2c_preface(&tcp).await? {
///     fullduplex::http2::serve_connection(tcp, Config::default(), |_| Ok(Accept::new()), |mut ws| async move {
///         while let Some(Ok(message)) = ws.recv().await {
///             if message.is_text() || message.is_binary() {
///                 let _ = ws.send(message).await;
///             }
///         }
///     })
///     .await?;
/// }
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::Http2`] with [`Http2Error::Server`] when the connection fails (a malformed
/// preface, an HTTP/2 protocol error, an I/O error). Refused or malformed WebSocket requests
/// are answered on their stream and are not errors of the connection.
///
/// # Cancel safety
///
/// Dropping the future drops the connection: its streams, and the WebSockets on them, fail.
pub async fn serve_connection<S, F, H, Fut>(
    io: S,
    config: Config,
    callback: F,
    handler: H,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(&UpgradeRequest) -> Result<Accept, Reject> + Send + Sync + 'static,
    H: Fn(HyperWebSocket) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let callback = Arc::new(callback);
    let handler = Arc::new(handler);
    let service = service_fn(move |mut request: Request<Incoming>| {
        let callback = callback.clone();
        let handler = handler.clone();
        let config = config.clone();
        async move {
            let response = match upgrade_with::<_, FixedBody, _>(&mut request, config, |upgrade| {
                callback(upgrade)
            }) {
                Ok((response, upgrade)) => {
                    tokio::spawn(async move {
                        match upgrade.await {
                            Ok(ws) => handler(ws).await,
                            Err(error) => tracing::debug!(%error, "h2 WebSocket stream lost"),
                        }
                    });
                    response
                }
                Err(error) => {
                    tracing::debug!(%error, "h2 WebSocket request refused");
                    error.into_response()
                }
            };
            Ok::<_, Infallible>(response)
        }
    });
    server_builder()
        .serve_connection(TokioIo::new(io), service)
        .await
        .map_err(|error| Error::Http2(Http2Error::Server(error)))
}

/// Whether the client on `tcp` opened with the HTTP/2 preface (h2c with prior knowledge),
/// looked at with `peek`: nothing is consumed, so an HTTP/1.1 request is still there for
/// [`crate::accept_with`]. Decides at the first byte that differs (`G` of `GET` does), waits
/// for more only while what arrived is a prefix of the preface; `false` at end of stream.
///
/// Not bounded in time: a client that sends nothing keeps it waiting, as it would keep
/// `accept_with` waiting; wrap it in the handshake timeout.
///
/// # Errors
///
/// The socket's read error.
///
/// # Cancel safety
///
/// Cancel safe: nothing is read from the socket.
pub async fn is_h2c_preface(tcp: &TcpStream) -> io::Result<bool> {
    let mut buf = [0u8; PREFACE.len()];
    loop {
        let n = tcp.peek(&mut buf).await?;
        if n == 0 || buf[..n] != PREFACE[..n] {
            return Ok(false);
        }
        if n == PREFACE.len() {
            return Ok(true);
        }
        // A prefix of the preface: `peek` would return at once with the same bytes.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A response body that is one buffer (or none), for the answers [`serve_connection`] sends.
#[derive(Debug, Default)]
pub(crate) struct FixedBody(Option<Bytes>);

impl From<Bytes> for FixedBody {
    fn from(bytes: Bytes) -> FixedBody {
        FixedBody((!bytes.is_empty()).then_some(bytes))
    }
}

impl Body for FixedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().0.take().map(|bytes| Ok(Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.as_ref().map_or(0, |b| b.len() as u64))
    }
}

//! The client side: [`Http2Connection`], one HTTP/2 connection that opens many WebSockets.

use std::fmt;

use bytes::{Bytes, BytesMut};
use fullduplex_proto::deflate::DeflateParams;
use fullduplex_proto::handshake::{self, HandshakeError};
use fullduplex_proto::Role;
use h2::client::SendRequest;
use http::{Request, Response, Uri};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Http2Error, Http2Stream, CONNECTION_WINDOW, MAX_STREAMS, STREAM_WINDOW};
use crate::client::{negotiated_deflate, offer_deflate, IntoClientRequest, MAX_ERROR_BODY};
use crate::config::Config;
use crate::error::{Error, TimeoutKind};
use crate::socket::WebSocket;

/// One HTTP/2 connection to a server that speaks RFC 8441, on which
/// [`open`](Http2Connection::open) starts WebSockets, each on a stream of its own: they share
/// the TCP (and TLS) connection and are independent otherwise (each has its own flow control;
/// a WebSocket that is not read stalls only itself).
///
/// Cloning gives another handle to the same connection. The connection lives as long as a
/// handle or a WebSocket on it does, and is closed (GOAWAY) when the last is dropped.
///
/// ```no_run
/// use fullduplex::http2::Http2Connection;
/// use fullduplex::{Config, Message};
/// # async fn demo() -> Result<(), fullduplex::Error> {
/// let h2 = Http2Connection::connect("wss://example.com", Config::default()).await?;
/// let (mut chat, _) = h2.open("wss://example.com/chat").await?;
/// let (mut feed, _) = h2.open("wss://example.com/feed").await?;
/// chat.send(Message::text("hi")).await?;
/// # let _ = feed.recv().await; Ok(()) }
/// ```
#[derive(Clone)]
pub struct Http2Connection {
    send_request: SendRequest<Bytes>,
    config: Config,
}

impl fmt::Debug for Http2Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http2Connection")
            .field("websockets_enabled", &self.is_websocket_enabled())
            .finish_non_exhaustive()
    }
}

impl Http2Connection {
    /// Connects to the origin of `url` over HTTP/2: for `wss://`, TLS with ALPN `h2` only
    /// (failing with [`Http2Error::NotNegotiated`] if the server does not agree); for `ws://`,
    /// cleartext HTTP/2 with prior knowledge (h2c). TCP goes through [`Config::tunnel`] as for
    /// [`crate::connect_with`]. Only the URL's scheme, host and port are used. `config` is also
    /// the configuration of the WebSockets [`open`](Http2Connection::open) starts.
    ///
    /// Waits for the server's SETTINGS (one round trip), so that
    /// [`is_websocket_enabled`](Http2Connection::is_websocket_enabled) is known; a server that
    /// does not announce `SETTINGS_ENABLE_CONNECT_PROTOCOL` is not an error here.
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] or [`Error::Handshake`] for a bad URL, [`Error::Io`], [`Error::Tls`] or
    /// [`Error::Tunnel`] when the transport cannot be opened, [`Error::Http2`] when HTTP/2 is
    /// not negotiated or its handshake fails, [`Error::Timeout`] after
    /// [`Config::handshake_timeout`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe in a useful sense: a cancelled call leaves nothing open, but whatever it
    /// had done is lost.
    pub async fn connect(url: impl IntoClientRequest, config: Config) -> Result<Self, Error> {
        let request = url.into_client_request()?;
        let uri = request.uri().clone();
        let timeout = config.handshake_timeout;
        let attempt = async {
            let secure = is_secure(&uri)?;
            let stream =
                crate::client::open_stream_alpn(&uri, &config, secure.then_some(&[super::H2][..]))
                    .await
                    .map_err(super::alpn_refused)?;
            if secure && !stream.is_h2_negotiated() {
                return Err(Error::Http2(Http2Error::NotNegotiated));
            }
            Http2Connection::handshake(stream, config.clone()).await
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout(TimeoutKind::Handshake)),
        }
    }

    /// Starts HTTP/2 on an established transport (a TLS stream that negotiated `h2`, a TCP
    /// stream for h2c, a proxy tunnel, an in-memory pipe) and waits for the server's SETTINGS.
    /// Spawns the task that drives the connection. Not bounded by a timeout: wrap it in one.
    ///
    /// # Errors
    ///
    /// [`Error::Http2`] when the HTTP/2 handshake fails or the connection ends before the
    /// server's SETTINGS arrive.
    ///
    /// # Cancel safety
    ///
    /// As for [`connect`](Http2Connection::connect).
    pub async fn handshake<S>(io: S, config: Config) -> Result<Self, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (send_request, mut connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_concurrent_streams(MAX_STREAMS)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(Http2Error::from)?;
        let ping_pong = connection.ping_pong();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "HTTP/2 connection ended");
            }
        });
        // The server's SETTINGS are the first frame it sends, so they have been applied once
        // the answer to a PING sent now arrives.
        if let Some(mut ping_pong) = ping_pong {
            ping_pong
                .ping(h2::Ping::opaque())
                .await
                .map_err(Http2Error::from)?;
        }
        Ok(Http2Connection {
            send_request,
            config,
        })
    }

    /// Whether the server announced `SETTINGS_ENABLE_CONNECT_PROTOCOL = 1` (RFC 8441 section
    /// 3): without it, [`open`](Http2Connection::open) fails.
    pub fn is_websocket_enabled(&self) -> bool {
        self.send_request.is_extended_connect_protocol_enabled()
    }

    /// Opens a WebSocket on a new stream: an extended CONNECT for `request` (a `ws://` or
    /// `wss://` URL of this connection's origin, or a [`crate::ClientRequest`] with Origin,
    /// subprotocols and headers), answered `200`. Subprotocols and permessage-deflate are
    /// negotiated as over HTTP/1.1. The response is the server's HTTP/2 answer.
    ///
    /// # Errors
    ///
    /// [`Error::Http2`] with [`Http2Error::ConnectProtocolNotEnabled`] when the server did not
    /// announce RFC 8441, or with [`Http2Error::Protocol`] when the stream or the connection
    /// fails (the server reset the stream, the connection is gone); [`Error::Http`] when the
    /// server answers with another status than 2xx (up to 64 KiB of its body kept);
    /// [`Error::Handshake`] when its answer selects what was not offered; [`Error::Timeout`]
    /// after [`Config::handshake_timeout`].
    ///
    /// # Cancel safety
    ///
    /// Cancelling resets the stream (RST_STREAM `CANCEL`); the connection stays usable.
    pub async fn open(
        &self,
        request: impl IntoClientRequest,
    ) -> Result<(WebSocket<Http2Stream>, Response<()>), Error> {
        let config = self.config.clone();
        let opened = self
            .open_stream(request.into_client_request()?, &config)
            .await?;
        let Opened {
            stream,
            response,
            protocol,
            deflate,
        } = opened;
        Ok((build(stream, config, protocol, deflate), response))
    }

    /// [`open`](Http2Connection::open) without building the WebSocket, bounded by the
    /// handshake timeout.
    pub(crate) async fn open_stream(
        &self,
        request: Request<()>,
        config: &Config,
    ) -> Result<Opened<Http2Stream>, Error> {
        match tokio::time::timeout(
            config.handshake_timeout,
            self.extended_connect(request, config),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout(TimeoutKind::Handshake)),
        }
    }

    async fn extended_connect(
        &self,
        mut request: Request<()>,
        config: &Config,
    ) -> Result<Opened<Http2Stream>, Error> {
        if !self.is_websocket_enabled() {
            return Err(Error::Http2(Http2Error::ConnectProtocolNotEnabled));
        }
        offer_deflate(&mut request, config)?;
        let request = handshake::prepare_extended_connect(request)?;
        let offered_protocols = handshake::offered_protocols(&request);
        let offered_extensions = handshake::offered_extensions(&request)?;
        let mut request = request;
        request
            .extensions_mut()
            .insert(h2::ext::Protocol::from_static(handshake::h2::PROTOCOL));
        let mut send_request = self
            .send_request
            .clone()
            .ready()
            .await
            .map_err(Http2Error::from)?;
        let (response, mut send) = send_request
            .send_request(request, false)
            .map_err(Http2Error::from)?;
        // Dropped before the answer (cancelled): reset the stream rather than leave it open.
        let mut guard = ResetOnDrop(Some(&mut send));
        let response = response.await.map_err(Http2Error::from)?;
        guard.0 = None;
        drop(guard);
        let (parts, mut recv) = response.into_parts();
        if !parts.status.is_success() {
            let body = read_error_body(&mut recv).await;
            return Err(Error::Http(Box::new(Response::from_parts(parts, body))));
        }
        let response = Response::from_parts(parts, ());
        let accepted = handshake::validate_extended_connect_response(
            &response,
            &offered_protocols,
            &offered_extensions,
        )?;
        let deflate = negotiated_deflate(&accepted, config)?;
        Ok(Opened {
            stream: Http2Stream::new(send, recv),
            response,
            protocol: accepted.protocol,
            deflate,
        })
    }
}

/// Resets a stream whose CONNECT was sent but not answered, if dropped while armed.
struct ResetOnDrop<'a>(Option<&'a mut h2::SendStream<Bytes>>);

impl Drop for ResetOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(send) = self.0.take() {
            send.send_reset(h2::Reason::CANCEL);
        }
    }
}

/// A WebSocket stream that the server accepted, before the `WebSocket` is built.
pub(crate) struct Opened<S> {
    pub(crate) stream: S,
    pub(crate) response: Response<()>,
    pub(crate) protocol: Option<String>,
    pub(crate) deflate: Option<DeflateParams>,
}

/// The client `WebSocket` on an accepted stream.
pub(crate) fn build<S>(
    stream: S,
    config: Config,
    protocol: Option<String>,
    deflate: Option<DeflateParams>,
) -> WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut ws = WebSocket::from_raw(stream, Role::Client, config, BytesMut::new());
    ws.set_protocol(protocol);
    if let Some(params) = deflate {
        ws.enable_deflate(params);
    }
    ws
}

/// `wss` (true) or `ws` (false).
fn is_secure(uri: &Uri) -> Result<bool, Error> {
    match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("wss") => Ok(true),
        Some(s) if s.eq_ignore_ascii_case("ws") => Ok(false),
        _ => Err(Error::Handshake(HandshakeError::UnsupportedScheme)),
    }
}

/// Up to [`MAX_ERROR_BODY`] bytes of a refusal's body.
async fn read_error_body(recv: &mut h2::RecvStream) -> Bytes {
    let mut body = BytesMut::new();
    while body.len() < MAX_ERROR_BODY {
        match recv.data().await {
            Some(Ok(data)) => {
                let _ = recv.flow_control().release_capacity(data.len());
                body.extend_from_slice(&data);
            }
            Some(Err(_)) | None => break,
        }
    }
    body.truncate(MAX_ERROR_BODY);
    body.freeze()
}

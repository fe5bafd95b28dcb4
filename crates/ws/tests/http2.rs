//! WebSockets over HTTP/2 (RFC 8441): our client and server over h2c and over TLS (ALPN),
//! the same echo checks as over HTTP/1.1 (one session, run over every transport), the
//! fallback to HTTP/1.1, many WebSockets on one connection with a reader that never reads,
//! the close rules of RFC 8441 section 6, bad requests, and Node's `http2` as an independent
//! peer in both roles (`#[ignore = "needs node"]`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fullduplex::http2::{self, Http2Connection, Http2Error};
use fullduplex::{
    Accept, CloseCode, CloseFrame, Config, DataKind, Error, Http2Policy, Message, Reject,
    UpgradeRequest, WebSocket,
};
use http::StatusCode;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

/// Bound on every test.
const LIMIT: Duration = Duration::from_secs(60);

/// Both ends: messages up to 8 MiB, permessage-deflate on or off.
fn config(compress: bool) -> Config {
    Config::default()
        .max_message_size(8 << 20)
        .max_frame_size(8 << 20)
        .compression(compress)
}

/// How the test server offers TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tls {
    /// Plain TCP: HTTP/1.1 and h2c with prior knowledge on the same port.
    Off,
    /// TLS offering `h2` and `http/1.1` by ALPN.
    H2,
    /// TLS offering `http/1.1` only.
    Http1Only,
    /// TLS offering `h2` and `http/1.1`, but an HTTP/2 server that does not announce RFC 8441.
    H2WithoutRfc8441,
}

fn self_signed() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    (cert, key)
}

/// A running test server: its address, what its WebSockets reported when they ended
/// (`"PROTOCOL end"` or `"PROTOCOL error KIND"`), and the client TLS configuration that trusts
/// it.
struct TestServer {
    addr: SocketAddr,
    reports: mpsc::UnboundedReceiver<String>,
    client_tls: Option<Arc<rustls::ClientConfig>>,
}

impl TestServer {
    fn url(&self, path: &str) -> String {
        match self.client_tls {
            Some(_) => format!("wss://localhost:{}{path}", self.addr.port()),
            None => format!("ws://{}{path}", self.addr),
        }
    }

    fn client_config(&self, compress: bool) -> Config {
        let config = config(compress);
        match &self.client_tls {
            Some(tls) => config.tls(tls.clone()),
            None => config,
        }
    }

    async fn report(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(10), self.reports.recv())
            .await
            .expect("a WebSocket of the server reports within 10 s")
            .unwrap_or_default()
    }
}

/// The server's decision: Origin `https://evil.test` refused with 403, the first offered
/// subprotocol chosen (it picks the handler's behaviour), path `/plain` without compression.
fn policy(request: &UpgradeRequest) -> Result<Accept, Reject> {
    if request.origin() == Some("https://evil.test") {
        return Err(Reject::new(StatusCode::FORBIDDEN).body("origin refused"));
    }
    let mut accept = Accept::new().compression(request.path() != "/plain");
    if let Some(protocol) = request.protocols().first() {
        accept = accept.protocol(protocol.clone());
    }
    Ok(accept)
}

/// Starts a server on a free loopback port: every connection is served as HTTP/1.1
/// (`accept_with`) or as HTTP/2 (`http2::serve_connection`), by ALPN or by the h2c preface.
async fn start_server(tls: Tls, compress: bool) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (report_tx, reports) = mpsc::unbounded_channel();
    let (acceptor, client_tls) = match tls {
        Tls::Off => (None, None),
        _ => {
            let (cert, key) = self_signed();
            let server =
                fullduplex::tls::server_config(vec![cert.clone()], key, tls != Tls::Http1Only)
                    .unwrap();
            let mut roots = rustls::RootCertStore::empty();
            roots.add(cert).unwrap();
            let client = fullduplex::tls::client_config_with_roots(roots).unwrap();
            (Some(TlsAcceptor::from(server)), Some(client))
        }
    };
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let report = report_tx.clone();
            tokio::spawn(async move {
                let config = config(compress);
                match acceptor {
                    None => {
                        if http2::is_h2c_preface(&tcp).await.unwrap_or(false) {
                            serve_h2(tcp, config, report).await;
                        } else {
                            serve_http1(tcp, config, report).await;
                        }
                    }
                    Some(acceptor) => {
                        let Ok(stream) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                        match (h2, tls) {
                            (true, Tls::H2WithoutRfc8441) => serve_h2_without_rfc8441(stream).await,
                            (true, _) => serve_h2(stream, config, report).await,
                            (false, _) => serve_http1(stream, config, report).await,
                        }
                    }
                }
            });
        }
    });
    TestServer {
        addr,
        reports,
        client_tls,
    }
}

async fn serve_h2<S>(io: S, config: Config, report: mpsc::UnboundedSender<String>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _ = http2::serve_connection(io, config, policy, move |ws| {
        let report = report.clone();
        async move { scripted(ws, report).await }
    })
    .await;
}

async fn serve_http1<S>(io: S, config: Config, report: mpsc::UnboundedSender<String>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if let Ok(ws) = fullduplex::accept_with(io, config, policy).await {
        scripted(ws, report).await;
    }
}

/// An HTTP/2 server that does not announce `SETTINGS_ENABLE_CONNECT_PROTOCOL` (every request
/// gets 404).
async fn serve_h2_without_rfc8441<S>(io: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(|_request| async {
        let mut response = http::Response::new(http_body_util::Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::NOT_FOUND;
        Ok::<_, std::convert::Infallible>(response)
    });
    let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .await;
}

/// The server's side of a session, by subprotocol: `flood` sends 64 KiB messages until that
/// fails, `noread` never reads (and holds the WebSocket for 30 s), anything else echoes with
/// the script of `interop/README.md` (`fragment-me`, `ping-me`) plus `close-me CODE`. Reports
/// how it ended.
async fn scripted<S>(mut ws: WebSocket<S>, report: mpsc::UnboundedSender<String>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let protocol = ws.protocol().unwrap_or("none").to_owned();
    match protocol.as_str() {
        "flood" => {
            let chunk = Message::binary(vec![7u8; 64 << 10]);
            loop {
                if let Err(error) = ws.send(chunk.clone()).await {
                    let _ = report.send(format!("flood error {error}"));
                    return;
                }
            }
        }
        "noread" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return;
        }
        _ => {}
    }
    let outcome = loop {
        let message = match ws.recv().await {
            None => break "end".to_owned(),
            Some(Err(Error::Io(error))) => break format!("error {:?}", error.kind()),
            Some(Err(error)) => break format!("error {error}"),
            Some(Ok(message)) => message,
        };
        let result = match message.as_text() {
            Some("fragment-me") => {
                async {
                    for (piece, last) in [("frag", false), ("ment", false), ("ed", true)] {
                        ws.feed_fragment(DataKind::Text, Bytes::from(piece), last)
                            .await?;
                    }
                    ws.flush().await
                }
                .await
            }
            Some("ping-me") => {
                async {
                    ws.send(Message::Ping(Bytes::from_static(b"server-ping")))
                        .await?;
                    loop {
                        match ws.recv().await {
                            Some(Ok(Message::Pong(payload))) if payload == "server-ping" => break,
                            Some(Ok(_)) => {}
                            Some(Err(error)) => return Err(error),
                            None => return Err(fullduplex::UsageError::Closed.into()),
                        }
                    }
                    ws.send(Message::text("pong-ok")).await
                }
                .await
            }
            Some(text) if text.starts_with("close-me ") => {
                let code = text[9..].parse().unwrap_or(1000);
                let frame = CloseFrame::new(CloseCode(code), "server bye");
                match ws.close(Some(frame)).await {
                    Ok(()) => break "end".to_owned(),
                    Err(error) => break format!("error {error}"),
                }
            }
            _ if message.is_text() || message.is_binary() => ws.send(message).await,
            _ => Ok(()),
        };
        if let Err(error) = result {
            break format!("error {error}");
        }
    };
    let _ = report.send(format!("{protocol} {outcome}"));
}

/// Receives until a message other than a ping arrives.
async fn next<S>(ws: &mut WebSocket<S>) -> Message
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match tokio::time::timeout(Duration::from_secs(20), ws.recv()).await {
            Ok(Some(Ok(Message::Ping(_)))) => continue,
            Ok(Some(Ok(message))) => return message,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// The echo checks: text and binary of every length class (7-bit, 16-bit and 64-bit lengths,
/// up to 4 MiB), a fragmented message each way, pings both ways, then a close with code 4000
/// echoed and the end of the stream. The same session runs over every transport.
async fn echo_session<S>(ws: &mut WebSocket<S>, compressed: bool)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    assert_eq!(ws.is_compressed(), compressed, "negotiation");
    let text = Message::text("héllo ✓");
    ws.send(text.clone()).await.unwrap();
    assert_eq!(next(ws).await, text);
    for size in [
        0usize,
        1,
        125,
        126,
        127,
        1000,
        65_535,
        65_536,
        100_000,
        1 << 20,
        4 << 20,
    ] {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let binary = Message::binary(payload);
        ws.send(binary.clone()).await.unwrap();
        assert_eq!(next(ws).await, binary, "binary of {size} bytes");
        let text = Message::text("ab".repeat(size / 2));
        ws.send(text.clone()).await.unwrap();
        assert_eq!(next(ws).await, text, "text of {size} bytes");
    }
    for (piece, last) in [("one ", false), ("two ", false), ("three", true)] {
        ws.feed_fragment(DataKind::Text, Bytes::from(piece), last)
            .await
            .unwrap();
    }
    ws.flush().await.unwrap();
    assert_eq!(next(ws).await, Message::text("one two three"));
    ws.send(Message::text("fragment-me")).await.unwrap();
    assert_eq!(next(ws).await, Message::text("fragmented"));
    ws.send(Message::Ping(Bytes::from_static(b"client-ping")))
        .await
        .unwrap();
    assert_eq!(
        next(ws).await,
        Message::Pong(Bytes::from_static(b"client-ping"))
    );
    ws.send(Message::text("ping-me")).await.unwrap();
    assert_eq!(next(ws).await, Message::text("pong-ok"));
}

/// Ends a session with the client's close (code 4000, echoed) or the server's (4001).
async fn close_session<S>(ws: &mut WebSocket<S>, client_first: bool)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let expected = if client_first {
        ws.send(Message::Close(Some(CloseFrame::new(
            CloseCode(4000),
            "bye",
        ))))
        .await
        .unwrap();
        4000
    } else {
        ws.send(Message::text("close-me 4001")).await.unwrap();
        4001
    };
    match next(ws).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode(expected)),
        other => panic!("expected the close frame, got {other:?}"),
    }
    let end = tokio::time::timeout(Duration::from_secs(10), ws.recv()).await;
    assert!(
        matches!(end, Ok(None)),
        "end of stream after the close: {end:?}"
    );
}

/// Which transport a session runs over, and whether the client must end up on HTTP/2.
#[derive(Clone, Copy, Debug)]
enum Transport {
    /// `ws://`, HTTP/1.1.
    Http1,
    /// `ws://` with [`Http2Policy::Always`]: h2c with prior knowledge.
    H2c,
    /// `wss://` with the default policy against a server offering `h2`: HTTP/2 by ALPN.
    H2Tls,
    /// `wss://` with the default policy against a server offering only `http/1.1`.
    Http1Tls,
}

impl Transport {
    fn tls(self) -> Tls {
        match self {
            Transport::Http1 | Transport::H2c => Tls::Off,
            Transport::H2Tls => Tls::H2,
            Transport::Http1Tls => Tls::Http1Only,
        }
    }

    fn is_http2(self) -> bool {
        matches!(self, Transport::H2c | Transport::H2Tls)
    }
}

/// Runs the echo checks over `transport`, with and without compression, ending with each
/// side's close in turn; every server-side WebSocket must report a clean end.
async fn run_echo_checks(transport: Transport) {
    for compress in [true, false] {
        let mut server = start_server(transport.tls(), compress).await;
        for client_first in [true, false] {
            let mut config = server.client_config(compress);
            if matches!(transport, Transport::H2c) {
                config = config.http2(Http2Policy::Always);
            }
            let (mut ws, response) = fullduplex::connect_with(server.url("/echo"), config)
                .await
                .unwrap();
            assert_eq!(
                ws.get_ref().is_http2(),
                transport.is_http2(),
                "{transport:?}: transport"
            );
            let expected_status = if transport.is_http2() { 200 } else { 101 };
            assert_eq!(response.status(), expected_status);
            echo_session(&mut ws, compress).await;
            close_session(&mut ws, client_first).await;
            assert_eq!(server.report().await, "none end", "{transport:?}");
        }
    }
}

#[tokio::test]
async fn echo_checks_over_http1() {
    tokio::time::timeout(LIMIT, run_echo_checks(Transport::Http1))
        .await
        .unwrap();
}

#[tokio::test]
async fn echo_checks_over_h2c() {
    tokio::time::timeout(LIMIT, run_echo_checks(Transport::H2c))
        .await
        .unwrap();
}

#[tokio::test]
async fn echo_checks_over_h2_with_tls_chosen_by_alpn() {
    tokio::time::timeout(LIMIT, run_echo_checks(Transport::H2Tls))
        .await
        .unwrap();
}

#[tokio::test]
async fn echo_checks_over_tls_when_the_server_offers_only_http1() {
    tokio::time::timeout(LIMIT, run_echo_checks(Transport::Http1Tls))
        .await
        .unwrap();
}

#[tokio::test]
async fn subprotocol_and_declined_compression_over_h2() {
    let server = start_server(Tls::Off, true).await;
    let h2 = Http2Connection::connect(server.url("/"), server.client_config(true))
        .await
        .unwrap();
    assert!(h2.is_websocket_enabled());
    let request = fullduplex::ClientRequest::new(server.url("/plain")).protocol("chat");
    let (ws, response) = h2.open(request).await.unwrap();
    assert_eq!(ws.protocol(), Some("chat"));
    assert!(!ws.is_compressed());
    assert_eq!(response.headers()["sec-websocket-protocol"], "chat");
    assert!(!response.headers().contains_key("sec-websocket-accept"));
}

#[tokio::test]
async fn auto_falls_back_to_http1_when_the_server_picks_h2_without_rfc8441() {
    let server = start_server(Tls::H2WithoutRfc8441, true).await;
    let (mut ws, response) = fullduplex::connect_with(server.url("/"), server.client_config(true))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert!(!ws.get_ref().is_http2());
    ws.send(Message::text("still works")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("still works"));
    // Required HTTP/2: a clear error instead.
    let config = server.client_config(true).http2(Http2Policy::Always);
    let error = fullduplex::connect_with(server.url("/"), config)
        .await
        .err();
    assert!(
        matches!(
            error,
            Some(Error::Http2(Http2Error::ConnectProtocolNotEnabled))
        ),
        "{error:?}"
    );
    // And against a server that offers only HTTP/1.1.
    let server = start_server(Tls::Http1Only, true).await;
    let config = server.client_config(true).http2(Http2Policy::Always);
    let error = fullduplex::connect_with(server.url("/"), config)
        .await
        .err();
    assert!(
        matches!(error, Some(Error::Http2(Http2Error::NotNegotiated))),
        "{error:?}"
    );
    // Never: HTTP/1.1 even where HTTP/2 is offered.
    let server = start_server(Tls::H2, true).await;
    let config = server.client_config(true).http2(Http2Policy::Never);
    let (ws, _) = fullduplex::connect_with(server.url("/"), config)
        .await
        .unwrap();
    assert!(!ws.get_ref().is_http2());
}

/// Two WebSockets on one HTTP/2 connection: one never reads while the server floods it, and
/// the server never reads another while the client floods that one; a third keeps echoing
/// meanwhile (each stream has its own flow control, and the connection window leaves room).
#[tokio::test]
async fn a_websocket_that_does_not_read_does_not_stall_the_others() {
    tokio::time::timeout(LIMIT, async {
        let mut server = start_server(Tls::Off, false).await;
        let h2 = Http2Connection::connect(server.url("/"), server.client_config(false))
            .await
            .unwrap();
        let flood = fullduplex::ClientRequest::new(server.url("/")).protocol("flood");
        let (flooded, _) = h2.open(flood).await.unwrap();
        let noread = fullduplex::ClientRequest::new(server.url("/")).protocol("noread");
        let (mut unread, _) = h2.open(noread).await.unwrap();
        let (mut echo, _) = h2.open(server.url("/")).await.unwrap();

        // The client floods the WebSocket the server does not read: its sends must stop
        // (backpressure from that stream's window), without an error.
        let chunk = Message::binary(vec![1u8; 64 << 10]);
        let mut sent = 0usize;
        let blocked = loop {
            match tokio::time::timeout(Duration::from_millis(500), unread.send(chunk.clone())).await
            {
                Ok(Ok(())) => sent += 1,
                Ok(Err(error)) => panic!("send to a non-reading peer failed: {error}"),
                Err(_) => break true,
            }
            assert!(sent < 2000, "sends never blocked: no flow control");
        };
        assert!(blocked);
        // Give the server's flood time to fill the unread stream's window too.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for i in 0..200 {
            let message = Message::text(format!("message {i}"));
            echo.send(message.clone()).await.unwrap();
            assert_eq!(next(&mut echo).await, message);
        }
        let big = Message::binary(vec![9u8; 2 << 20]);
        echo.send(big.clone()).await.unwrap();
        assert_eq!(next(&mut echo).await, big);
        close_session(&mut echo, true).await;
        assert_eq!(server.report().await, "none end");
        drop(flooded);
        // The flooding handler fails once its stream is reset (RST_STREAM CANCEL).
        let report = server.report().await;
        assert!(report.starts_with("flood error"), "{report}");
    })
    .await
    .unwrap();
}

/// RFC 8441 section 6: an orderly close ends the stream (END_STREAM) and leaves the connection
/// to the others; dropping a client WebSocket resets its stream (RST_STREAM CANCEL), which the
/// server reads as a connection reset; a server WebSocket that goes away without a close is
/// an error for the client, not an orderly end.
#[tokio::test]
async fn close_rules_of_rfc8441_section_6() {
    tokio::time::timeout(LIMIT, async {
        let mut server = start_server(Tls::Off, true).await;
        let h2 = Http2Connection::connect(server.url("/"), server.client_config(true))
            .await
            .unwrap();
        let (mut first, _) = h2.open(server.url("/")).await.unwrap();
        let (mut second, _) = h2.open(server.url("/")).await.unwrap();
        close_session(&mut first, true).await;
        assert_eq!(server.report().await, "none end");
        // The abort: RST_STREAM CANCEL, seen by the server as a reset.
        let request = fullduplex::ClientRequest::new(server.url("/")).protocol("abort");
        let (mut aborted, _) = h2.open(request).await.unwrap();
        aborted.send(Message::text("x")).await.unwrap();
        assert_eq!(next(&mut aborted).await, Message::text("x"));
        drop(aborted);
        // hyper reads the reset as the end of the stream; without a close frame that is an
        // abnormal end for the server's WebSocket, as a TCP reset is.
        let report = server.report().await;
        assert!(report.starts_with("abort error"), "{report}");
        // The other WebSocket and the connection are untouched.
        second.send(Message::text("still here")).await.unwrap();
        assert_eq!(next(&mut second).await, Message::text("still here"));
        let (mut third, _) = h2.open(server.url("/")).await.unwrap();
        echo_once(&mut third).await;
        close_session(&mut third, false).await;
        close_session(&mut second, true).await;
        // A server WebSocket that ends without a close: the client gets an error.
        let request = fullduplex::ClientRequest::new(server.url("/")).protocol("noread");
        let h2c = Http2Connection::connect(
            server.url("/"),
            server
                .client_config(true)
                .close_timeout(Duration::from_secs(1)),
        )
        .await
        .unwrap();
        let (mut gone, _) = h2c.open(request).await.unwrap();
        let (mut other, _) = h2c.open(server.url("/")).await.unwrap();
        echo_once(&mut other).await;
        drop(h2c);
        // `noread` holds its WebSocket for 30 s: nothing arrives, the stream stays open.
        let nothing = tokio::time::timeout(Duration::from_millis(300), gone.recv()).await;
        assert!(nothing.is_err(), "{nothing:?}");
        echo_once(&mut other).await;
    })
    .await
    .unwrap();
}

async fn echo_once<S>(ws: &mut WebSocket<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.send(Message::text("once")).await.unwrap();
    assert_eq!(next(ws).await, Message::text("once"));
}

/// A raw HTTP/2 client (the `h2` crate): lets a test send what our client never would.
async fn raw_h2(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut send = send.ready().await.unwrap();
    // Let the server's SETTINGS arrive (RFC 8441 needs them before an extended CONNECT).
    for _ in 0..100 {
        if send.is_extended_connect_protocol_enabled() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        send = send.ready().await.unwrap();
    }
    send
}

/// Sends `request` and returns the status, the headers and the whole body (the stream must
/// end: nothing is left open).
async fn raw_exchange(
    send: &mut h2::client::SendRequest<Bytes>,
    request: http::Request<()>,
) -> (StatusCode, http::HeaderMap, String) {
    let mut ready = send.clone().ready().await.unwrap();
    let (response, _stream) = ready.send_request(request, false).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .unwrap()
        .unwrap();
    let (parts, mut body) = response.into_parts();
    let mut text = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(5), body.data())
        .await
        .unwrap()
    {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        text.extend_from_slice(&chunk);
    }
    assert!(body.is_end_stream());
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&text).into_owned(),
    )
}

fn extended_connect(addr: SocketAddr) -> http::Request<()> {
    let mut request = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("http://{addr}/chat"))
        .header("sec-websocket-version", "13")
        .body(())
        .unwrap();
    request
        .extensions_mut()
        .insert(h2::ext::Protocol::from_static("websocket"));
    request
}

#[tokio::test]
async fn bad_requests_over_h2_get_clear_statuses_and_leave_nothing_open() {
    tokio::time::timeout(LIMIT, async {
        let mut server = start_server(Tls::Off, true).await;
        let addr = server.addr;
        let mut send = raw_h2(addr).await;
        assert!(send.is_extended_connect_protocol_enabled());

        // CONNECT without :protocol: a tunnel request, not a WebSocket.
        let tunnel = http::Request::builder()
            .method(http::Method::CONNECT)
            .uri(addr.to_string())
            .body(())
            .unwrap();
        let (status, _, body) = raw_exchange(&mut send, tunnel).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains(":protocol"), "{body}");

        // Another :protocol.
        let mut other = extended_connect(addr);
        other
            .extensions_mut()
            .insert(h2::ext::Protocol::from_static("connect-udp"));
        let (status, _, _) = raw_exchange(&mut send, other).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        // A wrong Sec-WebSocket-Version: 426 naming the version we speak, as over HTTP/1.1.
        let mut wrong_version = extended_connect(addr);
        wrong_version
            .headers_mut()
            .insert("sec-websocket-version", http::HeaderValue::from_static("8"));
        let (status, headers, _) = raw_exchange(&mut send, wrong_version).await;
        assert_eq!(status, StatusCode::UPGRADE_REQUIRED);
        assert_eq!(headers["sec-websocket-version"], "13");
        assert!(!headers.contains_key("connection"));

        // A forbidden Origin: the application's 403 and its body.
        let mut evil = extended_connect(addr);
        evil.headers_mut().insert(
            "origin",
            http::HeaderValue::from_static("https://evil.test"),
        );
        let (status, _, body) = raw_exchange(&mut send, evil).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body, "origin refused");

        // Our client reports the refusal like over HTTP/1.1.
        let h2 = Http2Connection::connect(server.url("/"), server.client_config(true))
            .await
            .unwrap();
        let request = fullduplex::ClientRequest::new(server.url("/")).origin("https://evil.test");
        let error = h2.open(request).await.err();
        let response = error.as_ref().and_then(Error::http_response);
        assert_eq!(response.map(|r| r.status()), Some(StatusCode::FORBIDDEN));
        assert_eq!(
            response.map(|r| r.body().as_ref()),
            Some(&b"origin refused"[..])
        );

        // None of these opened a WebSocket; the connection still accepts a good request.
        let nothing = tokio::time::timeout(Duration::from_millis(200), server.reports.recv()).await;
        assert!(
            nothing.is_err(),
            "a refused request reached the handler: {nothing:?}"
        );
        let (status, _, _) = {
            let mut ready = send.clone().ready().await.unwrap();
            let (response, _stream) = ready.send_request(extended_connect(addr), false).unwrap();
            let response = response.await.unwrap();
            (response.status(), (), ())
        };
        assert_eq!(status, StatusCode::OK);
    })
    .await
    .unwrap();
}

/// An extended CONNECT without `:path` is malformed HTTP/2 (RFC 8441 section 4, RFC 9113
/// section 8.1.1): the stream is reset with PROTOCOL_ERROR (or refused with 400), the
/// connection lives on. Written as raw frames: no HTTP/2 library sends it.
#[tokio::test]
async fn extended_connect_without_path_is_reset() {
    tokio::time::timeout(LIMIT, async {
        let server = start_server(Tls::Off, true).await;
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        let mut out = http2::PREFACE.to_vec();
        out.extend(h2_frame(4, 0, 0, &[]));
        let mut block = Vec::new();
        for (name, value) in [
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "http"),
            (":authority", "localhost"),
            ("sec-websocket-version", "13"),
        ] {
            // Literal header field without indexing, new name, no Huffman (RFC 7541 6.2.2).
            block.push(0);
            block.push(name.len() as u8);
            block.extend_from_slice(name.as_bytes());
            block.push(value.len() as u8);
            block.extend_from_slice(value.as_bytes());
        }
        out.extend(h2_frame(1, 0x4, 1, &block));
        tcp.write_all(&out).await.unwrap();
        let verdict = loop {
            let mut head = [0u8; 9];
            tcp.read_exact(&mut head).await.unwrap();
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            tcp.read_exact(&mut payload).await.unwrap();
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            match (head[3], stream) {
                // RST_STREAM on our stream: PROTOCOL_ERROR (1).
                (3, 1) => {
                    break format!(
                        "reset {}",
                        u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                    )
                }
                // HEADERS on our stream: `:status 400` is static table entry 12 (0x8c).
                (1, 1) => break format!("headers {:#x}", payload.first().copied().unwrap_or(0)),
                // GOAWAY would take the whole connection down for one bad stream.
                (7, _) => panic!("GOAWAY for a malformed request"),
                _ => {}
            }
        };
        assert!(
            verdict == "reset 1" || verdict == "headers 0x8c",
            "{verdict}"
        );
    })
    .await
    .unwrap();
}

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut frame = vec![len[1], len[2], len[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

#[tokio::test]
async fn h2c_preface_is_detected_without_consuming_it() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = tokio::spawn(async move {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        // The preface in two pieces, the second late.
        tcp.write_all(&http2::PREFACE[..10]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        tcp.write_all(&http2::PREFACE[10..]).await.unwrap();
        let mut http1 = TcpStream::connect(addr).await.unwrap();
        http1.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        (tcp, http1)
    });
    let (first, _) = listener.accept().await.unwrap();
    assert!(http2::is_h2c_preface(&first).await.unwrap());
    let mut peeked = [0u8; 24];
    let n = first.peek(&mut peeked).await.unwrap();
    assert_eq!(&peeked[..n], &http2::PREFACE[..n], "nothing consumed");
    let (second, _) = listener.accept().await.unwrap();
    assert!(!http2::is_h2c_preface(&second).await.unwrap());
    drop(client.await.unwrap());
}

// ---- Node's http2 as the peer (interop/h2/) ----

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../interop/h2")
}

/// Runs `node SCRIPT ARGS...` (killed on drop) and returns it with its stdout lines.
fn node(
    script: &str,
    args: &[String],
) -> (
    tokio::process::Child,
    tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) {
    let mut child = tokio::process::Command::new("node")
        .arg(interop_dir().join(script))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let stdout = child.stdout.take().expect("piped stdout");
    (child, BufReader::new(stdout).lines())
}

/// Node's `http2` client does extended CONNECTs against our server (h2c and TLS), two
/// WebSockets on one session, speaking frames with its own small codec.
#[tokio::test]
#[ignore = "needs node"]
async fn node_http2_client_against_our_server() {
    tokio::time::timeout(LIMIT, async {
        for tls in [Tls::Off, Tls::H2] {
            let mut server = start_server(tls, false).await;
            let url = match tls {
                Tls::Off => format!("http://127.0.0.1:{}", server.addr.port()),
                _ => format!("https://localhost:{}", server.addr.port()),
            };
            let (mut child, mut lines) = node("client.mjs", &[url]);
            let mut ok = false;
            while let Some(line) = lines.next_line().await.unwrap() {
                println!("{line}");
                ok |= line == "h2_client: ok";
            }
            let status = child.wait().await.unwrap();
            assert!(status.success() && ok, "node client failed ({tls:?})");
            for _ in 0..2 {
                assert_eq!(server.report().await, "chat end");
            }
        }
    })
    .await
    .unwrap();
}

/// Our client (the same echo checks as over HTTP/1.1, without compression: the Node peer has
/// none) against Node's `http2` server with `enableConnectProtocol`, two WebSockets on one
/// connection.
#[tokio::test]
#[ignore = "needs node"]
async fn our_client_against_node_http2_server() {
    tokio::time::timeout(LIMIT, async {
        let (_child, mut lines) = node("server.mjs", &["0".to_owned()]);
        let line = lines.next_line().await.unwrap().unwrap_or_default();
        let port: u16 = line
            .strip_prefix("listening on ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        let url = format!("ws://127.0.0.1:{port}/echo");
        let config = config(false).http2(Http2Policy::Always);
        let (mut ws, response) = fullduplex::connect_with(url.as_str(), config.clone())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(ws.get_ref().is_http2());
        echo_session(&mut ws, false).await;
        close_session(&mut ws, true).await;

        let h2 = Http2Connection::connect(url.as_str(), config)
            .await
            .unwrap();
        let request = fullduplex::ClientRequest::new(url.as_str()).protocol("chat");
        let (mut a, response) = h2.open(request).await.unwrap();
        assert_eq!(response.headers()["sec-websocket-protocol"], "chat");
        assert_eq!(a.protocol(), Some("chat"));
        let (mut b, _) = h2.open(url.as_str()).await.unwrap();
        echo_once(&mut a).await;
        echo_once(&mut b).await;
        close_session(&mut a, false).await;
        echo_once(&mut b).await;
        close_session(&mut b, true).await;
    })
    .await
    .unwrap();
}

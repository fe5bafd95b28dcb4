//! `fullduplex::hyper`: WebSocket upgrades inside a hyper 1.x service, on the same port as
//! plain HTTP routes, checked with fullduplex's client and a raw HTTP client.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use fullduplex::{Accept, Config, Message, Reject};
use http::StatusCode;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LIMIT: Duration = Duration::from_secs(10);

/// `/` answers HTTP; `/ws` upgrades (echo, subprotocol "chat" if offered, Origin
/// `https://evil.test` refused with 403, compression per the default config).
async fn service(mut request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.uri().path() != "/ws" || !fullduplex::hyper::is_upgrade_request(&request) {
        return Ok(Response::new(Full::new(Bytes::from_static(
            b"plain http\n",
        ))));
    }
    let result = fullduplex::hyper::upgrade_with(&mut request, Config::default(), |upgrade| {
        if upgrade.origin() == Some("https://evil.test") {
            return Err(Reject::new(StatusCode::FORBIDDEN).body("origin refused"));
        }
        let chat = upgrade.protocols().iter().any(|p| p == "chat");
        Ok(if chat {
            Accept::new().protocol("chat")
        } else {
            Accept::new()
        })
    });
    match result {
        Ok((response, upgrade)) => {
            tokio::spawn(async move {
                let Ok(mut ws) = upgrade.await else { return };
                let protocol = ws.protocol().unwrap_or("none").to_owned();
                let _ = ws.send(Message::text(format!("protocol {protocol}"))).await;
                while let Some(Ok(message)) = ws.recv().await {
                    if message.is_text() || message.is_binary() {
                        let _ = ws.send(message).await;
                    }
                }
            });
            Ok(response)
        }
        Err(error) => Ok(error.into_response()),
    }
}

async fn start() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service_fn(service))
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

async fn raw_request(addr: SocketAddr, head: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tcp.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.windows(4).any(|w| w == b"\r\n\r\n") && !head.contains("Connection: close") {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn websocket_and_http_share_the_port() {
    tokio::time::timeout(LIMIT, async {
        let addr = start().await;
        let http = raw_request(
            addr,
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(http.starts_with("HTTP/1.1 200"), "{http}");
        assert!(http.ends_with("plain http\n"), "{http}");

        let request = fullduplex::ClientRequest::new(format!("ws://{addr}/ws"))
            .protocol("chat")
            .build()
            .unwrap();
        let (mut ws, response) = fullduplex::client_handshake(
            TcpStream::connect(addr).await.unwrap(),
            request,
            Config::default(),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(ws.protocol(), Some("chat"));
        assert!(
            ws.is_compressed(),
            "permessage-deflate negotiated through hyper"
        );
        let greeting = ws.recv().await.unwrap().unwrap();
        assert_eq!(greeting, Message::text("protocol chat"));
        for i in 0..20 {
            let text = format!("message {i} {}", "x".repeat(i * 100));
            ws.send(Message::text(text.clone())).await.unwrap();
            assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text(text));
        }
        ws.close(None).await.unwrap();
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn invalid_and_rejected_upgrades_get_http_errors() {
    tokio::time::timeout(LIMIT, async {
        let addr = start().await;
        let no_version = raw_request(
            addr,
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(no_version.starts_with("HTTP/1.1 426"), "{no_version}");
        assert!(
            no_version
                .to_ascii_lowercase()
                .contains("sec-websocket-version: 13"),
            "{no_version}"
        );

        let bad_key = raw_request(
            addr,
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(bad_key.starts_with("HTTP/1.1 400"), "{bad_key}");

        let request = fullduplex::ClientRequest::new(format!("ws://{addr}/ws"))
            .header("origin", "https://evil.test")
            .build()
            .unwrap();
        let error = fullduplex::client_handshake(
            TcpStream::connect(addr).await.unwrap(),
            request,
            Config::default(),
        )
        .await
        .expect_err("refused");
        let response = error.http_response().expect("an HTTP answer");
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(response.body().as_ref(), b"origin refused");
    })
    .await
    .expect("bounded");
}

/// axum's `Request<Body>` carries hyper's upgrade handle: the same call works in a handler.
#[tokio::test]
async fn axum_handler_upgrades() {
    use axum::body::Body;
    use axum::response::{IntoResponse, Response as AxumResponse};

    async fn handler(mut request: axum::extract::Request) -> AxumResponse {
        match fullduplex::hyper::upgrade::<_, Body>(&mut request) {
            Ok((response, upgrade)) => {
                tokio::spawn(async move {
                    let Ok(mut ws) = upgrade.await else { return };
                    while let Some(Ok(message)) = ws.recv().await {
                        if message.is_text() {
                            let _ = ws.send(message).await;
                        }
                    }
                });
                response.into_response()
            }
            Err(error) => error.into_response::<Body>().into_response(),
        }
    }

    tokio::time::timeout(LIMIT, async {
        let app = axum::Router::new().route("/ws", axum::routing::get(handler));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let (mut ws, _) = fullduplex::connect(format!("ws://{addr}/ws"))
            .await
            .unwrap();
        ws.send(Message::text("through axum")).await.unwrap();
        assert_eq!(
            ws.recv().await.unwrap().unwrap(),
            Message::text("through axum")
        );
        ws.close(None).await.unwrap();
        let plain = raw_request(
            addr,
            "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(plain.starts_with("HTTP/1.1 426"), "{plain}");
    })
    .await
    .expect("bounded");
}

/// `with_stream::<UpgradedStream>()` on hyper's own HTTP/1.1 connection hands the WebSocket
/// the `TcpStream` itself, and the bytes the client sent right after its request head (read by
/// hyper with the head) are the WebSocket's first.
#[tokio::test]
async fn an_http1_upgrade_gives_back_the_tcp_stream_with_the_bytes_after_the_head() {
    use fullduplex::hyper::UpgradedStream;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let service = service_fn(|mut request: Request<Incoming>| async move {
            let (response, upgrade) =
                fullduplex::hyper::upgrade::<_, Full<Bytes>>(&mut request).unwrap();
            tokio::spawn(async move {
                let Ok(mut ws) = upgrade.with_stream::<UpgradedStream>().await else {
                    return;
                };
                let kind = match ws.get_ref() {
                    UpgradedStream::Tcp(_) => "tcp",
                    UpgradedStream::Hyper(_) => "hyper",
                };
                let _ = ws.send(Message::text(kind)).await;
                while let Some(Ok(message)) = ws.recv().await {
                    let _ = ws.send(message).await;
                }
            });
            Ok::<_, Infallible>(response)
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(tcp), service)
            .with_upgrades()
            .await;
    });

    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut bytes = b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n"
        .to_vec();
    // A masked text frame "early" in the same write as the head.
    let key = [1u8, 2, 3, 4];
    bytes.extend_from_slice(&[0x81, 0x80 | 5]);
    bytes.extend_from_slice(&key);
    bytes.extend(b"early".iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    tcp.write_all(&bytes).await.unwrap();

    let read = async {
        let mut received = Vec::new();
        let mut buf = [0u8; 1024];
        let expected_tail = b"\x81\x03tcp\x81\x05early";
        while !received.ends_with(expected_tail) {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed early: {:?}",
                String::from_utf8_lossy(&received)
            );
            received.extend_from_slice(&buf[..n]);
        }
        received
    };
    let received = tokio::time::timeout(LIMIT, read).await.expect("in time");
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
}

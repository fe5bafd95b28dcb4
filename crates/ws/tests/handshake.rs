//! The opening handshake over real sockets (RFC 6455 section 4), both roles.

mod common;

use common::{client_frame, upgrade_request};
use fullduplex::{Accept, ClientRequest, Config, Message, Reject};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Sends `request` raw to a server running `accept_with`, returns what came back and the
/// server's result.
async fn raw_request(request: Vec<u8>) -> (String, Result<(), fullduplex::Error>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        fullduplex::accept(tcp).await.map(|_| ())
    });
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&request).await.unwrap();
    let mut response = Vec::new();
    let _ = tcp.read_to_end(&mut response).await;
    (
        String::from_utf8_lossy(&response).into_owned(),
        server.await.unwrap(),
    )
}

// Section 4.2.1: "If the server ... doesn't understand that version ... it MUST respond with an
// appropriate HTTP error code (such as 426 Upgrade Required) and a |Sec-WebSocket-Version|
// header field indicating the version(s) the server is capable of understanding."
#[tokio::test]
async fn wrong_version_gets_426_with_supported_version() {
    let request = upgrade_request("/", "").replace("Version: 13", "Version: 8");
    let (response, result) = raw_request(request.into_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 426"), "{response}");
    assert!(response
        .to_ascii_lowercase()
        .contains("sec-websocket-version: 13"));
    assert!(result.is_err());
}

#[tokio::test]
async fn plain_http_request_gets_426() {
    let (response, _) = raw_request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()).await;
    assert!(response.starts_with("HTTP/1.1 426"), "{response}");
}

// Section 4.2.1: the key "when decoded, is 16 bytes in length"; otherwise 400 with a reason.
#[tokio::test]
async fn bad_key_gets_400_with_reason() {
    let request = upgrade_request("/", "").replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=");
    let (response, result) = raw_request(request.into_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
    assert!(
        !body.trim().is_empty(),
        "400 must carry a plain-text reason"
    );
    assert!(result.is_err());
}

#[tokio::test]
async fn post_gets_400_and_missing_host_gets_400() {
    let request = upgrade_request("/", "").replacen("GET", "POST", 1);
    let (response, _) = raw_request(request.into_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    let request = upgrade_request("/", "").replace("Host: localhost\r\n", "");
    let (response, _) = raw_request(request.into_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
}

#[tokio::test]
async fn oversized_head_gets_431_without_reading_it_all() {
    let huge = format!("X-Filler: {}\r\n", "a".repeat(64 << 10));
    let request = upgrade_request("/", &huge);
    let (response, result) = raw_request(request.into_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");
    assert!(result.is_err());
}

/// Section 4.1 and 4.2.2: bytes right after the head are WebSocket data and are not lost.
#[tokio::test]
async fn frames_in_the_same_packet_as_the_request_are_kept() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = tokio::spawn(async move {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let mut bytes = upgrade_request("/", "").into_bytes();
        bytes.extend(client_frame(true, 1, b"early"));
        bytes.extend(client_frame(true, 2, &[1, 2, 3]));
        tcp.write_all(&bytes).await.unwrap();
        let mut sink = Vec::new();
        let _ = tcp.read_to_end(&mut sink).await;
    });
    let (tcp, _) = listener.accept().await.unwrap();
    let mut ws = fullduplex::accept(tcp).await.unwrap();
    assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text("early"));
    assert_eq!(
        ws.recv().await.unwrap().unwrap(),
        Message::binary(vec![1, 2, 3])
    );
    drop(ws);
    client.await.unwrap();
}

#[tokio::test]
async fn frames_in_the_same_packet_as_the_response_are_kept() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tcp.read(&mut buf).await.unwrap();
        let head = String::from_utf8_lossy(&buf[..n]).into_owned();
        let key = head
            .lines()
            .find_map(|l| {
                l.strip_prefix("Sec-WebSocket-Key: ")
                    .or_else(|| l.strip_prefix("sec-websocket-key: "))
            })
            .unwrap()
            .trim()
            .to_owned();
        let accept = fullduplex::proto::handshake::accept_key(key.as_bytes());
        let mut bytes = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .into_bytes();
        bytes.extend_from_slice(&[0x81, 0x05]);
        bytes.extend_from_slice(b"first");
        tcp.write_all(&bytes).await.unwrap();
        let mut sink = Vec::new();
        let _ = tcp.read_to_end(&mut sink).await;
    });
    let (mut ws, _) = fullduplex::connect(format!("ws://{addr}/")).await.unwrap();
    assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text("first"));
    drop(ws);
    server.await.unwrap();
}

/// The application sees path, query, Origin, cookies and headers, chooses a subprotocol and
/// adds response headers.
#[tokio::test]
async fn callback_sees_request_and_chooses_subprotocol() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let ws = fullduplex::accept_with(tcp, Config::default(), |request| {
            assert_eq!(request.path(), "/chat");
            assert_eq!(request.query(), Some("room=7&x=%20"));
            assert_eq!(request.origin(), Some("https://example.com"));
            assert_eq!(request.header("authorization"), Some("Bearer t0k3n"));
            let cookies: Vec<_> = request.cookies().collect();
            assert_eq!(cookies, vec![("session", "abc"), ("theme", "dark")]);
            assert_eq!(request.protocols(), ["v1.chat", "v2.chat"]);
            Ok(Accept::new()
                .protocol("v2.chat")
                .header("x-server", "fullduplex"))
        })
        .await
        .unwrap();
        ws.protocol().map(str::to_owned)
    });
    let request = ClientRequest::new(format!("ws://{addr}/chat?room=7&x=%20"))
        .origin("https://example.com")
        .protocol("v1.chat")
        .protocol("v2.chat")
        .header("Cookie", "session=abc; theme=dark")
        .header("Authorization", "Bearer t0k3n");
    let (ws, response) = fullduplex::connect_with(request, Config::default())
        .await
        .unwrap();
    assert_eq!(ws.protocol(), Some("v2.chat"));
    assert_eq!(response.headers()["x-server"], "fullduplex");
    assert_eq!(server.await.unwrap().as_deref(), Some("v2.chat"));
}

/// A rejection reaches the client as an error with status, headers and body.
#[tokio::test]
async fn rejection_is_reported_to_the_client_with_body() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        fullduplex::accept_with(tcp, Config::default(), |request| match request.origin() {
            Some("https://good.example") => Ok(Accept::new()),
            _ => Err(Reject::new(StatusCode::FORBIDDEN)
                .header("x-reason", "origin")
                .body("origin not allowed")),
        })
        .await
        .map(|_| ())
    });
    let request = ClientRequest::new(format!("ws://{addr}/")).origin("https://evil.example");
    let error = fullduplex::connect_with(request, Config::default())
        .await
        .unwrap_err();
    let response = error.http_response().expect("an HTTP error");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(response.headers()["x-reason"], "origin");
    assert_eq!(response.body().as_ref(), b"origin not allowed");
    assert!(matches!(
        server.await.unwrap(),
        Err(fullduplex::Error::Rejected(StatusCode::FORBIDDEN))
    ));
}

/// Section 4.1: "If the response lacks a |Sec-WebSocket-Accept| header field or [it is not]
/// the expected value ... the client MUST _Fail the WebSocket Connection_."
#[tokio::test]
async fn client_rejects_wrong_accept_and_unoffered_protocol() {
    for (accept_line, extra) in [
        ("Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n", ""),
        ("", "Sec-WebSocket-Protocol: never-offered\r\n"),
    ] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept_line = accept_line.to_owned();
        let extra = extra.to_owned();
        let server = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = tcp.read(&mut buf).await.unwrap();
            let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
            let key = head
                .lines()
                .find_map(|l| l.strip_prefix("sec-websocket-key: "))
                .unwrap()
                .trim()
                .to_owned();
            // The key was lowercased above; recover the original from the raw bytes.
            let raw = String::from_utf8_lossy(&buf[..n]).into_owned();
            let start = raw.to_ascii_lowercase().find(&key).unwrap();
            let key = &raw[start..start + key.len()];
            let accept = if accept_line.is_empty() {
                format!(
                    "Sec-WebSocket-Accept: {}\r\n",
                    fullduplex::proto::handshake::accept_key(key.as_bytes())
                )
            } else {
                accept_line
            };
            let response = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{accept}{extra}\r\n"
            );
            tcp.write_all(response.as_bytes()).await.unwrap();
        });
        let result = fullduplex::connect(format!("ws://{addr}/")).await;
        assert!(
            matches!(result, Err(fullduplex::Error::Handshake(_))),
            "{:?}",
            result.map(|_| ())
        );
        server.await.unwrap();
    }
}

#[tokio::test]
async fn ipv6_literal_urls_work() {
    let Ok(listener) = TcpListener::bind("[::1]:0").await else {
        eprintln!("no IPv6 loopback here; skipping");
        return;
    };
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        fullduplex::accept_with(tcp, Config::default(), |request| {
            assert_eq!(
                request.header("host"),
                Some(format!("[::1]:{port}").as_str())
            );
            Ok(Accept::new())
        })
        .await
        .unwrap()
    });
    let (mut client, _) = fullduplex::connect(format!("ws://[::1]:{port}/v6"))
        .await
        .unwrap();
    let mut server = server.await.unwrap();
    client.send(Message::text("over v6")).await.unwrap();
    assert_eq!(
        server.recv().await.unwrap().unwrap(),
        Message::text("over v6")
    );
}

#[tokio::test]
async fn refused_connection_is_an_io_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    assert!(matches!(
        fullduplex::connect(format!("ws://{addr}/")).await,
        Err(fullduplex::Error::Io(_))
    ));
    assert!(matches!(
        fullduplex::connect("http://example.com/").await,
        Err(fullduplex::Error::Handshake(_))
    ));
}

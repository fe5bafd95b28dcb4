//! How clients reach the hub: HTTP/1.1 and h2c with prior knowledge on one cleartext port,
//! HTTPS with ALPN `h2` and `http/1.1`, and the per-transport connection metric.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{config, TestHub};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(20);

/// A self-signed certificate for `localhost`, and a server configuration with it.
fn tls_server() -> (CertificateDer<'static>, Arc<rustls::ServerConfig>) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert.clone()], key)
    .expect("server config");
    (cert, Arc::new(config))
}

/// A TLS connection to `hub` offering `alpn`, and the protocol the server chose.
async fn tls_connect(
    hub: &TestHub,
    cert: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> (tokio_rustls::client::TlsStream<TcpStream>, Option<Vec<u8>>) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).expect("root");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(hub.addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let chosen = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    (tls, chosen)
}

/// A response's status, version and body.
async fn read(response: http::Response<hyper::body::Incoming>) -> (u16, http::Version, String) {
    let status = response.status().as_u16();
    let version = response.version();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, version, String::from_utf8_lossy(&body).into_owned())
}

/// `GET path` over HTTP/2 on `io`: the status, the version and the body.
async fn get_h2<I>(io: I, authority: &str, path: &str) -> (u16, http::Version, String)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
        .await
        .expect("h2 handshake");
    tokio::spawn(connection);
    let request = http::Request::get(format!("https://{authority}{path}"))
        .body(Empty::<Bytes>::new())
        .expect("request");
    read(sender.send_request(request).await.expect("response")).await
}

/// `GET path` over HTTP/1.1 on `io`: the status, the version and the body.
async fn get_h1<I>(io: I, authority: &str, path: &str) -> (u16, http::Version, String)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = http1::handshake(TokioIo::new(io))
        .await
        .expect("h1 handshake");
    tokio::spawn(connection);
    let request = http::Request::get(path)
        .header(http::header::HOST, authority)
        .body(Empty::<Bytes>::new())
        .expect("request");
    read(sender.send_request(request).await.expect("response")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleartext_port_speaks_http1_and_h2c_with_prior_knowledge() {
    tokio::time::timeout(LIMIT, async {
        let hub = TestHub::start(config());
        let authority = hub.addr.to_string();
        let tcp = TcpStream::connect(hub.addr).await.expect("connect");
        let (status, version, body) = get_h2(tcp, &authority, "/healthz").await;
        assert_eq!(
            (status, version, body.as_str()),
            (200, http::Version::HTTP_2, "ok\n")
        );
        let tcp = TcpStream::connect(hub.addr).await.expect("connect");
        let (status, version, body) = get_h1(tcp, &authority, "/healthz").await;
        assert_eq!(
            (status, version, body.as_str()),
            (200, http::Version::HTTP_11, "ok\n")
        );
        // Every transport is listed in the metrics, at 0 without WebSockets.
        let tcp = TcpStream::connect(hub.addr).await.expect("connect");
        let (_, _, metrics) = get_h2(tcp, &authority, "/metrics").await;
        for transport in ["http1", "h2", "sse"] {
            let line = format!("fdx_hub_transport_connections{{transport=\"{transport}\"}} 0");
            assert!(metrics.contains(&line), "{line} missing in\n{metrics}");
        }
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_negotiates_h2_or_http1_by_alpn() {
    tokio::time::timeout(LIMIT, async {
        let (cert, server) = tls_server();
        let mut config = config();
        config.tls = Some(server);
        let hub = TestHub::start(config);
        let authority = format!("localhost:{}", hub.addr.port());

        let (tls, chosen) = tls_connect(&hub, &cert, &[b"h2", b"http/1.1"]).await;
        assert_eq!(chosen.as_deref(), Some(&b"h2"[..]));
        let (status, version, body) = get_h2(tls, &authority, "/healthz").await;
        assert_eq!(
            (status, version, body.as_str()),
            (200, http::Version::HTTP_2, "ok\n")
        );

        let (tls, chosen) = tls_connect(&hub, &cert, &[b"http/1.1"]).await;
        assert_eq!(chosen.as_deref(), Some(&b"http/1.1"[..]));
        let (status, version, body) = get_h1(tls, &authority, "/healthz").await;
        assert_eq!(
            (status, version, body.as_str()),
            (200, http::Version::HTTP_11, "ok\n")
        );

        // A client that does not speak TLS gets nothing, and the hub stays up.
        let tcp = TcpStream::connect(hub.addr).await.expect("connect");
        let answered = async {
            let (mut sender, connection) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tcp))
                .await
                .ok()?;
            tokio::spawn(connection);
            let request = http::Request::get("/healthz")
                .header(http::header::HOST, &authority)
                .body(Empty::new())
                .ok()?;
            sender.send_request(request).await.ok()
        }
        .await;
        assert!(
            answered.is_none(),
            "cleartext HTTP on the TLS port must fail"
        );
        let (tls, _) = tls_connect(&hub, &cert, &[b"h2"]).await;
        let (status, ..) = get_h2(tls, &authority, "/healthz").await;
        assert_eq!(status, 200);
    })
    .await
    .expect("bounded");
}

/// The next JSON message on `ws`, within 10 s.
async fn json<S>(ws: &mut fullduplex::WebSocket<S>) -> serde_json::Value
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let message = tokio::time::timeout(Duration::from_secs(10), ws.recv())
        .await
        .expect("a message within 10 s")
        .expect("not closed")
        .expect("no error");
    match message.as_text() {
        Some(text) => serde_json::from_str(text).expect("JSON"),
        None => panic!("expected a text message, got {message:?}"),
    }
}

async fn send<S>(ws: &mut fullduplex::WebSocket<S>, json: serde_json::Value)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.send(fullduplex::Message::text(json.to_string()))
        .await
        .expect("send");
}

/// The value of `fdx_hub_transport_connections{transport="NAME"}`.
///
/// With `max_http_connections = 1` the previous request's connection may still hold the one
/// place for a moment after the client dropped it: a refused connection is tried again.
async fn transport_gauge(hub: &TestHub, name: &str) -> i64 {
    let mut metrics = None;
    for _ in 0..100 {
        let tcp = TcpStream::connect(hub.addr).await.expect("connect");
        let answered = async {
            let (mut sender, connection) = http1::handshake(TokioIo::new(tcp)).await.ok()?;
            tokio::spawn(connection);
            let request = http::Request::get("/metrics")
                .header(http::header::HOST, hub.addr.to_string())
                .body(Empty::<Bytes>::new())
                .ok()?;
            Some(read(sender.send_request(request).await.ok()?).await)
        }
        .await;
        if let Some((_, _, text)) = answered {
            metrics = Some(text);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let metrics = metrics.expect("an HTTP connection was admitted within 2 s");
    let prefix = format!("fdx_hub_transport_connections{{transport=\"{name}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("{prefix} missing in\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_on_one_h2c_connection_subscribe_publish_and_report_h2() {
    tokio::time::timeout(LIMIT, async {
        let mut config = config();
        // One plain HTTP connection at a time: the h2 connection gives its place back once it
        // carries a WebSocket, so other clients still get in.
        config.max_http_connections = 1;
        let hub = TestHub::start(config);
        let origin = format!("ws://{}", hub.addr);
        let h2 = fullduplex::http2::Http2Connection::connect(origin.as_str(), Default::default())
            .await
            .expect("h2c connection");
        assert!(h2.is_websocket_enabled(), "the hub announces RFC 8441");
        let url = format!("{origin}/ws");
        let (mut subscriber, response) = h2.open(url.as_str()).await.expect("first WebSocket");
        assert_eq!(response.status(), 200);
        let (mut publisher, _) = h2.open(url.as_str()).await.expect("second WebSocket");

        send(&mut subscriber, serde_json::json!({"type":"info","id":1})).await;
        let info = json(&mut subscriber).await;
        assert_eq!(info["type"], "info");
        assert_eq!(info["transport"], "h2");
        assert_eq!(info["id"], 1);
        assert_eq!(transport_gauge(&hub, "h2").await, 2);
        assert_eq!(transport_gauge(&hub, "http1").await, 0);

        send(
            &mut subscriber,
            serde_json::json!({"type":"subscribe","topic":"t"}),
        )
        .await;
        assert_eq!(json(&mut subscriber).await["type"], "subscribed");
        for n in 1..=3 {
            send(
                &mut publisher,
                serde_json::json!({"type":"publish","topic":"t","data":n,"id":n}),
            )
            .await;
            let ack = json(&mut publisher).await;
            assert_eq!(
                (ack["type"].as_str(), ack["offset"].as_u64()),
                (Some("published"), Some(n))
            );
            let message = json(&mut subscriber).await;
            assert_eq!(message["type"], "message");
            assert_eq!(message["data"], n);
            assert_eq!(message["offset"], n);
        }

        // An HTTP/1.1 WebSocket beside them reports its own transport.
        let (mut plain, _) = fullduplex::connect(hub.ws_url())
            .await
            .expect("HTTP/1.1 WebSocket");
        send(&mut plain, serde_json::json!({"type":"info"})).await;
        assert_eq!(json(&mut plain).await["transport"], "http1");
        assert_eq!(transport_gauge(&hub, "http1").await, 1);

        // Closing one stream leaves the other working; the gauge follows.
        publisher.close(None).await.expect("close");
        while let Some(Ok(_)) = publisher.recv().await {}
        let mut left = 0;
        for _ in 0..100 {
            left = transport_gauge(&hub, "h2").await;
            if left == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(left, 1);
        send(&mut subscriber, serde_json::json!({"type":"info"})).await;
        assert_eq!(json(&mut subscriber).await["type"], "info");
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_uses_h2_when_offered_and_http1_when_told() {
    tokio::time::timeout(LIMIT, async {
        let (cert, server) = tls_server();
        let mut config = config();
        config.tls = Some(server);
        let hub = TestHub::start(config);
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).expect("root");
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let url = format!("wss://localhost:{}/ws", hub.addr.port());
        for (policy, transport) in [
            (fullduplex::Http2Policy::Auto, "h2"),
            (fullduplex::Http2Policy::Never, "http1"),
        ] {
            let config = fullduplex::Config::default()
                .tls(Arc::new(tls.clone()))
                .http2(policy);
            let (mut ws, _) = fullduplex::connect_with(url.as_str(), config)
                .await
                .expect("wss connect");
            send(&mut ws, serde_json::json!({"type":"info"})).await;
            assert_eq!(json(&mut ws).await["transport"], transport, "{policy:?}");
            ws.close(None).await.expect("close");
        }
    })
    .await
    .expect("bounded");
}

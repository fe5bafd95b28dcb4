//! Connecting through proxies: a small HTTP `CONNECT` proxy and a small SOCKS5 proxy, written
//! here with tokio on loopback, in front of our own echo server; and curl's rules for the
//! proxy environment variables.
//!
//! Every test runs under [`LIMIT`]; the proxies and servers are tasks of the test's runtime
//! and end with it.

use std::collections::HashMap;
use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use fullduplex::tunnel::{Socks5Reply, Tunnel, TunnelEnv, TunnelError, TunnelKind, TunnelSetting};
use fullduplex::{Config, Error, Message};
use tokio::io::{copy_bidirectional, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The most any test may take.
const LIMIT: Duration = Duration::from_secs(10);

async fn bounded<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(LIMIT, test)
        .await
        .expect("test ran out of time")
}

/// Our echo server (`fullduplex::accept`) on `bind`; `None` if the address is unavailable
/// (no IPv6 loopback, for one).
async fn echo_server(bind: &str) -> Option<SocketAddr> {
    let listener = TcpListener::bind(bind).await.ok()?;
    let addr = listener.local_addr().ok()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = fullduplex::accept(tcp).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.recv().await {
                    if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    Some(addr)
}

/// Connects to `url` with `config` and checks that messages come back.
async fn round_trip(url: &str, config: Config) {
    let (mut ws, response) = fullduplex::connect_with(url, config)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    assert_eq!(response.status(), 101);
    for message in [
        Message::text("through the tunnel"),
        Message::binary(vec![7u8; 100_000]),
    ] {
        ws.send(message.clone()).await.unwrap();
        assert_eq!(ws.recv().await.unwrap().unwrap(), message);
    }
    ws.close(None).await.unwrap();
}

/// The error of a connect that must fail.
async fn connect_error(url: &str, config: Config) -> Error {
    match fullduplex::connect_with(url, config).await {
        Ok(_) => panic!("connect to {url} succeeded"),
        Err(error) => error,
    }
}

fn config_with(proxy: &str) -> Config {
    Config::default().tunnel(Tunnel::parse(proxy).unwrap())
}

// ---------------------------------------------------------------------------------------------
// HTTP CONNECT

#[derive(Clone, Copy)]
enum HttpMode {
    /// Open the tunnel.
    Tunnel,
    /// Answer 407 unless `Proxy-Authorization` is exactly this, then open the tunnel.
    RequireAuth(&'static str),
    /// Never answer.
    Silent,
    /// Answer 200 with a head of 20 000 bytes.
    HugeHead,
    /// Answer 200 followed by bytes nobody asked for.
    ExtraBytes,
}

/// What the HTTP proxy received.
#[derive(Debug)]
struct ConnectSeen {
    line: String,
    host: Option<String>,
    authorization: Option<String>,
}

/// Reads an HTTP head (up to 16 KiB); returns it and whatever followed it.
async fn read_head(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let leftover = buf.split_off(end + 4);
            return Some((String::from_utf8(buf).ok()?, leftover));
        }
        if buf.len() > 16 << 10 {
            return None;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A small HTTP `CONNECT` proxy on 127.0.0.1. Reports each request it receives.
async fn http_proxy(mode: HttpMode) -> (SocketAddr, mpsc::UnboundedReceiver<ConnectSeen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, seen_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(http_session(client, mode, seen_tx.clone()));
        }
    });
    (addr, seen_rx)
}

async fn http_session(
    mut client: TcpStream,
    mode: HttpMode,
    seen: mpsc::UnboundedSender<ConnectSeen>,
) {
    let Some((head, leftover)) = read_head(&mut client).await else {
        return;
    };
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or_default().to_owned();
    let mut host = None;
    let mut authorization = None;
    for header in lines {
        if let Some((name, value)) = header.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "host" => host = Some(value.trim().to_owned()),
                "proxy-authorization" => authorization = Some(value.trim().to_owned()),
                _ => {}
            }
        }
    }
    let target = line.split(' ').nth(1).unwrap_or_default().to_owned();
    let authorized = match mode {
        HttpMode::RequireAuth(expected) => authorization.as_deref() == Some(expected),
        _ => true,
    };
    let _ = seen.send(ConnectSeen {
        line,
        host,
        authorization,
    });
    match mode {
        HttpMode::Tunnel | HttpMode::RequireAuth(_) if authorized => {
            let Ok(mut upstream) = TcpStream::connect(target.as_str()).await else {
                let _ = client
                    .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                    .await;
                return;
            };
            if upstream.write_all(&leftover).await.is_err() {
                return;
            }
            if client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await
                .is_ok()
            {
                let _ = copy_bidirectional(&mut client, &mut upstream).await;
            }
        }
        HttpMode::Tunnel | HttpMode::RequireAuth(_) => {
            let _ = client
                .write_all(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n\
                      Proxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n",
                )
                .await;
        }
        HttpMode::Silent => tokio::time::sleep(LIMIT).await,
        HttpMode::HugeHead => {
            let mut head = b"HTTP/1.1 200 Connection established\r\nX-Padding: ".to_vec();
            head.resize(20_000, b'a');
            head.extend_from_slice(b"\r\n\r\n");
            let _ = client.write_all(&head).await;
            let _ = client.read(&mut [0u8; 1]).await;
        }
        HttpMode::ExtraBytes => {
            let _ = client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\nsurprise")
                .await;
            let _ = client.read(&mut [0u8; 1]).await;
        }
    }
}

#[tokio::test]
async fn http_connect_round_trip() {
    bounded(async {
        let target = echo_server("127.0.0.1:0").await.unwrap();
        let (proxy, mut seen) = http_proxy(HttpMode::Tunnel).await;
        round_trip(
            &format!("ws://{target}/chat"),
            config_with(&format!("http://{proxy}")),
        )
        .await;
        let request = seen.recv().await.unwrap();
        assert_eq!(request.line, format!("CONNECT {target} HTTP/1.1"));
        assert_eq!(request.host.as_deref(), Some(target.to_string().as_str()));
        assert_eq!(request.authorization, None);
    })
    .await;
}

#[tokio::test]
async fn http_connect_sends_basic_credentials() {
    bounded(async {
        let target = echo_server("127.0.0.1:0").await.unwrap();
        // base64("user:p@ss:word")
        let expected = "Basic dXNlcjpwQHNzOndvcmQ=";
        let (proxy, mut seen) = http_proxy(HttpMode::RequireAuth(expected)).await;
        let url = format!("ws://{target}/");

        // Percent-encoded in the URL: "us%65r" is "user", "p%40ss:word" is "p@ss:word".
        round_trip(
            &url,
            config_with(&format!("http://us%65r:p%40ss:word@{proxy}")),
        )
        .await;
        let request = seen.recv().await.unwrap();
        assert_eq!(request.authorization.as_deref(), Some(expected));
    })
    .await;
}

#[tokio::test]
async fn http_connect_407_is_a_typed_error() {
    bounded(async {
        let target = echo_server("127.0.0.1:0").await.unwrap();
        let (proxy, mut seen) =
            http_proxy(HttpMode::RequireAuth("Basic dXNlcjpwQHNzOndvcmQ=")).await;
        let url = format!("ws://{target}/");

        let error = connect_error(&url, config_with(&format!("http://{proxy}"))).await;
        match &error {
            Error::Tunnel(TunnelError::Status(status)) => assert_eq!(status.as_u16(), 407),
            other => panic!("expected a 407 proxy error, got {other:?}"),
        }
        assert!(error.to_string().contains("407"), "{error}");
        assert_eq!(seen.recv().await.unwrap().authorization, None);

        // Wrong password: still 407.
        let error = connect_error(&url, config_with(&format!("http://user:nope@{proxy}"))).await;
        assert!(
            matches!(error, Error::Tunnel(TunnelError::Status(s)) if s.as_u16() == 407),
            "{error:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn http_connect_to_an_ipv6_target() {
    bounded(async {
        let Some(target) = echo_server("[::1]:0").await else {
            eprintln!("skipped: no IPv6 loopback");
            return;
        };
        let (proxy, mut seen) = http_proxy(HttpMode::Tunnel).await;
        let port = target.port();
        round_trip(
            &format!("ws://[::1]:{port}/"),
            config_with(&format!("http://{proxy}")),
        )
        .await;
        let request = seen.recv().await.unwrap();
        assert_eq!(request.line, format!("CONNECT [::1]:{port} HTTP/1.1"));
        assert_eq!(request.host, Some(format!("[::1]:{port}")));
    })
    .await;
}

#[tokio::test]
async fn http_connect_passes_host_names_to_the_proxy() {
    bounded(async {
        let target = echo_server("127.0.0.1:0").await.unwrap();
        let (proxy, mut seen) = http_proxy(HttpMode::Tunnel).await;
        let port = target.port();
        round_trip(
            &format!("ws://localhost:{port}/"),
            config_with(&format!("http://{proxy}")),
        )
        .await;
        let request = seen.recv().await.unwrap();
        assert_eq!(request.line, format!("CONNECT localhost:{port} HTTP/1.1"));
    })
    .await;
}

#[tokio::test]
async fn a_silent_proxy_runs_into_the_handshake_timeout() {
    bounded(async {
        let (proxy, _seen) = http_proxy(HttpMode::Silent).await;
        let config =
            config_with(&format!("http://{proxy}")).handshake_timeout(Duration::from_millis(300));
        let error = connect_error("ws://127.0.0.1:9/", config).await;
        assert!(
            matches!(error, Error::Timeout(fullduplex::TimeoutKind::Handshake)),
            "{error:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn an_oversized_connect_response_is_refused() {
    bounded(async {
        let (proxy, _seen) = http_proxy(HttpMode::HugeHead).await;
        let error =
            connect_error("ws://127.0.0.1:9/", config_with(&format!("http://{proxy}"))).await;
        assert!(
            matches!(
                error,
                Error::Tunnel(TunnelError::ResponseTooLarge(
                    fullduplex::tunnel::MAX_CONNECT_RESPONSE
                ))
            ),
            "{error:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn bytes_after_the_connect_response_are_not_dropped_silently() {
    bounded(async {
        let (proxy, _seen) = http_proxy(HttpMode::ExtraBytes).await;
        let error =
            connect_error("ws://127.0.0.1:9/", config_with(&format!("http://{proxy}"))).await;
        assert!(
            matches!(error, Error::Tunnel(TunnelError::UnexpectedData(8))),
            "{error:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_proxy_is_a_connect_error() {
    bounded(async {
        // A port that was just free: nothing listens there.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let error = connect_error(
            "ws://127.0.0.1:9/",
            config_with(&format!("http://127.0.0.1:{port}")),
        )
        .await;
        match &error {
            Error::Tunnel(TunnelError::Connect { proxy, .. }) => {
                assert_eq!(proxy, &format!("127.0.0.1:{port}"))
            }
            other => panic!("expected a proxy connect error, got {other:?}"),
        }
    })
    .await;
}

#[cfg(feature = "rustls")]
#[tokio::test]
async fn wss_through_http_connect() {
    use std::sync::Arc;

    use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    bounded(async {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = certified.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        ));
        let server_config =
            rustls::ServerConfig::builder_with_provider(fullduplex::tls::provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![cert.clone()], key)
                .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let Ok(mut ws) = fullduplex::accept(tls).await else {
                return;
            };
            while let Some(Ok(message)) = ws.recv().await {
                if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                    break;
                }
            }
        });

        let (proxy, mut seen) = http_proxy(HttpMode::Tunnel).await;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let config = config_with(&format!("http://{proxy}"))
            .tls(fullduplex::tls::client_config_with_roots(roots).unwrap());
        // TLS runs end to end: the certificate is checked against "localhost", not the proxy.
        round_trip(&format!("wss://localhost:{port}/secure"), config).await;
        assert_eq!(
            seen.recv().await.unwrap().line,
            format!("CONNECT localhost:{port} HTTP/1.1")
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// SOCKS5

#[derive(Clone, Copy)]
enum SocksMode {
    /// Method 0x00 only.
    NoAuth,
    /// Method 0x02 only, with these credentials.
    UserPassword(&'static str, &'static str),
    /// Answer the CONNECT request with this failure code.
    Fail(u8),
}

/// What the SOCKS5 proxy received.
#[derive(Debug, PartialEq, Eq)]
enum SocksSeen {
    /// The methods offered in the greeting.
    Methods(Vec<u8>),
    /// RFC 1929 username and password fields.
    Auth { user: Vec<u8>, password: Vec<u8> },
    /// The CONNECT request: address type, address (as text), port.
    Connect { atyp: u8, host: String, port: u16 },
}

/// A small SOCKS5 proxy on 127.0.0.1. Reports what it receives.
async fn socks_proxy(mode: SocksMode) -> (SocketAddr, mpsc::UnboundedReceiver<SocksSeen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, seen_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let seen = seen_tx.clone();
            tokio::spawn(async move {
                let _ = socks_session(client, mode, seen).await;
            });
        }
    });
    (addr, seen_rx)
}

async fn socks_session(
    mut client: TcpStream,
    mode: SocksMode,
    seen: mpsc::UnboundedSender<SocksSeen>,
) -> std::io::Result<()> {
    let mut greeting = [0u8; 2];
    client.read_exact(&mut greeting).await?;
    assert_eq!(greeting[0], 5, "SOCKS version");
    let mut methods = vec![0u8; usize::from(greeting[1])];
    client.read_exact(&mut methods).await?;
    let _ = seen.send(SocksSeen::Methods(methods.clone()));
    let wanted = match mode {
        SocksMode::UserPassword(..) => 0x02,
        _ => 0x00,
    };
    if !methods.contains(&wanted) {
        client.write_all(&[5, 0xff]).await?;
        return Ok(());
    }
    client.write_all(&[5, wanted]).await?;

    if let SocksMode::UserPassword(expected_user, expected_password) = mode {
        let mut head = [0u8; 2];
        client.read_exact(&mut head).await?;
        assert_eq!(head[0], 1, "RFC 1929 version");
        let mut user = vec![0u8; usize::from(head[1])];
        client.read_exact(&mut user).await?;
        let mut len = [0u8; 1];
        client.read_exact(&mut len).await?;
        let mut password = vec![0u8; usize::from(len[0])];
        client.read_exact(&mut password).await?;
        let ok = user == expected_user.as_bytes() && password == expected_password.as_bytes();
        let _ = seen.send(SocksSeen::Auth { user, password });
        client.write_all(&[1, if ok { 0 } else { 1 }]).await?;
        if !ok {
            return Ok(());
        }
    }

    let mut request = [0u8; 4];
    client.read_exact(&mut request).await?;
    assert_eq!(&request[..3], &[5, 1, 0], "VER CMD=CONNECT RSV");
    let atyp = request[3];
    let host = match atyp {
        1 => {
            let mut ip = [0u8; 4];
            client.read_exact(&mut ip).await?;
            Ipv4Addr::from(ip).to_string()
        }
        4 => {
            let mut ip = [0u8; 16];
            client.read_exact(&mut ip).await?;
            Ipv6Addr::from(ip).to_string()
        }
        3 => {
            let mut len = [0u8; 1];
            client.read_exact(&mut len).await?;
            let mut name = vec![0u8; usize::from(len[0])];
            client.read_exact(&mut name).await?;
            String::from_utf8_lossy(&name).into_owned()
        }
        _ => return Ok(()),
    };
    let mut port = [0u8; 2];
    client.read_exact(&mut port).await?;
    let port = u16::from_be_bytes(port);
    let _ = seen.send(SocksSeen::Connect {
        atyp,
        host: host.clone(),
        port,
    });
    if let SocksMode::Fail(code) = mode {
        client.write_all(&[5, code, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
        return Ok(());
    }
    let Ok(mut upstream) = TcpStream::connect((host.as_str(), port)).await else {
        client.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
        return Ok(());
    };
    // Report the bound address as a domain name, to exercise the variable-length reply.
    let bound = b"bound.proxy.test";
    let mut reply = vec![5, 0, 0, 3, bound.len() as u8];
    reply.extend_from_slice(bound);
    reply.extend_from_slice(&1080u16.to_be_bytes());
    client.write_all(&reply).await?;
    copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

#[tokio::test]
async fn socks5_round_trip_lets_the_proxy_resolve_names() {
    bounded(async {
        let target = echo_server("127.0.0.1:0").await.unwrap();
        let (proxy, mut seen) = socks_proxy(SocksMode::NoAuth).await;
        let port = target.port();
        round_trip(
            &format!("ws://localhost:{port}/"),
            config_with(&format!("socks5://{proxy}")),
        )
        .await;
        assert_eq!(seen.recv().await.unwrap(), SocksSeen::Methods(vec![0x00]));
        assert_eq!(
            seen.recv().await.unwrap(),
            SocksSeen::Connect {
                atyp: 3,
                host: "localhost".into(),
                port
            }
        );
    })
    .await;
}

#[tokio::test]
async fn socks5_username_and_password() {
    bounded(async {
        let target = echo_server("127.0.0.1:0").await.unwrap();
        let (proxy, mut seen) = socks_proxy(SocksMode::UserPassword("alice", "s3cr%t")).await;
        round_trip(
            &format!("ws://{target}/"),
            config_with(&format!("socks5h://alice:s3cr%25t@{proxy}")),
        )
        .await;
        assert_eq!(
            seen.recv().await.unwrap(),
            SocksSeen::Methods(vec![0x00, 0x02])
        );
        assert_eq!(
            seen.recv().await.unwrap(),
            SocksSeen::Auth {
                user: b"alice".to_vec(),
                password: b"s3cr%t".to_vec()
            }
        );
        assert_eq!(
            seen.recv().await.unwrap(),
            SocksSeen::Connect {
                atyp: 1,
                host: "127.0.0.1".into(),
                port: target.port()
            }
        );
    })
    .await;
}

#[tokio::test]
async fn socks5_wrong_password_is_a_typed_error() {
    bounded(async {
        let (proxy, _seen) = socks_proxy(SocksMode::UserPassword("alice", "right")).await;
        let error = connect_error(
            "ws://127.0.0.1:9/",
            config_with(&format!("socks5://alice:wrong@{proxy}")),
        )
        .await;
        assert!(
            matches!(error, Error::Tunnel(TunnelError::Socks5AuthFailed)),
            "{error:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn socks5_without_the_credentials_it_wants() {
    bounded(async {
        let (proxy, _seen) = socks_proxy(SocksMode::UserPassword("alice", "right")).await;
        let error = connect_error(
            "ws://127.0.0.1:9/",
            config_with(&format!("socks5://{proxy}")),
        )
        .await;
        assert!(
            matches!(error, Error::Tunnel(TunnelError::Socks5NoAcceptableAuth)),
            "{error:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn socks5_failure_replies_are_typed_errors() {
    bounded(async {
        let (proxy, _seen) = socks_proxy(SocksMode::Fail(0x05)).await;
        let error = connect_error(
            "ws://127.0.0.1:9/",
            config_with(&format!("socks5://{proxy}")),
        )
        .await;
        match &error {
            Error::Tunnel(TunnelError::Socks5(reply)) => {
                assert_eq!(*reply, Socks5Reply::ConnectionRefused);
                assert_eq!(reply.code(), 0x05);
            }
            other => panic!("expected a SOCKS5 reply error, got {other:?}"),
        }
        assert!(error.to_string().contains("connection refused"), "{error}");

        let (proxy, _seen) = socks_proxy(SocksMode::Fail(0x02)).await;
        let error = connect_error(
            "ws://127.0.0.1:9/",
            config_with(&format!("socks5://{proxy}")),
        )
        .await;
        assert!(
            matches!(
                error,
                Error::Tunnel(TunnelError::Socks5(Socks5Reply::NotAllowed))
            ),
            "{error:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn socks5_to_an_ipv6_target() {
    bounded(async {
        let Some(target) = echo_server("[::1]:0").await else {
            eprintln!("skipped: no IPv6 loopback");
            return;
        };
        let (proxy, mut seen) = socks_proxy(SocksMode::NoAuth).await;
        let port = target.port();
        round_trip(
            &format!("ws://[::1]:{port}/"),
            config_with(&format!("socks5://{proxy}")),
        )
        .await;
        seen.recv().await.unwrap(); // methods
        assert_eq!(
            seen.recv().await.unwrap(),
            SocksSeen::Connect {
                atyp: 4,
                host: "::1".into(),
                port
            }
        );
    })
    .await;
}

#[tokio::test]
async fn direct_is_the_default() {
    bounded(async {
        assert_eq!(Config::default().tunnel, TunnelSetting::Direct);
        let target = echo_server("127.0.0.1:0").await.unwrap();
        round_trip(&format!("ws://{target}/"), Config::default()).await;
        // Back to direct after choosing a proxy.
        let config = config_with("http://127.0.0.1:9").tunnel_setting(TunnelSetting::Direct);
        round_trip(&format!("ws://{target}/"), config).await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Proxy URLs

#[test]
fn proxy_urls_parse() {
    let proxy = Tunnel::parse("http://proxy.example:3128").unwrap();
    assert_eq!(proxy.kind(), TunnelKind::Http);
    assert_eq!((proxy.host(), proxy.port()), ("proxy.example", 3128));
    assert_eq!(proxy.credentials(), None);

    // No scheme: HTTP. No port: 1080, like curl. A trailing slash is fine.
    let proxy = Tunnel::parse("proxy.example").unwrap();
    assert_eq!(
        (proxy.kind(), proxy.port()),
        (TunnelKind::Http, fullduplex::tunnel::DEFAULT_PORT)
    );
    assert_eq!(Tunnel::parse("HTTP://p:8080/").unwrap().port(), 8080);

    for url in ["socks5://10.0.0.1:1080", "socks5h://10.0.0.1:1080"] {
        let proxy = Tunnel::parse(url).unwrap();
        assert_eq!(proxy.kind(), TunnelKind::Socks5, "{url}");
        assert_eq!(proxy.host(), "10.0.0.1");
    }

    let proxy = Tunnel::parse("http://[2001:db8::1]:3128").unwrap();
    assert_eq!((proxy.host(), proxy.port()), ("2001:db8::1", 3128));
    assert_eq!(proxy.to_string(), "http://[2001:db8::1]:3128");

    // Credentials: percent-decoded; the last '@' ends them; the first ':' splits them.
    let proxy = Tunnel::parse("http://a%20b:p@ss:w%3Ard@h:1").unwrap();
    assert_eq!(proxy.credentials(), Some(("a b", "p@ss:w:rd")));
    let proxy = Tunnel::parse("socks5://only-user@h:1").unwrap();
    assert_eq!(proxy.credentials(), Some(("only-user", "")));

    assert_eq!(
        "socks5://h:2".parse::<Tunnel>().unwrap(),
        Tunnel::socks5("h", 2)
    );
    assert_eq!(Tunnel::http("[::1]", 8080).host(), "::1");
}

#[test]
fn bad_proxy_urls_are_refused() {
    for url in [
        "",
        "http://",
        "http://:8080",
        "http://h:0",
        "http://h:65536",
        "http://h:+80",
        "http://h:port",
        "http://[::1",
        "http://[nope]:1",
        "http://[::1]x",
        "http://h:1/path",
        "http://u:%zz@h:1",
        "http://h h:1",
    ] {
        match Tunnel::parse(url) {
            Err(TunnelError::InvalidUrl(_)) => {}
            other => panic!("{url:?}: {other:?}"),
        }
    }
    for url in ["https://h:1", "socks4://h:1", "ftp://h"] {
        match Tunnel::parse(url) {
            Err(TunnelError::UnsupportedScheme(_)) => {}
            other => panic!("{url:?}: {other:?}"),
        }
    }
    // The password never appears in the error.
    let error = Tunnel::parse("http://user:hunter2@h:99999").unwrap_err();
    assert!(!error.to_string().contains("hunter2"), "{error}");
}

#[test]
fn passwords_are_not_printed() {
    let proxy = Tunnel::parse("http://user:hunter2@proxy:3128").unwrap();
    assert_eq!(proxy.to_string(), "http://user:***@proxy:3128");
    let debug = format!("{proxy:?} {:?}", Config::default().tunnel(proxy.clone()));
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("user"), "{debug}");
}

// ---------------------------------------------------------------------------------------------
// The environment, curl's way

fn env(vars: &[(&str, &str)]) -> TunnelEnv {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    TunnelEnv::from_lookup(|name| vars.get(name).cloned())
}

/// The proxy `env` picks for a target, as a host name (`None`: direct).
fn pick(env: &TunnelEnv, host: &str, tls: bool) -> Option<String> {
    env.proxy_for(host, tls)
        .unwrap()
        .map(|proxy| proxy.host().to_owned())
}

#[test]
fn env_variables_by_target_scheme() {
    let all = env(&[
        ("https_proxy", "http://https-lower:1"),
        ("HTTPS_PROXY", "http://https-upper:1"),
        ("http_proxy", "http://http-lower:1"),
        ("HTTP_PROXY", "http://http-upper:1"),
        ("all_proxy", "socks5://all-lower:1"),
        ("ALL_PROXY", "socks5://all-upper:1"),
    ]);
    // wss:// uses https_proxy (lower case first), ws:// uses http_proxy.
    assert_eq!(
        pick(&all, "example.com", true).as_deref(),
        Some("https-lower")
    );
    assert_eq!(
        pick(&all, "example.com", false).as_deref(),
        Some("http-lower")
    );

    // Upper case HTTPS_PROXY and ALL_PROXY count...
    let upper = env(&[
        ("HTTPS_PROXY", "http://https-upper:1"),
        ("HTTP_PROXY", "http://http-upper:1"),
        ("ALL_PROXY", "socks5://all-upper:1"),
    ]);
    assert_eq!(
        pick(&upper, "example.com", true).as_deref(),
        Some("https-upper")
    );
    // ...but upper case HTTP_PROXY never does: ws:// falls through to ALL_PROXY.
    assert_eq!(
        pick(&upper, "example.com", false).as_deref(),
        Some("all-upper")
    );
    let only_upper_http = env(&[("HTTP_PROXY", "http://http-upper:1")]);
    assert_eq!(pick(&only_upper_http, "example.com", false), None);
    assert_eq!(only_upper_http, TunnelEnv::default());

    // The scheme's own variable does not serve the other scheme.
    let http_only = env(&[("http_proxy", "http://http-lower:1")]);
    assert_eq!(pick(&http_only, "example.com", true), None);
    let https_only = env(&[("https_proxy", "http://https-lower:1")]);
    assert_eq!(pick(&https_only, "example.com", false), None);

    // all_proxy: lower case first; the kind comes from its URL.
    let all_only = env(&[
        ("all_proxy", "socks5h://all-lower:1"),
        ("ALL_PROXY", "http://all-upper:1"),
    ]);
    let proxy = all_only.proxy_for("example.com", true).unwrap().unwrap();
    assert_eq!(
        (proxy.host(), proxy.kind()),
        ("all-lower", TunnelKind::Socks5)
    );

    // Empty values count as unset.
    let empty = env(&[
        ("https_proxy", ""),
        ("HTTPS_PROXY", "http://upper:1"),
        ("all_proxy", " "),
    ]);
    assert_eq!(pick(&empty, "example.com", true).as_deref(), Some("upper"));
    assert_eq!(pick(&empty, "example.com", false), None);

    // Nothing set: direct.
    assert_eq!(pick(&env(&[]), "example.com", true), None);
}

#[test]
fn env_with_a_bad_proxy_value_is_an_error() {
    let bad = env(&[("https_proxy", "ftp://nope"), ("no_proxy", "internal")]);
    assert!(matches!(
        bad.proxy_for("example.com", true),
        Err(TunnelError::UnsupportedScheme(_))
    ));
    // A host that no_proxy exempts never looks at the value.
    assert_eq!(bad.proxy_for("internal", true).unwrap(), None);
}

#[test]
fn env_no_proxy_matching() {
    let with = |no_proxy: &str| {
        env(&[
            ("https_proxy", "http://proxy:1"),
            ("http_proxy", "http://proxy:1"),
            ("no_proxy", no_proxy),
        ])
    };
    let direct = |no_proxy: &str, host: &str| pick(&with(no_proxy), host, true).is_none();

    // Suffixes on label boundaries, with or without a leading dot; case-insensitive.
    assert!(direct("example.com", "example.com"));
    assert!(direct("example.com", "ws.example.com"));
    assert!(direct(".example.com", "ws.example.com"));
    assert!(direct(".example.com", "example.com"));
    assert!(direct("*.example.com", "a.b.example.com"));
    assert!(direct("Example.COM", "WS.example.com"));
    assert!(direct("example.com.", "example.com."));
    assert!(!direct("example.com", "badexample.com"));
    assert!(!direct("ws.example.com", "example.com"));
    assert!(!direct("example.com", "example.org"));

    // Lists: commas and/or spaces, empty entries ignored.
    assert!(direct(
        "localhost, , internal.corp ,example.com",
        "example.com"
    ));
    assert!(direct("localhost internal.corp", "api.internal.corp"));
    assert!(!direct("localhost,internal.corp", "example.com"));

    // '*' alone: everything. Not as a pattern inside a longer entry.
    assert!(direct("*", "anything.at.all"));
    assert!(direct("localhost,*", "10.1.2.3"));
    assert!(!direct("exa*", "example.com"));

    // IP literals match exactly; IPv6 with or without brackets, on either side.
    assert!(direct("127.0.0.1", "127.0.0.1"));
    assert!(!direct("127.0.0.1", "127.0.0.10"));
    assert!(!direct("0.0.1", "127.0.0.1"));
    assert!(direct("::1", "[::1]"));
    assert!(direct("[::1]", "::1"));
    assert!(direct("[0:0::1]", "::1"));
    assert!(!direct("::1", "::2"));
    // A host name entry never matches an IP, nor an IP entry a name.
    assert!(!direct("localhost", "127.0.0.1"));
    assert!(!direct("127.0.0.1", "localhost"));

    // NO_PROXY upper case counts; lower case wins.
    let upper = env(&[
        ("https_proxy", "http://proxy:1"),
        ("NO_PROXY", "example.com"),
    ]);
    assert_eq!(pick(&upper, "example.com", true), None);
    let both = env(&[
        ("https_proxy", "http://proxy:1"),
        ("no_proxy", "other.org"),
        ("NO_PROXY", "example.com"),
    ]);
    assert_eq!(pick(&both, "example.com", true).as_deref(), Some("proxy"));
}

#[test]
fn tunnel_setting_resolves() {
    let proxy = Tunnel::http("proxy", 3128);
    assert_eq!(
        TunnelSetting::Direct.resolve("example.com", true).unwrap(),
        None
    );
    assert_eq!(
        TunnelSetting::from(proxy.clone())
            .resolve("example.com", false)
            .unwrap(),
        Some(proxy.clone())
    );
    assert_eq!(
        Config::default().tunnel(proxy.clone()).tunnel,
        TunnelSetting::Tunnel(proxy)
    );
    assert_eq!(
        Config::default().tunnel_from_env().tunnel,
        TunnelSetting::FromEnv
    );
}

//! `fdx connect` against `fdx echo` and against small servers written with the library.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{closed_port, run, run_with, serve_one, Background};
use fullduplex::{Accept, CloseCode, CloseFrame, Config, Message, Reject};

fn echo_server() -> Background {
    Background::start(&["echo", "127.0.0.1:0"])
}

#[test]
fn text_lines_round_trip() {
    let server = echo_server();
    let started = Instant::now();
    let out = run(&["connect", &server.url], b"hello\nworld\n");
    out.assert_ok();
    assert_eq!(out.stdout, "hello\nworld\n");
    assert_eq!(out.stderr, "");
    // The default wait is one idle second after the last message, not much more.
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn shorthand_and_wait_messages() {
    let server = echo_server();
    let started = Instant::now();
    let out = run(&[&server.url, "--wait-messages", "3"], b"a\nb\nc\n");
    out.assert_ok();
    assert_eq!(out.stdout, "a\nb\nc\n");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn binary_hex_and_base64() {
    let server = echo_server();
    let out = run(
        &["connect", &server.url, "--binary", "--wait-messages", "1"],
        &[0x00, 0x01, 0x7f, 0xff],
    );
    out.assert_ok();
    assert_eq!(out.stdout, "00017fff\n");
    let out = run(
        &[
            "connect",
            &server.url,
            "--binary",
            "--binary-format",
            "base64",
            "--wait-messages",
            "1",
        ],
        &[1, 2, 3],
    );
    out.assert_ok();
    assert_eq!(out.stdout, "AQID\n");
}

#[test]
fn json_events() {
    let server = echo_server();
    let out = run(
        &["connect", &server.url, "--json", "--wait-messages", "1"],
        b"hi\n",
    );
    out.assert_ok();
    let events: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect();
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["dir"].as_str().unwrap(), e["type"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("out", "text"),
            ("in", "text"),
            ("out", "close"),
            ("in", "close")
        ],
        "{}",
        out.stdout
    );
    assert_eq!(events[1]["text"], "hi");
    assert_eq!(events[1]["len"], 2);
    assert_eq!(events[3]["code"], 1000);
    let time = events[0]["time"].as_str().unwrap();
    assert!(
        time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "{time}"
    );
}

#[test]
fn verbose_shows_handshake_and_compression_by_default() {
    let server = echo_server();
    let out = run(
        &["connect", &server.url, "-v", "--wait-messages", "1"],
        b"x\n",
    );
    out.assert_ok();
    let err = &out.stderr;
    assert!(err.contains("> GET / HTTP/1.1\n"), "{err}");
    assert!(err.contains("> Sec-WebSocket-Version: 13\n"), "{err}");
    assert!(
        err.contains("> Sec-WebSocket-Extensions: permessage-deflate"),
        "{err}"
    );
    assert!(
        err.contains("< HTTP/1.1 101 Switching Protocols\n"),
        "{err}"
    );
    assert!(
        err.contains("< Sec-WebSocket-Extensions: permessage-deflate"),
        "{err}"
    );
    assert_eq!(out.stdout, "x\n");
}

#[test]
fn no_compress_offers_nothing() {
    let server = echo_server();
    let out = run(
        &[
            "connect",
            &server.url,
            "-v",
            "--no-compress",
            "--wait-messages",
            "1",
        ],
        b"x\n",
    );
    out.assert_ok();
    assert!(out.stderr.contains("< HTTP/1.1 101"), "{}", out.stderr);
    assert!(
        !out.stderr.contains("Sec-WebSocket-Extensions"),
        "{}",
        out.stderr
    );
    // The last of --compress / --no-compress wins.
    let out = run(
        &[
            "connect",
            &server.url,
            "-v",
            "--no-compress",
            "--compress",
            "--wait-messages",
            "1",
        ],
        b"x\n",
    );
    out.assert_ok();
    assert!(
        out.stderr.contains("< Sec-WebSocket-Extensions"),
        "{}",
        out.stderr
    );
}

#[test]
fn headers_origin_and_protocols_reach_the_server() {
    let seen = Arc::new(Mutex::new(None));
    let record = seen.clone();
    let port = serve_one(move |tcp| async move {
        let accepted = fullduplex::accept_with(tcp, Config::default(), move |request| {
            let headers: Vec<(String, String)> = request
                .request()
                .headers()
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
                .collect();
            *record.lock().unwrap() = Some((request.path().to_owned(), headers));
            Ok(Accept::new().protocol("chat"))
        })
        .await;
        if let Ok(mut ws) = accepted {
            while let Some(Ok(message)) = ws.recv().await {
                if message.is_text() {
                    let _ = ws.send(message).await;
                }
            }
        }
    });
    let url = format!("ws://127.0.0.1:{port}/room?x=1");
    let out = run(
        &[
            "connect",
            &url,
            "-H",
            "X-Token: abc",
            "-H",
            "Cookie: a=b",
            "--origin",
            "https://example.test",
            "--protocol",
            "chat",
            "--protocol",
            "other",
            "-v",
            "--wait-messages",
            "1",
        ],
        b"ping\n",
    );
    out.assert_ok();
    assert_eq!(out.stdout, "ping\n");
    assert!(
        out.stderr.contains("> GET /room?x=1 HTTP/1.1\n"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("< Sec-WebSocket-Protocol: chat\n"),
        "{}",
        out.stderr
    );
    let (path, headers) = seen
        .lock()
        .unwrap()
        .clone()
        .expect("the server saw a request");
    assert_eq!(path, "/room");
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("x-token"), Some("abc"));
    assert_eq!(get("cookie"), Some("a=b"));
    assert_eq!(get("origin"), Some("https://example.test"));
    assert_eq!(get("sec-websocket-protocol"), Some("chat, other"));
}

#[test]
fn refused_port_fails_with_one_line() {
    let url = format!("ws://127.0.0.1:{}/", closed_port());
    let out = run(&["connect", &url], b"");
    assert_eq!(out.code(), 1, "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
    assert!(out.stderr.starts_with("fdx: connection refused"), "{out:?}");
}

#[test]
fn http_rejection_shows_status_and_body() {
    let port = serve_one(|tcp| async move {
        let _ = fullduplex::accept_with(tcp, Config::default(), |_| {
            Err(Reject::new(http::StatusCode::FORBIDDEN).body("origin not allowed\nmore detail\n"))
        })
        .await;
    });
    let out = run(&["connect", &format!("ws://127.0.0.1:{port}/")], b"");
    assert_eq!(out.code(), 1, "{out:?}");
    assert_eq!(
        out.stderr,
        "fdx: server answered 403 Forbidden: origin not allowed\n"
    );
}

#[test]
fn server_close_code_exits_3() {
    let port = serve_one(|tcp| async move {
        if let Ok(mut ws) = fullduplex::accept(tcp).await {
            let frame = CloseFrame::new(CloseCode(4001), "go away");
            let _ = ws.close(Some(frame)).await;
        }
    });
    // stdin stays open: the server's close ends the session, not the end of input.
    let out = run_with(
        &["connect", &format!("ws://127.0.0.1:{port}/")],
        None,
        common::RUN_TIMEOUT,
    );
    assert_eq!(out.code(), 3, "{out:?}");
    assert_eq!(
        out.stderr,
        "fdx: server closed the connection with code 4001: go away\n"
    );
}

#[test]
fn server_normal_close_while_sending_exits_0() {
    let port = serve_one(|tcp| async move {
        if let Ok(mut ws) = fullduplex::accept(tcp).await {
            let _ = ws.send(Message::text("bye")).await;
            let _ = ws.close(None).await;
        }
    });
    let out = run_with(
        &["connect", &format!("ws://127.0.0.1:{port}/")],
        None,
        common::RUN_TIMEOUT,
    );
    out.assert_ok();
    assert_eq!(out.stdout, "bye\n");
}

#[test]
fn dead_connection_is_reported_not_a_hang() {
    let port = serve_one(|tcp| async move {
        // Complete the handshake, then never read: no pong ever comes back.
        if let Ok(_ws) = fullduplex::accept(tcp).await {
            tokio::time::sleep(Duration::from_secs(20)).await;
        }
    });
    let started = Instant::now();
    let out = run_with(
        &[
            "connect",
            &format!("ws://127.0.0.1:{port}/"),
            "--ping-interval",
            "0.3",
        ],
        None,
        Duration::from_secs(10),
    );
    assert_eq!(out.code(), 4, "{out:?}");
    assert!(out.stderr.contains("no pong within 0.3 s"), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn handshake_timeout() {
    // Accepts TCP but never answers the upgrade.
    let port = serve_one(|tcp| async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(tcp);
    });
    let out = run(
        &[
            "connect",
            &format!("ws://127.0.0.1:{port}/"),
            "--connect-timeout",
            "0.5",
        ],
        b"",
    );
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(out.stderr.contains("within 0.5 s"), "{out:?}");
}

#[test]
fn message_size_limits() {
    let server = Background::start(&["echo", "127.0.0.1:0", "--max-message-size", "10"]);
    let out = run(&["connect", &server.url], b"short\nthis line is too long\n");
    assert_eq!(out.code(), 3, "{out:?}");
    assert_eq!(out.stdout, "short\n");
    assert!(out.stderr.contains("code 1009"), "{out:?}");
}

#[test]
fn allowed_origin() {
    let server = Background::start(&[
        "echo",
        "127.0.0.1:0",
        "--allowed-origin",
        "https://good.test",
    ]);
    let bad = run(
        &["connect", &server.url, "--origin", "https://evil.test"],
        b"",
    );
    assert_eq!(bad.code(), 1, "{bad:?}");
    assert!(bad.stderr.contains("403"), "{bad:?}");
    for args in [&["--origin", "https://good.test"][..], &[]] {
        let mut all = vec!["connect", server.url.as_str(), "--wait-messages", "1"];
        all.extend_from_slice(args);
        let good = run(&all, b"ok\n");
        good.assert_ok();
        assert_eq!(good.stdout, "ok\n");
    }
}

#[test]
fn wss_with_cacert_insecure_and_unknown_issuer() {
    let dir = common::temp_dir("tls");
    let (cert, key) = common::self_signed_cert(&dir);
    let (cert_arg, key_arg) = (cert.as_str(), key.as_str());
    let server = Background::start(&[
        "echo",
        "127.0.0.1:0",
        "--tls-cert",
        cert_arg,
        "--tls-key",
        key_arg,
    ]);
    assert!(server.url.starts_with("wss://"), "{}", server.url);
    let url = format!("wss://localhost:{}/", server.port());

    let trusted = run(
        &[
            "connect",
            &url,
            "--cacert",
            cert_arg,
            "--wait-messages",
            "1",
        ],
        b"tls\n",
    );
    trusted.assert_ok();
    assert_eq!(trusted.stdout, "tls\n");

    let untrusted = run(&["connect", &url], b"");
    assert_eq!(untrusted.code(), 1, "{untrusted:?}");
    assert!(
        untrusted.stderr.starts_with("fdx: TLS error"),
        "{untrusted:?}"
    );
    assert!(untrusted.stderr.contains("certificate"), "{untrusted:?}");

    let insecure = run(
        &["connect", &url, "--insecure", "--wait-messages", "1"],
        b"anyway\n",
    );
    insecure.assert_ok();
    assert_eq!(insecure.stdout, "anyway\n");
    assert!(insecure.stderr.contains("WARNING"), "{insecure:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn invalid_header_is_a_usage_error() {
    let out = run(&["connect", "ws://127.0.0.1:1/", "-H", "no colon"], b"");
    assert_eq!(out.code(), 2, "{out:?}");
}

#[test]
fn every_subcommand_help_has_examples() {
    for sub in ["connect", "echo", "exec", "completions"] {
        let out = run(&[sub, "--help"], b"");
        out.assert_ok();
        assert!(out.stdout.contains("Examples:"), "{sub}: {}", out.stdout);
    }
    let out = run(&["connect", "--help"], b"");
    assert!(out.stdout.contains("Exit status:"), "{}", out.stdout);
}

#[test]
fn completions_bash() {
    let out = run(&["completions", "bash"], b"");
    out.assert_ok();
    assert!(out.stdout.contains("_fdx()"), "{}", out.stdout);
    assert!(out.stdout.contains("complete -F _fdx"), "{}", out.stdout);
}

/// A one-connection HTTP CONNECT proxy; the request line it saw goes to `seen`.
fn connect_proxy(seen: Arc<Mutex<Option<String>>>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    serve_one(move |mut client| async move {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
            match client.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let line = head.lines().next().unwrap_or("").to_owned();
        *seen.lock().unwrap() = Some(line.clone());
        let Some(target) = line
            .strip_prefix("CONNECT ")
            .and_then(|rest| rest.split(' ').next())
        else {
            return;
        };
        let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else {
            let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
            return;
        };
        if client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .is_ok()
        {
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        }
    })
}

#[test]
fn through_an_http_proxy_flag_and_environment() {
    let server = echo_server();
    let target = format!("127.0.0.1:{}", server.port());

    let seen = Arc::new(Mutex::new(None));
    let proxy = format!("http://127.0.0.1:{}", connect_proxy(seen.clone()));
    let out = run(
        &[
            "connect",
            &server.url,
            "--proxy",
            &proxy,
            "-v",
            "--wait-messages",
            "1",
        ],
        b"via proxy\n",
    );
    out.assert_ok();
    assert_eq!(out.stdout, "via proxy\n");
    assert!(
        out.stderr.contains("* through proxy http://127.0.0.1:"),
        "{}",
        out.stderr
    );
    assert_eq!(
        seen.lock().unwrap().as_deref(),
        Some(format!("CONNECT {target} HTTP/1.1").as_str())
    );

    // http_proxy applies to ws:// unless --no-proxy says otherwise.
    let seen = Arc::new(Mutex::new(None));
    let proxy = format!("http://127.0.0.1:{}", connect_proxy(seen.clone()));
    let mut command = common::fdx();
    command
        .args(["connect", &server.url, "--wait-messages", "1"])
        .env("http_proxy", &proxy);
    let out = common::run_command(&mut command, Some(b"env\n"), common::RUN_TIMEOUT);
    out.assert_ok();
    assert_eq!(out.stdout, "env\n");
    assert!(seen.lock().unwrap().is_some(), "the proxy was not used");

    let mut command = common::fdx();
    command
        .args(["connect", &server.url, "--no-proxy", "--wait-messages", "1"])
        .env("http_proxy", format!("http://127.0.0.1:{}", closed_port()));
    let out = common::run_command(&mut command, Some(b"direct\n"), common::RUN_TIMEOUT);
    out.assert_ok();
    assert_eq!(out.stdout, "direct\n");
}

#[test]
fn unreachable_proxy_is_one_line() {
    let server = echo_server();
    let proxy = format!("http://127.0.0.1:{}", closed_port());
    let out = run(&["connect", &server.url, "--proxy", &proxy], b"");
    assert_eq!(out.code(), 1, "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
    assert!(out.stderr.contains("proxy"), "{out:?}");
    let bad = run(&["connect", &server.url, "--proxy", "ftp://x"], b"");
    assert_eq!(bad.code(), 2, "{bad:?}");
}

/// `fdx echo` gives a TCP client one handshake timeout (10 s) from accept, whether it sends
/// nothing, the first bytes of an HTTP/1.1 request, or the first bytes of the h2c preface:
/// the preface peek and the HTTP/1.1 handshake share the deadline.
#[test]
fn echo_closes_a_stalled_client_within_one_handshake_timeout() {
    use std::io::{Read, Write};
    let server = echo_server();
    let clients: Vec<(&str, std::net::TcpStream)> = [
        ("nothing", &b""[..]),
        (
            "an unfinished HTTP/1.1 head",
            &b"GET / HTTP/1.1\r\nHost: x\r\n"[..],
        ),
        ("part of the h2c preface", &b"PRI * HTTP/2.0\r\n"[..]),
    ]
    .into_iter()
    .map(|(what, bytes)| {
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", server.port())).expect("connect");
        tcp.write_all(bytes).expect("write");
        tcp.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        (what, tcp)
    })
    .collect();
    let started = Instant::now();
    for (what, mut tcp) in clients {
        let mut buf = [0u8; 512];
        // Closed (EOF or reset) or answered with a 408; either way by the deadline.
        loop {
            match tcp.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_secs(9) && elapsed < Duration::from_secs(14),
            "{what}: closed after {elapsed:?}"
        );
    }
}

/// A server started from a shell with a small soft limit on open files raises it to the hard
/// limit, so that its own connection limits, not the shell's default, decide.
#[cfg(target_os = "linux")]
#[test]
fn servers_raise_their_open_file_limit() {
    let fdx = env!("CARGO_BIN_EXE_fdx");
    for args in ["echo 127.0.0.1:0", "serve --listen 127.0.0.1:0"] {
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -Sn 64 && exec {fdx} {args}"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn sh");
        let out = common::lines(child.stdout.take().expect("stdout"));
        let ready = out.recv_timeout(Duration::from_secs(20));
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id()));
        let _ = child.kill();
        let _ = child.wait();
        assert!(ready.is_ok(), "fdx {args} did not start");
        let limits = limits.expect("read /proc/PID/limits");
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .expect("Max open files line");
        let fields: Vec<&str> = line.split_whitespace().collect();
        // "Max open files  SOFT  HARD  files"
        assert_eq!(fields[3], fields[4], "fdx {args}: {line}");
        assert_ne!(fields[3], "64", "fdx {args}: {line}");
    }
}

/// `--socket-buffer` fixes the accepted connections' kernel buffers; the server still echoes,
/// also a message far larger than the buffers.
#[test]
fn echo_with_a_fixed_socket_buffer() {
    let server = Background::start(&["echo", "127.0.0.1:0", "--socket-buffer", "16384"]);
    let big = "x".repeat(300_000);
    let out = run(
        &["connect", &server.url],
        format!("small\n{big}\n").as_bytes(),
    );
    out.assert_ok();
    assert_eq!(out.stdout, format!("small\n{big}\n"));
}

/// The bytes queued in the kernel's send buffer of the server's side of the connection from
/// `client` to `server_port` (`tx_queue` in `/proc/net/tcp`: sent and not acknowledged, plus
/// not yet sent; over loopback with a full receive window, the unsent bytes).
fn server_send_queue(server_port: u16, client: std::net::SocketAddr) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let port = |address: &str| u16::from_str_radix(address.rsplit(':').next()?, 16).ok();
        let (local, remote, queues) = (fields.get(1)?, fields.get(2)?, fields.get(4)?);
        (port(local)? == server_port && port(remote)? == client.port())
            .then(|| u64::from_str_radix(queues.split(':').next()?, 16).ok())?
    })
}

/// Sends 64 KiB binary messages to an echo server without reading anything back, until the
/// server stops taking them (no progress for a second, at most 20 s), and returns the
/// server's send queue for the connection then.
fn send_queue_of_a_peer_that_never_reads(server: &Background) -> u64 {
    use std::io::{Read, Write};
    let address = server.url.trim_start_matches("ws://");
    let port: u16 = address.rsplit(':').next().unwrap().parse().unwrap();
    let mut tcp = std::net::TcpStream::connect(address).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).expect("the handshake's answer");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    // A masked binary frame of 64 KiB (mask key zero: the payload goes as it is).
    let mut frame = vec![0x82, 0xff];
    frame.extend_from_slice(&65_536u64.to_be_bytes());
    frame.extend_from_slice(&[0; 4]);
    frame.resize(frame.len() + 65_536, b'x');
    tcp.set_nonblocking(true).unwrap();
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut at = 0;
    while last_progress.elapsed() < Duration::from_secs(1)
        && started.elapsed() < Duration::from_secs(20)
    {
        match tcp.write(&frame[at..]) {
            Ok(written) => {
                at = (at + written) % frame.len();
                last_progress = Instant::now();
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(error) => panic!("send: {error}"),
        }
    }
    let client = tcp.local_addr().unwrap();
    server_send_queue(port, client).expect("the connection in /proc/net/tcp")
}

/// `fdx echo` limits what a peer that never reads makes it queue in the kernel
/// (`--notsent-lowat`, 128 KiB by default); `--notsent-lowat 0` leaves the kernel's limit
/// (its send buffer, autotuned to megabytes).
#[test]
fn echo_bounds_the_unsent_bytes_of_a_peer_that_never_reads() {
    let server = echo_server();
    let bounded = send_queue_of_a_peer_that_never_reads(&server);
    // The limit, plus what one write may add beyond it.
    assert!(bounded <= 256 << 10, "{bounded} bytes queued");
    let server = Background::start(&["echo", "127.0.0.1:0", "--notsent-lowat", "0"]);
    let unbounded = send_queue_of_a_peer_that_never_reads(&server);
    assert!(
        unbounded > bounded * 4,
        "{unbounded} bytes queued without the limit, {bounded} with it"
    );
}

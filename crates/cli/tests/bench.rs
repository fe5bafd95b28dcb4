//! `fdx bench` against `fdx echo` and against small misbehaving servers: the reports are sane
//! and well-formed JSON, the failures clear.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use common::{closed_port, fdx, lines, run, serve_one, wait_bounded, Background, RUN_TIMEOUT};
use fullduplex::{Accept, Message};
use serde_json::Value;

fn echo_server() -> Background {
    Background::start(&["echo", "127.0.0.1:0"])
}

/// Runs `fdx bench URL args... --json` and parses the one object it prints.
fn bench_json(url: &str, args: &[&str]) -> Value {
    let mut all = vec!["bench", url, "--json"];
    all.extend_from_slice(args);
    let out = run(&all, b"");
    out.assert_ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON object: {out:#?}");
    serde_json::from_str(lines[0]).expect("the report is JSON")
}

fn f(report: &Value, key: &str) -> f64 {
    report[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is a number: {report}"))
}

fn u(report: &Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is an integer: {report}"))
}

/// Percentiles are ordered and positive; the mean lies between the smallest and the largest.
fn assert_latencies_sane(report: &Value) {
    let l = &report["latency_us"];
    let p: Vec<f64> = ["p50", "p90", "p99", "p999", "max"]
        .iter()
        .map(|k| l[k].as_f64().expect("latency is a number"))
        .collect();
    assert!(p[0] > 0.0, "{report}");
    assert!(p.windows(2).all(|w| w[0] <= w[1]), "ordered: {report}");
    let mean = l["mean"].as_f64().expect("mean");
    assert!(mean > 0.0 && mean <= p[4], "{report}");
}

/// The fields every report has, with their types.
fn assert_schema(report: &Value) {
    let keys = [
        "mode",
        "url",
        "connections",
        "size",
        "pipeline",
        "binary",
        "compress",
        "duration_s",
        "messages",
        "bytes",
        "messages_per_s",
        "mb_per_s",
        "latency_us",
        "errors",
        "reconnects",
        "handshakes",
        "handshakes_per_s",
        "connections_open",
    ];
    let object = report.as_object().expect("an object");
    assert_eq!(object.len(), keys.len(), "{report}");
    for key in keys {
        assert!(object.contains_key(key), "{key} missing: {report}");
    }
    for key in ["binary", "compress"] {
        assert!(report[key].is_boolean());
    }
}

fn assert_echo_report(report: &Value, connections: u64, size: u64, pipeline: u64) {
    assert_schema(report);
    assert_eq!(report["mode"], "echo");
    assert_eq!(u(report, "connections"), connections);
    assert_eq!(u(report, "size"), size);
    assert_eq!(u(report, "pipeline"), pipeline);
    let messages = u(report, "messages");
    assert!(messages > 0, "{report}");
    assert_eq!(u(report, "bytes"), messages * size);
    assert_eq!(u(report, "errors"), 0, "{report}");
    assert_eq!(u(report, "reconnects"), 0);
    assert_eq!(u(report, "connections_open"), connections);
    let duration = f(report, "duration_s");
    let rate = f(report, "messages_per_s");
    assert!((rate * duration - messages as f64).abs() < 1.0, "{report}");
    let mb = f(report, "mb_per_s");
    assert!((mb * 1e6 * duration - (messages * size) as f64).abs() < 1.0);
    assert_eq!(u(report, "handshakes"), 0);
    assert_latencies_sane(report);
}

#[test]
fn echo_text_one_in_flight() {
    let server = echo_server();
    let report = bench_json(
        &server.url,
        &["-c", "4", "-s", "16", "-d", "1", "--warmup", "0.2"],
    );
    assert_echo_report(&report, 4, 16, 1);
    assert_eq!(report["binary"], false);
    assert_eq!(report["compress"], false);
    assert_eq!(report["url"], server.url.as_str());
}

#[test]
fn echo_binary_pipelined_on_one_thread() {
    let server = echo_server();
    let report = bench_json(
        &server.url,
        &[
            "-c",
            "3",
            "-s",
            "1000",
            "-p",
            "8",
            "--binary",
            "-d",
            "1",
            "--warmup",
            "0",
            "--threads",
            "1",
        ],
    );
    assert_echo_report(&report, 3, 1000, 8);
    assert_eq!(report["binary"], true);
}

#[test]
fn echo_large_messages_through_a_small_read_buffer() {
    let server = echo_server();
    // 200 KB messages, 4 in flight: more than the socket buffers hold without reading.
    let report = bench_json(
        &server.url,
        &[
            "-c", "2", "-s", "200000", "-p", "4", "-d", "1", "--warmup", "0",
        ],
    );
    assert_echo_report(&report, 2, 200_000, 4);
}

#[test]
fn echo_compressed() {
    let server = echo_server();
    let report = bench_json(
        &server.url,
        &[
            "-c",
            "2",
            "-s",
            "4000",
            "-p",
            "2",
            "--compress",
            "-d",
            "1",
            "--warmup",
            "0",
        ],
    );
    assert_echo_report(&report, 2, 4000, 2);
    assert_eq!(report["compress"], true);
}

#[test]
fn echo_open_loop_rate() {
    let server = echo_server();
    let report = bench_json(
        &server.url,
        &["-c", "2", "--rate", "200", "-d", "1", "--warmup", "0.2"],
    );
    assert_echo_report(&report, 2, 16, 1);
    // Paced at 200/s: nowhere near what a closed loop does on loopback.
    assert!(u(&report, "messages") <= 400, "{report}");
}

/// A plain TCP echo server for `connections` connections (each echoed on its own thread until
/// EOF); returns the port. Bounded: it stops accepting after 20 s.
fn tcp_echo(connections: usize) -> u16 {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + RUN_TIMEOUT;
        let mut accepted = 0;
        while accepted < connections && std::time::Instant::now() < deadline {
            match listener.accept() {
                Ok((mut tcp, _)) => {
                    accepted += 1;
                    let _ = tcp.set_nonblocking(false);
                    let _ = tcp.set_read_timeout(Some(RUN_TIMEOUT));
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 << 10];
                        while let Ok(n) = tcp.read(&mut buf) {
                            if n == 0 || tcp.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    port
}

#[test]
fn plain_tcp_echo_with_tcp() {
    // The frames come back masked, as sent: they are checked through their mask.
    let port = tcp_echo(2);
    let url = format!("ws://127.0.0.1:{port}/");
    let report = bench_json(
        &url,
        &["--tcp", "-c", "2", "-p", "4", "-d", "0.5", "--warmup", "0"],
    );
    assert_echo_report(&report, 2, 16, 4);
}

#[test]
fn handshakes() {
    let server = echo_server();
    let report = bench_json(
        &server.url,
        &["--handshakes", "-c", "2", "-d", "1", "--warmup", "0"],
    );
    assert_schema(&report);
    assert_eq!(report["mode"], "handshakes");
    let handshakes = u(&report, "handshakes");
    assert!(handshakes > 0, "{report}");
    let rate = f(&report, "handshakes_per_s");
    assert!((rate * f(&report, "duration_s") - handshakes as f64).abs() < 1.0);
    assert_eq!(u(&report, "errors"), 0, "{report}");
    assert_eq!(u(&report, "messages"), 0);
    assert_latencies_sane(&report);
}

#[test]
fn idle_holds_until_stdin_ends() {
    let server = echo_server();
    let mut child = fdx()
        .args([
            "bench",
            &server.url,
            "--idle",
            "20",
            "--idle-echo",
            "1024",
            "--duration",
            "0",
            "--json",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fdx bench");
    let mut stdin = child.stdin.take().expect("stdin");
    let out = lines(child.stdout.take().expect("stdout"));
    let ready = out
        .recv_timeout(Duration::from_secs(10))
        .expect("idle_ready within 10 s");
    let ready: Value = serde_json::from_str(&ready).expect("idle_ready is JSON");
    assert_eq!(ready["event"], "idle_ready");
    assert_eq!(ready["connections_open"], 20);
    // Still holding: nothing more is printed while stdin stays open.
    assert!(out.recv_timeout(Duration::from_millis(300)).is_err());
    stdin.write_all(b"").expect("stdin open");
    drop(stdin);
    let last = out
        .recv_timeout(Duration::from_secs(10))
        .expect("the report after stdin ends");
    let status = wait_bounded(&mut child, RUN_TIMEOUT).expect("fdx bench exits");
    assert!(status.success());
    let report: Value = serde_json::from_str(&last).expect("the report is JSON");
    assert_schema(&report);
    assert_eq!(report["mode"], "idle");
    assert_eq!(u(&report, "connections"), 20);
    assert_eq!(u(&report, "connections_open"), 20);
    assert_eq!(u(&report, "handshakes"), 20);
    assert_eq!(u(&report, "messages"), 20);
    assert_eq!(u(&report, "size"), 1024);
    assert_eq!(u(&report, "errors"), 0);
    assert_latencies_sane(&report);
}

#[test]
fn idle_for_a_duration_with_a_table() {
    let server = echo_server();
    let out = run(
        &["bench", &server.url, "--idle", "5", "--duration", "0.3"],
        b"",
    );
    out.assert_ok();
    assert!(out.stdout.contains("5 open of 5"), "{out:#?}");
    assert!(out.stderr.contains("5 connections open"), "{out:#?}");
}

#[test]
fn human_table() {
    let server = echo_server();
    let out = run(&["bench", &server.url, "-c", "2", "-d", "0.5"], b"");
    out.assert_ok();
    for row in [
        "connections",
        "echoes",
        "throughput",
        "latency (µs)",
        "errors",
    ] {
        assert!(out.stdout.contains(row), "{row}: {}", out.stdout);
    }
    // No progress bar when stderr is not a terminal.
    assert_eq!(out.stderr, "");
}

#[test]
fn refused_connection_fails_fast_with_one_line() {
    let url = format!("ws://127.0.0.1:{}/", closed_port());
    for mode in [
        &[][..],
        &["--handshakes"][..],
        &["--idle", "3"][..],
        &["--compress"][..],
    ] {
        let mut args = vec!["bench", url.as_str(), "-d", "1"];
        args.extend_from_slice(mode);
        let out = run(&args, b"");
        assert_eq!(out.code(), 1, "{mode:?}: {out:#?}");
        assert_eq!(out.stdout, "");
        assert_eq!(out.stderr.lines().count(), 1, "{out:#?}");
        assert!(
            out.stderr
                .starts_with("fdx: connection refused by 127.0.0.1:"),
            "{out:#?}"
        );
    }
}

#[test]
fn not_a_websocket_server_fails_fast() {
    // An HTTP server that answers 404 to the upgrade.
    let port = serve_one(|mut tcp| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = [0u8; 4096];
        let _ = tcp.read(&mut buf).await;
        let _ = tcp
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            .await;
    });
    let out = run(
        &["bench", &format!("ws://127.0.0.1:{port}/"), "-c", "1"],
        b"",
    );
    assert_eq!(out.code(), 1, "{out:#?}");
    assert!(out.stderr.contains("server answered 404"), "{out:#?}");
}

#[test]
fn wrong_echoes_are_errors() {
    // Echoes every message with its first byte changed, then the connection breaks;
    // reconnecting fails (this server takes one connection): errors, no messages.
    let port = serve_one(|tcp| async move {
        let Ok(mut ws) =
            fullduplex::accept_with(tcp, fullduplex::Config::default(), |_| Ok(Accept::new()))
                .await
        else {
            return;
        };
        while let Some(Ok(message)) = ws.recv().await {
            if let Message::Text(text) = message {
                let mut bytes = text.as_bytes().to_vec();
                bytes[0] = b'!';
                let text = String::from_utf8(bytes).expect("ASCII");
                if ws.send(Message::text(text)).await.is_err() {
                    return;
                }
            }
        }
    });
    let url = format!("ws://127.0.0.1:{port}/");
    let report = bench_json(&url, &["-c", "1", "-d", "0.5", "--warmup", "0"]);
    assert_schema(&report);
    assert_eq!(u(&report, "messages"), 0, "{report}");
    assert!(u(&report, "errors") >= 1, "{report}");
    assert_eq!(u(&report, "connections_open"), 0);
}

#[test]
fn help_has_examples_and_bad_arguments_exit_2() {
    let out = run(&["bench", "--help"], b"");
    out.assert_ok();
    assert!(out.stdout.contains("Examples:"));
    assert!(out.stdout.contains("--idle"));
    assert!(out.stdout.contains("idle_ready"));
    let out = run(&["bench", "wss://127.0.0.1:1/"], b"");
    assert_eq!(out.code(), 2, "{out:#?}");
    let out = run(&["bench", "ws://127.0.0.1:1/", "--pipeline", "0"], b"");
    assert_eq!(out.code(), 2, "{out:#?}");
    let out = run(&["bench", "ws://127.0.0.1:1/", "--rate", "1e-300"], b"");
    assert_eq!(out.code(), 2, "{out:#?}");
    let out = run(
        &["bench", "ws://127.0.0.1:1/", "--idle", "3", "--compress"],
        b"",
    );
    assert_eq!(out.code(), 2, "{out:#?}");
}

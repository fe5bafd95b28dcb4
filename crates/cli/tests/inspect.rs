//! `fdx inspect` between real peers: a Python `websockets` client with compression and `fdx echo`,
//! our own client, and upstreams and clients that break off.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{closed_port, serve_one, temp_dir, Background};
use fullduplex::{ClientRequest, CloseCode, Config, Message};
use serde_json::Value;

/// The repository's virtualenv Python (made by `scripts/test`).
fn python() -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test once (it creates the venv with websockets)",
        python.display()
    );
    python
}

/// Starts `fdx inspect` in front of `upstream`, logging JSON lines to `log`.
fn start_inspect(upstream: &str, log: &Path, extra: &[&str]) -> Background {
    start_relay("inspect", upstream, log, extra)
}

/// Starts the inspecting relay under the name `subcommand` (`inspect`, or its alias `proxy`).
fn start_relay(subcommand: &str, upstream: &str, log: &Path, extra: &[&str]) -> Background {
    let log = log.to_str().expect("utf-8 path");
    let mut args = vec![
        subcommand,
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        upstream,
        "--log",
        log,
        "--quiet",
    ];
    args.extend_from_slice(extra);
    Background::start(&args)
}

/// The JSON lines of `log`, once one of them satisfies `done` (polled, at most 10 s).
fn read_log(log: &Path, done: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let events: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).expect("every log line is JSON"))
            .collect();
        if events.iter().any(&done) {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "the log never got there:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn frames<'a>(events: &'a [Value], direction: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["event"] == "frame" && e["direction"] == direction)
        .collect()
}

fn header<'a>(headers: &'a Value, name: &str) -> Option<&'a str> {
    headers.as_array()?.iter().find_map(|pair| {
        (pair[0].as_str()? == name)
            .then(|| pair[1].as_str())
            .flatten()
    })
}

const PY_CLIENT: &str = r#"
import asyncio, json, sys
from websockets.asyncio.client import connect

async def main(url):
    texts = [json.dumps({"type": "message", "seq": i, "text": "the same words again " * 4})
             for i in range(5)]
    async with connect(url, origin="http://127.0.0.1:1234",
                       additional_headers={"Cookie": "session=abc", "Authorization": "Bearer t0ken"},
                       subprotocols=["chat.v1"]) as ws:
        assert ws.response.headers.get("Sec-WebSocket-Extensions", "").startswith("permessage-deflate"), ws.response.headers
        for text in texts:
            await ws.send(text)
            assert await ws.recv() == text
        await ws.close(4000, "bye")
    print(json.dumps(texts))

asyncio.run(main(sys.argv[1]))
"#;

#[test]
#[ignore = "needs Python websockets in .venv (scripts/test makes it)"]
fn logs_the_handshake_and_inflated_frames_of_a_compressed_python_client() {
    let echo = Background::start(&["echo", "127.0.0.1:0"]);
    let dir = temp_dir("inspect-python");
    let log = dir.join("frames.jsonl");
    let relay = start_inspect(&echo.url, &log, &[]);

    let output = Command::new(python())
        .args(["-c", PY_CLIENT, &format!("{}/chat?room=1", relay.url)])
        .stdin(Stdio::null())
        .output()
        .expect("run the python client");
    assert!(
        output.status.success(),
        "python client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let texts: Vec<String> = serde_json::from_slice(&output.stdout).expect("texts");

    let events = read_log(&log, |e| e["event"] == "close");
    let handshake = events
        .iter()
        .find(|e| e["event"] == "handshake")
        .expect("a handshake event");
    let request = &handshake["request"];
    assert_eq!(request["method"], "GET");
    assert_eq!(request["target"], "/chat?room=1");
    assert_eq!(header(&request["headers"], "cookie"), Some("session=abc"));
    assert_eq!(
        header(&request["headers"], "origin"),
        Some("http://127.0.0.1:1234")
    );
    assert_eq!(
        header(&request["headers"], "sec-websocket-protocol"),
        Some("chat.v1")
    );
    let offer = header(&request["headers"], "sec-websocket-extensions").expect("an offer");
    assert!(offer.contains("permessage-deflate"), "{offer}");
    // The upstream request is the same, with Host rewritten.
    let upstream = &handshake["upstream_request"];
    let upstream_host = echo.url.trim_start_matches("ws://");
    assert_eq!(header(&upstream["headers"], "host"), Some(upstream_host));
    assert_eq!(header(&upstream["headers"], "cookie"), Some("session=abc"));
    assert_eq!(
        header(&upstream["headers"], "authorization"),
        Some("Bearer t0ken")
    );
    assert_eq!(upstream["target"], format!("{}/chat?room=1", echo.url));
    assert_eq!(
        header(&upstream["headers"], "origin"),
        Some("http://127.0.0.1:1234")
    );
    assert_eq!(handshake["response"]["status"], 101);
    let deflate = handshake["deflate"].as_str().expect("deflate negotiated");
    assert!(deflate.starts_with("permessage-deflate"), "{deflate}");

    for direction in ["client->server", "server->client"] {
        let frames = frames(&events, direction);
        let data: Vec<&&Value> = frames.iter().filter(|f| f["opcode"] == "text").collect();
        let logged: Vec<&str> = data.iter().map(|f| f["text"].as_str().unwrap()).collect();
        assert_eq!(logged, texts, "{direction}: {frames:#?}");
        for frame in &data {
            assert_eq!(frame["rsv1"], true, "{frame}");
            assert_eq!(frame["compressed"], true);
            assert_eq!(frame["fin"], true);
            assert_eq!(frame["masked"], direction == "client->server");
            // Compressed on the wire: the frame is smaller than what it carries.
            assert!(frame["length"].as_u64() < frame["payload_length"].as_u64());
        }
        let close = frames
            .iter()
            .find(|f| f["opcode"] == "close")
            .unwrap_or_else(|| panic!("{direction}: no close frame"));
        assert_eq!(close["code"], 4000);
        if direction == "client->server" {
            // The answer echoes the code; the reason is the client's own.
            assert_eq!(close["reason"], "bye");
        }
    }
}

#[test]
fn our_client_through_the_relay_and_payload_cutting() {
    let echo = Background::start(&["echo", "127.0.0.1:0"]);
    let dir = temp_dir("inspect-fdx");
    let log = dir.join("frames.jsonl");
    let relay = start_inspect(&echo.url, &log, &["--max-payload", "10"]);
    let long = "y".repeat(1000);
    let run = common::run(
        &[
            "connect",
            &relay.url,
            "--no-compress",
            "--wait-messages",
            "2",
        ],
        format!("hello\n{long}\n").as_bytes(),
    );
    run.assert_ok();
    assert_eq!(run.stdout, format!("hello\n{long}\n"));
    let events = read_log(&log, |e| e["event"] == "close");
    let up = frames(&events, "client->server");
    assert_eq!(up[0]["text"], "hello");
    assert_eq!(up[0]["compressed"], false);
    assert_eq!(up[1]["text"], "yyyyyyyyyy");
    assert_eq!(up[1]["truncated"], true);
    assert_eq!(up[1]["payload_length"], 1000);
    assert_eq!(up[1]["length"], 1000);
    let down = frames(&events, "server->client");
    assert_eq!(down[1]["truncated"], true);
    assert!(down
        .iter()
        .any(|f| f["opcode"] == "close" && f["code"] == 1000));
}

/// `fdx proxy` is the old name of `fdx inspect`, kept as an alias for one release: it relays
/// and logs the same way.
#[test]
fn proxy_is_an_alias_of_inspect() {
    let echo = Background::start(&["echo", "127.0.0.1:0"]);
    let dir = temp_dir("inspect-alias");
    let log = dir.join("frames.jsonl");
    let relay = start_relay("proxy", &echo.url, &log, &[]);
    let run = common::run(
        &[
            "connect",
            &relay.url,
            "--no-compress",
            "--wait-messages",
            "1",
        ],
        b"hello\n",
    );
    run.assert_ok();
    assert_eq!(run.stdout, "hello\n");
    let events = read_log(&log, |e| e["event"] == "close");
    assert_eq!(frames(&events, "client->server")[0]["text"], "hello");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn a_lost_upstream_closes_the_client_with_1014() {
    // An upstream that answers the upgrade, reads one message, then drops TCP without a close.
    let port = serve_one(|tcp| async move {
        if let Ok(mut ws) = fullduplex::accept(tcp).await {
            let _ = ws.recv().await;
        }
    });
    let dir = temp_dir("inspect-lost-upstream");
    let log = dir.join("frames.jsonl");
    let relay = start_inspect(&format!("ws://127.0.0.1:{port}"), &log, &[]);
    runtime().block_on(async {
        let (mut ws, _) = fullduplex::connect(relay.url.as_str())
            .await
            .expect("connect");
        ws.send(Message::text("hi")).await.expect("send");
        let next = tokio::time::timeout(Duration::from_secs(10), ws.recv())
            .await
            .expect("the relay answers in time");
        match next {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(frame.code, CloseCode::BAD_GATEWAY);
                assert!(frame.reason.as_str().contains("upstream"), "{frame:?}");
            }
            other => panic!("expected close 1014, got {other:?}"),
        }
    });
    let events = read_log(&log, |e| e["event"] == "close");
    assert!(events
        .iter()
        .any(|e| e["event"] == "note" && e["message"].as_str().unwrap().contains("close 1014")));
}

#[test]
fn a_vanished_client_closes_the_upstream_with_1001() {
    let (tx, rx) = std::sync::mpsc::channel();
    let port = serve_one(move |tcp| async move {
        let Ok(mut ws) = fullduplex::accept(tcp).await else {
            return;
        };
        let mut seen = Vec::new();
        while let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(10), ws.recv()).await
        {
            match message {
                Ok(message) => seen.push(message),
                Err(error) => {
                    seen.push(Message::text(format!("error: {error}")));
                    break;
                }
            }
        }
        let _ = tx.send(seen);
    });
    let dir = temp_dir("inspect-lost-client");
    let log = dir.join("frames.jsonl");
    let relay = start_inspect(&format!("ws://127.0.0.1:{port}"), &log, &[]);
    // A raw client: handshake, one frame, then the TCP connection just ends.
    runtime().block_on(async {
        let uri: http::Uri = relay.url.parse().expect("url");
        let stream = fullduplex::connect_stream(&uri, &Config::default())
            .await
            .expect("tcp");
        let (mut ws, _) = fullduplex::client_handshake(
            stream,
            ClientRequest::new(relay.url.as_str())
                .build()
                .expect("request"),
            Config::default(),
        )
        .await
        .expect("handshake");
        ws.send(Message::text("before vanishing"))
            .await
            .expect("send");
        drop(ws);
    });
    let seen = rx
        .recv_timeout(Duration::from_secs(15))
        .expect("the upstream saw the end");
    assert_eq!(seen[0], Message::text("before vanishing"));
    match seen.get(1) {
        Some(Message::Close(Some(frame))) => {
            assert_eq!(frame.code, CloseCode::GOING_AWAY);
        }
        other => panic!("expected close 1001 at the upstream, got {other:?} in {seen:?}"),
    }
}

/// Sends a raw HTTP request to `port` and returns the whole answer.
fn raw_http(port: u16, request: &str) -> String {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    tcp.write_all(request.as_bytes()).expect("write");
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

const UPGRADE: &str = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

#[test]
fn handshake_failures_get_http_answers() {
    let dir = temp_dir("inspect-refusals");

    // Nothing listens upstream: 502.
    let relay = start_inspect(
        &format!("ws://127.0.0.1:{}", closed_port()),
        &dir.join("a.jsonl"),
        &[],
    );
    let answer = raw_http(relay.port(), &format!("{UPGRADE}\r\n"));
    assert!(answer.starts_with("HTTP/1.1 502 "), "{answer}");
    assert!(answer.contains("cannot reach the upstream"), "{answer}");

    // Not a WebSocket upgrade: 426.
    let answer = raw_http(relay.port(), "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 426 "), "{answer}");

    // Garbage: 400.
    let answer = raw_http(relay.port(), "\x01\x02 nonsense\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");

    // The upstream refuses (a foreign Origin): its answer reaches the client unchanged.
    let echo = Background::start(&[
        "echo",
        "127.0.0.1:0",
        "--allowed-origin",
        "https://good.example",
    ]);
    let relay = start_inspect(&echo.url, &dir.join("b.jsonl"), &[]);
    let answer = raw_http(
        relay.port(),
        &format!("{UPGRADE}Origin: https://evil.example\r\n\r\n"),
    );
    assert!(answer.starts_with("HTTP/1.1 403 "), "{answer}");
    assert!(answer.contains("not allowed"), "{answer}");

    // A bad --upstream is a usage error.
    let run = common::run(&["inspect", "--upstream", "http://x"], b"");
    assert_eq!(run.code(), 2, "{run:?}");
}

#[test]
fn wss_on_both_sides() {
    let dir = temp_dir("inspect-tls");
    let (cert, key) = common::self_signed_cert(&dir);
    let (cert_arg, key_arg) = (cert.as_str(), key.as_str());
    let echo = Background::start(&[
        "echo",
        "127.0.0.1:0",
        "--tls-cert",
        cert_arg,
        "--tls-key",
        key_arg,
    ]);
    let upstream = format!("wss://localhost:{}", echo.port());
    let log = dir.join("frames.jsonl");
    let relay = start_inspect(
        &upstream,
        &log,
        &[
            "--cacert",
            cert_arg,
            "--tls-cert",
            cert_arg,
            "--tls-key",
            key_arg,
        ],
    );
    assert!(relay.url.starts_with("wss://"), "{}", relay.url);
    let url = format!("wss://localhost:{}/secure", relay.port());
    let run = common::run(
        &[
            "connect",
            &url,
            "--cacert",
            cert_arg,
            "--wait-messages",
            "1",
        ],
        b"through two TLS hops\n",
    );
    run.assert_ok();
    assert_eq!(run.stdout, "through two TLS hops\n");
    let events = read_log(&log, |e| e["event"] == "close");
    let down = frames(&events, "server->client");
    assert_eq!(down[0]["text"], "through two TLS hops");
}

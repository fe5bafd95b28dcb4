//! `fdx serve`: the push server binary, started and stopped like in production.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{fdx, lines, wait_bounded};
use fullduplex::{CloseCode, Message};

/// A running `fdx serve`, killed by PID if the test ends early.
struct Hub {
    child: Child,
    addr: String,
}

impl Hub {
    fn start(args: &[&str]) -> Hub {
        let mut child = fdx()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn fdx serve");
        let out = lines(child.stdout.take().expect("stdout"));
        let line = out.recv_timeout(Duration::from_secs(10));
        let addr = match line
            .as_deref()
            .map(|l| l.strip_prefix("listening on http://"))
        {
            Ok(Some(addr)) => addr.to_owned(),
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("fdx serve did not start: {other:?}");
            }
        };
        Hub { child, addr }
    }

    /// Sends SIGTERM to our own child, by PID.
    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn subscribe(
    addr: &str,
    topic: &str,
) -> fullduplex::WebSocket<fullduplex::MaybeTlsStream<tokio::net::TcpStream>> {
    let (mut ws, _) = fullduplex::connect(format!("ws://{addr}/ws"))
        .await
        .expect("connect");
    let request = format!(r#"{{"type":"subscribe","topic":"{topic}"}}"#);
    ws.send(Message::text(request)).await.expect("send");
    let reply = ws.recv().await.expect("reply").expect("reply");
    assert!(
        reply
            .as_text()
            .is_some_and(|t| t.contains(r#""type":"subscribed""#)),
        "{reply:?}"
    );
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_every_connection_with_1001_and_exits_0() {
    let mut hub = Hub::start(&["--no-clock"]);
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(subscribe(&hub.addr, "news").await);
    }
    hub.terminate();
    for ws in &mut clients {
        let close = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match ws.recv().await {
                    Some(Ok(Message::Close(frame))) => {
                        // Reading on sends the close echo and ends the stream.
                        while ws.recv().await.is_some() {}
                        return frame;
                    }
                    Some(Ok(_)) => {}
                    other => panic!("expected a close frame, got {other:?}"),
                }
            }
        })
        .await
        .expect("closed in time")
        .expect("a close frame with a code");
        assert_eq!(close.code, CloseCode(1001));
        assert_eq!(close.reason.as_str(), "server shutting down");
    }
    let status =
        tokio::task::block_in_place(|| wait_bounded(&mut hub.child, Duration::from_secs(10)));
    assert_eq!(status.map(|s| s.code()), Some(Some(0)), "exit status 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_topic_ticks() {
    let hub = Hub::start(&[]);
    let mut ws = subscribe(&hub.addr, "clock").await;
    let tick = tokio::time::timeout(Duration::from_secs(5), ws.recv())
        .await
        .expect("a tick within 5 s")
        .expect("message")
        .expect("message");
    let json: serde_json::Value =
        serde_json::from_str(tick.as_text().expect("text")).expect("JSON");
    assert_eq!(json["type"], "message");
    assert_eq!(json["topic"], "clock");
    assert!(json["data"]["time"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert!(json["data"]["unix_ms"].as_u64().is_some());
}

#[test]
fn bad_options_are_usage_errors() {
    let run = common::run_with(
        &["serve", "--history-ttl", "5 parsecs"],
        None,
        Duration::from_secs(10),
    );
    assert_eq!(run.code(), 2, "{}", run.stderr);
    let run = common::run_with(
        &["serve", "--listen", "not-an-address"],
        None,
        Duration::from_secs(10),
    );
    assert_eq!(run.code(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("cannot listen on not-an-address"),
        "{}",
        run.stderr
    );
}

//! `fdx serve`: the push server binary, started and stopped like in production.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::cluster::RedisServer;
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

type Ws = fullduplex::WebSocket<fullduplex::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_json(ws: &mut Ws) -> serde_json::Value {
    let message = tokio::time::timeout(Duration::from_secs(10), ws.recv())
        .await
        .expect("a message within 10 s")
        .expect("open")
        .expect("no error");
    serde_json::from_str(message.as_text().expect("text")).expect("JSON")
}

/// POST /publish/TOPIC over a plain TCP connection: the status line and the body.
async fn http_publish(addr: &str, topic: &str, body: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "POST /publish/{topic} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.expect("read");
    let status = response.lines().next().unwrap_or_default().to_owned();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[ignore = "needs redis-server"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_topics_through_redis() {
    let redis = RedisServer::start();
    let url = redis.url();
    let a = Hub::start(&["--no-clock", "--redis", &url]);
    let b = Hub::start(&["--no-clock", "--redis", &url]);
    tokio::time::timeout(Duration::from_secs(60), async {
        let mut on_a = subscribe(&a.addr, "news").await;
        let mut on_b = subscribe(&b.addr, "news").await;

        // Published on A over HTTP, received on both nodes with the same offset.
        let (status, body) = http_publish(&a.addr, "news", r#"{"from":"a"}"#).await;
        assert!(status.contains(" 200 "), "{status} {body}");
        let answer: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(answer["offset"], 1);
        let epoch = answer["epoch"].as_str().expect("epoch").to_owned();
        for ws in [&mut on_a, &mut on_b] {
            let message = next_json(ws).await;
            assert_eq!(message["offset"], 1);
            assert_eq!(message["data"]["from"], "a");
        }

        // Published on both nodes at once over WebSocket: one order, everywhere.
        let mut pub_a = subscribe(&a.addr, "other").await;
        let mut pub_b = subscribe(&b.addr, "other").await;
        for n in 0..20 {
            let (publisher, from) = if n % 2 == 0 {
                (&mut pub_a, "a")
            } else {
                (&mut pub_b, "b")
            };
            let request = format!(r#"{{"type":"publish","topic":"news","data":"{from}{n}"}}"#);
            publisher
                .send(Message::text(request))
                .await
                .expect("publish");
        }
        let mut sequences = Vec::new();
        for ws in [&mut on_a, &mut on_b] {
            let mut sequence = Vec::new();
            for offset in 2..=21 {
                let message = next_json(ws).await;
                assert_eq!(message["offset"], offset, "{message}");
                sequence.push(message["data"].as_str().expect("data").to_owned());
            }
            sequences.push(sequence);
        }
        assert_eq!(
            sequences[0], sequences[1],
            "both nodes deliver in the same order"
        );

        // A client of A reconnects to B and recovers what it missed.
        drop(on_a);
        for n in 0..3 {
            http_publish(&a.addr, "news", &n.to_string()).await;
        }
        for _ in 0..3 {
            next_json(&mut on_b).await;
        }
        let (mut moved, _) = fullduplex::connect(format!("ws://{}/ws", b.addr))
            .await
            .expect("connect");
        let request =
            format!(r#"{{"type":"subscribe","topic":"news","since":21,"epoch":"{epoch}"}}"#);
        moved.send(Message::text(request)).await.expect("send");
        let subscribed = next_json(&mut moved).await;
        assert_eq!(subscribed["type"], "subscribed");
        assert_eq!(subscribed["epoch"], epoch.as_str());
        assert_eq!(subscribed["offset"], 24);
        assert_eq!(subscribed["recovered"], true);
        for offset in 22..=24 {
            assert_eq!(next_json(&mut moved).await["offset"], offset);
        }

        // A topic B has never seen takes Redis's numbering when subscribed to.
        http_publish(&a.addr, "late", "1").await;
        let mut late = subscribe_reply(&b.addr, "late").await;
        let (status, _) = http_publish(&a.addr, "late", "2").await;
        assert!(status.contains(" 200 "));
        assert_eq!(next_json(&mut late).await["offset"], 2);
    })
    .await
    .expect("bounded");
}

/// Subscribes and checks the `subscribed` reply's offset.
async fn subscribe_reply(addr: &str, topic: &str) -> Ws {
    let (mut ws, _) = fullduplex::connect(format!("ws://{addr}/ws"))
        .await
        .expect("connect");
    let request = format!(r#"{{"type":"subscribe","topic":"{topic}"}}"#);
    ws.send(Message::text(request)).await.expect("send");
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["type"], "subscribed");
    assert!(reply["offset"].as_u64().is_some_and(|o| o >= 1), "{reply}");
    ws
}

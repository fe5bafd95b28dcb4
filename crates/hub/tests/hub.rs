//! The hub with fullduplex's own client: shutdown, connection limits, a client that never
//! reads at all (raw TCP), fan-out to many subscribers.

mod common;

use std::time::Duration;

use common::{config, TestHub};
use fullduplex::{CloseCode, MaybeTlsStream, Message, WebSocket};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Client = WebSocket<MaybeTlsStream<TcpStream>>;

const LIMIT: Duration = Duration::from_secs(30);

async fn client(hub: &TestHub) -> Client {
    fullduplex::connect(hub.ws_url()).await.expect("connect").0
}

async fn json(ws: &mut Client) -> serde_json::Value {
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

async fn subscribe(ws: &mut Client, topic: &str) {
    let request = format!(r#"{{"type":"subscribe","topic":"{topic}"}}"#);
    ws.send(Message::text(request)).await.expect("send");
    assert_eq!(json(ws).await["type"], "subscribed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_queued_messages_then_closes_with_1001() {
    tokio::time::timeout(LIMIT, async {
        let mut hub = TestHub::start(config());
        let mut ws = client(&hub).await;
        subscribe(&mut ws, "last-words").await;
        let topic = fullduplex_hub::Topic::new("last-words").expect("topic");
        for n in 0..100 {
            hub.hub
                .publish(&topic, &n.to_string())
                .await
                .expect("publish");
        }
        hub.hub.shutdown();
        let mut received = 0;
        let close = loop {
            match ws.recv().await {
                Some(Ok(Message::Text(_))) => received += 1,
                Some(Ok(Message::Close(frame))) => break frame,
                other => panic!("{other:?}"),
            }
        };
        while ws.recv().await.is_some() {}
        assert_eq!(received, 100, "everything queued is flushed first");
        assert_eq!(close.map(|f| f.code), Some(CloseCode(1001)));
        tokio::task::spawn_blocking(move || hub.stop())
            .await
            .expect("stopped");
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_get_503() {
    tokio::time::timeout(LIMIT, async {
        let mut config = config();
        config.max_connections = 2;
        let hub = TestHub::start(config);
        let mut first = client(&hub).await;
        let _second = client(&hub).await;
        let error = fullduplex::connect(hub.ws_url())
            .await
            .expect_err("refused");
        let response = error.http_response().expect("an HTTP answer");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        // A slot frees when a connection ends.
        first.close(None).await.expect("close");
        drop(first);
        let mut admitted = None;
        for _ in 0..100 {
            if let Ok((ws, _)) = fullduplex::connect(hub.ws_url()).await {
                admitted = Some(ws);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(admitted.is_some(), "a freed slot is reused");
    })
    .await
    .expect("bounded");
}

/// A raw TCP client that completes the handshake, subscribes, and then never reads.
async fn stalled_client(hub: &TestHub, topic: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(hub.addr).await.expect("connect");
    let head = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        hub.addr
    );
    tcp.write_all(head.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    while !response.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte).await.expect("response");
        response.push(byte[0]);
    }
    assert!(response.starts_with(b"HTTP/1.1 101"));
    // A masked text frame: {"type":"subscribe","topic":T}.
    let payload = format!(r#"{{"type":"subscribe","topic":"{topic}"}}"#);
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    tcp.write_all(&frame).await.expect("write");
    tcp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_does_not_hold_up_the_others() {
    tokio::time::timeout(LIMIT, async {
        let mut config = config();
        config.max_queued_bytes = 256 << 10;
        let hub = TestHub::start(config);
        let stalled = stalled_client(&hub, "firehose").await;
        let mut readers = Vec::new();
        for _ in 0..4 {
            let mut ws = client(&hub).await;
            subscribe(&mut ws, "firehose").await;
            readers.push(ws);
        }
        let topic = fullduplex_hub::Topic::new("firehose").expect("topic");
        while hub.hub.registry().subscriber_count(&topic) < 5 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Each reader runs in its own task; the publisher lets the slowest of them stay
        // within 100 KB (they share these two CPUs with it, and their queues hold 256 KiB),
        // never waiting for the stalled client. Each reader's last offset:
        let (progress_tx, progress_rx) = tokio::sync::watch::channel(vec![0u64; readers.len()]);
        let mut tasks = Vec::new();
        for (index, mut ws) in readers.into_iter().enumerate() {
            let progress = progress_tx.clone();
            tasks.push(tokio::spawn(async move {
                let mut expected = 1;
                loop {
                    let message = json(&mut ws).await;
                    assert_eq!(message["offset"], expected);
                    if message["data"] == "end" {
                        return expected;
                    }
                    progress.send_modify(|p| p[index] = expected);
                    expected += 1;
                }
            }));
        }
        drop(progress_tx);
        let pad = format!("\"{}\"", "x".repeat(1000));
        let mut published = 0u64;
        let metrics = &hub.hub.metrics().slow_consumer_disconnects;
        while metrics.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            assert!(
                published < 50_000,
                "the stalled client was never disconnected"
            );
            for _ in 0..50 {
                hub.hub.publish(&topic, &pad).await.expect("publish");
                published += 1;
            }
            let mut rx = progress_rx.clone();
            let slowest = |p: &Vec<u64>| p.iter().copied().min().unwrap_or(0);
            let _ = rx.wait_for(|p| slowest(p) + 100 >= published).await;
        }
        // Found after its queue (256 KiB), the kernel's unsent bytes (`notsent_lowat`, 128
        // KiB) and its receive buffer filled: about 1,500 messages of 1 KB. Without the
        // unsent limit the kernel's send buffer grows to megabytes first (about 5,200).
        assert!(
            published <= 2_500,
            "{published} messages before the stalled client was disconnected"
        );
        hub.hub.publish(&topic, "\"end\"").await.expect("publish");
        for task in tasks {
            assert_eq!(task.await.expect("reader"), published + 1);
        }
        assert_eq!(
            metrics.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "only the stalled one"
        );
        drop(stalled);
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_to_many_subscribers() {
    tokio::time::timeout(LIMIT, async {
        let hub = TestHub::start(config());
        let mut clients = Vec::new();
        for _ in 0..200 {
            let mut ws = client(&hub).await;
            subscribe(&mut ws, "all").await;
            clients.push(ws);
        }
        let topic = fullduplex_hub::Topic::new("all").expect("topic");
        for n in 1..=20 {
            let published = hub
                .hub
                .publish(&topic, &n.to_string())
                .await
                .expect("publish");
            assert_eq!(published.offset, n);
        }
        for ws in &mut clients {
            for n in 1..=20u64 {
                let message = json(ws).await;
                assert_eq!(message["offset"], n);
                assert_eq!(message["data"], n);
            }
        }
        let metrics = hub.hub.metrics();
        let out = metrics
            .messages_out
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!(out >= 4000, "{out}");
    })
    .await
    .expect("bounded");
}

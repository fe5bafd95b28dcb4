//! Limits of the hub's HTTP side: request heads, plain HTTP connections, anonymous
//! publishing, the nesting depth of published data.

mod common;

use std::time::Duration;

use common::{config, TestHub};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(20);

/// Sends `request` on a new connection and reads the answer until the server closes it.
async fn exchange(hub: &TestHub, request: &[u8]) -> String {
    let mut tcp = TcpStream::connect(hub.addr).await.expect("connect");
    tcp.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// Whether `GET /healthz` on a new connection is answered 200 within 2 s (retried every
/// 20 ms while a place is still held by a connection that is ending).
async fn healthz_answers_within_2_s(hub: &TestHub) -> bool {
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        hub.addr
    );
    for _ in 0..100 {
        if exchange(hub, request.as_bytes())
            .await
            .starts_with("HTTP/1.1 200")
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn post(hub: &TestHub, path: &str, body: &str, extra: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n{extra}\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        hub.addr,
        body.len()
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_over_16_kib_gets_431() {
    tokio::time::timeout(LIMIT, async {
        let hub = TestHub::start(config());
        let small = format!(
            "GET /healthz HTTP/1.1\r\nHost: {}\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
            hub.addr,
            "x".repeat(8 << 10)
        );
        assert!(exchange(&hub, small.as_bytes())
            .await
            .starts_with("HTTP/1.1 200"));
        let large = format!(
            "GET /ws HTTP/1.1\r\nHost: {}\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
            hub.addr,
            "x".repeat(80 << 10)
        );
        let answer = exchange(&hub, large.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.80}");
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_connections_are_bounded() {
    tokio::time::timeout(LIMIT, async {
        let mut config = config();
        config.max_http_connections = 2;
        let hub = TestHub::start(config);
        // Two connections that send nothing hold both places.
        let idle: Vec<TcpStream> = vec![
            TcpStream::connect(hub.addr).await.expect("connect"),
            TcpStream::connect(hub.addr).await.expect("connect"),
        ];
        tokio::time::sleep(Duration::from_millis(200)).await;
        let request = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", hub.addr);
        let answer = exchange(&hub, request.as_bytes()).await;
        assert_eq!(answer, "", "closed without an answer");
        let refused = hub
            .hub
            .metrics()
            .http_refused
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!(refused >= 1);
        // A place frees when a connection ends.
        drop(idle);
        assert!(healthz_answers_within_2_s(&hub).await);
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_publishing_can_be_refused_and_data_depth_is_bounded() {
    tokio::time::timeout(LIMIT, async {
        // What a hub on a public address does without --api-key.
        let mut refusing = config();
        refusing.anonymous_publish = Some(false);
        let hub = TestHub::start(refusing);
        let answer = exchange(&hub, &post(&hub, "/publish/t", "1", "")).await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
        assert!(answer.contains("--api-key"), "{answer}");
        let api = r#"{"topic":"t","data":1}"#;
        let answer = exchange(&hub, &post(&hub, "/api/publish", api, "")).await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
        drop(hub);
        // With a key it works again.
        let mut keyed = config();
        keyed.anonymous_publish = Some(false);
        keyed.api_key = Some("k".into());
        let hub = TestHub::start(keyed);
        let auth = "Authorization: Bearer k\r\n";
        let answer = exchange(&hub, &post(&hub, "/publish/t", "1", auth)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // Data nested deeper than the limit is refused, over HTTP and the API.
        let depth = fullduplex_hub::wire::MAX_DATA_DEPTH;
        let deep = format!("{}{}", "[".repeat(depth + 1), "]".repeat(depth + 1));
        let answer = exchange(&hub, &post(&hub, "/publish/t", &deep, auth)).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        let body = format!(r#"{{"topic":"t","data":{deep}}}"#);
        let answer = exchange(&hub, &post(&hub, "/api/publish", &body, auth)).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        let ok = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let answer = exchange(&hub, &post(&hub, "/publish/t", &ok, auth)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    })
    .await
    .expect("bounded");
}

/// The topic table (RELIABILITY.md): one connection creates at most
/// `new_topics_per_connection` topics per window (more get `topic_rate_limited`), topics that
/// exist cost nothing from that budget, and the topics of a connection that leaves are
/// forgotten at once, so that the table is free again for others right away (before this, the
/// in-process engine kept them for the history TTL, 5 minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_topics_per_connection_are_bounded_and_freed_when_it_leaves() {
    use common::backend::{ask, connect, subscribe};
    tokio::time::timeout(LIMIT, async {
        let mut config = config();
        config.broker.new_topics_per_connection = 3;
        config.broker.new_topics_window = Duration::from_secs(3600);
        config.broker.max_topics = 4;
        let hub = TestHub::start(config);
        let mut first = connect(hub.ws_url()).await;
        for n in 0..3 {
            subscribe(&mut first, &format!("a{n}"), false).await;
        }
        let refused = ask(&mut first, r#"{"type":"subscribe","topic":"a3"}"#).await;
        assert_eq!(refused["type"], "error", "{refused}");
        assert_eq!(refused["code"], "topic_rate_limited", "{refused}");
        assert_eq!(refused["topic"], "a3", "{refused}");
        // Another connection: an existing topic costs nothing, a new one fills the table
        // (4 topics), and the next is refused for that reason.
        let mut second = connect(hub.ws_url()).await;
        subscribe(&mut second, "a0", false).await;
        subscribe(&mut second, "b0", false).await;
        let full = ask(&mut second, r#"{"type":"subscribe","topic":"b1"}"#).await;
        assert_eq!(full["code"], "too_many_topics", "{full}");
        // The first connection leaves: its topics that nobody else holds (a1, a2) go at
        // once, and b1 can be created without waiting.
        first.close(None).await.expect("close");
        while first.recv().await.is_some() {}
        let engine = hub.hub.engine();
        let mut freed = false;
        for _ in 0..100 {
            if hub.hub.registry().topic_count() == 2 {
                freed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(freed, "the registry forgot the first connection's topics");
        subscribe(&mut second, "b1", false).await;
        assert_eq!(engine.topic_count(), 3, "a0, b0, b1");
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_is_closed_after_the_head_timeout() {
    tokio::time::timeout(LIMIT, async {
        let mut config = config();
        config.max_http_connections = 1;
        let hub = TestHub::start(config);
        let mut idle = TcpStream::connect(hub.addr).await.expect("connect");
        let start = std::time::Instant::now();
        let mut buf = [0u8; 16];
        // The hub closes it (EOF or reset) once the 10 s for a request head are over.
        let read = idle.read(&mut buf).await;
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        let waited = start.elapsed();
        assert!(waited >= Duration::from_secs(9), "closed after {waited:?}");
        // Its place serves the next client.
        assert!(healthz_answers_within_2_s(&hub).await);
    })
    .await
    .expect("bounded");
}

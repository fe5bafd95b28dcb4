//! The Server-Sent Events fallback (`GET /sse`) with a plain HTTP/1.1 client over TCP:
//! events, tokens, `Last-Event-ID` recovery, gaps, the slow-consumer policy, limits, bad
//! queries, heartbeats, shutdown; `curl` over HTTP/1.1 and h2c, and an `EventSource` in
//! headless Chromium (interop/browser_sse.mjs).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::backend::{hs256, now};
use common::{config, TestHub};
use fullduplex_hub::{HubConfig, TokenConfig, Topic};
use serde_json::{json, Value};

/// How long any one wait in these tests may take.
const WAIT: Duration = Duration::from_secs(10);

/// One block of the stream (the lines up to a blank line).
#[derive(Debug, Default, Clone)]
struct Block {
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
    retry: Option<u64>,
    comments: Vec<String>,
}

impl Block {
    fn json(&self) -> Value {
        serde_json::from_str(self.data.as_deref().unwrap_or("null")).unwrap_or(Value::Null)
    }
}

/// A plain HTTP/1.1 client of `GET /sse`: decodes the chunked body and splits it into blocks.
struct SseClient {
    stream: TcpStream,
    status: u16,
    head: String,
    /// Raw bytes after the head not yet decoded.
    raw: Vec<u8>,
    /// The decoded body not yet split into blocks.
    body: Vec<u8>,
    /// The terminating chunk arrived (or the connection closed).
    ended: bool,
    chunked: bool,
}

impl SseClient {
    /// Sends `GET PATH` with `headers` and reads the response head.
    fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> SseClient {
        SseClient::open_with(addr, path, headers, |_| {})
    }

    fn open_with(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
        setup: impl FnOnce(&TcpStream),
    ) -> SseClient {
        let mut stream = TcpStream::connect(addr).expect("connect");
        setup(&stream);
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let mut request =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).expect("send");
        let mut client = SseClient {
            stream,
            status: 0,
            head: String::new(),
            raw: Vec::new(),
            body: Vec::new(),
            ended: false,
            chunked: false,
        };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(end) = find(&client.raw, b"\r\n\r\n") {
                client.head = String::from_utf8_lossy(&client.raw[..end]).into_owned();
                client.raw.drain(..end + 4);
                break;
            }
            assert!(Instant::now() < deadline, "no response head");
            assert!(client.read_some(), "closed before the response head");
        }
        client.status = client
            .head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status");
        client.chunked = client
            .header("transfer-encoding")
            .is_some_and(|v| v.contains("chunked"));
        client
    }

    /// A response header (the first of that name).
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }

    /// Reads what is there (false: the connection closed).
    fn read_some(&mut self) -> bool {
        let mut buf = [0u8; 16 << 10];
        match self.stream.read(&mut buf) {
            Ok(0) => false,
            Ok(n) => {
                self.raw.extend_from_slice(&buf[..n]);
                true
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                true
            }
            Err(_) => false,
        }
    }

    /// Moves complete chunks from `raw` to `body`.
    fn decode(&mut self) {
        if !self.chunked {
            self.body.append(&mut self.raw);
            return;
        }
        while let Some(line_end) = find(&self.raw, b"\r\n") {
            let size_text = String::from_utf8_lossy(&self.raw[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.trim(), 16).expect("a chunk size");
            if size == 0 {
                self.ended = true;
                self.raw.clear();
                return;
            }
            let start = line_end + 2;
            if self.raw.len() < start + size + 2 {
                return;
            }
            self.body.extend_from_slice(&self.raw[start..start + size]);
            self.raw.drain(..start + size + 2);
        }
    }

    /// The next block within `limit`, or `None` when the stream ended (or nothing came).
    fn next_block_within(&mut self, limit: Duration) -> Option<Block> {
        let deadline = Instant::now() + limit;
        loop {
            self.decode();
            if let Some(end) = find(&self.body, b"\n\n") {
                let text = String::from_utf8(self.body[..end].to_vec()).expect("UTF-8");
                self.body.drain(..end + 2);
                return Some(parse_block(&text));
            }
            if self.ended || Instant::now() >= deadline {
                return None;
            }
            if !self.read_some() {
                self.decode();
                self.ended = true;
            }
        }
    }

    /// The next block that carries data (skipping `retry:` and comments).
    fn next_event(&mut self) -> Block {
        loop {
            let block = self.next_block_within(WAIT).expect("an event");
            if block.data.is_some() {
                return block;
            }
        }
    }

    /// Reads until the stream ends; returns the blocks seen.
    fn read_to_end(&mut self) -> Vec<Block> {
        let deadline = Instant::now() + WAIT;
        let mut blocks = Vec::new();
        while Instant::now() < deadline {
            match self.next_block_within(Duration::from_millis(200)) {
                Some(block) => blocks.push(block),
                None if self.ended => return blocks,
                None => {}
            }
        }
        panic!("the stream did not end: {blocks:?}");
    }

    /// The whole body of a refused request.
    fn refusal(mut self) -> (u16, String) {
        let deadline = Instant::now() + WAIT;
        let length: usize = self
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while self.raw.len() < length && Instant::now() < deadline {
            if !self.read_some() {
                break;
            }
        }
        (self.status, String::from_utf8_lossy(&self.raw).into_owned())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_block(text: &str) -> Block {
    let mut block = Block::default();
    for line in text.split('\n') {
        if let Some(comment) = line.strip_prefix(':') {
            block.comments.push(comment.trim().to_owned());
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => block.id = Some(value.to_owned()),
            "event" => block.event = Some(value.to_owned()),
            "retry" => block.retry = value.parse().ok(),
            "data" => match &mut block.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => block.data = Some(value.to_owned()),
            },
            _ => {}
        }
    }
    block
}

/// Publishes `data` to `topic` on the hub (from a runtime of the test's own).
fn publish(hub: &TestHub, topic: &str, data: &str) -> u64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let topic = Topic::new(topic).expect("topic");
    runtime
        .block_on(hub.hub.publish(&topic, data))
        .expect("published")
        .offset
}

/// Waits until `check` holds.
fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A `subscribed` event, then returns its `(epoch, offset)`.
fn expect_subscribed(client: &mut SseClient, topic: &str) -> (String, u64) {
    let event = client.next_event();
    let json = event.json();
    assert_eq!(json["type"], "subscribed", "{event:?}");
    assert_eq!(json["topic"], topic, "{event:?}");
    (
        json["epoch"].as_str().unwrap_or_default().to_owned(),
        json["offset"].as_u64().unwrap_or(u64::MAX),
    )
}

/// A `message` event of `topic` at `offset`; returns its id.
fn expect_message(client: &mut SseClient, topic: &str, offset: u64) -> String {
    let event = client.next_event();
    let json = event.json();
    assert_eq!(json["type"], "message", "{event:?}");
    assert_eq!(json["topic"], topic, "{event:?}");
    assert_eq!(json["offset"], offset, "{event:?}");
    event.id.expect("an id")
}

#[test]
fn events_over_http1_with_ids_headers_and_metrics() {
    let hub = TestHub::start(config());
    let mut client = SseClient::open(hub.addr, "/sse?topic=a&topic=b.c", &[]);
    assert_eq!(client.status, 200, "{}", client.head);
    assert_eq!(
        client.header("content-type").as_deref(),
        Some("text/event-stream; charset=utf-8")
    );
    assert_eq!(client.header("cache-control").as_deref(), Some("no-cache"));
    assert_eq!(client.header("x-accel-buffering").as_deref(), Some("no"));
    assert_eq!(client.header("connection").as_deref(), Some("close"));
    let first = client.next_block_within(WAIT).expect("retry");
    let retry = first.retry.expect("retry: first");
    assert!((1000..2000).contains(&retry), "{retry}");
    let (epoch_a, offset_a) = expect_subscribed(&mut client, "a");
    let (epoch_b, _) = expect_subscribed(&mut client, "b.c");
    assert_eq!(offset_a, 0);
    publish(&hub, "a", r#"{"text":"hi"}"#);
    publish(&hub, "b.c", "[1,\n 2]");
    publish(&hub, "a", "null");
    let event = client.next_event();
    assert_eq!(
        event.json(),
        json!({"type":"message","topic":"a","offset":1,"data":{"text":"hi"}})
    );
    assert_eq!(event.event, None, "a plain message event");
    assert_eq!(
        event.id.as_deref(),
        Some(&*format!("{epoch_a}:1,{epoch_b}:0"))
    );
    // A body with a line break comes as two `data:` lines, joined again by the client.
    let event = client.next_event();
    assert_eq!(event.json()["data"], json!([1, 2]));
    assert_eq!(
        event.id.as_deref(),
        Some(&*format!("{epoch_a}:1,{epoch_b}:1"))
    );
    let id = expect_message(&mut client, "a", 2);
    assert_eq!(id, format!("{epoch_a}:2,{epoch_b}:1"));
    let metrics = hub.hub.render_metrics();
    assert!(
        metrics.contains("fdx_hub_transport_connections{transport=\"sse\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nfdx_hub_sse_events_total 5\n"),
        "{metrics}"
    );
    // The client leaves: the stream leaves its topics.
    drop(client);
    let a = Topic::new("a").expect("topic");
    wait_until("the stream to leave", || {
        hub.hub.registry().subscriber_count(&a) == 0
    });
    wait_until("the gauge to drop", || {
        hub.hub
            .render_metrics()
            .contains("fdx_hub_transport_connections{transport=\"sse\"} 0\n")
    });
}

#[test]
fn heartbeats_while_idle() {
    let mut config = config();
    config.sse_heartbeat = Duration::from_millis(100);
    let hub = TestHub::start(config);
    let mut client = SseClient::open(hub.addr, "/sse?topic=quiet", &[]);
    expect_subscribed(&mut client, "quiet");
    let block = client.next_block_within(WAIT).expect("a heartbeat");
    assert_eq!(block.comments, ["ping"], "{block:?}");
    assert!(block.data.is_none() && block.id.is_none());
}

/// A test configuration with HS256 tokens signed by `secret`.
fn config_with_secret(secret: &str) -> HubConfig {
    let mut config = config();
    config.tokens = TokenConfig {
        secret: Some(secret.to_owned()),
        ..TokenConfig::default()
    };
    config
}

#[test]
fn tokens_from_query_cookie_and_authorization() {
    let secret = "sse-secret";
    let hub = TestHub::start(config_with_secret(secret));
    let token = hs256(
        secret.as_bytes(),
        &json!({"sub":"ann","exp": now() + 300,"subscribe":["news.*"],"publish":[]}),
    );
    let cookie = format!("a=1; token={token}");
    let bearer = format!("Bearer {token}");
    let ways: [(String, Vec<(&str, &str)>); 3] = [
        (format!("/sse?topic=news.1&token={token}"), vec![]),
        ("/sse?topic=news.1".to_owned(), vec![("Cookie", &cookie)]),
        (
            "/sse?topic=news.1".to_owned(),
            vec![("Authorization", &bearer)],
        ),
    ];
    for (path, headers) in &ways {
        let mut client = SseClient::open(hub.addr, path, headers);
        assert_eq!(client.status, 200, "{path} {headers:?}: {}", client.head);
        expect_subscribed(&mut client, "news.1");
    }
    // No token, a bad one: 401. A topic the token does not allow: 403, naming it.
    let (status, _) = SseClient::open(hub.addr, "/sse?topic=news.1", &[]).refusal();
    assert_eq!(status, 401);
    let (status, _) =
        SseClient::open(hub.addr, "/sse?topic=news.1&token=abc.def.ghi", &[]).refusal();
    assert_eq!(status, 401);
    let path = format!("/sse?topic=news.1&topic=chat&token={token}");
    let (status, body) = SseClient::open(hub.addr, &path, &[]).refusal();
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("chat"), "{body}");
    // A foreign Origin: 403; an allowed one gets CORS headers.
    let path = format!("/sse?topic=news.1&token={token}");
    let (status, _) =
        SseClient::open(hub.addr, &path, &[("Origin", "https://evil.example")]).refusal();
    assert_eq!(status, 403);
    let own = format!("http://{}", hub.addr);
    let client = SseClient::open(hub.addr, &path, &[("Origin", &own)]);
    assert_eq!(client.status, 200);
    assert_eq!(
        client.header("access-control-allow-origin").as_deref(),
        Some(&*own)
    );
}

#[test]
fn token_expiry_ends_the_stream_with_4001() {
    let secret = "sse-secret";
    let hub = TestHub::start(config_with_secret(secret));
    let token = hs256(
        secret.as_bytes(),
        &json!({"sub":"ann","exp": now() + 2,"subscribe":["*"]}),
    );
    let mut client = SseClient::open(hub.addr, &format!("/sse?topic=t&token={token}"), &[]);
    assert_eq!(client.status, 200);
    let blocks = client.read_to_end();
    let close = blocks.last().expect("a close event");
    assert_eq!(close.event.as_deref(), Some("close"), "{blocks:?}");
    assert_eq!(close.json()["code"], 4001);
}

#[test]
fn last_event_id_and_since_recover_what_was_missed() {
    let hub = TestHub::start(config());
    let mut client = SseClient::open(hub.addr, "/sse?topic=r1&topic=r2", &[]);
    expect_subscribed(&mut client, "r1");
    expect_subscribed(&mut client, "r2");
    publish(&hub, "r1", "1");
    expect_message(&mut client, "r1", 1);
    // (A topic that holds nothing is forgotten once its last subscriber leaves, and would
    // come back under a new epoch: r2 gets a message, so that it is kept.)
    publish(&hub, "r2", "0");
    let id = expect_message(&mut client, "r2", 1);
    drop(client);
    // Published while the client is away.
    publish(&hub, "r1", "2");
    publish(&hub, "r2", "3");
    publish(&hub, "r1", "4");
    let mut client = SseClient::open(
        hub.addr,
        "/sse?topic=r1&topic=r2",
        &[("Last-Event-ID", &id)],
    );
    assert_eq!(client.status, 200);
    let event = client.next_event();
    assert_eq!(event.json()["recovered"], true, "{event:?}");
    // The `subscribed` event does not move the position: the replay follows.
    assert_eq!(event.id.as_deref(), Some(&*id));
    expect_message(&mut client, "r1", 2);
    expect_message(&mut client, "r1", 3);
    let event = client.next_event();
    assert_eq!(event.json()["type"], "subscribed");
    assert_eq!(event.json()["recovered"], true);
    let last = expect_message(&mut client, "r2", 2);
    // Then live, nothing twice.
    publish(&hub, "r1", "5");
    expect_message(&mut client, "r1", 4);
    drop(client);
    // `since` in the query does the same (a new stream, say with a new token).
    publish(&hub, "r2", "6");
    let path = format!(
        "/sse?topic=r1&topic=r2&since={}",
        last.replace(':', "%3A").replace(',', "%2C")
    );
    let mut client = SseClient::open(hub.addr, &path, &[]);
    expect_subscribed(&mut client, "r1");
    expect_message(&mut client, "r1", 4);
    expect_subscribed(&mut client, "r2");
    expect_message(&mut client, "r2", 3);
    // An offset alone is in the current epoch.
    let mut client = SseClient::open(hub.addr, "/sse?topic=r2&since=1", &[]);
    expect_subscribed(&mut client, "r2");
    expect_message(&mut client, "r2", 2);
}

#[test]
fn gaps_when_the_history_is_gone_or_the_epoch_changed() {
    let mut config = config();
    config.broker.history_size = 2;
    let hub = TestHub::start(config);
    let mut client = SseClient::open(hub.addr, "/sse?topic=g", &[]);
    let (epoch, _) = expect_subscribed(&mut client, "g");
    publish(&hub, "g", "1");
    let id = expect_message(&mut client, "g", 1);
    drop(client);
    for n in 2..=6 {
        publish(&hub, "g", &n.to_string());
    }
    // History holds 5 and 6: 2 to 4 are lost, and told.
    let mut client = SseClient::open(hub.addr, "/sse?topic=g", &[("Last-Event-ID", &id)]);
    let event = client.next_event();
    assert_eq!(event.json()["recovered"], false, "{event:?}");
    let gap = client.next_event();
    assert_eq!(
        gap.json(),
        json!({"type":"gap","topic":"g","epoch":epoch,"offset":4,"reason":"history"})
    );
    assert_eq!(gap.id.as_deref(), Some(&*format!("{epoch}:4")));
    expect_message(&mut client, "g", 5);
    assert_eq!(expect_message(&mut client, "g", 6), format!("{epoch}:6"));
    // Another epoch: a gap of reason `epoch`, then what the history holds.
    let mut client = SseClient::open(hub.addr, "/sse?topic=g", &[("Last-Event-ID", "0123abc:3")]);
    expect_subscribed(&mut client, "g");
    let gap = client.next_event();
    assert_eq!(gap.json()["reason"], "epoch");
    assert_eq!(gap.json()["offset"], 4);
    expect_message(&mut client, "g", 5);
    let metrics = hub.hub.render_metrics();
    assert!(metrics.contains("\nfdx_hub_gaps_total 2\n"), "{metrics}");
}

#[test]
fn a_slow_consumer_is_dropped_and_its_stream_ended() {
    let mut config = config();
    config.max_queued_bytes = 64 << 10;
    let hub = TestHub::start(config);
    let mut client = SseClient::open_with(hub.addr, "/sse?topic=flood", &[], |stream| {
        set_receive_buffer(stream, 4096);
    });
    assert_eq!(client.status, 200);
    let topic = Topic::new("flood").expect("topic");
    wait_until("the subscription", || {
        hub.hub.registry().subscriber_count(&topic) == 1
    });
    // The client reads nothing: its queue overflows, and the registry drops it at once.
    let data = format!("\"{}\"", "x".repeat(8 << 10));
    let deadline = Instant::now() + WAIT;
    while hub.hub.registry().subscriber_count(&topic) == 1 {
        assert!(Instant::now() < deadline, "never overflowed");
        publish(&hub, "flood", &data);
    }
    // Reading again: some events, then the stream ends with a `close` event (1013).
    let blocks = client.read_to_end();
    let close = blocks.last().expect("a close event");
    assert_eq!(close.event.as_deref(), Some("close"), "{close:?}");
    assert_eq!(close.json()["code"], 1013);
    assert_eq!(close.json()["reason"], "slow consumer");
    let metrics = hub.hub.render_metrics();
    assert!(
        metrics.contains("\nfdx_hub_slow_consumer_disconnects_total 1\n"),
        "{metrics}"
    );
}

#[test]
fn a_slow_consumer_that_never_reads_again_loses_its_connection_and_slot() {
    let mut config = config();
    // A queue larger than what the sockets buffer: the server's socket is full (hyper stops
    // polling the body) before the queue overflows.
    config.max_queued_bytes = 8 << 20;
    config.max_connections = 1;
    let hub = TestHub::start(config);
    let client = SseClient::open_with(hub.addr, "/sse?topic=flood", &[], |stream| {
        set_receive_buffer(stream, 4096);
    });
    assert_eq!(client.status, 200);
    let topic = Topic::new("flood").expect("topic");
    wait_until("the subscription", || {
        hub.hub.registry().subscriber_count(&topic) == 1
    });
    let data = format!("\"{}\"", "x".repeat(48 << 10));
    let deadline = Instant::now() + WAIT;
    while hub.hub.registry().subscriber_count(&topic) == 1 {
        assert!(Instant::now() < deadline, "never overflowed");
        publish(&hub, "flood", &data);
    }
    // Still held: the stream could not even write its close event.
    let next = SseClient::open(hub.addr, "/sse?topic=other", &[]);
    assert_eq!(next.status, 503, "the slot was given back before the abort");
    // The client never reads again (hyper never polls its body again): the hub closes the
    // connection after a short grace, and its connection slot serves another client.
    let deadline = Instant::now() + WAIT;
    loop {
        let next = SseClient::open(hub.addr, "/sse?topic=other", &[]);
        if next.status == 200 {
            break;
        }
        assert_eq!(next.status, 503);
        assert!(Instant::now() < deadline, "the slot never came back");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(client);
}

/// Makes the socket's receive buffer small, so that a client that does not read stalls the
/// server quickly.
fn set_receive_buffer(stream: &TcpStream, bytes: i32) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid socket descriptor and a pointer to an int of the right size.
    let result = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(result, 0, "setsockopt");
}

#[test]
fn limits_connections_and_topics() {
    let mut config = config();
    config.max_connections = 1;
    config.max_subscriptions = 2;
    let hub = TestHub::start(config);
    let (status, body) = SseClient::open(hub.addr, "/sse?topic=a&topic=b&topic=c", &[]).refusal();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("at most 2 topics"), "{body}");
    let mut first = SseClient::open(hub.addr, "/sse?topic=a&topic=b", &[]);
    assert_eq!(first.status, 200);
    expect_subscribed(&mut first, "a");
    let (status, body) = SseClient::open(hub.addr, "/sse?topic=a", &[]).refusal();
    assert_eq!(status, 503, "{body}");
    // WebSockets and streams share `max_connections`: the slot comes back when the stream
    // ends.
    drop(first);
    let deadline = Instant::now() + WAIT;
    loop {
        let client = SseClient::open(hub.addr, "/sse?topic=a", &[]);
        if client.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the slot never came back");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_queries_get_400_and_other_methods_405() {
    let hub = TestHub::start(config());
    for (path, headers, needle) in [
        ("/sse", vec![], "at least one topic"),
        ("/sse?topic=", vec![], "invalid topic"),
        ("/sse?topic=a%20b", vec![], "invalid topic"),
        ("/sse?topic=a&topic=a", vec![], "twice"),
        ("/sse?topic=%zz", vec![], "percent-encoded"),
        ("/sse?topic=a&since=1,2", vec![], "since"),
        ("/sse?topic=a&since=x", vec![], "since"),
        (
            "/sse?topic=a",
            vec![("Last-Event-ID", "e:1:x")],
            "Last-Event-ID",
        ),
    ] {
        let (status, body) = SseClient::open(hub.addr, path, &headers).refusal();
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains(needle), "{path}: {body}");
    }
    // The CORS preflight of a cross-origin reconnect (`Last-Event-ID`).
    let mut stream = TcpStream::connect(hub.addr).expect("connect");
    let preflight = format!(
        "OPTIONS /sse?topic=a HTTP/1.1\r\nHost: {0}\r\nOrigin: http://{0}\r\n\
         Access-Control-Request-Method: GET\r\n\
         Access-Control-Request-Headers: last-event-id\r\nConnection: close\r\n\r\n",
        hub.addr
    );
    stream.write_all(preflight.as_bytes()).expect("send");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let answer = answer.to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 204"), "{answer}");
    assert!(
        answer.contains("access-control-allow-headers: last-event-id"),
        "{answer}"
    );
    let mut stream = TcpStream::connect(hub.addr).expect("connect");
    stream
        .write_all(b"POST /sse?topic=a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .expect("send");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("allow: get, options"),
        "{answer}"
    );
}

#[test]
fn server_api_disconnect_and_shutdown_end_streams_cleanly() {
    let mut hub = TestHub::start(config());
    let mut client = SseClient::open(hub.addr, "/sse?topic=s", &[]);
    expect_subscribed(&mut client, "s");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let command = fullduplex_hub::ControlCommand::Disconnect {
        user: None,
        client: Some(hub.hub.client_id(first_conn_id(&hub)).to_string()),
        code: 4002,
        reason: "bye".into(),
    };
    let nodes = runtime
        .block_on(hub.hub.control(&command))
        .expect("control");
    assert_eq!(nodes, 1);
    let blocks = client.read_to_end();
    let close = blocks.last().expect("close");
    assert_eq!(close.json(), json!({"code":4002,"reason":"bye"}));

    let mut client = SseClient::open(hub.addr, "/sse?topic=s", &[]);
    expect_subscribed(&mut client, "s");
    publish(&hub, "s", "1");
    let stopping = std::thread::spawn(move || hub.stop());
    let blocks = client.read_to_end();
    let close = blocks.last().expect("close");
    assert_eq!(close.event.as_deref(), Some("close"));
    assert_eq!(close.json()["code"], 1001);
    assert!(blocks
        .iter()
        .any(|b| b.json()["type"] == "message" && b.json()["offset"] == 1));
    stopping.join().expect("stopped");
}

/// The id of this hub's only connection so far: connection ids start at 1.
fn first_conn_id(_hub: &TestHub) -> u64 {
    1
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `command` for at most `limit`, killing it (by its PID) past that; returns its
/// status code and stdout.
fn run_bounded(command: &mut Command, limit: Duration) -> (Option<i32>, String, String) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start");
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out_pipe.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err_pipe.read_to_string(&mut text);
        text
    });
    let start = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        code,
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    )
}

/// `curl -N` with `flags` on a stream of `topic`; one message is published while it reads
/// and curl stops after `--max-time`. Returns what curl printed.
fn curl_stream(flags: &[&str]) -> String {
    let hub = TestHub::start(config());
    let url = format!("http://{}/sse?topic=curl", hub.addr);
    let mut command = Command::new("curl");
    command
        .args(["-sS", "-N", "-i", "--max-time", "3"])
        .args(flags)
        .arg(&url);
    let publisher = {
        let hub_ref = hub.hub.clone();
        std::thread::spawn(move || {
            let topic = Topic::new("curl").expect("topic");
            let deadline = Instant::now() + WAIT;
            while hub_ref.registry().subscriber_count(&topic) == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime
                .block_on(hub_ref.publish(&topic, r#"{"via":"curl"}"#))
                .expect("published");
        })
    };
    let (code, out, err) = run_bounded(&mut command, Duration::from_secs(20));
    publisher.join().expect("publisher");
    // 28: curl's own --max-time, the way an endless stream ends here.
    assert_eq!(code, Some(28), "curl failed: {out}\n{err}");
    out
}

#[test]
#[ignore = "needs curl"]
fn curl_over_http1() {
    let out = curl_stream(&["--http1.1"]);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{out}"
    );
    assert!(out.contains("retry: "), "{out}");
    assert!(
        out.contains(r#"data: {"type":"message","topic":"curl","offset":1,"data":{"via":"curl"}}"#),
        "{out}"
    );
}

#[test]
#[ignore = "needs curl"]
fn curl_over_h2c() {
    let out = curl_stream(&["--http2-prior-knowledge"]);
    assert!(out.starts_with("HTTP/2 200"), "{out}");
    assert!(out.contains("x-accel-buffering: no"), "{out}");
    assert!(
        out.contains(r#"data: {"type":"message","topic":"curl","offset":1,"data":{"via":"curl"}}"#),
        "{out}"
    );
}

fn require(path: &Path, what: &str) {
    assert!(
        path.exists(),
        "{} is missing ({what}): run scripts/test once, it installs it",
        path.display()
    );
}

#[test]
#[ignore = "needs chromium and playwright-core (scripts/test installs them)"]
fn event_source_in_headless_chromium_reconnects_with_last_event_id() {
    require(Path::new("/usr/bin/chromium"), "Debian's chromium package");
    require(
        &repo().join("interop/node_modules/playwright-core"),
        "npm ci in interop/",
    );
    let secret = "browser-secret";
    let mut config = config_with_secret(secret);
    config.sse_heartbeat = Duration::from_secs(1);
    let hub = TestHub::start(config);
    let url = format!("http://{}", hub.addr);
    let token = hs256(
        secret.as_bytes(),
        &json!({"sub":"browser","exp": now() + 300,"subscribe":["bsse.*"]}),
    );
    let mut command = Command::new("node");
    command
        .arg(repo().join("interop/browser_sse.mjs"))
        .args(["--hub", &url, "--token", &token, "--user", "browser"])
        .current_dir(repo().join("interop"));
    let (code, out, err) = run_bounded(&mut command, Duration::from_secs(120));
    assert_eq!(code, Some(0), "browser_sse failed:\n{out}\n{err}");
    assert!(out.contains("browser_sse: ok"), "{out}");
    println!("{out}");
}

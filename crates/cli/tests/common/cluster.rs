//! The harness of the cluster fault tests: `redis-server`s (single, persistent, or a
//! three-master Redis Cluster) and `fdx serve` nodes of our own, on free loopback ports,
//! killed by PID when dropped; an HTTP client for `/publish`, `/readyz` and `/presence`; and a
//! WebSocket client that records, per topic, its position and everything it received, and
//! checks it against what was acknowledged.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use fullduplex::Message;
use serde_json::{json, Value};

use super::{fdx, lines, temp_dir, wait_bounded};

/// A WebSocket client connection, as `fullduplex::connect` gives it.
pub type Ws = fullduplex::WebSocket<fullduplex::MaybeTlsStream<tokio::net::TcpStream>>;

/// The bound on one `redis-cli` run.
const CLI_TIMEOUT: Duration = Duration::from_secs(15);

/// The bound on one HTTP request.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// The bound on waiting for one WebSocket message.
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A free port P whose cluster bus port P + 10000 is free too.
fn free_cluster_port() -> u16 {
    for _ in 0..200 {
        let port = free_port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair (P, P + 10000) for a cluster node");
}

/// A fresh directory name for this process.
fn fresh_dir(what: &str) -> PathBuf {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    temp_dir(&format!("{what}-{n}"))
}

/// Runs `command` to its end, at most `timeout`: status, stdout, stderr.
fn run_bounded(command: &mut Command, timeout: Duration) -> (ExitStatus, String, String) {
    let what = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let read = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = read(Box::new(child.stdout.take().expect("stdout")));
    let stderr = read(Box::new(child.stderr.take().expect("stderr")));
    let status = wait_bounded(&mut child, timeout);
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    match status {
        Some(status) => (status, stdout, stderr),
        None => panic!("{what} did not finish within {timeout:?}\n{stdout}\n{stderr}"),
    }
}

/// Sends `signal` (`TERM`, `KILL`) to our own child, by PID.
fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {} failed", child.id());
}

/// One `redis-cli -p PORT ARGS...` run (bounded): its stdout, trimmed.
fn redis_cli(port: u16, args: &[&str]) -> String {
    let (status, stdout, stderr) = run_bounded(
        Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args),
        CLI_TIMEOUT,
    );
    assert!(
        status.success(),
        "redis-cli -p {port} {args:?} failed: {status}\n{stdout}\n{stderr}"
    );
    stdout.trim().to_owned()
}

/// Whether a Redis on `port` answers `PING` with `PONG` (not `LOADING`) right now.
fn redis_answers(port: u16) -> bool {
    use std::io::Write;
    let Ok(mut tcp) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_millis(500)));
    if tcp.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut answer = [0u8; 64];
    match tcp.read(&mut answer) {
        Ok(n) => answer[..n].starts_with(b"+PONG"),
        Err(_) => false,
    }
}

/// A `redis-server` of our own on a free loopback port, in a directory of its own; killed
/// by PID and its directory removed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
}

impl RedisServer {
    /// Without persistence: a restart loses everything.
    pub fn start() -> RedisServer {
        RedisServer::start_with(free_port(), &["--appendonly", "no"])
    }

    /// With `appendonly yes` and `appendfsync always`: a restart keeps every write.
    pub fn start_persistent() -> RedisServer {
        RedisServer::start_with(
            free_port(),
            &["--appendonly", "yes", "--appendfsync", "always"],
        )
    }

    /// On `port` with extra arguments (after `--port --bind --save --dir --logfile`).
    pub fn start_with(port: u16, extra: &[&str]) -> RedisServer {
        let dir = fresh_dir(&format!("redis-{port}"));
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--daemonize",
            "no",
            "--dir",
            dir.to_str().expect("utf-8 temp dir"),
            "--logfile",
            "redis.log",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut redis = RedisServer {
            child: None,
            port,
            dir,
            args,
        };
        redis.spawn();
        redis
    }

    fn spawn(&mut self) {
        assert!(
            self.child.is_none(),
            "redis-server {} runs already",
            self.port
        );
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): install it with \
                     `apt-get install -y redis-server` (scripts/test does)"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if redis_answers(self.port) {
                return;
            }
            let child = self.child.as_mut().expect("child");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                panic!(
                    "redis-server on {} exited: {status}\n{}",
                    self.port,
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "redis-server on {} did not answer PING\n{}",
                    self.port,
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Whether our process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Its log file.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// SIGTERM (Redis then syncs its append-only file), and waits for the exit (bounded).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(&child, "TERM");
        if wait_bounded(&mut child, Duration::from_secs(10)).is_none() {
            panic!("redis-server on {} ignored SIGTERM for 10 s", self.port);
        }
    }

    /// SIGKILL, and waits for the exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory (stopping it first with SIGTERM if it
    /// runs): with persistence on it loads its append-only file.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// `redis-cli -p PORT ARGS...`: its output, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, args)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of three masters, no replicas, each a [`RedisServer`] of our own.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_with(
                    free_cluster_port(),
                    &[
                        "--appendonly",
                        "no",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "5000",
                    ],
                )
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let (status, stdout, stderr) = run_bounded(
            Command::new("redis-cli")
                .args(["--cluster", "create"])
                .args(&addresses)
                .args(["--cluster-replicas", "0", "--cluster-yes"]),
            Duration::from_secs(30),
        );
        assert!(
            status.success(),
            "redis-cli --cluster create failed: {status}\n{stdout}\n{stderr}"
        );
        let cluster = RedisCluster { nodes };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let infos: Vec<String> = (0..3)
                .map(|i| cluster.cli_on(i, &["CLUSTER", "INFO"]))
                .collect();
            if infos.iter().all(|info| {
                info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3")
            }) {
                return cluster;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not reach cluster_state:ok: {infos:#?}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The URL of the first master.
    pub fn seed_url(&self) -> String {
        self.nodes[0].url()
    }

    /// `redis-cli -p PORT_OF_NODE_I ARGS...` (no redirects followed).
    pub fn cli_on(&self, i: usize, args: &[&str]) -> String {
        self.nodes[i].cli(args)
    }
}

/// A running `fdx serve --listen 127.0.0.1:0 --no-clock ARGS...`; its output is drained
/// into memory (see [`Node::output`]); killed by PID when dropped.
pub struct Node {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    output: Arc<Mutex<String>>,
}

fn drain(rx: mpsc::Receiver<String>, into: Arc<Mutex<String>>, prefix: &'static str) {
    thread::spawn(move || {
        while let Ok(line) = rx.recv() {
            let mut output = into.lock().expect("output lock");
            output.push_str(prefix);
            output.push_str(&line);
            output.push('\n');
        }
    });
}

impl Node {
    pub fn start(args: &[&str]) -> Node {
        let mut child = fdx()
            .args(["serve", "--listen", "127.0.0.1:0", "--no-clock"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn fdx serve");
        let output = Arc::new(Mutex::new(String::new()));
        drain(
            lines(child.stderr.take().expect("stderr")),
            output.clone(),
            "stderr: ",
        );
        let stdout = lines(child.stdout.take().expect("stdout"));
        let first = stdout.recv_timeout(Duration::from_secs(15));
        let addr = match first
            .as_deref()
            .map(|l| l.strip_prefix("listening on http://"))
        {
            Ok(Some(addr)) => addr.trim_end_matches('/').to_owned(),
            other => {
                let _ = child.kill();
                let _ = child.wait();
                thread::sleep(Duration::from_millis(100));
                let output = output.lock().expect("output lock").clone();
                panic!("fdx serve {args:?} did not start: {other:?}\n{output}");
            }
        };
        drain(stdout, output.clone(), "stdout: ");
        Node {
            child,
            addr,
            output,
        }
    }

    /// `ws://ADDR/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// SIGKILL, by PID; waits for the exit.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, by PID.
    pub fn terminate(&self) {
        signal(&self.child, "TERM");
    }

    /// Everything it printed so far (stdout and stderr lines, prefixed).
    pub fn output(&self) -> String {
        self.output.lock().expect("output lock").clone()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request with `Connection: close` (bounded by [`HTTP_TIMEOUT`]): the status
/// and the body; status 0 when the connection failed or timed out.
pub async fn http_request(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        tcp.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        tcp.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&response).into_owned())
    };
    let response = match tokio::time::timeout(HTTP_TIMEOUT, exchange).await {
        Ok(Ok(response)) => response,
        _ => return (0, String::new()),
    };
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .lines()
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// `POST /publish/TOPIC` with `body` (one JSON value): the status and the JSON answer
/// (`Value::Null` when the answer is not JSON; status 0 when the request failed).
pub async fn http_publish(addr: &str, topic: &str, body: &str) -> (u16, Value) {
    let (status, text) = http_request(addr, "POST", &format!("/publish/{topic}"), body).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// `GET path`: the status and the body.
pub async fn http_get(addr: &str, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, "").await
}

/// `GET /presence/TOPIC`: the client ids listed (panics unless 200 with the documented shape).
pub async fn http_presence(addr: &str, topic: &str) -> Vec<String> {
    let (status, body) = http_get(addr, &format!("/presence/{topic}")).await;
    assert_eq!(status, 200, "GET /presence/{topic} on {addr}: {body}");
    let json: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("GET /presence/{topic}: not JSON ({e}): {body}"));
    assert_eq!(json["topic"], topic, "{json}");
    client_ids(&json)
}

/// The sorted client ids of a presence answer (`{"clients":[{"client":ID,...}]}`).
pub fn client_ids(presence: &Value) -> Vec<String> {
    let clients = presence["clients"]
        .as_array()
        .unwrap_or_else(|| panic!("no clients array: {presence}"));
    let mut ids: Vec<String> = clients
        .iter()
        .map(|c| match &c["client"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    ids.sort();
    ids
}

/// An acknowledged publish: where it was stored and what it carried.
#[derive(Debug, Clone, PartialEq)]
pub struct Acked {
    pub epoch: String,
    pub offset: u64,
    pub data: Value,
}

/// Parses a `200 {"offset":N,"epoch":"E"}` answer.
pub fn acked(answer: &Value, data: Value) -> Acked {
    Acked {
        epoch: answer["epoch"]
            .as_str()
            .unwrap_or_else(|| panic!("no epoch in {answer}"))
            .to_owned(),
        offset: answer["offset"]
            .as_u64()
            .unwrap_or_else(|| panic!("no offset in {answer}")),
        data,
    }
}

/// Publishes `data` over HTTP, which must succeed: the acknowledgement.
pub async fn publish_ok(addr: &str, topic: &str, data: Value) -> Acked {
    let (status, answer) = http_publish(addr, topic, &data.to_string()).await;
    assert_eq!(status, 200, "POST /publish/{topic} on {addr}: {answer}");
    acked(&answer, data)
}

/// Polls `probe` every 100 ms until it gives `Some`, at most `within`.
pub async fn poll<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A `gap` event as the tracker saw it: the position before and after.
#[derive(Debug, Clone, PartialEq)]
pub struct Gap {
    pub from: (String, u64),
    pub to: (String, u64),
    pub reason: String,
}

/// What may be lost in [`Tracker::assert_delivered`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// Nothing: no `gap` event at all, every acknowledged message received.
    None,
    /// Messages of an epoch that was replaced (Redis lost its data) may be covered by a gap
    /// with reason `epoch` (or by a `subscribed` that answered `since` with another epoch);
    /// those of the last epoch must all arrive.
    EpochChange,
    /// Anything covered by a `gap` event (or a `recovered:false` subscribe).
    Gaps,
}

/// One topic as a client sees it.
#[derive(Debug, Default, Clone)]
pub struct TopicLog {
    /// (epoch, offset) of the last message (or of `subscribed`, or of a gap).
    pub position: Option<(String, u64)>,
    /// Every message received: (epoch, offset, data).
    pub received: Vec<(String, u64, Value)>,
    pub gaps: Vec<Gap>,
    /// Every `subscribed` reply.
    pub subscribed: Vec<Value>,
    /// Offsets received at or below the position (duplicates, out of order).
    pub backwards: Vec<(String, u64, u64)>,
    /// Jumps over offsets with neither gap nor subscribe: (epoch, from, to).
    pub holes: Vec<(String, u64, u64)>,
    /// Positions from which the history was incomplete (`recovered:false` after `since`).
    pub unrecovered: Vec<(String, u64)>,
    /// Positions whose epoch a `subscribed` with `since` answered with another epoch.
    pub restarted: Vec<(String, u64)>,
}

/// Records, per topic, the position and every message a client received, following the
/// protocol's rules, and checks them against acknowledged publishes.
#[derive(Debug, Default, Clone)]
pub struct Tracker {
    pub topics: BTreeMap<String, TopicLog>,
    /// `since` of a pending subscribe, per topic.
    pending_since: HashMap<String, Option<(u64, String)>>,
}

impl Tracker {
    /// A subscribe request was sent for `topic` (with `since` and its epoch for recovery).
    pub fn subscribing(&mut self, topic: &str, since: Option<(u64, &str)>) {
        self.pending_since
            .insert(topic.to_owned(), since.map(|(n, e)| (n, e.to_owned())));
    }

    /// The current position of `topic`: (offset, epoch), as `subscribe` wants it.
    pub fn position(&self, topic: &str) -> Option<(u64, String)> {
        self.topics
            .get(topic)
            .and_then(|log| log.position.clone())
            .map(|(epoch, offset)| (offset, epoch))
    }

    /// Whether `topic` has reached `epoch` at `offset` or beyond.
    pub fn reached(&self, topic: &str, epoch: &str, offset: u64) -> bool {
        self.position(topic)
            .is_some_and(|(o, e)| e == epoch && o >= offset)
    }

    /// Takes one server message into account.
    pub fn observe(&mut self, json: &Value) {
        let Some(topic) = json["topic"].as_str() else {
            return;
        };
        match json["type"].as_str() {
            Some("subscribed") => {
                let epoch = json["epoch"].as_str().unwrap_or_default().to_owned();
                let latest = json["offset"].as_u64().unwrap_or(0);
                let since = self.pending_since.remove(topic).flatten();
                let log = self.topics.entry(topic.to_owned()).or_default();
                log.subscribed.push(json.clone());
                log.position = Some(match since {
                    // Recovery: the replay follows from `since` on.
                    Some((since, since_epoch)) if since_epoch == epoch => {
                        if json["recovered"] != true {
                            log.unrecovered.push((epoch.clone(), since));
                        }
                        (epoch, since.min(latest))
                    }
                    // Another epoch: everything the history holds follows.
                    Some((since, since_epoch)) => {
                        log.unrecovered.push((since_epoch.clone(), since));
                        log.restarted.push((since_epoch, since));
                        (epoch, 0)
                    }
                    None => (epoch, latest),
                });
            }
            Some("message") => {
                let offset = json["offset"].as_u64().unwrap_or(0);
                let log = self.topics.entry(topic.to_owned()).or_default();
                let (epoch, at) = log.position.clone().unwrap_or_default();
                if offset <= at {
                    log.backwards.push((epoch.clone(), at, offset));
                } else if offset > at + 1 {
                    log.holes.push((epoch.clone(), at, offset));
                }
                log.received
                    .push((epoch.clone(), offset, json["data"].clone()));
                if offset > at {
                    log.position = Some((epoch, offset));
                }
            }
            Some("gap") => {
                let log = self.topics.entry(topic.to_owned()).or_default();
                let to = (
                    json["epoch"].as_str().unwrap_or_default().to_owned(),
                    json["offset"].as_u64().unwrap_or(0),
                );
                let from = log.position.clone().unwrap_or_default();
                log.gaps.push(Gap {
                    from,
                    to: to.clone(),
                    reason: json["reason"].as_str().unwrap_or_default().to_owned(),
                });
                log.position = Some(to);
            }
            _ => {}
        }
    }

    /// Asserts that every acknowledged message of `topic` was received exactly once, in
    /// offset order, with its data, or (as `loss` allows) is covered by a gap event.
    pub fn assert_delivered(&self, who: &str, topic: &str, acked: &[Acked], loss: Loss) {
        let empty = TopicLog::default();
        let log = self.topics.get(topic).unwrap_or(&empty);
        let summary = || {
            format!(
                "{who}, topic {topic}: position {:?}; received {} [{}]; gaps {:?}; \
                 subscribed {:?}; holes {:?}; backwards {:?}; acknowledged {} [{}]",
                log.position,
                log.received.len(),
                ranges(log.received.iter().map(|(e, o, _)| (e.as_str(), *o))),
                log.gaps,
                log.subscribed,
                log.holes,
                log.backwards,
                acked.len(),
                ranges(acked.iter().map(|a| (a.epoch.as_str(), a.offset))),
            )
        };
        // Exactly once, in order.
        assert!(
            log.backwards.is_empty(),
            "duplicate or out-of-order messages: {}",
            summary()
        );
        let mut seen = HashSet::new();
        let mut epochs_in_order: Vec<&str> = Vec::new();
        for (epoch, offset, _) in &log.received {
            assert!(
                seen.insert((epoch.as_str(), *offset)),
                "{epoch}:{offset} received twice: {}",
                summary()
            );
            if epochs_in_order.last() != Some(&epoch.as_str()) {
                assert!(
                    !epochs_in_order.contains(&epoch.as_str()),
                    "epoch {epoch} came back: {}",
                    summary()
                );
                epochs_in_order.push(epoch);
            }
        }
        if loss == Loss::None {
            assert!(log.gaps.is_empty(), "unexpected gap events: {}", summary());
        }
        let last_epoch = acked.last().map(|a| a.epoch.as_str());
        let received: HashMap<(&str, u64), &Value> = log
            .received
            .iter()
            .map(|(e, o, d)| ((e.as_str(), *o), d))
            .collect();
        for a in acked {
            match received.get(&(a.epoch.as_str(), a.offset)) {
                Some(data) => assert_eq!(
                    **data,
                    a.data,
                    "{}:{} arrived with other data: {}",
                    a.epoch,
                    a.offset,
                    summary()
                ),
                None => {
                    let covered = match loss {
                        Loss::None => false,
                        Loss::EpochChange => {
                            Some(a.epoch.as_str()) != last_epoch
                                && (log.gaps.iter().any(|g| {
                                    g.reason == "epoch"
                                        && g.from.0 == a.epoch
                                        && g.to.0 != a.epoch
                                        && a.offset > g.from.1
                                }) || log
                                    .restarted
                                    .iter()
                                    .any(|(e, since)| *e == a.epoch && a.offset > *since))
                        }
                        Loss::Gaps => {
                            log.gaps.iter().any(|g| covers(g, a))
                                || log
                                    .unrecovered
                                    .iter()
                                    .any(|(e, since)| *e == a.epoch && a.offset > *since)
                        }
                    };
                    assert!(
                        covered,
                        "acknowledged {}:{} ({}) neither received nor covered by a gap ({loss:?}): {}",
                        a.epoch,
                        a.offset,
                        a.data,
                        summary()
                    );
                }
            }
        }
    }
}

/// Whether a gap event covers the acknowledged message.
fn covers(gap: &Gap, a: &Acked) -> bool {
    let inside = gap.to.0 == a.epoch
        && a.offset <= gap.to.1
        && (gap.from.0 != a.epoch || a.offset > gap.from.1);
    let epoch_ended = gap.from.0 == a.epoch && gap.to.0 != a.epoch && a.offset > gap.from.1;
    inside || epoch_ended
}

/// `EPOCH:1-51, EPOCH:57-60, ...`: runs of consecutive offsets in one epoch.
fn ranges<'a>(items: impl Iterator<Item = (&'a str, u64)>) -> String {
    let mut runs: Vec<(&str, u64, u64)> = Vec::new();
    for (epoch, offset) in items {
        match runs.last_mut() {
            Some((e, _, last)) if *e == epoch && *last + 1 == offset => *last = offset,
            _ => runs.push((epoch, offset, offset)),
        }
    }
    runs.iter()
        .map(|(e, first, last)| {
            if first == last {
                format!("{e}:{first}")
            } else {
                format!("{e}:{first}-{last}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A WebSocket client of `/ws` that feeds everything it reads into a [`Tracker`] and keeps
/// every message in `events`. It remembers its subscriptions, so that [`HubClient::reconnect`]
/// (to the same or another node) resubscribes with `since` and `epoch`.
pub struct HubClient {
    ws: Option<Ws>,
    pub addr: String,
    pub name: String,
    pub tracker: Tracker,
    /// Every message received, in order.
    pub events: Vec<Value>,
    /// Topics subscribed and whether with presence.
    pub subscriptions: BTreeMap<String, bool>,
    /// How many times [`HubClient::reconnect`] ran.
    pub reconnects: usize,
    /// Messages read ahead (while waiting for a reply), for [`HubClient::next_json`].
    unread: VecDeque<Value>,
}

impl HubClient {
    /// Connects to `ws://ADDR/ws`.
    pub async fn connect(name: &str, addr: &str) -> HubClient {
        let (ws, _) = tokio::time::timeout(
            MESSAGE_TIMEOUT,
            fullduplex::connect(format!("ws://{addr}/ws")),
        )
        .await
        .unwrap_or_else(|_| panic!("{name}: connect to {addr} timed out"))
        .unwrap_or_else(|e| panic!("{name}: connect to {addr}: {e}"));
        HubClient {
            ws: Some(ws),
            addr: addr.to_owned(),
            name: name.to_owned(),
            tracker: Tracker::default(),
            events: Vec::new(),
            subscriptions: BTreeMap::new(),
            reconnects: 0,
            unread: VecDeque::new(),
        }
    }

    /// Sends one JSON request.
    pub async fn send_json(&mut self, request: Value) {
        let name = self.name.clone();
        let ws = self.ws.as_mut().expect("connected");
        tokio::time::timeout(MESSAGE_TIMEOUT, ws.send(Message::text(request.to_string())))
            .await
            .unwrap_or_else(|_| panic!("{name}: send timed out"))
            .unwrap_or_else(|e| panic!("{name}: send {request}: {e}"));
    }

    /// Reads one message off the connection (within `within`): `Ok(None)` on timeout,
    /// `Err` when the connection ended.
    async fn read_raw(&mut self, within: Duration) -> Result<Option<Value>, String> {
        let Some(ws) = self.ws.as_mut() else {
            return Err("not connected".into());
        };
        let message = match tokio::time::timeout(within, ws.recv()).await {
            Err(_) => return Ok(None),
            Ok(None) => return Err("the connection ended".into()),
            Ok(Some(Err(e))) => return Err(format!("the connection failed: {e}")),
            Ok(Some(Ok(message))) => message,
        };
        let Some(text) = message.as_text() else {
            return Err(format!("not a text message: {message:?}"));
        };
        let json: Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON ({e}): {text}"))?;
        self.tracker.observe(&json);
        self.events.push(json.clone());
        Ok(Some(json))
    }

    /// The next message (read ahead earlier, or off the connection) within `within`:
    /// `Ok(None)` on timeout, `Err` when the connection ended.
    pub async fn read_within(&mut self, within: Duration) -> Result<Option<Value>, String> {
        match self.unread.pop_front() {
            Some(json) => Ok(Some(json)),
            None => self.read_raw(within).await,
        }
    }

    /// The next message, within [`MESSAGE_TIMEOUT`].
    pub async fn next_json(&mut self) -> Value {
        match self.read_within(MESSAGE_TIMEOUT).await {
            Ok(Some(json)) => json,
            Ok(None) => panic!("{}: no message within {MESSAGE_TIMEOUT:?}", self.name),
            Err(e) => panic!("{}: {e}", self.name),
        }
    }

    /// The next message satisfying `matches` within `within`; the ones before it stay
    /// unread (for `next_json`).
    async fn try_wait_for(
        &mut self,
        within: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> Result<Option<Value>, String> {
        if let Some(i) = self.unread.iter().position(&matches) {
            return Ok(self.unread.remove(i));
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_raw(left).await? {
                Some(json) if matches(&json) => return Ok(Some(json)),
                Some(json) => self.unread.push_back(json),
                None => return Ok(None),
            }
        }
    }

    /// The next message satisfying `matches` within `within` (panics otherwise); the ones
    /// before it stay unread (for `next_json`).
    pub async fn wait_for(&mut self, within: Duration, matches: impl Fn(&Value) -> bool) -> Value {
        match self.try_wait_for(within, matches).await {
            Ok(Some(json)) => json,
            Ok(None) => panic!(
                "{}: no matching message within {within:?}; unread: {:?}",
                self.name, self.unread
            ),
            Err(e) => panic!("{}: {e}", self.name),
        }
    }

    /// Subscribes and gives back the `subscribed` reply (panics on an `error` reply).
    pub async fn subscribe(
        &mut self,
        topic: &str,
        since: Option<(u64, &str)>,
        presence: bool,
    ) -> Value {
        let reply = self.try_subscribe(topic, since, presence).await;
        assert_eq!(
            reply["type"], "subscribed",
            "{}: subscribe to {topic}: {reply}",
            self.name
        );
        reply
    }

    /// Subscribes: the `subscribed` or `error` reply.
    pub async fn try_subscribe(
        &mut self,
        topic: &str,
        since: Option<(u64, &str)>,
        presence: bool,
    ) -> Value {
        let mut request = json!({"type": "subscribe", "topic": topic});
        if let Some((since, epoch)) = since {
            request["since"] = json!(since);
            request["epoch"] = json!(epoch);
        }
        if presence {
            request["presence"] = json!(true);
        }
        self.tracker.subscribing(topic, since);
        self.send_json(request).await;
        let reply = self
            .wait_for(MESSAGE_TIMEOUT, |m| {
                m["topic"] == topic && (m["type"] == "subscribed" || m["type"] == "error")
            })
            .await;
        if reply["type"] == "subscribed" {
            self.subscriptions.insert(topic.to_owned(), presence);
        }
        reply
    }

    /// Unsubscribes: the reply (`unsubscribed` or `error`).
    pub async fn unsubscribe(&mut self, topic: &str) -> Value {
        self.send_json(json!({"type": "unsubscribe", "topic": topic}))
            .await;
        self.subscriptions.remove(topic);
        self.wait_for(MESSAGE_TIMEOUT, |m| {
            m["topic"] == topic && (m["type"] == "unsubscribed" || m["type"] == "error")
        })
        .await
    }

    /// Publishes over the WebSocket (not acknowledged).
    pub async fn publish(&mut self, topic: &str, data: Value) {
        self.send_json(json!({"type": "publish", "topic": topic, "data": data}))
            .await;
    }

    /// Asks for the topic's presence: the `presence` reply.
    pub async fn presence(&mut self, topic: &str) -> Value {
        self.send_json(json!({"type": "presence", "topic": topic}))
            .await;
        self.wait_for(MESSAGE_TIMEOUT, |m| {
            m["topic"] == topic && (m["type"] == "presence" || m["type"] == "error")
        })
        .await
    }

    /// Closes the connection (without reading on).
    pub fn disconnect(&mut self) {
        self.ws = None;
    }

    /// Connects to `addr` (after closing the current connection, if any) and resubscribes
    /// to every topic from its position (`since` and `epoch`), retrying for `within` while the
    /// node refuses (it may be unavailable). Gives the `subscribed` replies.
    pub async fn reconnect(&mut self, addr: &str, within: Duration) -> Vec<Value> {
        self.ws = None;
        self.reconnects += 1;
        self.addr = addr.to_owned();
        let deadline = Instant::now() + within;
        'attempt: loop {
            assert!(
                Instant::now() < deadline,
                "{}: could not reconnect to {addr} within {within:?}",
                self.name
            );
            self.ws = None;
            match tokio::time::timeout(
                MESSAGE_TIMEOUT,
                fullduplex::connect(format!("ws://{addr}/ws")),
            )
            .await
            {
                Ok(Ok((ws, _))) => self.ws = Some(ws),
                _ => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
            let mut replies = Vec::new();
            let topics: Vec<(String, bool)> = self
                .subscriptions
                .iter()
                .map(|(t, p)| (t.clone(), *p))
                .collect();
            for (topic, presence) in topics {
                let position = self.tracker.position(&topic);
                let since = position.as_ref().map(|(o, e)| (*o, e.as_str()));
                let mut request = json!({"type": "subscribe", "topic": topic});
                if let Some((since, epoch)) = since {
                    request["since"] = json!(since);
                    request["epoch"] = json!(epoch);
                }
                if presence {
                    request["presence"] = json!(true);
                }
                self.tracker.subscribing(&topic, since);
                let ws = self.ws.as_mut().expect("connected");
                if ws.send(Message::text(request.to_string())).await.is_err() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue 'attempt;
                }
                let wanted = topic.clone();
                let reply = match self
                    .try_wait_for(MESSAGE_TIMEOUT, |m| {
                        m["topic"] == wanted.as_str()
                            && (m["type"] == "subscribed" || m["type"] == "error")
                    })
                    .await
                {
                    Ok(Some(reply)) => reply,
                    _ => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue 'attempt;
                    }
                };
                if reply["type"] != "subscribed" {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue 'attempt;
                }
                replies.push(reply);
            }
            return replies;
        }
    }

    /// Reads everything until every `(topic, epoch, offset)` target is reached, at most
    /// `within`. When the connection ends, reconnects to the same node (recovering with
    /// `since`) unless `reconnect` is false.
    pub async fn read_until(
        &mut self,
        targets: &[(String, String, u64)],
        within: Duration,
        reconnect: bool,
    ) {
        let deadline = Instant::now() + within;
        loop {
            if targets
                .iter()
                .all(|(t, e, o)| self.tracker.reached(t, e, *o))
            {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let positions: Vec<_> = targets
                    .iter()
                    .map(|(t, _, _)| (t.clone(), self.tracker.position(t)))
                    .collect();
                panic!(
                    "{}: targets {targets:?} not reached within {within:?}: positions {positions:?}",
                    self.name
                );
            }
            match self.read_within(left.min(Duration::from_secs(1))).await {
                Ok(_) => {}
                Err(e) if reconnect => {
                    eprintln!("{}: {e}; reconnecting to {}", self.name, self.addr);
                    let addr = self.addr.clone();
                    self.reconnect(&addr, left).await;
                }
                Err(e) => panic!("{}: {e}", self.name),
            }
        }
    }

    /// Reads on in a task of its own until [`Pump::finish`]: the client keeps up while the
    /// test does other things.
    pub fn pump(self) -> Pump {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(pump(self, stop_rx));
        Pump {
            stop: Some(stop_tx),
            task,
        }
    }
}

type Targets = (Vec<(String, String, u64)>, Duration);

async fn pump(
    mut client: HubClient,
    mut stop: tokio::sync::oneshot::Receiver<Targets>,
) -> HubClient {
    loop {
        tokio::select! {
            targets = &mut stop => {
                if let Ok((targets, within)) = targets {
                    client.read_until(&targets, within, true).await;
                }
                return client;
            }
            read = client.read_within(Duration::from_millis(500)) => {
                if let Err(e) = read {
                    eprintln!("{}: {e}; reconnecting to {}", client.name, client.addr);
                    let addr = client.addr.clone();
                    client.reconnect(&addr, Duration::from_secs(30)).await;
                }
            }
        }
    }
}

/// A [`HubClient`] reading in a task of its own.
pub struct Pump {
    stop: Option<tokio::sync::oneshot::Sender<Targets>>,
    task: tokio::task::JoinHandle<HubClient>,
}

impl Pump {
    /// Lets the client read on until every `(topic, epoch, offset)` target is reached (at
    /// most `within`), then gives it back.
    pub async fn finish(
        mut self,
        targets: Vec<(String, String, u64)>,
        within: Duration,
    ) -> HubClient {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send((targets, within));
        }
        match self.task.await {
            Ok(client) => client,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("the client task failed: {e}"),
        }
    }
}

/// The `(topic, epoch, offset)` target of the last acknowledged publish.
pub fn last_target(topic: &str, acked: &[Acked]) -> Vec<(String, String, u64)> {
    acked
        .last()
        .map(|a| vec![(topic.to_owned(), a.epoch.clone(), a.offset)])
        .unwrap_or_default()
}

//! Multi-node benchmark: three hub nodes (child processes of this program) and one
//! `redis-server` on this machine, all started here and stopped at the end.
//!
//! ```text
//! cargo run --release -p fullduplex-hub --example cluster -- --rates 1000,4000,0 --seconds 5
//! ```
//!
//! Node A and node B each hold `--subscribers` WebSocket subscribers of topic `bench`; node C
//! holds none of `bench` (only one subscriber of `quiet`, a topic nobody publishes to), and
//! `--publishers` WebSocket publishers on node C publish to `bench`, open loop at each rate of
//! `--rates` (messages per second over all publishers; 0: as fast as Redis takes them, with
//! at most 64 in flight per publisher). Every message carries its send time. Per rate it
//! reports:
//! * publishes/s sustained: messages delivered to every subscriber, per second;
//! * publish-to-delivery latency p50/p99/max over every delivery;
//! * Redis's CPU time per published message, and each node's (`/proc/PID/stat`);
//! * the bytes node C received from Redis for topics without subscribers on it (its
//!   `fdx_hub_engine_unwanted_bytes_total`), which per-topic subscriptions keep at zero,
//!   beside the bytes A received for `bench`.
//!
//! First, in the same run, the same load against one node on the in-process engine (all
//! subscribers and publishers on it), as the baseline the Redis engine costs against.
//!
//! With `--node ADDR REDIS_URL` the program is a hub node itself (a child of a run; the URL
//! `memory` runs the in-process engine).

#[path = "support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fullduplex::Message;
use hdrhistogram::Histogram;
use support::{cpu, now_ns, sent_at};
use tokio::io::{AsyncBufReadExt, BufReader};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Ws = fullduplex::WebSocket<fullduplex::MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Debug, Clone)]
struct Options {
    subscribers: usize,
    publishers: usize,
    rates: Vec<u64>,
    seconds: u64,
    size: usize,
    node: Option<(String, String)>,
}

fn options() -> Result<Options, Error> {
    let mut options = Options {
        subscribers: 100,
        publishers: 4,
        rates: vec![1000, 4000, 0],
        seconds: 5,
        size: 64,
        node: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--subscribers" => options.subscribers = value()?.parse()?,
            "--publishers" => options.publishers = value()?.parse::<usize>()?.max(1),
            "--rates" => {
                options.rates = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            "--seconds" => options.seconds = value()?.parse()?,
            "--size" => options.size = value()?.parse()?,
            "--node" => options.node = Some((value()?, value()?)),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(options)
}

fn main() -> Result<(), Error> {
    let options = options()?;
    if let Some((addr, redis)) = &options.node {
        return node(addr, redis);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bench(options))
}

/// A hub node on the Redis engine, as a child process.
fn node(addr: &str, redis: &str) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut config = support::bench_config();
        config.max_queued_bytes = 64 << 20;
        config.redis = (redis != "memory").then(|| fullduplex_hub::RedisConfig {
            urls: vec![redis.to_owned()],
            cluster: false,
        });
        let hub = fullduplex_hub::Hub::new(config);
        hub.start_engine().await?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("listening on {}", listener.local_addr()?);
        hub.serve(listener).await?;
        Ok(())
    })
}

/// A child process, killed by PID when dropped.
struct Child(tokio::process::Child);

impl Child {
    fn pid(&self) -> u32 {
        self.0.id().unwrap_or(0)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

fn free_port() -> Result<u16, Error> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `redis-server` on a free port, without persistence.
async fn start_redis() -> Result<(Child, String), Error> {
    let port = free_port()?;
    let dir = std::env::temp_dir().join(format!("fdx-cluster-bench-{port}"));
    std::fs::create_dir_all(&dir)?;
    let child = tokio::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start redis-server ({e}): apt-get install redis-server"))?;
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok((Child(child), format!("redis://127.0.0.1:{port}/")));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err("redis-server did not listen".into())
}

/// A node of this program, and its address.
async fn start_node(redis: &str) -> Result<(Child, String), Error> {
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["--node", "127.0.0.1:0", redis])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(15), lines.next_line())
        .await??
        .ok_or("the node exited")?;
    let addr = line
        .strip_prefix("listening on ")
        .ok_or_else(|| format!("unexpected: {line}"))?
        .to_owned();
    // Keep reading so that the pipe never fills.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((Child(child), addr))
}

/// A counter read from a node's `/metrics`.
async fn metric(addr: &str, name: &str) -> Result<u64, Error> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await?;
    let mut text = String::new();
    tcp.read_to_string(&mut text).await?;
    let line = text
        .lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))
        .ok_or_else(|| format!("no metric {name}"))?;
    Ok(line[name.len()..].trim().parse()?)
}

async fn subscribe(addr: &str, topic: &str) -> Result<Ws, Error> {
    let (mut ws, _) = fullduplex::connect(format!("ws://{addr}/ws")).await?;
    ws.send(Message::text(format!(
        r#"{{"type":"subscribe","topic":"{topic}"}}"#
    )))
    .await?;
    match ws.recv().await {
        Some(Ok(message)) if message.as_text().is_some_and(|t| t.contains("subscribed")) => Ok(ws),
        other => Err(format!("no subscribed reply: {other:?}").into()),
    }
}

struct Shared {
    deliveries: AtomicU64,
    latency: Mutex<Histogram<u64>>,
}

/// `subscribers` subscribers of `bench` on each of `addrs`, counting into `shared`.
async fn subscribers(addrs: &[&str], count: usize, shared: &Arc<Shared>) -> Result<(), Error> {
    for addr in addrs {
        for _ in 0..count {
            let mut ws = subscribe(addr, "bench").await?;
            let shared = shared.clone();
            tokio::spawn(async move {
                while let Some(Ok(message)) = ws.recv().await {
                    let Some(text) = message.as_text() else {
                        continue;
                    };
                    if let Some(sent) = sent_at(text) {
                        let took = now_ns().saturating_sub(sent).max(1);
                        if let Ok(mut histogram) = shared.latency.lock() {
                            let _ = histogram.record(took);
                        }
                        shared.deliveries.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    }
    Ok(())
}

/// What one setup is measured with.
struct Setup<'a> {
    label: &'a str,
    /// PIDs of the nodes that hold subscribers, the publishers' node and Redis (if any).
    subscriber_nodes: Vec<u32>,
    /// The publishers' node when it holds no subscribers (its CPU is then reported apart).
    publisher_node: Option<u32>,
    redis: Option<u32>,
    receivers: u64,
}

/// Publishes at each rate of `options` from `publishers` and prints one row per rate.
async fn run_rates(
    options: &Options,
    setup: &Setup<'_>,
    publishers: &mut Vec<Ws>,
    shared: &Arc<Shared>,
) -> Result<(), Error> {
    let pad = "x".repeat(options.size.saturating_sub(60));
    for &rate in &options.rates {
        shared.deliveries.store(0, Ordering::Relaxed);
        if let Ok(mut histogram) = shared.latency.lock() {
            histogram.reset();
        }
        let nodes_before: Vec<Duration> = setup.subscriber_nodes.iter().map(|&p| cpu(p)).collect();
        let publisher_before = setup.publisher_node.map(cpu);
        let redis_before = setup.redis.map(cpu);
        let started = Instant::now();
        let deadline = started + Duration::from_secs(options.seconds);
        let mut sent = 0u64;
        let per_publisher = if rate == 0 {
            0
        } else {
            rate.div_ceil(publishers.len() as u64)
        };
        let mut tasks = Vec::new();
        for mut ws in std::mem::take(publishers) {
            let pad = pad.clone();
            tasks.push(tokio::spawn(async move {
                let mut count = 0u64;
                let start = Instant::now();
                while Instant::now() < deadline {
                    let batch = if per_publisher == 0 {
                        64
                    } else {
                        let due = per_publisher * start.elapsed().as_micros() as u64 / 1_000_000;
                        due.saturating_sub(count).min(1000)
                    };
                    for _ in 0..batch {
                        let text = format!(
                            r#"{{"type":"publish","topic":"bench","data":{{"t":{},"p":"{pad}"}}}}"#,
                            now_ns()
                        );
                        if ws.feed(Message::text(text)).await.is_err() {
                            return (ws, count);
                        }
                        count += 1;
                    }
                    if ws.flush().await.is_err() {
                        return (ws, count);
                    }
                    let pause = if per_publisher == 0 { 1 } else { 2 };
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                (ws, count)
            }));
        }
        for task in tasks {
            let (ws, count) = task.await?;
            sent += count;
            publishers.push(ws);
        }
        // Wait for the deliveries to drain (at most 10 s more).
        let target = sent * setup.receivers;
        let drain_deadline = Instant::now() + Duration::from_secs(10);
        while shared.deliveries.load(Ordering::Relaxed) < target && Instant::now() < drain_deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let delivered = shared.deliveries.load(Ordering::Relaxed);
        let subscriber_cpu: Duration = setup
            .subscriber_nodes
            .iter()
            .zip(&nodes_before)
            .map(|(&p, before)| cpu(p).saturating_sub(*before))
            .sum();
        let publisher_cpu = match (setup.publisher_node, publisher_before) {
            (Some(pid), Some(before)) => format!(
                "{:.1} µs",
                cpu(pid).saturating_sub(before).as_secs_f64() * 1e6 / sent.max(1) as f64
            ),
            _ => "-".to_owned(),
        };
        let (p50, p99, max) = shared.latency.lock().map_or((0, 0, 0), |h| {
            (h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max())
        });
        let per = |d: Duration, n: u64| d.as_secs_f64() * 1e6 / n.max(1) as f64;
        let redis_cpu = match (setup.redis, redis_before) {
            (Some(pid), Some(before)) => {
                format!("{:.1} µs", per(cpu(pid).saturating_sub(before), sent))
            }
            _ => "-".to_owned(),
        };
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {redis_cpu} | {publisher_cpu} | {:.2} µs |",
            setup.label,
            if rate == 0 { "max".to_owned() } else { rate.to_string() },
            delivered as f64 / setup.receivers.max(1) as f64 / elapsed,
            delivered as f64 / elapsed,
            p50 as f64 / 1e6,
            p99 as f64 / 1e6,
            max as f64 / 1e6,
            per(subscriber_cpu, delivered),
        );
        if delivered < target {
            println!("  (only {delivered} of {target} deliveries arrived within 10 s after the last publish)");
        }
    }
    Ok(())
}

async fn bench(options: Options) -> Result<(), Error> {
    println!(
        "{} subscribers on each of two nodes (or {} on the single node), {} publishers, {} B messages",
        options.subscribers,
        2 * options.subscribers,
        options.publishers,
        options.size
    );
    println!(
        "\n| engine | rate asked (msg/s) | publishes/s delivered | deliveries/s | p50 | p99 | max | Redis CPU per message | publishing node CPU per message | subscribers' nodes CPU per delivery (in-process: all of it) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    // The in-process engine, one node: subscribers and publishers on it.
    {
        let (single, addr) = start_node("memory").await?;
        let shared = Arc::new(Shared {
            deliveries: AtomicU64::new(0),
            latency: Mutex::new(Histogram::new_with_bounds(1, 60_000_000_000, 3)?),
        });
        subscribers(&[&addr, &addr], options.subscribers, &shared).await?;
        let mut publishers = Vec::new();
        for _ in 0..options.publishers {
            publishers.push(fullduplex::connect(format!("ws://{addr}/ws")).await?.0);
        }
        let setup = Setup {
            label: "in-process, 1 node",
            subscriber_nodes: vec![single.pid()],
            publisher_node: None,
            redis: None,
            receivers: 2 * options.subscribers as u64,
        };
        run_rates(&options, &setup, &mut publishers, &shared).await?;
    }
    let (redis, url) = start_redis().await?;
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(start_node(&url).await?);
    }
    let (a, b, c) = (nodes[0].1.clone(), nodes[1].1.clone(), nodes[2].1.clone());
    let shared = Arc::new(Shared {
        deliveries: AtomicU64::new(0),
        latency: Mutex::new(Histogram::new_with_bounds(1, 60_000_000_000, 3)?),
    });
    subscribers(&[&a, &b], options.subscribers, &shared).await?;
    let _quiet = subscribe(&c, "quiet").await?;
    let mut publishers = Vec::new();
    for _ in 0..options.publishers {
        publishers.push(fullduplex::connect(format!("ws://{c}/ws")).await?.0);
    }
    let setup = Setup {
        label: "Redis, 3 nodes",
        subscriber_nodes: vec![nodes[0].0.pid(), nodes[1].0.pid()],
        publisher_node: Some(nodes[2].0.pid()),
        redis: Some(redis.pid()),
        receivers: 2 * options.subscribers as u64,
    };
    run_rates(&options, &setup, &mut publishers, &shared).await?;
    let unwanted_c = metric(&c, "fdx_hub_engine_unwanted_bytes_total").await?;
    let in_c = metric(&c, "fdx_hub_engine_bytes_in_total").await?;
    let in_a = metric(&a, "fdx_hub_engine_bytes_in_total").await?;
    println!(
        "\nbytes received from Redis: node A (subscribers of `bench`) {in_a}; node C (none of `bench`) {in_c}, of which for topics without subscribers there {unwanted_c}"
    );
    Ok(())
}

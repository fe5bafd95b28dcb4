//! Fan-out benchmark: N WebSocket subscribers on one topic of a hub running in a child
//! process; one publisher.
//!
//! ```text
//! cargo run --release -p fullduplex-hub --example fanout -- --subscribers 10000 --pin
//! ```
//!
//! Reports, for the hub process:
//! * memory per idle subscriber: RSS growth (`VmRSS`) from before the subscribers connect to
//!   when all are subscribed and idle, divided by their number; beside it the growth of the
//!   heap bytes in use (glibc's `mallinfo2`, asked of the hub over its stdin), which tells
//!   live data from the allocator's free space;
//! * deliveries per second: a burst of `--burst` messages published back to back, timed from
//!   the first publish until every subscriber has every message;
//! * publish-to-delivery latency p50/p99/max: `--rate` messages per second for `--seconds`,
//!   each carrying its send time, measured at every subscriber;
//! * the hub's CPU time per delivery in both phases (`/proc/PID/stat`).
//!
//! `--pin` runs the hub on CPU 0 and this load generator on CPU 1 (`taskset`). The open-file
//! limit must allow the subscribers (check `ulimit -n`).
//!
//! With `--serve ADDR` the program is the hub itself (the child of a benchmark run).

#[path = "support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fullduplex::Message;
use hdrhistogram::Histogram;
use support::{cpu, now_ns, sent_at};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone)]
struct Options {
    subscribers: usize,
    burst: u64,
    rate: u64,
    seconds: u64,
    size: usize,
    pin: bool,
    serve: Option<String>,
}

fn options() -> Result<Options, Error> {
    let mut options = Options {
        subscribers: 10_000,
        burst: 100,
        rate: 20,
        seconds: 5,
        size: 64,
        pin: false,
        serve: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--subscribers" => options.subscribers = value()?.parse()?,
            "--burst" => options.burst = value()?.parse()?,
            "--rate" => options.rate = value()?.parse()?,
            "--seconds" => options.seconds = value()?.parse()?,
            "--size" => options.size = value()?.parse()?,
            "--pin" => options.pin = true,
            "--serve" => options.serve = Some(value()?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(options)
}

fn main() -> Result<(), Error> {
    let options = options()?;
    if let Some(addr) = &options.serve {
        return serve(addr);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bench(options))
}

/// The hub, as the child process: no clock, no limits in the way.
fn serve(addr: &str) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let config = support::bench_config();
        let hub = fullduplex_hub::Hub::new(config);
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("listening on {}", listener.local_addr()?);
        answer_heap_queries();
        hub.serve(listener).await?;
        Ok(())
    })
}

/// In the hub: every line on stdin is answered with `heap N`, the bytes the allocator has
/// handed out and not had back (glibc's `mallinfo2`: `uordblks` + `hblkhd`).
fn answer_heap_queries() {
    std::thread::spawn(|| {
        let mut line = String::new();
        while matches!(std::io::stdin().read_line(&mut line), Ok(n) if n > 0) {
            // SAFETY: mallinfo2 only reads the allocator's counters.
            let info = unsafe { libc::mallinfo2() };
            println!("heap {}", info.uordblks + info.hblkhd);
            line.clear();
        }
    });
}

/// Asks the hub for its heap bytes in use (see [`answer_heap_queries`]).
async fn heap_in_use(
    stdin: &mut tokio::process::ChildStdin,
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> Result<u64, Error> {
    stdin.write_all(b"heap\n").await?;
    let line = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
        .await??
        .ok_or("the hub exited")?;
    Ok(line
        .strip_prefix("heap ")
        .ok_or("unexpected hub output")?
        .parse()?)
}

/// Resident memory of `pid`, bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}

struct Shared {
    deliveries: AtomicU64,
    latency: Mutex<Histogram<u64>>,
    measure: std::sync::atomic::AtomicBool,
}

async fn bench(options: Options) -> Result<(), Error> {
    let exe = std::env::current_exe()?;
    let mut command = if options.pin {
        let mut command = tokio::process::Command::new("taskset");
        command.args(["-c", "0"]).arg(&exe);
        command
    } else {
        tokio::process::Command::new(&exe)
    };
    let mut child = command
        .args(["--serve", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stdin(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().ok_or("no child pid")?;
    if options.pin {
        let me = std::process::id().to_string();
        std::process::Command::new("taskset")
            .args(["-p", "-c", "1", &me])
            .stdout(std::process::Stdio::null())
            .status()?;
    }
    let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let mut hub_stdin = child.stdin.take().ok_or("no stdin")?;
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await??
        .ok_or("the hub did not start")?;
    let addr = line
        .strip_prefix("listening on ")
        .ok_or("unexpected hub output")?
        .to_owned();
    let url = format!("ws://{addr}/ws");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = rss(pid);
    let heap_before = heap_in_use(&mut hub_stdin, &mut lines).await?;

    // Subscribers, connected 200 at a time.
    let shared = Arc::new(Shared {
        deliveries: AtomicU64::new(0),
        latency: Mutex::new(Histogram::new_with_bounds(1_000, 60_000_000_000, 3)?),
        measure: std::sync::atomic::AtomicBool::new(false),
    });
    let started = Instant::now();
    let mut connected = 0;
    while connected < options.subscribers {
        let batch = (options.subscribers - connected).min(200);
        let mut handshakes = Vec::with_capacity(batch);
        for _ in 0..batch {
            let url = url.clone();
            handshakes.push(tokio::spawn(async move {
                let (mut ws, _) = fullduplex::connect(url).await?;
                ws.send(Message::text(r#"{"type":"subscribe","topic":"fan"}"#))
                    .await?;
                match ws.recv().await {
                    Some(Ok(Message::Text(t))) if t.as_str().contains("subscribed") => Ok(ws),
                    other => Err(format!("no subscribed reply: {other:?}").into()),
                }
            }));
        }
        for handshake in handshakes {
            let ws: fullduplex::WebSocket<_> = handshake.await?.map_err(|e: Error| e)?;
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut ws = ws;
                while let Some(Ok(message)) = ws.recv().await {
                    if let Message::Text(text) = message {
                        shared.deliveries.fetch_add(1, Ordering::Relaxed);
                        if shared.measure.load(Ordering::Relaxed) {
                            if let Some(t) = sent_at(text.as_str()) {
                                let latency = now_ns().saturating_sub(t).max(1_000);
                                if let Ok(mut histogram) = shared.latency.lock() {
                                    let _ = histogram.record(latency);
                                }
                            }
                        }
                    }
                }
            });
        }
        connected += batch;
    }
    let connect_time = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = rss(pid);
    let per_subscriber = rss_after.saturating_sub(rss_before) as f64 / options.subscribers as f64;
    let heap_after = heap_in_use(&mut hub_stdin, &mut lines).await?;
    let heap_per_subscriber =
        heap_after.saturating_sub(heap_before) as f64 / options.subscribers as f64;

    let (mut publisher, _) = fullduplex::connect(url.clone()).await?;
    let pad = "x".repeat(options.size.saturating_sub(30));
    let subscribers = options.subscribers as u64;

    // Phase 1: a burst, back to back.
    let cpu_before = cpu(pid);
    let burst_start = Instant::now();
    for _ in 0..options.burst {
        let message = format!(
            r#"{{"type":"publish","topic":"fan","data":{{"t":{},"pad":"{pad}"}}}}"#,
            now_ns()
        );
        publisher.feed(Message::text(message)).await?;
    }
    publisher.flush().await?;
    let target = options.burst * subscribers;
    while shared.deliveries.load(Ordering::Relaxed) < target {
        if burst_start.elapsed() > Duration::from_secs(120) {
            return Err("the burst did not arrive within 120 s".into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let burst_time = burst_start.elapsed();
    let burst_cpu = cpu(pid).saturating_sub(cpu_before);
    let deliveries_per_second = target as f64 / burst_time.as_secs_f64();

    // Phase 2: a steady rate, latency measured at every subscriber.
    tokio::time::sleep(Duration::from_millis(500)).await;
    shared.measure.store(true, Ordering::Relaxed);
    let delivered_before = shared.deliveries.load(Ordering::Relaxed);
    let cpu_before = cpu(pid);
    let count = options.rate * options.seconds;
    let mut ticks =
        tokio::time::interval(Duration::from_secs_f64(1.0 / options.rate.max(1) as f64));
    for _ in 0..count {
        ticks.tick().await;
        let message = format!(
            r#"{{"type":"publish","topic":"fan","data":{{"t":{},"pad":"{pad}"}}}}"#,
            now_ns()
        );
        publisher.send(Message::text(message)).await?;
    }
    let target = delivered_before + count * subscribers;
    let wait_start = Instant::now();
    while shared.deliveries.load(Ordering::Relaxed) < target {
        if wait_start.elapsed() > Duration::from_secs(60) {
            return Err("the steady phase did not arrive within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let steady_cpu = cpu(pid).saturating_sub(cpu_before);
    let histogram = shared.latency.lock().map_err(|_| "poisoned")?.clone();
    let ms = |ns: u64| ns as f64 / 1e6;

    println!(
        "fan-out: {} subscribers on one topic, {} B messages{}",
        options.subscribers,
        options.size,
        if options.pin {
            ", hub on CPU 0, load on CPU 1"
        } else {
            ""
        }
    );
    println!(
        "  connect + subscribe      {:.1} s",
        connect_time.as_secs_f64()
    );
    println!(
        "  hub RSS                  {:.1} MB before, {:.1} MB with subscribers: {:.0} B per idle subscriber ({:.0} B of it heap in use)",
        rss_before as f64 / 1e6,
        rss_after as f64 / 1e6,
        per_subscriber,
        heap_per_subscriber
    );
    println!(
        "  burst                    {} messages -> {} deliveries in {:.3} s: {:.0} deliveries/s, hub CPU {:.2} us/delivery",
        options.burst,
        options.burst * subscribers,
        burst_time.as_secs_f64(),
        deliveries_per_second,
        burst_cpu.as_secs_f64() * 1e6 / (options.burst * subscribers) as f64
    );
    println!(
        "  steady {} msg/s for {} s   latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} deliveries; hub CPU {:.2} us/delivery",
        options.rate,
        options.seconds,
        ms(histogram.value_at_quantile(0.5)),
        ms(histogram.value_at_quantile(0.99)),
        ms(histogram.max()),
        histogram.len(),
        steady_cpu.as_secs_f64() * 1e6 / (count * subscribers) as f64
    );
    let report = serde_json::json!({
        "subscribers": options.subscribers,
        "size": options.size,
        "pinned": options.pin,
        "rss_before": rss_before,
        "rss_after": rss_after,
        "bytes_per_idle_subscriber": per_subscriber,
        "heap_bytes_per_idle_subscriber": heap_per_subscriber,
        "burst_messages": options.burst,
        "burst_seconds": burst_time.as_secs_f64(),
        "deliveries_per_second": deliveries_per_second,
        "burst_cpu_us_per_delivery": burst_cpu.as_secs_f64() * 1e6 / (options.burst * subscribers) as f64,
        "steady_rate": options.rate,
        "latency_p50_ms": ms(histogram.value_at_quantile(0.5)),
        "latency_p99_ms": ms(histogram.value_at_quantile(0.99)),
        "latency_max_ms": ms(histogram.max()),
        "steady_cpu_us_per_delivery": steady_cpu.as_secs_f64() * 1e6 / (count * subscribers) as f64,
    });
    println!("{report}");
    let _ = child.kill().await;
    Ok(())
}

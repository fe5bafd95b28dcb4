//! The load generator (`fullduplex-bench load`): closed-loop echo clients with pre-encoded
//! masked frames, idle connections, and handshake churn. It is cheap on purpose (no WebSocket
//! library: frames are encoded once and echoes are parsed without copying), so that more of
//! the machine measures the server. It prints the same JSON object as `fdx bench --json`,
//! preceded by event lines the runner uses to sample the server:
//! `{"event":"measure_start"}`, `{"event":"measure_stop"}`, `{"event":"idle_ready",...}`,
//! `{"event":"echo_done",...}`.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use fullduplex_loadgen::{FrameCounter, LatencySummary, LoadMode, LoadReport};
use fullduplex_proto::frame::OpCode;
use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::LocalSet;

use crate::frames;

/// What to generate.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// `HOST:PORT` or `ws://HOST:PORT/`.
    pub url: String,
    /// Connections (echo mode), or concurrent handshakes (handshake mode).
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 16)]
    pub size: usize,
    /// Messages in flight per connection.
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// Binary messages (default text).
    #[arg(long)]
    pub binary: bool,
    /// Offer permessage-deflate and send JSON-like text compressed.
    #[arg(long)]
    pub compress: bool,
    /// No WebSocket handshake (the plain TCP echo).
    #[arg(long)]
    pub raw: bool,
    /// Seconds measured (after the warm-up).
    #[arg(long, default_value_t = 3.0)]
    pub duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Echo exactly this many messages per connection, then close (no warm-up, no clock).
    #[arg(long)]
    pub messages: Option<u64>,
    /// Open this many idle connections; on a stdin line `echo` send one message of `--size`
    /// bytes on each; exit at stdin EOF.
    #[arg(long)]
    pub idle: Option<usize>,
    /// Measure handshakes per second (connect, upgrade, close).
    #[arg(long)]
    pub handshakes: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Warmup,
    Measure,
    Stop,
}

struct Shared {
    phase: Cell<Phase>,
    messages: Cell<u64>,
    handshakes: Cell<u64>,
    errors: Cell<u64>,
    first_error: RefCell<Option<String>>,
    latency: RefCell<Histogram<u64>>,
}

impl Shared {
    fn new() -> Rc<Shared> {
        Rc::new(Shared {
            phase: Cell::new(Phase::Warmup),
            messages: Cell::new(0),
            handshakes: Cell::new(0),
            errors: Cell::new(0),
            first_error: RefCell::new(None),
            latency: RefCell::new(Histogram::new_with_bounds(1, 600_000_000, 3).expect("bounds")),
        })
    }

    fn error(&self, error: String) {
        self.errors.set(self.errors.get() + 1);
        self.first_error.borrow_mut().get_or_insert(error);
    }
}

/// Runs the generator to completion and prints its events and report on stdout.
pub fn run(args: LoadArgs) -> Result<(), String> {
    crate::serve::raise_nofile_limit();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let local = LocalSet::new();
    let report = local.block_on(&runtime, async move {
        if args.handshakes {
            handshakes(args).await
        } else if args.idle.is_some() {
            idle(args).await
        } else {
            echo(args).await
        }
    })?;
    emit(&serde_json::to_value(&report).map_err(|e| e.to_string())?);
    Ok(())
}

fn emit(value: &serde_json::Value) {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{value}").ok();
    stdout.flush().ok();
}

fn target(url: &str) -> Result<(SocketAddr, String), String> {
    let host = url
        .trim_start_matches("ws://")
        .trim_end_matches('/')
        .to_owned();
    let addr = host
        .parse()
        .map_err(|_| format!("{url}: expected HOST:PORT (an IP address)"))?;
    Ok((addr, host))
}

/// Connects (from `source`, if given) and upgrades; returns the bytes read past the head.
async fn open(
    addr: SocketAddr,
    host: &str,
    args: &LoadArgs,
    source: Option<IpAddr>,
) -> Result<(TcpStream, Vec<u8>), String> {
    let mut tcp = match source {
        Some(ip) => {
            let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(|e| format!("bind {ip}: {e}"))?;
            socket.connect(addr).await
        }
        None => TcpStream::connect(addr).await,
    }
    .map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    if args.raw {
        return Ok((tcp, Vec::new()));
    }
    let extension = if args.compress {
        "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n"
    } else {
        ""
    };
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extension}\r\n"
    );
    tcp.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("handshake write: {e}"))?;
    let mut head = Vec::with_capacity(512);
    let end = loop {
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if head.len() > 16 << 10 {
            return Err("handshake: response head too long".into());
        }
        let mut piece = [0u8; 512];
        let n = tcp
            .read(&mut piece)
            .await
            .map_err(|e| format!("handshake read: {e}"))?;
        if n == 0 {
            return Err("handshake: connection closed".into());
        }
        head.extend_from_slice(&piece[..n]);
    };
    let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
    if !text.starts_with("http/1.1 101") {
        let line = text.lines().next().unwrap_or("").to_owned();
        return Err(format!("handshake: {line}"));
    }
    if args.compress && !text.contains("permessage-deflate") {
        return Err("handshake: the server did not accept permessage-deflate".into());
    }
    Ok((tcp, head.split_off(end)))
}

/// The pre-encoded batches a connection cycles through.
fn batches(args: &LoadArgs) -> Vec<Vec<u8>> {
    let variants = if args.compress { 16 } else { 1 };
    (0..variants)
        .map(|v| {
            let frame = if args.compress {
                let text = frames::json_like(args.size, v);
                frames::client_frame(frames::TEXT, true, &frames::deflate_message(&text))
            } else {
                let opcode = if args.binary {
                    frames::BINARY
                } else {
                    frames::TEXT
                };
                frames::client_frame(opcode, false, &frames::payload(args.size, args.binary))
            };
            frame.repeat(args.pipeline.max(1))
        })
        .collect()
}

async fn echo(args: LoadArgs) -> Result<LoadReport, String> {
    let (addr, host) = target(&args.url)?;
    let shared = Shared::new();
    if args.messages.is_some() {
        // Counted runs measure every message, from the first.
        shared.phase.set(Phase::Measure);
    }
    let batches = Rc::new(batches(&args));
    let connect_slots = Rc::new(Semaphore::new(128));
    let mut tasks = Vec::new();
    let ready = Rc::new(Cell::new(0usize));
    for _ in 0..args.connections {
        let (shared, batches, slots, ready) = (
            shared.clone(),
            batches.clone(),
            connect_slots.clone(),
            ready.clone(),
        );
        let (args, host) = (args.clone(), host.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let opened = {
                let _slot = slots.acquire().await;
                open(addr, &host, &args, None).await
            };
            ready.set(ready.get() + 1);
            let result = match opened {
                Ok((tcp, leftover)) => echo_loop(tcp, leftover, &args, &batches, &shared).await,
                Err(error) => Err(error),
            };
            if let Err(error) = result {
                shared.error(error);
            }
        }));
    }
    // Every connection is open (or failed) before the clock starts.
    while ready.get() < args.connections {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started;
    let elapsed;
    if args.messages.is_some() {
        started = Instant::now();
        for task in tasks.drain(..) {
            task.await.ok();
        }
        elapsed = started.elapsed();
    } else {
        tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
        shared.phase.set(Phase::Measure);
        emit(&serde_json::json!({"event": "measure_start"}));
        started = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
        shared.phase.set(Phase::Stop);
        elapsed = started.elapsed();
        emit(&serde_json::json!({"event": "measure_stop"}));
        for task in &tasks {
            task.abort();
        }
    }
    if let Some(error) = shared.first_error.borrow().as_ref() {
        eprintln!("load: {} errors, first: {error}", shared.errors.get());
    }
    let seconds = elapsed.as_secs_f64();
    let messages = shared.messages.get();
    let bytes = messages * args.size as u64;
    let latency = shared.latency.borrow();
    Ok(LoadReport {
        mode: LoadMode::Echo,
        url: args.url.clone(),
        connections: args.connections as u64,
        size: args.size as u64,
        pipeline: args.pipeline as u64,
        binary: args.binary,
        compress: args.compress,
        duration_s: seconds,
        messages,
        bytes,
        messages_per_s: messages as f64 / seconds,
        mb_per_s: bytes as f64 / seconds / 1e6,
        latency_us: LatencySummary {
            p50: latency.value_at_quantile(0.5) as f64,
            p90: latency.value_at_quantile(0.9) as f64,
            p99: latency.value_at_quantile(0.99) as f64,
            p999: latency.value_at_quantile(0.999) as f64,
            max: latency.max() as f64,
            mean: latency.mean(),
        },
        errors: shared.errors.get(),
        reconnects: 0,
        handshakes: 0,
        handshakes_per_s: 0.0,
        connections_open: 0,
        first_error: None,
    })
}

/// One connection's closed loop: write a batch of `pipeline` messages, read their echoes.
async fn echo_loop(
    mut tcp: TcpStream,
    leftover: Vec<u8>,
    args: &LoadArgs,
    batches: &[Vec<u8>],
    shared: &Shared,
) -> Result<(), String> {
    let depth = args.pipeline.max(1);
    let batch_len = batches[0].len();
    let mut buf = vec![0u8; batch_len.clamp(4096, 256 << 10)];
    let mut parser = FrameCounter::new();
    let mut pending = leftover;
    let mut sent = 0u64;
    let mut round = 0usize;
    let expected_len = (!args.compress).then_some(args.size as u64);
    loop {
        if shared.phase.get() == Phase::Stop || args.messages.is_some_and(|m| sent >= m) {
            break;
        }
        let batch = &batches[round % batches.len()];
        round += 1;
        let start = Instant::now();
        let mut got = 0usize;
        let mut bad = None;
        // Payload bytes of the echo being received so far (a streaming server fragments it).
        let mut echo_len = 0u64;
        let (mut reader, mut writer) = tcp.split();
        let write = async {
            writer
                .write_all(batch)
                .await
                .map_err(|e| format!("write: {e}"))
        };
        let read = async {
            while got < depth {
                let n = if pending.is_empty() {
                    let n = reader
                        .read(&mut buf)
                        .await
                        .map_err(|e| format!("read: {e}"))?;
                    if n == 0 {
                        return Err("the server closed the connection".to_owned());
                    }
                    n
                } else {
                    let n = pending.len().min(buf.len());
                    buf[..n].copy_from_slice(&pending[..n]);
                    pending.drain(..n);
                    n
                };
                let now = Instant::now();
                parser
                    .feed(&buf[..n], |frame| {
                        if frame.opcode == OpCode::Close {
                            bad = Some(frame);
                        }
                        // Pings and pongs are not echoes; a fragmented echo counts once, with
                        // the length of all its frames.
                        if frame.opcode.is_control() {
                            return;
                        }
                        echo_len += frame.len;
                        if !frame.fin {
                            return;
                        }
                        if expected_len.is_some_and(|l| l != echo_len) {
                            bad = Some(frame);
                        }
                        echo_len = 0;
                        got += 1;
                        if shared.phase.get() == Phase::Measure {
                            let micros = (now - start).as_micros() as u64;
                            shared.latency.borrow_mut().saturating_record(micros.max(1));
                            shared.messages.set(shared.messages.get() + 1);
                        }
                    })
                    .map_err(|_| "the server sent a malformed or unexpected frame".to_owned())?;
            }
            Ok(())
        };
        if batch_len <= 16 << 10 {
            // A small batch always fits the socket buffer: no need to read while writing.
            write.await?;
            read.await?;
        } else {
            let (written, read) = tokio::join!(write, read);
            written?;
            read?;
        }
        if let Some(frame) = bad {
            return Err(format!("unexpected echo: {frame:?}"));
        }
        sent += depth as u64;
    }
    if args.messages.is_some() {
        // Close politely so that the server's task ends (and a profile run exits cleanly).
        let close = frames::client_frame(frames::CLOSE, false, &1000u16.to_be_bytes());
        if !args.raw {
            tcp.write_all(&close).await.ok();
        }
        tcp.shutdown().await.ok();
        let mut sink = [0u8; 256];
        while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
    }
    Ok(())
}

/// Opens `--idle` connections, reports `idle_ready`, echoes one message on each when stdin
/// says `echo`, and exits at stdin EOF.
async fn idle(args: LoadArgs) -> Result<LoadReport, String> {
    let (addr, host) = target(&args.url)?;
    let count = args.idle.unwrap_or(0);
    let shared = Shared::new();
    let slots = Rc::new(Semaphore::new(128));
    let connections = Rc::new(RefCell::new(Vec::with_capacity(count)));
    let mut tasks = Vec::with_capacity(count);
    for _ in 0..count {
        let (slots, shared, connections) = (slots.clone(), shared.clone(), connections.clone());
        let (args, host) = (args.clone(), host.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let _slot = slots.acquire().await;
            match open(addr, &host, &args, None).await {
                Ok((tcp, _)) => connections.borrow_mut().push(tcp),
                Err(error) => shared.error(error),
            }
        }));
    }
    for task in tasks {
        task.await.ok();
    }
    let open_count = connections.borrow().len();
    emit(&serde_json::json!({"event": "idle_ready", "connections_open": open_count}));
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim() != "echo" {
            continue;
        }
        let frame = Rc::new(frames::client_frame(
            frames::BINARY,
            false,
            &frames::payload(args.size, true),
        ));
        let mut streams = std::mem::take(&mut *connections.borrow_mut());
        let mut echoed = 0u64;
        // A hundred at a time: 10,000 concurrent reads would hold 10,000 read buffers.
        for group in streams.chunks_mut(100) {
            let mut pending = Vec::new();
            for tcp in group.iter_mut() {
                let frame = frame.clone();
                pending.push(async move { one_echo(tcp, &frame).await });
            }
            for result in futures_util::future::join_all(pending).await {
                match result {
                    Ok(()) => echoed += 1,
                    Err(error) => shared.error(error),
                }
            }
        }
        *connections.borrow_mut() = streams;
        emit(&serde_json::json!({"event": "echo_done", "echoed": echoed}));
    }
    let open_count = connections.borrow().len() as u64;
    Ok(LoadReport {
        mode: LoadMode::Idle,
        url: args.url.clone(),
        connections: count as u64,
        size: args.size as u64,
        errors: shared.errors.get(),
        connections_open: open_count,
        ..LoadReport::default()
    })
}

async fn one_echo(tcp: &mut TcpStream, frame: &[u8]) -> Result<(), String> {
    tcp.write_all(frame).await.map_err(|e| e.to_string())?;
    let mut parser = FrameCounter::new();
    let mut buf = vec![0u8; 2048];
    let mut done = false;
    while !done {
        let n = tcp.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed".into());
        }
        parser
            .feed(&buf[..n], |_| done = true)
            .map_err(|_| "bad frame".to_owned())?;
    }
    Ok(())
}

/// Connect, upgrade, close, in `--connections` concurrent loops, from 16 source addresses
/// (127.0.0.1-16) so that ephemeral ports last.
async fn handshakes(args: LoadArgs) -> Result<LoadReport, String> {
    let (addr, host) = target(&args.url)?;
    let shared = Shared::new();
    let mut tasks = Vec::new();
    for worker in 0..args.connections.max(1) {
        let (shared, args, host) = (shared.clone(), args.clone(), host.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let close = frames::client_frame(frames::CLOSE, false, &1000u16.to_be_bytes());
            let mut round = worker;
            let mut sink = [0u8; 512];
            while shared.phase.get() != Phase::Stop {
                round += 1;
                let source = addr
                    .ip()
                    .is_loopback()
                    .then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (round % 16) as u8)));
                let result = async {
                    let (mut tcp, _) = open(addr, &host, &args, source).await?;
                    tcp.write_all(&close).await.map_err(|e| e.to_string())?;
                    while tcp.read(&mut sink).await.map_err(|e| e.to_string())? > 0 {}
                    Ok::<_, String>(())
                }
                .await;
                match result {
                    Ok(()) if shared.phase.get() == Phase::Measure => {
                        shared.handshakes.set(shared.handshakes.get() + 1)
                    }
                    Ok(()) => {}
                    Err(error) => shared.error(error),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    shared.phase.set(Phase::Measure);
    emit(&serde_json::json!({"event": "measure_start"}));
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    shared.phase.set(Phase::Stop);
    let seconds = started.elapsed().as_secs_f64();
    emit(&serde_json::json!({"event": "measure_stop"}));
    for task in tasks {
        task.abort();
    }
    if let Some(error) = shared.first_error.borrow().as_ref() {
        eprintln!("load: {} errors, first: {error}", shared.errors.get());
    }
    let handshakes = shared.handshakes.get();
    Ok(LoadReport {
        mode: LoadMode::Handshakes,
        url: args.url.clone(),
        connections: args.connections as u64,
        duration_s: seconds,
        errors: shared.errors.get(),
        handshakes,
        handshakes_per_s: handshakes as f64 / seconds,
        ..LoadReport::default()
    })
}

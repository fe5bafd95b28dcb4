//! The fan-out generator (`fullduplex-bench fanout-load`, started by the runner on CPU 1): many
//! subscribers and one publisher, all on one current-thread runtime, with frames encoded once
//! and deliveries read in place with the kit's [`FrameAssembler`] (no WebSocket library, as in
//! the echo generator).
//!
//! It talks to the runner in lines. On stdout: `{"event":"subscribed",...}` once every
//! subscriber has its `subscribed` answer, `{"event":"ready","phase":P}` before each measured
//! phase (`burst`, then `steady`), `{"event":"done","phase":P,...}` with the phase's figures
//! once every subscriber has every message of it. On stdin the runner answers each
//! `subscribed` and `ready` with a line `go`, after it has sampled the server; the runner
//! therefore measures exactly the phase. Stdin EOF ends the generator.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flate2::{Decompress, FlushDecompress};
use fullduplex_loadgen::frame::FrameAssembler;
use fullduplex_proto::frame::OpCode;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::LocalSet;

use crate::frames;

/// The largest frame a subscriber accepts from the server: far above any message size the
/// runner asks for, and a bound on what a broken server can make it buffer.
const MAX_FRAME: u64 = 64 << 20;

/// What the generator does.
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutLoadArgs {
    /// The server, `HOST:PORT`.
    pub addr: String,
    /// The WebSocket path (`/ws` for the hub).
    #[arg(long, default_value = "/")]
    pub path: String,
    /// Subscribers.
    #[arg(long, default_value_t = 10_000)]
    pub subscribers: usize,
    /// Topics (`t0`, `t1`, ...); subscriber `i` subscribes to topic `i % topics`.
    #[arg(long, default_value_t = 1)]
    pub topics: usize,
    /// Bytes of each message's `data` JSON.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Messages published back to back in the burst (round robin over the topics).
    #[arg(long, default_value_t = 20)]
    pub burst: u64,
    /// Messages per second in the steady phase (round robin over the topics).
    #[arg(long, default_value_t = 2.0)]
    pub rate: f64,
    /// Seconds of the steady phase.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Subscribers offer permessage-deflate (with `server_no_context_takeover` and
    /// `client_no_context_takeover`) and insist that the server accepts it.
    #[arg(long)]
    pub compression: bool,
}

/// The figures of one phase, as the generator prints them in its `done` line.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PhaseReport {
    /// `burst` or `steady`.
    pub phase: String,
    /// Messages published.
    pub messages: u64,
    /// Deliveries counted (every subscriber's copy of every message).
    pub deliveries: u64,
    /// Deliveries that arrived compressed (RSV1 set).
    pub compressed: u64,
    /// Bytes the subscribers read from their sockets (TCP payload: frame headers included).
    pub bytes: u64,
    /// From the first publish to the last delivery, seconds.
    pub seconds: f64,
    /// Publish-to-delivery latency over every delivery, microseconds: median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Largest.
    pub max_us: f64,
    /// Time from publish to the last subscriber's delivery of a message, median over the
    /// phase's messages, microseconds.
    pub last_p50_us: f64,
    /// The same, largest.
    pub last_max_us: f64,
    /// Every delivery arrived before the deadline.
    pub complete: bool,
}

/// Which phase deliveries count for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Setup,
    Warmup,
    Burst,
    Steady,
}

struct State {
    phase: Cell<Phase>,
    deliveries: Cell<u64>,
    compressed: Cell<u64>,
    bytes: Cell<u64>,
    /// Deliveries expected in the current phase, and when the last of them arrived.
    target: Cell<u64>,
    done_at: Cell<Option<Instant>>,
    latency: RefCell<Histogram<u64>>,
    /// Per message of the phase (by its sequence number): the largest latency, nanoseconds.
    last: RefCell<Vec<u64>>,
    subscribed: Cell<usize>,
    errors: Cell<u64>,
    first_error: RefCell<Option<String>>,
    buf: RefCell<Vec<u8>>,
    inflate: RefCell<Decompress>,
    scratch: RefCell<Vec<u8>>,
}

impl State {
    fn new() -> Result<State, String> {
        Ok(State {
            phase: Cell::new(Phase::Setup),
            deliveries: Cell::new(0),
            compressed: Cell::new(0),
            bytes: Cell::new(0),
            target: Cell::new(u64::MAX),
            done_at: Cell::new(None),
            latency: RefCell::new(
                Histogram::new_with_bounds(1, 600_000_000, 3).map_err(|e| e.to_string())?,
            ),
            last: RefCell::new(Vec::new()),
            subscribed: Cell::new(0),
            errors: Cell::new(0),
            first_error: RefCell::new(None),
            buf: RefCell::new(vec![0u8; 64 << 10]),
            inflate: RefCell::new(Decompress::new(false)),
            scratch: RefCell::new(Vec::with_capacity(256)),
        })
    }

    fn error(&self, error: String) {
        self.errors.set(self.errors.get() + 1);
        self.first_error.borrow_mut().get_or_insert(error);
    }

    fn reset(&self, phase: Phase, target: u64, messages: usize) {
        self.phase.set(phase);
        self.deliveries.set(0);
        self.compressed.set(0);
        self.bytes.set(0);
        self.target.set(target);
        self.done_at.set(None);
        self.latency.borrow_mut().reset();
        *self.last.borrow_mut() = vec![0; messages];
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn emit(value: &serde_json::Value) {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{value}").ok();
    stdout.flush().ok();
}

/// Runs the generator (see the module documentation).
pub fn run(args: FanoutLoadArgs) -> Result<(), String> {
    crate::serve::raise_nofile_limit();
    if args.topics == 0 || args.subscribers < args.topics {
        return Err("need at least one subscriber per topic".into());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    LocalSet::new().block_on(&runtime, generate(args))
}

/// The `data` JSON of a message: exactly `size` bytes (when `size` allows it), carrying its
/// send time `t` (nanoseconds since the epoch) and sequence number `s` first, then JSON records
/// like an application's (from 256 bytes on) and a padding string.
pub fn data_json(size: usize, t: u64, s: u64) -> String {
    let names = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"];
    let mut text = format!("{{\"t\":{t},\"s\":{s}");
    if size >= 256 {
        text.push_str(",\"items\":[");
        let mut i = 0u64;
        loop {
            let n = s.wrapping_mul(7) + i;
            let record = format!(
                "{{\"id\":{n},\"user\":\"{}-{}\",\"price\":{}.{:02},\"active\":{}}}",
                names[(n as usize * 5) % names.len()],
                (n * 7919) % 10_007,
                (n * 31) % 997,
                n % 100,
                n % 3 == 0,
            );
            if text.len() + record.len() + 1 + 16 > size {
                break;
            }
            if i > 0 {
                text.push(',');
            }
            text.push_str(&record);
            i += 1;
        }
        text.push(']');
    }
    text.push_str(",\"p\":\"");
    let mut k = s as usize;
    while text.len() + 2 < size {
        text.push((b'a' + (k * 7 % 26) as u8) as char);
        k += 1;
    }
    text.push_str("\"}");
    text
}

fn publish_frame(topic: usize, size: usize, s: u64) -> Vec<u8> {
    let text = format!(
        "{{\"type\":\"publish\",\"topic\":\"t{topic}\",\"data\":{}}}",
        data_json(size, now_ns(), s)
    );
    frames::client_frame(frames::TEXT, false, text.as_bytes())
}

/// Connects and upgrades; returns the stream and the bytes read past the response head.
async fn open(
    addr: SocketAddr,
    args: &FanoutLoadArgs,
    compression: bool,
) -> Result<(TcpStream, Vec<u8>), String> {
    let mut tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let extension = if compression {
        "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
         client_no_context_takeover\r\n"
    } else {
        ""
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extension}\r\n",
        args.path, args.addr
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
        return Err(format!("handshake: {}", text.lines().next().unwrap_or("")));
    }
    if compression && !text.contains("permessage-deflate") {
        return Err("handshake: the server did not accept permessage-deflate".into());
    }
    Ok((tcp, head.split_off(end)))
}

/// A number after `key` in `text`.
fn number_after(text: &[u8], key: &[u8]) -> Option<u64> {
    let at = text.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = text[at..].iter().take_while(|b| b.is_ascii_digit());
    let mut value = 0u64;
    let mut any = false;
    for &d in digits {
        value = value.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        any = true;
    }
    any.then_some(value)
}

/// Reads `data`, the next bytes from the server, with the subscriber's `frames` and counts
/// the deliveries among the frames that end in it (each with the time `data` was read).
fn deliveries(
    frames: &mut FrameAssembler,
    mut data: &[u8],
    received: u64,
    state: &State,
) -> Result<(), String> {
    while let Some(frame) = frames.next_frame(&mut data).map_err(|e| e.to_string())? {
        if frame.header.mask.is_some() {
            return Err("the server sent a masked frame".into());
        }
        match frame.header.opcode {
            OpCode::Text | OpCode::Binary => {
                deliver(frame.payload, frame.header.rsv1, received, state);
            }
            OpCode::Close => return Err("the server closed the connection".into()),
            _ => {}
        }
    }
    Ok(())
}

fn deliver(payload: &[u8], deflated: bool, received: u64, state: &State) {
    if state.phase.get() == Phase::Setup {
        return;
    }
    state.deliveries.set(state.deliveries.get() + 1);
    let mut scratch = state.scratch.borrow_mut();
    let prefix: &[u8] = if deflated {
        state.compressed.set(state.compressed.get() + 1);
        // No context takeover: each message inflates on its own, and the send time and the
        // sequence number are in its first bytes.
        let mut inflate = state.inflate.borrow_mut();
        inflate.reset(false);
        scratch.clear();
        let _ = inflate.decompress_vec(payload, &mut scratch, FlushDecompress::Sync);
        &scratch
    } else {
        &payload[..payload.len().min(256)]
    };
    let t = number_after(prefix, b"\"t\":");
    let s = number_after(prefix, b"\"s\":");
    if let (Some(t), Some(s)) = (t, s) {
        let latency = received.saturating_sub(t);
        state
            .latency
            .borrow_mut()
            .saturating_record((latency / 1000).max(1));
        if let Some(slot) = state.last.borrow_mut().get_mut(s as usize) {
            *slot = (*slot).max(latency);
        }
    }
    if state.deliveries.get() == state.target.get() {
        state.done_at.set(Some(Instant::now()));
    }
}

/// One subscriber: upgrade, subscribe, wait for the answer, then count deliveries until the
/// connection ends.
async fn subscriber(
    addr: SocketAddr,
    args: Rc<FanoutLoadArgs>,
    index: usize,
    slots: Rc<Semaphore>,
    state: Rc<State>,
) -> Result<(), String> {
    let (mut tcp, leftover) = {
        let _slot = slots.acquire().await.map_err(|e| e.to_string())?;
        let (mut tcp, leftover) = open(addr, &args, args.compression).await?;
        let request = format!(
            "{{\"type\":\"subscribe\",\"topic\":\"t{}\"}}",
            index % args.topics
        );
        tcp.write_all(&frames::client_frame(
            frames::TEXT,
            false,
            request.as_bytes(),
        ))
        .await
        .map_err(|e| format!("subscribe: {e}"))?;
        (tcp, leftover)
    };
    // The first frame is the answer: `subscribed` (compressed by some servers).
    let mut frames = FrameAssembler::new(MAX_FRAME);
    let mut piece = [0u8; 1024];
    let mut input: &[u8] = &leftover;
    loop {
        let frame = frames
            .next_frame(&mut input)
            .map_err(|e| format!("subscribe answer: {e}"))?;
        if let Some(frame) = frame {
            let body = frame.payload;
            if !frame.header.rsv1 && !body.windows(10).any(|w| w == b"subscribed") {
                return Err(format!(
                    "subscribe answered {:?}",
                    String::from_utf8_lossy(body)
                ));
            }
            break;
        }
        let n = tcp
            .read(&mut piece)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before subscribed".into());
        }
        input = &piece[..n];
    }
    state.subscribed.set(state.subscribed.get() + 1);
    // What came after the answer (nothing is published before every subscriber has its).
    deliveries(&mut frames, input, now_ns(), &state)?;
    loop {
        let result = poll_fn(|cx| {
            let mut buf = state.buf.borrow_mut();
            let mut read = ReadBuf::new(&mut buf[..]);
            match Pin::new(&mut tcp).poll_read(cx, &mut read) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Err(e)) => Poll::Ready(Err(format!("read: {e}"))),
                Poll::Ready(Ok(())) => {
                    let data = read.filled();
                    if data.is_empty() {
                        return Poll::Ready(Err("the server closed the connection".into()));
                    }
                    state.bytes.set(state.bytes.get() + data.len() as u64);
                    Poll::Ready(deliveries(&mut frames, data, now_ns(), &state))
                }
            }
        })
        .await;
        result?;
    }
}

/// Waits until every delivery of the phase arrived (or `limit` passed); the phase's figures.
async fn finish(
    state: &State,
    phase: &str,
    messages: u64,
    started: Instant,
    limit: Duration,
) -> PhaseReport {
    let deadline = started + limit;
    while state.done_at.get().is_none() && Instant::now() < deadline && state.errors.get() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let done = state.done_at.get();
    let seconds = done.unwrap_or_else(Instant::now).duration_since(started);
    let latency = state.latency.borrow();
    let mut last: Vec<u64> = state
        .last
        .borrow()
        .iter()
        .copied()
        .filter(|&l| l > 0)
        .collect();
    last.sort_unstable();
    PhaseReport {
        phase: phase.to_owned(),
        messages,
        deliveries: state.deliveries.get(),
        compressed: state.compressed.get(),
        bytes: state.bytes.get(),
        seconds: seconds.as_secs_f64(),
        p50_us: latency.value_at_quantile(0.5) as f64,
        p99_us: latency.value_at_quantile(0.99) as f64,
        max_us: latency.max() as f64,
        last_p50_us: last.get(last.len() / 2).map_or(0.0, |&l| l as f64 / 1e3),
        last_max_us: last.last().map_or(0.0, |&l| l as f64 / 1e3),
        complete: done.is_some(),
    }
}

async fn wait_go(lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::io::Stdin>>) -> bool {
    matches!(lines.next_line().await, Ok(Some(_)))
}

async fn generate(args: FanoutLoadArgs) -> Result<(), String> {
    let addr: SocketAddr = args
        .addr
        .parse()
        .map_err(|_| format!("{}: expected HOST:PORT (an IP address)", args.addr))?;
    let args = Rc::new(args);
    let state = Rc::new(State::new()?);
    let started = Instant::now();
    let slots = Rc::new(Semaphore::new(64));
    let mut tasks = Vec::with_capacity(args.subscribers);
    for index in 0..args.subscribers {
        let (args, slots, state) = (args.clone(), slots.clone(), state.clone());
        tasks.push(tokio::task::spawn_local(async move {
            if let Err(error) = subscriber(addr, args, index, slots, state.clone()).await {
                state.error(error);
            }
        }));
    }
    let deadline = started + Duration::from_secs(300);
    while state.subscribed.get() + (state.errors.get() as usize) < args.subscribers {
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {} subscribed within 300 s",
                state.subscribed.get(),
                args.subscribers
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if let Some(error) = state.first_error.borrow().as_ref() {
        return Err(format!(
            "{} subscribers failed, first: {error}",
            state.errors.get()
        ));
    }
    let (publisher, _) = open(addr, &args, false).await?;
    let (mut reader, mut writer) = publisher.into_split();
    // Servers answer nothing to a publish without an id; anything they do say is shown.
    let answers = tokio::task::spawn_local(async move {
        let mut sink = vec![0u8; 16 << 10];
        let mut shown = false;
        while let Ok(n) = reader.read(&mut sink).await {
            if n == 0 {
                break;
            }
            if !shown {
                eprintln!(
                    "fanout-load: the server answered the publisher: {:?}",
                    String::from_utf8_lossy(&sink[..n.min(200)])
                );
                shown = true;
            }
        }
    });
    let expected = |messages: u64| -> u64 {
        // Message k goes to topic k % topics, whose subscribers are i with i % topics == topic.
        (0..messages)
            .map(|k| {
                let topic = (k % args.topics as u64) as usize;
                ((args.subscribers - topic).div_ceil(args.topics)) as u64
            })
            .sum()
    };
    emit(&serde_json::json!({
        "event": "subscribed",
        "subscribers": state.subscribed.get(),
        "seconds": started.elapsed().as_secs_f64(),
    }));
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    if !wait_go(&mut stdin).await {
        return Ok(());
    }
    let limit = Duration::from_secs(120);
    let check = |report: &PhaseReport| -> Result<(), String> {
        if let Some(error) = state.first_error.borrow().as_ref() {
            return Err(format!("{} errors, first: {error}", state.errors.get()));
        }
        if !report.complete {
            return Err(format!(
                "{}: {} of {} deliveries within {limit:?}",
                report.phase,
                report.deliveries,
                state.target.get()
            ));
        }
        Ok(())
    };

    // Warm-up: one message per topic, not measured.
    let warm = args.topics as u64;
    state.reset(Phase::Warmup, expected(warm), warm as usize);
    let start = Instant::now();
    let mut batch = Vec::new();
    for k in 0..warm {
        batch.extend(publish_frame(k as usize % args.topics, args.size, k));
    }
    writer.write_all(&batch).await.map_err(|e| e.to_string())?;
    let report = finish(&state, "warmup", warm, start, limit).await;
    check(&report)?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Burst: every message encoded first, then written back to back.
    state.reset(Phase::Burst, expected(args.burst), args.burst as usize);
    emit(&serde_json::json!({"event": "ready", "phase": "burst"}));
    if !wait_go(&mut stdin).await {
        return Ok(());
    }
    let mut batch = Vec::new();
    for k in 0..args.burst {
        batch.extend(publish_frame(k as usize % args.topics, args.size, k));
    }
    let start = Instant::now();
    writer.write_all(&batch).await.map_err(|e| e.to_string())?;
    let report = finish(&state, "burst", args.burst, start, limit).await;
    emit(&serde_json::to_value(&report).map_err(|e| e.to_string())?);
    check(&report)?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Steady: message k leaves at k / rate seconds.
    let count = (args.rate * args.seconds).round().max(1.0) as u64;
    state.reset(Phase::Steady, expected(count), count as usize);
    emit(&serde_json::json!({"event": "ready", "phase": "steady"}));
    if !wait_go(&mut stdin).await {
        return Ok(());
    }
    let start = Instant::now();
    let tick = tokio::time::Instant::now();
    for k in 0..count {
        tokio::time::sleep_until(tick + Duration::from_secs_f64(k as f64 / args.rate)).await;
        let frame = publish_frame(k as usize % args.topics, args.size, k);
        writer.write_all(&frame).await.map_err(|e| e.to_string())?;
    }
    let report = finish(&state, "steady", count, start, limit).await;
    emit(&serde_json::to_value(&report).map_err(|e| e.to_string())?);
    check(&report)?;
    answers.abort();
    for task in tasks {
        task.abort();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fullduplex_loadgen::frame::encode_frame;

    /// A hub delivery of message `s` sent at `t`, as a server frame; deflated (RSV1) if asked.
    fn delivery(size: usize, t: u64, s: u64, deflated: bool) -> Vec<u8> {
        let text = format!(
            "{{\"type\":\"message\",\"topic\":\"t0\",\"data\":{}}}",
            data_json(size, t, s)
        );
        if deflated {
            let packed = frames::deflate_message(text.as_bytes());
            encode_frame(OpCode::Text, true, &packed, None)
        } else {
            encode_frame(OpCode::Text, false, text.as_bytes(), None)
        }
    }

    #[test]
    fn deliveries_are_counted_once_however_the_reads_split() {
        let sent = 1_769_860_805_000_000_000u64;
        let mut stream = Vec::new();
        for s in 0..6u64 {
            stream.extend(delivery(
                [64, 1024, 70_000][s as usize % 3],
                sent,
                s,
                s >= 4,
            ));
            stream.extend(encode_frame(OpCode::Ping, false, b"", None));
        }
        for step in [1, 2, 3, 7, 100, 1000, stream.len()] {
            let state = State::new().unwrap();
            state.reset(Phase::Burst, 6, 6);
            let mut frames = FrameAssembler::new(MAX_FRAME);
            for piece in stream.chunks(step) {
                deliveries(&mut frames, piece, sent + 2_000_000, &state).unwrap();
            }
            assert_eq!(state.deliveries.get(), 6, "step {step}");
            assert_eq!(state.compressed.get(), 2, "step {step}");
            assert!(state.done_at.get().is_some());
            // Every message's latency was read from its own send time: 2 ms.
            assert_eq!(*state.last.borrow(), [2_000_000; 6], "step {step}");
            assert_eq!(state.latency.borrow().len(), 6);
        }
        // Before the measured phases nothing counts.
        let state = State::new().unwrap();
        let mut frames = FrameAssembler::new(MAX_FRAME);
        deliveries(&mut frames, &stream, sent, &state).unwrap();
        assert_eq!(state.deliveries.get(), 0);
    }

    #[test]
    fn masked_frames_and_close_end_the_subscriber() {
        let state = State::new().unwrap();
        let masked = encode_frame(OpCode::Text, false, b"{}", Some([1, 2, 3, 4]));
        let mut frames = FrameAssembler::new(MAX_FRAME);
        assert_eq!(
            deliveries(&mut frames, &masked, 0, &state),
            Err("the server sent a masked frame".into())
        );
        let close = encode_frame(OpCode::Close, false, &1001u16.to_be_bytes(), None);
        let mut frames = FrameAssembler::new(MAX_FRAME);
        assert_eq!(
            deliveries(&mut frames, &close, 0, &state),
            Err("the server closed the connection".into())
        );
        let mut huge = vec![0x81, 127];
        huge.extend_from_slice(&(MAX_FRAME + 1).to_be_bytes());
        let mut frames = FrameAssembler::new(MAX_FRAME);
        assert!(deliveries(&mut frames, &huge, 0, &state).is_err());
    }

    #[test]
    fn data_has_the_size_asked_for_and_parses() {
        for size in [64usize, 1024] {
            for s in [0u64, 7, 12_345] {
                let text = data_json(size, 1_769_860_805_000_000_000, s);
                assert_eq!(text.len(), size, "{text}");
                let value: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(value["s"], s);
                assert_eq!(
                    number_after(text.as_bytes(), b"\"t\":"),
                    Some(1_769_860_805_000_000_000)
                );
            }
        }
    }
}

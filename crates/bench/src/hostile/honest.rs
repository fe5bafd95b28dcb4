//! The honest load beside the attack: echo clients at a steady rate measuring round trips, or
//! hub subscribers and an HTTP publisher measuring publish-to-delivery latency with exact
//! accounting (every message carries its topic's sequence number and its scheduled send
//! time). It runs on its own thread and current-thread runtime; the phase it records into is
//! set from outside ([`Phase`]).
//!
//! Latency is measured from the *scheduled* send time, so a sender that falls behind (the
//! server or the machine stalls) shows it in the figures instead of hiding it.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio::task::LocalSet;
use tokio::time::{Instant, MissedTickBehavior};

use super::wire::{self, Answer, HttpClient, CLOSE, PING, TEXT};
use crate::frames::client_frame;

/// The phases of a run, as stored in the shared `AtomicU8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    /// Connecting, subscribing; not measured.
    Warmup = 0,
    /// The reference run (in a soak: the whole run).
    Quiet = 1,
    /// The same load with the hostile connections.
    Attack = 2,
    /// After the hostile connections are gone.
    Recovery = 3,
    /// Senders stop; what is in flight arrives.
    Drain = 4,
    /// Everything stops.
    Done = 5,
}

/// Number of phases.
pub const PHASES: usize = 6;

impl Phase {
    /// The phase stored as `value`.
    pub fn from_u8(value: u8) -> Phase {
        match value {
            0 => Phase::Warmup,
            1 => Phase::Quiet,
            2 => Phase::Attack,
            3 => Phase::Recovery,
            4 => Phase::Drain,
            _ => Phase::Done,
        }
    }

    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Warmup => "warm-up",
            Phase::Quiet => "quiet",
            Phase::Attack => "attack",
            Phase::Recovery => "recovery",
            Phase::Drain => "drain",
            Phase::Done => "done",
        }
    }
}

/// What the honest load does.
#[derive(Debug, Clone)]
pub enum Plan {
    /// `connections` echo clients sending `rate` text messages per second in all.
    Echo {
        /// Clients.
        connections: usize,
        /// Messages per second, all clients together.
        rate: f64,
        /// Payload bytes (at least 33).
        size: usize,
    },
    /// `subscribers` hub subscribers spread over `topics` (subscriber i on topic i % K), and
    /// one HTTP publisher sending `rate` messages per second round-robin over the topics.
    Hub {
        /// Subscribers.
        subscribers: usize,
        /// Topic names.
        topics: Vec<String>,
        /// Publishes per second, all topics together.
        rate: f64,
        /// Approximate JSON bytes per message.
        size: usize,
    },
}

/// The switches the orchestrating thread and the load share.
#[derive(Debug, Clone)]
pub struct Shared {
    /// The current [`Phase`].
    pub phase: Arc<AtomicU8>,
    /// Set once every connection is up (or has failed).
    pub ready: Arc<AtomicBool>,
    /// Connections up (for progress lines).
    pub connected: Arc<AtomicUsize>,
}

impl Shared {
    /// Starts in [`Phase::Warmup`].
    pub fn new() -> Shared {
        Shared {
            phase: Arc::new(AtomicU8::new(Phase::Warmup as u8)),
            ready: Arc::new(AtomicBool::new(false)),
            connected: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Relaxed))
    }

    /// Moves to `phase`.
    pub fn set(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }
}

impl Default for Shared {
    fn default() -> Shared {
        Shared::new()
    }
}

/// What the honest load saw.
#[derive(Debug)]
pub struct HonestReport {
    /// Latency in µs per phase (by the phase in which the message was sent).
    pub latency: Vec<Histogram<u64>>,
    /// Messages sent per phase (echo: by clients; hub: published with 200).
    pub sent: [u64; PHASES],
    /// Messages received per phase of sending (echo: echoes; hub: deliveries).
    pub received: [u64; PHASES],
    /// Honest failures per phase in which they happened (connection errors, closes,
    /// refused publishes, hub errors).
    pub failures: [u64; PHASES],
    /// The first few failures, with their phase.
    pub failure_samples: Vec<String>,
    /// Hub: deliveries expected (each subscriber × the 200-acknowledged publishes of its
    /// topic while it was subscribed), and what arrived.
    pub expected: u64,
    /// Distinct messages delivered (hub), or echoes received (echo).
    pub delivered: u64,
    /// Messages delivered twice or more.
    pub duplicates: u64,
    /// Messages delivered after a later one of the same topic.
    pub out_of_order: u64,
    /// Expected but never delivered (hub), or sent but never echoed (echo).
    pub missing: u64,
    /// Deliveries of sequence numbers the publisher never sent.
    pub bogus: u64,
    /// Publish answers (hub) by outcome.
    pub publish_answers: BTreeMap<String, u64>,
    /// Connections that came up.
    pub connected: usize,
    /// Connections that failed at any time.
    pub connections_failed: usize,
    /// Per second of the run (by arrival): the highest latency in µs and the phase then.
    pub per_second_max: Vec<(u64, u8)>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 10 min, 3 significant figures: the bounds are constants and valid.
    Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|_| Histogram::new(3).unwrap())
}

/// State shared by the tasks of the honest runtime.
struct Ctx {
    addr: String,
    shared: Shared,
    start: Instant,
    latency: RefCell<Vec<Histogram<u64>>>,
    sent: RefCell<[u64; PHASES]>,
    received: RefCell<[u64; PHASES]>,
    failures: RefCell<[u64; PHASES]>,
    samples: RefCell<Vec<String>>,
    connections_failed: Cell<usize>,
    per_second_max: RefCell<Vec<(u64, u8)>>,
}

impl Ctx {
    fn fail(&self, what: String) {
        let phase = self.shared.phase();
        self.failures.borrow_mut()[phase as usize] += 1;
        let mut samples = self.samples.borrow_mut();
        if samples.len() < 20 {
            samples.push(format!(
                "{:.1} s ({}): {what}",
                self.start.elapsed().as_secs_f64(),
                phase.name()
            ));
        }
    }

    fn record(&self, phase: usize, sched_ns: u64) {
        let sched = self.start + Duration::from_nanos(sched_ns);
        let now = Instant::now();
        let us = now.saturating_duration_since(sched).as_micros() as u64;
        if let Some(h) = self.latency.borrow_mut().get_mut(phase) {
            h.saturating_record(us.max(1));
        }
        let second = now.saturating_duration_since(self.start).as_secs() as usize;
        let mut per_second = self.per_second_max.borrow_mut();
        if per_second.len() <= second {
            per_second.resize(second + 1, (0, self.shared.phase() as u8));
        }
        if let Some(slot) = per_second.get_mut(second) {
            slot.0 = slot.0.max(us);
        }
        if phase < PHASES {
            self.received.borrow_mut()[phase] += 1;
        }
    }

    fn ns(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_nanos() as u64
    }
}

/// Runs `plan` against `addr` on a new thread until the phase is [`Phase::Done`]; the report
/// comes back when it is joined.
pub fn spawn(
    addr: String,
    plan: Plan,
    shared: Shared,
    cpu: Option<usize>,
) -> std::thread::JoinHandle<Result<HonestReport, String>> {
    std::thread::spawn(move || {
        if let Some(cpu) = cpu {
            super::child::pin_current_thread(cpu);
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let local = LocalSet::new();
        Ok(local.block_on(&runtime, run(addr, plan, shared)))
    })
}

async fn run(addr: String, plan: Plan, shared: Shared) -> HonestReport {
    let ctx = Rc::new(Ctx {
        addr,
        shared: shared.clone(),
        start: Instant::now(),
        latency: RefCell::new((0..PHASES).map(|_| histogram()).collect()),
        sent: RefCell::new([0; PHASES]),
        received: RefCell::new([0; PHASES]),
        failures: RefCell::new([0; PHASES]),
        samples: RefCell::new(Vec::new()),
        connections_failed: Cell::new(0),
        per_second_max: RefCell::new(Vec::new()),
    });
    let mut report = match plan {
        Plan::Echo {
            connections,
            rate,
            size,
        } => run_echo(&ctx, connections, rate, size.max(33)).await,
        Plan::Hub {
            subscribers,
            topics,
            rate,
            size,
        } => run_hub(&ctx, subscribers, topics, rate, size).await,
    };
    report.latency = ctx.latency.replace(Vec::new());
    report.sent = *ctx.sent.borrow();
    report.received = *ctx.received.borrow();
    report.failures = *ctx.failures.borrow();
    report.failure_samples = ctx.samples.replace(Vec::new());
    report.connections_failed = ctx.connections_failed.get();
    report.per_second_max = ctx.per_second_max.replace(Vec::new());
    report.connected = shared.connected.load(Ordering::Relaxed);
    report
}

fn empty_report() -> HonestReport {
    HonestReport {
        latency: Vec::new(),
        sent: [0; PHASES],
        received: [0; PHASES],
        failures: [0; PHASES],
        failure_samples: Vec::new(),
        expected: 0,
        delivered: 0,
        duplicates: 0,
        out_of_order: 0,
        missing: 0,
        bogus: 0,
        publish_answers: BTreeMap::new(),
        connected: 0,
        connections_failed: 0,
        per_second_max: Vec::new(),
    }
}

/// Waits until the phase reaches `phase`.
async fn until(shared: &Shared, phase: Phase) {
    while shared.phase() < phase {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ------------------------------------------------------------------------------------ echo

/// Per-client counters for the echo load.
#[derive(Default)]
struct EchoCounts {
    sent: u64,
    received: u64,
    out_of_order: u64,
}

async fn run_echo(ctx: &Rc<Ctx>, connections: usize, rate: f64, size: usize) -> HonestReport {
    let per_client = (rate / connections.max(1) as f64).max(0.01);
    let period = Duration::from_secs_f64(1.0 / per_client);
    let counts: Rc<RefCell<Vec<EchoCounts>>> = Rc::new(RefCell::new(
        (0..connections).map(|_| EchoCounts::default()).collect(),
    ));
    let up = Rc::new(Cell::new(0usize));
    let gate = Rc::new(Semaphore::new(100));
    let mut tasks = Vec::new();
    for i in 0..connections {
        let ctx = ctx.clone();
        let counts = counts.clone();
        let up = up.clone();
        let gate = gate.clone();
        // Spread the clients' sends evenly over one period.
        let offset = period.mul_f64(i as f64 / connections.max(1) as f64);
        tasks.push(tokio::task::spawn_local(async move {
            echo_client(ctx, i, period, offset, size, counts, up, gate).await
        }));
    }
    // Ready once every client is up (or after 30 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    while up.get() < connections && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ctx.shared.ready.store(true, Ordering::Relaxed);
    until(&ctx.shared, Phase::Done).await;
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        task.await.ok();
    }
    let mut report = empty_report();
    for c in counts.borrow().iter() {
        report.expected += c.sent;
        report.delivered += c.received;
        report.out_of_order += c.out_of_order;
        report.missing += c.sent.saturating_sub(c.received);
    }
    report
}

fn echo_payload(phase: Phase, seq: u64, sched_ns: u64, size: usize) -> Vec<u8> {
    let mut text = format!("{}{seq:016x}{sched_ns:016x}", phase as u8);
    while text.len() < size {
        text.push('.');
    }
    text.into_bytes()
}

/// Parses [`echo_payload`]: phase, sequence number, scheduled time.
fn parse_echo_payload(payload: &[u8]) -> Option<(usize, u64, u64)> {
    let text = std::str::from_utf8(payload.get(..33)?).ok()?;
    let phase = text.get(..1)?.parse().ok()?;
    let seq = u64::from_str_radix(text.get(1..17)?, 16).ok()?;
    let sched = u64::from_str_radix(text.get(17..33)?, 16).ok()?;
    Some((phase, seq, sched))
}

#[allow(clippy::too_many_arguments)]
async fn echo_client(
    ctx: Rc<Ctx>,
    index: usize,
    period: Duration,
    offset: Duration,
    size: usize,
    counts: Rc<RefCell<Vec<EchoCounts>>>,
    up: Rc<Cell<usize>>,
    gate: Rc<Semaphore>,
) {
    let mut first = true;
    let mut seq = 0u64;
    loop {
        let permit = gate.acquire().await;
        let connected = wire::upgrade(&ctx.addr, "/", None, Duration::from_secs(10)).await;
        drop(permit);
        let mut upgraded = match connected {
            Ok(u) => u,
            Err(answer) => {
                ctx.fail(format!("echo client {index}: upgrade: {answer}"));
                ctx.connections_failed.set(ctx.connections_failed.get() + 1);
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if first {
            first = false;
            up.set(up.get() + 1);
            ctx.shared.connected.fetch_add(1, Ordering::Relaxed);
        }
        let mut tick = tokio::time::interval_at(Instant::now() + offset, period);
        // Late sends go out at once, timestamped with when they should have gone.
        tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let mut expect = seq;
        let mut buf = vec![0u8; 16 << 10];
        let why = loop {
            tokio::select! {
                at = tick.tick() => {
                    let phase = ctx.shared.phase();
                    if phase >= Phase::Drain {
                        continue;
                    }
                    let frame = client_frame(TEXT, false, &echo_payload(phase, seq, ctx.ns(at), size));
                    if let Err(e) = upgraded.tcp.write_all(&frame).await {
                        break format!("write: {e}");
                    }
                    seq += 1;
                    ctx.sent.borrow_mut()[phase as usize] += 1;
                    if let Some(c) = counts.borrow_mut().get_mut(index) {
                        c.sent += 1;
                    }
                }
                read = upgraded.tcp.read(&mut buf) => {
                    let n = match read {
                        Ok(0) => break "the server closed TCP".to_owned(),
                        Ok(n) => n,
                        Err(e) => break format!("read: {e}"),
                    };
                    upgraded.reader.feed(&buf[..n]);
                    let mut broken = None;
                    loop {
                        match upgraded.reader.next_frame() {
                            Ok(Some(frame)) => match frame.opcode {
                                TEXT => match parse_echo_payload(&frame.payload) {
                                    Some((phase, got, sched)) => {
                                        ctx.record(phase, sched);
                                        if let Some(c) = counts.borrow_mut().get_mut(index) {
                                            c.received += 1;
                                            if got != expect {
                                                c.out_of_order += 1;
                                            }
                                        }
                                        expect = got + 1;
                                    }
                                    None => {
                                        broken = Some("an echo that is not ours".to_owned());
                                        break;
                                    }
                                },
                                PING => {
                                    if let Err(e) = upgraded.tcp.write_all(&wire::pong_frame(&frame.payload)).await {
                                        broken = Some(format!("pong: {e}"));
                                        break;
                                    }
                                }
                                CLOSE => {
                                    broken = Some(format!("close {}", frame.close_code()));
                                    break;
                                }
                                _ => {}
                            },
                            Ok(None) => break,
                            Err(e) => {
                                broken = Some(e.0);
                                break;
                            }
                        }
                    }
                    if let Some(why) = broken {
                        break why;
                    }
                }
            }
        };
        ctx.fail(format!("echo client {index}: {why}"));
        ctx.connections_failed.set(ctx.connections_failed.get() + 1);
        // Messages in flight on the broken connection are lost: start counting afresh.
        if let Some(c) = counts.borrow_mut().get_mut(index) {
            c.sent = c.received;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ------------------------------------------------------------------------------------- hub

/// What one hub subscriber received of its topic.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    seen: Vec<u64>,
    /// Distinct sequence numbers received.
    pub unique: u64,
    /// Repeats.
    pub duplicates: u64,
    /// Received after one with a higher hub offset.
    pub out_of_order: u64,
    /// Sequence numbers never published.
    pub bogus: u64,
    max: Option<u64>,
    /// Published (200) messages of its topic before it was subscribed (not expected).
    pub before: u64,
    /// Subscribed (`subscribed` received).
    pub subscribed: bool,
    /// Broken (closed, error) at some point: counted once.
    pub failed: bool,
}

impl Tally {
    /// Records sequence number `seq` delivered at hub offset `offset`; `published` is how
    /// many the publisher has sent to the topic (a higher number is not ours).
    pub fn add(&mut self, seq: u64, offset: u64, published: u64) {
        if seq >= published + 1_000 {
            self.bogus += 1;
            return;
        }
        let word = (seq / 64) as usize;
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        let bit = 1u64 << (seq % 64);
        if self.seen[word] & bit != 0 {
            self.duplicates += 1;
            return;
        }
        self.seen[word] |= bit;
        self.unique += 1;
        match self.max {
            Some(max) if offset <= max => self.out_of_order += 1,
            _ => self.max = Some(offset),
        }
    }

    /// Whether `seq` was received.
    pub fn has(&self, seq: u64) -> bool {
        self.seen
            .get((seq / 64) as usize)
            .is_some_and(|w| w & (1 << (seq % 64)) != 0)
    }
}

/// Per topic: how many publishes were sent, and which got a 200.
#[derive(Debug, Default)]
pub struct TopicLog {
    /// Sequence numbers handed out.
    pub published: u64,
    /// Those acknowledged with 200.
    pub ok: Vec<u64>,
}

/// The state of a hub load, shared by its tasks (also used by the soak).
pub struct HubState {
    /// One per subscriber.
    pub tallies: RefCell<Vec<Tally>>,
    /// One per topic.
    pub topics: RefCell<Vec<TopicLog>>,
    /// Publish outcomes.
    pub answers: RefCell<BTreeMap<String, u64>>,
}

async fn run_hub(
    ctx: &Rc<Ctx>,
    subscribers: usize,
    topics: Vec<String>,
    rate: f64,
    size: usize,
) -> HonestReport {
    let state = Rc::new(HubState {
        tallies: RefCell::new(vec![Tally::default(); subscribers]),
        topics: RefCell::new((0..topics.len()).map(|_| TopicLog::default()).collect()),
        answers: RefCell::new(BTreeMap::new()),
    });
    let topics = Rc::new(topics);
    let gate = Rc::new(Semaphore::new(200));
    let mut tasks = Vec::new();
    for i in 0..subscribers {
        let (ctx, state, topics, gate) = (ctx.clone(), state.clone(), topics.clone(), gate.clone());
        tasks.push(tokio::task::spawn_local(async move {
            hub_subscriber(ctx, i, topics, state, gate).await
        }));
    }
    // Ready once every subscriber is subscribed or failed (or after 120 s).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = state
            .tallies
            .borrow()
            .iter()
            .filter(|t| t.subscribed || t.failed)
            .count();
        if done >= subscribers || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let publisher = {
        let (ctx, state, topics) = (ctx.clone(), state.clone(), topics.clone());
        tokio::task::spawn_local(async move { publisher(ctx, topics, state, rate, size).await })
    };
    ctx.shared.ready.store(true, Ordering::Relaxed);
    until(&ctx.shared, Phase::Done).await;
    publisher.abort();
    publisher.await.ok();
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        task.await.ok();
    }
    let mut report = empty_report();
    account(&state, topics.len(), &mut report);
    report.publish_answers = state.answers.borrow().clone();
    report
}

/// Exact delivery accounting: for each subscriber, every 200-acknowledged message of its
/// topic published after it subscribed must have arrived once.
pub fn account(state: &HubState, topic_count: usize, report: &mut HonestReport) {
    let topics = state.topics.borrow();
    for (i, tally) in state.tallies.borrow().iter().enumerate() {
        let Some(log) = topics.get(i % topic_count.max(1)) else {
            continue;
        };
        if !tally.subscribed {
            continue;
        }
        for &seq in &log.ok {
            if seq < tally.before {
                continue;
            }
            report.expected += 1;
            if tally.has(seq) {
                report.delivered += 1;
            } else {
                report.missing += 1;
            }
        }
        report.duplicates += tally.duplicates;
        report.out_of_order += tally.out_of_order;
        report.bogus += tally.bogus;
    }
}

async fn hub_subscriber(
    ctx: Rc<Ctx>,
    index: usize,
    topics: Rc<Vec<String>>,
    state: Rc<HubState>,
    gate: Rc<Semaphore>,
) {
    let topic_index = index % topics.len().max(1);
    let Some(topic) = topics.get(topic_index) else {
        return;
    };
    let why = hub_subscriber_inner(&ctx, index, topic_index, topic, &state, gate).await;
    ctx.fail(format!("subscriber {index}: {why}"));
    ctx.connections_failed.set(ctx.connections_failed.get() + 1);
    if let Some(t) = state.tallies.borrow_mut().get_mut(index) {
        t.failed = true;
    }
}

/// Runs one subscriber until it breaks; returns why.
async fn hub_subscriber_inner(
    ctx: &Rc<Ctx>,
    index: usize,
    topic_index: usize,
    topic: &str,
    state: &Rc<HubState>,
    gate: Rc<Semaphore>,
) -> String {
    let permit = gate.acquire().await;
    let mut up = match wire::upgrade(&ctx.addr, "/ws", None, Duration::from_secs(20)).await {
        Ok(up) => up,
        Err(answer) => return format!("upgrade: {answer}"),
    };
    let subscribe = format!("{{\"type\":\"subscribe\",\"topic\":\"{topic}\"}}");
    if let Err(e) = up
        .tcp
        .write_all(&client_frame(TEXT, false, subscribe.as_bytes()))
        .await
    {
        return format!("subscribe: {e}");
    }
    ctx.shared.connected.fetch_add(1, Ordering::Relaxed);
    let mut buf = vec![0u8; 32 << 10];
    let mut permit = Some(permit);
    loop {
        loop {
            let frame = match up.reader.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => return e.0,
            };
            match frame.opcode {
                TEXT => {
                    if let Err(why) = hub_text(ctx, index, topic_index, &frame.payload, state) {
                        return why;
                    }
                    if permit.is_some()
                        && state
                            .tallies
                            .borrow()
                            .get(index)
                            .is_some_and(|t| t.subscribed)
                    {
                        permit = None;
                    }
                }
                PING => {
                    if let Err(e) = up.tcp.write_all(&wire::pong_frame(&frame.payload)).await {
                        return format!("pong: {e}");
                    }
                }
                CLOSE => return format!("close {}", frame.close_code()),
                _ => {}
            }
        }
        match up.tcp.read(&mut buf).await {
            Ok(0) => return "the server closed TCP".into(),
            Ok(n) => up.reader.feed(&buf[..n]),
            Err(e) => return format!("read: {e}"),
        }
    }
}

/// Handles one text message of the hub.
fn hub_text(
    ctx: &Ctx,
    index: usize,
    topic_index: usize,
    payload: &[u8],
    state: &HubState,
) -> Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| format!("bad JSON from the hub: {e}"))?;
    match value.get("type").and_then(|t| t.as_str()) {
        Some("subscribed") => {
            let before = state
                .topics
                .borrow()
                .get(topic_index)
                .map_or(0, |t| t.published);
            if let Some(t) = state.tallies.borrow_mut().get_mut(index) {
                t.subscribed = true;
                t.before = before;
            }
            Ok(())
        }
        Some("message") => {
            let data = value.get("data");
            let field = |name| data.and_then(|d| d.get(name)).and_then(|v| v.as_u64());
            let (Some(seq), Some(t), Some(p)) = (field("seq"), field("t"), field("p")) else {
                return Ok(()); // not ours
            };
            let offset = value.get("offset").and_then(|o| o.as_u64()).unwrap_or(0);
            let published = state
                .topics
                .borrow()
                .get(topic_index)
                .map_or(0, |t| t.published);
            if let Some(tally) = state.tallies.borrow_mut().get_mut(index) {
                let dup = tally.has(seq);
                tally.add(seq, offset, published);
                if !dup {
                    ctx.record(p as usize, t);
                }
            }
            Ok(())
        }
        Some("error") => Err(format!("hub error {}", value.get("code").unwrap_or(&value))),
        Some("gap") => Err(format!("hub gap {value}")),
        _ => Ok(()),
    }
}

/// The honest publishers: `PUBLISHERS` keep-alive connections sharing one schedule of `rate`
/// messages per second, round-robin over the topics (message n goes to topic n mod K with
/// sequence number n / K, publisher n mod P sends it). Bodies are
/// `{"seq":N,"t":NS,"p":PHASE,"pad":"..."}`. With several publishers a topic's messages may
/// be stored in another order than their sequence numbers: subscribers check order by the
/// hub's offsets, and completeness by the sequence numbers.
pub const PUBLISHERS: usize = 4;

async fn publisher(
    ctx: Rc<Ctx>,
    topics: Rc<Vec<String>>,
    state: Rc<HubState>,
    rate: f64,
    size: usize,
) {
    let first = Instant::now() + Duration::from_millis(10);
    let mut tasks = Vec::new();
    for j in 0..PUBLISHERS {
        let (ctx, topics, state) = (ctx.clone(), topics.clone(), state.clone());
        tasks.push(tokio::task::spawn_local(async move {
            publish_loop(ctx, topics, state, rate, size, first, j).await
        }));
    }
    // Aborting this task drops the handles, which does not abort them: wait here until the
    // end, then abort them.
    let _guard = AbortOnDrop(tasks);
    std::future::pending::<()>().await;
}

struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

async fn publish_loop(
    ctx: Rc<Ctx>,
    topics: Rc<Vec<String>>,
    state: Rc<HubState>,
    rate: f64,
    size: usize,
    first: Instant,
    j: usize,
) {
    let mut http = HttpClient::new(&ctx.addr);
    let period = Duration::from_secs_f64(1.0 / rate.max(0.01));
    let k_count = topics.len().max(1);
    let mut n = j;
    loop {
        let at = first + period.mul_f64(n as f64);
        tokio::time::sleep_until(at).await;
        let phase = ctx.shared.phase();
        if phase >= Phase::Drain {
            n += PUBLISHERS;
            continue;
        }
        let k = n % k_count;
        let seq = (n / k_count) as u64;
        n += PUBLISHERS;
        let Some(topic) = topics.get(k) else { return };
        if let Some(log) = state.topics.borrow_mut().get_mut(k) {
            log.published = log.published.max(seq + 1);
        }
        let mut body = format!(
            "{{\"seq\":{seq},\"t\":{},\"p\":{},\"pad\":\"",
            ctx.ns(at),
            phase as u8
        );
        while body.len() + 2 < size {
            body.push('x');
        }
        body.push_str("\"}");
        let answer = http
            .post(
                &format!("/publish/{topic}"),
                body.as_bytes(),
                Duration::from_secs(10),
            )
            .await;
        *state
            .answers
            .borrow_mut()
            .entry(answer.to_string())
            .or_default() += 1;
        if answer == Answer::Status(200) {
            if let Some(log) = state.topics.borrow_mut().get_mut(k) {
                log.ok.push(seq);
            }
            ctx.sent.borrow_mut()[phase as usize] += 1;
        } else {
            ctx.fail(format!("publish {topic} #{seq}: {answer}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_payload_round_trips() {
        let payload = echo_payload(Phase::Attack, 77, 123_456_789, 64);
        assert_eq!(payload.len(), 64);
        assert_eq!(parse_echo_payload(&payload), Some((2, 77, 123_456_789)));
        assert_eq!(parse_echo_payload(b"short"), None);
        assert_eq!(parse_echo_payload(&[0xff; 40]), None);
    }

    #[test]
    fn tally_counts_duplicates_gaps_and_order() {
        let mut t = Tally::default();
        for (seq, offset) in [(0, 1), (1, 2), (3, 4), (2, 3), (2, 3), (5_000_000, 9)] {
            t.add(seq, offset, 10);
        }
        assert_eq!(t.unique, 4);
        assert_eq!(t.duplicates, 1);
        assert_eq!(t.out_of_order, 1);
        assert_eq!(t.bogus, 1);
        assert!(t.has(3) && !t.has(4));
    }

    #[test]
    fn accounting_expects_only_what_followed_the_subscription() {
        let state = HubState {
            tallies: RefCell::new(vec![Tally::default(); 2]),
            topics: RefCell::new(vec![TopicLog {
                published: 4,
                ok: vec![0, 1, 2, 3],
            }]),
            answers: RefCell::new(BTreeMap::new()),
        };
        {
            let mut tallies = state.tallies.borrow_mut();
            tallies[0].subscribed = true;
            tallies[1].subscribed = true;
            tallies[1].before = 2;
            for seq in [0, 1, 3] {
                tallies[0].add(seq, seq + 1, 4);
            }
            tallies[1].add(2, 3, 4);
            tallies[1].add(3, 4, 4);
            tallies[1].add(3, 4, 4);
        }
        let mut report = empty_report();
        account(&state, 1, &mut report);
        assert_eq!(report.expected, 6);
        assert_eq!(report.delivered, 5);
        assert_eq!(report.missing, 1);
        assert_eq!(report.duplicates, 1);
    }
}

//! The hostile classes: what each connection does, and how the server's answer is recorded.
//!
//! Each class runs N *slots*. A slot opens a connection, attacks, waits for the answer (until
//! the attempt's deadline), and once answered opens the next one after a pause, until the
//! attack ends: N hostile connections of the class stay open or opening for the whole attack.
//! Floods (topics, history) keep one connection per slot and record every request.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use fullduplex_proto::frame::OpCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::LocalSet;
use tokio::time::Instant;

use super::child::Target;
use super::wire::{self, Answer, HttpClient, BINARY, CLOSE, TEXT};
use crate::frames::{client_frame, deflate_message};

/// A kind of hostile connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// A request head trickled a byte at a time.
    Slowloris,
    /// An 80 KiB header line.
    OversizedHead,
    /// After the handshake, a frame announcing 2^62 bytes.
    HugeLength,
    /// After the handshake, an unmasked frame.
    Unmasked,
    /// After the handshake, a text frame that is not UTF-8.
    InvalidUtf8,
    /// A compressed message that inflates far beyond the message limit.
    DeflateBomb,
    /// Never reads: sends a lot (echo) or subscribes to the honest topic (hub).
    NeverReading,
    /// Connects and sends nothing.
    Abandoned,
    /// Upgrades, then never answers pings.
    Silent,
    /// Subscribes to new topics as fast as allowed (hub).
    TopicFlood,
    /// Large HTTP publishes to ever new topics (hub).
    HistoryFlood,
}

/// Every class, in report order.
pub const ALL: [Class; 11] = [
    Class::Slowloris,
    Class::OversizedHead,
    Class::HugeLength,
    Class::Unmasked,
    Class::InvalidUtf8,
    Class::DeflateBomb,
    Class::NeverReading,
    Class::Abandoned,
    Class::Silent,
    Class::TopicFlood,
    Class::HistoryFlood,
];

impl Class {
    /// Its name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Class::Slowloris => "slowloris",
            Class::OversizedHead => "oversized-head",
            Class::HugeLength => "huge-length",
            Class::Unmasked => "unmasked",
            Class::InvalidUtf8 => "invalid-utf8",
            Class::DeflateBomb => "deflate-bomb",
            Class::NeverReading => "never-reading",
            Class::Abandoned => "abandoned",
            Class::Silent => "silent",
            Class::TopicFlood => "topic-flood",
            Class::HistoryFlood => "history-flood",
        }
    }

    /// The class named `name`.
    pub fn parse(name: &str) -> Result<Class, String> {
        ALL.iter()
            .copied()
            .find(|c| c.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = ALL.iter().map(|c| c.name()).collect();
                format!("unknown class {name:?} (one of {})", names.join(", "))
            })
    }

    /// Whether the class applies to `target` (floods need the hub).
    pub fn applies(self, target: Target) -> bool {
        !matches!(
            (self, target),
            (Class::TopicFlood | Class::HistoryFlood, Target::Echo)
        )
    }

    /// What the server should answer, for the report.
    pub fn expected(self, target: Target) -> &'static str {
        match (self, target) {
            (Class::Slowloris, _) => "closed at the head timeout (10 s)",
            (Class::OversizedHead, _) => "HTTP 431",
            (Class::HugeLength, _) => "close 1009 (or 1002)",
            (Class::Unmasked, _) => "close 1002",
            (Class::InvalidUtf8, _) => "close 1007",
            (Class::DeflateBomb, _) => {
                "close 1009 after bounded work (1002 if compression is not negotiated)"
            }
            (Class::NeverReading, Target::Echo) => "closed by write limits or keepalive",
            (Class::NeverReading, Target::Hub) => "close 1013 (slow consumer)",
            (Class::Abandoned, _) => "closed at the head timeout (10 s)",
            (Class::Silent, Target::Echo) => "close 1011 after 40 s (keepalive)",
            (Class::Silent, Target::Hub) => "closed after 60 s (keepalive 30 s + 30 s)",
            (Class::TopicFlood, _) => "error `topic_rate_limited` / `too_many_subscriptions`",
            (Class::HistoryFlood, _) => "HTTP 200 while the history budget evicts",
        }
    }
}

/// How the classes behave.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The server.
    pub target: Target,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The honest topic (hub): the never-reading class subscribes to it.
    pub honest_topic: String,
    /// Seconds between two bytes of a slowloris head.
    pub slowloris_interval: Duration,
    /// How long an attempt waits for its answer.
    pub answer_timeout: Duration,
    /// Pause between an answer and the slot's next connection.
    pub reconnect_pause: Duration,
    /// Inflated size of a deflate bomb.
    pub bomb_size: usize,
    /// Subscribes per second per topic-flood connection.
    pub topic_flood_rate: f64,
    /// Publishes per second per history-flood connection.
    pub history_flood_rate: f64,
    /// Body bytes of a history-flood publish.
    pub history_flood_size: usize,
}

/// One outcome: the answer, how long it took, and the time it was recorded.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The answer.
    pub answer: Answer,
    /// From the hostile act to the answer.
    pub time: Duration,
}

/// Everything recorded for one class.
#[derive(Debug, Default, Clone)]
pub struct ClassStats {
    /// Slots (concurrent connections).
    pub slots: usize,
    /// Connections opened (or requests, for the history flood).
    pub attempts: u64,
    /// Outcomes by answer: count and times (ms).
    pub answers: BTreeMap<Answer, Vec<f64>>,
    /// Class-specific notes (compression negotiated or not, bytes sent before a stall...).
    pub notes: BTreeMap<String, u64>,
}

impl ClassStats {
    fn record(&mut self, outcome: Outcome) {
        self.answers
            .entry(outcome.answer)
            .or_default()
            .push(outcome.time.as_secs_f64() * 1000.0);
    }

    fn note(&mut self, what: impl Into<String>, n: u64) {
        *self.notes.entry(what.into()).or_default() += n;
    }
}

type Stats = Rc<RefCell<BTreeMap<Class, ClassStats>>>;

/// Runs `slots` connections of each class until `end` on a new thread (its own runtime);
/// returns the statistics when joined.
pub fn spawn(
    settings: Settings,
    slots: Vec<(Class, usize)>,
    end: std::time::Instant,
    cpu: Option<usize>,
) -> std::thread::JoinHandle<Result<BTreeMap<Class, ClassStats>, String>> {
    std::thread::spawn(move || {
        if let Some(cpu) = cpu {
            super::child::pin_current_thread(cpu);
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let local = LocalSet::new();
        let stats: Stats = Rc::new(RefCell::new(BTreeMap::new()));
        let end = Instant::from_std(end);
        let bomb = Rc::new(bomb(settings.bomb_size));
        let settings = Rc::new(settings);
        local.block_on(&runtime, async {
            let total: usize = slots.iter().map(|(_, n)| n).sum();
            let mut tasks = Vec::new();
            let mut k = 0usize;
            for (class, n) in &slots {
                stats.borrow_mut().entry(*class).or_default().slots = *n;
                for slot in 0..*n {
                    // Start the slots over the first two seconds, interleaving the classes.
                    let delay = Duration::from_secs_f64(2.0 * k as f64 / total.max(1) as f64);
                    k += 1;
                    let (settings, stats, bomb, class) =
                        (settings.clone(), stats.clone(), bomb.clone(), *class);
                    tasks.push(tokio::task::spawn_local(async move {
                        tokio::time::sleep(delay).await;
                        run_slot(class, slot, &settings, &stats, &bomb, end).await;
                    }));
                }
            }
            tokio::time::sleep_until(end + Duration::from_millis(500)).await;
            for task in &tasks {
                task.abort();
            }
            for task in tasks {
                task.await.ok();
            }
        });
        let stats = stats.borrow().clone();
        Ok(stats)
    })
}

/// A permessage-deflate frame payload that inflates to `size` zero bytes.
pub fn bomb(size: usize) -> Vec<u8> {
    deflate_message(&vec![0u8; size])
}

async fn run_slot(
    class: Class,
    slot: usize,
    settings: &Settings,
    stats: &Stats,
    bomb: &[u8],
    end: Instant,
) {
    match class {
        Class::TopicFlood => return topic_flood(slot, settings, stats, end).await,
        Class::HistoryFlood => return history_flood(slot, settings, stats, end).await,
        _ => {}
    }
    while Instant::now() < end {
        let started = Instant::now();
        let deadline = (started + settings.answer_timeout).min(end);
        stats.borrow_mut().entry(class).or_default().attempts += 1;
        let outcome = tokio::select! {
            outcome = one_attempt(class, settings, stats, bomb, deadline) => outcome,
            _ = tokio::time::sleep_until(end) => Outcome { answer: Answer::CutOff, time: started.elapsed() },
        };
        let outcome = match outcome.answer {
            Answer::NoAnswer(_) if deadline >= end => Outcome {
                answer: Answer::CutOff,
                ..outcome
            },
            Answer::NoAnswer(_) => Outcome {
                answer: Answer::NoAnswer(settings.answer_timeout.as_secs()),
                ..outcome
            },
            _ => outcome,
        };
        stats.borrow_mut().entry(class).or_default().record(outcome);
        tokio::time::sleep(settings.reconnect_pause).await;
    }
}

/// One connection of `class`: the answer and the time from the hostile act to it.
async fn one_attempt(
    class: Class,
    s: &Settings,
    stats: &Stats,
    bomb: &[u8],
    deadline: Instant,
) -> Outcome {
    let started = Instant::now();
    let done = |answer: Answer, since: Instant| Outcome {
        answer,
        time: since.elapsed(),
    };
    let path = s.target.path();
    let timeout = deadline.saturating_duration_since(started);
    match class {
        Class::Slowloris => {
            let mut tcp = match wire::connect(&s.addr, timeout).await {
                Ok(tcp) => tcp,
                Err(a) => return done(a, started),
            };
            let head = wire::upgrade_request(&s.addr, path, None);
            let mut next = 0usize;
            let mut buf = [0u8; 4096];
            let mut got = Vec::new();
            let mut drip = tokio::time::interval(s.slowloris_interval);
            loop {
                tokio::select! {
                    _ = drip.tick(), if next < head.len() => {
                        // A write error means the server closed: keep reading for its answer.
                        if tcp.write_all(&head[next..next + 1]).await.is_ok() {
                            next += 1;
                        } else {
                            next = head.len();
                        }
                    }
                    read = tokio::time::timeout_at(deadline, tcp.read(&mut buf)) => {
                        let answer = match read {
                            Err(_) => Answer::NoAnswer(0),
                            Ok(Ok(0)) => http_or(&got, Answer::TcpClose),
                            Ok(Ok(n)) => {
                                got.extend_from_slice(&buf[..n]);
                                match wire::parse_response_head(&got) {
                                    Ok(Some((head, _))) => Answer::Status(head.status),
                                    Ok(None) => continue,
                                    Err(e) => Answer::Failed(e.0),
                                }
                            }
                            Ok(Err(e)) => http_or(&got, wire::io_answer(&e)),
                        };
                        return done(answer, started);
                    }
                }
            }
        }
        Class::OversizedHead => {
            let tcp = match wire::connect(&s.addr, timeout).await {
                Ok(tcp) => tcp,
                Err(a) => return done(a, started),
            };
            let sent = Instant::now();
            let mut head = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nX-Filler: ", s.addr);
            head.push_str(&"a".repeat(80 << 10));
            head.push_str("\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
            let (mut rd, mut wr) = tcp.into_split();
            let write = async move {
                let _ = wr.write_all(head.as_bytes()).await;
                // Keep the write half open (dropping it would send FIN).
                std::future::pending::<()>().await;
                drop(wr);
            };
            let read = async {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    match tokio::time::timeout_at(deadline, rd.read(&mut buf)).await {
                        Err(_) => return Answer::NoAnswer(0),
                        Ok(Ok(0)) => return http_or(&got, Answer::TcpClose),
                        Ok(Ok(n)) => {
                            got.extend_from_slice(&buf[..n]);
                            match wire::parse_response_head(&got) {
                                Ok(Some((head, _))) => return Answer::Status(head.status),
                                Ok(None) => {}
                                Err(e) => return Answer::Failed(e.0),
                            }
                        }
                        Ok(Err(e)) => return http_or(&got, wire::io_answer(&e)),
                    }
                }
            };
            tokio::select! {
                answer = read => done(answer, sent),
                _ = write => done(Answer::Failed("unreachable".into()), sent),
            }
        }
        Class::HugeLength | Class::Unmasked | Class::InvalidUtf8 => {
            let mut up = match wire::upgrade(&s.addr, path, None, timeout).await {
                Ok(up) => up,
                Err(a) => return done(a, started),
            };
            let frame = match class {
                Class::HugeLength => wire::huge_length_frame(),
                Class::Unmasked => wire::unmasked_frame(OpCode::Text, b"hello"),
                _ => wire::invalid_utf8_frame(),
            };
            let sent = Instant::now();
            if let Err(e) = up.tcp.write_all(&frame).await {
                return done(wire::io_answer(&e), sent);
            }
            let answer = wire::read_close(&mut up.tcp, &mut up.reader, deadline).await;
            done(answer, sent)
        }
        Class::DeflateBomb => {
            let offer =
                "permessage-deflate; client_no_context_takeover; server_no_context_takeover";
            let mut up = match wire::upgrade(&s.addr, path, Some(offer), timeout).await {
                Ok(up) => up,
                Err(a) => return done(a, started),
            };
            let negotiated = up
                .head
                .header("sec-websocket-extensions")
                .is_some_and(|e| e.contains("permessage-deflate"));
            stats.borrow_mut().entry(class).or_default().note(
                if negotiated {
                    "compression negotiated"
                } else {
                    "compression not negotiated (sent with RSV1 anyway)"
                },
                1,
            );
            let frame = client_frame(BINARY, true, bomb);
            let sent = Instant::now();
            if let Err(e) = up.tcp.write_all(&frame).await {
                return done(wire::io_answer(&e), sent);
            }
            let answer = wire::read_close(&mut up.tcp, &mut up.reader, deadline).await;
            done(answer, sent)
        }
        Class::NeverReading => never_reading(s, stats, deadline, timeout).await,
        Class::Abandoned => {
            let mut tcp = match wire::connect(&s.addr, timeout).await {
                Ok(tcp) => tcp,
                Err(a) => return done(a, started),
            };
            let connected = Instant::now();
            let answer = match wire::read_head(&mut tcp, deadline).await {
                Ok((head, _)) => Answer::Status(head.status),
                Err(answer) => answer,
            };
            done(answer, connected)
        }
        Class::Silent => {
            let mut up = match wire::upgrade(&s.addr, path, None, timeout).await {
                Ok(up) => up,
                Err(a) => return done(a, started),
            };
            let upgraded = Instant::now();
            let answer = wire::read_close(&mut up.tcp, &mut up.reader, deadline).await;
            done(answer, upgraded)
        }
        Class::TopicFlood | Class::HistoryFlood => {
            done(Answer::Failed("not a slot".into()), started)
        }
    }
}

/// An HTTP status if `got` holds a response head, else `otherwise`.
fn http_or(got: &[u8], otherwise: Answer) -> Answer {
    match wire::parse_response_head(got) {
        Ok(Some((head, _))) => Answer::Status(head.status),
        _ => otherwise,
    }
}

/// Echo: upgrade, then send 64 KiB messages without ever reading; the answer is the write
/// that fails (the server closed: reset or broken pipe). Hub: upgrade, subscribe to the
/// honest topic, never read, and send an empty ping every 500 ms (data reaching a socket the
/// server closed is answered with a reset, so the failing write tells when).
async fn never_reading(
    s: &Settings,
    stats: &Stats,
    deadline: Instant,
    timeout: Duration,
) -> Outcome {
    let started = Instant::now();
    let mut up = match wire::upgrade(&s.addr, s.target.path(), None, timeout).await {
        Ok(up) => up,
        Err(answer) => {
            return Outcome {
                answer,
                time: started.elapsed(),
            }
        }
    };
    let begun = Instant::now();
    let mut written = 0u64;
    let answer = match s.target {
        Target::Echo => {
            let frame = client_frame(BINARY, false, &vec![0x5a; 64 << 10]);
            loop {
                match tokio::time::timeout_at(deadline, up.tcp.write_all(&frame)).await {
                    Err(_) => break Answer::NoAnswer(0),
                    Ok(Ok(())) => written += frame.len() as u64,
                    Ok(Err(e)) => break wire::io_answer(&e),
                }
            }
        }
        Target::Hub => {
            let subscribe = format!(
                "{{\"type\":\"subscribe\",\"topic\":\"{}\"}}",
                s.honest_topic
            );
            let mut result = up
                .tcp
                .write_all(&client_frame(TEXT, false, subscribe.as_bytes()))
                .await;
            let mut probe = tokio::time::interval(Duration::from_millis(500));
            loop {
                if let Err(e) = result {
                    break wire::io_answer(&e);
                }
                if tokio::time::timeout_at(deadline, probe.tick())
                    .await
                    .is_err()
                {
                    break Answer::NoAnswer(0);
                }
                result =
                    match tokio::time::timeout_at(deadline, up.tcp.write_all(&wire::ping_frame()))
                        .await
                    {
                        Err(_) => break Answer::NoAnswer(0),
                        Ok(r) => r,
                    };
            }
        }
    };
    // After the reset, what the socket still holds may show the close code (the hub's 1013).
    let answer = match answer {
        Answer::Reset | Answer::TcpClose => {
            let code = drain_for_close(&mut up, Duration::from_millis(300)).await;
            code.map(Answer::Close).unwrap_or(answer)
        }
        other => other,
    };
    if written > 0 {
        let mut stats = stats.borrow_mut();
        let entry = stats.entry(Class::NeverReading).or_default();
        entry.note("MiB written without reading (sum)", written >> 20);
    }
    Outcome {
        answer,
        time: begun.elapsed(),
    }
}

/// Reads what the socket still holds for a close frame (briefly).
async fn drain_for_close(up: &mut wire::Upgraded, wait: Duration) -> Option<u16> {
    let deadline = Instant::now() + wait;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        while let Ok(Some(frame)) = up.reader.next_frame() {
            if frame.opcode == CLOSE {
                return Some(frame.close_code());
            }
        }
        match tokio::time::timeout_at(deadline, up.tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => up.reader.feed(&buf[..n]),
            _ => return None,
        }
    }
}

/// One connection per slot subscribing to new topics (`flood-SLOT-I`) at the flood rate
/// until the attack ends. Each answer (`subscribed` or an error code) is recorded with the
/// time since its request; the connection is reopened if the server closes it.
async fn topic_flood(slot: usize, s: &Settings, stats: &Stats, end: Instant) {
    let mut i = 0u64;
    while Instant::now() < end {
        stats
            .borrow_mut()
            .entry(Class::TopicFlood)
            .or_default()
            .attempts += 1;
        let started = Instant::now();
        let mut up =
            match wire::upgrade(&s.addr, "/ws", None, s.answer_timeout.min(end - started)).await {
                Ok(up) => up,
                Err(answer) => {
                    stats
                        .borrow_mut()
                        .entry(Class::TopicFlood)
                        .or_default()
                        .record(Outcome {
                            answer,
                            time: started.elapsed(),
                        });
                    tokio::time::sleep(s.reconnect_pause).await;
                    continue;
                }
            };
        let mut pending: BTreeMap<u64, Instant> = BTreeMap::new();
        let mut tick =
            tokio::time::interval(Duration::from_secs_f64(1.0 / s.topic_flood_rate.max(0.01)));
        let mut buf = vec![0u8; 16 << 10];
        let ended: Option<Answer> = loop {
            tokio::select! {
                _ = tokio::time::sleep_until(end) => break None,
                _ = tick.tick() => {
                    let request = format!("{{\"type\":\"subscribe\",\"topic\":\"flood-{slot}-{i}\",\"id\":{i}}}");
                    if let Err(e) = up.tcp.write_all(&client_frame(TEXT, false, request.as_bytes())).await {
                        break Some(wire::io_answer(&e));
                    }
                    pending.insert(i, Instant::now());
                    i += 1;
                }
                read = up.tcp.read(&mut buf) => {
                    match read {
                        Ok(0) => break Some(Answer::TcpClose),
                        Ok(n) => up.reader.feed(&buf[..n]),
                        Err(e) => break Some(wire::io_answer(&e)),
                    }
                    let mut closed = None;
                    loop {
                        match up.reader.next_frame() {
                            Ok(Some(frame)) if frame.opcode == TEXT => {
                                let Ok(value) = serde_json::from_slice::<serde_json::Value>(&frame.payload) else { continue };
                                let kind = value.get("type").and_then(|t| t.as_str()).unwrap_or("");
                                let id = value.get("id").and_then(|v| v.as_u64());
                                let answer = match kind {
                                    "subscribed" => Answer::Reply("subscribed".into()),
                                    "error" => Answer::Error(value.get("code").and_then(|c| c.as_str()).unwrap_or("?").to_owned()),
                                    _ => continue,
                                };
                                let sent = id.and_then(|id| pending.remove(&id)).unwrap_or_else(Instant::now);
                                stats.borrow_mut().entry(Class::TopicFlood).or_default().record(Outcome { answer, time: sent.elapsed() });
                            }
                            Ok(Some(frame)) if frame.opcode == CLOSE => { closed = Some(Answer::Close(frame.close_code())); break; }
                            Ok(Some(frame)) if frame.opcode == wire::PING => {
                                let _ = up.tcp.write_all(&wire::pong_frame(&frame.payload)).await;
                            }
                            Ok(Some(_)) => {}
                            Ok(None) => break,
                            Err(e) => { closed = Some(Answer::Failed(e.0)); break; }
                        }
                    }
                    if closed.is_some() {
                        break closed;
                    }
                }
            }
        };
        if let Some(answer) = ended {
            stats
                .borrow_mut()
                .entry(Class::TopicFlood)
                .or_default()
                .record(Outcome {
                    answer,
                    time: started.elapsed(),
                });
            tokio::time::sleep(s.reconnect_pause).await;
        }
    }
}

/// One keep-alive HTTP connection per slot publishing `history_flood_size` bytes to a new
/// topic (`hflood-SLOT-I`) at the flood rate; every request's status and time is recorded.
async fn history_flood(slot: usize, s: &Settings, stats: &Stats, end: Instant) {
    let mut http = HttpClient::new(&s.addr);
    let mut body = String::from("\"");
    while body.len() + 1 < s.history_flood_size {
        body.push_str("0123456789abcdef");
    }
    body.truncate(s.history_flood_size.saturating_sub(1).max(1));
    body.push('"');
    let mut tick = tokio::time::interval(Duration::from_secs_f64(
        1.0 / s.history_flood_rate.max(0.01),
    ));
    let mut i = 0u64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(end) => return,
            _ = tick.tick() => {}
        }
        let sent = Instant::now();
        let cut = end.saturating_duration_since(sent) < s.answer_timeout;
        let timeout = s
            .answer_timeout
            .min(end.saturating_duration_since(sent))
            .max(Duration::from_millis(100));
        let answer = match http
            .post(
                &format!("/publish/hflood-{slot}-{i}"),
                body.as_bytes(),
                timeout,
            )
            .await
        {
            Answer::NoAnswer(_) if cut => Answer::CutOff,
            Answer::NoAnswer(_) => Answer::NoAnswer(s.answer_timeout.as_secs()),
            other => other,
        };
        i += 1;
        let mut stats = stats.borrow_mut();
        let entry = stats.entry(Class::HistoryFlood).or_default();
        entry.attempts += 1;
        if answer == Answer::Status(200) {
            entry.note("bytes accepted", body.len() as u64);
        }
        entry.record(Outcome {
            answer,
            time: sent.elapsed(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_round_trip() {
        for class in ALL {
            assert_eq!(Class::parse(class.name()), Ok(class));
        }
        assert!(Class::parse("nope").is_err());
        assert!(!Class::TopicFlood.applies(Target::Echo));
        assert!(Class::TopicFlood.applies(Target::Hub));
    }

    #[test]
    fn bomb_is_small_and_inflates_to_its_size() {
        let packed = bomb(8 << 20);
        assert!(packed.len() < 16 << 10, "{} bytes", packed.len());
        let mut with_tail = packed.clone();
        with_tail.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let mut inflate = flate2::Decompress::new(false);
        let mut out = Vec::with_capacity(9 << 20);
        inflate
            .decompress_vec(&with_tail, &mut out, flate2::FlushDecompress::Sync)
            .unwrap();
        assert_eq!(out.len(), 8 << 20);
    }
}

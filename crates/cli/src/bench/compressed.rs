//! Echo mode with `--compress`: permessage-deflate negotiated, JSON-like payloads, through the
//! library's `WebSocket` (compression makes the per-message work the library's anyway).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fullduplex::proto::OpCode;
use fullduplex::{Config, Message, Utf8Bytes, WebSocket};
use fullduplex_loadgen::echo::ParseError;
use fullduplex_loadgen::message::{payload, Style, DISTINCT};
use fullduplex_loadgen::LoadReport;
use tokio::net::TcpStream;

use super::args::BenchArgs;
use super::connect::{open_all, open_failure, ConnectError, Target};
use super::finish::finish_echo;
use super::progress::{self, Progress};
use super::raw::{DriveError, CLOSE_WAIT, RETRY_PAUSE};
use super::stats::{Counts, Samples, Shared, Window};
use crate::Failure;

type Socket = WebSocket<TcpStream>;

/// What every connection of the run shares.
struct Plan {
    messages: Vec<Message>,
    binary: bool,
    pipeline: usize,
    size: u64,
    interval: Option<Duration>,
    connections: usize,
    window: Window,
}

/// Runs compressed echo mode and reports.
pub async fn run(args: &BenchArgs, target: Arc<Target>) -> Result<LoadReport, Failure> {
    let connections = args.connections;
    let max_message = args.size.max(1 << 20);
    let opened = {
        let shared_target = target.clone();
        open_all(connections, move |index| {
            let target = shared_target.clone();
            async move { open(&target, index, max_message).await }
        })
        .await
        .map_err(|failed| open_failure(&target, connections, failed))?
    };
    let messages = (0..DISTINCT)
        .map(|j| {
            let bytes = Bytes::from(payload(j, args.size, Style::Json));
            if args.binary {
                Ok(Message::Binary(bytes))
            } else {
                Utf8Bytes::try_from(bytes).map(Message::Text)
            }
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure::new(format!("payload is not UTF-8: {e}")))?;
    let shared = Shared::new(progress::wanted(args.json));
    shared.open.store(connections as u64, Ordering::Relaxed);
    let window = Window::starting_now(args.warmup, args.duration);
    let plan = Arc::new(Plan {
        messages,
        binary: args.binary,
        pipeline: args.pipeline,
        size: args.size as u64,
        interval: args
            .rate
            .map(|rate| Duration::from_secs_f64(connections as f64 / rate)),
        connections,
        window,
    });
    let progress = shared
        .live
        .then(|| Progress::start(shared.clone(), window, "msg"));
    let mut tasks = Vec::with_capacity(connections);
    for (index, ws) in opened.into_iter().enumerate() {
        let (plan, target, shared) = (plan.clone(), target.clone(), shared.clone());
        tasks.push(tokio::spawn(async move {
            connection(index, ws, plan, target, shared, max_message).await
        }));
    }
    Ok(finish_echo(tasks, progress, &shared, args, connections, true).await)
}

/// Connects and upgrades with permessage-deflate offered; fails if the server declines it.
async fn open(target: &Target, index: usize, max_message: usize) -> Result<Socket, ConnectError> {
    let attempt = async {
        let tcp = target.tcp(index).await?;
        let config = Config::default()
            .compression(true)
            .max_message_size(max_message);
        let (ws, _) = fullduplex::client_handshake(tcp, target.request(), config).await?;
        if !ws.is_compressed() {
            return Err(ConnectError::NoCompression);
        }
        Ok(ws)
    };
    match tokio::time::timeout(target.timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(ConnectError::Timeout(target.timeout)),
    }
}

/// One connection for the whole run, reconnecting after failures.
async fn connection(
    index: usize,
    first: Socket,
    plan: Arc<Plan>,
    target: Arc<Target>,
    shared: Arc<Shared>,
    max_message: usize,
) -> (Counts, bool) {
    let mut counts = Counts::default();
    let mut samples = Samples::new(shared.clone());
    let offset = plan
        .interval
        .map(|i| i.mul_f64(index as f64 / plan.connections as f64))
        .unwrap_or_default();
    let mut next_due = plan.window.start + offset;
    let mut next = Some(first);
    let mut open_at_end = false;
    let end = plan.window.end;
    loop {
        let mut ws = match next.take() {
            Some(ws) => ws,
            None => loop {
                if Instant::now() >= end {
                    samples.flush();
                    return (counts, open_at_end);
                }
                match tokio::time::timeout_at(end.into(), open(&target, index, max_message)).await {
                    Ok(Ok(ws)) => {
                        counts.reconnects += 1;
                        shared.open.fetch_add(1, Ordering::Relaxed);
                        break ws;
                    }
                    Ok(Err(error)) => {
                        counts.errors += 1;
                        shared.error(index, &error.describe(&target.authority));
                        let pause = (Instant::now() + RETRY_PAUSE).min(end);
                        tokio::time::sleep_until(pause.into()).await;
                    }
                    Err(_) => {
                        samples.flush();
                        return (counts, open_at_end);
                    }
                }
            },
        };
        match drive(
            &mut ws,
            &plan,
            &mut next_due,
            &mut counts,
            &mut samples,
            &shared,
        )
        .await
        {
            Ok(()) => {
                open_at_end = true;
                samples.flush();
                let _ = tokio::time::timeout(CLOSE_WAIT, ws.close(None)).await;
                break;
            }
            Err(error) => {
                counts.errors += 1;
                shared.open.fetch_sub(1, Ordering::Relaxed);
                shared.error(index, &error.to_string());
                if Instant::now() >= end {
                    break;
                }
            }
        }
    }
    samples.flush();
    (counts, open_at_end)
}

/// Runs one connection until the end of the run (`Ok`) or until it fails.
async fn drive(
    ws: &mut Socket,
    plan: &Plan,
    next_due: &mut Instant,
    counts: &mut Counts,
    samples: &mut Samples,
    shared: &Shared,
) -> Result<(), DriveError> {
    let mut sent: VecDeque<Instant> = VecDeque::with_capacity(plan.pipeline);
    let mut send_index = 0usize;
    let mut recv_index = 0usize;
    let end = plan.window.end;
    *next_due = (*next_due).max(Instant::now());
    let deadline = tokio::time::sleep_until(end.into());
    tokio::pin!(deadline);
    loop {
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        // Queue what may go now; `recv` writes it in one batch when it has to wait.
        while sent.len() < plan.pipeline {
            let at = match plan.interval {
                None => now,
                Some(_) if *next_due <= now => *next_due,
                Some(_) => break,
            };
            ws.feed(plan.messages[send_index].clone()).await?;
            send_index = (send_index + 1) % DISTINCT;
            sent.push_back(at);
            if let Some(interval) = plan.interval {
                *next_due += interval;
            }
        }
        let pace = plan
            .interval
            .filter(|_| sent.len() < plan.pipeline)
            .map(|_| *next_due);
        let message = tokio::select! {
            biased;
            message = ws.recv() => message,
            _ = &mut deadline => return Ok(()),
            _ = sleep_until_opt(pace) => continue,
        };
        let message = match message {
            None => return Err(ParseError::Closed { code: None }.into()),
            Some(Err(error)) => return Err(DriveError::Library(error)),
            Some(Ok(message)) => message,
        };
        let data = match &message {
            Message::Text(text) if !plan.binary => text.as_bytes(),
            Message::Binary(data) if plan.binary => data,
            Message::Close(frame) => {
                return Err(ParseError::Closed {
                    code: frame.as_ref().map(|f| u16::from(f.code)),
                }
                .into())
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Text(_) => return Err(ParseError::UnexpectedOpcode(OpCode::Text).into()),
            Message::Binary(_) => return Err(ParseError::UnexpectedOpcode(OpCode::Binary).into()),
        };
        let Some(at) = sent.pop_front() else {
            return Err(ParseError::Unsolicited.into());
        };
        if data[..] != expected_bytes(&plan.messages[recv_index])[..] {
            return Err(ParseError::WrongContent.into());
        }
        recv_index = (recv_index + 1) % DISTINCT;
        let now = Instant::now();
        if plan.window.counts(now) {
            samples.record(at, now);
            counts.messages += 1;
            counts.bytes += plan.size;
        }
        shared.progress(1);
    }
}

/// The payload of a text or binary message.
fn expected_bytes(message: &Message) -> &[u8] {
    match message {
        Message::Text(text) => text.as_bytes(),
        Message::Binary(data) => data,
        _ => &[],
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

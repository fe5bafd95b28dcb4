//! `--idle N`: open N connections (optionally one echo each) and hold them, so that a harness
//! can read the server's memory per connection.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use fullduplex::proto::frame::OpCode;
use fullduplex_loadgen::echo::{EchoParser, ParseError};
use fullduplex_loadgen::frame::masked_frame;
use fullduplex_loadgen::message::{payload, Expected, Style};
use fullduplex_loadgen::{LoadMode, LoadReport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::args::BenchArgs;
use super::connect::{open_all, open_failure, ConnectError, Target};
use super::raw::{close, DriveError, RETRY_PAUSE};
use super::stats::{Counts, Shared};
use crate::Failure;

/// What idle connections share: the optional first echo.
struct Plan {
    /// The masked frame of the --idle-echo message, if any.
    echo_frame: Option<Vec<u8>>,
    expected: Expected,
}

/// An idle connection: the stream and its reader.
struct Held {
    stream: tokio::net::TcpStream,
    parser: EchoParser,
}

/// Runs idle mode and reports.
pub async fn run(
    args: &BenchArgs,
    target: Arc<Target>,
    count: usize,
) -> Result<LoadReport, Failure> {
    let echo_size = args.idle_echo.unwrap_or(0);
    let plan = Arc::new(Plan {
        echo_frame: args
            .idle_echo
            .map(|size| masked_frame(OpCode::Binary, &payload(0, size, Style::Plain))),
        expected: Expected::new(OpCode::Binary, echo_size, Style::Plain),
    });
    let shared = Shared::new(false);
    let opening = Instant::now();
    let opened = {
        let all = (target.clone(), plan.clone(), shared.clone());
        open_all(count, move |index| {
            let (target, plan, shared) = (all.0.clone(), all.1.clone(), all.2.clone());
            async move { open(&target, index, &plan, &shared).await }
        })
        .await
        .map_err(|failed| open_failure(&target, count, failed))?
    };
    let opening_time = opening.elapsed();
    shared.open.store(count as u64, Ordering::Relaxed);
    announce_ready(args.json, count);

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::with_capacity(count);
    for (index, held) in opened.into_iter().enumerate() {
        let (target, plan, shared, stop) = (
            target.clone(),
            plan.clone(),
            shared.clone(),
            stop_rx.clone(),
        );
        tasks.push(tokio::spawn(async move {
            hold(index, held, &target, &plan, &shared, stop).await
        }));
    }
    let held_from = Instant::now();
    wait_for_stop(args).await;
    let held_for = held_from.elapsed();
    let open_at_end = shared.open.load(Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let mut counts = Counts::default();
    for task in tasks {
        if let Ok(c) = task.await {
            counts.add(&c);
        }
    }

    let mut report = LoadReport::new(LoadMode::Idle, &args.url);
    report.connections = count as u64;
    report.size = echo_size as u64;
    report.binary = args.idle_echo.is_some();
    report.duration_s = held_for.as_secs_f64();
    if args.idle_echo.is_some() {
        // The first echoes, and those after reconnects.
        report.messages = count as u64 + counts.reconnects;
        report.bytes = report.messages * echo_size as u64;
        report.latency_us = shared.latency();
    }
    report.errors = counts.errors;
    report.reconnects = counts.reconnects;
    report.handshakes = count as u64 + counts.reconnects;
    report.handshakes_per_s = count as f64 / opening_time.as_secs_f64().max(1e-9);
    report.connections_open = open_at_end;
    report.first_error = shared.first_error();
    Ok(report)
}

/// Prints that all connections are open: the JSON event on stdout (flushed) or a note on
/// stderr.
fn announce_ready(json: bool, count: usize) {
    if json {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(
            stdout,
            "{{\"event\":\"idle_ready\",\"connections_open\":{count}}}"
        );
        let _ = stdout.flush();
    } else {
        eprintln!("fdx: {count} connections open");
    }
}

/// Waits for --duration, or with 0 for SIGINT, SIGTERM or the end of stdin. A signal also
/// ends a timed hold early.
async fn wait_for_stop(args: &BenchArgs) {
    let timed = async {
        if args.duration.is_zero() {
            let mut stdin = tokio::io::stdin();
            let mut buf = [0u8; 1024];
            while let Ok(n) = stdin.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        } else {
            tokio::time::sleep(args.duration).await;
        }
    };
    tokio::select! {
        _ = timed => {}
        _ = terminated() => {}
    }
}

/// Resolves on SIGINT or SIGTERM (never, if the handlers cannot be installed).
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Connects, upgrades and, with --idle-echo, exchanges the one message.
async fn open(
    target: &Target,
    index: usize,
    plan: &Plan,
    shared: &Shared,
) -> Result<Held, ConnectError> {
    let upgraded = target.open(index).await?;
    let mut held = Held {
        stream: upgraded.stream,
        parser: EchoParser::new(),
    };
    let leftover_echoes = held
        .parser
        .feed(&plan.expected, &upgraded.leftover)
        .map_err(|e| ConnectError::Echo(e.to_string()))?;
    if leftover_echoes > 0 {
        return Err(ConnectError::Echo(ParseError::Unsolicited.to_string()));
    }
    if let Some(frame) = &plan.echo_frame {
        let exchange = async {
            let sent = Instant::now();
            held.stream.write_all(frame).await?;
            let mut buf = vec![0u8; 16 << 10];
            loop {
                let n = held.stream.read(&mut buf).await?;
                if n == 0 {
                    return Err(DriveError::Eof);
                }
                let echoes = held.parser.feed(&plan.expected, &buf[..n])?;
                send_replies(&mut held).await?;
                if echoes > 0 {
                    shared.record(sent, Instant::now());
                    return Ok(());
                }
            }
        };
        match tokio::time::timeout(target.timeout, exchange).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(ConnectError::Echo(error.to_string())),
            Err(_) => return Err(ConnectError::Timeout(target.timeout)),
        }
    }
    Ok(held)
}

/// Writes the pongs the reader produced.
async fn send_replies(held: &mut Held) -> std::io::Result<()> {
    if !held.parser.replies.is_empty() {
        held.stream.write_all(&held.parser.replies).await?;
        held.parser.replies.clear();
    }
    Ok(())
}

/// Holds one connection until told to stop, answering pings; reconnects after a failure.
async fn hold(
    index: usize,
    first: Held,
    target: &Target,
    plan: &Plan,
    shared: &Shared,
    mut stop: watch::Receiver<bool>,
) -> Counts {
    let mut counts = Counts::default();
    let mut held = Some(first);
    loop {
        let Some(mut conn) = held.take() else {
            // Reconnect, unless stopping.
            tokio::select! {
                _ = stop.changed() => return counts,
                opened = open(target, index, plan, shared) => match opened {
                    Ok(conn) => {
                        counts.reconnects += 1;
                        shared.open.fetch_add(1, Ordering::Relaxed);
                        held = Some(conn);
                    }
                    Err(error) => {
                        counts.errors += 1;
                        shared.error(index, &error.describe(&target.authority));
                        tokio::select! {
                            _ = stop.changed() => return counts,
                            _ = tokio::time::sleep(RETRY_PAUSE) => {}
                        }
                    }
                },
            }
            continue;
        };
        tokio::select! {
            _ = stop.changed() => {
                let _ = close(&mut conn.stream, &mut conn.parser, &plan.expected, &[], false).await;
                return counts;
            }
            error = idle(&mut conn, plan) => {
                counts.errors += 1;
                shared.open.fetch_sub(1, Ordering::Relaxed);
                shared.error(index, &error.to_string());
            }
        }
    }
}

/// Waits on an idle connection, answering pings, until it fails.
async fn idle(conn: &mut Held, plan: &Plan) -> DriveError {
    loop {
        if let Err(error) = conn.stream.readable().await {
            return error.into();
        }
        // The buffer lives only between awaits: an idle task stays small.
        let result = {
            let mut buf = [0u8; 512];
            match conn.stream.try_read(&mut buf) {
                Ok(0) => Err(DriveError::Eof),
                Ok(n) => match conn.parser.feed(&plan.expected, &buf[..n]) {
                    Ok(0) => Ok(()),
                    Ok(_) => Err(ParseError::Unsolicited.into()),
                    Err(error) => Err(error.into()),
                },
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
                Err(error) => Err(error.into()),
            }
        };
        if let Err(error) = result {
            return error;
        }
        if let Err(error) = send_replies(conn).await {
            return error.into();
        }
    }
}

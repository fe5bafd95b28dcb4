//! `--handshakes`: workers that connect, upgrade and close in a loop, for new connections per
//! second. Each close is complete: our close frame, the server's close frame, and the end of
//! the stream (the server closes TCP first, so TIME_WAIT stays on its side and this side's
//! ports do not run out).

use std::sync::Arc;
use std::time::Instant;

use fullduplex::proto::frame::OpCode;
use fullduplex_loadgen::echo::{EchoParser, ParseError};
use fullduplex_loadgen::message::{Expected, Style};
use fullduplex_loadgen::{LoadMode, LoadReport};

use super::args::BenchArgs;
use super::connect::{open_failure, Target, Upgraded};
use super::progress::{self, Progress};
use super::raw::{close, RETRY_PAUSE};
use super::stats::{Counts, Samples, Shared, Window};
use crate::Failure;

/// Runs handshake mode and reports.
pub async fn run(args: &BenchArgs, target: Arc<Target>) -> Result<LoadReport, Failure> {
    // One connection first, so that a wrong target fails at once with a clear reason.
    let expected = Arc::new(Expected::new(OpCode::Binary, 0, Style::Plain));
    let first = target
        .open(0)
        .await
        .map_err(|error| open_failure(&target, 1, (0, 0, error)))?;
    let _ = finish(first, &expected).await;

    let shared = Shared::new(progress::wanted(args.json));
    let window = Window::starting_now(args.warmup, args.duration);
    let progress = shared
        .live
        .then(|| Progress::start(shared.clone(), window, "handshakes"));
    let mut tasks = Vec::with_capacity(args.connections);
    for index in 0..args.connections {
        let (target, shared, expected) = (target.clone(), shared.clone(), expected.clone());
        tasks.push(tokio::spawn(async move {
            worker(index, &target, window, shared, &expected).await
        }));
    }
    let mut counts = Counts::default();
    for task in tasks {
        if let Ok(c) = task.await {
            counts.add(&c);
        }
    }
    if let Some(progress) = progress {
        progress.finish();
    }
    let mut report = LoadReport::new(LoadMode::Handshakes, &args.url);
    report.connections = args.connections as u64;
    report.duration_s = args.duration.as_secs_f64();
    report.latency_us = shared.latency();
    report.errors = counts.errors;
    report.handshakes = counts.handshakes;
    report.handshakes_per_s = counts.handshakes as f64 / report.duration_s;
    report.first_error = shared.first_error();
    Ok(report)
}

/// Opens and closes connections until the end of the run.
async fn worker(
    index: usize,
    target: &Target,
    window: Window,
    shared: Arc<Shared>,
    expected: &Expected,
) -> Counts {
    let mut counts = Counts::default();
    let mut samples = Samples::new(shared.clone());
    loop {
        let started = Instant::now();
        if started >= window.end {
            break;
        }
        match tokio::time::timeout_at(window.end.into(), target.open(index)).await {
            Err(_) => break,
            Ok(Err(error)) => {
                counts.errors += 1;
                shared.error(index, &error.describe(&target.authority));
                let pause = (Instant::now() + RETRY_PAUSE).min(window.end);
                tokio::time::sleep_until(pause.into()).await;
            }
            Ok(Ok(upgraded)) => {
                let done = Instant::now();
                if window.counts(done) {
                    counts.handshakes += 1;
                    samples.record(started, done);
                }
                shared.progress(1);
                if let Err(error) = finish(upgraded, expected).await {
                    counts.errors += 1;
                    shared.error(index, &format!("closing: {error}"));
                }
            }
        }
    }
    samples.flush();
    counts
}

/// The close handshake and the end of the stream (bounded).
async fn finish(upgraded: Upgraded, expected: &Expected) -> Result<(), super::raw::DriveError> {
    let Upgraded {
        mut stream,
        leftover,
    } = upgraded;
    let mut parser = EchoParser::new();
    parser.drain();
    match parser.feed(expected, &leftover) {
        // The server closed right away: nothing more to do.
        Err(ParseError::Closed { .. }) => return Ok(()),
        Err(error) => return Err(error.into()),
        Ok(_) => {}
    }
    close(&mut stream, &mut parser, expected, &[], true).await
}

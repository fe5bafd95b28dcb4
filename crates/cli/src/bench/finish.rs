//! The end of an echo run: the connection tasks' totals gathered into the report.

use fullduplex_loadgen::{LoadMode, LoadReport};
use tokio::task::JoinHandle;

use super::args::BenchArgs;
use super::progress::Progress;
use super::stats::{Counts, Shared};

/// Waits for every connection task of an echo run (each gives its counts and whether it was
/// open at the end), stops the progress bar, and builds the echo report.
pub async fn finish_echo(
    tasks: Vec<JoinHandle<(Counts, bool)>>,
    progress: Option<Progress>,
    shared: &Shared,
    args: &BenchArgs,
    connections: usize,
    compress: bool,
) -> LoadReport {
    let mut counts = Counts::default();
    let mut open_at_end = 0;
    for task in tasks {
        if let Ok((c, open)) = task.await {
            counts.add(&c);
            open_at_end += u64::from(open);
        }
    }
    if let Some(progress) = progress {
        progress.finish();
    }
    let mut report = LoadReport::new(LoadMode::Echo, &args.url);
    report.connections = connections as u64;
    report.size = args.size as u64;
    report.pipeline = args.pipeline as u64;
    report.binary = args.binary;
    report.compress = compress;
    report.duration_s = args.duration.as_secs_f64();
    report.messages = counts.messages;
    report.bytes = counts.bytes;
    report.latency_us = shared.latency();
    report.errors = counts.errors;
    report.reconnects = counts.reconnects;
    report.connections_open = open_at_end;
    report.first_error = shared.first_error();
    report.compute_rates();
    report
}

//! `fdx bench URL`: a WebSocket load generator that is cheap enough not to be the bottleneck.
//!
//! Three modes:
//! * echo (the default): every connection sends messages and waits for their echoes, with up
//!   to `--pipeline` in flight. Uncompressed runs drive the raw TCP stream with frames masked
//!   ahead of time ([`raw`]); `--compress` goes through the library's `WebSocket`
//!   ([`compressed`]).
//! * `--idle N`: open N connections and hold them ([`idle`]), to measure a server's memory.
//! * `--handshakes`: open, upgrade and close connections in a loop ([`handshakes`]).
//!
//! Each mode ends with one [`fullduplex_loadgen::LoadReport`]: a short table, or one JSON
//! object with `--json` ([`report`]).

mod args;
mod compressed;
mod connect;
mod finish;
mod handshakes;
mod idle;
mod progress;
mod raw;
mod report;
mod stats;

pub use args::BenchArgs;

use std::sync::Arc;

use crate::Failure;

/// Runs `fdx bench` on a runtime of its own (`--threads 1`: a current-thread runtime).
pub fn main(args: BenchArgs) -> Result<(), Failure> {
    args.validate()?;
    crate::rlimit::raise_open_file_limit();
    let threads = args.threads();
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    let runtime = builder
        .enable_all()
        .build()
        .map_err(|e| Failure::new(format!("cannot start the runtime: {e}")))?;
    let result = runtime.block_on(run(args));
    // A blocking stdin read (idle mode) must not keep the process alive.
    runtime.shutdown_background();
    result
}

async fn run(args: BenchArgs) -> Result<(), Failure> {
    let target = Arc::new(connect::Target::resolve(&args).await?);
    let report = if let Some(count) = args.idle {
        idle::run(&args, target, count).await?
    } else if args.handshakes {
        handshakes::run(&args, target).await?
    } else if args.compress {
        compressed::run(&args, target).await?
    } else {
        raw::run(&args, target).await?
    };
    report::print(&report, args.json)
}

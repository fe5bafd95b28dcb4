//! The flags of `fdx bench` and their checks.

use std::time::Duration;

use crate::{Failure, EXIT_USAGE};

const HELP: &str = "\
Echo mode (the default): each of --connections connections sends a message of --size bytes
and waits for its echo, keeping up to --pipeline messages in flight, for --warmup seconds (not
counted) and then --duration seconds. Echoes are checked: opcode, length, and the first and
last 8 bytes (each message carries its own tag). Pings are answered. A connection that fails
during the run counts an error and reconnects (counted as a reconnect).

--rate R paces the run open-loop: the R messages/s are split evenly over the connections,
each sending on a fixed schedule (up to --pipeline outstanding), and latency is measured from
each message's scheduled time, so a server that falls behind shows it in the latency.

Without --compress the generator writes precomputed masked frames (one write per batch) and
reads the raw stream; frames from the server may even come back masked (a plain TCP echo,
with --tcp): they are checked through their mask. --compress negotiates permessage-deflate
and sends JSON-like text through the library's WebSocket.

--idle N opens N connections and holds them, for measuring a server's memory per connection:
against 127.0.0.1 (or localhost), connection i uses the source address 127.0.0.(1 + i/20000).
With --json it prints {\"event\":\"idle_ready\",\"connections_open\":N} as soon as all are open,
then holds them for --duration seconds (0: until SIGINT/SIGTERM or the end of stdin) and
prints the report.

--handshakes: each of --connections workers connects, upgrades, sends a close frame (1000),
waits for the server's close frame and end of stream, and starts again. The report gives
handshakes/s, and in latency the time from TCP connect to the 101 response.

The report: messages and MB/s (echoed payload bytes, 10^6 bytes per MB) over --duration,
latency percentiles in microseconds, errors and reconnects. With --json it is one object on
stdout: {mode, url, connections, size, pipeline, binary, compress, duration_s, messages, bytes,
messages_per_s, mb_per_s, latency_us {p50, p90, p99, p999, max, mean}, errors, reconnects,
handshakes, handshakes_per_s, connections_open} (fields not relevant to the mode are 0).
In idle mode, duration_s is the time held, latency_us the --idle-echo round trip, handshakes
all handshakes and handshakes_per_s the rate while opening.
A live progress bar is shown on stderr when it is a terminal (not with --json).

Exit status: 0 after a run (even with errors: see the report), 1 when the first connections
cannot be opened (refused, timeout, a status other than 101), 2 for invalid arguments.

Examples:
  fdx bench ws://127.0.0.1:9001/ -c 100 -s 16 -d 10
  fdx bench ws://127.0.0.1:9001/ -c 100 --pipeline 8 --binary --json
  taskset -c 1 fdx bench ws://127.0.0.1:9001/ --threads 1 -c 100 -d 10 --json
  fdx bench ws://127.0.0.1:9001/ -c 10 --rate 5000 -s 1024
  fdx bench ws://127.0.0.1:9001/ -c 10 -s 4096 --compress
  fdx bench ws://127.0.0.1:7000/ --tcp -c 100 --pipeline 8     a plain TCP echo server
  fdx bench ws://127.0.0.1:9001/ --idle 10000 --idle-echo 1024 --duration 0 --json
  fdx bench ws://127.0.0.1:9001/ --handshakes -c 20 -d 5";

/// Arguments of `fdx bench`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = HELP)]
pub struct BenchArgs {
    /// The ws:// URL to load.
    pub url: String,
    /// Connections (echo mode), or concurrent workers (--handshakes).
    #[arg(short, long, value_name = "N", default_value_t = 10)]
    pub connections: usize,
    /// Message size in bytes (payload).
    #[arg(short, long, value_name = "BYTES", default_value_t = 16)]
    pub size: usize,
    /// Seconds measured after the warm-up (fractions allowed). With --idle: how long to hold
    /// the connections, 0 meaning until SIGINT/SIGTERM or the end of stdin.
    #[arg(short, long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub duration: Duration,
    /// Seconds of load before measuring starts (0 allowed).
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_secs)]
    pub warmup: Duration,
    /// Messages in flight per connection.
    #[arg(short, long, value_name = "D", default_value_t = 1)]
    pub pipeline: usize,
    /// Total messages per second across all connections (open loop; see below).
    #[arg(long, value_name = "MSGS_PER_S")]
    pub rate: Option<f64>,
    /// Send binary messages (the default is text).
    #[arg(long)]
    pub binary: bool,
    /// Negotiate permessage-deflate and send JSON-like text (through the library's WebSocket).
    #[arg(long)]
    pub compress: bool,
    /// Open N connections and hold them (idle mode).
    #[arg(long, value_name = "N", conflicts_with_all = ["handshakes", "compress", "rate"])]
    pub idle: Option<usize>,
    /// With --idle: each connection first sends one binary message of BYTES and waits for
    /// its echo.
    #[arg(long, value_name = "BYTES", requires = "idle")]
    pub idle_echo: Option<usize>,
    /// Measure new connections per second (connect, upgrade, close).
    #[arg(long, conflicts_with_all = ["compress", "rate"])]
    pub handshakes: bool,
    /// No WebSocket handshake: send the frames over plain TCP, for comparing with a plain
    /// TCP echo server (which sends the masked frames back as they are).
    #[arg(long, conflicts_with_all = ["compress", "handshakes"])]
    pub tcp: bool,
    /// Runtime worker threads (default: the available parallelism; 1 runs everything on one
    /// thread).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Bound on one TCP connect plus upgrade, in seconds.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub connect_timeout: Duration,
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The most messages one connection keeps in flight.
pub const MAX_PIPELINE: usize = 4096;
/// The largest message size accepted.
pub const MAX_SIZE: usize = 64 << 20;

impl BenchArgs {
    /// Checks what clap cannot: ranges and combinations.
    pub fn validate(&self) -> Result<(), Failure> {
        let usage = |reason: String| Err(Failure::with_code(EXIT_USAGE, reason));
        if !self.url.starts_with("ws://") {
            return usage(format!(
                "{:?}: fdx bench takes ws:// URLs (wss:// is not supported)",
                self.url
            ));
        }
        if self.connections == 0 {
            return usage("--connections must be at least 1".into());
        }
        if self.pipeline == 0 || self.pipeline > MAX_PIPELINE {
            return usage(format!("--pipeline must be from 1 to {MAX_PIPELINE}"));
        }
        if self.size > MAX_SIZE {
            return usage(format!("--size must be at most {MAX_SIZE} bytes"));
        }
        if self.idle_echo.is_some_and(|bytes| bytes > MAX_SIZE) {
            return usage(format!("--idle-echo must be at most {MAX_SIZE} bytes"));
        }
        if self.idle == Some(0) {
            return usage("--idle must be at least 1".into());
        }
        if self.idle.is_none() && self.duration.is_zero() {
            return usage("--duration must be more than 0".into());
        }
        if let Some(rate) = self.rate {
            let interval = self.connections as f64 / rate;
            if !(rate.is_finite() && rate > 0.0) || Duration::try_from_secs_f64(interval).is_err() {
                return usage("--rate must be a positive number of messages per second".into());
            }
        }
        if self.threads == Some(0) {
            return usage("--threads must be at least 1".into());
        }
        if self.connect_timeout.is_zero() {
            return usage("--connect-timeout must be more than 0".into());
        }
        Ok(())
    }

    /// The runtime's worker threads.
    pub fn threads(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
    }
}

/// Parses a non-negative number of seconds, fractions allowed.
fn parse_secs(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{text:?} is not a usable duration"))
}

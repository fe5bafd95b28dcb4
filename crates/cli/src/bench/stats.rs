//! What a run counts: per-connection totals, latencies (one shared histogram fed in batches,
//! so that 10,000 connections do not each carry a histogram), live counters for the progress
//! bar, and a few error lines.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use fullduplex_loadgen::LatencySummary;
use hdrhistogram::Histogram;

/// Latency samples a connection keeps before adding them to the shared histogram.
const SAMPLE_BATCH: usize = 512;
/// The largest latency recorded exactly (one hour, in nanoseconds); longer ones are clamped.
const MAX_LATENCY_NS: u64 = 3_600_000_000_000;
/// How many connection errors are printed to stderr (the rest are only counted).
const PRINTED_ERRORS: usize = 5;

/// Totals of one connection (or worker), summed at the end.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    /// Echoes received during the measured window.
    pub messages: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// Failed connects and broken connections.
    pub errors: u64,
    /// Connections opened again after a failure.
    pub reconnects: u64,
    /// Handshakes completed during the measured window (--handshakes), or in all (--idle).
    pub handshakes: u64,
}

impl Counts {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Counts) {
        self.messages += other.messages;
        self.bytes += other.bytes;
        self.errors += other.errors;
        self.reconnects += other.reconnects;
        self.handshakes += other.handshakes;
    }
}

/// What all connections of a run share.
#[derive(Debug)]
pub struct Shared {
    histogram: Mutex<Histogram<u64>>,
    /// Whether the live counters are kept (only for the progress bar).
    pub live: bool,
    /// Echoes (or handshakes) so far, for the progress bar.
    pub live_count: AtomicU64,
    /// Errors so far, for the progress bar.
    pub live_errors: AtomicU64,
    /// Connections open now.
    pub open: AtomicU64,
    printed: AtomicUsize,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    /// An empty set of statistics; `live` keeps the progress counters up to date.
    pub fn new(live: bool) -> Arc<Shared> {
        // 3 significant digits from 1 ns to an hour: a fixed ~260 KiB, once per run.
        let histogram =
            Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("constant, valid bounds");
        Arc::new(Shared {
            histogram: Mutex::new(histogram),
            live,
            live_count: AtomicU64::new(0),
            live_errors: AtomicU64::new(0),
            open: AtomicU64::new(0),
            printed: AtomicUsize::new(0),
            first_error: Mutex::new(None),
        })
    }

    /// Counts `n` more echoes or handshakes for the progress bar.
    #[inline]
    pub fn progress(&self, n: u64) {
        if self.live {
            self.live_count.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Notes a connection error: counted for the progress bar, and the first few printed on
    /// stderr (unless the progress bar is drawn there).
    pub fn error(&self, connection: usize, what: &str) {
        self.live_errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock() {
            if first.is_none() {
                *first = Some(format!("connection {connection}: {what}"));
            }
        }
        if self.live {
            return;
        }
        let printed = self.printed.fetch_add(1, Ordering::Relaxed);
        if printed < PRINTED_ERRORS {
            eprintln!("fdx: connection {connection}: {what}");
        } else if printed == PRINTED_ERRORS {
            eprintln!("fdx: more connection errors (counted in the report)");
        }
    }

    /// The first connection error of the run, if any.
    pub fn first_error(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|first| first.clone())
    }

    /// The latency percentiles recorded so far.
    pub fn latency(&self) -> LatencySummary {
        let histogram = match self.histogram.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if histogram.is_empty() {
            return LatencySummary::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        LatencySummary {
            p50: us(histogram.value_at_quantile(0.50)),
            p90: us(histogram.value_at_quantile(0.90)),
            p99: us(histogram.value_at_quantile(0.99)),
            p999: us(histogram.value_at_quantile(0.999)),
            max: us(histogram.max()),
            mean: histogram.mean() / 1000.0,
        }
    }

    /// Records one latency directly (for rare events: one per connection).
    pub fn record(&self, start: Instant, end: Instant) {
        let ns = end.saturating_duration_since(start).as_nanos();
        self.record_all(&[u64::try_from(ns).unwrap_or(u64::MAX)]);
    }

    fn record_all(&self, samples: &[u64]) {
        let mut histogram = match self.histogram.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        for &ns in samples {
            histogram.saturating_record(ns.clamp(1, MAX_LATENCY_NS));
        }
    }
}

/// A connection's latency samples, added to the shared histogram in batches.
#[derive(Debug)]
pub struct Samples {
    buf: Vec<u64>,
    shared: Arc<Shared>,
}

impl Samples {
    /// An empty batch for `shared` (allocates on first use).
    pub fn new(shared: Arc<Shared>) -> Samples {
        Samples {
            buf: Vec::new(),
            shared,
        }
    }

    /// Records the time from `start` to `end`.
    #[inline]
    pub fn record(&mut self, start: Instant, end: Instant) {
        let ns = end.saturating_duration_since(start).as_nanos();
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(SAMPLE_BATCH);
        }
        self.buf.push(u64::try_from(ns).unwrap_or(u64::MAX));
        if self.buf.len() == SAMPLE_BATCH {
            self.flush();
        }
    }

    /// Adds the samples kept so far to the shared histogram.
    pub fn flush(&mut self) {
        if !self.buf.is_empty() {
            self.shared.record_all(&self.buf);
            self.buf.clear();
        }
    }
}

impl Drop for Samples {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The phases of a run: load starts at `start`, counting at `measure`, everything stops at
/// `end`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Load begins (warm-up).
    pub start: Instant,
    /// Counting begins.
    pub measure: Instant,
    /// Counting and load end.
    pub end: Instant,
}

impl Window {
    /// A window starting now.
    pub fn starting_now(warmup: std::time::Duration, duration: std::time::Duration) -> Window {
        let start = Instant::now();
        Window {
            start,
            measure: start + warmup,
            end: start + warmup + duration,
        }
    }

    /// Whether `now` is inside the measured part.
    #[inline]
    pub fn counts(&self, now: Instant) -> bool {
        now >= self.measure && now < self.end
    }
}

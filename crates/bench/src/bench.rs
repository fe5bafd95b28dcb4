//! The matrix: cells, one run of one server in one cell, idle memory, handshakes.

use std::time::{Duration, Instant};

use fullduplex_loadgen::LoadReport as Report;
use serde::{Deserialize, Serialize};

use crate::generator::{Generator, Kind, Line};
use crate::procfs;
use crate::servers::{self, ServerSpec};

/// The server runs on this CPU, the generator on the other.
pub const SERVER_CPU: usize = 0;
/// The generator's CPU.
pub const LOAD_CPU: usize = 1;

/// One cell of the echo matrix.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellSpec {
    /// Short name (`16B-100`).
    pub id: String,
    /// Connections.
    pub connections: usize,
    /// Payload bytes.
    pub size: usize,
    /// Messages in flight per connection.
    pub pipeline: usize,
    /// Binary messages (otherwise text).
    pub binary: bool,
    /// Compressed JSON-like text.
    pub compress: bool,
}

impl CellSpec {
    fn new(connections: usize, size: usize, pipeline: usize, binary: bool, compress: bool) -> Self {
        let size_name = match size {
            s if s >= 1 << 20 => format!("{}MiB", s >> 20),
            s if s >= 1 << 10 => format!("{}KiB", s >> 10),
            s => format!("{s}B"),
        };
        let kind = match (binary, compress) {
            (_, true) => "-deflate",
            (true, _) => "-bin",
            (false, _) => "",
        };
        let depth = if pipeline > 1 {
            format!("x{pipeline}")
        } else {
            String::new()
        };
        CellSpec {
            id: format!("{size_name}{kind}-{connections}c{depth}"),
            connections,
            size,
            pipeline,
            binary,
            compress,
        }
    }

    /// A readable description for the tables.
    pub fn describe(&self) -> String {
        let kind = match (self.binary, self.compress) {
            (_, true) => "JSON text, deflate",
            (true, _) => "binary",
            (false, _) => "text",
        };
        let depth = if self.pipeline > 1 {
            format!(", {} in flight", self.pipeline)
        } else {
            String::new()
        };
        format!(
            "{} {kind}, {} conn{}{depth}",
            human_size(self.size),
            self.connections,
            if self.connections == 1 { "" } else { "s" }
        )
    }
}

/// `16 B`, `1 KiB`, `1 MiB`.
pub fn human_size(size: usize) -> String {
    match size {
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 && s % (1 << 10) == 0 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

/// The matrix.
pub fn full_matrix() -> Vec<CellSpec> {
    vec![
        CellSpec::new(1, 16, 1, false, false),
        CellSpec::new(100, 16, 1, false, false),
        CellSpec::new(1000, 16, 1, false, false),
        CellSpec::new(100, 16, 8, false, false),
        CellSpec::new(100, 1024, 1, false, false),
        CellSpec::new(100, 1024, 1, true, false),
        CellSpec::new(100, 64 << 10, 1, true, false),
        CellSpec::new(1, 1 << 20, 1, true, false),
        CellSpec::new(100, 1024, 1, false, true),
    ]
}

/// A few seconds' worth: one cell of each kind.
pub fn smoke_matrix() -> Vec<CellSpec> {
    vec![
        CellSpec::new(2, 16, 1, false, false),
        CellSpec::new(2, 1024, 4, true, false),
        CellSpec::new(1, 256 << 10, 1, true, false),
        CellSpec::new(2, 1024, 1, false, true),
    ]
}

/// Timing of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Timing {
    /// Seconds of load before measuring.
    pub warmup: f64,
    /// Seconds measured.
    pub duration: f64,
}

/// One server in one cell, once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EchoRun {
    /// Cell id.
    pub cell: String,
    /// Server name.
    pub server: String,
    /// Round (1-based).
    pub round: usize,
    /// The generator's report.
    pub report: Report,
    /// Server CPU seconds (user + system) over the window.
    pub server_cpu_s: f64,
    /// Server CPU microseconds per echoed message.
    pub cpu_us_per_msg: f64,
    /// The user-space part of `cpu_us_per_msg` (the rest is the kernel's: system calls and,
    /// on loopback, much of the peer's TCP work). Absent in runs saved before it was measured.
    #[serde(default)]
    pub user_us_per_msg: Option<f64>,
    /// Share of the window CPU 0 was busy with something other than the server (softirq
    /// work included).
    pub cpu0_other: f64,
    /// Share of the window CPU 1 was busy with something other than the load generator.
    #[serde(default)]
    pub cpu1_other: f64,
}

/// What [`measured`] returns: the generator's report and, over the measured window, the
/// server's CPU seconds, CPU 0's busy seconds, the generator's CPU seconds, CPU 1's busy
/// seconds, and the window's length in seconds.
struct Measured {
    report: Report,
    server_cpu: f64,
    server_user: f64,
    cpu0_busy: f64,
    load_cpu: f64,
    cpu1_busy: f64,
    window: f64,
}

/// CPU times at one moment.
struct Sample {
    server: Option<procfs::CpuTimes>,
    cpu0: Option<Duration>,
    load: Option<Duration>,
    cpu1: Option<Duration>,
    at: Instant,
}

/// Starts the generator against `server` and measures around its window.
///
/// The built-in generator announces the window with events. `fdx bench` does not: the runner
/// then samples on its own clock, from the end of the warm-up plus a margin (connections are
/// being opened before the warm-up starts) to the end of the run.
fn measured(
    kind: &Kind,
    server: &servers::Running,
    args: &[String],
    timing: &Timing,
) -> Result<Measured, String> {
    let timeout = Duration::from_secs_f64(timing.warmup + timing.duration + 60.0);
    let deadline = Instant::now() + timeout;
    let sample = |load: u32| Sample {
        server: procfs::process_cpu(server.pid),
        cpu0: procfs::cpu_busy(SERVER_CPU),
        load: procfs::process_cpu(load).map(|t| t.total()),
        cpu1: procfs::cpu_busy(LOAD_CPU),
        at: Instant::now(),
    };
    let mut start = None;
    let mut stop = None;
    let report = match kind {
        Kind::Builtin => {
            let mut generator = Generator::start(LOAD_CPU, args)?;
            let pid = generator.pid();
            loop {
                match generator.next(deadline)? {
                    Line::Event(event) => match event["event"].as_str() {
                        Some("measure_start") => start = Some(sample(pid)),
                        Some("measure_stop") => stop = Some(sample(pid)),
                        _ => {}
                    },
                    Line::Report(report) => break *report,
                }
            }
        }
        Kind::Fdx(fdx) => {
            let mut generator = Generator::start_fdx(LOAD_CPU, fdx, &fdx_args(args))?;
            let pid = generator.pid();
            let spawned = Instant::now();
            let margin = (timing.duration * 0.1).min(0.3);
            std::thread::sleep(Duration::from_secs_f64(timing.warmup + 0.2 + margin));
            start = Some(sample(pid));
            let end = spawned + Duration::from_secs_f64(timing.warmup + 0.2 + timing.duration);
            std::thread::sleep(end.saturating_duration_since(Instant::now()));
            stop = Some(sample(pid));
            loop {
                if let Line::Report(report) = generator.next(deadline)? {
                    break *report;
                }
            }
        }
    };
    let (Some(a), Some(b)) = (start, stop) else {
        return Err("the generator reported no measured window".into());
    };
    let seconds = |x: Option<Duration>, y: Option<Duration>| match (x, y) {
        (Some(x), Some(y)) => Ok(y.saturating_sub(x).as_secs_f64()),
        _ => Err("could not read CPU times from /proc".to_owned()),
    };
    Ok(Measured {
        report,
        server_cpu: seconds(a.server.map(|t| t.total()), b.server.map(|t| t.total()))?,
        server_user: seconds(a.server.map(|t| t.user), b.server.map(|t| t.user))?,
        cpu0_busy: seconds(a.cpu0, b.cpu0)?,
        // Unknown if the generator has already exited at the last sample.
        load_cpu: seconds(a.load, b.load).unwrap_or(0.0),
        cpu1_busy: seconds(a.cpu1, b.cpu1)?,
        window: (b.at - a.at).as_secs_f64(),
    })
}

/// The built-in generator's arguments as `fdx bench` arguments: a `ws://` URL, `--tcp` for
/// `--raw`.
fn fdx_args(args: &[String]) -> Vec<String> {
    args.iter()
        .enumerate()
        .map(|(i, arg)| match (i, arg.as_str()) {
            (0, addr) => format!("ws://{addr}/"),
            (_, "--raw") => "--tcp".to_owned(),
            (_, other) => other.to_owned(),
        })
        .collect()
}

/// Messages echoed in the window the runner sampled: the generator's own window for the
/// built-in one, the rate times the runner's window for `fdx bench`.
fn window_count(kind: &Kind, count: u64, rate: f64, window: f64) -> f64 {
    match kind {
        Kind::Builtin => count as f64,
        Kind::Fdx(_) => rate * window,
    }
}

fn pinned() -> Vec<String> {
    vec!["taskset".into(), "-c".into(), SERVER_CPU.to_string()]
}

const START_WAIT: Duration = Duration::from_secs(20);

/// Runs one server in one cell.
pub fn echo_run(
    kind: &Kind,
    spec: &ServerSpec,
    cell: &CellSpec,
    round: usize,
    timing: &Timing,
) -> Result<EchoRun, String> {
    let server = servers::start(spec, &pinned(), START_WAIT)?;
    let mut args = vec![
        server.addr.clone(),
        "--connections".into(),
        cell.connections.to_string(),
        "--size".into(),
        cell.size.to_string(),
        "--pipeline".into(),
        cell.pipeline.to_string(),
        "--warmup".into(),
        timing.warmup.to_string(),
        "--duration".into(),
        timing.duration.to_string(),
    ];
    if cell.binary {
        args.push("--binary".into());
    }
    if cell.compress {
        args.push("--compress".into());
    }
    if spec.raw {
        args.push("--raw".into());
    }
    let result = measured(kind, &server, &args, timing);
    server.stop(Duration::from_secs(5));
    let Measured {
        report,
        server_cpu: cpu,
        server_user: user,
        cpu0_busy: busy,
        load_cpu,
        cpu1_busy,
        window,
    } = result.map_err(|e| format!("{} {}: {e}", spec.name, cell.id))?;
    if report.errors > 0 || report.messages == 0 {
        return Err(format!(
            "{} {}: {} errors, {} messages",
            spec.name, cell.id, report.errors, report.messages
        ));
    }
    let messages = window_count(kind, report.messages, report.messages_per_s, window);
    Ok(EchoRun {
        cell: cell.id.clone(),
        server: spec.name.clone(),
        round,
        cpu_us_per_msg: cpu * 1e6 / messages,
        user_us_per_msg: Some(user * 1e6 / messages),
        server_cpu_s: cpu,
        cpu0_other: ((busy - cpu) / window).max(0.0),
        cpu1_other: ((cpu1_busy - load_cpu) / window).max(0.0),
        report,
    })
}

/// Memory per idle connection of one server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdleRun {
    /// Server name.
    pub server: String,
    /// Round.
    pub round: usize,
    /// Connections open.
    pub connections: u64,
    /// RSS before connecting, bytes.
    pub rss_base: u64,
    /// RSS with every connection open (handshake only).
    pub rss_idle: u64,
    /// RSS after one echo on each.
    pub rss_echo: u64,
    /// Bytes per connection, handshake only.
    pub per_conn_idle: f64,
    /// Bytes per connection after one echo each.
    pub per_conn_echo: f64,
}

/// Opens `connections` idle connections, measures RSS, echoes `echo_size` bytes on each,
/// measures again.
pub fn idle_run(
    kind: &Kind,
    spec: &ServerSpec,
    connections: usize,
    echo_size: usize,
    round: usize,
) -> Result<IdleRun, String> {
    if let Kind::Fdx(fdx) = kind {
        // fdx bench echoes before it reports the connections ready: one run per state.
        let (base, idle, open) = idle_fdx(fdx, spec, connections, None)?;
        let (base2, echo, open2) = idle_fdx(fdx, spec, connections, Some(echo_size))?;
        return Ok(IdleRun {
            server: spec.name.clone(),
            round,
            connections: open.min(open2),
            rss_base: base,
            rss_idle: idle,
            rss_echo: (echo + base).saturating_sub(base2),
            per_conn_idle: idle.saturating_sub(base) as f64 / open as f64,
            per_conn_echo: echo.saturating_sub(base2) as f64 / open2 as f64,
        });
    }
    let server = servers::start(spec, &pinned(), START_WAIT)?;
    let settle = Duration::from_millis(500);
    std::thread::sleep(settle);
    let base = procfs::process_rss(server.pid).ok_or("no RSS")?;
    let mut args = vec![
        server.addr.clone(),
        "--idle".into(),
        connections.to_string(),
        "--size".into(),
        echo_size.to_string(),
    ];
    if spec.raw {
        args.push("--raw".into());
    }
    let mut generator = Generator::start(LOAD_CPU, &args)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let what = |e: String| format!("{} idle: {e}", spec.name);
    let open = loop {
        match generator.next(deadline).map_err(what)? {
            Line::Event(e) if e["event"] == "idle_ready" => {
                break e["connections_open"].as_u64().unwrap_or(0)
            }
            _ => {}
        }
    };
    if open < connections as u64 {
        return Err(format!(
            "{} idle: only {open} of {connections} connections opened",
            spec.name
        ));
    }
    std::thread::sleep(settle);
    let idle = procfs::process_rss(server.pid).ok_or("no RSS")?;
    generator.command("echo").map_err(what)?;
    loop {
        match generator.next(deadline).map_err(what)? {
            Line::Event(e) if e["event"] == "echo_done" => {
                let echoed = e["echoed"].as_u64().unwrap_or(0);
                if echoed < open {
                    return Err(format!("{} idle: {echoed} of {open} echoed", spec.name));
                }
                break;
            }
            _ => {}
        }
    }
    std::thread::sleep(settle);
    let echo = procfs::process_rss(server.pid).ok_or("no RSS")?;
    generator.close_stdin();
    let _ = generator.next(deadline);
    drop(generator);
    server.stop(Duration::from_secs(5));
    Ok(IdleRun {
        server: spec.name.clone(),
        round,
        connections: open,
        rss_base: base,
        rss_idle: idle,
        rss_echo: echo,
        per_conn_idle: idle.saturating_sub(base) as f64 / open as f64,
        per_conn_echo: echo.saturating_sub(base) as f64 / open as f64,
    })
}

/// Handshakes per second of one server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HandshakeRun {
    /// Server name.
    pub server: String,
    /// Round.
    pub round: usize,
    /// Handshakes per second.
    pub per_s: f64,
    /// Server CPU microseconds per handshake (connect, upgrade, close).
    pub cpu_us: f64,
}

/// Connect-upgrade-close loops against one server.
pub fn handshake_run(
    kind: &Kind,
    spec: &ServerSpec,
    concurrency: usize,
    round: usize,
    timing: &Timing,
) -> Result<HandshakeRun, String> {
    let server = servers::start(spec, &pinned(), START_WAIT)?;
    let args = vec![
        server.addr.clone(),
        "--handshakes".into(),
        "--connections".into(),
        concurrency.to_string(),
        "--warmup".into(),
        timing.warmup.to_string(),
        "--duration".into(),
        timing.duration.to_string(),
    ];
    let result = measured(kind, &server, &args, timing);
    server.stop(Duration::from_secs(5));
    let Measured {
        report,
        server_cpu: cpu,
        window,
        ..
    } = result.map_err(|e| format!("{} handshakes: {e}", spec.name))?;
    if report.handshakes == 0 {
        return Err(format!("{} handshakes: none completed", spec.name));
    }
    Ok(HandshakeRun {
        server: spec.name.clone(),
        round,
        per_s: report.handshakes_per_s,
        cpu_us: cpu * 1e6 / window_count(kind, report.handshakes, report.handshakes_per_s, window),
    })
}

/// One `fdx bench --idle` run: RSS before, RSS once all connections are open (and have
/// echoed, with `echo`), and how many opened.
fn idle_fdx(
    fdx: &std::path::Path,
    spec: &ServerSpec,
    connections: usize,
    echo: Option<usize>,
) -> Result<(u64, u64, u64), String> {
    let server = servers::start(spec, &pinned(), START_WAIT)?;
    let settle = Duration::from_millis(500);
    std::thread::sleep(settle);
    let base = procfs::process_rss(server.pid).ok_or("no RSS")?;
    let mut args = vec![
        format!("ws://{}/", server.addr),
        "--idle".into(),
        connections.to_string(),
        "--duration".into(),
        "0".into(),
    ];
    if let Some(size) = echo {
        args.extend(["--idle-echo".into(), size.to_string()]);
    }
    if spec.raw {
        args.push("--tcp".into());
    }
    let mut generator = Generator::start_fdx(LOAD_CPU, fdx, &args)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let what = |e: String| format!("{} idle (fdx): {e}", spec.name);
    let open = loop {
        match generator.next(deadline).map_err(what)? {
            Line::Event(e) if e["event"] == "idle_ready" => {
                break e["connections_open"].as_u64().unwrap_or(0)
            }
            _ => {}
        }
    };
    if open < connections as u64 {
        return Err(format!(
            "{} idle (fdx): only {open} of {connections} connections opened",
            spec.name
        ));
    }
    std::thread::sleep(settle);
    let rss = procfs::process_rss(server.pid).ok_or("no RSS")?;
    generator.close_stdin();
    let _ = generator.next(deadline);
    drop(generator);
    server.stop(Duration::from_secs(5));
    Ok((base, rss, open))
}

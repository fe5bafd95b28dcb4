//! The fan-out benchmark (`fullduplex-bench fanout`): `fdx serve` against µWebSockets' own
//! pub/sub, Node `ws` with a broadcast loop and Python `websockets.broadcast`, all driven by the
//! same generator ([`load`]) with the same subscribers and the same JSON messages.
//!
//! Each run starts one server pinned to CPU 0 and the generator on CPU 1, connects and
//! subscribes every subscriber, measures the server's RSS growth (memory per idle subscriber,
//! after a warm-up of a few subscribers that subscribe and leave),
//! then a burst (messages back to back, until every subscriber has all of them) and a steady
//! rate. The server's CPU time is sampled exactly around each phase (the generator waits for
//! the runner's `go`): the sum of its threads' on-CPU nanoseconds (`/proc/PID/task/*/schedstat`),
//! with the user/kernel split from `/proc/PID/stat`. Servers are interleaved over rounds
//! (A B C ... A B C ...) and the tables give medians and medians of paired ratios against
//! µWebSockets with the same compression setting.

pub mod load;
mod report;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::procfs;
use crate::servers::{exe_dir, workspace_root};
use load::PhaseReport;

pub use report::markdown;

/// The server's CPU.
const SERVER_CPU: usize = 0;
/// The generator's CPU.
const LOAD_CPU: usize = 1;

/// Options of `fullduplex-bench fanout`.
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    /// Subscribers in every scenario.
    #[arg(long, default_value_t = 10_000)]
    pub subscribers: usize,
    /// Topics (comma-separated: one scenario each); the subscribers are spread evenly.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 1000])]
    pub topics: Vec<usize>,
    /// Message sizes, bytes of the `data` JSON (comma-separated: one scenario each).
    #[arg(long, value_delimiter = ',', default_values_t = [64usize, 1024])]
    pub size: Vec<usize>,
    /// Rounds: every server once per scenario per round, interleaved.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Only these servers (comma-separated): fdx, uwebsockets, node-ws, python-websockets;
    /// a `-deflate` suffix names the compressed variant.
    #[arg(long, value_delimiter = ',')]
    pub servers: Vec<String>,
    /// Also run every server with subscribers that negotiate permessage-deflate.
    #[arg(long)]
    pub compression: bool,
    /// Deliveries in the burst (messages = this / subscribers per topic).
    #[arg(long, default_value_t = 200_000)]
    pub burst_deliveries: u64,
    /// Deliveries per second in the steady phase (messages/s = this / subscribers per topic);
    /// comma-separated: one scenario each, and a table of p99 against throughput.
    #[arg(long, value_delimiter = ',', default_values_t = [20_000.0])]
    pub rate: Vec<f64>,
    /// Seconds of the steady phase.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Do not repeat a run during which CPU 0 was more than 25% busy with other work (on a
    /// machine that is loaded all the time the repeat measures the same noise).
    #[arg(long)]
    pub no_repeat: bool,
    /// Seconds: 50 subscribers, one round, every available server; writes nothing.
    #[arg(long)]
    pub smoke: bool,
    /// The markdown file to update (only the generated fan-out block is replaced).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write no markdown.
    #[arg(long)]
    pub no_write: bool,
    /// Rewrite the markdown from saved runs (`target/bench/fanout-TIME.json`, merged) instead
    /// of running.
    #[arg(long, num_args = 1..)]
    pub report: Vec<PathBuf>,
    /// Another `fdx` binary (an earlier build, say) to run beside `fdx` as `fdx-before`, with
    /// the same arguments: a before/after comparison in the same rounds (`--servers fdx` keeps
    /// it).
    #[arg(long)]
    pub baseline: Option<PathBuf>,
}

/// A server of the fan-out benchmark.
#[derive(Debug, Clone)]
pub struct FanoutServer {
    /// Its name in the tables (`fdx`, `fdx-deflate`, ...).
    pub name: String,
    /// The implementation (`fdx`, `uwebsockets`, `node-ws`, `python-websockets`).
    pub base: String,
    /// Program and arguments; `{addr}` stands for the listen address.
    pub command: Vec<String>,
    /// The WebSocket path.
    pub path: String,
    /// Subscribers negotiate permessage-deflate.
    pub compression: bool,
}

/// The implementations, in table order.
pub const BASES: [&str; 4] = ["fdx", "uwebsockets", "node-ws", "python-websockets"];

/// The servers available here, with a note for each one that is not.
pub fn available(compression: bool) -> (Vec<FanoutServer>, Vec<String>) {
    let root = workspace_root();
    let mut list = Vec::new();
    let mut notes = Vec::new();
    let fdx = exe_dir().join("fdx");
    let uws = root.join("target/bench/uws/uws-pubsub");
    let python = root.join(".venv/bin/python");
    let node_ws = root.join("interop/node_modules/ws/package.json");
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    for base in BASES {
        let (command, path, missing): (Vec<String>, &str, Option<String>) = match base {
            "fdx" => (
                [
                    fdx.display().to_string().as_str(),
                    "serve",
                    "--listen",
                    "{addr}",
                    "--no-clock",
                    "--publish-rate",
                    "0",
                    "--max-connections",
                    "100000",
                    "--ping-interval",
                    "0",
                ]
                .map(str::to_owned)
                .to_vec(),
                "/ws",
                (!fdx.exists()).then(|| {
                    format!(
                        "{} is missing: cargo build --release -p fullduplex-cli",
                        fdx.display()
                    )
                }),
            ),
            "uwebsockets" => (
                vec![uws.display().to_string(), "{addr}".into()],
                "/",
                (!uws.exists()).then(|| {
                    "uwebsockets skipped: not built (run crates/bench/peers/build_uws.sh)".into()
                }),
            ),
            "node-ws" => (
                vec![
                    "node".into(),
                    root.join("crates/bench/peers/node_pubsub.mjs")
                        .display()
                        .to_string(),
                    "{addr}".into(),
                ],
                "/",
                (!node || !node_ws.exists()).then(|| {
                    "node-ws skipped: needs node and interop/node_modules/ws (npm ci in interop)"
                        .into()
                }),
            ),
            _ => (
                vec![
                    python.display().to_string(),
                    root.join("crates/bench/peers/websockets_pubsub.py")
                        .display()
                        .to_string(),
                    "{addr}".into(),
                ],
                "/",
                (!python.exists()).then(|| {
                    "python-websockets skipped: needs .venv (python3 -m venv .venv && \
                     .venv/bin/python -m pip install -r interop/requirements.txt)"
                        .into()
                }),
            ),
        };
        if let Some(note) = missing {
            notes.push(note);
            continue;
        }
        for deflate in [false, true] {
            if deflate && !compression {
                continue;
            }
            let mut command = command.clone();
            // The hub negotiates compression by default: only the subscribers' offer changes.
            if deflate && base != "fdx" {
                command.insert(command.len() - 1, "--compression".into());
            }
            list.push(FanoutServer {
                name: if deflate {
                    format!("{base}-deflate")
                } else {
                    base.to_owned()
                },
                base: base.to_owned(),
                command,
                path: path.to_owned(),
                compression: deflate,
            });
        }
    }
    (list, notes)
}

/// One scenario: subscribers over topics, message size, steady rate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Scenario {
    /// Subscribers.
    pub subscribers: usize,
    /// Topics.
    pub topics: usize,
    /// Bytes of `data`.
    pub size: usize,
    /// Steady deliveries per second (0 in runs saved before the rate was part of the
    /// scenario: then the results' `rate`).
    #[serde(default)]
    pub rate: f64,
}

impl Scenario {
    /// `10000x1-64B@20000/s`.
    pub fn id(&self) -> String {
        format!(
            "{}x{}-{}B@{}/s",
            self.subscribers, self.topics, self.size, self.rate
        )
    }

    fn per_topic(&self) -> usize {
        (self.subscribers / self.topics).max(1)
    }
}

/// One server in one scenario, once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FanoutRun {
    /// The scenario.
    pub scenario: Scenario,
    /// Server name (with `-deflate` when compressed).
    pub server: String,
    /// The implementation.
    pub base: String,
    /// Subscribers negotiated permessage-deflate.
    pub compression: bool,
    /// Round (1-based).
    pub round: usize,
    /// Seconds to connect and subscribe everyone.
    pub subscribe_seconds: f64,
    /// Server RSS before the subscribers connected, bytes.
    pub rss_base: u64,
    /// Server RSS with every subscriber subscribed and idle.
    pub rss_idle: u64,
    /// (rss_idle - rss_base) / subscribers.
    pub memory_per_subscriber: f64,
    /// The burst, as the generator measured it.
    pub burst: PhaseReport,
    /// The steady phase.
    pub steady: PhaseReport,
    /// Server CPU µs per delivery in the burst (all threads, user + kernel).
    pub burst_cpu_us: f64,
    /// Its user-space share (0-1).
    pub burst_user_share: f64,
    /// Server CPU µs per delivery in the steady phase.
    pub steady_cpu_us: f64,
    /// Its user-space share.
    pub steady_user_share: f64,
    /// Generator CPU µs per delivery in the burst (what the subscribers' side cost).
    pub burst_load_cpu_us: f64,
    /// Share of the burst CPU 0 was busy with something other than the server.
    pub cpu0_other: f64,
    /// Share of the burst CPU 1 was busy with something other than the generator.
    pub cpu1_other: f64,
}

/// Everything a fan-out run saves (`target/bench/fanout-TIME.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FanoutResults {
    /// Machine and versions.
    pub machine: Vec<(String, String)>,
    /// The command line.
    pub command: String,
    /// Load averages (1, 5, 15 min) at the start and at the end.
    pub load_before: String,
    /// The same at the end.
    pub load_after: String,
    /// Rounds.
    pub rounds: usize,
    /// Deliveries per burst, steady deliveries per second, steady seconds.
    pub burst_deliveries: u64,
    /// Steady deliveries per second (the first `--rate`; each scenario has its own).
    pub rate: f64,
    /// Steady seconds.
    pub seconds: f64,
    /// Servers in table order.
    pub servers: Vec<String>,
    /// Servers left out, and why.
    pub notes: Vec<String>,
    /// Every run.
    pub runs: Vec<FanoutRun>,
    /// Runs that failed.
    pub failures: Vec<String>,
}

/// On-CPU time of every thread of `pid`, from `/proc/PID/task/*/schedstat` (nanoseconds,
/// unlike the 10 ms ticks of `/proc/PID/stat`).
pub fn cpu_ns(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0u64;
    for task in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        total += text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(total)
}

/// A started server; dropping it closes its stdin, sends SIGTERM, and kills it if it has not
/// exited within 3 s.
struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    pid: u32,
    addr: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stdin.take();
        if let Ok(pid) = i32::try_from(self.pid) {
            // SAFETY: kill has no memory preconditions; the pid is our own child's, not yet
            // reaped (so not reused).
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

fn start(server: &FanoutServer) -> Result<Running, String> {
    let mut argv = vec![
        "taskset".to_owned(),
        "-c".to_owned(),
        SERVER_CPU.to_string(),
    ];
    argv.extend(
        server
            .command
            .iter()
            .map(|a| a.replace("{addr}", "127.0.0.1:0")),
    );
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("{}: {e}", argv.join(" ")))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if let Some(addr) = line.strip_prefix("listening on ") {
                let addr = addr.trim();
                let addr = addr.split_once("://").map_or(addr, |(_, a)| a);
                tx.send(addr.trim_end_matches('/').to_owned()).ok();
                break;
            }
        }
        for _ in lines {}
    });
    let pid = child.id();
    let mut running = Running {
        stdin: child.stdin.take(),
        child,
        pid,
        addr: String::new(),
    };
    running.addr = rx
        .recv_timeout(Duration::from_secs(20))
        .map_err(|_| format!("{}: no `listening on` line within 20 s", server.name))?;
    Ok(running)
}

/// The generator child: its output lines and its stdin.
struct Generator {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Generator {
    fn start(args: &[String]) -> Result<Generator, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new("taskset")
            .arg("-c")
            .arg(LOAD_CPU.to_string())
            .arg(&exe)
            .arg("fanout-load")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("taskset {} fanout-load: {e}", exe.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Generator {
            stdin: child.stdin.take(),
            child,
            lines: rx,
        })
    }

    fn next(&mut self, deadline: Instant) -> Result<serde_json::Value, String> {
        let wait = deadline.saturating_duration_since(Instant::now());
        let line = self.lines.recv_timeout(wait).map_err(|e| match e {
            mpsc::RecvTimeoutError::Timeout => "the generator timed out".to_owned(),
            mpsc::RecvTimeoutError::Disconnected => "the generator exited early".to_owned(),
        })?;
        serde_json::from_str(&line).map_err(|e| format!("generator printed {line:?}: {e}"))
    }

    /// The next line that has `key` equal to `value`.
    fn wait_for(
        &mut self,
        key: &str,
        value: &str,
        deadline: Instant,
    ) -> Result<serde_json::Value, String> {
        loop {
            let line = self.next(deadline)?;
            if line[key] == value {
                return Ok(line);
            }
        }
    }

    fn go(&mut self) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("stdin closed")?;
        writeln!(stdin, "go").map_err(|e| e.to_string())?;
        stdin.flush().map_err(|e| e.to_string())
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        self.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// CPU counters at one moment.
struct Sample {
    server_ns: u64,
    server: Option<procfs::CpuTimes>,
    load: Option<procfs::CpuTimes>,
    cpu0: Option<Duration>,
    cpu1: Option<Duration>,
    at: Instant,
}

fn sample(server: u32, load: u32) -> Sample {
    Sample {
        server_ns: cpu_ns(server).unwrap_or(0),
        server: procfs::process_cpu(server),
        load: procfs::process_cpu(load),
        cpu0: procfs::cpu_busy(SERVER_CPU),
        cpu1: procfs::cpu_busy(LOAD_CPU),
        at: Instant::now(),
    }
}

/// CPU µs per delivery, its user share, the generator's µs per delivery, and the other load
/// on CPU 0 and CPU 1, between two samples.
fn between(a: &Sample, b: &Sample, deliveries: u64) -> (f64, f64, f64, f64, f64) {
    let d = deliveries.max(1) as f64;
    let server = b.server_ns.saturating_sub(a.server_ns) as f64 / 1e9;
    let user_share = match (a.server, b.server) {
        (Some(x), Some(y)) => {
            let user = y.user.saturating_sub(x.user).as_secs_f64();
            let total = y.total().saturating_sub(x.total()).as_secs_f64();
            if total > 0.0 {
                user / total
            } else {
                f64::NAN
            }
        }
        _ => f64::NAN,
    };
    let load = match (a.load, b.load) {
        (Some(x), Some(y)) => y.total().saturating_sub(x.total()).as_secs_f64(),
        _ => 0.0,
    };
    let window = (b.at - a.at).as_secs_f64().max(1e-9);
    let busy = |x: Option<Duration>, y: Option<Duration>| match (x, y) {
        (Some(x), Some(y)) => y.saturating_sub(x).as_secs_f64(),
        _ => 0.0,
    };
    let other0 = ((busy(a.cpu0, b.cpu0) - server) / window).max(0.0);
    let other1 = ((busy(a.cpu1, b.cpu1) - load) / window).max(0.0);
    (server * 1e6 / d, user_share, load * 1e6 / d, other0, other1)
}

fn phase(value: serde_json::Value) -> Result<PhaseReport, String> {
    serde_json::from_value(value).map_err(|e| format!("phase report: {e}"))
}

/// Subscribers that connect, subscribe and leave before the server's base RSS is taken.
const WARM_UP_SUBSCRIBERS: usize = 16;

/// Connects [`WARM_UP_SUBSCRIBERS`] subscribers, waits until they are subscribed, and closes
/// them: the server's RSS then already holds what its first connections cost once (code
/// pages first run, a thread's allocator arena, lazily made tables), so that the growth
/// over the scenario's subscribers is what each one costs. Every server gets the same.
fn warm_up(server: &FanoutServer, scenario: &Scenario, running: &Running) -> Result<(), String> {
    let args = generator_args(
        server,
        running,
        WARM_UP_SUBSCRIBERS,
        scenario,
        ["1".into(), "1".into(), "1".into()],
    );
    let mut generator = Generator::start(&args)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    generator.wait_for("event", "subscribed", deadline)?;
    drop(generator);
    std::thread::sleep(Duration::from_millis(500));
    Ok(())
}

/// The generator's arguments: `subscribers` on the scenario's topics and message size, and
/// `[burst messages, steady messages/s per topic, steady seconds]`.
fn generator_args(
    server: &FanoutServer,
    running: &Running,
    subscribers: usize,
    scenario: &Scenario,
    [burst, rate, seconds]: [String; 3],
) -> Vec<String> {
    let mut args = vec![
        running.addr.clone(),
        "--path".into(),
        server.path.clone(),
        "--subscribers".into(),
        subscribers.to_string(),
        "--topics".into(),
        scenario.topics.min(subscribers).to_string(),
        "--size".into(),
        scenario.size.to_string(),
        "--burst".into(),
        burst,
        "--rate".into(),
        rate,
        "--seconds".into(),
        seconds,
    ];
    if server.compression {
        args.push("--compression".into());
    }
    args
}

/// Runs one server in one scenario.
fn run_one(
    server: &FanoutServer,
    scenario: &Scenario,
    round: usize,
    args: &FanoutArgs,
) -> Result<FanoutRun, String> {
    let what = |e: String| format!("{} {}: {e}", server.name, scenario.id());
    let running = start(server).map_err(what)?;
    std::thread::sleep(Duration::from_millis(500));
    warm_up(server, scenario, &running).map_err(what)?;
    let rss_base = procfs::process_rss(running.pid).ok_or("no RSS")?;
    let per_topic = scenario.per_topic() as f64;
    let burst = ((args.burst_deliveries as f64 / per_topic).round() as u64).max(1);
    let rate = (scenario.rate / per_topic).max(0.1);
    let load_args = generator_args(
        server,
        &running,
        scenario.subscribers,
        scenario,
        [
            burst.to_string(),
            rate.to_string(),
            args.seconds.to_string(),
        ],
    );
    let mut generator = Generator::start(&load_args).map_err(what)?;
    let load_pid = generator.pid();
    let deadline = Instant::now() + Duration::from_secs(330);
    let subscribed = generator
        .wait_for("event", "subscribed", deadline)
        .map_err(what)?;
    std::thread::sleep(Duration::from_secs(1));
    let rss_idle = procfs::process_rss(running.pid).ok_or("no RSS")?;
    generator.go().map_err(what)?;
    let deadline = Instant::now() + Duration::from_secs(300);
    generator
        .wait_for("phase", "burst", deadline)
        .map_err(what)?;
    let a = sample(running.pid, load_pid);
    generator.go().map_err(what)?;
    let burst_report = phase(
        generator
            .wait_for("phase", "burst", deadline)
            .map_err(what)?,
    )?;
    let b = sample(running.pid, load_pid);
    if !burst_report.complete {
        return Err(what(format!(
            "burst incomplete: {} deliveries",
            burst_report.deliveries
        )));
    }
    generator
        .wait_for("phase", "steady", deadline)
        .map_err(what)?;
    let c = sample(running.pid, load_pid);
    generator.go().map_err(what)?;
    let steady_report = phase(
        generator
            .wait_for("phase", "steady", deadline)
            .map_err(what)?,
    )?;
    let d = sample(running.pid, load_pid);
    if !steady_report.complete {
        return Err(what(format!(
            "steady phase incomplete: {} deliveries",
            steady_report.deliveries
        )));
    }
    drop(generator);
    drop(running);
    let (burst_cpu_us, burst_user_share, burst_load_cpu_us, cpu0_other, cpu1_other) =
        between(&a, &b, burst_report.deliveries);
    let (steady_cpu_us, steady_user_share, ..) = between(&c, &d, steady_report.deliveries);
    Ok(FanoutRun {
        scenario: scenario.clone(),
        server: server.name.clone(),
        base: server.base.clone(),
        compression: server.compression,
        round,
        subscribe_seconds: subscribed["seconds"].as_f64().unwrap_or(f64::NAN),
        rss_base,
        rss_idle,
        memory_per_subscriber: rss_idle.saturating_sub(rss_base) as f64
            / scenario.subscribers as f64,
        burst: burst_report,
        steady: steady_report,
        burst_cpu_us,
        burst_user_share,
        steady_cpu_us,
        steady_user_share,
        burst_load_cpu_us,
        cpu0_other,
        cpu1_other,
    })
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!(
        "cargo run --release -p fullduplex-bench -- {}",
        args.join(" ")
    )
}

/// Runs `fullduplex-bench fanout`.
pub fn run(mut args: FanoutArgs) -> Result<(), String> {
    if !args.report.is_empty() {
        return rewrite(&args.report, args.out.clone(), args.no_write);
    }
    crate::serve::raise_nofile_limit();
    let smoke = args.smoke;
    if smoke {
        args.subscribers = 50;
        args.topics = vec![1, 10];
        args.size = vec![1024];
        args.rounds = 1;
        args.compression = true;
        args.burst_deliveries = 500;
        args.rate = vec![500.0];
        args.seconds = 0.5;
    }
    let (mut servers, notes) = available(args.compression);
    if let Some(baseline) = &args.baseline {
        let before: Vec<FanoutServer> = servers
            .iter()
            .filter(|s| s.base == "fdx")
            .map(|s| {
                let mut command = s.command.clone();
                command[0] = baseline.display().to_string();
                FanoutServer {
                    name: s.name.replacen("fdx", "fdx-before", 1),
                    base: "fdx-before".into(),
                    command,
                    path: s.path.clone(),
                    compression: s.compression,
                }
            })
            .collect();
        let at = servers.iter().filter(|s| s.base == "fdx").count();
        servers.splice(at..at, before);
    }
    for note in &notes {
        eprintln!("fanout: {note}");
    }
    if !args.servers.is_empty() {
        for name in &args.servers {
            if !servers.iter().any(|s| &s.name == name || (&s.base == name)) {
                return Err(format!(
                    "fanout: no server {name} here (see the notes above)"
                ));
            }
        }
        // `fdx-before` (from `--baseline`) goes with `fdx`, and `fdx-before-deflate` with
        // `fdx-deflate`.
        servers.retain(|s| {
            let (name, base) = if s.base == "fdx-before" {
                (s.name.replacen("fdx-before", "fdx", 1), "fdx")
            } else {
                (s.name.clone(), s.base.as_str())
            };
            args.servers.iter().any(|n| n == &name || n == base)
        });
    }
    if servers.is_empty() {
        return Err("fanout: no servers".into());
    }
    let mut scenarios = Vec::new();
    if args.rate.iter().any(|&rate| rate.is_nan() || rate <= 0.0) {
        return Err("--rate: deliveries per second above 0".into());
    }
    for &topics in &args.topics {
        for (&size, &rate) in args
            .size
            .iter()
            .flat_map(|size| args.rate.iter().map(move |rate| (size, rate)))
        {
            if topics == 0 || topics > args.subscribers {
                return Err(format!(
                    "--topics {topics}: between 1 and --subscribers ({})",
                    args.subscribers
                ));
            }
            scenarios.push(Scenario {
                subscribers: args.subscribers,
                topics,
                size,
                rate,
            });
        }
    }
    let mut results = FanoutResults {
        machine: crate::machine::describe(),
        command: command_line(),
        load_before: load_average(),
        rounds: args.rounds.max(1),
        burst_deliveries: args.burst_deliveries,
        rate: args.rate.first().copied().unwrap_or_default(),
        seconds: args.seconds,
        servers: servers.iter().map(|s| s.name.clone()).collect(),
        notes,
        ..FanoutResults::default()
    };
    let total = scenarios.len() * servers.len() * results.rounds;
    let mut done = 0;
    for round in 1..=results.rounds {
        for scenario in &scenarios {
            for server in &servers {
                done += 1;
                let mut outcome = run_one(server, scenario, round, &args);
                if matches!(&outcome, Ok(r) if r.cpu0_other > 0.25 && !smoke && !args.no_repeat) {
                    eprintln!("  disturbed ({}), repeating", server.name);
                    outcome = run_one(server, scenario, round, &args);
                }
                match outcome {
                    Ok(run) => {
                        eprintln!(
                            "[{done}/{total}] round {round} {:<14} {:<26} burst {:>6.2} µs/del ({:>4} user) {:>7.1} ms  steady {:>6.2} µs/del p50 {:>7.2} ms p99 {:>7.2} ms last {:>7.2} ms  {:>6.0} B/sub  {:>6.1} B/del  other {:>3.0}%/{:>3.0}%  load {}",
                            scenario.id(),
                            server.name,
                            run.burst_cpu_us,
                            report::share(run.burst_user_share),
                            run.burst.seconds * 1e3,
                            run.steady_cpu_us,
                            run.steady.p50_us / 1e3,
                            run.steady.p99_us / 1e3,
                            run.steady.last_p50_us / 1e3,
                            run.memory_per_subscriber,
                            run.steady.bytes as f64 / run.steady.deliveries.max(1) as f64,
                            run.cpu0_other * 100.0,
                            run.cpu1_other * 100.0,
                            load_average(),
                        );
                        results.runs.push(run);
                    }
                    Err(error) => {
                        eprintln!("[{done}/{total}] FAILED {error}");
                        results.failures.push(error);
                    }
                }
            }
        }
    }
    results.load_after = load_average();
    if smoke {
        if results.failures.is_empty() {
            eprintln!(
                "fanout smoke: {} servers delivered every message in every scenario",
                servers.len()
            );
            return Ok(());
        }
        return Err(format!(
            "fanout smoke: {} runs failed",
            results.failures.len()
        ));
    }
    let dir = exe_dir().join("../bench");
    std::fs::create_dir_all(&dir).ok();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let path = dir.join(format!("fanout-{stamp}.json"));
    let json = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
    std::fs::write(&path, json).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("results saved to {}", path.display());
    let text = markdown(&results);
    println!("{text}");
    if !args.no_write {
        let out = args
            .out
            .clone()
            .unwrap_or_else(|| workspace_root().join("BENCHMARKS.md"));
        crate::report::write_section(&out, "fullduplex-bench:fanout", &text)
            .map_err(|e| format!("{}: {e}", out.display()))?;
        eprintln!("wrote {}", out.display());
    }
    if results.failures.is_empty() {
        Ok(())
    } else {
        Err(format!("{} runs failed", results.failures.len()))
    }
}

/// `fullduplex-bench fanout report FILE...`: the markdown from saved runs (merged).
pub fn rewrite(files: &[PathBuf], out: Option<PathBuf>, no_write: bool) -> Result<(), String> {
    let mut merged: Option<FanoutResults> = None;
    for path in files {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut results: FanoutResults =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        for run in &mut results.runs {
            if run.scenario.rate == 0.0 {
                run.scenario.rate = results.rate;
            }
        }
        match merged.as_mut() {
            None => merged = Some(results),
            Some(all) => {
                // Rounds of a scenario already present are appended; other scenarios keep
                // their own round numbers.
                let overlap = results
                    .runs
                    .iter()
                    .any(|r| all.runs.iter().any(|a| a.scenario == r.scenario));
                let offset = if overlap { all.rounds } else { 0 };
                all.rounds = if overlap {
                    all.rounds + results.rounds
                } else {
                    all.rounds.max(results.rounds)
                };
                all.runs.extend(results.runs.into_iter().map(|mut r| {
                    r.round += offset;
                    r
                }));
                all.failures.extend(results.failures);
                all.load_after = results.load_after;
                all.command = format!("{}; {}", all.command, results.command);
            }
        }
    }
    let results = merged.ok_or("no results file")?;
    let text = markdown(&results);
    println!("{text}");
    if !no_write {
        let out = out.unwrap_or_else(|| workspace_root().join("BENCHMARKS.md"));
        crate::report::write_section(&out, "fullduplex-bench:fanout", &text)
            .map_err(|e| format!("{}: {e}", out.display()))?;
    }
    Ok(())
}

//! WebSockets over HTTP/2 against HTTP/1.1, same run: the echo cell (100 connections, 16-byte
//! binary messages, one in flight per WebSocket) and idle memory per WebSocket.
//!
//! ```text
//! cargo build --release -p fullduplex --features http2 --example h2_bench
//! taskset -c 1 target/release/examples/h2_bench [--seconds 5] [--rounds 3] [--idle 10000]
//! ```
//!
//! The example starts itself again as the server (`h2_bench serve`, pinned to CPU 0 with
//! `taskset`, a current-thread runtime): one port that takes HTTP/1.1 (`accept_with`) and h2c
//! with prior knowledge (`http2::serve_connection`, told apart by `is_h2c_preface`), echoing
//! with `recv_many` like `fdx echo`. Three ways to carry 100 WebSockets, interleaved per round:
//!
//! * `http1`: 100 TCP connections, HTTP/1.1 upgrades;
//! * `h2-shared`: 100 HTTP/2 streams on one TCP connection (`Http2Connection::open`);
//! * `h2-each`: 100 TCP connections with one HTTP/2 stream each.
//!
//! Reported per mode: messages/s (median of rounds) and server CPU µs per message
//! (utime+stime of the server process over the run), and the ratios to `http1`. Idle memory:
//! a fresh server per mode, `VmRSS` growth after opening `--idle` WebSockets (HTTP/2: 100
//! streams per connection, the most a connection allows), divided by their number.

use std::time::{Duration, Instant};

use fullduplex::http2::{self, Http2Connection};
use fullduplex::{Accept, Config, Http2Policy, Message, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

const CONNECTIONS: usize = 100;
const PAYLOAD: usize = 16;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if args.first().map(String::as_str) == Some("serve") {
        return runtime.block_on(serve());
    }
    let option = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let seconds = option("--seconds", 5);
    let rounds = option("--rounds", 3);
    let idle = option("--idle", 10_000);
    runtime.block_on(bench(seconds as u64, rounds, idle))
}

// ---- server ----

fn server_config() -> Config {
    Config::default().compression(false)
}

async fn serve() -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            if http2::is_h2c_preface(&tcp).await.unwrap_or(false) {
                // Boxed: inline, the HTTP/2 connection's large future would size every
                // connection's task, HTTP/1.1 ones included.
                let _ = Box::pin(http2::serve_connection(
                    tcp,
                    server_config(),
                    |_| Ok(Accept::new()),
                    echo,
                ))
                .await;
            } else if let Ok(ws) = fullduplex::accept(tcp).await {
                echo(ws).await;
            }
        });
    }
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocket<S>) {
    while let Some(Ok(_)) = ws
        .recv_many(|message, out| {
            if message.is_data() {
                out.send_ref(message)?;
            }
            Ok::<_, fullduplex::Error>(())
        })
        .await
    {}
}

// ---- driver ----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Http1,
    H2Shared,
    H2Each,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::Http1, Mode::H2Shared, Mode::H2Each];

    fn name(self) -> &'static str {
        match self {
            Mode::Http1 => "http1",
            Mode::H2Shared => "h2-shared",
            Mode::H2Each => "h2-each",
        }
    }
}

/// The server process, killed (by PID, through `Child`) when dropped.
struct Server {
    child: std::process::Child,
    addr: String,
}

impl Server {
    fn start() -> Result<Server> {
        let exe = std::env::current_exe()?;
        let mut command = if std::path::Path::new("/usr/bin/taskset").exists() {
            let mut c = std::process::Command::new("/usr/bin/taskset");
            c.args(["-c", "0"]).arg(exe);
            c
        } else {
            std::process::Command::new(exe)
        };
        let mut child = command
            .arg("serve")
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
        Ok(Server {
            child,
            addr: line.trim().to_owned(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// utime + stime in clock ticks (100 per second).
    fn cpu_ticks(&self) -> u64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let after = stat.rsplit(')').next().unwrap_or("");
        let fields: Vec<&str> = after.split_whitespace().collect();
        // Fields 14 and 15 of stat; `after` starts at field 3.
        let tick = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        tick(11) + tick(12)
    }

    fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client_config() -> Config {
    Config::default().compression(false)
}

/// Opens `count` WebSockets the way `mode` says; HTTP/2 connections carry at most
/// `per_connection` streams.
async fn open(server: &Server, mode: Mode, count: usize, per_connection: usize) -> Result<Vec<Ws>> {
    let url = server.url();
    let mut out = Vec::with_capacity(count);
    match mode {
        Mode::Http1 => {
            for _ in 0..count {
                let config = client_config().http2(Http2Policy::Never);
                let (ws, _) = fullduplex::connect_with(url.as_str(), config).await?;
                out.push(Ws::Tcp(ws));
            }
        }
        Mode::H2Shared | Mode::H2Each => {
            let per = if mode == Mode::H2Each {
                1
            } else {
                per_connection
            };
            let mut connection = None;
            for i in 0..count {
                if i % per == 0 {
                    connection =
                        Some(Http2Connection::connect(url.as_str(), client_config()).await?);
                }
                let h2 = connection.as_ref().ok_or("no connection")?;
                let (ws, _) = h2.open(url.as_str()).await?;
                out.push(Ws::H2(ws));
            }
        }
    }
    Ok(out)
}

/// Either client WebSocket type.
enum Ws {
    Tcp(WebSocket<fullduplex::MaybeTlsStream<TcpStream>>),
    H2(WebSocket<http2::Http2Stream>),
}

async fn round_trips<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocket<S>,
    until: Instant,
) -> u64 {
    let payload = fullduplex::Bytes::from(vec![0x5a; PAYLOAD]);
    let mut n = 0;
    while Instant::now() < until {
        if ws.send(Message::Binary(payload.clone())).await.is_err() {
            break;
        }
        match ws.recv().await {
            Some(Ok(_)) => n += 1,
            _ => break,
        }
    }
    n
}

/// One echo run: messages per second and server CPU µs per message.
async fn echo_run(server: &Server, mode: Mode, seconds: u64) -> Result<(f64, f64)> {
    let sockets = open(server, mode, CONNECTIONS, CONNECTIONS).await?;
    let ticks0 = server.cpu_ticks();
    let start = Instant::now();
    let until = start + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for ws in sockets {
        tasks.spawn_local_or_spawn(ws, until);
    }
    let mut total = 0;
    while let Some(n) = tasks.join_next().await {
        total += n?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let ticks = server.cpu_ticks() - ticks0;
    let rate = total as f64 / elapsed;
    let cpu_us = ticks as f64 * 10_000.0 / total.max(1) as f64;
    Ok((rate, cpu_us))
}

trait SpawnWs {
    fn spawn_local_or_spawn(&mut self, ws: Ws, until: Instant);
}

impl SpawnWs for tokio::task::JoinSet<u64> {
    fn spawn_local_or_spawn(&mut self, ws: Ws, until: Instant) {
        self.spawn(async move {
            let n = match ws {
                Ws::Tcp(mut ws) => {
                    let n = round_trips(&mut ws, until).await;
                    let _ = ws.close(None).await;
                    n
                }
                Ws::H2(mut ws) => {
                    let n = round_trips(&mut ws, until).await;
                    let _ = ws.close(None).await;
                    n
                }
            };
            n
        });
    }
}

/// Server RSS growth per idle WebSocket, in bytes.
async fn idle_run(mode: Mode, count: usize) -> Result<f64> {
    let server = Server::start()?;
    // Warm up: one WebSocket of this kind, then let it go.
    drop(open(&server, mode, 1, 1).await?);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.rss_kib();
    let mode = if mode == Mode::H2Each {
        Mode::H2Shared
    } else {
        mode
    };
    let sockets = open(&server, mode, count, http2::MAX_STREAMS as usize).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = server.rss_kib();
    drop(sockets);
    Ok((after.saturating_sub(before)) as f64 * 1024.0 / count as f64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

async fn bench(seconds: u64, rounds: usize, idle: usize) -> Result<()> {
    println!(
        "echo: {CONNECTIONS} WebSockets x {PAYLOAD} B, one in flight each, {seconds} s x {rounds} rounds, modes interleaved"
    );
    let server = Server::start()?;
    let mut results: Vec<(Mode, Vec<f64>, Vec<f64>)> = Mode::ALL
        .iter()
        .map(|&m| (m, Vec::new(), Vec::new()))
        .collect();
    for round in 0..rounds {
        for (mode, rates, cpus) in results.iter_mut() {
            let (rate, cpu) = echo_run(&server, *mode, seconds).await?;
            println!(
                "  round {round} {:>9}: {:>8.0} msg/s, server {:.2} µs CPU/msg",
                mode.name(),
                rate,
                cpu
            );
            rates.push(rate);
            cpus.push(cpu);
        }
    }
    drop(server);
    let base_rate = median(results[0].1.clone());
    let base_cpu = median(results[0].2.clone());
    println!("\n| mode | msg/s (median) | server µs CPU/msg | msg/s vs http1 | CPU/msg vs http1 |");
    println!("|---|---:|---:|---:|---:|");
    for (mode, rates, cpus) in &results {
        let rate = median(rates.clone());
        let cpu = median(cpus.clone());
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} |",
            mode.name(),
            rate,
            cpu,
            rate / base_rate,
            cpu / base_cpu
        );
    }
    println!("\nidle memory: {idle} WebSockets, server VmRSS growth per WebSocket");
    let h1 = idle_run(Mode::Http1, idle).await?;
    let h2 = idle_run(Mode::H2Shared, idle).await?;
    println!("| mode | bytes per idle WebSocket | vs http1 |");
    println!("|---|---:|---:|");
    println!("| http1 (one TCP connection each) | {h1:.0} | 1.00 |");
    println!(
        "| h2 ({} streams per connection) | {h2:.0} | {:.2} |",
        http2::MAX_STREAMS,
        h2 / h1
    );
    Ok(())
}

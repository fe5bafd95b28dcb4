//! `fullduplex-bench soak`: N hub subscribers over K topics and HTTP publishers at a steady
//! rate for M minutes against `fdx serve` as a child process, with exact delivery accounting
//! (every subscriber must get every acknowledged message of its topic once, in order) and the
//! server's RSS and CPU every `--sample-seconds`.
//!
//! ```text
//! target/release/fullduplex-bench soak --connections 10000 --minutes 10
//! target/release/fullduplex-bench soak --smoke
//! ```

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::hostile::child::{self, Target};
use crate::hostile::honest::{self, Phase, Plan, Shared};
use crate::hostile::{command_line, open_file_limit, pinning, server_argv};
use crate::procfs;

const MIB: f64 = 1048576.0;

/// Options of `soak`.
#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// Subscriber connections.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Minutes of steady load (after every subscriber is up).
    #[arg(long, default_value_t = 10.0)]
    pub minutes: f64,
    /// Topics (subscriber i is on topic i mod K).
    #[arg(long, default_value_t = 100)]
    pub topics: usize,
    /// Publishes per second in all, round-robin over the topics.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// JSON bytes per message.
    #[arg(long, default_value_t = 128)]
    pub size: usize,
    /// Seconds between two lines of the RSS/CPU curve.
    #[arg(long, default_value_t = 10.0)]
    pub sample_seconds: f64,
    /// An extra argument for `fdx serve` (repeatable).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    /// Do not pin the server to CPU 0 and the harness to CPU 1.
    #[arg(long)]
    pub no_pin: bool,
    /// A few seconds with a few connections: checks that the soak works.
    #[arg(long)]
    pub smoke: bool,
}

/// Runs the soak; the report goes to stdout, progress to stderr.
pub fn run(mut args: SoakArgs) -> Result<(), String> {
    if args.smoke {
        args.connections = args.connections.min(50);
        args.topics = args.topics.min(5);
        args.minutes = args.minutes.min(0.1);
        args.sample_seconds = args.sample_seconds.min(2.0);
        args.rate = args.rate.min(50.0);
    }
    let nofile = open_file_limit();
    if nofile < args.connections as u64 + 200 {
        return Err(format!(
            "the open-file limit is {nofile}: {} connections need more (raise the hard limit)",
            args.connections
        ));
    }
    let (server_cpu, harness_cpu) = pinning(args.no_pin);
    if let Some(cpu) = harness_cpu {
        child::pin_current_thread(cpu);
    }
    let load_before = child::load_average();
    let argv = server_argv(
        Target::Hub,
        &args.server_args,
        Some((args.connections + 1000).max(10_000)),
    )?;
    let log = crate::servers::exe_dir().join("../bench/soak-stderr.log");
    let mut server = child::start(&argv, server_cpu, log)?;
    eprintln!(
        "soak: {} on {} (pid {})",
        server.command, server.addr, server.pid
    );
    let idle_rss = procfs::process_rss(server.pid).unwrap_or(0);

    let shared = Shared::new();
    let topics: Vec<String> = (0..args.topics.max(1))
        .map(|k| format!("soak-{k}"))
        .collect();
    let plan = Plan::Hub {
        subscribers: args.connections,
        topics: topics.clone(),
        rate: args.rate,
        size: args.size,
    };
    let connect_start = Instant::now();
    let load = honest::spawn(server.addr.clone(), plan, shared.clone(), None);
    let mut last_print = Instant::now();
    while !shared.ready.load(Ordering::Relaxed) {
        if load.is_finished() {
            return Err("the subscribers stopped before they were up".into());
        }
        if connect_start.elapsed() > Duration::from_secs(300) {
            shared.set(Phase::Done);
            return Err("the subscribers did not come up within 300 s".into());
        }
        if last_print.elapsed() > Duration::from_secs(5) {
            last_print = Instant::now();
            eprintln!(
                "soak: {} of {} subscribers connected",
                shared.connected.load(Ordering::Relaxed),
                args.connections
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let connect_seconds = connect_start.elapsed().as_secs_f64();
    eprintln!(
        "soak: {} subscribers up in {connect_seconds:.1} s; steady load for {} min",
        shared.connected.load(Ordering::Relaxed),
        args.minutes
    );

    // The curve: RSS and the server's CPU over each interval.
    // (seconds, RSS, server CPU %, CPU time of other processes %: on CPU 0 when pinned, on
    // both CPUs when not).
    let mut curve: Vec<(f64, u64, f64, f64)> = Vec::new();
    let pinned = server_cpu.is_some();
    let all_busy = || match (procfs::cpu_busy(0), procfs::cpu_busy(1)) {
        (Some(a), Some(b)) => Some(if pinned { a } else { a + b }),
        _ => None,
    };
    let own = || procfs::process_cpu(std::process::id());
    let mut busy_prev = all_busy();
    let mut own_prev = own();
    shared.set(Phase::Quiet);
    let start = Instant::now();
    let run_for = Duration::from_secs_f64(args.minutes * 60.0);
    let step = Duration::from_secs_f64(args.sample_seconds.max(0.5));
    let cpu_start = procfs::process_cpu(server.pid);
    let mut cpu_prev = cpu_start;
    let mut t_prev = start;
    let mut next = start;
    let mut died = None;
    loop {
        let now = Instant::now();
        if now >= next {
            let cpu = procfs::process_cpu(server.pid);
            let rss = procfs::process_rss(server.pid).unwrap_or(0);
            let util = match (cpu_prev, cpu) {
                (Some(a), Some(b)) => {
                    b.total().saturating_sub(a.total()).as_secs_f64()
                        / now.duration_since(t_prev).as_secs_f64().max(1e-9)
                        * 100.0
                }
                _ => f64::NAN,
            };
            let t = now.duration_since(start).as_secs_f64();
            let busy = all_busy();
            let own_now = own();
            let wall = now.duration_since(t_prev).as_secs_f64().max(1e-9);
            // Pinned: CPU 0 minus the server; unpinned: both CPUs minus server and harness.
            let harness = match (own_prev, own_now) {
                (Some(a), Some(b)) if !pinned => {
                    b.total().saturating_sub(a.total()).as_secs_f64() / wall * 100.0
                }
                _ => 0.0,
            };
            let others = match (busy_prev, busy) {
                (Some(a), Some(b)) => {
                    (b.saturating_sub(a).as_secs_f64() / wall * 100.0 - util - harness).max(0.0)
                }
                _ => f64::NAN,
            };
            busy_prev = busy;
            own_prev = own_now;
            if t > 0.0 {
                curve.push((t, rss, util, others));
                eprintln!(
                    "soak: {t:>6.0} s RSS {:>7.1} MiB, server CPU {util:>4.0}%, other processes {others:>4.0}%",
                    rss as f64 / MIB
                );
            } else {
                curve.push((0.0, rss, f64::NAN, f64::NAN));
            }
            cpu_prev = cpu;
            t_prev = now;
            next += step;
        }
        if now.duration_since(start) >= run_for {
            break;
        }
        if let Some(status) = server.exited() {
            died = Some(status);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let steady = start.elapsed().as_secs_f64();
    let cpu_end = procfs::process_cpu(server.pid);
    shared.set(Phase::Drain);
    std::thread::sleep(Duration::from_secs(if args.smoke { 1 } else { 5 }));
    let final_rss = procfs::process_rss(server.pid).unwrap_or(0);
    shared.set(Phase::Done);
    let report = load
        .join()
        .map_err(|_| "the soak load panicked".to_owned())??;
    let stderr_lines = server.stderr_lines();
    let command = server.command.clone();
    drop(server);

    let mut out = String::new();
    let _ = writeln!(
        out,
        "### soak: {} connections, {} min\n",
        args.connections, args.minutes
    );
    let _ = writeln!(out, "- Command: `{}`", command_line());
    let _ = writeln!(out, "- Server: `{command}`");
    let _ = writeln!(
        out,
        "- Load: {} subscribers over {} topics, four keep-alive HTTP publishers sharing {:.0} publishes/s round-robin \
         ({} B JSON, {:.0} deliveries/s)",
        args.connections,
        topics.len(),
        args.rate,
        args.size,
        args.rate * args.connections as f64 / topics.len() as f64
    );
    let _ = writeln!(
        out,
        "- Machine: {} CPUs; server on CPU {}, harness on CPU {}; load average {} before, {} after",
        child::cpus(),
        server_cpu.map_or("any".into(), |c| c.to_string()),
        harness_cpu.map_or("any".into(), |c| c.to_string()),
        load_before.map_or("?".into(), |l| format!("{l:.2}")),
        child::load_average().map_or("?".into(), |l| format!("{l:.2}")),
    );
    if let Some(status) = &died {
        let _ = writeln!(out, "- **The server exited during the soak: {status}**");
    }
    let _ = writeln!(out, "- Server stderr: {stderr_lines} lines");
    let _ = writeln!(
        out,
        "- Subscribers up {} in {connect_seconds:.1} s, failed {}; steady load {steady:.0} s",
        report.connected, report.connections_failed
    );
    let _ = writeln!(
        out,
        "\n**Delivery**: expected {}, delivered {}, missing {}, duplicates {}, out of order {}, \
         unknown {}. Publish answers: {}.",
        report.expected,
        report.delivered,
        report.missing,
        report.duplicates,
        report.out_of_order,
        report.bogus,
        report
            .publish_answers
            .iter()
            .map(|(k, v)| format!("{k} ×{v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(h) = report.latency.get(Phase::Quiet as usize) {
        if !h.is_empty() {
            let _ = writeln!(
                out,
                "\n**Publish-to-delivery latency**: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms ({} deliveries).",
                h.value_at_quantile(0.5) as f64 / 1000.0,
                h.value_at_quantile(0.99) as f64 / 1000.0,
                h.value_at_quantile(0.999) as f64 / 1000.0,
                h.max() as f64 / 1000.0,
                h.len()
            );
        }
    }
    if !report.failure_samples.is_empty() {
        let _ = writeln!(out, "\nFirst failures:\n");
        for s in &report.failure_samples {
            let _ = writeln!(out, "- {s}");
        }
    }
    let avg_cpu = match (cpu_start, cpu_end) {
        (Some(a), Some(b)) => b.total().saturating_sub(a.total()).as_secs_f64() / steady * 100.0,
        _ => f64::NAN,
    };
    let first = curve.first().map_or(0, |c| c.1);
    let last = curve.last().map_or(0, |c| c.1);
    let peak = curve.iter().map(|c| c.1).max().unwrap_or(0);
    let _ = writeln!(
        out,
        "\n**Server RSS**: idle {:.1} MiB; with every subscriber up {:.1} MiB ({:.0} B per connection); \
         peak {:.1}; at the end {:.1} (drift {:+.1} MiB); after the drain {:.1}. Server CPU {avg_cpu:.0}% on average.",
        idle_rss as f64 / MIB,
        first as f64 / MIB,
        first.saturating_sub(idle_rss) as f64 / args.connections.max(1) as f64,
        peak as f64 / MIB,
        last as f64 / MIB,
        (last as f64 - first as f64) / MIB,
        final_rss as f64 / MIB
    );
    let _ = writeln!(
        out,
        "\nOther processes: their CPU time on CPU 0 when pinned, on both CPUs (of 200%) when not.\n\n```text\n     t s   RSS MiB   server CPU   other processes"
    );
    for (t, rss, util, others) in &curve {
        let _ = writeln!(
            out,
            "{t:>8.0} {:>9.1} {util:>11.0}% {others:>16.0}%",
            *rss as f64 / MIB
        );
    }
    let _ = writeln!(out, "```");
    let exact = report.missing == 0
        && report.duplicates == 0
        && report.out_of_order == 0
        && report.connections_failed == 0
        && report.expected > 0;
    let _ = writeln!(
        out,
        "\nExact delivery: {}.",
        if exact { "holds" } else { "**does not hold**" }
    );
    println!("{out}");
    if let Some(status) = died {
        return Err(format!("the server exited: {status}"));
    }
    if args.smoke && !exact {
        return Err("soak smoke: delivery was not exact".into());
    }
    Ok(())
}

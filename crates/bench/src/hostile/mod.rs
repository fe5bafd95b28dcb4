//! `fullduplex-bench hostile`: honest load beside N hostile connections of each class against
//! `fdx echo` or `fdx serve`, as a child process. It prints the honest latency of a quiet run
//! against the same load under attack, how the server answered each class (and how fast), the
//! server's RSS over time, and the delivery accounting.
//!
//! ```text
//! cargo build --release -p fullduplex-bench -p fullduplex-cli
//! target/release/fullduplex-bench hostile --target echo
//! target/release/fullduplex-bench hostile --target hub --hostile-total 1000
//! target/release/fullduplex-bench hostile --target hub --smoke
//! ```
//!
//! Phases: warm-up (connect), quiet (`--quiet-seconds`), attack (`--attack-seconds`; the
//! hostile slots start over its first 2 s and are dropped at its end), recovery (until the
//! RSS is back within 10% or 8 MiB of its value before the attack, at least 5 s, at most
//! `--recovery-seconds`), drain (senders stop; in-flight messages arrive).

pub mod child;
pub mod classes;
pub mod honest;
pub mod report;
pub mod wire;

use std::time::{Duration, Instant};

use child::Target;
use classes::{Class, Settings};
use honest::{Phase, Plan, Shared};

/// Options of `hostile`.
#[derive(Debug, Clone, clap::Args)]
pub struct HostileArgs {
    /// The server under attack.
    #[arg(long, value_enum)]
    pub target: Target,
    /// Honest connections (echo clients or hub subscribers).
    #[arg(long, default_value_t = 200)]
    pub honest: usize,
    /// Honest messages per second in all (default: 10 per echo client; 100 publishes on the
    /// hub, each delivered to every subscriber).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Honest message bytes (default 64 for echo, 256 JSON bytes for the hub).
    #[arg(long)]
    pub size: Option<usize>,
    /// Hostile connections of each class (default: `--hostile-total` spread over the classes).
    #[arg(long)]
    pub hostile_per_class: Option<usize>,
    /// Hostile connections in all when `--hostile-per-class` is not given.
    #[arg(long, default_value_t = 1000)]
    pub hostile_total: usize,
    /// Only these classes (comma-separated; default every class that applies to the target).
    #[arg(long, value_delimiter = ',')]
    pub classes: Vec<String>,
    /// Seconds of the quiet (reference) run.
    #[arg(long, default_value_t = 20.0)]
    pub quiet_seconds: f64,
    /// Seconds of attack; long enough by default to see the keepalive close silent
    /// connections (echo 20 s + 20 s, hub 30 s + 30 s).
    #[arg(long, default_value_t = 90.0)]
    pub attack_seconds: f64,
    /// Most seconds of recovery (it ends earlier once the RSS is back near its start).
    #[arg(long, default_value_t = 60.0)]
    pub recovery_seconds: f64,
    /// How long a hostile attempt waits for its answer.
    #[arg(long, default_value_t = 75.0)]
    pub answer_timeout: f64,
    /// Seconds between two bytes of a slowloris head.
    #[arg(long, default_value_t = 2.0)]
    pub slowloris_interval: f64,
    /// Milliseconds a hostile slot waits after an answer before its next connection.
    #[arg(long, default_value_t = 1000)]
    pub reconnect_pause_ms: u64,
    /// Inflated bytes of a deflate bomb (about 1/1000 of it goes on the wire).
    #[arg(long, default_value_t = 32 << 20)]
    pub bomb_size: usize,
    /// Subscribe requests per second per topic-flood connection.
    #[arg(long, default_value_t = 50.0)]
    pub topic_flood_rate: f64,
    /// Publishes per second per history-flood connection.
    #[arg(long, default_value_t = 5.0)]
    pub history_flood_rate: f64,
    /// Bytes per history-flood publish (the hub's default message limit is 64 KiB).
    #[arg(long, default_value_t = 60_000)]
    pub history_flood_size: usize,
    /// An extra argument for the server (repeatable), e.g. `--server-arg=--history-memory=67108864`.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    /// Do not pin the server to CPU 0 and the harness to CPU 1.
    #[arg(long)]
    pub no_pin: bool,
    /// Milliseconds between two RSS samples.
    #[arg(long, default_value_t = 500)]
    pub rss_period_ms: u64,
    /// A few seconds, a few connections per class: checks that the harness works.
    #[arg(long)]
    pub smoke: bool,
}

/// Raises the open-file limit and returns the soft limit now in force.
pub fn open_file_limit() -> u64 {
    crate::serve::raise_nofile_limit();
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct we pass.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

/// The command line of this run, as it would be typed.
pub fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("target/release/fullduplex-bench {}", args.join(" "))
}

/// The server's argv for `target` (listening on a free loopback port).
pub fn server_argv(
    target: Target,
    extra: &[String],
    max_connections: Option<usize>,
) -> Result<Vec<String>, String> {
    let fdx = child::fdx_path()?.display().to_string();
    let mut argv = match target {
        Target::Echo => vec![fdx, "echo".into(), "127.0.0.1:0".into()],
        Target::Hub => vec![
            fdx,
            "serve".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--no-clock".into(),
        ],
    };
    if let (Target::Hub, Some(max)) = (target, max_connections) {
        argv.extend(["--max-connections".into(), max.to_string()]);
    }
    argv.extend(extra.iter().cloned());
    Ok(argv)
}

/// The (server, harness) CPUs, or none when not pinning.
pub fn pinning(no_pin: bool) -> (Option<usize>, Option<usize>) {
    if no_pin || child::cpus() < 2 {
        (None, None)
    } else {
        (Some(0), Some(1))
    }
}

/// Runs the harness; the report goes to stdout, progress to stderr.
pub fn run(mut args: HostileArgs) -> Result<(), String> {
    if args.smoke {
        args.honest = args.honest.min(10);
        args.hostile_per_class = Some(args.hostile_per_class.unwrap_or(2).min(3));
        args.quiet_seconds = args.quiet_seconds.min(2.0);
        args.attack_seconds = args.attack_seconds.min(4.0);
        args.recovery_seconds = args.recovery_seconds.min(2.0);
        args.answer_timeout = args.answer_timeout.min(3.0);
    }
    let target = args.target;
    let mut selected: Vec<Class> = if args.classes.is_empty() {
        classes::ALL.to_vec()
    } else {
        args.classes
            .iter()
            .map(|n| Class::parse(n.trim()))
            .collect::<Result<_, _>>()?
    };
    selected.retain(|c| c.applies(target));
    if selected.is_empty() {
        return Err(format!("no class applies to the {} target", target.name()));
    }
    let slots: Vec<(Class, usize)> = match args.hostile_per_class {
        Some(n) => selected.iter().map(|&c| (c, n)).collect(),
        None => {
            let base = args.hostile_total / selected.len();
            let extra = args.hostile_total % selected.len();
            selected
                .iter()
                .enumerate()
                .map(|(i, &c)| (c, base + usize::from(i < extra)))
                .collect()
        }
    };
    let hostile: usize = slots.iter().map(|(_, n)| n).sum();
    let nofile = open_file_limit();
    let needed = (args.honest + hostile * 2 + 200) as u64;
    if nofile < needed {
        return Err(format!(
            "the open-file limit is {nofile}; this run needs about {needed} (raise the hard limit)"
        ));
    }
    let (server_cpu, harness_cpu) = pinning(args.no_pin);
    if let Some(cpu) = harness_cpu {
        // Threads started from here on (honest load, hostile load, samplers) inherit it.
        child::pin_current_thread(cpu);
    }
    let load_before = child::load_average();
    let argv = server_argv(
        target,
        &args.server_args,
        Some((args.honest + hostile + 1000).max(10_000)),
    )?;
    let log =
        crate::servers::exe_dir().join(format!("../bench/hostile-{}-stderr.log", target.name()));
    let mut server = child::start(&argv, server_cpu, log)?;
    eprintln!(
        "hostile: {} listening on {} (pid {})",
        server.command, server.addr, server.pid
    );

    let shared = Shared::new();
    let sampler = child::RssSampler::start(
        server.pid,
        Duration::from_millis(args.rss_period_ms.max(50)),
        shared.phase.clone(),
    );
    let plan = match target {
        Target::Echo => Plan::Echo {
            connections: args.honest,
            rate: args.rate.unwrap_or(10.0 * args.honest as f64),
            size: args.size.unwrap_or(64),
        },
        Target::Hub => Plan::Hub {
            subscribers: args.honest,
            topics: vec!["honest".to_owned()],
            rate: args.rate.unwrap_or(100.0),
            size: args.size.unwrap_or(256),
        },
    };
    let honest = honest::spawn(server.addr.clone(), plan.clone(), shared.clone(), None);
    let ready_deadline = Instant::now() + Duration::from_secs(150);
    while !shared.ready.load(std::sync::atomic::Ordering::Relaxed) {
        if Instant::now() > ready_deadline || honest.is_finished() {
            shared.set(Phase::Done);
            return Err("the honest load did not come up within 150 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs_f64(if args.smoke { 0.5 } else { 2.0 }));

    let mut marks = report::Marks::new(server.pid);
    let mut metrics = Vec::new();
    shared.set(Phase::Quiet);
    marks.mark(Phase::Quiet, &sampler);
    eprintln!("hostile: quiet run, {} s", args.quiet_seconds);
    std::thread::sleep(Duration::from_secs_f64(args.quiet_seconds));
    if target == Target::Hub {
        metrics.push(("before the attack", report::scrape_metrics(&server.addr)));
    }

    let settings = Settings {
        target,
        addr: server.addr.clone(),
        honest_topic: "honest".to_owned(),
        slowloris_interval: Duration::from_secs_f64(args.slowloris_interval.max(0.01)),
        answer_timeout: Duration::from_secs_f64(args.answer_timeout.max(0.5)),
        reconnect_pause: Duration::from_millis(args.reconnect_pause_ms),
        bomb_size: args.bomb_size,
        topic_flood_rate: args.topic_flood_rate,
        history_flood_rate: args.history_flood_rate,
        history_flood_size: args.history_flood_size,
    };
    shared.set(Phase::Attack);
    marks.mark(Phase::Attack, &sampler);
    let attack_end = Instant::now() + Duration::from_secs_f64(args.attack_seconds);
    eprintln!(
        "hostile: attack, {} s, {hostile} hostile connections ({})",
        args.attack_seconds,
        slots
            .iter()
            .map(|(c, n)| format!("{n} {}", c.name()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let attack = classes::spawn(settings, slots.clone(), attack_end, None);
    let mut next_print = Instant::now() + Duration::from_secs(10);
    while !attack.is_finished() {
        std::thread::sleep(Duration::from_millis(100));
        if Instant::now() >= next_print {
            next_print += Duration::from_secs(10);
            if let Some(s) = sampler.last() {
                eprintln!(
                    "hostile:   {:>5.1} s RSS {:.1} MiB",
                    s.t,
                    s.rss as f64 / 1048576.0
                );
            }
        }
        if let Some(status) = server.exited() {
            shared.set(Phase::Done);
            return Err(format!("the server exited during the attack: {status}"));
        }
    }
    let class_stats = attack
        .join()
        .map_err(|_| "the hostile load panicked".to_owned())??;
    if target == Target::Hub {
        metrics.push(("end of the attack", report::scrape_metrics(&server.addr)));
    }

    shared.set(Phase::Recovery);
    marks.mark(Phase::Recovery, &sampler);
    let before = marks.rss_before_attack(&sampler.samples());
    let near = report::near(before);
    let recovery_start = Instant::now();
    let recovery_max = Duration::from_secs_f64(args.recovery_seconds);
    let recovery_min = Duration::from_secs_f64(5.0f64.min(args.recovery_seconds));
    eprintln!(
        "hostile: recovery: until RSS <= {:.1} MiB (at most {} s)",
        near as f64 / 1048576.0,
        args.recovery_seconds
    );
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let elapsed = recovery_start.elapsed();
        let back = sampler.last().is_some_and(|s| s.rss <= near);
        if (elapsed >= recovery_min && back) || elapsed >= recovery_max {
            break;
        }
    }
    shared.set(Phase::Drain);
    marks.mark(Phase::Drain, &sampler);
    std::thread::sleep(Duration::from_secs(if args.smoke { 1 } else { 3 }));
    if target == Target::Hub {
        metrics.push(("after recovery", report::scrape_metrics(&server.addr)));
    }
    shared.set(Phase::Done);
    marks.mark(Phase::Done, &sampler);
    let honest_report = honest
        .join()
        .map_err(|_| "the honest load panicked".to_owned())??;
    let samples = sampler.samples();
    drop(sampler);
    let exited = server.exited();
    let stderr_lines = server.stderr_lines();
    let command = server.command.clone();
    drop(server);

    let run = report::Run {
        command_line: command_line(),
        server_command: command,
        target,
        plan,
        slots,
        server_cpu,
        harness_cpu,
        load_before,
        load_after: child::load_average(),
        honest: honest_report,
        classes: class_stats,
        samples,
        marks,
        metrics,
        server_exited: exited,
        stderr_lines,
        recovery_bound: args.recovery_seconds,
    };
    println!("{}", run.markdown());
    if args.smoke {
        return run.smoke_check();
    }
    Ok(())
}

//! `fullduplex-bench`: runs the echo servers one after another, pinned to CPU 0, under the
//! load generator on CPU 1, interleaved over rounds, and writes the tables to `BENCHMARKS.md`.
//!
//! ```text
//! cargo build --release -p fullduplex-bench
//! cargo run --release -p fullduplex-bench                 # the full run (about 18 minutes)
//! cargo run --release -p fullduplex-bench -- --smoke      # seconds; writes nothing
//! cargo run --release -p fullduplex-bench -- callgrind    # instructions per message
//! cargo run --release -p fullduplex-bench -- fanout --compression   # pub/sub fan-out
//! cargo run --release -p fullduplex-bench -- hostile --target hub   # see RELIABILITY.md
//! cargo run --release -p fullduplex-bench -- soak --connections 10000 --minutes 10
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use fullduplex_bench::bench::{self, CellSpec, Timing};
use fullduplex_bench::generator::Kind;
use fullduplex_bench::report::{self, Results};
use fullduplex_bench::servers::{self, ServerSpec};
use fullduplex_bench::{callgrind, load, machine};

#[derive(Parser)]
#[command(version, about = "Side-by-side WebSocket echo benchmark")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// The load generator (started by the runner, pinned to CPU 1).
    Load(load::LoadArgs),
    /// Server instructions per message under valgrind's callgrind.
    Callgrind(CallgrindArgs),
    /// Honest load beside hostile connections of every class against `fdx echo` or
    /// `fdx serve`: latency quiet vs attack, how each class was answered, the server's RSS.
    Hostile(fullduplex_bench::hostile::HostileArgs),
    /// Hub subscribers and a publisher for minutes: exact delivery accounting, RSS curve.
    Soak(fullduplex_bench::soak::SoakArgs),
    /// Fan-out: `fdx serve` against µWebSockets pub/sub, Node `ws` and Python `websockets`
    /// (CPU per delivery, latency, time to the last subscriber, memory, bytes on the wire).
    Fanout(fullduplex_bench::fanout::FanoutArgs),
    /// The fan-out generator (started by `fanout`, pinned to CPU 1).
    #[command(hide = true)]
    FanoutLoad(fullduplex_bench::fanout::load::FanoutLoadArgs),
    /// Rewrites BENCHMARKS.md from saved results files (several: their rounds are merged).
    Report {
        /// The JSON a run saved (`target/bench/results*.json`); with several, the tables and
        /// verdicts are medians over the rounds of all of them.
        #[arg(required = true, num_args = 1..)]
        from: Vec<PathBuf>,
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Args, Clone)]
struct Output {
    /// The markdown file to update (only the generated section is replaced).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write no markdown.
    #[arg(long)]
    no_write: bool,
}

#[derive(Args, Clone)]
struct Selection {
    /// Only these servers (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    servers: Vec<String>,
    /// An extra fullduplex build, `NAME=PATH` (repeatable), e.g. the library before a change.
    #[arg(long = "server")]
    extra: Vec<String>,
    /// Run Python websockets in every echo cell, not only the compression cell.
    #[arg(long)]
    python_everywhere: bool,
}

#[derive(Args, Clone)]
struct RunArgs {
    /// A few seconds: a tiny matrix; checks that every server answers; writes nothing.
    #[arg(long)]
    smoke: bool,
    /// Rounds over the whole matrix.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Only cells whose id contains one of these (comma-separated), e.g. `16B-100c,1MiB`.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Idle connections for the memory measurement (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    idle_connections: usize,
    /// Skip the handshake measurement.
    #[arg(long)]
    no_handshakes: bool,
    /// Skip the echo matrix.
    #[arg(long)]
    no_echo: bool,
    /// The load generator: `builtin` (`fullduplex-bench load`, which marks the measured
    /// window exactly) or `fdx` (`fdx bench`, built next to this executable with
    /// `cargo build --release -p fullduplex-cli`).
    #[arg(long, default_value = "builtin", value_parser = ["builtin", "fdx"])]
    generator: String,
    #[command(flatten)]
    selection: Selection,
    #[command(flatten)]
    output: Output,
}

#[derive(Args, Clone)]
struct CallgrindArgs {
    /// One tiny workload.
    #[arg(long)]
    smoke: bool,
    #[command(flatten)]
    selection: Selection,
    #[command(flatten)]
    output: Output,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Load(args)) => load::run(args),
        Some(Command::Callgrind(args)) => run_callgrind(args),
        Some(Command::Hostile(args)) => fullduplex_bench::hostile::run(args),
        Some(Command::Soak(args)) => fullduplex_bench::soak::run(args),
        Some(Command::Fanout(args)) => fullduplex_bench::fanout::run(args),
        Some(Command::FanoutLoad(args)) => fullduplex_bench::fanout::load::run(args),
        Some(Command::Report { from, output }) => rewrite(&from, &output),
        None => run(cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fullduplex-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut line = "cargo run --release -p fullduplex-bench".to_owned();
    if !args.is_empty() {
        line.push_str(" -- ");
        line.push_str(&args.join(" "));
    }
    line
}

fn select(selection: &Selection) -> Result<Vec<ServerSpec>, String> {
    let mut list = servers::builtin(selection.python_everywhere);
    if !selection.servers.is_empty() {
        list.retain(|s| selection.servers.contains(&s.name));
    }
    for extra in &selection.extra {
        list.push(servers::extra(extra)?);
    }
    // A server asked for by name that is not there (µWebSockets not built, no `.venv`) fails
    // the run rather than leaving it out of the tables unnoticed.
    for name in &selection.servers {
        if !list.iter().any(|s| &s.name == name) {
            return Err(servers::missing(name));
        }
    }
    for spec in &list {
        let program = &spec.command[0];
        if !std::path::Path::new(program).exists() {
            return Err(format!(
                "{program} is missing: build with `cargo build --release -p fullduplex-bench`"
            ));
        }
    }
    if list.is_empty() {
        return Err("no servers selected".into());
    }
    Ok(list)
}

fn markdown_path(output: &Output) -> PathBuf {
    output
        .out
        .clone()
        .unwrap_or_else(|| servers::workspace_root().join("BENCHMARKS.md"))
}

fn results_dir() -> PathBuf {
    servers::exe_dir().join("../bench")
}

fn generator_kind(name: &str) -> Result<Kind, String> {
    match name {
        "fdx" => {
            let fdx = servers::exe_dir().join("fdx");
            if !fdx.exists() {
                return Err(format!(
                    "{} is missing: build it with `cargo build --release -p fullduplex-cli`",
                    fdx.display()
                ));
            }
            Ok(Kind::Fdx(fdx))
        }
        _ => Ok(Kind::Builtin),
    }
}

fn run(args: RunArgs) -> Result<(), String> {
    fullduplex_bench::serve::raise_nofile_limit();
    let servers = select(&args.selection)?;
    let kind = generator_kind(&args.generator)?;
    let (mut cells, rounds, timing, idle_connections, hs_timing) = if args.smoke {
        let quick = Timing {
            warmup: 0.2,
            duration: 0.4,
        };
        (bench::smoke_matrix(), 1, quick.clone(), 50, quick)
    } else {
        (
            bench::full_matrix(),
            args.rounds.max(1),
            Timing {
                warmup: args.warmup,
                duration: args.duration,
            },
            args.idle_connections,
            Timing {
                warmup: 0.5,
                duration: 2.0,
            },
        )
    };
    if !args.only.is_empty() {
        cells.retain(|c| args.only.iter().any(|o| c.id.contains(o.as_str())));
    }
    if args.no_echo {
        cells.clear();
    }
    let mut results = Results {
        machine: machine::describe(),
        command: command_line(),
        generator: match &kind {
            Kind::Builtin => "`fullduplex-bench load` (raw pre-encoded frames, one task per \
                             connection, current-thread runtime)"
                .to_owned(),
            Kind::Fdx(_) => "`fdx bench --threads 1`".to_owned(),
        },
        rounds,
        timing: Some(timing.clone()),
        cells: cells.clone(),
        servers: servers.iter().map(|s| s.name.clone()).collect(),
        idle_connections,
        ..Results::default()
    };
    let plan = |cell: &CellSpec| -> Vec<&ServerSpec> {
        servers
            .iter()
            .filter(|s| match cell.compress {
                // fdx bench compresses through the library: no raw frames for the TCP floor.
                true => s.compression && !(s.raw && kind != Kind::Builtin),
                false => s.everywhere,
            })
            .collect()
    };
    let total: usize = cells.iter().map(|c| plan(c).len()).sum::<usize>() * rounds;
    let mut done = 0;
    for round in 1..=rounds {
        for cell in &cells {
            for spec in plan(cell) {
                done += 1;
                let mut outcome = bench::echo_run(&kind, spec, cell, round, &timing);
                // A run disturbed by something else on CPU 0 is repeated once (not in a smoke
                // run, which only checks that every server answers).
                if !args.smoke
                    && matches!(&outcome, Ok(run) if run.cpu0_other > 0.25 || run.cpu1_other > 0.25)
                {
                    eprintln!("  disturbed ({}), repeating", spec.name);
                    outcome = bench::echo_run(&kind, spec, cell, round, &timing);
                }
                match outcome {
                    Ok(run) => {
                        eprintln!(
                            "[{done}/{total}] round {round} {:<22} {:<18} {:>10.0} msg/s  {:>6.2} µs/msg CPU ({:.2} user)  p50 {:>6.0} µs  other {:>3.0}% / {:>3.0}%",
                            cell.id,
                            spec.name,
                            run.report.messages_per_s,
                            run.cpu_us_per_msg,
                            run.user_us_per_msg.unwrap_or(f64::NAN),
                            run.report.latency_us.p50,
                            run.cpu0_other * 100.0,
                            run.cpu1_other * 100.0
                        );
                        results.echo.push(run);
                    }
                    Err(error) => {
                        eprintln!("[{done}/{total}] FAILED {error}");
                        results.failures.push(error);
                    }
                }
            }
        }
        if idle_connections > 0 && (round <= 2 || args.smoke) {
            for spec in &servers {
                match bench::idle_run(&kind, spec, idle_connections, 1024, round) {
                    Ok(run) => {
                        eprintln!(
                            "idle {:<18} {:>8.0} B/conn handshake only, {:>8.0} B/conn after an echo",
                            spec.name, run.per_conn_idle, run.per_conn_echo
                        );
                        results.idle.push(run);
                    }
                    Err(error) => {
                        eprintln!("FAILED {error}");
                        results.failures.push(error);
                    }
                }
            }
        }
        if !args.no_handshakes {
            for spec in servers.iter().filter(|s| !s.raw) {
                match bench::handshake_run(&kind, spec, 32, round, &hs_timing) {
                    Ok(run) => {
                        eprintln!(
                            "handshakes {:<18} {:>8.0}/s {:>6.1} µs CPU each",
                            spec.name, run.per_s, run.cpu_us
                        );
                        results.handshakes.push(run);
                    }
                    Err(error) => {
                        eprintln!("FAILED {error}");
                        results.failures.push(error);
                    }
                }
            }
        }
    }
    if args.smoke {
        if results.failures.is_empty() {
            eprintln!("smoke: every server answered in every cell");
            return Ok(());
        }
        return Err(format!("smoke: {} runs failed", results.failures.len()));
    }
    let dir = results_dir();
    std::fs::create_dir_all(&dir).ok();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Every run keeps its own file (so that several can be merged by `report`); the one that
    // wrote BENCHMARKS.md is also results.json.
    let json = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
    let mut names = vec![format!("results-{stamp}.json")];
    if !args.output.no_write {
        names.push("results.json".to_owned());
    }
    for name in names {
        let path = dir.join(name);
        std::fs::write(&path, &json).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("results saved to {}", path.display());
    }
    println!("{}", results.markdown());
    if !args.output.no_write {
        let path = markdown_path(&args.output);
        report::write_section(&path, "fullduplex-bench", &results.markdown())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if results.failures.is_empty() {
        Ok(())
    } else {
        Err(format!("{} runs failed", results.failures.len()))
    }
}

fn rewrite(from: &[PathBuf], output: &Output) -> Result<(), String> {
    let mut runs = Vec::new();
    for path in from {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let run: Results =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        runs.push(run);
    }
    let results = Results::merge(runs).ok_or("no results file")?;
    println!("{}", results.markdown());
    if !output.no_write {
        let path = markdown_path(output);
        report::write_section(&path, "fullduplex-bench", &results.markdown())
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

fn run_callgrind(args: CallgrindArgs) -> Result<(), String> {
    let servers: Vec<ServerSpec> = select(&args.selection)?
        .into_iter()
        .filter(|s| !s.command[0].ends_with("python"))
        .collect();
    let dir = results_dir().join("callgrind");
    let (counts, failures) = callgrind::run(&servers, &callgrind::workloads(args.smoke), &dir);
    let names: Vec<String> = servers.iter().map(|s| s.name.clone()).collect();
    let table = callgrind::markdown(
        &counts,
        &names,
        &command_line(),
        &fullduplex_bench::machine::fullduplex_build(),
    );
    println!("{table}");
    if !args.smoke && !args.output.no_write {
        let path = markdown_path(&args.output);
        report::write_section(&path, "fullduplex-bench:callgrind", &table)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("{} profiles failed", failures.len()))
    }
}

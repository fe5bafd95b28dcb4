//! `fdx`: a WebSocket command-line tool.
//!
//! ```text
//! fdx connect ws://127.0.0.1:9001/        # or just: fdx ws://127.0.0.1:9001/
//! fdx echo 127.0.0.1:9001
//! fdx exec 127.0.0.1:9001 -- cat
//! fdx completions bash
//! ```

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

mod bench;
mod connect;
mod echo;
mod exec;
mod inspect;
mod interactive;
mod listener;
mod memory;
mod output;
mod rlimit;
mod serve;
mod tls;

/// Connect to, serve and inspect WebSocket endpoints.
#[derive(Debug, Parser)]
#[command(name = "fdx", version, about, long_about = None, after_help = MAIN_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const MAIN_HELP: &str = "\
Examples:
  echo hello | fdx ws://127.0.0.1:9001/      send one message, print the answer
  fdx echo 127.0.0.1:9001                    run an echo server
  fdx exec 127.0.0.1:9002 -- ./script.sh     one process per connection, lines in and out
  fdx inspect -l 127.0.0.1:9002 -u ws://127.0.0.1:9001   log every frame between two peers
  fdx bench ws://127.0.0.1:9001/ -c 100 -d 10   load an echo server, report msgs/s and latency
  fdx completions bash > /etc/bash_completion.d/fdx

`fdx ws://...` and `fdx wss://...` are short for `fdx connect ...`.";

#[derive(Debug, Subcommand)]
// Parsed once per run: boxing `serve`'s many options would only complicate the match.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Connect to a WebSocket endpoint: send stdin lines as messages, print what arrives.
    Connect(connect::ConnectArgs),
    /// Serve a WebSocket echo server.
    Echo(echo::EchoArgs),
    /// Serve a WebSocket that runs a command per connection (like websocketd).
    Exec(exec::ExecArgs),
    /// Run the push server: topics over WebSocket, HTTP publish, recovery (see PROTOCOL.md).
    Serve(serve::ServeArgs),
    /// Sit between a client and a server, forward everything, log every frame (alias: proxy).
    #[command(alias = "proxy")]
    Inspect(inspect::InspectArgs),
    /// Load a WebSocket echo server: messages/s, latency percentiles, idle connections,
    /// handshakes/s.
    Bench(bench::BenchArgs),
    /// Print shell completions.
    #[command(
        after_help = "Examples:\n  fdx completions bash > ~/.local/share/bash-completion/completions/fdx\n  fdx completions zsh > ~/.zfunc/_fdx\n  fdx completions fish > ~/.config/fish/completions/fdx.fish"
    )]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// Exit status: no connection (refused, DNS, TLS, timeout, HTTP status) or a local problem.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status: invalid arguments (clap uses 2 as well).
pub const EXIT_USAGE: u8 = 2;
/// Exit status: the server closed with a code other than 1000 or 1001.
pub const EXIT_CLOSE_CODE: u8 = 3;
/// Exit status: the open connection broke (reset, protocol error, no pong in time, no close
/// frame).
pub const EXIT_BROKEN: u8 = 4;

/// Why `fdx` stops with a non-zero exit status: the status and a one-line reason.
#[derive(Debug)]
pub struct Failure {
    /// The process exit status.
    pub code: u8,
    /// One line, printed as `fdx: <reason>` on stderr.
    pub reason: String,
}

impl Failure {
    /// Exit status 1: something failed before or while connecting (or a local problem).
    pub fn new(reason: impl Into<String>) -> Failure {
        Failure {
            code: EXIT_FAILURE,
            reason: reason.into(),
        }
    }

    /// A failure with a specific exit status.
    pub fn with_code(code: u8, reason: impl Into<String>) -> Failure {
        Failure {
            code,
            reason: reason.into(),
        }
    }
}

impl From<String> for Failure {
    fn from(reason: String) -> Failure {
        Failure::new(reason)
    }
}

fn main() -> ExitCode {
    // `fdx ws://host/` is short for `fdx connect ws://host/`.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(first) = args.get(1).and_then(|a| a.to_str()) {
        if first.starts_with("ws://") || first.starts_with("wss://") {
            args.insert(1, "connect".into());
        }
    }
    let cli = Cli::parse_from(args);
    // `fdx bench` builds its own runtime (--threads).
    let command = match cli.command {
        Command::Bench(args) => return exit_status(bench::main(args)),
        command => command,
    };
    if matches!(
        command,
        Command::Echo(_) | Command::Exec(_) | Command::Serve(_) | Command::Inspect(_)
    ) {
        rlimit::raise_open_file_limit();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("fdx: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match command {
            Command::Connect(args) => connect::run(args).await,
            Command::Echo(args) => echo::run(args).await,
            Command::Exec(args) => exec::run(args).await,
            Command::Serve(args) => serve::run(args).await,
            Command::Inspect(args) => inspect::run(args).await,
            Command::Bench(_) => unreachable!("fdx bench runs on its own runtime"),
            Command::Completions { shell } => {
                clap_complete::generate(shell, &mut Cli::command(), "fdx", &mut std::io::stdout());
                Ok(())
            }
        }
    });
    // Blocking stdin reads must not keep the process alive once the work is done.
    runtime.shutdown_background();
    exit_status(result)
}

/// The exit status for a command's result, printing the reason of a failure.
fn exit_status(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            // One write for the whole line: `eprintln!` writes its pieces one by one, and the
            // line editor's thread may redraw its prompt in between (`fdx connect` when the
            // server closes while a line is being typed), which garbled the message.
            let line = format!("fdx: {}\n", failure.reason);
            let _ = std::io::stderr().write_all(line.as_bytes());
            ExitCode::from(failure.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn inspect_is_also_reachable_as_proxy() {
        for name in ["inspect", "proxy"] {
            let cli = Cli::try_parse_from(["fdx", name, "--upstream", "ws://127.0.0.1:9001"])
                .unwrap_or_else(|error| panic!("fdx {name}: {error}"));
            match cli.command {
                Command::Inspect(args) => assert_eq!(args.upstream, "ws://127.0.0.1:9001"),
                other => panic!("fdx {name} parsed as {other:?}"),
            }
        }
    }
}

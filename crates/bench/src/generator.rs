//! Running the load generator as a pinned child process and reading its event lines.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fullduplex_loadgen::LoadReport as Report;

/// A line the generator printed.
#[derive(Debug)]
pub enum Line {
    /// `{"event": ...}`.
    Event(serde_json::Value),
    /// The final report.
    Report(Box<Report>),
}

/// A running generator.
pub struct Generator {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<Result<Line, String>>,
}

/// Which load generator drives the servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `fullduplex-bench load`: prints events around the measured window.
    Builtin,
    /// `fdx bench --threads 1 --json` (the project's CLI), found at this path. It prints no
    /// events: the runner samples the server on its own clock inside the measured window.
    Fdx(std::path::PathBuf),
}

impl Generator {
    /// Starts `fullduplex-bench load ARGS` on `cpu`.
    pub fn start(cpu: usize, args: &[String]) -> Result<Generator, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut argv = vec!["load".to_owned()];
        argv.extend(args.iter().cloned());
        Generator::spawn(cpu, &exe, &argv)
    }

    /// Starts `fdx bench ARGS --threads 1 --json` on `cpu`.
    pub fn start_fdx(
        cpu: usize,
        fdx: &std::path::Path,
        args: &[String],
    ) -> Result<Generator, String> {
        let mut argv = vec!["bench".to_owned()];
        argv.extend(args.iter().cloned());
        argv.extend(["--threads".to_owned(), "1".to_owned(), "--json".to_owned()]);
        Generator::spawn(cpu, fdx, &argv)
    }

    fn spawn(cpu: usize, program: &std::path::Path, args: &[String]) -> Result<Generator, String> {
        let mut child = Command::new("taskset")
            .arg("-c")
            .arg(cpu.to_string())
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("taskset ... {}: {e}", program.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let parsed = parse_line(&line);
                if tx.send(parsed).is_err() {
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

    /// The next line, waiting until `deadline`.
    pub fn next(&mut self, deadline: Instant) -> Result<Line, String> {
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(wait) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => Err("the load generator timed out".into()),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err("the load generator exited without a report".into())
            }
        }
    }

    /// The generator's process id (taskset execs in place).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a command line (idle mode).
    pub fn command(&mut self, line: &str) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("stdin closed")?;
        writeln!(stdin, "{line}").map_err(|e| e.to_string())?;
        stdin.flush().map_err(|e| e.to_string())
    }

    /// Closes stdin (idle mode: the generator reports and exits).
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        self.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(10);
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

fn parse_line(line: &str) -> Result<Line, String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("generator printed {line:?}: {e}"))?;
    if value.get("event").is_some() {
        return Ok(Line::Event(value));
    }
    serde_json::from_value(value)
        .map(|r| Line::Report(Box::new(r)))
        .map_err(|e| format!("generator report {line:?}: {e}"))
}

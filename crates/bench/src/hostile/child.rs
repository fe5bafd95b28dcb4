//! The server under test as a child process (`fdx echo` or `fdx serve`), killed by its PID when
//! dropped, and a thread that samples its resident memory.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::procfs;

/// The server the harness attacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// `fdx echo`: the library's defaults.
    Echo,
    /// `fdx serve`: the push server.
    Hub,
}

impl Target {
    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Target::Echo => "echo",
            Target::Hub => "hub",
        }
    }

    /// The WebSocket path.
    pub fn path(self) -> &'static str {
        match self {
            Target::Echo => "/",
            Target::Hub => "/ws",
        }
    }
}

/// `target/release/fdx`, next to this executable.
pub fn fdx_path() -> Result<PathBuf, String> {
    let path = crate::servers::exe_dir().join("fdx");
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: build it with `cargo build --release -p fullduplex-cli`",
            path.display()
        ))
    }
}

/// A running server. Dropping it sends SIGTERM to its PID, then SIGKILL after 3 s.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// Its process id (taskset execs in place, so it is the server's).
    pub pid: u32,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The full command line.
    pub command: String,
    /// Where its stderr goes.
    pub stderr_log: PathBuf,
}

/// Starts `argv` (the listen address is part of it, port 0), pinned with `taskset -c CPU` if
/// `cpu` is given, and waits up to 15 s for its `listening on URL` line.
pub fn start(argv: &[String], cpu: Option<usize>, stderr_log: PathBuf) -> Result<Server, String> {
    let mut full: Vec<String> = Vec::new();
    if let Some(cpu) = cpu {
        full.extend(["taskset".to_owned(), "-c".to_owned(), cpu.to_string()]);
    }
    full.extend(argv.iter().cloned());
    if let Some(dir) = stderr_log.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    let log =
        std::fs::File::create(&stderr_log).map_err(|e| format!("{}: {e}", stderr_log.display()))?;
    let mut command = Command::new(&full[0]);
    command
        .args(&full[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    // The server must not outlive the harness, even if the harness is killed.
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("{}: {e}", full.join(" ")))?;
    let pid = child.id();
    let stdout = child.stdout.take();
    let mut server = Server {
        child,
        pid,
        addr: String::new(),
        command: full.join(" "),
        stderr_log,
    };
    let Some(stdout) = stdout else {
        return Err("no stdout".into());
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if let Some(url) = line.strip_prefix("listening on ") {
                let addr = url
                    .trim()
                    .trim_start_matches("ws://")
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_owned();
                tx.send(addr).ok();
                break;
            }
        }
        for _ in lines {}
    });
    match rx.recv_timeout(Duration::from_secs(15)) {
        Ok(addr) => {
            server.addr = addr;
            Ok(server)
        }
        Err(_) => Err(format!(
            "{}: no `listening on` line within 15 s (stderr in {})",
            server.command,
            server.stderr_log.display()
        )),
    }
}

impl Server {
    /// Whether the process has exited (crashed, say).
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }

    /// Lines written to stderr so far.
    pub fn stderr_lines(&self) -> usize {
        std::fs::read(&self.stderr_log)
            .map(|b| b.iter().filter(|&&c| c == b'\n').count())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on the PID of our own unreaped child.
            unsafe {
                libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            self.child.kill().ok();
        }
        self.child.wait().ok();
    }
}

/// One sample of the server's memory.
#[derive(Debug, Clone, Copy)]
pub struct RssSample {
    /// Seconds since the sampler started.
    pub t: f64,
    /// The phase at that moment.
    pub phase: u8,
    /// Resident bytes.
    pub rss: u64,
}

/// Samples a PID's RSS every `period` until stopped.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<RssSample>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    /// Starts sampling `pid`, tagging each sample with `phase`'s value.
    pub fn start(pid: u32, period: Duration, phase: Arc<AtomicU8>) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let stop = stop.clone();
            let samples = samples.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut next = start;
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rss) = procfs::process_rss(pid) {
                        if let Ok(mut s) = samples.lock() {
                            s.push(RssSample {
                                t: start.elapsed().as_secs_f64(),
                                phase: phase.load(Ordering::Relaxed),
                                rss,
                            });
                        }
                    }
                    next += period;
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    }
                }
            })
        };
        RssSampler {
            stop,
            samples,
            thread: Some(thread),
        }
    }

    /// The samples so far.
    pub fn samples(&self) -> Vec<RssSample> {
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The latest sample.
    pub fn last(&self) -> Option<RssSample> {
        self.samples.lock().ok().and_then(|s| s.last().copied())
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().ok();
        }
    }
}

/// Pins the calling thread (and the threads it starts afterwards) to `cpu`.
pub fn pin_current_thread(cpu: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// The number of CPUs online (whatever this thread is pinned to).
pub fn cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 {
        n as usize
    } else {
        1
    }
}

/// The 1-minute load average (`/proc/loadavg`).
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

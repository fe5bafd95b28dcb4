//! Helpers for the `fdx` tests: run the binary with a time bound, start `fdx echo` / `fdx exec`
//! in the background (killed by PID on drop), and one-connection servers written with the
//! library.
#![allow(dead_code)]

pub mod cluster;

use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The bound on any single `fdx` run.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(20);

/// The proxy variables `fdx connect` reads; removed so that tests connect directly.
pub const PROXY_VARS: [&str; 7] = [
    "http_proxy",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

/// The `fdx` binary, with no proxy in its environment.
pub fn fdx() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fdx"));
    for var in PROXY_VARS {
        command.env_remove(var);
    }
    command
}

/// What a finished run printed, and how it ended.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The exit code (panics on death by signal).
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("fdx died by a signal: {self:?}"))
    }

    /// Asserts exit status 0.
    pub fn assert_ok(&self) -> &Run {
        assert_eq!(self.code(), 0, "fdx failed: {self:#?}");
        self
    }
}

/// Runs `fdx args` with `stdin` as its input (then closed) and waits, at most [`RUN_TIMEOUT`].
pub fn run(args: &[&str], stdin: &[u8]) -> Run {
    run_with(args, Some(stdin), RUN_TIMEOUT)
}

/// Runs `fdx args`. `stdin: None` keeps stdin open (and empty) until the run ends.
pub fn run_with(args: &[&str], stdin: Option<&[u8]>, timeout: Duration) -> Run {
    run_command(fdx().args(args), stdin, timeout)
}

/// Runs a prepared `fdx` command (extra environment, say); see [`run_with`].
pub fn run_command(command: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> Run {
    let args: Vec<_> = command.get_args().map(|a| a.to_owned()).collect();
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fdx");
    let mut input = child.stdin.take().expect("stdin");
    let held = match stdin {
        Some(bytes) => {
            let bytes = bytes.to_vec();
            thread::spawn(move || {
                let _ = input.write_all(&bytes);
            });
            None
        }
        None => Some(input),
    };
    let stdout = collect(child.stdout.take().expect("stdout"));
    let stderr = collect(child.stderr.take().expect("stderr"));
    let status = wait_bounded(&mut child, timeout);
    drop(held);
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    match status {
        Some(status) => Run {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "fdx {args:?} did not finish within {timeout:?}\nstdout: {stdout}\nstderr: {stderr}"
        ),
    }
}

/// Waits for `child` until `timeout`; kills it (by PID) and gives `None` when time is up.
pub fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn collect(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Lines of a pipe, delivered through a channel so that reading them can time out.
pub fn lines(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            match line {
                Ok(line) => {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    });
    rx
}

/// A background `fdx echo` or `fdx exec`, killed by PID when dropped.
pub struct Background {
    child: Child,
    /// `ws://127.0.0.1:PORT` (or wss://).
    pub url: String,
}

impl Background {
    /// Starts `fdx args` (which should listen on port 0) and waits for `listening on URL`.
    pub fn start(args: &[&str]) -> Background {
        let mut child = fdx()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn fdx server");
        let out = lines(child.stdout.take().expect("stdout"));
        let first = out.recv_timeout(Duration::from_secs(10));
        let url = match first {
            Ok(line) => match line.strip_prefix("listening on ") {
                Some(url) => url.to_owned(),
                None => panic!("unexpected first line from fdx {args:?}: {line:?}"),
            },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("fdx {args:?} did not start listening");
            }
        };
        Background { child, url }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port in url")
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An `fdx connect` whose stdin and stdout stay attached: write lines, read lines.
pub struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    out: mpsc::Receiver<String>,
}

impl Client {
    pub fn start(args: &[&str]) -> Client {
        let mut child = fdx()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn fdx connect");
        let stdin = child.stdin.take();
        let out = lines(child.stdout.take().expect("stdout"));
        Client { child, stdin, out }
    }

    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to fdx");
        stdin.flush().expect("flush");
    }

    /// The next stdout line, within 10 s.
    pub fn next_line(&mut self) -> String {
        self.out
            .recv_timeout(Duration::from_secs(10))
            .expect("a line from fdx within 10 s")
    }

    /// Closes stdin and waits for the exit status (bounded).
    pub fn finish(mut self) -> ExitStatus {
        self.stdin = None;
        wait_bounded(&mut self.child, RUN_TIMEOUT).expect("fdx connect finishes")
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serves exactly one connection with `handler` on a thread of its own; returns the port.
pub fn serve_one<F, Fut>(handler: F) -> u16
where
    F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            // Bounded: a test that never connects must not leave this thread waiting forever.
            if let Ok(Ok((tcp, _))) =
                tokio::time::timeout(Duration::from_secs(30), listener.accept()).await
            {
                handler(tcp).await;
            }
        });
    });
    port
}

/// A port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A fresh temporary directory for this test process.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fdx-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A self-signed certificate for `localhost` and `127.0.0.1`, written as PEM files into
/// `dir`: the certificate path and the key path (the certificate doubles as the CA file).
pub fn self_signed_cert(dir: &std::path::Path) -> (String, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("certificate");
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
    let path = |p: PathBuf| p.to_str().expect("utf-8 path").to_owned();
    (path(cert_path), path(key_path))
}

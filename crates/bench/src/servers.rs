//! The servers under test: where their executables are, and starting one pinned to a CPU.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A server the runner can start.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// Its name in the tables.
    pub name: String,
    /// Program and arguments; the listen address is appended.
    pub command: Vec<String>,
    /// No WebSocket handshake: the plain TCP echo.
    pub raw: bool,
    /// Negotiates permessage-deflate.
    pub compression: bool,
    /// Takes part in every echo cell (otherwise only in the compression cell, idle memory and
    /// handshakes).
    pub everywhere: bool,
}

/// The directory of the running executable: the servers are built next to it.
pub fn exe_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The workspace root (for the Python peer and `.venv`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The built-in servers: the Rust echo servers (fullduplex, also in its streaming receive mode,
/// the two Rust peers and the TCP floor), µWebSockets when `peers/build_uws.sh` has built it
/// (every cell but the compression cell), and Python `websockets` when `.venv` exists
/// (compression cell, idle memory and handshakes only, unless `python_everywhere`).
pub fn builtin(python_everywhere: bool) -> Vec<ServerSpec> {
    let dir = exe_dir();
    let rust = |name: &str, bin: &str, raw: bool, compression: bool| ServerSpec {
        name: name.to_owned(),
        command: vec![dir.join(bin).display().to_string()],
        raw,
        compression,
        everywhere: true,
    };
    let mut servers = vec![
        rust("fullduplex", "echo-fullduplex", false, true),
        rust(
            "fullduplex-borrowed",
            "echo-fullduplex-borrowed",
            false,
            true,
        ),
        rust(
            "fullduplex-streaming",
            "echo-fullduplex-streaming",
            false,
            true,
        ),
        rust("fullduplex-set", "echo-fullduplex-set", false, true),
        rust("fastwebsockets", "echo-fastwebsockets", false, false),
        rust("tokio-tungstenite", "echo-tungstenite", false, false),
        rust("tcp-echo", "echo-tcp", true, true),
    ];
    let root = workspace_root();
    let uws = root.join("target/bench/uws/uws-echo");
    if uws.exists() {
        servers.push(ServerSpec {
            name: "uwebsockets".to_owned(),
            command: vec![uws.display().to_string()],
            raw: false,
            compression: false,
            everywhere: true,
        });
    }
    let python = root.join(".venv/bin/python");
    if python.exists() {
        servers.push(ServerSpec {
            name: "python-websockets".to_owned(),
            command: vec![
                python.display().to_string(),
                root.join("crates/bench/peers/websockets_echo.py")
                    .display()
                    .to_string(),
            ],
            raw: false,
            compression: true,
            everywhere: python_everywhere,
        });
    }
    servers
}

/// Why a server asked for by name is not available, and how to make it so.
pub fn missing(name: &str) -> String {
    match name {
        "uwebsockets" => "uwebsockets is not built: run crates/bench/peers/build_uws.sh (it \
                          needs a C compiler and Debian's libuv1)"
            .to_owned(),
        "python-websockets" => "python-websockets needs .venv: python3 -m venv .venv && \
                                .venv/bin/python -m pip install -r interop/requirements.txt"
            .to_owned(),
        _ => format!(
            "no server named {name} (the built-in ones, or one given with --server {name}=PATH)"
        ),
    }
}

/// An extra fullduplex build given as `NAME=PATH` (for before/after runs).
pub fn extra(spec: &str) -> Result<ServerSpec, String> {
    let (name, path) = spec
        .split_once('=')
        .ok_or_else(|| format!("--server {spec}: expected NAME=PATH"))?;
    if !Path::new(path).exists() {
        return Err(format!("--server {spec}: {path} does not exist"));
    }
    Ok(ServerSpec {
        name: name.to_owned(),
        command: vec![path.to_owned()],
        raw: false,
        compression: true,
        everywhere: true,
    })
}

/// A running server. Dropping it closes its stdin (it exits) and reaps it.
#[derive(Debug)]
pub struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Its process id (taskset and valgrind exec in place, so it is the server's).
    pub pid: u32,
    /// Where it listens.
    pub addr: String,
}

/// Starts `spec` under `prefix` (e.g. `taskset -c 0`, or that plus valgrind) and waits for its
/// `listening on ADDR` line.
pub fn start(spec: &ServerSpec, prefix: &[String], wait: Duration) -> Result<Running, String> {
    let mut argv: Vec<String> = prefix.to_vec();
    argv.extend(spec.command.iter().cloned());
    argv.push("127.0.0.1:0".to_owned());
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
                tx.send(addr.trim().to_owned()).ok();
                break;
            }
        }
        // Keep draining so that the server never blocks on a full pipe.
        for _ in lines {}
    });
    let stdin = child.stdin.take();
    let pid = child.id();
    let mut running = Running {
        child,
        stdin,
        pid,
        addr: String::new(),
    };
    match rx.recv_timeout(wait) {
        Ok(addr) => {
            running.addr = addr;
            Ok(running)
        }
        Err(_) => Err(format!(
            "{}: no `listening on` line within {wait:?}",
            spec.name
        )),
    }
}

impl Running {
    /// Asks the server to exit (stdin EOF) and waits up to `wait` before killing it.
    pub fn stop(mut self, wait: Duration) -> bool {
        self.stdin.take();
        let deadline = std::time::Instant::now() + wait;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stdin.take();
        if let Ok(None) = self.child.try_wait() {
            std::thread::sleep(Duration::from_millis(50));
            if let Ok(None) = self.child.try_wait() {
                self.child.kill().ok();
            }
        }
        self.child.wait().ok();
    }
}

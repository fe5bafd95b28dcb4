//! Helpers shared by the hub's integration tests: an in-process hub on a loopback port, and
//! running Python `websockets` clients from the repository's .venv.
#![allow(dead_code)]

pub mod backend;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fullduplex_hub::{Hub, HubConfig};

/// A hub serving on 127.0.0.1 in its own runtime thread; shut down when dropped.
pub struct TestHub {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The hub.
    pub hub: Arc<Hub>,
    thread: Option<JoinHandle<()>>,
}

impl TestHub {
    /// Starts a hub with `config` on a free port.
    pub fn start(config: HubConfig) -> TestHub {
        let hub = Hub::new(config);
        let (tx, rx) = std::sync::mpsc::channel();
        let serving = hub.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                tx.send(listener.local_addr().expect("addr"))
                    .expect("send addr");
                serving.serve(listener).await.expect("serve");
            });
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the hub starts");
        TestHub {
            addr,
            hub,
            thread: Some(thread),
        }
    }

    /// `ws://ADDR/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Shuts the hub down and waits for `serve` to return.
    pub fn stop(&mut self) {
        self.hub.shutdown();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A hub configuration for tests: no clock (tests that want it turn it on), short shutdown.
pub fn config() -> HubConfig {
    let mut config = HubConfig::default();
    config.clock = false;
    config.shutdown_timeout = Duration::from_secs(3);
    config
}

/// The repository's Python (with `websockets`), or a failure that says how to get it.
pub fn python() -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test once (it creates .venv with websockets), or \
         python3 -m venv .venv && .venv/bin/pip install -r interop/requirements.txt",
        python.display()
    );
    python
}

/// Runs `tests/py/SCRIPT` with `args`, at most `limit`; panics with its output unless it
/// exits with status 0. Returns its stdout.
pub fn run_python(script: &str, args: &[&str], limit: Duration) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(script);
    let mut child = Command::new(python())
        .arg(&path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    // Read both pipes while it runs, so a chatty script cannot block on a full pipe.
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut out_pipe, &mut text);
        text
    });
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut err_pipe, &mut text);
        text
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if start.elapsed() > limit {
            // Our own child, by PID.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    match status {
        Some(status) if status.success() => stdout,
        Some(status) => panic!("{script} failed ({status}):\n{stdout}\n{stderr}"),
        None => panic!("{script} timed out after {limit:?}:\n{stdout}\n{stderr}"),
    }
}

//! `fdx connect` against a Python `websockets` echo server (the repository's .venv).

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::run;

const ECHO_SERVER: &str = r#"
import asyncio
from websockets.asyncio.server import serve

async def echo(ws):
    async for message in ws:
        await ws.send(message)

async def main():
    async with serve(echo, "127.0.0.1", 0) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()

asyncio.run(main())
"#;

/// The Python server, killed by PID when dropped.
struct PyServer(Child);

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn python() -> Option<PathBuf> {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    python.exists().then_some(python)
}

#[test]
fn round_trip_with_python_websockets() {
    let Some(python) = python() else {
        eprintln!("SKIPPED: no .venv with websockets (python3 -m venv .venv && .venv/bin/pip install websockets)");
        return;
    };
    let mut child = Command::new(python)
        .args(["-c", ECHO_SERVER])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python");
    let out = common::lines(child.stdout.take().expect("stdout"));
    let _server = PyServer(child);
    let port = out
        .recv_timeout(Duration::from_secs(15))
        .expect("the python server prints its port");
    let url = format!("ws://127.0.0.1:{}/", port.trim());

    let text = run(
        &["connect", &url, "-v", "--wait-messages", "2"],
        b"hello\nw\xc3\xb6rld\n",
    );
    text.assert_ok();
    assert_eq!(text.stdout, "hello\nw\u{f6}rld\n");
    assert!(
        text.stderr
            .contains("< Sec-WebSocket-Extensions: permessage-deflate"),
        "{}",
        text.stderr
    );

    let binary = run(
        &[
            "connect",
            &url,
            "--binary",
            "--no-compress",
            "--wait-messages",
            "1",
        ],
        &[0xde, 0xad, 0xbe, 0xef],
    );
    binary.assert_ok();
    assert_eq!(binary.stdout, "deadbeef\n");
}

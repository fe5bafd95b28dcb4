//! `fdx connect` against Python `websockets` servers (the repository's .venv): round trips,
//! and headers, a subprotocol and compression through a SOCKS5 proxy.

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

/// Runs a Python server script (which prints its port first) from the repository's venv.
fn start_python_server(script: &str) -> (PyServer, u16) {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        python.exists(),
        "no .venv with websockets: run scripts/test once (it creates the venv)"
    );
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python");
    let out = common::lines(child.stdout.take().expect("stdout"));
    let server = PyServer(child);
    let port = out
        .recv_timeout(Duration::from_secs(15))
        .expect("the python server prints its port");
    let port = port.trim().parse().expect("a port number");
    (server, port)
}

#[test]
#[ignore = "needs Python websockets in .venv (scripts/test makes it)"]
fn round_trip_with_python_websockets() {
    let (_server, port) = start_python_server(ECHO_SERVER);
    let url = format!("ws://127.0.0.1:{port}/");

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

/// Sends what the handshake carried as the first message, then echoes.
const REPORTING_SERVER: &str = r#"
import asyncio, json
from websockets.asyncio.server import serve

async def handler(ws):
    headers = ws.request.headers
    await ws.send(json.dumps({
        "path": ws.request.path,
        "cookie": headers.get("Cookie"),
        "origin": headers.get("Origin"),
        "x_trace": headers.get("X-Trace"),
        "subprotocol": ws.subprotocol,
        "extensions": ws.response.headers.get("Sec-WebSocket-Extensions"),
    }))
    async for message in ws:
        await ws.send(message)

async def main():
    async with serve(handler, "127.0.0.1", 0, subprotocols=["chat.v1"]) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()

asyncio.run(main())
"#;

/// A one-connection SOCKS5 proxy (RFC 1928) with username/password authentication
/// (RFC 1929). Reports the credentials and the target it was asked for.
fn socks5_proxy(seen: std::sync::mpsc::Sender<String>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    common::serve_one(move |mut client| async move {
        let result: std::io::Result<()> = async {
            let mut head = [0u8; 2];
            client.read_exact(&mut head).await?;
            let mut methods = vec![0u8; usize::from(head[1])];
            client.read_exact(&mut methods).await?;
            if head[0] != 5 || !methods.contains(&2) {
                client.write_all(&[5, 0xff]).await?;
                return Ok(());
            }
            client.write_all(&[5, 2]).await?;
            let mut auth = [0u8; 2];
            client.read_exact(&mut auth).await?;
            let mut user = vec![0u8; usize::from(auth[1])];
            client.read_exact(&mut user).await?;
            let mut len = [0u8; 1];
            client.read_exact(&mut len).await?;
            let mut password = vec![0u8; usize::from(len[0])];
            client.read_exact(&mut password).await?;
            let _ = seen.send(format!(
                "auth {}:{}",
                String::from_utf8_lossy(&user),
                String::from_utf8_lossy(&password)
            ));
            client.write_all(&[1, 0]).await?;
            let mut request = [0u8; 4];
            client.read_exact(&mut request).await?;
            let host = match request[3] {
                3 => {
                    let mut len = [0u8; 1];
                    client.read_exact(&mut len).await?;
                    let mut name = vec![0u8; usize::from(len[0])];
                    client.read_exact(&mut name).await?;
                    String::from_utf8_lossy(&name).into_owned()
                }
                1 => {
                    let mut ip = [0u8; 4];
                    client.read_exact(&mut ip).await?;
                    std::net::Ipv4Addr::from(ip).to_string()
                }
                _ => return Ok(()),
            };
            let mut port = [0u8; 2];
            client.read_exact(&mut port).await?;
            let port = u16::from_be_bytes(port);
            let _ = seen.send(format!("connect {host}:{port}"));
            let mut upstream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            client.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0, 0]).await?;
            tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
            Ok(())
        }
        .await;
        let _ = result;
    })
}

#[test]
#[ignore = "needs Python websockets in .venv (scripts/test makes it)"]
fn headers_subprotocol_compression_through_socks5_to_python() {
    let (_server, port) = start_python_server(REPORTING_SERVER);
    // `localhost`: the SOCKS5 proxy resolves the name, not fdx.
    let url = format!("ws://localhost:{port}/room/7?x=1");
    let (tx, seen) = std::sync::mpsc::channel();
    let proxy = format!("socks5://alice:s3cret@127.0.0.1:{}", socks5_proxy(tx));

    let text = "compressible text, compressible text, compressible text, compressible text";
    let run = run(
        &[
            "connect",
            &url,
            "--proxy",
            &proxy,
            "-H",
            "Cookie: session=abc",
            "-H",
            "X-Trace: 42",
            "--origin",
            "https://app.example",
            "--protocol",
            "chat.v1",
            "--compress",
            "-v",
            "--wait-messages",
            "2",
        ],
        format!("{text}\n").as_bytes(),
    );
    run.assert_ok();
    let mut lines = run.stdout.lines();
    let report: serde_json::Value =
        serde_json::from_str(lines.next().expect("the report")).expect("JSON report");
    assert_eq!(report["path"], "/room/7?x=1");
    assert_eq!(report["cookie"], "session=abc");
    assert_eq!(report["x_trace"], "42");
    assert_eq!(report["origin"], "https://app.example");
    assert_eq!(report["subprotocol"], "chat.v1");
    let extensions = report["extensions"]
        .as_str()
        .expect("compression negotiated");
    assert!(extensions.starts_with("permessage-deflate"), "{extensions}");
    assert_eq!(lines.next(), Some(text));
    assert!(
        run.stderr.contains("< Sec-WebSocket-Protocol: chat.v1"),
        "{}",
        run.stderr
    );
    assert_eq!(
        seen.recv_timeout(Duration::from_secs(5)).as_deref(),
        Ok("auth alice:s3cret")
    );
    assert_eq!(
        seen.recv_timeout(Duration::from_secs(5)).unwrap(),
        format!("connect localhost:{port}")
    );
}

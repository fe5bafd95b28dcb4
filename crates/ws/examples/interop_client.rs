//! Runs a scripted session against a peer server (Python `websockets`, Node `ws`; see
//! `interop/README.md` for the contract) and exits non-zero on the first failed check.
//!
//! ```text
//! cargo run --release -p fullduplex --example interop_client -- ws://127.0.0.1:8765
//! ```

use std::time::Duration;

use fullduplex::{Bytes, CloseCode, CloseFrame, Config, MaybeTlsStream, Message, WebSocket};
use tokio::net::TcpStream;

type Ws = WebSocket<MaybeTlsStream<TcpStream>>;
type Result<T> = std::result::Result<T, String>;

#[tokio::main]
async fn main() {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:8765".to_owned());
    match tokio::time::timeout(Duration::from_secs(60), run(&url)).await {
        Ok(Ok(())) => println!("interop_client: ok"),
        Ok(Err(reason)) => {
            eprintln!("interop_client: FAILED: {reason}");
            std::process::exit(1);
        }
        Err(_) => {
            eprintln!("interop_client: FAILED: timed out");
            std::process::exit(1);
        }
    }
}

async fn run(url: &str) -> Result<()> {
    let config = Config::default()
        .max_message_size(32 << 20)
        .max_frame_size(32 << 20);
    let (mut ws, _) = fullduplex::connect_with(url, config)
        .await
        .map_err(|e| format!("connect: {e}"))?;

    let text = Message::text("héllo ✓");
    ws.send(text.clone()).await.map_err(|e| e.to_string())?;
    expect(&mut ws, &text, "text echo").await?;

    let binary = Message::binary((0..=255u8).collect::<Vec<_>>());
    ws.send(binary.clone()).await.map_err(|e| e.to_string())?;
    expect(&mut ws, &binary, "binary echo").await?;

    let big: Vec<u8> = (0..16u32 << 20).map(|i| (i % 251) as u8).collect();
    let big = Message::binary(big);
    ws.send(big.clone()).await.map_err(|e| e.to_string())?;
    expect(&mut ws, &big, "16 MiB echo").await?;

    ws.send(Message::text("fragment-me"))
        .await
        .map_err(|e| e.to_string())?;
    expect(&mut ws, &Message::text("fragmented"), "fragmented reply").await?;

    let ping = Bytes::from_static(b"client-ping");
    ws.send(Message::Ping(ping.clone()))
        .await
        .map_err(|e| e.to_string())?;
    expect(&mut ws, &Message::Pong(ping), "pong").await?;

    ws.send(Message::text("ping-me"))
        .await
        .map_err(|e| e.to_string())?;
    // The server's ping arrives first (answered automatically), then its confirmation.
    expect(&mut ws, &Message::text("pong-ok"), "server ping answered").await?;

    ws.send(Message::Close(Some(CloseFrame::new(
        CloseCode(4000),
        "bye",
    ))))
    .await
    .map_err(|e| e.to_string())?;
    loop {
        match ws.recv().await {
            Some(Ok(Message::Close(Some(frame)))) if frame.code == CloseCode(4000) => break,
            Some(Ok(Message::Close(other))) => return Err(format!("close echo: got {other:?}")),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("close echo: {e}")),
            None => return Err("close echo: stream ended without a close frame".into()),
        }
    }
    match ws.recv().await {
        None => Ok(()),
        other => Err(format!(
            "after close: expected end of stream, got {other:?}"
        )),
    }
}

/// Receives until a data message (or pong) arrives and checks it; pings are skipped.
async fn expect(ws: &mut Ws, expected: &Message, what: &str) -> Result<()> {
    loop {
        match ws.recv().await {
            Some(Ok(Message::Ping(_))) => continue,
            Some(Ok(message)) if &message == expected => return Ok(()),
            Some(Ok(message)) => {
                return Err(format!(
                    "{what}: got {:?} ({} bytes)",
                    message.as_text().unwrap_or("<binary>"),
                    message.len()
                ))
            }
            Some(Err(e)) => return Err(format!("{what}: {e}")),
            None => return Err(format!("{what}: connection ended")),
        }
    }
}

//! An echo server: every text and binary message comes back unchanged.
//!
//! ```text
//! cargo run --release -p fullduplex --example echo_server -- 127.0.0.1:9001
//! ```
//!
//! This is the Autobahn server testee. Replies are fed, not sent: they leave in one write per
//! batch of reads, when `recv` would wait for the peer.
//!
//! With permessage-deflate negotiated it compresses every reply (threshold 0) rather than only
//! those of 64 bytes or more: kosoku, the Autobahn runner, hands an uncompressed text message
//! to its 12.*/13.* case code as `str` and that code then fails while hashing it. Sending a
//! small message uncompressed is correct (RFC 7692 compresses per message); this only keeps
//! the runner happy.

use fullduplex::proto::deflate::DeflateConfig;
use fullduplex::Config;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (tcp, peer) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(error) = echo(tcp).await {
                eprintln!("{peer}: {error}");
            }
        });
    }
}

async fn echo(tcp: tokio::net::TcpStream) -> Result<(), fullduplex::Error> {
    tcp.set_nodelay(true)?;
    let config = Config::default().deflate(DeflateConfig::default().with_threshold(0));
    let mut ws = fullduplex::accept_with(tcp, config, |_| Ok(fullduplex::Accept::new())).await?;
    while let Some(message) = ws.recv().await {
        let message = message?;
        if message.is_text() || message.is_binary() {
            ws.feed(message).await?;
        }
    }
    Ok(())
}

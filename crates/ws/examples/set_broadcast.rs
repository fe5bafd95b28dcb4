//! A push server on one `WebSocketSet`: every connected client gets a tick once a second, and
//! anything a client sends goes to everybody. One task holds all the connections.
//!
//! ```text
//! cargo run --release -p fullduplex --example set_broadcast -- 127.0.0.1:9002
//! fdx connect ws://127.0.0.1:9002/     # in two terminals: type in one, read in both
//! ```
//!
//! Every message is encoded once and the same bytes are queued on every connection
//! (`feed_encoded`). A client that has more than `MAX_BEHIND` bytes waiting is a slow consumer:
//! it is closed with 1008 rather than allowed to grow its queue without bound.

use std::time::Duration;

use fullduplex::proto::connection::encode_server_message;
use fullduplex::{CloseCode, CloseFrame, Message, WebSocketSet};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Bytes a client may have waiting before it counts as a slow consumer.
const MAX_BEHIND: usize = 1 << 20;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9002".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    let mut set: WebSocketSet<TcpStream> = WebSocketSet::new();
    let mut handshakes = JoinSet::new();
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    let mut tick = 0u64;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, _) = accepted?;
                handshakes.spawn(fullduplex::accept(tcp));
            }
            Some(done) = handshakes.join_next() => match done? {
                Ok(ws) => {
                    set.insert(ws);
                }
                Err(error) => eprintln!("handshake: {error}"),
            },
            _ = ticks.tick() => {
                tick += 1;
                let text = format!("tick {tick}, {} connected", set.len());
                broadcast(&mut set, &Message::text(text));
            }
            (key, message) = set.recv() => match message {
                Some(Ok(message)) if message.is_text() || message.is_binary() => {
                    broadcast(&mut set, &message);
                }
                Some(Err(error)) => eprintln!("{key:?}: {error}"),
                // Pings are answered by the set; a close is completed by it.
                Some(Ok(_)) => {}
                None => println!("{key:?} left, {} connected", set.len()),
            },
        }
    }
}

/// Queues `message`, encoded once, on every connection; closes the ones too far behind.
fn broadcast(set: &mut WebSocketSet<TcpStream>, message: &Message) {
    let frame = encode_server_message(message);
    let keys: Vec<_> = set.keys().collect();
    for key in keys {
        if set.buffered_amount(key) > MAX_BEHIND {
            let frame = CloseFrame::new(CloseCode::from(1008), "slow consumer");
            set.close(key, Some(frame)).ok();
        } else {
            // Fails only for a connection that is closing: it gets nothing more.
            set.feed_encoded(key, frame.clone()).ok();
        }
    }
}

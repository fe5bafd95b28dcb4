//! An echo server: every text and binary message comes back unchanged.
//!
//! ```text
//! cargo run --release -p fullduplex --example echo_server -- 127.0.0.1:9001 [--streaming | --set [--threads N]] [--borrowed]
//! ```
//!
//! This is the Autobahn server testee. With `--streaming` it receives messages in pieces
//! (`WebSocket::into_streaming`) and echoes every piece as soon as it arrives, as a frame of a
//! fragmented reply (the conformance run covers that mode too), with a write buffer limit
//! large enough for a whole message of a peer that does not read while it sends. With `--set`
//! the connections live in `WebSocketSet`s on `SetThreads`: N threads (default: one per CPU),
//! each with a runtime, a listener (`SO_REUSEPORT`, one port) and a set of its own. With
//! `--borrowed` the messages are lent to a handler (`recv_many`: every message that has arrived, in one call)
//! that copies the echo into the write buffer through its outbox, where the default echo
//! takes messages (`recv`); `--set --borrowed` does the same for the set's connections
//! (`WebSocketSet::recv_many`: one connection's messages per call). Replies are fed, not
//! sent: they leave in one write per batch of reads, when `recv` would wait for the peer.
//!
//! With permessage-deflate negotiated it compresses every reply (threshold 0) rather than only
//! those of 64 bytes or more: kosoku, the Autobahn runner, hands an uncompressed text message
//! to its 12.*/13.* case code as `str` and that code then fails while hashing it. Sending a
//! small message uncompressed is correct (RFC 7692 compresses per message); this only keeps
//! the runner happy.

use fullduplex::proto::deflate::DeflateConfig;
use fullduplex::set::Key;
use fullduplex::{Config, Event, MessageRef, Outbox, SetThreads, WebSocketSet};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let streaming = args.iter().any(|a| a == "--streaming");
    let in_set = args.iter().any(|a| a == "--set");
    let borrowed = args.iter().any(|a| a == "--borrowed");
    let threads = match args.iter().position(|a| a == "--threads") {
        Some(at) => args.get(at + 1).ok_or("--threads N")?.parse()?,
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };
    let addr: std::net::SocketAddr = args
        .iter()
        .enumerate()
        .find(|(at, a)| !a.starts_with("--") && (*at == 0 || args[at - 1] != "--threads"))
        .map_or("127.0.0.1:9001", |(_, a)| a.as_str())
        .parse()?;
    if in_set {
        return echo_on_set_threads(addr, threads, borrowed);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(echo_per_task(addr, streaming, borrowed))
}

/// A task per connection on a multi-thread runtime.
async fn echo_per_task(
    addr: std::net::SocketAddr,
    streaming: bool,
    borrowed: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind(addr).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (tcp, peer) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(error) = echo(tcp, streaming, borrowed).await {
                eprintln!("{peer}: {error}");
            }
        });
    }
}

/// Limits and keepalive are set explicitly: Autobahn sends messages of up to 16 MiB (9.*) and
/// the interop runs 16 MiB ones, above the default 1 MiB limit, and the Autobahn runner ends a
/// 12.*/13.* case as FAILED when it sees a ping it did not ask for (keepalive is on by
/// default).
fn config() -> Config {
    Config::default()
        .deflate(DeflateConfig::default().with_threshold(0))
        .max_message_size(64 << 20)
        .no_keepalive()
}

/// `threads` sets, each on a thread of its own with a listener of its own on `addr` (port 0:
/// the first thread picks the port and the others take the same).
fn echo_on_set_threads(
    addr: std::net::SocketAddr,
    threads: usize,
    borrowed: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let (port_sender, port) = tokio::sync::watch::channel(addr.port());
    let sets = SetThreads::spawn(threads, move |index| {
        let port_sender = port_sender.clone();
        let mut port = port.clone();
        async move {
            let port = if index == 0 {
                addr.port()
            } else {
                let Ok(port) = port.wait_for(|&port| port != 0).await else {
                    return;
                };
                *port
            };
            let bound = fullduplex::reuseport_listener(std::net::SocketAddr::new(addr.ip(), port));
            let listener = match bound {
                Ok(listener) => listener,
                Err(error) => {
                    eprintln!("thread {index}: bind {addr}: {error}");
                    std::process::exit(1);
                }
            };
            if index == 0 {
                if let Ok(local) = listener.local_addr() {
                    port_sender.send_replace(local.port());
                    println!("listening on {local}");
                }
            }
            if let Err(error) = echo_in_set(listener, borrowed).await {
                eprintln!("thread {index}: {error}");
            }
        }
    })?;
    sets.join().map_err(|_| "a set thread panicked")?;
    Ok(())
}

/// Every connection of one listener in one set: handshakes run as tasks, open connections in
/// this one.
async fn echo_in_set(
    listener: TcpListener,
    borrowed: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut set = WebSocketSet::new();
    let mut handshakes = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, _) = accepted?;
                tcp.set_nodelay(true)?;
                handshakes.spawn(fullduplex::accept_with(tcp, config(), |_| {
                    Ok(fullduplex::Accept::new())
                }));
            }
            Some(done) = handshakes.join_next() => match done? {
                Ok(ws) => {
                    set.insert(ws);
                }
                Err(error) => eprintln!("handshake: {error}"),
            },
            (key, echoed) = echo_next(&mut set, borrowed) => {
                if let Err(error) = echoed {
                    eprintln!("{key:?}: {error}");
                }
            }
        }
    }
}

/// Echoes the set's next message, or with `borrowed` the batch of messages one connection has
/// (`recv_many`).
async fn echo_next(
    set: &mut WebSocketSet<TcpStream>,
    borrowed: bool,
) -> (Key, Result<(), fullduplex::Error>) {
    if borrowed {
        let (key, echoed) = set
            .recv_many(|_, message, out| echo_lent(message, out))
            .await;
        return (key, echoed.map_or(Ok(()), |echoed| echoed.map(drop)));
    }
    let (key, message) = set.recv().await;
    let echoed = match message {
        Some(Ok(message)) if message.is_text() || message.is_binary() => set.feed(key, message),
        Some(Err(error)) => Err(error),
        Some(Ok(_)) | None => Ok(()),
    };
    (key, echoed)
}

/// The borrowed echo's handler: a data message goes back through the outbox.
fn echo_lent(message: MessageRef<'_>, out: &mut Outbox<'_>) -> Result<(), fullduplex::Error> {
    if message.is_data() {
        out.send_ref(message)?;
    }
    Ok(())
}

async fn echo(tcp: TcpStream, streaming: bool, borrowed: bool) -> Result<(), fullduplex::Error> {
    tcp.set_nodelay(true)?;
    let mut config = config();
    if streaming {
        // A streaming echo answers while the message is still arriving. A peer that reads
        // only once it has sent everything (the Autobahn runner does, for its 16 MiB
        // messages) would wait for us while we wait for it: let the echo pile up instead.
        config = config.write_buffer_limit(64 << 20);
    }
    let mut ws = fullduplex::accept_with(tcp, config, |_| Ok(fullduplex::Accept::new())).await?;
    if streaming {
        let mut ws = ws.into_streaming();
        while let Some(event) = ws.recv().await {
            if let Event::Fragment(piece) = event? {
                ws.feed_fragment(piece.kind, piece.payload, piece.is_last)
                    .await?;
            }
        }
        return Ok(());
    }
    if borrowed {
        while let Some(echoed) = ws.recv_many(echo_lent).await {
            echoed?;
        }
        return Ok(());
    }
    while let Some(message) = ws.recv().await {
        let message = message?;
        if message.is_text() || message.is_binary() {
            ws.feed(message).await?;
        }
    }
    Ok(())
}

//! An idle connection holds no buffers: neither after the handshake (tokio reports a fresh
//! socket readable once, which must not leave a receive buffer behind) nor after it has
//! echoed a message (the receive buffer and the send queue go back to their per-thread pools).
//! The same holds in a `WebSocketSet`, where a connection also has no task.
//!
//! A counting global allocator tracks live heap bytes. Server and raw clients share the
//! process, so the figures include each client socket's tokio registration; the bounds are
//! far below the 8 KiB receive buffer and 4 KiB send tail a connection used to keep.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use fullduplex::{Message, WebSocketSet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const CONNECTIONS: usize = 200;

fn masked_binary(payload: &[u8]) -> Vec<u8> {
    let key = [1u8, 2, 3, 4];
    let mut frame = vec![0x82, 0x80 | 126];
    frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// How the test server holds its connections.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Serving {
    /// A tokio task per connection, each an echo loop of `recv` and `feed`.
    TaskEach,
    /// All connections in one `WebSocketSet`.
    OneSet,
}

async fn serve(listener: TcpListener, serving: Serving) {
    if serving == Serving::OneSet {
        let mut set = WebSocketSet::new();
        let mut handshakes = JoinSet::new();
        loop {
            tokio::select! {
                Ok((tcp, _)) = listener.accept() => {
                    handshakes.spawn(fullduplex::accept(tcp));
                }
                Some(Ok(Ok(ws))) = handshakes.join_next() => {
                    set.insert(ws);
                }
                (key, message) = set.recv() => {
                    if let Some(Ok(message @ Message::Binary(_))) = message {
                        set.feed(key, message).unwrap();
                    }
                }
            }
        }
    }
    while let Ok((tcp, _)) = listener.accept().await {
        tokio::spawn(async move {
            let Ok(mut ws) = fullduplex::accept(tcp).await else {
                return;
            };
            while let Some(Ok(message)) = ws.recv().await {
                if let Message::Binary(_) = message {
                    if ws.feed(message).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
}

/// Live heap bytes per connection once `CONNECTIONS` are open, and after each has echoed.
fn measure(serving: Serving) -> (isize, isize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, serving));
        // Warm up: the runtime's own structures, the pools, the first connection.
        let mut warm = connect(addr).await;
        echo(&mut warm).await;
        drop(warm);
        settle().await;

        let before = LIVE.load(Ordering::SeqCst);
        let mut clients = Vec::new();
        for _ in 0..CONNECTIONS {
            clients.push(connect(addr).await);
        }
        settle().await;
        let idle = LIVE.load(Ordering::SeqCst);
        for client in &mut clients {
            echo(client).await;
        }
        settle().await;
        let echoed = LIVE.load(Ordering::SeqCst);

        let per_idle = (idle - before) / CONNECTIONS as isize;
        let per_echoed = (echoed - before) / CONNECTIONS as isize;
        eprintln!("{serving:?}: live heap per connection (server + raw client): {per_idle} B after the handshake, {per_echoed} B after one 1 KiB echo");
        (per_idle, per_echoed)
    })
}

/// One test for both ways of serving: the allocation counter is global, so the two
/// measurements must not run at the same time.
#[test]
fn idle_connections_hold_no_buffers() {
    let mut idle = Vec::new();
    for serving in [Serving::TaskEach, Serving::OneSet] {
        let (per_idle, per_echoed) = measure(serving);
        assert!(
            per_idle < 2048,
            "{serving:?}: {per_idle} B per idle connection: a buffer is kept after the handshake"
        );
        assert!(
            per_echoed - per_idle < 128,
            "{serving:?}: an echo left {} B per connection behind",
            per_echoed - per_idle
        );
        idle.push(per_idle);
    }
    // The set holds a connection without a task: its `WebSocket` and a waker, in a slot.
    assert!(
        idle[1] + 128 <= idle[0],
        "a connection in a set ({} B) is not smaller than one with a task ({} B)",
        idle[1],
        idle[0]
    );
}

async fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = [0u8; 512];
    let mut got = 0;
    while !head[..got].windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut head[got..]).await.unwrap();
        assert!(n > 0, "the server closed during the handshake");
        got += n;
    }
    tcp
}

async fn echo(tcp: &mut TcpStream) {
    let payload = [7u8; 1024];
    tcp.write_all(&masked_binary(&payload)).await.unwrap();
    let mut echo = [0u8; 1024 + 4];
    tcp.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo[..4], &[0x82, 126, 4, 0]);
    assert_eq!(&echo[4..], &payload);
}

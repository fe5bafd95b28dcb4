//! Echoing messages allocates nothing per message beyond the payload itself.
//!
//! A counting global allocator wraps the system allocator. The peer is a raw TCP client that
//! writes pre-encoded masked frames and reads the echoes into a reused buffer, so it allocates
//! nothing itself; every allocation counted during the measured window is the server's (or
//! tokio's).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use fullduplex::{Message, WebSocketSet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static ALLOCATED_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED_BYTES.fetch_add(new_size, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0xa1, 0xb2, 0xc3, 0xd4];
    let mut frame = vec![0x80 | opcode];
    if payload.len() < 126 {
        frame.push(0x80 | payload.len() as u8);
    } else {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

/// How the server under test echoes.
#[derive(Debug, Clone, Copy)]
enum Echo {
    /// `recv`, then `feed`.
    Owned,
    /// `recv_with`, one message lent per call, echoed through the outbox.
    Borrowed,
    /// `recv_many`, every message that has arrived lent in one call.
    Batches,
    /// The connection in a `WebSocketSet`, echoed with the set's `recv_many`.
    Set,
}

/// Runs `count` echoes of `payload_len`-byte binary messages, `pipeline` in flight, and returns
/// the allocations counted while they ran (after a warm-up).
fn echo_allocations(
    payload_len: usize,
    pipeline: usize,
    count: usize,
    echo: Echo,
) -> (usize, usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let mut ws = fullduplex::accept(tcp).await.unwrap();
            let reply = |message: fullduplex::MessageRef<'_>, out: &mut fullduplex::Outbox<'_>| {
                if message.is_data() {
                    out.send_ref(message)?;
                }
                Ok::<_, fullduplex::Error>(())
            };
            match echo {
                Echo::Owned => {
                    while let Some(Ok(message)) = ws.recv().await {
                        if let Message::Binary(_) | Message::Text(_) = message {
                            ws.feed(message).await.unwrap();
                        }
                    }
                }
                Echo::Borrowed => while let Some(Ok(Ok(()))) = ws.recv_with(reply).await {},
                Echo::Batches => while let Some(Ok(_)) = ws.recv_many(reply).await {},
                Echo::Set => {
                    let mut set = WebSocketSet::new();
                    set.insert(ws);
                    while let (_, Some(Ok(_))) =
                        set.recv_many(|_, message, out| reply(message, out)).await
                    {
                    }
                }
            }
        });
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        tcp.write_all(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
        let mut head = vec![0u8; 1024];
        let mut got = 0;
        while !head[..got].windows(4).any(|w| w == b"\r\n\r\n") {
            got += tcp.read(&mut head[got..]).await.unwrap();
        }
        let payload: Vec<u8> = (0..payload_len).map(|i| i as u8).collect();
        let batch: Vec<u8> = (0..pipeline)
            .flat_map(|_| masked_frame(2, &payload))
            .collect();
        let echo_len = pipeline * (payload_len + if payload_len < 126 { 2 } else { 4 });
        let mut echo = vec![0u8; echo_len];
        let rounds = count / pipeline;
        async fn exchange(tcp: &mut TcpStream, batch: &[u8], echo: &mut [u8], rounds: usize) {
            for _ in 0..rounds {
                tcp.write_all(batch).await.unwrap();
                tcp.read_exact(echo).await.unwrap();
            }
        }
        // Warm-up: buffers reach their steady size.
        exchange(&mut tcp, &batch, &mut echo, 200).await;
        let before = (
            ALLOCATIONS.load(Ordering::SeqCst),
            ALLOCATED_BYTES.load(Ordering::SeqCst),
        );
        exchange(&mut tcp, &batch, &mut echo, rounds).await;
        let after = (
            ALLOCATIONS.load(Ordering::SeqCst),
            ALLOCATED_BYTES.load(Ordering::SeqCst),
        );
        // The last echo must be intact.
        assert_eq!(echo[0], 0x82);
        drop(tcp);
        server.await.unwrap();
        (after.0 - before.0, after.1 - before.1)
    })
}

#[test]
fn echo_allocates_nothing_per_message_beyond_the_payload() {
    const N: usize = 10_000;
    let cells = [(16, 1), (16, 8), (1024, 1), (1024, 8), (4096, 4)];
    for ((len, pipeline), echo) in cells.into_iter().flat_map(|cell| {
        [Echo::Owned, Echo::Borrowed, Echo::Batches, Echo::Set].map(|echo| (cell, echo))
    }) {
        let (allocations, bytes) = echo_allocations(len, pipeline, N, echo);
        eprintln!(
            "payload {len} B x{pipeline} in flight ({echo:?}): {allocations} allocations, {bytes} bytes for {N} echoes"
        );
        // The payload itself is a slice of the receive buffer, so the allowance of "one
        // allocation per message for the payload" is not even needed: a handful of
        // allocations in total (buffer growth) is what a correct implementation shows.
        assert!(
            allocations <= N / 100,
            "{allocations} allocations for {N} echoes of {len} bytes (pipeline {pipeline}, {echo:?})"
        );
    }
}

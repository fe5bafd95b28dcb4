//! How frames reach the transport: one vectored write for a header and its payload, and one
//! write for many small frames queued together.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use fullduplex::{Config, Message, Role, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A transport that accepts every write whole and counts the calls.
#[derive(Default)]
struct CountingSink {
    writes: Arc<AtomicUsize>,
    bytes: Arc<AtomicUsize>,
}

impl AsyncRead for CountingSink {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Pending
    }
}

impl AsyncWrite for CountingSink {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.bytes.fetch_add(buf.len(), Ordering::SeqCst);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let n: usize = bufs.iter().map(|b| b.len()).sum();
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.bytes.fetch_add(n, Ordering::SeqCst);
        Poll::Ready(Ok(n))
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn server() -> (WebSocket<CountingSink>, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let sink = CountingSink::default();
    let (writes, bytes) = (sink.writes.clone(), sink.bytes.clone());
    let ws = WebSocket::from_raw(sink, Role::Server, Config::default(), Default::default());
    (ws, writes, bytes)
}

#[tokio::test]
async fn header_and_large_payload_leave_in_one_vectored_write() {
    let (mut ws, writes, bytes) = server();
    ws.send(Message::binary(vec![1u8; 100_000])).await.unwrap();
    assert_eq!(writes.load(Ordering::SeqCst), 1);
    assert_eq!(bytes.load(Ordering::SeqCst), 100_000 + 4 + 6);
}

#[tokio::test]
async fn queued_small_frames_leave_in_one_write() {
    let (mut ws, writes, bytes) = server();
    for i in 0..100 {
        ws.feed(Message::text(format!("{i:04}"))).await.unwrap();
    }
    assert_eq!(writes.load(Ordering::SeqCst), 0, "feed must not write");
    ws.flush().await.unwrap();
    assert_eq!(writes.load(Ordering::SeqCst), 1);
    assert_eq!(bytes.load(Ordering::SeqCst), 100 * 6);
}

#[tokio::test]
async fn mixed_small_and_large_frames_leave_in_one_write() {
    let (mut ws, writes, _) = server();
    for i in 0..10 {
        ws.feed(Message::text("small")).await.unwrap();
        ws.feed(Message::binary(vec![i as u8; 4096])).await.unwrap();
    }
    ws.flush().await.unwrap();
    assert_eq!(writes.load(Ordering::SeqCst), 1);
}

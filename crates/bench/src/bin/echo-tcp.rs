//! The floor: a plain tokio TCP echo. It holds no buffer while idle: it reads into a
//! per-thread 64 KiB buffer through `AsyncRead::poll_read` (which, unlike `try_read`, takes a
//! short read as proof that the socket is drained, saving a read that would fail with EAGAIN)
//! and writes the bytes straight back; only bytes the socket would not take at once are
//! copied into a per-connection buffer. It does no WebSocket handshake: the load generator
//! talks raw frames to it (`--raw`).

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::ErrorKind;
use std::pin::Pin;
use std::task::Poll;

use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; 64 << 10].into_boxed_slice());
}

/// Reads what is there and writes it back without awaiting in between, so that the
/// per-thread buffer is never held across an await. Returns what the socket did not take.
fn poll_echo(
    tcp: &mut TcpStream,
    cx: &mut std::task::Context<'_>,
) -> Poll<Result<Option<Vec<u8>>, ()>> {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let mut buf = ReadBuf::new(&mut scratch[..]);
        match Pin::new(&mut *tcp).poll_read(cx, &mut buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(_)) => Poll::Ready(Err(())),
            Poll::Ready(Ok(())) if buf.filled().is_empty() => Poll::Ready(Err(())),
            Poll::Ready(Ok(())) => {
                let data = buf.filled();
                let written = match tcp.try_write(data) {
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
                    Err(_) => return Poll::Ready(Err(())),
                };
                Poll::Ready(Ok((written < data.len()).then(|| data[written..].to_vec())))
            }
        }
    })
}

async fn echo(mut tcp: TcpStream) {
    loop {
        match poll_fn(|cx| poll_echo(&mut tcp, cx)).await {
            Ok(None) => {}
            Ok(Some(rest)) => {
                if tcp.write_all(&rest).await.is_err() {
                    return;
                }
            }
            Err(()) => return,
        }
    }
}

fn main() {
    fullduplex_bench::serve::run(echo);
}

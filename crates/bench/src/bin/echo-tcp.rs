//! The floor: a plain tokio TCP echo. It holds no buffer while idle: it waits for readability,
//! reads into a per-thread 64 KiB buffer and writes the bytes straight back; only bytes the
//! socket would not take at once are copied into a per-connection buffer. It does no WebSocket
//! handshake: the load generator talks raw frames to it (`--raw`).

use std::cell::RefCell;
use std::io::ErrorKind;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; 64 << 10].into_boxed_slice());
}

async fn echo(mut tcp: TcpStream) {
    loop {
        if tcp.readable().await.is_err() {
            return;
        }
        // Read and write back without awaiting, so the per-thread buffer is never held across
        // an await; what the socket does not take now is copied out and written after.
        let step = SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let n = match tcp.try_read(&mut scratch) {
                Ok(0) => return Err(()),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
                Err(_) => return Err(()),
            };
            let written = match tcp.try_write(&scratch[..n]) {
                Ok(w) => w,
                Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
                Err(_) => return Err(()),
            };
            Ok((written < n).then(|| scratch[written..n].to_vec()))
        });
        match step {
            Ok(Some(rest)) => {
                if tcp.write_all(&rest).await.is_err() {
                    return;
                }
            }
            Ok(None) => {}
            Err(()) => return,
        }
    }
}

fn main() {
    fullduplex_bench::serve::run(echo);
}

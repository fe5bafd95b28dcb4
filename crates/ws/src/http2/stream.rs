//! [`Http2Stream`]: one HTTP/2 stream as an `AsyncRead + AsyncWrite` byte stream, with the
//! close rules of RFC 8441 section 6.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use h2::{Reason, RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most handed to h2 in one write: h2 copies nothing, so a write is one `Bytes` (one copy
/// of the caller's slice); bounding it keeps that copy near the stream's window.
const MAX_WRITE: usize = 64 << 10;

/// The client's end of a WebSocket on an HTTP/2 stream (RFC 8441), as the byte stream a
/// [`WebSocket`](crate::WebSocket) runs on.
///
/// * Reading yields the stream's DATA and returns end of stream (`Ok(0)`) at the peer's
///   END_STREAM, the HTTP/2 form of the peer closing TCP. A RST_STREAM from the peer is an
///   error of kind `ConnectionReset` (the form of a TCP reset), a connection-level failure an
///   I/O error too. Received bytes are given back to the stream's flow-control window as they
///   are read, so a WebSocket that is not read holds at most one stream window of data and
///   stalls only its own stream, never the other WebSockets of the connection.
/// * Writing waits for the stream's send window (the peer's flow control), so a peer that does
///   not read stalls only this WebSocket's writes.
/// * `shutdown` sends END_STREAM (the orderly end; `WebSocket::close` does this after the
///   close handshake). Dropping the stream before that sends RST_STREAM with `CANCEL` (the
///   abort, RFC 8441 section 6).
pub struct Http2Stream {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// Received, not yet read.
    buf: Bytes,
    /// END_STREAM sent (or the stream is known to be gone): nothing to cancel on drop.
    ended: bool,
}

impl fmt::Debug for Http2Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http2Stream")
            .field("stream_id", &self.send.stream_id())
            .field("buffered", &self.buf.len())
            .field("ended", &self.ended)
            .finish()
    }
}

impl Http2Stream {
    pub(crate) fn new(send: SendStream<Bytes>, recv: RecvStream) -> Http2Stream {
        Http2Stream {
            send,
            recv,
            buf: Bytes::new(),
            ended: false,
        }
    }

    /// The HTTP/2 stream identifier.
    pub fn stream_id(&self) -> u32 {
        self.send.stream_id().as_u32()
    }

    /// Aborts the stream now: RST_STREAM with `CANCEL` (RFC 8441 section 6, the equivalent of
    /// a TCP reset). Reads and writes fail afterwards.
    pub fn abort(&mut self) {
        if !self.ended {
            self.send.send_reset(Reason::CANCEL);
            self.ended = true;
        }
    }
}

impl Drop for Http2Stream {
    fn drop(&mut self) {
        self.abort();
    }
}

/// An h2 error as an I/O error: a stream reset is `ConnectionReset`, I/O failures stay what
/// they were.
fn io_error(error: h2::Error) -> io::Error {
    if error.is_io() {
        return error
            .into_io()
            .unwrap_or_else(|| io::Error::other("HTTP/2 I/O error"));
    }
    match error.reason() {
        Some(_) if error.is_reset() || error.is_remote() => {
            io::Error::new(io::ErrorKind::ConnectionReset, error)
        }
        _ => io::Error::other(error),
    }
}

impl AsyncRead for Http2Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.buf.is_empty() {
            match ready!(this.recv.poll_data(cx)) {
                // END_STREAM: the orderly end.
                None => return Poll::Ready(Ok(())),
                Some(Ok(data)) => this.buf = data,
                Some(Err(error)) => return Poll::Ready(Err(io_error(error))),
            }
        }
        let n = this.buf.len().min(out.remaining());
        out.put_slice(&this.buf[..n]);
        this.buf.advance(n);
        // Reopen the window by what the application consumed, not by what arrived.
        let _ = this.recv.flow_control().release_capacity(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Http2Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        while this.send.capacity() == 0 {
            this.send.reserve_capacity(buf.len().min(MAX_WRITE));
            match ready!(this.send.poll_capacity(cx)) {
                Some(Ok(_)) => {}
                Some(Err(error)) => return Poll::Ready(Err(io_error(error))),
                // The stream can no longer send: reset by the peer, or the connection is gone.
                None => {
                    return match this.send.poll_reset(cx) {
                        Poll::Ready(Ok(reason)) => Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::ConnectionReset,
                            format!("HTTP/2 stream reset: {reason}"),
                        ))),
                        Poll::Ready(Err(error)) => Poll::Ready(Err(io_error(error))),
                        Poll::Pending => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                    }
                }
            }
        }
        let n = this.send.capacity().min(buf.len()).min(MAX_WRITE);
        this.send
            .send_data(Bytes::copy_from_slice(&buf[..n]), false)
            .map_err(io_error)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Data handed to h2 is within the window; the connection task writes it out.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(Ok(()));
        }
        this.ended = true;
        // END_STREAM: the orderly end (RFC 8441 section 6).
        this.send
            .send_data(Bytes::new(), true)
            .map_err(io_error)
            .map_err(|error| {
                tracing::debug!(%error, "END_STREAM could not be sent");
                error
            })?;
        Poll::Ready(Ok(()))
    }
}
